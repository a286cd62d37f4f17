//! Each way an offline ends (spec 02 §7), with its errno and the state it
//! leaves: success, EINVAL for holes and for a block across two zones,
//! EBUSY for an unmovable page (with 6.1's migratetype undo), EINTR for a
//! cancelled endless retry.

use memhp_model::block::BlockState;
use memhp_model::machine::QemuPc;
use memhp_model::pages::{MigrateType, PageState};
use memhp_model::workload::{PageKind, Placement};
use memhp_model::{DeviceOutcome, KernelVersion, OfflineProgress, System, ZoneType};

fn boot(mem: &str, cmdline: &str) -> System {
    let mut q = QemuPc::default();
    q.parse_mem_option(mem).unwrap();
    System::boot(&q.machine(cmdline, KernelVersion::V6_1).unwrap()).unwrap()
}

fn dma32(s: &System) -> (u64, u64, u64) {
    let z = s.node(0).unwrap().zone(ZoneType::Dma32);
    (z.spanned, z.present, z.managed)
}

#[test]
fn offline_of_a_free_block_succeeds_and_leaves_the_zone_without_it() {
    let mut s = boot("1G", "");
    let (spanned, present, managed) = dma32(&s);
    assert_eq!(s.device_offline_nowait(3), Ok(DeviceOutcome::Changed));
    assert_eq!(s.blocks[&3].state, BlockState::Offline);
    assert_eq!(s.blocks[&3].zone, None);
    assert_eq!(dma32(&s), (spanned, present - 32768, managed - 32768));
}

#[test]
fn blocks_with_holes_fail_with_einval_and_stay_online() {
    let mut s = boot("1G", "");
    for id in [0, 7] {
        assert!(s.blocks[&id].pages.count(PageState::Hole) > 0);
        assert_eq!(s.device_offline_nowait(id).map_err(|e| e.errno()), Err(22));
        assert_eq!(s.blocks[&id].state, BlockState::Online);
    }
}

#[test]
fn a_block_across_two_zones_fails_with_einval() {
    // movablecore=100M: ZONE_MOVABLE starts inside a memory block.
    let mut s = boot("4G", "movablecore=100M");
    let mixed = s
        .blocks
        .values()
        .find(|b| b.zone.is_none() && b.pages.count(PageState::Hole) == 0)
        .map(|b| b.id)
        .expect("a block across Normal and Movable");
    let before = dma32(&s);
    assert_eq!(
        s.device_offline_nowait(mixed).map_err(|e| e.errno()),
        Err(22)
    );
    assert_eq!(s.blocks[&mixed].state, BlockState::Online);
    assert_eq!(dma32(&s), before);
}

#[test]
fn an_unmovable_page_fails_isolation_with_ebusy_and_earlier_pageblocks_turn_movable() {
    let mut s = boot("1G", "");
    // Unmovable pages in pageblocks 1 and 40 of block 4.
    for pb in [1u64, 40] {
        let pfn = s.block_start_pfn(4) + pb * 512;
        s.alloc_pages(
            Placement::Range {
                start_pfn: pfn,
                pages: 512,
            },
            PageKind::Unmovable,
            1,
        )
        .unwrap();
    }
    assert_eq!(s.blocks[&4].pages.migratetype(1), MigrateType::Unmovable);
    assert_eq!(s.device_offline_nowait(4).map_err(|e| e.errno()), Err(16));
    assert_eq!(s.blocks[&4].state, BlockState::Online);
    // Isolation stopped at pageblock 1: nothing before it was unmovable,
    // so both stay as they were.
    assert_eq!(s.blocks[&4].pages.unmovable_pageblocks(), &[1, 40]);
    // Free the first page: isolation now stops at pageblock 40 and puts
    // pageblock 1 (isolated before it) back as movable.
    let pfn = s.block_start_pfn(4) + 512;
    s.free_pages(
        Placement::Range {
            start_pfn: pfn,
            pages: 1,
        },
        PageKind::Unmovable,
        1,
    )
    .unwrap();
    assert_eq!(s.device_offline_nowait(4).map_err(|e| e.errno()), Err(16));
    assert_eq!(s.blocks[&4].pages.unmovable_pageblocks(), &[40]);
    assert!(s
        .events
        .take_klog()
        .iter()
        .any(|l| l.ends_with(&format!("pfn:{:#x}", s.block_start_pfn(4) + 40 * 512))));
}

