//! The boot state of QEMU `pc` machines matches what Linux 6.1 showed in the
//! oracle transcripts (`boot-baseline`, `movablecore`).

use memhp_model::machine::QemuPc;
use memhp_model::{BlockState, KernelVersion, System, ZoneType};

fn boot(mem: &str, cmdline: &str) -> System {
    let mut q = QemuPc::default();
    q.parse_mem_option(mem).unwrap();
    System::boot(&q.machine(cmdline, KernelVersion::V6_1).unwrap()).unwrap()
}

fn zone_line(sys: &System, nid: u32, z: ZoneType) -> (u64, u64, u64, u64) {
    let zone = sys.nodes[&nid].zone(z);
    (zone.start_pfn, zone.spanned, zone.present, zone.managed)
}

#[test]
fn qemu_pc_1g_zones_match_boot_baseline() {
    let sys = boot("1G,slots=4,maxmem=4G", "");
    assert_eq!(sys.block_size, 0x8000000);
    assert_eq!(zone_line(&sys, 0, ZoneType::Dma), (1, 4095, 3998, 3840));
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Dma32),
        (4096, 258016, 258016, 225520)
    );
    assert_eq!(zone_line(&sys, 0, ZoneType::Normal).1, 0);
    assert_eq!(sys.totalram_pages() * 4, 917440);
    let ids: Vec<u64> = sys.blocks.keys().copied().collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert_eq!(sys.blocks[&0].zone, None);
    assert!(sys
        .blocks
        .values()
        .skip(1)
        .all(|b| b.zone == Some(ZoneType::Dma32)));
    assert!(sys
        .blocks
        .values()
        .all(|b| b.state == BlockState::Online && !b.dev_offline));
}

#[test]
fn qemu_pc_4g_movablecore_zones_match_transcript() {
    let sys = boot(
        "4G,slots=4,maxmem=8G",
        "movablecore=256M memhp_default_state=offline",
    );
    assert_eq!(zone_line(&sys, 0, ZoneType::Dma), (1, 4095, 3998, 3840));
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Dma32),
        (4096, 1044480, 782304, 754602)
    );
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Normal),
        (1048576, 196608, 196608, 196608)
    );
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Movable),
        (1245184, 65536, 65536, 47299)
    );
    assert_eq!(sys.totalram_pages() * 4, 4009396);
    assert_eq!(sys.blocks[&38].zone, Some(ZoneType::Movable));
    assert_eq!(sys.blocks[&37].zone, Some(ZoneType::Normal));
    assert!(!sys.blocks.contains_key(&24));
}

/// The `numa-memoryless` oracle machine: node 1 has a CPU and no memory.
/// Its boot log carries the memoryless-node, NUMA balancing, SMP bring-up
/// and PCI lines in the kernel's order (the oracle's `bootlog` excerpt).
#[test]
fn memoryless_node_boot_log_lines_follow_the_oracle_order() {
    let mut q = QemuPc::default().with_node_per_cpu(&[1 << 30, 0]);
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    let sys = System::boot(
        &q.machine("memhp_default_state=offline", KernelVersion::V6_1)
            .unwrap(),
    )
    .unwrap();
    let wanted = [
        "Initmem setup node 0 [mem 0x0000000000001000-0x000000003ffdffff]",
        "Initializing node 1 as memoryless",
        "Initmem setup node 1 as memoryless",
        "setup_percpu: NR_CPUS:8192 nr_cpumask_bits:2 nr_cpu_ids:2 nr_node_ids:2",
        "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=2, Nodes=2",
        "mempolicy: Enabling automatic NUMA balancing. Configure with numa_balancing= or the kernel.numa_balancing sysctl",
        ".... node  #1, CPUs:      #1",
        "sched: CPU #1's llc-sibling CPU #0 is not on the same node! [node: 1 != 0]. Ignoring dependency.",
        "smp: Brought up 2 nodes, 2 CPUs",
        "kprobes: kprobe jump-optimization is enabled. All kprobes are optimized if possible.",
        "pci_bus 0000:00: Unknown NUMA node; performance will be reduced",
    ];
    let positions: Vec<Option<usize>> = wanted
        .iter()
        .map(|w| sys.bootlog.iter().position(|l| l == w))
        .collect();
    for (w, p) in wanted.iter().zip(&positions) {
        assert!(p.is_some(), "missing boot-log line {w:?}");
    }
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "boot-log lines out of order: {positions:?}"
    );
    // A single-node, single-CPU guest prints none of the NUMA/SMP lines.
    let one = boot("1G,slots=4,maxmem=4G", "");
    assert!(!one.bootlog.iter().any(|l| l.contains("memoryless")
        || l.starts_with("mempolicy:")
        || l.starts_with(".... node")
        || l.contains("Unknown NUMA node")));
}

