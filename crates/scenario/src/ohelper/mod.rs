//! The guest helper (`ohelper`) in Rust, output byte for byte as the
//! oracle guest's C helper prints it.
//!
//! ```text
//! write [-t] [-a S] FILE VALUE   one write(2) of VALUE (C escapes decoded):
//!                                write FILE "VALUE" -> OK (ret=N) [T ms]
//!                                write FILE "VALUE" -> EINVAL(22)
//!                                write FILE "VALUE" -> open:EACCES(13)
//! read FILE...                   read FILE = "escaped content" | <open:ENOENT(2)>
//! dump PATH...                   d MODE path/ | l path -> target |
//!                                f MODE path = "..." | <open:EACCES(13)> | <read:EIO(5)>
//! blocks [DIR]                   memoryN state=.. online=.. valid_zones=.. removable=..
//!                                phys_device=.. node=..  (DIR defaults to
//!                                /sys/devices/system/memory; the C helper takes no DIR)
//! ms                             CLOCK_MONOTONIC in ms
//! zones|iomem|meminfo-totals|nodes|allblocks|bootblocks|hotblocks ...
//!                                the shell library's pipelines (`library.rs`)
//! serve REQ RESP [OUT]           all of the above as a resident process
//!                                (see `serve.rs`)
//! ```
//!
//! **`-a S` is virtual time.** memhp's model is instantaneous, so a write
//! still in progress is one that would retry for ever (an offline stuck in
//! the migration loop, whose block's `state` reads `going-offline`). The
//! write runs on its own thread; the calling thread polls every ~1 ms and,
//! once the write is blocked (FILE's sibling `state` file reads
//! `going-offline\n`) or S real seconds have passed (safety net), sends that
//! thread a caught SIGALRM (installed without `SA_RESTART`), so its write(2)
//! returns `EINTR` exactly as in the guest. With `-t`, the duration printed
//! is then the virtual S×1000 ms; otherwise the measured one. (If the write
//! has not returned 50 ms after a signal, it is signalled again: the first
//! one may have landed just before the thread entered write(2). Once
//! write(2) has returned the thread blocks SIGALRM, so close(2) is never
//! interrupted.) The safety net also covers an open(2) that blocks, like
//! the guest's alarm does (`open:EINTR(4)`).

mod errno;
mod library;
mod serve;
mod text;
mod write;

pub use errno::{errno_label, errno_name};
pub use serve::{decode_request, encode_response, TranscriptMerger, MARKER};
pub use text::{atoi, escaped, push_escaped, strverscmp, unescape};
pub use write::{set_alarm_hook, set_empty_write_resolver, set_wide_errno_resolver};

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The directory `blocks` reads by default.
pub const MEMORY_DIR: &str = "/sys/devices/system/memory";

/// The C helper's read buffer: a file is read up to this many bytes.
const RBUF: usize = 1 << 20;
/// The size of a sysfs attribute's buffer (`PAGE_SIZE`).
const PAGE: usize = 4096;

/// Runs the helper with `args` (the words after the program name) on the
/// process's stdout/stderr and returns the exit status: 0, 1 (a write or
/// `blocks` failed), 2 (usage).
pub fn ohelper_main(args: &[String]) -> i32 {
    match args {
        [cmd, req, resp] if cmd == "serve" => {
            return serve::serve(Path::new(req), Path::new(resp), None)
        }
        [cmd, req, resp, out] if cmd == "serve" => {
            return serve::serve(Path::new(req), Path::new(resp), Some(Path::new(out)))
        }
        _ => {}
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = std::io::stderr();
    let rc = ohelper_run(args, &mut out, &mut err);
    let _ = out.flush();
    rc
}

/// [`ohelper_main`] with explicit output streams.
pub fn ohelper_run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let Some(cmd) = args.first() else {
        return usage(err);
    };
    let rest = &args[1..];
    if let Some(status) = library::run(cmd, rest, out, err) {
        return status;
    }
    match cmd.as_str() {
        "write" => write::do_write(rest, out, err),
        "read" => {
            for path in rest {
                let mut line = b"read ".to_vec();
                file_line(&mut line, path.as_bytes(), None);
                emit(out, &line);
            }
            0
        }
        "dump" => {
            for path in rest {
                dump(path.as_bytes(), out);
            }
            0
        }
        "blocks" => {
            let base = rest.first().map_or(MEMORY_DIR, String::as_str);
            blocks(Path::new(base), out)
        }
        "ms" => {
            emit(out, format!("{:.0}\n", write::now_ms()).as_bytes());
            0
        }
        _ => usage(err),
    }
}

