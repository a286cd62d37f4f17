//! virtio-mem in Sub Block Mode (device block ≤ memory block; spec 01 §8.3):
//! the host sets `requested-size`, the guest driver plugs or unplugs
//! sub-blocks, adding memory blocks one at a time as driver-managed
//! `System RAM (virtio_mem)` in a dynamic memory group, and removing them
//! (offline first) when they become empty. Unplugged sub-blocks of an added
//! block stay `PageOffline`: present, never managed.

use crate::HostEvent;
use memhp_model::hotadd::AddRequest;
use memhp_model::iomem::Resource;
use memhp_model::machine::VirtioMemSpec;
use memhp_model::shared::Shared;
use memhp_model::{BlockState, System};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why a virtio-mem request was refused (QEMU's errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtioMemError {
    #[error("Device '{0}' not found")]
    NotFound(String),
    #[error("'requested-size' property must be a multiple of the block size ({0:#x})")]
    Unaligned(u64),
    #[error("'requested-size' property exceeds the region size ({0:#x})")]
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
    /// Plugged sub-blocks per added memory block (plugged from the start of
    /// the block, unplugged from its end).
    pub blocks: BTreeMap<u64, u64>,
}

/// What a resize did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResizeReport {
    pub size: u64,
    pub events: Vec<HostEvent>,
}

/// The virtio-mem devices of a machine.
pub struct VirtioMemDevices {
    devs: Mutex<Vec<VirtioMem>>,
}

const PCI_WINDOW_END: u64 = 0xfebf_ffff;
const BAR_SIZE: u64 = 0x4000;

