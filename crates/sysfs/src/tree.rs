//! The tree memhp serves: `/sys/devices/system/{memory,node,cpu}`,
//! `/sys/bus/{memory,node}`, `/sys/module/memory_hotplug`, the notifier
//! error-injection part of debugfs and `/proc/{zoneinfo,iomem,meminfo}`,
//! resolved path by path over a [`Shared`] system. Reads only read the model;
//! writes go through [`crate::store`].

use crate::render;
use crate::stats;
use crate::store;
use crate::vfs::{Cancel, Changes, EntryKind, Errno, Scope, Tree};
use memhp_model::block::BlockState;
use memhp_model::shared::Shared;
use memhp_model::System;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const DIR: EntryKind = EntryKind::Dir;

pub(crate) fn file(mode: u16) -> EntryKind {
    EntryKind::File { mode }
}

pub(crate) fn link(target: impl Into<String>) -> EntryKind {
    EntryKind::Symlink {
        target: target.into(),
    }
}

/// The size `stat` reports for the regular file at `path`: a sysfs
/// attribute's is a page (4096); a binary attribute's is its buffer, as
/// the node's CPU list (`CPULIST_FILE_MAX_BYTES` with the build's
/// `NR_CPUS` of 8192) and CPU mask (`CPUMAP_FILE_MAX_BYTES`, a page).
/// (procfs and debugfs files are size 0 on Linux; over FUSE a size-0 file
/// reads as empty through `sendfile`, so they keep a page too.)
pub fn file_size(path: &str) -> u64 {
    match split(path).as_slice() {
        ["sys", "devices", "system", "node", n, "cpulist"] if n.starts_with("node") => 28672,
        _ => 4096,
    }
}

/// `strverscmp`-like order: digit runs compare by value.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let tx = dx.iter().skip_while(|&&c| c == b'0').count();
                let ty = dy.iter().skip_while(|&&c| c == b'0').count();
                let o = tx.cmp(&ty).then_with(|| dx[nx - tx..].cmp(&dy[ny - ty..]));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// The generic runtime-PM directory of a device.
pub(crate) const POWER_FILES: [(&str, u16); 9] = [
    ("async", 0o644),
    ("autosuspend_delay_ms", 0o644),
    ("control", 0o644),
    ("runtime_active_kids", 0o444),
    ("runtime_active_time", 0o444),
    ("runtime_enabled", 0o444),
    ("runtime_status", 0o444),
    ("runtime_suspended_time", 0o444),
    ("runtime_usage", 0o444),
];

/// The kobject path of the device whose directory is `dir` (`["sys",
/// "devices", "system", "memory", "memory3"]` → `/devices/system/memory/memory3`).
pub(crate) fn devpath_of(dir: &[&str]) -> String {
    dir.iter().skip(1).fold(String::new(), |p, d| p + "/" + d)
}

/// A file of a device's `power/` directory; `devpath` names the device.
fn power_read(sys: &System, devpath: &str, name: &str) -> Result<Vec<u8>, Errno> {
    let p = sys.device_power(devpath);
    let text: &[u8] = match name {
        "async" if p.async_suspend => b"enabled\n",
        "async" => b"disabled\n",
        "autosuspend_delay_ms" => return Err(Errno::EIO),
        "control" if p.forbidden => b"on\n",
        "control" => b"auto\n",
        "runtime_enabled" if p.forbidden => b"disabled & forbidden\n",
        "runtime_enabled" => b"disabled\n",
        "runtime_status" => b"unsupported\n",
        "runtime_usage" if p.forbidden => b"1\n",
        _ => b"0\n",
    };
    Ok(text.to_vec())
}

/// The CPU masks of `/sys/devices/system/cpu` (no CPU hotplug: every
/// possible CPU is present and online).
const CPU_MASK_FILES: [&str; 5] = ["kernel_max", "offline", "online", "possible", "present"];

/// The huge page sizes: 2 MiB only (QEMU's default CPU has no 1 GiB pages).
const HUGEPAGE_SIZES: [&str; 1] = ["hugepages-2048kB"];
/// `/sys/kernel/mm/hugepages/hugepages-2048kB`.
const HSTATE_FILES: [(&str, u16); 6] = [
    ("free_hugepages", 0o444),
    ("nr_hugepages", 0o644),
    ("nr_hugepages_mempolicy", 0o644),
    ("nr_overcommit_hugepages", 0o644),
    ("resv_hugepages", 0o444),
    ("surplus_hugepages", 0o444),
];
const HUGEPAGE_FILES: [&str; 3] = ["free_hugepages", "nr_hugepages", "surplus_hugepages"];
const INJECT_ACTIONS: [&str; 2] = ["MEM_GOING_OFFLINE", "MEM_GOING_ONLINE"];
const PARAMS: [(&str, u16); 4] = [
    ("auto_movable_numa_aware", 0o644),
    ("auto_movable_ratio", 0o644),
    ("memmap_on_memory", 0o444),
    ("online_policy", 0o644),
];

