//! The oracle's `virtio-mem` run: a 2 GiB virtio-mem region with 2 MiB
//! device blocks on a 1 GiB `pc` machine, resized 256M → 300M → 128M → 0.

use memhp_drivers::virtio_mem::VirtioMemDevices;
use memhp_model::machine::{QemuPc, VirtioMemSpec};
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System, ZoneType};
use memhp_sysfs::render;

fn setup() -> (std::sync::Arc<Shared>, VirtioMemDevices) {
    let vm0 = VirtioMemSpec {
        id: "vm0".into(),
        node: 0,
        region_size: 2 << 30,
        block_size: 2 << 20,
        requested_size: 0,
    };
    boot_with_devices("1G,maxmem=4G", vec![vm0])
}

/// A `pc` machine with `devices`, their PCI functions assigned by the
/// firmware, neither driver loaded.
fn boot_with_devices(
    mem: &str,
    devices: Vec<VirtioMemSpec>,
) -> (std::sync::Arc<Shared>, VirtioMemDevices) {
    let mut q = QemuPc::default();
    q.parse_mem_option(mem).unwrap();
    q.virtio_mem = devices;
    let spec = q
        .machine("memhp_default_state=online_movable", KernelVersion::V6_1)
        .unwrap();
    let mut sys = System::boot(&spec).unwrap();
    let cold = memhp_drivers::pci_firmware::cold_slots(spec.virtio_mem.len(), None);
    memhp_drivers::pci_firmware::assign(&mut sys, &cold);
    let slots: Vec<u32> = cold.iter().map(|f| f.slot).collect();
    let devs = VirtioMemDevices::new(&spec.virtio_mem, &slots, spec.dimm.unwrap().base);
    (std::sync::Arc::new(Shared::new(sys)), devs)
}

fn movable(s: &Shared) -> (u64, u64, u64, u64) {
    s.read(|s| {
        let z = s.nodes[&0].zone(ZoneType::Movable);
        (z.start_pfn, z.spanned, z.present, z.managed)
    })
}

fn ram_lines(s: &Shared) -> Vec<String> {
    s.read(render::proc_iomem)
        .lines()
        .filter(|l| l.contains("virtio") || l.contains("System RAM"))
        .map(String::from)
        .collect()
}

#[test]
fn driver_probe_logs_the_device_geometry() {
    let (s, d) = setup();
    d.load_transport(&s);
    d.load_driver(&s);
    let log = s.modify(|s| s.events.take_klog());
    assert_eq!(
        log,
        vec![
            "virtio_mem virtio0: start address: 0x100000000",
            "virtio_mem virtio0: region size: 0x80000000",
            "virtio_mem virtio0: device block size: 0x200000",
            "virtio_mem virtio0: nid: 0",
            "virtio_mem virtio0: memory block size: 0x8000000",
            "virtio_mem virtio0: subblock size: 0x200000",
            "virtio_mem virtio0: plugged size: 0x0",
            "virtio_mem virtio0: requested size: 0x0",
        ]
    );
}

#[test]
fn resize_plugs_partial_blocks_and_unplugs_from_the_top() {
    let (s, d) = setup();
    d.load_transport(&s);
    d.load_driver(&s);
    s.modify(|s| s.events.take_klog());
    assert_eq!(d.resize(&s, "vm0", 256 << 20).unwrap().size, 256 << 20);
    let log = s.modify(|s| s.events.take_klog());
    assert_eq!(
        &log[..2],
        [
            "virtio_mem virtio0: plugged size: 0x0",
            "virtio_mem virtio0: requested size: 0x10000000"
        ]
    );
    assert_eq!(
        log[3],
        "Built 1 zonelists, mobility grouping on.  Total pages: 245235"
    );
    assert_eq!(movable(&s), (1048576, 65536, 65536, 65536));
    assert_eq!(
        ram_lines(&s),
        vec![
            "00001000-0009fbff : System RAM",
            "00100000-3ffdffff : System RAM",
            "    febfc000-febfffff : virtio-pci-modern",
            "100000000-17fffffff : virtio0",
            "  100000000-10fffffff : System RAM (virtio_mem)",
        ]
    );
    d.resize(&s, "vm0", 300 << 20).unwrap();
    assert_eq!(movable(&s), (1048576, 98304, 98304, 76800));
    assert_eq!(
        ram_lines(&s)[4],
        "  100000000-117ffffff : System RAM (virtio_mem)"
    );
    d.resize(&s, "vm0", 128 << 20).unwrap();
    assert_eq!(movable(&s), (1048576, 32768, 32768, 32768));
    assert_eq!(
        s.read(|s| s
            .blocks
            .keys()
            .copied()
            .filter(|&b| b >= 32)
            .collect::<Vec<_>>()),
        vec![32]
    );
    d.resize(&s, "vm0", 0).unwrap();
    assert_eq!(movable(&s), (0, 0, 0, 0));
    assert_eq!(ram_lines(&s).len(), 4);
    assert!(d.resize(&s, "vm0", 3 << 20).is_err());
    assert!(d.resize(&s, "vm0", 4 << 30).is_err());
    assert!(d.resize(&s, "nope", 0).is_err());
}

