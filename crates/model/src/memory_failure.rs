//! Memory failure: the `soft_offline_page` and `hard_offline_page` files of
//! `/sys/devices/system/memory` (CONFIG_MEMORY_FAILURE), as 6.1 handles
//! them (oracle-style recordings `offline-page-files`,
//! `offline-page-kernel`).
//!
//! A page gets `PageHWPoison` and counts in `HardwareCorrupted` when it is
//! taken out of use: a free page leaves the buddy allocator, an in-use
//! movable page is migrated first (soft) or its owner loses it (hard). A
//! kernel page (reserved, slab, a hole in a present section) cannot be
//! handled: a soft offline refuses it, a hard one flags it anyway and
//! reports it ignored. The flag lives in the memmap, so it survives
//! offline/online of the block; the count survives even its removal.

use crate::block::BlockState;
use crate::hotplug::HotplugError;
use crate::pages::PageState;
use crate::system::System;
use crate::workload::AllocRequest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Pages with `PageHWPoison` and `num_poisoned_pages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HwPoison {
    /// Pfns whose struct page carries the flag (forgotten with the memmap
    /// when their section is removed).
    pub pfns: BTreeSet<u64>,
    /// `num_poisoned_pages`: `HardwareCorrupted` in pages.
    pub count: u64,
}

/// How `get_hwpoison_page` sees a page of an online section.
enum Use {
    Free,
    Movable,
    /// Reserved, slab, memmap, holes, driver pages: "unhandlable".
    Kernel,
}

impl System {
    /// The online page at `pfn` (`pfn_to_online_page`): its block and the
    /// offset in it. `Err(true)`: no memmap at all (`!pfn_valid`),
    /// `Err(false)`: a memmap but the section is offline.
    fn online_page(&self, pfn: u64) -> Result<(u64, u64), bool> {
        let id = self.pfn_to_block_id(pfn);
        let b = self.blocks.get(&id).ok_or(true)?;
        if b.state != BlockState::Online {
            return Err(false);
        }
        Ok((id, pfn - self.block_start_pfn(id)))
    }

    fn page_use(&self, id: u64, off: u64) -> Use {
        match self.blocks[&id].pages.state_at(off) {
            None => Use::Free,
            Some(PageState::Movable) => Use::Movable,
            Some(_) => Use::Kernel,
        }
    }

    /// Set `PageHWPoison` on `pfn`; a free or movable page leaves use
    /// (`take_page_off_buddy`).
    pub(crate) fn poison(&mut self, id: u64, off: u64, take: bool) {
        if take {
            let b = self.blocks.get_mut(&id).expect("online block");
            b.pages.assign(off, off + 1, Some(PageState::HwPoison));
        }
        let pfn = self.block_start_pfn(id) + off;
        self.hwpoison.pfns.insert(pfn);
        self.hwpoison.count += 1;
        self.touch_global();
    }

    /// Give the content of a movable page of block `id` a free page of
    /// its node (soft offline migrates before it poisons).
    fn migrate_one(&mut self, id: u64) -> bool {
        let Some(nid) = self.blocks[&id].nid else {
            return false;
        };
        let moved = !self
            .place_pages(&AllocRequest::migration_target(nid, None), 1)
            .is_empty();
        self.vm_events.pgmigrate_success += u64::from(moved);
        moved
    }

    /// A write of physical address `addr` to `soft_offline_page`.
    pub fn soft_offline_page(&mut self, addr: u64) -> Result<(), HotplugError> {
        let pfn = addr >> crate::units::PAGE_SHIFT;
        let (id, off) = match self.online_page(pfn) {
            Ok(p) => p,
            Err(true) => return Err(HotplugError::NoSuchAddress),
            Err(false) => return Err(HotplugError::Io),
        };
        if self.hwpoison.pfns.contains(&pfn) {
            self.events
                .log(format!("soft_offline_page: {pfn:#x} page already poisoned"));
            return Ok(());
        }
        match self.page_use(id, off) {
            Use::Free => self.poison(id, off, true),
            Use::Movable => {
                if !self.migrate_one(id) {
                    self.events.log(format!(
                        "soft offline: {pfn:#x}: page migration failed -12, type 0x0"
                    ));
                    return Err(HotplugError::NoMemory("no page to migrate to"));
                }
                self.poison(id, off, true);
            }
            Use::Kernel => {
                self.events
                    .log(format!("Memory failure: {pfn:#x}: unhandlable page."));
                return Err(HotplugError::Io);
            }
        }
        Ok(())
    }

    /// A write of physical address `addr` to `hard_offline_page`
    /// (`memory_failure(pfn, 0)`).
    pub fn memory_failure(&mut self, addr: u64) -> Result<(), HotplugError> {
        let pfn = addr >> crate::units::PAGE_SHIFT;
        let Ok((id, off)) = self.online_page(pfn) else {
            self.events.log(format!(
                "Memory failure: {pfn:#x}: memory outside kernel control"
            ));
            return Err(HotplugError::NoSuchAddress);
        };
        if self.hwpoison.pfns.contains(&pfn) {
            self.events.log(format!(
                "Memory failure: {pfn:#x}: already hardware poisoned"
            ));
            return Err(HotplugError::HwPoison);
        }
        let (what, result) = match self.page_use(id, off) {
            Use::Free => {
                self.poison(id, off, true);
                ("free buddy page", Ok(()))
            }
            Use::Movable => {
                self.poison(id, off, true);
                ("dirty LRU page", Ok(()))
            }
            Use::Kernel => {
                self.events
                    .log(format!("Memory failure: {pfn:#x}: unhandlable page."));
                self.poison(id, off, false);
                ("unknown page", Err(HotplugError::Busy("unhandlable page")))
            }
        };
        let verdict = if result.is_ok() {
            "Recovered"
        } else {
            "Ignored"
        };
        self.events.log(format!(
            "Memory failure: {pfn:#x}: recovery action for {what}: {verdict}"
        ));
        result
    }

    /// Forget the poison flags of pfns [lo, hi) whose memmap goes away
    /// (the count stays, as in 6.1).
    pub(crate) fn forget_hwpoison(&mut self, lo: u64, hi: u64) {
        let gone: Vec<u64> = self.hwpoison.pfns.range(lo..hi).copied().collect();
        for p in gone {
            self.hwpoison.pfns.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::machine::QemuPc;
    use crate::system::System;
    use crate::{HotplugError, KernelVersion};

    fn boot() -> System {
        let spec = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
        System::boot(&spec).unwrap()
    }

    #[test]
    fn soft_offline_of_a_free_page_poisons_it_once_and_says_so_the_second_time() {
        let mut s = boot();
        let free = s.blocks[&5].pages.free_ranges(0, 32768)[0].0;
        let addr = (5 * 32768 + free) << 12;
        let before = s.node_free_pages(0);
        assert_eq!(s.soft_offline_page(addr), Ok(()));
        assert_eq!(s.node_free_pages(0), before - 1);
        assert_eq!(s.hwpoison.count, 1);
        assert_eq!(s.soft_offline_page(addr), Ok(()));
        assert_eq!(s.hwpoison.count, 1);
        let pfn = addr >> 12;
        assert_eq!(
            s.events.take_klog(),
            [format!("soft_offline_page: {pfn:#x} page already poisoned")]
        );
    }

    #[test]
    fn kernel_pages_are_unhandlable_soft_eio_hard_ebusy_and_counted_once_hard() {
        let mut s = boot();
        assert_eq!(s.soft_offline_page(0x100_0000), Err(HotplugError::Io));
        assert_eq!(s.hwpoison.count, 0);
        assert_eq!(
            s.memory_failure(0x100_0000),
            Err(HotplugError::Busy("unhandlable page"))
        );
        assert_eq!(s.memory_failure(0x100_0000), Err(HotplugError::HwPoison));
        assert_eq!(s.hwpoison.count, 1);
        assert_eq!(
            s.events.take_klog(),
            [
                "Memory failure: 0x1000: unhandlable page.",
                "Memory failure: 0x1000: unhandlable page.",
                "Memory failure: 0x1000: recovery action for unknown page: Ignored",
                "Memory failure: 0x1000: already hardware poisoned",
            ]
        );
    }

    #[test]
    fn addresses_without_online_memory_are_enxio() {
        let mut s = boot();
        assert_eq!(
            s.soft_offline_page(0x1_0000_0000),
            Err(HotplugError::NoSuchAddress)
        );
        assert_eq!(
            s.memory_failure(0x4000_0000),
            Err(HotplugError::NoSuchAddress)
        );
        assert_eq!(
            s.events.take_klog(),
            ["Memory failure: 0x40000: memory outside kernel control"]
        );
    }
}
