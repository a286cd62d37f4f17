//! Keeping the kernel's caches honest.
//!
//! With exact opens, file contents are never cached (every file is opened
//! `FOPEN_DIRECT_IO`), directory listings are never cached (no
//! `FOPEN_CACHE_DIR`) and symlink targets are never cached (no
//! `FUSE_CACHE_SYMLINKS`), so a change in the tree can only leave two kinds
//! of stale state in the kernel, both with TTLs: directory entries (a
//! removed `memoryN` that still resolves) and attributes (a mode, a symlink
//! length, a directory's link count). With cached opens the kernel also
//! keeps file contents and listings: [`PageCache`] records what it was
//! given, and after each change the files the change can have reached (by
//! their [`memhp_sysfs::vfs::Scope`]: a block's own attributes, global
//! state, or nothing short of a change that reaches everything) are
//! rendered again and those that differ dropped. Backing files (exact
//! opens with passthrough, see `backing`) are compared the same way and
//! rewritten in place.
//!
//! Whenever [`Tree::layout_generation`] moves, a scan compares what the
//! kernel was told about every inode it still holds (see [`crate::inodes`])
//! with the tree, and invalidates exactly the entries and attributes that
//! differ. A scan costs one `Tree::readdir` per directory the kernel knows
//! (about 0.3 s with 65,536 memory blocks all looked up), so it runs only
//! when the layout may have changed, never for a mere content change (which
//! [`Tree::generation`] would also report). Scans run on their own thread:
//! every `poll_interval` for changes made behind the file system's back (a
//! control socket), and on demand after each write, whose reply waits until
//! the scan's notifications have reached the kernel.

use crate::attr::dir_nlink;
use crate::backing::BackingFiles;
use crate::content::{listing, PageCache, Rendered};
use crate::inodes::{Inodes, NodeType, ROOT_INO};
use fuser::{INodeNo, Notifier};
use memhp_sysfs::vfs::{EntryKind, Tree};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Directories with more known children than this get a hash index for the
/// comparison; smaller ones are searched linearly.
const INDEX_THRESHOLD: usize = 8;

#[derive(Default)]
struct ScanState {
    /// Someone wants a scan: start one now rather than at the next tick.
    requested: bool,
    /// The layout generation the last completed scan brought the kernel to.
    synced_layout: Option<u64>,
    /// The generation the last completed scan brought cached contents to.
    synced_generation: Option<u64>,
    /// Something may have been cached that the last scan did not see:
    /// compare contents at the next scan even if the generation is synced.
    recheck: bool,
    stop: bool,
}

/// Statistics of one scan (for tracing and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScanReport {
    pub(crate) dirs: usize,
    pub(crate) entries_invalidated: usize,
    pub(crate) inodes_invalidated: usize,
    pub(crate) listings_invalidated: usize,
}

/// What a scan compares and where it sends invalidations.
pub(crate) struct ScanContext {
    pub(crate) tree: Arc<dyn Tree>,
    pub(crate) inodes: Arc<Inodes>,
    pub(crate) page_cache: Arc<PageCache>,
    pub(crate) backing: Arc<BackingFiles>,
    pub(crate) notifier: Notifier,
}

pub(crate) struct Invalidator {
    state: Mutex<ScanState>,
    cv: Condvar,
    /// Held for the whole of a scan (scans never overlap); `None` until
    /// the session exists, and again after [`Invalidator::stop`].
    context: Mutex<Option<ScanContext>>,
}

