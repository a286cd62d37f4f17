//! Mount a tree and serve it: in the background ([`spawn_mount`], stopped by
//! dropping or unmounting the [`MountHandle`]) or in the foreground
//! ([`serve`], which returns once the file system is unmounted).

use crate::backing::BackingFiles;
use crate::content::PageCache;
use crate::error::FuseError;
use crate::fs::{FsConfig, MemhpFs, Served};
use crate::inodes::Inodes;
use crate::interrupt::InflightWrites;
use crate::invalidate::{Invalidator, ScanContext};
use crate::mount;
use crate::options::MountOptions;
use crate::options::Opens;
use crate::warm::Warmer;
use memhp_sysfs::vfs::Tree;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The threads that serve beside fuser's request loop, each with the call
/// that ends it.
#[derive(Default)]
struct Helpers {
    threads: Vec<(JoinHandle<()>, StopFn)>,
}

/// Ends one helper thread's loop.
type StopFn = Box<dyn Fn() + Send>;

impl Helpers {
    fn spawn(
        &mut self,
        name: &'static str,
        body: impl FnOnce() + Send + 'static,
        stop: impl Fn() + Send + 'static,
    ) -> Result<(), FuseError> {
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|source| FuseError::Session {
                what: "starting a helper thread",
                source,
            })?;
        self.threads.push((handle, Box::new(stop)));
        Ok(())
    }

    /// Stop every thread, then wait for them.
    fn stop(self) {
        for (_, stop) in &self.threads {
            stop();
        }
        for (handle, _) in self.threads {
            let _ = handle.join();
        }
    }
}

/// A mounted, served tree.
struct Running {
    mountpoint: PathBuf,
    session: fuser::Session<MemhpFs>,
    invalidator: Arc<Invalidator>,
    warmer: Option<Arc<Warmer>>,
    helpers: Helpers,
}

fn session_error(what: &'static str) -> impl FnOnce(std::io::Error) -> FuseError {
    move |source| FuseError::Session { what, source }
}

