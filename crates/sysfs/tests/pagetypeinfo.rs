//! `/proc/pagetypeinfo` over the page model, against what Linux 6.1 printed
//! on a 1 GiB QEMU guest (the ZONE_DMA rows and the pageblock counts of
//! every zone are the kernel's; the free lists of DMA32 depend on boot-time
//! allocations the model places more compactly).

use memhp_drivers::acpi::AcpiDimms;
use memhp_model::machine::QemuPc;
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System};
use memhp_sysfs::vfs::{Cancel, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const M: &str = "sys/devices/system/memory";

fn machine() -> (SysfsTree, AcpiDimms) {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=8G").unwrap();
    let spec = q.machine("", KernelVersion::V6_1).unwrap();
    let dimms = AcpiDimms::new(spec.dimm);
    let sys = System::boot(&spec).unwrap();
    (SysfsTree::new(Arc::new(Shared::new(sys))), dimms)
}

fn read(t: &SysfsTree) -> String {
    String::from_utf8(t.read("proc/pagetypeinfo").unwrap()).unwrap()
}

fn write(t: &SysfsTree, p: &str, v: &str) {
    t.open(p, false, true).unwrap();
    t.write(p, v.as_bytes(), &Cancel::new()).unwrap();
}

/// The "Number of blocks type" rows.
fn block_counts(text: &str) -> Vec<String> {
    text.split("Number of blocks type")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn pagetypeinfo_has_the_kernels_layout_and_zone_dma_rows() {
    let (t, _) = machine();
    let text = read(&t);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Page block order: 9");
    assert_eq!(lines[1], "Pages per block:  512");
    assert_eq!(lines[2], "");
    assert_eq!(
        lines[3],
        "Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10 "
    );
    // ZONE_DMA as the kernel printed it: pfn 0 is firmware's, so the first
    // pageblock stays MIGRATE_UNMOVABLE and the GFP_DMA atomic pool (32
    // pages) is carved out of it.
    let z = "Node    0, zone      DMA, type";
    let zeros = "      0      0      0      0      0      0      0      0      0      0      0 ";
    assert_eq!(
        &lines[4..9],
        [
            format!("{z}    Unmovable      0      0      0      0      0      1      1      1      0      0      0 "),
            format!("{z}      Movable      0      0      0      0      0      0      0      0      0      1      3 "),
            format!("{z}  Reclaimable{zeros}"),
            format!("{z}   HighAtomic{zeros}"),
            format!("{z}      Isolate{zeros}"),
        ]
    );
    assert!(lines[9].starts_with("Node    0, zone    DMA32, type    Unmovable "));
    assert_eq!(lines[14], "");
    assert_eq!(
        lines[15],
        "Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate "
    );
    assert_eq!(
        lines[16],
        "Node 0, zone      DMA            1            7            0            0            0 "
    );
    assert_eq!(lines.len(), 18, "{text}");
}

/// One pageblock is counted every 512 pfns of the zone's span that are
/// online: 504 in DMA32 of a 1 GiB guest whatever their types; the memmap
/// of a hot-added GiB takes eight pageblocks that become unmovable; an
/// offline block's 64 pageblocks are not counted.
#[test]
fn pageblock_counts_follow_hotadd_online_and_offline() {
    let (t, dimms) = machine();
    let dma32_total = |text: &str| -> u64 {
        let row = block_counts(text)
            .into_iter()
            .find(|l| l.starts_with("Node 0, zone    DMA32 "))
            .unwrap();
        row.split_whitespace()
            .skip(4)
            .map(|n| n.parse::<u64>().unwrap())
            .sum()
    };
    let unmovable = |text: &str, zone: &str| -> u64 {
        let row = block_counts(text)
            .into_iter()
            .find(|l| l.starts_with(&format!("Node 0, zone {zone:>8} ")))
            .unwrap();
        row.split_whitespace().nth(4).unwrap().parse().unwrap()
    };
    let boot = read(&t);
    assert_eq!(dma32_total(&boot), 504);
    dimms
        .hotadd(t.shared(), "dimm1", 1 << 30, (Some(0), None), &[])
        .unwrap();
    let added = read(&t);
    assert_eq!(dma32_total(&added), 504);
    assert_eq!(unmovable(&added, "DMA32"), unmovable(&boot, "DMA32") + 8);
    for b in 32..40 {
        write(&t, &format!("{M}/memory{b}/state"), "online_movable");
    }
    let online = read(&t);
    assert_eq!(
        block_counts(&online)[2],
        "Node 0, zone  Movable            0          512            0            0            0 "
    );
    write(&t, &format!("{M}/memory33/state"), "offline");
    write(&t, &format!("{M}/memory5/state"), "offline");
    let offline = read(&t);
    assert_eq!(dma32_total(&offline), 504 - 64);
    assert_eq!(
        block_counts(&offline)[2],
        "Node 0, zone  Movable            0          448            0            0            0 "
    );
}