/// `pci_swiotlb_detect`: QEMU's SRAT hotplug entry above 4 GiB is what turns
/// the software IO TLB on for a small guest. Recorded on the real kernel
/// (6.1.0-48, `-m 1G -smp 1` without slots): no "software IO TLB" and no
/// "PCI-DMA" lines, and neither the 64 MiB buffer nor its 768 KiB slot
/// array reserved (74896K reserved; with `slots=4,maxmem=4G` and two CPUs
/// 141448K: 65536K + 768K + the second CPU's 248K per-cpu unit more).
#[test]
fn guest_without_memory_hotplug_below_4g_has_no_swiotlb() {
    let boot = |mem: &str| {
        let mut q = QemuPc::default();
        q.parse_mem_option(mem).unwrap();
        System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap()
    };
    let (plain, hotplug) = (boot("1G"), boot("1G,slots=4,maxmem=4G"));
    let managed = |s: &System| s.nodes[&0].zone(ZoneType::Dma32).managed;
    assert_eq!(managed(&plain), managed(&hotplug) + 16384 + 192);
    let pci_dma = "PCI-DMA: Using software bounce buffering for IO (SWIOTLB)".to_string();
    assert!(!plain.bootlog.contains(&pci_dma));
    assert!(hotplug.bootlog.contains(&pci_dma));
    assert!(plain
        .bootlog
        .contains(&"No NUMA configuration found".to_string()));
}

/// `mem_init`'s free pages: with deferred struct-page init only each
/// node's first section-and-a-bit of its last zone is free by then.
/// Recorded (6.1.0-48, 2540 KiB initrd): 1 GiB one node 207548K, two
/// 512 MiB nodes 338620K, 4 GiB 3154000K; the model's initrd is the
/// oracle's 1436 KiB, which leaves 1104K more free when the initrd lies in
/// initialised memory (the 4 GiB guest's low RAM).
#[test]
fn memory_summary_free_pages_follow_deferred_init_on_recorded_machines() {
    let available = |mem: &str, nodes: &[u64]| -> String {
        let mut q = if nodes.is_empty() {
            QemuPc::default()
        } else {
            QemuPc::default().with_node_per_cpu(nodes)
        };
        q.parse_mem_option(mem).unwrap();
        let sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
        let line = sys
            .bootlog
            .iter()
            .find(|l| l.starts_with("Memory: "))
            .unwrap()
            .clone();
        line.split(' ').nth(1).unwrap().to_string()
    };
    assert_eq!(available("1G,slots=4,maxmem=4G", &[]), "207548K/1048056K");
    assert_eq!(available("1G", &[]), "207548K/1048056K");
    assert_eq!(
        available("1G,slots=4,maxmem=4G", &[512 << 20, 512 << 20]),
        "338620K/1048056K"
    );
    assert_eq!(available("4G,slots=2,maxmem=8G", &[]), "3155104K/4193784K");
}

