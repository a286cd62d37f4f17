//! `memhp ohelper`: the scenario crate's guest helper commands, plus the
//! one thing only a memhp machine can answer: the real errno of a write
//! that FUSE could only report as EIO (errnos ≥ 512 do not cross FUSE).

use std::path::Path;

fn wide_errno(path: &str) -> Option<i32> {
    let sock = std::env::var_os("MEMHP_SOCK")?;
    let mut c = memhp_control::ControlClient::connect(Path::new(&sock)).ok()?;
    let r = c
        .execute("wide-errno", serde_json::json!({"path": path}))
        .ok()?;
    r["return"].as_i64().map(|v| v as i32)
}

/// Entry point: `args` after `ohelper`.
pub fn main(args: &[String]) -> i32 {
    memhp_scenario::ohelper::set_wide_errno_resolver(wide_errno);
    memhp_scenario::ohelper_main(args)
}
