//! Boot: turn a [`MachineSpec`] into a running [`System`] (spec 01 §2, §6.6,
//! §7.1, §7.2, §4.3): the kernel's e820 edits, memblock, block size, zone
//! ranges (with `kernelcore=`/`movablecore=`/`movable_node`), present and
//! managed pages, boot-time reservations, boot memory blocks and node states.

use crate::block::{BlockState, MemoryBlock, OnlineType};
use crate::cmdline::{CoreSpec, KernelCmdline, MemmapOnMemory, OnlinePolicy};
use crate::iomem::Iomem;
use crate::machine::{E820Kind, MachineError, MachineSpec};
use crate::pages::{PageMap, PageState};
use crate::system::{Node, Params, System};
use crate::units::{PAGES_PER_SECTION, PAGE_SHIFT};
use crate::zone::{ZoneType, MAX_NR_ZONES};
use crate::KernelVersion;
use std::collections::BTreeMap;

const MAX_DMA_PFN: u64 = (16 << 20) >> PAGE_SHIFT;
const MAX_DMA32_PFN: u64 = (4u64 << 30) >> PAGE_SHIFT;
const MAX_ORDER_NR_PAGES: u64 = 1024;
/// The kernel is loaded at 16 MiB (`CONFIG_PHYSICAL_START`).
pub(crate) const KERNEL_LOAD_PFN: u64 = (16 << 20) >> PAGE_SHIFT;
/// x86 reserves the first 1 MiB for the BIOS and real mode.
const LOW_RESERVED_PFN: u64 = 256;
/// Why a boot failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error("no memory left after the kernel's e820 edits")]
    NoMemory,
}

/// Pages of the SMP alternatives (`__smp_locks`), 36 KiB.
pub(crate) const SMP_ALTERNATIVES_PAGES: u64 = 9;

/// `alternative_instructions`: the SMP alternatives are freed unless the
/// kernel patched itself for one CPU on a machine where more may come (one
/// CPU present, more possible: it keeps them to patch back).
pub(crate) fn frees_smp_alternatives(spec: &MachineSpec) -> bool {
    spec.present_cpu_count() != 1 || spec.possible_cpu_count() == 1
}

/// Pages of the image that stay reserved for good.
pub(crate) fn kernel_image_pages(spec: &MachineSpec) -> u64 {
    spec.boot_alloc.kernel_image_pages
        + if frees_smp_alternatives(spec) {
            0
        } else {
            SMP_ALTERNATIVES_PAGES
        }
}

/// A half-open pfn range.
type Range = (u64, u64);

pub(crate) fn overlap(a: Range, b: Range) -> u64 {
    a.1.min(b.1).saturating_sub(a.0.max(b.0))
}

/// x86 memory block size (spec 01 §2).
pub fn memory_block_size(boot_mem_end: u64, hypervisor: bool) -> u64 {
    const MIB128: u64 = 128 << 20;
    const GIB2: u64 = 2 << 30;
    if boot_mem_end < (64u64 << 30) {
        return MIB128;
    }
    if !hypervisor {
        return GIB2;
    }
    let mut bz = GIB2;
    while bz > MIB128 && !boot_mem_end.is_multiple_of(bz) {
        bz /= 2;
    }
    bz
}

/// memblock.memory: the RAM of the kernel's e820 table (after its edits,
/// `early_alloc::kernel_e820`), page-aligned inward. Also returns the byte
/// ranges iomem shows as System RAM.
fn memblock_ranges(spec: &MachineSpec, mem_limit: Option<u64>) -> (Vec<Range>, Vec<(u64, u64)>) {
    let mut pfns = Vec::new();
    let mut bytes = Vec::new();
    for (s, end, _) in crate::early_alloc::kernel_e820(spec, mem_limit)
        .into_iter()
        .filter(|e| e.2)
    {
        bytes.push((s, end));
        let (ps, pe) = (s.div_ceil(4096), end / 4096);
        if ps < pe {
            pfns.push((ps, pe));
        }
    }
    (pfns, bytes)
}

