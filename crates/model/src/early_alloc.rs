//! The memblock allocations a 6.1 x86-64 guest (Debian's
//! 6.1.0-56-amd64) makes while it boots, in order, with their sizes as
//! functions of the machine. Replayed on [`Memblock`] they land where the
//! recorded `memblock=debug` boots put them, byte for byte, so the pages
//! they touch are the pages the guest keeps reserved.
//!
//! The sequence (`setup_arch`, then `start_kernel` up to `mm_init`):
//! the MP table and brk reservations, the e820 RAM added (and the first
//! `MEMBLOCK configuration` dump), the real-mode trampoline, the first
//! MiB, `init_mem_mapping`'s probe of the top 2 MiB and the direct map's
//! page tables beyond the image's brk area, the ACPI tables, the SLIT's
//! distance table, each memory node's `pg_data_t` (and the second dump),
//! the sparse section roots, usemaps, memmaps and vmemmap page tables, the
//! `pg_data_t` of nodes without memory, the HPET and IOAPIC resources, the
//! e820 resources and firmware-map entries, the hibernation nosave
//! regions, the saved command lines, the first per-cpu chunk (with its
//! bookkeeping, the unused part of each unit freed again), the boot CPU
//! masks, a larger printk ring for many CPUs, the dentry and inode hashes,
//! the CPU entry areas' page tables and the software IO TLB. Each
//! operation carries an [`Anchor`]: where its `memblock=debug` lines go
//! among the boot log's other lines.

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
/// The brk area at the image's end (`reserve_brk`).
const BRK_BYTES: u64 = 0x11000;
/// The real-mode trampoline below 1 MiB.
const REAL_MODE_BYTES: u64 = 28672;
/// `init_mem_mapping` probes for the highest free 2 MiB.
const PMD_BYTES: u64 = 2 << 20;
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
/// The first per-cpu chunk of the 6.1 image: static, reserved and dynamic
/// sizes, the atom each group's units come in (a 2 MiB page), and what
/// each CPU's unit keeps ("Embedded 62 pages/cpu").
pub(crate) const PCPU_STATIC: u64 = 217_088;
pub(crate) const PCPU_RESERVED: u64 = 8192;
pub(crate) const PCPU_DYNAMIC: u64 = 28_672;
pub(crate) const PCPU_ATOM_BYTES: u64 = 2 << 20;
pub(crate) const PCPU_UNIT_USED_BYTES: u64 =
    (PCPU_STATIC + PCPU_RESERVED + PCPU_DYNAMIC).next_multiple_of(PAGE_SIZE);
/// `pcpu_alloc_first_chunk` for the reserved and the dynamic chunk: the
/// chunk, its alloc map, bound map and block metadata.
const PCPU_FIRST_CHUNKS: [(u64, &str); 8] = [
    (144, "pcpu_alloc_first_chunk+0x80/0x251"),
    (256, "pcpu_alloc_first_chunk+0xf2/0x251"),
    (264, "pcpu_alloc_first_chunk+0x11b/0x251"),
    (64, "pcpu_alloc_first_chunk+0x141/0x251"),
    (144, "pcpu_alloc_first_chunk+0x80/0x251"),
    (896, "pcpu_alloc_first_chunk+0xf2/0x251"),
    (904, "pcpu_alloc_first_chunk+0x11b/0x251"),
    (224, "pcpu_alloc_first_chunk+0x141/0x251"),
];
/// `setup_cpu_entry_areas` maps each possible CPU's entry area through
/// the fixmap's page tables (`spp_getpage`): a PUD and a PMD page, and a
/// PTE page per 2 MiB the mapped pages reach. The read-only IDT page
/// comes first; each CPU's area is 59 pages (GDT, entry stack, TSS with
/// its I/O bitmaps, the exception stacks with their guard pages, the debug
/// store and its buffers), of which the first 26 are mapped (QEMU's CPU
/// has no DTES64: no debug store). Recorded: 3 pages for 1-8 CPUs, 4 for
/// 16, 11 for 72.
fn cpu_entry_area_page_tables(nr_cpu_ids: u64) -> u64 {
    const AREA_PAGES: u64 = 59;
    const MAPPED_PAGES: u64 = 26;
    let last_mapped = 1 + (nr_cpu_ids.max(1) - 1) * AREA_PAGES + MAPPED_PAGES - 1;
    2 + last_mapped / 512 + 1
}
/// SWIOTLB bookkeeping: one slot per 2 KiB slab, one area per CPU
/// rounded up to a power of two.
const SWIOTLB_SLOT_BYTES: u64 = 24;
const SWIOTLB_AREA_BYTES: u64 = 16;

