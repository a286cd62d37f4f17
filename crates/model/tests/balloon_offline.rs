//! virtio-balloon pages through offlining (6.1, recorded in
//! `conformance/behaviour/virtio-balloon`): inflating takes pages out of
//! the zone's `managed`; offlining migrates balloon pages like other
//! movable ones, and one that lands in another zone takes its `managed`
//! share along; when no target is left, the offline retries (ENOMEM).

use memhp_model::machine::QemuPc;
use memhp_model::pages::PageState;
use memhp_model::{DeviceOutcome, KernelVersion, OfflineProgress, System, ZoneType};

fn boot() -> System {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap()
}

fn managed(s: &System, z: ZoneType) -> u64 {
    s.node(0).unwrap().zone(z).managed
}

#[test]
fn inflated_pages_leave_managed_and_come_back_on_deflate() {
    let mut s = boot();
    let total = s.totalram_pages();
    assert_eq!(s.balloon_inflate(65536), 65536);
    assert_eq!(managed(&s, ZoneType::Dma32), 225520 - 65536);
    assert_eq!(managed(&s, ZoneType::Dma), 3840);
    assert_eq!(s.totalram_pages(), total - 65536);
    assert_eq!(s.balloon_pages(), 65536);
    assert_eq!(s.balloon_deflate(65536), 65536);
    assert_eq!(s.totalram_pages(), total);
    assert_eq!(s.balloon_pages(), 0);
}

#[test]
fn offlining_migrates_balloon_pages_and_moves_managed_with_those_landing_in_dma() {
    let mut s = boot();
    s.balloon_inflate(65536);
    for id in 1..=4 {
        assert_eq!(
            s.device_offline_nowait(id),
            Ok(DeviceOutcome::Changed),
            "memory{id}"
        );
        assert_eq!(s.blocks[&id].pages.count(PageState::Balloon), 0);
    }
    assert_eq!(s.balloon_pages(), 65536, "migrated, not freed");
    assert_eq!(managed(&s, ZoneType::Dma32), 225520 - 65536 - 4 * 32768);
    // memory5's pages fill DMA32 and then DMA (down to its watermark and
    // lowmem reserve), then nothing is left: it retries until a signal.
    assert!(matches!(
        s.device_offline(5),
        OfflineProgress::Retrying { .. }
    ));
    assert!(matches!(s.offline_signal(), OfflineProgress::Done(Err(ref e)) if e.errno() == 4));
    // Balloon pages that went to DMA took their managed share along.
    let in_dma = 3840 - managed(&s, ZoneType::Dma);
    assert!(in_dma > 3000, "{in_dma}");
    assert_eq!(
        managed(&s, ZoneType::Dma32),
        225520 - 65536 - 4 * 32768 + in_dma
    );
    assert_eq!(s.balloon_pages(), 65536);
    // Deflating gives every page back to the zone it is in now.
    s.balloon_deflate(65536);
    assert_eq!(managed(&s, ZoneType::Dma), 3840);
}

/// `/proc/vmstat`'s counters for the same moves (recorded on the real
/// kernel, `conformance/other-build/balloon-vmstat`: 65536 pages in,
/// memory1-3 offlined, 98304 pages migrated, all back out). The guest
/// counted 98300 of those as balloon pages (4 were its processes' pages);
/// here every page those blocks held was the balloon's.
#[test]
fn balloon_and_migration_events_count_pages() {
    let mut s = boot();
    assert_eq!(s.balloon_inflate(65536), 65536);
    assert_eq!(s.vm_events.balloon_inflate, 65536);
    assert_eq!(s.vm_events.pgmigrate_success, 0);
    for id in 1..=3 {
        assert_eq!(s.device_offline_nowait(id), Ok(DeviceOutcome::Changed));
    }
    assert_eq!(s.vm_events.pgmigrate_success, 98304);
    assert_eq!(s.vm_events.balloon_migrate, 98304);
    assert_eq!(s.balloon_deflate(65536), 65536);
    assert_eq!(s.vm_events.balloon_deflate, 65536);
    assert_eq!(s.vm_events.get("balloon_inflate"), Some(65536));
    assert_eq!(s.vm_events.get("pgfault"), None);
}
