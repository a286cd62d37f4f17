//! The memory-related lines of the boot log, in the kernel's formats: e820,
//! SRAT, zone ranges, early node ranges, unavailable ranges, zonelists and
//! the block size.

use crate::machine::{E820Kind, MachineSpec};
use crate::qemu_acpi::srat_pieces;
use crate::system::System;
use crate::units::PAGES_PER_SECTION;
use crate::zone::ZoneType;
use std::collections::BTreeMap;

fn mem(start: u64, end_inclusive: u64) -> String {
    format!("[mem {start:#018x}-{end_inclusive:#018x}]")
}

fn short_mem(start: u64, end_inclusive: u64) -> String {
    format!("[mem {start:#010x}-{end_inclusive:#010x}]")
}

/// Render the boot log for a machine just booted.
pub fn render(
    spec: &MachineSpec,
    sys: &System,
    memblock: &[(u64, u64)],
    zone_movable_pfn: &BTreeMap<u32, u64>,
    arch: &[(u64, u64); 3],
    reserved: &[(u64, u64)],
    early: &crate::early_alloc::EarlyAllocs,
) -> Vec<String> {
    let mut l = Vec::new();
    l.push(sys.version.linux_banner());
    l.push(format!("Command line: {}", sys.cmdline.raw));
    for e in &spec.e820 {
        let kind = match e.kind {
            E820Kind::Usable => "usable",
            E820Kind::Reserved => "reserved",
        };
        l.push(format!("BIOS-e820: {} {kind}", mem(e.start, e.end - 1)));
    }
    if let Some(limit) = sys.cmdline.mem_limit {
        // parse_memopt, then e820__finish_early_params prints the edited map.
        l.push(format!(
            "e820: remove {} usable",
            short_mem(limit, u64::MAX - 1)
        ));
        l.push("user-defined physical RAM map:".into());
        for e in &spec.e820 {
            let (kind, end) = match e.kind {
                E820Kind::Usable => ("usable", e.end.min(limit)),
                E820Kind::Reserved => ("reserved", e.end),
            };
            if e.start < end {
                l.push(format!("user: {} {kind}", mem(e.start, end - 1)));
            }
        }
    }
    l.push("e820: update [mem 0x00000000-0x00000fff] usable ==> reserved".into());
    l.push("e820: remove [mem 0x000a0000-0x000fffff] usable".into());
    let tables_base = acpi_base(spec);
    if let (Some(a), Some(base)) = (&spec.acpi, tables_base) {
        l.push("found SMP MP-table at [mem 0x000f5ba0-0x000f5baf]".into());
        if a.initrd_bytes > 0 {
            let loaded = base - a.initrd_bytes.div_ceil(4096) * 4096;
            l.push(format!("RAMDISK: {}", short_mem(loaded, base - 1)));
            // relocate_initrd: memory above `mem=` holds it.
            if let Some((s, _)) = crate::boot::initrd_pfns(spec).filter(|r| r.0 << 12 != loaded) {
                let new = short_mem(s << 12, (s << 12) + a.initrd_bytes - 1);
                l.push(format!("Allocated new RAMDISK: {new}"));
                l.push(format!(
                    "Move RAMDISK from {} to {new}",
                    short_mem(loaded, loaded + a.initrd_bytes - 1)
                ));
            }
        }
        l.extend(a.log_lines(base));
    }
    let srat = match &spec.acpi {
        Some(a) => a.numa,
        None => spec
            .nodes
            .iter()
            .any(|n| !n.mem.is_empty() || !n.hotplug.is_empty()),
    };
    if srat {
        // The SRAT's entries in table order: CPUs by APIC id, then each
        // proximity domain's memory, the hotplug range last.
        let pxm = |n: &crate::machine::NodeSpec| n.pxm.unwrap_or(n.id);
        let mut cpus: Vec<(u32, &crate::machine::NodeSpec)> = spec
            .nodes
            .iter()
            .flat_map(|n| n.possible_cpus().into_iter().map(move |c| (c, n)))
            .collect();
        cpus.sort_by_key(|c| c.0);
        for (c, n) in cpus {
            l.push(format!(
                "SRAT: PXM {} -> APIC {c:#04x} -> Node {}",
                pxm(n),
                n.id
            ));
        }
        let mut domains: Vec<&crate::machine::NodeSpec> = spec.nodes.iter().collect();
        domains.sort_by_key(|n| pxm(n));
        for n in domains {
            for &(s, e) in &n.mem {
                for (a, b) in srat_pieces(s, e) {
                    l.push(format!(
                        "ACPI: SRAT: Node {} PXM {} {}",
                        n.id,
                        pxm(n),
                        short_mem(a, b - 1)
                    ));
                }
            }
            for &(s, e) in &n.hotplug {
                l.push(format!(
                    "ACPI: SRAT: Node {} PXM {} {} hotplug",
                    n.id,
                    pxm(n),
                    short_mem(s, e - 1)
                ));
            }
        }
    }
    if srat {
        // acpi_parse_slit → numa_alloc_distance.
        if !spec.distances.is_empty() {
            l.push(format!(
                "NUMA: Initialized distance table, cnt={}",
                spec.distances.len()
            ));
        }
        l.extend(numa_merge_lines(spec, sys.max_pfn << 12));
    } else if spec.acpi.is_some() {
        // dummy_numa_init: no SRAT, one node over all of RAM.
        l.push("No NUMA configuration found".into());
        l.push(format!(
            "Faking a node at {}",
            mem(0, (sys.max_pfn << 12) - 1)
        ));
    }
    let node_data = if spec.acpi.is_some() {
        early.node_data.as_slice()
    } else {
        &[]
    };
    for &(nid, start) in node_data {
        let size = crate::early_alloc::PGDAT_BYTES.div_ceil(4096);
        l.push(format!(
            "NODE_DATA({nid}) allocated {}",
            short_mem(start << 12, ((start + size) << 12) - 1)
        ));
    }
    l.push("Zone ranges:".into());
    for (i, z) in [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal]
        .into_iter()
        .enumerate()
    {
        let (lo, hi) = arch[i];
        if hi > lo {
            l.push(format!(
                "  {:<8} {}",
                z.name(),
                mem(lo << 12, (hi << 12) - 1)
            ));
        } else {
            l.push(format!("  {:<8} empty", z.name()));
        }
    }
    l.push(format!("  {:<8} empty", "Device"));
    l.push("Movable zone start for each node".into());
    for (nid, pfn) in zone_movable_pfn {
        l.push(format!("  Node {nid}: {:#018x}", pfn << 12));
    }
    l.push("Early memory node ranges".into());
    // memblock's ranges cut at the nodes' boundaries, in address order.
    let mut pieces: Vec<(u64, u64, u32)> = crate::boot::node_ranges(spec, memblock)
        .into_iter()
        .flat_map(|(nid, ranges)| ranges.into_iter().map(move |(s, e)| (s, e, nid)))
        .collect();
    pieces.sort_unstable();
    for &(s, e, nid) in &pieces {
        l.push(format!("  node {nid:>3}: {}", mem(s << 12, (e << 12) - 1)));
    }
    let mut node_ids: Vec<u32> = spec.nodes.iter().map(|n| n.id).collect();
    node_ids.sort_unstable();
    for &nid in &node_ids {
        let mine: Vec<(u64, u64)> = pieces
            .iter()
            .filter(|p| p.2 == nid)
            .map(|p| (p.0, p.1))
            .collect();
        if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
            l.push(format!(
                "Initmem setup node {nid} {}",
                mem(first.0 << 12, (last.1 << 12) - 1)
            ));
        } else {
            // A node with CPUs but no memory is brought online empty.
            l.push(format!("Initializing node {nid} as memoryless"));
            l.push(format!("Initmem setup node {nid} as memoryless"));
        }
    }
    // Unavailable ranges (memmap_init): holes before each range, per zone,
    // then up to the next section boundary.
    // init_unavailable_range counts only pfns with a memmap (pfn_valid:
    // their section has memory); a hole across absent sections (the PCI
    // hole) counts its present ends only.
    let section_present = |sec: u64| {
        memblock
            .iter()
            .any(|&(s, e)| s / PAGES_PER_SECTION <= sec && sec <= (e - 1) / PAGES_PER_SECTION)
    };
    let valid_pages = |a: u64, b: u64| -> u64 {
        (a / PAGES_PER_SECTION..b.div_ceil(PAGES_PER_SECTION))
            .filter(|&sec| section_present(sec))
            .map(|sec| {
                let (ss, se) = (sec * PAGES_PER_SECTION, (sec + 1) * PAGES_PER_SECTION);
                b.min(se).saturating_sub(a.max(ss))
            })
            .sum()
    };
    let mut hole = 0u64;
    let mut last = None;
    for &(s, e, nid) in &pieces {
        let node = &sys.nodes[&nid];
        for z in ZoneType::ALL {
            let (zs, ze) = node.boot_zone_ranges[z.idx()];
            if !node.zone(z).populated() {
                continue;
            }
            let (cs, ce) = (s.max(zs), e.min(ze));
            if cs >= ce {
                continue;
            }
            let unavailable = valid_pages(hole, cs);
            if unavailable > 0 {
                l.push(format!(
                    "On node {nid}, zone {}: {unavailable} pages in unavailable ranges",
                    z.name(),
                ));
            }
            hole = ce;
            last = Some((nid, z));
        }
    }
    if let Some((nid, z)) = last {
        let end = hole.div_ceil(PAGES_PER_SECTION) * PAGES_PER_SECTION;
        if hole < end {
            l.push(format!(
                "On node {nid}, zone {}: {} pages in unavailable ranges",
                z.name(),
                end - hole
            ));
        }
    }
    if spec.acpi.is_some() {
        l.push("ACPI: HPET id: 0x8086a201 base: 0xfed00000".into());
    }
    let present = spec.present_cpu_count();
    let cpus = spec.possible_cpu_count();
    l.push(format!(
        "smpboot: Allowing {cpus} CPUs, {} hotplug CPUs",
        cpus - present
    ));
    for (s, e) in crate::early_alloc::nosave_regions(spec, sys.cmdline.mem_limit) {
        l.push(format!(
            "PM: hibernation: Registered nosave memory: {}",
            short(s << 12, (e << 12) - 1)
        ));
    }
    if let Some((gs, ge)) = pci_gap(spec) {
        l.push(format!("{} available for PCI devices", short(gs, ge - 1)));
    }
    let nr_node_ids = spec.nr_node_ids();
    l.push(format!("setup_percpu: NR_CPUS:8192 nr_cpumask_bits:{cpus} nr_cpu_ids:{cpus} nr_node_ids:{nr_node_ids}"));
    l.extend(percpu_lines(spec));
    let online: Vec<u32> = sys.online_nodes().map(|n| n.id).collect();
    l.extend(crate::wmark::fallback_order_lines(sys));
    // At this point managed = present − memmap − DMA reserve, watermarks 0.
    let total = crate::boot::nr_kernel_pages(sys.nodes.values(), memblock);
    l.push(format!(
        "Built {} zonelists, mobility grouping on.  Total pages: {total}",
        online.len()
    ));
    l.push(format!(
        "Policy zone: {}",
        sys.wmark.policy_zone.unwrap_or(ZoneType::Dma).name()
    ));
    l.push(format!("Kernel command line: {}", sys.cmdline.raw));
    if let Some(len) = crate::early_alloc::log_buf_len(cpus as u64) {
        // log_buf_add_cpu, then setup_log_buf's report of the new ring.
        let extra = crate::early_alloc::log_buf_cpu_extra(cpus as u64);
        l.push(format!(
            "printk: log_buf_len individual max cpu contribution: {} bytes",
            crate::early_alloc::LOG_CPU_MAX_BUF
        ));
        l.push(format!(
            "printk: log_buf_len total cpu_extra contributions: {extra} bytes"
        ));
        l.push(format!(
            "printk: log_buf_len min size: {} bytes",
            crate::early_alloc::LOG_BUF
        ));
        l.push(format!("printk: log_buf_len: {len} bytes"));
    }
    for (value, name) in &sys.cmdline.invalid_params {
        l.push(format!(
            "Booting kernel: `{value}' invalid for parameter `{name}'"
        ));
    }
    l.extend(sys.cmdline.hugetlb_messages.iter().cloned());
    // The dentry and inode hashes: from memblock at boot, or with two or
    // more memory nodes (`hashdist`) from vmalloc once the allocators run.
    let kernel_pages = total;
    let hashdist = sys.nodes.values().filter(|n| n.has_memory).count() > 1;
    let hashes: Vec<String> = [
        ("Dentry cache", crate::boot::DENTRY_HASH),
        ("Inode-cache", crate::boot::INODE_HASH),
    ]
    .into_iter()
    .map(|(name, h)| h.line(name, kernel_pages, hashdist))
    .collect();
    if !hashdist {
        l.extend(hashes.iter().cloned());
    }
    l.push("mem auto-init: stack:all(zero), heap alloc:on, heap free:off".into());
    if early.swiotlb.is_some() && spec.acpi.is_some() {
        // swiotlb_adjust_nareas: one area per possible CPU, a power of two.
        l.push(format!(
            "software IO TLB: area num {}.",
            cpus.max(1).next_power_of_two()
        ));
    }
    l.push(memory_summary(spec, sys, memblock, reserved));
    l.push(format!(
        "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs={cpus}, Nodes={nr_node_ids}"
    ));
    // The image's mcount call sites (a property of the kernel build).
    l.push("ftrace: allocating 40521 entries in 159 pages".into());
    l.push("ftrace: allocated 159 pages with 6 groups".into());
    if spec.nodes.len() > 1 {
        l.push("mempolicy: Enabling automatic NUMA balancing. Configure with numa_balancing= or the kernel.numa_balancing sysctl".into());
    }
    if crate::boot::frees_smp_alternatives(spec) {
        l.push(format!(
            "Freeing SMP alternatives memory: {SMP_ALTERNATIVES_KIB}K"
        ));
    }
    if hashdist {
        l.extend(hashes);
    }
    use crate::boot::LargeHash;
    let hash = |name: &str, h: LargeHash| h.line(name, kernel_pages, hashdist);
    for name in ["Mount-cache", "Mountpoint-cache"] {
        l.push(hash(name, LargeHash::scaled(8, 19, 0, 0)));
    }
    l.extend(smp_boot_lines(spec));
    let nodes_up = online.len();
    l.push(format!(
        "smp: Brought up {nodes_up} node{}, {present} CPU{}",
        if nodes_up == 1 { "" } else { "s" },
        if present == 1 { "" } else { "s" }
    ));
    for d in deferred_init(sys, memblock) {
        // The time is the guest's, not modelled: a nominal rate of the
        // oracle's TCG guest (about 5 pages per microsecond).
        l.push(format!(
            "node {} deferred pages initialised in {}ms",
            d.nid,
            (d.pages / 4915).max(1)
        ));
    }
    l.push(format!(
        "x86/mm: Memory block size: {}MB",
        sys.block_size >> 20
    ));
    // futex_init: 256 buckets per possible CPU.
    let futex = (256 * cpus as u64).next_power_of_two();
    l.push(hash("futex", LargeHash::fixed(64, futex)));
    let pool_kib = crate::boot::atomic_pool_pages(sys.totalram_pages()) * 4;
    for gfp in ["GFP_KERNEL", "GFP_KERNEL|GFP_DMA", "GFP_KERNEL|GFP_DMA32"] {
        l.push(format!(
            "DMA: preallocated {pool_kib} KiB {gfp} pool for atomic allocations"
        ));
    }
    l.push(
        "kprobes: kprobe jump-optimization is enabled. All kprobes are optimized if possible."
            .into(),
    );
    // hugetlb_init: the one huge page size of QEMU's default CPU (no
    // 1 GiB pages), nothing reserved on the command line; HugeTLB vmemmap
    // optimisation could free 7 of a 2 MiB page's 8 memmap pages.
    l.push(format!(
        "HugeTLB: registered 2.00 MiB page size, pre-allocated {} pages",
        sys.hugetlb.nr_huge_pages
    ));
    l.push("HugeTLB: 28 KiB vmemmap can be freed for a 2.00 MiB page".into());
    if nr_node_ids > 1 {
        // The root bus has no _PXM, so it belongs to no node.
        l.push("pci_bus 0000:00: Unknown NUMA node; performance will be reduced".into());
    }
    let windows = pci_windows(spec);
    for &(s, e) in &windows {
        l.push(format!(
            "pci_bus 0000:00: root bus resource {} window]",
            short(s, e - 1).trim_end_matches(']')
        ));
    }
    l.push("iommu: DMA domain TLB invalidation policy: lazy mode ".into());
    l.push("NetLabel:  domain hash size = 128".into());
    let ram = crate::early_alloc::kernel_e820(spec, sys.cmdline.mem_limit);
    for (_, e, _) in ram.into_iter().filter(|r| r.2) {
        let align: u64 = if e <= 1 << 20 {
            64 << 10
        } else if e <= 16 << 20 {
            1 << 20
        } else {
            64 << 20
        };
        let up = e.div_ceil(align) * align;
        if up > e {
            l.push(format!("e820: reserve RAM buffer {}", short(e, up - 1)));
        }
    }
    l.push("VFS: Dquot-cache hash table entries: 512 (order 0, 4096 bytes)".into());
    l.push(hash(
        "IP idents",
        LargeHash::scaled(8, 16, 2048, 256 * 1024),
    ));
    l.push(hash(
        "tcp_listen_portaddr_hash",
        LargeHash::scaled(16, 21, 0, 64 * 1024),
    ));
    l.push(hash("Table-perturb", LargeHash::fixed(4, 1 << 16)));
    let established = LargeHash::scaled(8, 17, 0, 512 * 1024);
    let ehash = established.entries(kernel_pages);
    l.push(hash("TCP established", established));
    l.push(hash(
        "TCP bind",
        LargeHash::fixed(32, ehash).at_most(64 * 1024),
    ));
    l.push(hash("MPTCP token", LargeHash::scaled(24, 20, 0, 64 * 1024)));
    for name in ["UDP", "UDP-Lite"] {
        l.push(hash(name, LargeHash::scaled(32, 21, 256, 64 * 1024)));
    }
    for (i, &(s, e)) in windows.iter().enumerate() {
        l.push(format!(
            "pci_bus 0000:00: resource {} {} window]",
            6 + i,
            short(s, e - 1).trim_end_matches(']')
        ));
    }
    if crate::boot::swiotlb_enabled(spec, memblock) {
        l.push("PCI-DMA: Using software bounce buffering for IO (SWIOTLB)".into());
        if let Some((start, end)) = early.swiotlb.filter(|_| spec.acpi.is_some()) {
            l.push(format!(
                "software IO TLB: mapped [mem {:#018x}-{:#018x}] ({}MB)",
                start << 12,
                end << 12,
                (end - start) >> 8
            ));
        }
    }
    if let Some(a) = spec.acpi.as_ref().filter(|a| a.initrd_bytes > 0) {
        // free_initrd_mem frees whole pages.
        l.push(format!(
            "Freeing initrd memory: {}K",
            a.initrd_bytes.div_ceil(4096) * 4
        ));
    }
    l.push("AppArmor: AppArmor sha1 policy hashing enabled".into());
    l.push("ima: Allocated hash algorithm: sha256".into());
    for (what, kib) in FREED_AFTER_MEM_INIT {
        l.push(format!("{what}: {kib}K"));
    }
    l.push("x86/mm: Checked W+X mappings: passed, no W+X pages found.".into());
    if sys.cmdline.memblock_debug {
        insert_memblock_lines(&mut l, &early.trace);
    }
    l
}

