//! The PCI and virtio buses of a QEMU pc guest, rendered from
//! [`memhp_model::pci::PciBus`]: `/sys/devices/pci0000:00` (the host
//! bridge's device, its `pci_bus`, fw_cfg's platform device, each
//! function's attributes, `config` and the `virtioN` device the transport
//! registered on it), `/sys/bus/pci` (devices, drivers, ACPI hotplug
//! slots) and `/sys/bus/virtio` (once `virtio.ko` is loaded). Layout and
//! values as a 6.1 guest under QEMU 7.2 shows them
//! (`conformance/other-build/pci-sysfs*`, `virtio-sysfs`).
//!
//! Not modelled: a function's `resourceN` contents (reads are empty),
//! `remove`, `driver_override`, `bind`/`unbind` and the other stores that
//! change a binding (their writes fail with EACCES like every store memhp
//! does not model); `rescan` parses its value and finds nothing new.

use crate::render;
use crate::tree::{file, link, POWER_FILES};
use crate::vfs::{EntryKind, Errno};
use memhp_model::kstr;
use memhp_model::pci::{PciBus, PciFunction, BAR_MEM64_PREF};
use memhp_model::System;

/// The host bridge's device directory under `/sys/devices`.
pub(crate) const ROOT: &str = "pci0000:00";
/// QEMU's fw_cfg, a platform device under the host bridge.
const FW_CFG: &str = "QEMU0002:00";
/// The PCI drivers built into Debian's 6.1 kernel.
const BUILTIN_DRIVERS: [&str; 11] = [
    "8250_mid",
    "8250_pericom",
    "agpgart-intel",
    "agpgart-sis",
    "agpgart-via",
    "iosf_mbi_pci",
    "pcieport",
    "serial",
    "shpchp",
    "xen-platform-pci",
    "virtio-pci",
];
/// The PCI slots acpiphp registers on QEMU's bus 0.
const HOTPLUG_SLOTS: std::ops::RangeInclusive<u8> = 2..=31;

const DIR: EntryKind = EntryKind::Dir;

fn bus(sys: &System) -> Option<&PciBus> {
    sys.pci.as_ref()
}

fn loaded(sys: &System, module: &str) -> bool {
    sys.modules.iter().any(|m| m == module)
}

/// Whether `/sys/bus/virtio` exists (`virtio.ko` is loaded).
pub(crate) fn virtio_bus(sys: &System) -> bool {
    bus(sys).is_some() && loaded(sys, "virtio")
}

/// The buses this module serves under `/sys/bus`.
pub(crate) fn buses(sys: &System) -> Vec<&'static str> {
    let mut v = Vec::new();
    if bus(sys).is_some() {
        v.push("pci");
    }
    if virtio_bus(sys) {
        v.push("virtio");
    }
    v
}

/// A virtio driver's module and directory name, when it is loaded.
fn virtio_drivers(sys: &System) -> Vec<&'static str> {
    ["virtio_balloon", "virtio_mem"]
        .into_iter()
        .filter(|d| loaded(sys, d))
        .collect()
}

fn pci_drivers(sys: &System) -> Vec<&'static str> {
    BUILTIN_DRIVERS
        .into_iter()
        .filter(|d| *d != "virtio-pci" || loaded(sys, "virtio_pci"))
        .collect()
}

/// `../../../devices/pci0000:00/NAME` from `/sys/bus/X/devices` (`up`
/// levels up to `/sys`).
fn devices_path(up: usize, rest: &str) -> String {
    format!("{}devices/{ROOT}/{rest}", "../".repeat(up))
}

/// Function `name` when `v` is its virtio device's directory.
fn virtio_of<'a>(bus: &'a PciBus, name: &str, v: &str) -> Option<&'a PciFunction> {
    let f = bus.function(name)?;
    (virtio_path(f)? == format!("{name}/{v}")).then_some(f)
}

