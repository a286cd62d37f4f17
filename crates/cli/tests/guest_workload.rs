//! The guest's workload through the scenario runner, end to end: a pinned
//! page makes an offline retry for ever until the guest's `wa 60` alarm
//! interrupts it at once in virtual time (EINTR after "60000 ms", as the
//! real kernel did in the oracle's `offline-busy-slab` run); files in the
//! guest's tmpfs cost the machine slab and shmem pages; workload placement
//! by pfn range and by zone; what an offline that runs out of memory logs
//! while its virtual alarm runs.

mod common;

/// Run `steps` on a 1 GiB pc machine; the transcript.
fn run(name: &str, steps: &str) -> String {
    common::run_scenario(name, &format!("mem: 1G,slots=4,maxmem=4G\nsteps:\n{steps}"))
}

const CTL: &str = "\"$MEMHP\" ctl --socket \"$MEMHP_SOCK\"";

#[test]
fn endless_offline_retry_ends_with_eintr_on_the_virtual_alarm() {
    let started = std::time::Instant::now();
    let t = run(
        "pinned",
        &format!(
            "{CTL} workload alloc pinned 16 block=4 > /dev/null\n\
             wa 60 $M/memory4/state offline\nr $M/memory4/state\nw $M/memory5/state offline\n"
        ),
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "the alarm must not take real seconds"
    );
    for line in [
        "write /sys/devices/system/memory/memory4/state \"offline\" -> EINTR(4) [60000 ms]\n",
        "read /sys/devices/system/memory/memory4/state = \"online\\n\"\n",
        "write /sys/devices/system/memory/memory5/state \"offline\" -> OK (ret=7)\n",
        "=== END: complete",
    ] {
        assert!(t.contains(line), "{line} in {t}");
    }
}

#[test]
fn an_unmovable_page_placed_by_pfn_range_makes_its_block_ebusy_at_that_pfn() {
    let t = run(
        "range",
        &format!(
            "{CTL} workload alloc unmovable 1 start_pfn=0x20100 end_pfn=0x20200 > /dev/null\n\
             w $M/memory4/state offline\nklog\n\
             {CTL} workload free unmovable 1 start_pfn=0x20000 end_pfn=0x28000 > /dev/null\n\
             w $M/memory4/state offline\n"
        ),
    );
    assert!(
        t.contains("write /sys/devices/system/memory/memory4/state \"offline\" -> EBUSY(16)\n"),
        "{t}"
    );
    assert!(t.contains("index:0x0 pfn:0x20100\n"), "{t}");
    assert!(
        t.contains("write /sys/devices/system/memory/memory4/state \"offline\" -> OK (ret=7)\n"),
        "{t}"
    );
}

#[test]
fn a_zone_without_online_memory_refuses_a_placement() {
    let t = run(
        "zone",
        &format!("{CTL} workload alloc movable 1 node=0 zone=Normal; echo rc=$?\n"),
    );
    assert!(t.contains("rc=1\n"), "{t}");
}

#[test]
fn guest_tmpfs_files_fill_memory_until_an_offline_retries_and_logs_the_allocation_failure() {
    // The guest's /tmp holds at most half of its RAM (of the 917440 kB the
    // kernel manages); full, it leaves too little memory to migrate blocks
    // away for long.
    let t = run(
        "tmpfs",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=700 2>/dev/null\n\
         r /proc/meminfo\n\
         for b in memory2 memory3 memory4 memory5 memory6; do wa 60 $M/$b/state offline; done\nklog\n",
    );
    // 458720 kB of tmpfs, less the 12 kB of init's boot.log and
    // bootblocks (part of the booted rootfs's 779 pages), plus those.
    assert!(t.contains("Shmem:            461824 kB"), "{t}");
    let eintr = t.matches("-> EINTR(4) [60000 ms]\n").count();
    assert!(eintr >= 1, "{t}");
    let failures = t
        .lines()
        .filter(|l| l.starts_with("klog: ohelper: page allocation failure: order:0"))
        .count();
    assert_eq!(failures, 6 * eintr, "{t}");
    let pfns = t.lines().filter(|l| l.contains("migrating pfn")).count();
    assert_eq!(pfns, 120 * eintr);
}

