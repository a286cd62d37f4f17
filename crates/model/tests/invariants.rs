//! Property tests: random sequences of online/offline/policy/hot-add/remove
//! operations keep the invariants of spec 02 §10.5 and spec 01 §14, and a
//! failed operation leaves the state as it was (I15).

use memhp_model::block::{BlockState, OnlineType};
use memhp_model::cmdline::OnlinePolicy;
use memhp_model::hotadd::AddRequest;
use memhp_model::machine::QemuPc;
use memhp_model::{KernelVersion, System, ZoneType};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    State { block: usize, t: OnlineType },
    OnlineFile { block: usize, on: bool },
    Policy(OnlinePolicy),
    Ratio(u32),
    DefaultType(OnlineType),
    Add { node: u32, blocks: u64 },
    Remove { block: usize },
    Inject { online: i32, offline: i32 },
}

fn online_type() -> impl Strategy<Value = OnlineType> {
    prop_oneof![
        Just(OnlineType::Offline),
        Just(OnlineType::Online),
        Just(OnlineType::OnlineKernel),
        Just(OnlineType::OnlineMovable)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..64, online_type()).prop_map(|(block, t)| Op::State { block, t }),
        2 => (0usize..64, any::<bool>()).prop_map(|(block, on)| Op::OnlineFile { block, on }),
        1 => prop_oneof![Just(OnlinePolicy::ContigZones), Just(OnlinePolicy::AutoMovable)].prop_map(Op::Policy),
        1 => prop_oneof![Just(0u32), Just(50), Just(301), Just(1000)].prop_map(Op::Ratio),
        1 => online_type().prop_map(Op::DefaultType),
        2 => (0u32..2, 1u64..5).prop_map(|(node, blocks)| Op::Add { node, blocks }),
        1 => (0usize..64).prop_map(|block| Op::Remove { block }),
        1 => (prop_oneof![Just(0), Just(-12), Just(-16)], prop_oneof![Just(0), Just(-16)]).prop_map(|(online, offline)| Op::Inject { online, offline }),
    ]
}

fn machine() -> System {
    let q = QemuPc::default().with_node_per_cpu(&[1 << 30, 0]);
    System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap()
}

/// The state an operation must not change when it fails.
fn observable(s: &System) -> String {
    let blocks: Vec<_> = s
        .blocks
        .values()
        .map(|b| {
            (
                b.id,
                b.state,
                b.zone,
                b.nid,
                b.dev_offline,
                b.link_nodes.clone(),
            )
        })
        .collect();
    let nodes: Vec<_> = s
        .nodes
        .values()
        .map(|n| (n.id, n.online, n.has_memory, n.has_normal_memory, n.zones))
        .collect();
    let groups: Vec<_> = s
        .groups
        .values()
        .map(|g| (g.id, g.present_kernel_pages, g.present_movable_pages))
        .collect();
    format!("{blocks:?}{nodes:?}{groups:?}{:?}", s.iomem)
}

