//! memhp's own notifier fault rules (`memhp ctl fault ...`) on a live
//! mount: which writes fail with which errno, the counts the daemon keeps,
//! reproducible random faults, and the errors for bad rules.

mod common;

use common::Machine;

const M: &str = "sys/devices/system/memory";

/// A 1 GiB qemu-pc with a 1 GiB DIMM whose 8 blocks (memory32..39) stay
/// offline.
fn machine(tag: &str) -> Machine {
    let m = Machine::mount(tag, &["--cmdline", "memhp_default_state=offline"]);
    m.ctl(&["hotadd", "d1", "1G"]);
    m
}

fn online(m: &Machine, block: u64) -> Result<(), i32> {
    m.write(&format!("{M}/memory{block}/online"), "1")
}

fn state(m: &Machine, block: u64) -> String {
    m.read(&format!("{M}/memory{block}/state"))
}

#[test]
fn every_second_going_online_fails_with_its_errno_and_leaves_the_block_offline() {
    let m = machine("fault-every");
    let added = m.ctl(&["fault", "add", "MEM_GOING_ONLINE", "-16", "every=2"]);
    assert!(added.contains("\"id\""), "{added}");
    let results: Vec<Result<(), i32>> = (32..36).map(|b| online(&m, b)).collect();
    assert_eq!(
        results,
        [Ok(()), Err(libc::EBUSY), Ok(()), Err(libc::EBUSY)]
    );
    assert_eq!(state(&m, 32), "online\n");
    assert_eq!(state(&m, 33), "offline\n");
    let list: serde_json::Value = serde_json::from_str(&m.ctl(&["fault", "list"])).unwrap();
    assert_eq!(list[0]["action"], "MEM_GOING_ONLINE");
    assert_eq!(list[0]["mode"], "every");
    assert_eq!(
        (list[0]["matched"].as_u64(), list[0]["fired"].as_u64()),
        (Some(4), Some(2))
    );
}

#[test]
fn once_rule_fails_one_offline_then_removed_rule_fails_nothing() {
    let m = machine("fault-once");
    // memory32, the first Normal block, takes kernel allocations (EBUSY);
    // its neighbours offline cleanly.
    for b in 32..35 {
        online(&m, b).unwrap();
    }
    let added: serde_json::Value =
        serde_json::from_str(&m.ctl(&["fault", "add", "MEM_GOING_OFFLINE", "-12", "once"]))
            .unwrap();
    let offline = |b: u64| m.write(&format!("{M}/memory{b}/online"), "0");
    assert_eq!(offline(33), Err(libc::ENOMEM));
    assert_eq!(state(&m, 33), "online\n");
    assert_eq!(offline(33), Ok(()));
    let id = added["id"].to_string();
    m.ctl(&["fault", "remove", &id]);
    assert_eq!(m.ctl(&["fault", "list"]).trim(), "[]");
    assert_eq!(offline(34), Ok(()));
    let (_, err) = m.ctl_fails(&["fault", "remove", &id]);
    assert!(err.contains(&format!("no fault rule {id}")), "{err}");
}

