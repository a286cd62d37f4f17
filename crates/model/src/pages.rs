//! The page model of one memory block: what each page holds, as sorted
//! runs of pages in one state (free pages are the gaps between runs), plus
//! each pageblock's migratetype and whether the block is isolated. The
//! offline path (spec 02 §7, §10.4) reads it to decide whether a block can
//! be isolated, migrated and taken offline.
//!
//! A mostly free block costs a few runs, so a TiB of hot-added memory
//! stays within a few MiB of model state (the kernel's memmap is 16 GiB per
//! TiB). Placement follows the buddy allocator after boot: memblock hands
//! memory to the free lists in ascending pfn order (`FPI_TO_TAIL`), so the
//! lowest free pages go first; unmovable allocations prefer pageblocks that
//! are already `MIGRATE_UNMOVABLE` and otherwise claim whole free
//! pageblocks.

use serde::{Deserialize, Serialize};

/// Base pages per pageblock (`pageblock_nr_pages`: 2 MiB on x86-64).
pub const PAGEBLOCK_PAGES: u64 = 512;

/// `page->flags` as `dump_page()` prints it on the modelled x86_64 build:
/// the node in bits 54 and up, the zone in bits 51-53, `last_cpupid` all
/// ones (bits 30-50), and the page-flag bits `bits` below.
pub fn dumped_flags(nid: u32, zone_idx: usize, bits: u64) -> u64 {
    (u64::from(nid) << 54) | ((zone_idx as u64) << 51) | (0x1f_ffff << 30) | bits
}

/// How migration of this block's movable pages fails, when it is made to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrateFailure {
    /// No target page can be allocated (-ENOMEM): the offline loop retries.
    NoMemory,
    /// The pages are transiently busy (-EAGAIN): the offline loop retries.
    Again,
}

/// What one page holds. Free pages are not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageState {
    /// No System RAM behind the pfn.
    Hole,
    /// `PageReserved`: boot-time (memblock) allocations; never managed.
    Reserved,
    /// The block's own memmap (memmap_on_memory).
    Vmemmap,
    /// In-use kernel pages (slab, page tables, ...).
    Unmovable,
    /// In-use LRU pages (anonymous, page cache, shmem).
    Movable,
    /// Movable pages with a long-term pin: migration never succeeds.
    Pinned,
    /// Hardware-poisoned pages.
    HwPoison,
    /// `PageOffline` pages held by a driver (virtio-mem unplugged sub-blocks).
    DriverOffline,
    /// A free page of the hugetlb pool (512 aligned base pages each).
    HugeFree,
    /// A huge page of the pool in use by an application (migratable).
    HugeUsed,
    /// Inflated in the virtio-balloon: movable (balloon compaction), and
    /// not managed (the driver takes it out of `managed` and `MemTotal`).
    Balloon,
}

const NR_STATES: usize = 11;

impl PageState {
    fn idx(self) -> usize {
        self as usize
    }
}

/// The pageblock's migratetype, as `get_pageblock_migratetype` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrateType {
    Unmovable,
    Movable,
    Isolate,
}

/// Which free pages an allocation may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Free pages in `MIGRATE_UNMOVABLE` pageblocks.
    UnmovableBlocks,
    /// Free pages in pageblocks of any other migratetype.
    MovableBlocks,
    /// Whole free pageblocks, claimed for the allocation's migratetype
    /// (`steal_suitable_fallback` taking a free buddy of pageblock order).
    FreePageblocks,
    /// Any free page (a fallback that steals single pages).
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    start: u64,
    len: u64,
    state: PageState,
}

impl Run {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The pages of one memory block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageMap {
    nr: u64,
    runs: Vec<Run>,
    counts: [u64; NR_STATES],
    /// Pageblocks (by index in the block) that are `MIGRATE_UNMOVABLE`;
    /// every other one is `MIGRATE_MOVABLE` (memmap_init's default).
    unmovable_pageblocks: Vec<u64>,
    /// `MIGRATE_ISOLATE` over the whole block (an offline in flight).
    isolated: bool,
    /// Injected migration failure for this block's movable pages.
    pub migrate_failure: Option<MigrateFailure>,
}

impl Default for PageMap {
    fn default() -> Self {
        Self::new(0)
    }
}

impl PageMap {
    /// `nr` free pages.
    pub fn new(nr: u64) -> Self {
        PageMap {
            nr,
            runs: Vec::new(),
            counts: [0; NR_STATES],
            unmovable_pageblocks: Vec::new(),
            isolated: false,
            migrate_failure: None,
        }
    }

