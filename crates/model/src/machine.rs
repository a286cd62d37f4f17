//! Machine descriptions: the firmware memory map (e820), NUMA topology, DIMM
//! slots, build configuration and kernel command line that a boot turns into
//! a [`crate::System`]. Profiles derive them by rule (`qemu-pc`,
//! `firecracker`, `baremetal`); a machine can also be written as TOML.

use crate::block::OnlineType;
use crate::units::{parse_size, SECTION_SIZE};
use crate::KernelVersion;
use serde::{Deserialize, Serialize};

/// One e820 entry, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct E820Entry {
    pub start: u64,
    pub end: u64,
    pub kind: E820Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum E820Kind {
    Usable,
    Reserved,
}

/// One possible NUMA node (an SRAT proximity domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: u32,
    /// CPUs of this node (present at boot).
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// Physical ranges `[start, end)` the firmware assigns to this node (SRAT
    /// memory affinity). Boot RAM outside every node's ranges belongs to the
    /// first node.
    #[serde(default)]
    pub mem: Vec<(u64, u64)>,
    /// Hot-pluggable ranges (SRAT "hotplug" flag).
    #[serde(default)]
    pub hotplug: Vec<(u64, u64)>,
    /// A generic initiator node (N_GENERIC_INITIATOR).
    #[serde(default)]
    pub generic_initiator: bool,
    /// CPUs of this node that are possible but not present at boot (QEMU's
    /// `-smp N,maxcpus=M`): they get per-cpu areas and count in
    /// `nr_cpu_ids`, but are not online.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hotplug_cpus: Vec<u32>,
    /// The firmware's proximity domain when the kernel numbered the node
    /// differently (`acpi_map_pxm_to_node` hands out node numbers in the
    /// order the SRAT names domains: the CPUs' first); absent: `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pxm: Option<u32>,
}

impl NodeSpec {
    /// Present and hotpluggable CPUs, in order.
    pub fn possible_cpus(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .cpus
            .iter()
            .chain(&self.hotplug_cpus)
            .copied()
            .collect();
        all.sort_unstable();
        all
    }
}

/// QEMU pc-dimm slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimmSpec {
    pub slots: u32,
    /// Base of the device-memory region DIMMs are placed in.
    pub base: u64,
    /// Size of the device-memory region.
    pub size: u64,
    /// How much memory devices may plug in all (QEMU: `maxmem` − `-m`);
    /// `None`: as much as the region holds.
    #[serde(default)]
    pub capacity: Option<u64>,
}

/// A virtio-mem device present at boot (its driver binds when loaded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMemSpec {
    pub id: String,
    pub node: u32,
    /// Region size (the memory backend's size).
    pub region_size: u64,
    pub block_size: u64,
    pub requested_size: u64,
}

/// A `-device virtio-balloon-pci` (without `deflate-on-oom`: inflated
/// pages leave `managed` and `MemTotal`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioBalloonSpec {
    #[serde(default)]
    pub id: Option<String>,
    /// Its place among the virtio PCI devices in QEMU's argument order (the
    /// first takes PCI slot 2).
    #[serde(default)]
    pub pci_index: u32,
}

/// Boot-time (memblock) allocations that stay reserved for good, by rule
/// (see [`crate::boot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootAllocSpec {
    /// Kernel image and other fixed-size allocations placed from 16 MiB up.
    pub kernel_image_pages: u64,
    /// Top-down boot reservations beyond the simulated memblock sequence
    /// (`crate::early_alloc`), on the last memory node (0 for the Debian
    /// 6.1 guest).
    pub fixed_topdown_pages: u64,
    /// Software IO TLB below 4 GiB (0 for none).
    pub swiotlb_pages: u64,
    /// What the booted system has allocated by the time user space runs
    /// (from the buddy allocator, so charged to the page model, not
    /// reserved).
    #[serde(default)]
    pub runtime: RuntimeUsage,
}

/// Pages the running kernel and its initramfs hold after boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeUsage {
    /// Unreclaimable slab (`SUnreclaim`).
    #[serde(default)]
    pub slab_unreclaimable: u64,
    /// Reclaimable slab (`SReclaimable`).
    #[serde(default)]
    pub slab_reclaimable: u64,
    /// Kernel stacks of the running tasks.
    #[serde(default)]
    pub kernel_stack: u64,
    /// User page tables.
    #[serde(default)]
    pub pagetables: u64,
    /// Other kernel memory: vmalloc, modules, per-cpu, ...
    #[serde(default)]
    pub kernel_other: u64,
    /// The `GFP_DMA` atomic pool ("DMA: preallocated 128 KiB GFP_KERNEL|
    /// GFP_DMA pool for atomic allocations"): the first free pages of
    /// ZONE_DMA (the oracle's show_mem: its buddy lists lack them there).
    #[serde(default)]
    pub dma_atomic_pool: u64,
    /// The unpacked initramfs (rootfs is a tmpfs: `Shmem`).
    #[serde(default)]
    pub rootfs_shmem: u64,
    /// Anonymous memory of the running processes.
    #[serde(default)]
    pub anon: u64,
    /// Of the rootfs pages, those mapped by processes (`Mapped`).
    #[serde(default)]
    pub mapped: u64,
    /// Of the LRU pages above, those on the active list (the mapped
    /// programs' pages).
    #[serde(default)]
    pub active: u64,
    /// vmalloc'ed pages (`VmallocUsed`; modules, stacks, ...).
    #[serde(default)]
    pub vmalloc: u64,
    /// Pages the processes have committed (`Committed_AS`).
    #[serde(default)]
    pub committed: u64,
}

