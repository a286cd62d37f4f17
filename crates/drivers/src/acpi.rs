//! ACPI memory devices (PNP0C80) as QEMU's pc-dimm presents them (spec 01
//! §8.3, §8.6, §8.8): DIMM slots and address assignment on the host side;
//! `acpi_memory_device_add` and the eject path on the guest side, with the
//! `_OST` events QEMU reports.

use crate::HostEvent;
use memhp_model::hotadd::AddRequest;
use memhp_model::hotplug::{DeviceOutcome, HotplugError};
use memhp_model::machine::DimmSpec;
use memhp_model::shared::Shared;
use memhp_model::units::PAGE_SHIFT;
use memhp_model::KernelVersion;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// `_OST` status codes.
pub const OST_SUCCESS: u32 = 0;
pub const OST_DEVICE_BUSY: u32 = 0x82;
pub const OST_EJECT_IN_PROGRESS: u32 = 0x84;
/// `_OST` source events.
pub const OST_SOURCE_INSERT: u32 = 1;
pub const OST_SOURCE_EJECT: u32 = 3;
/// `ACPI_OST_EC_OSPM_EJECT`: an eject the guest itself started.
pub const OST_SOURCE_OSPM_EJECT: u32 = 0x103;

/// DIMM placement alignment (the RAM backend's THP-sized alignment).
const DIMM_ALIGN: u64 = 2 << 20;

/// Why a host-side DIMM operation was refused (QEMU's errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimmError {
    #[error("memory hotplug is not enabled: the machine has no DIMM slots (use -m SIZE,slots=N,maxmem=M)")]
    NoHotplug,
    #[error("Duplicate device ID '{0}'")]
    Duplicate(String),
    #[error("Device '{0}' not found")]
    NotFound(String),
    #[error("no free slots available")]
    NoSlot,
    #[error(
        "not enough space, currently {used:#x} in use of total space for memory devices {total:#x}"
    )]
    NoRoom { used: u64, total: u64 },
    #[error("size {0:#x} must be a non-zero multiple of the page size")]
    BadSize(u64),
    #[error("could not find position in guest address space for memory device")]
    NoSpace,
    #[error("address {0:#x} is not aligned or overlaps another device")]
    BadAddr(u64),
    #[error("'DIMM property node has value {0}' which exceeds the number of numa nodes: {1}")]
    BadNode(u32, u32),
    #[error("device '{0}' has an unplug request pending")]
    Pending(String),
}

/// One plugged DIMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dimm {
    pub id: String,
    pub slot: u32,
    pub addr: u64,
    pub size: u64,
    pub node: u32,
    /// Guest side: the memory group and the blocks bound to the device.
    pub group: Option<u32>,
    pub blocks: Vec<u64>,
    /// The range was added (`enabled`).
    pub enabled: bool,
}

/// What a hot-add did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotaddReport {
    pub dimm: Dimm,
    pub events: Vec<HostEvent>,
}

/// What an unplug did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnplugReport {
    /// The DIMM's id.
    pub id: String,
    pub deleted: bool,
    pub events: Vec<HostEvent>,
}

/// The DIMM slots of a machine and the guest's ACPI memory-hotplug driver.
pub struct AcpiDimms {
    spec: Option<DimmSpec>,
    dimms: Mutex<BTreeMap<String, Dimm>>,
}

/// `acpi_scan_attach_handler`: the memory hotplug scan handler took the
/// slot's device (its `attach` callback succeeded), so the device can be
/// ejected.
fn attach_handler(sys: &mut memhp_model::System, slot: u32) {
    if let Some(devices) = sys.acpi_memory.as_mut() {
        devices.attached.insert(slot);
    }
}

