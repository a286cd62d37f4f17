//! hugetlb (2 MiB pages on x86-64): the persistent pool (`nr_hugepages`,
//! free and reserved pages), where its pages sit in memory blocks, and what
//! offlining a block does with them (spec 02 §7.2 step 8.4, §7.4):
//! in-use huge pages are migrated like other movable memory; free ones are
//! dissolved back to the buddy allocator, shrinking the pool, unless every
//! free page of the pool is reserved (EBUSY). A dissolved page stays
//! dissolved when the offline fails later.

use crate::block::BlockState;
use crate::hotplug::HotplugError;
use crate::pages::PageState;
use crate::system::System;
use crate::workload::Placement;
use crate::zone::ZoneType;
use serde::{Deserialize, Serialize};

/// Base pages per huge page (2 MiB / 4 KiB).
pub const HPAGE_PAGES: u64 = 512;

/// The pool of the 2 MiB hstate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbPool {
    /// `nr_hugepages` (`h->nr_huge_pages`).
    pub nr_huge_pages: u64,
    /// `free_hugepages`.
    pub free_huge_pages: u64,
    /// `resv_hugepages`: free pages promised to mappings.
    pub resv_huge_pages: u64,
    /// `nr_overcommit_hugepages` (stored; surplus pages come only from
    /// faults, which the model does not make).
    #[serde(default)]
    pub nr_overcommit_huge_pages: u64,
    /// `h->next_nid_to_alloc` and `h->next_nid_to_free`: the round robin of
    /// pool changes over the allowed nodes.
    #[serde(default)]
    pub next_nid_to_alloc: u32,
    #[serde(default)]
    pub next_nid_to_free: u32,
}

/// The node of `nodes` (ascending) at or after `*next`, wrapping; advances
/// `*next` past it (`get_valid_node_allowed` + `next_node_allowed`).
fn next_node(next: &mut u32, nodes: &[u32]) -> Option<u32> {
    let cur = nodes
        .iter()
        .copied()
        .find(|&n| n >= *next)
        .or_else(|| nodes.first().copied())?;
    *next = nodes
        .iter()
        .copied()
        .find(|&n| n > cur)
        .or_else(|| nodes.first().copied())
        .unwrap_or(cur);
    Some(cur)
}

impl System {
    /// The online blocks a hugetlb allocation at `at` may use (any zone:
    /// 2 MiB pages are migratable, so ZONE_MOVABLE is allowed).
    /// Online blocks of the placement, the highest first.
    fn hugetlb_blocks(&self, at: Placement) -> Result<Vec<u64>, HotplugError> {
        let windows = self.placement_windows(at)?;
        Ok(windows.into_iter().rev().map(|w| w.0).collect())
    }

    /// Grow the pool by `count` huge pages taken from free memory at `at`
    /// (`echo N > nr_hugepages`); all or nothing (ENOMEM).
    pub fn hugetlb_grow(&mut self, at: Placement, count: u64) -> Result<(), HotplugError> {
        let ids = self.hugetlb_blocks(at)?;
        let room: u64 = ids.iter().map(|id| self.hpage_room(*id)).sum();
        if room < count {
            return Err(HotplugError::NoMemory(
                "not enough free memory for huge pages",
            ));
        }
        let mut left = count;
        for id in ids {
            left -= self.place_huge(id, PageState::HugeFree, left);
            if left == 0 {
                break;
            }
        }
        self.hugetlb.nr_huge_pages += count;
        self.hugetlb.free_huge_pages += count;
        self.vm_events.htlb_buddy_alloc_success += count;
        self.touch_global();
        Ok(())
    }