impl RuntimeUsage {
    /// Unmovable pages in all.
    pub fn unmovable(&self) -> u64 {
        self.slab_unreclaimable
            + self.slab_reclaimable
            + self.kernel_stack
            + self.pagetables
            + self.kernel_other
            + self.dma_atomic_pool
    }

    /// Movable (LRU) pages in all.
    pub fn movable(&self) -> u64 {
        self.rootfs_shmem + self.anon
    }
}

impl BootAllocSpec {
    /// The oracle guest's, with an initramfs of `initrd_bytes` (compressed)
    /// instead of the oracle's 1436 KiB: rootfs is a tmpfs, so the unpacked
    /// files are `Shmem` (with the boot log and block list init writes to
    /// /tmp). Unpacked pages per compressed page, fitted to two recordings:
    /// 779 pages of shmem with the oracle's 1,470,464-byte initramfs, 1,393
    /// with one of 2,600,170 bytes (busybox, util-linux and the modules of
    /// a later build; `conformance/behaviour`'s offline-hotadded-workload).
    pub fn with_initrd(initrd_bytes: u64) -> BootAllocSpec {
        let mut spec = BootAllocSpec::default();
        let (oracle_pages, oracle_shmem) =
            (crate::qemu_acpi::ORACLE_INITRD_BYTES.div_ceil(4096), 779);
        let (pages, big_pages, big_shmem) = (initrd_bytes.div_ceil(4096), 635, 1393);
        // Integer slope (614 / 276) through the oracle's point.
        let delta = (pages as i64 - oracle_pages as i64) * (big_shmem - oracle_shmem)
            / (big_pages - oracle_pages as i64);
        spec.runtime.rootfs_shmem = (oracle_shmem + delta).max(0) as u64;
        spec
    }
}

impl Default for BootAllocSpec {
    /// Debian 6.1.0-56-amd64 as measured by the oracle (spec: managed counts
    /// of `boot-baseline` and `movablecore`).
    fn default() -> Self {
        BootAllocSpec {
            kernel_image_pages: 11318,
            fixed_topdown_pages: 0,
            swiotlb_pages: 16384,
            // The oracle guest's show_mem in `offline-busy-slab` (taken in
            // its offline, when only the helper runs), minus what that
            // scenario's workload charges (40000 files, 256 MiB).
            runtime: RuntimeUsage {
                slab_unreclaimable: 2231,
                slab_reclaimable: 2384,
                kernel_stack: 188,
                pagetables: 14,
                kernel_other: 2262,
                dma_atomic_pool: 32,
                rootfs_shmem: 779,
                anon: 32,
                mapped: 573,
                active: 620,
                // A freshly booted oracle guest's /proc/meminfo
                // (VmallocUsed: 7368 kB, Committed_AS: 6264 kB).
                vmalloc: 1842,
                committed: 1566,
            },
        }
    }
}

/// Kernel build configuration switches that change what user space sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildConfig {
    /// `CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE` (6.1) / the ML Kconfig choice.
    pub default_online_type: OnlineType,
    /// `CONFIG_ARCH_MEMORY_PROBE`: the `probe` file exists.
    pub memory_probe: bool,
    /// `CONFIG_MEMORY_FAILURE`: `soft_offline_page`/`hard_offline_page`.
    pub memory_failure: bool,
    /// `CONFIG_CRASH_HOTPLUG` (ML only shows `crash_hotplug`).
    pub crash_hotplug: bool,
    /// `CONFIG_MHP_MEMMAP_ON_MEMORY`.
    pub memmap_on_memory: bool,
}

impl Default for BuildConfig {
    /// Debian 12's 6.1 config.
    fn default() -> Self {
        BuildConfig {
            default_online_type: OnlineType::Offline,
            memory_probe: false,
            memory_failure: true,
            crash_hotplug: false,
            memmap_on_memory: true,
        }
    }
}

/// Everything a boot needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    pub name: String,
    pub version: KernelVersion,
    /// CPUID hypervisor bit (VM vs bare metal; block-size rule).
    pub hypervisor: bool,
    pub e820: Vec<E820Entry>,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub dimm: Option<DimmSpec>,
    #[serde(default)]
    pub virtio_mem: Vec<VirtioMemSpec>,
    #[serde(default)]
    pub balloon: Option<VirtioBalloonSpec>,
    #[serde(default)]
    pub boot_alloc: BootAllocSpec,
    /// QEMU pc firmware (ACPI tables, initrd) as the boot log shows it;
    /// `None` for machines whose firmware is not modelled.
    #[serde(default)]
    pub acpi: Option<crate::qemu_acpi::QemuAcpi>,
    /// The DMI system name `dump_stack` prints ("Hardware name: ...").
    #[serde(default)]
    pub hardware_name: Option<String>,
    /// The firmware's SLIT (`distances[a][b]` from node a to b, by node
    /// id); empty without one (local 10, remote 20).
    #[serde(default)]
    pub distances: Vec<Vec<u32>>,
}

