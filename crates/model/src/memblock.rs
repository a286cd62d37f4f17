//! memblock (`mm/memblock.c`), the kernel's boot-time allocator, at byte
//! granularity.
//!
//! Until the buddy allocator takes over, every early allocation comes from
//! memblock: the highest free range that fits wins (top-down), aligned
//! down inside it; a request for a node falls back to any node unless it
//! is exact, and a request with a lower bound is retried without one.
//! Small allocations are only 64-byte aligned, so they pack into shared
//! pages around the page-aligned ones. `memblock_free_all` hands the buddy
//! allocator only whole free pages: every page a reservation touches stays
//! reserved, which is why the packing decides, page by page, how many
//! pages each zone manages.

use crate::units::PAGE_SIZE;

/// `SMP_CACHE_BYTES` on x86-64: the default alignment.
pub(crate) const SMP_CACHE_BYTES: u64 = 64;

/// A half-open byte range.
pub(crate) type ByteRange = (u64, u64);

/// One region of `memblock.memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    start: u64,
    end: u64,
    nid: u32,
    /// `MEMBLOCK_HOTPLUG` (from the SRAT).
    hotplug: bool,
}

/// Which allocator entry point made a request (`memblock=debug` names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocApi {
    /// `memblock_phys_alloc_range`.
    PhysRange,
    /// `memblock_alloc_try_nid` (zeroed).
    TryNid,
    /// `memblock_alloc_try_nid_raw`.
    TryNidRaw,
    /// `memblock_alloc_exact_nid_raw`.
    ExactNidRaw,
    /// `memblock_phys_alloc_try_nid` (no debug line of its own).
    PhysTryNid,
}

/// One operation on memblock, in boot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemblockOp {
    /// A request and where it landed (`None`: it failed).
    Alloc {
        api: AllocApi,
        size: u64,
        align: u64,
        /// `None` is `NUMA_NO_NODE`.
        nid: Option<u32>,
        min_addr: u64,
        max_addr: u64,
        /// The kernel function that asked.
        caller: &'static str,
        at: Option<u64>,
    },
    /// `memblock_phys_free` / `memblock_free` of `[start, end)`.
    Free {
        start: u64,
        end: u64,
        caller: &'static str,
    },
}

/// A request: `size` bytes aligned to `align` within `[min_addr,
/// max_addr)` (`max_addr` 0: `MEMBLOCK_ALLOC_ACCESSIBLE`), on `nid`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub api: AllocApi,
    pub size: u64,
    pub align: u64,
    pub nid: Option<u32>,
    pub min_addr: u64,
    pub max_addr: u64,
    pub caller: &'static str,
}

impl Request {
    /// `memblock_alloc(size, align)`: any node, anywhere accessible.
    pub(crate) fn any(size: u64, align: u64, caller: &'static str) -> Self {
        Request {
            api: AllocApi::TryNid,
            size,
            align,
            nid: None,
            min_addr: 0,
            max_addr: 0,
            caller,
        }
    }

    pub(crate) fn on(self, nid: Option<u32>) -> Self {
        Request { nid, ..self }
    }

    pub(crate) fn within(self, min_addr: u64, max_addr: u64) -> Self {
        Request {
            min_addr,
            max_addr,
            ..self
        }
    }

    pub(crate) fn via(self, api: AllocApi) -> Self {
        Request { api, ..self }
    }
}

/// memblock's two region lists and its allocation policy.
#[derive(Clone, Debug)]
pub(crate) struct Memblock {
    memory: Vec<Region>,
    /// Sorted, merged.
    reserved: Vec<ByteRange>,
    /// `memblock.current_limit`.
    current_limit: u64,
    /// `movable_node`: allocations skip hotpluggable memory.
    skip_hotplug: bool,
    bottom_up: bool,
    trace: Vec<MemblockOp>,
}

/// Adds `[s, e)` to a sorted, merged range list.
fn insert_range(list: &mut Vec<ByteRange>, s: u64, e: u64) {
    if s >= e {
        return;
    }
    let mut out: Vec<ByteRange> = Vec::with_capacity(list.len() + 1);
    let (mut s, mut e) = (s, e);
    let mut placed = false;
    for &(a, b) in list.iter() {
        if b < s {
            out.push((a, b));
        } else if e < a {
            if !placed {
                out.push((s, e));
                placed = true;
            }
            out.push((a, b));
        } else {
            s = s.min(a);
            e = e.max(b);
        }
    }
    if !placed {
        out.push((s, e));
        out.sort_unstable();
    }
    *list = out;
}