/// `memblock=debug`: each memblock operation's lines, at its place among
/// the boot log's other lines (after the line its anchor names, or before
/// it); an anchor whose line is missing puts its lines where the previous
/// one's ended.
fn insert_memblock_lines(
    l: &mut Vec<String>,
    trace: &[(crate::early_alloc::Anchor, crate::memblock::MemblockOp)],
) {
    use crate::early_alloc::Anchor;
    let mut cursor = l
        .iter()
        .position(|x| x.starts_with("Command line:"))
        .map_or(0, |i| i + 1);
    let mut i = 0;
    while i < trace.len() {
        let anchor = trace[i].0;
        let mut lines = Vec::new();
        while i < trace.len() && trace[i].0 == anchor {
            lines.extend(trace[i].1.debug_lines());
            i += 1;
        }
        let find = |l: &[String], prefix: &str, nth: usize| {
            l.iter()
                .enumerate()
                .skip(cursor)
                .filter(|(_, x)| x.starts_with(prefix))
                .nth(nth)
                .map(|(j, _)| j)
        };
        let last = |l: &[String], prefix: &str| {
            l.iter()
                .enumerate()
                .skip(cursor)
                .rfind(|(_, x)| x.starts_with(prefix))
                .map(|(j, _)| j + 1)
        };
        let at = match anchor {
            Anchor::Setup => find(l, "found SMP MP-table", 0).map(|j| j + 1),
            Anchor::AcpiTable(_) => find(l, "ACPI: Reserving ", 0).map(|j| j + 1),
            Anchor::Slit => find(l, "NUMA: Initialized distance table", 0),
            Anchor::NodeData(n) => find(l, &format!("NODE_DATA({n}) allocated"), 0),
            Anchor::NumaDone => last(l, "NODE_DATA("),
            Anchor::Sparse => find(l, "Zone ranges:", 0),
            Anchor::Memoryless(n) => {
                find(l, &format!("Initializing node {n} as memoryless"), 0).map(|j| j + 1)
            }
            Anchor::Hpet => find(l, "ACPI: HPET id:", 0).map(|j| j + 1),
            Anchor::Smpboot => find(l, "smpboot: Allowing", 0).map(|j| j + 1),
            Anchor::Nosave(_) => find(l, "PM: hibernation: Registered nosave memory", 0),
            Anchor::CommandLine => find(l, "setup_percpu:", 0),
            Anchor::PercpuEmbed => find(l, "setup_percpu:", 0).map(|j| j + 1),
            Anchor::PercpuSetup => find(l, "percpu: Embedded", 0).map(|j| j + 1),
            Anchor::PercpuChunks => last(l, "pcpu-alloc:"),
            Anchor::LogBuf => find(l, "printk: log_buf_len: ", 0),
            Anchor::Hash(0) => find(l, "Dentry cache hash table entries", 0),
            Anchor::Hash(_) => find(l, "Inode-cache hash table entries", 0),
            Anchor::Fixmap => find(l, "mem auto-init:", 0),
            Anchor::Swiotlb => find(l, "Memory:", 0),
        }
        .unwrap_or(cursor);
        let n = lines.len();
        l.splice(at..at, lines);
        // A "before" anchor's own line is passed over too: the next
        // search starts after it (the next nosave region's line, say).
        cursor = at + n;
        if matches!(
            anchor,
            Anchor::Nosave(_) | Anchor::NodeData(_) | Anchor::Hash(_)
        ) {
            cursor += 1;
        }
    }
}

