//! Open-file limits (`RLIMIT_NOFILE`): memhp's own, raised, and the guest
//! shell's, set to what a guest's init gets from the kernel.

use std::process::Command;

/// The soft and hard limits Linux gives init (`INR_OPEN_CUR`,
/// `INR_OPEN_MAX`), which every process of the oracle's guest inherits.
pub const GUEST: (libc::rlim_t, libc::rlim_t) = (1024, 4096);

fn get() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Up to the hard limit: a FUSE server that passes reads through holds a
/// descriptor (its backing file) for every file its clients hold open for
/// reading.
pub fn raise_soft_to_hard() {
    let Some(mut limit) = get() else { return };
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit; raising the soft limit to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "open file limit not raised"
            );
        }
    }
}

/// Start `cmd` with the guest's limits ([`GUEST`]) whatever memhp's own
/// are; without the privilege to raise the hard limit that far, the
/// current hard limit stays and the soft one is at most it.
pub fn guest_limits(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls getrlimit/setrlimit, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let wanted = libc::rlimit {
                rlim_cur: GUEST.0,
                rlim_max: GUEST.1,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                if let Some(mut limit) = get() {
                    limit.rlim_cur = GUEST.0.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
            }
            Ok(())
        });
    }
}
