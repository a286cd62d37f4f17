//! Workload controls: what user space and the kernel put into memory, so
//! that offline outcomes can be reproduced on purpose (spec 02 §7, §10.4):
//! movable (LRU) pages, unmovable kernel pages, long-term pins, injected
//! migration failures and hardware poison.

use crate::block::BlockState;
use crate::hotplug::HotplugError;
use crate::pages::MigrateFailure;
use crate::system::System;
use crate::zone::ZoneType;
use serde::{Deserialize, Serialize};

/// What kind of pages to allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageKind {
    /// Anonymous memory or page cache (LRU, migratable).
    Movable,
    /// Slab, page tables and other kernel allocations.
    Unmovable,
    /// Movable pages with a long-term pin (RDMA, vfio): never migrate.
    Pinned,
}

/// Where allocations go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// One memory block.
    Block(u64),
    /// Any online block of a node, highest pfn first, zones the kind may use.
    Node(u32),
}

impl System {
    pub(crate) fn placement_blocks(
        &self,
        at: Placement,
        kind: PageKind,
    ) -> Result<Vec<u64>, HotplugError> {
        match at {
            Placement::Block(id) => {
                let b = self.blocks.get(&id).ok_or(HotplugError::NoSuchBlock)?;
                if b.state != BlockState::Online {
                    return Err(HotplugError::Invalid("block is not online"));
                }
                Ok(vec![id])
            }
            Placement::Node(nid) => {
                if !self.nodes.contains_key(&nid) {
                    return Err(HotplugError::Invalid("no such node"));
                }
                Ok(self
                    .blocks
                    .iter()
                    .rev()
                    .filter(|(_, b)| b.state == BlockState::Online && b.nid == Some(nid))
                    .filter(|(_, b)| {
                        kind != PageKind::Unmovable || b.zone != Some(ZoneType::Movable)
                    })
                    .map(|(&id, _)| id)
                    .collect())
            }
        }
    }

    /// Allocate `pages` pages of `kind` at `at`; all or nothing (ENOMEM).
    pub fn alloc_pages(
        &mut self,
        at: Placement,
        kind: PageKind,
        pages: u64,
    ) -> Result<(), HotplugError> {
        let ids = self.placement_blocks(at, kind)?;
        let free: u64 = ids
            .iter()
            .map(|id| self.blocks[id].pages.free(self.blocks[id].nr_vmemmap_pages))
            .sum();
        if free < pages {
            return Err(HotplugError::NoMemory("not enough free pages"));
        }
        let mut left = pages;
        for id in ids {
            let start = self.block_start_pfn(id);
            let b = self.blocks.get_mut(&id).expect("listed");
            let take = b.pages.free(b.nr_vmemmap_pages).min(left);
            match kind {
                PageKind::Movable => b.pages.movable += take,
                PageKind::Unmovable => {
                    b.pages.unmovable += take;
                    b.pages
                        .first_unmovable_pfn
                        .get_or_insert(start + b.nr_vmemmap_pages);
                }
                PageKind::Pinned => b.pages.pinned += take,
            }
            left -= take;
            if left == 0 {
                break;
            }
        }
        self.touch();
        Ok(())
    }

    /// Free up to `pages` pages of `kind` at `at`; returns how many were freed.
    pub fn free_pages(
        &mut self,
        at: Placement,
        kind: PageKind,
        pages: u64,
    ) -> Result<u64, HotplugError> {
        let ids = match at {
            Placement::Block(id) => {
                self.blocks.get(&id).ok_or(HotplugError::NoSuchBlock)?;
                vec![id]
            }
            Placement::Node(nid) => self
                .blocks
                .iter()
                .filter(|(_, b)| b.nid == Some(nid))
                .map(|(&id, _)| id)
                .collect(),
        };
        let mut left = pages;
        for id in ids {
            let b = self.blocks.get_mut(&id).expect("listed");
            let field = match kind {
                PageKind::Movable => &mut b.pages.movable,
                PageKind::Unmovable => &mut b.pages.unmovable,
                PageKind::Pinned => &mut b.pages.pinned,
            };
            let take = (*field).min(left);
            *field -= take;
            if kind == PageKind::Unmovable && b.pages.unmovable == 0 {
                b.pages.first_unmovable_pfn = None;
            }
            left -= take;
        }
        self.touch();
        Ok(pages - left)
    }

