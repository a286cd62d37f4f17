//! Real clients against a real `memhp mount`: util-linux chmem in a private
//! mount namespace where the memhp tree stands at /sys, and a kata-agent
//! style onliner (read_dir, then write `1` to every offline block's `online`).

mod common;

use common::Machine;
use std::path::Path;

fn state(m: &Machine, b: u64) -> (String, String) {
    let dir = format!("sys/devices/system/memory/memory{b}");
    (
        m.read(&format!("{dir}/state")).trim().to_string(),
        m.read(&format!("{dir}/valid_zones")).trim().to_string(),
    )
}

#[test]
fn chmem_enables_lowest_first_disables_highest_first_and_honours_zones() {
    let m = Machine::mount(
        "clients-chmem",
        &["--cmdline", "memhp_default_state=offline"],
    );
    m.ctl(&["hotadd", "d1", "512M"]);
    m.ctl(&["hotadd", "d2", "512M"]);
    let out =
        m.in_namespace("chmem -v --enable 512M; echo rc=$?; chmem -v --disable 256M; echo rc=$?");
    assert_eq!(
        out,
        "Memory Block 32 (0x0000000100000000-0x0000000107ffffff) enabled\n\
         Memory Block 33 (0x0000000108000000-0x000000010fffffff) enabled\n\
         Memory Block 34 (0x0000000110000000-0x0000000117ffffff) enabled\n\
         Memory Block 35 (0x0000000118000000-0x000000011fffffff) enabled\n\
         rc=0\n\
         Memory Block 35 (0x0000000118000000-0x000000011fffffff) disabled\n\
         Memory Block 34 (0x0000000110000000-0x0000000117ffffff) disabled\n\
         rc=0\n"
    );
    assert_eq!(state(&m, 33), ("online".into(), "Movable".into()));
    assert_eq!(state(&m, 35).0, "offline");
    let out = m.in_namespace("chmem -v --enable 0x120000000-0x12fffffff -z Movable; echo rc=$?; chmem -v -b --enable 38 -z Normal; echo rc=$?");
    assert!(
        out.ends_with("Memory Block 38 (0x0000000130000000-0x0000000137ffffff) enabled\nrc=0\n"),
        "{out}"
    );
    assert_eq!(state(&m, 36), ("online".into(), "Movable".into()));
    assert_eq!(state(&m, 38), ("online".into(), "Normal".into()));
    let out = m.in_namespace(
        "chmem -v -b --enable 33; echo rc=$?; chmem -v -b --disable 36-37; echo rc=$?",
    );
    assert_eq!(
        out,
        "Memory Block 33 (0x0000000108000000-0x000000010fffffff) already enabled\nrc=0\n\
         Memory Block 36 (0x0000000120000000-0x0000000127ffffff) disabled\n\
         Memory Block 37 (0x0000000128000000-0x000000012fffffff) disabled\nrc=0\n"
    );
    // The first block onlined into Normal holds kernel allocations: chmem
    // cannot disable it (EBUSY), and says so with its partial-failure code.
    let out = m.in_namespace("chmem -b --disable 38; echo rc=$?");
    assert!(
        out.contains("disable failed: Device or resource busy"),
        "{out}"
    );
    assert!(out.starts_with("rc=1\n"), "{out}");
    assert_eq!(state(&m, 38).0, "online");
}

#[test]
fn kata_style_onliner_onlines_a_4g_hot_add() {
    // maxmem leaves room for the 4 GiB DIMM (QEMU refuses more than
    // maxmem - ram in memory devices).
    let m = Machine::mount(
        "clients-kata",
        &[
            "--mem",
            "1G,slots=4,maxmem=8G",
            "--cmdline",
            "memhp_default_state=offline",
        ],
    );
    m.ctl(&["hotadd", "d1", "4G"]);
    let base = m.root.join("sys/devices/system/memory");
    let mut onlined = 0;
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("memory") {
            continue;
        }
        let online: &Path = &e.path().join("online");
        if std::fs::read_to_string(online).unwrap() == "0\n" {
            std::fs::write(online, "1").unwrap();
            onlined += 1;
        }
    }
    assert_eq!(onlined, 32);
    for b in 32..64 {
        assert_eq!(state(&m, b).0, "online", "memory{b}");
    }
    let q = m.ctl(&["query"]);
    assert!(q.contains("\"offline_in_flight\": null"), "{q}");
}

