//! The worked examples of spec 01 §13, byte for byte through the sysfs tree.

use memhp_model::machine::{BuildConfig, E820Entry, E820Kind, MachineSpec, NodeSpec};
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System, ZoneType};
use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const M: &str = "sys/devices/system/memory";
const G: u64 = 1 << 30;

fn spec(ranges: &[(u64, u64)], cmdline: &str, hypervisor: bool) -> MachineSpec {
    MachineSpec {
        name: "example".into(),
        version: KernelVersion::V6_1,
        hypervisor,
        e820: ranges
            .iter()
            .map(|&(s, e)| E820Entry {
                start: s,
                end: e,
                kind: E820Kind::Usable,
            })
            .collect(),
        nodes: vec![NodeSpec {
            id: 0,
            cpus: vec![0],
            mem: vec![],
            hotplug: vec![],
            generic_initiator: false,
            pxm: None,
            hotplug_cpus: Vec::new(),
        }],
        cmdline: cmdline.into(),
        build: BuildConfig {
            memory_probe: true,
            ..BuildConfig::default()
        },
        dimm: None,
        virtio_mem: vec![],
        balloon: None,
        boot_alloc: Default::default(),
        acpi: None,
        hardware_name: None,
        distances: Vec::new(),
    }
}

/// §13.1's e820: `[0x1000, 0x9f000)`, `[0x100000, 0x80000000)`,
/// `[0x100000000, 0x180000000)`.
fn small_vm(cmdline: &str) -> SysfsTree {
    let s = spec(
        &[
            (0x1000, 0x9f000),
            (0x100000, 0x8000_0000),
            (0x1_0000_0000, 0x1_8000_0000),
        ],
        cmdline,
        true,
    );
    SysfsTree::new(Arc::new(Shared::new(System::boot(&s).unwrap())))
}

fn r(t: &SysfsTree, p: &str) -> String {
    String::from_utf8(t.read(p).unwrap()).unwrap()
}

fn w(t: &SysfsTree, p: &str, v: &str) -> Result<usize, Errno> {
    t.open(p, false, true)?;
    t.write(p, v.as_bytes(), &Cancel::new())
}

fn zone(t: &SysfsTree, z: ZoneType) -> (u64, u64) {
    t.shared().read(|s| {
        let z = s.nodes[&0].zone(z);
        (z.start_pfn, z.spanned)
    })
}

#[test]
fn small_vm_contig_zones_layout() {
    let t = small_vm("");
    assert_eq!(r(&t, &format!("{M}/block_size_bytes")), "8000000\n");
    let blocks: Vec<String> = t
        .readdir(M)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .filter(|n| n.starts_with("memory"))
        .collect();
    let expect: Vec<String> = (0..16)
        .chain(32..48)
        .map(|i| format!("memory{i}"))
        .collect();
    assert_eq!(blocks, expect);
    assert_eq!(r(&t, &format!("{M}/memory0/valid_zones")), "none\n");
    assert_eq!(r(&t, &format!("{M}/memory15/valid_zones")), "DMA32\n");
    assert_eq!(r(&t, &format!("{M}/memory32/valid_zones")), "Normal\n");
    assert_eq!(r(&t, &format!("{M}/memory47/phys_index")), "0000002f\n");
    assert_eq!(zone(&t, ZoneType::Dma), (1, 4095));
    // The spec's prose says DMA32 ends at 0x80000; Linux 6.1 clamps the node
    // span to the arch limit, so DMA32 spans up to 4 GiB when the node has
    // memory above it (the oracle's `movablecore` transcript shows this).
    assert_eq!(zone(&t, ZoneType::Dma32), (4096, 0x100000 - 4096));
    assert_eq!(zone(&t, ZoneType::Normal), (0x100000, 0x80000));
    for f in ["online", "has_memory", "has_normal_memory", "possible"] {
        assert_eq!(r(&t, &format!("sys/devices/system/node/{f}")), "0\n", "{f}");
    }
}

