//! virtio-mem (spec 01 §8.3): the host sets `requested-size`, the guest
//! driver plugs or unplugs device memory and adds or removes it as
//! driver-managed `System RAM (virtio_mem)` in a dynamic memory group.
//!
//! * Sub Block Mode (device block smaller than a memory block): sub-blocks
//!   are plugged and unplugged, memory blocks are added one at a time and
//!   removed (offline first) when they become empty. Unplugged sub-blocks
//!   of an added block stay `PageOffline`: present, never managed.
//! * Big Block Mode (device block at least a memory block, or
//!   `virtio_mem.force_bbm`): whole big blocks of
//!   `max(device block, memory block)` (or `virtio_mem.bbm_block_size`) are
//!   plugged and added with one `add_memory_driver_managed` each, and
//!   unplugged with `offline_and_remove_memory`: offline big blocks first,
//!   then ones entirely in ZONE_MOVABLE, then any; with
//!   `virtio_mem.bbm_safe_unplug` (default) a big block whose online pages
//!   cannot be taken with `alloc_contig_range` is skipped (EBUSY) before
//!   anything is offlined.

use crate::pci_firmware;
use crate::HostEvent;
use memhp_model::hotadd::AddRequest;
use memhp_model::kstr::{kstrtobool, kstrtoull};
use memhp_model::machine::VirtioMemSpec;
use memhp_model::pages::PageState;
use memhp_model::pci::{PciFunction, PciKind, VIRTIO_BAR_SIZE};
use memhp_model::shared::{HotplugGuard, Shared};
use memhp_model::ZoneType;
use memhp_model::{BlockState, System};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Why a virtio-mem request was refused (QEMU's errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtioMemError {
    #[error("Device '{0}' not found")]
    NotFound(String),
    #[error("'requested-size' has to be multiples of 'block-size' ({0:#x})")]
    Unaligned(u64),
    #[error("'requested-size' cannot exceed the memory backend size({0:#x})")]
    TooLarge(u64),
}

/// One virtio-mem-pci device and its guest driver state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioMem {
    pub spec: VirtioMemSpec,
    /// `virtioN` index.
    pub index: u32,
    pub addr: u64,
    /// Bytes the device reports as plugged.
    pub plugged: u64,
    /// The guest driver is loaded.
    pub driver: bool,
    pub group: Option<u32>,
    /// How the driver manages the device (chosen when it probes).
    pub mode: Option<Mode>,
    /// SBM: plugged sub-blocks per added memory block (plugged from the
    /// start of the block, unplugged from its end).
    pub blocks: BTreeMap<u64, u64>,
    /// BBM: the added (plugged) big blocks, by big block id.
    pub big_blocks: BTreeSet<u64>,
    /// Its PCI slot on bus 0 (`0000:00:SS.0`).
    pub pci_slot: u32,
    /// The virtio transport (`virtio_pci`) took it: it is `virtioN`.
    pub bound: bool,
    /// Hot-plugged (`device_add`) rather than on QEMU's command line: the
    /// kernel, not the firmware, assigned and enables it.
    pub hotplugged: bool,
    /// The kernel's node for the device's `node` (a proximity domain:
    /// VIRTIO_MEM_F_ACPI_PXM), set when the driver probes it.
    pub nid: u32,
}

impl VirtioMem {
    /// A device not yet bound by the transport, nothing plugged.
    fn new(spec: VirtioMemSpec, index: u32, addr: u64, pci_slot: u32, hotplugged: bool) -> Self {
        let spec_node = spec.node;
        VirtioMem {
            spec,
            index,
            addr,
            plugged: 0,
            driver: false,
            group: None,
            mode: None,
            blocks: BTreeMap::new(),
            big_blocks: BTreeSet::new(),
            pci_slot,
            bound: false,
            hotplugged,
            nid: spec_node,
        }
    }

    /// Its region in pfns (half-open).
    fn pfn_range(&self) -> (u64, u64) {
        (self.addr >> 12, (self.addr + self.spec.region_size) >> 12)
    }

    /// Its PCI name (`0000:00:02.0`).
    pub fn pci_name(&self) -> String {
        pci_firmware::pci_name(self.pci_slot)
    }
}

