//! Zone watermarks and zonelist rebuilds: what `init_per_zone_wmark_min()`
//! and `build_all_zonelists()` compute on every hotplug that (un)populates
//! a zone, and the three kernel-log lines a rebuild prints.

use crate::system::System;
use crate::zone::{ZoneType, MAX_NR_ZONES};
use crate::KernelVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `pageblock_nr_pages * MIGRATE_PCPTYPES^2 + 2 pageblocks` per zone (THP's
/// recommended reserve).
const THP_PAGES_PER_ZONE: u64 = 512 * 2 + 512 * 3 * 3;

/// The watermark state the page allocator keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    pub min_free_kbytes: u64,
    /// `user_min_free_kbytes`: the last value written to the sysctl.
    #[serde(default)]
    pub user_min_free_kbytes: Option<u64>,
    /// `_watermark[WMARK_HIGH]` per node and zone.
    pub high: BTreeMap<u32, [u64; MAX_NR_ZONES]>,
    /// `_watermark[WMARK_MIN]` per node and zone.
    #[serde(default)]
    pub min: BTreeMap<u32, [u64; MAX_NR_ZONES]>,
    /// `policy_zone`: the highest populated kernel zone ever seen.
    pub policy_zone: Option<ZoneType>,
    /// `zone->lowmem_reserve[class]` per node and zone, as
    /// `setup_per_zone_lowmem_reserve` last set it (with the watermarks at
    /// boot and at each online or offline; not when managed pages change
    /// otherwise, e.g. memory freed after boot or a balloon).
    #[serde(default)]
    pub lowmem: BTreeMap<u32, [[u64; MAX_NR_ZONES]; MAX_NR_ZONES]>,
    /// khugepaged never started, so nothing raises `min_free_kbytes` for
    /// THP: `hugepage_init` turns THP off on a system with less than
    /// 512 MiB of RAM (`totalram` then, the init memory and the initrd
    /// still held), and `transparent_hugepage=never` does too.
    #[serde(default)]
    pub khugepaged_off: bool,
}

/// `hugepage_init`'s smaller-system limit: 512 MiB of `totalram`, in pages.
pub const THP_MIN_TOTALRAM_PAGES: u64 = 512 << (20 - 12);

fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let mut x = (n as f64).sqrt() as u64;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

/// `MAX_NUMNODES` (Debian: `CONFIG_NODES_SHIFT=10`).
const MAX_NUMNODES: u64 = 1024;

/// `build_zonelists`' node order for `local`: itself, then the nodes with
/// memory by `find_next_best_node` (distance; a lower id than `local` and
/// having CPUs each cost one; then `node_load`, which puts the first node
/// of each distance group a step back for the next nodes' lists; ties to
/// the lowest id).
fn node_order(sys: &System, local: u32, load: &mut BTreeMap<u32, u64>) -> Vec<u32> {
    let distance = |a: u32, b: u32| u64::from(sys.node_distance(a, b));
    let memory: Vec<&crate::system::Node> = sys.online_nodes().filter(|n| n.has_memory).collect();
    let mut order = vec![local];
    let mut prev = local;
    loop {
        let mut best: Option<(u64, u32)> = None;
        for n in memory.iter().filter(|n| !order.contains(&n.id)) {
            let val =
                (distance(local, n.id) + u64::from(n.id < local) + u64::from(!n.cpus.is_empty()))
                    * MAX_NUMNODES
                    + load.get(&n.id).copied().unwrap_or(0);
            if best.is_none_or(|(v, _)| val < v) {
                best = Some((val, n.id));
            }
        }
        let Some((_, node)) = best else {
            return order;
        };
        if distance(local, node) != distance(local, prev) {
            *load.entry(node).or_default() += 1;
        }
        order.push(node);
        prev = node;
    }
}

/// The "Fallback order for Node N: ..." line of `build_zonelists`.
fn fallback_line(nid: u32, order: &[u32]) -> String {
    let order: String = order.iter().map(|n| format!("{n} ")).collect();
    format!("Fallback order for Node {nid}: {order}")
}

/// `build_zonelists`' "Fallback order" line per possible node (each has
/// its pgdat from boot, online or not), in one `build_all_zonelists` (one
/// `node_load` for all of them).
pub fn fallback_order_lines(sys: &System) -> Vec<String> {
    let mut load = BTreeMap::new();
    sys.nodes
        .keys()
        .map(|&nid| fallback_line(nid, &node_order(sys, nid, &mut load)))
        .collect()
}

