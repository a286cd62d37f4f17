//! virtio-mem in Big Block Mode: a 4 GiB region with 1 GiB device blocks
//! (larger than the 128 MiB memory block) on a 1 GiB `pc` machine; and BBM
//! forced on 2 MiB device blocks through the module parameters.

mod common;

use common::uevents;
use memhp_drivers::host::{Host, HostCommand};
use memhp_drivers::virtio_mem::Mode;
use memhp_drivers::HostEvent;
use memhp_model::machine::{QemuPc, VirtioMemSpec};
use memhp_model::pages::PageState;
use memhp_model::system::GroupKind;
use memhp_model::workload::{PageKind, Placement};
use memhp_model::{BlockState, KernelVersion, ZoneType};
use memhp_sysfs::render;

const G: u64 = 1 << 30;

fn host(cmdline: &str, block_size: u64) -> Host {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,maxmem=8G").unwrap();
    q.virtio_mem = vec![VirtioMemSpec {
        id: "vm0".into(),
        node: 0,
        region_size: 4 * G,
        block_size,
        requested_size: 0,
    }];
    let h = Host::boot(&q.machine(cmdline, KernelVersion::V6_1).unwrap()).unwrap();
    for m in ["virtio_pci", "virtio_mem"] {
        h.execute(&HostCommand::LoadModule { name: m.into() })
            .unwrap();
    }
    h
}

fn resize(h: &Host, size: u64) -> Vec<HostEvent> {
    h.execute(&HostCommand::VmemResize {
        id: "vm0".into(),
        size,
    })
    .unwrap()
    .events
}

fn klog(h: &Host) -> Vec<String> {
    h.shared.modify(|s| s.events.take_klog())
}

fn movable(h: &Host) -> (u64, u64, u64, u64) {
    h.shared.read(|s| {
        let z = s.nodes[&0].zone(ZoneType::Movable);
        (z.start_pfn, z.spanned, z.present, z.managed)
    })
}

fn vmem_iomem(h: &Host) -> Vec<String> {
    h.shared
        .read(render::proc_iomem)
        .lines()
        .filter(|l| l.contains("virtio0") || l.contains("(virtio_mem)"))
        .map(String::from)
        .collect()
}

fn blocks(from: u64, to: u64, action: &str) -> Vec<String> {
    (from..=to).map(|i| format!("{action} memory{i}")).collect()
}

fn size_change(size: u64) -> Vec<HostEvent> {
    vec![HostEvent::MemoryDeviceSizeChange {
        device: "vm0".into(),
        size,
    }]
}

#[test]
fn device_blocks_larger_than_a_memory_block_select_big_block_mode() {
    let h = host("memhp_default_state=online_movable", G);
    let log = klog(&h);
    let probe: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("virtio_mem"))
        .collect();
    assert_eq!(
        probe,
        [
            "virtio_mem virtio0: start address: 0x100000000",
            "virtio_mem virtio0: region size: 0x100000000",
            "virtio_mem virtio0: device block size: 0x40000000",
            "virtio_mem virtio0: nid: 0",
            "virtio_mem virtio0: memory block size: 0x8000000",
            "virtio_mem virtio0: big block size: 0x40000000",
            "virtio_mem virtio0: plugged size: 0x0",
            "virtio_mem virtio0: requested size: 0x0",
        ]
    );
    let d = &h.vmem.list()[0];
    assert_eq!(d.mode, Some(Mode::Bbm { bb_size: G }));
    // The dynamic memory group's unit is a big block.
    assert_eq!(
        h.shared
            .read(|s| s.groups.values().map(|g| g.kind).collect::<Vec<_>>()),
        [GroupKind::Dynamic {
            unit_pages: G >> 12
        }]
    );
}