#[test]
fn small_vm_probe_online_movable_and_span_shrink() {
    let t = small_vm("");
    let probe = format!("{M}/probe");
    assert_eq!(w(&t, &probe, "0x180000000"), Ok(11));
    assert_eq!(r(&t, &format!("{M}/memory48/state")), "offline\n");
    assert_eq!(r(&t, &format!("{M}/memory48/online")), "0\n");
    assert_eq!(
        r(&t, &format!("{M}/memory48/valid_zones")),
        "Normal Movable\n"
    );
    assert_eq!(w(&t, &probe, "0x180000000"), Err(Errno::EEXIST));
    assert_eq!(w(&t, &probe, "0x180001000"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &probe, "foo"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &probe, "99999999999999999999999"), Err(Errno::ERANGE));
    let before = r(&t, "sys/devices/system/node/node0/meminfo");
    assert_eq!(
        w(&t, &format!("{M}/memory48/state"), "online_movable"),
        Ok(14)
    );
    assert_eq!(r(&t, &format!("{M}/memory48/valid_zones")), "Movable\n");
    assert_eq!(zone(&t, ZoneType::Movable), (0x180000, 0x8000));
    let total = |s: &str| {
        s.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(
        total(&r(&t, "sys/devices/system/node/node0/meminfo")) - total(&before),
        131072
    );
    assert_eq!(
        w(&t, &format!("{M}/memory48/state"), "online"),
        Err(Errno::EINVAL)
    );
    // memory50 online movable, then memory49 sits inside the Movable span.
    assert_eq!(w(&t, &probe, "0x190000000"), Ok(11));
    assert_eq!(
        w(&t, &format!("{M}/memory50/state"), "online_movable"),
        Ok(14)
    );
    assert_eq!(w(&t, &probe, "0x188000000"), Ok(11));
    assert_eq!(
        r(&t, &format!("{M}/memory49/valid_zones")),
        "Movable Normal\n"
    );
    assert_eq!(w(&t, &format!("{M}/memory48/state"), "offline"), Ok(7));
    assert_eq!(zone(&t, ZoneType::Movable), (0x190000, 0x8000));
    assert_eq!(
        r(&t, &format!("{M}/memory49/valid_zones")),
        "Normal Movable\n"
    );
    assert_eq!(w(&t, &format!("{M}/memory48/online"), "0"), Ok(1));
    assert_eq!(
        w(&t, &format!("{M}/memory48/state"), "offline"),
        Err(Errno::EINVAL)
    );
    // The failed `online` write latched MMOP_ONLINE (offline does not reset
    // it), so `echo 1 > online` picks the default zone: memory48 is outside
    // the Movable span now, hence Normal.
    assert_eq!(w(&t, &format!("{M}/memory48/online"), "1"), Ok(1));
    assert_eq!(r(&t, &format!("{M}/memory48/valid_zones")), "Normal\n");
}

#[test]
fn kernelcore_percent_small_vm() {
    let t = small_vm("kernelcore=50%");
    assert_eq!(zone(&t, ZoneType::Normal), (0x100000, 0x400));
    assert_eq!(zone(&t, ZoneType::Movable), (0x100400, 0x180000 - 0x100400));
    assert_eq!(r(&t, &format!("{M}/memory32/valid_zones")), "none\n");
    assert_eq!(r(&t, &format!("{M}/memory33/valid_zones")), "Movable\n");
    assert_eq!(r(&t, &format!("{M}/memory47/valid_zones")), "Movable\n");
    assert_eq!(r(&t, "sys/devices/system/node/has_normal_memory"), "0\n");
}

#[test]
fn kernelcore_percent_large_high_range() {
    let s = spec(
        &[
            (0x1000, 0x9f000),
            (0x100000, 0x8000_0000),
            (0x1_0000_0000, 0x2_8000_0000),
        ],
        "kernelcore=50%",
        true,
    );
    let t = SysfsTree::new(Arc::new(Shared::new(System::boot(&s).unwrap())));
    assert_eq!(zone(&t, ZoneType::Normal), (0x100000, 0x80400));
    assert_eq!(zone(&t, ZoneType::Movable), (0x180400, 0x280000 - 0x180400));
    assert_eq!(r(&t, &format!("{M}/memory48/valid_zones")), "none\n");
    assert_eq!(r(&t, &format!("{M}/memory49/valid_zones")), "Movable\n");
    assert_eq!(r(&t, &format!("{M}/memory79/valid_zones")), "Movable\n");
}

#[test]
fn movablecore_2g_empties_normal() {
    let t = small_vm("movablecore=2G");
    assert_eq!(zone(&t, ZoneType::Movable), (0x100000, 0x80000));
    assert_eq!(zone(&t, ZoneType::Normal).1, 0);
    assert_eq!(r(&t, &format!("{M}/memory32/valid_zones")), "Movable\n");
    assert_eq!(r(&t, "sys/devices/system/node/has_normal_memory"), "0\n");
}

#[test]
fn auto_movable_ratio_limits_movable_blocks_to_96() {
    // Exactly 4 GiB of boot kernel memory: [1 MiB, 4 GiB) minus 1 MiB plus
    // [4 GiB, 4 GiB + 1 MiB) keeps the early pages at 1048576... use one
    // range of exactly 4 GiB above 4 GiB plus tiny low memory excluded.
    let s = spec(
        &[(0x1_0000_0000, 0x2_0000_0000)],
        "memory_hotplug.online_policy=auto-movable",
        true,
    );
    let t = SysfsTree::new(Arc::new(Shared::new(System::boot(&s).unwrap())));
    let early: u64 = t
        .shared()
        .read(|s| s.nodes[&0].zones.iter().map(|z| z.present_early).sum());
    assert_eq!(early, 1048576);
    let mut movable = 0;
    for k in 0..100u64 {
        let addr = 0x2_0000_0000 + k * 0x800_0000;
        assert_eq!(w(&t, &format!("{M}/probe"), &format!("{addr:#x}")), Ok(11));
        let id = addr / 0x800_0000;
        let vz = r(&t, &format!("{M}/memory{id}/valid_zones"));
        assert_eq!(w(&t, &format!("{M}/memory{id}/state"), "online"), Ok(6));
        let z = r(&t, &format!("{M}/memory{id}/valid_zones"));
        if k < 96 {
            assert_eq!(
                (vz.as_str(), z.as_str()),
                ("Movable Normal\n", "Movable\n"),
                "block {k}"
            );
            movable += 1;
        } else {
            assert_eq!(
                (vz.as_str(), z.as_str()),
                ("Normal Movable\n", "Normal\n"),
                "block {k}"
            );
        }
    }
    assert_eq!(movable, 96);
}

#[test]
fn block_size_and_ids_at_scale() {
    let s = spec(
        &[(0x100000, 0x8000_0000), (0x1_0000_0000, 514 * G)],
        "",
        false,
    );
    let t = SysfsTree::new(Arc::new(Shared::new(System::boot(&s).unwrap())));
    assert_eq!(r(&t, &format!("{M}/block_size_bytes")), "80000000\n");
    assert_eq!(r(&t, &format!("{M}/memory2/phys_index")), "00000002\n");
    assert_eq!(w(&t, &format!("{M}/probe"), "0x8080000000"), Ok(12));
    assert_eq!(r(&t, &format!("{M}/memory257/phys_index")), "00000101\n");
    assert_eq!(
        w(&t, &format!("{M}/probe"), "0x8040000000"),
        Err(Errno::EINVAL)
    );
    let vm = spec(
        &[(0x100000, 0x8000_0000), (0x1_0000_0000, 514 * G + G / 2)],
        "",
        true,
    );
    let t = SysfsTree::new(Arc::new(Shared::new(System::boot(&vm).unwrap())));
    assert_eq!(r(&t, &format!("{M}/block_size_bytes")), "20000000\n");
}