/// `setup_per_cpu_areas` with the embedding allocator: the units' size and
/// how CPUs share the 2 MiB allocations (`pcpu_build_alloc_info`: one
/// group per node with CPUs; the most units per allocation that wastes at
/// most a third of a CPU's count of units and needs no more allocations),
/// then the map `pcpu_dump_alloc_info` prints.
fn percpu_lines(spec: &MachineSpec) -> Vec<String> {
    use crate::early_alloc::{
        PCPU_ATOM_BYTES, PCPU_DYNAMIC, PCPU_RESERVED, PCPU_STATIC, PCPU_UNIT_USED_BYTES,
    };
    let possible = crate::early_alloc::percpu_groups(spec);
    let groups: Vec<&[u32]> = possible.iter().map(|g| g.1.as_slice()).collect();
    let cpus: usize = groups.iter().map(|g| g.len()).sum();
    if cpus == 0 {
        return Vec::new();
    }
    let best = crate::early_alloc::percpu_units_per_alloc(
        &groups.iter().map(|g| g.len() as u64).collect::<Vec<_>>(),
    ) as usize;
    let unit = PCPU_ATOM_BYTES / best as u64;
    let sizes = format!("s{PCPU_STATIC} r{PCPU_RESERVED} d{PCPU_DYNAMIC} u{unit}");
    let mut out = vec![
        format!(
            "percpu: Embedded {} pages/cpu {sizes}",
            PCPU_UNIT_USED_BYTES / 4096
        ),
        format!("pcpu-alloc: {sizes} alloc=1*{PCPU_ATOM_BYTES}"),
    ];
    let digits = |v: usize| v.to_string().len();
    let (group_width, cpu_width) = (digits(groups.len()), digits(cpus));
    let width = best * (cpu_width + 1) + group_width + 3;
    let per_line = crate::units::rounddown_pow_of_two((60 / width).max(1) as u64) as usize;
    let mut allocs: Vec<String> = Vec::new();
    for (g, members) in groups.iter().enumerate() {
        for chunk in members.chunks(best) {
            let mut a = format!("[{g:0group_width$}] ");
            for slot in 0..best {
                match chunk.get(slot) {
                    Some(cpu) => a.push_str(&format!("{cpu:0cpu_width$} ")),
                    None => a.push_str(&format!("{} ", "-".repeat(cpu_width))),
                }
            }
            allocs.push(a);
        }
    }
    for line in allocs.chunks(per_line) {
        out.push(format!("pcpu-alloc: {}", line.concat()));
    }
    out
}

