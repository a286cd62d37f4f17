//! Completing the kernel's directory caches.
//!
//! The kernel caches a directory's listing (`FOPEN_CACHE_DIR`) but uses the
//! cache only once some reader has read it to the end: the end is an empty
//! `READDIR` reply. A reader that stops early — lsmem looks for a block's
//! `nodeN` link and stops there — leaves the cache incomplete, so every
//! later listing of that directory costs a request again (and its `stat`
//! another, since a `READDIR` invalidates the cached atime).
//!
//! So, with [`Opens::Cached`](crate::Opens::Cached), a directory whose
//! listing we served from its start is queued here, and a thread of ours
//! lists it to the end through the mount, once per listing we serve.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    queue: VecDeque<(u64, String)>,
    queued: HashSet<u64>,
    stop: bool,
}

pub(crate) struct Warmer {
    mountpoint: PathBuf,
    state: Mutex<State>,
    cv: Condvar,
}

impl Warmer {
    pub(crate) fn new(mountpoint: PathBuf) -> Warmer {
        Warmer {
            mountpoint,
            state: Mutex::default(),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Directory `ino` at `path` was listed from its start: list it to the
    /// end soon (unless that is queued already).
    pub(crate) fn listed(&self, ino: u64, path: &str) {
        let mut state = self.lock();
        if state.stop || !state.queued.insert(ino) {
            return;
        }
        state.queue.push_back((ino, path.to_string()));
        drop(state);
        self.cv.notify_all();
    }

    /// Wait until nothing is queued or being listed (false on timeout).
    pub(crate) fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .cv
            .wait_timeout_while(state, timeout, |s| !s.stop && !s.queued.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        state.queued.is_empty()
    }

    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    /// The warming loop; returns after [`Warmer::stop`].
    pub(crate) fn run(&self) {
        loop {
            let (ino, path) = {
                let state = self.lock();
                let mut state = self
                    .cv
                    .wait_while(state, |s| !s.stop && s.queue.is_empty())
                    .unwrap_or_else(|e| e.into_inner());
                if state.stop {
                    return;
                }
                let Some(next) = state.queue.pop_front() else {
                    continue;
                };
                next
            };
            // Our own listing comes back to us as requests; it must not
            // queue the directory again.
            match std::fs::read_dir(self.mountpoint.join(&path)) {
                Ok(entries) => entries.for_each(drop),
                Err(e) => tracing::trace!(path, error = %e, "directory not warmed"),
            }
            self.lock().queued.remove(&ino);
            self.cv.notify_all();
        }
    }
}
