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