/// Where SeaBIOS puts the ACPI tables: the reserved area right after the
/// last usable RAM below 4 GiB.
pub(crate) fn acpi_base(spec: &MachineSpec) -> Option<u64> {
    spec.e820
        .iter()
        .filter(|e| e.kind == E820Kind::Usable && e.end <= 1 << 32)
        .map(|e| e.end)
        .max()
}

/// KiB of the image the kernel frees after the initcalls (the "Freeing
/// unused ..." parts and the SMP alternatives).
fn image_kib_freed_later(spec: &MachineSpec) -> u64 {
    let alternatives = if crate::boot::frees_smp_alternatives(spec) {
        SMP_ALTERNATIVES_KIB
    } else {
        0
    };
    FREED_AFTER_MEM_INIT.iter().map(|f| f.1).sum::<u64>() + alternatives
}

/// `pages` after the image's end, and the initrd.
fn image_tail_and_initrd(spec: &MachineSpec, pages: u64) -> Vec<(u64, u64)> {
    let image_end = crate::boot::KERNEL_LOAD_PFN + crate::boot::kernel_image_pages(spec);
    let mut held = vec![(image_end, image_end + pages)];
    held.extend(crate::boot::initrd_pfns(spec));
    held
}

/// What the kernel still held when boot set its watermarks for the last
/// time (khugepaged's `set_recommended_min_free_kbytes`, a subsys
/// initcall) and freed afterwards: the image's init parts and the initrd.
/// The SMP alternatives are gone by then (freed by `check_bugs()`, before
/// the initcalls): three memory nodes' minimums, where the zones' shares
/// are close to a rounding edge, show it.
pub(crate) fn freed_after_boot_watermarks(spec: &MachineSpec) -> Vec<(u64, u64)> {
    image_tail_and_initrd(
        spec,
        FREED_AFTER_MEM_INIT.iter().map(|f| f.1).sum::<u64>() / 4,
    )
}