#[test]
fn a_cancelled_endless_retry_fails_with_eintr_and_undoes_the_isolation() {
    let mut s = boot("1G", "");
    s.alloc_pages(Placement::Block(5), PageKind::Pinned, 3)
        .unwrap();
    assert!(matches!(
        s.device_offline(5),
        OfflineProgress::Retrying { .. }
    ));
    assert!(s.blocks[&5].pages.is_isolated());
    assert_eq!(s.blocks[&5].state, BlockState::GoingOffline);
    let r = s.offline_signal();
    assert!(matches!(r, OfflineProgress::Done(Err(ref e)) if e.errno() == 4));
    assert_eq!(s.blocks[&5].state, BlockState::Online);
    assert!(!s.blocks[&5].pages.is_isolated());
    assert_eq!(s.blocks[&5].pages.migratetype(0), MigrateType::Movable);
}

/// Nodes 0 and 1 with 1 GiB and a CPU each, node 2 with neither; one
/// 256 MiB DIMM hot-added to `nid` and onlined to ZONE_NORMAL, its first
/// block offlined.
fn offline_first_normal_block_of_hotadded_dimm(nid: u32) -> Result<DeviceOutcome, i32> {
    let mut q = QemuPc::default();
    q.parse_mem_option("2G,slots=8,maxmem=8G").unwrap();
    q.smp = 2;
    q.numa = [(0, vec![0], 1 << 30), (1, vec![1], 1 << 30), (2, vec![], 0)]
        .into_iter()
        .map(|(nodeid, cpus, mem)| memhp_model::machine::QemuNuma {
            nodeid,
            cpus,
            mem,
            generic_initiator: false,
        })
        .collect();
    let spec = q
        .machine("memhp_default_state=offline", KernelVersion::V6_1)
        .unwrap();
    let mut s = System::boot(&spec).unwrap();
    let base = spec.dimm.unwrap().base;
    let ids = s
        .add_memory(&memhp_model::hotadd::AddRequest::system_ram(
            nid,
            base,
            2 * s.block_size,
            false,
        ))
        .unwrap();
    for &id in &ids {
        s.blocks.get_mut(&id).unwrap().online_type = memhp_model::OnlineType::OnlineKernel;
        assert_eq!(s.device_online(id), Ok(DeviceOutcome::Changed));
        assert_eq!(s.blocks[&id].zone, Some(ZoneType::Normal));
    }
    s.device_offline_nowait(ids[0]).map_err(|e| e.errno())
}

#[test]
fn a_cpuless_nodes_first_normal_memory_holds_no_new_kernel_allocations() {
    assert_eq!(
        offline_first_normal_block_of_hotadded_dimm(2),
        Ok(DeviceOutcome::Changed)
    );
}

#[test]
fn a_node_with_a_cpu_keeps_unmovable_pages_in_its_first_normal_block() {
    assert_eq!(offline_first_normal_block_of_hotadded_dimm(1), Err(16));
}

fn free_kb(s: &System) -> i64 {
    s.nr_free_pages() as i64 * 4
}

#[test]
fn an_offline_resets_a_user_reserve_above_the_free_memory_and_says_so() {
    let mut s = boot("1G", "");
    s.vm.set("user_reserve_kbytes", vec![5_000_000]);
    s.vm.set("admin_reserve_kbytes", vec![4000]);
    s.events.take_klog();
    assert_eq!(s.device_offline_nowait(3), Ok(DeviceOutcome::Changed));
    let user = free_kb(&s) / 32;
    assert_eq!(s.vm.int("user_reserve_kbytes"), user);
    // Below the free memory: left as the operator set it.
    assert_eq!(s.vm.int("admin_reserve_kbytes"), 4000);
    assert_eq!(
        s.events.take_klog(),
        vec![format!("mmap: vm.user_reserve_kbytes reset to {user}")]
    );
}

#[test]
fn an_online_sizes_reserves_below_their_maxima_again_and_leaves_larger_ones() {
    let mut s = boot("1G", "");
    assert_eq!(s.device_offline_nowait(3), Ok(DeviceOutcome::Changed));
    s.vm.set("user_reserve_kbytes", vec![200_000]);
    s.vm.set("admin_reserve_kbytes", vec![4000]);
    s.events.take_klog();
    assert_eq!(s.device_online(3), Ok(DeviceOutcome::Changed));
    assert_eq!(s.vm.int("user_reserve_kbytes"), 200_000);
    assert_eq!(s.vm.int("admin_reserve_kbytes"), 8192);
    assert_eq!(s.device_offline_nowait(3), Ok(DeviceOutcome::Changed));
    s.vm.set("user_reserve_kbytes", vec![1000]);
    assert_eq!(s.device_online(3), Ok(DeviceOutcome::Changed));
    assert_eq!(s.vm.int("user_reserve_kbytes"), free_kb(&s) / 32);
    assert!(s.events.take_klog().iter().all(|l| !l.contains("reserve")));
}
