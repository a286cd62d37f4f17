//! `memhp ohelper`: the guest helper commands scenario steps use, with the
//! oracle's output formats: `write [-t] [-a S] FILE VALUE`, `read FILE...`,
//! `dump PATH...`, `blocks`, `ms`.
//!
//! `-a S` is virtual time: memhp's model is instantaneous, so a write still
//! in progress is one stuck in the offline retry loop (its block reads
//! `going-offline`); the alarm then fires at once, interrupting the write
//! with a caught SIGALRM as the guest's alarm would after S seconds, and the
//! duration printed is S seconds.

use crate::show::escape;
use memhp_sysfs::tree::natural_cmp;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// glibc's `strerrorname_np` for the errnos sysfs writes can return.
pub fn errno_name(e: i32) -> String {
    const NAMES: [&str; 41] = [
        "",
        "EPERM",
        "ENOENT",
        "ESRCH",
        "EINTR",
        "EIO",
        "ENXIO",
        "E2BIG",
        "ENOEXEC",
        "EBADF",
        "ECHILD",
        "EAGAIN",
        "ENOMEM",
        "EACCES",
        "EFAULT",
        "ENOTBLK",
        "EBUSY",
        "EEXIST",
        "EXDEV",
        "ENODEV",
        "ENOTDIR",
        "EISDIR",
        "EINVAL",
        "ENFILE",
        "EMFILE",
        "ENOTTY",
        "ETXTBSY",
        "EFBIG",
        "ENOSPC",
        "ESPIPE",
        "EROFS",
        "EMLINK",
        "EPIPE",
        "EDOM",
        "ERANGE",
        "EDEADLK",
        "ENAMETOOLONG",
        "ENOLCK",
        "ENOSYS",
        "ENOTEMPTY",
        "ELOOP",
    ];
    let name = match e {
        1..=40 => NAMES[e as usize],
        95 => "EOPNOTSUPP",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        133 => "EHWPOISON",
        _ => return format!("E?({e})"),
    };
    format!("{name}({e})")
}

/// Decode the C escapes the oracle's helper accepts: `\n \t \r \0 \\ \xHH`.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        match b[i] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex: String = b[i + 1..]
                    .iter()
                    .take(2)
                    .take_while(|c| c.is_ascii_hexdigit())
                    .map(|&c| c as char)
                    .collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or(0));
                i += hex.len();
            }
            c => {
                out.push(b'\\');
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

extern "C" fn on_alarm(_: libc::c_int) {}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One `write(2)`; `alarm` = virtual-alarm seconds.
fn do_write(path: &str, value: &[u8], timed: bool, alarm: Option<u64>) -> i32 {
    let mut out = format!("write {path} {} -> ", escape(value));
    let Ok(cpath) = CString::new(Path::new(path).as_os_str().as_bytes()) else {
        println!("{out}open:{}", errno_name(libc::EINVAL));
        return 1;
    };
    // SAFETY: cpath is a valid NUL-terminated string; open has no other
    // preconditions.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_WRONLY) };
    if fd < 0 {
        println!("{out}open:{}", errno_name(last_errno()));
        return 1;
    }
    if alarm.is_some() {
        // SAFETY: installing a handler that does nothing, without
        // SA_RESTART, so that a blocked write(2) returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_alarm as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        }
    }
    let state_file = Path::new(path).with_file_name("state");
    let start = Instant::now();
    let data = value.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let _ = tx.send(me);
        // SAFETY: fd is open for writing and data outlives the call.
        let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        (r, last_errno())
    });
    let thread = rx.recv().ok();
    let mut fired = false;
    if let (Some(secs), Some(thread)) = (alarm, thread) {
        let safety_net = Duration::from_secs(secs);
        while !writer.is_finished() {
            let blocked = std::fs::read(&state_file)
                .map(|s| s == b"going-offline\n")
                .unwrap_or(false);
            if blocked || start.elapsed() >= safety_net {
                // SAFETY: the writer thread is alive (not finished) and has
                // a SIGALRM handler installed; the signal interrupts its
                // write(2).
                unsafe { libc::pthread_kill(thread, libc::SIGALRM) };
                fired = true;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (r, err) = writer.join().unwrap_or((-1, libc::EIO));
    let ms = if fired {
        alarm.unwrap_or(0) * 1000
    } else {
        start.elapsed().as_millis() as u64
    };
    // SAFETY: fd was opened above and is closed once.
    let ce = if unsafe { libc::close(fd) } != 0 {
        last_errno()
    } else {
        0
    };
    let err = if r < 0 && err == libc::EIO {
        wide_errno(path).unwrap_or(err)
    } else {
        err
    };
    if r < 0 {
        out.push_str(&errno_name(err));
    } else {
        out.push_str(&format!("OK (ret={r})"));
    }
    if ce != 0 {
        out.push_str(&format!(" close:{}", errno_name(ce)));
    }
    if timed {
        out.push_str(&format!(" [{ms} ms]"));
    }
    println!("{out}");
    i32::from(r < 0)
}

/// FUSE carries only errnos below 512; a larger one (a notifier may return
/// down to -4095) arrives as EIO. Ask the machine what it really was.
fn wide_errno(path: &str) -> Option<i32> {
    let sock = std::env::var_os("MEMHP_SOCK")?;
    let mut c = memhp_control::ControlClient::connect(Path::new(&sock)).ok()?;
    let r = c
        .execute("wide-errno", serde_json::json!({"path": path}))
        .ok()?;
    r["return"].as_i64().map(|v| v as i32)
}

/// Content of a file, or `<stage:ERRNO(n)>`.
fn slurp(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| format!("<open:{}>", errno_name(e.raw_os_error().unwrap_or(0))))?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut buf)
        .map_err(|e| format!("<read:{}>", errno_name(e.raw_os_error().unwrap_or(0))))?;
    Ok(buf)
}

