//! The memblock allocations a 6.1 x86-64 guest (Debian's
//! 6.1.0-56-amd64) makes while it boots, in order, with their sizes as
//! functions of the machine. Replayed on [`Memblock`] they land where the
//! recorded `memblock=debug` boots put them, byte for byte, so the pages
//! they touch are the pages the guest keeps reserved.
//!
//! The sequence (`setup_arch`, then `start_kernel` up to `mm_init`):
//! the direct map's page tables beyond the image's brk area, the SLIT's
//! distance table, each memory node's `pg_data_t`, the sparse section
//! roots, usemaps, memmaps and vmemmap page tables, the `pg_data_t` of
//! nodes without memory, the HPET and IOAPIC resources, the e820
//! resources and firmware-map entries, the hibernation nosave regions, the
//! saved command lines, the first per-cpu chunk (with its bookkeeping,
//! the unused part of each unit freed again), the boot CPU masks, the
//! dentry and inode hashes, the fixmap page tables and the software IO
//! TLB.

use crate::boot::{hotpluggable_memblock, initrd_pfns, DENTRY_HASH, INODE_HASH, KERNEL_LOAD_PFN};
use crate::cmdline::KernelCmdline;
use crate::machine::{E820Kind, MachineSpec};
use crate::memblock::{AllocApi, Memblock, MemblockOp, Request, SMP_CACHE_BYTES};
use crate::units::{PAGES_PER_SECTION, PAGE_SHIFT, PAGE_SIZE, SECTION_SIZE, STRUCT_PAGE_SIZE};
use std::collections::{BTreeMap, BTreeSet};

type Range = (u64, u64);

/// What the image reserves from 16 MiB (text, data, bss and the brk area
/// up to `__brk_limit`: `reserved[0x2] [0x1000000-0x4410fff]`).
const KERNEL_RESERVED_BYTES: u64 = 0x341_1000;
/// `sizeof(pg_data_t)` of the 6.1 image (a memoryless node's pgdat:
/// 174208 bytes); a memory node's NODE_DATA rounds it up to pages.
pub(crate) const PGDAT_BYTES: u64 = 174_208;
/// `mem_section_usage_size()`: an RCU head, the subsection map and the
/// pageblock flags of one section.
const USEMAP_BYTES: u64 = 56;
/// `NR_SECTION_ROOTS` pointers (`sparse_init`).
const SECTION_ROOTS_BYTES: u64 = 32768;
/// Sections per root page (`SECTIONS_PER_ROOT`).
const SECTIONS_PER_ROOT: u64 = 256;
/// Each section's memmap, a PMD-mapped 2 MiB block (`section_map_size`).
const SECTION_MAP_BYTES: u64 = PAGES_PER_SECTION * STRUCT_PAGE_SIZE;
/// `__pa(MAX_DMA_ADDRESS)`: the lower bound of the memmap and per-cpu
/// allocations.
const MAX_DMA_ADDRESS: u64 = 16 << 20;
const VMEMMAP_START: u64 = 0xffff_ea00_0000_0000;
/// `struct resource` plus the HPET's and each IOAPIC's name.
const HPET_RESOURCE_BYTES: u64 = 64 + 9;
const IOAPIC_RESOURCE_BYTES: u64 = 64 + 11;
const RESOURCE_BYTES: u64 = 64;
/// `struct firmware_map_entry`.
const FIRMWARE_MAP_ENTRY_BYTES: u64 = 104;
/// `struct nosave_region`.
const NOSAVE_REGION_BYTES: u64 = 32;
/// The per-cpu first chunk: the atom each group's units come in and what
/// each CPU's unit keeps (static 217088 + reserved 8192 + dynamic 28672:
/// "Embedded 62 pages/cpu").
const PCPU_ATOM_BYTES: u64 = 2 << 20;
pub(crate) const PCPU_UNIT_USED_BYTES: u64 = 0x3e000;
/// `pcpu_alloc_first_chunk` for the reserved and the dynamic chunk: the
/// chunk, its alloc map, bound map and block metadata.
const PCPU_FIRST_CHUNKS: [u64; 8] = [144, 256, 264, 64, 144, 896, 904, 224];
/// Fixmap page tables (`spp_getpage`).
const SPP_PAGES: u64 = 3;
/// SWIOTLB bookkeeping: one slot per 2 KiB slab, one area per CPU
/// rounded up to a power of two.
const SWIOTLB_SLOT_BYTES: u64 = 24;
const SWIOTLB_AREA_BYTES: u64 = 16;

