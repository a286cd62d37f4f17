//! What the kernel's page cache may hold for us: the content of every file
//! we answered a read for, and the listing of every directory we answered
//! a readdir for (directories are opened without a round trip and their
//! listings cached by the kernel, `FOPEN_CACHE_DIR`).
//!
//! A read of a cached page never reaches us, so whenever the tree changes
//! the invalidator compares what we served with what the tree holds now;
//! for each file that differs it moves the file's version (reported as its
//! mtime) and drops its attributes: the kernel fetches them at the next
//! access, sees the new mtime and drops the pages (`FUSE_AUTO_INVAL_DATA`). The
//! served content doubles as the `seq_file` buffer of reads past offset 0,
//! which arrive without a file handle when opens are not sent to us.

use crate::attr::file_type;
use crate::inodes::{join, Inodes};
use memhp_sysfs::vfs::{Changes, Errno, Scope, Tree};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The listing of directory `ino` at `path` as the tree has it now, every
/// child interned.
pub(crate) fn listing(
    tree: &dyn Tree,
    inodes: &Inodes,
    ino: u64,
    path: &str,
) -> Result<Listing, Errno> {
    let entries = tree.readdir(path)?;
    Ok(entries
        .into_iter()
        .filter(|(name, _)| {
            let valid = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
            if !valid {
                tracing::warn!(dir = path, name, "tree listed an invalid name; skipped");
            }
            valid
        })
        .map(|(name, kind)| Listed {
            ino: inodes.intern(ino, &join(path, &name), &kind),
            kind: file_type(&kind),
            name,
        })
        .collect())
}

/// How many served files are compared after a change before the kernel is
/// told to drop them all instead (a compare is a render; a drop is a
/// notification and, later, one read).
pub(crate) const MAX_CACHED_FILES: usize = 8192;

/// The listing of a directory as served: names and inode numbers with
/// their file types.
pub(crate) type Listing = Arc<[Listed]>;

/// One entry of a served directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) ino: u64,
    pub(crate) kind: fuser::FileType,
    pub(crate) name: String,
}

/// A file's content as served, the tree generation it was rendered at and
/// which changes can reach it.
struct ServedFile {
    content: Arc<[u8]>,
    generation: u64,
    scope: Scope,
}

/// A listing as served; `conflict`: a different one was served since the
/// last invalidation, so the kernel may hold either (drop it).
struct ServedDir {
    listing: Listing,
    conflict: bool,
}

/// Files and directories apart: a change compares the recorded files it
/// can reach, a layout change every recorded directory, and neither walks
/// the other.
#[derive(Default)]
pub(crate) struct Records {
    files: HashMap<u64, ServedFile>,
    /// The files of each scope (static files are not indexed: only
    /// [`Changes::Everything`] reaches them, and that reaches every file).
    by_scope: HashMap<Scope, HashSet<u64>>,
    /// Every recorded file not in `unchecked` is known to be current at
    /// this generation (or its own, if later): the last check's.
    checked: u64,
    /// Files rendered before `checked` but recorded after that check
    /// started: compared at the next check whatever changed.
    unchecked: HashSet<u64>,
    dirs: HashMap<u64, ServedDir>,
    /// How often each inode's cached pages were dropped (never reset:
    /// the kernel must never see an old version again). It is the
    /// inode's mtime, which is how the kernel learns to drop them.
    versions: HashMap<u64, u64>,
}

impl Records {
    fn remove_file(&mut self, ino: u64) {
        let Some(old) = self.files.remove(&ino) else {
            return;
        };
        self.unchecked.remove(&ino);
        if let Some(set) = self.by_scope.get_mut(&old.scope) {
            set.remove(&ino);
            if set.is_empty() {
                self.by_scope.remove(&old.scope);
            }
        }
    }

    /// The recorded files `changes` (since `checked`) can have reached,
    /// and those not checked yet; none already rendered at `now`.
    fn reached(&self, changes: &Changes, now: u64) -> Vec<u64> {
        let mut out: Vec<u64> = match changes {
            Changes::Everything => self.files.keys().copied().collect(),
            Changes::Blocks(blocks) => {
                let mut v: Vec<u64> = Vec::new();
                for scope in
                    std::iter::once(Scope::Global).chain(blocks.iter().map(|&b| Scope::Block(b)))
                {
                    if let Some(set) = self.by_scope.get(&scope) {
                        v.extend(set.iter().copied());
                    }
                }
                v.extend(self.unchecked.iter().copied());
                v.sort_unstable();
                v.dedup();
                v
            }
        };
        out.retain(|ino| {
            self.unchecked.contains(ino) || self.files.get(ino).is_some_and(|f| f.generation < now)
        });
        out
    }
}

