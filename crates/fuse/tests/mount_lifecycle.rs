//! Mounting, unmounting, and recovering from a daemon that was killed.

mod fixture;

use fixture::{errno_of, is_mounted, mountinfo_line, require_fuse, FixtureTree, Mounted};
use memhp_fuse::{recover_stale, serve, spawn_mount, unmount, FuseError, MountOptions};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Environment variable that makes this test binary, re-executed, play the
/// daemon (see `child_process_role`).
const ROLE_ENV: &str = "MEMHP_FUSE_TEST_DAEMON";

fn scratch() -> (tempfile::TempDir, PathBuf) {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    (dir, mnt)
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap().next().is_none()
}

#[test]
fn unmount_removes_the_mount_and_leaves_the_directory_empty() {
    let mut m = Mounted::new(FixtureTree::standard());
    assert!(is_mounted(&m.mountpoint));
    assert!(!is_empty_dir(&m.mountpoint));
    m.unmount();
    assert!(!is_mounted(&m.mountpoint));
    assert!(is_empty_dir(&m.mountpoint));
}

#[test]
fn dropping_the_handle_unmounts() {
    let (_dir, mnt) = scratch();
    let handle = spawn_mount(FixtureTree::standard(), &mnt, &MountOptions::default()).unwrap();
    assert!(is_mounted(&mnt));
    assert!(!handle.is_finished());
    drop(handle);
    assert!(!is_mounted(&mnt));
    assert!(is_empty_dir(&mnt));
}

#[test]
fn mountinfo_shows_memhp_with_allow_other_and_without_default_permissions() {
    let m = Mounted::new(FixtureTree::standard());
    let line = mountinfo_line(&m.mountpoint).expect("mounted");
    let (mount_part, fs_part) = line.split_once(" - ").unwrap();
    let mut fs = fs_part.split(' ');
    assert_eq!(fs.next(), Some("fuse.memhp"));
    assert_eq!(fs.next(), Some("memhp"));
    let super_options = fs.next().unwrap();
    assert!(super_options.contains("allow_other"), "{line}");
    assert!(!super_options.contains("default_permissions"), "{line}");
    let mount_options = mount_part.split(' ').nth(5).unwrap();
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(
            mount_options.split(',').any(|o| o == flag),
            "{flag} in {line}"
        );
    }
}

