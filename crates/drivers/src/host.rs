//! The host side of a machine in one place: the shared system, its DIMM
//! slots and virtio-mem devices, kernel modules, and the commands a VMM (or
//! the oracle's host steps) issues: hot-add, unplug, virtio-mem resize, QOM
//! queries, module loading. Transports (control socket, scenario runner)
//! translate their input into [`HostCommand`]s.

use crate::acpi::{AcpiDimms, DimmError};
use crate::backends::{BackendError, MemoryBackends};
use crate::virtio_balloon::{BalloonError, VirtioBalloon};
use crate::virtio_mem::{VirtioMemDevices, VirtioMemError};
use crate::{qdev_id, HostEvent};
use memhp_model::machine::{DimmSpec, MachineSpec};
use memhp_model::shared::Shared;
use memhp_model::{BootError, System};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A command for the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCommand {
    /// A DIMM with a memory backend of its own (`mem-ID`, created here and
    /// deleted with the DIMM): `object-add` then `device_add pc-dimm`.
    Hotadd {
        id: String,
        size: u64,
        node: Option<u32>,
        addr: Option<u64>,
    },
    /// The same with another device or backend: `object-add BACKEND` of
    /// `mem-ID`, then `device_add DRIVER` on it (`pc-dimm`, or a hot-plugged
    /// `virtio-mem-pci` whose requested size starts at 0), as the oracle's
    /// `@hotadd ID SIZE [driver=D] [backend=B]`. If `device_add` fails the
    /// backend stays, as in QEMU.
    HotaddDevice {
        id: String,
        size: u64,
        node: Option<u32>,
        addr: Option<u64>,
        driver: String,
        backend: String,
    },
    /// `object-add` of a memory backend.
    ObjectAdd {
        qom_type: String,
        id: String,
        size: u64,
        /// A file backend's file.
        mem_path: Option<String>,
    },
    /// `object-del`.
    ObjectDel { id: String },
    /// `device_add DRIVER` (`pc-dimm`, `virtio-mem-pci`) on the backend
    /// `memdev`; without an id the device is anonymous (see [`qdev_id`]).
    DeviceAdd {
        id: Option<String>,
        memdev: String,
        driver: String,
        node: Option<u32>,
        addr: Option<u64>,
    },
    /// `device_del`.
    Unplug { id: String },
    /// `qom-set requested-size` of a virtio-mem device.
    VmemResize { id: String, size: u64 },
    /// `qom-get PATH PROPERTY`.
    QomGet { path: String, property: String },
    /// `qom-set PATH PROPERTY VALUE`.
    QomSet {
        path: String,
        property: String,
        value: Value,
    },
    /// `query-memory-devices`.
    QueryMemoryDevices,
    /// `query-acpi-ospm-status`.
    QueryAcpiOspmStatus,
    /// `query-memory-size-summary`.
    QueryMemorySizeSummary,
    /// `query-memdev`.
    QueryMemdev,
    /// Guest `insmod` of a module and its dependencies.
    LoadModule { name: String },
    /// Guest `rmmod`.
    UnloadModule { name: String },
    /// QMP `balloon`: the guest's target size in bytes.
    Balloon { value: i64 },
    /// QMP `query-balloon`.
    QueryBalloon,
}

