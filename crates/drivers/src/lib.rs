//! memhp-drivers: the controllers beside the model that add and remove
//! memory the way firmware and devices do: ACPI memory devices (QEMU
//! pc-dimm). Each reports what the host (QEMU/QMP) would see as
//! [`HostEvent`]s.

pub mod acpi;
pub mod backends;
pub mod host;
pub mod pci_firmware;
pub mod qdev_id;
pub mod virtio_balloon;
pub mod virtio_mem;

use serde_json::json;

/// An asynchronous host-side event, as QMP reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// `ACPI_DEVICE_OST`.
    /// `ACPI_DEVICE_OST`; `device` is the id of the DIMM in the slot, if
    /// any (none once an eject deleted it).
    AcpiOst {
        device: Option<String>,
        slot: u32,
        source: u32,
        status: u32,
    },
    /// `DEVICE_DELETED`.
    DeviceDeleted { device: String },
    /// `MEMORY_DEVICE_SIZE_CHANGE` (virtio-mem).
    MemoryDeviceSizeChange { device: String, size: u64 },
}

impl HostEvent {
    /// QMP event name.
    pub fn name(&self) -> &'static str {
        match self {
            HostEvent::AcpiOst { .. } => "ACPI_DEVICE_OST",
            HostEvent::DeviceDeleted { .. } => "DEVICE_DELETED",
            HostEvent::MemoryDeviceSizeChange { .. } => "MEMORY_DEVICE_SIZE_CHANGE",
        }
    }

    /// QMP `data` member.
    pub fn data(&self) -> serde_json::Value {
        match self {
            HostEvent::AcpiOst {
                device,
                slot,
                source,
                status,
            } => {
                let mut info = json!({"slot": slot.to_string(), "slot-type": "DIMM", "source": source, "status": status});
                if let Some(device) = device {
                    qdev_id::put_id(&mut info, "device", device);
                }
                json!({ "info": info })
            }
            HostEvent::DeviceDeleted { device } => {
                let mut data = json!({"path": qdev_id::qom_path(device)});
                qdev_id::put_id(&mut data, "device", device);
                data
            }
            HostEvent::MemoryDeviceSizeChange { device, size } => {
                let mut data = json!({"size": size, "qom-path": qdev_id::qom_path(device)});
                qdev_id::put_id(&mut data, "id", device);
                data
            }
        }
    }
}
