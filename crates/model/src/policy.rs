//! Zone selection when onlining (spec 01 §7.3): `zone_for_pfn_range` with
//! the `contig-zones` and `auto-movable` online policies.

use crate::block::{GroupId, OnlineType};
use crate::cmdline::OnlinePolicy;
use crate::system::{GroupKind, System};
use crate::units::PAGES_PER_SECTION;
use crate::zone::ZoneType;

impl System {
    /// `default_kernel_zone_for_pfn`: the first of DMA, DMA32 of the node
    /// that intersects the range, else Normal.
    pub fn default_kernel_zone_for_pfn(&self, nid: u32, start: u64, nr: u64) -> ZoneType {
        let Some(node) = self.node(nid) else {
            return ZoneType::Normal;
        };
        [ZoneType::Dma, ZoneType::Dma32]
            .into_iter()
            .find(|&z| node.zone(z).intersects(start, nr))
            .unwrap_or(ZoneType::Normal)
    }

    /// `default_zone_for_pfn` (contig-zones).
    pub fn default_zone_for_pfn(&self, nid: u32, start: u64, nr: u64) -> ZoneType {
        let kernel = self.default_kernel_zone_for_pfn(nid, start, nr);
        let Some(node) = self.node(nid) else {
            return kernel;
        };
        let in_kernel = node.zone(kernel).intersects(start, nr);
        let in_movable = node.zone(ZoneType::Movable).intersects(start, nr);
        match (in_kernel, in_movable) {
            (true, false) => kernel,
            (false, true) => ZoneType::Movable,
            _ if self.cmdline.movable_node => ZoneType::Movable,
            _ => kernel,
        }
    }

    /// `auto_movable_can_online_movable`: can `need` more movable pages be
    /// onlined without exceeding the ratio, system-wide (`nid = None`) or on
    /// one node.
    pub fn auto_movable_can_online_movable(
        &self,
        nid: Option<u32>,
        group: Option<GroupId>,
        need: u64,
    ) -> bool {
        let ratio = u64::from(self.params.auto_movable_ratio);
        let mut kernel_early: u64 = 0;
        let mut movable: u64 = 0;
        for node in self
            .nodes
            .values()
            .filter(|n| nid.is_none_or(|id| id == n.id))
        {
            for z in ZoneType::ALL {
                let zone = node.zone(z);
                if !zone.populated() {
                    continue;
                }
                if z == ZoneType::Movable {
                    movable += zone.present;
                } else {
                    kernel_early += zone.present_early;
                    kernel_early -= zone.cma.min(kernel_early);
                    movable += zone.cma;
                }
            }
        }
        let mut req_kernel_early: u64 = 0;
        let mut group_movable: u64 = 0;
        for g in self
            .groups
            .values()
            .filter(|g| g.is_dynamic() && Some(g.id) != group && nid.is_none_or(|id| id == g.nid))
        {
            let req = (g.present_movable_pages * 100 / ratio.max(1)) as i128
                - g.present_kernel_pages as i128;
            if req > 0 {
                req_kernel_early += req as u64;
            }
            group_movable += g.present_movable_pages;
        }
        if kernel_early <= req_kernel_early {
            return false;
        }
        kernel_early -= req_kernel_early;
        movable = movable.saturating_sub(group_movable);
        if let Some(g) = group
            .and_then(|g| self.groups.get(&g))
            .filter(|g| g.is_dynamic())
        {
            kernel_early += g.present_kernel_pages;
        }
        movable + need <= ratio * kernel_early / 100
    }

    /// `auto_movable_zone_for_pfn`.
    pub fn auto_movable_zone_for_pfn(
        &self,
        nid: u32,
        group: Option<GroupId>,
        pfn: u64,
        nr: u64,
    ) -> ZoneType {
        let kernel = |s: &System, p: u64, n: u64| s.default_kernel_zone_for_pfn(nid, p, n);
        if self.params.auto_movable_ratio == 0 {
            return kernel(self, pfn, nr);
        }
        let g = group.and_then(|g| self.groups.get(&g));
        let (max_pages, online_pages, pfn, nr) = match g.map(|g| (g, g.kind)) {
            Some((g, GroupKind::Static { max_pages })) => {
                if g.present_kernel_pages > 0 {
                    return kernel(self, pfn, nr);
                }
                (max_pages, g.present_movable_pages, pfn, nr)
            }
            Some((_, GroupKind::Dynamic { unit_pages })) if unit_pages != nr => {
                let start = pfn / unit_pages * unit_pages;
                let mut online = 0;
                let mut sec = start;
                while sec < start + unit_pages {
                    let id = self.pfn_to_block_id(sec);
                    if let Some(b) = self
                        .blocks
                        .get(&id)
                        .filter(|b| b.state == crate::block::BlockState::Online)
                    {
                        if b.zone != Some(ZoneType::Movable) {
                            return kernel(self, start, unit_pages);
                        }
                        online += PAGES_PER_SECTION;
                    }
                    sec += PAGES_PER_SECTION;
                }
                (unit_pages, online, start, unit_pages)
            }
            _ => (nr, 0, pfn, nr),
        };
        let need = max_pages.saturating_sub(online_pages);
        if !self.auto_movable_can_online_movable(None, group, need) {
            return kernel(self, pfn, nr);
        }
        if self.params.auto_movable_numa_aware
            && !self.auto_movable_can_online_movable(Some(nid), group, need)
        {
            return kernel(self, pfn, nr);
        }
        ZoneType::Movable
    }

    /// `zone_for_pfn_range`: the zone onlining `[start, start + nr)` of node
    /// `nid` with `online_type` would use right now.
    pub fn zone_for_pfn_range(
        &self,
        online_type: OnlineType,
        nid: u32,
        group: Option<GroupId>,
        start: u64,
        nr: u64,
    ) -> ZoneType {
        match online_type {
            OnlineType::OnlineKernel => self.default_kernel_zone_for_pfn(nid, start, nr),
            OnlineType::OnlineMovable => ZoneType::Movable,
            OnlineType::Online | OnlineType::Offline => match self.params.online_policy {
                OnlinePolicy::AutoMovable => self.auto_movable_zone_for_pfn(nid, group, start, nr),
                OnlinePolicy::ContigZones => self.default_zone_for_pfn(nid, start, nr),
            },
        }
    }

    /// What `valid_zones` lists for an offline block: the default zone
    /// first, then the kernel zone and Movable if they differ.
    pub fn valid_zones_offline(&self, id: u64) -> Vec<ZoneType> {
        let Some(b) = self.blocks.get(&id) else {
            return Vec::new();
        };
        let nid = b.nid.unwrap_or(0);
        let (start, nr) = (self.block_start_pfn(id), self.pages_per_block());
        let def = self.zone_for_pfn_range(OnlineType::Online, nid, b.group, start, nr);
        let mut out = vec![def];
        for t in [OnlineType::OnlineKernel, OnlineType::OnlineMovable] {
            let z = self.zone_for_pfn_range(t, nid, b.group, start, nr);
            if z != def {
                out.push(z);
            }
        }
        out
    }
}
