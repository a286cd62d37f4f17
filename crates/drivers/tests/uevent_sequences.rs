//! The uevent sequences of spec 01 §10.2 (A–H), through the host side
//! (ACPI DIMMs), the sysfs store and the locked hotplug operations.

mod common;

use common::uevents;
use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::QemuPc;
use memhp_model::workload::{PageKind, Placement};
use memhp_model::KernelVersion;
use memhp_sysfs::vfs::{Cancel, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

/// 1 GiB on node 0 (CPU 0); with `node1`, a second node with neither CPU
/// nor memory (possible, offline until memory is added to it).
fn host(cmdline: &str, node1: bool) -> Host {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    if node1 {
        q = q.with_nodes(&[(&[0], 1 << 30), (&[], 0)]);
    }
    Host::boot(&q.machine(cmdline, KernelVersion::V6_1).unwrap()).unwrap()
}

fn hotadd(h: &Host, node: u32) {
    h.execute(&HostCommand::Hotadd {
        id: "d1".into(),
        size: 256 << 20,
        node: Some(node),
        addr: None,
    })
    .unwrap();
}

fn unplug(h: &Host) -> bool {
    h.execute(&HostCommand::Unplug { id: "d1".into() })
        .unwrap()
        .events
        .iter()
        .any(|e| e.name() == "DEVICE_DELETED")
}

/// The uevents of a 256 MiB hot-add to `node`.
fn hotadd_events(cmdline: &str, node1: bool, node: u32) -> (Host, Vec<String>) {
    let h = host(cmdline, node1);
    let mut seen = 0;
    uevents(&h, &mut seen);
    hotadd(&h, node);
    let evs = uevents(&h, &mut seen);
    (h, evs)
}

#[test]
fn a_hot_add_with_auto_online_off_sends_only_add_events() {
    let (_, evs) = hotadd_events("memhp_default_state=offline", false, 0);
    assert_eq!(evs, ["add memory32", "add memory33"]);
}

#[test]
fn b_with_auto_online_the_online_events_follow_the_adds() {
    let (_, evs) = hotadd_events("memhp_default_state=online", false, 0);
    assert_eq!(
        evs,
        [
            "add memory32",
            "add memory33",
            "online memory32",
            "online memory33"
        ]
    );
}

#[test]
fn c_first_memory_of_a_new_node_adds_the_node_before_onlining() {
    assert!(!host("", true).shared.read(|s| s.nodes[&1].online));
    let (h, evs) = hotadd_events("memhp_default_state=online", true, 1);
    assert_eq!(
        evs,
        [
            "add memory32",
            "add memory33",
            "add node1",
            "online memory32",
            "online memory33"
        ]
    );
    assert!(h.shared.read(|s| s.nodes[&1].has_memory));
}

#[test]
fn d_and_e_a_udev_style_online_then_offline_success_and_failure() {
    let h = host("memhp_default_state=offline", false);
    let tree = SysfsTree::new(Arc::clone(&h.shared));
    let mut seen = 0;
    uevents(&h, &mut seen);
    hotadd(&h, 0);
    assert_eq!(uevents(&h, &mut seen), ["add memory32", "add memory33"]);
    let write = |block: u64, v: &str| {
        tree.write(
            &format!("sys/devices/system/memory/memory{block}/state"),
            v.as_bytes(),
            &Cancel::default(),
        )
    };
    assert_eq!(write(33, "online_movable"), Ok(14));
    assert_eq!(uevents(&h, &mut seen), ["online memory33"]);
    assert_eq!(write(33, "offline"), Ok(7));
    assert_eq!(uevents(&h, &mut seen), ["offline memory33"]);
    write(33, "online_kernel").unwrap();
    h.shared
        .modify(|s| s.alloc_pages(Placement::Block(33), PageKind::Unmovable, 1))
        .unwrap();
    uevents(&h, &mut seen);
    assert!(write(33, "offline").is_err());
    assert_eq!(uevents(&h, &mut seen), Vec::<String>::new());
}

/// A DIMM hot-added to the empty node 1, then ejected: whether QEMU
/// deleted it, the eject's uevents, the host and the seqnum seen.
fn eject_events(cmdline: &str) -> (bool, Vec<String>, Host, u64) {
    let h = host(cmdline, true);
    hotadd(&h, 1);
    let mut seen = 0;
    uevents(&h, &mut seen);
    let deleted = unplug(&h);
    let evs = uevents(&h, &mut seen);
    (deleted, evs, h, seen)
}

#[test]
fn f_removing_the_last_memory_of_a_cpuless_node_removes_the_node() {
    let (deleted, evs, _, _) = eject_events("memhp_default_state=offline");
    assert!(deleted);
    assert_eq!(evs, ["remove memory32", "remove memory33", "remove node1"]);
}

#[test]
fn g_eject_offlines_then_removes_or_rolls_back_the_offlined_blocks() {
    let (deleted, evs, h, mut seen) = eject_events("memhp_default_state=online_movable");
    assert!(deleted);
    assert_eq!(
        evs,
        [
            "offline memory32",
            "offline memory33",
            "remove memory32",
            "remove memory33",
            "remove node1"
        ]
    );
    // A pinned page keeps memory33 online: memory32 goes offline, comes
    // back online, nothing is removed.
    hotadd(&h, 1);
    h.shared
        .modify(|s| s.alloc_pages(Placement::Block(33), PageKind::Pinned, 1))
        .unwrap();
    uevents(&h, &mut seen);
    assert!(!unplug(&h));
    assert_eq!(
        uevents(&h, &mut seen),
        ["offline memory32", "online memory32"]
    );
}

#[test]
fn h_offline_and_remove_memory_rolls_back_the_first_block_when_the_second_fails() {
    let h = host("memhp_default_state=online_movable", false);
    hotadd(&h, 0);
    h.shared
        .modify(|s| s.alloc_pages(Placement::Block(33), PageKind::Pinned, 1))
        .unwrap();
    let mut seen = 0;
    uevents(&h, &mut seen);
    let (start, size) = (32u64 << 27, 2u64 << 27);
    assert!(h
        .shared
        .lock_hotplug()
        .offline_and_remove_memory(start, size)
        .is_err());
    assert_eq!(
        uevents(&h, &mut seen),
        ["offline memory32", "online memory32"]
    );
    assert_eq!(
        h.shared.read(|s| s.blocks[&32].zone),
        Some(memhp_model::ZoneType::Movable)
    );
}
