//! Online and offline of memory blocks (spec 01 §3.5, §3.6, §6; spec 02 §6,
//! §7): `device_online`/`device_offline`, `memory_block_online`/`_offline`,
//! `online_pages`/`offline_pages` with their notifications, accounting, node
//! states, span shrink and undo paths.

use crate::block::{BlockState, OnlineType};
use crate::events::{MemAction, MemoryNotify, NodeAction, NodeNotify, UeventAction};
use crate::notifier::{ChainEvent, NotifierChain};
use crate::pages::{Fit, MigrateFailure, PageState};
use crate::system::System;
use crate::units::PAGES_PER_SUBSECTION;
use crate::workload::AllocRequest;
use crate::zone::ZoneType;
use crate::KernelVersion;

/// Unmovable pages the kernel allocates from a kernel zone that has just
/// become the node's highest populated kernel zone (slab, page tables of the
/// running system move their new allocations there): more than a pageblock
/// (a recorded virtio-mem guest could not unplug the first two 2 MiB
/// sub-blocks of its first Normal block).
pub const RUNTIME_UNMOVABLE_PAGES: u64 = 576;

/// A hotplug failure, with the errno user space sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HotplugError {
    #[error("no such memory block")]
    NoSuchBlock,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("device or resource busy: {0}")]
    Busy(&'static str),
    #[error("interrupted by a signal")]
    Interrupted,
    #[error("out of memory: {0}")]
    NoMemory(&'static str),
    #[error("range already present")]
    Exists,
    #[error("range beyond the maximum addressable memory")]
    TooBig,
    #[error("memory block has hardware-poisoned pages")]
    HwPoison,
    #[error("notifier callback failed with {0}")]
    Notifier(i32),
    #[error("operation not permitted")]
    Permission,
    #[error("no such device")]
    NoDevice,
    #[error("no such device or address")]
    NoSuchAddress,
    #[error("input/output error")]
    Io,
}

impl HotplugError {
    /// The positive errno `write(2)` reports.
    pub fn errno(&self) -> i32 {
        match self {
            HotplugError::NoSuchBlock | HotplugError::NoDevice => 19,
            HotplugError::Invalid(_) => 22,
            HotplugError::Busy(_) => 16,
            HotplugError::Interrupted => 4,
            HotplugError::NoMemory(_) => 12,
            HotplugError::Exists => 17,
            HotplugError::TooBig => 7,
            HotplugError::HwPoison => 133,
            HotplugError::Notifier(e) => -e,
            HotplugError::Permission => 1,
            HotplugError::NoSuchAddress => 6,
            HotplugError::Io => 5,
        }
    }
}

/// What `device_online`/`device_offline` report besides errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// The transition happened (a uevent was sent).
    Changed,
    /// The device was already in that state (device core's return value 1).
    AlreadyInState,
}

/// Where an offline stands after a step of the migration loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineProgress {
    /// Finished (successfully or not).
    Done(Result<DeviceOutcome, HotplugError>),
    /// The migration loop cannot make progress and retries until a signal
    /// arrives or the situation changes; the block reads `going-offline`.
    Retrying { reason: &'static str },
}

/// An offline stuck in its migration loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InFlightOffline {
    pub id: u64,
    pub zone: ZoneType,
    pub arg: MemoryNotify,
    /// The node loses its last kernel-zone memory (`N_NORMAL_MEMORY`).
    #[serde(default)]
    pub clear_normal: bool,
    /// The node loses its last memory (`N_MEMORY`).
    #[serde(default)]
    pub clear_memory: bool,
    /// NODE_REMOVING_LAST_MEMORY was sent (mainline).
    #[serde(default)]
    pub node_event: bool,
}

/// An event whose chain a [`System`] owns.
pub(crate) trait OnChain: ChainEvent {
    fn chain(sys: &mut System) -> &mut NotifierChain<Self>;
}

impl OnChain for MemAction {
    fn chain(sys: &mut System) -> &mut NotifierChain<Self> {
        &mut sys.memory_chain
    }
}

impl OnChain for NodeAction {
    fn chain(sys: &mut System) -> &mut NotifierChain<Self> {
        &mut sys.node_chain
    }
}

impl System {
    fn block_range(&self, id: u64) -> (u64, u64) {
        (self.block_start_pfn(id), self.pages_per_block())
    }

