//! Workload controls: what user space and the kernel put into memory, so
//! that offline outcomes can be reproduced on purpose (spec 02 §7, §10.4):
//! movable (LRU) pages, unmovable kernel pages, long-term pins, injected
//! migration failures and hardware poison.

use crate::block::BlockState;
use crate::hotplug::HotplugError;
use crate::machine::RuntimeUsage;
use crate::pages::{Fit, MigrateFailure, PageState};
use crate::system::System;
use crate::zone::{ZoneType, MAX_NR_ZONES};
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
    /// One memory block (any kind in any zone: this is how a kernel page
    /// stuck in ZONE_MOVABLE is reproduced).
    Block(u64),
    /// A node, in the page allocator's order: its zones from the highest
    /// one the kind may use down, the lowest free pages of each first.
    Node(u32),
    /// One zone of a node, the lowest free pages first.
    Zone(u32, ZoneType),
    /// The pages [start_pfn, start_pfn + pages), the lowest free first.
    Range { start_pfn: u64, pages: u64 },
}

impl PageKind {
    fn state(self) -> PageState {
        match self {
            PageKind::Movable => PageState::Movable,
            PageKind::Unmovable => PageState::Unmovable,
            PageKind::Pinned => PageState::Pinned,
        }
    }

    /// The highest zone an allocation of this kind may use
    /// (`gfp_zone`): kernel allocations stay out of ZONE_MOVABLE.
    fn class(self) -> ZoneType {
        match self {
            PageKind::Unmovable => ZoneType::Normal,
            PageKind::Movable | PageKind::Pinned => ZoneType::Movable,
        }
    }
}

/// `shmem_inode_cache` object size (6.1, x86-64): unreclaimable slab.
pub const SHMEM_INODE_BYTES: u64 = 776;
/// `dentry` object size: reclaimable slab.
pub const DENTRY_BYTES: u64 = 192;

/// The guest tmpfs's contents and the pages charged for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsUsage {
    pub inodes: u64,
    pub bytes: u64,
    /// Slab pages of the inodes (`SUnreclaim`).
    pub slab_unreclaimable: u64,
    /// Slab pages of the dentries (`SReclaimable`).
    pub slab_reclaimable: u64,
    /// Shmem pages of the data (`Shmem`).
    pub shmem_pages: u64,
}

impl TmpfsUsage {
    fn for_contents(inodes: u64, bytes: u64) -> Self {
        let pages = |b: u64| b.div_ceil(4096);
        TmpfsUsage {
            inodes,
            bytes,
            slab_unreclaimable: pages(inodes.saturating_mul(SHMEM_INODE_BYTES)),
            slab_reclaimable: pages(inodes.saturating_mul(DENTRY_BYTES)),
            shmem_pages: pages(bytes),
        }
    }

    /// Slab pages in all.
    pub fn slab_pages(&self) -> u64 {
        self.slab_unreclaimable + self.slab_reclaimable
    }
}

/// A block and the pages of it (first, end) a placement covers.
pub(crate) type BlockWindow = (u64, (u64, u64));

/// One walk of the page allocator (`get_page_from_freelist`).
pub(crate) struct AllocRequest {
    pub state: PageState,
    /// Nodes in zonelist order.
    pub nids: Vec<u32>,
    /// The highest zone allowed (`highest_zoneidx`).
    pub class: ZoneType,
    /// Stop at each zone's min watermark plus its lowmem reserve (an
    /// allocation that may fail rather than dig into the reserves).
    pub watermark: bool,
    /// A block the allocation must not use (isolated for offline).
    pub exclude: Option<u64>,
}

impl AllocRequest {
    /// A migration target for movable pages on node `nid` that may fail
    /// rather than dig into the reserves (`alloc_migration_target`),
    /// outside block `exclude`.
    pub(crate) fn migration_target(nid: u32, exclude: Option<u64>) -> Self {
        AllocRequest {
            state: PageState::Movable,
            nids: vec![nid],
            class: ZoneType::Movable,
            watermark: true,
            exclude,
        }
    }
}

