//! `memhp ohelper`: the scenario crate's guest helper commands, plus what
//! only a memhp machine can do: answer the real errno of a write that FUSE
//! could only report as EIO (errnos ≥ 512 do not cross FUSE), and move the
//! machine's virtual clock before an alarm interrupts a blocked write.

use std::path::Path;

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
    memhp_scenario::ohelper_main(args)
}
