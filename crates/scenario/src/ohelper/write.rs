//! `write [-t] [-a S] FILE VALUE`, with `-a` as a virtual alarm (see the
//! module documentation of [`crate::ohelper`]).

use super::{atoi, emit, errno_label, path_of, push_escaped, unescape};
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC in milliseconds.
pub(crate) fn now_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// What the write did.
struct Outcome {
    /// open(2) failed with this errno (nothing else happened).
    open_err: Option<i32>,
    /// write(2): bytes written or errno.
    result: Result<usize, i32>,
    /// close(2) failed with this errno.
    close_err: Option<i32>,
    /// Measured duration of the write(2) call.
    elapsed_ms: f64,
}

const OPENING: u8 = 0;
const IN_WRITE: u8 = 1;
const DONE: u8 = 2;

/// open(2), one write(2), close(2), as the C helper does them: no retry on
/// EINTR anywhere. `phase` tells a watcher where the call is. With
/// `mask_alarm_after_write` (only on the dedicated writer thread), SIGALRM
/// is blocked for the thread once write(2) has returned, so a late alarm
/// cannot interrupt close(2).
fn open_write_close(
    path: &[u8],
    buf: &[u8],
    phase: &AtomicU8,
    mask_alarm_after_write: bool,
) -> Outcome {
    let failed = |e| Outcome {
        open_err: Some(e),
        result: Err(e),
        close_err: None,
        elapsed_ms: 0.0,
    };
    let Ok(cpath) = CString::new(path) else {
        phase.store(DONE, Ordering::SeqCst);
        return failed(libc::EINVAL);
    };
    // SAFETY: `cpath` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = last_errno();
        phase.store(DONE, Ordering::SeqCst);
        return failed(e);
    }
    phase.store(IN_WRITE, Ordering::SeqCst);
    let t0 = now_ms();
    // SAFETY: `fd` is open, and `buf` is valid for reads of `buf.len()` bytes.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    let e = last_errno();
    let t1 = now_ms();
    if mask_alarm_after_write {
        block_sigalrm_in_this_thread();
    }
    phase.store(DONE, Ordering::SeqCst);
    // SAFETY: `fd` was opened above and is closed exactly once.
    let close_err = (unsafe { libc::close(fd) } != 0).then(last_errno);
    Outcome {
        open_err: None,
        result: if r < 0 { Err(e) } else { Ok(r as usize) },
        close_err,
        elapsed_ms: t1 - t0,
    }
}

