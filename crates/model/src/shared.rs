//! A [`System`] shared between threads with the kernel's outer locking:
//! `device_hotplug_lock` serialises every state change (sysfs writes, hot-add,
//! eject), while readers only take the state lock for the instant they need
//! and never wait behind a long offline (spec 02 §5).

use crate::hotplug::{DeviceOutcome, HotplugError, OfflineProgress};
use crate::system::System;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often a retrying offline looks at its cancellation input.
const RETRY_POLL: Duration = Duration::from_millis(2);

/// A system plus its locks.
pub struct Shared {
    state: Mutex<System>,
    device_hotplug: Mutex<()>,
    changed: Condvar,
    generation: AtomicU64,
}

/// Held while a top-level hotplug operation runs (`lock_device_hotplug`).
pub struct HotplugGuard<'a> {
    shared: &'a Shared,
    _outer: MutexGuard<'a, ()>,
}

impl Shared {
    pub fn new(sys: System) -> Self {
        let generation = AtomicU64::new(sys.generation);
        Shared {
            state: Mutex::new(sys),
            device_hotplug: Mutex::new(()),
            changed: Condvar::new(),
            generation,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, System> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the current state (a short critical section).
    pub fn read<R>(&self, f: impl FnOnce(&System) -> R) -> R {
        f(&self.lock_state())
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

    /// A counter that moves whenever the state changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Take `device_hotplug_lock` (blocking; sysfs writers restart their
    /// syscall transparently, which is the same thing to user space).
    pub fn lock_hotplug(&self) -> HotplugGuard<'_> {
        HotplugGuard {
            shared: self,
            _outer: self
                .device_hotplug
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn publish(&self, sys: &System) {
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
                    if cancelled() {
                        progress = sys.offline_signal();
                        continue;
                    }
                    let (guard, _) = self
                        .shared
                        .changed
                        .wait_timeout(sys, RETRY_POLL)
                        .unwrap_or_else(|e| e.into_inner());
                    sys = guard;
                    progress = sys.offline_retry();
                }
            }
        }
    }
}
