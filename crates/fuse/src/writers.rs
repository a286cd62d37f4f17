//! The threads writes run on. A write may block for as long as an offline
//! retries, so it never runs on the request loop, and it never waits for
//! another write: when every thread is busy (a blocked write holds its
//! thread), a new one is started. Idle threads are kept for a while, since
//! starting one costs more than a typical store.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

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
}

impl Writers {
    pub(crate) fn new() -> Writers {
        Writers {
            shared: Arc::default(),
        }
    }

    /// Run `job` on a write thread, now.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) {
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

    #[test]
    fn a_blocked_job_never_delays_the_next_one() {
        let writers = Writers::new();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        writers.run(move || {
            let _ = release_rx.recv();
        });
        for i in 0..3 {
            let done = done_tx.clone();
            writers.run(move || done.send(i).unwrap());
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
        let writers = Writers::new();
        let (tx, rx) = mpsc::channel();
        for _ in 0..5 {
            let tx = tx.clone();
            writers.run(move || tx.send(std::thread::current().id()).unwrap());
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
