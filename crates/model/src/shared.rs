//! A [`System`] shared between threads with the kernel's outer locking:
//! `device_hotplug_lock` serialises every state change (sysfs writes, hot-add,
//! eject), while readers only take the state lock for the instant they need
//! and never wait behind a long offline (spec 02 §5).

use crate::hotplug::{DeviceOutcome, HotplugError, OfflineProgress};
use crate::lockdep;
use crate::system::System;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often a retrying offline looks at its cancellation input.
const RETRY_POLL: Duration = Duration::from_millis(2);

/// A system plus its locks.
pub struct Shared {
    /// Simulated timeout after which a retrying offline behaves as if its
    /// writer had been signalled (None: only a real signal ends it).
    retry_timeout: Mutex<Option<Duration>>,
    state: Mutex<System>,
    device_hotplug: Mutex<()>,
    changed: Condvar,
    generation: AtomicU64,
    layout_generation: AtomicU64,
}

/// Held while a top-level hotplug operation runs (`lock_device_hotplug`).
pub struct HotplugGuard<'a> {
    shared: &'a Shared,
    _outer: MutexGuard<'a, ()>,
    _order: lockdep::Held,
}

/// The state lock, recorded with the lock-order checker.
struct StateGuard<'a> {
    guard: MutexGuard<'a, System>,
    _order: lockdep::Held,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = System;
    fn deref(&self) -> &System {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut System {
        &mut self.guard
    }
}

impl Shared {
    pub fn new(sys: System) -> Self {
        let generation = AtomicU64::new(sys.generation);
        Shared {
            retry_timeout: Mutex::new(None),
            state: Mutex::new(sys),
            device_hotplug: Mutex::new(()),
            changed: Condvar::new(),
            layout_generation: AtomicU64::new(0),
            generation,
        }
    }

    /// Take the state lock (after checking the lock order: taking it twice
    /// in one thread, e.g. reading the state from inside `modify`, would
    /// deadlock and is reported instead).
    fn lock_state(&self) -> StateGuard<'_> {
        let order = lockdep::acquire(lockdep::MEM_HOTPLUG);
        StateGuard {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            _order: order,
        }
    }

    /// Run `f` on the current state (a short critical section).
    pub fn read<R>(&self, f: impl FnOnce(&System) -> R) -> R {
        f(&self.lock_state())
    }

    /// Make a retrying offline give up with EINTR after `t` of real time,
    /// as if its writer had been signalled (a test knob; off by default,
    /// which is the kernel's behaviour).
    pub fn set_retry_timeout(&self, t: Option<Duration>) {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Change state that is not a hotplug operation (workload pages,
    /// injection settings) without waiting for `device_hotplug_lock`: a
    /// retrying offline sees the change at its next pass.
    pub fn modify<R>(&self, f: impl FnOnce(&mut System) -> R) -> R {
        let mut sys = self.lock_state();
        let r = f(&mut sys);
        sys.generation = sys.generation.wrapping_add(1);
        self.publish(&sys);
        r
    }

    /// A counter that moves whenever the tree's layout changed.
    pub fn layout_generation(&self) -> u64 {
        self.layout_generation.load(Ordering::Acquire)
    }

    /// A counter that moves whenever the state changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Take `device_hotplug_lock` (blocking; sysfs writers restart their
    /// syscall transparently, which is the same thing to user space).
    pub fn lock_hotplug(&self) -> HotplugGuard<'_> {
        let order = lockdep::acquire(lockdep::DEVICE_HOTPLUG);
        HotplugGuard {
            shared: self,
            _outer: self
                .device_hotplug
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            _order: order,
        }
    }

    fn publish(&self, sys: &System) {
        self.layout_generation
            .store(sys.layout_generation, Ordering::Release);
        self.generation.store(sys.generation, Ordering::Release);
        self.changed.notify_all();
    }
}

impl HotplugGuard<'_> {
    /// Change the state under the hotplug lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut System) -> R) -> R {
        let mut sys = self.shared.lock_state();
        let r = f(&mut sys);
        self.shared.publish(&sys);
        r
    }

    /// `device_offline()` that waits while the migration loop retries, as a
    /// writer blocked in `write(2)` does: until `cancelled()` says a signal
    /// arrived (then EINTR), or until the situation changes and the loop
    /// finishes. Readers are not blocked meanwhile.
    pub fn device_offline(
        &self,
        id: u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<DeviceOutcome, HotplugError> {
        let timeout = *self
            .shared
            .retry_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let mut sys = self.shared.lock_state();
        let mut progress = sys.device_offline(id);
        self.shared.publish(&sys);
        loop {
            match progress {
                OfflineProgress::Done(r) => {
                    self.shared.publish(&sys);
                    return r;
                }
                OfflineProgress::Retrying { .. } => {
                    if cancelled() || timeout.is_some_and(|t| started.elapsed() >= t) {
                        progress = sys.offline_signal();
                        continue;
                    }
                    // The state lock is released while waiting; its
                    // lock-order record stays (this thread takes nothing
                    // else meanwhile).
                    let (guard, _) = self
                        .shared
                        .changed
                        .wait_timeout(sys.guard, RETRY_POLL)
                        .unwrap_or_else(|e| e.into_inner());
                    sys.guard = guard;
                    progress = sys.offline_retry();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::QemuPc;
    use crate::workload::{PageKind, Placement};
    use crate::KernelVersion;

    fn shared_with_pin() -> Shared {
        let mut sys =
            System::boot(&QemuPc::default().machine("", KernelVersion::V6_1).unwrap()).unwrap();
        sys.alloc_pages(Placement::Block(3), PageKind::Pinned, 5)
            .unwrap();
        Shared::new(sys)
    }

    #[test]
    #[should_panic(
        expected = "lock order inversion: taking mem_hotplug_lock while holding mem_hotplug_lock"
    )]
    fn reading_the_state_inside_modify_is_reported_not_deadlocked() {
        let s = shared_with_pin();
        s.modify(|_| s.read(|sys| sys.blocks.len()));
    }

    #[test]
    #[should_panic(expected = "taking device_hotplug_lock while holding mem_hotplug_lock")]
    fn taking_the_hotplug_lock_inside_a_state_change_is_reported() {
        let s = shared_with_pin();
        s.modify(|_| {
            let _g = s.lock_hotplug();
        });
    }

    #[test]
    fn retry_timeout_ends_a_stuck_offline_with_eintr() {
        let s = shared_with_pin();
        s.set_retry_timeout(Some(Duration::from_millis(20)));
        let r = s.lock_hotplug().device_offline(3, &|| false);
        assert_eq!(r, Err(HotplugError::Interrupted));
        assert_eq!(s.read(|s| s.blocks[&3].state), crate::BlockState::Online);
    }

    #[test]
    fn readers_are_not_blocked_by_a_stuck_offline() {
        let s = std::sync::Arc::new(shared_with_pin());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, stop2) = (std::sync::Arc::clone(&s), std::sync::Arc::clone(&stop));
        let writer = std::thread::spawn(move || {
            s2.lock_hotplug()
                .device_offline(3, &|| stop2.load(Ordering::Acquire))
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while s.read(|s| s.blocks[&3].state) != crate::BlockState::GoingOffline {
            assert!(
                std::time::Instant::now() < deadline,
                "offline never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Release);
        assert_eq!(writer.join().unwrap(), Err(HotplugError::Interrupted));
    }
}
