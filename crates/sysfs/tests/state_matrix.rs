//! Spec 01 §3.5/§3.6/§11: every row of the `state` and `online` write
//! matrices, each in every block state, with the errno and the state after.

use memhp_drivers::host::{Host, HostCommand};
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;
use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const B: &str = "sys/devices/system/memory/memory32";

/// A machine with memory33 onlined first (it takes the kernel's unmovable
/// allocations) and memory32 in `state` ("online" or "offline").
fn machine(state: &str) -> SysfsTree {
    let host = Host::boot(
        &QemuPc::default()
            .machine("memhp_default_state=offline", KernelVersion::V6_1)
            .unwrap(),
    )
    .unwrap();
    host.execute(&HostCommand::Hotadd {
        id: "d".into(),
        size: 256 << 20,
        node: None,
        addr: None,
    })
    .unwrap();
    let t = SysfsTree::new(Arc::clone(&host.shared));
    t.write(
        "sys/devices/system/memory/memory33/state",
        b"online",
        &Cancel::new(),
    )
    .unwrap();
    if state == "online" {
        t.write(&format!("{B}/state"), b"online", &Cancel::new())
            .unwrap();
    }
    t
}

fn read(t: &SysfsTree, f: &str) -> String {
    String::from_utf8(t.read(&format!("{B}/{f}")).unwrap()).unwrap()
}

#[test]
fn state_file_matrix() {
    // (block state, written, result, state after)
    let rows: &[(&str, &str, Result<usize, Errno>, &str)] = &[
        ("offline", "foo", Err(Errno::EINVAL), "offline"),
        ("offline", "online", Ok(6), "online"),
        ("offline", "online\n", Ok(7), "online"),
        ("offline", "online_kernel", Ok(13), "online"),
        ("offline", "online_movable", Ok(14), "online"),
        ("offline", "offline", Err(Errno::EINVAL), "offline"),
        ("offline", "online \n", Err(Errno::EINVAL), "offline"),
        ("offline", "online\n\n", Err(Errno::EINVAL), "offline"),
        ("offline", "online\0junk", Ok(11), "online"),
        ("online", "online", Err(Errno::EINVAL), "online"),
        ("online", "online_kernel", Err(Errno::EINVAL), "online"),
        ("online", "online_movable", Err(Errno::EINVAL), "online"),
        ("online", "offline", Ok(7), "offline"),
        ("online", "offline\n", Ok(8), "offline"),
        ("online", "Offline", Err(Errno::EINVAL), "online"),
    ];
    for (before, written, result, after) in rows {
        let t = machine(before);
        let r = t.write(&format!("{B}/state"), written.as_bytes(), &Cancel::new());
        assert_eq!(&r, result, "{before}: write {written:?}");
        assert_eq!(
            read(&t, "state"),
            format!("{after}\n"),
            "{before}: write {written:?}"
        );
        assert_eq!(
            read(&t, "online"),
            if *after == "online" { "1\n" } else { "0\n" }
        );
    }
}

#[test]
fn online_file_matrix() {
    let rows: &[(&str, &str, Result<usize, Errno>, &str)] = &[
        ("offline", "1", Ok(1), "online"),
        ("offline", "yes", Ok(3), "online"),
        ("offline", "on", Ok(2), "online"),
        ("offline", "0", Ok(1), "offline"),
        ("offline", "foo", Ok(3), "offline"),
        ("offline", "2", Err(Errno::EINVAL), "offline"),
        ("offline", "\n", Err(Errno::EINVAL), "offline"),
        ("online", "1", Ok(1), "online"),
        ("online", "0", Ok(1), "offline"),
        ("online", "off", Ok(3), "offline"),
        ("online", "x", Err(Errno::EINVAL), "online"),
    ];
    for (before, written, result, after) in rows {
        let t = machine(before);
        let r = t.write(&format!("{B}/online"), written.as_bytes(), &Cancel::new());
        assert_eq!(&r, result, "{before}: write {written:?}");
        assert_eq!(
            read(&t, "state"),
            format!("{after}\n"),
            "{before}: write {written:?}"
        );
    }
}

#[test]
fn stale_online_type_is_used_by_echo_1_to_online() {
    let t = machine("online");
    // Fails with EINVAL but latches online_movable (spec 01 §6.2).
    assert_eq!(
        t.write(&format!("{B}/state"), b"online_movable", &Cancel::new()),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        t.write(&format!("{B}/state"), b"offline", &Cancel::new()),
        Ok(7)
    );
    assert_eq!(read(&t, "valid_zones"), "Normal Movable\n");
    assert_eq!(t.write(&format!("{B}/online"), b"1", &Cancel::new()), Ok(1));
    assert_eq!(read(&t, "valid_zones"), "Movable\n");
}

#[test]
fn read_only_and_write_only_files_refuse_the_wrong_open() {
    let t = machine("offline");
    for f in ["valid_zones", "phys_index", "removable", "phys_device"] {
        assert_eq!(
            t.open(&format!("{B}/{f}"), false, true),
            Err(Errno::EACCES),
            "{f}"
        );
    }
    for f in ["soft_offline_page", "hard_offline_page"] {
        assert_eq!(
            t.open(&format!("sys/devices/system/memory/{f}"), true, false),
            Err(Errno::EACCES)
        );
    }
    assert_eq!(
        t.read(&format!("{B}/power/autosuspend_delay_ms")),
        Err(Errno::EIO)
    );
    assert_eq!(t.lookup("sys/devices/system/memory/probe"), None);
    assert_eq!(t.lookup("sys/devices/system/node/has_high_memory"), None);
}

#[test]
fn retry_timeout_turns_an_endless_offline_into_eintr() {
    let t = machine("online");
    t.shared()
        .modify(|s| {
            s.alloc_pages(
                memhp_model::workload::Placement::Block(32),
                memhp_model::workload::PageKind::Pinned,
                3,
            )
        })
        .unwrap();
    t.shared()
        .set_retry_timeout(Some(std::time::Duration::from_millis(30)));
    assert_eq!(
        t.write(&format!("{B}/state"), b"offline", &Cancel::new()),
        Err(Errno::EINTR)
    );
    assert_eq!(read(&t, "state"), "online\n");
}
