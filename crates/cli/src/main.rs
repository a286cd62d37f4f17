//! `memhp`: Linux memory hotplug in user space.

mod bench;
mod machine_args;
mod show;

use anyhow::Result;
use clap::{Parser, Subcommand};
use machine_args::MachineArgs;
use memhp_model::shared::Shared;
use memhp_model::System;
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

fn boot(args: &MachineArgs) -> Result<Arc<Shared>> {
    let spec = args.spec()?;
    Ok(Arc::new(Shared::new(System::boot(&spec)?)))
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
            let tree = SysfsTree::new(boot(&machine)?);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for p in &path {
                show::dump(&tree, p.trim_matches('/'), &mut out)?;
            }
            out.flush()?;
        }
        Command::Bench { tib, cycles } => bench::print(&bench::run(tib, cycles)?),
    }
    Ok(())
}