/// The record of served contents and listings, by inode.
#[derive(Default)]
pub(crate) struct PageCache {
    inner: Mutex<Records>,
}

/// A file's content now, as a check renders it.
pub(crate) type Rendered = Option<Vec<u8>>;

impl PageCache {
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nothing was served before `generation` (the mount): the first check
    /// only needs the changes after it.
    pub(crate) fn start_at(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.files.is_empty() {
            inner.checked = generation;
        }
    }

    /// Remember that the kernel may now cache `content` for file `ino`,
    /// rendered at `generation` and reached by the changes of `scope`.
    pub(crate) fn file_served(&self, ino: u64, content: Arc<[u8]>, generation: u64, scope: Scope) {
        let mut inner = self.lock();
        inner.remove_file(ino);
        if scope != Scope::Static {
            inner.by_scope.entry(scope).or_default().insert(ino);
        }
        if generation < inner.checked {
            inner.unchecked.insert(ino);
        }
        inner.files.insert(
            ino,
            ServedFile {
                content,
                generation,
                scope,
            },
        );
    }

    /// The content served for `ino`, if it is known to be current at
    /// `generation` (the tree's generation now).
    pub(crate) fn file_content(&self, ino: u64, generation: u64) -> Option<Arc<[u8]>> {
        let inner = self.lock();
        if inner.unchecked.contains(&ino) {
            return None;
        }
        inner
            .files
            .get(&ino)
            .filter(|f| f.generation.max(inner.checked) == generation)
            .map(|f| f.content.clone())
    }

    /// Remember that the kernel may now cache `listing` for directory `ino`.
    /// True if it differs from a listing served before (the kernel's
    /// cache may hold that one: the directory must be dropped).
    pub(crate) fn dir_served(&self, ino: u64, listing: Listing) -> bool {
        let mut inner = self.lock();
        let conflict = inner
            .dirs
            .get(&ino)
            .is_some_and(|old| old.conflict || old.listing != listing);
        inner.dirs.insert(ino, ServedDir { listing, conflict });
        conflict
    }

    /// The listing served for directory `ino`.
    pub(crate) fn dir_listing(&self, ino: u64) -> Option<Listing> {
        self.lock().dirs.get(&ino).map(|d| d.listing.clone())
    }

    /// Forget `ino` (the kernel dropped it, or we told it to).
    pub(crate) fn forget(&self, ino: u64) {
        let mut inner = self.lock();
        inner.remove_file(ino);
        inner.dirs.remove(&ino);
    }

    /// Bring the record to generation `now`: the files whose served
    /// content differs from what `current` renders for them now (given
    /// the files to compare at once, it answers for each: `None` if the
    /// file is gone or unreadable). Only the files the changes since the
    /// last check can have reached (`changes_since(last check)`) are
    /// compared. The stale ones are forgotten and their versions move:
    /// the caller invalidates them in the kernel.
    ///
    /// Comparing costs a render per file, so it is bounded: beyond
    /// [`MAX_CACHED_FILES`] the reached files are all reported stale (the
    /// kernel drops them; their next reads re-render them). The record
    /// stays locked throughout, so that nothing is recorded half-way.
    pub(crate) fn stale_files(
        &self,
        now: u64,
        changes_since: impl FnOnce(u64) -> Changes,
        current: impl FnOnce(&[u64]) -> Vec<Rendered>,
    ) -> Vec<u64> {
        self.stale_contents(now, changes_since, current)
            .into_iter()
            .map(|(ino, _)| ino)
            .collect()
    }