/// Removes `[s, e)` from a sorted range list.
fn remove_range(list: &mut Vec<ByteRange>, s: u64, e: u64) {
    *list = list
        .iter()
        .flat_map(|&(a, b)| [(a, b.min(s)), (a.max(e), b)])
        .filter(|(a, b)| a < b)
        .collect();
}

impl Memblock {
    /// `memory`: `(start, end, nid)` byte ranges; `hotplug`: the byte
    /// ranges flagged hotpluggable, skipped when `skip_hotplug`.
    pub(crate) fn new(
        memory: &[(u64, u64, u32)],
        hotplug: &[ByteRange],
        skip_hotplug: bool,
    ) -> Self {
        let mut regions = Vec::new();
        for &(s, e, nid) in memory {
            let mut cuts = vec![s, e];
            for &(hs, he) in hotplug {
                cuts.extend([hs, he].into_iter().filter(|&c| c > s && c < e));
            }
            cuts.sort_unstable();
            cuts.dedup();
            for w in cuts.windows(2) {
                let hot = hotplug.iter().any(|&(hs, he)| hs <= w[0] && w[1] <= he);
                regions.push(Region {
                    start: w[0],
                    end: w[1],
                    nid,
                    hotplug: hot,
                });
            }
        }
        regions.sort_unstable_by_key(|r| r.start);
        let current_limit = regions.iter().map(|r| r.end).max().unwrap_or(0);
        Memblock {
            memory: regions,
            reserved: Vec::new(),
            current_limit,
            skip_hotplug,
            bottom_up: false,
            trace: Vec::new(),
        }
    }

    /// `memblock_set_bottom_up`.
    pub(crate) fn set_bottom_up(&mut self, on: bool) {
        self.bottom_up = on;
    }

    /// `memblock_reserve` (no trace: the callers' own reservations).
    pub(crate) fn reserve(&mut self, s: u64, e: u64) {
        insert_range(&mut self.reserved, s, e);
    }

    /// `memblock_phys_free(start, end - start)`.
    pub(crate) fn free(&mut self, start: u64, end: u64, caller: &'static str) {
        if start >= end {
            return;
        }
        remove_range(&mut self.reserved, start, end);
        self.trace.push(MemblockOp::Free { start, end, caller });
    }

    /// The free parts of memory on `nid` (any node when `None`), in
    /// address order.
    fn free_ranges(&self, nid: Option<u32>) -> Vec<ByteRange> {
        let mut out = Vec::new();
        for r in &self.memory {
            if nid.is_some_and(|n| n != r.nid) || (self.skip_hotplug && r.hotplug) {
                continue;
            }
            let mut at = r.start;
            for &(a, b) in &self.reserved {
                if b <= at {
                    continue;
                }
                if a >= r.end {
                    break;
                }
                if a > at {
                    out.push((at, a));
                }
                at = at.max(b);
            }
            if at < r.end {
                out.push((at, r.end));
            }
        }
        out
    }

    /// `memblock_find_in_range_node`.
    fn find(&self, size: u64, align: u64, start: u64, end: u64, nid: Option<u32>) -> Option<u64> {
        let end = if end == 0 { self.current_limit } else { end };
        let start = start.max(PAGE_SIZE);
        let end = end.max(start);
        let clamp = |(a, b): ByteRange| (a.clamp(start, end), b.clamp(start, end));
        let free = self.free_ranges(nid);
        if self.bottom_up {
            free.into_iter().map(clamp).find_map(|(a, b)| {
                let cand = a.next_multiple_of(align);
                (cand < b && b - cand >= size).then_some(cand)
            })
        } else {
            free.into_iter().rev().map(clamp).find_map(|(a, b)| {
                if b < size {
                    return None;
                }
                let cand = (b - size) / align * align;
                (cand >= a).then_some(cand)
            })
        }
    }

    /// `memblock_alloc_range_nid`: on `nid`, then (unless `exact`) on any
    /// node.
    fn alloc_range_nid(&mut self, r: &Request, min: u64, max: u64, exact: bool) -> Option<u64> {
        let align = if r.align == 0 {
            SMP_CACHE_BYTES
        } else {
            r.align
        };
        let found = self.find(r.size, align, min, max, r.nid).or_else(|| {
            (r.nid.is_some() && !exact)
                .then(|| self.find(r.size, align, min, max, None))
                .flatten()
        })?;
        self.reserve(found, found + r.size);
        Some(found)
    }