/// Why a host command failed (QMP `GenericError` text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Dimm(#[from] DimmError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    VirtioMem(#[from] VirtioMemError),
    #[error(transparent)]
    Balloon(#[from] BalloonError),
    /// `qom-get`/`qom-set` of a property the device's type lacks.
    #[error("Property '{0}.{1}' not found")]
    NoProperty(&'static str, String),
    /// `qom-get`/`qom-set` of a path that names nothing.
    #[error("Device '{0}' not found")]
    NoPath(String),
    /// `qom-set` of a read-only property.
    #[error("Property '{0}.{1}' is not writable")]
    NotWritable(&'static str, String),
    /// `qom-set` of a qdev property once the device is realized (`device`:
    /// its id; virtio-mem's properties belong to the anonymous virtio
    /// device inside the PCI function).
    #[error("Attempt to set property '{property}' on {} (type '{kind}') after it was realized", .device.as_ref().map_or("anonymous device".to_string(), |d| format!("device '{d}'")))]
    Realized {
        property: String,
        device: Option<String>,
        kind: &'static str,
    },
    /// `qom-set` of virtio-mem's `block-size`.
    #[error("'{0}' cannot be changed")]
    Unchangeable(String),
    /// A `qom-set` value of the wrong type.
    #[error("Parameter '{0}' expects uint64")]
    NotUint64(String),
    #[error("module {0} not found")]
    NoModule(String),
    #[error("module {0} is in use")]
    ModuleInUse(String),
    #[error("nvdimm is not enabled: missing 'nvdimm' in '-M'")]
    NvdimmDisabled,
    #[error("'{0}' is not a valid device model name")]
    BadDriver(String),
    #[error("virtio based memory devices cannot be unplugged.")]
    VirtioMemUnplug,
    #[error("memory devices (e.g. for memory hotplug) are not supported by the machine")]
    NoDeviceMemory,
    /// `QERR_INVALID_PARAMETER_VALUE` for an id `id_wellformed()` refuses.
    #[error("Parameter 'id' expects an identifier")]
    BadId,
    /// `device_del` of something in the QOM tree that is not a device.
    #[error("{0} is not a hotpluggable device")]
    NotHotpluggable(String),
}

/// A hot-plugged virtio-mem device's block size: a RAM backend's THP size.
const VIRTIO_MEM_DEFAULT_BLOCK: u64 = 2 << 20;

/// The outcome of a command: its QMP return value and the events it caused.
#[derive(Clone, Debug, PartialEq)]
pub struct HostReply {
    pub value: Value,
    pub events: Vec<HostEvent>,
    /// For module loads: `(file, rc)` per insmod actually run.
    pub insmods: Vec<(String, i32)>,
}

impl HostReply {
    fn value(value: Value) -> Self {
        HostReply {
            value,
            events: Vec::new(),
            insmods: Vec::new(),
        }
    }
}

/// The user a `-numa node,memdev=` backend is bound to: `numa-nodeN`.
pub const NUMA_BACKEND_USER: &str = "numa-node";

/// QOM type names in QEMU's messages.
const PC_DIMM: &str = "pc-dimm";
const VIRTIO_MEM_PCI: &str = "virtio-mem-pci";

/// The device key a `qom-get`/`qom-set` path names: an anonymous device's
/// own path, else its last component (`/machine/peripheral/ID` or a
/// partial path `ID`).
fn qom_key(path: &str) -> &str {
    match qdev_id::is_anonymous(path) {
        true => path,
        false => path.rsplit('/').next().unwrap_or(""),
    }
}

/// A booted machine with its devices.
pub struct Host {
    pub shared: Arc<Shared>,
    pub dimms: AcpiDimms,
    pub backends: MemoryBackends,
    pub vmem: VirtioMemDevices,
    pub balloon: VirtioBalloon,
    /// QEMU's `-m` size (the boot RAM).
    ram_size: u64,
    modules: Mutex<BTreeSet<String>>,
    /// DIMMs given on QEMU's command line (present at boot).
    coldplugged: Mutex<BTreeSet<String>>,
    /// Events QEMU sent without a command (the guest ejected a DIMM).
    async_events: Mutex<Vec<HostEvent>>,
    /// Devices added without an id so far (QEMU's `anon_count`).
    anonymous: std::sync::atomic::AtomicU32,
    /// The last `_OST` (source, status) the guest reported per DIMM slot.
    ospm: Mutex<std::collections::BTreeMap<u32, (u32, u32)>>,
}

/// Modules the guest can load, with their dependencies in load order.
fn module_deps(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "memory-notifier-error-inject" | "memory_notifier_error_inject" => {
            &["notifier-error-inject", "memory-notifier-error-inject"]
        }
        "notifier-error-inject" => &["notifier-error-inject"],
        "virtio_pci" => &[
            "virtio_ring",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio",
            "virtio_pci",
        ],
        "virtio_mem" => &["virtio_ring", "virtio", "virtio_mem"],
        "virtio_balloon" => &["virtio_ring", "virtio", "virtio_balloon"],
        _ => return None,
    })
}

/// `virtballoon_probe` of the balloon function, once the transport bound it.
fn probe_balloon(sys: &mut System) {
    if let Some(bus) = sys.pci.as_mut() {
        if let Some(slot) = bus.slot_of(memhp_model::pci::PciKind::VirtioBalloon) {
            bus.probe_virtio(slot, "virtio_balloon");
        }
    }
}