fn usage(err: &mut dyn Write) -> i32 {
    let _ = err.write_all(b"usage: ohelper write|read|dump|blocks|ms ...\n");
    2
}

/// Output errors (a closed pipe) are ignored, as the C helper's printf does.
fn emit(out: &mut dyn Write, bytes: &[u8]) {
    let _ = out.write_all(bytes);
}

fn os_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn path_of(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// A whole file's content, or the stage and errno of its failure.
type Slurped = Result<Vec<u8>, (&'static str, i32)>;

/// Reads a whole file (up to `cap` bytes), through a kept descriptor when
/// there is one.
fn slurp(path: &[u8], cap: usize) -> Slurped {
    if let Some(read) = reopened::read(path, cap) {
        return read;
    }
    let f = File::open(path_of(path)).map_err(|e| ("open", os_errno(&e)))?;
    let read = read_from_start(&f, cap, first_read(path));
    if reopened::worth_keeping(&read) {
        reopened::keep(path, f);
    }
    read
}

/// Descriptors of sysfs attributes the helper has opened and read, kept
/// open: a read at offset 0 of an open attribute renders it anew (kernfs
/// and seq_file; memhp's FUSE view does the same), so reading one again
/// needs neither an open nor a close, which over FUSE are two round trips.
/// The first access of every path is a real open (so `open:EACCES` and
/// `open:ENOENT` are seen), and any failure of a kept descriptor falls back
/// to a real open. Only `/sys/` paths and the system-wide procfs files
/// ([`GLOBAL_PROC`]): a name there always names the same kind of object,
/// whereas a regular file may be replaced by another and a per-process
/// procfs file would describe the helper instead of its caller.
mod reopened {
    use std::collections::HashMap;
    use std::fs::File;

    /// Procfs files that describe the whole system and render anew on a
    /// read at offset 0 (seq_file).
    const GLOBAL_PROC: [&[u8]; 7] = [
        b"/proc/zoneinfo",
        b"/proc/iomem",
        b"/proc/meminfo",
        b"/proc/vmstat",
        b"/proc/pagetypeinfo",
        b"/proc/buddyinfo",
        b"/proc/cpuinfo",
    ];

    /// Bound on kept descriptors: a `dump` of a 4 GiB guest reads about 700
    /// files, so a bound below that would reopen every one of them on
    /// every dump. The helper first raises its soft descriptor limit to the
    /// hard one (a guest's 1024 and 4096), then keeps half of it.
    fn max_kept() -> usize {
        static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *MAX.get_or_init(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `limit` is a valid, writable rlimit for the call.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
                return kept_bound(1024);
            }
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            // SAFETY: `limit` is a valid rlimit; raising the soft limit up
            // to the hard one needs no privilege.
            match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } {
                0 => kept_bound(limit.rlim_max),
                _ => kept_bound(soft),
            }
        })
    }

    /// [`max_kept`] for a descriptor limit of `soft`.
    pub(super) fn kept_bound(soft: libc::rlim_t) -> usize {
        (usize::try_from(soft / 2).unwrap_or(usize::MAX)).clamp(64, 8192)
    }

    /// Whether a descriptor of `path` may be kept and read again.
    fn keepable(path: &[u8]) -> bool {
        path.starts_with(b"/sys/") || GLOBAL_PROC.contains(&path)
    }

    thread_local! {
        pub(super) static KEPT: std::cell::RefCell<HashMap<Vec<u8>, File>> = std::cell::RefCell::new(HashMap::new());
    }

    /// The content of `path` read again through its kept descriptor.
    pub(super) fn read(path: &[u8], cap: usize) -> Option<super::Slurped> {
        let f = KEPT.with(|k| k.borrow_mut().remove(path))?;
        if !still_there(&f) {
            return None;
        }
        let read = super::read_from_start(&f, cap, super::first_read(path));
        if !worth_keeping(&read) {
            return None;
        }
        keep(path, f);
        Some(read)
    }

    /// Whether a descriptor whose read ended so is worth reading again: a
    /// read that failed in the attribute's `show` (`EIO` from
    /// `autosuspend_delay_ms`) fails the same way through the same
    /// descriptor, so only `ENODEV` (the attribute was removed under it)
    /// asks for a new open.
    pub(super) fn worth_keeping(read: &super::Slurped) -> bool {
        !matches!(read, Err((_, libc::ENODEV)))
    }

    /// Whether the file `f` was opened on is still there. A read through
    /// the descriptor of a removed sysfs attribute fails (`ENODEV`), but
    /// memhp's FUSE tree may answer it from a backing file the kernel
    /// reads without asking (passthrough): there, the removal shows as a
    /// failing `fstat`. Only the file type is asked for, so that the check
    /// costs a request only after the file's attributes were dropped (a
    /// read drops only its access time).
    fn still_there(f: &File) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: an all-zero `statx` is a valid value of the plain C struct.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `f` is an open descriptor, the path is an empty
        // NUL-terminated string and `stx` is writable for the call.
        let r = unsafe {
            libc::statx(
                f.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_TYPE,
                &mut stx,
            )
        };
        r == 0
    }

    /// Keep `f`, just read from `path`, for the next read.
    pub(super) fn keep(path: &[u8], f: File) {
        if !keepable(path) {
            return;
        }
        KEPT.with(|k| {
            let mut k = k.borrow_mut();
            if k.len() >= max_kept() {
                k.clear();
            }
            k.insert(path.to_vec(), f);
        });
    }
}

