//! The page counters memhp shows in procfs and the node directories:
//! `/proc/meminfo`, `/proc/vmstat`, `/proc/zoneinfo`, `/proc/buddyinfo`,
//! `nodeN/meminfo` and `nodeN/vmstat`, as pure functions of a [`System`]
//! (6.1's lines, order and widths).

use memhp_model::hugetlb::HPAGE_PAGES;
use memhp_model::pages::{MigrateType, PageState, PAGEBLOCK_PAGES};
use memhp_model::retrylog::{BUDDY_TYPES, MAX_ORDER};
use memhp_model::{System, ZoneType};

/// The transparent-huge-page lines of `/proc/meminfo` and `nodeN/meminfo`,
/// in their order: no THP is modelled.
const NO_THP: [(&str, u64); 5] = [
    ("AnonHugePages:", 0),
    ("ShmemHugePages:", 0),
    ("ShmemPmdMapped:", 0),
    ("FileHugePages:", 0),
    ("FilePmdMapped:", 0),
];

/// The page counters `/proc/meminfo` and `nodeN/meminfo` share, for one
/// node or (`None`) all of them. The running system's own memory (its
/// slab, stacks, rootfs, mapped programs) is counted on the first memory
/// node, where the boot CPU's tasks allocate.
struct MemCounters {
    total: u64,
    free: u64,
    lru: u64,
    active: u64,
    shmem: u64,
    mapped: u64,
    slab_reclaimable: u64,
    slab_unreclaimable: u64,
    kernel_stack: u64,
    pagetables: u64,
}

impl MemCounters {
    fn of(sys: &System, nid: Option<u32>) -> MemCounters {
        let nids: Vec<u32> = match nid {
            Some(n) => vec![n],
            None => sys.nodes.keys().copied().collect(),
        };
        let runtime_node = sys.nodes.values().find(|n| n.has_memory).map(|n| n.id);
        let with_runtime = nid.is_none() || nid == runtime_node;
        let lru: u64 = nids.iter().map(|&n| sys.node_lru_pages(n)).sum();
        let r = &sys.runtime;
        let (sr, su) = sys.slab_pages();
        let on = |v: u64| if with_runtime { v } else { 0 };
        let shmem = on(sys.shmem_pages()).min(lru);
        MemCounters {
            total: match nid {
                Some(n) => sys.node(n).map_or(0, |n| n.managed_pages()),
                None => sys.totalram_pages(),
            },
            free: nids.iter().map(|&n| sys.node_free_pages(n)).sum(),
            lru,
            active: on(r.active).min(lru),
            shmem,
            mapped: on(r.mapped).min(lru),
            slab_reclaimable: on(sr),
            slab_unreclaimable: on(su),
            kernel_stack: on(r.kernel_stack),
            pagetables: on(r.pagetables),
        }
    }

    fn anon(&self) -> u64 {
        self.lru - self.shmem
    }
}

