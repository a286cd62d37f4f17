//! The `hotadd-online-offline` oracle flow, through the sysfs tree: exact
//! bytes and errnos as Linux 6.1 produced them.

use memhp_drivers::acpi::AcpiDimms;
use memhp_model::machine::QemuPc;
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System};
use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const M: &str = "sys/devices/system/memory";

fn machine(cmdline: &str) -> (SysfsTree, AcpiDimms) {
    let spec = QemuPc::default()
        .machine(cmdline, KernelVersion::V6_1)
        .unwrap();
    let dimms = AcpiDimms::new(spec.dimm);
    let sys = System::boot(&spec).unwrap();
    (SysfsTree::new(Arc::new(Shared::new(sys))), dimms)
}

fn r(t: &SysfsTree, p: &str) -> String {
    String::from_utf8(t.read(p).unwrap()).unwrap()
}

fn w(t: &SysfsTree, p: &str, v: &str) -> Result<usize, Errno> {
    t.open(p, false, true)?;
    t.write(p, v.as_bytes(), &Cancel::new())
}

fn zone(t: &SysfsTree, name: &str) -> (u64, u64, u64, u64) {
    t.shared().read(|s| {
        let z = s.nodes[&0]
            .zones
            .iter()
            .zip(memhp_model::ZoneType::ALL)
            .find(|(_, t)| t.name() == name)
            .unwrap()
            .0;
        (z.start_pfn, z.spanned, z.present, z.managed)
    })
}

#[test]
fn hotadd_512m_dimm_lands_at_4g_as_offline_normal_movable_blocks() {
    let (t, d) = machine("memhp_default_state=offline");
    let rep = d
        .hotadd(t.shared(), "dimm1", 512 << 20, (Some(0), None), &[])
        .unwrap();
    assert_eq!(rep.dimm.addr, 0x1_0000_0000);
    for b in 32..36 {
        assert_eq!(r(&t, &format!("{M}/memory{b}/state")), "offline\n");
        assert_eq!(r(&t, &format!("{M}/memory{b}/online")), "0\n");
        assert_eq!(
            r(&t, &format!("{M}/memory{b}/valid_zones")),
            "Normal Movable\n"
        );
    }
    assert_eq!(
        r(&t, "proc/iomem")
            .lines()
            .filter(|l| l.contains("System RAM"))
            .collect::<Vec<_>>(),
        vec![
            "00001000-0009fbff : System RAM",
            "00100000-3ffdffff : System RAM",
            "100000000-11fffffff : System RAM"
        ]
    );
    assert_eq!(
        t.lookup(&format!("{M}/memory32/firmware_node")),
        Some(memhp_sysfs::vfs::EntryKind::Symlink {
            target: "../../../LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00".into()
        })
    );
}

#[test]
fn invalid_writes_on_an_offline_block_match_the_kernel() {
    let (t, d) = machine("memhp_default_state=offline");
    d.hotadd(t.shared(), "dimm1", 512 << 20, (Some(0), None), &[])
        .unwrap();
    let s = format!("{M}/memory32/state");
    let o = format!("{M}/memory32/online");
    assert_eq!(w(&t, &s, "foo"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &s, ""), Ok(0));
    assert_eq!(w(&t, &s, "online "), Err(Errno::EINVAL));
    assert_eq!(w(&t, &s, "ONLINE"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &s, "offline"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &s, "offline\n"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &o, "0"), Ok(1));
    assert_eq!(w(&t, &o, "2"), Err(Errno::EINVAL));
    assert_eq!(w(&t, &o, "foo"), Ok(3));
    assert_eq!(
        w(&t, &format!("{M}/memory32/valid_zones"), "Normal"),
        Err(Errno::EACCES)
    );
    assert_eq!(
        w(&t, &format!("{M}/memory32/phys_index"), "1"),
        Err(Errno::EACCES)
    );
    assert_eq!(
        w(&t, &format!("{M}/memory32/removable"), "0"),
        Err(Errno::EACCES)
    );
    assert_eq!(r(&t, &s), "offline\n");
}