    /// Load `memory-notifier-error-inject` with `priority=`: its debugfs
    /// files appear and its callback joins the memory chain.
    pub fn load_injector(&mut self, priority: i32) {
        if !self.injection.loaded {
            self.injection = crate::events::NotifierInjection {
                loaded: true,
                going_online: 0,
                going_offline: 0,
            };
            let _ = self.memory_chain.register_injector(priority);
            self.layout_touch();
        }
    }

    /// Unload the injector: callback and debugfs files go away.
    pub fn unload_injector(&mut self) {
        if self.injection.loaded {
            let _ = self.memory_chain.unregister_injector();
            self.injection = Default::default();
            self.layout_touch();
        }
    }

    /// Call the chain of `action` (memory or node); for the vetoable events
    /// (GOING_*, NODE_ADDING_*/NODE_REMOVING_*), a stop-bit error becomes
    /// the operation's error.
    pub(crate) fn notify<E: OnChain>(
        &mut self,
        action: E,
        arg: E::Arg,
    ) -> Result<(), HotplugError> {
        self.events.trace_notifier(action.record(&arg));
        let (inj, mut log) = (self.injection, Vec::new());
        let (ret, _) = E::chain(self).call(action, &arg, None, &inj, &mut log);
        for l in log {
            self.events.log(l);
        }
        match crate::notifier::notifier_to_errno(ret) {
            0 => Ok(()),
            e => Err(HotplugError::Notifier(e)),
        }
    }

    /// The node event for `nid`, in the versions that have the node chain.
    fn node_notify(&mut self, action: NodeAction, nid: u32) -> Result<(), HotplugError> {
        self.notify(action, NodeNotify { nid: nid as i32 })
    }

    fn grow_spans(&mut self, nid: u32, zone: ZoneType, start: u64, nr: u64) {
        self.node_mut(nid).zone_mut(zone).grow(start, nr);
    }

    /// Is `pfn` an online page of `zone` on `nid` (for span shrinking)?
    fn pfn_online_in_zone(&self, pfn: u64, nid: u32, zone: ZoneType) -> bool {
        let id = self.pfn_to_block_id(pfn);
        match self.blocks.get(&id) {
            Some(b)
                if b.state != BlockState::Offline
                    && b.nid == Some(nid)
                    && b.pages.present() > 0 =>
            {
                self.page_zone(b, pfn) == Some(zone)
            }
            _ => false,
        }
    }

    /// `shrink_zone_span` + `update_pgdat_span` for `[start, end)`, whose
    /// pages are no longer online.
    fn shrink_spans(&mut self, nid: u32, zone: ZoneType, start: u64, end: u64) {
        let Some(node) = self.node(nid) else { return };
        let z = *node.zone(zone);
        if z.is_empty() {
            return;
        }
        let ppb = self.pages_per_block();
        if start == z.start_pfn {
            // Search upward from `end` for the first online pfn.
            let mut found = None;
            let mut pfn = end;
            while pfn < z.end_pfn() {
                let id = self.pfn_to_block_id(pfn);
                match self.blocks.range(id..).next() {
                    Some((&bid, _)) if bid * ppb < z.end_pfn() => {
                        let bstart = (bid * ppb).max(pfn);
                        if self.pfn_online_in_zone(bstart, nid, zone) {
                            found = Some(bstart);
                            break;
                        }
                        pfn = (bid + 1) * ppb;
                    }
                    _ => break,
                }
            }
            let zm = self.node_mut(nid).zone_mut(zone);
            match found {
                Some(p) => {
                    let old_end = zm.end_pfn();
                    zm.start_pfn = p;
                    zm.spanned = old_end - p;
                }
                None => zm.clear_span(),
            }
        } else if end == z.end_pfn() {
            // Search downward from `start - 1` for the last online pfn.
            let mut found = None;
            let mut pfn = start;
            while pfn > z.start_pfn {
                let probe = pfn - 1;
                let id = self.pfn_to_block_id(probe);
                match self.blocks.range(..=id).next_back() {
                    Some((&bid, _)) => {
                        let bend = ((bid + 1) * ppb).min(pfn);
                        let last = bend - 1;
                        if last < z.start_pfn {
                            break;
                        }
                        if self.pfn_online_in_zone(last, nid, zone) {
                            // End of the highest online sub-section.
                            found =
                                Some((last / PAGES_PER_SUBSECTION + 1) * PAGES_PER_SUBSECTION - 1);
                            break;
                        }
                        pfn = bid * ppb;
                    }
                    None => break,
                }
            }
            let zm = self.node_mut(nid).zone_mut(zone);
            match found {
                Some(p) => zm.spanned = p.min(zm.end_pfn() - 1) - zm.start_pfn + 1,
                None => zm.clear_span(),
            }
        }
    }