#[test]
fn probability_rule_with_the_same_seed_fails_the_same_writes() {
    let outcomes = |tag: &str| -> Vec<bool> {
        let m = machine(tag);
        m.ctl(&[
            "fault",
            "add",
            "MEM_GOING_ONLINE",
            "-11",
            "probability=0.5",
            "seed=7",
        ]);
        (32..40).map(|b| online(&m, b).is_ok()).collect()
    };
    let a = outcomes("fault-prob-a");
    assert_eq!(a, outcomes("fault-prob-b"));
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[test]
fn bad_rules_get_errors_a_person_can_act_on_and_the_daemon_keeps_serving() {
    let m = machine("fault-bad");
    let cases: [(&[&str], &str); 5] = [
        (
            &["fault", "add", "MEM_BOGUS", "-1"],
            "no notifier action 'MEM_BOGUS' (MEM_* or NODE_*)",
        ),
        (
            &["fault", "add", "MEM_GOING_ONLINE", "0"],
            "errno 0 is not in -4095..-1",
        ),
        (
            &["fault", "add", "MEM_GOING_ONLINE", "-1", "every=0"],
            "every-Nth needs N >= 1",
        ),
        (
            &["fault", "add", "MEM_GOING_ONLINE", "-1", "probability=2"],
            "probability 2 is not in 0..1",
        ),
        (
            &["fault", "add", "MEM_GOING_ONLINE", "-1", "sometimes"],
            "unknown option \"sometimes\"",
        ),
    ];
    for (words, expected) in cases {
        let (_, err) = m.ctl_fails(words);
        assert!(err.contains(expected), "{words:?}: {err}");
    }
    assert_eq!(online(&m, 32), Ok(()));
}

/// Mainline, two nodes: node 1 has a CPU and no memory, so the first block
/// hot-added to it and onlined is its first memory (the node chain).
fn ml_memoryless_node(tag: &str) -> Machine {
    let m = Machine::mount(
        tag,
        &[
            "--kernel",
            "ml",
            "--smp",
            "2",
            "--numa",
            "nodeid=0,cpus=0,mem=1G",
            "--numa",
            "nodeid=1,cpus=1,mem=0",
            "--cmdline",
            "memhp_default_state=offline",
        ],
    );
    m.ctl(&["hotadd", "d1", "256M", "node=1"]);
    m
}

#[test]
fn node_chain_veto_fails_the_online_and_the_trace_shows_the_cancel_order() {
    let m = ml_memoryless_node("fault-node");
    m.ctl(&["notifier-trace"]);
    m.ctl(&[
        "fault",
        "add",
        "NODE_ADDING_FIRST_MEMORY",
        "-16",
        "once",
        "priority=50",
    ]);
    assert_eq!(online(&m, 32), Err(libc::EBUSY));
    assert_eq!(state(&m, 32), "offline\n");
    assert_eq!(m.read("sys/devices/system/node/has_memory"), "0\n");
    let trace: serde_json::Value = serde_json::from_str(&m.ctl(&["notifier-trace"])).unwrap();
    let events: Vec<(&str, &str)> = trace
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["chain"].as_str().unwrap(), c["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("node", "NODE_ADDING_FIRST_MEMORY"),
            ("memory", "MEM_CANCEL_ONLINE"),
            ("node", "NODE_CANCEL_ADDING_FIRST_MEMORY")
        ]
    );
    assert_eq!(trace[0]["arg"], serde_json::json!({"nid": 1}));
    // Mainline's memory_notify has no status fields.
    assert_eq!(
        trace[1]["arg"],
        serde_json::json!({"start_pfn": 0x100000, "nr_pages": 32768})
    );
    let vetoer = &trace[0]["consumers"][1];
    assert_eq!(vetoer["consumer"], "memhp_fault_inject");
    assert_eq!(vetoer["ret"], 0x8000 | (1 + 16));
    // The rule was once: the next online succeeds with the full sequence.
    assert_eq!(online(&m, 32), Ok(()));
    let trace: serde_json::Value = serde_json::from_str(&m.ctl(&["notifier-trace"])).unwrap();
    let events: Vec<&str> = trace
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "NODE_ADDING_FIRST_MEMORY",
            "MEM_GOING_ONLINE",
            "NODE_ADDED_FIRST_MEMORY",
            "MEM_ONLINE"
        ]
    );
    assert_eq!(m.read("sys/devices/system/node/has_memory"), "0-1\n");
}

#[test]
fn node_rule_on_6_1_is_refused_with_the_reason() {
    let m = machine("fault-node-61");
    let (_, err) = m.ctl_fails(&["fault", "add", "NODE_ADDING_FIRST_MEMORY", "-16"]);
    assert!(
        err.contains(
            "NODE_ADDING_FIRST_MEMORY needs the node notifier chain, which Linux 6.1 does not have"
        ),
        "{err}"
    );
    let (_, err) = m.ctl_fails(&["fault", "add", "NODE_BOGUS", "-16"]);
    assert!(
        err.contains("no notifier action 'NODE_BOGUS' (MEM_* or NODE_*)"),
        "{err}"
    );
}
