//! A [`System`] shared between threads with the kernel's locks (spec 02
//! §5): `device_hotplug_lock` serialises every state change (sysfs writes,
//! hot-add, eject); under it each operation takes the device lock of its
//! block, `cpu_hotplug_lock` and `mem_hotplug_lock` in the order
//! [`crate::lockproto`] gives for it. `get_online_mems()` readers wait for
//! a running operation, as in the kernel, while sysfs readers only take the
//! state lock for the instant they need and never wait behind a long
//! offline (a blocked offline releases the state lock between passes).

use crate::block::OnlineType;
use crate::hotadd::AddRequest;
use crate::hotplug::{DeviceOutcome, HotplugError, OfflineProgress};
use crate::lockdep;
use crate::lockproto::{self, Lock, LockSet, Operation, Phase};
use crate::system::System;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// How often a retrying offline looks at its cancellation input.
const RETRY_POLL: Duration = Duration::from_millis(2);

/// The device locks of the memory block devices, by block id.
#[derive(Default)]
struct DeviceLocks {
    held: Mutex<HashSet<u64>>,
    released: Condvar,
}

impl DeviceLocks {
    fn lock(&self, id: u64) -> DeviceLockGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(&id) {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(id);
        DeviceLockGuard { locks: self, id }
    }
}

/// `device_lock(dev)` of one block; `device_unlock` on drop.
pub struct DeviceLockGuard<'a> {
    locks: &'a DeviceLocks,
    id: u64,
}

impl Drop for DeviceLockGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.id);
        self.locks.released.notify_all();
    }
}

/// A lock of the protocol held by this thread (recorded with the
/// lock-order checker, which is told before the lock is taken).
pub struct ProtocolGuard<'a> {
    _guard: HeldLock<'a>,
    _order: lockdep::Held,
}