/// QEMU's placement of a memory device of `size` bytes in the device-memory
/// region, around the devices in it (`used`): every device's size counts
/// against the capacity (`memory_device_check_addable`); then the address
/// asked for, if aligned to `align` and free, or else the lowest free one
/// aligned to `align` at the region's base or after a device
/// (`memory_device_get_free_addr`).
pub(crate) fn place_memory_device(
    region: &DimmSpec,
    used: &[(u64, u64)],
    size: u64,
    align: u64,
    at: Option<u64>,
) -> Result<u64, DimmError> {
    let in_use: u64 = used.iter().map(|&(s, e)| e - s).sum();
    if let Some(total) = region.capacity.filter(|&t| in_use + size > t) {
        return Err(DimmError::NoRoom {
            used: in_use,
            total,
        });
    }
    let fits = |a: u64| {
        a >= region.base
            && a + size <= region.base + region.size
            && used.iter().all(|&(s, e)| a + size <= s || a >= e)
    };
    match at {
        Some(a) if a % align == 0 && fits(a) => Ok(a),
        Some(a) => Err(DimmError::BadAddr(a)),
        None => {
            let mut candidates: Vec<u64> = vec![region.base];
            candidates.extend(used.iter().map(|&(_, e)| e.div_ceil(align) * align));
            candidates.sort_unstable();
            candidates
                .into_iter()
                .find(|&a| fits(a))
                .ok_or(DimmError::NoSpace)
        }
    }
}

fn firmware_node(slot: u32) -> String {
    memhp_model::qemu_acpi::memory_device_link(slot)
}

