//! A live mount under memory pressure: an offline whose migration runs
//! out of memory blocks the writer in write(2); the kernel log names that
//! writer (its pid and comm, as the FUSE request tells them) in the
//! allocation-failure report, and a signal ends the write with EINTR,
//! leaving the block online.

mod common;

use common::Machine;
use std::process::Command;

#[test]
fn a_blocked_offline_names_its_writer_in_the_log_and_a_signal_ends_it() {
    let m = Machine::mount("enomem", &["--mem", "1G,slots=4,maxmem=4G"]);
    // 700 MiB of the guest's tmpfs: too little memory left to migrate a
    // full block.
    m.ctl(&["tmpfs-usage", "1", "734003200"]);
    let state = m.root.join("sys/devices/system/memory/memory2/state");
    let script = format!(
        "echo offline > {} & w=$!; echo pid=$w; sleep 1; kill -TERM $w; wait $w; echo rc=$?",
        state.display()
    );
    // (A background job of a script ignores SIGINT: SIGTERM it.)
    let out = Command::new("timeout")
        .args(["20", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    // Killed by the signal while blocked (128 + SIGTERM).
    assert!(stdout.contains("rc=143\n"), "{stdout}");
    assert_eq!(
        m.read("sys/devices/system/memory/memory2/state"),
        "online\n"
    );
    let klog = m.ctl(&["klog"]);
    assert!(
        klog.contains(": page allocation failure: order:0, mode:0x144cc8(GFP_USER|__GFP_RETRY_MAYFAIL|__GFP_COMP|__GFP_MOVABLE)"),
        "{klog}"
    );
    assert!(
        klog.contains(&format!("CPU: 0 PID: {pid} Comm: sh ")),
        "{klog}"
    );
    assert!(klog.contains("failed ret:-12"), "{klog}");
}