impl VirtioMem {
    /// `virtio_mem_add_memory`: `add_memory_driver_managed` of
    /// `System RAM (virtio_mem)` below the device's resource, in its
    /// dynamic group (MHP_MERGE_RESOURCE | MHP_NID_IS_MGID); the pages of
    /// unplugged sub-blocks stay `PageOffline`.
    fn add_request(&self, start: u64, size: u64, driver_offline_pages: u64) -> AddRequest {
        AddRequest {
            nid: self.nid,
            start,
            size,
            resource_name: "System RAM (virtio_mem)".into(),
            parent_resource: Some(format!("virtio{}", self.index)),
            group: self.group,
            memmap_on_memory: false,
            driver_offline_pages,
        }
    }
}

/// The driver's mode of operation (`vm->in_sbm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sub Block Mode with this sub-block size.
    Sbm { sb_size: u64 },
    /// Big Block Mode with this big block size.
    Bbm { bb_size: u64 },
}

/// The driver's module parameters, as `virtio_mem.NAME=VALUE` on the kernel
/// command line (modprobe passes them on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverParams {
    /// `force_bbm` (default off).
    pub force_bbm: bool,
    /// `bbm_block_size` (0: automatic).
    pub bbm_block_size: u64,
    /// `bbm_safe_unplug` (default on).
    pub bbm_safe_unplug: bool,
    /// `unplug_online` (default on).
    pub unplug_online: bool,
}

impl Default for DriverParams {
    fn default() -> Self {
        DriverParams {
            force_bbm: false,
            bbm_block_size: 0,
            bbm_safe_unplug: true,
            unplug_online: true,
        }
    }
}

impl DriverParams {
    /// The `virtio_mem.*` parameters of a kernel command line; a value the
    /// kernel would refuse keeps the default and is reported as the kernel
    /// logs it.
    pub fn from_cmdline(cmdline: &str) -> (DriverParams, Vec<String>) {
        let mut p = DriverParams::default();
        let mut log = Vec::new();
        for word in cmdline.split_whitespace() {
            let Some(rest) = word.strip_prefix("virtio_mem.") else {
                continue;
            };
            let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
            let flag = |v: &str| {
                if v.is_empty() {
                    Ok(true)
                } else {
                    kstrtobool(v.as_bytes())
                }
            };
            let ok = match name {
                "force_bbm" => flag(value).map(|b| p.force_bbm = b).is_ok(),
                "bbm_safe_unplug" => flag(value).map(|b| p.bbm_safe_unplug = b).is_ok(),
                "unplug_online" => flag(value).map(|b| p.unplug_online = b).is_ok(),
                "bbm_block_size" => kstrtoull(value.as_bytes())
                    .map(|n| p.bbm_block_size = n)
                    .is_ok(),
                _ => {
                    log.push(format!("virtio_mem: unknown parameter '{name}' ignored"));
                    true
                }
            };
            if !ok {
                log.push(format!(
                    "virtio_mem: `{value}' invalid for parameter `{name}'"
                ));
            }
        }
        (p, log)
    }

    /// `virtio_mem_init`: SBM when a sub-block (at least a pageblock) is
    /// smaller than a memory block and BBM is not forced; otherwise BBM with
    /// big blocks of `max(device block, memory block)`, or `bbm_block_size`
    /// when that is a larger power of two (else a warning).
    pub fn mode(
        &self,
        device_block_size: u64,
        memory_block_size: u64,
    ) -> (Mode, Option<&'static str>) {
        let sb_size = device_block_size.max(PAGEBLOCK_SIZE);
        if sb_size < memory_block_size && !self.force_bbm {
            return (Mode::Sbm { sb_size }, None);
        }
        let bb_size = device_block_size.max(memory_block_size);
        match self.bbm_block_size {
            0 => (Mode::Bbm { bb_size }, None),
            n if !n.is_power_of_two() => (
                Mode::Bbm { bb_size },
                Some("bbm_block_size is not a power of 2"),
            ),
            n if n < bb_size => (Mode::Bbm { bb_size }, Some("bbm_block_size is too small")),
            n => (Mode::Bbm { bb_size: n }, None),
        }
    }
}

/// 6.1 SBM: sub-blocks are at least a pageblock.
const PAGEBLOCK_SIZE: u64 = 2 << 20;
/// `VIRTIO_MEM_DEFAULT_OFFLINE_THRESHOLD`: memory the driver adds while it
/// stays offline, before it waits for onlining (at least two blocks).
const OFFLINE_THRESHOLD: u64 = 1 << 30;