/// `nodeN/meminfo` (spec 01 §4.4).
pub fn node_meminfo(sys: &System, nid: u32) -> Option<String> {
    sys.node(nid)?;
    let c = MemCounters::of(sys, Some(nid));
    let kb = |pages: u64| pages * 4;
    let fields: Vec<(&str, u64)> = vec![
        ("MemTotal:", kb(c.total)),
        ("MemFree:", kb(c.free)),
        ("MemUsed:", kb(c.total.saturating_sub(c.free))),
        ("SwapCached:", 0),
        ("Active:", kb(c.active)),
        ("Inactive:", kb(c.lru - c.active)),
        ("Active(anon):", kb(c.active)),
        ("Inactive(anon):", kb(c.lru - c.active)),
        ("Active(file):", 0),
        ("Inactive(file):", 0),
        ("Unevictable:", 0),
        ("Mlocked:", 0),
        ("Dirty:", 0),
        ("Writeback:", 0),
        ("FilePages:", kb(c.shmem)),
        ("Mapped:", kb(c.mapped)),
        ("AnonPages:", kb(c.anon())),
        ("Shmem:", kb(c.shmem)),
        ("KernelStack:", kb(c.kernel_stack)),
        ("PageTables:", kb(c.pagetables)),
        ("SecPageTables:", 0),
        ("NFS_Unstable:", 0),
        ("Bounce:", 0),
        ("WritebackTmp:", 0),
        ("KReclaimable:", kb(c.slab_reclaimable)),
        ("Slab:", kb(c.slab_reclaimable + c.slab_unreclaimable)),
        ("SReclaimable:", kb(c.slab_reclaimable)),
        ("SUnreclaim:", kb(c.slab_unreclaimable)),
    ];
    let mut out = String::new();
    for (label, v) in fields.into_iter().chain(NO_THP) {
        // node_read_meminfo pads its labels to 16 columns, except these
        // two, written with one space.
        let label = match label {
            "FileHugePages:" | "FilePmdMapped:" => format!("{label} "),
            _ => format!("{label:<16}"),
        };
        out.push_str(&format!("Node {nid} {label}{v:>8} kB\n"));
    }
    let (huge_total, huge_free) = sys.node_huge_pages(nid);
    out.push_str(&format!("Node {nid} HugePages_Total: {huge_total:>5}\n"));
    out.push_str(&format!("Node {nid} HugePages_Free:  {huge_free:>5}\n"));
    out.push_str(&format!("Node {nid} HugePages_Surp:  {:>5}\n", 0));
    Some(out)
}

/// Per-cpu pages per CPU (`Percpu`): the first chunk's 62 embedded
/// pages and 3 of the dynamic area populated (260 kB on one CPU).
const PERCPU_PAGES_PER_CPU: u64 = 65;

/// `si_mem_available`: free pages above the reserves, plus what reclaim
/// could give back (half of the reclaimable slab at most, and never more
/// than the low watermarks).
fn mem_available(sys: &System, free: u64, reclaimable: u64) -> u64 {
    let low: u64 = sys
        .online_nodes()
        .flat_map(|node| ZoneType::ALL.map(|z| sys.wmark.low_pages(node.id, z)))
        .sum();
    (free + reclaimable).saturating_sub(total_reserve(sys) + (reclaimable / 2).min(low))
}

/// `totalreserve_pages`: per zone its high watermark plus its largest
/// lowmem protection, at most its managed pages.
fn total_reserve(sys: &System) -> u64 {
    sys.online_nodes()
        .flat_map(|node| ZoneType::ALL.map(move |z| (node, z)))
        .map(|(node, z)| {
            let prot = sys
                .lowmem_reserves(node.id, z)
                .into_iter()
                .max()
                .unwrap_or(0);
            (prot + sys.wmark.high_pages(node.id, z)).min(node.zone(z).managed)
        })
        .sum()
}