/// The function's virtio device's path below the host bridge.
fn virtio_path(f: &PciFunction) -> Option<String> {
    let v = f.virtio.as_ref()?;
    Some(format!("{}/virtio{}", f.name(), v.index))
}

fn function_entries(f: &PciFunction) -> Vec<(String, EntryKind)> {
    let mut v: Vec<(String, EntryKind)> = [
        ("ari_enabled", 0o444),
        ("broken_parity_status", 0o644),
        ("class", 0o444),
        ("config", 0o644),
        ("consistent_dma_mask_bits", 0o444),
        ("d3cold_allowed", 0o644),
        ("device", 0o444),
        ("dma_mask_bits", 0o444),
        ("driver_override", 0o644),
        ("enable", 0o644),
        ("irq", 0o444),
        ("local_cpulist", 0o444),
        ("local_cpus", 0o444),
        ("modalias", 0o444),
        ("msi_bus", 0o644),
        ("numa_node", 0o644),
        ("power_state", 0o444),
        ("remove", 0o220),
        ("rescan", 0o200),
        ("resource", 0o444),
        ("revision", 0o444),
        ("subsystem_device", 0o444),
        ("subsystem_vendor", 0o444),
        ("uevent", 0o644),
        ("vendor", 0o444),
    ]
    .into_iter()
    .map(|(n, m)| (n.to_string(), file(m)))
    .collect();
    for b in &f.bars {
        v.push((format!("resource{}", b.index), file(0o600)));
        if b.flags == BAR_MEM64_PREF {
            v.push((format!("resource{}_wc", b.index), file(0o600)));
        }
    }
    v.push(("link".into(), DIR));
    v.push(("power".into(), DIR));
    v.push(("subsystem".into(), link("../../../bus/pci")));
    if let Some(fw) = f.firmware_node() {
        v.push(("firmware_node".into(), link(fw)));
        // fw_devlink's file goes once a driver binds; a hot-plugged
        // function is bound before it could show.
        if !f.hotplugged && f.driver.is_none() {
            v.push(("waiting_for_supplier".into(), file(0o444)));
        }
    }
    if let Some(d) = &f.driver {
        v.push((
            "driver".into(),
            link(format!("../../../bus/pci/drivers/{d}")),
        ));
        v.push(("msi_irqs".into(), DIR));
    }
    if let Some(virtio) = &f.virtio {
        v.push((format!("virtio{}", virtio.index), DIR));
    }
    v
}

fn virtio_entries(f: &PciFunction) -> Vec<(String, EntryKind)> {
    let mut v: Vec<(String, EntryKind)> = [
        ("device", 0o444),
        ("features", 0o444),
        ("modalias", 0o444),
        ("status", 0o444),
        ("uevent", 0o644),
        ("vendor", 0o444),
    ]
    .into_iter()
    .map(|(n, m)| (n.to_string(), file(m)))
    .collect();
    v.push(("power".into(), DIR));
    v.push(("subsystem".into(), link("../../../../bus/virtio")));
    if let Some(d) = f.virtio.as_ref().and_then(|v| v.driver.as_ref()) {
        v.push((
            "driver".into(),
            link(format!("../../../../bus/virtio/drivers/{d}")),
        ));
    }
    v
}

fn power_entries() -> Vec<(String, EntryKind)> {
    POWER_FILES
        .iter()
        .map(|(n, m)| (n.to_string(), file(*m)))
        .collect()
}

fn strs(v: &[(&str, EntryKind)]) -> Vec<(String, EntryKind)> {
    v.iter().map(|(n, k)| (n.to_string(), k.clone())).collect()
}