/// A qemu-pc guest: `-m mem -smp smp`, NUMA nodes of `nodes` bytes with
/// `cpus_per_node` CPUs each (none: no `-numa`), and an initrd of
/// `initrd_kib`; its boot-log lines starting with `prefix`.
fn boot_lines(
    mem: &str,
    smp: u32,
    nodes: &[u64],
    cpus_per_node: u32,
    initrd_kib: u64,
    prefix: &str,
) -> Vec<String> {
    let mut q = QemuPc::default();
    q.parse_mem_option(mem).unwrap();
    q.smp = smp;
    if !nodes.is_empty() {
        q.numa = (0u32..)
            .zip(nodes)
            .map(|(id, &mem)| memhp_model::machine::QemuNuma {
                nodeid: id,
                cpus: (id * cpus_per_node..(id + 1) * cpus_per_node).collect(),
                mem,
                generic_initiator: false,
            })
            .collect();
    }
    let mut spec = q.machine("", KernelVersion::V6_1).unwrap();
    spec.acpi.as_mut().unwrap().initrd_bytes = initrd_kib << 10;
    let sys = System::boot(&spec).unwrap();
    sys.bootlog
        .iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}

/// Where each node's pg_data_t lands, against the real kernel (the same
/// recordings as the SWIOTLB placement).
#[test]
fn node_data_lands_where_the_real_kernel_put_it() {
    let m = "1G,slots=4,maxmem=4G";
    let half = 512 << 20;
    assert_eq!(
        boot_lines(m, 1, &[], 1, 1436, "NODE_DATA"),
        ["NODE_DATA(0) allocated [mem 0x3fe4e000-0x3fe78fff]"]
    );
    assert_eq!(
        boot_lines(m, 2, &[half, half], 1, 2540, "NODE_DATA"),
        [
            "NODE_DATA(0) allocated [mem 0x1ffd5000-0x1fffffff]",
            "NODE_DATA(1) allocated [mem 0x3fd3a000-0x3fd64fff]"
        ]
    );
    assert_eq!(
        boot_lines(m, 3, &[1 << 30, 0, 0], 1, 2540, "NODE_DATA"),
        ["NODE_DATA(0) allocated [mem 0x3fd3a000-0x3fd64fff]"]
    );
    assert_eq!(
        boot_lines("4G,slots=2,maxmem=8G", 1, &[], 1, 2540, "NODE_DATA"),
        ["NODE_DATA(0) allocated [mem 0x13ffd2000-0x13fffcfff]"]
    );
}

/// Where SWIOTLB lands, against the real kernel: the oracle's 1 GiB guest
/// (1436 KiB initrd) and machines recorded here with a 2540 KiB initrd
/// (6.1.0-48; the same layout code).
#[test]
fn swiotlb_lands_where_the_real_kernel_put_it() {
    let line = |mem: &str, smp: u32, nodes: &[u64], cpus_per_node: u32, initrd_kib: u64| {
        boot_lines(
            mem,
            smp,
            nodes,
            cpus_per_node,
            initrd_kib,
            "software IO TLB: mapped",
        )
        .pop()
    };
    let mapped = |s: u64, e: u64| {
        Some(format!(
            "software IO TLB: mapped [mem {s:#018x}-{e:#018x}] (64MB)"
        ))
    };
    let half = 512 << 20;
    let m = "1G,slots=4,maxmem=4G";
    assert_eq!(line(m, 1, &[], 1, 1436), mapped(0x3ac00000, 0x3ec00000));
    assert_eq!(line(m, 2, &[], 1, 2540), mapped(0x3aa00000, 0x3ea00000));
    assert_eq!(line(m, 4, &[], 1, 2540), mapped(0x3a980000, 0x3e980000));
    assert_eq!(
        line(m, 2, &[half, half], 1, 2540),
        mapped(0x3b200000, 0x3f200000)
    );
    assert_eq!(
        line(m, 4, &[half, half], 2, 2540),
        mapped(0x3b200000, 0x3f200000)
    );
    assert_eq!(
        line("2G,slots=4,maxmem=8G", 1, &[], 1, 2540),
        mapped(0x79800000, 0x7d800000)
    );
    assert_eq!(
        line("4G,slots=2,maxmem=8G", 1, &[], 1, 2540),
        mapped(0xbbd65000, 0xbfd65000)
    );
    // Three nodes, memory on node 0 only, one CPU each: the memoryless
    // nodes' per-cpu chunks fall back to node 0.
    assert_eq!(
        line(m, 3, &[1 << 30, 0, 0], 1, 2540),
        mapped(0x3a600000, 0x3e600000)
    );
    assert_eq!(line("1G", 1, &[], 1, 2540), None);
}