    fn adjust_present(&mut self, id: u64, zone: ZoneType, delta: i64) {
        let b = &self.blocks[&id];
        let (nid, early, group) = (b.nid.unwrap_or(0), b.early, b.group);
        let apply = |v: &mut u64| *v = v.saturating_add_signed(delta);
        let z = self.node_mut(nid).zone_mut(zone);
        apply(&mut z.present);
        if early {
            apply(&mut z.present_early);
        }
        if let Some(g) = group.and_then(|g| self.groups.get_mut(&g)) {
            if zone == ZoneType::Movable {
                apply(&mut g.present_movable_pages);
            } else {
                apply(&mut g.present_kernel_pages);
            }
        }
    }

    fn zonelist_rebuild(&mut self) {
        let mut w = std::mem::take(&mut self.wmark);
        let lines = w.rebuild_zonelists(self);
        self.wmark = w;
        for l in lines {
            self.events.log(l);
        }
    }

    fn recompute_watermarks(&mut self) {
        let mut w = std::mem::take(&mut self.wmark);
        let log = w.recompute(self);
        self.wmark = w;
        for l in log {
            self.events.log(l);
        }
    }

    /// The 6.1 status fields for onlining `zone` on `nid`.
    fn status_online(&self, nid: u32, zone: ZoneType) -> (i32, i32) {
        let node = &self.nodes[&nid];
        let normal = if zone.is_kernel() && !node.has_normal_memory {
            nid as i32
        } else {
            -1
        };
        let memory = if !node.has_memory { nid as i32 } else { -1 };
        (normal, memory)
    }

    /// `struct memory_notify` as this version fills it: the 6.1 status
    /// fields do not exist in mainline (kept at -1).
    fn memory_notify(&self, pfn: u64, n: u64, nid_normal: i32, nid: i32) -> MemoryNotify {
        let v61 = self.version == KernelVersion::V6_1;
        MemoryNotify {
            start_pfn: pfn,
            nr_pages: n,
            status_change_nid_normal: if v61 { nid_normal } else { -1 },
            status_change_nid: if v61 { nid } else { -1 },
        }
    }

