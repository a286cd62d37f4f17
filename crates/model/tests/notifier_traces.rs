//! The exact notifier traces of spec 02 §2.4, §3.3 and §10.6 for online,
//! offline, their failures and cancels, and the first-memory/last-memory
//! node transitions, in 6.1 (status fields on the memory chain) and in
//! mainline (the node chain).

use memhp_model::events::{MemAction, NodeAction};
use memhp_model::fault::{FaultError, FaultEvent, FaultMode, FaultRule, FAULT_CONSUMER};
use memhp_model::hotadd::AddRequest;
use memhp_model::hotplug::HotplugError;
use memhp_model::machine::QemuPc;
use memhp_model::workload::{PageKind, Placement};
use memhp_model::{BlockState, KernelVersion, OnlineType, System};

const GIB: u64 = 1 << 30;
const V61: KernelVersion = KernelVersion::V6_1;
const ML: KernelVersion = KernelVersion::Mainline;

/// Node 0 with 1 GiB, node 1 with a CPU and no memory; two offline blocks
/// hot-added to node 1 at 4 GiB (pfn 0x100000 and 0x108000). Returns the
/// system and the two block ids, with the traces drained.
fn two_blocks_on_memoryless_node(version: KernelVersion) -> (System, u64, u64) {
    let q = QemuPc::default().with_node_per_cpu(&[GIB, 0]);
    let spec = q.machine("memhp_default_state=offline", version).unwrap();
    let mut sys = System::boot(&spec).unwrap();
    let base = spec.dimm.unwrap().base;
    assert_eq!(base, 4 * GIB);
    let bs = sys.block_size;
    let ids = sys
        .add_memory(&AddRequest::system_ram(1, base, 2 * bs, false))
        .unwrap();
    drain(&mut sys);
    (sys, ids[0], ids[1])
}

/// The global sequence of chain calls since the last drain, rendered with
/// the argument fields of the system's version.
fn drain(sys: &mut System) -> Vec<String> {
    sys.memory_chain.take_trace();
    std::mem::take(&mut sys.events.notifier)
        .iter()
        .map(|c| c.render(sys.version))
        .collect()
}

/// Per consumer: (consumer, event) in call order since the last drain.
fn per_consumer(sys: &mut System) -> Vec<(String, &'static str)> {
    sys.events.notifier.clear();
    sys.memory_chain
        .take_trace()
        .into_iter()
        .map(|r| (r.consumer.to_string(), r.event()))
        .collect()
}

