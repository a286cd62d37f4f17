//! Machine options shared by every command that boots a machine:
//! `--machine`, QEMU-style `--mem`/`--smp`/`--numa`, `--cmdline`, `--kernel`.

use anyhow::{bail, Context, Result};
use clap::Args;
use memhp_model::machine::{self, MachineSpec, QemuNuma, QemuPc, VirtioBalloonSpec, VirtioMemSpec};
use memhp_model::units::parse_size;
use memhp_model::KernelVersion;

/// How to build the machine.
#[derive(Args, Debug, Clone)]
pub struct MachineArgs {
    /// Machine profile (`qemu-pc`, `firecracker`, `baremetal`) or a TOML file.
    #[arg(long, default_value = "qemu-pc")]
    pub machine: String,
    /// QEMU-style memory: `SIZE[,slots=N][,maxmem=M]` (qemu-pc), the RAM
    /// size for the other profiles.
    #[arg(long, default_value = "1G,slots=4,maxmem=4G")]
    pub mem: String,
    /// CPUs, QEMU style: `N[,maxcpus=M]` (also `sockets=`, `cores=`, ...);
    /// CPUs beyond N are possible but not present (CPU hotplug).
    #[arg(long, default_value = "1", value_parser = parse_smp_arg)]
    pub smp: (u32, u32),
    /// A NUMA node, QEMU style: `nodeid=N[,cpus=A[-B]][,mem=SIZE][,generic-initiator=on]`,
    /// or a distance: `dist,src=A,dst=B,val=V`
    /// (repeatable; node memory must add up to the RAM size;
    /// `generic-initiator=on` is QEMU's `-object acpi-generic-initiator,node=N`).
    #[arg(long)]
    pub numa: Vec<String>,
    /// A virtio-mem device (qemu-pc), QEMU style:
    /// `id=ID,size=SIZE[,node=N][,block-size=SIZE][,requested-size=SIZE]`
    /// (`size` is its memory backend's; `block-size` defaults to 2 MiB, and
    /// one of at least a memory block makes the driver use Big Block Mode).
    #[arg(long)]
    pub virtio_mem: Vec<String>,
    /// A virtio-balloon device (qemu-pc; after the virtio-mem devices on
    /// the PCI bus): QMP `balloon`/`query-balloon`, `memhp ctl balloon SIZE`.
    #[arg(long)]
    pub balloon: bool,
    /// A DIMM present at boot (qemu-pc), QEMU's `-device pc-dimm` with its
    /// own backend: `id=ID,size=SIZE[,node=N][,addr=A]` (repeatable).
    #[arg(long)]
    pub dimm: Vec<String>,
    /// Size of the guest's initramfs (qemu-pc `-initrd`; default the
    /// oracle's 1436K): the boot log's `RAMDISK:` range, what boot holds
    /// and the unpacked rootfs's shmem.
    #[arg(long, value_parser = parse_size)]
    pub initrd_size: Option<u64>,
    /// Extra kernel command line (e.g. `memhp_default_state=online movablecore=256M`).
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Kernel behaviour to follow: `6.1` (default) or `ml` (mainline).
    #[arg(long, default_value = "6.1")]
    pub kernel: String,
    /// Seed the machine from a sysfs dump (a directory or a `.tar.bz2`)
    /// instead of booting a profile.
    #[arg(long)]
    pub dump: Option<std::path::PathBuf>,
}

/// The command line the oracle's guests boot with.
pub const ORACLE_BASE_CMDLINE: &str =
    "console=ttyS0 printk.time=0 loglevel=3 panic=-1 nokaslr rdinit=/init";

/// Parse `A`, `A-B` CPU lists (`cpus=0-3`).
pub fn parse_cpus(s: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(':') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse()?, b.parse()?);
                if a > b {
                    bail!("CPU range {part:?} is reversed");
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().with_context(|| format!("bad CPU {part:?}"))?),
        }
    }
    Ok(out)
}

/// Parse `--smp` as QEMU's `-smp`: (present, possible) CPUs.
fn parse_smp_arg(s: &str) -> Result<(u32, u32), String> {
    memhp_scenario::scenario::parse_smp(s).ok_or_else(|| {
        format!("bad CPU count {s:?} (expected N[,sockets=S][,cores=C][,threads=T][,maxcpus=M] with M at least N)")
    })
}

/// Parse the `src=A,dst=B,val=V` of a `--numa dist,...` value.
pub fn parse_numa_dist(s: &str) -> Result<(u32, u32, u32)> {
    let (mut src, mut dst, mut val) = (None, None, None);
    for kv in s.split(',') {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--numa dist: expected KEY=VALUE, got {kv:?}"))?;
        let n: u32 = v
            .parse()
            .with_context(|| format!("--numa dist: bad {k} {v:?}"))?;
        match k {
            "src" => src = Some(n),
            "dst" => dst = Some(n),
            "val" => val = Some(n),
            _ => bail!("--numa dist: unknown key {k:?} (expected src, dst, val)"),
        }
    }
    match (src, dst, val) {
        (Some(s), Some(d), Some(v)) => Ok((s, d, v)),
        _ => bail!("--numa dist,{s}: src=, dst= and val= are all required"),
    }
}

