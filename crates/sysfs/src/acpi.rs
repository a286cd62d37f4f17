//! The ACPI memory hotplug devices under `/sys/devices`: QEMU's container
//! `LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04` (`\_SB_.MHPC`) and one `PNP0C80:xx`
//! device per DIMM slot, which a hot-added DIMM's blocks name as their
//! `firmware_node` and which link back to them (`physical_node`,
//! `physical_node1`, ...). Only the path to the memory devices is served,
//! not the rest of the ACPI namespace.

use crate::vfs::{EntryKind, Errno};
use memhp_model::qemu_acpi::{memory_device_name, MemoryHotplugDevices, MEMORY_CONTAINER_DIR};
use memhp_model::System;

/// A device's `power/` directory.
const POWER_DIR: &str = "power";

/// The first directory on the way: the ACPI system root.
pub(crate) const ROOT: &str = MEMORY_CONTAINER_DIR[0];

/// What a path below `/sys/devices` names within the ACPI memory devices.
enum Node<'a> {
    /// An ancestor of the container: its one child on the way.
    Ancestor(&'a str),
    Container,
    /// A slot's device.
    Device(u32),
}

fn slot_of(devices: &MemoryHotplugDevices, name: &str) -> Option<u32> {
    (0..devices.slots).find(|&s| memory_device_name(s) == name)
}

/// `rest`: the path below `/sys/devices`, up to the device directory.
fn resolve<'a>(devices: &MemoryHotplugDevices, rest: &[&str]) -> Option<Node<'a>> {
    let depth = MEMORY_CONTAINER_DIR.len();
    if rest.len() < depth && rest.iter().zip(MEMORY_CONTAINER_DIR).all(|(a, b)| *a == b) {
        return Some(Node::Ancestor(MEMORY_CONTAINER_DIR[rest.len()]));
    }
    if rest.len() < depth || rest[..depth] != MEMORY_CONTAINER_DIR {
        return None;
    }
    match rest[depth..] {
        [] => Some(Node::Container),
        [dev] => slot_of(devices, dev).map(Node::Device),
        _ => None,
    }
}

fn file(mode: u16) -> EntryKind {
    EntryKind::File { mode }
}

fn link(target: String) -> EntryKind {
    EntryKind::Symlink { target }
}

/// The entries of directory `rest` (below `/sys/devices`), if it is one of
/// the ACPI memory devices' directories or their `power/`.
pub(crate) fn list(sys: &System, rest: &[&str]) -> Option<Vec<(String, EntryKind)>> {
    list_with(sys, rest, true)
}

/// Entry `name` of directory `dir` (below `/sys/devices`), as [`list`]
/// lists it; a device's `physical_node*` links, the only entries that need
/// a walk over the blocks, are only listed when one of them is asked for.
pub(crate) fn lookup(sys: &System, dir: &[&str], name: &str) -> Option<EntryKind> {
    list_with(sys, dir, name.starts_with("physical_node"))?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, k)| k)
}

/// [`list`], with a device's links to its blocks if `block_links`.
fn list_with(sys: &System, rest: &[&str], block_links: bool) -> Option<Vec<(String, EntryKind)>> {
    let devices = sys.acpi_memory.as_ref()?;
    if rest.last() == Some(&POWER_DIR) {
        return match resolve(devices, &rest[..rest.len() - 1])? {
            Node::Ancestor(_) => None,
            Node::Container | Node::Device(_) => Some(power_entries()),
        };
    }
    let mut v: Vec<(String, EntryKind)> = Vec::new();
    let up = |n: usize| "../".repeat(n);
    // Depth of the directory below /sys/devices, for relative links.
    let depth = rest.len();
    match resolve(devices, rest)? {
        Node::Ancestor(child) => return Some(vec![(child.to_string(), EntryKind::Dir)]),
        Node::Container => {
            for slot in 0..devices.slots {
                v.push((memory_device_name(slot), EntryKind::Dir));
            }
            let container = MEMORY_CONTAINER_DIR[MEMORY_CONTAINER_DIR.len() - 1];
            v.push((
                "physical_node".into(),
                link(format!("{}system/{CONTAINER_CLASS}/{container}", up(depth))),
            ));
        }
        Node::Device(slot) => {
            v.push(("eject".into(), file(0o200)));
            // Only when asked for: listing the links walks every block.
            if block_links {
                let firmware_node = memhp_model::qemu_acpi::memory_device_link(slot);
                let bound = sys
                    .blocks
                    .values()
                    .filter(|b| b.firmware_node.as_deref() == Some(firmware_node.as_str()));
                for (i, b) in bound.enumerate() {
                    let name = match i {
                        0 => "physical_node".to_string(),
                        i => format!("physical_node{i}"),
                    };
                    v.push((
                        name,
                        link(format!("{}system/memory/memory{}", up(depth), b.id)),
                    ));
                }
            }
        }
    }
    for f in ["hid", "modalias", "path", "status", "uid"] {
        v.push((f.into(), file(0o444)));
    }
    v.push(("uevent".into(), file(0o644)));
    v.push((POWER_DIR.into(), EntryKind::Dir));
    v.push((
        "subsystem".into(),
        link(format!("{}../bus/acpi", up(depth))),
    ));
    Some(v)
}