/// Why a machine description is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("e820 entry {index} [{start:#x}-{end:#x}) is empty or reversed")]
    EmptyRange { index: usize, start: u64, end: u64 },
    #[error("e820 entries {first} and {second} overlap or are out of order")]
    Overlap { first: usize, second: usize },
    #[error("the e820 map has no usable RAM")]
    NoRam,
    #[error("no NUMA node given")]
    NoNodes,
    #[error("node {0} is listed twice")]
    DuplicateNode(u32),
    #[error("node id {0} is too large (at most 1023)")]
    NodeTooLarge(u32),
    #[error("CPU {0} belongs to two nodes")]
    DuplicateCpu(u32),
    #[error("CPU {missing} is missing: CPUs are numbered 0 to {last} without gaps (Linux's logical CPU numbers)")]
    CpuGap { missing: u32, last: u32 },
    #[error("node {node}: range [{start:#x}-{end:#x}) is empty or reversed")]
    BadNodeRange { node: u32, start: u64, end: u64 },
    #[error("DIMM region [{base:#x}+{size:#x}) must start 128 MiB aligned and be whole pages")]
    DimmUnaligned { base: u64, size: u64 },
    #[error("virtio-mem device {id}: {why}")]
    VirtioMem { id: String, why: String },
    #[error("invalid size {0:?}")]
    Size(String),
    #[error("invalid option {0:?}: {1}")]
    Option(String, String),
    #[error("invalid machine TOML: {0}")]
    Toml(String),
}

impl MachineSpec {
    /// Check the invariants every boot relies on.
    pub fn validate(&self) -> Result<(), MachineError> {
        for (i, e) in self.e820.iter().enumerate() {
            if e.start >= e.end {
                return Err(MachineError::EmptyRange {
                    index: i,
                    start: e.start,
                    end: e.end,
                });
            }
            if i > 0 && self.e820[i - 1].end > e.start {
                return Err(MachineError::Overlap {
                    first: i - 1,
                    second: i,
                });
            }
        }
        if !self
            .e820
            .iter()
            .any(|e| e.kind == E820Kind::Usable && e.end - e.start >= 4096)
        {
            return Err(MachineError::NoRam);
        }
        if self.nodes.is_empty() {
            return Err(MachineError::NoNodes);
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut cpus = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if n.id > 1023 {
                return Err(MachineError::NodeTooLarge(n.id));
            }
            if !ids.insert(n.id) {
                return Err(MachineError::DuplicateNode(n.id));
            }
            for &c in n.cpus.iter().chain(&n.hotplug_cpus) {
                if !cpus.insert(c) {
                    return Err(MachineError::DuplicateCpu(c));
                }
            }
            for &(start, end) in n.mem.iter().chain(&n.hotplug) {
                if start >= end {
                    return Err(MachineError::BadNodeRange {
                        node: n.id,
                        start,
                        end,
                    });
                }
            }
        }
        if let Some(&last) = cpus.last() {
            if let Some(missing) = (0..last).find(|c| !cpus.contains(c)) {
                return Err(MachineError::CpuGap { missing, last });
            }
        }
        // The region's size is QEMU's `maxmem` - `-m` plus a GiB per slot:
        // any multiple of a page (`-m 448M`); what is added in it must be
        // aligned, not the region's end.
        if let Some(d) = self.dimm {
            if d.base % SECTION_SIZE != 0 || d.size % 4096 != 0 {
                return Err(MachineError::DimmUnaligned {
                    base: d.base,
                    size: d.size,
                });
            }
        }
        for v in &self.virtio_mem {
            let bad = |why: &str| MachineError::VirtioMem {
                id: v.id.clone(),
                why: why.into(),
            };
            // A device names a proximity domain.
            if !self.nodes.iter().any(|n| n.pxm.unwrap_or(n.id) == v.node) {
                return Err(bad("node does not exist"));
            }
            if !v.block_size.is_power_of_two() || v.block_size < 4096 {
                return Err(bad("block-size must be a power of two ≥ 4 KiB"));
            }
            if v.region_size == 0 || v.region_size % v.block_size != 0 {
                return Err(bad("size must be a non-zero multiple of block-size"));
            }
            if v.requested_size > v.region_size || v.requested_size % v.block_size != 0 {
                return Err(bad(
                    "requested-size must be a multiple of block-size within size",
                ));
            }
        }
        Ok(())
    }

    /// Parse a machine written as TOML (the serde form of this struct) and
    /// validate it.
    pub fn from_toml(text: &str) -> Result<MachineSpec, MachineError> {
        let m: MachineSpec = toml::from_str(text).map_err(|e| MachineError::Toml(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// CPUs present at boot.
    pub fn present_cpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.cpus.len()).sum()
    }

    /// CPUs present or hot-pluggable later (`num_possible_cpus`).
    pub fn possible_cpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.possible_cpus().len()).sum()
    }

    /// `nr_node_ids`: one past the highest node.
    pub fn nr_node_ids(&self) -> u32 {
        self.nodes.iter().map(|n| n.id + 1).max().unwrap_or(1)
    }

    /// Highest end of usable e820 RAM.
    pub fn boot_mem_end(&self) -> u64 {
        self.e820
            .iter()
            .filter(|e| e.kind == E820Kind::Usable)
            .map(|e| e.end & !0xfff)
            .max()
            .unwrap_or(0)
    }

    /// The node a physical address belongs to per SRAT (first node if none).
    pub fn node_of_addr(&self, addr: u64) -> u32 {
        self.nodes
            .iter()
            .find(|n| {
                n.mem
                    .iter()
                    .chain(&n.hotplug)
                    .any(|&(s, e)| addr >= s && addr < e)
            })
            .map(|n| n.id)
            .unwrap_or(self.nodes[0].id)
    }
}

/// A `-numa node,...` of QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuNuma {
    pub nodeid: u32,
    pub cpus: Vec<u32>,
    /// Memory of the node (its memdev's size); 0 for a memoryless node.
    pub mem: u64,
    /// An `acpi-generic-initiator` object names this node (SRAT Generic
    /// Initiator Affinity).
    pub generic_initiator: bool,
}