/// The regions still held at `mem_init` besides the final boot
/// reservations: the image parts freed later (and 64 pages more), and the
/// initrd.
fn held_until_after_mem_init(spec: &MachineSpec) -> Vec<(u64, u64)> {
    image_tail_and_initrd(
        spec,
        image_kib_freed_later(spec) / 4 + IMAGE_PAGES_HELD_AT_MEM_INIT,
    )
}

/// `defer_init()` at boot: in the zone that ends a node, struct pages are
/// initialised one by one over the memblock ranges; once more than a
/// section's worth is done, the next section boundary starts the deferred
/// part, which `deferred_init_memmap` later initialises and reports. The
/// nodes that defer, with the present pages deferred.
fn deferred_init(sys: &System, memblock_pfns: &[(u64, u64)]) -> Vec<Deferred> {
    let mut out = Vec::new();
    for n in sys.nodes.values() {
        let Some(z) = n
            .zones
            .iter()
            .filter(|z| z.populated())
            .max_by_key(|z| z.end_pfn())
        else {
            continue;
        };
        let (zs, ze) = (z.start_pfn, z.end_pfn());
        let mut count = 0u64;
        let mut first_deferred = None;
        for &(s, e) in memblock_pfns {
            let (s, e) = (s.max(zs), e.min(ze));
            if s >= e {
                continue;
            }
            // The first aligned pfn whose running count exceeds a section.
            let p = (s + PAGES_PER_SECTION.saturating_sub(count)).div_ceil(PAGES_PER_SECTION)
                * PAGES_PER_SECTION;
            if p < e {
                first_deferred = Some(p);
                break;
            }
            count += e - s;
        }
        if let Some(p) = first_deferred {
            let deferred = memblock_pfns
                .iter()
                .map(|&(s, e)| (s.max(p), e.min(ze)))
                .filter(|(s, e)| s < e)
                .map(|(s, e)| e - s)
                .sum();
            out.push(Deferred {
                nid: n.id,
                first_pfn: p,
                end_pfn: ze,
                pages: deferred,
            });
        }
    }
    out
}