/// Where a memblock operation's `memblock=debug` lines stand in the boot
/// log, relative to the lines the boot log already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// After "found SMP MP-table" (setup_arch up to the initrd).
    Setup,
    /// After the `n`th "ACPI: Reserving ... table memory" line.
    AcpiTable(usize),
    /// Before "NUMA: Initialized distance table".
    Slit,
    /// Before "NODE_DATA(n) allocated".
    NodeData(u32),
    /// After the last NODE_DATA line.
    NumaDone,
    /// Before "Zone ranges:".
    Sparse,
    /// After "Initializing node n as memoryless".
    Memoryless(u32),
    /// After "ACPI: HPET id:".
    Hpet,
    /// After "smpboot: Allowing".
    Smpboot,
    /// Before the `n`th "PM: hibernation: Registered nosave memory".
    Nosave(usize),
    /// Before "setup_percpu:".
    CommandLine,
    /// After "setup_percpu:".
    PercpuEmbed,
    /// After "percpu: Embedded".
    PercpuSetup,
    /// After the last "pcpu-alloc:" line.
    PercpuChunks,
    /// After "Kernel command line:".
    LogBuf,
    /// Before the dentry (0) or inode (1) hash line.
    Hash(usize),
    /// Before "mem auto-init:".
    Fixmap,
    /// Before "Memory:".
    Swiotlb,
}

/// The early allocations of one boot.
#[derive(Clone, Debug, Default)]
pub(crate) struct EarlyAllocs {
    /// Pfn ranges the allocations keep (pages they touch), sorted.
    pub reserved: Vec<Range>,
    /// `(node, first pfn)` of each memory node's `pg_data_t`.
    pub node_data: Vec<(u32, u64)>,
    /// `[start, end)` pfns of the SWIOTLB, when there is one.
    pub swiotlb: Option<Range>,
    /// Every memblock operation from `memblock=debug`'s start, placed.
    pub trace: Vec<(Anchor, MemblockOp)>,
}

/// Collects the operations made since the last call under `anchor`.
fn mark(m: &mut Memblock, trace: &mut Vec<(Anchor, MemblockOp)>, anchor: Anchor) {
    trace.extend(m.take_trace().into_iter().map(|op| (anchor, op)));
}

/// The kernel's e820 table after its edits: the first page reserved, the
/// legacy 640K-1M window taken out of RAM, RAM cut at `mem=`. `(start,
/// end, is_ram)`, by start.
pub(crate) fn kernel_e820(spec: &MachineSpec, mem_limit: Option<u64>) -> Vec<(u64, u64, bool)> {
    let mut t: Vec<(u64, u64, bool)> = spec
        .e820
        .iter()
        .map(|e| (e.start, e.end, e.kind == E820Kind::Usable))
        .collect();
    t.sort_by_key(|e| e.0);
    // e820: update [mem 0x00000000-0x00000fff] usable ==> reserved
    t = carve_ram(t, 0, PAGE_SIZE, true);
    // e820: remove [mem 0x000a0000-0x000fffff] usable
    t = carve_ram(t, 0xa_0000, 0x10_0000, false);
    // mem=: the RAM above the limit goes.
    if let Some(l) = mem_limit {
        t = carve_ram(t, l, u64::MAX, false);
    }
    t
}

