//! `memhp bench --fuse`: the FUSE transport at scale, against baselines
//! measured in the same run (needs root, /dev/fuse and lsmem).
//!
//! * lsmem on a machine of 16,288 memory blocks (2 GiB of boot memory and
//!   hot-added DIMMs in 128 MiB blocks), over a memhp mount and over the
//!   same tree copied to plain files on tmpfs: first run and steady state
//!   (best of three after two warm-up runs), with `--cached-opens` and
//!   with exact opens;
//! * a full scan (readdir, then `state`, `online`, `valid_zones`,
//!   `removable` and `phys_index` of every block) at 65,536 blocks, cold
//!   and warm, and of the same files copied to tmpfs;
//! * online/offline write cycles per second through the mount.

use crate::bench::{add_blocks, big_machine};
use anyhow::{bail, Context, Result};
use memhp_fuse::{MountOptions, Opens};
use memhp_model::shared::Shared;
use memhp_sysfs::tree::SysfsTree;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMORY: &str = "sys/devices/system/memory";
/// How long a measurement waits for memhp's background listings to end.
const IDLE: Duration = Duration::from_secs(120);
const SCAN_FILES: [&str; 5] = ["state", "online", "valid_zones", "removable", "phys_index"];

/// lsmem timings on one tree.
#[derive(Debug, Clone, Copy)]
pub struct LsmemTimes {
    pub first: Duration,
    pub steady: Duration,
}

pub struct FuseReport {
    /// Whether clients and server ran pinned to one CPU.
    pub one_cpu: bool,
    pub lsmem_blocks: usize,
    pub plain: LsmemTimes,
    pub cached: LsmemTimes,
    pub exact: LsmemTimes,
    /// Exact opens, files opened read-only read from backing files.
    pub passthrough: LsmemTimes,
    pub scan_blocks: usize,
    pub scan_cold: Duration,
    pub scan_warm: Duration,
    pub scan_plain: Duration,
    /// Client threads of the parallel scans (one per CPU).
    pub scan_threads: usize,
    pub scan_warm_parallel: Duration,
    pub scan_plain_parallel: Duration,
    pub cycles: u64,
    pub cycles_per_sec_cached: f64,
    pub cycles_per_sec_exact: f64,
}

/// A directory that is removed (after unmounting what is on it) on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("memhp-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A machine of `blocks` memory blocks in total (at least its boot blocks
/// and one hot-added block).
fn machine(blocks: u64) -> Result<Arc<SysfsTree>> {
    let tib = (blocks * (128 << 20)).div_ceil(1 << 40);
    let (mut sys, base) = big_machine(tib)?;
    let boot = sys.blocks.len() as u64;
    // At least one hot-added block: the write cycles offline the last one
    // (a boot block may not be offlinable).
    add_blocks(&mut sys, base, blocks.saturating_sub(boot).max(1))?;
    Ok(Arc::new(SysfsTree::new(Arc::new(Shared::new(sys)))))
}

fn mount(tree: &Arc<SysfsTree>, at: &Path, opens: Opens) -> Result<memhp_fuse::MountHandle> {
    mount_with(
        tree,
        at,
        &MountOptions {
            opens,
            ..MountOptions::default()
        },
    )
}

fn mount_with(
    tree: &Arc<SysfsTree>,
    at: &Path,
    options: &MountOptions,
) -> Result<memhp_fuse::MountHandle> {
    let tree: Arc<dyn memhp_sysfs::vfs::Tree> = tree.clone();
    memhp_fuse::spawn_mount(tree, at, options).with_context(|| format!("mount {}", at.display()))
}

fn lsmem_once(root: &Path) -> Result<Duration> {
    let t = Instant::now();
    let status = Command::new("lsmem")
        .arg("--sysroot")
        .arg(root)
        .stdout(Stdio::null())
        .status()
        .context("running lsmem (util-linux)")?;
    let elapsed = t.elapsed();
    if !status.success() {
        bail!("lsmem --sysroot {} failed: {status}", root.display());
    }
    Ok(elapsed)
}

