//! The kernel's memory-hotplug lock protocol (spec 02 §5) as data: the
//! locks, and for every top-level operation the order in which it takes and
//! drops them (§5.5, with the 6.1 differences of §5.7 and E).
//!
//! [`crate::shared::Shared`] runs these sequences with real locks; the
//! shuttle tests (`tests/lock_protocol.rs`) run the very same sequences
//! under a randomised scheduler, showing that the outer
//! `device_hotplug_lock` prevents the ABBA deadlock of §5.3 between
//! `device_online()` and `add_memory_resource()`, and that removing it
//! deadlocks.

use crate::KernelVersion;

/// A lock of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lock {
    /// `lock_device_hotplug()`.
    DeviceHotplug,
    /// `device_lock()` of memory block N.
    Device(u64),
    /// `cpus_read_lock()` (taken by `mem_hotplug_begin`).
    CpuHotplugRead,
    /// `mem_hotplug_begin()`: `mem_hotplug_lock` in write mode.
    MemHotplugWrite,
    /// `get_online_mems()`: `mem_hotplug_lock` in read mode.
    MemHotplugRead,
}

/// Where an operation's work runs inside its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The operation itself (online/offline, add, remove, a reader).
    Main,
}

/// One step of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Take(Lock),
    Drop(Lock),
    /// The work runs; it reports the memory blocks it created.
    Work(Phase),
    /// `device_register()` of every block the work created: each block's
    /// device lock is taken and dropped, nested inside whatever is held.
    RegisterDevices,
    /// `device_unregister()` of the blocks being removed.
    UnregisterDevices,
}

/// A top-level operation of spec 02 §5.5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// B, C, D: a sysfs `state`/`online` write, or `device_online` /
    /// `device_offline` of a block from a driver (eject, auto-online).
    DeviceOnlineOffline { block: u64 },
    /// A.1–A.10: `add_memory()` up to `mem_hotplug_done()`; auto-online
    /// (A.11) follows as one `DeviceOnlineOffline` per new block, still
    /// under `device_hotplug_lock`.
    AddMemory,
    /// E: `remove_memory()` of `blocks`.
    RemoveMemory { blocks: Vec<u64> },
    /// Work under `mem_hotplug_begin()`/`mem_hotplug_done()` only (driver
    /// bookkeeping such as virtio-mem (un)plugging inside added blocks).
    MemHotplugSection,
    /// `get_online_mems()` … `put_online_mems()`.
    OnlineMemsReader,
}

use Lock::*;
use Step::*;

/// `mem_hotplug_begin()`, the work, `mem_hotplug_done()`.
fn hotplug_section(inner: &[Step]) -> Vec<Step> {
    let mut v = vec![Take(CpuHotplugRead), Take(MemHotplugWrite)];
    v.extend_from_slice(inner);
    v.extend([Drop(MemHotplugWrite), Drop(CpuHotplugRead)]);
    v
}

/// The steps of `op` in `version`, outermost lock first.
pub fn sequence(op: &Operation, version: KernelVersion) -> Vec<Step> {
    let inner = match op {
        Operation::OnlineMemsReader => {
            return vec![
                Take(MemHotplugRead),
                Work(Phase::Main),
                Drop(MemHotplugRead),
            ]
        }
        Operation::MemHotplugSection => return hotplug_section(&[Work(Phase::Main)]),
        Operation::DeviceOnlineOffline { block } => {
            let mut v = vec![Take(Device(*block))];
            v.extend(hotplug_section(&[Work(Phase::Main)]));
            v.push(Drop(Device(*block)));
            v
        }
        Operation::AddMemory => hotplug_section(&[Work(Phase::Main), RegisterDevices]),
        Operation::RemoveMemory { .. } => match version {
            // 6.1: the devices go before mem_hotplug_begin().
            KernelVersion::V6_1 => {
                let mut v = vec![UnregisterDevices];
                v.extend(hotplug_section(&[Work(Phase::Main)]));
                v
            }
            KernelVersion::Mainline => hotplug_section(&[UnregisterDevices, Work(Phase::Main)]),
        },
    };
    let mut v = vec![Take(DeviceHotplug)];
    v.extend(inner);
    v.push(Drop(DeviceHotplug));
    v
}

