//! Reads that never reach us: FUSE passthrough (Linux 6.9 and later).
//!
//! With exact opens every `read(2)` of an attribute is a round trip to
//! the daemon (`FOPEN_DIRECT_IO`), about as costly as the open itself. A
//! read-only open of a file whose read has no side effect
//! ([`Tree::read_has_effects`]) is instead answered with a *backing file*:
//! an anonymous shmem file (`memfd`) holding the attribute's content,
//! which the kernel reads directly (`FOPEN_PASSTHROUGH`). The open itself
//! still comes to us, so its `EACCES`/`ENOENT` stay exact, and so do the
//! sizes `stat` reports (attributes are still answered by us: 4096).
//!
//! The backing files are kept current the way cached contents are: after
//! every change the invalidator asks the model's change journal which of
//! them the change can reach ([`PageCache`], here a record of what each
//! backing file holds), renders those again and rewrites the ones that
//! differ in place, before the write that made the change is answered.
//! A read at offset 0 therefore shows the tree as it is now, as a sysfs
//! read renders it anew.
//!
//! One backing file per inode: the kernel refuses a second backing file
//! for an inode while another is attached (`EBUSY`) and fails any open of
//! it that does not name the attached one (`EIO`), so every open of it
//! shares one (opens for writing too, with direct I/O on top), or none
//! does (a read-only open while a direct one is still open stays direct).
//! The last release frees it for another inode (the kernel detaches it
//! from the inode before it sends that release).
//!
//! Where it differs from a read through us, and why it is opt-in
//! (`MountOptions::passthrough`): a read racing with a change of the same
//! file (another process's write, at the same instant) may see part of
//! each version, since the rewrite is a `pwrite` and an `ftruncate` and a
//! shmem read takes no lock against either (a test over the mount sees
//! thousands of such reads in 20,000 rewrites); a read through a
//! descriptor whose file was removed since (a hot-removed block's
//! attribute) reads nothing where sysfs answers `ENODEV` (its attributes
//! are dropped, so an `fstat` of it fails with `ENOENT`); and `mmap`
//! maps the backing file where sysfs refuses (`ENODEV`).
//!
//! [`Tree::read_has_effects`]: memhp_sysfs::vfs::Tree::read_has_effects

use crate::content::{PageCache, Rendered};
use fuser::BackingId;
use memhp_sysfs::vfs::Scope;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many backing files released by their last open are kept, registered,
/// for the next inode that needs one (a new one costs a `memfd_create` and
/// two ioctls; a kept one only the write of its new content).
const SPARE: usize = 64;

/// A backing file, registered with the kernel.
struct Spare<Id> {
    file: File,
    /// Unregistered (`FUSE_DEV_IOC_BACKING_CLOSE`) when the last clone
    /// drops.
    id: Arc<Id>,
    /// The length of what `file` holds.
    len: usize,
}

impl<Id> Spare<Id> {
    /// Make `file` hold exactly `content`.
    fn rewrite(&mut self, content: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(content, 0)?;
        if content.len() < self.len {
            self.file.set_len(content.len() as u64)?;
        }
        self.len = content.len();
        Ok(())
    }
}

/// The backing file of one inode and its opens.
struct Backed<Id> {
    spare: Spare<Id>,
    /// Opens answered with it and not yet released.
    opens: usize,
    /// The file is gone from the tree (emptied, and reported once).
    gone: bool,
}

/// How the open files of one inode are read.
enum Opened<Id> {
    /// Through its backing file (opens for writing too, with direct I/O
    /// on top): the kernel fails an open of an inode with a backing file
    /// attached that does not name it.
    Backed(Backed<Id>),
    /// Through us, by this many opens: the kernel may not have attached
    /// a backing file to the inode by the time it processes them, so
    /// none is given until they are all released.
    Direct(usize),
}

/// How one open is to be answered.
pub(crate) enum Answer<Id> {
    /// With this backing file.
    Backed(Arc<Id>),
    /// With direct I/O through us.
    Direct,
}

/// The open files' inodes and their backing files, with what each backing
/// file holds. (`Id` is what registering a file with the kernel gives: a
/// [`BackingId`], whose drop unregisters it.)
pub(crate) struct BackingFiles<Id = BackingId> {
    inner: Mutex<Inner<Id>>,
    /// What each backing file holds, at which generation, reached by
    /// which changes (the inodes of `Opened::Backed`, no others).
    records: PageCache,
}