/// The first run, then the best of three after two more warm-up runs.
fn lsmem_times(root: &Path) -> Result<LsmemTimes> {
    let first = lsmem_once(root)?;
    for _ in 0..2 {
        lsmem_once(root)?;
    }
    let mut steady = Duration::MAX;
    for _ in 0..3 {
        steady = steady.min(lsmem_once(root)?);
    }
    Ok(LsmemTimes { first, steady })
}

/// Copy a mounted tree to plain files (contents as read, modes kept,
/// symlinks as links; unreadable files empty).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            let mode = entry.metadata()?.permissions().mode();
            std::fs::write(&dst, std::fs::read(&src).unwrap_or_default())?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// readdir of the memory directory, then every block's scan files, the
/// way a careful tool reads sysfs (lsmem's `ul_path` does the same): each
/// file opened relative to its block directory's descriptor and read once
/// into a page-sized buffer (a sysfs attribute is rendered whole by its
/// first read, so a short read is its end), no `stat`. The blocks are
/// shared out among `threads` client threads.
fn full_scan(root: &Path, threads: usize) -> Result<Duration> {
    let memory = root.join(MEMORY);
    let t = Instant::now();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&memory)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("memory") {
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!("no memory blocks under {}", memory.display());
    }
    let chunk = names.len().div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| scope.spawn(|| scan_blocks(&memory, part)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| bail!("scan thread panicked")))
    })?;
    Ok(t.elapsed())
}

fn scan_blocks(memory: &Path, names: &[String]) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut buf = [0u8; 4096];
    for name in names {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
            .open(memory.join(name))
            .with_context(|| format!("open {name}"))?;
        for file in SCAN_FILES {
            let mut f = openat(&dir, file).with_context(|| format!("open {name}/{file}"))?;
            while f
                .read(&mut buf)
                .with_context(|| format!("read {name}/{file}"))?
                == buf.len()
            {}
        }
    }
    Ok(())
}

/// `openat(dir, name, O_RDONLY | O_CLOEXEC)`.
fn openat(dir: &std::fs::File, name: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: `dir` is an open descriptor and `c` a NUL-terminated path.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Offline/online cycles of the last block through `state`, per second.
fn write_cycles(root: &Path, cycles: u64) -> Result<f64> {
    let memory = root.join(MEMORY);
    let last = std::fs::read_dir(&memory)?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("memory")?.parse::<u64>().ok()
        })
        .max()
        .context("no memory blocks")?;
    let state = memory.join(format!("memory{last}/state"));
    let write = |value: &[u8]| -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&state)?;
        f.write_all(value)
            .with_context(|| format!("write {}", state.display()))
    };
    let t = Instant::now();
    for _ in 0..cycles {
        write(b"offline")?;
        write(b"online_movable")?;
    }
    Ok(cycles as f64 / t.elapsed().as_secs_f64())
}

