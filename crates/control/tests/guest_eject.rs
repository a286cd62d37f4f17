//! The ACPI memory devices of a pc machine's DIMM slots in the guest's
//! tree, and an eject the guest starts by writing to a slot's `eject` file,
//! as Linux 6.1 under QEMU did it (recorded: `acpi-dir`, `acpi-bus`,
//! `acpi-eject` in conformance/behaviour).

use memhp_control::guest_tree;
use memhp_drivers::host::{Host, HostCommand};
use memhp_drivers::HostEvent;
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;
use memhp_sysfs::vfs::{Cancel, EntryKind, Errno, Tree};
use std::sync::Arc;

const M: &str = "sys/devices/system/memory";
const D: &str = "sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04";

/// 1 GiB, 4 slots, two 256 MiB DIMMs: memory32-33 in slot 0, 34-35 in 1.
fn machine() -> (Arc<Host>, Arc<memhp_sysfs::SysfsTree>) {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=8G").unwrap();
    let host = Arc::new(Host::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap());
    for id in ["dimm1", "dimm2"] {
        host.execute(&HostCommand::Hotadd {
            id: id.into(),
            size: 256 << 20,
            node: None,
            addr: None,
        })
        .unwrap();
    }
    let tree = guest_tree(&host);
    (host, tree)
}

fn read(t: &dyn Tree, p: &str) -> Result<String, Errno> {
    t.read(p).map(|b| String::from_utf8(b).unwrap())
}

fn write(t: &dyn Tree, p: &str, v: &str) -> Result<usize, Errno> {
    t.open(p, false, true)?;
    t.write(p, v.as_bytes(), &Cancel::new())
}

fn names(t: &dyn Tree, p: &str) -> Vec<String> {
    t.readdir(p).unwrap().into_iter().map(|e| e.0).collect()
}

#[test]
fn slot_devices_link_to_their_blocks_and_report_whether_a_dimm_is_in() {
    let (_, t) = machine();
    assert_eq!(
        names(&*t, D).join(" "),
        "PNP0C80:00 PNP0C80:01 PNP0C80:02 PNP0C80:03 hid modalias path physical_node power status subsystem uevent uid"
    );
    assert_eq!(
        names(&*t, &format!("{D}/PNP0C80:01")).join(" "),
        "eject hid modalias path physical_node physical_node1 power status subsystem uevent uid"
    );
    assert_eq!(
        t.lookup(&format!("{D}/PNP0C80:01/physical_node1")),
        Some(EntryKind::Symlink {
            target: "../../../../system/memory/memory35".into()
        })
    );
    // The block's firmware_node leads there: no dangling link.
    assert_eq!(
        t.lookup(&format!("{M}/memory34/firmware_node")),
        Some(EntryKind::Symlink {
            target: "../../../LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:01".into()
        })
    );
    assert_eq!(
        read(&*t, &format!("{D}/PNP0C80:01/path")).unwrap(),
        "\\_SB_.MHPC.MP01\n"
    );
    assert_eq!(read(&*t, &format!("{D}/PNP0C80:01/uid")).unwrap(), "0x01\n");
    assert_eq!(
        read(&*t, &format!("{D}/PNP0C80:01/status")).unwrap(),
        "15\n"
    );
    assert_eq!(read(&*t, &format!("{D}/PNP0C80:02/status")).unwrap(), "0\n");
    assert_eq!(
        read(&*t, &format!("{D}/PNP0C80:01/uevent")).unwrap(),
        "MODALIAS=acpi:PNP0C80:\n"
    );
    assert_eq!(read(&*t, &format!("{D}/uid")).unwrap(), "DIMM devices\n");
    assert_eq!(read(&*t, &format!("{D}/status")).unwrap(), "11\n");
    assert_eq!(names(&*t, "sys/bus/container/devices"), ["PNP0A06:04"]);
    assert_eq!(
        read(&*t, "sys/devices/system/container/PNP0A06:04/online").unwrap(),
        "1\n"
    );
    assert_eq!(
        t.open(&format!("{D}/PNP0C80:00/eject"), true, false),
        Err(Errno::EACCES)
    );
}

