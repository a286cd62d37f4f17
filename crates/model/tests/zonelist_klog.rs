//! Zonelist rebuilds print "Total pages: N" from the managed pages and the
//! watermarks of the moment; the figures must be the ones Linux 6.1 printed
//! in the oracle's `offline-busy` and `virtio-mem`/`hotadd` runs.

use memhp_model::block::OnlineType;
use memhp_model::hotadd::AddRequest;
use memhp_model::machine::QemuPc;
use memhp_model::{DeviceOutcome, KernelVersion, System};

fn boot() -> System {
    System::boot(&QemuPc::default().machine("", KernelVersion::V6_1).unwrap()).unwrap()
}

fn online(s: &mut System, id: u64, t: OnlineType) {
    s.blocks.get_mut(&id).unwrap().online_type = t;
    assert_eq!(s.device_online(id), Ok(DeviceOutcome::Changed));
}

#[test]
fn offline_busy_reonline_movable_prints_total_pages_63105() {
    let mut s = boot();
    assert_eq!(s.device_offline_nowait(0).map_err(|e| e.errno()), Err(22));
    for id in 1..=6 {
        assert_eq!(
            s.device_offline_nowait(id),
            Ok(DeviceOutcome::Changed),
            "memory{id}"
        );
    }
    assert_eq!(s.device_offline_nowait(7).map_err(|e| e.errno()), Err(22));
    assert!(s.events.take_klog().is_empty());
    online(&mut s, 1, OnlineType::OnlineMovable);
    assert_eq!(
        s.events.take_klog(),
        vec![
            "Fallback order for Node 0: 0 ".to_string(),
            "Built 1 zonelists, mobility grouping on.  Total pages: 63105".to_string(),
            "Policy zone: DMA32".to_string(),
        ]
    );
}

#[test]
fn first_movable_block_after_boot_prints_total_pages_245235() {
    let mut s = boot();
    let req = AddRequest {
        nid: 0,
        start: 1 << 32,
        size: 256 << 20,
        resource_name: "System RAM".into(),
        parent_resource: None,
        group: None,
        memmap_on_memory: false,
        driver_offline_pages: 0,
    };
    s.add_memory(&req).unwrap();
    online(&mut s, 32, OnlineType::OnlineMovable);
    let log = s.events.take_klog();
    assert_eq!(
        log[1],
        "Built 1 zonelists, mobility grouping on.  Total pages: 245235"
    );
    online(&mut s, 33, OnlineType::OnlineMovable);
    assert!(s.events.take_klog().is_empty());
    assert_eq!(s.device_offline_nowait(33), Ok(DeviceOutcome::Changed));
    assert_eq!(s.device_offline_nowait(32), Ok(DeviceOutcome::Changed));
    let log = s.events.take_klog();
    assert_eq!(
        log[1],
        "Built 1 zonelists, mobility grouping on.  Total pages: 212467"
    );
}

/// Memory hot-added to a node that has neither CPUs nor memory (offline
/// since boot): `hotadd_init_pgdat` builds that node's zonelist before it
/// comes online, so the count and the pages are the online nodes' (6.1,
/// `conformance/behaviour/numa-memory-only-node`: the guest printed 212429
/// on the first such hot-add).
#[test]
fn hot_add_to_an_offline_node_builds_its_zonelist_first() {
    // The recording's initramfs (2540 KiB) and command line: where the
    // boot allocations pack, and so how many pages they touch, follows
    // from both.
    let q = QemuPc {
        initrd_bytes: 2_600_170,
        ..QemuPc::default()
    }
    .with_nodes(&[(&[0], 1 << 30), (&[], 0)]);
    let cmdline = "console=ttyS0 printk.time=0 loglevel=3 panic=-1 nokaslr rdinit=/init \
                   memhp_default_state=offline";
    let spec = q.machine(cmdline, KernelVersion::V6_1).unwrap();
    let mut s = System::boot(&spec).unwrap();
    assert_eq!(
        s.nodes[&0].zone(memhp_model::ZoneType::Dma32).managed,
        225478
    );
    assert!(!s.nodes[&1].online);
    let base = spec.dimm.unwrap().base;
    s.add_memory(&AddRequest::system_ram(1, base, 1 << 28, false))
        .unwrap();
    assert!(s.nodes[&1].online);
    assert_eq!(
        s.events.take_klog(),
        vec![
            "Fallback order for Node 1: 1 0 ".to_string(),
            "Built 1 zonelists, mobility grouping on.  Total pages: 212429".to_string(),
            "Policy zone: DMA32".to_string(),
        ]
    );
}

/// Three nodes with a CPU each, equal distances (6.1,
/// `conformance/behaviour/numa-three-nodes`): after itself, each node
/// prefers higher node ids (a lower id costs one), and the first remote
/// node of a list is a step back in the next nodes' lists.
#[test]
fn fallback_order_of_three_nodes_follows_find_next_best_node() {
    let q = QemuPc::default().with_nodes(&[(&[0], 512 << 20), (&[1], 512 << 20), (&[2], 0)]);
    let spec = q.machine("", KernelVersion::V6_1).unwrap();
    let mut s = System::boot(&spec).unwrap();
    let base = spec.dimm.unwrap().base;
    s.add_memory(&AddRequest::system_ram(2, base, 1 << 28, false))
        .unwrap();
    let id = base / s.block_size;
    online(&mut s, id, OnlineType::Online);
    let log = s.events.take_klog();
    let fallback: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("Fallback order"))
        .collect();
    assert_eq!(
        fallback,
        [
            "Fallback order for Node 0: 0 1 2 ",
            "Fallback order for Node 1: 1 2 0 ",
            "Fallback order for Node 2: 2 0 1 ",
        ]
    );
}