/// The consumers that received `event`, in order.
fn consumers_of<'a>(calls: &'a [(String, &'static str)], event: &str) -> Vec<&'a str> {
    calls
        .iter()
        .filter(|c| c.1 == event)
        .map(|c| c.0.as_str())
        .collect()
}

fn online(sys: &mut System, id: u64, t: OnlineType) -> Result<(), HotplugError> {
    sys.blocks.get_mut(&id).unwrap().online_type = t;
    sys.device_online(id).map(|_| ())
}

fn offline(sys: &mut System, id: u64) -> Result<(), HotplugError> {
    sys.device_offline_nowait(id).map(|_| ())
}

const A0: &str = "start_pfn=0x100000 nr_pages=32768";
const A1: &str = "start_pfn=0x108000 nr_pages=32768";

#[test]
fn online_of_a_nodes_first_memory_61_sets_both_status_fields_on_every_event() {
    let (mut sys, a, b) = two_blocks_on_memoryless_node(V61);
    online(&mut sys, a, OnlineType::OnlineKernel).unwrap();
    let s = format!("{A0} status_change_nid_normal=1 status_change_nid=1");
    assert_eq!(
        drain(&mut sys),
        [format!("MEM_GOING_ONLINE {s}"), format!("MEM_ONLINE {s}")]
    );
    online(&mut sys, b, OnlineType::OnlineKernel).unwrap();
    let s = format!("{A1} status_change_nid_normal=-1 status_change_nid=-1");
    assert_eq!(
        drain(&mut sys),
        [format!("MEM_GOING_ONLINE {s}"), format!("MEM_ONLINE {s}")]
    );
}

#[test]
fn online_of_a_nodes_first_movable_memory_61_leaves_nid_normal_at_minus_one() {
    let (mut sys, a, _) = two_blocks_on_memoryless_node(V61);
    online(&mut sys, a, OnlineType::OnlineMovable).unwrap();
    let s = format!("{A0} status_change_nid_normal=-1 status_change_nid=1");
    assert_eq!(
        drain(&mut sys),
        [format!("MEM_GOING_ONLINE {s}"), format!("MEM_ONLINE {s}")]
    );
    assert!(sys.nodes[&1].has_memory && !sys.nodes[&1].has_normal_memory);
}

#[test]
fn online_of_a_nodes_first_memory_ml_wraps_the_memory_events_in_node_events() {
    let (mut sys, a, b) = two_blocks_on_memoryless_node(ML);
    online(&mut sys, a, OnlineType::OnlineKernel).unwrap();
    assert_eq!(
        drain(&mut sys),
        [
            "NODE_ADDING_FIRST_MEMORY nid=1".to_string(),
            format!("MEM_GOING_ONLINE {A0}"),
            "NODE_ADDED_FIRST_MEMORY nid=1".to_string(),
            format!("MEM_ONLINE {A0}"),
        ]
    );
    online(&mut sys, b, OnlineType::OnlineKernel).unwrap();
    assert_eq!(
        drain(&mut sys),
        [format!("MEM_GOING_ONLINE {A1}"), format!("MEM_ONLINE {A1}")]
    );
    assert!(sys.nodes[&1].has_memory && sys.nodes[&1].has_normal_memory);
}

#[test]
fn offline_of_a_nodes_last_memory_in_both_versions() {
    for version in [V61, ML] {
        let (mut sys, a, b) = two_blocks_on_memoryless_node(version);
        // Movable: the first kernel-zone block of a node gets the kernel's
        // new unmovable allocations and could not be offlined.
        online(&mut sys, a, OnlineType::OnlineMovable).unwrap();
        online(&mut sys, b, OnlineType::OnlineMovable).unwrap();
        drain(&mut sys);
        offline(&mut sys, b).unwrap();
        let tail = match version {
            V61 => " status_change_nid_normal=-1 status_change_nid=-1",
            ML => "",
        };
        assert_eq!(
            drain(&mut sys),
            [
                format!("MEM_GOING_OFFLINE {A1}{tail}"),
                format!("MEM_OFFLINE {A1}{tail}")
            ],
            "{version:?}"
        );
        offline(&mut sys, a).unwrap();
        let expected: Vec<String> = match version {
            V61 => {
                let s = format!("{A0} status_change_nid_normal=-1 status_change_nid=1");
                vec![format!("MEM_GOING_OFFLINE {s}"), format!("MEM_OFFLINE {s}")]
            }
            ML => vec![
                "NODE_REMOVING_LAST_MEMORY nid=1".into(),
                format!("MEM_GOING_OFFLINE {A0}"),
                "NODE_REMOVED_LAST_MEMORY nid=1".into(),
                format!("MEM_OFFLINE {A0}"),
            ],
        };
        assert_eq!(drain(&mut sys), expected, "{version:?}");
        let n = &sys.nodes[&1];
        assert!(!n.has_memory && !n.has_normal_memory, "{version:?}");
    }
}

#[test]
fn vetoed_going_online_cancels_and_node_cancel_comes_last_not_lifo() {
    for version in [V61, ML] {
        let (mut sys, a, _) = two_blocks_on_memoryless_node(version);
        let rule = FaultRule::new(MemAction::GoingOnline, -12, FaultMode::Always).unwrap();
        sys.add_fault(rule, 0).unwrap();
        assert_eq!(
            online(&mut sys, a, OnlineType::OnlineKernel),
            Err(HotplugError::Notifier(-12))
        );
        let expected: Vec<String> = match version {
            V61 => {
                let s = format!("{A0} status_change_nid_normal=1 status_change_nid=1");
                vec![
                    format!("MEM_GOING_ONLINE {s}"),
                    format!("MEM_CANCEL_ONLINE {s}"),
                ]
            }
            ML => vec![
                "NODE_ADDING_FIRST_MEMORY nid=1".into(),
                format!("MEM_GOING_ONLINE {A0}"),
                format!("MEM_CANCEL_ONLINE {A0}"),
                "NODE_CANCEL_ADDING_FIRST_MEMORY nid=1".into(),
            ],
        };
        assert_eq!(drain(&mut sys), expected, "{version:?}");
        assert_eq!(sys.blocks[&a].state, BlockState::Offline);
        assert!(!sys.nodes[&1].has_memory);
        assert_eq!(sys.nodes[&1].present_pages(), 0);
    }
}

#[test]
fn vetoed_node_event_ml_sends_memory_cancel_to_consumers_that_never_saw_going() {
    let (mut sys, a, _) = two_blocks_on_memoryless_node(ML);
    let rule = FaultRule::new(NodeAction::AddingFirstMemory, -16, FaultMode::Once).unwrap();
    sys.add_fault(rule, 50).unwrap();
    assert_eq!(
        online(&mut sys, a, OnlineType::Online),
        Err(HotplugError::Notifier(-16))
    );
    let calls = per_consumer(&mut sys);
    let adding: Vec<&str> = consumers_of(&calls, "NODE_ADDING_FIRST_MEMORY");
    // Descending priority; the rule (50) stops the walk after memtier (100).
    assert_eq!(adding, ["memtier_hotplug_callback", FAULT_CONSUMER]);
    assert!(calls.iter().all(|c| c.1 != "MEM_GOING_ONLINE"));
    let mem_cancel: Vec<&str> = consumers_of(&calls, "MEM_CANCEL_ONLINE");
    assert_eq!(
        mem_cancel,
        [
            "ksm_memory_callback",
            "mm_compute_batch_notifier",
            "page_ext_callback",
            "kcore_callback",
            "reserve_mem_notifier",
            "crash_memhp_notifier"
        ]
    );
    let node_cancel: Vec<&str> = consumers_of(&calls, "NODE_CANCEL_ADDING_FIRST_MEMORY");
    assert_eq!(
        node_cancel,
        [
            "memtier_hotplug_callback",
            FAULT_CONSUMER,
            "cpuset_track_online_nodes",
            "hmat_callback",
            "slab_memory_callback",
            "wi_node_notifier"
        ]
    );
    // The memory cancel comes before the node cancel.
    let first_node_cancel = calls
        .iter()
        .position(|c| c.1 == "NODE_CANCEL_ADDING_FIRST_MEMORY")
        .unwrap();
    let last_mem_cancel = calls
        .iter()
        .rposition(|c| c.1 == "MEM_CANCEL_ONLINE")
        .unwrap();
    assert!(last_mem_cancel < first_node_cancel);
    // The rule fired once: the next online succeeds.
    online(&mut sys, a, OnlineType::Online).unwrap();
    assert!(sys.nodes[&1].has_memory);
}

#[test]
fn vetoed_node_removal_ml_keeps_the_block_online_with_its_trace() {
    let (mut sys, a, _) = two_blocks_on_memoryless_node(ML);
    online(&mut sys, a, OnlineType::OnlineMovable).unwrap();
    let rule = FaultRule::new(NodeAction::RemovingLastMemory, -1, FaultMode::Always).unwrap();
    sys.add_fault(rule, 0).unwrap();
    drain(&mut sys);
    assert_eq!(offline(&mut sys, a), Err(HotplugError::Notifier(-1)));
    assert_eq!(
        drain(&mut sys),
        [
            "NODE_REMOVING_LAST_MEMORY nid=1".to_string(),
            format!("MEM_CANCEL_OFFLINE {A0}"),
            "NODE_CANCEL_REMOVING_LAST_MEMORY nid=1".to_string(),
        ]
    );
    assert_eq!(sys.blocks[&a].state, BlockState::Online);
    assert!(sys.nodes[&1].has_memory);
}

#[test]
fn offline_interrupted_in_the_migration_loop_cancels_in_both_versions() {
    for version in [V61, ML] {
        let (mut sys, a, _) = two_blocks_on_memoryless_node(version);
        online(&mut sys, a, OnlineType::OnlineMovable).unwrap();
        sys.alloc_pages(Placement::Block(a), PageKind::Pinned, 1)
            .unwrap();
        drain(&mut sys);
        assert_eq!(offline(&mut sys, a), Err(HotplugError::Interrupted));
        let expected: Vec<String> = match version {
            V61 => {
                let s = format!("{A0} status_change_nid_normal=-1 status_change_nid=1");
                vec![
                    format!("MEM_GOING_OFFLINE {s}"),
                    format!("MEM_CANCEL_OFFLINE {s}"),
                ]
            }
            ML => vec![
                "NODE_REMOVING_LAST_MEMORY nid=1".into(),
                format!("MEM_GOING_OFFLINE {A0}"),
                format!("MEM_CANCEL_OFFLINE {A0}"),
                "NODE_CANCEL_REMOVING_LAST_MEMORY nid=1".into(),
            ],
        };
        assert_eq!(drain(&mut sys), expected, "{version:?}");
        assert_eq!(sys.blocks[&a].state, BlockState::Online);
    }
}

#[test]
fn offline_failing_before_the_chains_sends_nothing() {
    for version in [V61, ML] {
        let (mut sys, a, _) = two_blocks_on_memoryless_node(version);
        online(&mut sys, a, OnlineType::OnlineKernel).unwrap();
        sys.alloc_pages(Placement::Block(a), PageKind::Unmovable, 1)
            .unwrap();
        drain(&mut sys);
        assert!(matches!(offline(&mut sys, a), Err(HotplugError::Busy(_))));
        assert_eq!(drain(&mut sys), Vec::<String>::new(), "{version:?}");
    }
}

#[test]
fn every_consumer_that_saw_going_gets_exactly_one_completion_t2() {
    for version in [V61, ML] {
        let (mut sys, a, b) = two_blocks_on_memoryless_node(version);
        let rule = FaultRule::new(MemAction::GoingOffline, -16, FaultMode::EveryNth(2)).unwrap();
        sys.add_fault(rule, 5).unwrap();
        let mut all = Vec::new();
        online(&mut sys, a, OnlineType::OnlineMovable).unwrap();
        online(&mut sys, b, OnlineType::OnlineMovable).unwrap();
        all.push(per_consumer(&mut sys));
        let _ = offline(&mut sys, b); // passes (1st GOING_OFFLINE)
        all.push(per_consumer(&mut sys));
        let _ = offline(&mut sys, a); // vetoed (2nd)
        all.push(per_consumer(&mut sys));
        for op in all {
            for (going, done, cancel) in [
                ("MEM_GOING_ONLINE", "MEM_ONLINE", "MEM_CANCEL_ONLINE"),
                ("MEM_GOING_OFFLINE", "MEM_OFFLINE", "MEM_CANCEL_OFFLINE"),
            ] {
                for (c, _) in op.iter().filter(|c| c.1 == going) {
                    let ends = op
                        .iter()
                        .filter(|x| &x.0 == c && (x.1 == done || x.1 == cancel))
                        .count();
                    assert_eq!(
                        ends,
                        op.iter().filter(|x| &x.0 == c && x.1 == going).count()
                    );
                }
            }
        }
    }
}

#[test]
fn node_rules_are_refused_in_6_1_which_has_no_node_chain() {
    let (mut sys, _, _) = two_blocks_on_memoryless_node(V61);
    let rule = FaultRule::new(NodeAction::AddingFirstMemory, -12, FaultMode::Always).unwrap();
    assert_eq!(
        sys.add_fault(rule, 0),
        Err(FaultError::NoNodeChain("NODE_ADDING_FIRST_MEMORY"))
    );
    assert_eq!(
        FaultEvent::from_name("NODE_REMOVED_LAST_MEMORY"),
        Some(FaultEvent::Node(NodeAction::RemovedLastMemory))
    );
    assert_eq!(FaultEvent::from_name("NODE_FOO"), None);
}

#[test]
fn boot_chains_follow_the_version() {
    let q = QemuPc::default();
    let v61 = System::boot(&q.machine("", V61).unwrap()).unwrap();
    assert!(v61.node_chain.order().is_empty());
    assert_eq!(v61.memory_chain.order().len(), 9);
    let ml = System::boot(&q.machine("", ML).unwrap()).unwrap();
    assert_eq!(
        ml.node_chain.order(),
        [
            ("memtier_hotplug_callback".to_string(), 100),
            ("cpuset_track_online_nodes".to_string(), 10),
            ("hmat_callback".to_string(), 6),
            ("slab_memory_callback".to_string(), 1),
            ("wi_node_notifier".to_string(), 0)
        ]
    );
    assert!(ml
        .memory_chain
        .order()
        .iter()
        .all(|(n, _)| n != "slab_memory_callback"));
}