    /// Allocates as the entry point `r.api` does; the result is traced.
    pub(crate) fn alloc(&mut self, r: Request) -> Option<u64> {
        let at = match r.api {
            AllocApi::PhysRange | AllocApi::PhysTryNid => {
                self.alloc_range_nid(&r, r.min_addr, r.max_addr, false)
            }
            // memblock_alloc_internal: the limit is at most the current
            // one; without luck above `min_addr`, anywhere below.
            AllocApi::TryNid | AllocApi::TryNidRaw | AllocApi::ExactNidRaw => {
                let exact = r.api == AllocApi::ExactNidRaw;
                let max = if r.max_addr > self.current_limit {
                    self.current_limit
                } else {
                    r.max_addr
                };
                self.alloc_range_nid(&r, r.min_addr, max, exact)
                    .or_else(|| {
                        (r.min_addr != 0)
                            .then(|| self.alloc_range_nid(&r, 0, max, exact))
                            .flatten()
                    })
            }
        };
        self.trace.push(MemblockOp::Alloc {
            api: r.api,
            size: r.size,
            align: r.align,
            nid: r.nid,
            min_addr: r.min_addr,
            max_addr: r.max_addr,
            caller: r.caller,
            at,
        });
        at
    }

    /// The pfn ranges any reservation touches (a partly reserved page is
    /// never freed to the buddy allocator).
    pub(crate) fn touched_pfns(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &(s, e) in &self.reserved {
            let (ps, pe) = (s / PAGE_SIZE, e.div_ceil(PAGE_SIZE));
            match out.last_mut() {
                Some(last) if last.1 >= ps => last.1 = last.1.max(pe),
                _ => out.push((ps, pe)),
            }
        }
        out
    }

    pub(crate) fn into_trace(self) -> Vec<MemblockOp> {
        self.trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_gib() -> Memblock {
        Memblock::new(
            &[(0x1000, 0x9f000, 0), (0x100000, 0x3ffe0000, 0)],
            &[],
            false,
        )
    }

    #[test]
    fn small_allocations_pack_top_down_64_bytes_apart() {
        let mut m = one_gib();
        let a = m.alloc(Request::any(73, 64, "a")).unwrap();
        let b = m.alloc(Request::any(75, 64, "b")).unwrap();
        assert_eq!(a, 0x3ffe0000 - 128);
        assert_eq!(b, a - 128);
        assert_eq!(m.touched_pfns(), vec![(0x3ffdf, 0x3ffe0)]);
    }

    #[test]
    fn a_page_aligned_request_skips_the_partly_used_page() {
        let mut m = one_gib();
        m.alloc(Request::any(8, 64, "a")).unwrap();
        let p = m.alloc(Request::any(4096, 4096, "b")).unwrap();
        assert_eq!(p, 0x3ffde000);
        // The next small one fills the first page again.
        let c = m.alloc(Request::any(8, 64, "c")).unwrap();
        assert_eq!(c, 0x3ffdff80);
    }

    #[test]
    fn a_node_request_falls_back_to_any_node_unless_exact() {
        let mut m = Memblock::new(
            &[(0x100000, 0x200000, 0), (0x200000, 0x300000, 1)],
            &[],
            false,
        );
        m.reserve(0x200000, 0x300000);
        let r = Request::any(0x1000, 0x1000, "x").on(Some(1));
        assert_eq!(m.alloc(r), Some(0x1ff000));
        assert_eq!(m.alloc(r.via(AllocApi::ExactNidRaw)), None);
    }

    #[test]
    fn a_lower_bound_is_dropped_when_nothing_fits_above_it() {
        let mut m = one_gib();
        let r = Request::any(0x1000, 0x1000, "x").within(0x3ffe0000, 0);
        assert_eq!(m.alloc(r), Some(0x3ffdf000));
        assert_eq!(
            m.alloc(
                Request::any(0x1000, 0x1000, "x")
                    .within(0x3ffe0000, 0)
                    .via(AllocApi::PhysRange)
            ),
            None
        );
    }

    #[test]
    fn hotpluggable_memory_is_skipped_under_movable_node() {
        let mut m = Memblock::new(&[(0x100000, 0x400000, 0)], &[(0x300000, 0x400000)], true);
        assert_eq!(m.alloc(Request::any(0x1000, 0x1000, "x")), Some(0x2ff000));
    }

    #[test]
    fn frees_reopen_the_range() {
        let mut m = one_gib();
        let p = m.alloc(Request::any(0x2000, 0x1000, "x")).unwrap();
        m.free(p, p + 0x1000, "y");
        assert_eq!(m.touched_pfns(), vec![((p >> 12) + 1, (p >> 12) + 2)]);
        assert_eq!(m.alloc(Request::any(0x1000, 0x1000, "z")), Some(p));
    }

    #[test]
    fn bottom_up_takes_the_lowest_fit() {
        let mut m = one_gib();
        m.set_bottom_up(true);
        assert_eq!(m.alloc(Request::any(0x1000, 0x1000, "x")), Some(0x1000));
    }
}
