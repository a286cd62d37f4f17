//! Seeding a live system from a sysfs dump (what `lsmem`'s test dumps and
//! `memhp capture` record): block size, block states, zones and nodes are
//! inferred; attribute text that the model would render differently on that
//! (older or non-x86) kernel — `removable`, `valid_zones` of offline blocks —
//! is kept as dumped until the block changes state.

use crate::block::{BlockState, MemoryBlock, OnlineType};
use crate::cmdline::{KernelCmdline, MemmapOnMemory, OnlinePolicy};
use crate::iomem::Iomem;
use crate::machine::BuildConfig;
use crate::pages::PageMap;
use crate::system::{Node, Params, System};
use crate::zone::ZoneType;
use crate::KernelVersion;
use std::collections::BTreeMap;

/// One `memoryN/` directory of a dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpBlock {
    pub id: u64,
    /// `state` content without the newline.
    pub state: String,
    pub removable: Option<String>,
    pub valid_zones: Option<String>,
    pub phys_device: Option<String>,
    /// Nodes of the `nodeX` links.
    pub nodes: Vec<u32>,
}

/// The parts of a dump the model needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpData {
    /// `block_size_bytes` content without the newline (hex).
    pub block_size_bytes: String,
    pub auto_online_blocks: Option<String>,
    pub blocks: Vec<DumpBlock>,
}

/// Why a dump cannot seed a system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("block_size_bytes {0:?} is not a hex number")]
    BlockSize(String),
    #[error("block size {0:#x} is not a power of two of at least 4 KiB")]
    BadBlockSize(u64),
    #[error("memory{id}: state {state:?} is not online, offline or going-offline")]
    State { id: u64, state: String },
    #[error("memory{id}: valid_zones {zones:?} names an unknown zone")]
    Zone { id: u64, zones: String },
    #[error("the dump has no memory blocks")]
    Empty,
}

fn zone_by_name(name: &str) -> Option<ZoneType> {
    ZoneType::ALL.into_iter().find(|z| z.name() == name)
}