#[test]
fn eject_refuses_anything_but_1_and_slots_without_a_dimm() {
    let (_, t) = machine();
    assert_eq!(
        write(&*t, &format!("{D}/PNP0C80:00/eject"), "0"),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        write(&*t, &format!("{D}/PNP0C80:00/eject"), "2"),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        write(&*t, &format!("{D}/PNP0C80:02/eject"), "1"),
        Err(Errno::ENODEV)
    );
    assert!(t.lookup(&format!("{M}/memory32")).is_some());
}

#[test]
fn guest_eject_removes_an_offlineable_dimm_and_qemu_deletes_it() {
    let (host, t) = machine();
    write(&*t, &format!("{M}/memory32/state"), "online_movable").unwrap();
    assert_eq!(write(&*t, &format!("{D}/PNP0C80:00/eject"), "1"), Ok(1));
    assert!(t.lookup(&format!("{M}/memory32")).is_none());
    assert!(t.lookup(&format!("{M}/memory33")).is_none());
    assert_eq!(read(&*t, &format!("{D}/PNP0C80:00/status")).unwrap(), "0\n");
    assert!(!names(&*t, &format!("{D}/PNP0C80:00")).contains(&"physical_node".to_string()));
    // `acpi_generic_hotplug_event`'s (3, 0x84), QEMU's deletion at _EJ0,
    // then the guest's (0x103, 0) on a slot that names no device (as the
    // recorded `query-acpi-ospm-status` shows, other-build/ospm-status).
    assert_eq!(
        host.take_async_events(),
        [
            HostEvent::AcpiOst {
                device: Some("dimm1".into()),
                slot: 0,
                source: 3,
                status: 0x84
            },
            HostEvent::DeviceDeleted {
                device: "dimm1".into()
            },
            HostEvent::AcpiOst {
                device: None,
                slot: 0,
                source: 0x103,
                status: 0
            }
        ]
    );
    assert_eq!(host.dimms.list().len(), 1);
    // The slot is free for the next DIMM, and its device empty again.
    assert_eq!(
        write(&*t, &format!("{D}/PNP0C80:00/eject"), "1"),
        Err(Errno::ENODEV)
    );
}

/// A block in ZONE_NORMAL that holds kernel pages cannot be offlined: the eject puts back online
/// what it had offlined (with the default online type: the movable block
/// comes back in ZONE_NORMAL) and reports the failure to QEMU; the write
/// itself succeeds.
#[test]
fn failed_guest_eject_puts_blocks_back_and_reports_busy() {
    let (host, t) = machine();
    write(&*t, &format!("{M}/memory34/state"), "online_kernel").unwrap();
    write(&*t, &format!("{M}/memory35/state"), "online_movable").unwrap();
    // The first ZONE_NORMAL block holds kernel pages from its online on
    // (the recorded guest's slab page at pfn 0x110000).
    assert_eq!(
        write(&*t, &format!("{M}/memory34/state"), "offline"),
        Err(Errno::EBUSY)
    );
    assert_eq!(write(&*t, &format!("{D}/PNP0C80:01/eject"), "1"), Ok(1));
    for (file, want) in [
        (format!("{M}/memory34/state"), "online\n"),
        (format!("{M}/memory35/state"), "online\n"),
        (format!("{M}/memory35/valid_zones"), "Normal\n"),
        (format!("{D}/PNP0C80:01/status"), "15\n"),
    ] {
        assert_eq!(read(&*t, &file).unwrap(), want, "{file}");
    }
    assert_eq!(
        host.take_async_events(),
        [
            HostEvent::AcpiOst {
                device: Some("dimm2".into()),
                slot: 1,
                source: 3,
                status: 0x84
            },
            HostEvent::AcpiOst {
                device: Some("dimm2".into()),
                slot: 1,
                source: 0x103,
                status: 0x82
            }
        ]
    );
    let klog = host.shared.modify(|s| s.events.take_klog());
    assert_eq!(
        klog.iter()
            .filter(|l| *l == "memory memory34: Offline failed.")
            .count(),
        1,
        "{klog:#?}"
    );
    // The container cannot go offline while a DIMM's block is online.
    assert_eq!(
        write(&*t, "sys/devices/system/container/PNP0A06:04/online", "0"),
        Err(Errno::EBUSY)
    );
}