/// Unplugging an online block in Sub Block Mode fake-offlines all of it in
/// one shot, then offlines and removes it; when that offline fails
/// (MEM_GOING_OFFLINE injected), the block stays online and fully
/// unplugged, and the device still reaches its size (6.1,
/// `conformance/behaviour/virtio-mem-inject`: one injected failure per
/// block, size 0, Movable managed 0).
#[test]
fn a_failing_offline_leaves_the_unplugged_block_online_without_managed_pages() {
    let (s, d) = setup();
    d.load_transport(&s);
    d.load_driver(&s);
    d.resize(&s, "vm0", 256 << 20).unwrap();
    s.modify(|s| {
        s.load_injector(0);
        s.injection.going_offline = -16;
        s.events.take_klog();
    });
    assert_eq!(d.resize(&s, "vm0", 0).unwrap().size, 0);
    let log = s.modify(|s| s.events.take_klog());
    let injected = log
        .iter()
        .filter(|l| *l == "Injecting error (-16) to MEM_GOING_OFFLINE")
        .count();
    assert_eq!(injected, 2, "{log:?}");
    assert_eq!(movable(&s), (1048576, 65536, 65536, 0));
    s.read(|s| {
        for id in [32, 33] {
            assert_eq!(s.blocks[&id].state, memhp_model::BlockState::Online);
        }
    });
}

/// Shrinking takes ZONE_MOVABLE blocks before a kernel block, and of a
/// kernel block whose memory is busy only the free sub-blocks (6.1's unplug
/// order; the guest in `conformance/behaviour/auto-movable-virtio-mem` kept
/// its one Normal block, busy with a slab page, and gave up Movable blocks
/// instead).
#[test]
fn shrinking_takes_movable_blocks_first_and_of_a_busy_kernel_block_its_free_sub_blocks() {
    use memhp_model::block::OnlineType;
    use memhp_model::workload::{PageKind, Placement};
    let (s, d) = setup();
    d.load_transport(&s);
    d.load_driver(&s);
    d.resize(&s, "vm0", 384 << 20).unwrap();
    // memory32 back online as kernel memory, with an unmovable page.
    s.modify(|s| {
        assert_eq!(
            s.device_offline_nowait(32),
            Ok(memhp_model::DeviceOutcome::Changed)
        );
        s.blocks.get_mut(&32).unwrap().online_type = OnlineType::OnlineKernel;
        s.device_online(32).unwrap();
        s.alloc_pages(Placement::Block(32), PageKind::Unmovable, 1)
            .unwrap();
    });
    assert_eq!(d.resize(&s, "vm0", 128 << 20).unwrap().size, 128 << 20);
    s.read(|s| {
        assert!(s.blocks.contains_key(&32), "the kernel block stays");
        assert!(!s.blocks.contains_key(&33) && !s.blocks.contains_key(&34));
    });
    // Then the kernel block gives its free sub-blocks, the highest first,
    // and keeps the two its kernel pages are in (as the guest recorded in
    // `conformance/behaviour/virtio-mem-offline` kept 4 MiB).
    assert_eq!(d.resize(&s, "vm0", 0).unwrap().size, 4 << 20);
    s.read(|s| {
        assert_eq!(s.blocks[&32].state, memhp_model::BlockState::Online);
        assert_eq!(s.node(0).unwrap().zone(ZoneType::Normal).managed, 1024);
    });
}

#[test]
fn driver_load_probes_every_device_before_the_first_plugs() {
    let devices = ["vm0", "vm1"]
        .into_iter()
        .map(|id| VirtioMemSpec {
            id: id.into(),
            node: 0,
            region_size: 1 << 30,
            block_size: 2 << 20,
            requested_size: 128 << 20,
        })
        .collect();
    let (s, d) = boot_with_devices("1G,maxmem=8G", devices);
    d.load_transport(&s);
    s.modify(|s| s.events.take_klog());
    d.load_driver(&s);
    let log = s.modify(|s| s.events.take_klog());
    let last_probe_line = log
        .iter()
        .rposition(|l| l == "virtio_mem virtio1: requested size: 0x8000000")
        .expect("virtio1 probed");
    let first_hotadd = log
        .iter()
        .position(|l| l.starts_with("Fallback order") || l.starts_with("Built "))
        .expect("the first plug builds the zonelists");
    assert!(last_probe_line < first_hotadd, "{log:#?}");
    assert_eq!(d.resize(&s, "vm1", 128 << 20).unwrap().size, 128 << 20);
}