/// `steps` without `lock` (what the kernel would do without it; for the
/// deadlock demonstration).
pub fn without(steps: &[Step], lock: Lock) -> Vec<Step> {
    steps
        .iter()
        .copied()
        .filter(|s| !matches!(s, Take(l) | Drop(l) if *l == lock))
        .collect()
}

/// Real locks a sequence can be run with.
pub trait LockSet {
    type Guard;
    fn take(&self, lock: Lock) -> Self::Guard;
}

/// Run `steps` with `locks`, calling `work` at each work step (it returns
/// the blocks it created, for [`Step::RegisterDevices`]); `removed` are the
/// blocks [`Step::UnregisterDevices`] handles. Skips `Take`/`Drop` of locks
/// in `already_held` (the caller's outer locks). Whatever is still held at
/// the end is released innermost first.
pub fn run<L: LockSet>(
    locks: &L,
    steps: &[Step],
    already_held: &[Lock],
    removed: &[u64],
    mut work: impl FnMut(Phase) -> Vec<u64>,
) {
    let mut held: Vec<(Lock, L::Guard)> = Vec::new();
    let mut created = Vec::new();
    for &step in steps {
        match step {
            Take(l) | Drop(l) if already_held.contains(&l) => {}
            Take(l) => {
                let g = locks.take(l);
                held.push((l, g));
            }
            Drop(l) => {
                if let Some(pos) = held.iter().rposition(|h| h.0 == l) {
                    drop(held.remove(pos));
                }
            }
            Work(p) => created.extend(work(p)),
            RegisterDevices => {
                for &b in &created {
                    drop(locks.take(Device(b)));
                }
            }
            UnregisterDevices => {
                for &b in removed {
                    drop(locks.take(Device(b)));
                }
            }
        }
    }
    while let Some(h) = held.pop() {
        drop(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_online_takes_the_kernels_order() {
        assert_eq!(
            sequence(
                &Operation::DeviceOnlineOffline { block: 7 },
                KernelVersion::V6_1
            ),
            [
                Take(DeviceHotplug),
                Take(Device(7)),
                Take(CpuHotplugRead),
                Take(MemHotplugWrite),
                Work(Phase::Main),
                Drop(MemHotplugWrite),
                Drop(CpuHotplugRead),
                Drop(Device(7)),
                Drop(DeviceHotplug)
            ]
        );
    }

    #[test]
    fn add_memory_registers_devices_inside_mem_hotplug_lock() {
        let s = sequence(&Operation::AddMemory, KernelVersion::V6_1);
        let reg = s.iter().position(|x| *x == RegisterDevices).unwrap();
        let mem = s.iter().position(|x| *x == Take(MemHotplugWrite)).unwrap();
        let done = s.iter().position(|x| *x == Drop(MemHotplugWrite)).unwrap();
        assert!(mem < reg && reg < done);
    }

    #[test]
    fn remove_in_6_1_unregisters_devices_before_mem_hotplug_begin() {
        let op = Operation::RemoveMemory { blocks: vec![1] };
        let v61 = sequence(&op, KernelVersion::V6_1);
        assert_eq!(
            &v61[..3],
            [Take(DeviceHotplug), UnregisterDevices, Take(CpuHotplugRead)]
        );
        let ml = sequence(&op, KernelVersion::Mainline);
        assert_eq!(
            &ml[..4],
            [
                Take(DeviceHotplug),
                Take(CpuHotplugRead),
                Take(MemHotplugWrite),
                UnregisterDevices
            ]
        );
    }
}