#[test]
fn plug_adds_whole_big_blocks_and_unplug_removes_movable_ones_from_the_top() {
    let h = host("memhp_default_state=online_movable", G);
    let mut seen = h.shared.read(|s| s.events.seqnum);
    klog(&h);
    assert_eq!(resize(&h, 2 * G), size_change(2 * G));
    // One add_memory_driver_managed per big block: its 8 blocks are
    // added, then auto-onlined, before the next big block.
    assert_eq!(
        uevents(&h, &mut seen),
        [
            blocks(32, 39, "add"),
            blocks(32, 39, "online"),
            blocks(40, 47, "add"),
            blocks(40, 47, "online"),
        ]
        .concat()
    );
    assert_eq!(
        klog(&h)[..2],
        [
            "virtio_mem virtio0: plugged size: 0x0",
            "virtio_mem virtio0: requested size: 0x80000000"
        ]
    );
    // Nothing of a big block stays PageOffline: present == managed.
    assert_eq!(movable(&h), (0x100000, 0x80000, 0x80000, 0x80000));
    assert_eq!(
        vmem_iomem(&h),
        [
            "100000000-1ffffffff : virtio0",
            "  100000000-17fffffff : System RAM (virtio_mem)",
        ]
    );
    assert_eq!(h.vmem.list()[0].plugged, 2 * G);

    // Half a big block cannot be unplugged: the request is refused.
    assert!(h
        .execute(&HostCommand::VmemResize {
            id: "vm0".into(),
            size: G / 2,
        })
        .is_err());

    assert_eq!(resize(&h, G), size_change(G));
    assert_eq!(
        uevents(&h, &mut seen),
        [blocks(40, 47, "offline"), blocks(40, 47, "remove")].concat()
    );
    assert_eq!(movable(&h), (0x100000, 0x40000, 0x40000, 0x40000));
    assert_eq!(
        vmem_iomem(&h),
        [
            "100000000-1ffffffff : virtio0",
            "  100000000-13fffffff : System RAM (virtio_mem)",
        ]
    );
    assert_eq!(resize(&h, 0), size_change(0));
    assert_eq!(
        uevents(&h, &mut seen),
        [blocks(32, 39, "offline"), blocks(32, 39, "remove")].concat()
    );
    assert_eq!(movable(&h), (0, 0, 0, 0));
    assert_eq!(vmem_iomem(&h), ["100000000-1ffffffff : virtio0"]);
}

#[test]
fn offline_big_blocks_are_unplugged_before_online_ones() {
    let h = host("memhp_default_state=online_movable", G);
    resize(&h, 2 * G);
    // Take the lower big block offline by hand.
    h.shared.modify(|s| {
        for id in 32..40 {
            s.device_offline_nowait(id).unwrap();
        }
    });
    let mut seen = h.shared.read(|s| s.events.seqnum);
    assert_eq!(resize(&h, G), size_change(G));
    assert_eq!(uevents(&h, &mut seen), blocks(32, 39, "remove"));
    assert_eq!(
        vmem_iomem(&h)[1],
        "  140000000-17fffffff : System RAM (virtio_mem)"
    );
    // Plugging again reuses the lowest free big block.
    resize(&h, 2 * G);
    assert_eq!(
        uevents(&h, &mut seen),
        [blocks(32, 39, "add"), blocks(32, 39, "online")].concat()
    );
}

#[test]
fn a_big_block_with_pinned_pages_is_kept_and_another_one_goes() {
    let h = host("memhp_default_state=online_movable", G);
    resize(&h, 2 * G);
    h.shared.modify(|s| {
        s.alloc_pages(Placement::Block(44), PageKind::Pinned, 10)
            .unwrap()
    });
    let mut seen = h.shared.read(|s| s.events.seqnum);
    assert_eq!(resize(&h, G), size_change(G));
    // The top big block is busy (alloc_contig_range cannot migrate pinned
    // pages): skipped with nothing offlined; the lower one goes instead.
    assert_eq!(
        uevents(&h, &mut seen),
        [blocks(32, 39, "offline"), blocks(32, 39, "remove")].concat()
    );
    // Nothing else can go: the size stays at 1 GiB.
    assert_eq!(resize(&h, 0), size_change(G));
    assert_eq!(uevents(&h, &mut seen), Vec::<String>::new());
    assert_eq!(h.vmem.list()[0].plugged, G);
    assert_eq!(
        h.shared.read(|s| (s.blocks[&44].state, s.blocks[&44].zone)),
        (BlockState::Online, Some(ZoneType::Movable))
    );
}

/// Onlined to ZONE_NORMAL, the kernel uses big blocks for itself: the
/// upper one gets an unmovable allocation, the lower one holds the upper
/// one's memmap (and the first block more kernel data).
fn kernel_busy(cmdline: &str) -> (Host, u64) {
    let h = host(cmdline, G);
    resize(&h, 2 * G);
    h.shared.modify(|s| {
        s.alloc_pages(Placement::Block(44), PageKind::Unmovable, 10)
            .unwrap()
    });
    assert_eq!(
        h.shared
            .read(|s| s.blocks[&39].pages.count(PageState::Unmovable)),
        4096
    );
    let seen = h.shared.read(|s| s.events.seqnum);
    (h, seen)
}

