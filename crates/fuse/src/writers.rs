//! Where writes run. A write may block for as long as an offline retries,
//! so it may hold at most all request threads but one (the last one always
//! serves readers): it runs on the request thread that received it while
//! fewer than [`REQUEST_THREADS`]` - 1` writes do, which saves a thread
//! hand-off per write, and on a write thread otherwise. It never waits for
//! another write: when every write thread is busy (a blocked write holds
//! its thread), a new one is started. Idle write threads are kept for a
//! while, since starting one costs more than a typical store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Threads reading requests from the kernel (fuser's event loops).
pub(crate) const REQUEST_THREADS: usize = 2;

/// How long an idle write thread waits for work before exiting.
const IDLE_EXIT: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Writers {
    shared: Arc<Shared>,
    /// Writes running on request threads now.
    inline: AtomicUsize,
}

impl Writers {
    pub(crate) fn new() -> Writers {
        Writers {
            shared: Arc::default(),
            inline: AtomicUsize::new(0),
        }
    }

    /// Run `job` now: on the calling request thread if that leaves one
    /// free for readers, on a write thread otherwise; then the reply it
    /// returns. An inline job gives its slot back before it replies: the
    /// writer it wakes may make its next write at once (on a CPU shared
    /// with this thread, before this thread runs again), and that write
    /// must find the slot free rather than go to a write thread.
    pub(crate) fn run<R: FnOnce()>(&self, job: impl FnOnce() -> R + Send + 'static) {
        if self.inline.fetch_add(1, Ordering::AcqRel) < REQUEST_THREADS - 1 {
            // Released even if the job panics (fuser's loop survives it).
            struct Slot<'a>(&'a AtomicUsize);
            impl Drop for Slot<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::AcqRel);
                }
            }
            let reply = {
                let _slot = Slot(&self.inline);
                job()
            };
            reply();
            return;
        }
        self.inline.fetch_sub(1, Ordering::AcqRel);
        self.spawn(move || job()());
    }

    /// Run `job` on a write thread, now.
    fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let mut state = self.shared.lock();
        state.jobs.push_back(Box::new(job));
        // Each waiting thread takes one job; start another for the rest.
        if state.jobs.len() <= state.idle {
            drop(state);
            self.shared.cv.notify_one();
            return;
        }
        drop(state);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("memhp-fuse-write".into())
            .spawn(move || work(&shared));
        if let Err(e) = spawned {
            // The job stays queued for the next thread that frees up.
            tracing::error!(error = %e, "cannot start a write thread");
        }
    }
}

fn work(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = shared.lock();
            continue;
        }
        if state.closed {
            return;
        }
        state.idle += 1;
        let (guard, wait) = shared
            .cv
            .wait_timeout(state, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        state = guard;
        state.idle -= 1;
        if wait.timed_out() && state.jobs.is_empty() {
            return;
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Occupy every inline slot with a job blocked until the returned
    /// sender is used (or dropped), each from a request thread of its own.
    fn block_request_threads(writers: &Arc<Writers>) -> Vec<mpsc::Sender<()>> {
        (0..REQUEST_THREADS - 1)
            .map(|_| {
                let (release_tx, release_rx) = mpsc::channel::<()>();
                let (started_tx, started_rx) = mpsc::channel();
                let w = writers.clone();
                std::thread::spawn(move || {
                    w.run(move || {
                        started_tx.send(std::thread::current().id()).unwrap();
                        let _ = release_rx.recv();
                        || ()
                    })
                });
                started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
                release_tx
            })
            .collect()
    }

    #[test]
    fn write_runs_on_the_request_thread_while_another_one_is_free() {
        let writers = Writers::new();
        let here = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        writers.run(move || {
            tx.send(std::thread::current().id()).unwrap();
            || ()
        });
        assert_eq!(rx.recv().unwrap(), here);
        assert_eq!(writers.inline.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_inline_slot_is_free_again_before_the_reply_goes_out() {
        // The writer the reply wakes may write again at once, on another
        // request thread: that write must be able to run inline too.
        let writers = Arc::new(Writers::new());
        let (tx, rx) = mpsc::channel();
        let w = writers.clone();
        writers.run(move || {
            let during = w.inline.load(Ordering::Acquire);
            move || tx.send((during, w.inline.load(Ordering::Acquire))).unwrap()
        });
        assert_eq!(rx.recv().unwrap(), (1, 0));
    }

    #[test]
    fn blocked_writes_never_take_the_last_request_thread() {
        let writers = Arc::new(Writers::new());
        let _blocked = block_request_threads(&writers);
        let here = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        writers.run(move || {
            tx.send(std::thread::current().id()).unwrap();
            || ()
        });
        let ran_on = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_ne!(ran_on, here, "handed to a write thread");
    }

    #[test]
    fn a_blocked_job_never_delays_the_next_one() {
        let writers = Arc::new(Writers::new());
        let _blocked_inline = block_request_threads(&writers);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        writers.run(move || {
            let _ = release_rx.recv();
            || ()
        });
        for i in 0..3 {
            let done = done_tx.clone();
            writers.run(move || {
                done.send(i).unwrap();
                || ()
            });
        }
        let mut finished: Vec<i32> = (0..3)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        finished.sort();
        assert_eq!(finished, [0, 1, 2]);
        release_tx.send(()).unwrap();
    }

    #[test]
    fn idle_threads_are_reused() {
        let writers = Arc::new(Writers::new());
        let _blocked_inline = block_request_threads(&writers);
        let (tx, rx) = mpsc::channel();
        for _ in 0..5 {
            let tx = tx.clone();
            writers.run(move || {
                tx.send(std::thread::current().id()).unwrap();
                || ()
            });
            let id = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            // Let the thread go back to waiting before the next job.
            while writers.shared.lock().idle == 0 {
                std::thread::yield_now();
            }
            assert_eq!(
                writers.shared.lock().idle,
                1,
                "one thread ({id:?}) serves them all"
            );
        }
    }
}
