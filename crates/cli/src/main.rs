//! `memhp`: Linux memory hotplug in user space.

mod bench;
mod bench_fuse;
mod check;
mod cpu_pin;
mod ctl;
mod daemon;
mod dump_io;
mod guest_sh;
mod guest_tmpfs;
mod machine_args;
mod namespace;
mod nofile;
mod ohelper;
mod runner;
mod show;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use machine_args::MachineArgs;
use memhp_sysfs::SysfsTree;
use std::io::Write;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "memhp",
    version,
    about = "Linux memory hotplug, re-implemented in user space"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a machine and print its sysfs/procfs tree (the default command).
    Show {
        #[command(flatten)]
        machine: MachineArgs,
        /// Subtree to print, e.g. `sys/devices/system/node` or `proc/zoneinfo`.
        #[arg(long, default_value = "sys/devices/system/memory")]
        path: Vec<String>,
    },
    /// Serve a machine's sysfs/procfs tree at ROOT (FUSE) with its control
    /// socket; daemonizes once the mount is ready unless `-f`.
    Mount {
        #[command(flatten)]
        machine: MachineArgs,
        /// Mount point (an existing empty directory).
        root: std::path::PathBuf,
        /// Stay in the foreground.
        #[arg(short, long)]
        foreground: bool,
        /// Control socket path (default: /run/memhp/<root>.sock).
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// Simulated timeout (seconds) after which an offline stuck in its
        /// migration loop fails with EINTR as if signalled (default: never,
        /// like the kernel).
        #[arg(long)]
        offline_timeout: Option<f64>,
        /// A user-space onliner reacting to `add` uevents:
        /// `rhel|ubuntu-hyperv|kata-agent|daxctl[:DELAY_MS]` (repeatable).
        #[arg(long, value_parser = |s: &str| s.parse::<memhp_control::agents::Agent>())]
        onliner: Vec<memhp_control::agents::Agent>,
        /// Seed deciding races between onliners with the same delay.
        #[arg(long, default_value_t = 0)]
        onliner_seed: u64,
        /// Events a control-socket client may have waiting before later
        /// ones are dropped (and counted: `ctl event-stats`), like a small
        /// netlink receive buffer.
        #[arg(long, default_value_t = memhp_control::DEFAULT_EVENT_CAPACITY)]
        event_buffer: usize,
        /// Serve opens inside the kernel (no request per open(2)): reading a
        /// cached attribute costs what it costs on tmpfs, but a refused open
        /// (a read-only file opened for writing, a write-only one for
        /// reading) fails at the first read, write or O_TRUNC instead.
        #[arg(long)]
        cached_opens: bool,
        /// Read files opened read-only from a copy the kernel keeps without
        /// asking memhp (FUSE passthrough, Linux 6.9+; exact opens only),
        /// rewritten after each change before the write or control command
        /// that made it returns: no round trip per read(2), but a read that
        /// races with another process's change of the same file may see
        /// part of each version, a removed attribute's open descriptor
        /// reads nothing, and mmap succeeds. Without it every read is
        /// answered by memhp.
        #[arg(long, conflicts_with = "cached_opens")]
        passthrough: bool,
        /// Also multicast every uevent, in the kernel's wire format, on a
        /// NETLINK_KOBJECT_UEVENT socket in a network namespace memhp
        /// creates (`ctl event-stats` names it: `nsenter --net=PATH`).
        /// The sender's port id is not 0, so libudev/systemd-udevd ignore
        /// these; busybox `uevent`/`mdev` and custom listeners get them.
        #[arg(long)]
        netlink_uevents: bool,
    },
    /// Unmount a tree served by `memhp mount`.
    Umount { root: std::path::PathBuf },
    /// Talk to a running machine's control socket.
    Ctl {
        /// The mount root of the machine.
        #[arg(long, conflicts_with = "socket")]
        root: Option<std::path::PathBuf>,
        /// The control socket path.
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// Command and arguments: `hotadd ID SIZE [node=N] [addr=A]`,
        /// `unplug ID`, `vmem-resize ID SIZE`, `query`, `klog`, `events`,
        /// `inject ACTION ERRNO`, `workload OP KIND PAGES block=N|node=N`,
        /// `tmpfs-usage INODES BYTES`, `clock-advance MS`,
        /// `migrate-fail BLOCK FAILURE`,
        /// `hwpoison BLOCK`, `module-load NAME`,
        /// `json '{...}'`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Oracle scenarios: run, compare, check a directory.
    Scenario {
        #[command(subcommand)]
        cmd: ScenarioCmd,
    },
    /// Guest helper commands used by scenario steps.
    #[command(hide = true)]
    Ohelper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Record a sysfs memory tree (default `/sys`) as a `.tar.bz2` dump.
    Capture {
        /// The sysfs root to read.
        #[arg(default_value = "/sys")]
        sysroot: std::path::PathBuf,
        /// Output file (`NAME.tar.bz2`).
        out: std::path::PathBuf,
    },
    /// Model benchmarks at scale, with same-run baselines.
    Bench {
        /// TiB to hot-add.
        #[arg(long, default_value_t = 1)]
        tib: u64,
        /// Online/offline cycles for the rate measurement.
        #[arg(long, default_value_t = 200_000)]
        cycles: u64,
        /// Also measure the FUSE transport (root, /dev/fuse and lsmem
        /// needed): lsmem vs plain files, a full scan, write cycles.
        #[arg(long)]
        fuse: bool,
        /// Memory blocks of the lsmem machine (with --fuse).
        #[arg(long, default_value_t = 16_288)]
        lsmem_blocks: u64,
        /// Memory blocks of the full-scan machine (with --fuse).
        #[arg(long, default_value_t = 65_536)]
        scan_blocks: u64,
        /// Write cycles through the mount (with --fuse).
        #[arg(long, default_value_t = 5_000)]
        fuse_cycles: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ScenarioCmd {
    /// Run a scenario and write its transcript.
    Run {
        file: std::path::PathBuf,
        /// Write the transcript here instead of stdout.
        #[arg(short, long)]
        out: Option<std::path::PathBuf>,
        /// Kernel behaviour: `6.1` or `ml`.
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// Size of the guest's initramfs when the recording's is not the
        /// oracle's 1436K (`ls -l` of the image `run.py` built).
        #[arg(long, value_parser = memhp_model::units::parse_size)]
        initrd_size: Option<u64>,
    },
    /// Compare two transcripts; prints the score and the differing lines.
    Diff {
        expected: std::path::PathBuf,
        actual: std::path::PathBuf,
    },
    /// Run every `*.scn` of DIR, diff each against `DIR/../transcripts`,
    /// print the table; fail if a scenario listed in `--baseline` (one name
    /// per line) no longer matches completely.
    Check {
        dir: std::path::PathBuf,
        #[arg(long)]
        baseline: Option<std::path::PathBuf>,
        /// Write the transcripts here.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Print the differing lines of each scenario.
        #[arg(long)]
        verbose: bool,
        /// Size of the guest's initramfs the transcripts were recorded with
        /// (default the oracle's 1436K).
        #[arg(long, value_parser = memhp_model::units::parse_size)]
        initrd_size: Option<u64>,
    },
}

/// A reader that went away (`memhp scenario diff ... | head`) ends the
/// output quietly, as with coreutils, instead of a panic from `println!`:
/// exit status 141 (128 + SIGPIPE). SIGPIPE itself stays ignored, so the
/// daemons' sockets never kill them.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Keep glibc's mmap threshold where it starts (128 KiB). By default it
/// rises to the size of the largest block freed so far, so once a FUSE
/// session's 16 MiB request buffers are freed, the next session's come
/// from the heap, where a zeroed allocation is a 16 MiB memset per buffer
/// (measured: replays in one process got 70 % slower one after the other).
fn fix_mmap_threshold() {
    // SAFETY: mallopt only changes allocator tunables; called before any
    // thread is started.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10)
    };
}

fn main() {
    fix_mmap_threshold();
    quiet_broken_pipe();
    init_logging();
    match run() {
        Ok(()) => {}
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {}
        Err(e) => {
            eprintln!("memhp: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The libraries' `tracing` events on stderr: warnings by default,
/// `MEMHP_LOG` (an `EnvFilter` directive such as `debug` or
/// `memhp_fuse=trace`) for more. A bad directive is reported and the
/// default kept.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("MEMHP_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("memhp: MEMHP_LOG={spec:?} ignored: {e}");
            EnvFilter::new("warn")
        }),
        Err(_) => EnvFilter::new("warn"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Show {
        machine: MachineArgs::parse_defaults(),
        path: vec![
            "sys/devices/system/memory".into(),
            "sys/devices/system/node".into(),
            "sys/module/memory_hotplug".into(),
            "proc/zoneinfo".into(),
            "proc/iomem".into(),
        ],
    });
    match command {
        Command::Show { machine, path } => {
            let tree = SysfsTree::new(Arc::clone(&machine.host()?.shared));
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for p in &path {
                show::dump(&tree, p.trim_matches('/'), &mut out)?;
            }
            out.flush()?;
        }
        Command::Mount {
            machine,
            root,
            foreground,
            socket,
            offline_timeout,
            onliner,
            onliner_seed,
            event_buffer,
            cached_opens,
            passthrough,
            netlink_uevents,
        } => {
            let serve_opts = daemon::ServeOptions {
                list: onliner,
                seed: onliner_seed,
                event_buffer,
                opens: if cached_opens {
                    memhp_fuse::Opens::Cached
                } else {
                    memhp_fuse::Opens::Exact
                },
                passthrough,
                netlink_uevents,
            };
            daemon::mount(
                &machine,
                &root,
                socket,
                foreground,
                offline_timeout,
                &serve_opts,
            )?
        }
        Command::Umount { root } => daemon::umount(&root)?,
        Command::Ohelper { args } => std::process::exit(ohelper::main(&args)),
        Command::Ctl {
            root,
            socket,
            words,
        } => {
            let sock = match (socket, root) {
                (Some(s), _) => s,
                (None, Some(r)) => ctl::socket_for_root(&r),
                (None, None) => anyhow::bail!("give --root ROOT or --socket PATH"),
            };
            let code = ctl::run(&sock, &words)?;
            std::process::exit(code);
        }
        Command::Scenario {
            cmd:
                ScenarioCmd::Run {
                    file,
                    out,
                    kernel,
                    initrd_size,
                },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("scenario")
                .to_string();
            let scn = runner::Scenario::parse(&name, &text)
                .with_context(|| format!("{}", file.display()))?;
            let shown = format!(
                "scenarios/{}",
                file.file_name().and_then(|s| s.to_str()).unwrap_or("")
            );
            let outcome = runner::run(
                &scn,
                &shown,
                kernel.parse().map_err(anyhow::Error::msg)?,
                initrd_size,
            )?;
            match out {
                Some(p) => std::fs::write(&p, &outcome.transcript)
                    .with_context(|| format!("write {}", p.display()))?,
                None => print!("{}", outcome.transcript),
            }
            outcome.wait_for_shell();
        }
        Command::Scenario {
            cmd: ScenarioCmd::Diff { expected, actual },
        } => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
            };
            let report = memhp_scenario::diff_texts(&read(&expected)?, &read(&actual)?)?;
            println!(
                "{}: {}/{} interface lines ({:.1} %)",
                actual.display(),
                report.matched,
                report.total,
                report.percent()
            );
            print!("{}", report.render_mismatches(None));
            std::process::exit(i32::from(report.matched != report.total));
        }
        Command::Scenario {
            cmd:
                ScenarioCmd::Check {
                    dir,
                    baseline,
                    out,
                    verbose,
                    initrd_size,
                },
        } => {
            std::process::exit(check::run(
                &dir,
                baseline.as_deref(),
                out.as_deref(),
                verbose,
                initrd_size,
            )?);
        }
        Command::Capture { sysroot, out } => {
            let n = dump_io::capture(&sysroot, &out)?;
            eprintln!("memhp: wrote {n} files to {}", out.display());
        }
        Command::Bench {
            tib,
            cycles,
            fuse,
            lsmem_blocks,
            scan_blocks,
            fuse_cycles,
        } => {
            bench::print(&bench::run(tib, cycles)?);
            if fuse {
                bench_fuse::print(&bench_fuse::run(lsmem_blocks, scan_blocks, fuse_cycles)?);
            }
        }
    }
    Ok(())
}