/// Boot memory sizes recorded on 6.1 (`conformance/behaviour/zones-mem*`):
/// `(‑m, DMA32 managed, Normal managed)`. The direct map's page tables come
/// from the image's BRK buffer except where the region holding the image
/// needs new ones (3 GiB: one; with memory above 4 GiB: three).
#[test]
fn managed_pages_follow_the_direct_map_page_tables_of_each_memory_size() {
    let recorded = [
        ("1G", 225520, 0),
        ("1536M", 354160, 0),
        ("2G", 483184, 0),
        ("2560M", 611440, 0),
        ("3G", 740463, 0),
        ("3584M", 754602, 114883),
        ("4G", 754602, 243907),
        ("6G", 754602, 758467),
        ("8G", 754602, 1274563),
    ];
    for (mem, dma32, normal) in recorded {
        let sys = boot(&format!("{mem},slots=4,maxmem=16G"), "");
        assert_eq!(zone_line(&sys, 0, ZoneType::Dma).3, 3840, "-m {mem}");
        assert_eq!(zone_line(&sys, 0, ZoneType::Dma32).3, dma32, "-m {mem}");
        assert_eq!(zone_line(&sys, 0, ZoneType::Normal).3, normal, "-m {mem}");
    }
}

/// Two nodes of 512 MiB, a CPU each (`conformance/behaviour/numa-two-nodes`):
/// each node's memmap, pgdat and per-cpu unit stay on it, the unnoded
/// allocations (SWIOTLB, ...) land on the last node, and the dentry and
/// inode hashes are vmalloc'ed (`hashdist`) instead of reserved.
#[test]
fn two_memory_nodes_keep_node_local_reservations_on_their_node() {
    let q = QemuPc::default().with_node_per_cpu(&[512 << 20, 512 << 20]);
    let sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    assert_eq!(zone_line(&sys, 0, ZoneType::Dma), (1, 4095, 3998, 3840));
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Dma32),
        (4096, 126976, 126976, 113501)
    );
    assert_eq!(
        zone_line(&sys, 1, ZoneType::Dma32),
        (131072, 131040, 131040, 112297)
    );
}