/// The inputs of QEMU's `pc` (i440fx) machine that shape the guest's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuPc {
    /// `-m SIZE`.
    pub ram: u64,
    /// `-m ...,slots=N`.
    pub slots: u32,
    /// `-m ...,maxmem=M`.
    pub maxmem: u64,
    /// `-smp N`.
    pub smp: u32,
    /// `-smp N,maxcpus=M` (0: N): CPUs that may be hot-added later.
    pub maxcpus: u32,
    pub numa: Vec<QemuNuma>,
    /// `-numa dist,src=A,dst=B,val=V`, as (A, B, V).
    pub numa_dist: Vec<(u32, u32, u32)>,
    pub virtio_mem: Vec<VirtioMemSpec>,
    pub balloon: Option<VirtioBalloonSpec>,
    /// Size of the `-initrd` image (the boot log's `RAMDISK:` range, the
    /// memory it holds until the kernel frees it); the oracle's is 1436 KiB.
    pub initrd_bytes: u64,
}

const GIB: u64 = 1 << 30;
/// Start of AMD's HyperTransport reserved window (QEMU reserves it in e820).
const AMD_HT_START: u64 = 0xfd_0000_0000;
const MIB: u64 = 1 << 20;

impl QemuPc {
    /// One NUMA node per vCPU (node N holds CPU N) with the given memory
    /// sizes, like `-smp N -numa node,nodeid=N,cpus=N[,memdev=...]`; a size
    /// of 0 makes a memoryless node.
    pub fn with_node_per_cpu(self, node_mem: &[u64]) -> Self {
        let cpus: Vec<[u32; 1]> = (0..node_mem.len() as u32).map(|c| [c]).collect();
        let nodes: Vec<(&[u32], u64)> = cpus
            .iter()
            .zip(node_mem)
            .map(|(c, &m)| (&c[..], m))
            .collect();
        self.with_nodes(&nodes)
    }

    /// NUMA nodes 0, 1, ... with the given CPUs and memory, like `-smp N
    /// -numa node,nodeid=I[,cpus=...][,memdev=...]`; a node with neither
    /// stays offline until memory is added to it.
    pub fn with_nodes(mut self, nodes: &[(&[u32], u64)]) -> Self {
        self.smp = (nodes.iter().map(|n| n.0.len()).sum::<usize>() as u32).max(1);
        self.numa = (0u32..)
            .zip(nodes)
            .map(|(nodeid, &(cpus, mem))| QemuNuma {
                nodeid,
                cpus: cpus.to_vec(),
                mem,
                generic_initiator: false,
            })
            .collect();
        self
    }

    /// Parse QEMU's `-m` value: `SIZE[,slots=N][,maxmem=M]`.
    /// Nothing changes when the value is refused.
    pub fn parse_mem_option(&mut self, value: &str) -> Result<(), MachineError> {
        let mut next = self.clone();
        next.parse_mem_into(value)?;
        *self = next;
        Ok(())
    }

    fn parse_mem_into(&mut self, value: &str) -> Result<(), MachineError> {
        // As QEMU: what `-m` leaves out is absent (no slots, no device
        // memory); the 1G,slots=4,maxmem=4G default is for no `-m` at all.
        self.slots = 0;
        self.maxmem = 0;
        for (i, part) in value.split(',').enumerate() {
            let bad = |why: &str| MachineError::Option(part.to_string(), why.to_string());
            match part.split_once('=') {
                None if i == 0 => {
                    self.ram =
                        parse_size(&with_default_unit(part)).map_err(|e| bad(&e.to_string()))?
                }
                Some(("size", v)) => {
                    self.ram = parse_size(&with_default_unit(v)).map_err(|e| bad(&e.to_string()))?
                }
                Some(("slots", v)) => self.slots = v.parse().map_err(|_| bad("not a number"))?,
                Some(("maxmem", v)) => {
                    self.maxmem =
                        parse_size(&with_default_unit(v)).map_err(|e| bad(&e.to_string()))?
                }
                _ => return Err(bad("expected SIZE[,slots=N][,maxmem=SIZE]")),
            }
        }
        if self.maxmem != 0 && self.maxmem < self.ram {
            return Err(MachineError::Option(
                value.to_string(),
                "maxmem is smaller than the initial memory".into(),
            ));
        }
        Ok(())
    }

    /// `nr_cpu_ids`: the present CPUs and those that may come.
    pub fn possible_cpus(&self) -> u32 {
        self.maxcpus.max(self.smp).max(1)
    }

    /// Low memory below the PCI hole (i440fx with gigabyte alignment).
    pub fn below_4g(&self) -> u64 {
        if self.ram >= 0xe000_0000 {
            0xc000_0000
        } else {
            self.ram
        }
    }