    /// `set_max_huge_pages`: a write of `count` to `nr_hugepages`, global
    /// (`nid` `None`: over the nodes with memory, round robin) or of one
    /// node (its own count). Grows the pool one fresh page at a time until
    /// `count` or until no allowed node has room, and shrinks it by free
    /// pages down to `count` (never below the pages in use or reserved).
    /// The write succeeds either way; `nr_hugepages` shows what was done.
    pub fn set_max_huge_pages(&mut self, nid: Option<u32>, count: u64) {
        let nodes: Vec<u32> = match nid {
            Some(n) => vec![n],
            None => self
                .nodes
                .values()
                .filter(|n| n.has_memory)
                .map(|n| n.id)
                .collect(),
        };
        let persistent = self.hugetlb.nr_huge_pages;
        // A node's count becomes a global one.
        let count = match nid {
            Some(n) => count.saturating_add(persistent - self.node_huge_pages(n).0),
            None => count,
        };
        while self.hugetlb.nr_huge_pages < count && self.on_next_node(&nodes, false) {}
        let in_use = self.hugetlb.nr_huge_pages - self.hugetlb.free_huge_pages;
        let floor = count.max(self.hugetlb.resv_huge_pages + in_use);
        while self.hugetlb.nr_huge_pages > floor && self.on_next_node(&nodes, true) {}
        self.touch_global();
    }

    /// One page more (`free`: one less) in the pool, on the first of the
    /// allowed `nodes` that can, taken round robin from the hstate's next
    /// node to allocate (or free) on; false when none can.
    fn on_next_node(&mut self, nodes: &[u32], free: bool) -> bool {
        let mut next = match free {
            true => self.hugetlb.next_nid_to_free,
            false => self.hugetlb.next_nid_to_alloc,
        };
        let done = (0..nodes.len()).any(|_| {
            next_node(&mut next, nodes).is_some_and(|n| match free {
                true => self.free_pool_page_on(n),
                false => self.alloc_pool_page_on(n),
            })
        });
        match free {
            true => self.hugetlb.next_nid_to_free = next,
            false => self.hugetlb.next_nid_to_alloc = next,
        }
        done
    }

    /// A write to `nr_overcommit_hugepages`.
    pub fn set_nr_overcommit_huge_pages(&mut self, count: u64) {
        self.hugetlb.nr_overcommit_huge_pages = count;
        self.touch_global();
    }

    /// `alloc_pool_huge_page` on node `nid` (`GFP_HIGHUSER_MOVABLE |
    /// __GFP_THISNODE`): a whole free pageblock of the highest zone that
    /// stays above its min watermark and lowmem reserve, lowest pfn first.
    fn alloc_pool_page_on(&mut self, nid: u32) -> bool {
        for zone in ZoneType::KERNEL
            .into_iter()
            .chain([ZoneType::Movable])
            .rev()
        {
            if self.zone_headroom(nid, zone, ZoneType::Movable) < HPAGE_PAGES {
                continue;
            }
            let windows: Vec<(u64, (u64, u64))> = self
                .blocks
                .values()
                .filter(|b| b.nid == Some(nid) && b.state == BlockState::Online)
                .filter(|b| !b.pages.is_isolated())
                .filter_map(|b| self.zone_window(b, zone).map(|w| (b.id, w)))
                .collect();
            for (id, window) in windows {
                let p = &mut self.blocks.get_mut(&id).expect("block exists").pages;
                if p.alloc_huge(PageState::HugeFree, 1, window) == 1 {
                    self.hugetlb.nr_huge_pages += 1;
                    self.hugetlb.free_huge_pages += 1;
                    self.vm_events.htlb_buddy_alloc_success += 1;
                    return true;
                }
            }
        }
        self.vm_events.htlb_buddy_alloc_fail += 1;
        false
    }

    /// `remove_pool_huge_page` on node `nid`: the free page the pool took
    /// last (the highest) goes back to the buddy allocator.
    fn free_pool_page_on(&mut self, nid: u32) -> bool {
        let ids: Vec<u64> = self
            .blocks
            .values()
            .rev()
            .filter(|b| b.nid == Some(nid) && b.state == BlockState::Online)
            .filter(|b| b.pages.huge_free() > 0)
            .map(|b| b.id)
            .collect();
        let Some(&id) = ids.first() else {
            return false;
        };
        let p = &mut self.blocks.get_mut(&id).expect("block exists").pages;
        p.reassign(PageState::HugeFree, None, HPAGE_PAGES, false);
        self.hugetlb.nr_huge_pages -= 1;
        self.hugetlb.free_huge_pages -= 1;
        true
    }