/// Boot-log lines of a 4 GiB guest with 2 CPUs and of two 1 GiB nodes,
/// recorded on 6.1 with a 2540 KiB initrd: the unavailable ranges count
/// only pfns whose section has memory (the PCI hole's sections have none),
/// SMP alternatives are freed with 2 CPUs too, the atomic pools are a power
/// of two of pages per GiB, and with two memory nodes the hashes come from
/// vmalloc late (not from memblock, which moves the SWIOTLB).
#[test]
fn boot_log_lines_of_4g_and_two_node_guests_match_recordings() {
    let lines = |mem: &str, smp: u32, nodes: &[u64], prefixes: &[&str]| -> Vec<String> {
        prefixes
            .iter()
            .flat_map(|p| boot_lines(mem, smp, nodes, 1, 2540, p))
            .collect()
    };
    let prefixes = [
        "NODE_DATA",
        "On node",
        "Inode-cache",
        "Freeing SMP",
        "DMA: preallocated",
        "software IO TLB",
    ];
    assert_eq!(
        lines("4G,slots=4,maxmem=8G", 2, &[], &prefixes),
        [
            "NODE_DATA(0) allocated [mem 0x13ffd2000-0x13fffcfff]",
            "On node 0, zone DMA: 1 pages in unavailable ranges",
            "On node 0, zone DMA: 97 pages in unavailable ranges",
            "On node 0, zone Normal: 32 pages in unavailable ranges",
            "Inode-cache hash table entries: 262144 (order: 9, 2097152 bytes, linear)",
            "Freeing SMP alternatives memory: 36K",
            "DMA: preallocated 512 KiB GFP_KERNEL pool for atomic allocations",
            "DMA: preallocated 512 KiB GFP_KERNEL|GFP_DMA pool for atomic allocations",
            "DMA: preallocated 512 KiB GFP_KERNEL|GFP_DMA32 pool for atomic allocations",
            "software IO TLB: area num 2.",
            "software IO TLB: mapped [mem 0x00000000bbd65000-0x00000000bfd65000] (64MB)",
        ]
    );
    assert_eq!(
        lines("2G,slots=4,maxmem=8G", 2, &[1 << 30, 1 << 30], &prefixes),
        [
            "NODE_DATA(0) allocated [mem 0x3ffd5000-0x3fffffff]",
            "NODE_DATA(1) allocated [mem 0x7fd3a000-0x7fd64fff]",
            "On node 0, zone DMA: 1 pages in unavailable ranges",
            "On node 0, zone DMA: 97 pages in unavailable ranges",
            "On node 1, zone DMA32: 32 pages in unavailable ranges",
            "Inode-cache hash table entries: 131072 (order: 8, 1048576 bytes, vmalloc)",
            "Freeing SMP alternatives memory: 36K",
            "DMA: preallocated 256 KiB GFP_KERNEL pool for atomic allocations",
            "DMA: preallocated 256 KiB GFP_KERNEL|GFP_DMA pool for atomic allocations",
            "DMA: preallocated 256 KiB GFP_KERNEL|GFP_DMA32 pool for atomic allocations",
            "software IO TLB: area num 2.",
            "software IO TLB: mapped [mem 0x000000007aa00000-0x000000007ea00000] (64MB)",
        ]
    );
}

/// Each CPU beyond the first reserves its whole per-cpu unit (62 pages):
/// the `Memory:` line of 1 GiB guests recorded with 1 and 4 CPUs and of a
/// 2 GiB one with 2 (a 2540 KiB initrd; `boot-mem*` behaviour scenarios).
#[test]
fn each_extra_cpu_reserves_a_whole_per_cpu_unit() {
    let reserved = |mem: &str, smp: u32| {
        let l = boot_lines(mem, smp, &[], smp, 2540, "Memory:");
        assert_eq!(l.len(), 1, "{l:?}");
        l[0].split(", ")
            .find_map(|p| p.strip_suffix(" reserved"))
            .map(String::from)
            .unwrap()
    };
    assert_eq!(reserved("1G,slots=4,maxmem=4G", 1), "141200K");
    assert_eq!(reserved("1G,slots=4,maxmem=4G", 4), "141944K");
    assert_eq!(reserved("2G,slots=2,maxmem=6G", 2), "159368K");
    assert_eq!(reserved("4G,slots=4,maxmem=16G", 4), "195716K");
}

/// QEMU rounds the start of the 64-bit PCI window up to 1 GiB after the
/// device-memory region (512 MiB guest, 2 slots, maxmem 2 GiB: the region
/// ends at 7.5 GiB, the window starts at 8 GiB).
#[test]
fn pci_hole64_starts_on_a_gib_boundary_after_device_memory() {
    let windows = boot_lines(
        "512M,slots=2,maxmem=2G",
        1,
        &[],
        1,
        2540,
        "pci_bus 0000:00: root bus resource [mem ",
    );
    assert_eq!(
        windows,
        [
            "pci_bus 0000:00: root bus resource [mem 0x000a0000-0x000bffff window]",
            "pci_bus 0000:00: root bus resource [mem 0x20000000-0xfebfffff window]",
            "pci_bus 0000:00: root bus resource [mem 0x200000000-0x27fffffff window]"
        ]
    );
}

