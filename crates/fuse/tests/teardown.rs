//! The end of a connection (here: aborted through the fuse control file
//! system) while a write is still blocked in the tree, whose reply then
//! comes during teardown. In its own test binary because it runs with
//! SIGPIPE at its default action (death), as a CLI that restores it would:
//! nothing in the teardown may write to a closed pipe or stream.

mod fixture;

use fixture::writer::{fork_writer, kill_and_reap, wait_for};
use fixture::{is_mounted, FixtureTree, Mounted, SLOW_GIVE_UP};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Abort the FUSE connection mounted at `mountpoint` through a private
/// mount of the fuse control file system.
fn abort_connection(mountpoint: &Path) {
    let dev = std::fs::metadata(mountpoint).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    assert_eq!(major, 0, "FUSE mounts use anonymous devices");
    let ctl = tempfile::tempdir().unwrap();
    let target = CString::new(ctl.path().as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"fusectl".as_ptr(),
            target.as_ptr(),
            c"fusectl".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "mount fusectl: {}", std::io::Error::last_os_error());
    let abort = ctl.path().join(minor.to_string()).join("abort");
    let written = std::fs::write(&abort, b"1");
    // SAFETY: as above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    written.unwrap_or_else(|e| panic!("writing {}: {e}", abort.display()));
}

#[test]
fn write_finishing_after_the_connection_ended_does_not_kill_the_daemon_with_sigpipe() {
    // SAFETY: restoring a default signal disposition has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut m = Mounted::new(FixtureTree::standard());
    let file = m.open_write("dir/slow");
    let pid = fork_writer(file.as_raw_fd(), false);
    drop(file);
    if !m.tree.wait_blocked(1, Duration::from_secs(10)) {
        kill_and_reap(pid);
        panic!("the write never reached the tree");
    }

    abort_connection(&m.mountpoint);
    // The writer is released by the abort; the tree only gives up (and the
    // reply goes out) SLOW_GIVE_UP later, while the session is torn down.
    let status = wait_for(pid, Duration::from_secs(10)).expect("writer still blocked after abort");
    assert!(libc::WIFEXITED(status), "writer status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        2,
        "the write failed (ECONNABORTED)"
    );
    let start = Instant::now();
    while m.tree.blocked_now() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the blocked write was never cancelled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(SLOW_GIVE_UP * 2);

    // Still alive; the dead connection unmounts cleanly.
    m.unmount();
    assert!(!is_mounted(&m.mountpoint));
}
