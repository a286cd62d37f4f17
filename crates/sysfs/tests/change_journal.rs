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

/// Whether a change that named the blocks `changed` (and global state)
/// can reach a file of `scope`.
fn reached(scope: &Scope, changed: &std::collections::BTreeSet<u64>) -> bool {
    match scope {
        Scope::Static => false,
        Scope::Global => true,
        Scope::Block(id) => changed.contains(id),
    }
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
            {
                if !reached(scope, &changed) {
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

/// Every readable file of the whole tree (sysfs and procfs) with its scope
/// and what a read returns.
type Snapshot = BTreeMap<String, (Scope, Result<Vec<u8>, memhp_sysfs::vfs::Errno>)>;

fn snapshot_all(tree: &SysfsTree) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = tree.readdir(&dir) else {
            continue;
        };
        for (name, kind) in entries {
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            match kind {
                EntryKind::Dir => dirs.push(path),
                EntryKind::File { mode } if mode & 0o444 != 0 => {
                    out.insert(path.clone(), (tree.scope(&path), tree.read(&path)));
                }
                _ => {}
            }
        }
    }
    out
}

/// Writes other than a block's `state` reach files outside the memory
/// directory: the huge page pool (through `/proc/sys/vm` and
/// `/sys/kernel/mm/hugepages`), the overcommit pair, the watermarks, the
/// mm knobs. After each, every file but the one written that the journal
/// does not reach renders exactly as before, over the whole tree (a file
/// written is dropped from the writer's cache with the write).
#[test]
fn files_the_journal_does_not_reach_render_as_before_over_the_whole_tree() {
    let (_host, tree) = machine(KernelVersion::V6_1);
    let hp = "sys/kernel/mm/hugepages/hugepages-2048kB";
    let writes: &[(&str, &str)] = &[
        ("sys/devices/system/memory/memory32/state", "online_movable"),
        ("sys/devices/system/memory/memory33/state", "online_movable"),
        ("sys/devices/system/memory/memory34/state", "online_kernel"),
        ("sys/devices/system/memory/memory33/state", "offline"),
        ("proc/sys/vm/nr_hugepages", "16"),
        (&format!("{hp}/nr_overcommit_hugepages"), "4"),
        (&format!("{hp}/nr_hugepages"), "2"),
        ("proc/sys/vm/nr_overcommit_hugepages", "0"),
        ("proc/sys/vm/overcommit_kbytes", "100000"),
        ("proc/sys/vm/overcommit_ratio", "40"),
        ("proc/sys/vm/watermark_scale_factor", "200"),
        ("proc/sys/vm/min_free_kbytes", "9000"),
        ("proc/sys/vm/lowmem_reserve_ratio", "0\t64\t32\t0"),
        ("proc/sys/vm/swappiness", "10"),
        ("sys/kernel/mm/ksm/run", "1"),
        ("sys/kernel/mm/lru_gen/enabled", "n"),
        ("sys/kernel/mm/transparent_hugepage/enabled", "never"),
        (
            "sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan",
            "100",
        ),
        ("sys/kernel/mm/transparent_hugepage/enabled", "always"),
        ("sys/devices/system/memory/memory32/state", "offline"),
        ("proc/sys/vm/nr_hugepages", "0"),
    ];
    let mut before = snapshot_all(&tree);
    for &(path, value) in writes {
        let generation = tree.generation();
        let written = tree.write(path, value.replace("\\t", "\t").as_bytes(), &Cancel::new());
        assert!(written.is_ok(), "write {value:?} to {path}: {written:?}");
        let after = snapshot_all(&tree);
        let Changes::Blocks(changed) = tree.changes_since(generation) else {
            before = after;
            continue;
        };
        for (file, (scope, content)) in &before {
            if reached(scope, &changed) || file == path {
                continue;
            }
            assert_eq!(
                after.get(file).map(|(_, c)| c),
                Some(content),
                "{file} ({scope:?}) changed after writing {value:?} to {path}, \
                 but the journal named only blocks {changed:?}"
            );
        }
        before = after;
    }
}