    /// `memory_block_online` → `online_pages` for block `id`.
    fn memory_block_online(
        &mut self,
        id: u64,
        online_type: OnlineType,
    ) -> Result<(), HotplugError> {
        let b = &self.blocks[&id];
        if self.version == KernelVersion::Mainline && b.pages.count(PageState::HwPoison) > 0 {
            return Err(HotplugError::HwPoison);
        }
        let (start, nr) = self.block_range(id);
        let nid = b.nid.unwrap_or(0);
        let (group, v) = (b.group, b.nr_vmemmap_pages);
        let zone = self.zone_for_pfn_range(online_type, nid, group, start, nr);
        if v > 0 {
            self.grow_spans(nid, zone, start, v);
        }
        // online_pages(start + v, nr - v)
        let (pfn, n) = (start + v, nr - v);
        let was_populated = self.nodes[&nid].zone(zone).populated();
        let kernel_zone_was_top = self.highest_populated_kernel_zone(nid);
        self.grow_spans(nid, zone, pfn, n);
        let (nid_normal, nid_memory) = self.status_online(nid, zone);
        let arg = self.memory_notify(pfn, n, nid_normal, nid_memory);
        // Mainline announces the node's first memory on the node chain.
        let node_event = self.version == KernelVersion::Mainline && nid_memory >= 0;
        let vetoed = match node_event {
            true => self.node_notify(NodeAction::AddingFirstMemory, nid),
            false => Ok(()),
        }
        .and_then(|()| self.notify(MemAction::GoingOnline, arg));
        if let Err(e) = vetoed {
            let _ = self.notify(MemAction::CancelOnline, arg);
            if node_event {
                let _ = self.node_notify(NodeAction::CancelAddingFirstMemory, nid);
            }
            self.shrink_spans(nid, zone, pfn, pfn + n);
            if v > 0 {
                self.shrink_spans(nid, zone, start, start + v);
            }
            return Err(e);
        }
        let b = &self.blocks[&id];
        let managed = n.saturating_sub(b.pages.count(PageState::DriverOffline));
        self.node_mut(nid).zone_mut(zone).managed += managed;
        self.adjust_present(id, zone, n as i64);
        let node = self.node_mut(nid);
        if nid_normal >= 0 {
            node.has_normal_memory = true;
        }
        if nid_memory >= 0 {
            node.has_memory = true;
        }
        if !was_populated {
            self.zonelist_rebuild();
        }
        self.recompute_watermarks();
        if node_event {
            let _ = self.node_notify(NodeAction::AddedFirstMemory, nid);
        }
        let _ = self.notify(MemAction::Online, arg);
        self.reserve_mem_notifier(MemAction::Online);
        if v > 0 {
            self.adjust_present(id, zone, v as i64);
        }
        let has_cpu = !self.nodes[&nid].cpus.is_empty();
        let blk = self.blocks.get_mut(&id).expect("block exists");
        blk.zone = Some(zone);
        // The running kernel moves its new unmovable allocations to a kernel
        // zone that has just become the node's highest populated one, when
        // they are node-local: a node with no CPU gets none (recorded: both
        // blocks of a CPU-less node's first Normal memory go offline, while
        // a node with a CPU keeps an unmovable page in its first one).
        if zone.is_kernel()
            && has_cpu
            && !was_populated
            && kernel_zone_was_top.is_none_or(|t| zone > t)
        {
            let window = (0, blk.pages.nr());
            blk.pages.alloc(
                PageState::Unmovable,
                RUNTIME_UNMOVABLE_PAGES,
                Fit::FreePageblocks,
                window,
            );
        }
        Ok(())
    }

    /// mm's `reserve_mem_notifier` on the memory chain: MEM_ONLINE sizes
    /// `user_reserve_kbytes` and `admin_reserve_kbytes` again from the free
    /// memory (1/32 of it, at most 128 MiB and 8 MiB) unless they are 0 or
    /// at least those maxima; MEM_OFFLINE resets one that now exceeds the
    /// free memory, and says so.
    fn reserve_mem_notifier(&mut self, action: MemAction) {
        let free_kb = self.nr_free_pages() * 4;
        for (name, max) in crate::sysctl::RESERVES {
            let value = u64::try_from(self.vm.int(name)).unwrap_or(0);
            let reset = match action {
                MemAction::Online => value > 0 && value < max,
                MemAction::Offline => value > free_kb,
                _ => false,
            };
            if !reset {
                continue;
            }
            let new = crate::sysctl::init_reserve(free_kb, max);
            self.vm.set(name, vec![new as i64]);
            if action == MemAction::Offline {
                self.events.log(format!("mmap: vm.{name} reset to {new}"));
            }
        }
    }

    fn highest_populated_kernel_zone(&self, nid: u32) -> Option<ZoneType> {
        let node = self.node(nid)?;
        ZoneType::KERNEL
            .into_iter()
            .rev()
            .find(|&z| node.zone(z).populated())
    }

    /// `device_online()` with the memory bus callback: `online_type` is the
    /// block's latched type (MMOP_OFFLINE means "automatic").
    pub fn device_online(&mut self, id: u64) -> Result<DeviceOutcome, HotplugError> {
        let b = self.blocks.get(&id).ok_or(HotplugError::NoSuchBlock)?;
        if !b.dev_offline {
            return Ok(DeviceOutcome::AlreadyInState);
        }
        // memory_subsys_online
        let result = if b.state == BlockState::Online {
            Ok(())
        } else if b.state != BlockState::Offline {
            Err(HotplugError::Invalid("block is not offline"))
        } else {
            let t = match b.online_type {
                OnlineType::Offline => OnlineType::Online,
                t => t,
            };
            let r = self.memory_block_online(id, t);
            if r.is_ok() {
                self.blocks.get_mut(&id).expect("block exists").state = BlockState::Online;
            }
            r
        };
        self.blocks.get_mut(&id).expect("block exists").online_type = OnlineType::Offline;
        self.touch_block(id);
        result?;
        self.events.uevent(
            UeventAction::Online,
            format!("/devices/system/memory/memory{id}"),
            "memory",
        );
        let b = self.blocks.get_mut(&id).expect("block exists");
        b.dev_offline = false;
        if let Some(d) = b.dumped.as_mut() {
            d.valid_zones = None;
        }
        Ok(DeviceOutcome::Changed)
    }

