//! The inode table: a stable number per path (interned on first sight, never
//! reused), and what the kernel currently caches about each inode — its
//! lookup count and the attributes we last answered with — which is what the
//! invalidator compares against the tree after a change.

use memhp_sysfs::vfs::EntryKind;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The root directory's inode number (FUSE_ROOT_ID).
pub(crate) const ROOT_INO: u64 = 1;

/// The type of an entry, which an inode keeps for life: if a path changes
/// type it gets a new inode number (the kernel refuses to let a cached
/// inode change type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeType {
    Dir,
    File,
    Symlink,
}

impl NodeType {
    pub(crate) fn of(kind: &EntryKind) -> NodeType {
        match kind {
            EntryKind::Dir => NodeType::Dir,
            EntryKind::File { .. } => NodeType::File,
            EntryKind::Symlink { .. } => NodeType::Symlink,
        }
    }
}

/// What the kernel was last told about an inode (in an entry or attribute
/// reply), and may still have cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reported {
    pub(crate) kind: EntryKind,
    pub(crate) nlink: u32,
}

struct Node {
    path: Arc<str>,
    parent: u64,
    node_type: NodeType,
    /// The kernel's lookup count (entries it holds a reference for).
    lookups: u64,
    /// Invalidated by us: the kernel was told to drop the entry; skip it in
    /// scans until it is looked up again.
    invalidated: bool,
    reported: Option<Reported>,
}

#[derive(Default)]
struct Table {
    /// Index = inode number; slot 0 is unused.
    nodes: Vec<Option<Node>>,
    by_path: HashMap<Arc<str>, u64>,
    /// Directory → children the kernel holds lookups for.
    known_children: HashMap<u64, HashSet<u64>>,
}

/// A known child of a directory, as the invalidator needs it.
pub(crate) struct KnownChild {
    pub(crate) ino: u64,
    /// The lookup count when this was taken (see `mark_invalidated`).
    pub(crate) lookups: u64,
    pub(crate) name: Arc<str>,
    pub(crate) node_type: NodeType,
    pub(crate) reported: Option<Reported>,
}

/// A directory the kernel may cache entries or attributes of.
pub(crate) struct KnownDir {
    pub(crate) ino: u64,
    pub(crate) parent: u64,
    pub(crate) path: Arc<str>,
    pub(crate) reported_nlink: Option<u32>,
}

pub(crate) struct Inodes {
    table: Mutex<Table>,
}