/// A device's `power/` directory.
fn power_entries() -> Vec<(String, EntryKind)> {
    crate::tree::POWER_FILES
        .iter()
        .map(|&(n, m)| (n.to_string(), file(m)))
        .collect()
}

/// The content of file `name` of the directory `dir` (below
/// `/sys/devices`), if `dir` is the container or a slot's device
/// (`power/` files are the generic ones).
pub(crate) fn read(sys: &System, dir: &[&str], name: &str) -> Option<Result<String, Errno>> {
    let devices = sys.acpi_memory.as_ref()?;
    let (hid, path, status, uid) = match resolve(devices, dir)? {
        Node::Ancestor(_) => return None,
        // _STA of the container: present, enabled, functioning (not shown).
        Node::Container => (
            "PNP0A06",
            "\\_SB_.MHPC".to_string(),
            0xb,
            "DIMM devices".into(),
        ),
        Node::Device(slot) => (
            "PNP0C80",
            format!("\\_SB_.MHPC.MP{slot:02X}"),
            devices.status(slot),
            format!("0x{slot:02X}"),
        ),
    };
    let text = match name {
        "hid" => format!("{hid}\n"),
        "modalias" => format!("acpi:{hid}:\n"),
        "uevent" => format!("MODALIAS=acpi:{hid}:\n"),
        "path" => format!("{path}\n"),
        "status" => format!("{status}\n"),
        "uid" => format!("{uid}\n"),
        "eject" => return Some(Err(Errno::EACCES)),
        _ => return Some(Err(Errno::ENOENT)),
    };
    Some(Ok(text))
}

/// What the platform does when the guest ejects a DIMM slot's device
/// (`_EJ0` after the hot removal): run by a write of `1` to the device's
/// `eject` file, with the slot.
pub type EjectHandler = std::sync::Arc<dyn Fn(u32) + Send + Sync>;

/// `acpi_eject_store`, if `rest` (below `/sys/devices`) is a slot device's
/// `eject`: anything but a leading `1` is `EINVAL`; a device the memory
/// hotplug handler did not take (an empty slot, a DIMM whose memory was
/// not added) is `ENODEV`; else the eject runs (in the kernel on its
/// hotplug workqueue; here before the write returns, so that what follows
/// sees its outcome) and the write succeeds whatever the outcome, which
/// the guest reports to the platform through `_OST`.
pub(crate) fn eject_store(
    shared: &memhp_model::shared::Shared,
    rest: &[&str],
    data: &[u8],
    handler: Option<&EjectHandler>,
) -> Option<Result<usize, Errno>> {
    let (name, dir) = rest.split_last()?;
    if *name != "eject" {
        return None;
    }
    let slot = shared.read(|sys| {
        let devices = sys.acpi_memory.as_ref()?;
        match resolve(devices, dir)? {
            Node::Device(slot) => Some((slot, devices.attached.contains(&slot))),
            _ => None,
        }
    })?;
    if data.first() != Some(&b'1') {
        return Some(Err(Errno::EINVAL));
    }
    match slot {
        (slot, true) => {
            if let Some(eject) = handler {
                eject(slot);
            }
            Some(Ok(data.len()))
        }
        (_, false) => Some(Err(Errno::ENODEV)),
    }
}