impl Watermarks {
    /// Σ over populated zones with index ≤ `max` of `managed − high` (when
    /// positive): `nr_free_zone_pages()`.
    pub fn nr_free_zone_pages(&self, sys: &System, max: ZoneType) -> u64 {
        let mut sum = 0;
        for node in sys.online_nodes() {
            for z in ZoneType::ALL.into_iter().filter(|&z| z <= max) {
                let zone = node.zone(z);
                if !zone.populated() {
                    continue;
                }
                let high = self.high.get(&node.id).map_or(0, |h| h[z.idx()]);
                sum += zone.managed.saturating_sub(high);
            }
        }
        sum
    }

    /// `setup_per_zone_wmarks()` for the current `min_free_kbytes`. 6.1
    /// counts ZONE_MOVABLE as lowmem and gives it a proportional minimum;
    /// mainline excludes it and caps its minimum like highmem.
    fn setup_per_zone_wmarks(&mut self, sys: &System) {
        let pages_min = self.min_free_kbytes >> 2;
        let scale_factor = sys.vm.int("watermark_scale_factor").max(1) as u64;
        let ml = sys.version == KernelVersion::Mainline;
        let capped = |z: ZoneType| ml && z == ZoneType::Movable;
        let lowmem: u64 = sys
            .nodes
            .values()
            .flat_map(|n| {
                ZoneType::ALL
                    .into_iter()
                    .filter(|&z| !capped(z))
                    .map(move |z| n.zone(z).managed)
            })
            .sum();
        for node in sys.nodes.values() {
            let mut highs = [0u64; MAX_NR_ZONES];
            let mut mins = [0u64; MAX_NR_ZONES];
            for z in ZoneType::ALL {
                let managed = node.zone(z).managed;
                let tmp = (pages_min * managed).checked_div(lowmem).unwrap_or(0);
                let min = if capped(z) {
                    (managed / 1024).clamp(32, 128)
                } else {
                    tmp
                };
                let step = (tmp >> 2).max(managed * scale_factor / 10000);
                highs[z.idx()] = min + 2 * step;
                mins[z.idx()] = min;
            }
            self.high.insert(node.id, highs);
            self.min.insert(node.id, mins);
        }
    }

    /// `setup_per_zone_lowmem_reserve()`: a zone keeps back, from
    /// allocations that could have used a higher zone, the higher zones'
    /// managed pages over its ratio (none for a zone without managed pages).
    fn setup_per_zone_lowmem_reserve(&mut self, sys: &System) {
        // `sysctl_lowmem_reserve_ratio` per zone (DMA, DMA32, Normal,
        // Movable, Device; 256 256 32 0 0 by default).
        let ratios = sys.vm.ints("lowmem_reserve_ratio");
        for node in sys.nodes.values() {
            let mut table = [[0u64; MAX_NR_ZONES]; MAX_NR_ZONES];
            for zone in ZoneType::ALL {
                let ratio = ratios.get(zone.idx()).copied().unwrap_or(0).max(0) as u64;
                if ratio == 0 || node.zone(zone).managed == 0 {
                    continue;
                }
                for class in ZoneType::ALL.into_iter().filter(|&c| c > zone) {
                    let higher: u64 = ZoneType::ALL
                        .into_iter()
                        .filter(|&z| z > zone && z <= class)
                        .map(|z| node.zone(z).managed)
                        .sum();
                    table[zone.idx()][class.idx()] = higher / ratio;
                }
            }
            self.lowmem.insert(node.id, table);
        }
    }

    /// `zone->lowmem_reserve[]` of node `nid`'s `zone` as last set.
    pub fn lowmem_reserves(&self, nid: u32, zone: ZoneType) -> [u64; MAX_NR_ZONES] {
        self.lowmem
            .get(&nid)
            .map_or([0; MAX_NR_ZONES], |t| t[zone.idx()])
    }

    /// `init_per_zone_wmark_min()` followed by khugepaged's
    /// `set_recommended_min_free_kbytes()`.
    /// Returns the kernel-log lines it prints when a value written to
    /// `/proc/sys/vm/min_free_kbytes` stands in the way.
    pub fn recompute(&mut self, sys: &System) -> Vec<String> {
        let mut log: Vec<String> = self.calculate_min_free_kbytes(sys).into_iter().collect();
        self.setup_per_zone_wmarks(sys);
        if self.khugepaged_off {
            self.setup_per_zone_lowmem_reserve(sys);
            return log;
        }
        log.extend(self.raise_for_thp(sys));
        self.setup_per_zone_wmarks(sys);
        self.setup_per_zone_lowmem_reserve(sys);
        log
    }

