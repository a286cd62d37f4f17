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

/// One region of `memblock.memory` or `memblock.reserved`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// `None`: `MAX_NUMNODES` (no node yet).
    pub nid: Option<u32>,
    /// `MEMBLOCK_HOTPLUG` (from the SRAT).
    pub hotplug: bool,
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

/// `memblock_dump_all`: both lists as they stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemblockDump {
    pub memory_size: u64,
    pub memory: Vec<Region>,
    pub reserved: Vec<Region>,
}

/// One operation on memblock, in boot order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemblockOp {
    /// `memblock_add` of `[start, end)`.
    Add {
        start: u64,
        end: u64,
    },
    /// An explicit `memblock_reserve` by `caller`.
    Reserve {
        start: u64,
        end: u64,
        caller: &'static str,
    },
    /// A request and where it landed (`None`: it failed); `fallback`: on
    /// another node than the one asked for.
    Alloc {
        api: AllocApi,
        size: u64,
        align: u64,
        /// `None` is `NUMA_NO_NODE`.
        nid: Option<u32>,
        min_addr: u64,
        max_addr: u64,
        /// The kernel function that asked, as `memblock=debug` prints it.
        caller: &'static str,
        at: Option<u64>,
        fallback: bool,
    },
    /// `memblock_phys_free` / `memblock_free` of `[start, end)`.
    Free {
        start: u64,
        end: u64,
        caller: &'static str,
    },
    Dump(MemblockDump),
}

impl MemblockOp {
    /// The lines `memblock=debug` prints for it.
    pub fn debug_lines(&self) -> Vec<String> {
        let range = |s: u64, e: u64| format!("[{s:#018x}-{:#018x}]", e - 1);
        match self {
            MemblockOp::Add { start, end } => vec![format!(
                "memblock_add: {} e820__memblock_setup+0x65/0x7d",
                range(*start, *end)
            )],
            MemblockOp::Reserve { start, end, caller } => {
                vec![format!(
                    "memblock_reserve: {} {caller}",
                    range(*start, *end)
                )]
            }
            MemblockOp::Free { start, end, caller } => {
                vec![format!(
                    "memblock_phys_free: {} {caller}",
                    range(*start, *end)
                )]
            }
            MemblockOp::Alloc {
                api,
                size,
                align,
                nid,
                min_addr,
                max_addr,
                caller,
                at,
                fallback,
            } => {
                let nid = nid.map_or(-1, i64::from);
                let mut out = Vec::new();
                let name = match api {
                    AllocApi::PhysRange => Some("memblock_phys_alloc_range"),
                    AllocApi::TryNid => Some("memblock_alloc_try_nid"),
                    AllocApi::TryNidRaw => Some("memblock_alloc_try_nid_raw"),
                    AllocApi::ExactNidRaw => Some("memblock_alloc_exact_nid_raw"),
                    AllocApi::PhysTryNid => None,
                };
                if let Some(f) = name {
                    // Only the nid-taking entry points print the node.
                    let node = if *api == AllocApi::PhysRange {
                        String::new()
                    } else {
                        format!(" nid={nid}")
                    };
                    out.push(format!(
                        "{f}: {size} bytes align={align:#x}{node} from={min_addr:#018x} max_addr={max_addr:#018x} {caller}"
                    ));
                }
                if let Some(at) = at {
                    let site = if *fallback { "0xee" } else { "0xb0" };
                    out.push(format!(
                        "memblock_reserve: {} memblock_alloc_range_nid+{site}/0x13d",
                        range(*at, at + size)
                    ));
                }
                out
            }
            MemblockOp::Dump(d) => {
                let size = |rs: &[Region]| rs.iter().map(|r| r.end - r.start).sum::<u64>();
                let mut out = vec![
                    "MEMBLOCK configuration:".to_string(),
                    format!(
                        " memory size = {:#018x} reserved size = {:#018x}",
                        d.memory_size,
                        size(&d.reserved)
                    ),
                ];
                for (name, list) in [("memory", &d.memory), ("reserved", &d.reserved)] {
                    out.push(format!(" {name}.cnt  = {:#x}", list.len()));
                    for (i, r) in list.iter().enumerate() {
                        let node = r.nid.map(|n| format!(" on node {n}")).unwrap_or_default();
                        out.push(format!(
                            " {name}[{i:#x}]\t[{:#018x}-{:#018x}], {:#018x} bytes{node} flags: {:#x}",
                            r.start,
                            r.end - 1,
                            r.end - r.start,
                            u32::from(r.hotplug)
                        ));
                    }
                }
                out
            }
        }
    }
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
#[derive(Clone, Debug, Default)]
pub(crate) struct Memblock {
    memory: Vec<Region>,
    /// What `memblock_add` added, before `memblock_trim_memory` (the
    /// dump's "memory size" keeps counting it).
    memory_size: u64,
    reserved: Vec<Region>,
    /// `memblock.current_limit`.
    current_limit: u64,
    /// `movable_node`: allocations skip hotpluggable memory.
    skip_hotplug: bool,
    bottom_up: bool,
    trace: Vec<MemblockOp>,
}

/// `memblock_merge_regions`: neighbours that touch, on the same node,
/// with the same flags, become one.
fn merge(list: &mut Vec<Region>) {
    let mut out: Vec<Region> = Vec::with_capacity(list.len());
    for &r in list.iter() {
        match out.last_mut() {
            Some(l) if l.end == r.start && l.nid == r.nid && l.hotplug == r.hotplug => {
                l.end = r.end
            }
            _ => out.push(r),
        }
    }
    *list = out;
}

/// Adds regions of no node (`MAX_NUMNODES`) and merges.
fn insert(list: &mut Vec<Region>, ranges: impl IntoIterator<Item = ByteRange>) {
    list.extend(ranges.into_iter().map(|(start, end)| Region {
        start,
        end,
        nid: None,
        hotplug: false,
    }));
    list.sort_unstable_by_key(|r| r.start);
    merge(list);
}

/// `memblock_isolate_range`: split the regions that straddle `s` or `e`.
fn isolate(list: &mut Vec<Region>, s: u64, e: u64) {
    let mut out = Vec::with_capacity(list.len() + 2);
    for &r in list.iter() {
        let mut cuts = vec![r.start];
        cuts.extend([s, e].into_iter().filter(|&c| c > r.start && c < r.end));
        cuts.push(r.end);
        for w in cuts.windows(2) {
            out.push(Region {
                start: w[0],
                end: w[1],
                ..r
            });
        }
    }
    *list = out;
}

impl Memblock {
    /// An empty memblock whose allocations skip hotpluggable memory when
    /// `skip_hotplug` (`movable_node`).
    pub(crate) fn new(skip_hotplug: bool) -> Self {
        Memblock {
            skip_hotplug,
            ..Memblock::default()
        }
    }

