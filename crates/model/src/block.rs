//! Memory block devices (spec 01 §3.3, §6): states, online types and the
//! per-block fields of `struct memory_block`.

use crate::pages::{PageMap, PageState};
use crate::zone::ZoneType;
use serde::{Deserialize, Serialize};

/// `mem->state`: only these three are ever stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockState {
    Online,
    GoingOffline,
    Offline,
}

impl BlockState {
    /// What the `state` file prints (without the newline).
    pub const fn as_str(self) -> &'static str {
        match self {
            BlockState::Online => "online",
            BlockState::GoingOffline => "going-offline",
            BlockState::Offline => "offline",
        }
    }
}

/// `MMOP_*` online types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OnlineType {
    Offline = 0,
    Online = 1,
    OnlineKernel = 2,
    OnlineMovable = 3,
}

impl OnlineType {
    pub const ALL: [OnlineType; 4] = [
        OnlineType::Offline,
        OnlineType::Online,
        OnlineType::OnlineKernel,
        OnlineType::OnlineMovable,
    ];

    /// `online_type_to_str[]`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OnlineType::Offline => "offline",
            OnlineType::Online => "online",
            OnlineType::OnlineKernel => "online_kernel",
            OnlineType::OnlineMovable => "online_movable",
        }
    }

    /// `mhp_online_type_from_str()`: sysfs_streq against the four names, in
    /// order; `None` is -EINVAL.
    pub fn from_sysfs(buf: &[u8]) -> Option<OnlineType> {
        OnlineType::ALL
            .into_iter()
            .find(|t| crate::kstr::sysfs_streq(buf, t.as_str().as_bytes()))
    }
}

/// A memory group id (`mgid`).
pub type GroupId = u32;

/// Attribute text kept from a sysfs dump (older or non-x86 kernels show
/// `removable` and `valid_zones` differently).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpedAttrs {
    pub removable: Option<String>,
    /// Dropped when the block changes state (the model's answer applies
    /// from then on).
    pub valid_zones: Option<String>,
}

/// One `struct memory_block` plus the device-core state user space sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBlock {
    /// Block id: the directory is `memory<id>`.
    pub id: u64,
    pub state: BlockState,
    /// Latched `online_type` (normally [`OnlineType::Offline`] at rest; see
    /// the stale-type quirk of spec 01 §6.2).
    pub online_type: OnlineType,
    /// `mem->nid`; `None` = NUMA_NO_NODE.
    pub nid: Option<u32>,
    /// Nodes this block is registered under (`nodeX` links), ascending.
    pub link_nodes: Vec<u32>,
    /// `mem->zone`: set while online; `None` for multi-zone boot blocks.
    pub zone: Option<ZoneType>,
    /// Created at boot (its sections are early sections).
    pub early: bool,
    /// memmap_on_memory reservation at the block start, in pages.
    pub nr_vmemmap_pages: u64,
    pub group: Option<GroupId>,
    /// `dev.offline` (the `online` file prints its negation).
    pub dev_offline: bool,
    /// `firmware_node` link target, for blocks bound to an ACPI device.
    pub firmware_node: Option<String>,
    /// What the pages of this block hold (the page model).
    pub pages: PageMap,
    /// Text kept from a sysfs dump this block was seeded from.
    #[serde(default)]
    pub dumped: Option<DumpedAttrs>,
}

impl MemoryBlock {
    /// A hot-added block of `nr` pages: offline, `dev.offline` set, not
    /// yet under a node; its first `nr_vmemmap_pages` hold its own memmap.
    pub fn new_hotplugged(id: u64, group: Option<GroupId>, nr: u64, nr_vmemmap_pages: u64) -> Self {
        let mut pages = PageMap::new(nr);
        pages.assign(0, nr_vmemmap_pages, Some(PageState::Vmemmap));
        MemoryBlock {
            id,
            state: BlockState::Offline,
            online_type: OnlineType::Offline,
            nid: None,
            link_nodes: Vec::new(),
            zone: None,
            early: false,
            nr_vmemmap_pages,
            group,
            dev_offline: true,
            firmware_node: None,
            pages,
            dumped: None,
        }
    }
}