/// A node's deferred struct-page range `[first_pfn, end_pfn)`.
struct Deferred {
    nid: u32,
    first_pfn: u64,
    end_pfn: u64,
    /// Present pages in it.
    pages: u64,
}

/// The image of the Debian 6.1.0-56 kernel the oracle boots: the section
/// sizes `mem_init` prints, and the parts freed after it (`free_initmem`,
/// the decrypted and alignment gaps, SMP alternatives on one CPU).
const KERNEL_SECTIONS: &str =
    "14343K kernel code, 2338K rwdata, 9132K rodata, 2824K init, 17344K bss";
const FREED_AFTER_MEM_INIT: [(&str, u64); 4] = [
    ("Freeing unused decrypted memory", 2036),
    ("Freeing unused kernel image (initmem) memory", 2824),
    ("Freeing unused kernel image (text/rodata gap) memory", 2040),
    ("Freeing unused kernel image (rodata/data gap) memory", 1108),
];
const SMP_ALTERNATIVES_KIB: u64 = crate::boot::SMP_ALTERNATIVES_PAGES * 4;
/// Pages of the image region still reserved at `mem_init` beyond the parts
/// freed after the initcalls (measured: the same on every recorded
/// machine, 1 GiB to 4 GiB, one or two nodes).
const IMAGE_PAGES_HELD_AT_MEM_INIT: u64 = 64;