fn block_sigalrm_in_this_thread() {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; pthread_sigmask only changes the
    // calling thread's mask (a dedicated thread that exits right after).
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// The no-op SIGALRM handler: its only effect is that a blocked system call
/// of the signalled thread returns EINTR.
extern "C" fn on_alarm(_sig: libc::c_int) {}

/// Process-wide SIGALRM handler installation, shared by concurrent users
/// (the previous action comes back when the last one is done).
struct HandlerState {
    users: usize,
    old: Option<libc::sigaction>,
}

static HANDLER: Mutex<HandlerState> = Mutex::new(HandlerState {
    users: 0,
    old: None,
});

struct AlarmHandler;

impl AlarmHandler {
    fn install() -> std::io::Result<AlarmHandler> {
        let mut st = HANDLER.lock().unwrap_or_else(|p| p.into_inner());
        if st.users == 0 {
            // SAFETY: an all-zero sigaction is a valid value (no flags, empty
            // mask, SIG_DFL); the fields that matter are set below.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // no SA_RESTART: an interrupted write(2) must return EINTR
            sa.sa_flags = 0;
            // SAFETY: `sa.sa_mask` is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: as above, zero is a valid sigaction to be overwritten.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are valid; the handler is async-signal-safe
            // (it does nothing).
            if unsafe { libc::sigaction(libc::SIGALRM, &sa, &mut old) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            st.old = Some(old);
        }
        st.users += 1;
        Ok(AlarmHandler)
    }
}

impl Drop for AlarmHandler {
    fn drop(&mut self) {
        let mut st = HANDLER.lock().unwrap_or_else(|p| p.into_inner());
        st.users -= 1;
        if st.users == 0 {
            if let Some(old) = st.old.take() {
                // SAFETY: `old` is the action sigaction(2) returned earlier.
                unsafe { libc::sigaction(libc::SIGALRM, &old, std::ptr::null_mut()) };
            }
        }
    }
}

/// How often the watcher looks at the write.
const POLL: Duration = Duration::from_millis(1);
/// If the signalled write has not returned after this long, signal again (the
/// first signal may have arrived just before the thread entered write(2)).
const RESEND: Duration = Duration::from_millis(50);

fn going_offline(state: &Path) -> bool {
    std::fs::read(state).is_ok_and(|s| s == b"going-offline\n")
}

/// Runs the write on a thread and interrupts it with SIGALRM once it is
/// blocked (sibling `state` reads `going-offline\n`) or `secs` real seconds
/// have passed. Returns the outcome and whether the alarm fired.
fn write_with_virtual_alarm(path: &[u8], buf: &[u8], secs: u64) -> (Outcome, bool) {
    let phase = Arc::new(AtomicU8::new(OPENING));
    let handler = match AlarmHandler::install() {
        Ok(h) => h,
        Err(_) => return (open_write_close(path, buf, &phase, false), false),
    };
    let state: PathBuf = path_of(path)
        .parent()
        .map_or_else(|| PathBuf::from("state"), |d| d.join("state"));
    let (tpath, tbuf, tphase) = (path.to_vec(), buf.to_vec(), Arc::clone(&phase));
    // The thread says when it is done, so that a write that does not block
    // is not waited for a whole poll interval.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("ohelper".into())
        .spawn(move || {
            let outcome = open_write_close(&tpath, &tbuf, &tphase, true);
            let _ = done_tx.send(());
            outcome
        });
    let handle = match spawned {
        Ok(h) => h,
        Err(_) => {
            drop(handler);
            return (open_write_close(path, buf, &phase, false), false);
        }
    };
    let start = Instant::now();
    let limit = Duration::from_secs(secs);
    let mut fired_at: Option<Instant> = None;
    while !handle.is_finished() {
        let p = phase.load(Ordering::SeqCst);
        if p != DONE {
            let due = match fired_at {
                None => start.elapsed() >= limit || (p == IN_WRITE && going_offline(&state)),
                Some(t) => t.elapsed() >= RESEND,
            };
            if due {
                use std::os::unix::thread::JoinHandleExt;
                if fired_at.is_none() {
                    if let Some(hook) = ALARM_HOOK.get() {
                        hook(secs);
                    }
                }
                // SAFETY: the thread has not been joined, so its pthread_t is
                // valid; SIGALRM has a handler installed (no default kill).
                unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGALRM) };
                fired_at = Some(Instant::now());
            }
        }
        if done_rx.recv_timeout(POLL).is_ok() {
            break;
        }
    }
    let outcome = handle.join().unwrap_or(Outcome {
        open_err: None,
        result: Err(libc::EIO),
        close_err: None,
        elapsed_ms: 0.0,
    });
    drop(handler);
    (outcome, fired_at.is_some())
}

/// Resolves the real errno of a write that failed with EIO: a transport
/// that cannot carry errnos of 512 and above (FUSE) reports them as EIO,
/// and the runner can ask the machine what it really was.
static WIDE_ERRNO: std::sync::OnceLock<fn(&str) -> Option<i32>> = std::sync::OnceLock::new();

/// Install the resolver used when a write fails with EIO (once per process).
pub fn set_wide_errno_resolver(f: fn(&str) -> Option<i32>) {
    let _ = WIDE_ERRNO.set(f);
}

