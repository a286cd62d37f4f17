//! `/proc/sys/vm` and the per-CPU page lists of `/proc/zoneinfo`, against
//! what Linux 6.1 showed on a 1 GiB guest (`conformance/behaviour`
//! `vm-sysctls`, `zoneinfo-pagesets`).

use memhp_model::events::Task;
use memhp_model::machine::QemuPc;
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System};
use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const VM: &str = "proc/sys/vm";

fn tree() -> SysfsTree {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    let sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    SysfsTree::new(Arc::new(Shared::new(sys)))
}

fn read(t: &SysfsTree, f: &str) -> String {
    String::from_utf8(t.read(&format!("{VM}/{f}")).unwrap()).unwrap()
}

fn write(t: &SysfsTree, f: &str, v: &str) -> Result<usize, Errno> {
    let p = format!("{VM}/{f}");
    t.open(&p, false, true)?;
    t.write(&p, v.as_bytes(), &Cancel::new())
}

/// `(min, low, high)` of a zone in zoneinfo, and its pcp `high`/`batch`.
fn zone(t: &SysfsTree, name: &str) -> (u64, u64, u64, Option<(u64, u64)>) {
    let text = String::from_utf8(t.read("proc/zoneinfo").unwrap()).unwrap();
    let section = text
        .split("Node 0, zone ")
        .find(|s| s.trim_start().starts_with(name))
        .unwrap();
    let value = |label: &str| -> Option<u64> {
        section
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| l.trim_start()[label.len()..].trim().parse().unwrap())
    };
    let pcp = value("high:").map(|h| (h, value("batch:").unwrap()));
    (
        value("min ").unwrap(),
        value("low ").unwrap(),
        value("high ").unwrap(),
        pcp,
    )
}

#[test]
fn every_sysctl_of_the_guest_is_listed_with_its_mode_and_default() {
    let t = tree();
    let entries = t.readdir(VM).unwrap();
    assert_eq!(entries.len(), 50);
    let mode = |f: &str| match t.lookup(&format!("{VM}/{f}")) {
        Some(memhp_sysfs::vfs::EntryKind::File { mode }) => mode,
        other => panic!("{f}: {other:?}"),
    };
    assert_eq!(mode("drop_caches"), 0o200);
    assert_eq!(mode("mmap_rnd_bits"), 0o600);
    assert_eq!(mode("swappiness"), 0o644);
    assert_eq!(read(&t, "lowmem_reserve_ratio"), "256\t256\t32\t0\t0\n");
    assert_eq!(read(&t, "watermark_scale_factor"), "10\n");
    assert_eq!(read(&t, "numa_zonelist_order"), "Node\n");
    assert_eq!(read(&t, "admin_reserve_kbytes"), "8192\n");
    assert_eq!(read(&t, "stat_refresh"), "");
    assert_eq!(
        t.open(&format!("{VM}/drop_caches"), true, false),
        Err(Errno::EACCES)
    );
}

#[test]
fn watermark_scale_factor_sets_the_watermarks_and_pcp_high_up_again() {
    let t = tree();
    for bad in ["0", "3001", "abc"] {
        assert_eq!(
            write(&t, "watermark_scale_factor", bad),
            Err(Errno::EINVAL),
            "{bad}"
        );
    }
    assert_eq!(write(&t, "watermark_scale_factor", "200"), Ok(3));
    let (min, low, high, pcp) = zone(&t, "DMA32");
    // step = max(min / 4, managed * 200 / 10000) with 225520 managed pages.
    let managed = 225_520u64;
    let step = (min / 4).max(managed * 200 / 10_000);
    assert_eq!((low, high), (min + step, min + 2 * step));
    // One CPU: pcp high is the low watermark; batch from the zone's size.
    assert_eq!(pcp, Some((low, 63)));
    assert_eq!(zone(&t, "DMA").3.map(|p| p.1), Some(1));
}

#[test]
fn lowmem_reserve_ratio_takes_a_value_per_zone_and_zeroes_those_below_1() {
    let t = tree();
    assert_eq!(write(&t, "lowmem_reserve_ratio", "128 64"), Ok(6));
    assert_eq!(read(&t, "lowmem_reserve_ratio"), "128\t64\t32\t0\t0\n");
    assert_eq!(write(&t, "lowmem_reserve_ratio", "-5 300 7 0 0"), Ok(12));
    assert_eq!(read(&t, "lowmem_reserve_ratio"), "0\t300\t7\t0\t0\n");
    let text = String::from_utf8(t.read("proc/zoneinfo").unwrap()).unwrap();
    let dma = text.split("zone    DMA32").next().unwrap();
    assert!(dma.contains("protection: (0, 0, 0, 0, 0)"), "{dma}");
}

