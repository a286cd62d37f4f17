//! x86-64 `init_mem_mapping`: how many page-table pages of the kernel's
//! direct map come out of memblock (and so stay reserved) rather than out
//! of the 12-page BRK buffer inside the kernel image.
//!
//! The kernel maps RAM top-down: first the ISA range, then the 2 MiB block
//! below the highest free 2 MiB-aligned one, then steps of 2 MiB, 512 MiB
//! and 128 GiB down to 1 MiB, then what lies above the first block. Each
//! mapping call covers one memblock region and takes its new page tables
//! (a PMD page per GiB, a PTE page per 2 MiB block that is only partly
//! RAM) from BRK while there is room, except for a region that holds the
//! BRK buffer itself: that one must allocate from memblock. No 1 GiB pages
//! (QEMU's default CPU has no `pdpe1gb`).
//!
//! Recorded on 6.1 under QEMU `pc` (zone `managed` counts): 1–2.5 GiB
//! take none, 3 GiB one (the PMD of 1–2 GiB, mapped with the image's
//! region), 3.5–8 GiB three.

use crate::system::System;
use std::collections::BTreeSet;

type Range = (u64, u64);

/// Pages of 2 MiB and of 1 GiB.
const PMD_PAGES: u64 = 512;
const PUD_PAGES: u64 = 1 << 18;
/// `INIT_PGT_BUF_SIZE` with `CONFIG_RANDOMIZE_MEMORY` (Debian): 12 pages.
const BRK_PAGES: u64 = 12;
/// The ISA range, mapped first.
const ISA_END_PFN: u64 = 256;
/// Step sizes of `memory_map_top_down` (`get_new_step_size`: × 256).
const STEP_GROWTH: u64 = 256;

struct Mapper<'a> {
    ram: &'a [Range],
    /// The region holding the BRK buffer (the kernel image).
    image: Range,
    pmd: BTreeSet<u64>,
    pte: BTreeSet<u64>,
    brk_left: u64,
    /// `min_pfn_mapped` and `max_pfn_mapped`: where `alloc_low_pages`
    /// looks for a page in memblock.
    min_mapped: u64,
    max_mapped: u64,
    /// The `[from, max)` byte bounds of each page taken from memblock.
    from_memblock: Vec<(u64, u64)>,
}