    /// `memblock_add` (traced) of `[start, end)`.
    pub(crate) fn add(&mut self, start: u64, end: u64) {
        insert(&mut self.memory, [(start, end)]);
        self.memory_size += end - start;
        self.current_limit = self.current_limit.max(end);
        self.trace.push(MemblockOp::Add { start, end });
    }

    /// `memblock_trim_memory(PAGE_SIZE)`.
    pub(crate) fn trim_memory(&mut self) {
        for r in &mut self.memory {
            r.start = r.start.next_multiple_of(PAGE_SIZE);
            r.end = r.end / PAGE_SIZE * PAGE_SIZE;
        }
        self.memory.retain(|r| r.start < r.end);
    }

    /// `memblock_mark_hotplug` of `[s, e)`.
    pub(crate) fn mark_hotplug(&mut self, s: u64, e: u64) {
        isolate(&mut self.memory, s, e);
        for r in self
            .memory
            .iter_mut()
            .filter(|r| s <= r.start && r.end <= e)
        {
            r.hotplug = true;
        }
        merge(&mut self.memory);
    }

    /// `memblock_set_node` of `[s, e)` on both lists.
    pub(crate) fn set_node(&mut self, s: u64, e: u64, nid: u32) {
        for list in [&mut self.memory, &mut self.reserved] {
            isolate(list, s, e);
            for r in list.iter_mut().filter(|r| s <= r.start && r.end <= e) {
                r.nid = Some(nid);
            }
            merge(list);
        }
    }

    /// `memblock_set_bottom_up`.
    pub(crate) fn set_bottom_up(&mut self, on: bool) {
        self.bottom_up = on;
    }

    /// `memblock_add_range` on the reserved list: the parts of `[s, e)`
    /// not yet reserved become regions of no node.
    fn reserve_range(&mut self, s: u64, e: u64) {
        let new = self.unreserved(s, e);
        insert(&mut self.reserved, new);
    }

    /// The parts of `[s, e)` no reservation covers, in order.
    fn unreserved(&self, s: u64, e: u64) -> Vec<ByteRange> {
        let mut at = s;
        let mut out = Vec::new();
        for r in &self.reserved {
            if r.end <= at {
                continue;
            }
            if r.start >= e {
                break;
            }
            if r.start > at {
                out.push((at, r.start));
            }
            at = at.max(r.end);
        }
        if at < e {
            out.push((at, e));
        }
        out
    }

    /// `memblock_reserve` before `memblock=debug` takes effect (untraced).
    pub(crate) fn reserve_early(&mut self, s: u64, e: u64) {
        self.reserve_range(s, e);
    }

    /// `memblock_reserve` by `caller` (traced).
    pub(crate) fn reserve(&mut self, s: u64, e: u64, caller: &'static str) {
        self.reserve_range(s, e);
        self.trace.push(MemblockOp::Reserve {
            start: s,
            end: e,
            caller,
        });
    }