impl AcpiDimms {
    pub fn new(spec: Option<DimmSpec>) -> Self {
        AcpiDimms {
            spec,
            dimms: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Dimm>> {
        self.dimms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device-memory region and its limits (`None`: the machine has
    /// none, `-m` without `maxmem`).
    pub fn region(&self) -> Option<DimmSpec> {
        self.spec
    }

    /// The plugged DIMMs, by id (QMP `query-memory-devices`).
    pub fn list(&self) -> Vec<Dimm> {
        self.lock().values().cloned().collect()
    }

    /// QEMU `device_add pc-dimm`: pick a slot and address (first fit in
    /// the device memory region, around the DIMMs and `others`: the
    /// ranges other memory devices hold, virtio-mem's), then the guest's
    /// ACPI driver adds the memory (under `device_hotplug_lock`) and reports
    /// `_OST`.
    pub fn hotadd(
        &self,
        shared: &Shared,
        id: &str,
        size: u64,
        (node, addr): (Option<u32>, Option<u64>),
        others: &[(u64, u64)],
    ) -> Result<HotaddReport, DimmError> {
        let spec = self.spec.ok_or(DimmError::NoHotplug)?;
        let mut dimms = self.lock();
        if dimms.contains_key(id) {
            return Err(DimmError::Duplicate(id.to_string()));
        }
        if size == 0 || !size.is_multiple_of(4096) {
            return Err(DimmError::BadSize(size));
        }
        let node = node.unwrap_or(0);
        let nodes = shared.read(|s| s.nodes.len() as u32);
        // QEMU's own node numbers (proximity domains).
        if !shared.read(|s| s.nodes.contains_key(&s.node_of_pxm(node))) {
            return Err(DimmError::BadNode(node, nodes));
        }
        // pc_dimm_pre_plug: a free slot, then room for the device.
        let slot = (0..spec.slots)
            .find(|s| !dimms.values().any(|d| d.slot == *s))
            .ok_or(DimmError::NoSlot)?;
        let used: Vec<(u64, u64)> = dimms
            .values()
            .map(|d| (d.addr, d.addr + d.size))
            .chain(others.iter().copied())
            .collect();
        let addr = place_memory_device(&spec, &used, size, DIMM_ALIGN, addr)?;
        let mut dimm = Dimm {
            id: id.to_string(),
            slot,
            addr,
            size,
            node,
            group: None,
            blocks: Vec::new(),
            enabled: false,
        };
        // The slot's device now reports a DIMM (`_STA`), whatever the guest
        // makes of it.
        shared.modify(|sys| {
            if let Some(devices) = sys.acpi_memory.as_mut() {
                devices.plugged.insert(slot);
            }
            sys.touch();
        });
        self.acpi_memory_device_add(shared, &mut dimm);
        dimms.insert(id.to_string(), dimm.clone());
        let events = vec![HostEvent::AcpiOst {
            device: Some(id.to_string()),
            slot,
            source: OST_SOURCE_INSERT,
            status: OST_SUCCESS,
        }];
        Ok(HotaddReport { dimm, events })
    }

    /// `acpi_memory_device_add` + `acpi_memory_enable_device` (guest side),
    /// under `device_hotplug_lock` (`acpi_scan_lock` path): `__add_memory`
    /// with its own lock sequence and auto-online.
    fn acpi_memory_device_add(&self, shared: &Shared, dimm: &mut Dimm) {
        // `acpi_no_memhotplug`: the scan handler has no attach callback, so
        // the device is enumerated (and `_OST` reports success) but its
        // memory never added.
        if shared.read(|sys| sys.cmdline.acpi_no_memhotplug) {
            return;
        }
        let hp = shared.lock_hotplug();
        let Ok((group, memmap, nid)) = hp.with(|sys| {
            // The DIMM's _PXM is QEMU's node; the kernel's node may differ.
            let nid = sys.node_of_pxm(dimm.node);
            let group = sys.register_static_group(nid, dimm.size.div_ceil(4096))?;
            // 6.1 only passes MHP_MEMMAP_ON_MEMORY when the range qualifies.
            let memmap = match sys.version {
                KernelVersion::V6_1 => sys.mhp_supports_memmap_on_memory(dimm.size),
                KernelVersion::Mainline => true,
            };
            Ok::<_, HotplugError>((group, memmap, nid))
        }) else {
            return;
        };
        let req = AddRequest {
            nid,
            start: dimm.addr,
            size: dimm.size,
            resource_name: "System RAM".into(),
            parent_resource: None,
            group: Some(group),
            memmap_on_memory: memmap,
            driver_offline_pages: 0,
        };
        let added = hp.add_memory(&req);
        hp.with(|sys| {
            match added {
                Ok(ids) => {
                    for id in &ids {
                        if let Some(b) = sys.blocks.get_mut(id) {
                            b.firmware_node = Some(firmware_node(dimm.slot));
                        }
                    }
                    dimm.blocks = ids;
                    sys.layout_touch();
                    dimm.enabled = true;
                    dimm.group = Some(group);
                    attach_handler(sys, dimm.slot);
                }
                Err(HotplugError::Exists) => {
                    dimm.enabled = true;
                    let _ = sys.unregister_group(group);
                    attach_handler(sys, dimm.slot);
                }
                Err(_) => {
                    // acpi_memory_enable_device() enabled no range, then
                    // acpi_memory_device_add() gives the device up.
                    let dev = format!(
                        "acpi {}",
                        memhp_model::qemu_acpi::memory_device_name(dimm.slot)
                    );
                    sys.events.log(format!("{dev}: add_memory failed"));
                    sys.events
                        .log(format!("{dev}: acpi_memory_enable_device() error"));
                    let _ = sys.unregister_group(group);
                }
            }
            sys.touch();
        });
    }

    /// The machine's DIMM slots (`-m ...,slots=N`; 0 without memory
    /// hotplug).
    pub fn slots(&self) -> u32 {
        self.spec.map_or(0, |s| s.slots)
    }

    /// QEMU `device_del`: the guest's eject request handling
    /// (`acpi_device_hotplug` with source 3). See [`Self::eject`].
    pub fn unplug(&self, shared: &Shared, id: &str) -> Result<UnplugReport, DimmError> {
        let mut dimms = self.lock();
        let dimm = dimms
            .get(id)
            .cloned()
            .ok_or_else(|| DimmError::NotFound(id.to_string()))?;
        Ok(Self::eject(shared, &mut dimms, dimm, OST_SOURCE_EJECT))
    }

    /// `acpi_generic_hotplug_event` for an eject from `source` (the
    /// platform's request, 3, or the guest's own, 0x103): `_OST` (3, 0x84),
    /// then the blocks are offlined in two passes; if one stays online,
    /// what was offlined goes back online and the guest reports (`source`,
    /// 0x82); else the memory is removed, `_EJ0` makes QEMU delete the
    /// device, and the guest reports (`source`, 0) on the slot, which no
    /// longer names a device.
    fn eject(
        shared: &Shared,
        dimms: &mut BTreeMap<String, Dimm>,
        dimm: Dimm,
        source: u32,
    ) -> UnplugReport {
        let mut events = vec![HostEvent::AcpiOst {
            device: Some(dimm.id.clone()),
            slot: dimm.slot,
            source: OST_SOURCE_EJECT,
            status: OST_EJECT_IN_PROGRESS,
        }];
        let deleted = Self::hot_remove(shared, &dimm);
        events.extend(Self::eject_done(shared, dimms, &dimm, deleted, source));
        UnplugReport {
            id: dimm.id,
            deleted,
            events,
        }
    }

    /// A write of `1` to the slot's `eject` file (`acpi_eject_store`, the
    /// OSPM-initiated eject, `_OST` source 0x103): the same hot removal as
    /// an eject request from the platform (see [`Self::eject`]). `None` if
    /// no DIMM is in the slot.
    pub fn guest_eject(&self, shared: &Shared, slot: u32) -> Option<UnplugReport> {
        let mut dimms = self.lock();
        let dimm = dimms.values().find(|d| d.slot == slot).cloned()?;
        Some(Self::eject(shared, &mut dimms, dimm, OST_SOURCE_OSPM_EJECT))
    }

    /// `acpi_scan_hot_remove` for a DIMM: offline its blocks
    /// (`acpi_scan_try_to_offline`: `device_offline()` of each, its device
    /// lock then mem_hotplug_lock, and a second pass for those that failed;
    /// the eject cannot wait for a retrying offline). If one stays online,
    /// put back what was offlined and fail; else remove the memory.
    fn hot_remove(shared: &Shared, dimm: &Dimm) -> bool {
        let hp = shared.lock_hotplug();
        let offline = |b: u64| hp.device_offline(b, &|| true);
        let mut offlined = Vec::new();
        let mut failed = Vec::new();
        for &b in &dimm.blocks {
            match offline(b) {
                Ok(DeviceOutcome::Changed) => offlined.push(b),
                Ok(DeviceOutcome::AlreadyInState) => {}
                Err(_) => failed.push(b),
            }
        }
        for &b in &failed {
            match offline(b) {
                Ok(DeviceOutcome::Changed) => offlined.push(b),
                Ok(DeviceOutcome::AlreadyInState) => {}
                Err(_) => {
                    hp.with(|sys| sys.events.log(format!("memory memory{b}: Offline failed.")));
                    for b in offlined {
                        let _ = hp.device_online(b, None);
                    }
                    return false;
                }
            }
        }
        let removed = if dimm.enabled && !dimm.blocks.is_empty() {
            hp.with(|sys| {
                for &b in &dimm.blocks {
                    if let Some(blk) = sys.blocks.get_mut(&b) {
                        blk.firmware_node = None;
                    }
                }
                sys.layout_touch();
            });
            hp.remove_memory(dimm.addr, dimm.size).is_ok()
        } else {
            true
        };
        if removed {
            if let Some(g) = dimm.group {
                hp.with(|sys| {
                    let _ = sys.unregister_group(g);
                });
            }
        }
        removed
    }

    /// The end of an eject: QEMU deletes a removed DIMM (its slot's device
    /// then reports no DIMM and has no handler), or the guest reports the
    /// failure (`_OST` 0x82 from `source`).
    fn eject_done(
        shared: &Shared,
        dimms: &mut BTreeMap<String, Dimm>,
        dimm: &Dimm,
        deleted: bool,
        source: u32,
    ) -> Vec<HostEvent> {
        if !deleted {
            return vec![HostEvent::AcpiOst {
                device: Some(dimm.id.clone()),
                slot: dimm.slot,
                source,
                status: OST_DEVICE_BUSY,
            }];
        }
        dimms.remove(&dimm.id);
        shared.modify(|sys| {
            if let Some(devices) = sys.acpi_memory.as_mut() {
                devices.plugged.remove(&dimm.slot);
                devices.attached.remove(&dimm.slot);
            }
            sys.touch();
        });
        vec![
            HostEvent::DeviceDeleted {
                device: dimm.id.clone(),
            },
            HostEvent::AcpiOst {
                device: None,
                slot: dimm.slot,
                source,
                status: OST_SUCCESS,
            },
        ]
    }
}

/// Pages of a DIMM, for reports.
pub fn dimm_pages(d: &Dimm) -> u64 {
    d.size >> PAGE_SHIFT
}