/// `mem=768M` on 1 GiB: the edited e820 map is printed, and the initrd
/// QEMU loaded above the limit moves to the top of what is left (a 6.1
/// guest with a 2600170-byte initramfs, `behaviour/mem-limit`).
#[test]
fn mem_limit_prints_the_user_map_and_moves_the_initrd_below_it() {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    q.initrd_bytes = 2_600_170;
    let spec = q.machine("mem=768M", KernelVersion::V6_1).unwrap();
    let sys = System::boot(&spec).unwrap();
    let pick = |prefixes: &[&str]| -> Vec<String> {
        sys.bootlog
            .iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .cloned()
            .collect()
    };
    assert_eq!(
        pick(&[
            "e820: remove [mem 0x3",
            "user: [mem 0x0000000000100000",
            "Allocated new",
            "Move RAMDISK",
            "NODE_DATA"
        ]),
        [
            "e820: remove [mem 0x30000000-0xfffffffffffffffe] usable",
            "user: [mem 0x0000000000100000-0x000000002fffffff] usable",
            "Allocated new RAMDISK: [mem 0x2fd85000-0x2ffffce9]",
            "Move RAMDISK from [mem 0x3fd65000-0x3ffdfce9] to [mem 0x2fd85000-0x2ffffce9]",
            "NODE_DATA(0) allocated [mem 0x2fd5a000-0x2fd84fff]",
        ]
    );
}

/// `-numa dist`: QEMU completes the SLIT symmetrically and refuses a
/// missing pair; the guest's fallback orders follow the distances (a 6.1
/// guest, `behaviour/numa-dist`).
#[test]
fn numa_distances_shape_the_slit_and_the_fallback_orders() {
    let mut q =
        QemuPc::default().with_nodes(&[(&[0], 512 << 20), (&[1], 256 << 20), (&[2], 256 << 20)]);
    q.numa_dist = vec![(0, 1, 30), (0, 2, 15), (1, 2, 25)];
    let spec = q.machine("", KernelVersion::V6_1).unwrap();
    assert_eq!(
        spec.distances,
        vec![vec![10, 30, 15], vec![30, 10, 25], vec![15, 25, 10]]
    );
    let sys = System::boot(&spec).unwrap();
    let lines: Vec<&String> = sys
        .bootlog
        .iter()
        .filter(|l| {
            l.starts_with("Fallback order") || l.contains("SLIT") || l.contains("distance table")
        })
        .collect();
    assert_eq!(
        lines,
        [
            "ACPI: SLIT 0x000000003FFE226A 000035 (v01 BOCHS  BXPC     00000001 BXPC 00000001)",
            "ACPI: Reserving SLIT table memory at [mem 0x3ffe226a-0x3ffe229e]",
            "NUMA: Initialized distance table, cnt=3",
            "Fallback order for Node 0: 0 2 1 ",
            "Fallback order for Node 1: 1 2 0 ",
            "Fallback order for Node 2: 2 0 1 ",
        ]
    );
    q.numa_dist = vec![(0, 1, 30)];
    assert!(q
        .machine("", KernelVersion::V6_1)
        .unwrap_err()
        .to_string()
        .contains("The distance between node 0 and 2 is missing"));
    q.numa_dist = vec![(0, 1, 30), (1, 0, 40), (0, 2, 15), (1, 2, 25)];
    assert!(q
        .machine("", KernelVersion::V6_1)
        .unwrap_err()
        .to_string()
        .contains("asymmetrical"));
}