/// How much to ask for first: a page for a sysfs attribute (it is at most
/// one), more for anything else (`/proc/zoneinfo`, `/proc/iomem`), so
/// that one read usually gets it all.
fn first_read(path: &[u8]) -> usize {
    match path.starts_with(b"/sys/") {
        true => PAGE,
        false => 16 * PAGE,
    }
}

/// Reads `f` from offset 0 (up to `cap` bytes, `first` of them at
/// first); the error is (stage, errno).
fn read_from_start(f: &File, cap: usize, first: usize) -> Result<Vec<u8>, (&'static str, i32)> {
    use std::os::unix::fs::FileExt;
    thread_local! {
        /// One read buffer per thread: a fresh zeroed megabyte per file
        /// read was most of the resident helper's time.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut n = 0;
        // `first` bytes first, then twice as much each time: a FUSE direct
        // read pins the caller's whole buffer, so asking for a megabyte to
        // get 8 bytes costs 32 pinned pages per read.
        let mut want = cap.min(first);
        while n < cap {
            let end = (n + want).min(cap);
            match f.read_at(&mut buf[n..end], n as u64) {
                Ok(0) => break,
                // A short read is the end: sysfs and procfs (seq_file) fill
                // the buffer until their end, and so does a FUSE direct
                // read. The C helper reads once more for the 0; the bytes
                // are the same, and over FUSE that read is a round trip
                // saved.
                Ok(r) if r < end - n => {
                    n += r;
                    break;
                }
                Ok(r) => n += r,
                Err(e) => return Err(("read", os_errno(&e))),
            }
            want *= 2;
        }
        Ok(buf[..n].to_vec())
    })
}

/// `PATH = "content"` / `PATH = <stage:ENAME(n)>` plus newline; with a
/// mode, prefixed by `f MODE `.
fn file_line(line: &mut Vec<u8>, path: &[u8], mode: Option<u32>) {
    if let Some(m) = mode {
        line.extend_from_slice(format!("f {:04o} ", m & 0o7777).as_bytes());
    }
    line.extend_from_slice(path);
    line.extend_from_slice(b" = ");
    match slurp(path, RBUF) {
        Ok(content) => push_escaped(line, &content),
        Err((stage, e)) => {
            line.extend_from_slice(format!("<{stage}:{}>", errno_label(e)).as_bytes())
        }
    }
    line.push(b'\n');
}

/// Directory entry names (without `.`/`..`) in `strverscmp` order.
fn scandir(path: &[u8]) -> Result<Vec<Vec<u8>>, i32> {
    let rd = std::fs::read_dir(path_of(path)).map_err(|e| os_errno(&e))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| os_errno(&e))?;
        names.push(ent.file_name().as_bytes().to_vec());
    }
    names.sort_by(|a, b| strverscmp(a, b));
    Ok(names)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The type and mode bits `lstat(2)` would give for `path`, or its errno.