/// Parse one `--numa` value.
pub fn parse_numa(s: &str) -> Result<QemuNuma> {
    let mut n = QemuNuma {
        nodeid: u32::MAX,
        cpus: Vec::new(),
        mem: 0,
        generic_initiator: false,
    };
    for kv in s.split(',').filter(|p| *p != "node") {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--numa: expected KEY=VALUE, got {kv:?}"))?;
        match k {
            "nodeid" => {
                n.nodeid = v
                    .parse()
                    .with_context(|| format!("--numa: bad nodeid {v:?}"))?
            }
            "cpus" => n.cpus = parse_cpus(v)?,
            "mem" => n.mem = parse_size(v).with_context(|| format!("--numa: bad mem {v:?}"))?,
            "generic-initiator" => {
                n.generic_initiator = match v {
                    "on" => true,
                    "off" => false,
                    _ => bail!("--numa: generic-initiator={v:?}: expected on or off"),
                }
            }
            _ => bail!("--numa: unknown key {k:?} (expected nodeid, cpus, mem, generic-initiator)"),
        }
    }
    if n.nodeid == u32::MAX {
        bail!("--numa {s:?}: nodeid= is required");
    }
    Ok(n)
}

/// Parse one `--virtio-mem` value.
/// Parse one `--dimm id=ID,size=SIZE[,node=N][,addr=A]`.
pub fn parse_dimm(s: &str) -> Result<(String, u64, Option<u32>, Option<u64>)> {
    let (mut id, mut size, mut node, mut addr) = (None, None, None, None);
    for kv in s.split(',') {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--dimm: expected KEY=VALUE, got {kv:?}"))?;
        match k {
            "id" => id = Some(v.to_string()),
            "size" => {
                size = Some(parse_size(v).with_context(|| format!("--dimm: bad size {v:?}"))?)
            }
            "node" => {
                node = Some(
                    v.parse()
                        .with_context(|| format!("--dimm: bad node {v:?}"))?,
                )
            }
            "addr" => {
                addr = Some(parse_size(v).with_context(|| format!("--dimm: bad addr {v:?}"))?)
            }
            _ => bail!("--dimm: unknown key {k:?} (expected id, size, node, addr)"),
        }
    }
    match (id, size) {
        (Some(id), Some(size)) => Ok((id, size, node, addr)),
        _ => bail!("--dimm {s:?}: id= and size= are required"),
    }
}

pub fn parse_virtio_mem(s: &str) -> Result<VirtioMemSpec> {
    let mut v = VirtioMemSpec {
        id: String::new(),
        node: 0,
        region_size: 0,
        block_size: 2 << 20,
        requested_size: 0,
    };
    for kv in s.split(',') {
        let (k, val) = kv
            .split_once('=')
            .with_context(|| format!("--virtio-mem: expected KEY=VALUE, got {kv:?}"))?;
        let size = || parse_size(val).with_context(|| format!("--virtio-mem: bad {k} {val:?}"));
        match k {
            "id" => v.id = val.to_string(),
            "node" => {
                v.node = val
                    .parse()
                    .with_context(|| format!("--virtio-mem: bad node {val:?}"))?
            }
            "size" => v.region_size = size()?,
            "block-size" => v.block_size = size()?,
            "requested-size" => v.requested_size = size()?,
            _ => bail!(
                "--virtio-mem: unknown key {k:?} (expected id, size, node, block-size, requested-size)"
            ),
        }
    }
    if v.id.is_empty() || v.region_size == 0 {
        bail!("--virtio-mem {s:?}: id= and size= are required");
    }
    Ok(v)
}

