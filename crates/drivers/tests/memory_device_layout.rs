//! Where QEMU puts memory devices in the device memory region: a DIMM
//! goes to the first fit after what other memory devices hold (6.1 guest
//! under QEMU 7.2, `conformance/behaviour/auto-movable-virtio-mem`: with a
//! 4 GiB virtio-mem device at 0x100000000, a 512 MiB DIMM lands at
//! 0x200000000).

use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::{QemuPc, VirtioMemSpec};
use memhp_model::KernelVersion;

#[test]
fn a_dimm_is_placed_after_the_virtio_mem_region() {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=8G").unwrap();
    q.virtio_mem = vec![VirtioMemSpec {
        id: "vm0".into(),
        node: 0,
        region_size: 4 << 30,
        block_size: 2 << 20,
        requested_size: 0,
    }];
    let h = Host::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    assert_eq!(h.vmem.list()[0].addr, 0x1_0000_0000);
    h.execute(&HostCommand::Hotadd {
        id: "d1".into(),
        size: 512 << 20,
        node: Some(0),
        addr: None,
    })
    .unwrap();
    assert_eq!(h.dimms.list()[0].addr, 0x2_0000_0000);
    let overlap = h.execute(&HostCommand::Hotadd {
        id: "d2".into(),
        size: 128 << 20,
        node: Some(0),
        addr: Some(0x1_8000_0000),
    });
    assert!(overlap.is_err(), "{overlap:?}");
}

/// Memory devices may plug `maxmem` − `-m` in all, virtio-mem regions
/// included, whatever room the region's per-slot slack leaves; a free slot
/// is looked for first (QEMU 7.2, `conformance/behaviour/hotadd-errors`).
#[test]
fn dimms_beyond_maxmem_are_refused_after_the_slot_check() {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=2,maxmem=2G").unwrap();
    let h = Host::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    let add = |id: &str, size: u64| {
        h.execute(&HostCommand::Hotadd {
            id: id.into(),
            size,
            node: Some(0),
            addr: None,
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        add("big", 2 << 30),
        Err(
            "not enough space, currently 0x0 in use of total space for memory devices 0x40000000"
                .into()
        )
    );
    assert_eq!(add("d1", 512 << 20), Ok(()));
    assert_eq!(
        add("d2", 640 << 20),
        Err("not enough space, currently 0x20000000 in use of total space for memory devices 0x40000000".into())
    );
    assert_eq!(add("d2", 512 << 20), Ok(()));
    assert_eq!(add("d3", 128 << 20), Err("no free slots available".into()));
    assert!(h.dimms.list().len() == 2);
}

/// What a guest's `/proc/modules` (and `lsmod`) shows after loading the
/// virtio transport and the injector: the most recent first, each with the
/// loaded modules that use it (a recorded 6.1 guest, `lsmod`).
#[test]
fn proc_modules_lists_loaded_modules_with_their_users() {
    let q = QemuPc::default();
    let h = Host::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    for m in ["memory-notifier-error-inject", "virtio_pci"] {
        h.execute(&HostCommand::LoadModule { name: m.into() })
            .unwrap();
    }
    let text = h.shared.read(memhp_sysfs::render::proc_modules);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split(' ').take(5).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "virtio_pci 24576 0 - Live",
            "virtio 20480 1 virtio_pci, Live",
            "virtio_pci_legacy_dev 16384 1 virtio_pci, Live",
            "virtio_pci_modern_dev 20480 1 virtio_pci, Live",
            "virtio_ring 49152 2 virtio_pci,virtio, Live",
            "memory_notifier_error_inject 16384 0 - Live",
            "notifier_error_inject 16384 1 memory_notifier_error_inject, Live",
        ]
    );
    h.execute(&HostCommand::UnloadModule {
        name: "memory_notifier_error_inject".into(),
    })
    .unwrap();
    let text = h.shared.read(memhp_sysfs::render::proc_modules);
    assert!(
        text.ends_with("notifier_error_inject 16384 0 - Live 0x0000000000000000\n"),
        "{text}"
    );
}
