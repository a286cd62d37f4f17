//! `write -t -a S`: a write that blocks is interrupted by SIGALRM (EINTR) as
//! soon as the target's sibling `state` reads `going-offline`, or after S
//! real seconds; the printed duration is then the virtual S*1000 ms.

use memhp_scenario::ohelper_run;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests share the process's SIGALRM disposition: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let rc = ohelper_run(&args, &mut out, &mut err);
    (rc, String::from_utf8(out).unwrap())
}

/// A FIFO whose pipe buffer is full: a blocking write(2) of a few bytes
/// sleeps until a signal interrupts it. Returns the (reader, writer) ends
/// that keep it so.
fn full_fifo(path: &Path) -> (File, File) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    let mut writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    for chunk in [&[0u8; 65536][..], &[0u8; 1][..]] {
        loop {
            match writer.write(chunk) {
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the pipe: {e}"),
            }
        }
    }
    (reader, writer)
}

fn sigalrm_is_default() -> bool {
    // SAFETY: zero is a valid sigaction to be overwritten; querying only.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe { libc::sigaction(libc::SIGALRM, std::ptr::null(), &mut old) };
    old.sa_sigaction == libc::SIG_DFL
}

#[test]
fn blocked_write_with_going_offline_state_returns_eintr_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    let _fifo = full_fifo(&target);
    fs::write(t.path().join("state"), "going-offline\n").unwrap();
    let start = Instant::now();
    let (rc, out) = run(&[
        "write",
        "-t",
        "-a",
        "30",
        target.to_str().unwrap(),
        "offline",
    ]);
    let took = start.elapsed();
    assert_eq!(rc, 1);
    assert_eq!(
        out,
        format!(
            "write {} \"offline\" -> EINTR(4) [30000 ms]\n",
            target.display()
        )
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: not virtual");
    assert!(sigalrm_is_default(), "SIGALRM handler left installed");
}

#[test]
fn blocked_write_without_going_offline_is_stopped_by_the_real_time_safety_net() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    let _fifo = full_fifo(&target);
    fs::write(t.path().join("state"), "online\n").unwrap();
    let start = Instant::now();
    let (rc, out) = run(&["write", "-a", "1", target.to_str().unwrap(), "offline"]);
    let took = start.elapsed();
    assert_eq!(rc, 1);
    assert_eq!(
        out,
        format!("write {} \"offline\" -> EINTR(4)\n", target.display())
    );
    assert!(took >= Duration::from_secs(1), "fired early after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn write_that_does_not_block_prints_measured_time_not_the_alarm() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("state");
    fs::write(&target, "").unwrap();
    let start = Instant::now();
    let (rc, out) = run(&[
        "write",
        "-t",
        "-a",
        "60",
        target.to_str().unwrap(),
        "online",
    ]);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(rc, 0);
    let prefix = format!("write {} \"online\" -> OK (ret=6) [", target.display());
    let ms: u64 = out
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(" ms]\n"))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert!(ms < 60_000);
    assert_eq!(fs::read(&target).unwrap(), b"online");
}

#[test]
fn open_that_blocks_is_interrupted_too() {
    // a FIFO without a reader blocks in open(2): the guest's alarm covers
    // the open as well, so the safety net interrupts it
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    let c = std::ffi::CString::new(target.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (rc, out) = run(&["write", "-t", "-a", "1", target.to_str().unwrap(), "x"]);
    assert_eq!(rc, 1);
    assert_eq!(
        out,
        format!("write {} \"x\" -> open:EINTR(4)\n", target.display())
    );
}