/// The guest's kernel charges tmpfs pages as they are written: a plain
/// `grep` of /proc/meminfo right after a `dd` (no helper in between) sees
/// them, and their removal; the guest's /tmp is a tmpfs holding what its
/// init left there.
#[test]
fn tmpfs_data_shows_in_meminfo_read_without_a_helper_right_after_it_is_written() {
    let t = run(
        "tmpfs-plain",
        "grep Shmem: /proc/meminfo\n\
         dd if=/dev/zero of=/tmp/f bs=1M count=100 2>/dev/null\n\
         grep Shmem: /proc/meminfo\n\
         rm /tmp/f\n\
         grep Shmem: /proc/meminfo\n\
         ls /tmp\n\
         df -k /tmp | tail -1 | cut -d' ' -f1\n",
    );
    let body = t.split("=== TRANSCRIPT ===\n").nth(1).unwrap_or_default();
    // After uname -r, uname -v and the command line.
    let lines: Vec<&str> = body.lines().skip(3).collect();
    assert_eq!(
        lines[..5],
        [
            "Shmem:              3116 kB",
            "Shmem:            105516 kB",
            "Shmem:              3116 kB",
            // busybox ls on the guest's console: columns.
            "boot.log    bootblocks",
            "tmpfs",
        ],
        "{t}"
    );
    assert!(lines[5].starts_with("=== END: complete"), "{t}");
}

#[test]
fn migration_made_to_fail_over_a_pfn_range_retries_until_cleared() {
    let t = run(
        "migrate-fail",
        &format!(
            "{CTL} workload alloc movable 100 block=5 > /dev/null\n\
             {CTL} migrate-fail eagain start_pfn=0x20000 end_pfn=0x30000\n\
             wa 5 $M/memory5/state offline\n\
             {CTL} migrate-fail none start_pfn=0x28000 end_pfn=0x28001 > /dev/null\n\
             w $M/memory5/state offline\n"
        ),
    );
    assert!(t.contains("\"blocks\": 2"), "{t}");
    assert!(
        t.contains(
            "write /sys/devices/system/memory/memory5/state \"offline\" -> EINTR(4) [5000 ms]\n"
        ),
        "{t}"
    );
    assert!(
        t.contains("write /sys/devices/system/memory/memory5/state \"offline\" -> OK (ret=7)\n"),
        "{t}"
    );
}

/// The scenario's /proc/sys/vm is memhp's: hugetlb, min_free_kbytes and
/// other writes go to the model (never to the host's kernel), the pool's
/// pages show in the node and global files and in /proc/meminfo, and the
/// other sysctls read the guest's values.
#[test]
fn the_guests_vm_sysctls_are_the_models_not_the_hosts() {
    let host_before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
    let host_swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let t = run(
        "sysctl",
        "w /proc/sys/vm/nr_hugepages 12\n\
         r /proc/sys/vm/nr_hugepages /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages\n\
         r /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages\n\
         grep HugePages_Total /proc/meminfo\n\
         r /proc/sys/vm/min_free_kbytes /proc/sys/vm/swappiness\n\
         w /proc/sys/vm/swappiness 7\n\
         r /proc/sys/vm/swappiness\n\
         w /proc/sys/vm/nr_hugepages 0\n",
    );
    for line in [
        "write /proc/sys/vm/nr_hugepages \"12\" -> OK (ret=2)\n",
        "read /proc/sys/vm/nr_hugepages = \"12\\n\"\n",
        "read /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages = \"12\\n\"\n",
        "read /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages = \"12\\n\"\n",
        "HugePages_Total:      12\n",
        "read /proc/sys/vm/min_free_kbytes = \"45056\\n\"\n",
        "read /proc/sys/vm/swappiness = \"60\\n\"\n",
        "read /proc/sys/vm/swappiness = \"7\\n\"\n",
    ] {
        assert!(t.contains(line), "{line} in {t}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap(),
        host_before
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        host_swappiness
    );
}
