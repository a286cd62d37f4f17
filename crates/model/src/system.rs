//! The whole-system state: nodes, zones, blocks, groups, parameters, the
//! iomem tree, and the logs (kernel messages, uevents, notifier trace).

use crate::block::{GroupId, MemoryBlock, OnlineType};
use crate::cmdline::{KernelCmdline, MemmapOnMemory, OnlinePolicy};
use crate::events::{EventLog, NotifierInjection};
use crate::iomem::Iomem;
use crate::machine::BuildConfig;
use crate::units::{PAGES_PER_SECTION, PAGE_SHIFT};
use crate::wmark::Watermarks;
use crate::zone::{Zone, ZoneType, MAX_NR_ZONES};
use crate::KernelVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Runtime-tunable hotplug parameters (`/sys/module/memory_hotplug/...`,
/// `auto_online_blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub online_policy: OnlinePolicy,
    pub auto_movable_ratio: u32,
    pub auto_movable_numa_aware: bool,
    pub memmap_on_memory: MemmapOnMemory,
    /// The default online type (`auto_online_blocks`).
    pub default_online_type: OnlineType,
}

/// One NUMA node (`pg_data_t` plus its node-state bits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: u32,
    /// N_ONLINE; also whether `nodeN/` exists.
    pub online: bool,
    /// N_MEMORY.
    pub has_memory: bool,
    /// N_NORMAL_MEMORY.
    pub has_normal_memory: bool,
    /// Present CPUs mapped to this node (N_CPU when non-empty).
    pub cpus: Vec<u32>,
    pub generic_initiator: bool,
    pub zones: [Zone; MAX_NR_ZONES],
    /// The zone ranges computed at boot (arch limits clipped to the node),
    /// used to tell the zone of a page in a multi-zone boot block.
    pub boot_zone_ranges: [(u64, u64); MAX_NR_ZONES],
}

impl Node {
    pub fn new(id: u32) -> Self {
        Node {
            id,
            online: false,
            has_memory: false,
            has_normal_memory: false,
            cpus: Vec::new(),
            generic_initiator: false,
            zones: [Zone::default(); MAX_NR_ZONES],
            boot_zone_ranges: [(0, 0); MAX_NR_ZONES],
        }
    }

    pub fn zone(&self, z: ZoneType) -> &Zone {
        &self.zones[z.idx()]
    }

    pub fn zone_mut(&mut self, z: ZoneType) -> &mut Zone {
        &mut self.zones[z.idx()]
    }

    /// `node_present_pages`.
    pub fn present_pages(&self) -> u64 {
        self.zones.iter().map(|z| z.present).sum()
    }

    /// Σ present pages of the kernel zones (DMA..Normal).
    pub fn kernel_present_pages(&self) -> u64 {
        ZoneType::KERNEL.iter().map(|&z| self.zone(z).present).sum()
    }

    pub fn managed_pages(&self) -> u64 {
        self.zones.iter().map(|z| z.managed).sum()
    }

    /// Node span: the hull of the zones that span something, `(0, 0)` if none.
    pub fn span(&self) -> (u64, u64) {
        let spans: Vec<_> = self.zones.iter().filter(|z| !z.is_empty()).collect();
        match (
            spans.iter().map(|z| z.start_pfn).min(),
            spans.iter().map(|z| z.end_pfn()).max(),
        ) {
            (Some(s), Some(e)) => (s, e - s),
            _ => (0, 0),
        }
    }
}

/// How a memory group sizes its units (spec 01 §8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupKind {
    Static { max_pages: u64 },
    Dynamic { unit_pages: u64 },
}

/// A memory group (ACPI device, virtio-mem device, dax/kmem).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryGroup {
    pub id: GroupId,
    pub nid: u32,
    pub kind: GroupKind,
    pub present_kernel_pages: u64,
    pub present_movable_pages: u64,
    pub blocks: Vec<u64>,
}

impl MemoryGroup {
    pub fn is_dynamic(&self) -> bool {
        matches!(self.kind, GroupKind::Dynamic { .. })
    }
}

fn default_hostname() -> String {
    "(none)".to_string()
}

