//! The PCI and virtio buses through a real `memhp mount` of a qemu-pc
//! machine with a virtio-mem device and a balloon (slots 2 and 3): what a
//! 6.1 guest under QEMU 7.2 showed before and after `virtio_pci` and the
//! drivers were loaded, and a virtio-mem device hot-plugged afterwards
//! (`conformance/other-build/pci-sysfs*`).

mod common;

use common::Machine;
use std::os::unix::fs::MetadataExt;

fn names(m: &Machine, rel: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m.root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn target(m: &Machine, rel: &str) -> String {
    std::fs::read_link(m.root.join(rel))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn virtio_functions_gain_driver_and_virtio_device_when_the_transport_binds() {
    let m = Machine::mount(
        "pci-sysfs",
        &[
            "--mem",
            "1G,slots=4,maxmem=8G",
            "--virtio-mem",
            "id=vm0,size=1G,requested-size=256M",
            "--balloon",
        ],
    );
    let f = "sys/devices/pci0000:00/0000:00:02.0";
    assert_eq!(
        names(&m, "sys/bus/pci/devices"),
        [
            "0000:00:00.0",
            "0000:00:01.0",
            "0000:00:01.1",
            "0000:00:01.3",
            "0000:00:02.0",
            "0000:00:03.0"
        ]
    );
    assert_eq!(
        target(&m, "sys/bus/pci/devices/0000:00:02.0"),
        "../../../devices/pci0000:00/0000:00:02.0"
    );
    // No virtio bus before virtio.ko.
    assert!(!m.root.join("sys/bus/virtio").exists());
    assert_eq!(m.read(&format!("{f}/irq")), "10\n");
    assert_eq!(m.read(&format!("{f}/enable")), "0\n");
    assert_eq!(m.read(&format!("{f}/power_state")), "unknown\n");
    assert_eq!(
        m.read(&format!("{f}/resource")).lines().nth(4).unwrap(),
        "0x00000000febf8000 0x00000000febfbfff 0x000000000014220c"
    );
    let config = std::fs::read(m.root.join(format!("{f}/config"))).unwrap();
    assert_eq!(config.len(), 256);
    assert_eq!(
        &config[..8],
        &[0xf4, 0x1a, 0x58, 0x10, 0x03, 0x01, 0x10, 0x00]
    );
    let meta = std::fs::metadata(m.root.join(format!("{f}/resource4"))).unwrap();
    assert_eq!((meta.size(), meta.mode() & 0o777), (16384, 0o600));
    assert!(m.root.join(format!("{f}/waiting_for_supplier")).exists());
    // The IDE controller's bus-master range follows the balloon's BAR 0.
    assert_eq!(
        m.read("sys/devices/pci0000:00/0000:00:01.1/resource")
            .lines()
            .nth(4)
            .unwrap(),
        "0x000000000000c040 0x000000000000c04f 0x0000000000040101"
    );
    // A write-only file refuses reads; a rescan parses its number.
    assert_eq!(
        std::fs::read(m.root.join("sys/bus/pci/rescan"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EACCES)
    );
    assert_eq!(m.write("sys/bus/pci/rescan", "1"), Ok(()));
    assert_eq!(m.write("sys/bus/pci/rescan", "x"), Err(libc::EINVAL));

    m.ctl(&["module-load", "virtio_pci"]);
    assert!(names(&m, "sys/bus/pci/drivers").contains(&"virtio-pci".to_string()));
    assert_eq!(
        target(&m, &format!("{f}/driver")),
        "../../../bus/pci/drivers/virtio-pci"
    );
    assert!(!m.root.join(format!("{f}/waiting_for_supplier")).exists());
    assert_eq!(
        m.read(&format!("{f}/uevent")).lines().next().unwrap(),
        "DRIVER=virtio-pci"
    );
    assert_eq!(names(&m, "sys/bus/virtio/devices"), ["virtio0", "virtio1"]);
    // Bound by the transport only: ACKNOWLEDGE, no features.
    assert_eq!(m.read(&format!("{f}/virtio0/status")), "0x00000001\n");
    m.ctl(&["module-load", "virtio_mem"]);
    assert_eq!(m.read(&format!("{f}/virtio0/status")), "0x0000000f\n");
    assert_eq!(
        m.read(&format!("{f}/virtio0/features")),
        "1000000000000000000000000000110010000000100000000000000000000000\n"
    );
    assert_eq!(
        m.read(&format!("{f}/virtio0/uevent")),
        "DRIVER=virtio_mem\nMODALIAS=virtio:d00000018v00001AF4\n"
    );
    assert_eq!(
        target(&m, "sys/bus/virtio/drivers/virtio_mem/virtio0"),
        "../../../../devices/pci0000:00/0000:00:02.0/virtio0"
    );

    // Hot-plugged after a balloon took virtio1: the next index is 2.
    m.ctl(&["hotadd", "vm1", "1G", "driver=virtio-mem-pci"]);
    assert_eq!(
        names(&m, "sys/bus/virtio/devices"),
        ["virtio0", "virtio1", "virtio2"]
    );
    let hot = "sys/devices/pci0000:00/0000:00:04.0";
    assert_eq!(m.read(&format!("{hot}/irq")), "11\n");
    assert!(!m.root.join(format!("{hot}/waiting_for_supplier")).exists());
    let config = std::fs::read(m.root.join(format!("{hot}/config"))).unwrap();
    assert_eq!(&config[4..6], &[0x06, 0x00]);
}