#[test]
fn blocks_unplugged_over_the_control_socket_are_gone_from_the_mount_when_ctl_returns() {
    // The kernel caches memoryN's directory entry; the control command's
    // reply must wait until that entry is invalidated, or a client acting
    // on the reply (a guest agent listing blocks) still finds the block.
    let m = Machine::mount("clients-unplug-stale", &[]);
    let dir = m.root.join("sys/devices/system/memory/memory32");
    for round in 0..10 {
        m.ctl(&["hotadd", "d1", "256M"]);
        assert!(dir.join("state").exists(), "round {round}: not added");
        m.ctl(&["unplug", "d1"]);
        let err = std::fs::metadata(&dir).expect_err("memory32 still there after unplug");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "round {round}");
        assert_eq!(
            std::fs::read_dir(dir.parent().unwrap())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() == "memory32")
                .count(),
            0
        );
    }
}

/// What a read of at most a page at offset 0 of `f` returns.
fn read_at_0(f: &std::fs::File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let n = f.read_at(&mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn readers_holding_more_files_open_than_the_daemon_may_all_read_current_content() {
    // Every file open for reading holds a backing file in the daemon;
    // beyond its descriptor limit, reads go through the daemon instead.
    const FILES: u64 = 64;
    let m = Machine::mount_with_file_limit(
        "clients-nofile",
        &[
            "--mem",
            "4G,slots=2,maxmem=8G",
            "--cmdline",
            "memhp_default_state=offline",
            "--passthrough",
        ],
        FILES,
    );
    m.ctl(&["hotadd", "d1", "512M"]);
    let memory = m.root.join("sys/devices/system/memory");
    let mut open = Vec::new();
    for entry in std::fs::read_dir(&memory).unwrap() {
        let dir = entry.unwrap().path();
        if !dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("memory")
        {
            continue;
        }
        for name in ["state", "online", "valid_zones", "removable", "phys_index"] {
            let path = dir.join(name);
            let file = std::fs::File::open(&path).unwrap();
            open.push((path, file));
        }
    }
    assert!(open.len() as u64 > 2 * FILES, "{} files", open.len());
    for (path, f) in &open {
        assert_eq!(read_at_0(f), std::fs::read(path).unwrap(), "{path:?}");
    }
    // The hot-added DIMM's first block, offline.
    let block = memory.join("memory40");
    let state = &block.join("state");
    std::fs::write(state, "online").unwrap();
    for (path, f) in open.iter().filter(|(p, _)| p.parent() == Some(&block)) {
        let now = std::fs::read(path).unwrap();
        assert_eq!(read_at_0(f), now, "{path:?}");
    }
    let kept = &open.iter().find(|(p, _)| p == state).unwrap().1;
    assert_eq!(read_at_0(kept), b"online\n");
}

#[test]
fn passthrough_reader_holding_a_block_file_open_sees_control_socket_changes_when_ctl_returns() {
    let m = Machine::mount(
        "clients-passthrough-ctl",
        &[
            "--mem",
            "1G,slots=2,maxmem=4G",
            "--cmdline",
            "memhp_default_state=offline",
            "--passthrough",
        ],
    );
    m.ctl(&["hotadd", "d1", "256M"]);
    let state = m.root.join("sys/devices/system/memory/memory32/state");
    let kept = std::fs::File::open(&state).unwrap();
    assert_eq!(read_at_0(&kept), b"offline\n");
    std::fs::write(&state, "online_movable").unwrap();
    assert_eq!(read_at_0(&kept), b"online\n");
    // The eject offlines the movable blocks and removes them.
    m.ctl(&["unplug", "d1"]);
    assert_eq!(read_at_0(&kept), b"", "a removed attribute reads nothing");
    assert_eq!(
        kept.metadata().unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    assert!(!state.exists());
}