/// The entries of `/sys/devices/pci0000:00/REST...`.
pub(crate) fn list(sys: &System, rest: &[&str]) -> Option<Vec<(String, EntryKind)>> {
    let bus = bus(sys)?;
    Some(match rest {
        [] => {
            let mut v: Vec<(String, EntryKind)> =
                bus.functions.iter().map(|f| (f.name(), DIR)).collect();
            v.extend(strs(&[
                (FW_CFG, DIR),
                (
                    "firmware_node",
                    link("../LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00"),
                ),
                ("pci_bus", DIR),
                ("power", DIR),
                ("uevent", file(0o644)),
                ("waiting_for_supplier", file(0o444)),
            ]));
            v
        }
        ["power"] | ["pci_bus", "0000:00", "power"] | [FW_CFG, "power"] => power_entries(),
        ["pci_bus"] => strs(&[("0000:00", DIR)]),
        ["pci_bus", "0000:00"] => strs(&[
            ("cpuaffinity", file(0o444)),
            ("cpulistaffinity", file(0o444)),
            ("device", link("../../../pci0000:00")),
            ("power", DIR),
            ("rescan", file(0o200)),
            ("subsystem", link("../../../../class/pci_bus")),
            ("uevent", file(0o644)),
        ]),
        [FW_CFG] => strs(&[
            ("driver_override", file(0o644)),
            (
                "firmware_node",
                link(format!("../../LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00/{FW_CFG}")),
            ),
            ("modalias", file(0o444)),
            ("power", DIR),
            ("subsystem", link("../../../bus/platform")),
            ("uevent", file(0o644)),
            ("waiting_for_supplier", file(0o444)),
        ]),
        [name] => function_entries(bus.function(name)?),
        [name, "link"] => {
            bus.function(name)?;
            Vec::new()
        }
        [name, "power"] => {
            bus.function(name)?;
            power_entries()
        }
        [name, "msi_irqs"] => {
            bus.function(name)?.driver.as_ref()?;
            Vec::new()
        }
        [name, v] => virtio_entries(virtio_of(bus, name, v)?),
        [name, v, "power"] => {
            virtio_of(bus, name, v)?;
            power_entries()
        }
        _ => return None,
    })
}

/// The entries of `/sys/bus/{pci,virtio}/REST...`.
pub(crate) fn bus_list(
    sys: &System,
    name: &str,
    rest: &[&str],
) -> Option<Vec<(String, EntryKind)>> {
    let pci = bus(sys)?;
    Some(match (name, rest) {
        ("virtio", _) if !virtio_bus(sys) => return None,
        ("pci", []) => strs(&[
            ("devices", DIR),
            ("drivers", DIR),
            ("drivers_autoprobe", file(0o644)),
            ("drivers_probe", file(0o200)),
            ("rescan", file(0o200)),
            ("resource_alignment", file(0o644)),
            ("slots", DIR),
            ("uevent", file(0o200)),
        ]),
        ("pci", ["devices"]) => pci
            .functions
            .iter()
            .map(|f| (f.name(), link(devices_path(3, &f.name()))))
            .collect(),
        ("pci", ["drivers"]) => pci_drivers(sys)
            .into_iter()
            .map(|d| (d.to_string(), DIR))
            .collect(),
        ("pci", ["drivers", d]) => {
            let d = pci_drivers(sys).into_iter().find(|x| x == d)?;
            let mut v = strs(&[
                ("bind", file(0o200)),
                ("new_id", file(0o200)),
                ("remove_id", file(0o200)),
                ("uevent", file(0o200)),
                ("unbind", file(0o200)),
            ]);
            let module = match d {
                "shpchp" => Some("shpchp"),
                "virtio-pci" => Some("virtio_pci"),
                _ => None,
            };
            if let Some(m) = module {
                v.push(("module".into(), link(format!("../../../../module/{m}"))));
            }
            for f in pci
                .functions
                .iter()
                .filter(|f| f.driver.as_deref() == Some(d))
            {
                v.push((f.name(), link(devices_path(4, &f.name()))));
            }
            v
        }
        ("pci", ["slots"]) => HOTPLUG_SLOTS.map(|s| (s.to_string(), DIR)).collect(),
        ("pci", ["slots", s]) => {
            slot_number(s)?;
            strs(&[
                ("adapter", file(0o444)),
                ("address", file(0o444)),
                ("attention", file(0o644)),
                ("cur_bus_speed", file(0o444)),
                ("latch", file(0o444)),
                ("max_bus_speed", file(0o444)),
                ("module", link("../../../../module/acpiphp")),
                ("power", file(0o644)),
            ])
        }
        ("virtio", []) => strs(&[
            ("devices", DIR),
            ("drivers", DIR),
            ("drivers_autoprobe", file(0o644)),
            ("drivers_probe", file(0o200)),
            ("uevent", file(0o200)),
        ]),
        ("virtio", ["devices"]) => pci
            .functions
            .iter()
            .filter_map(|f| {
                let p = virtio_path(f)?;
                let n = p.rsplit('/').next()?.to_string();
                Some((n, link(devices_path(3, &p))))
            })
            .collect(),
        ("virtio", ["drivers"]) => virtio_drivers(sys)
            .into_iter()
            .map(|d| (d.to_string(), DIR))
            .collect(),
        ("virtio", ["drivers", d]) => {
            let d = virtio_drivers(sys).into_iter().find(|x| x == d)?;
            let mut v = strs(&[
                ("bind", file(0o200)),
                ("module", link(format!("../../../../module/{d}"))),
                ("uevent", file(0o200)),
                ("unbind", file(0o200)),
            ]);
            for f in &pci.functions {
                let bound = f.virtio.as_ref().and_then(|v| v.driver.as_deref()) == Some(d);
                if let (true, Some(p)) = (bound, virtio_path(f)) {
                    let n = p.rsplit('/').next().unwrap_or_default().to_string();
                    v.push((n, link(devices_path(4, &p))));
                }
            }
            v
        }
        _ => return None,
    })
}