#[test]
fn safe_unplug_refuses_busy_kernel_big_blocks_without_offlining_anything() {
    let (h, mut seen) = kernel_busy("memhp_default_state=online_kernel");
    assert_eq!(resize(&h, G), size_change(2 * G));
    assert_eq!(uevents(&h, &mut seen), Vec::<String>::new());
}

#[test]
fn unsafe_unplug_offlines_until_a_block_refuses_then_rolls_back() {
    let (h, mut seen) =
        kernel_busy("memhp_default_state=online_kernel virtio_mem.bbm_safe_unplug=0");
    assert_eq!(resize(&h, G), size_change(2 * G));
    // offline_and_remove_memory of the upper big block: blocks 40..43 go
    // offline, 44 refuses, they come back online; the lower big block
    // fails at its first block.
    assert_eq!(
        uevents(&h, &mut seen),
        [blocks(40, 43, "offline"), blocks(40, 43, "online")].concat()
    );
}

#[test]
fn module_parameters_force_big_blocks_and_set_their_size() {
    let h = host(
        "memhp_default_state=online_movable virtio_mem.force_bbm=1 virtio_mem.bbm_block_size=0x20000000",
        2 << 20,
    );
    let log = klog(&h);
    assert!(log.contains(&"virtio_mem virtio0: big block size: 0x20000000".to_string()));
    assert_eq!(h.vmem.list()[0].mode, Some(Mode::Bbm { bb_size: G / 2 }));
    let mut seen = h.shared.read(|s| s.events.seqnum);
    // 700 MiB: one 512 MiB big block fits, the rest stays unplugged.
    assert_eq!(resize(&h, 700 << 20), size_change(G / 2));
    assert_eq!(
        uevents(&h, &mut seen),
        [blocks(32, 35, "add"), blocks(32, 35, "online")].concat()
    );

    let h = host(
        "virtio_mem.force_bbm=1 virtio_mem.bbm_block_size=3M virtio_mem.bbm_block_size=0x300000",
        2 << 20,
    );
    let log = klog(&h);
    assert!(log.contains(&"virtio_mem virtio0: bbm_block_size is not a power of 2".to_string()));
    assert!(log.contains(&"virtio_mem: `3M' invalid for parameter `bbm_block_size'".to_string()));
    assert_eq!(
        h.vmem.list()[0].mode,
        Some(Mode::Bbm { bb_size: 128 << 20 })
    );
}

#[test]
fn adding_stops_at_the_offline_threshold_while_nothing_is_onlined() {
    // Auto-online off: 4 GiB requested, but at most 2 big blocks (the
    // threshold is max(1 GiB, two big blocks)) are added while offline.
    let h = host("memhp_default_state=offline", G);
    assert_eq!(resize(&h, 4 * G), size_change(2 * G));
    assert_eq!(
        h.shared
            .read(|s| s.blocks.range(32..).map(|(&id, _)| id).collect::<Vec<_>>()),
        (32..48).collect::<Vec<_>>()
    );
}

#[test]
fn onlining_added_memory_lets_the_driver_plug_the_rest_by_itself() {
    let h = host("memhp_default_state=offline", G);
    assert_eq!(resize(&h, 4 * G), size_change(2 * G));
    // The guest onlines what was added: MEM_ONLINE in the device's range
    // wakes the driver's workqueue, which adds the next big blocks.
    for id in 32..48 {
        h.shared
            .lock_hotplug()
            .device_online(id, Some(memhp_model::OnlineType::OnlineMovable))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.vmem.list()[0].plugged != 4 * G {
        assert!(
            std::time::Instant::now() < deadline,
            "driver never plugged the rest: {:#x}",
            h.vmem.list()[0].plugged
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let evs = h.vmem.take_async_events();
    assert_eq!(evs.last(), size_change(4 * G).last());
    assert!(h
        .shared
        .read(|s| (48..64).all(|id| s.blocks[&id].state == BlockState::Offline)));
    assert!(h.vmem.take_async_events().is_empty());
}