fn block_id(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("memory")?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

fn node_id(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("node")?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn cpu_id(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("cpu")?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// Every entry of directory `path`, or `None` if `path` is not a directory.
fn list(sys: &System, path: &[&str]) -> Option<Vec<(String, EntryKind)>> {
    let acpi = match path {
        ["sys", "devices", rest @ ..] if rest.first() == Some(&crate::acpi::ROOT) => {
            Some(crate::acpi::list(sys, rest))
        }
        ["sys", "devices", "system", class, rest @ ..]
            if *class == crate::acpi::CONTAINER_CLASS =>
        {
            Some(crate::acpi::container_list(sys, rest))
        }
        ["sys", "devices", root, rest @ ..] if *root == crate::pci::ROOT => {
            Some(crate::pci::list(sys, rest))
        }
        ["sys", "bus", b, rest @ ..] if crate::pci::buses(sys).contains(b) => {
            Some(crate::pci::bus_list(sys, b, rest))
        }
        _ => None,
    };
    if let Some(entries) = acpi {
        let mut v = entries?;
        v.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        return Some(v);
    }
    // The buses served: memory and node, and those of the ACPI memory
    // devices when the machine has DIMM slots.
    let acpi_bus = |b: &str| sys.acpi_memory.is_some() && crate::acpi::BUSES.contains(&b);
    let bus_served = |b: &str| ["memory", "node"].contains(&b) || acpi_bus(b);
    let mut v: Vec<(String, EntryKind)> = Vec::new();
    let mut add = |n: &str, k: EntryKind| v.push((n.to_string(), k));
    match path {
        [] => {
            add("proc", DIR);
            add("sys", DIR);
        }
        ["proc"] => {
            add("buddyinfo", file(0o444));
            add("cmdline", file(0o444));
            add("cpuinfo", file(0o444));
            add("iomem", file(0o444));
            add("meminfo", file(0o444));
            add("modules", file(0o444));
            add("pagetypeinfo", file(0o400));
            add("sys", DIR);
            add("version", file(0o444));
            add("vmstat", file(0o444));
            add("zoneinfo", file(0o444));
        }
        ["proc", "sys"] => {
            add("kernel", DIR);
            add("vm", DIR);
        }
        ["proc", "sys", "kernel"] => {
            add("hostname", file(0o644));
            for f in ["osrelease", "ostype", "version"] {
                add(f, file(0o444));
            }
        }
        ["proc", "sys", "vm"] => {
            for s in &memhp_model::sysctl::VM_SYSCTLS {
                add(s.name, file(s.mode));
            }
        }
        ["sys"] => {
            for d in ["bus", "devices", "kernel", "module"] {
                add(d, DIR);
            }
        }
        ["sys", "devices"] => {
            if sys.acpi_memory.is_some() {
                add(crate::acpi::ROOT, DIR);
            }
            if sys.pci.is_some() {
                add(crate::pci::ROOT, DIR);
            }
            add("system", DIR);
        }
        ["sys", "devices", "system"] => {
            if sys.acpi_memory.is_some() {
                add(crate::acpi::CONTAINER_CLASS, DIR);
            }
            for d in ["cpu", "memory", "node"] {
                add(d, DIR);
            }
        }
        ["sys", "devices", "system", "cpu"] => {
            for n in sys.nodes.values() {
                for c in &n.cpus {
                    add(&format!("cpu{c}"), DIR);
                }
            }
            for f in CPU_MASK_FILES {
                add(f, file(0o444));
            }
            for (name, kind) in crate::cpu::top_entries() {
                add(name, kind);
            }
            add("power", DIR);
        }
        ["sys", "devices", "system", "cpu", c] if cpu_id(c).is_some() => {
            let cpu = cpu_id(c)?;
            let n = sys.nodes.values().find(|n| n.cpus.contains(&cpu))?;
            add(
                &format!("node{}", n.id),
                link(format!("../../node/node{}", n.id)),
            );
            for (name, kind) in crate::cpu::cpu_entries(cpu) {
                add(name, kind);
            }
        }
        ["sys", "devices", "system", "cpu", rest @ ..] if rest.last() != Some(&"power") => {
            for (name, kind) in crate::cpu::list(sys, rest)? {
                add(&name, kind);
            }
        }
        ["sys", "devices", "system", "memory"] => {
            for (n, k) in memory_dir_entries(sys) {
                add(n, k);
            }
            for id in sys.blocks.keys() {
                add(&format!("memory{id}"), DIR);
            }
        }
        ["sys", "devices", "system", "memory", "power"]
        | ["sys", "devices", "system", "node", "power"]
        | ["sys", "devices", "system", "cpu", "power"] => {
            for (n, m) in POWER_FILES {
                add(n, file(m));
            }
        }
        ["sys", "devices", "system", "cpu", c, "power"]
            if cpu_id(c).is_some_and(|c| sys.online_cpus().contains(&c)) =>
        {
            // A CPU exposes its resume-latency limit (no constraint: it
            // reads 0, as power_read answers).
            add("pm_qos_resume_latency_us", file(0o644));
            for (n, m) in POWER_FILES {
                add(n, file(m));
            }
        }
        ["sys", "devices", "system", "memory", b] => {
            let b = sys.blocks.get(&block_id(b)?)?;
            if let Some(fw) = &b.firmware_node {
                add("firmware_node", link(fw.clone()));
            }
            for n in &b.link_nodes {
                add(&format!("node{n}"), link(format!("../../node/node{n}")));
            }
            add("online", file(0o644));
            add("phys_device", file(0o444));
            add("phys_index", file(0o444));
            add("power", DIR);
            add("removable", file(0o444));
            add("state", file(0o644));
            add("subsystem", link("../../../../bus/memory"));
            add("uevent", file(0o644));
            add("valid_zones", file(0o444));
        }
        ["sys", "devices", "system", "memory", b, "power"]
            if block_id(b).is_some_and(|id| sys.blocks.contains_key(&id)) =>
        {
            for (n, m) in POWER_FILES {
                add(n, file(m));
            }
        }
        ["sys", "devices", "system", "node"] => {
            for f in [
                "has_cpu",
                "has_generic_initiator",
                "has_memory",
                "has_normal_memory",
                "online",
                "possible",
                "uevent",
            ] {
                add(f, file(if f == "uevent" { 0o644 } else { 0o444 }));
            }
            add("power", DIR);
            for n in sys.online_nodes() {
                add(&format!("node{}", n.id), DIR);
            }
        }
        ["sys", "devices", "system", "node", n] => {
            let node = sys.node(node_id(n)?).filter(|n| n.online)?;
            for (name, kind) in node_dir_entries(node) {
                add(&name, kind);
            }
            for (id, b) in &sys.blocks {
                if b.link_nodes.contains(&node.id) {
                    add(
                        &format!("memory{id}"),
                        link(format!("../../memory/memory{id}")),
                    );
                }
            }
        }
        ["sys", "devices", "system", "node", n, "power"] => {
            sys.node(node_id(n)?).filter(|n| n.online)?;
            for (n, m) in POWER_FILES {
                add(n, file(m));
            }
        }
        ["sys", "devices", "system", "node", n, "x86"] => {
            sys.node(node_id(n)?).filter(|n| n.online)?;
            add("sgx_total_bytes", file(0o444));
        }
        ["sys", "devices", "system", "node", n, "hugepages"] => {
            sys.node(node_id(n)?).filter(|n| n.online)?;
            for h in HUGEPAGE_SIZES {
                add(h, DIR);
            }
        }
        ["sys", "devices", "system", "node", n, "hugepages", h] if HUGEPAGE_SIZES.contains(h) => {
            sys.node(node_id(n)?).filter(|n| n.online)?;
            for f in HUGEPAGE_FILES {
                add(f, file(if f == "nr_hugepages" { 0o644 } else { 0o444 }));
            }
        }
        ["sys", "bus"] => {
            if sys.acpi_memory.is_some() {
                for b in crate::acpi::BUSES {
                    add(b, DIR);
                }
            }
            for b in crate::pci::buses(sys) {
                add(b, DIR);
            }
            add("memory", DIR);
            add("node", DIR);
        }
        ["sys", "bus", bus] if bus_served(bus) => {
            add("devices", DIR);
            add("drivers", DIR);
            add("drivers_autoprobe", file(0o644));
            add("drivers_probe", file(0o200));
            add("uevent", file(0o200));
        }
        ["sys", "bus", bus, "drivers"] if bus_served(bus) => {}
        ["sys", "bus", bus, "devices"] if acpi_bus(bus) => {
            for (n, k) in crate::acpi::bus_devices(sys, bus) {
                add(&n, k);
            }
        }
        ["sys", "bus", "memory", "devices"] => {
            for id in sys.blocks.keys() {
                add(&format!("memory{id}"), memory_bus_link(*id));
            }
        }
        ["sys", "bus", "node", "devices"] => {
            for n in sys.online_nodes() {
                add(
                    &format!("node{}", n.id),
                    link(format!("../../../devices/system/node/node{}", n.id)),
                );
            }
        }
        ["sys", "module"] => add("memory_hotplug", DIR),
        ["sys", "module", "memory_hotplug"] => add("parameters", DIR),
        ["sys", "module", "memory_hotplug", "parameters"] => {
            for (n, m) in PARAMS {
                add(n, file(m));
            }
        }
        ["sys", "kernel"] => {
            add("debug", DIR);
            add("mm", DIR);
        }
        ["sys", "kernel", "mm"] => {
            add("hugepages", DIR);
            add("transparent_hugepage", DIR);
            for (d, _) in memhp_model::mm_knobs::DIRS {
                add(d, DIR);
            }
        }
        ["sys", "kernel", "mm", d] if memhp_model::mm_knobs::DIRS.iter().any(|x| x.0 == *d) => {
            let (_, files) = memhp_model::mm_knobs::DIRS.iter().find(|x| x.0 == *d)?;
            for (f, writable) in files.iter() {
                add(f, file(if *writable { 0o644 } else { 0o444 }));
            }
        }
        ["sys", "kernel", "mm", "transparent_hugepage"] => {
            for f in ["defrag", "enabled", "shmem_enabled", "use_zero_page"] {
                add(f, file(0o644));
            }
            add("hpage_pmd_size", file(0o444));
            add("khugepaged", DIR);
        }
        ["sys", "kernel", "mm", "transparent_hugepage", "khugepaged"] => {
            for (f, writable, ..) in memhp_model::thp::KHUGEPAGED {
                add(f, file(if writable { 0o644 } else { 0o444 }));
            }
        }
        ["sys", "kernel", "mm", "hugepages"] => {
            for h in HUGEPAGE_SIZES {
                add(h, DIR);
            }
        }
        ["sys", "kernel", "mm", "hugepages", h] if HUGEPAGE_SIZES.contains(h) => {
            for (f, m) in HSTATE_FILES {
                add(f, file(m));
            }
        }
        // notifier_error_inject's directory lives as long as the module.
        ["sys", "kernel", "debug"] => {
            if sys.injection.loaded || sys.modules.iter().any(|m| m == "notifier_error_inject") {
                add("notifier-error-inject", DIR);
            }
        }
        ["sys", "kernel", "debug", "notifier-error-inject"] => {
            if sys.injection.loaded {
                add("memory", DIR);
            }
        }
        ["sys", "kernel", "debug", "notifier-error-inject", "memory"] if sys.injection.loaded => {
            add("actions", DIR)
        }
        ["sys", "kernel", "debug", "notifier-error-inject", "memory", "actions"]
            if sys.injection.loaded =>
        {
            for a in INJECT_ACTIONS {
                add(a, DIR);
            }
        }
        ["sys", "kernel", "debug", "notifier-error-inject", "memory", "actions", a]
            if sys.injection.loaded && INJECT_ACTIONS.contains(a) =>
        {
            add("error", file(0o600));
        }
        _ => return None,
    }
    v.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    Some(v)
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The files of a memory block directory (everything but the links).
pub const BLOCK_FILES: [(&str, u16); 7] = [
    ("online", 0o644),
    ("phys_device", 0o444),
    ("phys_index", 0o444),
    ("removable", 0o444),
    ("state", 0o644),
    ("uevent", 0o644),
    ("valid_zones", 0o444),
];

/// The entries of the memory directory besides its blocks (what the build
/// and the version provide).
/// `/sys/bus/memory/devices/memoryN`.
fn memory_bus_link(id: u64) -> EntryKind {
    link(format!("../../../devices/system/memory/memory{id}"))
}

fn memory_dir_entries(sys: &System) -> Vec<(&'static str, EntryKind)> {
    let mut v = vec![
        ("auto_online_blocks", file(0o644)),
        ("block_size_bytes", file(0o444)),
    ];
    if sys.version == memhp_model::KernelVersion::Mainline && sys.build.crash_hotplug {
        v.push(("crash_hotplug", file(0o444)));
    }
    if sys.build.memory_failure {
        v.push(("hard_offline_page", file(0o200)));
        v.push(("soft_offline_page", file(0o200)));
    }
    if sys.build.memory_probe {
        v.push(("probe", file(0o200)));
    }
    v.push(("power", DIR));
    v.push(("uevent", file(0o644)));
    v
}

/// The entries of an online node's directory besides its memory links.
fn node_dir_entries(node: &memhp_model::system::Node) -> Vec<(String, EntryKind)> {
    let mut v = vec![("compact".to_string(), file(0o200))];
    for c in &node.cpus {
        v.push((format!("cpu{c}"), link(format!("../../cpu/cpu{c}"))));
    }
    for f in [
        "cpulist", "cpumap", "distance", "meminfo", "numastat", "vmstat",
    ] {
        v.push((f.to_string(), file(0o444)));
    }
    v.push(("hugepages".to_string(), DIR));
    v.push(("power".to_string(), DIR));
    v.push(("subsystem".to_string(), link("../../../../bus/node")));
    v.push(("uevent".to_string(), file(0o644)));
    // x86's node attribute group (SGX; none here).
    v.push(("x86".to_string(), DIR));
    v
}

fn lookup_in(sys: &System, parts: &[&str]) -> Option<EntryKind> {
    lookup_listing(sys, parts, None)
}

/// The listings of the directories that lookups of one consistent state
/// had to list, by path, as name → entry (`None`: not a directory).
#[derive(Default)]
struct ListingMemo(HashMap<String, Option<HashMap<String, EntryKind>>>);

impl ListingMemo {
    fn entry(&mut self, sys: &System, dir: &[&str], name: &str) -> Option<EntryKind> {
        self.0
            .entry(dir.join("/"))
            .or_insert_with(|| list(sys, dir).map(|v| v.into_iter().collect()))
            .as_ref()?
            .get(name)
            .cloned()
    }
}

/// [`lookup_in`]; a lookup that lists its directory keeps the listing in
/// `memo` (if given) for the next lookup in the same directory.
fn lookup_listing(
    sys: &System,
    parts: &[&str],
    memo: Option<&mut ListingMemo>,
) -> Option<EntryKind> {
    // Fast paths for the hot spots (block directories and their files, the
    // memory directory's own files, the links to blocks), so that a lookup
    // costs O(log blocks), not a directory listing.
    match parts {
        ["sys", "devices", "system", "memory", f] if !f.starts_with("memory") => {
            return memory_dir_entries(sys)
                .into_iter()
                .find(|(n, _)| n == f)
                .map(|(_, k)| k);
        }
        ["sys", "devices", "system", "memory", b] if b.starts_with("memory") => {
            return sys.blocks.contains_key(&block_id(b)?).then_some(DIR);
        }
        ["sys", "devices", "system", "memory", b, f] if b.starts_with("memory") => {
            sys.blocks.get(&block_id(b)?)?;
            if let Some((_, m)) = BLOCK_FILES.iter().find(|(n, _)| n == f) {
                return Some(file(*m));
            }
        }
        // The memory bus's device links (as listed by `list`).
        ["sys", "bus", "memory", "devices", b] => {
            let id = block_id(b)?;
            return sys.blocks.contains_key(&id).then(|| memory_bus_link(id));
        }
        // The ACPI memory devices' entries, without their links to blocks.
        ["sys", "devices", dir @ .., f] if dir.first() == Some(&crate::acpi::ROOT) => {
            return crate::acpi::lookup(sys, dir, f);
        }
        // A node's own entries, without listing its memory links.
        ["sys", "devices", "system", "node", n, f]
            if node_id(n).is_some() && !f.starts_with("memory") =>
        {
            let node = sys.node(node_id(n)?).filter(|n| n.online)?;
            return node_dir_entries(node)
                .into_iter()
                .find(|(name, _)| name == f)
                .map(|(_, k)| k);
        }
        // A node's memoryN links (as listed by `list`).
        ["sys", "devices", "system", "node", n, b] if b.starts_with("memory") => {
            let node = sys.node(node_id(n)?).filter(|n| n.online)?;
            let id = block_id(b)?;
            return sys
                .blocks
                .get(&id)
                .filter(|blk| blk.link_nodes.contains(&node.id))
                .map(|_| link(format!("../../memory/memory{id}")));
        }
        _ => {}
    }
    match (parts.split_last(), memo) {
        (None, _) => Some(DIR),
        (Some((last, parent)), Some(memo)) => memo.entry(sys, parent, last),
        (Some((last, parent)), None) => {
            let entries = list(sys, parent)?;
            entries.into_iter().find(|(n, _)| n == last).map(|(_, k)| k)
        }
    }
}

/// A count of the 2 MiB hstate, as its sysfs file (and the sysctl of the
/// same name) shows it; `surplus_hugepages` is always 0.
fn hstate_value(sys: &System, file: &str) -> Option<u64> {
    let h = &sys.hugetlb;
    Some(match file {
        "free_hugepages" => h.free_huge_pages,
        "nr_hugepages" | "nr_hugepages_mempolicy" => h.nr_huge_pages,
        "nr_overcommit_hugepages" => h.nr_overcommit_huge_pages,
        "resv_hugepages" => h.resv_huge_pages,
        "surplus_hugepages" => 0,
        _ => return None,
    })
}

/// Read a regular file's content.
fn read_file(sys: &System, parts: &[&str]) -> Result<Vec<u8>, Errno> {
    let pci = match parts {
        ["sys", "devices", root, rest @ .., f] if *root == crate::pci::ROOT => {
            crate::pci::read(sys, rest, f)
        }
        ["sys", "bus", "pci", rest @ ..] => crate::pci::bus_read(sys, rest),
        _ => None,
    };
    if let Some(r) = pci {
        return r;
    }
    let text = match parts {
        ["proc", "zoneinfo"] => stats::zoneinfo(sys),
        ["proc", "iomem"] => render::proc_iomem(sys),
        ["proc", "meminfo"] => stats::proc_meminfo(sys),
        ["proc", "buddyinfo"] => stats::buddyinfo(sys),
        ["proc", "pagetypeinfo"] => stats::pagetypeinfo(sys),
        ["proc", "cmdline"] => format!("{}\n", sys.cmdline.raw),
        ["proc", "version"] => format!("{}\n", sys.version.linux_banner()),
        ["proc", "vmstat"] => stats::proc_vmstat(sys),
        ["proc", "cpuinfo"] => render::cpuinfo(sys),
        ["proc", "modules"] => render::proc_modules(sys),
        ["proc", "sys", "kernel", f] => match *f {
            "hostname" => format!("{}\n", sys.hostname),
            "osrelease" => format!("{}\n", sys.version.uname_release()),
            "ostype" => "Linux\n".to_string(),
            "version" => format!("{}\n", sys.version.uname_version()),
            _ => return Err(Errno::ENOENT),
        },
        ["sys", "devices", "system", "cpu", f] if CPU_MASK_FILES.contains(f) => match *f {
            // NR_CPUS - 1 (Debian: 8192).
            "kernel_max" => "8191\n".to_string(),
            "offline" => {
                let online = sys.online_cpus();
                render::bitmap_list((0..sys.nr_cpu_ids()).filter(|c| !online.contains(c)))
            }
            "possible" => render::bitmap_list(0..sys.nr_cpu_ids()),
            _ => render::bitmap_list(sys.online_cpus()),
        },
        [dir @ .., "power", f] => return power_read(sys, &devpath_of(dir), f),
        ["sys", "devices", rest @ .., f] if rest.first() == Some(&crate::acpi::ROOT) => {
            crate::acpi::read(sys, rest, f).unwrap_or(Err(Errno::ENOENT))?
        }
        ["sys", "devices", "system", class, _, f] if *class == crate::acpi::CONTAINER_CLASS => {
            crate::acpi::container_read(sys, f)?
        }
        ["sys", "devices", "system", "cpu", c, "uevent"]
            if cpu_id(c).is_some_and(|c| sys.online_cpus().contains(&c)) =>
        {
            crate::cpu::uevent()
        }
        [.., "uevent"] => String::new(),
        ["sys", "devices", "system", "cpu", rest @ ..] => {
            crate::cpu::read(sys, rest).unwrap_or(Err(Errno::ENOENT))?
        }
        ["sys", "devices", "system", "memory", "auto_online_blocks"] => {
            render::auto_online_blocks(sys)
        }
        ["sys", "devices", "system", "memory", "block_size_bytes"] => render::block_size_bytes(sys),
        ["sys", "devices", "system", "memory", "crash_hotplug"] => "0\n".to_string(),
        ["sys", "devices", "system", "memory", b, attr] => {
            let id = block_id(b).ok_or(Errno::ENOENT)?;
            match *attr {
                "state" => render::block_state(sys, id),
                "online" => render::block_online(sys, id),
                "phys_index" => Some(render::block_phys_index(id)),
                "phys_device" => Some("0\n".to_string()),
                "removable" => render::block_removable(sys, id),
                "valid_zones" => render::block_valid_zones(sys, id),
                _ => None,
            }
            .ok_or(Errno::ENOENT)?
        }
        ["sys", "devices", "system", "node", n, "hugepages", _, f] => {
            let (total, free) = sys.node_huge_pages(node_id(n).ok_or(Errno::ENOENT)?);
            match *f {
                "nr_hugepages" => format!("{total}\n"),
                "free_hugepages" => format!("{free}\n"),
                _ => "0\n".to_string(),
            }
        }
        ["sys", "devices", "system", "node", _, "x86", "sgx_total_bytes"] => "0\n".to_string(),
        ["sys", "kernel", "mm", "transparent_hugepage", f] => {
            use memhp_model::thp::{render_choices, DEFRAG, ENABLED, SHMEM_ENABLED};
            match *f {
                "enabled" => render_choices(&ENABLED, sys.thp.enabled),
                "defrag" => render_choices(&DEFRAG, sys.thp.defrag),
                "shmem_enabled" => render_choices(&SHMEM_ENABLED, sys.thp.shmem_enabled),
                "use_zero_page" => format!("{}\n", u8::from(sys.thp.use_zero_page)),
                "hpage_pmd_size" => "2097152\n".to_string(),
                _ => return Err(Errno::ENOENT),
            }
        }
        ["sys", "kernel", "mm", "transparent_hugepage", "khugepaged", f] => {
            format!("{}\n", sys.thp.khugepaged_value(f).ok_or(Errno::ENOENT)?)
        }
        ["sys", "kernel", "mm", d, f] if memhp_model::mm_knobs::DIRS.iter().any(|x| x.0 == *d) => {
            sys.mm_knobs.read(d, f).ok_or(Errno::ENOENT)?
        }
        ["sys", "kernel", "mm", "hugepages", _, f] => {
            format!("{}\n", hstate_value(sys, f).unwrap_or(0))
        }
        ["proc", "sys", "vm", f] => match *f {
            "min_free_kbytes" => format!("{}\n", sys.wmark.min_free_kbytes),
            _ => match hstate_value(sys, f) {
                Some(v) => format!("{v}\n"),
                None => {
                    memhp_model::sysctl::sysctl(f).ok_or(Errno::ENOENT)?;
                    sys.vm.render(f)
                }
            },
        },
        ["sys", "devices", "system", "node", n, attr] if node_id(n).is_some() => {
            let nid = node_id(n).ok_or(Errno::ENOENT)?;
            let node = sys.node(nid).ok_or(Errno::ENOENT)?;
            match *attr {
                "cpulist" => render::bitmap_list(node.cpus.iter().copied()),
                "cpumap" => render::bitmap_mask(&node.cpus, sys.nr_cpu_ids()),
                "distance" => {
                    let d: Vec<String> = sys
                        .online_nodes()
                        .map(|o| sys.node_distance(nid, o.id).to_string())
                        .collect();
                    format!("{}\n", d.join(" "))
                }
                "meminfo" => stats::node_meminfo(sys, nid).ok_or(Errno::ENOENT)?,
                "numastat" => [
                    "numa_hit",
                    "numa_miss",
                    "numa_foreign",
                    "interleave_hit",
                    "local_node",
                    "other_node",
                ]
                .iter()
                .map(|k| format!("{k} 0\n"))
                .collect(),
                "vmstat" => stats::node_vmstat(sys, nid),
                _ => return Err(Errno::ENOENT),
            }
        }
        ["sys", "devices", "system", "node", name] => {
            render::node_state(sys, name).ok_or(Errno::ENOENT)?
        }
        ["sys", "bus", _, "drivers_autoprobe"] => "1\n".to_string(),
        ["sys", "module", "memory_hotplug", "parameters", p] => {
            render::module_param(sys, p).ok_or(Errno::ENOENT)?
        }
        ["sys", "kernel", "debug", "notifier-error-inject", "memory", "actions", a, "error"] => {
            let v = if *a == "MEM_GOING_ONLINE" {
                sys.injection.going_online
            } else {
                sys.injection.going_offline
            };
            render::inject_error(v)
        }
        _ => return Err(Errno::ENOENT),
    };
    Ok(text.into_bytes())
}

/// Whether a read of `path` can show how much memory is in use (procfs's
/// counters, a node's, the huge page pools): the access hook runs before
/// those reads and before every write, not before reading a block's
/// attributes, which no memory use changes.
fn shows_memory_use(path: &str) -> bool {
    ["proc/", "sys/devices/system/node/", "sys/kernel/mm/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// See [`SysfsTree::set_access_hook`].
pub type AccessHook = Arc<dyn Fn() + Send + Sync>;

/// The sysfs/procfs tree of one shared system.
pub struct SysfsTree {
    shared: Arc<Shared>,
    eject: std::sync::OnceLock<crate::acpi::EjectHandler>,
    access: std::sync::OnceLock<AccessHook>,
    /// The listings [`Tree::read_batch`]'s lookups needed, and the layout
    /// generation they belong to (a listing is a function of the layout).
    /// A transport compares every cached file after each change: without
    /// this, every comparison of a file without a fast-path lookup would
    /// list its directory again.
    batch_listings: Mutex<(u64, ListingMemo)>,
}

impl SysfsTree {
    pub fn new(shared: Arc<Shared>) -> Self {
        SysfsTree {
            shared,
            eject: std::sync::OnceLock::new(),
            access: std::sync::OnceLock::new(),
            batch_listings: Mutex::new((0, ListingMemo::default())),
        }
    }

    /// What the platform does when the guest ejects a DIMM slot's device
    /// (set once, by whoever owns the DIMMs; without it an eject is
    /// accepted and nothing happens, as with a platform that ignores
    /// `_EJ0`).
    pub fn set_eject_handler(&self, handler: crate::acpi::EjectHandler) {
        let _ = self.eject.set(handler);
    }

    /// What runs before a read that can show memory use and before each
    /// write (set once): whoever owns the machine brings it up to date with
    /// what the guest did outside the tree (the scenario runner charges
    /// what the guest's tmpfs holds, as the guest's kernel did when it was
    /// written).
    pub fn set_access_hook(&self, hook: AccessHook) {
        let _ = self.access.set(hook);
    }

    fn accessed(&self) {
        if let Some(hook) = self.access.get() {
            hook();
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// The content of the file at `path` in `sys`.
fn read_path(sys: &System, path: &str, memo: Option<&mut ListingMemo>) -> Result<Vec<u8>, Errno> {
    let parts = split(path);
    match lookup_listing(sys, &parts, memo) {
        Some(EntryKind::File { .. }) => read_file(sys, &parts),
        Some(EntryKind::Dir) => Err(Errno::EISDIR),
        Some(EntryKind::Symlink { .. }) | None => Err(Errno::ENOENT),
    }
}

impl Tree for SysfsTree {
    fn file_size(&self, path: &str) -> u64 {
        match split(path).as_slice() {
            ["sys", "devices", root, rest @ ..] if *root == crate::pci::ROOT => self
                .shared
                .read(|sys| crate::pci::file_size(sys, rest))
                .unwrap_or(4096),
            _ => file_size(path),
        }
    }

    fn lookup(&self, path: &str) -> Option<EntryKind> {
        let parts = split(path);
        self.shared.read(|sys| lookup_in(sys, &parts))
    }

    fn readdir(&self, path: &str) -> Result<Vec<(String, EntryKind)>, Errno> {
        let parts = split(path);
        self.shared.read(|sys| match list(sys, &parts) {
            Some(v) => Ok(v),
            None => match lookup_in(sys, &parts) {
                Some(_) => Err(Errno::ENOTDIR),
                None => Err(Errno::ENOENT),
            },
        })
    }

    fn open(&self, path: &str, read: bool, write: bool) -> Result<(), Errno> {
        match self.lookup(path) {
            None => Err(Errno::ENOENT),
            Some(EntryKind::Dir) if write => Err(Errno::EISDIR),
            Some(EntryKind::File { mode }) => {
                let readable = mode & 0o444 != 0;
                let writable = mode & 0o222 != 0;
                if (read && !readable) || (write && !writable) {
                    Err(Errno::EACCES)
                } else {
                    Ok(())
                }
            }
            Some(_) => Ok(()),
        }
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, Errno> {
        if self.read_has_effects(path) {
            self.accessed();
        }
        self.shared.read(|sys| read_path(sys, path, None))
    }

    fn read_has_effects(&self, path: &str) -> bool {
        self.access.get().is_some() && shows_memory_use(path)
    }

    fn read_batch(&self, paths: &[&str]) -> Vec<Result<Vec<u8>, Errno>> {
        self.shared.read(|sys| {
            let mut memo = self
                .batch_listings
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if memo.0 != sys.layout_generation {
                *memo = (sys.layout_generation, ListingMemo::default());
            }
            paths
                .iter()
                .map(|path| read_path(sys, path, Some(&mut memo.1)))
                .collect()
        })
    }

    fn write(&self, path: &str, data: &[u8], cancel: &Cancel) -> Result<usize, Errno> {
        self.accessed();
        let parts = split(path);
        match self.lookup(path) {
            Some(EntryKind::File { mode }) if mode & 0o222 != 0 => {}
            Some(EntryKind::File { .. }) => return Err(Errno::EACCES),
            Some(EntryKind::Dir) => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENOENT),
        }
        // An empty write: sysfs and procfs answer 0 without calling the
        // store; debugfs's simple attributes parse the empty string (EINVAL).
        if data.is_empty() && !matches!(parts.as_slice(), ["sys", "kernel", "debug", ..]) {
            return Ok(0);
        }
        let eject = match parts.as_slice() {
            ["sys", "devices", rest @ ..] if rest.first() == Some(&crate::acpi::ROOT) => {
                crate::acpi::eject_store(&self.shared, rest, data, self.eject.get())
            }
            ["sys", "devices", "system", class, _, "online"]
                if *class == crate::acpi::CONTAINER_CLASS =>
            {
                Some(crate::acpi::container_online_store(&self.shared, data))
            }
            _ => None,
        };
        let r = match eject {
            Some(r) => r,
            None if crate::pci::is_rescan(&parts) => crate::pci::rescan_store(data),
            None => store::store(&self.shared, &parts, data, cancel),
        };
        if let Err(e) = r {
            if e.0 >= 512 {
                let key = parts.join("/");
                self.shared
                    .modify(|s| s.events.wide_errnos.insert(key, e.0));
            }
        }
        r
    }

    fn generation(&self) -> u64 {
        self.shared.generation()
    }

    fn layout_generation(&self) -> u64 {
        self.shared.layout_generation()
    }

    fn changes_since(&self, generation: u64) -> Changes {
        self.shared.read(|sys| sys.changes_since(generation))
    }

    fn scope(&self, path: &str) -> Scope {
        content_scope(&split(path), |id| {
            self.shared.read(|sys| {
                sys.blocks
                    .get(&id)
                    .is_some_and(|b| b.state == BlockState::Online)
            })
        })
    }
}

/// Which changes reach the file at `parts`: a block's own attributes only
/// change with that block (the model journals every such change with it),
/// except `valid_zones` of an offline block, which follows the zones
/// (`online(id)`: whether block `id` is online now).
/// Whether `/proc/sys/vm/NAME` moves other than by a write to the file
/// itself: those the watermark and hugetlb models keep (`min_free_kbytes`,
/// recomputed by an online or offline; the huge page pool, also written
/// through `/sys/kernel/mm/hugepages`), the overcommit pair (each write
/// clears the other) and the reserves set from memory at boot.
fn vm_sysctl_moved_by_others(name: &str) -> bool {
    use memhp_model::sysctl::{sysctl, Kind};
    sysctl(name).is_some_and(|s| s.kind == Kind::Model)
        || [
            "admin_reserve_kbytes",
            "overcommit_kbytes",
            "overcommit_ratio",
            "user_reserve_kbytes",
        ]
        .contains(&name)
}

fn content_scope(parts: &[&str], online: impl FnOnce(u64) -> bool) -> Scope {
    match parts {
        // Both of cpuidle's governor files follow a write to one of them.
        ["sys", "devices", "system", "cpu", "cpuidle", _] => Scope::Global,
        // The PCI and virtio devices change with a module load or a
        // device's hot plug (their `uevent` gains the driver).
        ["sys", "devices", root, ..] if *root == crate::pci::ROOT => Scope::Global,
        ["sys", "bus", "pci" | "virtio", ..] => Scope::Global,
        // Fixed by the build and the boot (power/* and uevent by sysfs
        // itself), or changed only by a write to the file itself (whose
        // writer's cached page is dropped with it): the parameters, the
        // buses' autoprobe switches, `auto_online_blocks`, the CPUs (never
        // hot-plugged here), a node's distances and CPU masks. They only
        // go away with their directory.
        [.., "power", _]
        | [.., "uevent"]
        | ["sys", "devices", "system", "memory", "block_size_bytes" | "auto_online_blocks"]
        | ["sys", "devices", "system", "memory", _, "phys_index" | "phys_device" | "removable"]
        | ["sys", "module", "memory_hotplug", "parameters", _]
        | ["sys", "bus", _, "drivers_autoprobe"]
        | ["sys", "devices", "system", "cpu", ..]
        | ["sys", "devices", "system", "node", _, "distance" | "cpulist" | "cpumap"]
        | ["sys", "devices", "system", "node", _, "x86", "sgx_total_bytes"]
        // The identity of the kernel and the machine, and the resource
        // tree (only adding or removing memory, a change that reaches
        // everything, moves it).
        | ["proc", "cmdline" | "cpuinfo" | "version" | "iomem"]
        | ["proc", "sys", "kernel", _]
        // Knobs only their own writes change.
        | ["sys", "kernel", "mm", "ksm" | "lru_gen" | "numa" | "swap", _]
        | ["sys", "kernel", "mm", "transparent_hugepage", ..] => Scope::Static,
        ["proc", "sys", "vm", f] if !vm_sysctl_moved_by_others(f) => Scope::Static,
        // The ACPI memory devices' files: fixed by the slot, but for a
        // device's `_STA`, which moves only with a DIMM's plug or unplug, a
        // change that reaches everything.
        ["sys", "devices", first, ..] if *first == crate::acpi::ROOT => Scope::Static,
        ["sys", "devices", "system", "memory", b, attr, ..] => match block_id(b) {
            Some(id) if *attr != "valid_zones" || online(id) => Scope::Block(id),
            _ => Scope::Global,
        },
        _ => Scope::Global,
    }
}

#[cfg(test)]
mod tests {
    use super::{content_scope, natural_cmp, split};
    use crate::vfs::Scope;
    use std::cmp::Ordering;

    #[test]
    fn block_attributes_are_scoped_to_their_block_but_offline_valid_zones_is_global() {
        let scope = |path: &str, online: bool| content_scope(&split(path), |_| online);
        let m = "sys/devices/system/memory";
        assert_eq!(scope(&format!("{m}/memory7/state"), false), Scope::Block(7));
        assert_eq!(scope(&format!("{m}/memory7/online"), true), Scope::Block(7));
        assert_eq!(
            scope(&format!("{m}/memory7/power/control"), true),
            Scope::Static
        );
        assert_eq!(
            scope(&format!("{m}/memory7/phys_index"), true),
            Scope::Static
        );
        assert_eq!(scope(&format!("{m}/block_size_bytes"), true), Scope::Static);
        // Changed only by writes to themselves.
        for p in [
            "sys/devices/system/memory/auto_online_blocks",
            "sys/module/memory_hotplug/parameters/online_policy",
            "sys/bus/memory/drivers_autoprobe",
            "sys/devices/system/cpu/online",
            "sys/devices/system/node/node1/distance",
            "sys/devices/system/node/node0/cpulist",
        ] {
            assert_eq!(scope(p, true), Scope::Static, "{p}");
        }
        // What memory hotplug changes stays global.
        for p in [
            "sys/devices/system/node/has_memory",
            "sys/devices/system/node/node0/meminfo",
            "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
            "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
            "proc/zoneinfo",
        ] {
            assert_eq!(scope(p, true), Scope::Global, "{p}");
        }
        assert_eq!(
            scope("sys/devices/system/node/node0/uevent", true),
            Scope::Static
        );
        assert_eq!(
            scope(&format!("{m}/memory7/valid_zones"), true),
            Scope::Block(7)
        );
        assert_eq!(
            scope(&format!("{m}/memory7/valid_zones"), false),
            Scope::Global
        );
        assert_eq!(scope(&format!("{m}/memory07/state"), true), Scope::Global);
        assert_eq!(
            scope("sys/devices/system/node/node0/meminfo", true),
            Scope::Global
        );
        assert_eq!(scope("proc/zoneinfo", true), Scope::Global);
    }

    #[test]
    fn natural_cmp_orders_numbers_by_value() {
        assert_eq!(natural_cmp("memory2", "memory10"), Ordering::Less);
        assert_eq!(natural_cmp("memory10", "memory9"), Ordering::Greater);
        assert_eq!(natural_cmp("memory", "memory0"), Ordering::Less);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
        assert_eq!(natural_cmp("node1", "node1"), Ordering::Equal);
    }
}
