//! A small lock-order checker in the spirit of lockdep: every lock class has
//! a rank in the kernel's global order (spec 02 §5.2), and a thread may only
//! take a lock of a higher rank than every lock it already holds. Taking one
//! out of order is reported with both lock names (a panic: the checker is
//! meant to stop tests at the first inversion, before it can deadlock).
//!
//! One exception is the kernel's own: `add_memory_resource()` registers
//! block devices (taking their device locks) inside `mem_hotplug_lock`,
//! the reverse of `device_online()`. That is safe only because both paths
//! hold `device_hotplug_lock` (spec 02 §5.3), so a device lock may be taken
//! inside `mem_hotplug_begin()` (`cpu_hotplug_lock`, `mem_hotplug_lock`)
//! exactly when `device_hotplug_lock` is held.

use std::cell::RefCell;

/// A lock class and its place in the order (outermost first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockClass {
    pub name: &'static str,
    pub rank: u8,
}

/// `device_hotplug_lock`: outermost.
pub const DEVICE_HOTPLUG: LockClass = LockClass {
    name: "device_hotplug_lock",
    rank: 1,
};
/// `device_lock()` of a memory block device.
pub const DEVICE: LockClass = LockClass {
    name: "device_lock",
    rank: 2,
};
/// `cpu_hotplug_lock` (read side, from `mem_hotplug_begin`).
pub const CPU_HOTPLUG: LockClass = LockClass {
    name: "cpu_hotplug_lock",
    rank: 3,
};
/// `mem_hotplug_lock`, either side.
pub const MEM_HOTPLUG: LockClass = LockClass {
    name: "mem_hotplug_lock",
    rank: 4,
};
/// The model's state lock: held for the instant a reader or a hotplug step
/// looks at or changes the [`crate::System`] (innermost, like
/// `zone->lock` and the span locks).
pub const STATE: LockClass = LockClass {
    name: "memhp_state",
    rank: 7,
};

thread_local! {
    static HELD: RefCell<Vec<LockClass>> = const { RefCell::new(Vec::new()) };
}

/// An inversion: `taking` while `held` (which must come after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inversion {
    pub held: LockClass,
    pub taking: LockClass,
}

impl std::fmt::Display for Inversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lock order inversion: taking {} while holding {} (order: {} before {})",
            self.taking.name, self.held.name, self.taking.name, self.held.name
        )
    }
}

/// Check that `class` may be taken now.
pub fn check(class: LockClass) -> Result<(), Inversion> {
    HELD.with(|h| {
        let h = h.borrow();
        let outer = h.contains(&DEVICE_HOTPLUG);
        let bad = h.iter().find(|held| {
            let nested_register =
                class == DEVICE && (**held == MEM_HOTPLUG || **held == CPU_HOTPLUG) && outer;
            held.rank >= class.rank && !nested_register
        });
        match bad {
            Some(&held) => Err(Inversion {
                held,
                taking: class,
            }),
            None => Ok(()),
        }
    })
}

/// Proof that a class is held by this thread; released on drop.
pub struct Held(LockClass);

/// Record that this thread takes `class`; panics on an inversion.
pub fn acquire(class: LockClass) -> Held {
    if let Err(inv) = check(class) {
        panic!("{inv}");
    }
    HELD.with(|h| h.borrow_mut().push(class));
    Held(class)
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(pos) = h.iter().rposition(|c| *c == self.0) {
                h.remove(pos);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_order_is_accepted() {
        let _a = acquire(DEVICE_HOTPLUG);
        let _b = acquire(MEM_HOTPLUG);
    }

    #[test]
    fn inversion_is_reported_with_both_names() {
        let _b = acquire(MEM_HOTPLUG);
        assert_eq!(
            check(DEVICE_HOTPLUG),
            Err(Inversion {
                held: MEM_HOTPLUG,
                taking: DEVICE_HOTPLUG
            })
        );
        assert_eq!(
            check(DEVICE_HOTPLUG).unwrap_err().to_string(),
            "lock order inversion: taking device_hotplug_lock while holding mem_hotplug_lock (order: device_hotplug_lock before mem_hotplug_lock)"
        );
    }

    #[test]
    #[should_panic(expected = "lock order inversion")]
    fn taking_the_outer_lock_inside_the_inner_one_panics() {
        let _b = acquire(MEM_HOTPLUG);
        let _a = acquire(DEVICE_HOTPLUG);
    }

    #[test]
    fn recursion_on_the_same_class_is_an_inversion_too() {
        let _b = acquire(MEM_HOTPLUG);
        assert!(check(MEM_HOTPLUG).is_err());
    }

    #[test]
    fn device_lock_inside_mem_hotplug_only_under_device_hotplug() {
        {
            let _m = acquire(MEM_HOTPLUG);
            assert_eq!(
                check(DEVICE),
                Err(Inversion {
                    held: MEM_HOTPLUG,
                    taking: DEVICE
                })
            );
        }
        let _a = acquire(DEVICE_HOTPLUG);
        let _m = acquire(MEM_HOTPLUG);
        let _d = acquire(DEVICE);
        // ... but never inside the state lock.
        let _s = acquire(STATE);
        assert!(check(DEVICE).is_err());
    }

    #[test]
    fn released_locks_no_longer_count() {
        {
            let _b = acquire(MEM_HOTPLUG);
        }
        let _a = acquire(DEVICE_HOTPLUG);
    }
}