fn slot_number(s: &str) -> Option<u8> {
    let n: u8 = s.parse().ok()?;
    (HOTPLUG_SLOTS.contains(&n) && n.to_string() == s).then_some(n)
}

fn hex16(v: u16) -> String {
    format!("{v:#06x}\n")
}

/// A PCI function's `uevent`.
fn function_uevent(f: &PciFunction) -> String {
    let mut s = String::new();
    if let Some(d) = &f.driver {
        s += &format!("DRIVER={d}\n");
    }
    s += &format!(
        "PCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={}\nMODALIAS={}\n",
        f.class(),
        f.vendor(),
        f.device(),
        f.subsystem_vendor(),
        f.subsystem_device(),
        f.name(),
        f.modalias()
    );
    s
}

/// The `resource` file: 13 lines of start, end and flags.
fn resource(f: &PciFunction) -> String {
    (0..13u8)
        .map(|i| {
            let (s, e, fl) = f
                .bars
                .iter()
                .find(|b| b.index == i)
                .map_or((0, 0, 0), |b| (b.start, b.start + b.size - 1, b.flags));
            format!("{s:#018x} {e:#018x} {fl:#018x}\n")
        })
        .collect()
}

/// A PCI function's `power/` files: runtime PM enabled but forbidden (the
/// PCI core's default), the device active since it was found.
fn function_power(sys: &System, file: &str) -> Result<String, Errno> {
    Ok(match file {
        "async" => "enabled\n".into(),
        "autosuspend_delay_ms" => return Err(Errno::EIO),
        "control" => "on\n".into(),
        "runtime_active_time" => format!("{}\n", sys.clock_ms),
        "runtime_enabled" => "forbidden\n".into(),
        "runtime_status" => "active\n".into(),
        "runtime_usage" => "1\n".into(),
        _ => "0\n".into(),
    })
}

fn cpus(sys: &System) -> (String, String) {
    let online = sys.online_cpus();
    (
        render::bitmap_mask(&online, sys.nr_cpu_ids()),
        render::bitmap_list(online.iter().copied()),
    )
}