/// The complete memory-hotplug state of one machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct System {
    pub version: KernelVersion,
    pub build: BuildConfig,
    pub cmdline: KernelCmdline,
    pub hypervisor: bool,
    /// Memory block size in bytes (fixed at boot).
    pub block_size: u64,
    /// `max_pfn` at boot.
    pub max_pfn: u64,
    pub params: Params,
    /// Every possible node, by id.
    pub nodes: BTreeMap<u32, Node>,
    pub blocks: BTreeMap<u64, MemoryBlock>,
    pub groups: BTreeMap<GroupId, MemoryGroup>,
    pub iomem: Iomem,
    pub events: EventLog,
    pub injection: NotifierInjection,
    /// The 2 MiB hugetlb pool.
    #[serde(default)]
    pub hugetlb: crate::hugetlb::HugetlbPool,
    /// Virtual time in milliseconds: moves only when the host says so
    /// ([`System::advance_clock`]).
    #[serde(default)]
    pub clock_ms: u64,
    /// The task whose write is being handled, for the messages that name
    /// it (set by the transport).
    #[serde(skip)]
    pub current_task: Option<crate::events::CurrentTask>,
    /// Reporting state of an offline whose migration keeps failing.
    #[serde(default)]
    pub retry_log: Option<crate::retrylog::RetryLog>,
    /// `dump_stack`'s "Hardware name".
    #[serde(default)]
    pub hardware_name: Option<String>,
    /// What the running kernel and its rootfs held after boot.
    #[serde(default)]
    pub runtime: crate::machine::RuntimeUsage,
    /// What the guest's tmpfs holds and the pages charged for it.
    #[serde(default)]
    pub tmpfs: crate::workload::TmpfsUsage,
    /// `/proc/vmstat`'s event counters that hotplug and the balloon move.
    #[serde(default)]
    pub vm_events: crate::vm_events::VmEvents,
    /// The UTS node name (`uname -n`, `/proc/sys/kernel/hostname`); a
    /// guest that never sets it shows `(none)`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// The firmware's node distances (SLIT), by node id; empty: 10 for a
    /// node's own, 20 for any other.
    #[serde(default)]
    pub distances: Vec<Vec<u32>>,
    /// Proximity domains the kernel numbered differently (SRAT order:
    /// CPUs, then memory): firmware `_PXM` → node. Absent: the same number.
    #[serde(default)]
    pub pxm_nodes: std::collections::BTreeMap<u32, u32>,
    /// `nr_cpu_ids` when CPUs beyond the present ones are possible
    /// (QEMU's `maxcpus`); 0: only the present ones.
    #[serde(default)]
    pub possible_cpus: u32,
    /// `/sys/kernel/mm`'s KSM, multi-gen LRU, demotion and swap knobs.
    #[serde(default)]
    pub mm_knobs: crate::mm_knobs::MmKnobs,
    /// `cpuidle`'s current governor (`None`: the default, `menu`).
    #[serde(default)]
    pub cpuidle_governor: Option<String>,
    /// Loaded modules, in load order (kernel names).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Devices whose `power/` settings were changed, by kobject path.
    #[serde(default)]
    pub power: BTreeMap<String, crate::device::DevicePower>,
    /// Transparent huge pages' sysfs settings.
    #[serde(default)]
    pub thp: crate::thp::Thp,
    /// `/proc/sys/vm` values as written.
    #[serde(default)]
    pub vm: crate::sysctl::VmSysctls,
    /// QEMU's ACPI memory devices (DIMM slots), if the machine has any.
    #[serde(default)]
    pub acpi_memory: Option<crate::qemu_acpi::MemoryHotplugDevices>,
    /// The PCI bus of a QEMU pc machine (`None`: no PCI).
    #[serde(default)]
    pub pci: Option<crate::pci::PciBus>,
    /// Hardware-poisoned pages (`soft_offline_page`, `hard_offline_page`).
    #[serde(default)]
    pub hwpoison: crate::memory_failure::HwPoison,
    /// The memory notifier chain (callbacks are not serialised).
    #[serde(skip)]
    pub memory_chain: crate::notifier::MemoryChain,
    /// The node notifier chain (mainline; empty and never called in 6.1).
    #[serde(skip)]
    pub node_chain: crate::notifier::NodeChain,
    /// memhp's own fault rules on the memory chain (`fault.rs`).
    #[serde(skip)]
    pub faults: Vec<crate::fault::ActiveFault>,
    pub wmark: Watermarks,
    /// Boot-log lines (what `dmesg` showed before the first `klog`).
    pub bootlog: Vec<String>,
    /// Bumped by every change visible to user space ([`System::touch`]).
    pub(crate) generation: u64,
    /// What each recent change reached (`journal.rs`).
    #[serde(skip)]
    pub(crate) journal: crate::journal::ChangeJournal,
    /// Bumped when entries appear, disappear or change kind or target.
    #[serde(default)]
    pub layout_generation: u64,
    /// The offline whose migration loop is retrying, if any.
    pub offlining: Option<crate::hotplug::InFlightOffline>,
    /// Ranges added by `add_memory*`, by start address.
    pub hot_ranges: BTreeMap<u64, crate::hotadd::HotRange>,
}