/// What a resize did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResizeReport {
    pub size: u64,
    pub events: Vec<HostEvent>,
}

/// The virtio-mem devices of a machine.
pub struct VirtioMemDevices {
    devs: Arc<Mutex<Vec<VirtioMem>>>,
    /// The module parameters the driver was loaded with.
    params: Arc<Mutex<DriverParams>>,
    /// Size changes the driver made on its own (its workqueue), for the
    /// host to report.
    async_events: Arc<Mutex<Vec<HostEvent>>>,
    /// Whether the driver's memory notifier and workqueue are set up.
    worker: Mutex<bool>,
    /// The devices' regions, for the notifier (hot-plugged devices join).
    ranges: Arc<Mutex<Vec<(u64, u64)>>>,
    /// `virtio_pci` is loaded: devices are bound as they appear.
    transport: Mutex<bool>,
    /// `virtio_mem` is loaded: bound devices are probed as they appear.
    driver_loaded: Mutex<bool>,
}

/// A lock that survives a panicked holder.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VirtioMemDevices {
    /// Place the devices after the DIMM region base, in order (QEMU's
    /// device-memory allocator), in PCI slots `slots` (their BARs are the
    /// firmware's: [`crate::pci_firmware::assign`]).
    pub fn new(specs: &[VirtioMemSpec], slots: &[u32], device_mem_base: u64) -> Self {
        let mut addr = device_mem_base;
        let mut devs = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            // QEMU aligns a virtio-mem region to its device block size.
            addr = addr.div_ceil(spec.block_size) * spec.block_size;
            let slot = slots.get(i).copied().unwrap_or(2 + i as u32);
            devs.push(VirtioMem::new(spec.clone(), i as u32, addr, slot, false));
            addr += spec.region_size;
        }
        VirtioMemDevices::with(devs)
    }

    fn with(devs: Vec<VirtioMem>) -> Self {
        let ranges = devs.iter().map(VirtioMem::pfn_range).collect();
        VirtioMemDevices {
            devs: Arc::new(Mutex::new(devs)),
            params: Arc::new(Mutex::new(DriverParams::default())),
            async_events: Arc::new(Mutex::new(Vec::new())),
            worker: Mutex::new(false),
            ranges: Arc::new(Mutex::new(ranges)),
            transport: Mutex::new(false),
            driver_loaded: Mutex::new(false),
        }
    }

    /// Whether `virtio_pci` is loaded.
    pub fn transport_loaded(&self) -> bool {
        *locked(&self.transport)
    }

    /// QEMU `device_add virtio-mem-pci` (requested size 0): the device
    /// appears in PCI slot `slot`, the guest's PCI hotplug enumerates it and
    /// assigns its 64-bit BAR in the host bridge's 64-bit window. It is
    /// bound when the transport is loaded ([`Self::bind_and_probe`]).
    pub fn hotplug(&self, shared: &Shared, spec: VirtioMemSpec, addr: u64, slot: u32) {
        let mut devs = self.lock();
        let d = VirtioMem::new(spec, 0, addr, slot, true);
        let name = d.pci_name();
        shared.modify(|sys| {
            sys.events
                .log(format!("pci {name}: [1af4:1058] type 00 class 0x00ff00"));
            sys.events.log(format!(
                "pci {name}: BAR 4 [mem 0x00000000-{:#010x} 64bit pref]",
                VIRTIO_BAR_SIZE - 1
            ));
            let window = sys
                .iomem
                .top
                .iter_mut()
                .find(|r| r.name == "PCI Bus 0000:00" && r.start >= 1 << 32);
            if let Some(w) = window {
                let start = w.children.last().map_or(w.start, |c| c.end + 1);
                sys.events.log(format!(
                    "pci {name}: BAR 4 [mem {start:#x}-{:#x} 64bit pref]: assigned",
                    start + VIRTIO_BAR_SIZE - 1
                ));
                w.children.push(pci_firmware::bar(start, name.clone()));
                if let Some(bus) = sys.pci.as_mut() {
                    bus.add(PciFunction::virtio(
                        slot as u8,
                        PciKind::VirtioMem,
                        start,
                        true,
                    ));
                }
            }
            sys.layout_touch();
        });
        locked(&self.ranges).push(d.pfn_range());
        devs.push(d);
    }

    /// A machine without virtio-mem devices.
    pub fn none() -> Self {
        VirtioMemDevices::with(Vec::new())
    }

    /// Size changes since the last call that the driver made by itself
    /// (after memory in its range was onlined or offlined).
    pub fn take_async_events(&self) -> Vec<HostEvent> {
        std::mem::take(&mut *self.async_events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `virtio_mem_memory_notifier_cb` + the driver's workqueue: when
    /// memory in a device's range goes online or offline, the driver
    /// retries reaching the requested size (more can be plugged once added
    /// memory was onlined; unplug may succeed once it is offline). The
    /// callback only wakes the worker, which takes the hotplug lock itself
    /// after the operation that notified has finished.
    fn start_worker(&self, shared: &Arc<Shared>) {
        let mut started = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return;
        }
        *started = true;
        let ranges = Arc::clone(&self.ranges);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let tx = Mutex::new(tx);
        let cb: memhp_model::notifier::MemoryCallback = Arc::new(move |action, arg| {
            use memhp_model::events::MemAction;
            let ours = locked(&ranges)
                .iter()
                .any(|&(s, e)| arg.start_pfn < e && s < arg.start_pfn + arg.nr_pages);
            if ours && matches!(action, MemAction::Online | MemAction::Offline) {
                let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(());
            }
            memhp_model::notifier::NOTIFY_OK
        });
        let _ = shared.modify(|sys| {
            sys.memory_chain
                .register("virtio_mem_memory_notifier_cb", 0, cb)
        });
        let (weak, devs, params, events) = (
            Arc::downgrade(shared),
            Arc::clone(&self.devs),
            Arc::clone(&self.params),
            Arc::clone(&self.async_events),
        );
        let _ = std::thread::Builder::new()
            .name("memhp-virtio-mem".into())
            .spawn(move || {
                // Ends when the machine (and the callback's sender) is gone.
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    let Some(shared) = weak.upgrade() else { break };
                    let params = *params.lock().unwrap_or_else(|e| e.into_inner());
                    let mut devs = devs.lock().unwrap_or_else(|e| e.into_inner());
                    for d in devs.iter_mut().filter(|d| d.driver) {
                        if d.plugged == d.spec.requested_size {
                            continue;
                        }
                        let before = d.plugged;
                        sync_to_request(&shared, d, &params);
                        if d.plugged != before {
                            events.lock().unwrap_or_else(|e| e.into_inner()).push(
                                HostEvent::MemoryDeviceSizeChange {
                                    device: d.spec.id.clone(),
                                    size: d.plugged,
                                },
                            );
                        }
                    }
                }
            });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VirtioMem>> {
        self.devs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<VirtioMem> {
        self.lock().clone()
    }

    /// `insmod virtio_pci`: the transport binds every device (claims its
    /// BAR: `virtio-pci-modern`), and the driver, if loaded, probes them.
    pub fn load_transport(&self, shared: &Arc<Shared>) {
        *locked(&self.transport) = true;
        self.bind_and_probe(shared);
    }

    /// Bind the devices the transport has not bound yet (a hot-plugged one
    /// becomes the next `virtioN`), then probe them if the driver is
    /// loaded.
    pub fn bind_and_probe(&self, shared: &Arc<Shared>) {
        {
            let mut devs = self.lock();
            let mut next = devs.iter().filter(|d| d.bound).count() as u32;
            shared.modify(|sys| {
                for d in devs.iter_mut().filter(|d| !d.bound) {
                    d.bound = true;
                    // The transport's index is the lowest free one among
                    // all virtio devices (a balloon takes one too).
                    d.index = pci_firmware::bind(sys, d.pci_slot).unwrap_or(next);
                    next += 1;
                }
            });
        }
        if *locked(&self.driver_loaded) {
            self.probe(shared);
        }
    }

    /// `insmod virtio_mem`: the driver probes every bound device.
    pub fn load_driver(&self, shared: &Arc<Shared>) {
        *locked(&self.driver_loaded) = true;
        self.probe(shared);
    }

    /// `virtio_mem_probe` of each bound device not probed yet, then each
    /// plugs what its device requests: the plugging is the driver's queued
    /// work, which runs once the driver's registration has probed them all
    /// (recorded: a second device's probe lines come before the first
    /// one's hot-add).
    fn probe(&self, shared: &Arc<Shared>) {
        let mut devs = self.lock();
        if devs.iter().any(|d| d.bound && !d.driver) {
            self.start_worker(shared);
        }
        let mut probed = Vec::new();
        for (i, d) in devs.iter_mut().enumerate() {
            if !d.bound || d.driver {
                continue;
            }
            probed.push(i);
            d.driver = true;
            let hp = shared.lock_hotplug();
            let params = hp.with(|sys| {
                let name = format!("virtio{}", d.index);
                let (params, complaints) = DriverParams::from_cmdline(&sys.cmdline.raw);
                for c in complaints {
                    sys.events.log(c);
                }
                let (mode, warning) = params.mode(d.spec.block_size, sys.block_size);
                if let Some(w) = warning {
                    sys.events.log(format!("virtio_mem {name}: {w}"));
                }
                let log = |sys: &mut System, k: &str, v: String| {
                    sys.events.log(format!("virtio_mem {name}: {k}: {v}"))
                };
                log(sys, "start address", format!("{:#x}", d.addr));
                log(sys, "region size", format!("{:#x}", d.spec.region_size));
                log(
                    sys,
                    "device block size",
                    format!("{:#x}", d.spec.block_size),
                );
                d.nid = sys.node_of_pxm(d.spec.node);
                if let Some(bus) = sys.pci.as_mut() {
                    bus.probe_virtio(d.pci_slot as u8, "virtio_mem");
                }
                log(sys, "nid", d.nid.to_string());
                log(sys, "memory block size", format!("{:#x}", sys.block_size));
                let (mode, unit) = match mode {
                    Mode::Sbm { sb_size } => {
                        log(sys, "subblock size", format!("{sb_size:#x}"));
                        (mode, sys.block_size)
                    }
                    Mode::Bbm { bb_size } => {
                        log(sys, "big block size", format!("{bb_size:#x}"));
                        (mode, bb_size)
                    }
                };
                d.mode = Some(mode);
                d.group = sys.register_dynamic_group(d.nid, unit >> 12).ok();
                let _ = sys
                    .iomem
                    .request(d.addr, d.addr + d.spec.region_size - 1, &name, None);
                log(sys, "plugged size", format!("{:#x}", d.plugged));
                log(
                    sys,
                    "requested size",
                    format!("{:#x}", d.spec.requested_size),
                );
                // The virtio device's `driver` link appears.
                sys.layout_touch();
                params
            });
            drop(hp);
            *self.params.lock().unwrap_or_else(|e| e.into_inner()) = params;
        }
        let params = *self.params.lock().unwrap_or_else(|e| e.into_inner());
        for i in probed {
            sync_to_request(shared, &mut devs[i], &params);
        }
    }

    /// QMP `qom-set requested-size`: the guest reacts at once.
    pub fn resize(
        &self,
        shared: &Shared,
        id: &str,
        requested: u64,
    ) -> Result<ResizeReport, VirtioMemError> {
        let mut devs = self.lock();
        let d = devs
            .iter_mut()
            .find(|d| d.spec.id == id)
            .ok_or_else(|| VirtioMemError::NotFound(id.to_string()))?;
        if !requested.is_multiple_of(d.spec.block_size) {
            return Err(VirtioMemError::Unaligned(d.spec.block_size));
        }
        if requested > d.spec.region_size {
            return Err(VirtioMemError::TooLarge(d.spec.region_size));
        }
        d.spec.requested_size = requested;
        if d.driver {
            let name = format!("virtio{}", d.index);
            let plugged = d.plugged;
            shared.modify(|sys| {
                sys.events
                    .log(format!("virtio_mem {name}: plugged size: {plugged:#x}"));
                sys.events
                    .log(format!("virtio_mem {name}: requested size: {requested:#x}"));
            });
            let params = *self.params.lock().unwrap_or_else(|e| e.into_inner());
            sync_to_request(shared, d, &params);
        }
        Ok(ResizeReport {
            size: d.plugged,
            events: vec![HostEvent::MemoryDeviceSizeChange {
                device: id.to_string(),
                size: d.plugged,
            }],
        })
    }
}

/// Plug or unplug until `plugged == requested` or no progress is possible.
fn sync_to_request(shared: &Shared, d: &mut VirtioMem, params: &DriverParams) {
    match d.mode {
        Some(Mode::Sbm { sb_size }) => sbm_sync(shared, d, sb_size),
        Some(Mode::Bbm { bb_size }) => {
            let hp = shared.lock_hotplug();
            bbm_sync(&hp, d, bb_size, params);
            hp.with(|sys| sys.touch());
        }
        None => {}
    }
}

/// The memory block ids of big block `bb`.
fn bb_block_ids(sys: &System, bb: u64, bb_size: u64) -> std::ops::Range<u64> {
    let first = bb * bb_size / sys.block_size;
    first..first + bb_size / sys.block_size
}

/// `vm->offline_size`: bytes the driver added that are not online.
fn offline_size(sys: &System, d: &VirtioMem, bb_size: u64) -> u64 {
    d.big_blocks
        .iter()
        .flat_map(|&bb| bb_block_ids(sys, bb, bb_size))
        .filter(|id| {
            sys.blocks
                .get(id)
                .is_some_and(|b| b.state == BlockState::Offline)
        })
        .count() as u64
        * sys.block_size
}

/// BBM: plug and add whole big blocks (lowest free id first) while a whole
/// one is still missing and the offline threshold allows; or unplug whole
/// big blocks (highest id first) in the kernel's three passes.
fn bbm_sync(hp: &HotplugGuard, d: &mut VirtioMem, bb_size: u64, params: &DriverParams) {
    let first = d.addr.div_ceil(bb_size);
    let end = (d.addr + d.spec.region_size) / bb_size;
    let block_size = hp.read(|s| s.block_size);
    let threshold = OFFLINE_THRESHOLD.max(2 * block_size).max(2 * bb_size);
    while d.spec.requested_size.saturating_sub(d.plugged) >= bb_size {
        if hp.read(|sys| offline_size(sys, d, bb_size)) + bb_size > threshold {
            break; // -ENOSPC until memory gets onlined
        }
        let Some(bb) = (first..end).find(|bb| !d.big_blocks.contains(bb)) else {
            break;
        };
        let req = d.add_request(bb * bb_size, bb_size, 0);
        // Plugged at the device first; unplugged again if adding fails.
        if hp.add_memory(&req).is_err() {
            break;
        }
        d.big_blocks.insert(bb);
        d.plugged += bb_size;
    }
    let mut nb_bb = d.plugged.saturating_sub(d.spec.requested_size) / bb_size;
    for pass in 0..3 {
        let candidates: Vec<u64> = d.big_blocks.iter().rev().copied().collect();
        for bb in candidates {
            if nb_bb == 0 {
                return;
            }
            let online: Vec<Option<ZoneType>> = hp.read(|sys| {
                bb_block_ids(sys, bb, bb_size)
                    .filter_map(|id| sys.blocks.get(&id))
                    .filter(|b| b.state != BlockState::Offline)
                    .map(|b| b.zone)
                    .collect()
            });
            let skip = match pass {
                0 => !online.is_empty(),
                1 => online.iter().any(|z| *z != Some(ZoneType::Movable)),
                _ => false,
            };
            if skip {
                continue;
            }
            if bbm_offline_remove_and_unplug_bb(hp, bb, bb_size, params) {
                d.big_blocks.remove(&bb);
                d.plugged -= bb_size;
                nb_bb -= 1;
            }
        }
        if pass == 0 && !params.unplug_online {
            return;
        }
    }
}

/// `virtio_mem_bbm_offline_remove_and_unplug_bb`: with safe unplug, every
/// online section must first be fake-offlined (`alloc_contig_range`,
/// which fails on unmovable, pinned or reserved pages or pages that do not
/// migrate), else EBUSY and nothing changes; then
/// `offline_and_remove_memory` of the whole big block (which rolls its
/// own offlining back when a block refuses). Whether the big block is gone.
fn bbm_offline_remove_and_unplug_bb(
    hp: &HotplugGuard,
    bb: u64,
    bb_size: u64,
    params: &DriverParams,
) -> bool {
    if params.bbm_safe_unplug {
        let busy = hp.read(|sys| {
            bb_block_ids(sys, bb, bb_size)
                .filter_map(|id| sys.blocks.get(&id))
                .filter(|b| b.state != BlockState::Offline)
                .any(|b| {
                    let p = &b.pages;
                    p.count(PageState::Unmovable) > 0
                        || p.count(PageState::Pinned) > 0
                        || p.count(PageState::Reserved) > 0
                        || p.migrate_failure.is_some()
                })
        });
        if busy {
            return false;
        }
    }
    hp.offline_and_remove_memory(bb * bb_size, bb_size).is_ok()
}

/// SBM: plug or unplug sub-blocks until `plugged == requested` or no
/// progress is possible.
fn sbm_sync(shared: &Shared, d: &mut VirtioMem, sb: u64) {
    let hp = shared.lock_hotplug();
    {
        let block_size = hp.read(|sys| sys.block_size);
        let per_block = block_size / sb;
        let sb_pages = sb >> 12;
        // Plug: fill partially plugged blocks, then add new ones.
        while d.plugged < d.spec.requested_size {
            let need = (d.spec.requested_size - d.plugged) / sb;
            if need == 0 {
                break;
            }
            if let Some((&id, n)) = d.blocks.iter_mut().find(|(_, n)| **n < per_block) {
                let take = need.min(per_block - *n);
                *n += take;
                hp.with(|sys| sys.driver_release_pages(id, take * sb_pages));
                d.plugged += take * sb;
                continue;
            }
            let region_blocks = d.spec.region_size / block_size;
            let first = d.addr / block_size;
            let Some(id) = (first..first + region_blocks).find(|id| !d.blocks.contains_key(id))
            else {
                break;
            };
            let take = need.min(per_block);
            let req = d.add_request(id * block_size, block_size, (per_block - take) * sb_pages);
            if hp.add_memory(&req).is_err() {
                break;
            }
            d.blocks.insert(id, take);
            d.plugged += take * sb;
        }
        // Unplug (`virtio_mem_sbm_unplug_request`): offline blocks first,
        // then online ones, ZONE_MOVABLE before the kernel zones, partly
        // plugged before fully plugged, the highest block first in each
        // class. A block whose memory is busy is passed over.
        let order: Vec<u64> = hp.read(|sys| {
            let mut v: Vec<(u8, std::cmp::Reverse<u64>)> = d
                .blocks
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(&id, &n)| {
                    let b = sys.blocks.get(&id);
                    let offline = b.is_none_or(|b| b.state == BlockState::Offline);
                    let movable = b.and_then(|b| b.zone) == Some(ZoneType::Movable);
                    let class = match (offline, n < per_block, movable) {
                        (true, true, _) => 0,
                        (true, false, _) => 1,
                        (false, true, true) => 2,
                        (false, true, false) => 3,
                        (false, false, true) => 4,
                        (false, false, false) => 5,
                    };
                    (class, std::cmp::Reverse(id))
                })
                .collect();
            v.sort_unstable();
            v.into_iter().map(|(_, std::cmp::Reverse(id))| id).collect()
        });
        for id in order {
            let need = d.plugged.saturating_sub(d.spec.requested_size) / sb;
            if need == 0 {
                break;
            }
            let n = d.blocks[&id];
            let take = need.min(n);
            let start = id * block_size;
            let online = hp.read(|sys| {
                sys.blocks
                    .get(&id)
                    .is_some_and(|b| b.state != BlockState::Offline)
            });
            if online || take < n {
                // Sub-blocks go back to the device one by one (the whole
                // block in one shot when it can); busy ones are passed over.
                let got = hp.with(|sys| sys.driver_unplug_subblocks(id, sb_pages, take));
                d.plugged -= got * sb;
                *d.blocks.get_mut(&id).expect("listed") -= got;
                // An online block left without plugged memory is offlined
                // and removed; a failure there is "not critical": it stays,
                // online and fully unplugged.
                if online && got == n && hp.offline_and_remove_memory(start, block_size).is_ok() {
                    d.blocks.remove(&id);
                }
                continue;
            }
            // An offline block unplugged whole goes at once.
            if hp.remove_memory(start, block_size).is_ok() {
                d.blocks.remove(&id);
                d.plugged -= take * sb;
            }
        }
        hp.with(|sys| sys.touch());
    }
}