    /// [`PageCache::stale_files`] with what the check rendered for each
    /// stale file: `Some(content now)`, or `None` when it was not compared
    /// (beyond [`MAX_CACHED_FILES`]).
    pub(crate) fn stale_contents(
        &self,
        now: u64,
        changes_since: impl FnOnce(u64) -> Changes,
        current: impl FnOnce(&[u64]) -> Vec<Rendered>,
    ) -> Vec<(u64, Option<Rendered>)> {
        let mut inner = self.lock();
        if inner.files.is_empty() {
            // Nothing served, nothing to compare: not even the journal is
            // asked (most mounts keep no contents: exact opens).
            inner.unchecked.clear();
            inner.checked = inner.checked.max(now);
            return Vec::new();
        }
        let changes = changes_since(inner.checked);
        let reached = inner.reached(&changes, now);
        let stale: Vec<(u64, Option<Rendered>)> = if reached.len() > MAX_CACHED_FILES {
            reached.into_iter().map(|ino| (ino, None)).collect()
        } else if reached.is_empty() {
            Vec::new()
        } else {
            let rendered = current(&reached);
            reached
                .into_iter()
                .zip(rendered.into_iter().chain(std::iter::repeat(None)))
                .filter(|(ino, now)| {
                    let served = inner.files.get(ino).map(|f| &f.content[..]);
                    now.as_deref() != served
                })
                .map(|(ino, now)| (ino, Some(now)))
                .collect()
        };
        let inos: Vec<u64> = stale.iter().map(|&(ino, _)| ino).collect();
        Self::forget_locked(&mut inner, &inos);
        inner.unchecked.clear();
        inner.checked = inner.checked.max(now);
        stale
    }

    /// The directories whose served listing differs from `current`'s, or
    /// that were served two different listings.
    pub(crate) fn stale_dirs(&self, mut current: impl FnMut(u64) -> Option<Listing>) -> Vec<u64> {
        let dirs: Vec<(u64, Listing, bool)> = self
            .lock()
            .dirs
            .iter()
            .map(|(&ino, d)| (ino, d.listing.clone(), d.conflict))
            .collect();
        let stale: Vec<u64> = dirs
            .into_iter()
            .filter(|(ino, served, conflict)| {
                *conflict || current(*ino).as_deref() != Some(&served[..])
            })
            .map(|(ino, _, _)| ino)
            .collect();
        self.forget_all(&stale);
        stale
    }

    fn forget_all(&self, inos: &[u64]) {
        Self::forget_locked(&mut self.lock(), inos);
    }

    fn forget_locked(inner: &mut Records, inos: &[u64]) {
        for &ino in inos {
            inner.remove_file(ino);
            inner.dirs.remove(&ino);
            *inner.versions.entry(ino).or_default() += 1;
        }
    }

    /// The kernel's pages of `ino` may differ from the tree (a write went
    /// through them): forget what was served and move its version.
    pub(crate) fn written(&self, ino: u64) {
        self.forget_all(&[ino]);
    }

    /// The version of `ino`'s content: its mtime offset.
    pub(crate) fn version(&self, ino: u64) -> u64 {
        self.lock().versions.get(&ino).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.files.len() + inner.dirs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn everything(_: u64) -> Changes {
        Changes::Everything
    }

    fn blocks(ids: &[u64]) -> impl Fn(u64) -> Changes + '_ {
        move |_| Changes::Blocks(ids.iter().copied().collect())
    }