    /// Build the machine Linux 6.1 sees on this QEMU configuration.
    pub fn machine(
        &self,
        cmdline: &str,
        version: KernelVersion,
    ) -> Result<MachineSpec, MachineError> {
        // QEMU: "Invalid SMP CPUs N. The max CPUs supported by machine
        // 'pc-i440fx-7.2' is 255" (without an IOMMU's interrupt remapping).
        if self.possible_cpus() > 255 {
            return Err(MachineError::Option(
                format!("-smp {}", self.possible_cpus()),
                "the max CPUs supported by machine 'pc-i440fx-7.2' is 255".into(),
            ));
        }
        if self.ram < 16 * MIB {
            return Err(MachineError::Option(
                format!("{}", self.ram),
                "at least 16 MiB of RAM is needed".into(),
            ));
        }
        let low = self.below_4g();
        let high = self.ram - low;
        // QEMU ≥ 7.1 with its default (AMD) CPU keeps guest memory out of the
        // HyperTransport hole below 1 TiB: when RAM above 4 GiB plus the
        // device-memory region would reach it, they start at 1 TiB instead.
        let dimm_size = if self.maxmem > self.ram {
            self.maxmem - self.ram + GIB * u64::from(self.slots)
        } else {
            0
        };
        let naive_end = (4 * GIB + high).div_ceil(GIB) * GIB + dimm_size;
        let above_4g_start = if naive_end > AMD_HT_START {
            1u64 << 40
        } else {
            4 * GIB
        };
        let mut e820 = vec![
            E820Entry {
                start: 0,
                end: 0x9fc00,
                kind: E820Kind::Usable,
            },
            E820Entry {
                start: 0x9fc00,
                end: 0xa0000,
                kind: E820Kind::Reserved,
            },
            E820Entry {
                start: 0xf0000,
                end: 0x100000,
                kind: E820Kind::Reserved,
            },
            // SeaBIOS keeps the top 128 KiB of low RAM for its tables.
            E820Entry {
                start: 0x100000,
                end: low - 0x20000,
                kind: E820Kind::Usable,
            },
            E820Entry {
                start: low - 0x20000,
                end: low,
                kind: E820Kind::Reserved,
            },
            E820Entry {
                start: 0xfffc0000,
                end: 0x1_0000_0000,
                kind: E820Kind::Reserved,
            },
        ];
        if high > 0 && above_4g_start == 4 * GIB {
            e820.push(E820Entry {
                start: 4 * GIB,
                end: 4 * GIB + high,
                kind: E820Kind::Usable,
            });
        }
        e820.push(E820Entry {
            start: AMD_HT_START,
            end: 1 << 40,
            kind: E820Kind::Reserved,
        });
        if high > 0 && above_4g_start != 4 * GIB {
            e820.push(E820Entry {
                start: above_4g_start,
                end: above_4g_start + high,
                kind: E820Kind::Usable,
            });
        }

        // Guest RAM is handed to the NUMA nodes in order, split around the
        // PCI hole the way QEMU builds its SRAT.
        let numa: Vec<QemuNuma> = if self.numa.is_empty() {
            vec![QemuNuma {
                nodeid: 0,
                cpus: (0..self.possible_cpus()).collect(),
                mem: self.ram,
                generic_initiator: false,
            }]
        } else {
            // QEMU lays guest RAM out by node id, whatever the option order.
            let mut numa = self.numa.clone();
            numa.sort_by_key(|n| n.nodeid);
            numa
        };
        let total: u64 = numa.iter().map(|n| n.mem).sum();
        if total != self.ram {
            return Err(MachineError::Option(
                "-numa".into(),
                format!(
                    "node memory adds up to {total:#x}, not the RAM size {:#x}",
                    self.ram
                ),
            ));
        }
        let mut nodes = Vec::new();
        let mut guest_off = 0u64;
        for n in &numa {
            let mut ranges = Vec::new();
            let (s, e) = (guest_off, guest_off + n.mem);
            if n.mem > 0 {
                if s < low {
                    ranges.push((s, e.min(low)));
                }
                if e > low {
                    let hs = s.max(low) - low + above_4g_start;
                    ranges.push((hs, e - low + above_4g_start));
                }
            }
            guest_off = e;
            // CPUs beyond `-smp N` are possible, not present; those no
            // node names go to the first (as QEMU does, with a warning).
            let mine = |c: &u32| {
                n.cpus.contains(c)
                    || (n.nodeid == numa[0].nodeid && !numa.iter().any(|x| x.cpus.contains(c)))
            };
            let possible: Vec<u32> = (0..self.possible_cpus()).filter(mine).collect();
            nodes.push(NodeSpec {
                id: n.nodeid,
                cpus: possible
                    .iter()
                    .copied()
                    .filter(|&c| c < self.smp.max(1))
                    .collect(),
                mem: ranges,
                hotplug: Vec::new(),
                generic_initiator: n.generic_initiator,
                pxm: None,
                hotplug_cpus: possible
                    .into_iter()
                    .filter(|&c| c >= self.smp.max(1))
                    .collect(),
            });
        }
        let dimm = if self.maxmem > self.ram {
            // pc_memory_init: device memory starts 1 GiB aligned above RAM;
            // each slot adds 1 GiB of alignment slack.
            let base = (above_4g_start + high).div_ceil(GIB) * GIB;
            let size = dimm_size;
            if let Some(last) = nodes.last_mut() {
                last.hotplug.push((base, base + size));
            }
            Some(DimmSpec {
                slots: self.slots,
                base,
                size,
                capacity: Some(self.maxmem - self.ram),
            })
        } else {
            None
        };
        let slit = self.slit()?;
        let cpu_pxms: Vec<u32> = (0..self.possible_cpus())
            .map(|c| {
                nodes
                    .iter()
                    .find(|n| n.cpus.contains(&c) || n.hotplug_cpus.contains(&c))
                    .map_or(0, |n| n.id)
            })
            .collect();
        // acpi_numa_init numbers the SRAT's proximity domains as it meets
        // them: the CPUs' (by APIC id), generic initiators', then memory's
        // (QEMU's node order) and the hotplug range's (the last node).
        let mut order: Vec<u32> = Vec::new();
        let srat = cpu_pxms
            .iter()
            .copied()
            .chain(nodes.iter().filter(|n| n.generic_initiator).map(|n| n.id))
            .chain(nodes.iter().filter(|n| !n.mem.is_empty()).map(|n| n.id))
            .chain(dimm.and(nodes.last()).map(|n| n.id))
            .chain(nodes.iter().map(|n| n.id));
        for pxm in srat {
            if !order.contains(&pxm) {
                order.push(pxm);
            }
        }
        let node_of = |pxm: u32| order.iter().position(|&p| p == pxm).unwrap_or(0) as u32;
        for n in &mut nodes {
            let id = node_of(n.id);
            if id != n.id {
                n.pxm = Some(n.id);
                n.id = id;
            }
        }
        nodes.sort_by_key(|n| n.id);
        // The SLIT is by proximity domain.
        let pxm_of = |nid: usize| {
            nodes
                .iter()
                .find(|n| n.id as usize == nid)
                .map_or(nid, |n| n.pxm.unwrap_or(n.id) as usize)
        };
        let distances: Vec<Vec<u32>> = (0..slit.len())
            .map(|a| {
                (0..slit.len())
                    .map(|b| slit[pxm_of(a)][pxm_of(b)])
                    .collect()
            })
            .collect();
        let acpi = crate::qemu_acpi::QemuAcpi {
            cpus: self.possible_cpus(),
            mem_slots: dimm.map_or(0, |d| d.slots),
            // QEMU turns NUMA on by itself for memory hotplug.
            numa: !self.numa.is_empty() || dimm.is_some(),
            cpu_nodes: cpu_pxms,
            device_memory: dimm.is_some(),
            ram_entries: nodes
                .iter()
                .flat_map(|n| n.mem.iter())
                .map(|&(s, e)| crate::qemu_acpi::srat_pieces(s, e).len() as u32)
                .sum(),
            nodes: nodes.len() as u32,
            ram_above_4g: high > 0,
            initrd_bytes: self.initrd_bytes,
            slit_nodes: distances.len() as u32,
        };
        let m = MachineSpec {
            name: "qemu-pc".into(),
            version,
            hypervisor: true,
            e820,
            nodes,
            cmdline: cmdline.to_string(),
            build: BuildConfig::default(),
            dimm,
            virtio_mem: self.virtio_mem.clone(),
            balloon: self.balloon.clone(),
            boot_alloc: BootAllocSpec::with_initrd(self.initrd_bytes),
            acpi: Some(acpi),
            // QEMU 7.2's i440FX machine with its SeaBIOS, as the oracle's.
            hardware_name: Some(
                "QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014"
                    .into(),
            ),
            distances,
        };
        m.validate()?;
        Ok(m)
    }