/// The order in which an allocation of a page state looks at free pages
/// within a zone: its own pageblocks, then (unmovable) whole free
/// pageblocks it claims, then anything.
fn fits(state: PageState) -> &'static [Fit] {
    match state {
        PageState::Unmovable => &[Fit::UnmovableBlocks, Fit::FreePageblocks, Fit::Any],
        _ => &[Fit::MovableBlocks, Fit::Any],
    }
}

/// Node-local kernel pages a memory node beyond the first holds after boot
/// (a nominal count: what shows is that its first block cannot go offline).
const NODE_LOCAL_KERNEL_PAGES: u64 = 16;

impl System {
    /// Free pages of a zone (`NR_FREE_PAGES`): managed pages minus those
    /// in use; the free pages of an isolated block do not count.
    pub fn zone_free_pages(&self, nid: u32, zone: ZoneType) -> u64 {
        let used: u64 = self
            .blocks
            .values()
            .filter(|b| b.nid == Some(nid))
            .filter_map(|b| {
                let (lo, hi) = self.zone_window(b, zone)?;
                let isolated = match b.pages.is_isolated() {
                    true => b.pages.free_in(lo, hi),
                    false => 0,
                };
                Some(b.pages.used_in(lo, hi) + isolated)
            })
            .sum();
        self.nodes
            .get(&nid)
            .map_or(0, |n| n.zone(zone).managed.saturating_sub(used))
    }

    /// Free pages of a node, all its zones.
    pub fn node_free_pages(&self, nid: u32) -> u64 {
        ZoneType::ALL
            .into_iter()
            .map(|z| self.zone_free_pages(nid, z))
            .sum()
    }

    /// Free pages of every node (`NR_FREE_PAGES` summed over the zones).
    pub fn nr_free_pages(&self) -> u64 {
        self.nodes.keys().map(|&n| self.node_free_pages(n)).sum()
    }

    /// LRU pages of a node (movable and pinned pages of its online blocks).
    pub fn node_lru_pages(&self, nid: u32) -> u64 {
        self.blocks
            .values()
            .filter(|b| b.nid == Some(nid) && b.state != BlockState::Offline)
            .map(|b| b.pages.count(PageState::Movable) + b.pages.count(PageState::Pinned))
            .sum()
    }

    /// Shmem pages: the booted rootfs and the guest tmpfs's data.
    pub fn shmem_pages(&self) -> u64 {
        self.tmpfs.shmem_pages + self.runtime.rootfs_shmem
    }

    /// Slab pages, (reclaimable, unreclaimable).
    pub fn slab_pages(&self) -> (u64, u64) {
        let (t, r) = (&self.tmpfs, &self.runtime);
        (
            t.slab_reclaimable + r.slab_reclaimable,
            t.slab_unreclaimable + r.slab_unreclaimable,
        )
    }

    /// `zone->lowmem_reserve[]` of a zone, for every allocation class.
    pub fn lowmem_reserves(&self, nid: u32, zone: ZoneType) -> [u64; MAX_NR_ZONES] {
        self.wmark.lowmem_reserves(nid, zone)
    }

    /// `zone->lowmem_reserve[class]`: pages of `zone` kept back from
    /// allocations that could have used a higher zone.
    pub fn lowmem_reserve(&self, nid: u32, zone: ZoneType, class: ZoneType) -> u64 {
        self.lowmem_reserves(nid, zone)[class.idx()]
    }

    /// Pages an allocation of `class` may take from a zone before it
    /// reaches the min watermark (`zone_watermark_ok` with `ALLOC_WMARK_MIN`).
    pub fn zone_headroom(&self, nid: u32, zone: ZoneType, class: ZoneType) -> u64 {
        let floor = self.wmark.min_pages(nid, zone) + self.lowmem_reserve(nid, zone, class);
        self.zone_free_pages(nid, zone).saturating_sub(floor)
    }

    /// The blocks (and their pages) in `zone` of `nid` that `req` may take
    /// pages from, ascending.
    fn request_windows(&self, req: &AllocRequest, nid: u32, zone: ZoneType) -> Vec<BlockWindow> {
        self.blocks
            .values()
            .filter(|b| b.nid == Some(nid) && Some(b.id) != req.exclude)
            .filter(|b| b.state == BlockState::Online && !b.pages.is_isolated())
            .filter_map(|b| self.zone_window(b, zone).map(|w| (b.id, w)))
            .collect()
    }