impl Host {
    /// Boot `spec` and set up its devices.
    pub fn boot(spec: &MachineSpec) -> Result<Host, BootError> {
        let mut sys = System::boot(spec)?;
        let base = spec.dimm.map_or(0x1_0000_0000, |d| d.base);
        let cold = crate::pci_firmware::cold_slots(
            spec.virtio_mem.len(),
            spec.balloon.as_ref().map(|b| b.pci_index),
        );
        crate::pci_firmware::assign(&mut sys, &cold);
        let vmem_slots: Vec<u32> = cold
            .iter()
            .filter(|f| f.kind == memhp_model::pci::PciKind::VirtioMem)
            .map(|f| f.slot)
            .collect();
        let vmem = VirtioMemDevices::new(&spec.virtio_mem, &vmem_slots, base);
        Ok(Host {
            shared: Arc::new(Shared::new(sys)),
            dimms: AcpiDimms::new(spec.dimm),
            backends: MemoryBackends::default(),
            vmem,
            balloon: VirtioBalloon::new(spec.balloon.clone()),
            ram_size: spec
                .nodes
                .iter()
                .flat_map(|n| n.mem.iter())
                .map(|&(s, e)| e - s)
                .sum(),
            modules: Mutex::new(BTreeSet::new()),
            coldplugged: Mutex::new(BTreeSet::new()),
            async_events: Mutex::new(Vec::new()),
            anonymous: std::sync::atomic::AtomicU32::new(0),
            ospm: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// A host around an already built system (e.g. seeded from a dump),
    /// without DIMM slots or virtio-mem devices.
    pub fn from_system(sys: System) -> Host {
        Host {
            shared: Arc::new(Shared::new(sys)),
            dimms: AcpiDimms::new(None),
            backends: MemoryBackends::default(),
            vmem: VirtioMemDevices::none(),
            balloon: VirtioBalloon::new(None),
            ram_size: 0,
            modules: Mutex::new(BTreeSet::new()),
            coldplugged: Mutex::new(BTreeSet::new()),
            async_events: Mutex::new(Vec::new()),
            anonymous: std::sync::atomic::AtomicU32::new(0),
            ospm: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// `-device pc-dimm,id=ID,memdev=MEMDEV` on QEMU's command line: the
    /// guest's ACPI driver adds the DIMM while it boots, so what that logs
    /// joins the boot log; QMP reports it as not hot-plugged.
    pub fn cold_plug_dimm(
        &self,
        id: &str,
        memdev: &str,
        at: (Option<u32>, Option<u64>),
    ) -> Result<(), HostError> {
        self.check_new_dimm(id)?;
        self.plug_dimm(id, memdev, at)?;
        self.coldplugged().insert(id.to_string());
        self.shared.modify(|s| {
            let lines = s.events.take_klog();
            s.bootlog.extend(lines);
        });
        Ok(())
    }

    /// The guest ejected the device of DIMM slot `slot` (a write of `1` to
    /// its `eject` file): on success QEMU deletes the DIMM and its memory
    /// backend is free again. What QEMU reports joins the events it sends
    /// on its own ([`Host::take_async_events`]). Nothing happens if the
    /// slot holds no DIMM.
    pub fn guest_eject(&self, slot: u32) {
        let Some(r) = self.dimms.guest_eject(&self.shared, slot) else {
            return;
        };
        if r.deleted {
            self.backends.release(&r.id);
            self.coldplugged().remove(&r.id);
        }
        self.async_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend({
                self.note_ost(&r.events);
                r.events
            });
    }

    /// The events QEMU sent on its own since the last call, in order: what
    /// the guest's ejects made it report, then virtio-mem's size changes.
    pub fn take_async_events(&self) -> Vec<HostEvent> {
        let mut events =
            std::mem::take(&mut *self.async_events.lock().unwrap_or_else(|e| e.into_inner()));
        events.extend(self.vmem.take_async_events());
        events
    }

    fn coldplugged(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.coldplugged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn modules(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.modules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a module is loaded.
    pub fn module_loaded(&self, name: &str) -> bool {
        self.modules().contains(&name.replace('_', "-"))
    }

    /// Run one command.
    pub fn execute(&self, cmd: &HostCommand) -> Result<HostReply, HostError> {
        let reply = self.run(cmd)?;
        self.note_ost(&reply.events);
        Ok(reply)
    }

    fn run(&self, cmd: &HostCommand) -> Result<HostReply, HostError> {
        match cmd {
            HostCommand::Hotadd {
                id,
                size,
                node,
                addr,
            } => self.hotadd(id, *size, (*node, *addr), "pc-dimm", "memory-backend-ram"),
            HostCommand::HotaddDevice {
                id,
                size,
                node,
                addr,
                driver,
                backend,
            } => self.hotadd(id, *size, (*node, *addr), driver, backend),
            HostCommand::ObjectAdd {
                qom_type,
                id,
                size,
                mem_path,
            } => {
                if !qdev_id::well_formed(id) {
                    return Err(HostError::BadId);
                }
                self.backends
                    .add(qom_type, id, *size, mem_path.as_deref(), false)?;
                Ok(HostReply::value(json!({})))
            }
            HostCommand::ObjectDel { id } => {
                self.backends.del(id)?;
                Ok(HostReply::value(json!({})))
            }
            HostCommand::DeviceAdd {
                id,
                memdev,
                driver,
                node,
                addr,
            } => {
                let key = match id {
                    Some(id) if !qdev_id::well_formed(id) => return Err(HostError::BadId),
                    Some(id) => id.clone(),
                    None => qdev_id::anonymous(
                        self.anonymous
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    ),
                };
                self.device_add(&key, memdev, driver, (*node, *addr))
            }
            HostCommand::Unplug { id: given } => {
                let id = match qdev_id::resolve(given) {
                    qdev_id::Target::Container => {
                        return Err(HostError::NotHotpluggable(given.clone()))
                    }
                    qdev_id::Target::Device(key) => key,
                };
                if self.vmem.list().iter().any(|v| v.spec.id == id) {
                    return Err(HostError::VirtioMemUnplug);
                }
                let r = self.dimms.unplug(&self.shared, &id).map_err(|e| match e {
                    DimmError::NotFound(_) => DimmError::NotFound(given.clone()),
                    e => e,
                })?;
                if r.deleted {
                    self.backends.release(&id);
                    self.coldplugged().remove(&id);
                }
                Ok(HostReply {
                    value: json!({}),
                    events: r.events,
                    insmods: Vec::new(),
                })
            }
            HostCommand::VmemResize { id, size } => {
                let r = self.vmem.resize(&self.shared, id, *size)?;
                Ok(HostReply {
                    value: json!({}),
                    events: r.events,
                    insmods: Vec::new(),
                })
            }
            HostCommand::QomGet { path, property } => self.qom_get(path, property),
            HostCommand::QomSet {
                path,
                property,
                value,
            } => self.qom_set(path, property, value),
            HostCommand::QueryMemoryDevices => Ok(HostReply::value(self.query_memory_devices())),
            HostCommand::QueryAcpiOspmStatus => Ok(HostReply::value(self.query_acpi_ospm_status())),
            HostCommand::QueryMemorySizeSummary => {
                Ok(HostReply::value(self.query_memory_size_summary()))
            }
            HostCommand::QueryMemdev => Ok(HostReply::value(self.query_memdev())),
            HostCommand::LoadModule { name } => self.load_module(name),
            HostCommand::UnloadModule { name } => {
                let key = name.replace('_', "-");
                if !self.modules().contains(&key) {
                    return Err(HostError::NoModule(name.clone()));
                }
                let kname = memhp_model::modules::module_name(name);
                if self.shared.read(|s| !s.module_users(&kname).is_empty()) {
                    return Err(HostError::ModuleInUse(name.clone()));
                }
                self.modules().remove(&key);
                self.shared.modify(|s| s.module_unloaded(name));
                if key == "memory-notifier-error-inject" {
                    self.shared.modify(System::unload_injector);
                }
                Ok(HostReply::value(json!({})))
            }
            HostCommand::Balloon { value } => {
                self.balloon
                    .set_target(&self.shared, self.vm_ram_size(), *value)?;
                Ok(HostReply::value(json!({})))
            }
            HostCommand::QueryBalloon => {
                let actual = self.balloon.actual(&self.shared, self.vm_ram_size())?;
                Ok(HostReply::value(json!({ "actual": actual })))
            }
        }
    }

    /// A device id not taken yet (`device_add` checks it first).
    fn check_new_dimm(&self, id: &str) -> Result<(), HostError> {
        let taken = self.dimms.list().iter().any(|d| d.id == id)
            || self.vmem.list().iter().any(|v| v.spec.id == id);
        match taken {
            true => Err(DimmError::Duplicate(id.to_string()).into()),
            false => Ok(()),
        }
    }

    /// `object-add BACKEND id=mem-ID size=SIZE` then `device_add DRIVER
    /// id=ID memdev=mem-ID`.
    fn hotadd(
        &self,
        id: &str,
        size: u64,
        at: (Option<u32>, Option<u64>),
        driver: &str,
        backend: &str,
    ) -> Result<HostReply, HostError> {
        let memdev = format!("mem-{id}");
        // Both the object-add and the device_add refuse an id that makes a
        // malformed backend id.
        if !qdev_id::well_formed(&memdev) {
            return Err(HostError::BadId);
        }
        self.check_new_dimm(id)?;
        self.backends.add(backend, &memdev, size, None, true)?;
        // A malformed device id ("1bad") fails the device_add only: the
        // backend stays, as in QEMU.
        if !qdev_id::well_formed(id) {
            return Err(HostError::BadId);
        }
        self.device_add(id, &memdev, driver, at)
    }

    /// `device_add`: a DIMM, or a virtio-mem device the guest sees appear
    /// on its PCI bus. QEMU's pc machine has no NVDIMM support unless asked
    /// for (`-M nvdimm=on`).
    fn device_add(
        &self,
        id: &str,
        memdev: &str,
        driver: &str,
        at: (Option<u32>, Option<u64>),
    ) -> Result<HostReply, HostError> {
        self.check_new_dimm(id)?;
        match driver {
            "pc-dimm" => self.plug_dimm(id, memdev, at),
            "virtio-mem-pci" => self.plug_virtio_mem(id, memdev, at.0),
            "nvdimm" => Err(HostError::NvdimmDisabled),
            other => Err(HostError::BadDriver(other.to_string())),
        }
    }

    /// `device_add pc-dimm`: DIMM `id` on backend `memdev`, placed and
    /// added by the guest's ACPI driver.
    fn plug_dimm(
        &self,
        id: &str,
        memdev: &str,
        at: (Option<u32>, Option<u64>),
    ) -> Result<HostReply, HostError> {
        let size = self.backends.bind(memdev, id)?;
        let vmem: Vec<(u64, u64)> = self
            .vmem
            .list()
            .iter()
            .map(|v| (v.addr, v.addr + v.spec.region_size))
            .collect();
        match self.dimms.hotadd(&self.shared, id, size, at, &vmem) {
            Ok(r) => Ok(HostReply {
                value: json!({}),
                events: r.events,
                insmods: Vec::new(),
            }),
            Err(e) => {
                self.backends.release(id);
                Err(e.into())
            }
        }
    }

    /// Remember each slot's last `_OST` (QEMU keeps it in the slot's
    /// `MemStatus` for `query-acpi-ospm-status`).
    fn note_ost(&self, events: &[HostEvent]) {
        let mut ospm = self.ospm.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            if let HostEvent::AcpiOst {
                slot,
                source,
                status,
                ..
            } = e
            {
                ospm.insert(*slot, (*source, *status));
            }
        }
    }

    /// `query-acpi-ospm-status`: each DIMM slot with the last `_OST` the
    /// guest reported for it and the DIMM in it, then each possible CPU
    /// (the ACPI CPU hotplug interface; CPUs the guest booted with have
    /// no id and report nothing).
    fn query_acpi_ospm_status(&self) -> Value {
        let slots = self.dimms.slots();
        let ospm = self.ospm.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let dimms = self.dimms.list();
        let mut out: Vec<Value> = (0..slots)
            .map(|slot| {
                let (source, status) = ospm.get(&slot).copied().unwrap_or((0, 0));
                let mut info = json!({"slot": slot.to_string(), "slot-type": "DIMM", "source": source, "status": status});
                if let Some(d) = dimms.iter().find(|d| d.slot == slot) {
                    qdev_id::put_id(&mut info, "device", &d.id);
                }
                info
            })
            .collect();
        let cpus = self.shared.read(|s| s.nr_cpu_ids());
        out.extend((0..cpus).map(
            |cpu| json!({"slot": cpu.to_string(), "slot-type": "CPU", "source": 0, "status": 0}),
        ));
        Value::Array(out)
    }

    /// `query-memory-size-summary`: the boot RAM (`-m`) and what the
    /// memory devices plug (DIMMs whole, virtio-mem what it has plugged).
    fn query_memory_size_summary(&self) -> Value {
        json!({"base-memory": self.ram_size, "plugged-memory": self.vm_ram_size() - self.ram_size})
    }

    /// `query-memdev`: the memory backends, then the machine's own RAM
    /// backend `pc.ram` (absent when `-numa` nodes have backends of their
    /// own). QEMU walks a GLib hash table; the order here (command-line
    /// backends as given, then the others by id, `pc.ram` last) is the one
    /// the recorded guests showed (`other-build/qmp-props`).
    fn query_memdev(&self) -> Value {
        let memdev = |id: &str, size: u64, share: bool| json!({"dump": true, "host-nodes": [], "id": id, "merge": true, "policy": "default", "prealloc": false, "reserve": true, "share": share, "size": size});
        let backends = self.backends.list();
        let (boot, runtime): (Vec<_>, Vec<_>) = backends.iter().partition(|(_, b)| b.command_line);
        let mut out: Vec<Value> = boot
            .iter()
            .chain(runtime.iter())
            .map(|(id, b)| memdev(id, b.size, b.share))
            .collect();
        let numa_backed = backends.iter().any(|(_, b)| {
            b.user
                .as_deref()
                .is_some_and(|u| u.starts_with(NUMA_BACKEND_USER))
        });
        if !numa_backed {
            out.push(memdev("pc.ram", self.ram_size, false));
        }
        Value::Array(out)
    }

    /// QEMU's `get_current_ram_size()`: the boot RAM plus the DIMMs and
    /// what the virtio-mem devices have plugged.
    fn vm_ram_size(&self) -> u64 {
        self.ram_size
            + self.dimms.list().iter().map(|d| d.size).sum::<u64>()
            + self.vmem.list().iter().map(|v| v.plugged).sum::<u64>()
    }

    /// `insmod virtio_pci`: each virtio PCI device's interrupt link is
    /// enabled (slot 2 and up in QEMU's argument order; SeaBIOS routes
    /// LNKA–LNKD to IRQs 10, 10, 11, 11); hot-plugged devices, which the
    /// firmware never saw, are enabled first. Then the transport binds the
    /// virtio-mem devices.
    fn load_virtio_pci(&self) {
        let vmem = self.vmem.list();
        let boot = vmem.iter().filter(|v| !v.hotplugged).count()
            + usize::from(self.balloon.spec().is_some());
        let mut lines = Vec::new();
        for k in 0..boot {
            self.enable_link(2 + k as u32, &mut lines);
        }
        for v in vmem.iter().filter(|v| v.hotplugged && !v.bound) {
            self.enable_hotplugged(v, &mut lines);
        }
        self.log(lines);
        // The transport binds every virtio function (each becomes the
        // next `virtioN`); a driver already loaded probes its device.
        let balloon_driver = self.modules().contains("virtio-balloon");
        self.shared.modify(|sys| {
            let slots = sys
                .pci
                .as_ref()
                .map(|b| b.unbound_virtio_slots())
                .unwrap_or_default();
            for slot in slots {
                crate::pci_firmware::bind(sys, u32::from(slot));
            }
            if balloon_driver {
                probe_balloon(sys);
            }
            sys.layout_touch();
        });
        self.vmem.load_transport(&self.shared);
    }

    /// Kernel-log lines of the guest.
    fn log(&self, lines: Vec<String>) {
        self.shared.modify(|sys| {
            for l in lines {
                sys.events.log(l);
            }
        });
    }

    /// `pci_enable_device` of a device the kernel assigned, then its link.
    fn enable_hotplugged(&self, v: &crate::virtio_mem::VirtioMem, lines: &mut Vec<String>) {
        lines.push(format!(
            "virtio-pci {}: enabling device (0000 -> 0002)",
            v.pci_name()
        ));
        self.enable_link(v.pci_slot, lines);
    }

    /// The interrupt link of `slot` (`(slot - 1) & 3`: LNKA..LNKD) is
    /// enabled once (the PCI bus keeps which are).
    fn enable_link(&self, slot: u32, lines: &mut Vec<String>) {
        use memhp_model::pci::{PciBus, LINK_IRQS};
        let link = PciBus::link_of(slot as u8);
        let newly = self.shared.modify(|sys| {
            sys.pci
                .as_mut()
                .is_some_and(|b| !std::mem::replace(&mut b.links_enabled[link], true))
        });
        if newly {
            lines.push(format!(
                "ACPI: \\_SB_.LNK{}: Enabled at IRQ {}",
                ["A", "B", "C", "D"][link],
                LINK_IRQS[link]
            ));
        }
    }

    /// `device_add virtio-mem-pci` (requested size 0, 2 MiB blocks): the
    /// device's region goes first-fit into device memory (aligned to its
    /// block size, around the DIMMs and the other devices), the device into
    /// the lowest free PCI slot; with the transport loaded it is bound at
    /// once, and probed if the driver is loaded.
    fn plug_virtio_mem(
        &self,
        id: &str,
        memdev: &str,
        node: Option<u32>,
    ) -> Result<HostReply, HostError> {
        let region = self.dimms.region().ok_or(HostError::NoDeviceMemory)?;
        let node = node.unwrap_or(0);
        let nodes = self.shared.read(|s| s.nodes.len() as u32);
        if node >= nodes {
            return Err(DimmError::BadNode(node, nodes).into());
        }
        let size = self.backends.bind(memdev, id)?;
        let placed = self.place_virtio_mem(&region, size);
        let addr = match placed {
            Ok(a) => a,
            Err(e) => {
                self.backends.release(id);
                return Err(e.into());
            }
        };
        let vmem = self.vmem.list();
        let balloon_slot = self.balloon.spec().map(|b| 2 + b.pci_index);
        let slot = (2..)
            .find(|s| !vmem.iter().any(|v| v.pci_slot == *s) && balloon_slot != Some(*s))
            .unwrap_or(2);
        let spec = memhp_model::machine::VirtioMemSpec {
            id: id.to_string(),
            node,
            region_size: size,
            block_size: VIRTIO_MEM_DEFAULT_BLOCK,
            requested_size: 0,
        };
        self.vmem.hotplug(&self.shared, spec, addr, slot);
        if self.vmem.transport_loaded() {
            if let Some(v) = self.vmem.list().into_iter().find(|v| v.spec.id == id) {
                let mut lines = Vec::new();
                self.enable_hotplugged(&v, &mut lines);
                self.log(lines);
            }
            self.vmem.bind_and_probe(&self.shared);
        }
        Ok(HostReply::value(json!({})))
    }

    /// Where QEMU puts a virtio-mem region of `size`: first fit in device
    /// memory, aligned to the block size, around the DIMMs and the other
    /// devices.
    fn place_virtio_mem(&self, region: &DimmSpec, size: u64) -> Result<u64, DimmError> {
        let used: Vec<(u64, u64)> = self
            .dimms
            .list()
            .iter()
            .map(|d| (d.addr, d.addr + d.size))
            .chain(
                self.vmem
                    .list()
                    .iter()
                    .map(|v| (v.addr, v.addr + v.spec.region_size)),
            )
            .collect();
        crate::acpi::place_memory_device(region, &used, size, VIRTIO_MEM_DEFAULT_BLOCK, None)
    }

    fn load_module(&self, name: &str) -> Result<HostReply, HostError> {
        let deps = module_deps(name).ok_or_else(|| HostError::NoModule(name.to_string()))?;
        let mut insmods = Vec::new();
        for dep in deps {
            let key = dep.replace('_', "-");
            if !self.modules().insert(key.clone()) {
                continue;
            }
            insmods.push((format!("{dep}.ko"), 0));
            self.shared.modify(|s| s.module_loaded(dep));
            match key.as_str() {
                "memory-notifier-error-inject" => self.shared.modify(|s| s.load_injector(0)),
                "virtio-pci" => self.load_virtio_pci(),
                "virtio-mem" => self.vmem.load_driver(&self.shared),
                "virtio-balloon" => {
                    self.balloon.load_driver(&self.shared);
                    self.shared.modify(|sys| {
                        probe_balloon(sys);
                        sys.layout_touch();
                    });
                }
                _ => {}
            }
        }
        Ok(HostReply {
            value: json!({}),
            events: Vec::new(),
            insmods,
        })
    }

    fn qom_get(&self, path: &str, property: &str) -> Result<HostReply, HostError> {
        let id = qom_key(path);
        if let Some(v) = self.vmem.list().into_iter().find(|v| v.spec.id == id) {
            let value = match property {
                "size" => json!(v.plugged),
                "block-size" => json!(v.spec.block_size),
                "memaddr" => json!(v.addr),
                "requested-size" => json!(v.spec.requested_size),
                "node" => json!(v.spec.node),
                _ => return Err(HostError::NoProperty(VIRTIO_MEM_PCI, property.into())),
            };
            return Ok(HostReply::value(value));
        }
        if let Some(d) = self.dimms.list().into_iter().find(|d| d.id == id) {
            let value = match property {
                "size" => json!(d.size),
                "addr" => json!(d.addr),
                "slot" => json!(d.slot),
                "node" => json!(d.node),
                _ => return Err(HostError::NoProperty(PC_DIMM, property.into())),
            };
            return Ok(HostReply::value(value));
        }
        Err(HostError::NoPath(path.to_string()))
    }

    /// `qom-set`: only virtio-mem's `requested-size` can change; QEMU's
    /// refusals for the rest (read-only properties, qdev properties of a
    /// realized device, virtio-mem's `block-size`).
    fn qom_set(&self, path: &str, property: &str, value: &Value) -> Result<HostReply, HostError> {
        let id = qom_key(path);
        let realized = |device: Option<String>, kind| HostError::Realized {
            property: property.to_string(),
            device,
            kind,
        };
        if self.vmem.list().iter().any(|v| v.spec.id == id) {
            return match property {
                "requested-size" => {
                    // QEMU's input visitor takes a negative number as its
                    // two's complement (for backward compatibility).
                    let size = match value {
                        Value::Number(n) => n
                            .as_u64()
                            .or_else(|| n.as_i64().map(|i| i as u64))
                            .ok_or_else(|| HostError::NotUint64(property.into()))?,
                        _ => return Err(HostError::NotUint64(property.into())),
                    };
                    self.run(&HostCommand::VmemResize {
                        id: id.to_string(),
                        size,
                    })
                }
                "block-size" => Err(HostError::Unchangeable(property.into())),
                "size" => Err(HostError::NotWritable("virtio-mem", property.into())),
                "node" | "memaddr" | "memdev" | "prealloc" | "unplugged-inaccessible" => {
                    Err(realized(None, "virtio-mem"))
                }
                _ => Err(HostError::NoProperty(VIRTIO_MEM_PCI, property.into())),
            };
        }
        if let Some(d) = self.dimms.list().into_iter().find(|d| d.id == id) {
            return match property {
                "addr" | "node" | "slot" | "memdev" => Err(realized(
                    qdev_id::reported_id(&d.id).map(str::to_string),
                    PC_DIMM,
                )),
                "size" => Err(HostError::NotWritable(PC_DIMM, property.into())),
                _ => Err(HostError::NoProperty(PC_DIMM, property.into())),
            };
        }
        Err(HostError::NoPath(path.to_string()))
    }

    /// `query-memory-devices`: every memory device by address
    /// (`memory_device_addr_sort`), whatever its kind or id.
    fn query_memory_devices(&self) -> Value {
        let cold = self.coldplugged().clone();
        let mut out: Vec<(u64, Value)> = self
            .dimms
            .list()
            .into_iter()
            .map(|d| {
                let mut data = json!({"addr": d.addr, "size": d.size, "slot": d.slot, "node": d.node, "memdev": format!("/objects/{}", self.backends.of(&d.id).unwrap_or_default()), "hotplugged": !cold.contains(&d.id), "hotpluggable": true});
                qdev_id::put_id(&mut data, "id", &d.id);
                (d.addr, json!({"type": "dimm", "data": data}))
            })
            .collect();
        out.extend(self.vmem.list().into_iter().map(|v| {
            let mut data = json!({"memaddr": v.addr, "size": v.plugged, "requested-size": v.spec.requested_size, "max-size": v.spec.region_size, "block-size": v.spec.block_size, "node": v.spec.node});
            qdev_id::put_id(&mut data, "id", &v.spec.id);
            if let Some(memdev) = self.backends.of(&v.spec.id) {
                data["memdev"] = json!(format!("/objects/{memdev}"));
            }
            (v.addr, json!({"type": "virtio-mem", "data": data}))
        }));
        out.sort_by_key(|&(addr, _)| addr);
        Value::Array(out.into_iter().map(|(_, v)| v).collect())
    }
}
