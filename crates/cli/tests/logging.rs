//! `MEMHP_LOG`: the libraries' tracing events reach stderr.

use std::process::Command;

const MEMHP: &str = env!("CARGO_BIN_EXE_memhp");

fn show_stderr(log: Option<&str>) -> String {
    let mut cmd = Command::new(MEMHP);
    cmd.args([
        "show",
        "--path",
        "sys/devices/system/memory/block_size_bytes",
    ]);
    match log {
        Some(v) => cmd.env("MEMHP_LOG", v),
        None => cmd.env_remove("MEMHP_LOG"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn memhp_log_selects_what_reaches_stderr() {
    // Quiet by default: a boot logs nothing at warning level.
    assert_eq!(show_stderr(None), "");
    // A bad directive is reported once and the default kept.
    assert_eq!(
        show_stderr(Some("memhp=[[")),
        "memhp: MEMHP_LOG=\"memhp=[[\" ignored: error parsing level filter: \
         expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5\n"
    );
}

#[test]
fn memhp_log_shows_the_fuse_sessions_events() {
    let dir = std::env::temp_dir().join(format!("memhp-logging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scn = dir.join("log.scn");
    std::fs::write(&scn, "mem: 1G\nsteps:\nsay hi\n").unwrap();
    let out = Command::new(MEMHP)
        .args(["scenario", "run"])
        .arg(&scn)
        .env("MEMHP_LOG", "memhp_fuse=info")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.lines()
            .any(|l| l.contains(" INFO memhp_fuse::session: mounted mountpoint=")),
        "{err}"
    );
}