fn virtio_read(f: &PciFunction, file: &str) -> Option<String> {
    let id = f.kind.virtio_device()?;
    let modalias = format!("virtio:d{:08X}v{:08X}", id, f.vendor());
    Some(match file {
        "device" => hex16(id),
        "vendor" => hex16(f.vendor()),
        "status" => format!("{:#010x}\n", f.virtio_status()),
        "features" => {
            let bits = f.virtio_features();
            let mut s: String = (0..64)
                .map(|i| if bits >> i & 1 == 1 { '1' } else { '0' })
                .collect();
            s.push('\n');
            s
        }
        "modalias" => format!("{modalias}\n"),
        "uevent" => match f.virtio.as_ref().and_then(|v| v.driver.as_ref()) {
            Some(d) => format!("DRIVER={d}\nMODALIAS={modalias}\n"),
            None => format!("MODALIAS={modalias}\n"),
        },
        _ => return None,
    })
}

fn function_read(sys: &System, bus: &PciBus, f: &PciFunction, file: &str) -> Option<Vec<u8>> {
    let bound = f.driver.is_some();
    let text = match file {
        "config" => return Some(f.config(bus).to_vec()),
        "ari_enabled" | "broken_parity_status" | "d3cold_allowed" => "0\n".into(),
        "class" => format!("{:#08x}\n", f.class()),
        "consistent_dma_mask_bits" | "dma_mask_bits" => if bound { "64\n" } else { "32\n" }.into(),
        "device" => hex16(f.device()),
        "vendor" => hex16(f.vendor()),
        "subsystem_device" => hex16(f.subsystem_device()),
        "subsystem_vendor" => hex16(f.subsystem_vendor()),
        "revision" => format!("{:#04x}\n", f.revision()),
        "driver_override" => "(null)\n".into(),
        "enable" => if f.enabled() { "1\n" } else { "0\n" }.into(),
        "irq" => format!("{}\n", f.irq),
        "local_cpus" => cpus(sys).0,
        "local_cpulist" => cpus(sys).1,
        "modalias" => format!("{}\n", f.modalias()),
        "msi_bus" => "1\n".into(),
        "numa_node" => "-1\n".into(),
        "power_state" => if bound { "D0\n" } else { "unknown\n" }.into(),
        "resource" => resource(f),
        "uevent" => function_uevent(f),
        "waiting_for_supplier" => "0\n".into(),
        r if r.starts_with("resource") => String::new(),
        _ => return None,
    };
    Some(text.into_bytes())
}

/// Read `/sys/devices/pci0000:00/REST.../FILE`.
pub(crate) fn read(sys: &System, rest: &[&str], file: &str) -> Option<Result<Vec<u8>, Errno>> {
    let bus = bus(sys)?;
    let text = match rest {
        [] => match file {
            "uevent" => String::new(),
            "waiting_for_supplier" => "0\n".into(),
            _ => return None,
        },
        ["pci_bus", "0000:00"] => match file {
            "cpuaffinity" => cpus(sys).0,
            "cpulistaffinity" => cpus(sys).1,
            "uevent" => String::new(),
            _ => return None,
        },
        [FW_CFG] => match file {
            "driver_override" => "(null)\n".into(),
            "modalias" => format!("acpi:{}:\n", &FW_CFG[..8]),
            "uevent" => format!("MODALIAS=acpi:{}:\n", &FW_CFG[..8]),
            "waiting_for_supplier" => "0\n".into(),
            _ => return None,
        },
        [name, "power"] if bus.function(name).is_some() => {
            return Some(function_power(sys, file).map(String::into_bytes))
        }
        [name] => return function_read(sys, bus, bus.function(name)?, file).map(Ok),
        [name, v] => virtio_read(virtio_of(bus, name, v)?, file)?,
        _ => return None,
    };
    Some(Ok(text.into_bytes()))
}