/// `/proc/meminfo`, every line of 6.1 x86-64 (Debian's configuration: zswap,
/// no 1 GiB direct-map pages, no CMA).
pub fn proc_meminfo(sys: &System) -> String {
    let c = MemCounters::of(sys, None);
    let r = &sys.runtime;
    let h = &sys.hugetlb;
    let hugetlb = h.nr_huge_pages * HPAGE_PAGES;
    let kib = |pages: u64| pages * 4;
    let (map4k, map2m) = sys.direct_map_kib();
    let (total, free, lru, active, shmem, anon) =
        (c.total, c.free, c.lru, c.active, c.shmem, c.anon());
    let (reclaimable, unreclaimable) = (c.slab_reclaimable, c.slab_unreclaimable);
    let fields: Vec<(&str, u64)> = vec![
        ("MemTotal:", kib(total)),
        ("MemFree:", kib(free)),
        ("MemAvailable:", kib(mem_available(sys, free, reclaimable))),
        ("Buffers:", 0),
        ("Cached:", kib(shmem)),
        ("SwapCached:", 0),
        ("Active:", kib(active)),
        ("Inactive:", kib(lru - active)),
        ("Active(anon):", kib(active)),
        ("Inactive(anon):", kib(lru - active)),
        ("Active(file):", 0),
        ("Inactive(file):", 0),
        ("Unevictable:", 0),
        ("Mlocked:", 0),
        ("SwapTotal:", 0),
        ("SwapFree:", 0),
        ("Zswap:", 0),
        ("Zswapped:", 0),
        ("Dirty:", 0),
        ("Writeback:", 0),
        ("AnonPages:", kib(anon)),
        ("Mapped:", kib(c.mapped)),
        ("Shmem:", kib(shmem)),
        ("KReclaimable:", kib(reclaimable)),
        ("Slab:", kib(reclaimable + unreclaimable)),
        ("SReclaimable:", kib(reclaimable)),
        ("SUnreclaim:", kib(unreclaimable)),
        ("KernelStack:", kib(c.kernel_stack)),
        ("PageTables:", kib(c.pagetables)),
        ("SecPageTables:", 0),
        ("NFS_Unstable:", 0),
        ("Bounce:", 0),
        ("WritebackTmp:", 0),
        // vm_commit_limit: overcommit_kbytes, or overcommit_ratio % of the
        // memory outside the hugetlb pool; no swap.
        (
            "CommitLimit:",
            commit_limit_kib(sys, total.saturating_sub(hugetlb)),
        ),
        ("Committed_AS:", kib(r.committed)),
        ("VmallocTotal:", 34_359_738_367),
        ("VmallocUsed:", kib(r.vmalloc)),
        ("VmallocChunk:", 0),
        (
            "Percpu:",
            kib(PERCPU_PAGES_PER_CPU * u64::from(sys.nr_cpu_ids())),
        ),
        ("HardwareCorrupted:", kib(sys.hwpoison.count)),
    ];
    let mut out = String::new();
    for (label, v) in fields.into_iter().chain(NO_THP) {
        if label == "HardwareCorrupted:" {
            // Printed with its own format (`%5lu`), not show_val_kb's.
            out.push_str(&format!("{label} {v:>5} kB\n"));
        } else {
            out.push_str(&format!("{label:<16}{v:>8} kB\n"));
        }
    }
    // hugetlb_report_meminfo
    out.push_str(&format!(
        "HugePages_Total:   {:>5}\nHugePages_Free:    {:>5}\nHugePages_Rsvd:    {:>5}\nHugePages_Surp:    {:>5}\nHugepagesize:   {:>8} kB\nHugetlb:        {:>8} kB\n",
        h.nr_huge_pages,
        h.free_huge_pages,
        h.resv_huge_pages,
        0,
        HPAGE_PAGES * 4,
        h.nr_huge_pages * HPAGE_PAGES * 4
    ));
    out.push_str(&format!(
        "DirectMap4k:    {map4k:>8} kB\nDirectMap2M:    {map2m:>8} kB\n"
    ));
    out
}