/// What a newly running system is made of; [`System::assemble`] adds the
/// empty logs, the boot notifier chain and the watermarks.
pub(crate) struct Assembly {
    pub version: KernelVersion,
    pub build: BuildConfig,
    pub cmdline: KernelCmdline,
    pub hypervisor: bool,
    pub block_size: u64,
    pub max_pfn: u64,
    pub params: Params,
    pub nodes: BTreeMap<u32, Node>,
    pub blocks: BTreeMap<u64, MemoryBlock>,
    pub iomem: Iomem,
    /// Pfn ranges the booted kernel freed only after it last set its
    /// watermarks (none for a system seeded from a dump).
    pub freed_after_boot_watermarks: Vec<(u64, u64)>,
}

impl System {
    /// A running system from its parts (boot, dump seeding).
    pub(crate) fn assemble(a: Assembly) -> System {
        let mut sys = System {
            version: a.version,
            build: a.build,
            cmdline: a.cmdline,
            hypervisor: a.hypervisor,
            block_size: a.block_size,
            max_pfn: a.max_pfn,
            params: a.params,
            nodes: a.nodes,
            blocks: a.blocks,
            groups: BTreeMap::new(),
            iomem: a.iomem,
            events: EventLog::default(),
            injection: NotifierInjection::default(),
            hugetlb: Default::default(),
            clock_ms: 0,
            current_task: None,
            retry_log: None,
            hardware_name: None,
            runtime: Default::default(),
            vm_events: Default::default(),
            tmpfs: Default::default(),
            hwpoison: Default::default(),
            acpi_memory: None,
            pci: None,
            vm: Default::default(),
            thp: Default::default(),
            power: BTreeMap::new(),
            modules: Vec::new(),
            distances: Vec::new(),
            pxm_nodes: BTreeMap::new(),
            possible_cpus: 0,
            cpuidle_governor: None,
            mm_knobs: Default::default(),
            hostname: default_hostname(),
            memory_chain: Default::default(),
            node_chain: Default::default(),
            faults: Vec::new(),
            wmark: Watermarks::default(),
            bootlog: Vec::new(),
            generation: 0,
            journal: Default::default(),
            layout_generation: 0,
            offlining: None,
            hot_ranges: BTreeMap::new(),
        };
        (sys.memory_chain, sys.node_chain) =
            crate::notifier::boot_chains(sys.version, &Default::default());
        sys.wmark = sys.boot_watermarks(&a.freed_after_boot_watermarks);
        let small = sys.wmark.khugepaged_off && !sys.cmdline.thp_never;
        sys.thp = crate::thp::Thp::at_boot(sys.cmdline.thp_enabled, small);
        sys
    }

    /// The watermarks boot leaves: computed while `held` (pfn ranges the
    /// kernel frees later) were not managed yet, so each zone's share
    /// differs by a page or two from what a later recomputation gives (6.1,
    /// 1 GiB: DMA min 190 and DMA32 min 11073 in /proc/zoneinfo, where the
    /// final managed counts give 188 and 11075).
    fn boot_watermarks(&mut self, held: &[(u64, u64)]) -> Watermarks {
        let mut taken = Vec::new();
        for node in self.nodes.values_mut() {
            for z in ZoneType::ALL {
                let span = node.boot_zone_ranges[z.idx()];
                let n: u64 = held.iter().map(|&r| crate::boot::overlap(r, span)).sum();
                let zone = node.zone_mut(z);
                let n = n.min(zone.managed);
                if n > 0 {
                    zone.managed -= n;
                    taken.push((node.id, z, n));
                }
            }
        }
        let w = Watermarks::at_boot(self);
        for (nid, z, n) in taken {
            self.node_mut(nid).zone_mut(z).managed += n;
        }
        w
    }

    /// Pages per memory block.
    pub fn pages_per_block(&self) -> u64 {
        self.block_size >> PAGE_SHIFT
    }

    /// Sections per memory block.
    pub fn sections_per_block(&self) -> u64 {
        self.pages_per_block() / PAGES_PER_SECTION
    }

    /// First pfn of block `id`.
    pub fn block_start_pfn(&self, id: u64) -> u64 {
        id * self.pages_per_block()
    }

    /// The block containing `pfn`.
    pub fn pfn_to_block_id(&self, pfn: u64) -> u64 {
        pfn / self.pages_per_block()
    }

    /// A write to `/proc/sys/kernel/hostname` (`proc_dostring`): its first
    /// line, at most `__NEW_UTS_LEN` (64) bytes.
    pub fn set_hostname(&mut self, data: &[u8]) {
        let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
        self.hostname = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
        self.touch_global();
    }

    /// `node_distance(a, b)`: the SLIT's value, or 10/20 without one.
    pub fn node_distance(&self, a: u32, b: u32) -> u32 {
        match self
            .distances
            .get(a as usize)
            .and_then(|r| r.get(b as usize))
        {
            Some(&d) => d,
            None if a == b => 10,
            None => 20,
        }
    }

