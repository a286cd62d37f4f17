//! `@hotadd` with other devices and backends, as QEMU 7.2 and the 6.1
//! guest answered them (`conformance/behaviour/hotadd-drivers`,
//! `vmem-hotplug`, `vmem-hotplug-pci`): memfd backs a DIMM like RAM, a file
//! backend needs a file, NVDIMMs are off on the pc machine, and a
//! virtio-mem device can be hot-plugged (not unplugged): the guest's PCI
//! hotplug enumerates it, and it works once `virtio_pci` and `virtio_mem`
//! are loaded, in either order.

use memhp_drivers::host::{Host, HostCommand, HostError};
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;

fn host() -> Host {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=8G").unwrap();
    Host::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap()
}

fn hotadd(h: &Host, id: &str, size: u64, driver: &str, backend: &str) -> Result<(), HostError> {
    h.execute(&HostCommand::HotaddDevice {
        id: id.into(),
        size,
        node: None,
        addr: None,
        driver: driver.into(),
        backend: backend.into(),
    })
    .map(|_| ())
}

fn klog(h: &Host) -> Vec<String> {
    h.shared.modify(|s| s.events.take_klog())
}

fn load(h: &Host, module: &str) {
    h.execute(&HostCommand::LoadModule {
        name: module.into(),
    })
    .unwrap();
}

#[test]
fn backends_and_drivers_qemu_refuses_add_nothing() {
    let h = host();
    hotadd(&h, "d1", 256 << 20, "pc-dimm", "memory-backend-memfd").unwrap();
    let err = |id, driver, backend| {
        hotadd(&h, id, 256 << 20, driver, backend)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("d2", "pc-dimm", "memory-backend-file"),
        "Parameter 'mem-path' is missing"
    );
    assert_eq!(
        err("d3", "nvdimm", "memory-backend-ram"),
        "nvdimm is not enabled: missing 'nvdimm' in '-M'"
    );
    assert_eq!(
        err("d4", "bogus", "memory-backend-ram"),
        "'bogus' is not a valid device model name"
    );
    let ids: Vec<String> = h.dimms.list().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["d1"]);
    assert_eq!(h.dimms.list()[0].addr, 0x1_0000_0000);
    assert!(h
        .shared
        .read(|s| s.blocks.contains_key(&33) && !s.blocks.contains_key(&34)));
}

/// Hot-plugged before the transport is loaded: enumerated (the BAR goes to
/// the 64-bit window), bound and probed when the modules come.
#[test]
fn virtio_mem_hot_plugged_before_its_modules_works_once_they_are_loaded() {
    let h = host();
    klog(&h);
    hotadd(&h, "vm0", 1 << 30, "virtio-mem-pci", "memory-backend-ram").unwrap();
    assert_eq!(
        klog(&h),
        [
            "pci 0000:00:02.0: [1af4:1058] type 00 class 0x00ff00",
            "pci 0000:00:02.0: BAR 4 [mem 0x00000000-0x00003fff 64bit pref]",
            "pci 0000:00:02.0: BAR 4 [mem 0x3c0000000-0x3c0003fff 64bit pref]: assigned",
        ]
    );
    // virtio_mem alone: no transport, no virtio device, nothing probes.
    load(&h, "virtio_mem");
    assert!(klog(&h).is_empty());
    let r = h.execute(&HostCommand::VmemResize {
        id: "vm0".into(),
        size: 256 << 20,
    });
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(h.vmem.list()[0].plugged, 0);
    load(&h, "virtio_pci");
    let log = klog(&h);
    assert_eq!(
        log[0],
        "virtio-pci 0000:00:02.0: enabling device (0000 -> 0002)"
    );
    assert_eq!(log[1], "ACPI: \\_SB_.LNKB: Enabled at IRQ 10");
    assert_eq!(log[2], "virtio_mem virtio0: start address: 0x100000000");
    assert!(log.contains(&"virtio_mem virtio0: requested size: 0x10000000".to_string()));
    assert_eq!(h.vmem.list()[0].plugged, 256 << 20);
    assert!(h
        .shared
        .read(|s| s.blocks.contains_key(&32) && s.blocks.contains_key(&33)));
}

/// With both modules loaded a hot-plugged device is bound and probed at
/// once; the next one takes the next slot, link, BAR and `virtioN`, and its
/// region follows the first one's. Neither can be unplugged.
#[test]
fn virtio_mem_hot_plugged_with_its_modules_loaded_probes_at_once() {
    let h = host();
    load(&h, "virtio_pci");
    load(&h, "virtio_mem");
    hotadd(&h, "vm0", 1 << 30, "virtio-mem-pci", "memory-backend-ram").unwrap();
    klog(&h);
    hotadd(&h, "vm1", 1 << 30, "virtio-mem-pci", "memory-backend-ram").unwrap();
    let log = klog(&h);
    assert_eq!(
        &log[..6],
        [
            "pci 0000:00:03.0: [1af4:1058] type 00 class 0x00ff00",
            "pci 0000:00:03.0: BAR 4 [mem 0x00000000-0x00003fff 64bit pref]",
            "pci 0000:00:03.0: BAR 4 [mem 0x3c0004000-0x3c0007fff 64bit pref]: assigned",
            "virtio-pci 0000:00:03.0: enabling device (0000 -> 0002)",
            "ACPI: \\_SB_.LNKC: Enabled at IRQ 11",
            "virtio_mem virtio1: start address: 0x140000000",
        ]
    );
    h.execute(&HostCommand::VmemResize {
        id: "vm1".into(),
        size: 512 << 20,
    })
    .unwrap();
    assert!(h
        .shared
        .read(|s| (40..44).all(|b| s.blocks.contains_key(&b))));
    // Its BAR, claimed by the transport, in the 64-bit window.
    let iomem = h.shared.modify(|s| {
        s.iomem
            .find_mut(|r| r.name == "0000:00:03.0")
            .map(|r| (r.start, r.children[0].name.clone()))
    });
    assert_eq!(iomem, Some((0x3_c000_4000, "virtio-pci-modern".into())));
    // A DIMM goes after both regions.
    hotadd(&h, "d1", 256 << 20, "pc-dimm", "memory-backend-ram").unwrap();
    assert_eq!(h.dimms.list()[0].addr, 0x1_8000_0000);
    assert_eq!(
        h.execute(&HostCommand::Unplug { id: "vm0".into() })
            .unwrap_err()
            .to_string(),
        "virtio based memory devices cannot be unplugged."
    );
}