#[test]
fn mount_refuses_a_non_empty_directory() {
    let (_dir, mnt) = scratch();
    std::fs::write(mnt.join("precious"), b"keep me").unwrap();
    let err = spawn_mount(FixtureTree::standard(), &mnt, &MountOptions::default()).unwrap_err();
    assert!(
        matches!(err, FuseError::MountpointNotEmpty { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(!is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("precious")).unwrap(), b"keep me");
}

#[test]
fn mount_refuses_a_missing_mountpoint_and_a_file() {
    let (dir, _mnt) = scratch();
    let missing = dir.path().join("missing");
    let err = spawn_mount(FixtureTree::standard(), &missing, &MountOptions::default()).unwrap_err();
    assert!(
        matches!(err, FuseError::MountpointMissing { .. }),
        "{err:?}"
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let err = spawn_mount(FixtureTree::standard(), &file, &MountOptions::default()).unwrap_err();
    assert!(
        matches!(err, FuseError::MountpointNotDirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn unmount_of_a_plain_directory_is_not_mounted() {
    let (_dir, mnt) = scratch();
    assert!(matches!(unmount(&mnt), Err(FuseError::NotMounted { .. })));
}

#[test]
fn serve_returns_once_unmounted_from_elsewhere() {
    let (_dir, mnt) = scratch();
    let tree = FixtureTree::standard();
    let server = {
        let (tree, mnt) = (tree.clone(), mnt.clone());
        std::thread::spawn(move || serve(tree, &mnt, &MountOptions::default()))
    };
    let start = Instant::now();
    while !is_mounted(&mnt) {
        assert!(start.elapsed() < Duration::from_secs(10), "never mounted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(std::fs::read(mnt.join("dir/ro")).unwrap(), b"read-only\n");
    unmount(&mnt).unwrap();
    server.join().unwrap().unwrap();
    assert!(!is_mounted(&mnt));
}

#[test]
fn unmount_while_a_file_is_open_detaches_lazily_and_keeps_serving_it() {
    let mut m = Mounted::new(FixtureTree::standard());
    let mut open = std::fs::File::open(m.path("dir/ro")).unwrap();
    let start = Instant::now();
    m.unmount();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "unmount waited for the open file"
    );
    assert!(!is_mounted(&m.mountpoint));
    let mut content = String::new();
    open.read_to_string(&mut content).unwrap();
    assert_eq!(content, "read-only\n");
}

/// A daemon process, SIGKILLed when dropped so that a failing test does not
/// leave it serving.
struct Daemon(Child);

impl Daemon {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start this test binary as a daemon serving the fixture at `mountpoint`;
/// returns once it has mounted.
fn spawn_daemon(mountpoint: &Path) -> Daemon {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_role",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, mountpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let daemon = Daemon(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest has already printed "test child_process_role ... ".
            if line.ends_with("MOUNTED") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the daemon did not report its mount");
    daemon
}

#[test]
#[ignore = "not a test: the daemon process of the stale-mount tests, run only by them"]
fn child_process_role() {
    let Some(mountpoint) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    let handle = spawn_mount(
        FixtureTree::standard(),
        Path::new(&mountpoint),
        &MountOptions::default(),
    )
    .unwrap();
    println!("MOUNTED");
    loop {
        std::thread::park();
        assert!(!handle.is_finished());
    }
}

/// Leave a stale memhp mount at `mnt`: a daemon that mounted it and was
/// killed with SIGKILL.
fn leave_stale_mount(mnt: &Path) {
    let mut daemon = spawn_daemon(mnt);
    assert_eq!(std::fs::read(mnt.join("dir/ro")).unwrap(), b"read-only\n");
    daemon.kill();
    assert_eq!(errno_of(std::fs::metadata(mnt)), libc::ENOTCONN);
}

#[test]
fn killed_daemon_leaves_a_stale_mount_that_recover_stale_detaches() {
    let (_dir, mnt) = scratch();
    leave_stale_mount(&mnt);
    assert!(recover_stale(&mnt).unwrap());
    assert!(!is_mounted(&mnt));
    assert!(std::fs::metadata(&mnt).unwrap().is_dir());
    assert!(is_empty_dir(&mnt));
    assert!(!recover_stale(&mnt).unwrap(), "nothing left to recover");
}

#[test]
fn mounting_over_a_stale_memhp_mount_recovers_it_first() {
    let (_dir, mnt) = scratch();
    leave_stale_mount(&mnt);
    let handle = spawn_mount(FixtureTree::standard(), &mnt, &MountOptions::default()).unwrap();
    assert_eq!(std::fs::read(mnt.join("dir/ro")).unwrap(), b"read-only\n");
    handle.unmount().unwrap();
    assert!(
        !is_mounted(&mnt),
        "the stale mount must not be left underneath"
    );
}

#[test]
fn recover_stale_leaves_live_mounts_and_plain_directories_alone() {
    let m = Mounted::new(FixtureTree::standard());
    assert!(!recover_stale(&m.mountpoint).unwrap());
    assert!(is_mounted(&m.mountpoint));
    let (_dir, plain) = scratch();
    assert!(!recover_stale(&plain).unwrap());
}

#[test]
fn recover_stale_refuses_a_dead_mount_of_another_fuse_file_system() {
    let (_dir, mnt) = scratch();
    // A FUSE mount whose daemon is gone: its /dev/fuse descriptor closed.
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    let target = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    let data = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        dev.as_raw_fd()
    ))
    .unwrap();
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"other".as_ptr(),
            target.as_ptr(),
            c"fuse.other".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
    drop(dev);
    assert_eq!(errno_of(std::fs::metadata(&mnt)), libc::ENOTCONN);

    let err = recover_stale(&mnt).unwrap_err();
    assert!(
        matches!(err, FuseError::ForeignStaleMount { ref fstype, .. } if fstype == "fuse.other"),
        "{err:?}"
    );
    let err = spawn_mount(FixtureTree::standard(), &mnt, &MountOptions::default()).unwrap_err();
    assert!(
        matches!(err, FuseError::ForeignStaleMount { .. }),
        "{err:?}"
    );
    unmount(&mnt).unwrap();
}

#[test]
fn two_mounts_serve_independent_trees() {
    let a = Mounted::new(FixtureTree::standard());
    let b = Mounted::new(FixtureTree::standard());
    a.tree.set_content("dir/rw", b"a\n");
    assert_eq!(std::fs::read(a.path("dir/rw")).unwrap(), b"a\n");
    assert_eq!(std::fs::read(b.path("dir/rw")).unwrap(), b"initial\n");
    let _: Arc<FixtureTree> = b.tree.clone();
}