    /// The SLIT QEMU builds from `-numa dist` (`validate_numa_distance`,
    /// `complete_init_numa_distance`): a distance given one way holds both
    /// ways, a node's own is 10; empty without `-numa dist`.
    fn slit(&self) -> Result<Vec<Vec<u32>>, MachineError> {
        if self.numa_dist.is_empty() {
            return Ok(Vec::new());
        }
        let bad = |why: String| MachineError::Option("-numa dist".into(), why);
        let n = self.numa.iter().map(|x| x.nodeid + 1).max().unwrap_or(0) as usize;
        let mut d = vec![vec![0u32; n]; n];
        for &(src, dst, val) in &self.numa_dist {
            for (node, what) in [(src, "Source"), (dst, "Destination")] {
                if !self.numa.iter().any(|x| x.nodeid == node) {
                    return Err(bad(format!(
                        "{what} NUMA node is missing. Please use '-numa node' option to declare it first."
                    )));
                }
            }
            if val < 10 {
                return Err(bad(format!(
                    "NUMA distance ({val}) is invalid, it shouldn't be less than 10."
                )));
            }
            if src == dst && val != 10 {
                return Err(bad(format!("Local distance of node {src} should be 10.")));
            }
            d[src as usize][dst as usize] = val;
        }
        let pairs = || (0..n).flat_map(move |a| (0..n).map(move |b| (a, b)));
        let mut asymmetric = false;
        for (a, b) in pairs().filter(|(a, b)| a < b) {
            match (d[a][b], d[b][a]) {
                (0, 0) => {
                    return Err(bad(format!(
                        "The distance between node {a} and {b} is missing, at least one distance value between each nodes should be provided."
                    )))
                }
                (x, y) if x != 0 && y != 0 && x != y => asymmetric = true,
                _ => {}
            }
        }
        if asymmetric && pairs().any(|(a, b)| a != b && d[a][b] == 0) {
            return Err(bad("At least one asymmetrical pair of distances is given, please provide distances for both directions of all node pairs.".into()));
        }
        for (a, b) in pairs() {
            if d[a][b] == 0 {
                d[a][b] = if a == b { 10 } else { d[b][a] };
            }
        }
        Ok(d)
    }
}

impl Default for QemuPc {
    /// QEMU's defaults as the oracle uses them: `-m 1G,slots=4,maxmem=4G`.
    fn default() -> Self {
        QemuPc {
            ram: GIB,
            slots: 4,
            maxmem: 4 * GIB,
            smp: 1,
            maxcpus: 0,
            numa: Vec::new(),
            numa_dist: Vec::new(),
            virtio_mem: Vec::new(),
            balloon: None,
            initrd_bytes: crate::qemu_acpi::ORACLE_INITRD_BYTES,
        }
    }
}