    /// The kernel's page dump for an unmovable page at `pfn` (the pointer
    /// values of a real dump are not modelled).
    fn dump_unmovable_page(&mut self, pfn: u64, nid: u32, zone: ZoneType) {
        let flags = crate::pages::dumped_flags(nid, zone.idx(), 0x200);
        self.events.log(format!("page:(____ptrval____) refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:{pfn:#x}"));
        self.events.log(format!(
            "flags: {flags:#x}(slab|node={nid}|zone={}|lastcpupid=0x1fffff)",
            zone.idx()
        ));
        self.events.log(format!(
            "raw: {flags:016x} 0000000000000000 dead000000000122 0000000000000000"
        ));
        self.events
            .log("raw: 0000000000000000 0000000000000000 00000001ffffffff 0000000000000000");
        self.events.log("page dumped because: unmovable page");
    }

    /// `device_offline()`: start offlining block `id`. Returns
    /// [`OfflineProgress::Retrying`] when the migration loop spins; the
    /// caller then waits and calls [`System::offline_retry`] or
    /// [`System::offline_signal`].
    pub fn device_offline(&mut self, id: u64) -> OfflineProgress {
        let Some(b) = self.blocks.get(&id) else {
            return OfflineProgress::Done(Err(HotplugError::NoSuchBlock));
        };
        if b.dev_offline {
            return OfflineProgress::Done(Ok(DeviceOutcome::AlreadyInState));
        }
        if b.state == BlockState::Offline {
            return self.finish_device_offline(id);
        }
        if b.state != BlockState::Online {
            return OfflineProgress::Done(Err(HotplugError::Invalid("block is not online")));
        }
        let Some(zone) = b.zone else {
            return OfflineProgress::Done(Err(HotplugError::Invalid(
                "block spans several zones or nodes",
            )));
        };
        let nid = b.nid.unwrap_or(0);
        let v = b.nr_vmemmap_pages;
        let (start, nr) = self.block_range(id);
        let (pfn, n) = (start + v, nr - v);
        self.blocks.get_mut(&id).expect("block exists").state = BlockState::GoingOffline;
        self.touch_block(id);
        if v > 0 {
            self.adjust_present(id, zone, -(v as i64));
        }
        let fail = |s: &mut System, e: HotplugError| {
            if v > 0 {
                s.adjust_present(id, zone, v as i64);
            }
            let blk = s.blocks.get_mut(&id).expect("block exists");
            blk.state = BlockState::Online;
            if blk.pages.is_isolated() {
                blk.pages.undo_isolation();
            }
            OfflineProgress::Done(Err(e))
        };
        let b = &self.blocks[&id];
        if b.pages.present() < nr {
            return fail(self, HotplugError::Invalid("memory holes"));
        }
        // Isolation: PageReserved anywhere, unmovable pages in kernel zones.
        let busy = match zone {
            ZoneType::Movable => b.pages.first(|s| s == PageState::Reserved),
            _ => b.pages.first_unmovable(),
        };
        if let Some(off) = busy {
            self.dump_unmovable_page(pfn + off, nid, zone);
            let pages = &mut self.blocks.get_mut(&id).expect("block exists").pages;
            pages.isolation_failed_at(off);
            return fail(self, HotplugError::Busy("unmovable page"));
        }
        self.blocks
            .get_mut(&id)
            .expect("block exists")
            .pages
            .isolate();
        // node_states_check_changes_offline (after isolation): the 6.1
        // status fields; mainline's NODE_REMOVING_LAST_MEMORY condition
        // (nr_pages >= node_present_pages) is the same as the second one.
        let node = &self.nodes[&nid];
        let kernel_present = node.kernel_present_pages();
        let all_present = kernel_present + node.zone(ZoneType::Movable).present;
        let clear_normal = zone.is_kernel() && n >= kernel_present;
        let clear_memory = n >= all_present;
        let status = |c: bool| if c { nid as i32 } else { -1 };
        let arg = self.memory_notify(pfn, n, status(clear_normal), status(clear_memory));
        let node_event = self.version == KernelVersion::Mainline && clear_memory;
        let vetoed = match node_event {
            true => self.node_notify(NodeAction::RemovingLastMemory, nid),
            false => Ok(()),
        }
        .and_then(|()| self.notify(MemAction::GoingOffline, arg));
        if let Err(e) = vetoed {
            let _ = self.notify(MemAction::CancelOffline, arg);
            if node_event {
                let _ = self.node_notify(NodeAction::CancelRemovingLastMemory, nid);
            }
            return fail(self, e);
        }
        self.offlining = Some(InFlightOffline {
            id,
            zone,
            arg,
            clear_normal,
            clear_memory,
            node_event,
        });
        self.offline_retry()
    }

