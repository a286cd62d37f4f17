//! Offlining a block that holds hugetlb pages (spec 02 §7.2 step 8.4,
//! §7.4): in-use huge pages migrate, free ones are dissolved out of the
//! pool, and a pool whose free pages are all reserved makes the offline
//! fail with EBUSY, the pages dissolved so far staying dissolved.

use memhp_model::hotadd::AddRequest;
use memhp_model::hotplug::HotplugError;
use memhp_model::hugetlb::HugetlbPool;
use memhp_model::machine::QemuPc;
use memhp_model::workload::Placement;
use memhp_model::{BlockState, KernelVersion, System, ZoneType};

/// 1 GiB qemu-pc with 4 hot-added movable blocks (memory32..35), all free.
fn machine() -> System {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    let spec = q
        .machine("memhp_default_state=online_movable", KernelVersion::V6_1)
        .unwrap();
    let mut sys = System::boot(&spec).unwrap();
    let base = spec.dimm.unwrap().base;
    let bs = sys.block_size;
    sys.add_memory(&AddRequest::system_ram(0, base, 4 * bs, false))
        .unwrap();
    assert!((32..36).all(|b| sys.blocks[&b].state == BlockState::Online));
    sys
}

fn pool(sys: &System) -> (u64, u64, u64) {
    let HugetlbPool {
        nr_huge_pages,
        free_huge_pages,
        resv_huge_pages,
        ..
    } = sys.hugetlb;
    (nr_huge_pages, free_huge_pages, resv_huge_pages)
}

#[test]
fn free_huge_pages_are_dissolved_and_the_pool_shrinks() {
    let mut sys = machine();
    sys.hugetlb_grow(Placement::Block(33), 10).unwrap();
    sys.hugetlb_grow(Placement::Block(34), 2).unwrap();
    assert_eq!(pool(&sys), (12, 12, 0));
    let free_before = sys.blocks[&33].pages.free();
    assert_eq!(free_before, 32768 - 10 * 512);
    sys.device_offline_nowait(33).unwrap();
    assert_eq!(sys.blocks[&33].state, BlockState::Offline);
    assert_eq!(pool(&sys), (2, 2, 0));
    assert_eq!(sys.blocks[&33].pages.huge_free(), 0);
}

#[test]
fn used_huge_pages_migrate_to_free_pool_pages_elsewhere() {
    let mut sys = machine();
    sys.hugetlb_grow(Placement::Block(33), 2).unwrap();
    sys.hugetlb_use(Placement::Block(33), 2).unwrap();
    sys.hugetlb_grow(Placement::Block(35), 3).unwrap();
    assert_eq!(pool(&sys), (5, 3, 0));
    sys.device_offline_nowait(33).unwrap();
    // Two of block 35's free pages took the data; block 33's freed pages
    // were dissolved.
    assert_eq!(sys.blocks[&35].pages.huge_used(), 2);
    assert_eq!(sys.blocks[&35].pages.huge_free(), 1);
    assert_eq!(pool(&sys), (3, 1, 0));
}

#[test]
fn used_huge_pages_without_free_pool_pages_get_fresh_ones_and_the_pool_keeps_its_size() {
    let mut sys = machine();
    sys.hugetlb_grow(Placement::Block(33), 4).unwrap();
    sys.hugetlb_use(Placement::Block(33), 4).unwrap();
    sys.device_offline_nowait(33).unwrap();
    assert_eq!(pool(&sys), (4, 0, 0));
    let used: u64 = (34..36).map(|b| sys.blocks[&b].pages.huge_used()).sum();
    assert_eq!(used, 4);
}

#[test]
fn used_huge_pages_with_nowhere_to_go_retry_until_a_signal() {
    let mut sys = machine();
    // Every other block full: no free pool page, no room for a new one.
    let others: Vec<u64> = sys
        .blocks
        .iter()
        .filter(|(&id, b)| id != 33 && b.state == BlockState::Online)
        .map(|(&id, _)| id)
        .collect();
    for b in others {
        let free = sys.blocks[&b].pages.free();
        sys.alloc_pages(
            Placement::Block(b),
            memhp_model::workload::PageKind::Unmovable,
            free,
        )
        .unwrap();
    }
    sys.hugetlb_grow(Placement::Block(33), 1).unwrap();
    sys.hugetlb_use(Placement::Block(33), 1).unwrap();
    assert!(matches!(
        sys.device_offline(33),
        memhp_model::OfflineProgress::Retrying {
            reason: "no huge page to migrate to (-ENOMEM)"
        }
    ));
    assert_eq!(sys.blocks[&33].state, BlockState::GoingOffline);
    assert!(matches!(
        sys.offline_signal(),
        memhp_model::OfflineProgress::Done(Err(HotplugError::Interrupted))
    ));
    assert_eq!(sys.blocks[&33].state, BlockState::Online);
    assert_eq!(pool(&sys), (1, 0, 0));
}

#[test]
fn reserved_free_pages_make_dissolve_fail_with_ebusy_and_dissolved_pages_stay_gone() {
    let mut sys = machine();
    sys.hugetlb_grow(Placement::Block(33), 3).unwrap();
    sys.hugetlb_reserve(1).unwrap();
    sys.events.notifier.clear();
    assert_eq!(
        sys.device_offline_nowait(33),
        Err(HotplugError::Busy("failure to dissolve huge pages"))
    );
    assert_eq!(sys.blocks[&33].state, BlockState::Online);
    // Two were dissolved before the reserved one stopped the loop.
    assert_eq!(pool(&sys), (1, 1, 1));
    let events: Vec<&str> = sys.events.notifier.iter().map(|c| c.name()).collect();
    assert_eq!(events, ["MEM_GOING_OFFLINE", "MEM_CANCEL_OFFLINE"]);
    assert_eq!(
        HotplugError::Busy("failure to dissolve huge pages").errno(),
        16
    );
}