    /// Make migration of block `id`'s pages fail (`None` clears).
    pub fn set_migrate_failure(
        &mut self,
        id: u64,
        failure: Option<MigrateFailure>,
    ) -> Result<(), HotplugError> {
        self.blocks
            .get_mut(&id)
            .ok_or(HotplugError::NoSuchBlock)?
            .pages
            .migrate_failure = failure;
        self.touch();
        Ok(())
    }

    /// Hardware-poison one page of block `id`.
    pub fn hwpoison(&mut self, id: u64) -> Result<(), HotplugError> {
        let b = self.blocks.get_mut(&id).ok_or(HotplugError::NoSuchBlock)?;
        if b.pages.free(b.nr_vmemmap_pages) == 0 {
            return Err(HotplugError::Busy("no free page to poison"));
        }
        b.pages.hwpoison += 1;
        self.touch();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::QemuPc;
    use crate::{DeviceOutcome, KernelVersion, OfflineProgress};

    fn boot() -> System {
        System::boot(&QemuPc::default().machine("", KernelVersion::V6_1).unwrap()).unwrap()
    }

    #[test]
    fn unmovable_page_in_a_kernel_zone_makes_offline_ebusy() {
        let mut s = boot();
        s.alloc_pages(Placement::Block(3), PageKind::Unmovable, 1)
            .unwrap();
        assert_eq!(s.device_offline_nowait(3).map_err(|e| e.errno()), Err(16));
        assert_eq!(s.blocks[&3].state, BlockState::Online);
    }

    /// Block 4 with 10 pinned pages, its offline retrying.
    fn retrying_offline_of_pinned_block() -> System {
        let mut s = boot();
        s.alloc_pages(Placement::Block(4), PageKind::Pinned, 10)
            .unwrap();
        assert!(matches!(
            s.device_offline(4),
            OfflineProgress::Retrying { .. }
        ));
        s
    }

    #[test]
    fn pinned_page_retries_until_a_signal_then_eintr() {
        let mut s = retrying_offline_of_pinned_block();
        assert_eq!(s.blocks[&4].state, BlockState::GoingOffline);
        assert!(matches!(
            s.offline_retry(),
            OfflineProgress::Retrying { .. }
        ));
        assert_eq!(
            s.offline_signal(),
            OfflineProgress::Done(Err(HotplugError::Interrupted))
        );
        assert_eq!(s.blocks[&4].state, BlockState::Online);
    }

    #[test]
    fn released_pin_lets_the_retrying_offline_finish() {
        let mut s = retrying_offline_of_pinned_block();
        s.free_pages(Placement::Block(4), PageKind::Pinned, 10)
            .unwrap();
        assert_eq!(
            s.offline_retry(),
            OfflineProgress::Done(Ok(DeviceOutcome::Changed))
        );
    }

    #[test]
    fn movable_pages_migrate_out_when_there_is_room() {
        let mut s = boot();
        s.alloc_pages(Placement::Block(5), PageKind::Movable, 30000)
            .unwrap();
        assert_eq!(s.device_offline_nowait(5), Ok(DeviceOutcome::Changed));
        let total: u64 = s.blocks.values().map(|b| b.pages.movable).sum();
        assert_eq!(total, 30000);
        assert_eq!(s.blocks[&5].pages.movable, 0);
    }

    #[test]
    fn migration_enomem_retries_for_ever() {
        let mut s = boot();
        s.alloc_pages(Placement::Block(6), PageKind::Movable, 100)
            .unwrap();
        s.set_migrate_failure(6, Some(MigrateFailure::NoMemory))
            .unwrap();
        assert!(matches!(
            s.device_offline(6),
            OfflineProgress::Retrying { .. }
        ));
        assert_eq!(
            s.offline_signal(),
            OfflineProgress::Done(Err(HotplugError::Interrupted))
        );
    }

    #[test]
    fn allocation_beyond_free_memory_is_refused_and_changes_nothing() {
        let mut s = boot();
        let before = s.blocks[&2].pages;
        assert!(s
            .alloc_pages(Placement::Block(2), PageKind::Movable, 40000)
            .is_err());
        assert_eq!(s.blocks[&2].pages, before);
    }
}
