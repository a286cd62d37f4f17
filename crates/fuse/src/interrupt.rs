//! Interrupting a blocked write when its writer is signalled.
//!
//! On Linux a sysfs `state` write that retries an offline for ever returns
//! `EINTR` as soon as the writer has a signal pending. Over FUSE the kernel
//! reports such a signal with a `FUSE_INTERRUPT` request, but fuser (up to
//! and including 0.18.0) answers it with `ENOSYS` without telling the file
//! system, and the kernel then sets `fc->no_interrupt`: from there on it
//! parks a signalled requester in a killable wait and sends nothing.
//!
//! The signal is still *pending* on the writer's thread while it waits, and
//! the kernel publishes that: `SigPnd` (thread-directed), `ShdPnd`
//! (process-wide) and `SigBlk` (blocked) in `/proc/TID/status`. The FUSE
//! request carries the writer's TID. So, while a write is in flight for
//! longer than [`GRACE`], a watcher thread polls those masks every
//! [`POLL`] and cancels the write's [`Cancel`] token once a pending signal
//! is not blocked, which is exactly the condition under which the kernel
//! would have woken the writer. A writer that disappeared (killed by a fatal
//! signal, whose request the kernel already abandoned) is cancelled too.
//!
//! This costs nothing per request: writes that finish within [`GRACE`] are
//! never polled, and nothing stands between `/dev/fuse` and fuser (an
//! earlier design relayed every request through a socket pair to catch
//! `FUSE_INTERRUPT` itself, at two extra thread wake-ups per request).

use memhp_sysfs::vfs::Cancel;
use memhp_sysfs::vfs::Task;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A write younger than this is not polled: it is almost certainly about to
/// be answered.
pub(crate) const GRACE: Duration = Duration::from_millis(1);

/// How often blocked writers' signal masks are read.
pub(crate) const POLL: Duration = Duration::from_millis(1);

struct Inflight {
    tid: u32,
    since: Instant,
    cancel: Cancel,
}

#[derive(Default)]
struct State {
    writes: HashMap<u64, Inflight>,
    /// The watcher waits for a write without a deadline: a new write must
    /// wake it.
    watcher_idle: bool,
    stop: bool,
}

/// The writes currently handed to the file system, by request `unique`.
pub(crate) struct InflightWrites {
    state: Mutex<State>,
    cv: Condvar,
    /// Where `TID/status` files are (`/proc`; a directory of fakes in tests).
    proc_root: PathBuf,
    /// Run at every poll while a write is in flight longer than [`GRACE`]:
    /// a blocked write has changed the tree (an offline's
    /// `going-offline`) without returning, and only its return would
    /// otherwise bring the caches up to date.
    on_long_write: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Default for InflightWrites {
    fn default() -> Self {
        InflightWrites::with_proc_root(PathBuf::from("/proc"))
    }
}

/// What a `/proc/TID/status` says about a waiting thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// No unblocked signal pending: keep waiting.
    Waiting,
    /// An unblocked signal is pending: the kernel would wake it.
    Signalled,
    /// The thread is gone.
    Gone,
}

/// Parse the signal masks of a `/proc/TID/status` text.
pub(crate) fn waiter_state(status: &str) -> Waiter {
    let mask = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    // A zombie (or dead) thread will never read a reply.
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(str::trim)
        .unwrap_or("");
    if state.starts_with('Z') || state.starts_with('X') {
        return Waiter::Gone;
    }
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    if pending & !mask("SigBlk:") != 0 {
        Waiter::Signalled
    } else {
        Waiter::Waiting
    }
}

impl InflightWrites {
    pub(crate) fn with_proc_root(proc_root: PathBuf) -> Self {
        InflightWrites {
            state: Mutex::default(),
            cv: Condvar::new(),
            proc_root,
            on_long_write: std::sync::OnceLock::new(),
        }
    }