enum HeldLock<'a> {
    Mutex(#[allow(dead_code)] MutexGuard<'a, ()>),
    Device(#[allow(dead_code)] DeviceLockGuard<'a>),
    Read(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Write(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// A system plus its locks.
pub struct Shared {
    /// Simulated timeout after which a retrying offline behaves as if its
    /// writer had been signalled (None: only a real signal ends it).
    retry_timeout: Mutex<Option<Duration>>,
    state: Mutex<System>,
    device_hotplug: Mutex<()>,
    devices: DeviceLocks,
    cpu_hotplug: RwLock<()>,
    mem_hotplug: RwLock<()>,
    changed: Condvar,
    /// Offlines waiting on `changed` (changed under the state lock, like
    /// the waits themselves): publishing wakes them only if there are any.
    retry_waiters: AtomicUsize,
    generation: AtomicU64,
    layout_generation: AtomicU64,
}

impl<'s> LockSet for &'s Shared {
    type Guard = ProtocolGuard<'s>;

    fn take(&self, lock: Lock) -> ProtocolGuard<'s> {
        let shared: &'s Shared = self;
        let class = match lock {
            Lock::DeviceHotplug => lockdep::DEVICE_HOTPLUG,
            Lock::Device(_) => lockdep::DEVICE,
            Lock::CpuHotplugRead => lockdep::CPU_HOTPLUG,
            Lock::MemHotplugWrite | Lock::MemHotplugRead => lockdep::MEM_HOTPLUG,
        };
        let order = lockdep::acquire(class);
        let guard = match lock {
            Lock::DeviceHotplug => HeldLock::Mutex(
                shared
                    .device_hotplug
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
            Lock::Device(id) => HeldLock::Device(shared.devices.lock(id)),
            Lock::CpuHotplugRead => {
                HeldLock::Read(shared.cpu_hotplug.read().unwrap_or_else(|e| e.into_inner()))
            }
            Lock::MemHotplugWrite => HeldLock::Write(
                shared
                    .mem_hotplug
                    .write()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
            Lock::MemHotplugRead => {
                HeldLock::Read(shared.mem_hotplug.read().unwrap_or_else(|e| e.into_inner()))
            }
        };
        ProtocolGuard {
            _guard: guard,
            _order: order,
        }
    }
}

/// Held while a top-level hotplug operation runs (`lock_device_hotplug`).
pub struct HotplugGuard<'a> {
    shared: &'a Shared,
    _outer: ProtocolGuard<'a>,
}

/// `get_online_mems()`: `mem_hotplug_lock` for reading, until dropped
/// (`put_online_mems()`).
pub struct OnlineMemsGuard<'a> {
    _lock: ProtocolGuard<'a>,
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
    pub fn new(mut sys: System) -> Self {
        sys.journal = crate::journal::ChangeJournal::starting_at(sys.generation);
        let generation = AtomicU64::new(sys.generation);
        let layout_generation = AtomicU64::new(sys.layout_generation);
        Shared {
            retry_timeout: Mutex::new(None),
            state: Mutex::new(sys),
            device_hotplug: Mutex::new(()),
            devices: DeviceLocks::default(),
            cpu_hotplug: RwLock::new(()),
            mem_hotplug: RwLock::new(()),
            changed: Condvar::new(),
            retry_waiters: AtomicUsize::new(0),
            layout_generation,
            generation,
        }
    }

    /// Take the state lock (after checking the lock order: taking it twice
    /// in one thread, e.g. reading the state from inside `modify`, would
    /// deadlock and is reported instead).
    fn lock_state(&self) -> StateGuard<'_> {
        let order = lockdep::acquire(lockdep::STATE);
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
        sys.touch();
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
        HotplugGuard {
            shared: self,
            _outer: (&self).take(Lock::DeviceHotplug),
        }
    }

    /// `get_online_mems()`: wait until no hotplug operation runs, and keep
    /// them out until the guard is dropped. From inside a notifier callback
    /// (which runs under the write side) this is reported, not deadlocked.
    pub fn get_online_mems(&self) -> OnlineMemsGuard<'_> {
        OnlineMemsGuard {
            _lock: (&self).take(Lock::MemHotplugRead),
        }
    }

    /// `get_online_mems()` that does not wait: `None` while a hotplug
    /// operation runs.
    pub fn try_get_online_mems(&self) -> Option<OnlineMemsGuard<'_>> {
        lockdep::check(lockdep::MEM_HOTPLUG).ok()?;
        let guard = self.mem_hotplug.try_read().ok()?;
        Some(OnlineMemsGuard {
            _lock: ProtocolGuard {
                _guard: HeldLock::Read(guard),
                _order: lockdep::acquire(lockdep::MEM_HOTPLUG),
            },
        })
    }

    fn publish(&self, sys: &System) {
        self.layout_generation
            .store(sys.layout_generation, Ordering::Release);
        self.generation.store(sys.generation, Ordering::Release);
        // Called with the state lock held, as waiters count themselves.
        if self.retry_waiters.load(Ordering::Acquire) > 0 {
            self.changed.notify_all();
        }
    }
}