    /// `calculate_min_free_kbytes()`: the square root rule over the
    /// kernel zones' free pages, unless a larger value was written.
    fn calculate_min_free_kbytes(&mut self, sys: &System) -> Option<String> {
        let lowmem_kbytes = self.nr_free_zone_pages(sys, ZoneType::Normal) * 4;
        let new = isqrt(lowmem_kbytes * 16);
        match self.user_min_free_kbytes {
            Some(user) if new <= user => Some(format!(
                "min_free_kbytes is not updated to {new} because user defined value {user} is preferred"
            )),
            _ => {
                self.min_free_kbytes = new.clamp(128, 262144);
                None
            }
        }
    }

    /// khugepaged's `set_recommended_min_free_kbytes()` while THP is on:
    /// enough for two pageblocks of each migratetype per populated kernel
    /// zone (at most 5 % of them), never lowered.
    fn raise_for_thp(&mut self, sys: &System) -> Option<String> {
        let nr_zones = sys
            .online_nodes()
            .flat_map(|n| ZoneType::KERNEL.map(|z| n.zone(z).populated()))
            .filter(|&p| p)
            .count() as u64;
        let recommended = (THP_PAGES_PER_ZONE * nr_zones)
            .min(self.nr_free_zone_pages(sys, ZoneType::Normal) / 20)
            << 2;
        if recommended <= self.min_free_kbytes {
            return None;
        }
        let log = self.user_min_free_kbytes.map(|_| {
            format!(
                "khugepaged: raising min_free_kbytes from {} to {} to help transparent hugepage allocations",
                self.min_free_kbytes, recommended
            )
        });
        self.min_free_kbytes = recommended;
        log
    }

    /// A write to THP's `enabled` (`start_stop_khugepaged`): khugepaged
    /// runs unless it is `never`; then `set_recommended_min_free_kbytes`
    /// raises `min_free_kbytes` for THP, or with THP off computes it anew.
    pub fn khugepaged_start_stop(&mut self, sys: &System, running: bool) -> Vec<String> {
        self.khugepaged_off = !running;
        let log = match running {
            true => self.raise_for_thp(sys),
            false => self.calculate_min_free_kbytes(sys),
        };
        self.setup_per_zone_wmarks(sys);
        log.into_iter().collect()
    }

    /// A write to `/proc/sys/vm/min_free_kbytes`: the value is used at
    /// once and preferred by later recomputations while it is larger.
    pub fn set_min_free_kbytes(&mut self, sys: &System, kbytes: u64) {
        self.min_free_kbytes = kbytes;
        self.user_min_free_kbytes = Some(kbytes);
        self.setup_per_zone_wmarks(sys);
    }

    /// `min_wmark_pages(zone)`.
    pub fn min_pages(&self, nid: u32, zone: ZoneType) -> u64 {
        self.min.get(&nid).map_or(0, |m| m[zone.idx()])
    }

    /// `high_wmark_pages(zone)`.
    pub fn high_pages(&self, nid: u32, zone: ZoneType) -> u64 {
        self.high.get(&nid).map_or(0, |h| h[zone.idx()])
    }

    /// `low_wmark_pages(zone)`: halfway between min and high.
    pub fn low_pages(&self, nid: u32, zone: ZoneType) -> u64 {
        let min = self.min_pages(nid, zone);
        min + self.high_pages(nid, zone).saturating_sub(min) / 2
    }

    /// The state after boot.
    pub fn at_boot(sys: &System) -> Self {
        let mut w = Watermarks {
            khugepaged_off: sys.cmdline.thp_never || sys.totalram_pages() < THP_MIN_TOTALRAM_PAGES,
            ..Watermarks::default()
        };
        w.recompute(sys);
        w.update_policy_zone(sys);
        w
    }

    fn update_policy_zone(&mut self, sys: &System) {
        for node in sys.online_nodes() {
            for z in ZoneType::KERNEL {
                if node.zone(z).populated() && self.policy_zone.is_none_or(|p| z > p) {
                    self.policy_zone = Some(z);
                }
            }
        }
    }

    /// `build_all_zonelists()` after boot: updates the policy zone and
    /// returns the kernel-log lines it prints.
    pub fn rebuild_zonelists(&mut self, sys: &System) -> Vec<String> {
        self.update_policy_zone(sys);
        let mut lines = fallback_order_lines(sys);
        lines.extend(self.built_lines(sys));
        lines
    }

    /// `build_all_zonelists(pgdat)` of `hotadd_init_pgdat`: memory is
    /// being added to node `nid`, not online yet; only its own zonelist is
    /// built, and the count and pages are those of the online nodes.
    pub fn new_pgdat_zonelist(&mut self, sys: &System, nid: u32) -> Vec<String> {
        self.update_policy_zone(sys);
        let order = node_order(sys, nid, &mut BTreeMap::new());
        let mut lines = vec![fallback_line(nid, &order)];
        lines.extend(self.built_lines(sys));
        lines
    }