struct Inner<Id> {
    opened: HashMap<u64, Opened<Id>>,
    spares: Vec<Spare<Id>>,
}

/// A file's content as rendered for its backing file.
pub(crate) struct Content<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) generation: u64,
    pub(crate) scope: Scope,
}

impl<Id> Default for BackingFiles<Id> {
    fn default() -> Self {
        BackingFiles {
            inner: Mutex::new(Inner {
                opened: HashMap::new(),
                spares: Vec::new(),
            }),
            records: PageCache::default(),
        }
    }
}

impl<Id> BackingFiles<Id> {
    fn lock(&self) -> MutexGuard<'_, Inner<Id>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nothing was backed before `generation` (the mount).
    pub(crate) fn start_at(&self, generation: u64) {
        self.records.start_at(generation);
    }

    /// One more open of `ino` for reading only, its content rendered as
    /// `content` (`None`: the file's reads must come to us). Backed if no
    /// direct open of it is still open: by the inode's backing file
    /// (rewritten if it differs), a spare one, or a new one registered
    /// with `register`. An error leaves the open unanswered and untracked.
    pub(crate) fn open_read(
        &self,
        ino: u64,
        content: Option<Content<'_>>,
        register: impl FnOnce(&File) -> std::io::Result<Id>,
    ) -> std::io::Result<Answer<Id>> {
        let mut inner = self.lock();
        let Some(content) = content else {
            return Ok(inner.join(ino));
        };
        let id = match inner.opened.get_mut(&ino) {
            Some(Opened::Direct(_)) => return Ok(inner.join(ino)),
            Some(Opened::Backed(backed)) => {
                backed.spare.rewrite(content.bytes)?;
                backed.gone = false;
                backed.opens += 1;
                backed.spare.id.clone()
            }
            None => {
                let mut spare = match inner.spares.pop() {
                    Some(spare) => spare,
                    None => {
                        let file = memfd()?;
                        let id = Arc::new(register(&file)?);
                        Spare { file, id, len: 0 }
                    }
                };
                if let Err(e) = spare.rewrite(content.bytes) {
                    inner.spares.push(spare);
                    return Err(e);
                }
                let id = spare.id.clone();
                inner.opened.insert(
                    ino,
                    Opened::Backed(Backed {
                        spare,
                        opens: 1,
                        gone: false,
                    }),
                );
                id
            }
        };
        self.records.file_served(
            ino,
            Arc::from(content.bytes),
            content.generation,
            content.scope,
        );
        Ok(Answer::Backed(id))
    }

    /// One more open of `ino` that brings no content (one for writing, or
    /// of a file read through us): with the inode's backing file if it
    /// has one (the kernel requires it; writes still come to us, by direct
    /// I/O), through us otherwise.
    pub(crate) fn join(&self, ino: u64) -> Answer<Id> {
        self.lock().join(ino)
    }

    /// One open of `ino` was released. The last one frees the inode: its
    /// backing file is kept as a spare (the kernel detached it from the
    /// inode before it sent the release).
    pub(crate) fn release(&self, ino: u64) {
        let mut inner = self.lock();
        let last = match inner.opened.get_mut(&ino) {
            None => return,
            Some(Opened::Direct(opens)) => {
                *opens = opens.saturating_sub(1);
                *opens == 0
            }
            Some(Opened::Backed(backed)) => {
                backed.opens = backed.opens.saturating_sub(1);
                backed.opens == 0
            }
        };
        if !last {
            return;
        }
        if let Some(Opened::Backed(backed)) = inner.opened.remove(&ino) {
            self.records.forget(ino);
            if inner.spares.len() < SPARE {
                inner.spares.push(backed.spare);
            }
        }
    }