fn show_content(path: &Path) -> String {
    match slurp(path) {
        Ok(b) => escape(&b),
        Err(e) => e,
    }
}

fn dump(path: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let shown = path.to_string_lossy();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return writeln!(
                out,
                "? {shown} <lstat:{}>",
                errno_name(e.raw_os_error().unwrap_or(0))
            )
        }
    };
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777
    };
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(path)
            .map(|t| t.to_string_lossy().to_string())
            .unwrap_or_default();
        return writeln!(out, "l {shown} -> {t}");
    }
    if meta.is_file() {
        return writeln!(out, "f {mode:04o} {shown} = {}", show_content(path));
    }
    if !meta.is_dir() {
        return writeln!(out, "? {mode:04o} {shown}");
    }
    writeln!(out, "d {mode:04o} {}/", shown.trim_end_matches('/'))?;
    let mut names: Vec<String> = match std::fs::read_dir(path) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect(),
        Err(e) => {
            return writeln!(
                out,
                "? {shown} <scandir:{}>",
                errno_name(e.raw_os_error().unwrap_or(0))
            )
        }
    };
    names.sort_by(|a, b| natural_cmp(a, b));
    for n in names {
        dump(&path.join(n), out)?;
    }
    Ok(())
}

/// One `blocks` line field: one trailing newline stripped, quoted when it
/// holds spaces, quotes or nothing.
fn field(path: &Path) -> String {
    match slurp(path) {
        Err(e) => e,
        Ok(mut b) => {
            if b.last() == Some(&b'\n') {
                b.pop();
            }
            let needs = b.is_empty() || b.iter().any(|c| matches!(c, b' ' | b'\n' | b'\t' | b'"'));
            if needs {
                escape(&b)
            } else {
                String::from_utf8_lossy(&b).to_string()
            }
        }
    }
}

fn blocks(base: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(base)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| {
            n.strip_prefix("memory")
                .is_some_and(|d| d.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    for n in names {
        let dir = base.join(&n);
        let mut line = n.clone();
        for f in ["state", "online", "valid_zones", "removable", "phys_device"] {
            line.push_str(&format!(" {f}={}", field(&dir.join(f))));
        }
        let mut nodes: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|x| x.starts_with("node"))
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort_by(|a, b| natural_cmp(a, b));
        let ids: Vec<&str> = nodes.iter().map(|x| &x[4..]).collect();
        line.push_str(&format!(
            " node={}",
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(",")
            }
        ));
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Entry point: `args` after `ohelper`.
pub fn main(args: &[String]) -> i32 {
    let usage = || {
        eprintln!("usage: memhp ohelper write|read|dump|blocks|ms ...");
        2
    };
    let Some(cmd) = args.first() else {
        return usage();
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd.as_str() {
        "write" => {
            let mut rest = &args[1..];
            let (mut timed, mut alarm) = (false, None);
            loop {
                match rest.first().map(String::as_str) {
                    Some("-t") => {
                        timed = true;
                        rest = &rest[1..];
                    }
                    Some("-a") if rest.len() > 1 => {
                        alarm = rest[1].parse().ok();
                        rest = &rest[2..];
                    }
                    _ => break,
                }
            }
            if rest.len() != 2 {
                eprintln!("usage: write [-t] [-a SECS] FILE VALUE");
                return 2;
            }
            drop(out);
            do_write(&rest[0], &unescape(&rest[1]), timed, alarm)
        }
        "read" => {
            for p in &args[1..] {
                let _ = writeln!(out, "read {p} = {}", show_content(Path::new(p)));
            }
            0
        }
        "dump" => {
            for p in &args[1..] {
                let _ = dump(Path::new(p), &mut out);
            }
            0
        }
        "blocks" => {
            let base = std::env::var("MEMHP_BLOCKS_BASE")
                .unwrap_or_else(|_| "/sys/devices/system/memory".into());
            i32::from(blocks(Path::new(&base), &mut out).is_err())
        }
        "ms" => {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: ts is a valid out-pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            let _ = writeln!(
                out,
                "{}",
                ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
            );
            0
        }
        _ => usage(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_decodes_the_helper_escapes() {
        assert_eq!(unescape("online\\n"), b"online\n");
        assert_eq!(unescape("a\\tb\\x41\\0"), b"a\tbA\0");
        assert_eq!(unescape("back\\\\slash"), b"back\\slash");
        assert_eq!(unescape("odd\\q"), b"odd\\q");
        assert_eq!(unescape("trailing\\"), b"trailing\\");
    }

    #[test]
    fn errno_names_follow_glibc() {
        assert_eq!(errno_name(22), "EINVAL(22)");
        assert_eq!(errno_name(16), "EBUSY(16)");
        assert_eq!(errno_name(4095), "E?(4095)");
        assert_eq!(errno_name(133), "EHWPOISON(133)");
    }
}