    /// Free pages `req` could take, ignoring watermarks: what
    /// [`System::place_pages`] places at most without them.
    pub(crate) fn request_free(&self, req: &AllocRequest) -> u64 {
        let windows: Vec<BlockWindow> = req
            .nids
            .iter()
            .flat_map(|&nid| {
                ZoneType::ALL
                    .into_iter()
                    .filter(|&z| z <= req.class)
                    .flat_map(move |z| self.request_windows(req, nid, z))
            })
            .collect();
        self.windows_free(&windows)
    }

    /// Free pages in `windows`.
    fn windows_free(&self, windows: &[BlockWindow]) -> u64 {
        windows
            .iter()
            .map(|&(id, (lo, hi))| self.blocks[&id].pages.free_in(lo, hi))
            .sum()
    }

    /// Place up to `n` pages of `state` in the free pages of `windows`,
    /// each fit of the state in turn over all of them, the first window
    /// first; the ranges taken, as (block, first page, end page).
    fn fill_windows(
        &mut self,
        state: PageState,
        windows: &[BlockWindow],
        n: u64,
    ) -> Vec<(u64, u64, u64)> {
        let mut left = n;
        let mut taken = Vec::new();
        for &fit in fits(state) {
            for &(id, window) in windows {
                if left == 0 {
                    return taken;
                }
                let pages = &mut self.blocks.get_mut(&id).expect("listed").pages;
                for (lo, hi) in pages.alloc(state, left, fit, window) {
                    taken.push((id, lo, hi));
                    left -= hi - lo;
                }
            }
        }
        taken
    }

    /// Free up to `n` pages in `state` from `windows`, the last window and
    /// its highest pages first; how many.
    fn release_windows(&mut self, state: PageState, windows: &[BlockWindow], n: u64) -> u64 {
        let mut left = n;
        for &(id, window) in windows.iter().rev() {
            let pages = &mut self.blocks.get_mut(&id).expect("listed").pages;
            for (lo, hi) in pages.reassign_in(state, None, left, false, window) {
                left -= hi - lo;
            }
        }
        n - left
    }

    /// Place up to `n` pages as `req` says; returns the ranges taken as
    /// (block, first page, end page).
    pub(crate) fn place_pages(&mut self, req: &AllocRequest, n: u64) -> Vec<(u64, u64, u64)> {
        let mut left = n;
        let mut taken = Vec::new();
        for &nid in &req.nids {
            for zone in ZoneType::ALL.into_iter().rev().filter(|&z| z <= req.class) {
                let budget = match req.watermark {
                    true => self.zone_headroom(nid, zone, req.class),
                    false => u64::MAX,
                };
                let blocks = self.request_windows(req, nid, zone);
                let got = self.fill_windows(req.state, &blocks, left.min(budget));
                left -= got.iter().map(|t| t.2 - t.1).sum::<u64>();
                taken.extend(got);
                if left == 0 {
                    return taken;
                }
            }
        }
        taken
    }

    /// The online blocks a placement names, with the pages of each it
    /// covers, ascending.
    pub(crate) fn placement_windows(
        &self,
        at: Placement,
    ) -> Result<Vec<BlockWindow>, HotplugError> {
        let online = |b: &&crate::block::MemoryBlock| b.state == BlockState::Online;
        let windows: Vec<BlockWindow> = match at {
            Placement::Block(id) => {
                let b = self.blocks.get(&id).ok_or(HotplugError::NoSuchBlock)?;
                if b.state != BlockState::Online {
                    return Err(HotplugError::Invalid("block is not online"));
                }
                vec![(id, (0, b.pages.nr()))]
            }
            Placement::Node(nid) | Placement::Zone(nid, _) => {
                if !self.nodes.contains_key(&nid) {
                    return Err(HotplugError::Invalid("no such node"));
                }
                let window = |b: &crate::block::MemoryBlock| match at {
                    Placement::Zone(_, zone) => self.zone_window(b, zone),
                    _ => Some((0, b.pages.nr())),
                };
                self.blocks
                    .values()
                    .filter(online)
                    .filter(|b| b.nid == Some(nid))
                    .filter_map(|b| window(b).map(|w| (b.id, w)))
                    .collect()
            }
            Placement::Range { start_pfn, pages } => {
                let end = start_pfn.saturating_add(pages);
                self.blocks
                    .values()
                    .filter(online)
                    .filter_map(|b| {
                        let s = self.block_start_pfn(b.id);
                        let (lo, hi) = (start_pfn.max(s), end.min(s + b.pages.nr()));
                        (lo < hi).then_some((b.id, (lo - s, hi - s)))
                    })
                    .collect()
            }
        };
        if windows.is_empty() {
            return Err(HotplugError::Invalid("no online memory there"));
        }
        Ok(windows)
    }