impl MachineArgs {
    /// The defaults, as if no machine option was given.
    pub fn parse_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            m: MachineArgs,
        }
        <Only as clap::Parser>::parse_from(["memhp"]).m
    }

    /// Boot the machine (or seed it from `--dump`) with its devices.
    pub fn host(&self) -> Result<memhp_drivers::host::Host> {
        if let Some(path) = &self.dump {
            let data = crate::dump_io::load(path)?;
            let sys = memhp_model::System::from_dump(&data, self.version()?)
                .with_context(|| format!("dump {}", path.display()))?;
            return Ok(memhp_drivers::host::Host::from_system(sys));
        }
        let spec = self.spec()?;
        let host = memhp_drivers::host::Host::boot(&spec)?;
        if !self.dimm.is_empty() && self.machine != "qemu-pc" {
            bail!("--dimm needs --machine qemu-pc");
        }
        for d in &self.dimm {
            let (id, size, node, addr) = parse_dimm(d)?;
            let memdev = format!("mem-{id}");
            host.backends
                .add("memory-backend-ram", &memdev, size, None, true)
                .with_context(|| format!("--dimm {d}"))?;
            host.cold_plug_dimm(&id, &memdev, (node, addr))
                .with_context(|| format!("--dimm {d}"))?;
        }
        Ok(host)
    }

    pub fn version(&self) -> Result<KernelVersion> {
        self.kernel.parse().map_err(anyhow::Error::msg)
    }

    /// Build the machine these options describe.
    pub fn spec(&self) -> Result<MachineSpec> {
        let version = self.version()?;
        let cmdline = format!("{ORACLE_BASE_CMDLINE} {}", self.cmdline)
            .trim()
            .to_string();
        if self.balloon && self.machine != "qemu-pc" {
            bail!("--balloon needs --machine qemu-pc");
        }
        if !self.virtio_mem.is_empty() && self.machine != "qemu-pc" {
            bail!("--virtio-mem needs --machine qemu-pc (a TOML machine lists its devices itself)");
        }
        match self.machine.as_str() {
            "qemu-pc" => {
                let mut q = QemuPc {
                    smp: self.smp.0,
                    maxcpus: self.smp.1,
                    ..QemuPc::default()
                };
                q.parse_mem_option(&self.mem)?;
                q.numa = self
                    .numa
                    .iter()
                    .filter(|s| !s.starts_with("dist,"))
                    .map(|s| parse_numa(s))
                    .collect::<Result<_>>()?;
                q.numa_dist = self
                    .numa
                    .iter()
                    .filter_map(|s| s.strip_prefix("dist,"))
                    .map(parse_numa_dist)
                    .collect::<Result<_>>()?;
                q.virtio_mem = self
                    .virtio_mem
                    .iter()
                    .map(|s| parse_virtio_mem(s))
                    .collect::<Result<_>>()?;
                q.balloon = self.balloon.then(|| VirtioBalloonSpec {
                    id: Some("balloon0".into()),
                    pci_index: self.virtio_mem.len() as u32,
                });
                if let Some(b) = self.initrd_size {
                    q.initrd_bytes = b;
                }
                Ok(q.machine(&cmdline, version)?)
            }
            "firecracker" => {
                let ram = parse_size(self.mem.split(',').next().unwrap_or(""))?;
                Ok(machine::firecracker(ram, self.smp.0, &cmdline, version)?)
            }
            "baremetal" => {
                let ram = if self.mem == "1G,slots=4,maxmem=4G" {
                    2u64 << 40
                } else {
                    parse_size(self.mem.split(',').next().unwrap_or(""))?
                };
                Ok(machine::baremetal(ram, &cmdline, version)?)
            }
            path => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--machine {path:?}: not a profile (qemu-pc, firecracker, baremetal) and not a readable TOML file"))?;
                let mut m = MachineSpec::from_toml(&text).with_context(|| format!("in {path}"))?;
                if !self.cmdline.is_empty() {
                    m.cmdline = format!("{} {}", m.cmdline, self.cmdline).trim().to_string();
                }
                Ok(m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_mem_option_parses_qemu_style() {
        let v = parse_virtio_mem("id=vm0,size=4G,node=1,block-size=1G,requested-size=2G").unwrap();
        assert_eq!(
            (
                v.id.as_str(),
                v.node,
                v.region_size,
                v.block_size,
                v.requested_size
            ),
            ("vm0", 1, 4 << 30, 1 << 30, 2 << 30)
        );
        assert_eq!(
            parse_virtio_mem("id=a,size=1G").unwrap().block_size,
            2 << 20
        );
        assert_eq!(
            parse_virtio_mem("size=1G").unwrap_err().to_string(),
            "--virtio-mem \"size=1G\": id= and size= are required"
        );
        assert!(parse_virtio_mem("id=a,size=1G,blocksize=2M").is_err());
    }

    #[test]
    fn numa_option_parses_qemu_style() {
        let n = parse_numa("node,nodeid=1,cpus=2-3,mem=512M").unwrap();
        assert_eq!((n.nodeid, n.cpus, n.mem), (1, vec![2, 3], 512 << 20));
        assert!(parse_numa("cpus=1").is_err());
        assert!(
            parse_numa("nodeid=2,generic-initiator=on")
                .unwrap()
                .generic_initiator
        );
        assert_eq!(
            parse_numa("nodeid=2,generic-initiator=yes")
                .unwrap_err()
                .to_string(),
            "--numa: generic-initiator=\"yes\": expected on or off"
        );
        assert!(parse_numa("nodeid=1,foo=2").is_err());
        assert!(parse_cpus("3-1").is_err());
    }
}
