//! The change journal never hides a change: after any sequence of writes,
//! every file whose scope is a block the journal does not name, or that is
//! static, renders exactly as before unless the journal says anything
//! changed (transports skip re-rendering those files).

use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;
use memhp_sysfs::vfs::{Cancel, Changes, EntryKind, Scope, Tree};
use memhp_sysfs::SysfsTree;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const MEMORY: &str = "sys/devices/system/memory";
const WRITES: [(&str, &str); 6] = [
    ("state", "online"),
    ("state", "online_kernel"),
    ("state", "online_movable"),
    ("state", "offline"),
    ("online", "1"),
    ("online", "0"),
];

fn machine(version: KernelVersion) -> (Host, SysfsTree) {
    machine_with(version, "memhp_default_state=offline")
}

fn machine_with(version: KernelVersion, cmdline: &str) -> (Host, SysfsTree) {
    let host = Host::boot(&QemuPc::default().machine(cmdline, version).unwrap()).unwrap();
    host.execute(&HostCommand::Hotadd {
        id: "d0".into(),
        size: 1 << 30,
        node: None,
        addr: None,
    })
    .unwrap();
    let tree = SysfsTree::new(Arc::clone(&host.shared));
    (host, tree)
}

/// Every regular file under the memory directory with its scope and content.
fn snapshot(tree: &SysfsTree) -> BTreeMap<String, (Scope, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![MEMORY.to_string()];
    while let Some(dir) = dirs.pop() {
        for (name, kind) in tree.readdir(&dir).unwrap() {
            let path = format!("{dir}/{name}");
            match kind {
                EntryKind::Dir => dirs.push(path),
                EntryKind::File { mode } if mode & 0o444 != 0 => {
                    if let Ok(content) = tree.read(&path) {
                        out.insert(path.clone(), (tree.scope(&path), content));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn blocks(tree: &SysfsTree) -> Vec<String> {
    tree.readdir(MEMORY)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("memory"))
        .collect()
}

fn check_sequence(version: KernelVersion, ops: &[(usize, usize)]) -> Result<(), TestCaseError> {
    let (_host, tree) = machine(version);
    let names = blocks(&tree);
    for &(block, write) in ops {
        let before_generation = tree.generation();
        let before = snapshot(&tree);
        let (file, value) = WRITES[write % WRITES.len()];
        let target = format!("{MEMORY}/{}/{file}", names[block % names.len()]);
        let _ = tree.write(&target, value.as_bytes(), &Cancel::new());
        let changes = tree.changes_since(before_generation);
        let after = snapshot(&tree);
        let Changes::Blocks(changed) = changes else {
            continue;
        };
        for (path, (scope, content)) in &before {
            let reached = match scope {
                Scope::Static => false,
                Scope::Global => true,
                Scope::Block(id) => changed.contains(id),
            };
            {
                if !reached {
                    let now = after.get(path).map(|(_, c)| c);
                    prop_assert_eq!(
                        now,
                        Some(content),
                        "{} changed after writing {:?} to {} but the journal named only {:?}",
                        path,
                        value,
                        &target,
                        changed
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn online_and_offline_of_one_block_are_journaled_with_that_block_only() {
    for cmdline in [
        "memhp_default_state=offline",
        "memhp_default_state=offline memory_hotplug.memmap_on_memory=1",
    ] {
        online_and_offline_journaled_with_the_block(cmdline);
    }
}

fn online_and_offline_journaled_with_the_block(cmdline: &str) {
    let (_host, tree) = machine_with(KernelVersion::V6_1, cmdline);
    let g = tree.generation();
    tree.write(
        &format!("{MEMORY}/memory33/state"),
        b"online_movable",
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        tree.changes_since(g),
        Changes::Blocks([33].into_iter().collect())
    );
    assert_eq!(
        tree.changes_since(tree.generation()),
        Changes::Blocks(Default::default())
    );
    assert_eq!(
        tree.scope(&format!("{MEMORY}/memory33/valid_zones")),
        Scope::Block(33),
        "an online block's valid_zones is its own zone"
    );
    let g = tree.generation();
    tree.write(
        &format!("{MEMORY}/memory33/state"),
        b"offline",
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(
        tree.changes_since(g),
        Changes::Blocks([33].into_iter().collect()),
        "the offline (with its huge page dissolving) names only the block"
    );
    assert_eq!(
        tree.scope(&format!("{MEMORY}/memory33/valid_zones")),
        Scope::Global,
        "an offline block's valid_zones follows the zones"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn unnamed_blocks_render_as_before_6_1(ops in prop::collection::vec((0usize..64, 0usize..6), 1..24)) {
        check_sequence(KernelVersion::V6_1, &ops)?;
    }

    #[test]
    fn unnamed_blocks_render_as_before_mainline(ops in prop::collection::vec((0usize..64, 0usize..6), 1..24)) {
        check_sequence(KernelVersion::Mainline, &ops)?;
    }
}