impl System {
    /// Build a system that shows what the dump shows.
    pub fn from_dump(d: &DumpData, version: KernelVersion) -> Result<System, DumpError> {
        let block_size =
            u64::from_str_radix(d.block_size_bytes.trim().trim_start_matches("0x"), 16)
                .map_err(|_| DumpError::BlockSize(d.block_size_bytes.clone()))?;
        if !block_size.is_power_of_two() || block_size < 4096 {
            return Err(DumpError::BadBlockSize(block_size));
        }
        if d.blocks.is_empty() {
            return Err(DumpError::Empty);
        }
        let ppb = block_size >> 12;
        let mut nodes: BTreeMap<u32, Node> = BTreeMap::new();
        let mut blocks = BTreeMap::new();
        for db in &d.blocks {
            let state = match db.state.trim() {
                "online" => BlockState::Online,
                "offline" => BlockState::Offline,
                "going-offline" => BlockState::GoingOffline,
                s => {
                    return Err(DumpError::State {
                        id: db.id,
                        state: s.to_string(),
                    })
                }
            };
            let node_ids = if db.nodes.is_empty() {
                vec![0]
            } else {
                db.nodes.clone()
            };
            for &n in &node_ids {
                nodes.entry(n).or_insert_with(|| Node::new(n)).online = true;
            }
            let nid = *node_ids.last().expect("non-empty");
            let words: Vec<&str> = db
                .valid_zones
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            for w in &words {
                if *w != "none" && zone_by_name(w).is_none() {
                    return Err(DumpError::Zone {
                        id: db.id,
                        zones: db.valid_zones.clone().unwrap_or_default(),
                    });
                }
            }
            let zone = if state != BlockState::Offline && words.len() == 1 {
                zone_by_name(words[0])
            } else {
                None
            };
            if state != BlockState::Offline {
                // The zone whose pages these are: the one listed, or the first
                // of a multi-zone boot block ("none").
                let z = zone.unwrap_or(ZoneType::Normal);
                let node = nodes.get_mut(&nid).expect("inserted");
                let zz = node.zone_mut(z);
                zz.grow(db.id * ppb, ppb);
                zz.present += ppb;
                zz.present_early += ppb;
                zz.managed += ppb;
            }
            blocks.insert(
                db.id,
                MemoryBlock {
                    id: db.id,
                    state,
                    online_type: OnlineType::Offline,
                    nid: Some(nid),
                    link_nodes: node_ids,
                    zone,
                    early: true,
                    nr_vmemmap_pages: 0,
                    group: None,
                    dev_offline: state == BlockState::Offline,
                    firmware_node: None,
                    pages: PageMap::new(ppb),
                    dumped: Some(crate::block::DumpedAttrs {
                        removable: db.removable.clone(),
                        valid_zones: db.valid_zones.clone(),
                    }),
                },
            );
        }
        for n in nodes.values_mut() {
            n.has_memory = n.present_pages() > 0;
            n.has_normal_memory = n.kernel_present_pages() > 0;
            n.boot_zone_ranges = std::array::from_fn(|i| {
                let z = &n.zones[i];
                (z.start_pfn, z.end_pfn())
            });
        }
        let default_online_type = d
            .auto_online_blocks
            .as_deref()
            .and_then(|s| OnlineType::from_sysfs(s.trim().as_bytes()))
            .unwrap_or(OnlineType::Offline);
        let sys = System::assemble(crate::system::Assembly {
            version,
            build: BuildConfig {
                memory_failure: false,
                ..BuildConfig::default()
            },
            cmdline: KernelCmdline::default(),
            hypervisor: false,
            block_size,
            max_pfn: blocks.keys().last().map_or(0, |&l| (l + 1) * ppb),
            params: Params {
                online_policy: OnlinePolicy::ContigZones,
                auto_movable_ratio: 301,
                auto_movable_numa_aware: true,
                memmap_on_memory: MemmapOnMemory::Off,
                default_online_type,
            },
            nodes,
            blocks,
            iomem: Iomem::default(),
            freed_after_boot_watermarks: Vec::new(),
        });
        Ok(sys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(id: u64, state: &str, zones: &str, removable: &str) -> DumpBlock {
        DumpBlock {
            id,
            state: state.into(),
            removable: Some(removable.into()),
            valid_zones: Some(zones.into()),
            phys_device: Some("0".into()),
            nodes: vec![0],
        }
    }

    #[test]
    fn dump_seeds_states_zones_and_keeps_dumped_text() {
        let d = DumpData {
            block_size_bytes: "8000000".into(),
            auto_online_blocks: Some("online".into()),
            blocks: vec![
                block(0, "online", "none", "0"),
                block(1, "online", "DMA32", "1"),
                block(32, "offline", "Normal Movable", "1"),
            ],
        };
        let s = System::from_dump(&d, KernelVersion::V6_1).unwrap();
        assert_eq!(s.block_size, 0x8000000);
        assert_eq!(s.blocks[&0].zone, None);
        assert_eq!(s.blocks[&1].zone, Some(ZoneType::Dma32));
        assert!(s.blocks[&32].dev_offline);
        assert_eq!(s.params.default_online_type, OnlineType::Online);
        assert_eq!(
            s.blocks[&0].dumped.as_ref().unwrap().removable.as_deref(),
            Some("0")
        );
    }

    #[test]
    fn corrupt_dumps_are_refused_with_the_reason() {
        let mut d = DumpData {
            block_size_bytes: "zz".into(),
            ..Default::default()
        };
        assert!(matches!(
            System::from_dump(&d, KernelVersion::V6_1),
            Err(DumpError::BlockSize(_))
        ));
        d.block_size_bytes = "3000".into();
        assert!(matches!(
            System::from_dump(&d, KernelVersion::V6_1),
            Err(DumpError::BadBlockSize(_))
        ));
        d.block_size_bytes = "8000000".into();
        assert_eq!(
            System::from_dump(&d, KernelVersion::V6_1).err(),
            Some(DumpError::Empty)
        );
        d.blocks = vec![block(0, "sideways", "DMA", "1")];
        assert!(matches!(
            System::from_dump(&d, KernelVersion::V6_1),
            Err(DumpError::State { .. })
        ));
        d.blocks = vec![block(0, "online", "Bogus", "1")];
        assert!(matches!(
            System::from_dump(&d, KernelVersion::V6_1),
            Err(DumpError::Zone { .. })
        ));
    }
}