    /// Allocate `pages` pages of `kind` at `at`; all or nothing (ENOMEM).
    pub fn alloc_pages(
        &mut self,
        at: Placement,
        kind: PageKind,
        pages: u64,
    ) -> Result<(), HotplugError> {
        // All or nothing: checked before anything is placed (placing
        // claims pageblocks, which a rollback would not undo).
        let no_memory = HotplugError::NoMemory("not enough free pages");
        let state = kind.state();
        match at {
            Placement::Node(nid) => {
                if !self.nodes.contains_key(&nid) {
                    return Err(HotplugError::Invalid("no such node"));
                }
                let req = AllocRequest {
                    state,
                    nids: vec![nid],
                    class: kind.class(),
                    watermark: false,
                    exclude: None,
                };
                if self.request_free(&req) < pages {
                    return Err(no_memory);
                }
                self.place_pages(&req, pages);
            }
            _ => {
                let windows = self.placement_windows(at)?;
                if self.windows_free(&windows) < pages {
                    return Err(no_memory);
                }
                self.fill_windows(state, &windows, pages);
            }
        }
        self.touch();
        Ok(())
    }

    /// Free up to `pages` pages of `kind` at `at`, the highest first;
    /// returns how many were freed.
    pub fn free_pages(
        &mut self,
        at: Placement,
        kind: PageKind,
        pages: u64,
    ) -> Result<u64, HotplugError> {
        let windows: Vec<BlockWindow> = match at {
            Placement::Block(id) => {
                let b = self.blocks.get(&id).ok_or(HotplugError::NoSuchBlock)?;
                vec![(id, (0, b.pages.nr()))]
            }
            _ => self.placement_windows(at)?,
        };
        let freed = self.release_windows(kind.state(), &windows, pages);
        self.touch();
        Ok(freed)
    }

    /// The nodes with memory, ascending: where the boot CPU's allocations
    /// go (its node first when it has memory).
    pub(crate) fn memory_nodes(&self) -> Vec<u32> {
        self.nodes
            .values()
            .filter(|n| n.has_memory)
            .map(|n| n.id)
            .collect()
    }

    /// A kernel (`class` Normal) or user (`class` Movable) allocation of
    /// the boot CPU's tasks: up to `pages` pages, the ranges taken.
    fn alloc_for_task(
        &mut self,
        state: PageState,
        class: ZoneType,
        pages: u64,
    ) -> Vec<(u64, u64, u64)> {
        let req = AllocRequest {
            state,
            nids: self.memory_nodes(),
            class,
            watermark: false,
            exclude: None,
        };
        self.place_pages(&req, pages)
    }