    /// One more pass of the migration loop of the offline in flight
    /// (`do_migrate_range` over the block, then the checks that make
    /// `offline_pages` go round again).
    pub fn offline_retry(&mut self) -> OfflineProgress {
        let Some(inflight) = self.offlining else {
            return OfflineProgress::Done(Err(HotplugError::Invalid("no offline in flight")));
        };
        let id = inflight.id;
        let p = &self.blocks[&id].pages;
        let failure = p.migrate_failure;
        let stuck_movable = match failure {
            Some(_) => p.migratable_pages(),
            None => self.migrate_out(id, inflight.zone),
        };
        let p = &self.blocks[&id].pages;
        if stuck_movable > 0 {
            if failure.is_none() {
                self.start_retry_log(id);
            }
            return OfflineProgress::Retrying {
                reason: match failure {
                    Some(MigrateFailure::NoMemory) => "migration fails with -ENOMEM",
                    Some(MigrateFailure::Again) => "migration fails with -EAGAIN",
                    None => "no memory to migrate to (-ENOMEM)",
                },
            };
        }
        if p.count(PageState::Pinned) > 0 {
            return OfflineProgress::Retrying {
                reason: "pinned pages cannot be migrated",
            };
        }
        if p.count(PageState::Unmovable) > 0 {
            return OfflineProgress::Retrying {
                reason: "unmovable pages in ZONE_MOVABLE",
            };
        }
        if !self.hugetlb_migrate_out(id) {
            return OfflineProgress::Retrying {
                reason: "no huge page to migrate to (-ENOMEM)",
            };
        }
        if let Err(e) = self.hugetlb_dissolve(id) {
            return self.offline_abort(e);
        }
        self.offlining = None;
        self.retry_log = None;
        self.complete_offline(inflight)
    }

    /// A signal arrived while the offline in flight was retrying: undo and
    /// fail with EINTR (spec 02 §7.2 U).
    pub fn offline_signal(&mut self) -> OfflineProgress {
        self.offline_abort(HotplugError::Interrupted)
    }

    /// The undo path U of the offline in flight (spec 02 §7.2): cancel
    /// events, the block back online, `err` to the writer.
    fn offline_abort(&mut self, err: HotplugError) -> OfflineProgress {
        self.retry_log = None;
        let Some(inflight) = self.offlining.take() else {
            return OfflineProgress::Done(Err(HotplugError::Invalid("no offline in flight")));
        };
        let _ = self.notify(MemAction::CancelOffline, inflight.arg);
        if inflight.node_event {
            let nid = self.blocks[&inflight.id].nid.unwrap_or(0);
            let _ = self.node_notify(NodeAction::CancelRemovingLastMemory, nid);
        }
        let v = self.blocks[&inflight.id].nr_vmemmap_pages;
        if v > 0 {
            self.adjust_present(inflight.id, inflight.zone, v as i64);
        }
        let blk = self.blocks.get_mut(&inflight.id).expect("block exists");
        blk.state = BlockState::Online;
        blk.pages.undo_isolation();
        self.touch_block(inflight.id);
        OfflineProgress::Done(Err(err))
    }

