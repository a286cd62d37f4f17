//! Onliner presets racing the kernel's auto-online and each other, decided
//! by their delays and, for ties, by the seed: the same seed gives the same
//! winner every time.

use memhp_control::agents::{react, schedule, Agent, AgentKind};
use memhp_control::{ControlClient, ControlServer, EventBus};
use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;
use memhp_sysfs::vfs::{Errno, Tree};
use memhp_sysfs::SysfsTree;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn host(cmdline: &str) -> Host {
    Host::boot(
        &QemuPc::default()
            .machine(cmdline, KernelVersion::V6_1)
            .unwrap(),
    )
    .unwrap()
}

fn hotadd(h: &Host) -> Vec<u64> {
    h.execute(&HostCommand::Hotadd {
        id: "d".into(),
        size: 256 << 20,
        node: None,
        addr: None,
    })
    .unwrap();
    h.dimms.list()[0].blocks.clone()
}

fn zones(t: &SysfsTree, b: u64) -> String {
    String::from_utf8(
        t.read(&format!("sys/devices/system/memory/memory{b}/valid_zones"))
            .unwrap(),
    )
    .unwrap()
}

fn a(kind: AgentKind, delay_ms: u64) -> Agent {
    Agent { kind, delay_ms }
}

#[test]
fn rhel_onlines_offline_blocks_and_stands_back_when_the_kernel_was_first() {
    let h = host("memhp_default_state=offline");
    let blocks = hotadd(&h);
    let t = SysfsTree::new(Arc::clone(&h.shared));
    let acts = react(&t, &[a(AgentKind::Rhel, 0)], 1, true, &blocks);
    assert!(acts.iter().all(|x| x.result == Ok(6)), "{acts:?}");
    assert_eq!(zones(&t, blocks[0]), "Normal\n");

    let h = host("memhp_default_state=online");
    let blocks = hotadd(&h);
    let t = SysfsTree::new(Arc::clone(&h.shared));
    let acts = react(&t, &[a(AgentKind::Rhel, 0)], 1, true, &blocks);
    assert!(acts.iter().all(|x| x.write.is_none()), "{acts:?}");
}

#[test]
fn ubuntu_hyperv_loses_to_kernel_auto_online_with_einval() {
    let h = host("memhp_default_state=online");
    let blocks = hotadd(&h);
    let t = SysfsTree::new(Arc::clone(&h.shared));
    let acts = react(&t, &[a(AgentKind::UbuntuHyperv, 0)], 1, true, &blocks);
    assert!(
        acts.iter().all(|x| x.result == Err(Errno::EINVAL)),
        "{acts:?}"
    );
}

#[test]
fn kata_agent_wins_against_a_slower_rhel_and_ignores_already_online() {
    let h = host("memhp_default_state=offline");
    let blocks = hotadd(&h);
    let t = SysfsTree::new(Arc::clone(&h.shared));
    let acts = react(
        &t,
        &[a(AgentKind::Rhel, 10), a(AgentKind::KataAgent, 5)],
        1,
        true,
        &blocks,
    );
    let first: Vec<_> = acts.iter().filter(|x| x.block == blocks[0]).collect();
    assert_eq!(first[0].agent, AgentKind::KataAgent);
    assert_eq!(first[0].result, Ok(1));
    assert_eq!(first[1].agent, AgentKind::Rhel);
    assert!(first[1].write.is_none());
}

#[test]
fn daxctl_reports_the_race_it_lost_to_the_kernel() {
    let h = host("memhp_default_state=online");
    let blocks = hotadd(&h);
    let t = SysfsTree::new(Arc::clone(&h.shared));
    let acts = react(&t, &[a(AgentKind::Daxctl, 0)], 1, true, &blocks);
    assert_eq!(acts[0].lost_race.as_deref(), Some("Normal"));
    let h = host("memhp_default_state=offline");
    let blocks = hotadd(&h);
    let t = SysfsTree::new(Arc::clone(&h.shared));
    let acts = react(&t, &[a(AgentKind::Daxctl, 0)], 1, true, &blocks);
    assert_eq!((acts[0].result, acts[0].lost_race.clone()), (Ok(14), None));
}

#[test]
fn ties_are_decided_by_the_seed_and_the_same_seed_decides_the_same_way() {
    let agents = [a(AgentKind::Rhel, 5), a(AgentKind::Daxctl, 5)];
    let firsts: Vec<AgentKind> = (0..64)
        .map(|seed| schedule(&agents, seed, 32)[0].kind)
        .collect();
    assert!(
        firsts.contains(&AgentKind::Rhel) && firsts.contains(&AgentKind::Daxctl),
        "{firsts:?}"
    );
    for seed in 0..64 {
        assert_eq!(schedule(&agents, seed, 32)[0].kind, firsts[seed as usize]);
    }
    // The winner decides the zone: rhel (VM) onlines with `online` (Normal),
    // daxctl with `online_movable`.
    for seed in [
        firsts.iter().position(|k| *k == AgentKind::Rhel).unwrap(),
        firsts.iter().position(|k| *k == AgentKind::Daxctl).unwrap(),
    ] {
        let h = host("memhp_default_state=offline");
        let blocks = hotadd(&h);
        let t = SysfsTree::new(Arc::clone(&h.shared));
        react(&t, &agents, seed as u64, true, &blocks[..1]);
        let want = if firsts[seed] == AgentKind::Rhel {
            "Normal\n"
        } else {
            "Movable\n"
        };
        assert_eq!(zones(&t, blocks[0]), want, "seed {seed}");
    }
}

#[test]
fn onliners_react_before_the_hotadd_command_returns_and_report_on_the_socket() {
    let h = Arc::new(host("memhp_default_state=offline"));
    let path = std::env::temp_dir().join(format!("memhp-onliners-{}.sock", std::process::id()));
    let bus = Arc::new(EventBus::with_agents(vec![a(AgentKind::KataAgent, 0)], 7));
    let _srv = ControlServer::start(Arc::clone(&h), bus, &path).unwrap();
    let mut c = ControlClient::connect(&path).unwrap();
    let r = c
        .execute("hotadd", json!({"id": "d1", "size": "256M"}))
        .unwrap();
    assert_eq!(
        r["return"]["blocks"],
        json!([{"id": 32, "state": "online"}, {"id": 33, "state": "online"}])
    );
    let mut onliner = 0;
    while let Ok(ev) = c.next_event(Duration::from_millis(300)) {
        if ev["event"] == "ONLINER" {
            onliner += 1;
            assert!(
                ev["data"]["report"]
                    .as_str()
                    .unwrap()
                    .contains("online <- \"1\": OK (1)"),
                "{ev}"
            );
        }
    }
    assert_eq!(onliner, 2);
}
