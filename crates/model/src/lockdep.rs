//! A small lock-order checker in the spirit of lockdep: every lock class has
//! a rank in the kernel's global order (spec 02 §5.2), and a thread may only
//! take a lock of a higher rank than every lock it already holds. Taking one
//! out of order is reported with both lock names (a panic: the checker is
//! meant to stop tests at the first inversion, before it can deadlock).

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
/// The model's state lock: `mem_hotplug_lock` and everything inside it.
pub const MEM_HOTPLUG: LockClass = LockClass {
    name: "mem_hotplug_lock",
    rank: 4,
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
    HELD.with(
        |h| match h.borrow().iter().find(|held| held.rank >= class.rank) {
            Some(&held) => Err(Inversion {
                held,
                taking: class,
            }),
            None => Ok(()),
        },
    )
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
    fn released_locks_no_longer_count() {
        {
            let _b = acquire(MEM_HOTPLUG);
        }
        let _a = acquire(DEVICE_HOTPLUG);
    }
}