    /// Bring every backing file to generation `now`: those the changes
    /// since the last refresh can have reached are rendered by `current`
    /// (in one batch) and rewritten where they differ; `render` renders
    /// one that the batch left out (beyond its bound), and `scope` says
    /// which changes reach a rewritten file next. A file that is gone (or
    /// unreadable) is emptied and compared again at every change (its
    /// path may come back: a block added again under the same number).
    /// Returns the inodes whose file has just gone (the caller drops
    /// their attributes).
    pub(crate) fn refresh(
        &self,
        now: u64,
        changes_since: impl FnOnce(u64) -> memhp_sysfs::vfs::Changes,
        current: impl FnOnce(&[u64]) -> Vec<Rendered>,
        mut render: impl FnMut(u64) -> Rendered,
        mut scope: impl FnMut(u64) -> Scope,
    ) -> Vec<u64> {
        let stale = self.records.stale_contents(now, changes_since, current);
        let mut gone = Vec::new();
        for (ino, rendered) in stale {
            let content = rendered.unwrap_or_else(|| render(ino));
            let mut inner = self.lock();
            let Some(Opened::Backed(backed)) = inner.opened.get_mut(&ino) else {
                continue;
            };
            let (bytes, scope) = match content {
                Some(content) => {
                    backed.gone = false;
                    (content, scope(ino))
                }
                None => {
                    if !std::mem::replace(&mut backed.gone, true) {
                        gone.push(ino);
                    }
                    (Vec::new(), Scope::Global)
                }
            };
            if let Err(e) = backed.spare.rewrite(&bytes) {
                tracing::warn!(ino, error = %e, "backing file not rewritten");
            }
            self.records.file_served(ino, bytes.into(), now, scope);
        }
        gone
    }