fn start(
    tree: Arc<dyn Tree>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<Running, FuseError> {
    mount::prepare_mountpoint(mountpoint)?;
    let dev = mount::open_device()?;
    mount::mount(&dev, mountpoint, options)?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");

    let inflight = Arc::new(InflightWrites::default());
    let invalidator = Arc::new(Invalidator::new());
    let inodes = Arc::new(Inodes::new());
    let page_cache = Arc::new(PageCache::default());
    let backing = Arc::new(BackingFiles::default());
    let warmer =
        (options.opens == Opens::Cached).then(|| Arc::new(Warmer::new(mountpoint.to_path_buf())));
    let fs = MemhpFs::new(
        tree.clone(),
        inodes.clone(),
        inflight.clone(),
        invalidator.clone(),
        Served {
            page_cache: page_cache.clone(),
            backing: backing.clone(),
        },
        warmer.clone(),
        FsConfig {
            entry_ttl: options.entry_ttl,
            attr_ttl: options.attr_ttl,
            opens: options.opens,
            passthrough: options.passthrough,
        },
    );
    // The kernel queued FUSE_INIT at mount time; this answers it.
    let mut config = fuser::Config::default();
    config.n_threads = Some(crate::writers::REQUEST_THREADS);
    config.clone_fd = true;
    let session = fuser::Session::from_fd(fs, OwnedFd::from(dev), fuser::SessionACL::All, config);
    let session = match session {
        Ok(session) => session,
        Err(source) => {
            let _ = mount::detach(mountpoint);
            return Err(session_error("FUSE handshake")(source));
        }
    };

    invalidator.attach(ScanContext {
        tree,
        inodes,
        page_cache,
        backing,
        notifier: session.notifier(),
    });
    let nudged = Arc::downgrade(&invalidator);
    inflight.set_long_write_hook(Box::new(move || {
        if let Some(invalidator) = nudged.upgrade() {
            invalidator.nudge();
        }
    }));
    let poll_interval = options.poll_interval;
    let mut helpers = Helpers::default();
    let started = (|| {
        let (scanner, stopper) = (invalidator.clone(), invalidator.clone());
        helpers.spawn(
            "memhp-fuse-inval",
            move || scanner.run(poll_interval),
            move || stopper.stop(),
        )?;
        let (watcher, stopper) = (inflight.clone(), inflight.clone());
        helpers.spawn(
            "memhp-fuse-signals",
            move || watcher.watch(),
            move || stopper.stop(),
        )?;
        if let Some(warmer) = warmer.clone() {
            let stopper = warmer.clone();
            helpers.spawn(
                "memhp-fuse-warm",
                move || warmer.run(),
                move || stopper.stop(),
            )?;
        }
        Ok(())
    })();
    if let Err(e) = started {
        let _ = mount::detach(mountpoint);
        helpers.stop();
        return Err(e);
    }

    Ok(Running {
        mountpoint: mountpoint.to_path_buf(),
        session,
        invalidator,
        warmer,
        helpers,
    })
}

impl Running {
    /// Serve until the file system is unmounted, then tear everything down.
    fn run(self) -> Result<(), FuseError> {
        let Running {
            mountpoint,
            session,
            invalidator: _,
            warmer: _,
            helpers,
        } = self;
        let result = session.run().map_err(session_error("serving requests"));
        // fuser's loop ends cleanly (Ok) only when the kernel ends the
        // connection, i.e. after an unmount.
        if result.is_err() {
            // fuser stopped while still mounted: take the mount away so the
            // kernel stops queueing requests nobody will answer.
            tracing::error!(mountpoint = %mountpoint.display(), "FUSE session ended while mounted; detaching");
            let _ = mount::detach(&mountpoint);
        }
        helpers.stop();
        tracing::info!(mountpoint = %mountpoint.display(), "FUSE session ended");
        result
    }
}

/// A tree mounted and served by background threads. Dropping it unmounts
/// (see [`MountHandle::unmount`]).
pub struct MountHandle {
    mountpoint: PathBuf,
    tree: Arc<dyn Tree>,
    invalidator: Arc<Invalidator>,
    warmer: Option<Arc<Warmer>>,
    supervisor: Option<JoinHandle<Result<(), FuseError>>>,
}

/// [`MountHandle::sync_caches`] from anywhere: see [`MountHandle::cache_sync`].
#[derive(Clone)]
pub struct CacheSync {
    tree: Arc<dyn Tree>,
    invalidator: Arc<Invalidator>,
}

impl CacheSync {
    /// See [`MountHandle::sync_caches`]; false once the session has stopped.
    pub fn sync(&self) -> bool {
        self.invalidator.sync(&*self.tree)
    }
}

/// Mount `tree` at `mountpoint` and serve it in the background.
///
/// The mount point must be an existing, empty directory; a stale memhp
/// mount left there by a killed daemon is detached first.
pub fn spawn_mount(
    tree: Arc<dyn Tree>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<MountHandle, FuseError> {
    let running = start(tree.clone(), mountpoint, options)?;
    let invalidator = running.invalidator.clone();
    let warmer = running.warmer.clone();
    let supervisor = thread::Builder::new()
        .name("memhp-fuse".into())
        .spawn(move || running.run());
    match supervisor {
        Ok(handle) => Ok(MountHandle {
            mountpoint: mountpoint.to_path_buf(),
            tree,
            invalidator,
            warmer,
            supervisor: Some(handle),
        }),
        Err(source) => {
            // The closure owning the session is gone; unmounting ends the
            // connection.
            let _ = mount::detach(mountpoint);
            Err(session_error("starting the session thread")(source))
        }
    }
}

/// Mount `tree` at `mountpoint` and serve it on the calling thread until it
/// is unmounted (by [`unmount`](crate::unmount), `umount`, or a
/// [`MountHandle`] elsewhere).
pub fn serve(
    tree: Arc<dyn Tree>,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<(), FuseError> {
    start(tree, mountpoint, options)?.run()
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the session has ended (the file system was unmounted).
    pub fn is_finished(&self) -> bool {
        self.supervisor.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Bring the kernel's caches in line with the tree now, instead of at the
    /// next poll: after this returns true, no reader sees an entry or an
    /// attribute older than the tree's state at the time of the call. For
    /// callers that change the tree behind the file system's back and then
    /// answer someone (a control socket). False once the session has stopped.
    pub fn sync_caches(&self) -> bool {
        self.invalidator.sync(&*self.tree)
    }

    /// A handle that does what [`MountHandle::sync_caches`] does, for other
    /// threads (a control socket's), as long as the session lives.
    pub fn cache_sync(&self) -> CacheSync {
        CacheSync {
            tree: Arc::clone(&self.tree),
            invalidator: Arc::clone(&self.invalidator),
        }
    }

    /// Wait until memhp's own background listings (directory caches it
    /// completes for the kernel, [`Opens::Cached`]) are done, so that a
    /// measurement does not share the machine with them. False on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.warmer.as_ref().is_none_or(|w| w.wait_idle(timeout))
    }

    /// Wait until the file system is unmounted by someone else.
    pub fn join(mut self) -> Result<(), FuseError> {
        self.join_supervisor()
    }

    fn join_supervisor(&mut self) -> Result<(), FuseError> {
        match self.supervisor.take() {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(FuseError::Session {
                    what: "session thread",
                    source: std::io::Error::other("panicked"),
                })
            }),
            None => Ok(()),
        }
    }

    /// Unmount and wait for the session to end. If files are still open on
    /// the mount, it is detached lazily instead: it disappears from the
    /// namespace at once and the session keeps serving those files until
    /// they are closed, without this call waiting for that.
    pub fn unmount(mut self) -> Result<(), FuseError> {
        self.unmount_inner()
    }

    /// Detach the mount lazily and do not wait for the session: it ends by
    /// itself once nothing uses the file system any more (another mount
    /// namespace may still hold a bind of it while its last process exits).
    pub fn detach(mut self) -> Result<(), FuseError> {
        if self.supervisor.take().is_none() {
            return Ok(());
        }
        match mount::detach(&self.mountpoint) {
            Ok(()) | Err(FuseError::NotMounted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn unmount_inner(&mut self) -> Result<(), FuseError> {
        if self.supervisor.is_none() {
            return Ok(());
        }
        match mount::unmount_preferring_clean(&self.mountpoint) {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(
                    mountpoint = %self.mountpoint.display(),
                    "mount busy: detached lazily; open files are served until closed"
                );
                self.supervisor = None;
                return Ok(());
            }
            // Already unmounted from elsewhere: the session ends by itself.
            Err(FuseError::NotMounted { .. }) => {}
            Err(e) => return Err(e),
        }
        self.join_supervisor()
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "unmount on drop failed");
        }
    }
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
