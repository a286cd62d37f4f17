//! The Rust guest helper against temp trees and kernel files: exact bytes.

use memhp_scenario::ohelper_run;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let rc = ohelper_run(&args, &mut out, &mut err);
    (
        rc,
        String::from_utf8(out).expect("utf-8 output"),
        String::from_utf8(err).expect("utf-8 errors"),
    )
}

fn put(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn read_prints_escaped_content_or_stage_and_errno() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    put(&d.join("state"), b"online\n", 0o644);
    put(&d.join("empty"), b"", 0o644);
    put(&d.join("bin"), b"a\tb\"c\\\r\x00\x7f\xc3\xa9", 0o644);
    let (rc, out, err) = run(&[
        "read",
        p(&d.join("state")),
        p(&d.join("empty")),
        p(&d.join("bin")),
        p(&d.join("missing")),
        p(d),
        "/proc/self/mem",
    ]);
    let d = p(d);
    assert_eq!(rc, 0);
    assert_eq!(err, "");
    assert_eq!(
        out,
        format!(
            "read {d}/state = \"online\\n\"\n\
             read {d}/empty = \"\"\n\
             read {d}/bin = \"a\\tb\\\"c\\\\\\r\\x00\\x7f\\xc3\\xa9\"\n\
             read {d}/missing = <open:ENOENT(2)>\n\
             read {d} = <read:EISDIR(21)>\n\
             read /proc/self/mem = <read:EIO(5)>\n"
        )
    );
}

#[test]
fn dump_sorts_naturally_and_does_not_follow_symlinks() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("memory");
    fs::create_dir(&m).unwrap();
    for b in ["memory10", "memory2", "memory1"] {
        let dir = m.join(b);
        fs::create_dir(&dir).unwrap();
        put(&dir.join("state"), b"online\n", 0o644);
        put(&dir.join("valid_zones"), b"DMA32 Movable\n", 0o444);
        symlink("../../node/node0", dir.join("node0")).unwrap();
        fs::create_dir(dir.join("power")).unwrap();
        put(&dir.join("power").join("control"), b"auto\n", 0o644);
    }
    put(&m.join("block_size_bytes"), b"8000000\n", 0o444);
    put(&m.join("hard_offline_page"), b"", 0o4200);
    fs::set_permissions(m.join("memory2"), fs::Permissions::from_mode(0o700)).unwrap();
    let fifo = m.join("zfifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o640)).unwrap();

    let (rc, out, _) = run(&["dump", p(&m), p(&t.path().join("nope"))]);
    assert_eq!(rc, 0);
    let m = p(&m);
    let block = |b: &str, mode: &str| {
        format!(
            "d {mode} {m}/{b}/\n\
             l {m}/{b}/node0 -> ../../node/node0\n\
             d 0755 {m}/{b}/power/\n\
             f 0644 {m}/{b}/power/control = \"auto\\n\"\n\
             f 0644 {m}/{b}/state = \"online\\n\"\n\
             f 0444 {m}/{b}/valid_zones = \"DMA32 Movable\\n\"\n"
        )
    };
    let expected = format!(
        "d 0755 {m}/\n\
         f 0444 {m}/block_size_bytes = \"8000000\\n\"\n\
         f 4200 {m}/hard_offline_page = \"\"\n\
         {}{}{}\
         ? 0640 {m}/zfifo\n\
         ? {t}/nope <lstat:ENOENT(2)>\n",
        block("memory1", "0755"),
        block("memory2", "0700"),
        block("memory10", "0755"),
        t = p(t.path()),
    );
    assert_eq!(out, expected);
}

#[test]
fn blocks_prints_one_line_per_memory_directory_in_natural_order() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path();
    let mk = |name: &str, files: &[(&str, &[u8])], nodes: &[&str]| {
        let dir = m.join(name);
        fs::create_dir(&dir).unwrap();
        for (f, c) in files {
            put(&dir.join(f), c, 0o644);
        }
        for n in nodes {
            symlink(format!("../../node/{n}"), dir.join(n)).unwrap();
        }
    };
    let online: &[(&str, &[u8])] = &[
        ("state", b"online\n"),
        ("online", b"1\n"),
        ("valid_zones", b"none\n"),
        ("removable", b"1\n"),
        ("phys_device", b"0\n"),
    ];
    mk("memory10", online, &["node1"]);
    mk(
        "memory2",
        &[
            ("state", b"offline\n"),
            ("online", b"0\n"),
            ("valid_zones", b"DMA32 Movable\n"),
            ("removable", b""),
            ("phys_device", b"0\n\n"),
        ],
        &["node0", "node1"],
    );
    mk("memory0", &[("state", b"going-offline")], &[]);
    mk("memoryX", online, &["node0"]);
    put(&m.join("memory99"), b"not a dir", 0o644);
    put(&m.join("auto_online_blocks"), b"offline\n", 0o644);

    let (rc, out, _) = run(&["blocks", p(m)]);
    assert_eq!(rc, 0);
    let e = "<open:ENOENT(2)>";
    assert_eq!(
        out,
        format!(
            "memory0 state=going-offline online={e} valid_zones={e} removable={e} phys_device={e} node=-\n\
             memory2 state=offline online=0 valid_zones=\"DMA32 Movable\" removable=\"\" phys_device=\"0\\n\" node=0,1\n\
             memory10 state=online online=1 valid_zones=none removable=1 phys_device=0 node=1\n\
             memory99 state=<open:ENOTDIR(20)> online=<open:ENOTDIR(20)> valid_zones=<open:ENOTDIR(20)> removable=<open:ENOTDIR(20)> phys_device=<open:ENOTDIR(20)> node=-\n"
        )
    );
    let (rc, out, _) = run(&["blocks", p(&m.join("absent"))]);
    assert_eq!((rc, out.as_str()), (1, "blocks: scandir failed ENOENT\n"));
}

