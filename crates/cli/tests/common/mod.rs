//! A real `memhp mount` daemon for the CLI's integration tests: mounted in a
//! private temporary directory with its control socket, unmounted and
//! removed on drop (also when the test panics).

#![allow(dead_code)] // each test crate uses its own subset

use std::path::PathBuf;
use std::process::Command;

pub const MEMHP: &str = env!("CARGO_BIN_EXE_memhp");

pub struct Machine {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub sock: PathBuf,
}

impl Machine {
    /// `memhp mount ROOT --socket SOCK ARGS...` under a directory named for
    /// the test (`tag`) and this process.
    pub fn mount(tag: &str, args: &[&str]) -> Machine {
        Self::mount_with(tag, args, Command::new(MEMHP))
    }

    /// [`Machine::mount`] of a daemon that may hold at most `files` open
    /// files (soft and hard `RLIMIT_NOFILE`).
    pub fn mount_with_file_limit(tag: &str, args: &[&str], files: u64) -> Machine {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(MEMHP);
        // SAFETY: setrlimit is async-signal-safe and the closure touches
        // nothing else of the parent.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: files,
                    rlim_max: files,
                };
                match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        Self::mount_with(tag, args, cmd)
    }

    fn mount_with(tag: &str, args: &[&str], mut memhp: Command) -> Machine {
        let dir = std::env::temp_dir().join(format!("memhp-{tag}-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let sock = dir.join("ctl.sock");
        let st = memhp
            .arg("mount")
            .arg(&root)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "memhp mount {args:?}");
        Machine { dir, root, sock }
    }

    fn ctl_output(&self, words: &[&str]) -> std::process::Output {
        Command::new(MEMHP)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.sock)
            .args(words)
            .output()
            .unwrap()
    }

    /// `memhp ctl` with the oracle's host-step words; must succeed.
    pub fn ctl(&self, words: &[&str]) -> String {
        let out = self.ctl_output(words);
        assert!(
            out.status.success(),
            "ctl {words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `memhp ctl` that must fail: its exit code and stderr.
    pub fn ctl_fails(&self, words: &[&str]) -> (Option<i32>, String) {
        let out = self.ctl_output(words);
        assert!(!out.status.success(), "ctl {words:?} succeeded");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Write `value` to `rel` under the root: Ok or the errno.
    pub fn write(&self, rel: &str, value: &str) -> Result<(), i32> {
        std::fs::write(self.root.join(rel), value).map_err(|e| e.raw_os_error().unwrap_or(-1))
    }

    /// Run a shell script in a private mount namespace with the tree at /sys.
    pub fn in_namespace(&self, script: &str) -> String {
        let full = format!(
            "mount --bind {}/sys /sys || exit 99\n{script}",
            self.root.display()
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &full])
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(99),
            "bind mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = Command::new(MEMHP).arg("umount").arg(&self.root).status();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `memhp scenario run` of a scenario with the text `scn` (named `name`);
/// its transcript. Fails the test when the run fails.
pub fn run_scenario(name: &str, scn: &str) -> String {
    let dir = std::env::temp_dir().join(format!("memhp-scn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.scn"));
    std::fs::write(&path, scn).unwrap();
    let out = Command::new(MEMHP)
        .args(["scenario", "run"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