pub fn run(lsmem_blocks: u64, scan_blocks: u64, cycles: u64) -> Result<FuseReport> {
    // Clients and memhp's threads on one CPU, as `memhp scenario run` runs
    // them: a FUSE round trip then costs a context switch instead of a
    // cross-CPU wake-up (about 12 µs instead of 40 µs on a 2-vCPU VM).
    let pin = crate::cpu_pin::CpuPin::here();
    // lsmem: plain files, cached opens, exact opens.
    let tree = machine(lsmem_blocks)?;
    let mnt = Scratch::new("mnt")?;
    let plain = Scratch::new("plain")?;
    let handle = mount(&tree, &mnt.0, Opens::Cached)?;
    copy_tree(&mnt.0.join("sys"), &plain.0.join("sys"))?;
    let plain_times = lsmem_times(&plain.0)?;
    let cached = lsmem_times(&mnt.0)?;
    handle.wait_idle(IDLE);
    let cycles_per_sec_cached = write_cycles(&mnt.0, cycles)?;
    handle.unmount()?;
    let handle = mount(&tree, &mnt.0, Opens::Exact)?;
    let exact = lsmem_times(&mnt.0)?;
    let cycles_per_sec_exact = write_cycles(&mnt.0, cycles)?;
    handle.unmount()?;
    let handle = mount_with(
        &tree,
        &mnt.0,
        &MountOptions {
            passthrough: true,
            ..MountOptions::default()
        },
    )?;
    let passthrough = lsmem_times(&mnt.0)?;
    handle.unmount()?;
    drop(tree);

    // Full scan at scale: cached opens cold (one client thread, pinned
    // with memhp), then warm and plain files with one client thread and
    // with one per CPU (no request reaches memhp any more: unpinned).
    let tree = machine(scan_blocks)?;
    let handle = mount(&tree, &mnt.0, Opens::Cached)?;
    let scan_cold = full_scan(&mnt.0, 1)?;
    handle.wait_idle(IDLE);
    let one_cpu = pin.is_some();
    drop(pin);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    full_scan(&mnt.0, 1)?;
    let scan_warm = full_scan(&mnt.0, 1)?;
    let scan_warm_parallel = full_scan(&mnt.0, cpus)?;
    let scan_plain = Scratch::new("scan-plain")?;
    copy_tree(&mnt.0.join(MEMORY), &scan_plain.0.join(MEMORY))?;
    handle.unmount()?;
    full_scan(&scan_plain.0, 1)?;
    let scan_plain_time = full_scan(&scan_plain.0, 1)?;
    let scan_plain_parallel = full_scan(&scan_plain.0, cpus)?;

    Ok(FuseReport {
        one_cpu,
        scan_threads: cpus,
        scan_warm_parallel,
        scan_plain_parallel,
        lsmem_blocks: lsmem_blocks as usize,
        plain: plain_times,
        cached,
        exact,
        passthrough,
        scan_blocks: scan_blocks as usize,
        scan_cold,
        scan_warm,
        scan_plain: scan_plain_time,
        cycles,
        cycles_per_sec_cached,
        cycles_per_sec_exact,
    })
}

pub fn print(r: &FuseReport) {
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "memhp bench --fuse: lsmem --sysroot on {} memory blocks (128 MiB), FUSE vs the same tree as plain files on tmpfs{}",
        r.lsmem_blocks,
        if r.one_cpu {
            " (clients and memhp pinned to one CPU)"
        } else {
            ""
        }
    );
    println!(
        "  plain files (baseline)   first {:>7.3} s   steady {:>7.3} s",
        s(r.plain.first),
        s(r.plain.steady)
    );
    for (name, t) in [
        ("--cached-opens", r.cached),
        ("exact opens", r.exact),
        ("exact, --passthrough", r.passthrough),
    ] {
        println!(
            "  {name:<24} first {:>7.3} s   steady {:>7.3} s   steady/plain {:.2}x (target ≤ 1.5x)",
            s(t.first),
            s(t.steady),
            s(t.steady) / s(r.plain.steady).max(1e-9)
        );
    }
    println!(
        "  full scan of {} blocks (readdir + {} files each), one client thread: plain files {:.3} s; --cached-opens cold {:.3} s, warm {:.3} s = {:.2}x plain (target ≤ 1 s)",
        r.scan_blocks,
        SCAN_FILES.len(),
        s(r.scan_plain),
        s(r.scan_cold),
        s(r.scan_warm),
        s(r.scan_warm) / s(r.scan_plain).max(1e-9)
    );
    println!(
        "  full scan of {} blocks, {} client threads: plain files {:.3} s; --cached-opens warm {:.3} s = {:.2}x plain (target ≤ 1 s)",
        r.scan_blocks,
        r.scan_threads,
        s(r.scan_plain_parallel),
        s(r.scan_warm_parallel),
        s(r.scan_warm_parallel) / s(r.scan_plain_parallel).max(1e-9)
    );
    println!(
        "  online/offline write cycles through FUSE: {:.0}/s with --cached-opens, {:.0}/s with exact opens (target ≥ 10000/s; {} cycles)",
        r.cycles_per_sec_cached, r.cycles_per_sec_exact, r.cycles
    );
}
