//! `insmod virtio_pci` on a QEMU pc guest: the virtio PCI devices sit in
//! slots 2, 3, ... in argument order, and each new interrupt link they use
//! is enabled once ("ACPI: \_SB_.LNKx: Enabled at IRQ n", SeaBIOS routing
//! LNKA–LNKD to IRQs 10, 10, 11, 11; recorded with one device on LNKB).

use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::{QemuPc, VirtioBalloonSpec, VirtioMemSpec};
use memhp_model::KernelVersion;

fn host(vmem: usize, balloon: bool) -> Host {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,maxmem=8G").unwrap();
    q.virtio_mem = (0..vmem)
        .map(|i| VirtioMemSpec {
            id: format!("vm{i}"),
            node: 0,
            region_size: 1 << 30,
            block_size: 2 << 20,
            requested_size: 0,
        })
        .collect();
    q.balloon = balloon.then(|| VirtioBalloonSpec {
        id: Some("b".into()),
        pci_index: vmem as u32,
    });
    Host::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap()
}

fn links_enabled(h: &Host) -> Vec<String> {
    h.execute(&HostCommand::LoadModule {
        name: "virtio_pci".into(),
    })
    .unwrap();
    h.shared.modify(|s| s.events.take_klog())
}

#[test]
fn each_virtio_pci_device_enables_its_slots_interrupt_link() {
    assert_eq!(links_enabled(&host(0, false)), Vec::<String>::new());
    assert_eq!(
        links_enabled(&host(0, true)),
        ["ACPI: \\_SB_.LNKB: Enabled at IRQ 10"]
    );
    assert_eq!(
        links_enabled(&host(1, true)),
        [
            "ACPI: \\_SB_.LNKB: Enabled at IRQ 10",
            "ACPI: \\_SB_.LNKC: Enabled at IRQ 11"
        ]
    );
    // Slot 5 wraps round to LNKA.
    assert_eq!(
        links_enabled(&host(3, true)),
        [
            "ACPI: \\_SB_.LNKB: Enabled at IRQ 10",
            "ACPI: \\_SB_.LNKC: Enabled at IRQ 11",
            "ACPI: \\_SB_.LNKD: Enabled at IRQ 11",
            "ACPI: \\_SB_.LNKA: Enabled at IRQ 10"
        ]
    );
}