    /// The two lines every `build_all_zonelists` ends with.
    fn built_lines(&self, sys: &System) -> [String; 2] {
        [
            format!(
                "Built {} zonelists, mobility grouping on.  Total pages: {}",
                sys.online_nodes().count(),
                self.nr_free_zone_pages(sys, ZoneType::Movable)
            ),
            format!(
                "Policy zone: {}",
                self.policy_zone.unwrap_or(ZoneType::Dma).name()
            ),
        ]
    }
}

impl System {
    /// `/proc/sys/vm/min_free_kbytes` written: new watermarks at once.
    pub fn set_min_free_kbytes(&mut self, kbytes: u64) {
        let mut w = std::mem::take(&mut self.wmark);
        w.set_min_free_kbytes(self, kbytes);
        self.wmark = w;
        self.touch_global();
    }

    /// A write of choice `enabled` to THP's `enabled`: khugepaged starts or
    /// stops, and `min_free_kbytes` follows.
    pub fn set_thp_enabled(&mut self, enabled: usize) {
        self.thp.enabled = enabled;
        let mut w = std::mem::take(&mut self.wmark);
        let log = w.khugepaged_start_stop(self, self.thp.khugepaged_running());
        self.wmark = w;
        for l in log {
            self.events.log(l);
        }
        self.touch_global();
    }

    /// A write of `v` (1-4, checked) to `drop_caches`
    /// (`drop_caches_sysctl_handler`): it reports who asked (`writer`,
    /// asked only then) until 4 (quiet) was written once, a bit that
    /// sticks, and counts each kind of drop in `/proc/vmstat`.
    pub fn drop_caches(&mut self, v: i64, writer: impl FnOnce() -> crate::events::Task) {
        let quiet = self.vm.int("drop_caches") & 4;
        if quiet == 0 {
            let task = writer();
            self.events
                .log(format!("{} ({}): drop_caches: {v}", task.comm, task.pid));
        }
        self.vm_events.drop_pagecache += u64::from(v & 1 != 0);
        self.vm_events.drop_slab += u64::from(v & 2 != 0);
        self.set_vm_sysctl("drop_caches", vec![quiet | v]);
    }

    /// A write to a `/proc/sys/vm` sysctl the store parsed and checked,
    /// with what its handler does after: `watermark_scale_factor` sets the
    /// watermarks up again (`setup_per_zone_wmarks`), `lowmem_reserve_ratio`
    /// zeroes ratios below 1 and sets the protection up again,
    /// `overcommit_ratio` and `overcommit_kbytes` clear each other.
    pub fn set_vm_sysctl(&mut self, name: &str, values: Vec<i64>) {
        let mut values = values;
        match name {
            "lowmem_reserve_ratio" => {
                let mut all = self.vm.ints(name);
                for (slot, v) in all.iter_mut().zip(&values) {
                    *slot = if *v < 1 { 0 } else { *v };
                }
                values = all;
            }
            "overcommit_ratio" => self.vm.set("overcommit_kbytes", vec![0]),
            "overcommit_kbytes" => self.vm.set("overcommit_ratio", vec![0]),
            _ => {}
        }
        self.vm.set(name, values);
        let mut w = std::mem::take(&mut self.wmark);
        match name {
            "watermark_scale_factor" => w.setup_per_zone_wmarks(self),
            "lowmem_reserve_ratio" => w.setup_per_zone_lowmem_reserve(self),
            _ => {}
        }
        self.wmark = w;
        self.touch_global();
    }
}

#[cfg(test)]
mod tests {
    use super::isqrt;
    use crate::machine::QemuPc;
    use crate::{KernelVersion, System, ZoneType};

    /// Boot sets the lowmem reserve while init memory and the initrd are
    /// still held; memory freed later does not move it, a block's offline
    /// (`init_per_zone_wmark_min`) does.
    #[test]
    fn lowmem_reserve_is_kept_from_boot_until_the_next_online_or_offline() {
        let spec = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
        let mut s = System::boot(&spec).unwrap();
        let dma = |s: &System| s.lowmem_reserve(0, ZoneType::Dma, ZoneType::Dma32);
        assert_eq!(dma(&s), 871);
        assert_eq!(s.node(0).unwrap().zone(ZoneType::Dma32).managed / 256, 880);
        assert!(s.device_offline_nowait(3).is_ok());
        let managed = s.node(0).unwrap().zone(ZoneType::Dma32).managed;
        assert_eq!(dma(&s), managed / 256);
    }

    #[test]
    fn isqrt_is_the_floor_square_root() {
        assert_eq!(isqrt(0), 0);
        assert_eq!(isqrt(15), 3);
        assert_eq!(isqrt(16), 4);
        assert_eq!(isqrt(14679040), 3831);
    }
}