/// `mem_init_print_info`: free pages at `mem_init` (only the part of each
/// node's last zone before its deferred range is initialised then), the
/// present pages, the image, and what is reserved against `totalram`.
fn memory_summary(
    spec: &MachineSpec,
    sys: &System,
    memblock_pfns: &[(u64, u64)],
    reserved: &[(u64, u64)],
) -> String {
    let deferred = deferred_init(sys, memblock_pfns);
    let mut held: Vec<(u64, u64)> = reserved.to_vec();
    held.extend(held_until_after_mem_init(spec));
    let initrd_pages = spec
        .acpi
        .as_ref()
        .map_or(0, |a| a.initrd_bytes.div_ceil(4096));
    let overlap = |(s, e): (u64, u64), (a, b): (u64, u64)| e.min(b).saturating_sub(s.max(a));
    // Initialised at mem_init: memblock minus every node's deferred range.
    let mut available = 0u64;
    for &(s, e) in memblock_pfns {
        let mut pieces = vec![(s, e)];
        for d in &deferred {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| {
                    [(a, b.min(d.first_pfn)), (a.max(d.end_pfn), b)]
                        .into_iter()
                        .filter(|(x, y)| x < y)
                })
                .collect();
        }
        for init in pieces {
            let held_here: u64 = held.iter().map(|&h| overlap(init, h)).sum();
            available += (init.1 - init.0).saturating_sub(held_here);
        }
    }
    let physpages: u64 = sys.nodes.values().map(|n| n.present_pages()).sum();
    let freed_kib = image_kib_freed_later(spec);
    let totalram = sys.totalram_pages() - freed_kib / 4 - initrd_pages;
    format!(
        "Memory: {}K/{}K available ({KERNEL_SECTIONS}, {}K reserved, 0K cma-reserved)",
        available * 4,
        physpages * 4,
        physpages.saturating_sub(totalram) * 4
    )
}

/// `[mem %#010llx-%#010llx]`.
fn short(start: u64, end_inclusive: u64) -> String {
    short_mem(start, end_inclusive)
}

/// `e820_search_gap`: the largest gap between e820 entries below 4 GiB.
fn pci_gap(spec: &MachineSpec) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let mut entries: Vec<(u64, u64)> = spec
        .e820
        .iter()
        .map(|e| (e.start, e.end))
        .filter(|e| e.0 < 1 << 32)
        .collect();
    entries.sort_unstable();
    for w in entries.windows(2) {
        let (gs, ge) = (w[0].1, w[1].0.min(1 << 32));
        if ge > gs && best.is_none_or(|b| ge - gs > b.1 - b.0) {
            best = Some((gs, ge));
        }
    }
    best
}

/// The image's resources (`Kernel code` ... `Kernel bss`), as the 6.1.0-56
/// kernel the oracle boots registers them under System RAM.
const KERNEL_RESOURCES: [(u64, u64, &str); 4] = [
    (0x0100_0000, 0x01e0_1d31, "Kernel code"),
    (0x0200_0000, 0x028e_afff, "Kernel rodata"),
    (0x02a0_0000, 0x02c4_897f, "Kernel data"),
    (0x0331_0000, 0x043f_ffff, "Kernel bss"),
];