    #[test]
    fn changed_file_is_stale_once_and_then_forgotten() {
        let cache = PageCache::default();
        cache.file_served(5, bytes("online\n"), 1, Scope::Global);
        cache.file_served(6, bytes("1\n"), 1, Scope::Global);
        let now = |inos: &[u64]| -> Vec<Option<Vec<u8>>> {
            inos.iter()
                .map(|&ino| {
                    Some(if ino == 5 {
                        b"offline\n".to_vec()
                    } else {
                        b"1\n".to_vec()
                    })
                })
                .collect()
        };
        assert_eq!(cache.stale_files(2, everything, now), vec![5]);
        assert_eq!(cache.stale_files(3, everything, now), Vec::<u64>::new());
        assert_eq!((cache.version(5), cache.version(6)), (1, 0));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn nothing_served_asks_nothing() {
        let cache = PageCache::default();
        let stale = cache.stale_files(2, |_| panic!("journal asked"), |_| panic!("rendered"));
        assert!(stale.is_empty());
    }

    #[test]
    fn vanished_file_is_stale() {
        let cache = PageCache::default();
        cache.file_served(5, bytes("online\n"), 1, Scope::Block(0));
        assert_eq!(
            cache.stale_files(2, blocks(&[0]), |inos| vec![None; inos.len()]),
            vec![5]
        );
    }

    #[test]
    fn beyond_the_bound_every_cached_file_is_dropped_without_rendering() {
        let cache = PageCache::default();
        for ino in 0..=MAX_CACHED_FILES as u64 {
            cache.file_served(ino, bytes("1\n"), 1, Scope::Block(ino));
        }
        let stale = cache.stale_files(2, everything, |_| panic!("must not render"));
        assert_eq!(stale.len(), MAX_CACHED_FILES + 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn block_change_compares_only_that_blocks_files_and_global_ones() {
        let cache = PageCache::default();
        cache.file_served(10, bytes("online\n"), 1, Scope::Block(0));
        cache.file_served(11, bytes("online\n"), 1, Scope::Block(1));
        cache.file_served(12, bytes("Movable\n"), 1, Scope::Global);
        let asked = std::cell::RefCell::new(Vec::new());
        let stale = cache.stale_files(2, blocks(&[1]), |inos| {
            asked.borrow_mut().extend_from_slice(inos);
            inos.iter()
                .map(|&ino| {
                    Some(if ino == 11 {
                        b"offline\n".to_vec()
                    } else {
                        b"Movable\n".to_vec()
                    })
                })
                .collect()
        });
        assert_eq!(stale, vec![11]);
        assert_eq!(
            *asked.borrow(),
            vec![11, 12],
            "block 0's file is not rendered"
        );
        assert_eq!(
            cache.file_content(10, 2).as_deref(),
            Some(&b"online\n"[..]),
            "block 0's file is known current at the checked generation"
        );
    }

    #[test]
    fn static_file_is_compared_only_when_anything_changed() {
        let cache = PageCache::default();
        cache.file_served(10, bytes("0\n"), 1, Scope::Static);
        assert!(cache
            .stale_files(2, blocks(&[0, 1]), |_| panic!("static: not rendered"))
            .is_empty());
        assert_eq!(cache.stale_files(3, everything, |_| vec![None]), vec![10]);
    }

    #[test]
    fn file_rendered_before_the_last_check_is_compared_whatever_changed() {
        let cache = PageCache::default();
        cache.file_served(10, bytes("online\n"), 1, Scope::Block(0));
        assert!(cache
            .stale_files(5, blocks(&[]), |_| panic!("nothing reached"))
            .is_empty());
        // Rendered at 3 (before the check at 5), recorded only now.
        cache.file_served(11, bytes("online\n"), 3, Scope::Block(1));
        assert_eq!(cache.file_content(11, 5), None, "not known current at 5");
        let stale = cache.stale_files(6, blocks(&[]), |inos| {
            assert_eq!(inos, &[11]);
            vec![Some(b"offline\n".to_vec())]
        });
        assert_eq!(stale, vec![11]);
    }

    #[test]
    fn seq_file_buffer_is_only_reused_at_the_same_generation() {
        let cache = PageCache::default();
        cache.file_served(5, bytes("Node 0, zone DMA\n"), 3, Scope::Global);
        assert_eq!(
            cache.file_content(5, 3).as_deref(),
            Some(&b"Node 0, zone DMA\n"[..])
        );
        assert_eq!(cache.file_content(5, 4), None);
    }

    #[test]
    fn directory_listing_change_is_stale_and_files_are_not_compared_as_dirs() {
        let cache = PageCache::default();
        let listing = |names: &[&str]| -> Listing {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| Listed {
                    ino: i as u64 + 10,
                    kind: fuser::FileType::Directory,
                    name: n.to_string(),
                })
                .collect()
        };
        assert!(!cache.dir_served(2, listing(&["memory0", "memory1"])));
        assert!(!cache.dir_served(2, listing(&["memory0", "memory1"])));
        cache.file_served(5, bytes("x"), 1, Scope::Global);
        assert_eq!(
            cache.stale_dirs(|_| Some(listing(&["memory0", "memory1"]))),
            Vec::<u64>::new()
        );
        assert_eq!(cache.stale_dirs(|_| Some(listing(&["memory0"]))), vec![2]);
        assert_eq!(cache.dir_listing(2), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn directory_served_two_listings_is_stale_even_if_the_tree_is_back() {
        let cache = PageCache::default();
        let one = |n: &str| -> Listing {
            vec![Listed {
                ino: 10,
                kind: fuser::FileType::Directory,
                name: n.to_string(),
            }]
            .into()
        };
        assert!(!cache.dir_served(2, one("a")));
        assert!(cache.dir_served(2, one("b")));
        assert_eq!(cache.stale_dirs(|_| Some(one("b"))), vec![2]);
    }
}