fn check_invariants(s: &System) -> Result<(), TestCaseError> {
    let ppb = s.pages_per_block();
    for b in s.blocks.values() {
        // I1
        prop_assert!(
            b.state != BlockState::GoingOffline,
            "memory{} at rest in going-offline",
            b.id
        );
        prop_assert_eq!(
            b.dev_offline,
            b.state == BlockState::Offline,
            "memory{} dev.offline",
            b.id
        );
        // I2
        if !b.early {
            prop_assert_eq!(
                b.zone.is_some(),
                b.state == BlockState::Online,
                "memory{} zone",
                b.id
            );
        }
        // I9: the zone span covers every online block of the zone.
        if let (BlockState::Online, Some(z), Some(nid)) = (b.state, b.zone, b.nid) {
            let zone = s.nodes[&nid].zone(z);
            let start = s.block_start_pfn(b.id);
            // Boot blocks may end in a hole; only their present pages count.
            let end = start + if b.early { b.pages.present() } else { ppb };
            prop_assert!(
                zone.start_pfn <= start && end <= zone.end_pfn(),
                "memory{} outside {:?} span",
                b.id,
                z
            );
        }
        prop_assert!(
            b.nid.is_none_or(|n| s.nodes[&n].online),
            "memory{} on an offline node",
            b.id
        );
    }
    for n in s.nodes.values() {
        for z in ZoneType::ALL {
            let zone = n.zone(z);
            // I3
            prop_assert!(
                zone.managed <= zone.present && zone.present <= zone.spanned,
                "node{} {:?} {:?}",
                n.id,
                z,
                zone
            );
        }
        // I7, I8
        prop_assert_eq!(n.has_memory, n.present_pages() > 0, "node{} N_MEMORY", n.id);
        prop_assert_eq!(
            n.has_normal_memory,
            n.kernel_present_pages() > 0,
            "node{} N_NORMAL_MEMORY",
            n.id
        );
        // I13
        let has_block = s.blocks.values().any(|b| b.nid == Some(n.id));
        if has_block || !n.cpus.is_empty() {
            prop_assert!(n.online, "node{} must be online", n.id);
        }
        // Present pages = what the online blocks of the node contribute.
        let from_blocks: u64 = s
            .blocks
            .values()
            .filter(|b| b.nid == Some(n.id) && b.state == BlockState::Online)
            .map(|b| b.pages.present())
            .sum();
        prop_assert_eq!(n.present_pages(), from_blocks, "node{} present pages", n.id);
    }
    // I14
    for g in s.groups.values() {
        let (mut k, mut m) = (0, 0);
        for b in g
            .blocks
            .iter()
            .filter_map(|id| s.blocks.get(id))
            .filter(|b| b.state == BlockState::Online)
        {
            if b.zone == Some(ZoneType::Movable) {
                m += ppb;
            } else {
                k += ppb;
            }
        }
        prop_assert_eq!(
            (g.present_kernel_pages, g.present_movable_pages),
            (k, m),
            "group {}",
            g.id
        );
    }
    Ok(())
}

fn apply(s: &mut System, op: &Op) -> bool {
    let ids: Vec<u64> = s.blocks.keys().copied().collect();
    let pick = |i: usize| ids[i % ids.len()];
    match *op {
        Op::State { block, t } => {
            let id = pick(block);
            if t == OnlineType::Offline {
                s.device_offline_nowait(id).is_ok()
            } else {
                s.blocks.get_mut(&id).unwrap().online_type = t;
                s.device_online(id).is_ok()
            }
        }
        Op::OnlineFile { block, on } => {
            let id = pick(block);
            if on {
                s.device_online(id).is_ok()
            } else {
                s.device_offline_nowait(id).is_ok()
            }
        }
        Op::Policy(p) => {
            s.params.online_policy = p;
            true
        }
        Op::Ratio(r) => {
            s.params.auto_movable_ratio = r;
            true
        }
        Op::DefaultType(t) => {
            s.params.default_online_type = t;
            true
        }
        Op::Add { node, blocks } => {
            let start = s
                .blocks
                .keys()
                .last()
                .map_or(0, |&l| (l + 1) * s.block_size)
                .max(1 << 32);
            let size = blocks * s.block_size;
            let group = s.register_static_group(node, size >> 12).ok();
            let req = AddRequest {
                nid: node,
                start,
                size,
                resource_name: "System RAM".into(),
                parent_resource: None,
                group,
                memmap_on_memory: false,
                driver_offline_pages: 0,
            };
            s.add_memory(&req).is_ok()
        }
        Op::Remove { block } => {
            let id = pick(block);
            if s.blocks[&id].early {
                return false;
            }
            s.remove_memory(id * s.block_size, s.block_size).is_ok()
        }
        Op::Inject { online, offline } => {
            s.load_injector(0);
            s.injection.going_online = online;
            s.injection.going_offline = offline;
            true
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = machine();
        check_invariants(&s)?;
        for op in &ops {
            let before = observable(&s);
            let ok = apply(&mut s, op);
            if !ok {
                let is_state_change = matches!(op, Op::State { .. } | Op::OnlineFile { .. });
                if is_state_change {
                    // I15: a failed online/offline leaves everything as before.
                    prop_assert_eq!(&before, &observable(&s), "failed {:?} changed the state", op);
                }
            }
            check_invariants(&s)?;
        }
    }
}