#[test]
fn write_is_one_call_of_the_decoded_value() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("state");
    put(&f, b"", 0o644);
    let (rc, out, _) = run(&["write", p(&f), "offline\\n\\x41\\t"]);
    assert_eq!(rc, 0);
    assert_eq!(
        out,
        format!("write {} \"offline\\nA\\t\" -> OK (ret=10)\n", p(&f))
    );
    assert_eq!(fs::read(&f).unwrap(), b"offline\nA\t");
    let (rc, out, _) = run(&["write", p(&f), ""]);
    assert_eq!(rc, 0);
    assert_eq!(out, format!("write {} \"\" -> OK (ret=0)\n", p(&f)));
}

#[test]
fn write_failures_print_errno_names() {
    let t = tempfile::tempdir().unwrap();
    let d = p(t.path());
    let (rc, out, _) = run(&["write", &format!("{d}/missing/state"), "x"]);
    assert_eq!(
        (rc, out),
        (
            1,
            format!("write {d}/missing/state \"x\" -> open:ENOENT(2)\n")
        )
    );
    let (rc, out, _) = run(&["write", d, "x"]);
    assert_eq!(
        (rc, out),
        (1, format!("write {d} \"x\" -> open:EISDIR(21)\n"))
    );
    let (rc, out, _) = run(&["write", "/dev/full", "online"]);
    assert_eq!(
        (rc, out.as_str()),
        (1, "write /dev/full \"online\" -> ENOSPC(28)\n")
    );
}

#[test]
fn write_to_a_sysfs_file_without_write_permission_is_open_eacces() {
    // kernfs refuses to open a file without write permission for writing,
    // even for root
    let f = "/sys/kernel/uevent_seqnum";
    if !Path::new(f).exists() {
        eprintln!("skipped: {f} does not exist here");
        return;
    }
    let (rc, out, _) = run(&["write", f, "1"]);
    assert_eq!(
        (rc, out.as_str()),
        (
            1,
            "write /sys/kernel/uevent_seqnum \"1\" -> open:EACCES(13)\n"
        )
    );
}

#[test]
fn timed_write_appends_duration_in_ms() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("online");
    put(&f, b"", 0o644);
    let (rc, out, _) = run(&["write", "-t", p(&f), "1"]);
    assert_eq!(rc, 0);
    let prefix = format!("write {} \"1\" -> OK (ret=1) [", p(&f));
    let ms = out
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(" ms]\n"))
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert!(ms.parse::<u64>().is_ok(), "duration {ms:?}");
}

#[test]
fn usage_errors_return_2() {
    let (rc, out, err) = run(&["write", "only-file"]);
    assert_eq!(
        (rc, out.as_str(), err.as_str()),
        (2, "", "usage: write [-t] [-a SECS] FILE VALUE\n")
    );
    let (rc, _, err) = run(&["write", "-t", "-a"]);
    assert_eq!(
        (rc, err.as_str()),
        (2, "usage: write [-t] [-a SECS] FILE VALUE\n")
    );
    let (rc, _, err) = run(&[]);
    assert_eq!(
        (rc, err.as_str()),
        (2, "usage: ohelper write|read|dump|blocks|ms ...\n")
    );
    let (rc, _, err) = run(&["frob"]);
    assert_eq!(
        (rc, err.as_str()),
        (2, "usage: ohelper write|read|dump|blocks|ms ...\n")
    );
}

#[test]
fn ms_prints_monotonic_milliseconds() {
    let (rc, a, _) = run(&["ms"]);
    let (_, b, _) = run(&["ms"]);
    assert_eq!(rc, 0);
    let a: u64 = a.strip_suffix('\n').unwrap().parse().unwrap();
    let b: u64 = b.strip_suffix('\n').unwrap().parse().unwrap();
    assert!(b >= a);
}
