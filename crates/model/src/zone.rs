//! Zones (spec 01 §1, §7): types, names and the span/present/managed
//! bookkeeping of one zone of one node.

use serde::{Deserialize, Serialize};

/// `enum zone_type` on x86-64 without HIGHMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ZoneType {
    Dma = 0,
    Dma32 = 1,
    Normal = 2,
    Movable = 3,
    Device = 4,
}

/// Number of zones per node.
pub const MAX_NR_ZONES: usize = 5;

impl ZoneType {
    /// All zones in index order.
    pub const ALL: [ZoneType; MAX_NR_ZONES] = [
        ZoneType::Dma,
        ZoneType::Dma32,
        ZoneType::Normal,
        ZoneType::Movable,
        ZoneType::Device,
    ];

    /// Kernel zones: every zone below ZONE_MOVABLE.
    pub const KERNEL: [ZoneType; 3] = [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal];

    /// The name sysfs and /proc/zoneinfo print (`zone_names[]`).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
            ZoneType::Movable => "Movable",
            ZoneType::Device => "Device",
        }
    }

    /// Index in `enum zone_type`.
    pub const fn idx(self) -> usize {
        self as usize
    }

    /// Whether this is a kernel zone (index ≤ ZONE_NORMAL).
    pub const fn is_kernel(self) -> bool {
        (self as usize) <= ZoneType::Normal as usize
    }

    pub fn from_idx(i: usize) -> Option<ZoneType> {
        ZoneType::ALL.get(i).copied()
    }
}

/// One `struct zone`: the fields hotplug changes and user space can see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub start_pfn: u64,
    pub spanned: u64,
    pub present: u64,
    /// Present pages that belong to boot ("early") sections (auto-movable).
    pub present_early: u64,
    pub managed: u64,
    pub cma: u64,
}

impl Zone {
    /// End pfn of the span (exclusive).
    pub const fn end_pfn(&self) -> u64 {
        self.start_pfn + self.spanned
    }

    /// `populated_zone()`: the zone has present pages.
    pub const fn populated(&self) -> bool {
        self.present > 0
    }

    /// `zone_is_empty()`: the zone spans nothing.
    pub const fn is_empty(&self) -> bool {
        self.spanned == 0
    }

    /// `zone_intersects()`: spans (not present pages) are compared.
    pub const fn intersects(&self, start: u64, nr: u64) -> bool {
        !(self.is_empty() || start >= self.end_pfn() || start + nr <= self.start_pfn)
    }

    /// `resize_zone_range()`: grow the span over `[start, start + nr)`.
    pub fn grow(&mut self, start: u64, nr: u64) {
        let old_end = self.end_pfn();
        if self.is_empty() || start < self.start_pfn {
            self.start_pfn = start;
        }
        let end = (start + nr).max(if self.spanned == 0 { 0 } else { old_end });
        self.spanned = end - self.start_pfn;
    }

    /// Make the zone span nothing (`start 0, spanned 0`).
    pub fn clear_span(&mut self) {
        self.start_pfn = 0;
        self.spanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_initialises_an_empty_zone_at_the_range() {
        let mut z = Zone::default();
        z.grow(0x100000, 32768);
        assert_eq!((z.start_pfn, z.spanned), (0x100000, 32768));
    }

    #[test]
    fn grow_keeps_holes_inside_the_span() {
        let mut z = Zone::default();
        z.grow(0x120000, 32768);
        z.grow(0x100000, 32768);
        assert_eq!((z.start_pfn, z.spanned), (0x100000, 0x28000));
        z.grow(0x110000, 32768);
        assert_eq!((z.start_pfn, z.spanned), (0x100000, 0x28000));
    }

    #[test]
    fn intersects_compares_spans_not_present_pages() {
        let mut z = Zone::default();
        assert!(!z.intersects(0, u64::MAX / 2));
        z.grow(100, 100);
        assert!(z.intersects(150, 10));
        assert!(!z.intersects(200, 10));
        assert!(!z.intersects(90, 10));
        assert!(z.intersects(90, 11));
    }
}