/// The early allocations of one boot.
#[derive(Clone, Debug, Default)]
pub(crate) struct EarlyAllocs {
    /// Pfn ranges the allocations keep (pages they touch), sorted.
    pub reserved: Vec<Range>,
    /// `(node, first pfn)` of each memory node's `pg_data_t`.
    pub node_data: Vec<(u32, u64)>,
    /// `[start, end)` pfns of the SWIOTLB, when there is one.
    pub swiotlb: Option<Range>,
    pub trace: Vec<MemblockOp>,
}

/// The kernel's e820 table after its edits: the first page reserved,
/// RAM cut at `mem=`. `(start, end, is_ram)`.
fn kernel_e820(spec: &MachineSpec, mem_limit: Option<u64>) -> Vec<(u64, u64, bool)> {
    let mut sorted: Vec<_> = spec.e820.iter().collect();
    sorted.sort_by_key(|e| e.start);
    let mut t = Vec::new();
    for e in sorted {
        let ram = e.kind == E820Kind::Usable;
        if ram && e.start == 0 && e.end > PAGE_SIZE {
            t.push((0, PAGE_SIZE, false));
            t.push((PAGE_SIZE, e.end, true));
        } else {
            t.push((e.start, e.end, ram));
        }
    }
    if let Some(l) = mem_limit {
        t.retain(|&(s, _, ram)| !ram || s < l);
        for e in t.iter_mut().filter(|e| e.2) {
            e.1 = e.1.min(l);
        }
    }
    t
}

/// `e820__register_nosave_regions(max_pfn)`: how many regions it
/// allocates (a region extending the previous one allocates nothing).
fn nosave_regions(table: &[(u64, u64, bool)], max_pfn: u64) -> u64 {
    let mut count = 0;
    let mut last_end: Option<u64> = None;
    let mut register = |s: u64, e: u64| {
        if s >= e {
            return;
        }
        if last_end != Some(s) {
            count += 1;
        }
        last_end = Some(e);
    };
    let mut pfn = 0;
    for &(s, e, ram) in table {
        let up = s.div_ceil(PAGE_SIZE);
        if pfn < up {
            register(pfn, up);
        }
        pfn = e / PAGE_SIZE;
        if !ram {
            register(up, pfn);
        }
        if pfn >= max_pfn {
            break;
        }
    }
    count
}

/// `pcpu_build_alloc_info`: units per atom, the largest count that wastes
/// no more than a third of the CPUs' units, then the fewest allocations.
/// `groups`: CPUs per group.
fn percpu_units_per_alloc(groups: &[u64]) -> u64 {
    let cpus: u64 = groups.iter().sum();
    let max_upa = (PCPU_ATOM_BYTES / PCPU_UNIT_USED_BYTES).max(1);
    let mut best = 1;
    let mut last_allocs = u64::MAX;
    for upa in (1..=max_upa).rev() {
        if !PCPU_ATOM_BYTES.is_multiple_of(upa)
            || !(PCPU_ATOM_BYTES / upa).is_multiple_of(PAGE_SIZE)
        {
            continue;
        }
        let allocs: u64 = groups.iter().map(|g| g.div_ceil(upa)).sum();
        let wasted: u64 = groups.iter().map(|g| g.div_ceil(upa) * upa - g).sum();
        if wasted > cpus / 3 {
            continue;
        }
        if allocs > last_allocs {
            break;
        }
        (last_allocs, best) = (allocs, upa);
    }
    best
}