    #[cfg(test)]
    fn content(&self, ino: u64) -> Option<Vec<u8>> {
        let inner = self.lock();
        let Some(Opened::Backed(backed)) = inner.opened.get(&ino) else {
            return None;
        };
        let mut buf = vec![0; backed.spare.len + 1];
        let n = backed.spare.file.read_at(&mut buf, 0).ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

impl<Id> Inner<Id> {
    /// One more open of `ino` that brings no content of its own: with the
    /// inode's backing file if it has one (the kernel requires it), through
    /// us otherwise.
    fn join(&mut self, ino: u64) -> Answer<Id> {
        match self.opened.entry(ino).or_insert(Opened::Direct(0)) {
            Opened::Direct(opens) => {
                *opens += 1;
                Answer::Direct
            }
            Opened::Backed(backed) => {
                backed.opens += 1;
                Answer::Backed(backed.spare.id.clone())
            }
        }
    }
}

/// A new anonymous shmem file.
fn memfd() -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated literal; no memory is shared.
    let fd = unsafe { libc::memfd_create(c"memhp-backing".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use memhp_sysfs::vfs::Changes;

    fn content(bytes: &[u8], generation: u64, scope: Scope) -> Content<'_> {
        Content {
            bytes,
            generation,
            scope,
        }
    }

    fn no_render(ino: u64) -> Rendered {
        panic!("file {ino} rendered one by one")
    }

    fn backed<Id>(answer: std::io::Result<Answer<Id>>) -> Arc<Id> {
        match answer.unwrap() {
            Answer::Backed(id) => id,
            Answer::Direct => panic!("answered through the daemon"),
        }
    }

    fn is_direct<Id>(answer: Answer<Id>) -> bool {
        matches!(answer, Answer::Direct)
    }

    #[test]
    fn second_open_shares_the_inodes_backing_file_and_the_last_release_frees_it() {
        let backing = BackingFiles::<u32>::default();
        let mut registered = 0;
        let first =
            backed(
                backing.open_read(5, Some(content(b"online\n", 1, Scope::Block(0))), |_| {
                    registered += 1;
                    Ok(7)
                }),
            );
        let second = backed(backing.open_read(
            5,
            Some(content(b"offline\n", 2, Scope::Block(0))),
            |_| panic!("an inode has one backing file"),
        ));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(registered, 1);
        assert_eq!(backing.content(5).as_deref(), Some(&b"offline\n"[..]));
        backing.release(5);
        assert!(backing.content(5).is_some(), "one open left");
        backing.release(5);
        assert_eq!(backing.content(5), None);
    }

    #[test]
    fn released_backing_file_serves_the_next_inode_with_only_its_content() {
        let backing = BackingFiles::<u32>::default();
        let first = backed(backing.open_read(
            5,
            Some(content(b"Normal Movable\n", 1, Scope::Global)),
            |_| Ok(7),
        ));
        backing.release(5);
        let second = backed(
            backing.open_read(6, Some(content(b"0\n", 1, Scope::Global)), |_| {
                panic!("a spare backing file is reused")
            }),
        );
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(backing.content(6).as_deref(), Some(&b"0\n"[..]));
    }

    #[test]
    fn inode_open_for_writing_gets_no_backing_file_until_all_its_opens_are_released() {
        let backing = BackingFiles::<u32>::default();
        let register = |_: &File| -> std::io::Result<u32> { Ok(7) };
        assert!(is_direct(backing.join(5)));
        let read = backing.open_read(5, Some(content(b"online\n", 1, Scope::Global)), register);
        assert!(
            is_direct(read.unwrap()),
            "the write's open may not have seen a backing file"
        );
        backing.release(5);
        let read = backing.open_read(5, Some(content(b"online\n", 1, Scope::Global)), register);
        assert!(is_direct(read.unwrap()), "a direct read is still open");
        backing.release(5);
        backing.release(5);
        backed(backing.open_read(5, Some(content(b"online\n", 1, Scope::Global)), register));
    }

    #[test]
    fn open_for_writing_of_a_backed_inode_names_its_backing_file() {
        let backing = BackingFiles::<u32>::default();
        let id =
            backed(backing.open_read(5, Some(content(b"online\n", 1, Scope::Global)), |_| Ok(7)));
        match backing.join(5) {
            Answer::Backed(w) => assert!(Arc::ptr_eq(&id, &w)),
            Answer::Direct => panic!("the kernel fails an open without the backing file"),
        }
        // Unrenderable now: still the backing file, for the same reason.
        assert!(!is_direct(backing.open_read(5, None, |_| Ok(8)).unwrap()));
        backing.release(5);
        backing.release(5);
        assert!(backing.content(5).is_some(), "one open left");
    }

    /// Backing files with inode 5, a file of block 3, open and holding
    /// `initial`.
    fn block3_file(initial: &[u8]) -> BackingFiles<()> {
        let backing = BackingFiles::<()>::default();
        backing
            .open_read(5, Some(content(initial, 1, Scope::Block(3))), |_| Ok(()))
            .unwrap();
        backing
    }

    /// Refresh at generation `now` after a change of block `changed`,
    /// block 3's file now rendering as `now_content` (`None`: gone).
    fn refresh(
        backing: &BackingFiles<()>,
        now: u64,
        changed: u64,
        now_content: Option<&[u8]>,
    ) -> Vec<u64> {
        backing.refresh(
            now,
            |_| Changes::Blocks([changed].into_iter().collect()),
            |inos| vec![now_content.map(<[u8]>::to_vec); inos.len()],
            no_render,
            |_| Scope::Block(3),
        )
    }

    #[test]
    fn shorter_content_leaves_no_tail_of_the_longer_one() {
        let backing = block3_file(b"going-offline\n");
        assert!(refresh(&backing, 2, 3, Some(b"online\n")).is_empty());
        assert_eq!(backing.content(5).as_deref(), Some(&b"online\n"[..]));
        refresh(&backing, 3, 3, Some(b"Normal Movable\n"));
        assert_eq!(
            backing.content(5).as_deref(),
            Some(&b"Normal Movable\n"[..])
        );
    }

    #[test]
    fn removed_file_is_emptied_and_reported_gone_once() {
        let backing = block3_file(b"online\n");
        assert_eq!(refresh(&backing, 2, 3, None), vec![5]);
        assert_eq!(backing.content(5).as_deref(), Some(&b""[..]));
        assert!(refresh(&backing, 3, 3, None).is_empty(), "reported once");
    }

    #[test]
    fn removed_file_that_comes_back_is_refilled_by_any_change() {
        let backing = block3_file(b"online\n");
        refresh(&backing, 2, 3, None);
        // Block 3 is added again, journaled as a change of block 9 (say):
        // a gone file is compared whatever changed.
        assert!(refresh(&backing, 3, 9, Some(b"offline\n")).is_empty());
        assert_eq!(backing.content(5).as_deref(), Some(&b"offline\n"[..]));
    }

    #[test]
    fn change_of_another_block_renders_nothing() {
        let backing = block3_file(b"online\n");
        let gone = backing.refresh(
            2,
            |_| Changes::Blocks([4].into_iter().collect()),
            |_| panic!("block 3's file is not reached by block 4"),
            no_render,
            |_| Scope::Block(3),
        );
        assert!(gone.is_empty());
        assert_eq!(backing.content(5).as_deref(), Some(&b"online\n"[..]));
    }

    #[test]
    fn rewritten_file_is_compared_again_at_the_next_change() {
        let backing = block3_file(b"online\n");
        refresh(&backing, 2, 3, Some(b"offline\n"));
        refresh(&backing, 3, 3, Some(b"online\n"));
        assert_eq!(backing.content(5).as_deref(), Some(&b"online\n"[..]));
    }
}