impl Mapper<'_> {
    fn take(&mut self, can_use_brk: bool) {
        if can_use_brk && self.brk_left > 0 {
            self.brk_left -= 1;
        } else {
            self.from_memblock
                .push((self.min_mapped << 12, self.max_mapped << 12));
        }
    }

    /// `init_range_memory_mapping(start, end)`: one mapping call per
    /// memblock region inside the range.
    fn map_range(&mut self, start: u64, end: u64) -> u64 {
        let mut mapped = 0;
        let regions: Vec<Range> = self
            .ram
            .iter()
            .map(|&(s, e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
            .collect();
        for (s, e) in regions {
            let can_use_brk = e <= self.image.0 || s >= self.image.1;
            self.map(s, e, can_use_brk);
            self.max_mapped = self.max_mapped.max(e);
            mapped += e - s;
        }
        mapped
    }

    /// The page tables `[s, e)` needs, in address order.
    fn map(&mut self, s: u64, e: u64, can_use_brk: bool) {
        for gib in s / PUD_PAGES..e.div_ceil(PUD_PAGES) {
            if self.pmd.insert(gib) {
                self.take(can_use_brk);
            }
            let (gs, ge) = (s.max(gib * PUD_PAGES), e.min((gib + 1) * PUD_PAGES));
            // A 2 MiB block only partly inside the range is mapped with 4K
            // pages: the head's and the tail's.
            let mut partial = Vec::new();
            if !gs.is_multiple_of(PMD_PAGES) {
                partial.push(gs / PMD_PAGES);
            }
            if !ge.is_multiple_of(PMD_PAGES) {
                partial.push(ge / PMD_PAGES);
            }
            for block in partial {
                if self.pte.insert(block) {
                    self.take(can_use_brk);
                }
            }
        }
    }
}

/// The direct map's page-table pages taken from memblock at boot, for RAM
/// `ram` (pfn ranges), the kernel image `image` and the other regions
/// reserved by then (`reserved`: the first MiB, the initrd): for each, the
/// byte range `alloc_low_pages` asked memblock for it in.
pub(crate) fn memblock_page_tables(
    ram: &[Range],
    image: Range,
    reserved: &[Range],
) -> Vec<(u64, u64)> {
    let Some(map_end) = ram.iter().map(|r| r.1).max() else {
        return Vec::new();
    };
    let mut m = Mapper {
        ram,
        image,
        pmd: BTreeSet::new(),
        pte: BTreeSet::new(),
        brk_left: BRK_PAGES,
        min_mapped: 0,
        max_mapped: 0,
        from_memblock: Vec::new(),
    };
    // The ISA range: the PUD page, the first PMD and PTE pages.
    m.brk_left -= 1;
    m.map(0, ISA_END_PFN, true);
    m.max_mapped = ISA_END_PFN;
    // The highest free 2 MiB-aligned block below the end of RAM.
    let busy = |b: u64| {
        let (s, e) = (b * PMD_PAGES, (b + 1) * PMD_PAGES);
        !ram.iter().any(|&(rs, re)| rs <= s && e <= re)
            || reserved
                .iter()
                .chain(std::iter::once(&image))
                .any(|&(rs, re)| rs < e && s < re)
    };
    let Some(top_block) = (ISA_END_PFN.div_ceil(PMD_PAGES)..map_end / PMD_PAGES)
        .rev()
        .find(|&b| !busy(b))
    else {
        m.map_range(ISA_END_PFN, map_end);
        return m.from_memblock;
    };
    let real_end = (top_block + 1) * PMD_PAGES;
    // memory_map_top_down starts over: nothing mapped above real_end yet.
    (m.min_mapped, m.max_mapped) = (real_end, 0);
    let mut step = PMD_PAGES;
    let mut last_start = real_end;
    let mut mapped = 0;
    while last_start > ISA_END_PFN {
        let start = if last_start > step {
            ((last_start - 1) / step * step).max(ISA_END_PFN)
        } else {
            ISA_END_PFN
        };
        mapped += m.map_range(start, last_start);
        last_start = start;
        m.min_mapped = start;
        if mapped >= step {
            step *= STEP_GROWTH;
        }
    }
    if real_end < map_end {
        m.map_range(real_end, map_end);
    }
    m.from_memblock
}

/// KiB of the direct map the kernel splits into 4 KiB pages when it sets
/// the protections of its own image (text, rodata, the freed init
/// sections): QEMU `pc` guests of 1–4 GiB with 1–4 CPUs show
/// `DirectMap4k: 24448 kB`, of which 2048 are the first 2 MiB and 1920 the
/// tail of RAM below 4 GiB (two recordings in six showed one 2 MiB page
/// more split, at random).
const IMAGE_SPLIT_4K_KIB: u64 = 20480;

impl System {
    /// `/proc/meminfo`'s `DirectMap4k` and `DirectMap2M` in KiB: the
    /// direct map covers everything from 0 to the end of the first RAM
    /// range and every other System RAM range (hot-added memory is mapped
    /// when added); 4 KiB pages map the first 2 MiB, the parts of ranges
    /// that are not 2 MiB aligned, and the splits around the image.
    pub fn direct_map_kib(&self) -> (u64, u64) {
        const TWO_MIB: u64 = 2 << 20;
        // The ISA range [0, 1 MiB) is mapped whole.
        let mut ranges = vec![(0, ISA_END_PFN << 12)];
        ranges.extend(
            self.iomem
                .system_ram()
                .into_iter()
                .filter(|r| r.1 > ISA_END_PFN << 12)
                .map(|(s, e)| (s.max(ISA_END_PFN << 12), e)),
        );
        let mut mapped = 0;
        let mut small = TWO_MIB;
        for &(s, e) in &ranges {
            mapped += e - s;
            let (lo, hi) = (
                s.max(TWO_MIB).next_multiple_of(TWO_MIB),
                e / TWO_MIB * TWO_MIB,
            );
            if lo < hi {
                small += (lo - s.max(TWO_MIB)) + (e - hi);
            } else if e > TWO_MIB {
                small += e - s.max(TWO_MIB);
            }
        }
        let k4 = (small >> 10) + IMAGE_SPLIT_4K_KIB;
        (k4, (mapped >> 10).saturating_sub(k4))
    }
}
