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
use memhp_sysfs::vfs::{Errno, Tree};
use std::collections::HashMap;
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

/// A file's content as served, and the tree generation it was rendered at.
struct ServedFile {
    content: Arc<[u8]>,
    generation: u64,
}

/// A listing as served; `conflict`: a different one was served since the
/// last invalidation, so the kernel may hold either (drop it).
struct ServedDir {
    listing: Listing,
    conflict: bool,
}

/// Files and directories apart: a change compares every recorded file,
/// a layout change every recorded directory, and neither walks the other.
#[derive(Default)]
pub(crate) struct Records {
    files: HashMap<u64, ServedFile>,
    dirs: HashMap<u64, ServedDir>,
    /// How often each inode's cached pages were dropped (never reset:
    /// the kernel must never see an old version again). It is the
    /// inode's mtime, which is how the kernel learns to drop them.
    versions: HashMap<u64, u64>,
}

/// The record of served contents and listings, by inode.
#[derive(Default)]
pub(crate) struct PageCache {
    inner: Mutex<Records>,
}

impl PageCache {
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember that the kernel may now cache `content` for file `ino`.
    pub(crate) fn file_served(&self, ino: u64, content: Arc<[u8]>, generation: u64) {
        self.lock().files.insert(
            ino,
            ServedFile {
                content,
                generation,
            },
        );
    }

    /// The content served for `ino`, if it was rendered at `generation`
    /// (the tree has not changed since).
    pub(crate) fn file_content(&self, ino: u64, generation: u64) -> Option<Arc<[u8]>> {
        self.lock()
            .files
            .get(&ino)
            .filter(|f| f.generation == generation)
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
        inner.files.remove(&ino);
        inner.dirs.remove(&ino);
    }

    /// The files whose served content differs from what `current` says
    /// they hold now (given all cached files at once, it answers for each:
    /// `None` if the file is gone or unreadable). They are forgotten and
    /// their versions move: the caller invalidates them in the kernel.
    ///
    /// Comparing costs a render per cached file, so the record is bounded:
    /// beyond [`MAX_CACHED_FILES`] every cached file is reported stale (the
    /// kernel drops them all, and the record starts over).
    pub(crate) fn stale_files(
        &self,
        current: impl FnOnce(&[u64]) -> Vec<Option<Vec<u8>>>,
    ) -> Vec<u64> {
        let files: Vec<(u64, Arc<[u8]>)> = self
            .lock()
            .files
            .iter()
            .map(|(&ino, f)| (ino, f.content.clone()))
            .collect();
        let stale: Vec<u64> = if files.len() > MAX_CACHED_FILES {
            files.into_iter().map(|(ino, _)| ino).collect()
        } else {
            let inos: Vec<u64> = files.iter().map(|(ino, _)| *ino).collect();
            let now = current(&inos);
            files
                .into_iter()
                .zip(now.into_iter().chain(std::iter::repeat(None)))
                .filter(|((_, served), now)| now.as_deref() != Some(&served[..]))
                .map(|((ino, _), _)| ino)
                .collect()
        };
        self.forget_all(&stale);
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
        let mut inner = self.lock();
        for ino in inos {
            inner.files.remove(ino);
            inner.dirs.remove(ino);
            *inner.versions.entry(*ino).or_default() += 1;
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

    #[test]
    fn changed_file_is_stale_once_and_then_forgotten() {
        let cache = PageCache::default();
        cache.file_served(5, bytes("online\n"), 1);
        cache.file_served(6, bytes("1\n"), 1);
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
        assert_eq!(cache.stale_files(now), vec![5]);
        assert_eq!(cache.stale_files(now), Vec::<u64>::new());
        assert_eq!((cache.version(5), cache.version(6)), (1, 0));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn vanished_file_is_stale() {
        let cache = PageCache::default();
        cache.file_served(5, bytes("online\n"), 1);
        assert_eq!(cache.stale_files(|inos| vec![None; inos.len()]), vec![5]);
    }

    #[test]
    fn beyond_the_bound_every_cached_file_is_dropped_without_rendering() {
        let cache = PageCache::default();
        for ino in 0..=MAX_CACHED_FILES as u64 {
            cache.file_served(ino, bytes("1\n"), 1);
        }
        let stale = cache.stale_files(|_| panic!("must not render"));
        assert_eq!(stale.len(), MAX_CACHED_FILES + 1);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn seq_file_buffer_is_only_reused_at_the_same_generation() {
        let cache = PageCache::default();
        cache.file_served(5, bytes("Node 0, zone DMA\n"), 3);
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
        cache.file_served(5, bytes("x"), 1);
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