impl Invalidator {
    pub(crate) fn new() -> Invalidator {
        Invalidator {
            state: Mutex::new(ScanState::default()),
            cv: Condvar::new(),
            context: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ScanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start scanning with `context`. Nothing is cached before the first
    /// request, so the kernel starts in line with the tree as it is now.
    pub(crate) fn attach(&self, context: ScanContext) {
        let mut state = self.lock();
        let generation = context.tree.generation();
        state.synced_layout = Some(context.tree.layout_generation());
        state.synced_generation = Some(generation);
        context.page_cache.start_at(generation);
        context.backing.start_at(generation);
        drop(state);
        *self.context.lock().unwrap_or_else(|e| e.into_inner()) = Some(context);
    }

    fn synced(&self, tree: &dyn Tree) -> bool {
        let state = self.lock();
        state.synced_layout == Some(tree.layout_generation())
            && state.synced_generation == Some(tree.generation())
            && !state.recheck
    }

    /// Make the kernel's caches reflect the tree as it is now: returns at
    /// once if nothing changed since the last scan, otherwise scans on the
    /// calling thread (after any scan under way). A notification is
    /// processed by the kernel inside the write(2) that sends it (and
    /// ours never wait for a page lock), so when this returns no reader
    /// sees anything older than the tree at the time of the call. False
    /// after [`Invalidator::stop`].
    pub(crate) fn sync(&self, tree: &dyn Tree) -> bool {
        if self.synced(tree) {
            return true;
        }
        self.scan_now()
    }

    /// Run one scan now; false if stopped.
    fn scan_now(&self) -> bool {
        let context = self.context.lock().unwrap_or_else(|e| e.into_inner());
        match context.as_ref() {
            Some(context) => {
                self.scan(context);
                true
            }
            None => false,
        }
    }

    /// Put `content` in the kernel's cache of file `ino` at offset 0
    /// (`FUSE_NOTIFY_STORE`), which also grows the size the kernel keeps
    /// for it to the content's length; false when not attached or refused.
    pub(crate) fn store(&self, ino: u64, content: &[u8]) -> bool {
        let context = self.context.lock().unwrap_or_else(|e| e.into_inner());
        match context.as_ref() {
            Some(c) => c.notifier.store(INodeNo(ino), 0, content).is_ok(),
            None => false,
        }
    }

    /// Compare cached contents with the tree at the next scan, and start
    /// it now.
    pub(crate) fn request(&self) {
        let mut state = self.lock();
        state.recheck = true;
        state.requested = true;
        drop(state);
        self.cv.notify_all();
    }

    /// Have the poller look for a change now rather than at its next tick
    /// (nothing is compared unless the tree's generation moved).
    pub(crate) fn nudge(&self) {
        self.lock().requested = true;
        self.cv.notify_all();
    }

    /// End [`Invalidator::run`], and scanning.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
        *self.context.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The polling loop (changes made behind the file system's back: a
    /// control socket); returns after [`Invalidator::stop`].
    pub(crate) fn run(&self, poll_interval: Duration) {
        loop {
            let state = self.lock();
            let (mut state, _) = self
                .cv
                .wait_timeout_while(state, poll_interval, |s| !s.requested && !s.stop)
                .unwrap_or_else(|e| e.into_inner());
            if state.stop {
                break;
            }
            state.requested = false;
            drop(state);
            if !self.scan_now() {
                break;
            }
        }
    }

    /// One scan (the caller holds the context lock).
    fn scan(&self, context: &ScanContext) {
        let ScanContext {
            tree,
            inodes,
            page_cache,
            backing,
            notifier,
        } = context;
        let (tree, inodes, page_cache) = (&**tree, &**inodes, &**page_cache);
        let mut state = self.lock();
        let synced = state.synced_layout;
        let synced_generation = state.synced_generation;
        let recheck = std::mem::take(&mut state.recheck);
        // Read under the lock: a change made before this point is seen.
        let layout = tree.layout_generation();
        let generation = tree.generation();
        drop(state);
        let mut send = Sender { notifier };

        if synced != Some(layout) {
            let begin = Instant::now();
            let mut report = scan_once(tree, inodes, &mut send);
            report.listings_invalidated = drop_stale_dirs(tree, inodes, page_cache, &mut send);
            tracing::debug!(
                layout,
                dirs = report.dirs,
                entries = report.entries_invalidated,
                inodes = report.inodes_invalidated,
                listings = report.listings_invalidated,
                elapsed_us = begin.elapsed().as_micros() as u64,
                "cache invalidation scan"
            );
        } else if recheck {
            drop_stale_dirs(tree, inodes, page_cache, &mut send);
        }
        if recheck || synced_generation != Some(generation) {
            let stale = stale_files(tree, inodes, page_cache, generation);
            if !stale.is_empty() {
                tracing::trace!(
                    generation,
                    files = stale.len(),
                    "cached contents invalidated"
                );
            }
            for ino in stale {
                send.pages(ino);
            }
            for ino in refresh_backing(tree, inodes, backing, generation) {
                // Gone: an fstat through a descriptor still open must ask.
                inodes.set_reported(ino, None);
                send.attributes(ino);
            }
        }

        let mut state = self.lock();
        state.synced_layout = Some(layout);
        state.synced_generation = Some(generation);
    }
}

/// The cached files whose content changed (forgotten by `page_cache`).
fn stale_files(
    tree: &dyn Tree,
    inodes: &Inodes,
    page_cache: &PageCache,
    generation: u64,
) -> Vec<u64> {
    page_cache.stale_files(
        generation,
        |since| tree.changes_since(since),
        |inos| render_files(tree, inodes, inos),
    )
}

/// Rewrite the backing files whose content changed; the inodes whose file
/// is gone.
fn refresh_backing(
    tree: &dyn Tree,
    inodes: &Inodes,
    backing: &BackingFiles,
    generation: u64,
) -> Vec<u64> {
    let path = |ino: u64| inodes.get(ino).map(|(p, _)| p);
    backing.refresh(
        generation,
        |since| tree.changes_since(since),
        |inos| render_files(tree, inodes, inos),
        |ino| tree.read(&path(ino)?).ok(),
        |ino| path(ino).map_or(memhp_sysfs::vfs::Scope::Global, |p| tree.scope(&p)),
    )
}

/// The content of files `inos` now, rendered from one state of the tree
/// (`None`: unknown inode, or unreadable).
fn render_files(tree: &dyn Tree, inodes: &Inodes, inos: &[u64]) -> Vec<Rendered> {
    let paths: Vec<Option<Arc<str>>> = inos
        .iter()
        .map(|&ino| inodes.get(ino).map(|(p, _)| p))
        .collect();
    let known: Vec<&str> = paths.iter().flatten().map(|p| &**p).collect();
    let mut read = tree.read_batch(&known).into_iter();
    paths
        .iter()
        .map(|p| p.as_ref().and_then(|_| read.next()?.ok()))
        .collect()
}

/// Drop the cached directory listings that changed (forgotten by
/// `page_cache`); how many.
fn drop_stale_dirs(
    tree: &dyn Tree,
    inodes: &Inodes,
    page_cache: &PageCache,
    send: &mut Sender<'_>,
) -> usize {
    let stale = page_cache.stale_dirs(|ino| {
        let (path, _) = inodes.get(ino)?;
        listing(tree, inodes, ino, &path).ok()
    });
    for &dir in &stale {
        send.pages(dir);
    }
    stale.len()
}

/// Where a scan sends its invalidations.
pub(crate) trait Invalidate {
    fn entry(&mut self, parent: u64, name: &str);
    fn attributes(&mut self, ino: u64);
}

struct Sender<'a> {
    notifier: &'a Notifier,
}

impl Invalidate for Sender<'_> {
    fn entry(&mut self, parent: u64, name: &str) {
        match self.notifier.inval_entry(INodeNo(parent), OsStr::new(name)) {
            Ok(()) => {}
            Err(e) => tracing::debug!(parent, name, error = %e, "inval_entry not sent"),
        }
    }

    fn attributes(&mut self, ino: u64) {
        // Offset -1: attributes only (cached pages are compared apart).
        match self.notifier.inval_inode(INodeNo(ino), -1, 0) {
            Ok(()) => {}
            Err(e) => tracing::debug!(ino, error = %e, "inval_inode not sent"),
        }
    }
}

impl Sender<'_> {
    /// Make the kernel drop the cached pages (content or listing) of
    /// `ino`, whose version [`PageCache`] has moved: by dropping its
    /// attributes, so that the next access fetches them, sees a new
    /// mtime (and maybe size) and drops the pages itself
    /// (`FUSE_AUTO_INVAL_DATA`). Invalidating the pages directly would
    /// wait for their locks, which a write through the page cache holds
    /// until we answer it.
    fn pages(&mut self, ino: u64) {
        self.attributes(ino);
    }
}

