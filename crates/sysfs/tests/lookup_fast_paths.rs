//! Every entry a directory lists looks up as the same kind: the lookup
//! fast paths (block directories and files, the memory directory's own
//! files, a node's memory links) agree with the listings, on machines whose
//! builds and versions list different files.

use memhp_model::machine::QemuPc;
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System};
use memhp_sysfs::vfs::{EntryKind, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

fn walk(tree: &SysfsTree, dir: &str, seen: &mut usize) {
    for (name, kind) in tree.readdir(dir).unwrap() {
        let path = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        assert_eq!(tree.lookup(&path), Some(kind.clone()), "{path}");
        *seen += 1;
        if kind == EntryKind::Dir {
            walk(tree, &path, seen);
        }
    }
}

#[test]
fn lookups_agree_with_listings_everywhere() {
    let machines = [
        QemuPc::default().machine("", KernelVersion::V6_1).unwrap(),
        QemuPc::default()
            .with_node_per_cpu(&[1 << 30, 0])
            .machine("memhp_default_state=online", KernelVersion::Mainline)
            .unwrap(),
        memhp_model::machine::baremetal(8 << 30, "", KernelVersion::V6_1).unwrap(),
    ];
    for spec in machines {
        let tree = SysfsTree::new(Arc::new(Shared::new(System::boot(&spec).unwrap())));
        let mut seen = 0;
        walk(&tree, "", &mut seen);
        assert!(seen > 100, "{}: only {seen} entries", spec.name);
        for missing in [
            "sys/devices/system/memory/nope",
            "sys/devices/system/memory/memory999999",
            "sys/devices/system/memory/memory0/nope",
        ] {
            assert_eq!(tree.lookup(missing), None, "{missing}");
        }
    }
}

/// The ACPI memory devices' entries look up without listing a device's
/// links to its blocks, except for those links themselves: a plugged
/// DIMM's `physical_node*` links and its other entries agree with the
/// listing, and a link past the last block is not there.
#[test]
fn acpi_device_lookups_agree_with_listings_with_a_dimm_plugged() {
    use memhp_drivers::host::{Host, HostCommand};
    let spec = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
    let host = Host::boot(&spec).unwrap();
    host.execute(&HostCommand::Hotadd {
        id: "d0".into(),
        size: 512 << 20,
        node: None,
        addr: None,
    })
    .unwrap();
    let tree = SysfsTree::new(Arc::clone(&host.shared));
    let device = "sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A06:04/PNP0C80:00";
    let mut seen = 0;
    walk(&tree, "sys/devices/LNXSYSTM:00", &mut seen);
    let links: Vec<String> = tree
        .readdir(device)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("physical_node"))
        .collect();
    assert_eq!(links.len(), 4, "512 MiB = 4 blocks: {links:?}");
    assert_eq!(tree.lookup(&format!("{device}/physical_node4")), None);
    assert_eq!(tree.lookup(&format!("{device}/nope")), None);
    assert_eq!(
        tree.lookup(&format!("{device}/physical_node3")),
        Some(EntryKind::Symlink {
            target: "../../../../system/memory/memory35".into()
        })
    );
}