/// `/proc/zoneinfo`: every zone of every online node.
pub fn zoneinfo(sys: &System) -> String {
    let mut out = String::new();
    for node in sys.online_nodes() {
        let first_populated = ZoneType::ALL
            .into_iter()
            .find(|&z| node.zone(z).populated());
        for z in ZoneType::ALL {
            let zone = node.zone(z);
            out.push_str(&format!("Node {}, zone {:>8}", node.id, z.name()));
            if Some(z) == first_populated {
                out.push_str("\n  per-node stats");
                for (name, v) in node_stat_items(sys, node.id) {
                    out.push_str(&format!("\n      {name:<12} {v}"));
                }
            }
            let w = &sys.wmark;
            let free = sys.zone_free_pages(node.id, z);
            out.push_str(&format!(
                "\n  pages free     {free}\n        boost    0\n        min      {}\n        low      {}\n        high     {}\n        spanned  {}\n        present  {}\n        managed  {}\n        cma      {}",
                w.min_pages(node.id, z),
                w.low_pages(node.id, z),
                w.high_pages(node.id, z),
                zone.spanned,
                zone.present,
                zone.managed,
                zone.cma
            ));
            let protection: Vec<String> = sys
                .lowmem_reserves(node.id, z)
                .iter()
                .map(u64::to_string)
                .collect();
            out.push_str(&format!(
                "\n        protection: ({})",
                protection.join(", ")
            ));
            if !zone.populated() {
                out.push('\n');
                continue;
            }
            let items = zone_stat_items(sys, node.id, z);
            for (name, v) in items {
                out.push_str(&format!("\n      {name:<12} {v}"));
            }
            out.push_str("\n  pagesets");
            let pcp = PerCpuPages::of(sys, node.id, z);
            for cpu in sys.online_cpus() {
                out.push_str(&format!(
                    "\n    cpu: {cpu}\n              count: 0\n              high:  {}\n              batch: {}\n  vm stats threshold: {}",
                    pcp.high, pcp.batch, pcp.threshold
                ));
            }
            out.push_str(&format!(
                "\n  node_unreclaimable:  0\n  start_pfn:           {}\n",
                zone.start_pfn
            ));
        }
    }
    out
}

/// A zone's per-CPU page lists as `zone_pcp_update` sizes them after each
/// watermark setup, and its vmstat threshold (`refresh_zone_stat_thresholds`
/// at every online and offline). How many pages each list holds is left at
/// 0: it depends on the guest's latest frees.
struct PerCpuPages {
    high: u64,
    batch: u64,
    threshold: u64,
}

impl PerCpuPages {
    fn of(sys: &System, nid: u32, z: ZoneType) -> Self {
        let managed = sys.nodes.get(&nid).map_or(0, |n| n.zone(z).managed);
        // zone_batchsize: a quarter of a 1024th of the zone (at most 1 MiB),
        // rounded to 2^n - 1; at least 1.
        let quarter = ((managed >> 10).min(256) / 4).max(1);
        let batch = (memhp_model::units::rounddown_pow_of_two(quarter + quarter / 2) - 1).max(1);
        // zone_highsize: the low watermark, or managed / fraction, split
        // across the node's CPUs (all online CPUs for a CPU-less node).
        let fraction = sys.vm.int("percpu_pagelist_high_fraction").max(0) as u64;
        let total = match fraction {
            0 => sys.wmark.low_pages(nid, z),
            f => managed / f,
        };
        let cpus = sys.online_cpus().len() as u64;
        let split = match sys.nodes.get(&nid).map_or(0, |n| n.cpus.len() as u64) {
            0 => cpus,
            n => n,
        };
        let high = (total / split.max(1)).max(batch << 2);
        // calculate_normal_threshold: 2 * fls(cpus) * (1 + fls(128 MiB units)).
        let fls = |v: u64| u64::from(memhp_model::units::fls(v));
        let threshold = (2 * fls(cpus) * (1 + fls(managed >> 15))).min(125);
        PerCpuPages {
            high,
            batch,
            threshold,
        }
    }
}