#[test]
fn first_normal_block_is_busy_the_others_offline() {
    let (t, d) = machine("memhp_default_state=offline");
    d.hotadd(t.shared(), "dimm1", 512 << 20, (Some(0), None), &[])
        .unwrap();
    for b in 32..36 {
        assert_eq!(w(&t, &format!("{M}/memory{b}/state"), "online"), Ok(6));
        assert_eq!(r(&t, &format!("{M}/memory{b}/valid_zones")), "Normal\n");
    }
    assert_eq!(zone(&t, "Normal"), (1048576, 131072, 131072, 131072));
    assert_eq!(
        r(&t, "sys/devices/system/node/node0/meminfo")
            .lines()
            .next()
            .unwrap(),
        "Node 0 MemTotal:        1441728 kB"
    );
    let s = format!("{M}/memory32/state");
    for v in [
        "online",
        "online\n",
        "online_kernel",
        "online_movable",
        "foo",
    ] {
        assert_eq!(w(&t, &s, v), Err(Errno::EINVAL), "{v:?}");
    }
    assert_eq!(w(&t, &format!("{M}/memory32/online"), "1"), Ok(1));
    assert_eq!(w(&t, &s, "offline"), Err(Errno::EBUSY));
    for b in 33..36 {
        assert_eq!(w(&t, &format!("{M}/memory{b}/state"), "offline"), Ok(7));
        assert_eq!(
            r(&t, &format!("{M}/memory{b}/valid_zones")),
            "Normal Movable\n"
        );
    }
    assert_eq!(zone(&t, "Normal"), (1048576, 32768, 32768, 32768));
    // The stale online_movable type latched by the failed write above.
    assert_eq!(w(&t, &s, "online_movable"), Err(Errno::EINVAL));
    let rep = d.unplug(t.shared(), "dimm1").unwrap();
    assert!(!rep.deleted);
    let log = t.shared().modify(|s| s.events.take_klog());
    assert!(
        log.contains(&"memory memory32: Offline failed.".to_string()),
        "{log:?}"
    );
}

#[test]
fn movable_blocks_between_movable_blocks_default_to_movable() {
    let (t, d) = machine("memhp_default_state=offline");
    d.hotadd(t.shared(), "dimm1", 512 << 20, (Some(0), None), &[])
        .unwrap();
    w(&t, &format!("{M}/memory32/state"), "online").unwrap();
    d.hotadd(t.shared(), "dimm2", 512 << 20, (Some(0), None), &[])
        .unwrap();
    for b in 36..40 {
        assert_eq!(
            w(&t, &format!("{M}/memory{b}/state"), "online_movable"),
            Ok(14)
        );
    }
    assert_eq!(zone(&t, "Movable"), (1179648, 131072, 131072, 131072));
    assert_eq!(w(&t, &format!("{M}/memory37/state"), "offline"), Ok(7));
    assert_eq!(
        r(&t, &format!("{M}/memory37/valid_zones")),
        "Movable Normal\n"
    );
    assert_eq!(
        w(&t, &format!("{M}/memory37/state"), "online_kernel"),
        Ok(13)
    );
    assert_eq!(zone(&t, "Normal"), (1048576, 196608, 65536, 65536));
    assert_eq!(zone(&t, "Movable"), (1179648, 131072, 98304, 98304));
    w(&t, &format!("{M}/memory37/state"), "offline").unwrap();
    assert_eq!(w(&t, &format!("{M}/memory37/state"), "online"), Ok(6));
    assert_eq!(r(&t, &format!("{M}/memory37/valid_zones")), "Movable\n");
    assert_eq!(zone(&t, "Normal"), (1048576, 32768, 32768, 32768));
    for b in 36..40 {
        assert_eq!(w(&t, &format!("{M}/memory{b}/state"), "offline"), Ok(7));
    }
    assert_eq!(zone(&t, "Movable"), (0, 0, 0, 0));
    let rep = d.unplug(t.shared(), "dimm2").unwrap();
    assert!(rep.deleted);
    assert!(t.lookup(&format!("{M}/memory36")).is_none());
}
