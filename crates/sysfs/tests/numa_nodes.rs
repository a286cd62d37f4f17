//! Node states of spec 01 §4.1 that depend on firmware (SRAT): generic
//! initiator nodes, and `movable_node` with hotpluggable boot ranges
//! (spec 01 §7.2 step 2), byte for byte through the sysfs tree.

use memhp_model::machine::{MachineSpec, QemuNuma, QemuPc};
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System, ZoneType};
use memhp_sysfs::vfs::{Cancel, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const N: &str = "sys/devices/system/node";
const M: &str = "sys/devices/system/memory";
const G: u64 = 1 << 30;

fn tree(spec: &MachineSpec) -> SysfsTree {
    SysfsTree::new(Arc::new(Shared::new(System::boot(spec).unwrap())))
}

fn r(t: &SysfsTree, p: &str) -> String {
    String::from_utf8(t.read(p).unwrap()).unwrap()
}

fn node(nodeid: u32, cpus: &[u32], mem: u64, generic_initiator: bool) -> QemuNuma {
    QemuNuma {
        nodeid,
        cpus: cpus.to_vec(),
        mem,
        generic_initiator,
    }
}

/// `add_memory` of plain System RAM (what the ACPI driver asks for).
fn add(t: &SysfsTree, nid: u32, start: u64, size: u64, memmap_on_memory: bool) {
    let req = memhp_model::hotadd::AddRequest::system_ram(nid, start, size, memmap_on_memory);
    t.shared().modify(|s| s.add_memory(&req)).unwrap();
}

fn states(t: &SysfsTree) -> Vec<(String, String)> {
    [
        "possible",
        "online",
        "has_normal_memory",
        "has_memory",
        "has_cpu",
        "has_generic_initiator",
    ]
    .iter()
    .map(|f| (f.to_string(), r(t, &format!("{N}/{f}"))))
    .collect()
}

fn expect(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn generic_initiator_only_node_is_online_but_has_no_cpu_or_memory() {
    let mut q = QemuPc {
        smp: 2,
        ..QemuPc::default()
    };
    q.numa = vec![
        node(0, &[0], G, false),
        node(1, &[1], 0, false),
        node(2, &[], 0, true),
    ];
    let t = tree(&q.machine("", KernelVersion::V6_1).unwrap());
    assert_eq!(
        states(&t),
        expect(&[
            ("possible", "0-2\n"),
            ("online", "0-2\n"),
            ("has_normal_memory", "0\n"),
            ("has_memory", "0\n"),
            ("has_cpu", "0-1\n"),
            ("has_generic_initiator", "2\n"),
        ])
    );
    let mut dirs: Vec<String> = t
        .readdir(N)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .filter(|n| n.starts_with("node"))
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["node0", "node1", "node2"]);
    assert_eq!(r(&t, &format!("{N}/node2/cpulist")), "\n");
    // Distances to every online node, the generic initiator's included.
    assert_eq!(r(&t, &format!("{N}/node2/distance")), "20 20 10\n");
}

#[test]
fn generic_initiator_on_a_node_with_cpus_and_memory_only_adds_the_state() {
    let q = QemuPc {
        numa: vec![node(0, &[0], G, true)],
        ..QemuPc::default()
    };
    let t = tree(&q.machine("", KernelVersion::Mainline).unwrap());
    assert_eq!(
        states(&t),
        expect(&[
            ("possible", "0\n"),
            ("online", "0\n"),
            ("has_normal_memory", "0\n"),
            ("has_memory", "0\n"),
            ("has_cpu", "0\n"),
            ("has_generic_initiator", "0\n"),
        ])
    );
}

#[test]
fn without_generic_initiators_the_mask_is_empty() {
    let t = tree(&QemuPc::default().machine("", KernelVersion::V6_1).unwrap());
    assert_eq!(r(&t, &format!("{N}/has_generic_initiator")), "\n");
}

/// Two nodes of 2 GiB each (node 1 at 4 GiB..6 GiB declared hotpluggable in
/// SRAT), node 0's RAM also declared hotpluggable, DIMM region after RAM.
const TWO_NODES: &str = r#"
name = "srat-hotplug"
version = "6.1"
hypervisor = true
e820 = [
  { start = 0x0, end = 0x9fc00, kind = "usable" },
  { start = 0x9fc00, end = 0xa0000, kind = "reserved" },
  { start = 0xf0000, end = 0x100000, kind = "reserved" },
  { start = 0x100000, end = 0x7ffe0000, kind = "usable" },
  { start = 0x7ffe0000, end = 0x80000000, kind = "reserved" },
  { start = 0x100000000, end = 0x200000000, kind = "usable" },
]
[[nodes]]
id = 0
cpus = [0]
mem = [[0x0, 0x80000000], [0x100000000, 0x180000000]]
hotplug = [[0x100000000, 0x180000000]]
[[nodes]]
id = 1
cpus = [1]
mem = [[0x180000000, 0x200000000]]
hotplug = [[0x180000000, 0x200000000], [0x200000000, 0x300000000]]
[dimm]
slots = 2
base = 0x200000000
size = 0x100000000
"#;

fn two_nodes(cmdline: &str) -> SysfsTree {
    let mut spec = MachineSpec::from_toml(TWO_NODES).unwrap();
    spec.cmdline = cmdline.into();
    tree(&spec)
}

fn zone_of(t: &SysfsTree, nid: u32, z: ZoneType) -> (u64, u64, u64, u64) {
    t.shared().read(|s| {
        let z = s.nodes[&nid].zone(z);
        (z.start_pfn, z.spanned, z.present, z.managed)
    })
}

#[test]
fn movable_node_puts_hotpluggable_boot_ram_of_kernel_free_nodes_in_zone_movable() {
    let t = two_nodes("movable_node");
    // Node 0 holds the kernel image: its hotplug flag is cleared, no Movable.
    assert_eq!(zone_of(&t, 0, ZoneType::Movable), (0, 0, 0, 0));
    assert_eq!(zone_of(&t, 0, ZoneType::Normal).0, 0x100000);
    // Node 1 is all Movable, and nothing of it was allocated at boot (its
    // memmap lives on node 0): managed == present.
    assert_eq!(
        zone_of(&t, 1, ZoneType::Movable),
        (0x180000, 0x80000, 0x80000, 0x80000)
    );
    assert_eq!(zone_of(&t, 1, ZoneType::Normal), (0, 0, 0, 0));
    assert_eq!(r(&t, &format!("{N}/has_normal_memory")), "0\n");
    assert_eq!(r(&t, &format!("{N}/has_memory")), "0-1\n");
    // Boot blocks of node 1 (48..63) are Movable and can go Normal only
    // where they adjoin nothing: valid_zones lists only Movable.
    assert_eq!(r(&t, &format!("{M}/memory48/valid_zones")), "Movable\n");
    assert_eq!(r(&t, &format!("{M}/memory63/valid_zones")), "Movable\n");
    assert_eq!(r(&t, &format!("{M}/memory47/valid_zones")), "Normal\n");

    // Without movable_node the hotplug flags change nothing.
    let plain = two_nodes("");
    assert_eq!(zone_of(&plain, 1, ZoneType::Movable), (0, 0, 0, 0));
    assert_eq!(zone_of(&plain, 1, ZoneType::Normal).0, 0x180000);
    assert_eq!(r(&plain, &format!("{N}/has_normal_memory")), "0-1\n");
}

#[test]
fn movable_node_makes_hot_added_memory_default_to_movable() {
    let t = two_nodes("movable_node memhp_default_state=offline");
    add(&t, 1, 0x200000000, 256 << 20, false);
    // Block 64 follows node 1's Movable zone: default Movable first.
    assert_eq!(
        r(&t, &format!("{M}/memory64/valid_zones")),
        "Movable Normal\n"
    );
    t.open(&format!("{M}/memory64/online"), false, true)
        .unwrap();
    t.write(&format!("{M}/memory64/online"), b"1", &Cancel::new())
        .unwrap();
    assert_eq!(r(&t, &format!("{M}/memory64/valid_zones")), "Movable\n");
    assert_eq!(zone_of(&t, 1, ZoneType::Movable).1, 0x88000);

    // Without movable_node the same block defaults to the kernel zone.
    let plain = two_nodes("memhp_default_state=offline");
    add(&plain, 1, 0x200000000, 128 << 20, false);
    assert_eq!(
        r(&plain, &format!("{M}/memory64/valid_zones")),
        "Normal Movable\n"
    );
}

#[test]
fn qemu_srat_marks_only_the_dimm_region_hotpluggable() {
    // QEMU's build_srat: boot RAM entries are "enabled" only; the device
    // memory region is "enabled | hot pluggable" on the last node.
    let spec = QemuPc::default()
        .machine(
            "movable_node memhp_default_state=offline",
            KernelVersion::V6_1,
        )
        .unwrap();
    assert_eq!(spec.nodes[0].hotplug, [(0x1_0000_0000, 0x2_c000_0000)]);
    let t = tree(&spec);
    assert_eq!(zone_of(&t, 0, ZoneType::Movable), (0, 0, 0, 0));
    assert_eq!(r(&t, &format!("{M}/memory7/valid_zones")), "DMA32\n");
    add(&t, 0, 0x1_0000_0000, 128 << 20, false);
    // Beyond every zone: movable_node picks Movable as the default.
    assert_eq!(
        r(&t, &format!("{M}/memory32/valid_zones")),
        "Movable Normal\n"
    );
}