/// Resolves what a write of no bytes does to a file: FUSE never passes one
/// on (the write returns 0 at once), but debugfs's attributes refuse it.
/// `Some(Ok(n))` or `Some(Err(errno))`; `None` when nobody can tell.
static EMPTY_WRITE: std::sync::OnceLock<EmptyWriteResolver> = std::sync::OnceLock::new();

/// See [`set_empty_write_resolver`].
pub type EmptyWriteResolver = fn(&str) -> Option<Result<usize, i32>>;

/// Install the empty-write resolver (once per process).
pub fn set_empty_write_resolver(f: EmptyWriteResolver) {
    let _ = EMPTY_WRITE.set(f);
}

/// Called with the alarm's seconds just before a virtual alarm interrupts
/// a blocked write: the machine moves its virtual clock that far, so what
/// the kernel would have logged meanwhile is logged.
static ALARM_HOOK: std::sync::OnceLock<fn(u64)> = std::sync::OnceLock::new();

/// Install the virtual-alarm hook (once per process).
pub fn set_alarm_hook(f: fn(u64)) {
    let _ = ALARM_HOOK.set(f);
}

pub(crate) fn do_write(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut args = args;
    let mut timed = false;
    let mut alarm_s: i64 = 0;
    loop {
        if args.first().is_some_and(|a| a == "-t") {
            timed = true;
            args = &args[1..];
            continue;
        }
        if args.len() > 1 && args[0] == "-a" {
            alarm_s = atoi(&args[1]);
            args = &args[2..];
            continue;
        }
        break;
    }
    if args.len() != 2 {
        let _ = err.write_all(b"usage: write [-t] [-a SECS] FILE VALUE\n");
        return 2;
    }
    let path = args[0].as_bytes();
    let buf = unescape(args[1].as_bytes());
    let mut head = b"write ".to_vec();
    head.extend_from_slice(path);
    head.push(b' ');
    push_escaped(&mut head, &buf);
    head.extend_from_slice(b" -> ");
    emit(out, &head);
    let _ = out.flush();

    let (outcome, fired) = if alarm_s > 0 {
        write_with_virtual_alarm(path, &buf, alarm_s.unsigned_abs())
    } else {
        (
            open_write_close(path, &buf, &AtomicU8::new(OPENING), false),
            false,
        )
    };
    let mut tail = String::new();
    if let Some(e) = outcome.open_err {
        tail.push_str(&format!("open:{}\n", errno_label(e)));
        emit(out, tail.as_bytes());
        let _ = out.flush();
        return 1;
    }
    let result = match outcome.result {
        Ok(0) if buf.is_empty() => EMPTY_WRITE
            .get()
            .and_then(|f| f(&String::from_utf8_lossy(path)))
            .unwrap_or(Ok(0)),
        r => r,
    };
    match result {
        Ok(n) => tail.push_str(&format!("OK (ret={n})")),
        Err(libc::EIO) => {
            let real = WIDE_ERRNO
                .get()
                .and_then(|f| f(&String::from_utf8_lossy(path)));
            tail.push_str(&errno_label(real.unwrap_or(libc::EIO)));
        }
        Err(e) => tail.push_str(&errno_label(e)),
    }
    if let Some(ce) = outcome.close_err {
        tail.push_str(&format!(" close:{}", errno_label(ce)));
    }
    if timed {
        let ms = if fired {
            alarm_s as f64 * 1000.0
        } else {
            outcome.elapsed_ms
        };
        tail.push_str(&format!(" [{ms:.0} ms]"));
    }
    tail.push('\n');
    emit(out, tail.as_bytes());
    let _ = out.flush();
    i32::from(result.is_err())
}

#[cfg(test)]
mod tests {
    #[test]
    fn duration_rounding_matches_printf_round_half_even() {
        assert_eq!(format!("{:.0}", 0.5f64), "0");
        assert_eq!(format!("{:.0}", 1.5f64), "2");
        assert_eq!(format!("{:.0}", 2.5f64), "2");
        assert_eq!(format!("{:.0}", 2.500001f64), "3");
    }
}
