//! Measures the FUSE transport at scale: mounts a sysfs-shaped tree with many
//! memory blocks (in memory, O(1) lookups, so that the numbers are the
//! transport's own) and times what lsmem and the hotplug selftest do.
//!
//! ```text
//! cargo run --release -p memhp-fuse --example scale -- [BLOCKS] [--generation-only] [--cached-opens]
//! ```
//! `--generation-only` leaves `Tree::layout_generation` at its default, so
//! that every write looks like a layout change.
//! Needs root and /dev/fuse; runs `lsmem --sysroot` if lsmem is installed.

use memhp_fuse::{spawn_mount, MountOptions, Opens};
use memhp_sysfs::vfs::{Cancel, EntryKind, Errno, Tree};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

const MEMORY: &str = "sys/devices/system/memory";
const NODE0: &str = "sys/devices/system/node/node0";
const POWER_FILES: [&str; 3] = ["async", "control", "runtime_status"];

struct Blocks {
    online: Vec<AtomicBool>,
    generation: AtomicU64,
    /// Whether to report a layout generation of our own (which never
    /// changes: blocks are not added or removed here).
    layout_aware: bool,
}

fn file(mode: u16) -> EntryKind {
    EntryKind::File { mode }
}

impl Blocks {
    fn block(&self, name: &str) -> Option<usize> {
        let id: usize = name.strip_prefix("memory")?.parse().ok()?;
        (id < self.online.len()).then_some(id)
    }

    fn list(&self, path: &str) -> Option<Vec<(String, EntryKind)>> {
        let mut v: Vec<(String, EntryKind)> = Vec::new();
        let mut add = |n: &str, k: EntryKind| v.push((n.to_string(), k));
        match path {
            "" => add("sys", EntryKind::Dir),
            "sys" => add("devices", EntryKind::Dir),
            "sys/devices" => add("system", EntryKind::Dir),
            "sys/devices/system" => {
                add("memory", EntryKind::Dir);
                add("node", EntryKind::Dir);
            }
            "sys/devices/system/node" => add("node0", EntryKind::Dir),
            NODE0 => {
                for i in 0..self.online.len() {
                    let target = format!("../../memory/memory{i}");
                    add(&format!("memory{i}"), EntryKind::Symlink { target });
                }
            }
            MEMORY => {
                add("block_size_bytes", file(0o444));
                add("auto_online_blocks", file(0o644));
                for i in 0..self.online.len() {
                    add(&format!("memory{i}"), EntryKind::Dir);
                }
            }
            _ => {
                let rest = path.strip_prefix(MEMORY)?.strip_prefix('/')?;
                let (block, sub) = match rest.split_once('/') {
                    Some((b, s)) => (b, Some(s)),
                    None => (rest, None),
                };
                self.block(block)?;
                match sub {
                    None => {
                        for (n, m) in memhp_sysfs::tree::BLOCK_FILES {
                            add(n, file(m));
                        }
                        add(
                            "node0",
                            EntryKind::Symlink {
                                target: "../../node/node0".into(),
                            },
                        );
                        add("power", EntryKind::Dir);
                    }
                    Some("power") => {
                        for n in POWER_FILES {
                            add(n, file(0o644));
                        }
                    }
                    Some(_) => return None,
                }
            }
        }
        Some(v)
    }

    fn kind(&self, path: &str) -> Option<EntryKind> {
        if path.is_empty() {
            return Some(EntryKind::Dir);
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        // O(1) for the big directories, as a real tree should be.
        if parent == MEMORY && name.starts_with("memory") {
            return self.block(name).map(|_| EntryKind::Dir);
        }
        if parent == NODE0 {
            let id = self.block(name)?;
            return Some(EntryKind::Symlink {
                target: format!("../../memory/memory{id}"),
            });
        }
        self.list(parent)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k)
    }
}

