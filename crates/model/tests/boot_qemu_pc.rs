//! The boot state of QEMU `pc` machines matches what Linux 6.1 showed in the
//! oracle transcripts (`boot-baseline`, `movablecore`).

use memhp_model::machine::QemuPc;
use memhp_model::{BlockState, KernelVersion, System, ZoneType};

fn boot(mem: &str, cmdline: &str) -> System {
    let mut q = QemuPc::default();
    q.parse_mem_option(mem).unwrap();
    System::boot(&q.machine(cmdline, KernelVersion::V6_1).unwrap()).unwrap()
}

fn zone_line(sys: &System, nid: u32, z: ZoneType) -> (u64, u64, u64, u64) {
    let zone = sys.nodes[&nid].zone(z);
    (zone.start_pfn, zone.spanned, zone.present, zone.managed)
}

#[test]
fn qemu_pc_1g_zones_match_boot_baseline() {
    let sys = boot("1G,slots=4,maxmem=4G", "");
    assert_eq!(sys.block_size, 0x8000000);
    assert_eq!(zone_line(&sys, 0, ZoneType::Dma), (1, 4095, 3998, 3840));
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Dma32),
        (4096, 258016, 258016, 225520)
    );
    assert_eq!(zone_line(&sys, 0, ZoneType::Normal).1, 0);
    assert_eq!(sys.totalram_pages() * 4, 917440);
    let ids: Vec<u64> = sys.blocks.keys().copied().collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert_eq!(sys.blocks[&0].zone, None);
    assert!(sys
        .blocks
        .values()
        .skip(1)
        .all(|b| b.zone == Some(ZoneType::Dma32)));
    assert!(sys
        .blocks
        .values()
        .all(|b| b.state == BlockState::Online && !b.dev_offline));
}

#[test]
fn qemu_pc_4g_movablecore_zones_match_transcript() {
    let sys = boot(
        "4G,slots=4,maxmem=8G",
        "movablecore=256M memhp_default_state=offline",
    );
    assert_eq!(zone_line(&sys, 0, ZoneType::Dma), (1, 4095, 3998, 3840));
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Dma32),
        (4096, 1044480, 782304, 754602)
    );
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Normal),
        (1048576, 196608, 196608, 196608)
    );
    assert_eq!(
        zone_line(&sys, 0, ZoneType::Movable),
        (1245184, 65536, 65536, 47299)
    );
    assert_eq!(sys.totalram_pages() * 4, 4009396);
    assert_eq!(sys.blocks[&38].zone, Some(ZoneType::Movable));
    assert_eq!(sys.blocks[&37].zone, Some(ZoneType::Normal));
    assert!(!sys.blocks.contains_key(&24));
}