    /// Migrate block `id`'s movable pages, lowest first, to pages that
    /// `alloc_migration_target` gets (`GFP_USER | __GFP_MOVABLE |
    /// __GFP_RETRY_MAYFAIL`, plus `__GFP_HIGHMEM` from ZONE_MOVABLE): other
    /// nodes with memory first, the same node only when there is none;
    /// never below a zone's min watermark. Returns how many pages could not
    /// be migrated (-ENOMEM).
    fn migrate_out(&mut self, id: u64, zone: ZoneType) -> u64 {
        // do_migrate_range: the movable pages (LRU and balloon) in pfn
        // order; once a target cannot be allocated, the rest fail too.
        let runs: Vec<(u64, u64, PageState)> = self.blocks[&id]
            .pages
            .runs()
            .filter(|r| matches!(r.2, PageState::Movable | PageState::Balloon))
            .collect();
        if runs.is_empty() {
            return 0;
        }
        let src = (self.blocks[&id].nid.unwrap_or(0), zone);
        let nids = self.migration_nodes(id);
        let class = match zone {
            ZoneType::Movable => ZoneType::Movable,
            _ => ZoneType::Normal,
        };
        let mut stuck = 0;
        let mut moved = false;
        for (start, len, state) in runs {
            if stuck > 0 {
                stuck += len;
                continue;
            }
            let req = AllocRequest {
                state,
                nids: nids.clone(),
                class,
                watermark: true,
                exclude: Some(id),
            };
            let mut placed = 0;
            for (t, lo, hi) in self.place_pages(&req, len) {
                placed += hi - lo;
                if state == PageState::Balloon {
                    let (nid, dst) = self.page_node_zone(t, lo);
                    self.move_managed(src, (nid, dst.unwrap_or(zone)), hi - lo);
                    self.vm_events.balloon_migrate += hi - lo;
                }
            }
            self.vm_events.pgmigrate_success += placed;
            let pages = &mut self.blocks.get_mut(&id).expect("block exists").pages;
            pages.assign(start, start + placed, None);
            moved |= placed > 0;
            stuck += len - placed;
        }
        if moved {
            // Free counts moved (meminfo, zoneinfo); no block's attributes.
            self.touch_global();
        }
        stuck
    }

    /// The tail of `offline_pages` and `memory_block_offline` after a
    /// successful migration loop.
    fn complete_offline(&mut self, f: InFlightOffline) -> OfflineProgress {
        let id = f.id;
        let b = &self.blocks[&id];
        let nid = b.nid.unwrap_or(0);
        let v = b.nr_vmemmap_pages;
        let (start, nr) = self.block_range(id);
        let managed = (nr - v).saturating_sub(b.pages.count(PageState::DriverOffline));
        let zone = f.zone;
        {
            let z = self.node_mut(nid).zone_mut(zone);
            z.managed = z.managed.saturating_sub(managed);
        }
        self.adjust_present(id, zone, -((nr - v) as i64));
        self.recompute_watermarks();
        if !self.nodes[&nid].zone(zone).populated() {
            self.zonelist_rebuild();
        }
        let node = self.node_mut(nid);
        if f.clear_normal {
            node.has_normal_memory = false;
        }
        if f.clear_memory {
            node.has_memory = false;
        }
        if f.node_event {
            let _ = self.node_notify(NodeAction::RemovedLastMemory, nid);
        }
        let _ = self.notify(MemAction::Offline, f.arg);
        let blk = self.blocks.get_mut(&id).expect("block exists");
        blk.zone = None;
        blk.state = BlockState::Offline;
        // Pages of the running kernel that were in this block are gone with
        // it; the block comes back with its pageblocks movable.
        blk.pages
            .reassign(PageState::Unmovable, None, u64::MAX, true);
        blk.pages.undo_isolation();
        self.shrink_spans(nid, zone, start, start + nr);
        // Its MEM_OFFLINE call, with the block's pages gone from the counts.
        self.reserve_mem_notifier(MemAction::Offline);
        self.finish_device_offline(id)
    }

    fn finish_device_offline(&mut self, id: u64) -> OfflineProgress {
        self.events.uevent(
            UeventAction::Offline,
            format!("/devices/system/memory/memory{id}"),
            "memory",
        );
        let b = self.blocks.get_mut(&id).expect("block exists");
        b.dev_offline = true;
        if let Some(d) = b.dumped.as_mut() {
            d.valid_zones = None;
        }
        self.touch_block(id);
        OfflineProgress::Done(Ok(DeviceOutcome::Changed))
    }

