//! The memory-related lines of the boot log, in the kernel's formats: e820,
//! SRAT, zone ranges, early node ranges, unavailable ranges, zonelists and
//! the block size.

use crate::machine::{E820Kind, MachineSpec};
use crate::system::System;
use crate::units::PAGES_PER_SECTION;
use crate::zone::ZoneType;
use std::collections::BTreeMap;

fn mem(start: u64, end_inclusive: u64) -> String {
    format!("[mem {start:#018x}-{end_inclusive:#018x}]")
}

fn short_mem(start: u64, end_inclusive: u64) -> String {
    format!("[mem {start:#010x}-{end_inclusive:#010x}]")
}

/// Pages of `struct page` a zone's memmap takes at boot (`calc_memmap_size`).
fn calc_memmap_size(spanned: u64, present: u64) -> u64 {
    let pages = if spanned > present + (present >> 4) {
        present
    } else {
        spanned
    };
    (pages * 64).div_ceil(4096)
}

/// Render the boot log for a machine just booted.
pub fn render(
    spec: &MachineSpec,
    sys: &System,
    memblock: &[(u64, u64)],
    zone_movable_pfn: &BTreeMap<u32, u64>,
    arch: &[(u64, u64); 3],
) -> Vec<String> {
    let mut l = Vec::new();
    l.push(format!("Command line: {}", sys.cmdline.raw));
    for e in &spec.e820 {
        let kind = match e.kind {
            E820Kind::Usable => "usable",
            E820Kind::Reserved => "reserved",
        };
        l.push(format!("BIOS-e820: {} {kind}", mem(e.start, e.end - 1)));
    }
    l.push("e820: update [mem 0x00000000-0x00000fff] usable ==> reserved".into());
    l.push("e820: remove [mem 0x000a0000-0x000fffff] usable".into());
    let srat = spec
        .nodes
        .iter()
        .any(|n| !n.mem.is_empty() || !n.hotplug.is_empty());
    if srat {
        for n in &spec.nodes {
            if !n.cpus.is_empty() {
                for &c in &n.cpus {
                    l.push(format!(
                        "SRAT: PXM {} -> APIC {c:#04x} -> Node {}",
                        n.id, n.id
                    ));
                }
            }
        }
        for n in &spec.nodes {
            for &(s, e) in &n.mem {
                let pieces: Vec<(u64, u64)> = if s == 0 && e > 0x100000 {
                    vec![(0, 0xa0000), (0x100000, e)]
                } else {
                    vec![(s, e)]
                };
                for (a, b) in pieces {
                    l.push(format!(
                        "ACPI: SRAT: Node {} PXM {} {}",
                        n.id,
                        n.id,
                        short_mem(a, b - 1)
                    ));
                }
            }
            for &(s, e) in &n.hotplug {
                l.push(format!(
                    "ACPI: SRAT: Node {} PXM {} {} hotplug",
                    n.id,
                    n.id,
                    short_mem(s, e - 1)
                ));
            }
        }
    }
    l.push("Zone ranges:".into());
    for (i, z) in [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal]
        .into_iter()
        .enumerate()
    {
        let (lo, hi) = arch[i];
        if hi > lo {
            l.push(format!(
                "  {:<8} {}",
                z.name(),
                mem(lo << 12, (hi << 12) - 1)
            ));
        } else {
            l.push(format!("  {:<8} empty", z.name()));
        }
    }
    l.push(format!("  {:<8} empty", "Device"));
    l.push("Movable zone start for each node".into());
    for (nid, pfn) in zone_movable_pfn {
        l.push(format!("  Node {nid}: {:#018x}", pfn << 12));
    }
    l.push("Early memory node ranges".into());
    let node_of = |pfn: u64| spec.node_of_addr(pfn << 12);
    for &(s, e) in memblock {
        l.push(format!(
            "  node {:>3}: {}",
            node_of(s),
            mem(s << 12, (e << 12) - 1)
        ));
    }
    for node in sys.nodes.values() {
        let mine: Vec<_> = memblock
            .iter()
            .filter(|r| node_of(r.0) == node.id)
            .collect();
        if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
            l.push(format!(
                "Initmem setup node {} {}",
                node.id,
                mem(first.0 << 12, (last.1 << 12) - 1)
            ));
        }
    }
    // Unavailable ranges (memmap_init): holes before each range, per zone,
    // then up to the next section boundary.
    let mut hole = 0u64;
    let mut last = None;
    for &(s, e) in memblock {
        let nid = node_of(s);
        let node = &sys.nodes[&nid];
        for z in ZoneType::ALL {
            let (zs, ze) = node.boot_zone_ranges[z.idx()];
            if !node.zone(z).populated() {
                continue;
            }
            let (cs, ce) = (s.max(zs), e.min(ze));
            if cs >= ce {
                continue;
            }
            if hole < cs {
                l.push(format!(
                    "On node {nid}, zone {}: {} pages in unavailable ranges",
                    z.name(),
                    cs - hole
                ));
            }
            hole = ce;
            last = Some((nid, z));
        }
    }
    if let Some((nid, z)) = last {
        let end = hole.div_ceil(PAGES_PER_SECTION) * PAGES_PER_SECTION;
        if hole < end {
            l.push(format!(
                "On node {nid}, zone {}: {} pages in unavailable ranges",
                z.name(),
                end - hole
            ));
        }
    }
    let cpus: usize = spec.nodes.iter().map(|n| n.cpus.len()).sum();
    l.push(format!("smpboot: Allowing {cpus} CPUs, 0 hotplug CPUs"));
    let online: Vec<u32> = sys.online_nodes().map(|n| n.id).collect();
    l.extend(crate::wmark::fallback_order_lines(sys));
    // At this point managed = present − memmap − DMA reserve, watermarks 0.
    let dma_reserve: u64 = memblock
        .iter()
        .map(|&(s, e)| e.min(256).saturating_sub(s))
        .sum();
    let total: u64 = sys
        .nodes
        .values()
        .flat_map(|n| n.zones.iter())
        .filter(|z| z.populated())
        .map(|z| z.present - calc_memmap_size(z.spanned, z.present))
        .sum::<u64>()
        - dma_reserve;
    l.push(format!(
        "Built {} zonelists, mobility grouping on.  Total pages: {total}",
        online.len()
    ));
    l.push(format!(
        "Policy zone: {}",
        sys.wmark.policy_zone.unwrap_or(ZoneType::Dma).name()
    ));
    l.push(format!("Kernel command line: {}", sys.cmdline.raw));
    l.push(format!(
        "x86/mm: Memory block size: {}MB",
        sys.block_size >> 20
    ));
    l
}