/// QEMU treats a size without a unit as MiB.
fn with_default_unit(v: &str) -> String {
    if v.chars().all(|c| c.is_ascii_digit()) {
        format!("{v}M")
    } else {
        v.to_string()
    }
}

/// A Firecracker microVM: no PCI hole below 3 GiB, no ACPI memory hotplug,
/// no SRAT.
pub fn firecracker(
    ram: u64,
    vcpus: u32,
    cmdline: &str,
    version: KernelVersion,
) -> Result<MachineSpec, MachineError> {
    const MMIO_START: u64 = 0xc000_0000;
    let low = ram.min(MMIO_START);
    let mut e820 = vec![
        E820Entry {
            start: 0,
            end: 0x9fc00,
            kind: E820Kind::Usable,
        },
        E820Entry {
            start: 0x100000,
            end: low,
            kind: E820Kind::Usable,
        },
    ];
    if ram > MMIO_START {
        e820.push(E820Entry {
            start: 4 * GIB,
            end: 4 * GIB + ram - MMIO_START,
            kind: E820Kind::Usable,
        });
    }
    let m = MachineSpec {
        name: "firecracker".into(),
        version,
        hypervisor: true,
        e820,
        nodes: vec![NodeSpec {
            id: 0,
            cpus: (0..vcpus.max(1)).collect(),
            mem: Vec::new(),
            hotplug: Vec::new(),
            generic_initiator: false,
            pxm: None,
            hotplug_cpus: Vec::new(),
        }],
        cmdline: cmdline.to_string(),
        build: BuildConfig::default(),
        dimm: None,
        virtio_mem: Vec::new(),
        balloon: None,
        boot_alloc: BootAllocSpec::default(),
        acpi: None,
        hardware_name: None,
        distances: Vec::new(),
    };
    m.validate()?;
    Ok(m)
}

