//! util-linux's lsmem against memhp: each dump of util-linux's tests is
//! mounted with `memhp mount --dump` (a real FUSE mount of a live machine
//! seeded from the dump) and lsmem's output, for the option sets lsmem's
//! own tests use, must be byte-identical to lsmem on the extracted plain
//! files.

use std::path::{Path, PathBuf};
use std::process::Command;

const MEMHP: &str = env!("CARGO_BIN_EXE_memhp");

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/external/util-linux")
}

const OPTION_SETS: [&[&str]; 9] = [
    &["--split=STATE,REMOVABLE"],
    &["--output", "RANGE,SIZE", "--split", "none"],
    &["--output", "RANGE,SIZE,STATE", "--split", "STATE"],
    &[
        "--all",
        "--output",
        "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES",
    ],
    &[
        "--raw",
        "--output",
        "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES",
        "--split",
        "STATE,REMOVABLE",
    ],
    &[
        "--json",
        "--output",
        "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES",
        "--split",
        "STATE,ZONES",
    ],
    &["-o", "+ZONES"],
    &["--output-all"],
    &[],
];

fn lsmem(sysroot: &Path, opts: &[&str]) -> (String, i32) {
    let out = Command::new("lsmem")
        .arg("--sysroot")
        .arg(sysroot)
        .args(opts)
        .output()
        .expect("lsmem is installed (util-linux)");
    (
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1),
    )
}

/// The directory holding `sys/` inside an extracted dump.
fn plain_root(dir: &Path) -> PathBuf {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().join("sys").is_dir() {
            return e.path();
        }
    }
    dir.to_path_buf()
}

fn check_dump(name: &str) {
    let archive = shared().join(format!("lsmem/{name}.tar.bz2"));
    assert!(archive.exists(), "missing test data {}", archive.display());
    let work = std::env::temp_dir().join(format!("memhp-lsmem-{}-{name}", std::process::id()));
    let plain = work.join("plain");
    let mnt = work.join("mnt");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(Command::new("tar")
        .arg("xjf")
        .arg(&archive)
        .arg("-C")
        .arg(&plain)
        .status()
        .unwrap()
        .success());
    let sock = work.join("ctl.sock");
    let st = Command::new(MEMHP)
        .args(["mount", "--dump"])
        .arg(&archive)
        .arg(&mnt)
        .arg("--socket")
        .arg(&sock)
        .status()
        .unwrap();
    assert!(st.success(), "memhp mount --dump {name}");
    let root = plain_root(&plain);
    let mut failures = Vec::new();
    for opts in OPTION_SETS {
        let expected = lsmem(&root, opts);
        let actual = lsmem(&mnt, opts);
        if expected != actual {
            failures.push(format!(
                "lsmem {opts:?}\n--- plain files:\n{}\n--- memhp:\n{}",
                expected.0, actual.0
            ));
        }
    }
    let _ = Command::new(MEMHP).arg("umount").arg(&mnt).status();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{name}: {}", failures.join("\n"));
}

#[test]
fn lsmem_on_x86_64_16g_dump_matches_plain_files() {
    check_dump("x86_64-16g");
}

#[test]
fn lsmem_on_s390_zvm_6g_dump_matches_plain_files() {
    check_dump("s390-zvm-6g");
}

#[test]
fn lsmem_on_aarch64_16k_16g_dump_matches_plain_files() {
    check_dump("aarch64_16K_16g");
}
