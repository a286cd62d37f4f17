//! `memhp`: Linux memory hotplug in user space.

mod bench;
mod dump_io;
mod machine_args;
mod show;

use anyhow::Result;
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
    },
}

fn main() {
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
        Command::Capture { sysroot, out } => {
            let n = dump_io::capture(&sysroot, &out)?;
            eprintln!("memhp: wrote {n} files to {}", out.display());
        }
        Command::Bench { tib, cycles } => bench::print(&bench::run(tib, cycles)?),
    }
    Ok(())
}