/// `__pcpu_size_to_slot(unit) + 4` list heads of 16 bytes.
fn pcpu_slot_bytes(unit: u64) -> u64 {
    let fls = 64 - u64::from(unit.leading_zeros());
    (fls.saturating_sub(5) + 2).max(1) * 16 + 4 * 16
}

/// Replays the boot's memblock allocations.
///
/// `memblock`: memblock.memory as pfn ranges; `nodes`: those ranges per
/// node; `kernel_pages`: `nr_kernel_pages` (sizes the hashes);
/// `page_tables`: direct-map page-table pages taken from memblock.
pub(crate) fn x86_boot(
    spec: &MachineSpec,
    memblock: &[Range],
    nodes: &BTreeMap<u32, Vec<Range>>,
    kernel_pages: u64,
    page_tables: u64,
    swiotlb: bool,
) -> EarlyAllocs {
    let cmd = KernelCmdline::parse(&spec.cmdline, spec.version);
    let mut regions: Vec<(u64, u64, u32)> = nodes
        .iter()
        .flat_map(|(&nid, rs)| {
            rs.iter()
                .map(move |&(s, e)| (s << PAGE_SHIFT, e << PAGE_SHIFT, nid))
        })
        .collect();
    regions.sort_unstable();
    let hotplug: Vec<Range> = hotpluggable_memblock(spec, nodes)
        .into_iter()
        .map(|(_, (s, e))| (s << PAGE_SHIFT, e << PAGE_SHIFT))
        .collect();
    let mut m = Memblock::new(&regions, &hotplug, cmd.movable_node);

    // Reserved before the first allocation: the first MiB, the image and
    // the initrd.
    m.reserve(0, 1 << 20);
    let kernel_start = KERNEL_LOAD_PFN << PAGE_SHIFT;
    let kernel_bytes = KERNEL_RESERVED_BYTES.max(spec.boot_alloc.kernel_image_pages << PAGE_SHIFT);
    m.reserve(kernel_start, kernel_start + kernel_bytes);
    let initrd = initrd_pfns(spec);
    if let Some((s, e)) = initrd {
        m.reserve(s << PAGE_SHIFT, e << PAGE_SHIFT);
    }

    // init_mem_mapping: page tables the brk area cannot hold; with
    // `movable_node` memory is mapped bottom-up from the image.
    m.set_bottom_up(cmd.movable_node);
    for _ in 0..page_tables {
        let r = Request::any(PAGE_SIZE, PAGE_SIZE, "alloc_low_pages").via(AllocApi::PhysRange);
        m.alloc(if cmd.movable_node {
            r.within(kernel_start + kernel_bytes, 0)
        } else {
            r
        });
    }
    m.set_bottom_up(false);

    // The SLIT's distance table (numa_alloc_distance): a byte per pair.
    let nr_node_ids = spec.nodes.iter().map(|n| n.id + 1).max().unwrap_or(1);
    if spec.acpi.as_ref().is_some_and(|a| a.slit_nodes > 0) {
        let n = u64::from(nr_node_ids);
        m.alloc(Request::any(n * n, PAGE_SIZE, "numa_alloc_distance").via(AllocApi::PhysRange));
    }

    // NODE_DATA of each node with memory.
    let mut node_data = Vec::new();
    for (&nid, rs) in nodes.iter().filter(|(_, rs)| !rs.is_empty()) {
        let _ = rs;
        let size = PGDAT_BYTES.next_multiple_of(PAGE_SIZE);
        let r = Request::any(size, SMP_CACHE_BYTES, "alloc_node_data")
            .on(Some(nid))
            .via(AllocApi::PhysTryNid);
        if let Some(at) = m.alloc(r) {
            node_data.push((nid, at >> PAGE_SHIFT));
        }
    }

    sparse_init(&mut m, &regions, &node_data);

    // free_area_init: a pg_data_t for every node without memory.
    for n in &spec.nodes {
        if nodes.get(&n.id).is_none_or(|rs| rs.is_empty()) {
            m.alloc(Request::any(PGDAT_BYTES, SMP_CACHE_BYTES, "free_area_init"));
        }
    }

    // acpi_boot_init, e820__reserve_resources, the nosave regions.
    if spec.acpi.is_some() {
        m.alloc(Request::any(
            HPET_RESOURCE_BYTES,
            SMP_CACHE_BYTES,
            "acpi_parse_hpet",
        ));
    }
    m.alloc(Request::any(
        IOAPIC_RESOURCE_BYTES,
        SMP_CACHE_BYTES,
        "io_apic_init_mappings",
    ));
    let table = kernel_e820(spec, cmd.mem_limit);
    m.alloc(Request::any(
        RESOURCE_BYTES * table.len() as u64,
        SMP_CACHE_BYTES,
        "e820__reserve_resources",
    ));
    for _ in &spec.e820 {
        m.alloc(Request::any(
            FIRMWARE_MAP_ENTRY_BYTES,
            SMP_CACHE_BYTES,
            "firmware_map_add_early",
        ));
    }
    let max_pfn = memblock.iter().map(|r| r.1).max().unwrap_or(0);
    for _ in 0..nosave_regions(&table, max_pfn) {
        m.alloc(Request::any(
            NOSAVE_REGION_BYTES,
            SMP_CACHE_BYTES,
            "register_nosave_region",
        ));
    }

    // setup_command_line: saved_command_line and static_command_line.
    for _ in 0..2 {
        m.alloc(Request::any(
            spec.cmdline.len() as u64 + 1,
            SMP_CACHE_BYTES,
            "start_kernel",
        ));
    }

    let nr_cpu_ids = percpu_first_chunk(&mut m, spec);

    // setup_node_to_cpumask_map and setup_cpu_local_masks.
    let cpumask = nr_cpu_ids.div_ceil(64).max(1) * 8;
    for _ in 0..u64::from(nr_node_ids) + 4 {
        m.alloc(Request::any(
            cpumask,
            SMP_CACHE_BYTES,
            "alloc_bootmem_cpumask_var",
        ));
    }

    // vfs_caches_init_early: unless `hashdist` (two memory nodes or more)
    // has them vmalloc'ed later.
    if nodes.values().filter(|rs| !rs.is_empty()).count() < 2 {
        for hash in [DENTRY_HASH, INODE_HASH] {
            m.alloc(Request::any(
                hash.bytes(kernel_pages),
                SMP_CACHE_BYTES,
                "alloc_large_system_hash",
            ));
        }
    }
    for _ in 0..SPP_PAGES {
        m.alloc(Request::any(PAGE_SIZE, PAGE_SIZE, "spp_getpage"));
    }

    // swiotlb_init: the buffer below 4 GiB, its slots, its areas.
    let mut swiotlb_range = None;
    if swiotlb {
        let bytes = spec.boot_alloc.swiotlb_pages << PAGE_SHIFT;
        let r = Request::any(bytes, PAGE_SIZE, "swiotlb_init_remap").within(0, 0xffff_ffff);
        if let Some(at) = m.alloc(r) {
            swiotlb_range = Some((at >> PAGE_SHIFT, (at + bytes) >> PAGE_SHIFT));
            m.alloc(Request::any(
                (bytes >> 11) * SWIOTLB_SLOT_BYTES,
                PAGE_SIZE,
                "swiotlb_init_remap",
            ));
            m.alloc(Request::any(
                nr_cpu_ids.next_power_of_two() * SWIOTLB_AREA_BYTES,
                SMP_CACHE_BYTES,
                "swiotlb_init_remap",
            ));
        }
    }

    // What stays: every page the allocations touch (not the first MiB,
    // the image or the initrd, which boot.rs accounts for itself).
    let mut reserved = Vec::new();
    let skip: Vec<Range> = [
        Some((0, 256)),
        Some((
            KERNEL_LOAD_PFN,
            KERNEL_LOAD_PFN + kernel_bytes.div_ceil(PAGE_SIZE),
        )),
        initrd,
    ]
    .into_iter()
    .flatten()
    .collect();
    for (s, e) in m.touched_pfns() {
        let mut pieces = vec![(s, e)];
        for &(a, b) in &skip {
            pieces = pieces
                .into_iter()
                .flat_map(|(x, y)| [(x, y.min(a)), (x.max(b), y)])
                .filter(|(x, y)| x < y)
                .collect();
        }
        reserved.extend(pieces);
    }
    EarlyAllocs {
        reserved,
        node_data,
        swiotlb: swiotlb_range,
        trace: m.into_trace(),
    }
}