    /// `memblock_phys_free(start, end - start)`.
    pub(crate) fn free(&mut self, start: u64, end: u64, caller: &'static str) {
        if start >= end {
            return;
        }
        isolate(&mut self.reserved, start, end);
        self.reserved.retain(|r| r.end <= start || r.start >= end);
        self.trace.push(MemblockOp::Free { start, end, caller });
    }

    /// `memblock_dump_all` (traced).
    pub(crate) fn dump(&mut self) {
        self.trace.push(MemblockOp::Dump(MemblockDump {
            memory_size: self.memory_size,
            memory: self.memory.clone(),
            reserved: self.reserved.clone(),
        }));
    }

    /// The free parts of memory on `nid` (any node when `None`), in
    /// address order.
    fn free_ranges(&self, nid: Option<u32>) -> Vec<ByteRange> {
        self.memory
            .iter()
            .filter(|r| nid.is_none_or(|n| Some(n) == r.nid) && !(self.skip_hotplug && r.hotplug))
            .flat_map(|r| self.unreserved(r.start, r.end))
            .collect()
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
    /// node; whether it fell back.
    fn alloc_range_nid(
        &mut self,
        r: &Request,
        min: u64,
        max: u64,
        exact: bool,
    ) -> Option<(u64, bool)> {
        let align = if r.align == 0 {
            SMP_CACHE_BYTES
        } else {
            r.align
        };
        let found = match self.find(r.size, align, min, max, r.nid) {
            Some(at) => (at, false),
            None if r.nid.is_some() && !exact => (self.find(r.size, align, min, max, None)?, true),
            None => return None,
        };
        self.reserve_range(found.0, found.0 + r.size);
        Some(found)
    }

    /// Allocates as the entry point `r.api` does; the result is traced.
    pub(crate) fn alloc(&mut self, r: Request) -> Option<u64> {
        let got = match r.api {
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
            at: got.map(|g| g.0),
            fallback: got.is_some_and(|g| g.1),
        });
        got.map(|g| g.0)
    }

    /// The pfn ranges any reservation touches (a partly reserved page is
    /// never freed to the buddy allocator).
    pub(crate) fn touched_pfns(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for r in &self.reserved {
            let (ps, pe) = (r.start / PAGE_SIZE, r.end.div_ceil(PAGE_SIZE));
            match out.last_mut() {
                Some(last) if last.1 >= ps => last.1 = last.1.max(pe),
                _ => out.push((ps, pe)),
            }
        }
        out
    }

    /// The operations traced since the last call.
    pub(crate) fn take_trace(&mut self) -> Vec<MemblockOp> {
        std::mem::take(&mut self.trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memblock(ranges: &[(u64, u64, u32)], hotplug: &[(u64, u64)], skip: bool) -> Memblock {
        let mut m = Memblock::new(skip);
        for &(s, e, nid) in ranges {
            m.add(s, e);
            m.set_node(s, e, nid);
        }
        for &(s, e) in hotplug {
            m.mark_hotplug(s, e);
        }
        m
    }

    fn one_gib() -> Memblock {
        memblock(
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
        let mut m = memblock(
            &[(0x100000, 0x200000, 0), (0x200000, 0x300000, 1)],
            &[],
            false,
        );
        m.reserve_early(0x200000, 0x300000);
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
        let mut m = memblock(&[(0x100000, 0x400000, 0)], &[(0x300000, 0x400000)], true);
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

    #[test]
    fn reservations_merge_only_on_the_same_node() {
        let mut m = one_gib();
        m.reserve_early(0x1000, 0x2000);
        m.set_node(0, 0x1800, 0);
        m.reserve_early(0x2000, 0x3000);
        m.dump();
        let MemblockOp::Dump(d) = m.take_trace().pop().unwrap() else {
            panic!("no dump")
        };
        let regions: Vec<(u64, u64, Option<u32>)> =
            d.reserved.iter().map(|r| (r.start, r.end, r.nid)).collect();
        assert_eq!(
            regions,
            vec![(0x1000, 0x1800, Some(0)), (0x1800, 0x3000, None)]
        );
    }

    #[test]
    fn debug_lines_are_the_kernels() {
        let mut m = one_gib();
        m.take_trace();
        m.alloc(Request::any(73, 64, "acpi_parse_hpet+0xc3/0x132"));
        let lines: Vec<String> = m
            .take_trace()
            .iter()
            .flat_map(|op| op.debug_lines())
            .collect();
        assert_eq!(
            lines,
            vec![
                "memblock_alloc_try_nid: 73 bytes align=0x40 nid=-1 from=0x0000000000000000 max_addr=0x0000000000000000 acpi_parse_hpet+0xc3/0x132",
                "memblock_reserve: [0x000000003ffdff80-0x000000003ffdffc8] memblock_alloc_range_nid+0xb0/0x13d",
            ]
        );
    }
}