    /// `nr_cpu_ids`: one past the highest possible CPU.
    pub fn nr_cpu_ids(&self) -> u32 {
        self.nodes
            .values()
            .flat_map(|n| n.cpus.iter().map(|&c| c + 1))
            .max()
            .unwrap_or(1)
            .max(self.possible_cpus)
    }

    /// `cpuidle`'s current governor.
    pub fn cpuidle_governor(&self) -> &str {
        self.cpuidle_governor.as_deref().unwrap_or("menu")
    }

    /// Switch `cpuidle`'s governor (the name is the caller's to check).
    pub fn set_cpuidle_governor(&mut self, name: &str) {
        self.cpuidle_governor = Some(name.to_string());
    }

    /// The CPUs online (present at boot), in order.
    pub fn online_cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self
            .nodes
            .values()
            .flat_map(|n| n.cpus.iter().copied())
            .collect();
        cpus.sort_unstable();
        cpus
    }

    /// The node the kernel made of firmware proximity domain `pxm`
    /// (`pxm_to_node`): what a DIMM's or a virtio-mem device's `node`
    /// property names.
    pub fn node_of_pxm(&self, pxm: u32) -> u32 {
        self.pxm_nodes.get(&pxm).copied().unwrap_or(pxm)
    }

    pub fn node(&self, nid: u32) -> Option<&Node> {
        self.nodes.get(&nid)
    }

    pub(crate) fn node_mut(&mut self, nid: u32) -> &mut Node {
        self.nodes.entry(nid).or_insert_with(|| Node::new(nid))
    }

    /// The zone a page of an online block belongs to: the block's zone, or
    /// for a multi-zone boot block the zone whose boot range holds it.
    pub fn page_zone(&self, block: &MemoryBlock, pfn: u64) -> Option<ZoneType> {
        if let Some(z) = block.zone {
            return Some(z);
        }
        let node = self.nodes.get(&block.nid?)?;
        ZoneType::ALL.into_iter().find(|z| {
            let (s, e) = node.boot_zone_ranges[z.idx()];
            pfn >= s && pfn < e
        })
    }

    /// The pages of `block` (offsets in it) that belong to `zone`, when
    /// the block is online: all of them for a single-zone block, the
    /// zone's boot range for a multi-zone boot block.
    pub fn zone_window(&self, block: &MemoryBlock, zone: ZoneType) -> Option<(u64, u64)> {
        if block.state == crate::block::BlockState::Offline {
            return None;
        }
        let nr = block.pages.nr();
        if let Some(z) = block.zone {
            return (z == zone).then_some((0, nr));
        }
        let node = self.nodes.get(&block.nid?)?;
        let start = self.block_start_pfn(block.id);
        let (s, e) = node.boot_zone_ranges[zone.idx()];
        let (lo, hi) = (s.max(start), e.min(start + nr));
        (lo < hi).then(|| (lo - start, hi - start))
    }

    /// Total managed pages (`totalram_pages`).
    pub fn totalram_pages(&self) -> u64 {
        self.nodes.values().map(Node::managed_pages).sum()
    }

    /// Nodes with N_ONLINE, ascending.
    pub fn online_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| n.online)
    }

    /// Record a change visible to user space that may reach anything.
    pub fn touch(&mut self) {
        self.record_change(crate::journal::ChangeScope::Everything);
    }

    /// Record a change of block `id`'s own attributes (`state`, `online`,
    /// its zone) and of global state (counters, spans, other blocks'
    /// `valid_zones` while offline), but of no other block's own attributes.
    pub(crate) fn touch_block(&mut self, id: u64) {
        self.record_change(crate::journal::ChangeScope::Block(id));
    }

    /// Record a change of global state only (counters, the huge page
    /// pool), none of any block's own attributes.
    pub(crate) fn touch_global(&mut self) {
        self.record_change(crate::journal::ChangeScope::Global);
    }

    /// Move the generation and journal what the change reached.
    fn record_change(&mut self, scope: crate::journal::ChangeScope) {
        self.generation = self.generation.wrapping_add(1);
        self.journal.record(self.generation, scope);
    }

    /// The counter every change moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What changed after `generation` (see `journal.rs`).
    pub fn changes_since(&self, generation: u64) -> crate::journal::Changes {
        self.journal.since(generation)
    }

    /// Record a change of the tree's layout (entries added or removed,
    /// symlink targets changed): hot-add, remove, node (un)registration,
    /// ACPI (un)binding, debugfs files of the injector.
    pub fn layout_touch(&mut self) {
        self.touch();
        self.layout_generation = self.layout_generation.wrapping_add(1);
    }
}