    /// See `on_long_write` (set once).
    pub(crate) fn set_long_write_hook(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_long_write.set(hook);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register the write `unique` from thread `tid`; the token it must
    /// honour. After [`InflightWrites::stop`] the token comes back
    /// cancelled.
    pub(crate) fn begin(&self, unique: u64, tid: u32) -> Cancel {
        let comm = self.proc_root.join(tid.to_string()).join("comm");
        let cancel = Cancel::new().with_writer(Arc::new(move || {
            let name = std::fs::read_to_string(&comm).ok()?;
            Some(Task {
                pid: tid,
                comm: name.trim_end_matches('\n').to_string(),
            })
        }));
        let mut state = self.lock();
        if state.stop {
            cancel.cancel();
            return cancel;
        }
        let wake = state.watcher_idle;
        state.writes.insert(
            unique,
            Inflight {
                tid,
                since: Instant::now(),
                cancel: cancel.clone(),
            },
        );
        drop(state);
        // Otherwise the watcher wakes by itself at the oldest write's
        // deadline (see `watch`).
        if wake {
            self.cv.notify_all();
        }
        cancel
    }

    /// The write `unique` was answered.
    pub(crate) fn end(&self, unique: u64) {
        self.lock().writes.remove(&unique);
    }

    /// Cancel every write in flight and end [`InflightWrites::watch`].
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stop = true;
        for write in state.writes.values() {
            write.cancel.cancel();
        }
        drop(state);
        self.cv.notify_all();
    }

    fn waiter(&self, tid: u32) -> Waiter {
        match std::fs::read_to_string(self.proc_root.join(tid.to_string()).join("status")) {
            Ok(status) => waiter_state(&status),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Waiter::Gone,
            Err(e) => {
                tracing::debug!(tid, error = %e, "cannot read the writer's status");
                Waiter::Waiting
            }
        }
    }

    /// Check every write older than [`GRACE`] once; cancel the signalled
    /// ones. Returns how many were cancelled.
    pub(crate) fn check_once(&self) -> usize {
        let due: Vec<(u64, u32)> = {
            let state = self.lock();
            state
                .writes
                .iter()
                // TID 0: a writer outside our PID namespace, which we
                // cannot watch (its write waits for the tree, as before).
                .filter(|(_, w)| {
                    w.tid != 0 && !w.cancel.is_cancelled() && w.since.elapsed() >= GRACE
                })
                .map(|(unique, w)| (*unique, w.tid))
                .collect()
        };
        let mut cancelled = 0;
        for (unique, tid) in due {
            let waiter = self.waiter(tid);
            if waiter == Waiter::Waiting {
                continue;
            }
            if let Some(write) = self.lock().writes.get(&unique) {
                tracing::debug!(unique, tid, ?waiter, "blocked write interrupted");
                write.cancel.cancel();
                cancelled += 1;
            }
        }
        cancelled
    }