/// `memblocks_present` and `sparse_init`: the section-root array, a root
/// page per 256 sections (on the node of the first memory in it), then
/// for each run of sections on one node its usemap (near the node's
/// pgdat), its memmap buffer (exactly on the node, 2 MiB aligned; one
/// section at a time anywhere when that fails) and the vmemmap page
/// tables it needs.
fn sparse_init(m: &mut Memblock, regions: &[(u64, u64, u32)], node_data: &[(u32, u64)]) {
    m.alloc(Request::any(
        SECTION_ROOTS_BYTES,
        SMP_CACHE_BYTES,
        "sparse_init",
    ));
    let mut section_nid: BTreeMap<u64, u32> = BTreeMap::new();
    let mut roots = BTreeSet::new();
    for &(s, e, nid) in regions {
        for section in s / SECTION_SIZE..e.div_ceil(SECTION_SIZE) {
            if roots.insert(section / SECTIONS_PER_ROOT) {
                m.alloc(
                    Request::any(PAGE_SIZE, SMP_CACHE_BYTES, "sparse_index_alloc").on(Some(nid)),
                );
            }
            section_nid.entry(section).or_insert(nid);
        }
    }
    let mut runs: Vec<(u32, Vec<u64>)> = Vec::new();
    for (&section, &nid) in &section_nid {
        match runs.last_mut() {
            Some((n, secs)) if *n == nid => secs.push(section),
            _ => runs.push((nid, vec![section])),
        }
    }
    let mut page_tables = BTreeSet::new();
    for (nid, sections) in runs {
        let count = sections.len() as u64;
        let goal = node_data
            .iter()
            .find(|d| d.0 == nid)
            .map_or(0, |d| (d.1 << PAGE_SHIFT) / SECTION_SIZE * SECTION_SIZE);
        let usemap =
            Request::any(USEMAP_BYTES * count, SMP_CACHE_BYTES, "sparse_init_nid").on(Some(nid));
        if m.alloc(usemap.within(goal, goal + SECTION_SIZE)).is_none() {
            m.alloc(usemap.within(goal, 0));
        }
        let buffer = m.alloc(
            Request::any(
                SECTION_MAP_BYTES * count,
                SECTION_MAP_BYTES,
                "sparse_init_nid",
            )
            .on(Some(nid))
            .within(MAX_DMA_ADDRESS, 0)
            .via(AllocApi::ExactNidRaw),
        );
        for section in sections {
            let vaddr = VMEMMAP_START + section * PAGES_PER_SECTION * STRUCT_PAGE_SIZE;
            // The PUD page of its PGD slot, the PMD page of its GiB.
            for key in [(0, vaddr >> 39), (1, vaddr >> 30)] {
                if page_tables.insert(key) {
                    m.alloc(
                        Request::any(PAGE_SIZE, PAGE_SIZE, "vmemmap_alloc_block_zero")
                            .on(Some(nid))
                            .within(MAX_DMA_ADDRESS, 0)
                            .via(AllocApi::TryNidRaw),
                    );
                }
            }
            if buffer.is_none() {
                m.alloc(
                    Request::any(SECTION_MAP_BYTES, SECTION_MAP_BYTES, "vmemmap_alloc_block")
                        .on(Some(nid))
                        .within(MAX_DMA_ADDRESS, 0)
                        .via(AllocApi::TryNidRaw),
                );
            }
        }
    }
}