/// Asked of `statx` alone: a read marks a FUSE inode's atime stale, and an
/// `lstat` (which wants the atime too) would then cost a round trip to the
/// file system each time; the C helper's `lstat` sees the same bits.
fn lstat_mode(path: &[u8]) -> Result<u32, i32> {
    let c = std::ffi::CString::new(path).map_err(|_| libc::EINVAL)?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `stx` points to writable
    // memory for one `struct statx`, which statx fills on success.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_TYPE | libc::STATX_MODE,
            stx.as_mut_ptr(),
        )
    };
    match r {
        // SAFETY: statx returned 0, so it initialised `stx`.
        0 => Ok(u32::from(unsafe { stx.assume_init() }.stx_mode)),
        _ => Err(os_errno(&std::io::Error::last_os_error())),
    }
}

/// Recursive dump without following symlinks.
fn dump(path: &[u8], out: &mut dyn Write) {
    let mode = match lstat_mode(path) {
        Ok(m) => m,
        Err(e) => {
            let mut l = b"? ".to_vec();
            l.extend_from_slice(path);
            l.extend_from_slice(format!(" <lstat:{}>\n", errno_label(e)).as_bytes());
            emit(out, &l);
            return;
        }
    };
    let mut line = Vec::new();
    match mode & libc::S_IFMT {
        t if t == libc::S_IFLNK => {
            line.extend_from_slice(b"l ");
            line.extend_from_slice(path);
            line.extend_from_slice(b" -> ");
            if let Ok(target) = std::fs::read_link(path_of(path)) {
                let t = target.as_os_str().as_bytes();
                line.extend_from_slice(&t[..t.len().min(4095)]);
            }
            line.push(b'\n');
            emit(out, &line);
        }
        t if t == libc::S_IFREG => {
            file_line(&mut line, path, Some(mode));
            emit(out, &line);
        }
        t if t == libc::S_IFDIR => {
            line.extend_from_slice(format!("d {:04o} ", mode & 0o7777).as_bytes());
            line.extend_from_slice(path);
            line.extend_from_slice(b"/\n");
            emit(out, &line);
            match scandir(path) {
                Ok(names) => {
                    for n in names {
                        dump(&join(path, &n), out);
                    }
                }
                Err(e) => {
                    let mut l = b"? ".to_vec();
                    l.extend_from_slice(path);
                    l.extend_from_slice(format!(" <scandir:{}>\n", errno_label(e)).as_bytes());
                    emit(out, &l);
                }
            }
        }
        _ => {
            line.extend_from_slice(format!("? {:04o} ", mode & 0o7777).as_bytes());
            line.extend_from_slice(path);
            line.push(b'\n');
            emit(out, &line);
        }
    }
}

/// ` label=value` of the blocks table: one trailing newline stripped; the
/// value escaped when empty or holding a space, newline, tab or quote.
fn field(line: &mut Vec<u8>, dir: &[u8], name: &str) {
    line.push(b' ');
    line.extend_from_slice(name.as_bytes());
    line.push(b'=');
    let mut v = match slurp(&join(dir, name.as_bytes()), RBUF - 1) {
        Ok(v) => v,
        Err((stage, e)) => {
            line.extend_from_slice(format!("<{stage}:{}>", errno_label(e)).as_bytes());
            return;
        }
    };
    if v.last() == Some(&b'\n') {
        v.pop();
    }
    // the C helper looks at the value as a C string: up to the first NUL
    let cstr = &v[..v.iter().position(|&b| b == 0).unwrap_or(v.len())];
    if v.is_empty() || cstr.iter().any(|b| b" \n\t\"".contains(b)) {
        push_escaped(line, &v);
    } else {
        line.extend_from_slice(cstr);
    }
}