    /// The watcher loop: waits without a deadline while no write is in
    /// flight (a new write wakes it), sleeps until the oldest write has
    /// been in flight for [`GRACE`] otherwise, then polls every [`POLL`]
    /// while one has. Returns after [`InflightWrites::stop`].
    pub(crate) fn watch(&self) {
        let mut state = self.lock();
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            let oldest = state
                .writes
                .values()
                .filter(|w| w.tid != 0 && !w.cancel.is_cancelled())
                .map(|w| w.since)
                .min();
            let wait = match oldest {
                Some(since) if now >= since + GRACE => {
                    drop(state);
                    if let Some(hook) = self.on_long_write.get() {
                        hook();
                    }
                    self.check_once();
                    std::thread::sleep(POLL);
                    state = self.lock();
                    continue;
                }
                Some(since) => Some(since + GRACE - now),
                // Only unwatchable or cancelled writes: look again later.
                None if !state.writes.is_empty() => Some(POLL),
                None => None,
            };
            state = match wait {
                Some(t) => {
                    self.cv
                        .wait_timeout(state, t)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => {
                    state.watcher_idle = true;
                    let mut s = self.cv.wait(state).unwrap_or_else(|e| e.into_inner());
                    s.watcher_idle = false;
                    s
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: &str = "Name:\tsh\nState:\tS (sleeping)\nSigQ:\t0/63\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000000004\n";

    fn with(field: &str, value: &str) -> String {
        IDLE.lines()
            .map(|l| {
                if l.starts_with(field) {
                    format!("{field}\t{value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn thread_without_pending_signals_keeps_waiting() {
        assert_eq!(waiter_state(IDLE), Waiter::Waiting);
    }

    #[test]
    fn pending_sigalrm_on_the_thread_or_the_process_wakes_the_writer() {
        // SIGALRM is signal 14: bit 13.
        assert_eq!(
            waiter_state(&with("SigPnd:", "0000000000002000")),
            Waiter::Signalled
        );
        assert_eq!(
            waiter_state(&with("ShdPnd:", "0000000000002000")),
            Waiter::Signalled
        );
    }

    #[test]
    fn pending_but_blocked_signal_does_not_wake_the_writer() {
        // SIGCHLD (17, bit 16) is blocked in IDLE.
        assert_eq!(
            waiter_state(&with("ShdPnd:", "0000000000010000")),
            Waiter::Waiting
        );
    }

    #[test]
    fn zombie_writer_is_gone() {
        assert_eq!(waiter_state(&with("State:", "Z (zombie)")), Waiter::Gone);
    }

    fn fake_proc(tid: u32, status: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(tid.to_string())).unwrap();
        std::fs::write(dir.path().join(tid.to_string()).join("status"), status).unwrap();
        dir
    }

    #[test]
    fn young_write_is_not_polled_until_its_grace_passed() {
        let proc = fake_proc(7, &with("SigPnd:", "0000000000002000"));
        let inflight = InflightWrites::with_proc_root(proc.path().to_path_buf());
        let token = inflight.begin(1, 7);
        // Not yet GRACE old (unless the machine stalls for a millisecond,
        // in which case cancelling is also right).
        let first = inflight.check_once();
        std::thread::sleep(GRACE * 2);
        let second = inflight.check_once();
        assert_eq!(first + second, 1);
        assert!(token.is_cancelled());
    }

    #[test]
    fn write_of_a_vanished_thread_is_cancelled() {
        let proc = tempfile::tempdir().unwrap();
        let inflight = InflightWrites::with_proc_root(proc.path().to_path_buf());
        let token = inflight.begin(1, 4242);
        std::thread::sleep(GRACE * 2);
        assert_eq!(inflight.check_once(), 1);
        assert!(token.is_cancelled());
    }

    #[test]
    fn writer_outside_our_pid_namespace_is_never_taken_for_gone() {
        let proc = tempfile::tempdir().unwrap();
        let inflight = InflightWrites::with_proc_root(proc.path().to_path_buf());
        let token = inflight.begin(1, 0);
        std::thread::sleep(GRACE * 2);
        assert_eq!(inflight.check_once(), 0);
        assert!(!token.is_cancelled());
    }

    #[test]
    fn answered_write_is_never_cancelled() {
        let proc = fake_proc(7, &with("SigPnd:", "0000000000002000"));
        let inflight = InflightWrites::with_proc_root(proc.path().to_path_buf());
        let token = inflight.begin(1, 7);
        inflight.end(1);
        std::thread::sleep(GRACE * 2);
        assert_eq!(inflight.check_once(), 0);
        assert!(!token.is_cancelled());
    }

    #[test]
    fn stop_cancels_writes_in_flight_and_later_ones() {
        let inflight = InflightWrites::default();
        let token = inflight.begin(1, std::process::id());
        inflight.stop();
        assert!(token.is_cancelled());
        assert!(inflight.begin(2, std::process::id()).is_cancelled());
        // The watcher returns at once.
        inflight.watch();
    }

    #[test]
    fn waiting_writer_of_this_process_is_left_alone() {
        let inflight = InflightWrites::default();
        let tid = std::process::id();
        let token = inflight.begin(1, tid);
        std::thread::sleep(GRACE * 2);
        assert_eq!(inflight.check_once(), 0);
        assert!(!token.is_cancelled());
    }
}