    /// Huge pages of the pool on a node's online blocks: (total, free).
    pub fn node_huge_pages(&self, nid: u32) -> (u64, u64) {
        // Every huge page of the pool sits on an online block: an empty
        // pool needs no walk over the blocks.
        if self.hugetlb.nr_huge_pages == 0 {
            return (0, 0);
        }
        self.blocks
            .values()
            .filter(|b| b.nid == Some(nid) && b.state != BlockState::Offline)
            .fold((0, 0), |(t, f), b| {
                let free = b.pages.huge_free();
                (t + free + b.pages.huge_used(), f + free)
            })
    }

    /// Huge pages that fit in the free pageblocks of block `id`.
    fn hpage_room(&self, id: u64) -> u64 {
        let p = &self.blocks[&id].pages;
        p.huge_room((0, p.nr()))
    }

    /// Put up to `n` new huge pages in `state` on block `id`; how many.
    fn place_huge(&mut self, id: u64, state: PageState, n: u64) -> u64 {
        let p = &mut self.blocks.get_mut(&id).expect("block exists").pages;
        let window = (0, p.nr());
        p.alloc_huge(state, n, window)
    }

    /// Change up to `n` huge pages of block `id` from `from` to `to`
    /// (`None`: back to the buddy allocator); how many.
    fn convert_huge(&mut self, id: u64, from: PageState, to: Option<PageState>, n: u64) -> u64 {
        let p = &mut self.blocks.get_mut(&id).expect("block exists").pages;
        let moved: u64 = p
            .reassign(from, to, n * HPAGE_PAGES, to.is_some())
            .iter()
            .map(|r| r.1 - r.0)
            .sum();
        moved / HPAGE_PAGES
    }

    /// Shrink the pool by up to `count` unreserved free huge pages at `at`;
    /// returns how many were released.
    pub fn hugetlb_shrink(&mut self, at: Placement, count: u64) -> Result<u64, HotplugError> {
        let ids = self.hugetlb_blocks(at)?;
        let unreserved = self.hugetlb.free_huge_pages - self.hugetlb.resv_huge_pages;
        let mut left = count.min(unreserved);
        let mut done = 0;
        for id in ids {
            let take = self.convert_huge(id, PageState::HugeFree, None, left);
            left -= take;
            done += take;
        }
        self.hugetlb.nr_huge_pages -= done;
        self.hugetlb.free_huge_pages -= done;
        self.touch_global();
        Ok(done)
    }

    /// An application faults in `count` free pool pages at `at` (they are
    /// in use and migratable); all or nothing (ENOMEM).
    pub fn hugetlb_use(&mut self, at: Placement, count: u64) -> Result<(), HotplugError> {
        let ids = self.hugetlb_blocks(at)?;
        let free: u64 = ids.iter().map(|id| self.blocks[id].pages.huge_free()).sum();
        if free < count {
            return Err(HotplugError::NoMemory("not enough free huge pages"));
        }
        self.move_huge(&ids, count, true);
        self.hugetlb.free_huge_pages -= count;
        self.hugetlb.resv_huge_pages = self
            .hugetlb
            .resv_huge_pages
            .min(self.hugetlb.free_huge_pages);
        self.touch_global();
        Ok(())
    }

    /// The application unmaps up to `count` huge pages at `at`: back to the
    /// pool as free pages; returns how many.
    pub fn hugetlb_unuse(&mut self, at: Placement, count: u64) -> Result<u64, HotplugError> {
        let ids = self.hugetlb_blocks(at)?;
        let done = self.move_huge(&ids, count, false);
        self.hugetlb.free_huge_pages += done;
        self.touch_global();
        Ok(done)
    }