impl Tree for Blocks {
    fn lookup(&self, path: &str) -> Option<EntryKind> {
        self.kind(path)
    }
    fn readdir(&self, path: &str) -> Result<Vec<(String, EntryKind)>, Errno> {
        match self.list(path) {
            Some(v) => Ok(v),
            None if self.kind(path).is_some() => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }
    fn open(&self, path: &str, read: bool, write: bool) -> Result<(), Errno> {
        match self.kind(path) {
            Some(EntryKind::File { mode })
                if (write && mode & 0o222 == 0) || (read && mode & 0o444 == 0) =>
            {
                Err(Errno::EACCES)
            }
            Some(_) => Ok(()),
            None => Err(Errno::ENOENT),
        }
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, Errno> {
        if path == format!("{MEMORY}/block_size_bytes") {
            return Ok(b"8000000\n".to_vec());
        }
        let (dir, name) = path.rsplit_once('/').ok_or(Errno::ENOENT)?;
        let id = self
            .block(dir.rsplit('/').next().unwrap_or(""))
            .ok_or(Errno::ENOENT)?;
        let online = self.online[id].load(Ordering::SeqCst);
        Ok(match name {
            "state" => {
                if online {
                    b"online\n".to_vec()
                } else {
                    b"offline\n".to_vec()
                }
            }
            "online" => {
                if online {
                    b"1\n".to_vec()
                } else {
                    b"0\n".to_vec()
                }
            }
            "phys_index" => format!("{id:08x}\n").into_bytes(),
            "removable" => b"1\n".to_vec(),
            "valid_zones" => {
                if online {
                    b"Normal\n".to_vec()
                } else {
                    b"Normal Movable\n".to_vec()
                }
            }
            _ => b"0\n".to_vec(),
        })
    }
    fn write(&self, path: &str, data: &[u8], _cancel: &Cancel) -> Result<usize, Errno> {
        let (dir, _) = path.rsplit_once('/').ok_or(Errno::ENOENT)?;
        let id = self
            .block(dir.rsplit('/').next().unwrap_or(""))
            .ok_or(Errno::EINVAL)?;
        let online = match data {
            b"online\n" | b"online" => true,
            b"offline\n" | b"offline" => false,
            _ => return Err(Errno::EINVAL),
        };
        self.online[id].store(online, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(data.len())
    }
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
    fn layout_generation(&self) -> u64 {
        if self.layout_aware {
            1
        } else {
            self.generation()
        }
    }
}

fn timed<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    println!(
        "{what:<58} {:>10.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    r
}

fn lsmem(root: &Path) -> Option<usize> {
    let out = std::process::Command::new("lsmem")
        .arg("--sysroot")
        .arg(root)
        .args(["-o", "RANGE,STATE,BLOCK", "-n"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("lsmem failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(out.stdout.iter().filter(|&&c| c == b'\n').count())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let layout_aware = !args.iter().any(|a| a == "--generation-only");
    let blocks: usize = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or(65_536, |a| a.parse().expect("BLOCKS"));
    let tree = Arc::new(Blocks {
        online: (0..blocks).map(|_| AtomicBool::new(true)).collect(),
        generation: AtomicU64::new(1),
        layout_aware,
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let options = MountOptions {
        opens: if args.iter().any(|a| a == "--cached-opens") {
            Opens::Cached
        } else {
            Opens::Exact
        },
        ..MountOptions::default()
    };
    let mount = spawn_mount(tree.clone(), &root, &options).expect("mount");
    let memory = root.join(MEMORY);
    println!("{blocks} memory blocks mounted at {}", root.display());

    let n = timed("readdir sys/devices/system/memory (cold)", || {
        std::fs::read_dir(&memory).unwrap().count()
    });
    assert_eq!(n, blocks + 2);
    timed("readdir sys/devices/system/memory (warm)", || {
        std::fs::read_dir(&memory).unwrap().count()
    });
    let read_all = |what: &str| {
        timed(what, || {
            for i in 0..blocks {
                std::fs::read(memory.join(format!("memory{i}/state"))).unwrap();
                std::fs::read(memory.join(format!("memory{i}/removable"))).unwrap();
            }
        })
    };
    read_all("read state+removable of every block (cold)");
    read_all("read state+removable of every block (warm)");
    if let Some(lines) = timed("lsmem --sysroot (1st)", || lsmem(&root)) {
        println!("  lsmem printed {lines} range lines");
        timed("lsmem --sysroot (2nd)", || lsmem(&root));
    }

    // Every write bumps the generation: the reply waits for a scan of all
    // directories the kernel knows (here every memoryN).
    let writes = blocks.min(1000);
    timed(
        &format!("{writes} writes of offline/online (with cache sync)"),
        || {
            for i in 0..writes {
                let state = memory.join(format!("memory{i}/state"));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&state)
                    .unwrap();
                assert_eq!(f.write(b"offline\n").unwrap(), 8);
            }
        },
    );
    if !layout_aware {
        let scan_sync = timed("sync_caches after a change behind the mount's back", || {
            tree.generation.fetch_add(1, Ordering::SeqCst);
            mount.sync_caches()
        });
        assert!(scan_sync);
    }
    timed("lsmem --sysroot (after writes)", || lsmem(&root));
    mount.unmount().expect("unmount");
}