    /// Charge what the kernel and its rootfs allocated during boot, in the
    /// order they allocated it (kernel memory, then the unpacked
    /// initramfs), up to the memory there is.
    pub(crate) fn charge_runtime(&mut self, usage: RuntimeUsage) {
        // The three DMA atomic pools scale with RAM (`usage` has the
        // calibrated guest's): the GFP_DMA one in ZONE_DMA, the two others
        // with the rest of the kernel's memory.
        let calibrated = usage.dma_atomic_pool;
        let pool = match calibrated {
            0 => 0,
            _ => crate::boot::atomic_pool_pages(self.totalram_pages()),
        };
        self.alloc_for_task(PageState::Unmovable, ZoneType::Dma, pool);
        // Every memory node but the first holds its own node-local kernel
        // structures (per-node slab and allocator state, its kswapd and
        // kcompactd), allocated at the start of its kernel memory: the part
        // deferred struct-page init leaves for boot, the node's first
        // section. Recorded: a second node's first block is EBUSY, with or
        // without a CPU of its own.
        // With ZONE_NORMAL and ZONE_DMA32 both on the node, each holds some
        // (recorded: node 1 of a 4 GiB guest keeps the first block of both).
        let mut node_local = 0;
        for &nid in self.memory_nodes().iter().skip(1) {
            for zone in [ZoneType::Normal, ZoneType::Dma32] {
                if !self.nodes[&nid].zone(zone).populated() {
                    continue;
                }
                let req = AllocRequest {
                    state: PageState::Unmovable,
                    nids: vec![nid],
                    class: zone,
                    watermark: false,
                    exclude: None,
                };
                node_local += self
                    .place_pages(&req, NODE_LOCAL_KERNEL_PAGES)
                    .iter()
                    .map(|t| t.2 - t.1)
                    .sum::<u64>();
            }
        }
        self.alloc_for_task(
            PageState::Unmovable,
            ZoneType::Normal,
            (usage.unmovable() - calibrated + 2 * pool.saturating_sub(calibrated))
                .saturating_sub(node_local),
        );
        self.alloc_for_task(PageState::Movable, ZoneType::Movable, usage.movable());
        self.runtime = usage;
    }

    /// The guest's tmpfs now holds `inodes` inodes and `bytes` bytes of
    /// data (as `statfs` counts them): charge the difference. Each file
    /// costs a shmem inode (unreclaimable slab) and a dentry (reclaimable
    /// slab), both unmovable kernel pages; its data are shmem pages
    /// (movable). Inodes are charged before data, as files are created
    /// before they are written. All or nothing (ENOMEM).
    pub fn set_tmpfs_usage(&mut self, inodes: u64, bytes: u64) -> Result<TmpfsUsage, HotplugError> {
        let want = TmpfsUsage::for_contents(inodes, bytes);
        let have = self.tmpfs;
        let changes = [
            (
                have.slab_pages(),
                want.slab_pages(),
                PageState::Unmovable,
                ZoneType::Normal,
            ),
            (
                have.shmem_pages,
                want.shmem_pages,
                PageState::Movable,
                ZoneType::Movable,
            ),
        ];
        // All or nothing, checked first: the slab must fit in the kernel
        // zones, slab and data together anywhere.
        let grow = |(from, to, _, _): (u64, u64, PageState, ZoneType)| to.saturating_sub(from);
        let (slab, data) = (grow(changes[0]), grow(changes[1]));
        let room = |class| {
            self.request_free(&AllocRequest {
                state: PageState::Movable,
                nids: self.memory_nodes(),
                class,
                watermark: false,
                exclude: None,
            })
        };
        if room(ZoneType::Normal) < slab || room(ZoneType::Movable) < slab.saturating_add(data) {
            return Err(HotplugError::NoMemory("tmpfs: not enough free memory"));
        }
        for (from, to, state, class) in changes {
            if to > from {
                self.alloc_for_task(state, class, to - from);
            }
        }
        let everywhere: Vec<BlockWindow> = self
            .blocks
            .values()
            .map(|b| (b.id, (0, b.pages.nr())))
            .collect();
        for (from, to, state, _) in changes {
            self.release_windows(state, &everywhere, from.saturating_sub(to));
        }
        self.tmpfs = want;
        self.touch();
        Ok(want)
    }

    /// Make migration fail (`None` clears) in every online block `at`
    /// reaches (the failure is a property of a whole block); how many.
    pub fn set_migrate_failure_at(
        &mut self,
        at: Placement,
        failure: Option<MigrateFailure>,
    ) -> Result<usize, HotplugError> {
        let windows = self.placement_windows(at)?;
        for &(id, _) in &windows {
            self.blocks
                .get_mut(&id)
                .expect("listed")
                .pages
                .migrate_failure = failure;
        }
        self.touch();
        Ok(windows.len())
    }

    /// Hardware-poison one free page of block `id` (the highest).
    pub fn hwpoison(&mut self, id: u64) -> Result<(), HotplugError> {
        let b = self.blocks.get(&id).ok_or(HotplugError::NoSuchBlock)?;
        let Some(&(_, hi)) = b.pages.free_ranges(0, b.pages.nr()).last() else {
            return Err(HotplugError::Busy("no free page to poison"));
        };
        self.poison(id, hi - 1, true);
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
        let total: u64 = s
            .blocks
            .values()
            .map(|b| b.pages.count(PageState::Movable))
            .sum();
        assert_eq!(total, 30000 + s.runtime.movable());
        assert_eq!(s.blocks[&5].pages.count(PageState::Movable), 0);
    }

