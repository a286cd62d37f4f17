//! The scenario guest's tmpfs. Its files cost the guest's kernel slab (an
//! inode and a dentry each) and shmem pages as they are written; here they
//! live on the host's tmpfs mounted at the steps' private `/tmp`, so the
//! machine is told what that tmpfs holds before each read or write of the
//! tree (one `fstatfs`, and a charge only when it changed): a step that
//! fills `/tmp` and then reads `/proc/meminfo` or offlines a block sees the
//! memory taken, as in the guest.
//!
//! The runner lets go of the tmpfs ([`GuestTmpfs::release`]) when the last
//! step has run: the shell's exit then takes the mount down (0.1 s with
//! 40,000 files), not the runner's.

use anyhow::{Context, Result};
use memhp_model::shared::Shared;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// `TMPFS_MAGIC`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

pub struct GuestTmpfs {
    shared: Arc<Shared>,
    watched: Mutex<Option<Watched>>,
}

struct Watched {
    /// The tmpfs's root, as the steps' process sees it.
    dir: File,
    /// (inodes, bytes) when the steps start: what the guest's init left
    /// there (`boot.log`, `bootblocks`), which the booted machine's memory
    /// use already holds (it was measured on a guest that had them).
    baseline: (u64, u64),
    /// (inodes, bytes) beyond the baseline as last charged.
    charged: Option<(u64, u64)>,
}

impl GuestTmpfs {
    /// The `/tmp` of process `pid` (in its own mount namespace), before
    /// its steps run.
    pub fn open(pid: u32, shared: Arc<Shared>) -> Result<GuestTmpfs> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = format!("/proc/{pid}/root/tmp");
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&path)
            .with_context(|| format!("open {path}"))?;
        let mut watched = Watched {
            dir,
            baseline: (0, 0),
            charged: Some((0, 0)),
        };
        watched.baseline = watched.usage().unwrap_or_default();
        Ok(GuestTmpfs {
            shared,
            watched: Mutex::new(Some(watched)),
        })
    }

    /// Stop watching (the last step has run) and close the tmpfs's root.
    pub fn release(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charge what the tmpfs holds now, if it changed since the last
    /// charge (a charge the machine refuses for want of memory is tried
    /// again at the next access).
    pub fn sync(&self) {
        let mut watched = self.lock();
        let Some(w) = watched.as_mut() else {
            return;
        };
        let Some((inodes, bytes)) = w.usage() else {
            return;
        };
        let now = (
            inodes.saturating_sub(w.baseline.0),
            bytes.saturating_sub(w.baseline.1),
        );
        if w.charged == Some(now) {
            return;
        }
        if self
            .shared
            .modify(|s| s.set_tmpfs_usage(now.0, now.1))
            .is_ok()
        {
            w.charged = Some(now);
        }
    }
}

impl Watched {
    /// Inodes and bytes in use, as `statfs` counts them (`None` if it is not
    /// a tmpfs).
    fn usage(&self) -> Option<(u64, u64)> {
        // SAFETY: an all-zero statfs is a valid value for the kernel to fill.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open for as long as `self`, and `st` is
        // a valid, writable statfs.
        if unsafe { libc::fstatfs(self.dir.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        if st.f_type as i64 != TMPFS_MAGIC {
            return None;
        }
        let inodes = (st.f_files as u64).saturating_sub(st.f_ffree as u64);
        let bytes = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * st.f_bsize as u64;
        Some((inodes, bytes))
    }
}
