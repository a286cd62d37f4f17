//! `memhp ohelper`: the scenario crate's guest helper commands, plus what
//! only a memhp machine can do: answer the real errno of a write that FUSE
//! could only report as EIO (errnos ≥ 512 do not cross FUSE), and learn
//! what the guest's tmpfs holds before each command (its files cost the
//! machine slab and shmem pages, as in the guest).

use std::path::Path;
use std::sync::Mutex;

/// `TMPFS_MAGIC`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn control() -> Option<memhp_control::ControlClient> {
    let sock = std::env::var_os("MEMHP_SOCK")?;
    memhp_control::ControlClient::connect(Path::new(&sock)).ok()
}

fn wide_errno(path: &str) -> Option<i32> {
    let mut c = control()?;
    let r = c
        .execute("wide-errno", serde_json::json!({"path": path}))
        .ok()?;
    r["return"].as_i64().map(|v| v as i32)
}

fn empty_write(path: &str) -> Option<Result<usize, i32>> {
    let mut c = control()?;
    let r = c
        .execute("empty-write", serde_json::json!({"path": path}))
        .ok()?;
    match (
        r["return"]["written"].as_u64(),
        r["return"]["errno"].as_i64(),
    ) {
        (Some(n), _) => Some(Ok(n as usize)),
        (_, Some(e)) => Some(Err(e as i32)),
        _ => None,
    }
}

/// Inodes and bytes in use on the tmpfs at `/tmp`, if it is one.
fn tmpfs_usage() -> Option<(u64, u64)> {
    let path = c"/tmp";
    // SAFETY: an all-zero statfs is a valid value for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid, writable statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    if st.f_type as i64 != TMPFS_MAGIC {
        return None;
    }
    let inodes = (st.f_files as u64).saturating_sub(st.f_ffree as u64);
    let bytes = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * st.f_bsize as u64;
    Some((inodes, bytes))
}

/// Tell the machine what the guest tmpfs holds, when it changed since the
/// last report of this process.
fn sync_tmpfs() {
    static LAST: Mutex<Option<(u64, u64)>> = Mutex::new(None);
    let Some(now) = tmpfs_usage() else {
        return;
    };
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if *last == Some(now) {
        return;
    }
    let Some(mut c) = control() else {
        return;
    };
    let args = serde_json::json!({"inodes": now.0, "bytes": now.1});
    if c.execute("tmpfs-usage", args).is_ok() {
        *last = Some(now);
    }
}

/// A virtual alarm of `secs` is about to interrupt a blocked write: move
/// the machine's virtual clock by as much first.
fn advance_clock(secs: u64) {
    if let Some(mut c) = control() {
        let _ = c.execute("clock-advance", serde_json::json!({"ms": secs * 1000}));
    }
}

/// Name the process `ohelper`, as the guest's helper is called (kernel
/// messages print the writer's `comm`).
fn name_process() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes from the pointer, which is valid for the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"ohelper".as_ptr(), 0, 0, 0) };
}

/// Entry point: `args` after `ohelper`.
pub fn main(args: &[String]) -> i32 {
    name_process();
    memhp_scenario::ohelper::set_alarm_hook(advance_clock);
    memhp_scenario::ohelper::set_wide_errno_resolver(wide_errno);
    memhp_scenario::ohelper::set_empty_write_resolver(empty_write);
    // The resident helper reports before each command (it remembers what
    // it reported, so an unchanged tmpfs costs a statfs); a one-shot
    // helper (a pipeline's `hotblocks`, a background job's write) only
    // before a write, the one command whose outcome memory use decides.
    if matches!(args.first().map(String::as_str), Some("serve" | "write")) {
        memhp_scenario::ohelper::set_before_command(sync_tmpfs);
    }
    memhp_scenario::ohelper_main(args)
}