/// Read `/sys/bus/pci/...` files of this module (the slots and
/// `resource_alignment`).
pub(crate) fn bus_read(sys: &System, rest: &[&str]) -> Option<Result<Vec<u8>, Errno>> {
    let pci = bus(sys)?;
    let text = match rest {
        ["resource_alignment"] => String::new(),
        ["slots", s, f] => {
            let n = slot_number(s)?;
            let occupied = pci.functions.iter().any(|x| x.slot == n);
            match *f {
                "adapter" | "power" => if occupied { "1\n" } else { "0\n" }.into(),
                "address" => format!("0000:00:{n:02x}\n"),
                "attention" => String::new(),
                "cur_bus_speed" | "max_bus_speed" => "Unknown\n".into(),
                "latch" => "1\n".into(),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(Ok(text.into_bytes()))
}

/// The size `stat` reports for a file of this module: `config` is 256
/// bytes, `resourceN` the BAR's size; `None` for the others (a page).
pub(crate) fn file_size(sys: &System, rest: &[&str]) -> Option<u64> {
    let f = bus(sys)?.function(rest.first()?)?;
    match rest {
        [_, "config"] => Some(256),
        [_, r] => {
            let n = r.strip_prefix("resource")?;
            let n = n.strip_suffix("_wc").unwrap_or(n);
            let index: u8 = n.parse().ok()?;
            f.bars.iter().find(|b| b.index == index).map(|b| b.size)
        }
        _ => None,
    }
}

/// The `rescan` stores (bus, bridge, function): a number, and nothing new
/// is found.
pub(crate) fn rescan_store(data: &[u8]) -> Result<usize, Errno> {
    kstr::kstrtoull(data).map_err(|_| Errno::EINVAL)?;
    Ok(data.len())
}

/// Whether `rest` (below `/sys`) is a `rescan` file this module serves.
pub(crate) fn is_rescan(parts: &[&str]) -> bool {
    matches!(
        parts,
        ["sys", "bus", "pci", "rescan"]
            | ["sys", "devices", ROOT, _, "rescan"]
            | ["sys", "devices", ROOT, "pci_bus", "0000:00", "rescan"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use memhp_model::pci::{PciKind, BAR_IO};

    #[test]
    fn io_and_prefetchable_bars_render_like_the_kernel_resource_file() {
        let mut bus = PciBus::qemu_pc();
        bus.add(PciFunction::virtio(
            3,
            PciKind::VirtioBalloon,
            0xfebf_c000,
            false,
        ));
        let f = bus.function("0000:00:03.0").unwrap();
        let r = resource(f);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 13);
        assert_eq!(
            lines[0],
            "0x000000000000c000 0x000000000000c03f 0x0000000000040101"
        );
        assert_eq!(
            lines[4],
            "0x00000000febfc000 0x00000000febfffff 0x000000000014220c"
        );
        assert_eq!(
            lines[1],
            "0x0000000000000000 0x0000000000000000 0x0000000000000000"
        );
        assert_eq!(f.bars[0].flags, BAR_IO);
    }

    #[test]
    fn uevent_names_the_driver_only_once_bound() {
        let mut bus = PciBus::qemu_pc();
        bus.add(PciFunction::virtio(
            2,
            PciKind::VirtioMem,
            0xfebf_8000,
            false,
        ));
        let before = function_uevent(bus.function("0000:00:02.0").unwrap());
        assert_eq!(
            before,
            "PCI_CLASS=FF00\nPCI_ID=1AF4:1058\nPCI_SUBSYS_ID=1AF4:1100\nPCI_SLOT_NAME=0000:00:02.0\nMODALIAS=pci:v00001AF4d00001058sv00001AF4sd00001100bc00scFFi00\n"
        );
        bus.bind_virtio(2);
        let after = function_uevent(bus.function("0000:00:02.0").unwrap());
        assert_eq!(after, format!("DRIVER=virtio-pci\n{before}"));
    }
}