/// One line per `memoryN` directory under `base`.
pub fn blocks(base: &Path, out: &mut dyn Write) -> i32 {
    let base = base.as_os_str().as_bytes();
    let names = match scandir(base) {
        Ok(n) => n,
        Err(e) => {
            emit(
                out,
                format!("blocks: scandir failed {}\n", errno_name(e).unwrap_or("E?")).as_bytes(),
            );
            return 1;
        }
    };
    let is_numbered = |n: &[u8], prefix: &[u8]| {
        n.strip_prefix(prefix)
            .is_some_and(|d| d.first().is_some_and(u8::is_ascii_digit))
    };
    // `nodeN` names of the sibling node directory (`.../system/node`), in
    // the order the block's own listing would give them.
    let node_links: Option<Vec<Vec<u8>>> = path_of(base)
        .parent()
        .map(|p| p.join("node"))
        .and_then(|p| scandir(p.as_os_str().as_bytes()).ok())
        .map(|n| n.into_iter().filter(|n| is_numbered(n, b"node")).collect());
    for name in names.iter().filter(|n| is_numbered(n, b"memory")) {
        let dir = join(base, name);
        let mut line = name.clone();
        for f in ["state", "online", "valid_zones", "removable", "phys_device"] {
            field(&mut line, &dir, f);
        }
        line.extend_from_slice(b" node=");
        let entries = match &node_links {
            // The block's `nodeN` links are among the node directories:
            // a lookup each (cached by the kernel) instead of listing the
            // block's directory.
            Some(candidates) => candidates
                .iter()
                .filter(|n| lstat_mode(&join(&dir, n)).is_ok())
                .cloned()
                .collect(),
            None => scandir(&dir).unwrap_or_default(),
        };
        let nodes: Vec<&[u8]> = entries
            .iter()
            .filter_map(|n| n.strip_prefix(b"node".as_slice()))
            .collect();
        if nodes.is_empty() {
            line.push(b'-');
        } else {
            line.extend_from_slice(&nodes.join(&b','));
        }
        line.push(b'\n');
        emit(out, &line);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(path: &[u8]) -> bool {
        reopened::KEPT.with(|k| k.borrow().contains_key(path))
    }

    #[test]
    fn sysfs_attribute_is_read_again_through_its_kept_descriptor() {
        let path = b"/sys/devices/system/cpu/online";
        if !std::path::Path::new("/sys/devices/system/cpu/online").exists() {
            return;
        }
        let first = slurp(path, RBUF).unwrap();
        assert!(kept(path), "kept after the first real open");
        assert_eq!(slurp(path, RBUF).unwrap(), first);
    }

    #[test]
    fn system_wide_procfs_files_are_kept_but_per_process_ones_are_not() {
        let meminfo = b"/proc/meminfo";
        assert!(slurp(meminfo, RBUF).unwrap().starts_with(b"MemTotal:"));
        assert!(kept(meminfo));
        // The helper's own status, not its caller's: never kept.
        let status = b"/proc/self/status";
        assert!(slurp(status, RBUF).unwrap().starts_with(b"Name:"));
        assert!(!kept(status));
    }

    #[test]
    fn attribute_whose_read_fails_keeps_its_descriptor_and_fails_again() {
        let path = b"/sys/devices/system/memory/memory0/power/autosuspend_delay_ms";
        if !std::path::Path::new(std::ffi::OsStr::from_bytes(path)).exists() {
            return;
        }
        assert_eq!(slurp(path, RBUF), Err(("read", libc::EIO)));
        assert!(
            kept(path),
            "a read error is the attribute's, not the descriptor's"
        );
        assert_eq!(slurp(path, RBUF), Err(("read", libc::EIO)));
    }

    #[test]
    fn kept_descriptors_are_bounded_by_half_the_descriptor_limit() {
        // A 4 GiB guest's dump reads about 700 files: the usual limit of
        // 1024 must not clear them between two dumps.
        assert_eq!(reopened::kept_bound(1024), 512);
        assert_eq!(reopened::kept_bound(20_000), 8192);
        assert_eq!(reopened::kept_bound(100), 64);
        assert_eq!(reopened::kept_bound(libc::RLIM_INFINITY), 8192);
    }

    #[test]
    fn regular_files_are_always_opened_anew() {
        let dir = std::env::temp_dir().join(format!("memhp-reopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"one").unwrap();
        let path = file.as_os_str().as_bytes();
        assert_eq!(slurp(path, RBUF).unwrap(), b"one");
        assert!(!kept(path));
        // Replaced by another file: a kept descriptor would read the old one.
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, b"two").unwrap();
        assert_eq!(slurp(path, RBUF).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_reports_the_open_errno() {
        assert_eq!(
            slurp(b"/sys/memhp-no-such-file", RBUF),
            Err(("open", libc::ENOENT))
        );
    }
}