/// A large two-socket bare-metal x86 host: `ram` split evenly over two
/// nodes, 2 GiB below the 4 GiB hole, 32 CPUs per node, probe enabled.
pub fn baremetal(
    ram: u64,
    cmdline: &str,
    version: KernelVersion,
) -> Result<MachineSpec, MachineError> {
    if ram < 4 * GIB || !ram.is_multiple_of(2 * GIB) {
        return Err(MachineError::Option(
            format!("{ram:#x}"),
            "bare-metal RAM must be a multiple of 2 GiB and at least 4 GiB".into(),
        ));
    }
    let low = 2 * GIB;
    let high_end = 4 * GIB + (ram - low);
    let e820 = vec![
        E820Entry {
            start: 0,
            end: 0x9d000,
            kind: E820Kind::Usable,
        },
        E820Entry {
            start: 0x9d000,
            end: 0xa0000,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            start: 0xe0000,
            end: 0x100000,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            start: 0x100000,
            end: low - 0x0100_0000,
            kind: E820Kind::Usable,
        },
        E820Entry {
            start: low - 0x0100_0000,
            end: low,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            start: 0xfe00_0000,
            end: 0x1_0000_0000,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            start: 4 * GIB,
            end: high_end,
            kind: E820Kind::Usable,
        },
    ];
    let half = 4 * GIB + (ram / 2 - low);
    let nodes = vec![
        NodeSpec {
            id: 0,
            cpus: (0..32).collect(),
            mem: vec![(0, low), (4 * GIB, half)],
            hotplug: Vec::new(),
            generic_initiator: false,
            pxm: None,
            hotplug_cpus: Vec::new(),
        },
        NodeSpec {
            id: 1,
            cpus: (32..64).collect(),
            mem: vec![(half, high_end)],
            hotplug: Vec::new(),
            generic_initiator: false,
            pxm: None,
            hotplug_cpus: Vec::new(),
        },
    ];
    let m = MachineSpec {
        name: "baremetal".into(),
        version,
        hypervisor: false,
        e820,
        nodes,
        cmdline: cmdline.to_string(),
        build: BuildConfig {
            memory_probe: true,
            ..BuildConfig::default()
        },
        dimm: None,
        virtio_mem: Vec::new(),
        balloon: None,
        boot_alloc: BootAllocSpec {
            swiotlb_pages: 0,
            ..BootAllocSpec::default()
        },
        acpi: None,
        hardware_name: None,
        distances: Vec::new(),
    };
    m.validate()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_pc_1g_e820_has_the_seabios_holes() {
        let m = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
        let usable: Vec<_> = m
            .e820
            .iter()
            .filter(|e| e.kind == E820Kind::Usable)
            .map(|e| (e.start, e.end))
            .collect();
        assert_eq!(usable, vec![(0, 0x9fc00), (0x100000, 0x3ffe0000)]);
        assert_eq!(
            m.dimm,
            Some(DimmSpec {
                slots: 4,
                base: 0x1_0000_0000,
                size: 7 * GIB,
                capacity: Some(3 * GIB),
            })
        );
        assert_eq!(m.nodes[0].hotplug, vec![(0x1_0000_0000, 0x2_c000_0000)]);
    }

    #[test]
    fn qemu_pc_4g_splits_at_3g_and_puts_dimms_above_5g() {
        let mut q = QemuPc::default();
        q.parse_mem_option("4G,slots=4,maxmem=8G").unwrap();
        let m = q.machine("", KernelVersion::V6_1).unwrap();
        let usable: Vec<_> = m
            .e820
            .iter()
            .filter(|e| e.kind == E820Kind::Usable)
            .map(|e| (e.start, e.end))
            .collect();
        assert_eq!(
            usable,
            vec![
                (0, 0x9fc00),
                (0x100000, 0xbffe0000),
                (0x1_0000_0000, 0x1_4000_0000)
            ]
        );
        assert_eq!(m.dimm.unwrap().base, 0x1_4000_0000);
    }

    #[test]
    fn qemu_numa_memoryless_node_gets_no_ranges() {
        let q = QemuPc::default().with_node_per_cpu(&[GIB, 0]);
        let m = q.machine("", KernelVersion::V6_1).unwrap();
        assert_eq!(m.nodes[0].mem, vec![(0, GIB)]);
        assert!(m.nodes[1].mem.is_empty());
        assert_eq!(m.nodes[1].hotplug.len(), 1);
    }

    #[test]
    fn bad_mem_options_are_refused_with_the_reason() {
        let mut q = QemuPc::default();
        assert!(matches!(
            q.parse_mem_option("1G,slots=x"),
            Err(MachineError::Option(_, _))
        ));
        assert!(matches!(
            q.parse_mem_option("4G,maxmem=1G"),
            Err(MachineError::Option(_, _))
        ));
        assert!(matches!(
            q.parse_mem_option("1G,foo=1"),
            Err(MachineError::Option(_, _))
        ));
        q.parse_mem_option("2048").unwrap();
        assert_eq!(q.ram, 2 * GIB);
    }

    #[test]
    fn validate_rejects_overlapping_e820_and_duplicate_cpus() {
        let mut m = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
        m.e820[1].start = 0x9f000;
        assert_eq!(
            m.validate(),
            Err(MachineError::Overlap {
                first: 0,
                second: 1
            })
        );
        let mut m = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
        m.nodes.push(NodeSpec {
            id: 1,
            cpus: vec![0],
            mem: vec![],
            hotplug: vec![],
            generic_initiator: false,
            pxm: None,
            hotplug_cpus: Vec::new(),
        });
        assert_eq!(m.validate(), Err(MachineError::DuplicateCpu(0)));
    }

    /// The rootfs's shmem follows the initramfs: the oracle's 1436 KiB
    /// (779 pages, as its guest's `Shmem` shows) and the behaviour
    /// recordings' 2,600,170 bytes (1393 pages); a smaller one holds less.
    #[test]
    fn rootfs_shmem_follows_the_initramfs_size() {
        let shmem = |b| BootAllocSpec::with_initrd(b).runtime.rootfs_shmem;
        assert_eq!(shmem(crate::qemu_acpi::ORACLE_INITRD_BYTES), 779);
        assert_eq!(shmem(2_600_170), 1393);
        assert_eq!(
            BootAllocSpec::with_initrd(crate::qemu_acpi::ORACLE_INITRD_BYTES),
            BootAllocSpec::default()
        );
        assert!(shmem(1 << 20) < 779);
        assert_eq!(shmem(0), 0);
    }

    /// Linux numbers its logical CPUs densely: a description with CPUs 0
    /// and 2 would give `possible` 0-2 with a CPU that is not there.
    #[test]
    fn cpu_numbers_with_a_gap_are_refused() {
        let mut m = QemuPc::default().machine("", KernelVersion::V6_1).unwrap();
        m.nodes[0].cpus = vec![0, 2];
        assert_eq!(
            m.validate(),
            Err(MachineError::CpuGap {
                missing: 1,
                last: 2
            })
        );
        m.nodes[0].cpus = vec![0];
        m.nodes[0].hotplug_cpus = vec![2, 1];
        assert_eq!(m.validate(), Ok(()));
    }

    /// `-numa node,nodeid=0,memdev=m0 -numa node,nodeid=1,cpus=0-1,...`:
    /// the SRAT names the CPUs' domain (1) first, so the kernel calls it
    /// node 0 and the memory-only domain 0 node 1 (recorded:
    /// `conformance/behaviour/numa-pxm-order`); the SLIT and a device's
    /// node follow the domain.
    #[test]
    fn the_cpus_domain_is_numbered_first() {
        let mut q = QemuPc::default();
        q.parse_mem_option("2G,slots=2,maxmem=4G").unwrap();
        let mut q = q.with_nodes(&[(&[], 512 << 20), (&[0, 1], 1536 << 20)]);
        q.numa_dist.push((0, 1, 17));
        let m = q.machine("", KernelVersion::V6_1).unwrap();
        let ids: Vec<(u32, Option<u32>, Vec<u32>)> = m
            .nodes
            .iter()
            .map(|n| (n.id, n.pxm, n.cpus.clone()))
            .collect();
        assert_eq!(ids, vec![(0, Some(1), vec![0, 1]), (1, Some(0), vec![])]);
        // Domain 0 still holds the first 512 MiB; the hotplug range is on
        // the last domain (1), node 0.
        assert_eq!(m.nodes[1].mem[0].0, 0);
        assert!(!m.nodes[0].hotplug.is_empty());
        assert_eq!(m.distances, vec![vec![10, 17], vec![17, 10]]);
        let sys = crate::System::boot(&m).unwrap();
        assert_eq!((sys.node_of_pxm(0), sys.node_of_pxm(1)), (1, 0));
    }

    #[test]
    fn toml_round_trip_keeps_the_machine() {
        let m = QemuPc::default()
            .machine("movable_node", KernelVersion::V6_1)
            .unwrap();
        let text = toml::to_string(&m).unwrap();
        assert_eq!(MachineSpec::from_toml(&text).unwrap(), m);
        assert!(matches!(
            MachineSpec::from_toml("name = 3"),
            Err(MachineError::Toml(_))
        ));
    }
}