/// The RAM of table `t` with `[lo, hi)` taken out (`e820__range_update`
/// to reserved when `to_reserved`, else `e820__range_remove`): an entry
/// that overlaps keeps its parts outside, split in two if it spans the
/// whole range.
fn carve_ram(
    t: Vec<(u64, u64, bool)>,
    lo: u64,
    hi: u64,
    to_reserved: bool,
) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::with_capacity(t.len() + 2);
    for (s, e, ram) in t {
        if !ram || e <= lo || s >= hi {
            out.push((s, e, ram));
            continue;
        }
        if s < lo {
            out.push((s, lo, true));
        }
        if to_reserved {
            out.push((s.max(lo), e.min(hi), false));
        }
        if e > hi {
            out.push((hi, e, true));
        }
    }
    out.sort_by_key(|e| e.0);
    out
}

/// `e820__register_nosave_regions`: the gaps between the RAM entries of
/// the kernel's e820 table, as pfn ranges, each a region of its own (a
/// memblock allocation and a "Registered nosave memory" line).
pub(crate) fn nosave_regions(spec: &MachineSpec, mem_limit: Option<u64>) -> Vec<Range> {
    let mut out = Vec::new();
    let mut pfn = 0;
    for (s, e, ram) in kernel_e820(spec, mem_limit) {
        if !ram {
            continue;
        }
        let up = s.div_ceil(PAGE_SIZE);
        if pfn < up {
            out.push((pfn, up));
        }
        pfn = e / PAGE_SIZE;
    }
    out
}