    /// Pages in the block.
    pub fn nr(&self) -> u64 {
        self.nr
    }

    /// Pages of System RAM (not holes).
    pub fn present(&self) -> u64 {
        self.nr - self.count(PageState::Hole)
    }

    /// Pages in `state`.
    pub fn count(&self, state: PageState) -> u64 {
        self.counts[state.idx()]
    }

    /// Free pages.
    pub fn free(&self) -> u64 {
        self.nr - self.counts.iter().sum::<u64>()
    }

    /// Pages in use by anything but holes and the memmap (not free).
    pub fn in_use(&self) -> u64 {
        self.nr - self.free() - self.count(PageState::Hole) - self.count(PageState::Vmemmap)
    }

    /// Pages an offline migrates page by page: LRU and balloon pages.
    pub fn migratable_pages(&self) -> u64 {
        self.count(PageState::Movable) + self.count(PageState::Balloon)
    }

    /// Free huge pages of the pool here (2 MiB each).
    pub fn huge_free(&self) -> u64 {
        self.count(PageState::HugeFree) / PAGEBLOCK_PAGES
    }
    /// In-use huge pages here (2 MiB each).
    pub fn huge_used(&self) -> u64 {
        self.count(PageState::HugeUsed) / PAGEBLOCK_PAGES
    }