/// A zone's vmstat items and NUMA events (6.1 order): the anonymous LRU
/// pages the model places (all counted inactive), no file, mlocked,
/// bounce, zsmalloc or CMA pages; the NUMA event counters are not
/// modelled.
fn zone_stat_items(sys: &System, nid: u32, z: ZoneType) -> [(&'static str, u64); 17] {
    let lru = sys.zone_pages_in(nid, z, |s| {
        matches!(s, PageState::Movable | PageState::Pinned)
    });
    [
        ("nr_free_pages", sys.zone_free_pages(nid, z)),
        ("nr_zone_inactive_anon", lru),
        ("nr_zone_active_anon", 0),
        ("nr_zone_inactive_file", 0),
        ("nr_zone_active_file", 0),
        ("nr_zone_unevictable", 0),
        ("nr_zone_write_pending", 0),
        ("nr_mlock", 0),
        ("nr_bounce", 0),
        ("nr_zspages", 0),
        ("nr_free_cma", 0),
        ("numa_hit", 0),
        ("numa_miss", 0),
        ("numa_foreign", 0),
        ("numa_interleave", 0),
        ("numa_local", 0),
        ("numa_other", 0),
    ]
}

/// A node's vmstat items (6.1 order), from the counters `nodeN/meminfo`
/// shows; event counters (refaults, reclaim writes, pins) are not
/// modelled. `nr_kernel_stack` is in KiB, as the kernel keeps it.
fn node_stat_items(sys: &System, nid: u32) -> Vec<(&'static str, u64)> {
    let c = MemCounters::of(sys, Some(nid));
    vec![
        ("nr_inactive_anon", c.lru - c.active),
        ("nr_active_anon", c.active),
        ("nr_inactive_file", 0),
        ("nr_active_file", 0),
        ("nr_unevictable", 0),
        ("nr_slab_reclaimable", c.slab_reclaimable),
        ("nr_slab_unreclaimable", c.slab_unreclaimable),
        ("nr_isolated_anon", 0),
        ("nr_isolated_file", 0),
        ("workingset_nodes", 0),
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", 0),
        ("workingset_activate_anon", 0),
        ("workingset_activate_file", 0),
        ("workingset_restore_anon", 0),
        ("workingset_restore_file", 0),
        ("workingset_nodereclaim", 0),
        ("nr_anon_pages", c.anon()),
        ("nr_mapped", c.mapped),
        ("nr_file_pages", c.shmem),
        ("nr_dirty", 0),
        ("nr_writeback", 0),
        ("nr_writeback_temp", 0),
        ("nr_shmem", c.shmem),
        ("nr_shmem_hugepages", 0),
        ("nr_shmem_pmdmapped", 0),
        ("nr_file_hugepages", 0),
        ("nr_file_pmdmapped", 0),
        ("nr_anon_transparent_hugepages", 0),
        ("nr_vmscan_write", 0),
        ("nr_vmscan_immediate_reclaim", 0),
        ("nr_dirtied", 0),
        ("nr_written", 0),
        ("nr_throttled_written", 0),
        ("nr_kernel_misc_reclaimable", 0),
        ("nr_foll_pin_acquired", 0),
        ("nr_foll_pin_released", 0),
        ("nr_kernel_stack", c.kernel_stack * 4),
        ("nr_page_table_pages", c.pagetables),
        ("nr_sec_page_table_pages", 0),
        ("nr_swapcached", 0),
        ("pgpromote_success", 0),
        ("pgpromote_candidate", 0),
    ]
}

/// `nodeN/vmstat`: the zone items summed over the node's zones, then the
/// node's own items.
pub fn node_vmstat(sys: &System, nid: u32) -> String {
    vmstat_lines(vmstat_items(sys, &[nid]))
}

/// The zone items summed over every zone of `nids`, then the node items
/// summed over `nids`, in the kernel's order.
fn vmstat_items(sys: &System, nids: &[u32]) -> Vec<(&'static str, u64)> {
    let mut sums: Vec<(&'static str, u64)> = Vec::new();
    let zones = nids.iter().flat_map(|&nid| {
        ZoneType::ALL
            .into_iter()
            .flat_map(move |z| zone_stat_items(sys, nid, z))
    });
    let nodes = nids.iter().flat_map(|&nid| node_stat_items(sys, nid));
    for (name, v) in zones.chain(nodes) {
        match sums.iter_mut().find(|e| e.0 == name) {
            Some(e) => e.1 += v,
            None => sums.push((name, v)),
        }
    }
    sums
}

/// `name value` lines.
fn vmstat_lines(items: Vec<(&str, u64)>) -> String {
    items
        .into_iter()
        .map(|(name, v)| format!("{name} {v}\n"))
        .collect()
}

/// `vm_commit_limit()` in KiB, from the pages outside the hugetlb pool.
fn commit_limit_kib(sys: &System, pages: u64) -> u64 {
    match sys.vm.int("overcommit_kbytes") {
        0 => {
            let ratio = sys.vm.int("overcommit_ratio");
            let allowed = (i128::from(pages) * i128::from(ratio) / 100).max(0);
            u64::try_from(allowed).unwrap_or(u64::MAX) * 4
        }
        kbytes => kbytes.max(0) as u64,
    }
}

/// `/proc/buddyinfo`: per populated zone of each online node, the free
/// chunks of each order.
pub fn buddyinfo(sys: &System) -> String {
    let mut out = String::new();
    for node in sys.online_nodes() {
        for z in ZoneType::ALL
            .into_iter()
            .filter(|&z| node.zone(z).populated())
        {
            out.push_str(&format!("Node {}, zone {:>8} ", node.id, z.name()));
            for n in sys.free_area(node.id, z).nr {
                out.push_str(&format!("{n:>6} "));
            }
            out.push('\n');
        }
    }
    out
}

/// The migratetypes `/proc/pagetypeinfo` lists (6.1 x86-64 without CMA),
/// in order, with the page model's type where it has one (reclaimable and
/// high-atomic pageblocks it does not model: none).
const PAGETYPE_NAMES: [(&str, Option<MigrateType>); 5] = [
    ("Unmovable", Some(MigrateType::Unmovable)),
    ("Movable", Some(MigrateType::Movable)),
    ("Reclaimable", None),
    ("HighAtomic", None),
    ("Isolate", Some(MigrateType::Isolate)),
];

/// `/proc/pagetypeinfo`: the pageblock order, then per populated zone the
/// free chunks of each order and migratetype (a list of 100000 or more
/// prints as `>100000`), then how many pageblocks are of each type.
pub fn pagetypeinfo(sys: &System) -> String {
    let model_index =
        |mt: Option<MigrateType>| mt.and_then(|mt| BUDDY_TYPES.iter().position(|t| t.0 == mt));
    let zones: Vec<(u32, ZoneType)> = sys
        .online_nodes()
        .flat_map(|node| {
            ZoneType::ALL
                .into_iter()
                .filter(|&z| node.zone(z).populated())
                .map(|z| (node.id, z))
        })
        .collect();
    let mut out = format!(
        "Page block order: {}\nPages per block:  {}\n\n",
        PAGEBLOCK_PAGES.trailing_zeros(),
        PAGEBLOCK_PAGES
    );
    out.push_str(&format!(
        "{:<43} ",
        "Free pages count per migrate type at order"
    ));
    for order in 0..MAX_ORDER {
        out.push_str(&format!("{order:>6} "));
    }
    out.push('\n');
    for &(nid, z) in &zones {
        let area = sys.free_area(nid, z);
        for (name, mt) in PAGETYPE_NAMES {
            out.push_str(&format!(
                "Node {nid:>4}, zone {:>8}, type {name:>12} ",
                z.name()
            ));
            for order in 0..MAX_ORDER {
                let n = model_index(mt).map_or(0, |i| area.by_type[i][order]);
                match n >= 100_000 {
                    true => out.push_str(">100000 "),
                    false => out.push_str(&format!("{n:>6} ")),
                }
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("\n{:<23}", "Number of blocks type "));
    for (name, _) in PAGETYPE_NAMES {
        out.push_str(&format!("{name:>12} "));
    }
    out.push('\n');
    for &(nid, z) in &zones {
        let counts = sys.pageblock_types(nid, z);
        out.push_str(&format!("Node {nid}, zone {:>8} ", z.name()));
        for (_, mt) in PAGETYPE_NAMES {
            let n = model_index(mt).map_or(0, |i| counts[i]);
            out.push_str(&format!("{n:>12} "));
        }
        out.push('\n');
    }
    out
}

/// The event counters of `/proc/vmstat` (6.1, Debian's configuration), in
/// order; memhp counts none of them.
const VM_EVENTS: [&str; 111] = [
    "pgpgin",
    "pgpgout",
    "pswpin",
    "pswpout",
    "pgalloc_dma",
    "pgalloc_dma32",
    "pgalloc_normal",
    "pgalloc_movable",
    "pgalloc_device",
    "allocstall_dma",
    "allocstall_dma32",
    "allocstall_normal",
    "allocstall_movable",
    "allocstall_device",
    "pgskip_dma",
    "pgskip_dma32",
    "pgskip_normal",
    "pgskip_movable",
    "pgskip_device",
    "pgfree",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pgfault",
    "pgmajfault",
    "pglazyfreed",
    "pgrefill",
    "pgreuse",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgdemote_kswapd",
    "pgdemote_direct",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgscan_direct_throttle",
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_anon",
    "pgsteal_file",
    "zone_reclaim_failed",
    "pginodesteal",
    "slabs_scanned",
    "kswapd_inodesteal",
    "kswapd_low_wmark_hit_quickly",
    "kswapd_high_wmark_hit_quickly",
    "pageoutrun",
    "pgrotated",
    "drop_pagecache",
    "drop_slab",
    "oom_kill",
    "numa_pte_updates",
    "numa_huge_pte_updates",
    "numa_hint_faults",
    "numa_hint_faults_local",
    "numa_pages_migrated",
    "pgmigrate_success",
    "pgmigrate_fail",
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
    "compact_migrate_scanned",
    "compact_free_scanned",
    "compact_isolated",
    "compact_stall",
    "compact_fail",
    "compact_success",
    "compact_daemon_wake",
    "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned",
    "htlb_buddy_alloc_success",
    "htlb_buddy_alloc_fail",
    "unevictable_pgs_culled",
    "unevictable_pgs_scanned",
    "unevictable_pgs_rescued",
    "unevictable_pgs_mlocked",
    "unevictable_pgs_munlocked",
    "unevictable_pgs_cleared",
    "unevictable_pgs_stranded",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "thp_fault_fallback_charge",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
    "thp_file_alloc",
    "thp_file_fallback",
    "thp_file_fallback_charge",
    "thp_file_mapped",
    "thp_split_page",
    "thp_split_page_failed",
    "thp_deferred_split_page",
    "thp_split_pmd",
    "thp_scan_exceed_none_pte",
    "thp_scan_exceed_swap_pte",
    "thp_scan_exceed_share_pte",
    "thp_split_pud",
    "thp_zero_page_alloc",
    "thp_zero_page_alloc_failed",
    "thp_swpout",
    "thp_swpout_fallback",
    "balloon_inflate",
    "balloon_deflate",
    "balloon_migrate",
    "swap_ra",
    "swap_ra_hit",
    "ksm_swpin_copy",
    "cow_ksm",
    "zswpin",
    "zswpout",
    "direct_map_level2_splits",
    "direct_map_level3_splits",
    "nr_unstable",
];

/// `/proc/vmstat`: the zone items summed over every zone, the node items
/// over every node, the dirty limits (`global_dirty_limits` with the
/// default 20 % and 10 % of the dirtyable memory: free pages above the
/// reserves), then the event counters.
pub fn proc_vmstat(sys: &System) -> String {
    let nids: Vec<u32> = sys.nodes.keys().copied().collect();
    let mut items = vmstat_items(sys, &nids);
    let free = sys.nr_free_pages();
    let dirtyable = free.saturating_sub(total_reserve(sys)) + 1;
    // vm_dirty_ratio and dirty_background_ratio as fractions of a page.
    let (ratio, bg_ratio) = (20 * 4096 / 100, 10 * 4096 / 100);
    items.push(("nr_dirty_threshold", ratio * dirtyable / 4096));
    items.push(("nr_dirty_background_threshold", bg_ratio * dirtyable / 4096));
    items.extend(
        VM_EVENTS
            .iter()
            .map(|&e| (e, sys.vm_events.get(e).unwrap_or(0))),
    );
    vmstat_lines(items)
}