/// `pcpu_build_alloc_info`: units per atom, the largest count that wastes
/// no more than a third of the CPUs' units, then the fewest allocations.
/// `groups`: CPUs per group.
pub(crate) fn percpu_units_per_alloc(groups: &[u64]) -> u64 {
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

/// `log_buf_add_cpu`: the printk buffer's new length (`CONFIG_LOG_BUF_SHIFT`
/// 17, `CONFIG_LOG_CPU_MAX_BUF_SHIFT` 12) when the possible CPUs need more
/// than the built-in one holds.
pub(crate) fn log_buf_len(nr_cpu_ids: u64) -> Option<u64> {
    let extra = log_buf_cpu_extra(nr_cpu_ids);
    (extra > LOG_BUF / 2).then(|| (LOG_BUF + extra).next_power_of_two())
}

/// What the CPUs beyond the first may add to the printk ring.
pub(crate) fn log_buf_cpu_extra(nr_cpu_ids: u64) -> u64 {
    nr_cpu_ids.saturating_sub(1) * LOG_CPU_MAX_BUF
}

/// The built-in printk ring and what each CPU beyond the first may add.
pub(crate) const LOG_BUF: u64 = 1 << 17;
pub(crate) const LOG_CPU_MAX_BUF: u64 = 1 << 12;

/// `pcpu_build_alloc_info`'s groups: a node's possible CPUs each, in the
/// order of their first CPU.
pub(crate) fn percpu_groups(spec: &MachineSpec) -> Vec<(u32, Vec<u32>)> {
    let mut groups: Vec<(u32, Vec<u32>)> = spec
        .nodes
        .iter()
        .map(|n| (n.id, n.possible_cpus()))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    groups.sort_by_key(|g| g.1[0]);
    groups
}

/// `__pcpu_size_to_slot(unit) + 4` list heads of 16 bytes.
fn pcpu_slot_bytes(unit: u64) -> u64 {
    let fls = u64::from(crate::units::fls(unit));
    (fls.saturating_sub(5) + 2).max(1) * 16 + 4 * 16
}

/// Each node's SRAT memory entries (in bytes) cut at the end of RAM, as
/// `numa_cleanup_meminfo` sees them before it merges a node's blocks.
pub(crate) fn srat_memory(spec: &MachineSpec, ram_end: u64) -> Vec<(u32, Vec<Range>)> {
    spec.nodes
        .iter()
        .map(|n| {
            let pieces = n
                .mem
                .iter()
                .flat_map(|&(s, e)| crate::qemu_acpi::srat_pieces(s, e))
                .map(|(a, b)| (a, b.min(ram_end)))
                .filter(|(a, b)| a < b)
                .collect();
            (n.id, pieces)
        })
        .collect()
}

/// The NUMA blocks `numa_register_memblks` gives nodes (SRAT ranges cut
/// at the end of RAM, each node's merged into one), or one block over all
/// RAM without an SRAT (`dummy_numa_init`).
fn numa_blocks(
    spec: &MachineSpec,
    nodes: &BTreeMap<u32, Vec<Range>>,
    ram_end: u64,
) -> Vec<(u64, u64, u32)> {
    let mut out: Vec<(u64, u64, u32)> = srat_memory(spec, ram_end)
        .into_iter()
        .filter_map(|(nid, pieces)| Some((pieces.first()?.0, pieces.last()?.1, nid)))
        .collect();
    if out.is_empty() {
        // No firmware ranges: the nodes' memory as memblock has it.
        for (&nid, rs) in nodes {
            if let (Some(first), Some(last)) = (rs.first(), rs.last()) {
                out.push((first.0 << PAGE_SHIFT, last.1 << PAGE_SHIFT, nid));
            }
        }
    }
    out
}

/// Replays the boot's memblock operations.
///
/// `memblock`: memblock.memory as pfn ranges; `nodes`: those ranges per
/// node; `kernel_pages`: `nr_kernel_pages` (sizes the hashes);
/// `page_tables`: the `[from, max)` of each direct-map page-table page
/// taken from memblock.
pub(crate) fn x86_boot(
    spec: &MachineSpec,
    memblock: &[Range],
    nodes: &BTreeMap<u32, Vec<Range>>,
    kernel_pages: u64,
    page_tables: &[(u64, u64)],
    swiotlb: bool,
) -> EarlyAllocs {
    let cmd = KernelCmdline::parse(&spec.cmdline, spec.version);
    let mut m = Memblock::new(cmd.movable_node);
    let mut trace = Vec::new();

    // Reserved before `memblock=debug` is parsed: the first 64 KiB, the
    // BIOS area from the EBDA up, the image, the initrd.
    m.reserve_early(0, 0x10000);
    m.reserve_early(0x9f000, 1 << 20);
    let kernel_start = KERNEL_LOAD_PFN << PAGE_SHIFT;
    let kernel_end =
        kernel_start + KERNEL_RESERVED_BYTES.max(spec.boot_alloc.kernel_image_pages << PAGE_SHIFT);
    m.reserve_early(kernel_start, kernel_end - BRK_BYTES);
    let initrd = initrd_pfns(spec);
    if let Some((s, e)) = initrd {
        m.reserve_early(s << PAGE_SHIFT, e << PAGE_SHIFT);
    }
    if spec.acpi.is_some() {
        // smp_scan_config: SeaBIOS's MP floating pointer and table.
        m.reserve(0xf5ba0, 0xf5bb0, "smp_scan_config+0xa7/0xff");
        m.reserve(0xf5bb0, 0xf5c78, "smp_scan_config+0xbe/0xff");
    }
    m.reserve(kernel_end - BRK_BYTES, kernel_end, "setup_arch+0x797/0xd4f");
    let table = kernel_e820(spec, cmd.mem_limit);
    for &(s, e, ram) in &table {
        if ram {
            m.add(s, e);
        }
    }
    m.trim_memory();
    m.dump();

    // reserve_real_mode, the first MiB, init_mem_mapping (bottom-up from
    // the image under `movable_node`, else after probing the top 2 MiB).
    let ram_end = memblock.iter().map(|r| r.1).max().unwrap_or(0) << PAGE_SHIFT;
    m.set_bottom_up(cmd.movable_node);
    m.alloc(
        Request::any(REAL_MODE_BYTES, PAGE_SIZE, "reserve_real_mode+0x50/0x89")
            .within(0, 1 << 20)
            .via(AllocApi::PhysRange),
    );
    m.reserve(0, 1 << 20, "setup_arch+0x7e0/0xd4f");
    if !cmd.movable_node {
        let probe = Request::any(PMD_BYTES, PMD_BYTES, "init_mem_mapping+0x1ee/0x31f")
            .within(1 << 20, ram_end)
            .via(AllocApi::PhysRange);
        if let Some(at) = m.alloc(probe) {
            m.free(at, at + PMD_BYTES, "init_mem_mapping+0x22e/0x31f");
        }
    }
    for &(from, max) in page_tables {
        // memory_map_bottom_up maps up from the image's end, and its page
        // tables come from just above it, never from hotpluggable memory.
        let (from, max) = if cmd.movable_node {
            (kernel_end, ram_end)
        } else {
            (from, max)
        };
        m.alloc(
            Request::any(PAGE_SIZE, PAGE_SIZE, "alloc_low_pages+0x137/0x160")
                .within(from, max)
                .via(AllocApi::PhysRange),
        );
    }
    m.set_bottom_up(false);
    mark(&mut m, &mut trace, Anchor::Setup);

    // acpi_reserve_initial_tables, in the boot log's order.
    if let (Some(acpi), Some(base)) = (&spec.acpi, crate::bootlog::acpi_base(spec)) {
        let tables = acpi.tables(base);
        let order = [
            "FACP", "DSDT", "FACS", "APIC", "HPET", "SRAT", "SLIT", "WAET",
        ];
        let listed = order
            .iter()
            .filter_map(|sig| tables.iter().find(|t| t.sig == *sig));
        for (i, t) in listed.enumerate() {
            m.reserve(
                t.addr,
                t.addr + t.len,
                "acpi_reserve_initial_tables+0x51/0x61",
            );
            mark(&mut m, &mut trace, Anchor::AcpiTable(i));
        }
    }

    // The SLIT's distance table (numa_alloc_distance): a byte per pair.
    let nr_node_ids = spec.nr_node_ids();
    if spec.acpi.as_ref().is_some_and(|a| a.slit_nodes > 0) {
        let n = u64::from(nr_node_ids);
        m.alloc(
            Request::any(n * n, PAGE_SIZE, "numa_alloc_distance+0x9f/0x13b")
                .within(0, ram_end)
                .via(AllocApi::PhysRange),
        );
        mark(&mut m, &mut trace, Anchor::Slit);
    }

    // numa_register_memblks: memory and what is reserved by now get their
    // nodes; the SRAT's hotplug flags stay where `movable_node` needs them.
    for (s, e, nid) in numa_blocks(spec, nodes, ram_end) {
        m.set_node(s, e, nid);
    }
    for (_, (s, e)) in hotpluggable_memblock(spec, nodes) {
        m.mark_hotplug(s << PAGE_SHIFT, e << PAGE_SHIFT);
    }
    let mut node_data = Vec::new();
    for (&nid, _) in nodes.iter().filter(|(_, rs)| !rs.is_empty()) {
        let size = PGDAT_BYTES.next_multiple_of(PAGE_SIZE);
        let r = Request::any(size, SMP_CACHE_BYTES, "alloc_node_data")
            .on(Some(nid))
            .via(AllocApi::PhysTryNid);
        if let Some(at) = m.alloc(r) {
            node_data.push((nid, at >> PAGE_SHIFT));
        }
        mark(&mut m, &mut trace, Anchor::NodeData(nid));
    }
    m.dump();
    mark(&mut m, &mut trace, Anchor::NumaDone);

    let regions: Vec<(u64, u64, u32)> = {
        let mut r: Vec<(u64, u64, u32)> = nodes
            .iter()
            .flat_map(|(&nid, rs)| {
                rs.iter()
                    .map(move |&(s, e)| (s << PAGE_SHIFT, e << PAGE_SHIFT, nid))
            })
            .collect();
        r.sort_unstable();
        r
    };
    sparse_init(&mut m, &regions, &node_data);
    mark(&mut m, &mut trace, Anchor::Sparse);

    // free_area_init: a pg_data_t for every node without memory.
    for n in &spec.nodes {
        if nodes.get(&n.id).is_none_or(|rs| rs.is_empty()) {
            m.alloc(Request::any(
                PGDAT_BYTES,
                SMP_CACHE_BYTES,
                "free_area_init+0x942/0xbdf",
            ));
            mark(&mut m, &mut trace, Anchor::Memoryless(n.id));
        }
    }

    // acpi_boot_init, e820__reserve_resources, the nosave regions.
    if spec.acpi.is_some() {
        m.alloc(Request::any(
            HPET_RESOURCE_BYTES,
            SMP_CACHE_BYTES,
            "acpi_parse_hpet+0xc3/0x132",
        ));
        mark(&mut m, &mut trace, Anchor::Hpet);
    }
    m.alloc(Request::any(
        IOAPIC_RESOURCE_BYTES,
        SMP_CACHE_BYTES,
        "io_apic_init_mappings+0x37/0x1d9",
    ));
    m.alloc(Request::any(
        RESOURCE_BYTES * table.len() as u64,
        SMP_CACHE_BYTES,
        "e820__reserve_resources+0x2a/0x1b0",
    ));
    for _ in &spec.e820 {
        m.alloc(Request::any(
            FIRMWARE_MAP_ENTRY_BYTES,
            SMP_CACHE_BYTES,
            "firmware_map_add_early+0x29/0x53",
        ));
    }
    mark(&mut m, &mut trace, Anchor::Smpboot);
    for i in 0..nosave_regions(spec, cmd.mem_limit).len() {
        m.alloc(Request::any(
            NOSAVE_REGION_BYTES,
            SMP_CACHE_BYTES,
            "register_nosave_region+0x53/0xd5",
        ));
        mark(&mut m, &mut trace, Anchor::Nosave(i));
    }

    // setup_command_line: saved_command_line and static_command_line.
    for caller in ["start_kernel+0x14f/0x70f", "start_kernel+0x17c/0x70f"] {
        m.alloc(Request::any(
            spec.cmdline.len() as u64 + 1,
            SMP_CACHE_BYTES,
            caller,
        ));
    }
    mark(&mut m, &mut trace, Anchor::CommandLine);

    let nr_cpu_ids = percpu_first_chunk(&mut m, &mut trace, spec);

    // setup_node_to_cpumask_map and setup_cpu_local_masks.
    let cpumask = nr_cpu_ids.div_ceil(64).max(1) * 8;
    for _ in 0..u64::from(nr_node_ids) + 4 {
        m.alloc(Request::any(
            cpumask,
            SMP_CACHE_BYTES,
            "alloc_bootmem_cpumask_var+0x28/0x5b",
        ));
    }
    mark(&mut m, &mut trace, Anchor::PercpuChunks);

    // setup_log_buf: the printk ring grows by 4 KiB per possible CPU
    // beyond the first once that is over half its 128 KiB: text, then
    // descriptors and infos (one per 32 bytes of text).
    if let Some(len) = log_buf_len(nr_cpu_ids) {
        let descs = len >> 5;
        for (size, caller) in [
            (len, "setup_log_buf+0x112/0x337"),
            (descs * 24, "setup_log_buf+0x152/0x337"),
            (descs * 88, "setup_log_buf+0x18c/0x337"),
        ] {
            m.alloc(Request::any(size, 8, caller));
        }
        mark(&mut m, &mut trace, Anchor::LogBuf);
    }

    // vfs_caches_init_early: unless `hashdist` (two memory nodes or more)
    // has them vmalloc'ed later.
    if nodes.values().filter(|rs| !rs.is_empty()).count() < 2 {
        for (i, hash) in [DENTRY_HASH, INODE_HASH].into_iter().enumerate() {
            m.alloc(Request::any(
                hash.bytes(kernel_pages),
                SMP_CACHE_BYTES,
                "alloc_large_system_hash+0x15a/0x27c",
            ));
            mark(&mut m, &mut trace, Anchor::Hash(i));
        }
    }
    for _ in 0..cpu_entry_area_page_tables(nr_cpu_ids) {
        m.alloc(Request::any(PAGE_SIZE, PAGE_SIZE, "spp_getpage+0x4e/0x97"));
    }
    mark(&mut m, &mut trace, Anchor::Fixmap);

    // swiotlb_init: the buffer below 4 GiB, its slots, its areas.
    let mut swiotlb_range = None;
    if swiotlb {
        let bytes = spec.boot_alloc.swiotlb_pages << PAGE_SHIFT;
        let r =
            Request::any(bytes, PAGE_SIZE, "swiotlb_init_remap+0x8a/0x22d").within(0, 0xffff_ffff);
        if let Some(at) = m.alloc(r) {
            swiotlb_range = Some((at >> PAGE_SHIFT, (at + bytes) >> PAGE_SHIFT));
            m.alloc(Request::any(
                (bytes >> 11) * SWIOTLB_SLOT_BYTES,
                PAGE_SIZE,
                "swiotlb_init_remap+0x152/0x22d",
            ));
            m.alloc(Request::any(
                nr_cpu_ids.next_power_of_two() * SWIOTLB_AREA_BYTES,
                SMP_CACHE_BYTES,
                "swiotlb_init_remap+0x1a8/0x22d",
            ));
        }
        mark(&mut m, &mut trace, Anchor::Swiotlb);
    }

    // What stays: every page the allocations touch inside memory (not the
    // first MiB, the image or the initrd, which boot.rs accounts for
    // itself).
    let mut reserved = Vec::new();
    let skip: Vec<Range> = [
        Some((0, 256)),
        Some((KERNEL_LOAD_PFN, kernel_end.div_ceil(PAGE_SIZE))),
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
        trace,
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
        "sparse_init+0x9f/0x23c",
    ));
    let mut section_nid: BTreeMap<u64, u32> = BTreeMap::new();
    let mut roots = BTreeSet::new();
    for &(s, e, nid) in regions {
        for section in s / SECTION_SIZE..e.div_ceil(SECTION_SIZE) {
            if roots.insert(section / SECTIONS_PER_ROOT) {
                m.alloc(
                    Request::any(PAGE_SIZE, SMP_CACHE_BYTES, "sparse_index_alloc+0x40/0x65")
                        .on(Some(nid)),
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
        let usemap = Request::any(
            USEMAP_BYTES * count,
            SMP_CACHE_BYTES,
            "sparse_init_nid+0x8d/0x34d",
        )
        .on(Some(nid));
        if m.alloc(usemap.within(goal, goal + SECTION_SIZE)).is_none() {
            m.alloc(usemap.within(goal, 0));
        }
        let buffer = m.alloc(
            Request::any(
                SECTION_MAP_BYTES * count,
                SECTION_MAP_BYTES,
                "sparse_init_nid+0x11f/0x34d",
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
                        Request::any(
                            PAGE_SIZE,
                            PAGE_SIZE,
                            "vmemmap_alloc_block_zero.constprop.0+0xc/0x28",
                        )
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
fn percpu_first_chunk(
    m: &mut Memblock,
    trace: &mut Vec<(Anchor, MemblockOp)>,
    spec: &MachineSpec,
) -> u64 {
    let mut groups: Vec<(u32, u64)> = percpu_groups(spec)
        .into_iter()
        .map(|(id, c)| (id, c.len() as u64))
        .collect();
    if groups.is_empty() {
        groups.push((0, 1));
    }
    let nr_cpu_ids: u64 = groups.iter().map(|g| g.1).sum();
    let nr_groups = groups.len() as u64;
    let upa = percpu_units_per_alloc(&groups.iter().map(|g| g.1).collect::<Vec<_>>());
    let unit = PCPU_ATOM_BYTES / upa;
    let nr_units: u64 = groups.iter().map(|g| g.1.div_ceil(upa) * upa).sum();

    let ai_bytes = (64 + 24 * nr_groups + 4 * nr_units).next_multiple_of(PAGE_SIZE);
    let ai = m.alloc(Request::any(
        ai_bytes,
        PAGE_SIZE,
        "pcpu_build_alloc_info+0x346/0x488",
    ));
    let areas_bytes = (8 * nr_groups).next_multiple_of(PAGE_SIZE);
    let areas = m.alloc(Request::any(
        areas_bytes,
        SMP_CACHE_BYTES,
        "pcpu_embed_first_chunk+0x69/0x70f",
    ));
    let mut bases = Vec::new();
    for &(nid, cpus) in &groups {
        let units = cpus.div_ceil(upa) * upa;
        let base = m.alloc(
            Request::any(units * unit, PCPU_ATOM_BYTES, "pcpu_fc_alloc+0xf2/0x148")
                .on(Some(nid))
                .within(MAX_DMA_ADDRESS, 0),
        );
        bases.push((base, cpus, units));
    }
    for (base, cpus, units) in bases {
        let Some(base) = base else { continue };
        for u in 0..units {
            let start = base + u * unit;
            // A unit no CPU uses goes back whole (another call site).
            let (keep, caller) = if u < cpus {
                (PCPU_UNIT_USED_BYTES, "pcpu_embed_first_chunk+0x216/0x70f")
            } else {
                (0, "pcpu_embed_first_chunk+0x1e6/0x70f")
            };
            m.free(start + keep, start + unit, caller);
        }
    }
    mark(m, trace, Anchor::PercpuEmbed);
    let setup = [
        (8 * nr_groups, "pcpu_setup_first_chunk+0x2ff/0x7af"),
        (8 * nr_groups, "pcpu_setup_first_chunk+0x324/0x7af"),
        (4 * nr_cpu_ids, "pcpu_setup_first_chunk+0x34d/0x7af"),
        (8 * nr_cpu_ids, "pcpu_setup_first_chunk+0x38c/0x7af"),
    ];
    for (size, caller) in setup {
        m.alloc(Request::any(size, SMP_CACHE_BYTES, caller));
    }
    mark(m, trace, Anchor::PercpuSetup);
    m.alloc(Request::any(
        pcpu_slot_bytes(unit),
        SMP_CACHE_BYTES,
        "pcpu_setup_first_chunk+0x696/0x7af",
    ));
    for (size, caller) in PCPU_FIRST_CHUNKS {
        m.alloc(Request::any(size, SMP_CACHE_BYTES, caller));
    }
    if let Some(ai) = ai {
        m.free(ai, ai + ai_bytes, "pcpu_embed_first_chunk+0x285/0x70f");
    }
    if let Some(areas) = areas {
        m.free(
            areas,
            areas + areas_bytes,
            "pcpu_embed_first_chunk+0x2cf/0x70f",
        );
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
    fn cpu_entry_areas_take_a_pte_page_per_2_mib() {
        assert_eq!(cpu_entry_area_page_tables(1), 3);
        assert_eq!(cpu_entry_area_page_tables(8), 3);
        assert_eq!(cpu_entry_area_page_tables(16), 4);
        assert_eq!(cpu_entry_area_page_tables(72), 11);
    }

    /// One RAM entry from 0 to 2 MiB (a TOML machine's): the first page
    /// becomes reserved and the 640K-1M window leaves two RAM pieces, not
    /// one cut at 640K; `mem=1536K` then ends the second piece there.
    #[test]
    fn kernel_e820_splits_ram_around_the_legacy_window() {
        let t = vec![(0, 2 << 20, true), (2 << 20, 3 << 20, false)];
        let t = carve_ram(t, 0, PAGE_SIZE, true);
        let t = carve_ram(t, 0xa_0000, 0x10_0000, false);
        assert_eq!(
            t,
            [
                (0, 0x1000, false),
                (0x1000, 0xa_0000, true),
                (0x10_0000, 2 << 20, true),
                (2 << 20, 3 << 20, false),
            ]
        );
        assert_eq!(
            carve_ram(t, 0x18_0000, u64::MAX, false)[2],
            (0x10_0000, 0x18_0000, true)
        );
    }

    #[test]
    fn pcpu_slot_lists_grow_with_the_unit() {
        assert_eq!(pcpu_slot_bytes(2 << 20), 368);
        assert_eq!(pcpu_slot_bytes(1 << 20), 352);
        assert_eq!(pcpu_slot_bytes(512 << 10), 336);
    }
}