impl VirtioMemDevices {
    /// Place the devices after the DIMM region base, in order (QEMU's
    /// device-memory allocator), and claim their PCI BARs.
    pub fn new(specs: &[VirtioMemSpec], device_mem_base: u64, sys: &mut System) -> Self {
        let mut addr = device_mem_base;
        let mut devs = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            devs.push(VirtioMem {
                spec: spec.clone(),
                index: i as u32,
                addr,
                plugged: 0,
                driver: false,
                group: None,
                blocks: BTreeMap::new(),
            });
            addr += spec.region_size;
        }
        if !devs.is_empty() {
            let low_end = sys
                .iomem
                .top
                .iter()
                .filter(|r| r.name == "System RAM" && r.end < 0x1_0000_0000)
                .map(|r| r.end)
                .max()
                .unwrap_or(0);
            let window_start = (low_end + 0x20000 + 1).div_ceil(0x1000_0000) * 0x1000_0000;
            let mut window = Resource {
                start: window_start,
                end: PCI_WINDOW_END,
                name: "PCI Bus 0000:00".into(),
                children: Vec::new(),
            };
            for (i, _) in devs.iter().enumerate() {
                let end = PCI_WINDOW_END - BAR_SIZE * i as u64;
                window.children.insert(
                    0,
                    Resource {
                        start: end + 1 - BAR_SIZE,
                        end,
                        name: format!("0000:00:{:02x}.0", 3 + i),
                        children: Vec::new(),
                    },
                );
            }
            let pos = sys.iomem.top.partition_point(|r| r.start < window.start);
            sys.iomem.top.insert(pos, window);
        }
        VirtioMemDevices {
            devs: Mutex::new(devs),
        }
    }

    /// A machine without virtio-mem devices.
    pub fn none() -> Self {
        VirtioMemDevices {
            devs: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<VirtioMem>> {
        self.devs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<VirtioMem> {
        self.lock().clone()
    }

    /// `insmod virtio_pci`: the transport binds (BAR claimed).
    pub fn load_transport(&self, shared: &Shared) {
        let devs = self.lock();
        if devs.is_empty() {
            return;
        }
        shared.modify(|sys| {
            sys.events.log("ACPI: \\_SB_.LNKB: Enabled at IRQ 10");
            if let Some(w) = sys
                .iomem
                .top
                .iter_mut()
                .find(|r| r.name == "PCI Bus 0000:00")
            {
                for c in w.children.iter_mut().filter(|c| c.children.is_empty()) {
                    c.children.push(Resource {
                        start: c.start,
                        end: c.end,
                        name: "virtio-pci-modern".into(),
                        children: Vec::new(),
                    });
                }
            }
        });
    }

    /// `insmod virtio_mem`: the driver probes every device, then plugs what
    /// the device requests.
    pub fn load_driver(&self, shared: &Shared) {
        let mut devs = self.lock();
        for d in devs.iter_mut().filter(|d| !d.driver) {
            d.driver = true;
            let hp = shared.lock_hotplug();
            hp.with(|sys| {
                let name = format!("virtio{}", d.index);
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
                log(sys, "nid", d.spec.node.to_string());
                log(sys, "memory block size", format!("{:#x}", sys.block_size));
                log(
                    sys,
                    "subblock size",
                    format!("{:#x}", sub_block_size(&d.spec)),
                );
                let unit = (d.spec.block_size.max(sys.block_size)) >> 12;
                d.group = sys.register_dynamic_group(d.spec.node, unit).ok();
                let _ = sys
                    .iomem
                    .request(d.addr, d.addr + d.spec.region_size - 1, &name, None);
                log(sys, "plugged size", format!("{:#x}", d.plugged));
                log(
                    sys,
                    "requested size",
                    format!("{:#x}", d.spec.requested_size),
                );
                sys.generation = sys.generation.wrapping_add(1);
            });
            drop(hp);
            sync_to_request(shared, d);
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
            sync_to_request(shared, d);
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

/// 6.1 SBM: sub-blocks are at least a pageblock.
fn sub_block_size(spec: &VirtioMemSpec) -> u64 {
    spec.block_size.max(2 << 20)
}

/// Plug or unplug until `plugged == requested` or no progress is possible.
fn sync_to_request(shared: &Shared, d: &mut VirtioMem) {
    let sb = sub_block_size(&d.spec);
    let hp = shared.lock_hotplug();
    hp.with(|sys| {
        let block_size = sys.block_size;
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
                sys.driver_release_pages(id, take * sb_pages);
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
            let req = AddRequest {
                nid: d.spec.node,
                start: id * block_size,
                size: block_size,
                resource_name: "System RAM (virtio_mem)".into(),
                parent_resource: Some(format!("virtio{}", d.index)),
                group: d.group,
                memmap_on_memory: false,
                driver_offline_pages: (per_block - take) * sb_pages,
            };
            if sys.add_memory(&req).is_err() {
                break;
            }
            d.blocks.insert(id, take);
            d.plugged += take * sb;
        }
        // Unplug: offline blocks first, then online ones; highest first.
        while d.plugged > d.spec.requested_size {
            let need = (d.plugged - d.spec.requested_size) / sb;
            if need == 0 {
                break;
            }
            let order: Vec<u64> = {
                let mut offline: Vec<u64> = d
                    .blocks
                    .keys()
                    .copied()
                    .filter(|id| {
                        sys.blocks
                            .get(id)
                            .is_some_and(|b| b.state == BlockState::Offline)
                    })
                    .collect();
                let mut online: Vec<u64> = d
                    .blocks
                    .keys()
                    .copied()
                    .filter(|id| !offline.contains(id))
                    .collect();
                offline.reverse();
                online.reverse();
                offline.into_iter().chain(online).collect()
            };
            let Some(&id) = order.first() else { break };
            let n = d.blocks[&id];
            let take = need.min(n);
            let start = id * block_size;
            if take == n {
                let online = sys
                    .blocks
                    .get(&id)
                    .is_some_and(|b| b.state != BlockState::Offline);
                let r = if online {
                    sys.offline_and_remove_memory(start, block_size)
                } else {
                    sys.remove_memory(start, block_size)
                };
                if r.is_err() {
                    break;
                }
                d.blocks.remove(&id);
            } else {
                if sys.driver_claim_pages(id, take * sb_pages).is_err() {
                    break;
                }
                *d.blocks.get_mut(&id).expect("listed") -= take;
            }
            d.plugged -= take * sb;
        }
        sys.generation = sys.generation.wrapping_add(1);
    });
}