/// `parent/name`, with the root being `""`.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The last component of a path.
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Inodes {
    pub(crate) fn new() -> Inodes {
        let root: Arc<str> = Arc::from("");
        let mut table = Table::default();
        table.nodes.push(None);
        table.nodes.push(Some(Node {
            path: root.clone(),
            parent: ROOT_INO,
            node_type: NodeType::Dir,
            lookups: 1,
            invalidated: false,
            reported: None,
        }));
        table.by_path.insert(root, ROOT_INO);
        Inodes {
            table: Mutex::new(table),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path and type of inode `ino`.
    pub(crate) fn get(&self, ino: u64) -> Option<(Arc<str>, NodeType)> {
        let table = self.lock();
        let node = table.nodes.get(ino as usize)?.as_ref()?;
        Some((node.path.clone(), node.node_type))
    }

    /// The parent inode of `ino` (the root is its own parent).
    pub(crate) fn parent(&self, ino: u64) -> Option<u64> {
        let table = self.lock();
        Some(table.nodes.get(ino as usize)?.as_ref()?.parent)
    }

    /// The inode for `path` (a child of `parent`) holding an entry of `kind`:
    /// the existing one, or a new number if the path is new or changed type.
    pub(crate) fn intern(&self, parent: u64, path: &str, kind: &EntryKind) -> u64 {
        let node_type = NodeType::of(kind);
        let mut table = self.lock();
        if let Some(&ino) = table.by_path.get(path) {
            let same_type = table.nodes[ino as usize]
                .as_ref()
                .is_some_and(|n| n.node_type == node_type);
            if same_type {
                return ino;
            }
        }
        let ino = table.nodes.len() as u64;
        let path: Arc<str> = Arc::from(path);
        table.nodes.push(Some(Node {
            path: path.clone(),
            parent,
            node_type,
            lookups: 0,
            invalidated: false,
            reported: None,
        }));
        // A path that changed type now names the new inode; the old one
        // lives on (unreachable by path) until the kernel forgets it.
        table.by_path.insert(path, ino);
        ino
    }

    /// Record an entry reply for `ino`: the kernel now holds one more
    /// lookup, and caches `reported`.
    pub(crate) fn looked_up(&self, ino: u64, reported: Reported) {
        let mut table = self.lock();
        let Some(node) = table.nodes.get_mut(ino as usize).and_then(Option::as_mut) else {
            return;
        };
        node.lookups += 1;
        node.invalidated = false;
        node.reported = Some(reported);
        let parent = node.parent;
        if ino != ROOT_INO {
            table.known_children.entry(parent).or_default().insert(ino);
        }
    }

    /// Record an attribute reply for `ino`.
    pub(crate) fn attributes_sent(&self, ino: u64, reported: Reported) {
        let mut table = self.lock();
        if let Some(node) = table.nodes.get_mut(ino as usize).and_then(Option::as_mut) {
            node.reported = Some(reported);
        }
    }

    /// What the kernel was last told about `ino`, unless a change in the
    /// tree has been noticed since (then `None`: ask the tree).
    pub(crate) fn reported(&self, ino: u64) -> Option<Reported> {
        let table = self.lock();
        table.nodes.get(ino as usize)?.as_ref()?.reported.clone()
    }

    /// The kernel dropped `count` lookups of `ino`. True if it holds none
    /// any more (and with them the inode and its pages).
    pub(crate) fn forget(&self, ino: u64, count: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let mut table = self.lock();
        let Some(node) = table.nodes.get_mut(ino as usize).and_then(Option::as_mut) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups > 0 {
            return false;
        }
        node.reported = None;
        node.invalidated = false;
        let parent = node.parent;
        if let Some(children) = table.known_children.get_mut(&parent) {
            children.remove(&ino);
            if children.is_empty() {
                table.known_children.remove(&parent);
            }
        }
        true
    }

    /// We told the kernel to drop its entry for `ino`, having seen it with
    /// `seen_lookups` lookups. If a lookup answered since, the kernel may hold
    /// a fresh entry: keep comparing it (the next scan re-invalidates it if
    /// it is still wrong).
    pub(crate) fn mark_invalidated(&self, ino: u64, seen_lookups: u64) {
        let mut table = self.lock();
        if let Some(node) = table.nodes.get_mut(ino as usize).and_then(Option::as_mut) {
            if node.lookups == seen_lookups {
                node.invalidated = true;
                node.reported = None;
            }
        }
    }

    /// Update what the kernel caches about `ino` after an attribute
    /// invalidation made it fetch fresh ones (or will).
    pub(crate) fn set_reported(&self, ino: u64, reported: Option<Reported>) {
        let mut table = self.lock();
        if let Some(node) = table.nodes.get_mut(ino as usize).and_then(Option::as_mut) {
            node.reported = reported;
        }
    }

    /// Every directory the kernel may cache something about (the root, and
    /// directories it holds a lookup for), parents before children.
    pub(crate) fn known_dirs(&self) -> Vec<KnownDir> {
        let table = self.lock();
        // Every inode the kernel holds a lookup for is a known child of its
        // parent, so walking those sets visits exactly the known inodes.
        let known = table.known_children.values().flatten().copied();
        let mut dirs: Vec<KnownDir> = std::iter::once(ROOT_INO)
            .chain(known)
            .filter_map(|ino| {
                let node = table.nodes.get(ino as usize)?.as_ref()?;
                let live = ino == ROOT_INO || !node.invalidated;
                (live && node.node_type == NodeType::Dir).then(|| KnownDir {
                    ino,
                    parent: node.parent,
                    path: node.path.clone(),
                    reported_nlink: node.reported.as_ref().map(|r| r.nlink),
                })
            })
            .collect();
        dirs.sort_by_key(|d| {
            if d.path.is_empty() {
                0
            } else {
                1 + d.path.matches('/').count()
            }
        });
        dirs
    }

    /// The children of `dir` the kernel holds entries for (and that we have
    /// not invalidated yet).
    pub(crate) fn known_children(&self, dir: u64) -> Vec<KnownChild> {
        let table = self.lock();
        let Some(children) = table.known_children.get(&dir) else {
            return Vec::new();
        };
        children
            .iter()
            .filter_map(|&ino| {
                let node = table.nodes.get(ino as usize)?.as_ref()?;
                (!node.invalidated).then(|| KnownChild {
                    ino,
                    lookups: node.lookups,
                    name: Arc::from(name_of(&node.path)),
                    node_type: node.node_type,
                    reported: node.reported.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u16) -> EntryKind {
        EntryKind::File { mode }
    }

    fn reported(kind: EntryKind) -> Reported {
        Reported { kind, nlink: 1 }
    }

    #[test]
    fn inode_numbers_are_stable_per_path_and_root_is_one() {
        let inodes = Inodes::new();
        assert_eq!(inodes.get(ROOT_INO).unwrap().0.as_ref(), "");
        let a = inodes.intern(ROOT_INO, "sys", &EntryKind::Dir);
        let b = inodes.intern(a, "sys/state", &file(0o644));
        assert_eq!(inodes.intern(ROOT_INO, "sys", &EntryKind::Dir), a);
        assert_eq!(
            inodes.intern(a, "sys/state", &file(0o444)),
            b,
            "mode change keeps the inode"
        );
        assert_ne!(a, b);
        assert!(a > ROOT_INO && b > ROOT_INO);
    }

    #[test]
    fn path_that_changes_type_gets_a_new_inode() {
        let inodes = Inodes::new();
        let f = inodes.intern(ROOT_INO, "x", &file(0o644));
        let d = inodes.intern(ROOT_INO, "x", &EntryKind::Dir);
        assert_ne!(f, d);
        assert_eq!(inodes.intern(ROOT_INO, "x", &EntryKind::Dir), d);
    }

    #[test]
    fn forgotten_children_leave_the_known_set() {
        let inodes = Inodes::new();
        let d = inodes.intern(ROOT_INO, "d", &EntryKind::Dir);
        let f = inodes.intern(d, "d/f", &file(0o644));
        inodes.looked_up(d, reported(EntryKind::Dir));
        inodes.looked_up(f, reported(file(0o644)));
        inodes.looked_up(f, reported(file(0o644)));
        assert_eq!(inodes.known_children(d).len(), 1);
        inodes.forget(f, 1);
        assert_eq!(
            inodes.known_children(d).len(),
            1,
            "one lookup is still held"
        );
        inodes.forget(f, 1);
        assert!(inodes.known_children(d).is_empty());
        let dirs: Vec<u64> = inodes.known_dirs().iter().map(|d| d.ino).collect();
        assert_eq!(dirs, vec![ROOT_INO, d]);
    }

    #[test]
    fn known_dirs_come_parents_first() {
        let inodes = Inodes::new();
        let a = inodes.intern(ROOT_INO, "a", &EntryKind::Dir);
        let b = inodes.intern(a, "a/b", &EntryKind::Dir);
        let c = inodes.intern(b, "a/b/c", &EntryKind::Dir);
        for ino in [c, b, a] {
            inodes.looked_up(ino, reported(EntryKind::Dir));
        }
        let order: Vec<u64> = inodes.known_dirs().iter().map(|d| d.ino).collect();
        assert_eq!(order, vec![ROOT_INO, a, b, c]);
    }

    #[test]
    fn invalidated_entries_are_skipped_until_looked_up_again() {
        let inodes = Inodes::new();
        let f = inodes.intern(ROOT_INO, "f", &file(0o644));
        inodes.looked_up(f, reported(file(0o644)));
        inodes.mark_invalidated(f, 1);
        assert!(inodes.known_children(ROOT_INO).is_empty());
        inodes.looked_up(f, reported(file(0o644)));
        assert_eq!(inodes.known_children(ROOT_INO).len(), 1);
    }

    #[test]
    fn invalidation_racing_a_fresh_lookup_does_not_hide_the_entry() {
        let inodes = Inodes::new();
        let f = inodes.intern(ROOT_INO, "f", &file(0o644));
        inodes.looked_up(f, reported(file(0o644)));
        let seen = inodes.known_children(ROOT_INO)[0].lookups;
        inodes.looked_up(f, reported(file(0o644)));
        inodes.mark_invalidated(f, seen);
        assert_eq!(inodes.known_children(ROOT_INO).len(), 1);
    }
}
