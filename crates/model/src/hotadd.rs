//! Hot-add and hot-remove (spec 01 §8, §9): `add_memory*` with its range
//! checks, memmap accounting and memmap_on_memory, block creation, node
//! onlining, auto-online; `try_remove_memory`, `offline_and_remove_memory`,
//! `try_offline_node`; memory groups.

use crate::block::{BlockState, GroupId, MemoryBlock, OnlineType};
use crate::cmdline::MemmapOnMemory;
use crate::events::UeventAction;
use crate::hotplug::HotplugError;
use crate::pages::{Fit, PageState};
use crate::system::{GroupKind, MemoryGroup, System};
use crate::units::{MAX_PHYSMEM_BITS, PAGES_PER_SECTION, PAGE_SHIFT, STRUCT_PAGE_SIZE};
use crate::zone::ZoneType;
use crate::KernelVersion;
use serde::{Deserialize, Serialize};

/// What an `add_memory*` call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddRequest {
    pub nid: u32,
    /// Physical start address (bytes).
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// The iomem resource name: `System RAM`, or `System RAM (<driver>)` for
    /// driver-managed memory.
    pub resource_name: String,
    /// Nest the resource inside this parent (e.g. `virtio0`).
    pub parent_resource: Option<String>,
    pub group: Option<GroupId>,
    /// MHP_MEMMAP_ON_MEMORY requested.
    pub memmap_on_memory: bool,
    /// Pages of each new block a driver keeps `PageOffline` (virtio-mem
    /// sub-blocks not plugged): present but never managed.
    pub driver_offline_pages: u64,
}

impl AddRequest {
    /// `add_memory(nid, start, size, mhp_flags)` of plain `System RAM`, as
    /// the ACPI memory device driver asks for it.
    pub fn system_ram(nid: u32, start: u64, size: u64, memmap_on_memory: bool) -> AddRequest {
        AddRequest {
            nid,
            start,
            size,
            resource_name: "System RAM".into(),
            parent_resource: None,
            group: None,
            memmap_on_memory,
            driver_offline_pages: 0,
        }
    }
}

/// Pages of existing memory that hold the memmap of a hot-added range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemmapCharge {
    pub block: u64,
    /// First page (offset in the block).
    pub lo: u64,
    /// End page (exclusive).
    pub hi: u64,
}

/// A range added by `add_memory*`, remembered for removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotRange {
    pub start: u64,
    pub size: u64,
    pub nid: u32,
    pub resource_name: String,
    /// Pages of existing memory holding this range's memmap, per block.
    pub memmap_charges: Vec<MemmapCharge>,
}

impl System {
    /// `check_hotplug_memory_range`: non-empty, start and size multiples of
    /// the block size.
    pub fn range_aligned(&self, start: u64, size: u64) -> bool {
        size != 0 && start.is_multiple_of(self.block_size) && size.is_multiple_of(self.block_size)
    }