    /// A driver hands `pages` of its `PageOffline` pages in block `id` to
    /// the buddy allocator (virtio-mem plugging sub-blocks of an added
    /// block): managed grows if the block is online.
    pub fn driver_release_pages(&mut self, id: u64, pages: u64) {
        let Some(b) = self.blocks.get_mut(&id) else {
            return;
        };
        let pages: u64 = b
            .pages
            .reassign(PageState::DriverOffline, None, pages, true)
            .iter()
            .map(|r| r.1 - r.0)
            .sum();
        if let (BlockState::Online, Some(z), Some(nid)) = (b.state, b.zone, b.nid) {
            self.node_mut(nid).zone_mut(z).managed += pages;
        }
        self.touch();
    }

    /// virtio-mem SBM unplugging up to `want` plugged sub-blocks of
    /// `sb_pages` pages from block `id` (`virtio_mem_sbm_unplug_any_sb`):
    /// the whole block in one shot when all of it is plugged and wanted,
    /// otherwise one sub-block at a time from the highest, passing over
    /// those that cannot be taken (see [`System::driver_take_range`]).
    /// Returns how many sub-blocks became `PageOffline`.
    pub fn driver_unplug_subblocks(&mut self, id: u64, sb_pages: u64, want: u64) -> u64 {
        let Some(b) = self.blocks.get(&id) else {
            return 0;
        };
        let per_block = b.pages.nr() / sb_pages.max(1);
        let plugged: Vec<u64> = (0..per_block)
            .filter(|&sb| {
                let (lo, hi) = (sb * sb_pages, (sb + 1) * sb_pages);
                !b.pages
                    .runs()
                    .any(|(s, n, st)| st == PageState::DriverOffline && s < hi && lo < s + n)
            })
            .collect();
        let whole = per_block * sb_pages;
        if want >= per_block
            && plugged.len() as u64 == per_block
            && self.driver_take_range(id, 0, whole)
        {
            return per_block;
        }
        let mut done = 0;
        for sb in plugged.into_iter().rev() {
            if done == want {
                break;
            }
            if self.driver_take_range(id, sb * sb_pages, (sb + 1) * sb_pages) {
                done += 1;
            }
        }
        self.touch();
        done
    }

    /// `alloc_contig_range` over pages [lo, hi) of block `id` for a driver:
    /// movable pages migrate to free memory of the node outside the block
    /// first; any other page in use (kernel, pinned, balloon, poisoned)
    /// fails it. The pages become `PageOffline` and leave `managed`.
    fn driver_take_range(&mut self, id: u64, lo: u64, hi: u64) -> bool {
        let b = &self.blocks[&id];
        let mut movable = 0;
        for (s, n, st) in b.pages.runs() {
            let overlap = (s + n).min(hi).saturating_sub(s.max(lo));
            if overlap == 0 {
                continue;
            }
            match st {
                PageState::Movable => movable += overlap,
                _ => return false,
            }
        }
        let online = b.state != BlockState::Offline;
        if movable > 0 {
            let Some(nid) = b.nid.filter(|_| online) else {
                return false;
            };
            let req = AllocRequest::migration_target(nid, Some(id));
            if self.request_free(&req) < movable {
                return false;
            }
            self.place_pages(&req, movable);
        }
        let b = self.blocks.get_mut(&id).expect("block exists");
        b.pages.assign(lo, hi, Some(PageState::DriverOffline));
        if let (true, Some(z), Some(nid)) = (online, b.zone, b.nid) {
            let zone = self.node_mut(nid).zone_mut(z);
            zone.managed = zone.managed.saturating_sub(hi - lo);
        }
        true
    }

    /// `device_offline()` that treats a retrying migration loop as a
    /// pending signal (the caller cannot wait): EINTR.
    pub fn device_offline_nowait(&mut self, id: u64) -> Result<DeviceOutcome, HotplugError> {
        match self.device_offline(id) {
            OfflineProgress::Done(r) => r,
            OfflineProgress::Retrying { .. } => match self.offline_signal() {
                OfflineProgress::Done(r) => r,
                OfflineProgress::Retrying { .. } => Err(HotplugError::Interrupted),
            },
        }
    }
}