    /// The runs of non-free pages, ascending: (first page, pages, state).
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64, PageState)> + '_ {
        self.runs.iter().map(|r| (r.start, r.len, r.state))
    }

    /// The state of page `off` (`None`: free).
    pub fn state_at(&self, off: u64) -> Option<PageState> {
        self.runs
            .iter()
            .find(|r| r.start <= off && off < r.end())
            .map(|r| r.state)
    }

    /// The lowest page whose state satisfies `pred`.
    pub fn first(&self, pred: impl Fn(PageState) -> bool) -> Option<u64> {
        self.runs.iter().find(|r| pred(r.state)).map(|r| r.start)
    }

    /// The first page `has_unmovable_pages` stops at: reserved or unmovable.
    pub fn first_unmovable(&self) -> Option<u64> {
        self.first(|s| matches!(s, PageState::Reserved | PageState::Unmovable))
    }

    /// Pages in [lo, hi) that are in use among those a zone's managed count
    /// includes (not holes, reserved, memmap, driver-offline or balloon
    /// pages).
    pub fn used_in(&self, lo: u64, hi: u64) -> u64 {
        self.runs
            .iter()
            .filter(|r| {
                !matches!(
                    r.state,
                    PageState::Hole
                        | PageState::Reserved
                        | PageState::Vmemmap
                        | PageState::DriverOffline
                        | PageState::Balloon
                )
            })
            .map(|r| r.end().min(hi).saturating_sub(r.start.max(lo)))
            .sum()
    }

    /// Free pages in [lo, hi).
    pub fn free_in(&self, lo: u64, hi: u64) -> u64 {
        self.free_ranges(lo, hi.min(self.nr))
            .iter()
            .map(|g| g.1 - g.0)
            .sum()
    }

    /// The migratetype of pageblock `pb` (its index in the block).
    pub fn migratetype(&self, pb: u64) -> MigrateType {
        if self.isolated {
            MigrateType::Isolate
        } else if self.unmovable_pageblocks.binary_search(&pb).is_ok() {
            MigrateType::Unmovable
        } else {
            MigrateType::Movable
        }
    }

    /// Pageblocks that are `MIGRATE_UNMOVABLE`, ascending.
    pub fn unmovable_pageblocks(&self) -> &[u64] {
        &self.unmovable_pageblocks
    }

    /// Boot: pageblocks whose first pfn has no memory (`memmap_init` marks
    /// a pageblock `MIGRATE_MOVABLE` at its first pfn only when that pfn
    /// is memory of a zone) keep the migratetype 0, `MIGRATE_UNMOVABLE`:
    /// ZONE_DMA's first pageblock, pfn 0 being firmware's.
    pub fn mark_hole_started_pageblocks(&mut self) {
        let nr = self.nr;
        let starts_hole: Vec<u64> = self
            .runs
            .iter()
            .filter(|r| r.state == PageState::Hole)
            .flat_map(|r| {
                // The pageblocks whose first pfn lies in this hole and that
                // hold memory after it.
                let first = r.start.div_ceil(PAGEBLOCK_PAGES);
                let last = (r.end() - 1) / PAGEBLOCK_PAGES;
                let end = r.end();
                (first..=last).filter(move |&pb| end < ((pb + 1) * PAGEBLOCK_PAGES).min(nr))
            })
            .collect();
        for pb in starts_hole {
            self.mark_unmovable(pb);
        }
    }

    fn mark_unmovable(&mut self, pb: u64) {
        if let Err(at) = self.unmovable_pageblocks.binary_search(&pb) {
            self.unmovable_pageblocks.insert(at, pb);
        }
    }

    /// `start_isolate_page_range` over the block succeeded.
    pub fn isolate(&mut self) {
        self.isolated = true;
    }

    /// Whether an offline has the block isolated.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// Isolation stopped at the unmovable page `at`: 6.1 puts the
    /// pageblocks it had isolated before it back as `MIGRATE_MOVABLE`.
    pub fn isolation_failed_at(&mut self, at: u64) {
        let pb = at / PAGEBLOCK_PAGES;
        self.unmovable_pageblocks.retain(|&p| p >= pb);
    }

    /// `undo_isolate_page_range(.., MIGRATE_MOVABLE)`: every pageblock
    /// becomes movable, whatever it was before.
    pub fn undo_isolation(&mut self) {
        self.isolated = false;
        self.unmovable_pageblocks.clear();
    }

    /// Set [lo, hi) to `state` (`None`: free), whatever it held.
    pub fn assign(&mut self, lo: u64, hi: u64, state: Option<PageState>) {
        let (lo, hi) = (lo.min(self.nr), hi.min(self.nr));
        if lo >= hi {
            return;
        }
        let mut out: Vec<Run> = Vec::with_capacity(self.runs.len() + 2);
        // The new run goes in before the first piece that lies after it.
        let mut pending = state.map(|s| Run {
            start: lo,
            len: hi - lo,
            state: s,
        });
        for r in self.runs.drain(..) {
            if r.end() <= lo {
                out.push(r);
                continue;
            }
            if r.start >= hi {
                out.extend(pending.take());
                out.push(r);
                continue;
            }
            self.counts[r.state.idx()] -= r.end().min(hi) - r.start.max(lo);
            if r.start < lo {
                out.push(Run {
                    len: lo - r.start,
                    ..r
                });
            }
            if r.end() > hi {
                out.extend(pending.take());
                out.push(Run {
                    start: hi,
                    len: r.end() - hi,
                    state: r.state,
                });
            }
        }
        out.extend(pending.take());
        if let Some(s) = state {
            self.counts[s.idx()] += hi - lo;
        }
        // Merge neighbours in the same state.
        let mut merged: Vec<Run> = Vec::with_capacity(out.len());
        for r in out {
            match merged.last_mut() {
                Some(l) if l.end() == r.start && l.state == r.state => l.len += r.len,
                _ => merged.push(r),
            }
        }
        self.runs = merged;
    }

    /// The free ranges within [lo, hi), ascending.
    pub fn free_ranges(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = lo;
        for r in &self.runs {
            if r.end() <= at {
                continue;
            }
            if r.start >= hi {
                break;
            }
            if r.start > at {
                gaps.push((at, r.start.min(hi)));
            }
            at = r.end();
        }
        if at < hi {
            gaps.push((at, hi));
        }
        gaps
    }

    /// Place up to `n` pages of `state` in the free pages of [lo, hi) that
    /// `fit` allows, lowest first; returns the ranges taken. Unmovable
    /// pages claim the pageblocks they land in.
    pub fn alloc(
        &mut self,
        state: PageState,
        n: u64,
        fit: Fit,
        (lo, hi): (u64, u64),
    ) -> Vec<(u64, u64)> {
        let hi = hi.min(self.nr);
        let mut want = n;
        let mut taken = Vec::new();
        let gaps = self.free_ranges(lo, hi);
        for (g0, g1) in gaps {
            let mut at = g0;
            while at < g1 && want > 0 {
                let pb = at / PAGEBLOCK_PAGES;
                let pb_end = ((pb + 1) * PAGEBLOCK_PAGES).min(g1);
                let unmovable = self.unmovable_pageblocks.binary_search(&pb).is_ok();
                let ok = match fit {
                    Fit::UnmovableBlocks => unmovable,
                    Fit::MovableBlocks => !unmovable,
                    Fit::FreePageblocks => {
                        at == pb * PAGEBLOCK_PAGES
                            && pb_end == (pb + 1) * PAGEBLOCK_PAGES
                            && pb_end <= hi
                    }
                    Fit::Any => true,
                };
                if ok {
                    let take = (pb_end - at).min(want);
                    taken.push((at, at + take));
                    want -= take;
                }
                at = pb_end;
            }
            if want == 0 {
                break;
            }
        }
        for &(a, b) in &taken {
            self.assign(a, b, Some(state));
            if state == PageState::Unmovable {
                for pb in a / PAGEBLOCK_PAGES..b.div_ceil(PAGEBLOCK_PAGES) {
                    self.mark_unmovable(pb);
                }
            }
        }
        taken
    }

    /// The pageblocks of [lo, hi) a huge page could take: wholly free and
    /// `MIGRATE_MOVABLE` (not unmovable, not isolated), ascending.
    fn huge_slots(&self, (lo, hi): (u64, u64)) -> impl Iterator<Item = u64> + '_ {
        let first = lo.div_ceil(PAGEBLOCK_PAGES);
        let last = hi.min(self.nr) / PAGEBLOCK_PAGES;
        (first..last).filter(|&pb| {
            self.migratetype(pb) == MigrateType::Movable
                && self.free_in(pb * PAGEBLOCK_PAGES, (pb + 1) * PAGEBLOCK_PAGES) == PAGEBLOCK_PAGES
        })
    }

    /// How many huge pages fit in [lo, hi).
    pub fn huge_room(&self, window: (u64, u64)) -> u64 {
        self.huge_slots(window).count() as u64
    }

    /// Place up to `n` huge pages (`HugeFree` or `HugeUsed`) on whole free
    /// movable pageblocks of [lo, hi), lowest first; returns how many.
    pub fn alloc_huge(&mut self, state: PageState, n: u64, window: (u64, u64)) -> u64 {
        let slots: Vec<u64> = self.huge_slots(window).take(n as usize).collect();
        for &pb in &slots {
            self.assign(
                pb * PAGEBLOCK_PAGES,
                (pb + 1) * PAGEBLOCK_PAGES,
                Some(state),
            );
        }
        slots.len() as u64
    }

    /// Change up to `n` pages in state `from` to `to` (`None`: free them),
    /// lowest pages first or highest first; returns the ranges changed.
    pub fn reassign(
        &mut self,
        from: PageState,
        to: Option<PageState>,
        n: u64,
        lowest_first: bool,
    ) -> Vec<(u64, u64)> {
        self.reassign_in(from, to, n, lowest_first, (0, self.nr))
    }

    /// [`PageMap::reassign`] within the pages [lo, hi).
    pub fn reassign_in(
        &mut self,
        from: PageState,
        to: Option<PageState>,
        n: u64,
        lowest_first: bool,
        (lo, hi): (u64, u64),
    ) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = self
            .runs
            .iter()
            .filter(|r| r.state == from && r.end() > lo && r.start < hi)
            .map(|r| (r.start.max(lo), r.end().min(hi)))
            .collect();
        if !lowest_first {
            ranges.reverse();
        }
        let mut want = n;
        let mut picked = Vec::new();
        for (a, b) in ranges {
            if want == 0 {
                break;
            }
            let take = (b - a).min(want);
            picked.push(if lowest_first {
                (a, a + take)
            } else {
                (b - take, b)
            });
            want -= take;
        }
        for &(a, b) in &picked {
            self.assign(a, b, to);
        }
        picked
    }

    /// The highest `n` free pages become `state` (a driver taking memory
    /// back from the top, as virtio-mem unplugs its last sub-blocks
    /// first); returns how many.
    pub fn claim_highest_free(&mut self, state: PageState, n: u64) -> u64 {
        let mut want = n;
        for (a, b) in self.free_ranges(0, self.nr).into_iter().rev() {
            if want == 0 {
                break;
            }
            let take = (b - a).min(want);
            self.assign(b - take, b, Some(state));
            want -= take;
        }
        n - want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `flags:` words of the page dumps the real kernel printed
    /// (oracle and behaviour transcripts): zone bits start at 51, not 52
    /// (which would print a DMA32 page's word as a Normal page's).
    #[test]
    fn dumped_flags_put_the_zone_at_bit_51_like_the_recorded_dumps() {
        assert_eq!(dumped_flags(0, 2, 0x200), 0x17ffffc0000200);
        assert_eq!(dumped_flags(1, 2, 0x200), 0x57ffffc0000200);
        assert_eq!(dumped_flags(2, 1, 0x200), 0x8fffffc0000200);
        assert_eq!(dumped_flags(0, 1, 0x8_000e), 0xfffffc008000e);
        assert_eq!(dumped_flags(0, 1, 0x4_0000), 0xfffffc0040000);
        assert_eq!(dumped_flags(2, 2, 0), 0x97ffffc0000000);
    }

    fn runs(m: &PageMap) -> Vec<(u64, u64, PageState)> {
        m.runs().collect()
    }

    #[test]
    fn assign_splits_and_merges_runs_and_keeps_counts() {
        let mut m = PageMap::new(4096);
        m.assign(100, 200, Some(PageState::Movable));
        m.assign(200, 300, Some(PageState::Movable));
        assert_eq!(runs(&m), vec![(100, 200, PageState::Movable)]);
        m.assign(150, 160, Some(PageState::Pinned));
        assert_eq!(
            runs(&m),
            vec![
                (100, 50, PageState::Movable),
                (150, 10, PageState::Pinned),
                (160, 140, PageState::Movable)
            ]
        );
        assert_eq!(
            (
                m.count(PageState::Movable),
                m.count(PageState::Pinned),
                m.free()
            ),
            (190, 10, 3896)
        );
        m.assign(0, 4096, None);
        assert_eq!((runs(&m), m.free()), (vec![], 4096));
    }

    #[test]
    fn unmovable_allocation_claims_whole_free_pageblocks_lowest_first() {
        let mut m = PageMap::new(4096);
        m.assign(0, 10, Some(PageState::Movable));
        let t = m.alloc(PageState::Unmovable, 600, Fit::FreePageblocks, (0, 4096));
        assert_eq!(t, vec![(512, 1024), (1024, 1112)]);
        assert_eq!(m.unmovable_pageblocks(), &[1, 2]);
        assert_eq!(m.first_unmovable(), Some(512));
        // The next one fills the claimed pageblock first.
        let t = m.alloc(PageState::Unmovable, 10, Fit::UnmovableBlocks, (0, 4096));
        assert_eq!(t, vec![(1112, 1122)]);
        // Movable pages stay out of unmovable pageblocks while they can.
        let t = m.alloc(PageState::Movable, 600, Fit::MovableBlocks, (0, 4096));
        assert_eq!(t, vec![(10, 512), (1536, 1634)]);
    }

    #[test]
    fn failed_isolation_makes_the_pageblocks_before_the_busy_page_movable() {
        let mut m = PageMap::new(4096);
        m.alloc(PageState::Unmovable, 1024, Fit::FreePageblocks, (0, 4096));
        m.alloc(PageState::Unmovable, 1, Fit::FreePageblocks, (0, 4096));
        assert_eq!(m.unmovable_pageblocks(), &[0, 1, 2]);
        m.isolation_failed_at(600);
        assert_eq!(m.unmovable_pageblocks(), &[1, 2]);
        m.isolate();
        assert_eq!(m.migratetype(1), MigrateType::Isolate);
        m.undo_isolation();
        assert_eq!(m.migratetype(1), MigrateType::Movable);
    }

    #[test]
    fn huge_pages_take_whole_aligned_pageblocks_and_convert_in_units() {
        let mut m = PageMap::new(4096);
        m.assign(0, 1, Some(PageState::Movable));
        assert_eq!(m.alloc_huge(PageState::HugeFree, 3, (0, 4096)), 3);
        assert_eq!(runs(&m)[1], (512, 1536, PageState::HugeFree));
        m.reassign(PageState::HugeFree, Some(PageState::HugeUsed), 512, true);
        assert_eq!((m.huge_free(), m.huge_used()), (2, 1));
        assert_eq!(runs(&m)[1], (512, 512, PageState::HugeUsed));
    }

    #[test]
    fn release_takes_the_highest_pages_first() {
        let mut m = PageMap::new(4096);
        m.alloc(PageState::Movable, 1000, Fit::Any, (0, 4096));
        let r = m.reassign(PageState::Movable, None, 10, false);
        assert_eq!(r, vec![(990, 1000)]);
        assert_eq!(m.claim_highest_free(PageState::DriverOffline, 96), 96);
        assert_eq!(m.first(|s| s == PageState::DriverOffline), Some(4000));
    }

    #[test]
    fn used_in_counts_managed_pages_in_use_in_a_window() {
        let mut m = PageMap::new(4096);
        m.assign(0, 100, Some(PageState::Reserved));
        m.assign(100, 300, Some(PageState::Movable));
        m.assign(4000, 4096, Some(PageState::Hole));
        assert_eq!(m.used_in(0, 200), 100);
        assert_eq!(m.used_in(0, 4096), 200);
        assert_eq!(m.present(), 4000);
        assert_eq!(m.in_use(), 300);
    }
}