/// `setup_per_cpu_areas` (embedded first chunk): a group per node with
/// CPUs (in CPU order), each group's units in one allocation on its node,
/// the unused part of every unit freed; then the chunk's bookkeeping.
/// Returns `nr_cpu_ids`.
fn percpu_first_chunk(m: &mut Memblock, spec: &MachineSpec) -> u64 {
    let mut groups: Vec<(u32, u64, u32)> = spec
        .nodes
        .iter()
        .filter(|n| !n.cpus.is_empty())
        .map(|n| {
            (
                n.id,
                n.cpus.len() as u64,
                n.cpus.iter().copied().min().unwrap_or(0),
            )
        })
        .collect();
    groups.sort_by_key(|g| g.2);
    if groups.is_empty() {
        groups.push((0, 1, 0));
    }
    let nr_cpu_ids: u64 = groups.iter().map(|g| g.1).sum();
    let nr_groups = groups.len() as u64;
    let upa = percpu_units_per_alloc(&groups.iter().map(|g| g.1).collect::<Vec<_>>());
    let unit = PCPU_ATOM_BYTES / upa;
    let nr_units: u64 = groups.iter().map(|g| g.1.div_ceil(upa) * upa).sum();

    let ai_bytes = (64 + 24 * nr_groups + 4 * nr_units).next_multiple_of(PAGE_SIZE);
    let ai = m.alloc(Request::any(ai_bytes, PAGE_SIZE, "pcpu_build_alloc_info"));
    let areas_bytes = (8 * nr_groups).next_multiple_of(PAGE_SIZE);
    let areas = m.alloc(Request::any(
        areas_bytes,
        SMP_CACHE_BYTES,
        "pcpu_embed_first_chunk",
    ));
    let mut bases = Vec::new();
    for &(nid, cpus, _) in &groups {
        let units = cpus.div_ceil(upa) * upa;
        let base = m.alloc(
            Request::any(units * unit, PCPU_ATOM_BYTES, "pcpu_fc_alloc")
                .on(Some(nid))
                .within(MAX_DMA_ADDRESS, 0),
        );
        bases.push((base, cpus, units));
    }
    for (base, cpus, units) in bases {
        let Some(base) = base else { continue };
        for u in 0..units {
            let start = base + u * unit;
            let keep = if u < cpus { PCPU_UNIT_USED_BYTES } else { 0 };
            m.free(start + keep, start + unit, "pcpu_embed_first_chunk");
        }
    }
    for size in [
        8 * nr_groups,
        8 * nr_groups,
        4 * nr_cpu_ids,
        8 * nr_cpu_ids,
        pcpu_slot_bytes(unit),
    ] {
        m.alloc(Request::any(
            size,
            SMP_CACHE_BYTES,
            "pcpu_setup_first_chunk",
        ));
    }
    for size in PCPU_FIRST_CHUNKS {
        m.alloc(Request::any(
            size,
            SMP_CACHE_BYTES,
            "pcpu_alloc_first_chunk",
        ));
    }
    if let Some(ai) = ai {
        m.free(ai, ai + ai_bytes, "pcpu_embed_first_chunk");
    }
    if let Some(areas) = areas {
        m.free(areas, areas + areas_bytes, "pcpu_embed_first_chunk");
    }
    nr_cpu_ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_per_atom_follow_the_cpu_count() {
        assert_eq!(percpu_units_per_alloc(&[1]), 1);
        assert_eq!(percpu_units_per_alloc(&[2]), 2);
        assert_eq!(percpu_units_per_alloc(&[3]), 4);
        assert_eq!(percpu_units_per_alloc(&[4]), 4);
        assert_eq!(percpu_units_per_alloc(&[1, 1]), 1);
    }

    #[test]
    fn pcpu_slot_lists_grow_with_the_unit() {
        assert_eq!(pcpu_slot_bytes(2 << 20), 368);
        assert_eq!(pcpu_slot_bytes(1 << 20), 352);
        assert_eq!(pcpu_slot_bytes(512 << 10), 336);
    }
}