impl HotplugGuard<'_> {
    /// Run `op`'s lock sequence (under the `device_hotplug_lock` this guard
    /// holds) with `work` at its work step.
    fn run<R>(&self, op: &Operation, removed: &[u64], work: impl FnOnce() -> (R, Vec<u64>)) -> R {
        let version = self.shared.read(|s| s.version);
        let steps = lockproto::sequence(op, version);
        let mut work = Some(work);
        let mut out = None;
        lockproto::run(
            &self.shared,
            &steps,
            &[Lock::DeviceHotplug],
            removed,
            |_: Phase| {
                let (r, created) = work.take().expect("one work step")();
                out = Some(r);
                created
            },
        );
        out.expect("the sequence has a work step")
    }

    /// Change the state inside `mem_hotplug_begin()`/`mem_hotplug_done()`.
    pub fn with<R>(&self, f: impl FnOnce(&mut System) -> R) -> R {
        self.run(&Operation::MemHotplugSection, &[], || {
            let mut sys = self.shared.lock_state();
            let r = f(&mut sys);
            self.shared.publish(&sys);
            (r, Vec::new())
        })
    }

    /// `device_online()` of block `id` (sysfs `state`/`online` writes,
    /// auto-online, a driver's re-online); `online_type` is latched first
    /// when given (`state_store`).
    pub fn device_online(
        &self,
        id: u64,
        online_type: Option<OnlineType>,
    ) -> Result<DeviceOutcome, HotplugError> {
        self.run(&Operation::DeviceOnlineOffline { block: id }, &[], || {
            let mut sys = self.shared.lock_state();
            let r = (|| {
                if let Some(t) = online_type {
                    let b = sys.blocks.get_mut(&id).ok_or(HotplugError::NoSuchBlock)?;
                    b.online_type = t;
                }
                sys.device_online(id)
            })();
            self.shared.publish(&sys);
            (r, Vec::new())
        })
    }

    /// `add_memory()`: the range is added and its block devices registered
    /// under `mem_hotplug_lock`; then, after `mem_hotplug_done()`, each new
    /// block is onlined with the default online type (ascending, stopping at
    /// the first failure, whose error is ignored), as the kernel does.
    pub fn add_memory(&self, req: &AddRequest) -> Result<Vec<u64>, HotplugError> {
        let ids = self.run(&Operation::AddMemory, &[], || {
            let mut sys = self.shared.lock_state();
            let r = sys.add_memory_resource(req);
            self.shared.publish(&sys);
            let created = r.clone().unwrap_or_default();
            (r, created)
        })?;
        let default = self.shared.read(|s| s.params.default_online_type);
        if default != OnlineType::Offline {
            for &id in &ids {
                if self.device_online(id, Some(default)).is_err() {
                    break;
                }
            }
        }
        Ok(ids)
    }

    /// `remove_memory()` of `[start, start + size)`: every block must be
    /// offline (EBUSY otherwise).
    pub fn remove_memory(&self, start: u64, size: u64) -> Result<(), HotplugError> {
        let blocks = self.shared.read(|s| s.block_ids_in(start, size));
        let op = Operation::RemoveMemory {
            blocks: blocks.clone(),
        };
        self.run(&op, &blocks, || {
            let mut sys = self.shared.lock_state();
            let r = sys.remove_memory(start, size);
            self.shared.publish(&sys);
            (r, Vec::new())
        })
    }

    /// Look at the state (the state lock only, as a driver's read of its
    /// own bookkeeping).
    pub fn read<R>(&self, f: impl FnOnce(&System) -> R) -> R {
        self.shared.read(f)
    }

    /// `offline_and_remove_memory()` (spec 02 §5.5 F): `device_offline()`
    /// of each block in ascending order (a retrying offline counts as
    /// failed: the caller cannot wait), remembering the zone of each block
    /// it offlined; if all went offline, `remove_memory()`; otherwise, or
    /// if the removal failed, the offlined blocks are onlined again with
    /// their zone. Returns the first error.
    pub fn offline_and_remove_memory(&self, start: u64, size: u64) -> Result<(), HotplugError> {
        let (aligned, ids) = self
            .shared
            .read(|s| (s.range_aligned(start, size), s.block_ids_in(start, size)));
        if !aligned {
            return Err(HotplugError::Invalid("unaligned range"));
        }
        let mut offlined: Vec<(u64, OnlineType)> = Vec::new();
        let mut result = Ok(());
        for &id in &ids {
            let movable = self
                .shared
                .read(|s| s.blocks.get(&id).and_then(|b| b.zone) == Some(crate::ZoneType::Movable));
            let t = if movable {
                OnlineType::OnlineMovable
            } else {
                OnlineType::OnlineKernel
            };
            match self.device_offline(id, &|| true) {
                Ok(DeviceOutcome::Changed) => offlined.push((id, t)),
                Ok(DeviceOutcome::AlreadyInState) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.remove_memory(start, size);
        }
        if result.is_err() {
            for (id, t) in offlined {
                let _ = self.device_online(id, Some(t));
            }
        }
        result
    }

    /// `device_offline()` that waits while the migration loop retries, as a
    /// writer blocked in `write(2)` does: until `cancelled()` says a signal
    /// arrived (then EINTR), or until the situation changes and the loop
    /// finishes. `mem_hotplug_lock` stays held meanwhile (so
    /// `get_online_mems()` waits, as in the kernel), but sysfs readers are
    /// not blocked: the state lock is released between passes.
    pub fn device_offline(
        &self,
        id: u64,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<DeviceOutcome, HotplugError> {
        self.device_offline_by(id, None, cancelled)
    }

    /// [`HotplugGuard::device_offline`] by the task `writer` (named by
    /// the messages the offline logs).
    pub fn device_offline_by(
        &self,
        id: u64,
        writer: Option<crate::events::CurrentTask>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<DeviceOutcome, HotplugError> {
        self.run(&Operation::DeviceOnlineOffline { block: id }, &[], || {
            (self.offline_loop(id, writer, cancelled), Vec::new())
        })
    }

    fn offline_loop(
        &self,
        id: u64,
        writer: Option<crate::events::CurrentTask>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<DeviceOutcome, HotplugError> {
        let timeout = *self
            .shared
            .retry_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let mut sys = self.shared.lock_state();
        sys.current_task = writer;
        let mut progress = sys.device_offline(id);
        sys.current_task = None;
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
                    self.shared.retry_waiters.fetch_add(1, Ordering::AcqRel);
                    let (guard, _) = self
                        .shared
                        .changed
                        .wait_timeout(sys.guard, RETRY_POLL)
                        .unwrap_or_else(|e| e.into_inner());
                    sys.guard = guard;
                    self.shared.retry_waiters.fetch_sub(1, Ordering::AcqRel);
                    progress = sys.offline_retry();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MemAction;
    use crate::machine::QemuPc;
    use crate::workload::{PageKind, Placement};
    use crate::KernelVersion;
    use std::sync::{Arc, OnceLock, Weak};

    #[test]
    fn counters_start_at_the_systems_own_not_at_zero() {
        let mut sys =
            System::boot(&QemuPc::default().machine("", KernelVersion::V6_1).unwrap()).unwrap();
        sys.layout_touch();
        let (generation, layout) = (sys.generation(), sys.layout_generation);
        let shared = Shared::new(sys);
        assert_eq!(shared.generation(), generation);
        assert_eq!(
            shared.layout_generation(),
            layout,
            "a transport attached now must not see a layout change at the first publish"
        );
    }

    fn shared_with_pin() -> Shared {
        let mut sys =
            System::boot(&QemuPc::default().machine("", KernelVersion::V6_1).unwrap()).unwrap();
        sys.alloc_pages(Placement::Block(3), PageKind::Pinned, 5)
            .unwrap();
        Shared::new(sys)
    }

    #[test]
    #[should_panic(expected = "lock order inversion: taking memhp_state while holding memhp_state")]
    fn reading_the_state_inside_modify_is_reported_not_deadlocked() {
        let s = shared_with_pin();
        s.modify(|_| s.read(|sys| sys.blocks.len()));
    }

    #[test]
    #[should_panic(expected = "taking device_hotplug_lock while holding memhp_state")]
    fn taking_the_hotplug_lock_inside_a_state_change_is_reported() {
        let s = shared_with_pin();
        s.modify(|_| {
            let _g = s.lock_hotplug();
        });
    }

    /// A system whose memory chain has a callback that runs `f` on every
    /// MEM_GOING_ONLINE, with the shared system at hand.
    fn with_reentrant_callback(f: fn(&Shared)) -> (Arc<Shared>, u64) {
        let q = {
            let mut q = QemuPc::default();
            q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
            q
        };
        let spec = q
            .machine("memhp_default_state=offline", KernelVersion::V6_1)
            .unwrap();
        let mut sys = System::boot(&spec).unwrap();
        let base = spec.dimm.unwrap().base;
        let ids = sys
            .add_memory(&AddRequest::system_ram(0, base, sys.block_size, false))
            .unwrap();
        let cell: Arc<OnceLock<Weak<Shared>>> = Arc::new(OnceLock::new());
        let c2 = Arc::clone(&cell);
        sys.memory_chain
            .register(
                "reentrant",
                0,
                Arc::new(move |a, _| {
                    if a == MemAction::GoingOnline {
                        if let Some(s) = c2.get().and_then(Weak::upgrade) {
                            f(&s);
                        }
                    }
                    crate::notifier::NOTIFY_OK
                }),
            )
            .unwrap();
        let shared = Arc::new(Shared::new(sys));
        cell.set(Arc::downgrade(&shared)).ok().unwrap();
        (shared, ids[0])
    }

    #[test]
    #[should_panic(expected = "taking mem_hotplug_lock while holding mem_hotplug_lock")]
    fn get_online_mems_from_a_callback_is_reported_not_deadlocked() {
        let (s, id) = with_reentrant_callback(|s| drop(s.get_online_mems()));
        let _ = s.lock_hotplug().device_online(id, None);
    }

    #[test]
    #[should_panic(expected = "taking device_hotplug_lock while holding")]
    fn device_online_from_a_callback_is_reported_not_deadlocked() {
        let (s, id) = with_reentrant_callback(|s| drop(s.lock_hotplug()));
        let _ = s.lock_hotplug().device_online(id, None);
    }

    #[test]
    fn hot_add_through_the_lock_protocol_auto_onlines_each_new_block() {
        let mut q = QemuPc::default();
        q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
        let spec = q
            .machine("memhp_default_state=online_movable", KernelVersion::V6_1)
            .unwrap();
        let s = Shared::new(System::boot(&spec).unwrap());
        let base = spec.dimm.unwrap().base;
        let bs = s.read(|s| s.block_size);
        let hp = s.lock_hotplug();
        let ids = hp
            .add_memory(&AddRequest::system_ram(0, base, 2 * bs, false))
            .unwrap();
        assert_eq!(ids, [base / bs, base / bs + 1]);
        for id in &ids {
            assert_eq!(
                s.read(|s| (s.blocks[id].state, s.blocks[id].zone)),
                (crate::BlockState::Online, Some(crate::ZoneType::Movable))
            );
        }
        assert_eq!(
            hp.remove_memory(base, 2 * bs),
            Err(HotplugError::Busy("a block is online"))
        );
        for id in &ids {
            hp.device_offline(*id, &|| false).unwrap();
        }
        hp.remove_memory(base, 2 * bs).unwrap();
        assert!(s.read(|s| !s.blocks.contains_key(&ids[0])));
    }

    #[test]
    fn get_online_mems_waits_for_a_stuck_offline_while_sysfs_readers_do_not() {
        let s = std::sync::Arc::new(shared_with_pin());
        assert!(s.try_get_online_mems().is_some());
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
        // Readers went on (the loop above) while get_online_mems() waits.
        assert!(s.try_get_online_mems().is_none());
        assert_eq!(
            s.read(|s| s.blocks[&3].state),
            crate::BlockState::GoingOffline
        );
        stop.store(true, Ordering::Release);
        assert_eq!(writer.join().unwrap(), Err(HotplugError::Interrupted));
        assert!(s.try_get_online_mems().is_some());
        drop(s.get_online_mems());
    }

    #[test]
    fn retry_timeout_ends_a_stuck_offline_with_eintr() {
        let s = shared_with_pin();
        s.set_retry_timeout(Some(Duration::from_millis(20)));
        let r = s.lock_hotplug().device_offline(3, &|| false);
        assert_eq!(r, Err(HotplugError::Interrupted));
        assert_eq!(s.read(|s| s.blocks[&3].state), crate::BlockState::Online);
    }
}