/// Compare everything the kernel may cache with the tree once, and send the
/// invalidations for whatever differs.
pub(crate) fn scan_once(tree: &dyn Tree, inodes: &Inodes, out: &mut dyn Invalidate) -> ScanReport {
    let mut report = ScanReport::default();
    // Directories whose entry we just dropped: the kernel prunes their whole
    // subtree, so there is nothing left below them to compare.
    let mut dropped: HashSet<u64> = HashSet::new();
    for dir in inodes.known_dirs() {
        if dropped.contains(&dir.ino) {
            continue;
        }
        if dir.ino != ROOT_INO && dropped.contains(&dir.parent) {
            dropped.insert(dir.ino);
            continue;
        }
        // A directory that is gone or no longer a directory is handled by
        // its parent's comparison.
        let Ok(entries) = tree.readdir(&dir.path) else {
            continue;
        };
        report.dirs += 1;
        if dir.reported_nlink.is_some_and(|n| n != dir_nlink(&entries)) {
            out.attributes(dir.ino);
            inodes.set_reported(dir.ino, None);
            report.inodes_invalidated += 1;
        }
        let children = inodes.known_children(dir.ino);
        if children.is_empty() {
            continue;
        }
        let index: Option<HashMap<&str, &EntryKind>> = (children.len() > INDEX_THRESHOLD)
            .then(|| entries.iter().map(|(n, k)| (n.as_str(), k)).collect());
        let find = |name: &str| -> Option<&EntryKind> {
            match &index {
                Some(index) => index.get(name).copied(),
                None => entries.iter().find(|(n, _)| n == name).map(|(_, k)| k),
            }
        };
        for child in children {
            match find(&child.name) {
                Some(now) if NodeType::of(now) == child.node_type => {
                    let changed = child.reported.as_ref().is_some_and(|r| r.kind != *now);
                    // Directories' own attributes are checked when their
                    // turn comes (their link count needs their listing).
                    if changed && child.node_type != NodeType::Dir {
                        out.attributes(child.ino);
                        inodes.set_reported(child.ino, None);
                        report.inodes_invalidated += 1;
                    }
                }
                // Gone, or now a different type of entry (a new inode).
                _ => {
                    out.entry(dir.ino, &child.name);
                    inodes.mark_invalidated(child.ino, child.lookups);
                    dropped.insert(child.ino);
                    report.entries_invalidated += 1;
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inodes::Reported;
    use memhp_sysfs::vfs::{Cancel, Errno};
    use std::sync::RwLock;

    /// A tree given as a flat list of (path, kind).
    struct Flat {
        entries: RwLock<Vec<(String, EntryKind)>>,
    }

    impl Flat {
        fn new(entries: &[(&str, EntryKind)]) -> Flat {
            Flat {
                entries: RwLock::new(
                    entries
                        .iter()
                        .map(|(p, k)| (p.to_string(), k.clone()))
                        .collect(),
                ),
            }
        }
        fn set(&self, path: &str, kind: Option<EntryKind>) {
            let mut entries = self.entries.write().unwrap();
            entries.retain(|(p, _)| p != path);
            if let Some(kind) = kind {
                entries.push((path.to_string(), kind));
            }
        }
    }

    impl Tree for Flat {
        fn lookup(&self, path: &str) -> Option<EntryKind> {
            if path.is_empty() {
                return Some(EntryKind::Dir);
            }
            let entries = self.entries.read().unwrap();
            entries
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, k)| k.clone())
        }
        fn readdir(&self, path: &str) -> Result<Vec<(String, EntryKind)>, Errno> {
            match self.lookup(path) {
                Some(EntryKind::Dir) => {}
                Some(_) => return Err(Errno::ENOTDIR),
                None => return Err(Errno::ENOENT),
            }
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            let entries = self.entries.read().unwrap();
            Ok(entries
                .iter()
                .filter_map(|(p, k)| {
                    let rest = p.strip_prefix(&prefix)?;
                    (!rest.contains('/')).then(|| (rest.to_string(), k.clone()))
                })
                .collect())
        }
        fn open(&self, _: &str, _: bool, _: bool) -> Result<(), Errno> {
            Ok(())
        }
        fn read(&self, _: &str) -> Result<Vec<u8>, Errno> {
            Ok(Vec::new())
        }
        fn write(&self, _: &str, data: &[u8], _: &Cancel) -> Result<usize, Errno> {
            Ok(data.len())
        }
        fn generation(&self) -> u64 {
            0
        }
    }

    #[derive(Default)]
    struct Recorded {
        entries: Vec<(u64, String)>,
        attributes: Vec<u64>,
    }

    impl Invalidate for Recorded {
        fn entry(&mut self, parent: u64, name: &str) {
            self.entries.push((parent, name.to_string()));
        }
        fn attributes(&mut self, ino: u64) {
            self.attributes.push(ino);
        }
    }

    /// Look `path` up the way the FUSE lookup handler does.
    fn look_up(tree: &Flat, inodes: &Inodes, parent: u64, path: &str) -> u64 {
        let kind = tree.lookup(path).unwrap();
        let ino = inodes.intern(parent, path, &kind);
        let nlink = match kind {
            EntryKind::Dir => dir_nlink(&tree.readdir(path).unwrap()),
            _ => 1,
        };
        inodes.looked_up(ino, Reported { kind, nlink });
        ino
    }

    fn file(mode: u16) -> EntryKind {
        EntryKind::File { mode }
    }

    fn memory_tree() -> Flat {
        Flat::new(&[
            ("memory", EntryKind::Dir),
            ("memory/memory0", EntryKind::Dir),
            ("memory/memory0/state", file(0o644)),
            ("memory/memory1", EntryKind::Dir),
            ("memory/memory1/state", file(0o644)),
        ])
    }

    #[test]
    fn unchanged_tree_invalidates_nothing() {
        let tree = memory_tree();
        let inodes = Inodes::new();
        let mem = look_up(&tree, &inodes, ROOT_INO, "memory");
        let m0 = look_up(&tree, &inodes, mem, "memory/memory0");
        look_up(&tree, &inodes, m0, "memory/memory0/state");
        let mut out = Recorded::default();
        let report = scan_once(&tree, &inodes, &mut out);
        assert_eq!(report.dirs, 3);
        assert!(out.entries.is_empty() && out.attributes.is_empty());
    }

    #[test]
    fn removed_directory_is_invalidated_once_and_its_subtree_skipped() {
        let tree = memory_tree();
        let inodes = Inodes::new();
        let mem = look_up(&tree, &inodes, ROOT_INO, "memory");
        let m1 = look_up(&tree, &inodes, mem, "memory/memory1");
        look_up(&tree, &inodes, m1, "memory/memory1/state");
        tree.set("memory/memory1/state", None);
        tree.set("memory/memory1", None);

        let mut out = Recorded::default();
        scan_once(&tree, &inodes, &mut out);
        assert_eq!(out.entries, vec![(mem, "memory1".to_string())]);
        assert_eq!(
            out.attributes,
            vec![mem],
            "memory lost a subdirectory: nlink changed"
        );

        let mut again = Recorded::default();
        scan_once(&tree, &inodes, &mut again);
        assert!(
            again.entries.is_empty(),
            "already invalidated: {:?}",
            again.entries
        );
    }

    #[test]
    fn mode_change_invalidates_attributes_and_type_change_the_entry() {
        let tree = memory_tree();
        let inodes = Inodes::new();
        let mem = look_up(&tree, &inodes, ROOT_INO, "memory");
        let m0 = look_up(&tree, &inodes, mem, "memory/memory0");
        let state = look_up(&tree, &inodes, m0, "memory/memory0/state");
        tree.set("memory/memory0/state", Some(file(0o444)));
        let mut out = Recorded::default();
        scan_once(&tree, &inodes, &mut out);
        assert_eq!(out.attributes, vec![state]);
        assert!(out.entries.is_empty());

        tree.set(
            "memory/memory0/state",
            Some(EntryKind::Symlink { target: "x".into() }),
        );
        let mut out = Recorded::default();
        scan_once(&tree, &inodes, &mut out);
        assert_eq!(out.entries, vec![(m0, "state".to_string())]);
    }

    #[test]
    fn added_subdirectory_invalidates_the_parents_link_count_only() {
        let tree = memory_tree();
        let inodes = Inodes::new();
        let mem = look_up(&tree, &inodes, ROOT_INO, "memory");
        look_up(&tree, &inodes, mem, "memory/memory0");
        tree.set("memory/memory2", Some(EntryKind::Dir));
        let mut out = Recorded::default();
        scan_once(&tree, &inodes, &mut out);
        assert_eq!(out.attributes, vec![mem]);
        assert!(out.entries.is_empty());
    }

    #[test]
    fn large_directories_are_compared_through_an_index() {
        let mut entries = vec![("big".to_string(), EntryKind::Dir)];
        for i in 0..100 {
            entries.push((format!("big/f{i}"), file(0o444)));
        }
        let tree = Flat {
            entries: RwLock::new(entries),
        };
        let inodes = Inodes::new();
        let big = look_up(&tree, &inodes, ROOT_INO, "big");
        for i in 0..20 {
            look_up(&tree, &inodes, big, &format!("big/f{i}"));
        }
        tree.set("big/f7", None);
        let mut out = Recorded::default();
        scan_once(&tree, &inodes, &mut out);
        assert_eq!(out.entries, vec![(big, "f7".to_string())]);
    }
}
