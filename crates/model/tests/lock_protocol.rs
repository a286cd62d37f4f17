//! The lock protocol of spec 02 §5 under a randomised scheduler (shuttle):
//! the sequences `memhp_model::lockproto` defines — the same ones
//! `Shared` runs with real locks — are run by concurrent tasks. With the
//! outer `device_hotplug_lock`, `device_online()` of a new block and
//! `add_memory_resource()` (which registers that block's device inside
//! `mem_hotplug_lock`) never deadlock; without it they do (§5.3).

use memhp_model::lockproto::{self, Lock, LockSet, Operation, Step};
use memhp_model::KernelVersion;
use shuttle::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The protocol's locks as shuttle primitives, for blocks 0..8.
struct Locks {
    device_hotplug: Mutex<()>,
    devices: BTreeMap<u64, Mutex<()>>,
    cpu_hotplug: RwLock<()>,
    mem_hotplug: RwLock<()>,
}

impl Locks {
    fn new() -> Arc<Locks> {
        Arc::new(Locks {
            device_hotplug: Mutex::new(()),
            devices: (0..8).map(|b| (b, Mutex::new(()))).collect(),
            cpu_hotplug: RwLock::new(()),
            mem_hotplug: RwLock::new(()),
        })
    }
}

#[allow(dead_code)] // held for their drop
enum Guard<'a> {
    Mutex(MutexGuard<'a, ()>),
    Read(RwLockReadGuard<'a, ()>),
    Write(RwLockWriteGuard<'a, ()>),
}

impl<'a> LockSet for &'a Locks {
    type Guard = Guard<'a>;
    fn take(&self, lock: Lock) -> Guard<'a> {
        let l: &'a Locks = self;
        match lock {
            Lock::DeviceHotplug => Guard::Mutex(l.device_hotplug.lock().unwrap()),
            Lock::Device(b) => Guard::Mutex(l.devices[&b].lock().unwrap()),
            Lock::CpuHotplugRead => Guard::Read(l.cpu_hotplug.read().unwrap()),
            Lock::MemHotplugWrite => Guard::Write(l.mem_hotplug.write().unwrap()),
            Lock::MemHotplugRead => Guard::Read(l.mem_hotplug.read().unwrap()),
        }
    }
}

const NEW_BLOCK: u64 = 5;

/// `add_memory()` of block 5 racing `echo online > memory5/state` (the
/// block became visible while the add was still registering it), and a
/// `get_online_mems()` reader; `strip` removes a lock from every sequence.
fn race(version: KernelVersion, strip: Option<Lock>) -> impl Fn() + Send + Sync + 'static {
    move || {
        let locks = Locks::new();
        let seq = |op: &Operation| {
            let s = lockproto::sequence(op, version);
            match strip {
                Some(l) => lockproto::without(&s, l),
                None => s,
            }
        };
        let add = seq(&Operation::AddMemory);
        let online = seq(&Operation::DeviceOnlineOffline { block: NEW_BLOCK });
        let reader = seq(&Operation::OnlineMemsReader);
        let spawn = |steps: Vec<Step>, created: Vec<u64>| {
            let locks = Arc::clone(&locks);
            shuttle::thread::spawn(move || {
                let l: &Locks = &locks;
                lockproto::run(&l, &steps, &[], &[], |_| created.clone());
            })
        };
        let tasks = [
            spawn(add, vec![NEW_BLOCK]),
            spawn(online, Vec::new()),
            spawn(reader, Vec::new()),
        ];
        for t in tasks {
            t.join().unwrap();
        }
    }
}

#[test]
fn device_hotplug_lock_prevents_the_online_vs_add_memory_deadlock() {
    for version in [KernelVersion::V6_1, KernelVersion::Mainline] {
        shuttle::check_random(race(version, None), 2000);
        shuttle::check_pct(race(version, None), 2000, 3);
    }
}

#[test]
fn without_device_hotplug_lock_online_vs_add_memory_deadlocks() {
    let outcome = std::panic::catch_unwind(|| {
        shuttle::check_random(race(KernelVersion::V6_1, Some(Lock::DeviceHotplug)), 2000)
    });
    let err = outcome.expect_err("shuttle found no deadlock");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("deadlock"), "{msg}");
}

#[test]
fn eject_and_remove_of_6_1_need_no_nesting_inversion() {
    // 6.1 unregisters devices before mem_hotplug_begin(): device lock, then
    // mem_hotplug_lock, the online order; even without the outer lock a
    // remove and an online of the same block cannot deadlock.
    let f = move || {
        let locks = Locks::new();
        let strip = |s: Vec<Step>| lockproto::without(&s, Lock::DeviceHotplug);
        let remove = strip(lockproto::sequence(
            &Operation::RemoveMemory {
                blocks: vec![NEW_BLOCK],
            },
            KernelVersion::V6_1,
        ));
        let online = strip(lockproto::sequence(
            &Operation::DeviceOnlineOffline { block: NEW_BLOCK },
            KernelVersion::V6_1,
        ));
        let l2 = Arc::clone(&locks);
        let t = shuttle::thread::spawn(move || {
            let l: &Locks = &l2;
            lockproto::run(&l, &remove, &[], &[NEW_BLOCK], |_| Vec::new());
        });
        let l: &Locks = &locks;
        lockproto::run(&l, &online, &[], &[], |_| Vec::new());
        t.join().unwrap();
    };
    shuttle::check_random(f, 2000);
}