/// Per node, the memblock ranges that belong to it.
pub(crate) fn node_ranges(spec: &MachineSpec, memblock: &[Range]) -> BTreeMap<u32, Vec<Range>> {
    let mut out: BTreeMap<u32, Vec<Range>> =
        spec.nodes.iter().map(|n| (n.id, Vec::new())).collect();
    for &(s, e) in memblock {
        // Split at SRAT boundaries.
        let mut cuts: Vec<u64> = vec![s, e];
        for n in &spec.nodes {
            for &(a, b) in &n.mem {
                for c in [a >> PAGE_SHIFT, b >> PAGE_SHIFT] {
                    if c > s && c < e {
                        cuts.push(c);
                    }
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        for w in cuts.windows(2) {
            let nid = spec.node_of_addr(w[0] << PAGE_SHIFT);
            out.entry(nid).or_default().push((w[0], w[1]));
        }
    }
    out
}

/// The memblock ranges still flagged hotpluggable when the zones are laid
/// out, with their node: SRAT "hot pluggable" ranges intersected with boot
/// RAM, less every node that holds memory the kernel reserved before NUMA
/// set-up (x86 `numa_clear_kernel_node_hotplug`: the low 1 MiB and the
/// kernel image, so the node they are in is never hot-removable).
pub(crate) fn hotpluggable_memblock(
    spec: &MachineSpec,
    nodes: &BTreeMap<u32, Vec<Range>>,
) -> Vec<(u32, Range)> {
    let kernel_nodes = [0, KERNEL_LOAD_PFN].map(|pfn| spec.node_of_addr(pfn << PAGE_SHIFT));
    let mut out = Vec::new();
    for n in spec.nodes.iter().filter(|n| !kernel_nodes.contains(&n.id)) {
        for &(a, b) in &n.hotplug {
            let (hs, he) = (a >> PAGE_SHIFT, b >> PAGE_SHIFT);
            for &(s, e) in &nodes[&n.id] {
                if s < he && hs < e {
                    out.push((n.id, (s.max(hs), e.min(he))));
                }
            }
        }
    }
    out
}

/// `find_zone_movable_pfns_for_nodes` (spec 01 §7.2): the first pfn of
/// ZONE_MOVABLE per node (absent = none).
fn zone_movable_pfns(
    cmd: &KernelCmdline,
    spec: &MachineSpec,
    nodes: &BTreeMap<u32, Vec<Range>>,
    usable_start: u64,
) -> BTreeMap<u32, u64> {
    let mut zmp: BTreeMap<u32, u64> = BTreeMap::new();
    let totalpages: u64 = nodes.values().flatten().map(|r| r.1 - r.0).sum();
    let with_mem: Vec<u32> = nodes
        .iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(&n, _)| n)
        .collect();

    if cmd.movable_node {
        for (nid, (s, _)) in hotpluggable_memblock(spec, nodes) {
            let v = zmp.entry(nid).or_insert(u64::MAX);
            *v = (*v).min(s);
        }
    } else if cmd.kernelcore == Some(CoreSpec::Mirror) {
        // No memory is mirrored in our machines: 6.1 then makes all memory
        // at or above 4 GiB movable.
        for (&nid, ranges) in nodes {
            for &(s, _) in ranges.iter().filter(|r| r.0 >= MAX_DMA32_PFN) {
                let v = zmp.entry(nid).or_insert(u64::MAX);
                *v = (*v).min(s);
            }
        }
    } else {
        let pct = |p: u64| totalpages * 100 * p / 10000;
        let mut required_kernelcore = match cmd.kernelcore {
            Some(CoreSpec::Pages(p)) => p,
            Some(CoreSpec::Percent(p)) => pct(p),
            _ => 0,
        };
        let movablecore = match cmd.movablecore {
            Some(CoreSpec::Pages(p)) => Some(p),
            Some(CoreSpec::Percent(p)) => Some(pct(p)),
            _ => None,
        };
        if let Some(mc) = movablecore {
            let mc = (mc.div_ceil(MAX_ORDER_NR_PAGES) * MAX_ORDER_NR_PAGES).min(totalpages);
            required_kernelcore = required_kernelcore.max(totalpages - mc);
        }
        if required_kernelcore == 0 || required_kernelcore >= totalpages {
            return BTreeMap::new();
        }
        let mut usable_nodes = with_mem.len() as u64;
        loop {
            let kernelcore_node = required_kernelcore / usable_nodes.max(1);
            for &nid in &with_mem {
                if required_kernelcore < kernelcore_node {
                    // recomputed below as in the kernel
                }
                let mut kernelcore_remaining = if required_kernelcore < kernelcore_node {
                    required_kernelcore / usable_nodes.max(1)
                } else {
                    kernelcore_node
                };
                if kernelcore_remaining == 0 {
                    continue;
                }
                for &(s0, end) in &nodes[&nid] {
                    let mut start = s0.max(*zmp.get(&nid).unwrap_or(&0));
                    if start >= end {
                        continue;
                    }
                    if start < usable_start {
                        let kernel_pages = end.min(usable_start) - start;
                        kernelcore_remaining = kernelcore_remaining.saturating_sub(kernel_pages);
                        required_kernelcore = required_kernelcore.saturating_sub(kernel_pages);
                        if end <= usable_start {
                            zmp.insert(nid, end);
                            continue;
                        }
                        start = usable_start;
                    }
                    let size_pages = (end - start).min(kernelcore_remaining);
                    zmp.insert(nid, start + size_pages);
                    required_kernelcore -= required_kernelcore.min(size_pages);
                    kernelcore_remaining -= size_pages;
                    if kernelcore_remaining == 0 {
                        break;
                    }
                }
            }
            usable_nodes = usable_nodes.saturating_sub(1);
            if !(usable_nodes > 0 && required_kernelcore > usable_nodes) {
                break;
            }
        }
    }
    // Align up to MAX_ORDER_NR_PAGES; a start at or beyond the node's end
    // means no ZONE_MOVABLE there.
    let mut out = BTreeMap::new();
    for (&nid, ranges) in nodes {
        let Some(&m) = zmp.get(&nid) else { continue };
        if m == u64::MAX || ranges.is_empty() {
            continue;
        }
        let node_end = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let m = m.div_ceil(MAX_ORDER_NR_PAGES) * MAX_ORDER_NR_PAGES;
        if m < node_end {
            out.insert(nid, m);
        }
    }
    out
}

/// Allocate `n` pages top-down below `limit` from the free (not yet
/// reserved) memblock memory.
fn alloc_top_down(free: &mut Vec<Range>, n: u64, limit: u64) -> Vec<Range> {
    let mut need = n;
    let mut got = Vec::new();
    let mut i = free.len();
    while need > 0 && i > 0 {
        i -= 1;
        let (s, e) = free[i];
        let e2 = e.min(limit);
        if e2 <= s {
            continue;
        }
        let take = need.min(e2 - s);
        let a = e2 - take;
        got.push((a, e2));
        need -= take;
        // Split free[i] around [a, e2).
        let mut repl = Vec::new();
        if s < a {
            repl.push((s, a));
        }
        if e2 < e {
            repl.push((e2, e));
        }
        free.splice(i..=i, repl);
    }
    got
}

/// Reserve `[s, e)` out of the free list; returns what was actually taken.
fn reserve_fixed(free: &mut Vec<Range>, s: u64, e: u64) -> Vec<Range> {
    let mut got = Vec::new();
    let mut out = Vec::new();
    for &(a, b) in free.iter() {
        if b <= s || a >= e {
            out.push((a, b));
            continue;
        }
        if a < s {
            out.push((a, s));
        }
        got.push((a.max(s), b.min(e)));
        if b > e {
            out.push((e, b));
        }
    }
    *free = out;
    got
}

/// `pci_swiotlb_detect`: without an IOMMU the software IO TLB is set up
/// when memory may exist above 4 GiB: RAM there, or a hotplug range the
/// SRAT announces (QEMU adds one for its DIMM area "for Linux to enable
/// SWIOTLB when booted with less than 4G of RAM"). A guest without memory
/// hotplug and below 4 GiB has none (recorded: `-m 1G` without slots).
pub(crate) fn swiotlb_enabled(spec: &MachineSpec, memblock: &[Range]) -> bool {
    if spec.boot_alloc.swiotlb_pages == 0 {
        return false;
    }
    let srat = spec.acpi.as_ref().is_none_or(|a| a.numa);
    let max_possible = memblock
        .iter()
        .map(|r| r.1 << PAGE_SHIFT)
        .chain(
            spec.nodes
                .iter()
                .flat_map(|n| n.hotplug.iter())
                .filter(|_| srat)
                .map(|r| r.1),
        )
        .max()
        .unwrap_or(0);
    max_possible > MAX_DMA32_PFN << PAGE_SHIFT
}

/// Pages of each DMA atomic pool (`dma_atomic_pool_init`): 128 KiB per GiB
/// of RAM, a power of two of pages, 128 KiB to 4 MiB (6.1 guests of 1, 2
/// and 4 GiB showed 128, 256 and 512 KiB).
pub(crate) fn atomic_pool_pages(totalram_pages: u64) -> u64 {
    (totalram_pages / 8192).next_power_of_two().clamp(32, 1024)
}

/// A table `alloc_large_system_hash` sizes: buckets of `bucket` bytes, one
/// per 2^`scale` bytes of the kernel's memory (`nr_kernel_pages` rounded up
/// to a MiB) or a `fixed` count, a power of two within `[low, high]`
/// (`high` 0: a sixteenth of memory), at least a page. An `early` one
/// (`HASH_EARLY`) comes from memblock while the kernel boots.
pub(crate) struct LargeHash {
    bucket: u64,
    scale: u32,
    fixed: Option<u64>,
    low: u64,
    high: u64,
    early: bool,
}

impl LargeHash {
    pub(crate) const fn scaled(bucket: u64, scale: u32, low: u64, high: u64) -> Self {
        LargeHash {
            bucket,
            scale,
            fixed: None,
            low,
            high,
            early: false,
        }
    }

    pub(crate) const fn fixed(bucket: u64, entries: u64) -> Self {
        LargeHash {
            bucket,
            scale: 0,
            fixed: Some(entries),
            low: entries,
            high: entries,
            early: false,
        }
    }

    /// The same, at most `high` buckets.
    pub(crate) const fn at_most(self, high: u64) -> Self {
        LargeHash { high, ..self }
    }

    /// The same, from memblock at boot (`HASH_EARLY`).
    const fn early(self) -> Self {
        LargeHash {
            early: true,
            ..self
        }
    }

    /// Bytes of the table for `kernel_pages`.
    pub(crate) fn bytes(&self, kernel_pages: u64) -> u64 {
        self.entries(kernel_pages) * self.bucket
    }

    /// The bucket count for `kernel_pages` (`nr_kernel_pages`, which is
    /// `nr_all_pages` too on x86-64).
    pub(crate) fn entries(&self, kernel_pages: u64) -> u64 {
        let mut n = self.fixed.unwrap_or_else(|| {
            let k = kernel_pages.next_multiple_of(256);
            match self.scale {
                s if s > 12 => k >> (s - 12),
                s => k << (12 - s),
            }
        });
        if n * self.bucket < 4096 {
            n = 4096 / self.bucket;
        }
        n = n.next_power_of_two();
        let max = match self.high {
            0 => ((kernel_pages << 12) >> 4) / self.bucket,
            h => h,
        }
        .min(0x8000_0000);
        n = n.max(self.low).min(max);
        1 << n.ilog2()
    }

    /// The boot-log line: vmalloc'ed with `hashdist` (where an early table
    /// is allocated late too) or, unless early, beyond the buddy
    /// allocator's largest order.
    pub(crate) fn line(&self, name: &str, kernel_pages: u64, hashdist: bool) -> String {
        let entries = self.entries(kernel_pages);
        let size = self.bucket * entries;
        let order = size.div_ceil(4096).next_power_of_two().ilog2();
        let how = if hashdist || (!self.early && order > 10) {
            "vmalloc"
        } else {
            "linear"
        };
        format!("{name} hash table entries: {entries} (order: {order}, {size} bytes, {how})")
    }
}

/// The dentry and inode caches' hashes (`dcache_init_early`,
/// `inode_init_early`: one bucket per 8 and 16 KiB).
pub(crate) const DENTRY_HASH: LargeHash = LargeHash::scaled(8, 13, 0, 0).early();
pub(crate) const INODE_HASH: LargeHash = LargeHash::scaled(8, 14, 0, 0).early();

/// Pages of `struct page` a zone's memmap takes at boot (`calc_memmap_size`).
pub(crate) fn calc_memmap_size(spanned: u64, present: u64) -> u64 {
    let pages = if spanned > present + (present >> 4) {
        present
    } else {
        spanned
    };
    (pages * 64).div_ceil(4096)
}

/// `nr_kernel_pages` as `free_area_init_core` counts it: every zone's
/// present pages less its memmap (x86-64 has no highmem, so ZONE_MOVABLE
/// counts too), less the DMA reserve (the first MiB's memblock memory).
pub(crate) fn nr_kernel_pages<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    memblock: &[Range],
) -> u64 {
    let dma_reserve: u64 = memblock
        .iter()
        .map(|&(s, e)| e.min(LOW_RESERVED_PFN).saturating_sub(s))
        .sum();
    nodes
        .flat_map(|n| n.zones.iter())
        .filter(|z| z.populated())
        .map(|z| z.present - calc_memmap_size(z.spanned, z.present))
        .sum::<u64>()
        .saturating_sub(dma_reserve)
}

/// Where the initrd is while the kernel boots, as pfns: where QEMU loads
/// it, just below the ACPI tables at the end of the RAM below 4 GiB (the
/// boot log's `RAMDISK:` line), unless `mem=` cut that memory off: then
/// `relocate_initrd` moved it to the top of what is left.
pub(crate) fn initrd_pfns(spec: &MachineSpec) -> Option<Range> {
    let pages = spec.acpi.as_ref()?.initrd_bytes.div_ceil(4096);
    let base = crate::bootlog::acpi_base(spec)? >> PAGE_SHIFT;
    let limit = KernelCmdline::parse(&spec.cmdline, spec.version)
        .mem_limit
        .map(|l| l >> PAGE_SHIFT);
    let top = match limit {
        Some(l) if l < base => {
            let (ram, _) = memblock_ranges(spec, Some(l << PAGE_SHIFT));
            ram.last()?.1
        }
        _ => base,
    };
    (pages > 0).then(|| top.checked_sub(pages).map(|s| (s, top)))?
}

/// Boot-time reservations that stay for good (spec: what makes `managed`
/// lower than `present` at boot), as pfn ranges: the first MiB, what the
/// image keeps, and the pages the boot's memblock allocations touch
/// ([`crate::early_alloc`]), which are returned too.
fn boot_reservations(
    spec: &MachineSpec,
    memblock: &[Range],
    nodes: &BTreeMap<u32, Vec<Range>>,
    kernel_pages: u64,
) -> (Vec<Range>, crate::early_alloc::EarlyAllocs) {
    let a = spec.boot_alloc;
    let mut free: Vec<Range> = memblock.to_vec();
    let mut reserved = Vec::new();
    reserved.extend(reserve_fixed(&mut free, 0, LOW_RESERVED_PFN));
    reserved.extend(reserve_fixed(
        &mut free,
        KERNEL_LOAD_PFN,
        KERNEL_LOAD_PFN + kernel_image_pages(spec),
    ));
    let page_tables = crate::direct_map::memblock_page_tables(
        memblock,
        (KERNEL_LOAD_PFN, KERNEL_LOAD_PFN + kernel_image_pages(spec)),
        &initrd_pfns(spec).into_iter().collect::<Vec<_>>(),
    );
    let early = crate::early_alloc::x86_boot(
        spec,
        memblock,
        nodes,
        kernel_pages,
        &page_tables,
        swiotlb_enabled(spec, memblock),
    );
    for &(s, e) in &early.reserved {
        reserved.extend(reserve_fixed(&mut free, s, e));
    }
    // A machine file's further top-down reservations, on the last memory
    // node.
    if let Some(end) = nodes.values().flat_map(|r| r.iter().map(|r| r.1)).max() {
        reserved.extend(alloc_top_down(&mut free, a.fixed_topdown_pages, end));
    }
    reserved.sort_unstable();
    (reserved, early)
}

impl System {
    /// Boot a machine: everything Linux has set up by the time user space
    /// runs.
    pub fn boot(spec: &MachineSpec) -> Result<System, BootError> {
        Self::boot_traced(spec).map(|(sys, _)| sys)
    }

    /// [`System::boot`], with the boot's memblock operations.
    fn boot_traced(
        spec: &MachineSpec,
    ) -> Result<(System, Vec<crate::memblock::MemblockOp>), BootError> {
        spec.validate()?;
        let version = spec.version;
        let cmd = KernelCmdline::parse(&spec.cmdline, version);
        let (memblock, ram_bytes) = memblock_ranges(spec, cmd.mem_limit);
        if memblock.is_empty() {
            return Err(BootError::NoMemory);
        }
        let max_pfn = memblock.iter().map(|r| r.1).max().unwrap_or(0);
        let min_pfn = memblock[0].0;
        let block_size = memory_block_size(max_pfn << PAGE_SHIFT, spec.hypervisor);
        let pages_per_block = block_size >> PAGE_SHIFT;

        // Architectural zone ranges.
        let limits = [MAX_DMA_PFN, MAX_DMA32_PFN.min(max_pfn), max_pfn];
        let mut arch = [(0u64, 0u64); 3];
        let mut low = min_pfn;
        for (i, lim) in limits.into_iter().enumerate() {
            let high = lim.max(low);
            arch[i] = (low, high);
            low = high;
        }
        let movable_zone = if arch[2].1 > arch[2].0 {
            ZoneType::Normal
        } else {
            ZoneType::Dma32
        };
        let nodes_mem = node_ranges(spec, &memblock);
        let zmp = zone_movable_pfns(&cmd, spec, &nodes_mem, arch[movable_zone.idx()].0);

        let mut nodes: BTreeMap<u32, Node> = BTreeMap::new();
        for ns in &spec.nodes {
            let mut node = Node::new(ns.id);
            node.cpus = ns.cpus.clone();
            node.generic_initiator = ns.generic_initiator;
            let ranges = &nodes_mem[&ns.id];
            if let (Some(ns_pfn), Some(ne_pfn)) = (
                ranges.first().map(|r| r.0),
                ranges.iter().map(|r| r.1).max(),
            ) {
                let m = zmp.get(&ns.id).copied();
                for (i, &(lo, hi)) in arch.iter().enumerate() {
                    let mut zs = ns_pfn.clamp(lo, hi);
                    let mut ze = ne_pfn.clamp(lo, hi);
                    if let Some(m) = m {
                        // adjust_zone_range_for_zone_movable
                        if i < ZoneType::Movable.idx() {
                            if zs < m && ze > m {
                                ze = m;
                            } else if zs >= m {
                                zs = ze;
                            }
                        }
                    }
                    let span = (zs, ze);
                    node.boot_zone_ranges[i] = span;
                    let present: u64 = ranges.iter().map(|&r| overlap(r, span)).sum();
                    let z = &mut node.zones[i];
                    if ze > zs {
                        z.start_pfn = zs;
                        z.spanned = ze - zs;
                    }
                    z.present = present;
                    z.present_early = present;
                }
                if let Some(m) = m {
                    let hi = arch[movable_zone.idx()].1.min(ne_pfn);
                    let span = (m, hi);
                    node.boot_zone_ranges[ZoneType::Movable.idx()] = span;
                    let present: u64 = ranges.iter().map(|&r| overlap(r, span)).sum();
                    let z = node.zone_mut(ZoneType::Movable);
                    z.start_pfn = m;
                    z.spanned = hi - m;
                    z.present = present;
                    z.present_early = present;
                }
            }
            node.has_memory = node.present_pages() > 0;
            node.has_normal_memory = ZoneType::KERNEL.iter().any(|&z| node.zone(z).present > 0);
            // x86 `init_gi_nodes`: a node with only a generic initiator is
            // set online too.
            node.online = node.has_memory || !node.cpus.is_empty() || node.generic_initiator;
            nodes.insert(ns.id, node);
        }

        // Reservations → managed pages per zone and reserved pages per block.
        let kernel_pages = nr_kernel_pages(nodes.values(), &memblock);
        let (reserved, early) = boot_reservations(spec, &memblock, &nodes_mem, kernel_pages);
        for node in nodes.values_mut() {
            for i in 0..MAX_NR_ZONES {
                let span = node.boot_zone_ranges[i];
                // Reserved ranges lie inside memblock, so they only count
                // present pages.
                let res: u64 = reserved.iter().map(|&r| overlap(r, span)).sum();
                let z = &mut node.zones[i];
                z.managed = z.present - res.min(z.present);
            }
        }

        // Boot memory blocks: every block with a present section.
        let mut blocks = BTreeMap::new();
        let block_ids: std::collections::BTreeSet<u64> = memblock
            .iter()
            .flat_map(|&(s, e)| {
                let first = s / PAGES_PER_SECTION;
                let last = (e - 1) / PAGES_PER_SECTION;
                (first..=last).map(|sec| sec * PAGES_PER_SECTION / pages_per_block)
            })
            .collect();
        for id in block_ids {
            let range = (id * pages_per_block, (id + 1) * pages_per_block);
            let mut link_nodes = Vec::new();
            let mut zones_hit = Vec::new();
            for (nid, ranges) in &nodes_mem {
                if ranges.iter().any(|&r| overlap(r, range) > 0) {
                    link_nodes.push(*nid);
                    let node = &nodes[nid];
                    for z in ZoneType::ALL {
                        if node.zone(z).populated()
                            && node.zone(z).intersects(range.0, pages_per_block)
                        {
                            zones_hit.push(z);
                        }
                    }
                }
            }
            let zone = if link_nodes.len() == 1 && zones_hit.len() == 1 {
                Some(zones_hit[0])
            } else {
                None
            };
            // Reserved ranges, then holes (pfns without memblock memory).
            let mut pages = PageMap::new(pages_per_block);
            let clip = |r: Range| (r.0.max(range.0) - range.0, r.1.min(range.1) - range.0);
            for &r in reserved.iter().filter(|&&r| overlap(r, range) > 0) {
                let (a, b) = clip(r);
                pages.assign(a, b, Some(PageState::Reserved));
            }
            let mut at = range.0;
            for &r in memblock.iter().filter(|&&r| overlap(r, range) > 0) {
                let (a, _) = clip(r);
                pages.assign(at - range.0, a, Some(PageState::Hole));
                at = r.1.min(range.1);
            }
            pages.assign(at - range.0, pages_per_block, Some(PageState::Hole));
            pages.mark_hole_started_pageblocks();
            blocks.insert(
                id,
                MemoryBlock {
                    id,
                    state: BlockState::Online,
                    online_type: OnlineType::Offline,
                    nid: link_nodes.last().copied(),
                    link_nodes,
                    zone,
                    early: true,
                    nr_vmemmap_pages: 0,
                    group: None,
                    dev_offline: false,
                    firmware_node: None,
                    dumped: None,
                    pages,
                },
            );
        }

        let mut iomem = Iomem::default();
        for e in &spec.e820 {
            let (s, end, name) = match e.kind {
                E820Kind::Usable => continue,
                E820Kind::Reserved => (e.start, e.end, "Reserved"),
            };
            let _ = iomem.request(s, end - 1, name, None);
        }
        for &(s, e) in &ram_bytes {
            let _ = iomem.request(s, e - 1, "System RAM", None);
        }
        if spec.acpi.is_some() {
            crate::bootlog::qemu_pc_resources(spec, &mut iomem);
        }
        if iomem.request(0, 0xfff, "Reserved", None).is_err() {
            // The first page is already covered by a firmware entry.
        }

        let params = Params {
            online_policy: cmd.online_policy.unwrap_or(OnlinePolicy::ContigZones),
            auto_movable_ratio: cmd.auto_movable_ratio.unwrap_or(301),
            auto_movable_numa_aware: cmd.auto_movable_numa_aware.unwrap_or(true),
            memmap_on_memory: if spec.build.memmap_on_memory {
                cmd.memmap_on_memory.unwrap_or(MemmapOnMemory::Off)
            } else {
                MemmapOnMemory::Off
            },
            default_online_type: cmd
                .memhp_default_state
                .unwrap_or(spec.build.default_online_type),
        };
        let mut sys = System::assemble(crate::system::Assembly {
            version,
            build: spec.build,
            cmdline: cmd,
            hypervisor: spec.hypervisor,
            block_size,
            max_pfn,
            params,
            nodes,
            blocks,
            iomem,
            freed_after_boot_watermarks: crate::bootlog::freed_after_boot_watermarks(spec),
        });
        sys.distances = spec.distances.clone();
        sys.possible_cpus = spec
            .nodes
            .iter()
            .flat_map(|n| n.possible_cpus())
            .map(|c| c + 1)
            .max()
            .unwrap_or(1);
        sys.pxm_nodes = spec
            .nodes
            .iter()
            .filter_map(|n| n.pxm.map(|p| (p, n.id)))
            .collect();
        // hugetlb_init (a subsys initcall, before user space and the
        // initramfs): the pool `hugepages=` asks for, from the buddy
        // allocator, lowest free pageblocks first.
        if let Some(n) = sys.cmdline.hugepages {
            sys.set_max_huge_pages(None, n);
        }
        sys.bootlog = crate::bootlog::render(spec, &sys, &memblock, &zmp, &arch, &reserved, &early);
        sys.charge_runtime(spec.boot_alloc.runtime);
        sys.hardware_name = spec.hardware_name.clone();
        // init_user_reserve / init_admin_reserve (subsys_initcall): 1/32 of
        // the memory free then, at most 128 MiB and 8 MiB. User space (its
        // memory, page tables, kernel stacks) and the unpacked initramfs
        // (its pages, dentries and inodes) came later. (Recorded on 1 GiB:
        // 28130; this gives 28104.)
        let r = spec.boot_alloc.runtime;
        let free_kb: u64 = (sys.nr_free_pages()
            + r.rootfs_shmem
            + r.slab_reclaimable
            + r.anon
            + r.pagetables
            + r.kernel_stack)
            * 4;
        let [(_, user_max), (admin, admin_max)] = crate::sysctl::RESERVES;
        sys.vm.user_reserve_default = crate::sysctl::init_reserve(free_kb, user_max);
        let admin_kb = crate::sysctl::init_reserve(free_kb, admin_max);
        sys.vm.set(admin, vec![admin_kb as i64]);
        sys.acpi_memory = spec
            .acpi
            .as_ref()
            .and_then(|a| crate::qemu_acpi::MemoryHotplugDevices::for_slots(a.mem_slots));
        sys.pci = spec.acpi.as_ref().map(|_| crate::pci::PciBus::qemu_pc());
        Ok((sys, early.trace.into_iter().map(|(_, op)| op).collect()))
    }
}

/// The memblock operations a machine's boot makes, in order (what the
/// guest reports with `memblock=debug`, for the allocations after
/// `init_mem_mapping`).
pub fn memblock_trace(spec: &MachineSpec) -> Result<Vec<crate::memblock::MemblockOp>, BootError> {
    System::boot_traced(spec).map(|(_, trace)| trace)
}

/// Exposed for tests and tools: the kernel's memblock view of a machine.
pub fn memblock_of(spec: &MachineSpec) -> Vec<(u64, u64)> {
    let cmd = KernelCmdline::parse(&spec.cmdline, spec.version);
    memblock_ranges(spec, cmd.mem_limit).0
}

/// Whether the version keeps N_NORMAL_MEMORY up to date on hotplug.
pub fn hotplug_tracks_normal_memory(v: KernelVersion) -> bool {
    matches!(v, KernelVersion::V6_1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_rule_matches_the_spec_table() {
        const G: u64 = 1 << 30;
        assert_eq!(memory_block_size(6 * G, true), 0x8000000);
        assert_eq!(memory_block_size(66 * G, true), 0x80000000);
        assert_eq!(memory_block_size(99 * G, true), 0x40000000);
        assert_eq!(memory_block_size(98 * G + G / 2, true), 0x20000000);
        assert_eq!(memory_block_size(64 * G + (128 << 20), true), 0x8000000);
        assert_eq!(memory_block_size(256 * G, false), 0x80000000);
        assert_eq!(memory_block_size(32 * G, false), 0x8000000);
        assert_eq!(memory_block_size(514 * G + G / 2, true), 0x20000000);
    }

    /// Where the recorded `memblock=debug` boot of a 1 GiB, 1-CPU QEMU pc
    /// guest (2540 KiB initramfs) put each allocation after
    /// `init_mem_mapping`, as `(caller, first byte, size)`, and what it
    /// freed.
    #[test]
    fn memblock_replay_matches_the_recorded_1g_boot() {
        use crate::machine::QemuPc;
        use crate::memblock::MemblockOp;
        let mut q = QemuPc {
            smp: 1,
            initrd_bytes: 2_600_170,
            ..QemuPc::default()
        };
        q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
        let cmdline =
            "console=ttyS0 printk.time=0 loglevel=3 panic=-1 nokaslr rdinit=/init memblock=debug";
        let spec = q.machine(cmdline, KernelVersion::V6_1).unwrap();
        let name = |caller: &'static str| caller.split('+').next().unwrap_or(caller);
        let got: Vec<(&str, u64, u64)> = memblock_trace(&spec)
            .unwrap()
            .into_iter()
            .filter_map(|op| match op {
                MemblockOp::Alloc {
                    caller, at, size, ..
                } => Some((name(caller), at.unwrap(), size)),
                MemblockOp::Free { start, end, .. } => Some(("free", start, end - start)),
                _ => None,
            })
            // setup_arch's own probes before NUMA.
            .skip_while(|op| op.0 != "alloc_node_data")
            .collect();
        let want: &[(&str, u64, u64)] = &[
            ("alloc_node_data", 0x3fd3a000, 0x2b000),
            ("sparse_init", 0x3fd32000, 32768),
            ("sparse_index_alloc", 0x3fd31000, 4096),
            ("sparse_init_nid", 0x3fd30e40, 448),
            ("sparse_init_nid", 0x3ec00000, 16 << 20),
            ("vmemmap_alloc_block_zero.constprop.0", 0x3fd2f000, 4096),
            ("vmemmap_alloc_block_zero.constprop.0", 0x3fd2e000, 4096),
            ("acpi_parse_hpet", 0x3fd30dc0, 73),
            ("io_apic_init_mappings", 0x3fd30d40, 75),
            ("e820__reserve_resources", 0x3fd30b40, 512),
            ("firmware_map_add_early", 0x3fd30ac0, 104),
            ("firmware_map_add_early", 0x3fd30a40, 104),
            ("firmware_map_add_early", 0x3fd309c0, 104),
            ("firmware_map_add_early", 0x3fd30940, 104),
            ("firmware_map_add_early", 0x3fd308c0, 104),
            ("firmware_map_add_early", 0x3fd30840, 104),
            ("firmware_map_add_early", 0x3fd307c0, 104),
            ("register_nosave_region", 0x3fd30780, 32),
            ("register_nosave_region", 0x3fd30740, 32),
            ("start_kernel", 0x3fd306c0, 84),
            ("start_kernel", 0x3fd30640, 84),
            ("pcpu_build_alloc_info", 0x3fd2d000, 4096),
            ("pcpu_embed_first_chunk", 0x3fd2c000, 4096),
            ("pcpu_fc_alloc", 0x3ea00000, 2 << 20),
            ("free", 0x3ea3e000, 0x1c2000),
            ("pcpu_setup_first_chunk", 0x3fd30600, 8),
            ("pcpu_setup_first_chunk", 0x3fd305c0, 8),
            ("pcpu_setup_first_chunk", 0x3fd30580, 4),
            ("pcpu_setup_first_chunk", 0x3fd30540, 8),
            ("pcpu_setup_first_chunk", 0x3fd303c0, 368),
            ("pcpu_alloc_first_chunk", 0x3fd30300, 144),
            ("pcpu_alloc_first_chunk", 0x3fd30200, 256),
            ("pcpu_alloc_first_chunk", 0x3fd300c0, 264),
            ("pcpu_alloc_first_chunk", 0x3fd30080, 64),
            ("pcpu_alloc_first_chunk", 0x3fd2bf40, 144),
            ("pcpu_alloc_first_chunk", 0x3fd2bbc0, 896),
            ("pcpu_alloc_first_chunk", 0x3fd2b800, 904),
            ("pcpu_alloc_first_chunk", 0x3fd2b700, 224),
            ("free", 0x3fd2d000, 4096),
            ("free", 0x3fd2c000, 4096),
            ("alloc_bootmem_cpumask_var", 0x3fd30040, 8),
            ("alloc_bootmem_cpumask_var", 0x3fd30000, 8),
            ("alloc_bootmem_cpumask_var", 0x3fd2dfc0, 8),
            ("alloc_bootmem_cpumask_var", 0x3fd2df80, 8),
            ("alloc_bootmem_cpumask_var", 0x3fd2df40, 8),
            ("alloc_large_system_hash", 0x3fc2b700, 1 << 20),
            ("alloc_large_system_hash", 0x3eb80000, 512 << 10),
            ("spp_getpage", 0x3fd2c000, 4096),
            ("spp_getpage", 0x3fc2a000, 4096),
            ("spp_getpage", 0x3fc29000, 4096),
            ("swiotlb_init_remap", 0x3aa00000, 64 << 20),
            ("swiotlb_init_remap", 0x3eac0000, 786432),
            ("swiotlb_init_remap", 0x3fd2df00, 16),
        ];
        assert_eq!(got, want);
    }
}
