//! The contract between the sysfs view and the transports (FUSE, scenario
//! runner, tests): a read-mostly virtual file system addressed by paths
//! relative to the mount root (`sys/devices/system/memory/memory0/state`,
//! `proc/zoneinfo`, ...). The root itself is the empty path `""`.
//!
//! Everything a transport needs is here: what an entry is (directory, regular
//! file with its mode bits, symlink with its target), directory listings in
//! sysfs order, whole-file reads and single-`write(2)` stores, and a
//! generation counter that moves whenever anything visible may have changed
//! (for cache invalidation).

pub use memhp_model::events::Task;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use memhp_model::journal::Changes;

/// Which changes can reach a file's content (see [`Tree::scope`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only [`Changes::Everything`] (the content is fixed for as long as
    /// the file exists, or moves only with changes that reach everything).
    Static,
    /// Any change.
    Global,
    /// Only changes [`Changes::Blocks`] names with this block (or
    /// [`Changes::Everything`]).
    Block(u64),
}

/// A positive Linux errno value (`EINVAL` = 22, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const EINTR: Errno = Errno(4);
    pub const EIO: Errno = Errno(5);
    pub const ENXIO: Errno = Errno(6);
    pub const E2BIG: Errno = Errno(7);
    pub const EAGAIN: Errno = Errno(11);
    pub const ENOMEM: Errno = Errno(12);
    pub const EACCES: Errno = Errno(13);
    pub const EBUSY: Errno = Errno(16);
    pub const EEXIST: Errno = Errno(17);
    pub const ENODEV: Errno = Errno(19);
    pub const ENOTDIR: Errno = Errno(20);
    pub const EISDIR: Errno = Errno(21);
    pub const EINVAL: Errno = Errno(22);
    pub const ERANGE: Errno = Errno(34);
    pub const ENOSYS: Errno = Errno(38);
    pub const EHWPOISON: Errno = Errno(133);
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "errno {}", self.0)
    }
}

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (sysfs directories are mode 0755).
    Dir,
    /// A regular file with its permission bits (e.g. `0o644`, `0o444`, `0o200`).
    /// sysfs reports a size of 4096 for every attribute.
    File { mode: u16 },
    /// A symbolic link and its (relative) target, e.g. `../../node/node0`.
    Symlink { target: String },
}

/// A cancellation token for a write that may block (an offline whose
/// migration loop retries until a signal arrives). The transport cancels it
/// when the writer is interrupted (FUSE_INTERRUPT, a scenario's `wa` alarm);
/// the tree then makes the write fail with `EINTR`, as the kernel does.
///
/// It also names the writer for the kernel messages that do (`current`),
/// resolved only when one is logged.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<(Mutex<bool>, Condvar)>,
    writer: Option<Arc<WriterFn>>,
}

/// Resolves the writing task (pid, `comm`).
pub type WriterFn = memhp_model::events::TaskFn;

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same token, naming its writer through `f`.
    pub fn with_writer(mut self, f: Arc<WriterFn>) -> Self {
        self.writer = Some(f);
        self
    }

    /// The writing task, resolved only if a message names it.
    pub fn current_task(&self) -> Option<memhp_model::events::CurrentTask> {
        self.writer
            .clone()
            .map(memhp_model::events::CurrentTask::Lazy)
    }

    /// Mark the writer as signalled and wake whoever waits on it.
    pub fn cancel(&self) {
        let (lock, cv) = &*self.inner;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until cancelled or until `timeout` has passed (`None` = no limit).
    /// Returns whether the token is cancelled.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let (lock, cv) = &*self.inner;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        match timeout {
            None => *cv
                .wait_while(guard, |c| !*c)
                .unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                *cv.wait_timeout_while(guard, t, |c| !*c)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        }
    }
}

/// A virtual file system a transport can serve.
///
/// Paths are `/`-separated, relative to the root, without leading or trailing
/// slashes; `""` is the root directory. Implementations must be cheap for
/// `lookup`/`readdir`/`read` (they are called for every FUSE request) and must
/// never block readers behind a long write.
pub trait Tree: Send + Sync {
    /// What `path` names, or `None` if it does not exist (ENOENT).
    fn lookup(&self, path: &str) -> Option<EntryKind>;

    /// The entries of directory `path` in the order sysfs lists them, without
    /// `.` and `..`. `ENOENT` if absent, `ENOTDIR` if not a directory.
    fn readdir(&self, path: &str) -> Result<Vec<(String, EntryKind)>, Errno>;

    /// Check an `open(2)` of a regular file: `write` = opened for writing,
    /// `read` = opened for reading. sysfs refuses with `EACCES` a write-open
    /// of a file without a store method / write bit, and a read-open of a
    /// write-only file, even for root.
    fn open(&self, path: &str, read: bool, write: bool) -> Result<(), Errno>;

    /// The size `stat` reports for the regular file at `path` (sysfs: a
    /// page, whatever the content's length).
    fn file_size(&self, _path: &str) -> u64 {
        4096
    }

    /// The whole content of a regular file (seq_file semantics: the transport
    /// slices it by offset). Files whose show method fails return that errno
    /// (e.g. `power/autosuspend_delay_ms` → `EIO`).
    fn read(&self, path: &str) -> Result<Vec<u8>, Errno>;

    /// Whether reading `path` does more than render it (brings the tree up
    /// to date with something outside it first). A transport may serve
    /// the other files from a copy it keeps current by
    /// [`Tree::changes_since`], without asking the tree at each read.
    fn read_has_effects(&self, _path: &str) -> bool {
        false
    }

    /// [`Tree::read`] of many files at once, from one consistent state
    /// (transports compare everything a kernel caches after each change).
    fn read_batch(&self, paths: &[&str]) -> Vec<Result<Vec<u8>, Errno>> {
        paths.iter().map(|p| self.read(p)).collect()
    }

    /// One `write(2)` of `data` (already truncated to 4096 bytes by the
    /// caller if longer; a zero-length write never reaches here). Returns the
    /// byte count the kernel would return, or the errno. May block (an
    /// offline that retries for ever) until `cancel` fires, then returns
    /// `EINTR`.
    fn write(&self, path: &str, data: &[u8], cancel: &Cancel) -> Result<usize, Errno>;

    /// A counter that changes whenever anything visible through this tree may
    /// have changed (contents, entries). Transports use it to invalidate
    /// caches.
    fn generation(&self) -> u64;

    /// A counter that changes whenever the layout may have changed: an entry
    /// added or removed, or changed in kind, file mode or symlink target.
    /// File contents are not layout (an online/offline changes `state`, not
    /// the layout; a hot-add or hot-remove does change it).
    ///
    /// The FUSE transport never caches contents, but revalidating its
    /// cached entries and attributes costs a `readdir` of every directory
    /// the kernel holds (65,536+ with a big machine), so it only does that
    /// when this counter moves. The default, [`Tree::generation`], is always
    /// correct, but makes every content change pay for that walk.
    fn layout_generation(&self) -> u64 {
        self.generation()
    }

    /// What changed after [`Tree::generation`] was `generation`. The
    /// default, [`Changes::Everything`], is always correct.
    fn changes_since(&self, generation: u64) -> Changes {
        let _ = generation;
        Changes::Everything
    }

    /// Which changes can reach the content of file `path` until the next
    /// change [`Tree::changes_since`] reports with its block (or as
    /// everything). The default, [`Scope::Global`], is always correct.
    fn scope(&self, path: &str) -> Scope {
        let _ = path;
        Scope::Global
    }
}
