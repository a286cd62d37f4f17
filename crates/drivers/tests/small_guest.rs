//! 128 GiB hot-added into a 512 MiB `qemu-pc` guest (kata runtime#1244,
//! #2872): the memmap of 128 GiB (2 GiB) cannot come out of 512 MiB, so
//! 6.1's ACPI driver logs "add_memory failed" and creates no block, while
//! _OST still reports success; mainline's per-block memmap_on_memory
//! hosts the memmap on the new memory itself and succeeds.

use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;

fn small_guest(cmdline: &str, version: KernelVersion) -> Host {
    let mut q = QemuPc::default();
    q.parse_mem_option("512M,slots=4,maxmem=200G").unwrap();
    Host::boot(&q.machine(cmdline, version).unwrap()).unwrap()
}

/// `device_add` of the 128 GiB DIMM `big` on node 0.
fn hotadd_128g(host: &Host) -> memhp_drivers::host::HostReply {
    host.execute(&HostCommand::Hotadd {
        id: "big".into(),
        size: 128 << 30,
        node: Some(0),
        addr: None,
    })
    .unwrap()
}

#[test]
fn hot_add_of_128g_fails_for_the_memmap_budget_on_6_1() {
    let host = small_guest("memhp_default_state=online", KernelVersion::V6_1);
    let before = host.shared.read(|s| s.blocks.len());
    let rep = hotadd_128g(&host);
    assert_eq!(
        rep.events[0].data()["info"]["status"],
        0,
        "_OST still reports success"
    );
    assert_eq!(
        host.shared.read(|s| s.blocks.len()),
        before,
        "no block was created"
    );
    let log = host.shared.modify(|s| s.events.take_klog());
    assert_eq!(
        log,
        [
            "acpi PNP0C80:00: add_memory failed",
            "acpi PNP0C80:00: acpi_memory_enable_device() error",
        ],
    );
}

#[test]
fn memmap_on_memory_does_not_help_a_multi_block_dimm_on_6_1() {
    let host = small_guest(
        "memhp_default_state=online memory_hotplug.memmap_on_memory=1",
        KernelVersion::V6_1,
    );
    let before = host.shared.read(|s| s.blocks.len());
    hotadd_128g(&host);
    assert_eq!(host.shared.read(|s| s.blocks.len()), before);
}

#[test]
fn mainline_memmap_on_memory_hot_adds_and_onlines_all_1024_blocks() {
    let host = small_guest(
        "memhp_default_state=online_movable memory_hotplug.memmap_on_memory=1",
        KernelVersion::Mainline,
    );
    hotadd_128g(&host);
    let (online, vmemmap) = host.shared.read(|s| {
        let hot: Vec<_> = s.blocks.values().filter(|b| !b.early).collect();
        (
            hot.iter()
                .filter(|b| b.state == memhp_model::BlockState::Online)
                .count(),
            hot.iter().all(|b| b.nr_vmemmap_pages == 512),
        )
    });
    assert_eq!(online, 1024);
    assert!(vmemmap);
}