#[test]
fn overcommit_ratio_and_kbytes_clear_each_other_and_set_commit_limit() {
    let t = tree();
    let limit = || {
        let m = String::from_utf8(t.read("proc/meminfo").unwrap()).unwrap();
        let l = m.lines().find(|l| l.starts_with("CommitLimit:")).unwrap();
        l["CommitLimit:".len()..]
            .trim()
            .trim_end_matches(" kB")
            .parse::<u64>()
            .unwrap()
    };
    let half = limit();
    assert_eq!(write(&t, "overcommit_ratio", "80"), Ok(2));
    // The same pages, 80 % instead of 50 % (to the page).
    assert!(
        (limit() as i64 - (half * 8 / 5) as i64).abs() <= 8,
        "{}",
        limit()
    );
    assert_eq!(write(&t, "overcommit_kbytes", "100000"), Ok(6));
    assert_eq!(read(&t, "overcommit_ratio"), "0\n");
    assert_eq!(limit(), 100_000);
    assert_eq!(write(&t, "overcommit_ratio", "50"), Ok(2));
    assert_eq!(read(&t, "overcommit_kbytes"), "0\n");
    assert_eq!(limit(), half);
    assert_eq!(write(&t, "overcommit_memory", "3"), Err(Errno::EINVAL));
    assert_eq!(write(&t, "overcommit_memory", "2"), Ok(1));
}

#[test]
fn percpu_pagelist_high_fraction_sizes_pcp_high_by_the_zone() {
    let t = tree();
    assert_eq!(
        write(&t, "percpu_pagelist_high_fraction", "4"),
        Err(Errno::EINVAL)
    );
    assert_eq!(write(&t, "percpu_pagelist_high_fraction", "8"), Ok(1));
    assert_eq!(zone(&t, "DMA").3, Some((3840 / 8, 1)));
    assert_eq!(zone(&t, "DMA32").3, Some((225_520 / 8, 63)));
}

#[test]
fn drop_caches_and_numa_zonelist_order_log_as_the_kernel_does() {
    let t = tree();
    assert_eq!(write(&t, "drop_caches", "5"), Err(Errno::EINVAL));
    let task: Arc<memhp_sysfs::vfs::WriterFn> = Arc::new(|| {
        Some(Task {
            pid: 273,
            comm: "ohelper".into(),
        })
    });
    let cancel = Cancel::new().with_writer(task);
    let p = format!("{VM}/drop_caches");
    assert_eq!(t.write(&p, b"3", &cancel), Ok(1));
    assert_eq!(
        write(&t, "numa_zonelist_order", "foo\n"),
        Err(Errno::EINVAL)
    );
    assert_eq!(write(&t, "numa_zonelist_order", "node"), Ok(4));
    let log = t.shared().modify(|s| s.events.take_klog());
    assert_eq!(
        log,
        [
            "ohelper (273): drop_caches: 3",
            "Ignoring unsupported numa_zonelist_order value:  foo"
        ]
    );
}

/// `/proc/vmstat`'s counters of what these sysctls did (recorded on the
/// real kernel, `conformance/other-build/vmstat-events`): each kind of
/// `drop_caches` counts once per write (3 is both), and sizing the huge
/// page pool counts every page it got from the buddy allocator and the one
/// try that found none.
#[test]
fn drop_caches_and_pool_sizing_count_their_vmstat_events() {
    let t = tree();
    let events = |t: &SysfsTree| -> Vec<String> {
        String::from_utf8(t.read("proc/vmstat").unwrap())
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("drop_") || l.starts_with("htlb_buddy"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        events(&t),
        [
            "drop_pagecache 0",
            "drop_slab 0",
            "htlb_buddy_alloc_success 0",
            "htlb_buddy_alloc_fail 0"
        ]
    );
    for v in ["1", "2", "3"] {
        write(&t, "drop_caches", v).unwrap();
    }
    write(&t, "nr_hugepages", "64").unwrap();
    write(&t, "nr_hugepages", "1000").unwrap();
    let got = read(&t, "nr_hugepages").trim().parse::<u64>().unwrap();
    assert!(got > 64 && got < 1000, "{got}");
    write(&t, "nr_hugepages", "0").unwrap();
    assert_eq!(
        events(&t),
        [
            "drop_pagecache 2".to_string(),
            "drop_slab 2".to_string(),
            format!("htlb_buddy_alloc_success {got}"),
            "htlb_buddy_alloc_fail 1".to_string()
        ]
    );
}