    /// Move up to `count` pool pages of the blocks `ids` from free to in
    /// use (`to_used`) or back; how many moved.
    fn move_huge(&mut self, ids: &[u64], count: u64, to_used: bool) -> u64 {
        let (from, to) = match to_used {
            true => (PageState::HugeFree, PageState::HugeUsed),
            false => (PageState::HugeUsed, PageState::HugeFree),
        };
        let mut left = count;
        for &id in ids {
            left -= self.convert_huge(id, from, Some(to), left);
        }
        count - left
    }

    /// Reserve `count` free pool pages for mappings (`resv_hugepages`),
    /// as `mmap(MAP_HUGETLB)` does before the pages are touched.
    pub fn hugetlb_reserve(&mut self, count: u64) -> Result<(), HotplugError> {
        if count > self.hugetlb.free_huge_pages {
            return Err(HotplugError::NoMemory(
                "fewer free huge pages than the reservation",
            ));
        }
        self.hugetlb.resv_huge_pages = count;
        self.touch_global();
        Ok(())
    }

    /// Offline, `do_migrate_range` for block `id`'s in-use huge pages:
    /// each moves to a free pool page in another online block (other nodes
    /// first), else to a fresh huge page allocated from free memory there
    /// (the pool keeps its size: the source page is freed). False when a
    /// page has nowhere to go (the loop retries).
    pub(crate) fn hugetlb_migrate_out(&mut self, id: u64) -> bool {
        let used = self.blocks[&id].pages.huge_used();
        if used == 0 {
            return true;
        }
        let targets = self.migration_targets(id);
        for _ in 0..used {
            let pool = targets
                .iter()
                .copied()
                .find(|t| self.blocks[t].pages.huge_free() > 0);
            match pool {
                Some(t) => {
                    self.convert_huge(t, PageState::HugeFree, Some(PageState::HugeUsed), 1);
                }
                None => {
                    let Some(t) = targets.iter().copied().find(|&t| self.hpage_room(t) > 0) else {
                        return false;
                    };
                    // A new page for the pool; the source becomes free.
                    self.place_huge(t, PageState::HugeUsed, 1);
                    self.hugetlb.nr_huge_pages += 1;
                    self.hugetlb.free_huge_pages += 1;
                    self.vm_events.htlb_buddy_alloc_success += 1;
                }
            }
            self.convert_huge(id, PageState::HugeUsed, Some(PageState::HugeFree), 1);
        }
        self.touch_global();
        true
    }

    /// Offline, `dissolve_free_huge_pages` over block `id`: each free huge
    /// page leaves the pool, unless the pool's free pages are all reserved
    /// (EBUSY, with the pages dissolved so far staying dissolved).
    pub(crate) fn hugetlb_dissolve(&mut self, id: u64) -> Result<(), HotplugError> {
        while self.blocks[&id].pages.huge_free() > 0 {
            if self.hugetlb.free_huge_pages <= self.hugetlb.resv_huge_pages {
                self.touch_global();
                return Err(HotplugError::Busy("failure to dissolve huge pages"));
            }
            self.convert_huge(id, PageState::HugeFree, None, 1);
            self.hugetlb.nr_huge_pages -= 1;
            self.hugetlb.free_huge_pages -= 1;
        }
        self.touch_global();
        Ok(())
    }

    /// The nodes migration from block `id` may target: other nodes with
    /// memory first (`alloc_migration_target`'s nodemask without the
    /// source node), the source node only when there is none.
    pub(crate) fn migration_nodes(&self, id: u64) -> Vec<u32> {
        let src_nid = self.blocks[&id].nid.unwrap_or(0);
        let others: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| n.has_memory && n.id != src_nid)
            .map(|n| n.id)
            .collect();
        match others.is_empty() {
            true => vec![src_nid],
            false => others,
        }
    }

    /// Online blocks other than `id` that migration may target, the
    /// highest first.
    pub(crate) fn migration_targets(&self, id: u64) -> Vec<u64> {
        let nids = self.migration_nodes(id);
        self.blocks
            .iter()
            .rev()
            .filter(|(&bid, b)| {
                bid != id && b.state == BlockState::Online && nids.contains(&b.nid.unwrap_or(0))
            })
            .map(|(&bid, _)| bid)
            .collect()
    }
}