/// The buses the ACPI memory devices add besides `memory` and `node`:
/// `acpi` (the devices on the way to the slots) and `container` (the
/// memory hotplug container's platform device).
pub(crate) const BUSES: [&str; 2] = ["acpi", "container"];

/// The container's platform device under `/sys/devices/system`.
pub(crate) const CONTAINER_CLASS: &str = "container";

/// `/sys/bus/<bus>/devices` for [`BUSES`]: links to the devices memhp
/// serves (the real buses hold more: processors, buttons, PCI links...).
pub(crate) fn bus_devices(sys: &System, bus: &str) -> Vec<(String, EntryKind)> {
    let Some(devices) = sys.acpi_memory.as_ref() else {
        return Vec::new();
    };
    let container = MEMORY_CONTAINER_DIR[MEMORY_CONTAINER_DIR.len() - 1];
    match bus {
        "acpi" => {
            let mut v: Vec<(String, EntryKind)> = (1..=MEMORY_CONTAINER_DIR.len())
                .map(|n| {
                    let path = MEMORY_CONTAINER_DIR[..n].join("/");
                    (
                        MEMORY_CONTAINER_DIR[n - 1].to_string(),
                        link(format!("../../../devices/{path}")),
                    )
                })
                .collect();
            for slot in 0..devices.slots {
                let name = memory_device_name(slot);
                let path = MEMORY_CONTAINER_DIR.join("/");
                v.push((
                    name.clone(),
                    link(format!("../../../devices/{path}/{name}")),
                ));
            }
            v
        }
        "container" => vec![(
            container.to_string(),
            link(format!(
                "../../../devices/system/{CONTAINER_CLASS}/{container}"
            )),
        )],
        _ => Vec::new(),
    }
}

/// `/sys/devices/system/container[/PNP0A06:04]`.
pub(crate) fn container_list(sys: &System, rest: &[&str]) -> Option<Vec<(String, EntryKind)>> {
    sys.acpi_memory.as_ref()?;
    let container = MEMORY_CONTAINER_DIR[MEMORY_CONTAINER_DIR.len() - 1];
    let power = || POWER_DIR.to_string();
    match rest {
        [] => Some(vec![
            (container.to_string(), EntryKind::Dir),
            (power(), EntryKind::Dir),
            ("uevent".into(), file(0o644)),
        ]),
        [c] if *c == container => Some(vec![
            (
                "firmware_node".into(),
                link(format!("../../../{}", MEMORY_CONTAINER_DIR.join("/"))),
            ),
            ("online".into(), file(0o644)),
            (power(), EntryKind::Dir),
            ("subsystem".into(), link("../../../../bus/container".into())),
            ("uevent".into(), file(0o644)),
            ("waiting_for_supplier".into(), file(0o444)),
        ]),
        // The class directory's `power/` and the device's.
        [p] | [_, p] if *p == POWER_DIR && (rest.len() == 1 || rest[0] == container) => {
            Some(power_entries())
        }
        _ => None,
    }
}

/// A file of the container's platform device.
pub(crate) fn container_read(sys: &System, name: &str) -> Result<String, Errno> {
    let devices = sys.acpi_memory.as_ref().ok_or(Errno::ENOENT)?;
    match name {
        "online" => Ok(format!("{}\n", u8::from(!devices.container_offline))),
        "waiting_for_supplier" => Ok("0\n".into()),
        _ => Err(Errno::ENOENT),
    }
}

/// `online_store` of the container (`kstrtobool`): offlining it
/// (`acpi_container_offline`) needs every memory device below it offline:
/// `EBUSY` while a DIMM's block is online.
pub(crate) fn container_online_store(
    shared: &memhp_model::shared::Shared,
    data: &[u8],
) -> Result<usize, Errno> {
    let online = memhp_model::kstr::kstrtobool(data).map_err(|_| Errno::EINVAL)?;
    shared.modify(|sys| {
        let busy = !online
            && sys.blocks.values().any(|b| {
                b.firmware_node.is_some() && b.state != memhp_model::block::BlockState::Offline
            });
        let devices = sys.acpi_memory.as_mut().ok_or(Errno::ENOENT)?;
        if busy {
            return Err(Errno::EBUSY);
        }
        if devices.container_offline == online {
            devices.container_offline = !online;
            sys.touch();
        }
        Ok(data.len())
    })
}