/// `percpu:`/`pcpu-alloc:` lines as recorded (`bootlog` of 1- and 4-CPU
/// guests): 2 MiB per CPU alone, four 512 KiB units sharing one 2 MiB
/// allocation with four CPUs; with three (whose `percpu:` line was
/// recorded, its map not) the fourth unit is an empty slot, `-`.
#[test]
fn percpu_units_follow_the_cpu_count() {
    let lines = |smp: u32| -> Vec<String> {
        let mut q = QemuPc {
            smp,
            ..QemuPc::default()
        };
        q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
        let sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
        sys.bootlog
            .iter()
            .filter(|l| l.starts_with("percpu:") || l.starts_with("pcpu-alloc:"))
            .cloned()
            .collect()
    };
    assert_eq!(
        lines(1),
        [
            "percpu: Embedded 62 pages/cpu s217088 r8192 d28672 u2097152",
            "pcpu-alloc: s217088 r8192 d28672 u2097152 alloc=1*2097152",
            "pcpu-alloc: [0] 0 ",
        ]
    );
    assert_eq!(
        lines(4),
        [
            "percpu: Embedded 62 pages/cpu s217088 r8192 d28672 u524288",
            "pcpu-alloc: s217088 r8192 d28672 u524288 alloc=1*2097152",
            "pcpu-alloc: [0] 0 1 2 3 ",
        ]
    );
    assert_eq!(lines(3)[2], "pcpu-alloc: [0] 0 1 2 - ");
}

/// A 512 MiB guest has less than 512 MiB of `totalram`, so `hugepage_init`
/// turns THP off and khugepaged never raises `min_free_kbytes`: after two
/// blocks go offline the minimum is `sqrt(16 * lowmem KiB)` alone (1479,
/// recorded), and the rebuild when ZONE_MOVABLE first gets a block counts
/// the old zones' small high watermarks and the new zone's none
/// ("Total pages: 67208", recorded).
#[test]
fn small_guest_without_thp_keeps_the_square_root_minimum() {
    let mut sys = boot("512M,slots=4,maxmem=4G", "");
    assert!(sys.wmark.khugepaged_off);
    for id in [1, 2] {
        assert_eq!(
            sys.device_offline_nowait(id),
            Ok(memhp_model::DeviceOutcome::Changed)
        );
    }
    assert_eq!(sys.wmark.min_free_kbytes, 1479);
    assert_eq!(sys.wmark.high_pages(0, ZoneType::Dma), 60);
    assert_eq!(sys.wmark.high_pages(0, ZoneType::Dma32), 492);
    sys.events.take_klog();
    sys.blocks.get_mut(&1).unwrap().online_type = memhp_model::OnlineType::OnlineMovable;
    assert_eq!(
        sys.device_online(1),
        Ok(memhp_model::DeviceOutcome::Changed)
    );
    let klog = sys.events.take_klog();
    assert!(
        klog.iter()
            .any(|l| l == "Built 1 zonelists, mobility grouping on.  Total pages: 67208"),
        "{klog:?}"
    );
    // 1 GiB is over the limit: khugepaged raises the minimum.
    let big = boot("1G,slots=4,maxmem=4G", "");
    assert!(!big.wmark.khugepaged_off);
    assert_eq!(big.wmark.min_free_kbytes, 45056);
    assert!(
        boot("1G,slots=4,maxmem=4G", "transparent_hugepage=never")
            .wmark
            .khugepaged_off
    );
}

/// A second memory node holds its node-local kernel structures at the start
/// of its kernel memory (recorded `offline-busy-numa2`: memory8, node 1's
/// first block, is EBUSY; memory9 goes).
#[test]
fn second_node_first_block_holds_node_local_kernel_pages() {
    let mut q = QemuPc::default().with_node_per_cpu(&[1 << 30, 1 << 30]);
    q.parse_mem_option("2G,slots=4,maxmem=8G").unwrap();
    let mut sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    assert_eq!(sys.blocks[&8].nid, Some(1));
    assert!(matches!(
        sys.device_offline_nowait(8),
        Err(memhp_model::HotplugError::Busy(_))
    ));
    assert_eq!(
        sys.device_offline_nowait(9),
        Ok(memhp_model::DeviceOutcome::Changed)
    );
}