/// The rest of a QEMU pc guest's /proc/iomem: the host bridge's windows,
/// the option and system ROMs, the kernel image, the IOAPIC, HPET and
/// local APIC.
pub(crate) fn qemu_pc_resources(spec: &MachineSpec, io: &mut crate::iomem::Iomem) {
    for (s, e) in pci_windows(spec) {
        let _ = io.request(s, e - 1, "PCI Bus 0000:00", None);
    }
    let _ = io.request(0xc_0000, 0xc_05ff, "Video ROM", None);
    let _ = io.request(0xf_0000, 0xf_ffff, "System ROM", Some("Reserved"));
    for (s, e, name) in KERNEL_RESOURCES {
        let _ = io.request(s, e, name, Some("System RAM"));
    }
    let _ = io.request(0xfec0_0000, 0xfec0_03ff, "IOAPIC 0", None);
    let _ = io.request(0xfed0_0000, 0xfed0_03ff, "HPET 0", None);
    let _ = io.request(0xfed0_0000, 0xfed0_03ff, "PNP0103:00", Some("HPET 0"));
    let _ = io.request(0xfee0_0000, 0xfee0_0fff, "Local APIC", None);
}

/// The host bridge's memory windows of QEMU's i440fx: legacy VGA, the
/// 32-bit hole above low RAM, the 64-bit hole after device memory.
fn pci_windows(spec: &MachineSpec) -> Vec<(u64, u64)> {
    let low_end = spec
        .e820
        .iter()
        .filter(|e| e.kind == E820Kind::Usable && e.end <= 1 << 32)
        .map(|e| e.end)
        .max()
        .unwrap_or(0);
    let low_end = low_end.div_ceil(1 << 20) * (1 << 20);
    let high_end = spec
        .e820
        .iter()
        .filter(|e| e.kind == E820Kind::Usable)
        .map(|e| e.end)
        .max()
        .unwrap_or(0);
    let hole64 = match spec.dimm {
        // QEMU's pc_pci_hole64_start rounds either end up to 1 GiB.
        Some(d) => (d.base + d.size).div_ceil(1 << 30) << 30,
        None => high_end.max(1 << 32).div_ceil(1 << 30) << 30,
    };
    vec![
        (0xa0000, 0xc0000),
        (low_end, 0xfec0_0000),
        (hole64, hole64 + (2 << 30)),
    ]
}

/// Secondary CPU bring-up (announce_cpu): one `.... node #N, CPUs:` line
/// per run of CPUs on the same node, continued with ` #cpu` for each CPU,
/// and the once-only warning when a CPU shares its last-level cache with a
/// CPU of another node (QEMU puts all `-smp` CPUs in one package).
fn smp_boot_lines(spec: &MachineSpec) -> Vec<String> {
    let mut cpu_node: Vec<(u32, u32)> = spec
        .nodes
        .iter()
        .flat_map(|n| n.cpus.iter().map(move |&c| (c, n.id)))
        .collect();
    cpu_node.sort_unstable();
    if cpu_node.len() < 2 {
        return Vec::new();
    }
    let digits = |v: usize| v.to_string().len();
    let width = digits(cpu_node.len()) + 1;
    let node_width = digits(spec.nodes.len()) + 1;
    let mut out = vec!["x86: Booting SMP configuration:".to_string()];
    let mut line: Option<String> = None;
    let mut current = None;
    let mut warned = false;
    for (i, &(cpu, nid)) in cpu_node.iter().enumerate().skip(1) {
        if current != Some(nid) {
            out.extend(line.take());
            current = Some(nid);
            let pad = node_width.saturating_sub(digits(nid as usize)).max(1);
            line = Some(format!(".... node {:pad$}#{nid}, CPUs:  ", ""));
        }
        let text = line.get_or_insert_with(String::new);
        if i == 1 {
            text.push_str(&" ".repeat(width + 1));
        }
        let pad = width.saturating_sub(digits(cpu as usize)).max(1);
        text.push_str(&format!("{:pad$}#{cpu}", ""));
        if !warned {
            if let Some(&(other, onid)) = cpu_node[..i].iter().find(|&&(_, n)| n != nid) {
                warned = true;
                out.extend(line.take());
                out.push(format!(
                    "sched: CPU #{cpu}'s llc-sibling CPU #{other} is not on the same node! [node: {nid} != {onid}]. Ignoring dependency."
                ));
            }
        }
    }
    out.extend(line);
    out
}

/// numa_cleanup_meminfo: a node's SRAT ranges, cut at the end of RAM and
/// merged when nothing lies between them.
fn numa_merge_lines(spec: &MachineSpec, ram_end: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (nid, blocks) in crate::early_alloc::srat_memory(spec, ram_end) {
        let mut merged: Option<(u64, u64)> = None;
        for (a, b) in blocks {
            merged = Some(match merged {
                None => (a, b),
                Some((ms, me)) => {
                    out.push(format!(
                        "NUMA: Node {} {} + {} -> {}",
                        nid,
                        short(ms, me - 1),
                        short(a, b - 1),
                        short(ms, b - 1)
                    ));
                    (ms, b)
                }
            });
        }
    }
    out
}
