//! Keep a request/response ping-pong on one CPU.
//!
//! A scenario is a strict alternation: the guest shell (or its helper)
//! makes a FUSE request and sleeps, the server thread answers and sleeps.
//! When the two sit on different CPUs every hand-off is a cross-CPU wakeup
//! (an IPI, expensive in a VM): measured 3x slower per request than a
//! same-CPU switch. The runner therefore pins itself to the CPU it is on
//! before it starts its threads and the shell, which inherit the mask, and
//! restores the mask when the run is over.

/// The calling thread's affinity before pinning; restored on drop.
pub struct CpuPin {
    saved: libc::cpu_set_t,
}

impl CpuPin {
    /// Pin the calling thread (and the threads and processes it creates
    /// from now on) to the CPU it runs on. `None` if the affinity cannot be
    /// read or set (the run goes on unpinned).
    pub fn here() -> Option<CpuPin> {
        // SAFETY: cpu_set_t is plain data; an all-zero value is an empty set.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `saved` is a valid, writable cpu_set_t of `size` bytes.
        if unsafe { libc::sched_getaffinity(0, size, &mut saved) } != 0 {
            return None;
        }
        // SAFETY: sched_getcpu has no preconditions.
        let here = unsafe { libc::sched_getcpu() };
        // SAFETY: `c` is checked against CPU_SETSIZE before the lookup.
        let allowed =
            |c: usize| c < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(c, &saved) };
        let cpu = match usize::try_from(here) {
            Ok(c) if allowed(c) => c,
            _ => (0..libc::CPU_SETSIZE as usize).find(|&c| allowed(c))?,
        };
        // SAFETY: as above.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` < CPU_SETSIZE (it was found in `saved`).
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: `one` is a valid cpu_set_t of `size` bytes.
        if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
            return None;
        }
        tracing::debug!(cpu, "pinned the run to one CPU");
        Some(CpuPin { saved })
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `saved` is the valid cpu_set_t read in `here`.
        unsafe { libc::sched_setaffinity(0, size, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_cpus() -> usize {
        // SAFETY: as in `here`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid cpu_set_t.
        let r =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(r, 0);
        // SAFETY: valid cpu_set_t.
        unsafe { libc::CPU_COUNT(&set) as usize }
    }

    #[test]
    fn pin_leaves_one_cpu_and_drop_restores_the_mask() {
        let before = allowed_cpus();
        let pin = CpuPin::here().expect("affinity can be set");
        assert_eq!(allowed_cpus(), 1);
        // A thread started now inherits the pin.
        let inner = std::thread::spawn(allowed_cpus).join().unwrap();
        assert_eq!(inner, 1);
        drop(pin);
        assert_eq!(allowed_cpus(), before);
    }
}