/// `alloc_large_system_hash` sizes the dentry and inode hashes from
/// `nr_kernel_pages`, the present pages less each zone's memmap: 4097 MiB
/// of RAM is just over 2^20 pages, but less than that without the memmap,
/// so the inode hash stays at 2^18 entries (recorded:
/// conformance/behaviour `odd-4097M`).
#[test]
fn hash_tables_are_sized_without_the_memmap() {
    let sys = boot("4097M,slots=2,maxmem=8G", "");
    let line = |prefix: &str| {
        sys.bootlog
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        line("Inode-cache hash table entries"),
        "Inode-cache hash table entries: 262144 (order: 9, 2097152 bytes, linear)"
    );
    assert_eq!(
        line("Dentry cache hash table entries"),
        "Dentry cache hash table entries: 524288 (order: 10, 4194304 bytes, linear)"
    );
}

/// A section two nodes share has its memmap on the node whose memory comes
/// first in it (`memory_present`): with 700 + 324 MiB, section 5 (640-768
/// MiB) is node 0's, so node 1 holds the memmap of two sections, not three
/// (recorded: conformance/behaviour `odd-numa-700M`).
#[test]
fn a_section_shared_by_two_nodes_has_its_memmap_on_the_first() {
    let mut q = QemuPc::default().with_node_per_cpu(&[700 << 20, 324 << 20]);
    q.parse_mem_option("1G,slots=2,maxmem=4G").unwrap();
    let sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    assert_eq!(
        zone_line(&sys, 1, ZoneType::Dma32),
        (179200, 82912, 82912, 65193)
    );
    assert_eq!(sys.totalram_pages() * 4, 918552);
}

/// The hash tables the kernel sizes after boot from its memory (mount
/// cache, IP idents, TCP, MPTCP, UDP) or CPUs (futex), as recorded on a
/// 1 GiB guest with one CPU and an 8193 MiB one (vmalloc'ed with two
/// memory nodes: `hashdist`).
#[test]
fn boot_log_hash_tables_follow_memory_and_cpus() {
    let has = |sys: &System, line: &str| {
        assert!(
            sys.bootlog.iter().any(|l| l == line),
            "{line} not in {:#?}",
            sys.bootlog
        )
    };
    let small = boot("1G,slots=4,maxmem=4G", "");
    for line in [
        "Mount-cache hash table entries: 2048 (order: 2, 16384 bytes, linear)",
        "futex hash table entries: 256 (order: 2, 16384 bytes, linear)",
        "IP idents hash table entries: 16384 (order: 5, 131072 bytes, linear)",
        "tcp_listen_portaddr_hash hash table entries: 512 (order: 1, 8192 bytes, linear)",
        "TCP established hash table entries: 8192 (order: 4, 65536 bytes, linear)",
        "TCP bind hash table entries: 8192 (order: 6, 262144 bytes, linear)",
        "MPTCP token hash table entries: 1024 (order: 3, 24576 bytes, linear)",
        "UDP-Lite hash table entries: 512 (order: 2, 16384 bytes, linear)",
    ] {
        has(&small, line);
    }
    let big = boot("8193M,slots=2,maxmem=16G", "");
    has(
        &big,
        "TCP bind hash table entries: 65536 (order: 9, 2097152 bytes, linear)",
    );
    has(
        &big,
        "MPTCP token hash table entries: 8192 (order: 6, 196608 bytes, linear)",
    );
    let mut q = QemuPc::default().with_node_per_cpu(&[700 << 20, 324 << 20]);
    q.parse_mem_option("1G,slots=2,maxmem=4G").unwrap();
    let numa = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    has(
        &numa,
        "futex hash table entries: 512 (order: 3, 32768 bytes, vmalloc)",
    );
}