    /// The 1 GiB pc machine after `offline-busy-slab`'s workload: 40000
    /// files and 256 MiB of data in the guest's tmpfs.
    fn after_slab_workload() -> System {
        let mut s = boot_1g();
        s.set_tmpfs_usage(40003, (256 << 20) + 8192).unwrap();
        s
    }

    #[test]
    fn slab_spilling_past_the_first_block_makes_the_next_one_ebusy_at_its_first_page() {
        let mut s = after_slab_workload();
        assert_eq!(s.blocks[&1].pages.first_unmovable(), Some(0));
        assert_eq!(s.blocks[&2].pages.first_unmovable(), None);
        let claimed = s.blocks[&1].pages.unmovable_pageblocks().to_vec();
        assert_eq!(claimed.first(), Some(&0));
        assert_eq!(s.device_offline_nowait(1).map_err(|e| e.errno()), Err(16));
        let dump = s.events.take_klog();
        assert!(dump.iter().any(|l| l.ends_with("pfn:0x8000")), "{dump:?}");
        // The failed isolation put nothing back to movable before page 0.
        assert_eq!(s.blocks[&1].pages.unmovable_pageblocks(), claimed);
    }

    #[test]
    fn migration_stops_at_the_min_watermark_and_retries_with_enomem() {
        let mut s = after_slab_workload();
        for id in 2..=5 {
            assert_eq!(s.device_offline_nowait(id), Ok(DeviceOutcome::Changed));
        }
        let before = s.blocks[&6].pages.count(PageState::Movable);
        assert!(matches!(
            s.device_offline(6),
            OfflineProgress::Retrying {
                reason: "no memory to migrate to (-ENOMEM)"
            }
        ));
        // What fitted above the watermark moved, lowest pages first.
        let left = s.blocks[&6].pages.count(PageState::Movable);
        assert!(left > 0 && left < before, "{left} of {before}");
        assert_eq!(s.zone_headroom(0, ZoneType::Dma32, ZoneType::Normal), 0);
        assert!(s.blocks[&6].pages.first(|st| st == PageState::Movable) > Some(0));
        assert_eq!(
            s.offline_signal(),
            OfflineProgress::Done(Err(HotplugError::Interrupted))
        );
        assert_eq!(s.blocks[&6].state, BlockState::Online);
        assert!(!s.blocks[&6].pages.is_isolated());
    }

    #[test]
    fn emptying_the_tmpfs_returns_its_pages() {
        let mut s = after_slab_workload();
        let free = |s: &System| s.zone_free_pages(0, ZoneType::Dma32);
        let used = free(&boot_1g());
        s.set_tmpfs_usage(0, 0).unwrap();
        assert_eq!(free(&s), used);
        assert_eq!(s.tmpfs, TmpfsUsage::default());
    }

    #[test]
    fn tmpfs_larger_than_memory_is_refused_and_changes_nothing() {
        let mut s = boot_1g();
        let before = s.blocks.clone();
        for (inodes, bytes) in [(1, 2 << 30), (u64::MAX, 0), (0, u64::MAX)] {
            assert_eq!(
                s.set_tmpfs_usage(inodes, bytes).map_err(|e| e.errno()),
                Err(12)
            );
            assert_eq!(s.blocks, before);
        }
    }

    fn boot_1g() -> System {
        let mut q = QemuPc::default();
        q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
        System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap()
    }

    #[test]
    fn migration_enomem_retries_for_ever() {
        let mut s = boot();
        s.alloc_pages(Placement::Block(6), PageKind::Movable, 100)
            .unwrap();
        s.set_migrate_failure_at(Placement::Block(6), Some(MigrateFailure::NoMemory))
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
        let before = s.blocks[&2].pages.clone();
        assert!(s
            .alloc_pages(Placement::Block(2), PageKind::Movable, 40000)
            .is_err());
        assert_eq!(s.blocks[&2].pages, before);
    }
}