    /// Ids of the existing blocks in `[start, start + size)`, ascending.
    /// The existing blocks in `[start, start + size)`.
    pub fn block_ids_in(&self, start: u64, size: u64) -> Vec<u64> {
        let first = start / self.block_size;
        self.blocks
            .range(first..first + size / self.block_size)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Pages of memmap one memory block needs (64 bytes per 4 KiB page).
    pub fn memmap_pages_per_block(&self) -> u64 {
        self.pages_per_block() * STRUCT_PAGE_SIZE / 4096
    }

    /// `mhp_supports_memmap_on_memory(size)` (spec 01 §8.5).
    pub fn mhp_supports_memmap_on_memory(&self, size: u64) -> bool {
        let vmemmap_size = self.pages_per_block() * STRUCT_PAGE_SIZE;
        let mut pages = vmemmap_size.div_ceil(4096);
        if self.params.memmap_on_memory == MemmapOnMemory::Force {
            pages = pages.div_ceil(512) * 512;
        }
        let enabled = self.params.memmap_on_memory != MemmapOnMemory::Off;
        let arch_ok = vmemmap_size.is_multiple_of(2 << 20);
        let size_ok = match self.version {
            KernelVersion::V6_1 => size == self.block_size,
            KernelVersion::Mainline => true,
        };
        enabled
            && size_ok
            && vmemmap_size.is_multiple_of(4096)
            && pages.is_multiple_of(512)
            && pages != self.pages_per_block()
            && arch_ok
    }

    /// Charge `pages` of memmap to free memory of online kernel-zone blocks:
    /// the node's highest populated kernel zone first, highest block first,
    /// then other nodes. `None` when there is not enough free memory.
    /// Returns the page ranges taken, as (block, first page, end page).
    fn charge_memmap(&mut self, nid: u32, pages: u64) -> Option<Vec<MemmapCharge>> {
        let mut order: Vec<(u64, (u64, u64), u64)> = Vec::new();
        let mut nids: Vec<u32> = vec![nid];
        nids.extend(self.nodes.keys().copied().filter(|&n| n != nid));
        for n in nids {
            for z in ZoneType::KERNEL.into_iter().rev() {
                for (&id, b) in self.blocks.iter().rev() {
                    if b.state != BlockState::Online || b.nid != Some(n) {
                        continue;
                    }
                    let Some(w) = self.zone_window(b, z) else {
                        continue;
                    };
                    let free = b.pages.free_in(w.0, w.1);
                    if free > 0 && !order.iter().any(|o| o.0 == id) {
                        order.push((id, w, free));
                    }
                }
            }
        }
        if order.iter().map(|o| o.2).sum::<u64>() < pages {
            return None;
        }
        let mut left = pages;
        let mut charges = Vec::new();
        for (id, window, _) in order {
            if left == 0 {
                break;
            }
            let b = &mut self.blocks.get_mut(&id).expect("block exists").pages;
            for fit in [Fit::FreePageblocks, Fit::Any] {
                for (lo, hi) in b.alloc(PageState::Unmovable, left, fit, window) {
                    charges.push(MemmapCharge { block: id, lo, hi });
                    left -= hi - lo;
                }
            }
        }
        Some(charges)
    }

    fn uncharge(&mut self, charges: &[MemmapCharge]) {
        for c in charges {
            if let Some(b) = self.blocks.get_mut(&c.block) {
                b.pages.assign(c.lo, c.hi, None);
            }
        }
    }

    /// `__add_memory` / `add_memory_driver_managed` (the caller holds the
    /// device hotplug lock), auto-online included. Returns the new block
    /// ids. [`crate::shared::HotplugGuard::add_memory`] does the same with
    /// the kernel's locks around each part.
    pub fn add_memory(&mut self, req: &AddRequest) -> Result<Vec<u64>, HotplugError> {
        let ids = self.add_memory_resource(req)?;
        self.auto_online(&ids);
        Ok(ids)
    }

    /// The auto-online walk after `add_memory_resource`: each new block,
    /// ascending, with the default online type; stop at the first failure
    /// (whose error is ignored).
    pub fn auto_online(&mut self, ids: &[u64]) {
        let default = self.params.default_online_type;
        if default != OnlineType::Offline {
            for &id in ids {
                self.blocks.get_mut(&id).expect("just created").online_type = default;
                if self.device_online(id).is_err() {
                    break;
                }
            }
        }
    }

    /// `add_memory_resource()` up to `mem_hotplug_done()`: the range, its
    /// blocks (offline) and their uevents, without auto-online.
    pub fn add_memory_resource(&mut self, req: &AddRequest) -> Result<Vec<u64>, HotplugError> {
        let max = (1u64 << MAX_PHYSMEM_BITS) - 1;
        let end = req.start.checked_add(req.size).filter(|&e| e > req.start);
        let Some(end) = end.filter(|&e| e - 1 <= max) else {
            self.events.log(format!(
                "Hotplug memory [{:#x}-{:#x}] exceeds maximum addressable range [{:#x}-{:#x}]",
                req.start,
                req.start.wrapping_add(req.size),
                0,
                max + 1
            ));
            return Err(HotplugError::TooBig);
        };
        if self
            .iomem
            .request(
                req.start,
                end - 1,
                &req.resource_name,
                req.parent_resource.as_deref(),
            )
            .is_err()
        {
            return Err(HotplugError::Exists);
        }
        let release = |s: &mut System| {
            let _ = s.iomem.release(req.start, end - 1, &req.resource_name);
        };
        if !self.range_aligned(req.start, req.size) {
            self.events.log(format!(
                "Block size [{:#x}] unaligned hotplug range: start {:#x}, size {:#x}",
                self.block_size, req.start, req.size
            ));
            release(self);
            return Err(HotplugError::Invalid("unaligned hotplug range"));
        }
        if !self.nodes.contains_key(&req.nid) {
            release(self);
            return Err(HotplugError::Invalid("node is not possible"));
        }
        let vmemmap = if req.memmap_on_memory {
            if self.mhp_supports_memmap_on_memory(req.size) {
                self.memmap_pages_per_block()
            } else if self.version == KernelVersion::V6_1 {
                release(self);
                return Err(HotplugError::Invalid(
                    "memmap_on_memory not supported for this range",
                ));
            } else {
                0
            }
        } else {
            0
        };
        let first = req.start / self.block_size;
        let count = req.size / self.block_size;
        if (first..first + count).any(|id| self.blocks.contains_key(&id)) {
            release(self);
            return Err(HotplugError::Exists);
        }
        let charges = if vmemmap == 0 {
            let sections = req.size / (PAGES_PER_SECTION << PAGE_SHIFT);
            match self.charge_memmap(
                req.nid,
                sections * PAGES_PER_SECTION * STRUCT_PAGE_SIZE / 4096,
            ) {
                Some(c) => c,
                None => {
                    release(self);
                    return Err(HotplugError::NoMemory("no memory for the memmap"));
                }
            }
        } else {
            Vec::new()
        };
        let new_node = !self.nodes[&req.nid].online;
        if new_node {
            let mut w = std::mem::take(&mut self.wmark);
            let lines = w.new_pgdat_zonelist(self, req.nid);
            self.wmark = w;
            for l in lines {
                self.events.log(l);
            }
        }
        let ppb = self.pages_per_block();
        let ids: Vec<u64> = (first..first + count).collect();
        for &id in &ids {
            let mut b = MemoryBlock::new_hotplugged(id, req.group, ppb, vmemmap);
            // virtio-mem plugs sub-blocks from the lowest: the unplugged
            // ones are at the top.
            b.pages
                .claim_highest_free(PageState::DriverOffline, req.driver_offline_pages);
            self.blocks.insert(id, b);
            if let Some(g) = req.group.and_then(|g| self.groups.get_mut(&g)) {
                g.blocks.push(id);
            }
            self.events.uevent(
                UeventAction::Add,
                format!("/devices/system/memory/memory{id}"),
                "memory",
            );
        }
        if new_node {
            self.node_mut(req.nid).online = true;
            self.events.uevent(
                UeventAction::Add,
                format!("/devices/system/node/node{}", req.nid),
                "node",
            );
        }
        for &id in &ids {
            let b = self.blocks.get_mut(&id).expect("just created");
            b.nid = Some(req.nid);
            b.link_nodes = vec![req.nid];
        }
        self.hot_ranges.insert(
            req.start,
            HotRange {
                start: req.start,
                size: req.size,
                nid: req.nid,
                resource_name: req.resource_name.clone(),
                memmap_charges: charges,
            },
        );
        self.layout_touch();
        Ok(ids)
    }

    /// `try_remove_memory(start, size)`: every block must be offline.
    pub fn remove_memory(&mut self, start: u64, size: u64) -> Result<(), HotplugError> {
        if !self.range_aligned(start, size) {
            return Err(HotplugError::Invalid("unaligned remove range"));
        }
        let ids = self.block_ids_in(start, size);
        if ids
            .iter()
            .any(|id| self.blocks[id].state != BlockState::Offline)
        {
            self.events.log(format!(
                "removing memory fails, because memory [{:#018x}-{:#018x}] is onlined",
                start,
                start + size - 1
            ));
            return Err(HotplugError::Busy("a block is online"));
        }
        let with_vmemmap = ids
            .iter()
            .filter(|id| self.blocks[id].nr_vmemmap_pages > 0)
            .count();
        if with_vmemmap != 0 && with_vmemmap != ids.len() {
            return Err(HotplugError::Invalid("mixed memmap_on_memory blocks"));
        }
        if self.version == KernelVersion::V6_1 && with_vmemmap != 0 && size != self.block_size {
            return Err(HotplugError::Invalid("wrong granularity"));
        }
        let mut nid = None;
        for &id in &ids {
            let b = self.blocks.remove(&id).expect("listed");
            let start = self.block_start_pfn(id);
            self.forget_hwpoison(start, start + self.pages_per_block());
            self.power
                .remove(&format!("/devices/system/memory/memory{id}"));
            nid = b.nid.or(nid);
            if let Some(g) = b.group.and_then(|g| self.groups.get_mut(&g)) {
                g.blocks.retain(|&x| x != id);
            }
            self.events.uevent(
                UeventAction::Remove,
                format!("/devices/system/memory/memory{id}"),
                "memory",
            );
        }
        // Release the resources and memmap of every added range inside.
        let inside: Vec<u64> = self
            .hot_ranges
            .range(start..start + size)
            .map(|(&s, _)| s)
            .collect();
        for s in inside {
            let r = self.hot_ranges.remove(&s).expect("listed");
            self.uncharge(&r.memmap_charges);
            let _ = self
                .iomem
                .release(r.start, r.start + r.size - 1, &r.resource_name);
        }
        if let Some(nid) = nid {
            self.try_offline_node(nid);
        }
        self.layout_touch();
        Ok(())
    }

    /// `try_offline_node`: offline a node that spans nothing, has no memory
    /// block and no present CPU.
    pub fn try_offline_node(&mut self, nid: u32) {
        let Some(node) = self.nodes.get(&nid) else {
            return;
        };
        if !node.online || node.span().1 != 0 || !node.cpus.is_empty() {
            return;
        }
        if self.blocks.values().any(|b| b.nid == Some(nid)) {
            return;
        }
        self.node_mut(nid).online = false;
        self.events.uevent(
            UeventAction::Remove,
            format!("/devices/system/node/node{nid}"),
            "node",
        );
        self.layout_touch();
    }

    fn lowest_free_group_id(&self) -> GroupId {
        (0..).find(|id| !self.groups.contains_key(id)).unwrap_or(0)
    }

    /// `memory_group_register_static(nid, max_pages)`.
    pub fn register_static_group(
        &mut self,
        nid: u32,
        max_pages: u64,
    ) -> Result<GroupId, HotplugError> {
        if !self.nodes.contains_key(&nid) || max_pages == 0 {
            return Err(HotplugError::Invalid("bad static group"));
        }
        Ok(self.insert_group(nid, GroupKind::Static { max_pages }))
    }

    /// `memory_group_register_dynamic(nid, unit_pages)`.
    pub fn register_dynamic_group(
        &mut self,
        nid: u32,
        unit_pages: u64,
    ) -> Result<GroupId, HotplugError> {
        if !self.nodes.contains_key(&nid)
            || unit_pages == 0
            || !unit_pages.is_power_of_two()
            || unit_pages < self.pages_per_block()
        {
            return Err(HotplugError::Invalid("bad dynamic group"));
        }
        Ok(self.insert_group(nid, GroupKind::Dynamic { unit_pages }))
    }

    /// A new, empty group of `kind` on `nid` under the lowest free id.
    fn insert_group(&mut self, nid: u32, kind: GroupKind) -> GroupId {
        let id = self.lowest_free_group_id();
        self.groups.insert(
            id,
            MemoryGroup {
                id,
                nid,
                kind,
                present_kernel_pages: 0,
                present_movable_pages: 0,
                blocks: Vec::new(),
            },
        );
        id
    }

    /// `memory_group_unregister(mgid)`.
    pub fn unregister_group(&mut self, id: GroupId) -> Result<(), HotplugError> {
        match self.groups.get(&id) {
            None => Err(HotplugError::Invalid("no such group")),
            Some(g) if !g.blocks.is_empty() => Err(HotplugError::Busy("group still has blocks")),
            Some(_) => {
                self.groups.remove(&id);
                Ok(())
            }
        }
    }
}