#[test]
fn pool_controls_refuse_what_does_not_fit() {
    let mut sys = machine();
    assert_eq!(
        sys.hugetlb_grow(Placement::Block(33), 65),
        Err(HotplugError::NoMemory(
            "not enough free memory for huge pages"
        ))
    );
    sys.hugetlb_grow(Placement::Block(33), 2).unwrap();
    assert_eq!(
        sys.hugetlb_use(Placement::Block(33), 3),
        Err(HotplugError::NoMemory("not enough free huge pages"))
    );
    assert_eq!(
        sys.hugetlb_reserve(3),
        Err(HotplugError::NoMemory(
            "fewer free huge pages than the reservation"
        ))
    );
    sys.hugetlb_reserve(1).unwrap();
    // Only the unreserved free page can leave the pool.
    assert_eq!(sys.hugetlb_shrink(Placement::Node(0), 2), Ok(1));
    assert_eq!(pool(&sys), (1, 1, 1));
}

/// `echo N > nr_hugepages` asks for more than fits: the write succeeds and
/// the pool holds what the zones could give above their min watermark and
/// lowmem reserve; a node's count is that node's share; shrinking stops at
/// the pages in use.
#[test]
fn nr_hugepages_writes_grow_as_far_as_memory_allows_and_shrink_to_what_is_in_use() {
    let mut sys = machine();
    sys.set_max_huge_pages(None, 100_000);
    let grown = sys.hugetlb.nr_huge_pages;
    assert!(grown > 100 && grown < 100_000, "{grown}");
    assert_eq!(sys.hugetlb.free_huge_pages, grown);
    assert_eq!(sys.node_huge_pages(0), (grown, grown));
    for zone in [ZoneType::Dma, ZoneType::Dma32, ZoneType::Movable] {
        assert!(
            sys.zone_headroom(0, zone, ZoneType::Movable) < 512,
            "{zone:?} still has room for a huge page"
        );
    }
    // The node's own count: 10 there means 10 in all (one node).
    sys.set_max_huge_pages(Some(0), 10);
    assert_eq!(pool(&sys), (10, 10, 0));
    sys.hugetlb_use(Placement::Node(0), 4).unwrap();
    sys.set_max_huge_pages(None, 0);
    assert_eq!(pool(&sys), (4, 0, 0), "pages in use stay");
}

/// `hugepages=64` on the command line: `hugetlb_init` takes the pool from
/// the buddy allocator while the kernel boots, lowest free pageblocks
/// first, so it sits in memory0 and memory1 (whose kernel pages keep it
/// from going offline): offlining memory2-6 dissolves none of it
/// (recorded: conformance/behaviour `boot-hugepages`).
#[test]
fn a_pool_asked_for_on_the_command_line_is_allocated_at_boot_in_low_memory() {
    let mut q = memhp_model::machine::QemuPc::default();
    q.parse_mem_option("1G,slots=2,maxmem=4G").unwrap();
    let mut sys = memhp_model::System::boot(
        &q.machine("hugepages=64", memhp_model::KernelVersion::V6_1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sys.hugetlb.nr_huge_pages, 64);
    assert!(sys
        .bootlog
        .contains(&"HugeTLB: registered 2.00 MiB page size, pre-allocated 64 pages".to_string()));
    for b in 2..=6 {
        assert_eq!(
            sys.device_offline_nowait(b),
            Ok(memhp_model::DeviceOutcome::Changed),
            "memory{b}"
        );
    }
    assert_eq!(sys.hugetlb.nr_huge_pages, 64);
    assert_eq!(sys.hugetlb.free_huge_pages, 64);
}

/// hugetlb's command-line parsing: sizes other than 2 MiB are refused, and
/// the next `hugepages=` after a refused size is ignored (recorded:
/// conformance/behaviour `hugepages-bad`).
#[test]
fn hugepage_sizes_the_guest_lacks_are_refused_with_the_kernels_messages() {
    let c = memhp_model::cmdline::KernelCmdline::parse(
        "hugepagesz=1G hugepages=2 default_hugepagesz=1G hugepages=abc",
        memhp_model::KernelVersion::V6_1,
    );
    assert_eq!(c.hugepages, None);
    assert_eq!(
        c.hugetlb_messages,
        [
            "HugeTLB: unsupported hugepagesz=1G",
            "HugeTLB: hugepages=2 does not follow a valid hugepagesz, ignoring",
            "HugeTLB: unsupported default_hugepagesz=1G",
            "HugeTLB: hugepages=abc does not follow a valid hugepagesz, ignoring",
        ]
    );
    let ok = memhp_model::cmdline::KernelCmdline::parse(
        "hugepagesz=2M hugepages=8 hugepages=9",
        memhp_model::KernelVersion::V6_1,
    );
    assert_eq!(ok.hugepages, Some(8));
    assert_eq!(
        ok.hugetlb_messages,
        ["HugeTLB: hugepages= specified twice without interleaving hugepagesz=, ignoring hugepages=9"]
    );
}
