//! The guest side of virtio-balloon (`drivers/virtio/virtio_balloon.c`
//! with balloon compaction): inflating takes movable pages from the page
//! allocator and out of their zone's `managed` count (so out of
//! `MemTotal`, without `deflate-on-oom`); deflating gives them back; a
//! balloon page is movable, so offlining migrates it, and a page that lands
//! in another zone moves its `managed` share along
//! (`virtballoon_migratepage`).

use crate::block::BlockState;
use crate::pages::PageState;
use crate::system::System;
use crate::workload::AllocRequest;
use crate::zone::ZoneType;

impl System {
    /// Pages in the balloon.
    pub fn balloon_pages(&self) -> u64 {
        self.blocks
            .values()
            .map(|b| b.pages.count(PageState::Balloon))
            .sum()
    }

    /// The node and zone of page `off` of block `id`.
    pub(crate) fn page_node_zone(&self, id: u64, off: u64) -> (u32, Option<ZoneType>) {
        let b = &self.blocks[&id];
        let pfn = self.block_start_pfn(id) + off;
        (b.nid.unwrap_or(0), self.page_zone(b, pfn))
    }

    /// Move `pages` of `managed` between zones: a balloon page of `from`
    /// now stands in `to`'s place.
    pub(crate) fn move_managed(&mut self, from: (u32, ZoneType), to: (u32, ZoneType), pages: u64) {
        if from == to {
            return;
        }
        let z = self.node_mut(from.0).zone_mut(from.1);
        z.managed += pages;
        let z = self.node_mut(to.0).zone_mut(to.1);
        z.managed = z.managed.saturating_sub(pages);
    }

    /// Take up to `n` pages into the balloon (`fill_balloon`: one
    /// `GFP_HIGHUSER_MOVABLE | __GFP_NORETRY` page at a time from the
    /// node's zonelist, stopping at the zones' min watermarks: "Out of
    /// puff"); returns how many went in.
    pub fn balloon_inflate(&mut self, n: u64) -> u64 {
        let mut nids: Vec<u32> = vec![0];
        nids.extend(
            self.nodes
                .values()
                .filter(|node| node.has_memory && node.id != 0)
                .map(|node| node.id),
        );
        let req = AllocRequest {
            state: PageState::Balloon,
            nids,
            class: ZoneType::Movable,
            watermark: true,
            exclude: None,
        };
        let mut placed = 0;
        for (id, lo, hi) in self.place_pages(&req, n) {
            if let (nid, Some(zone)) = self.page_node_zone(id, lo) {
                let z = self.node_mut(nid).zone_mut(zone);
                z.managed = z.managed.saturating_sub(hi - lo);
            }
            placed += hi - lo;
        }
        self.vm_events.balloon_inflate += placed;
        if placed > 0 {
            self.touch_global();
        }
        placed
    }

    /// Give up to `n` pages back (`leak_balloon`: the pages inflated last,
    /// the highest, first); returns how many.
    pub fn balloon_deflate(&mut self, n: u64) -> u64 {
        let ids: Vec<u64> = self
            .blocks
            .values()
            .rev()
            .filter(|b| b.state != BlockState::Offline)
            .filter(|b| b.pages.count(PageState::Balloon) > 0)
            .map(|b| b.id)
            .collect();
        let mut left = n;
        for id in ids {
            let nid = self.blocks[&id].nid.unwrap_or(0);
            for zone in ZoneType::ALL.into_iter().rev() {
                let Some(window) = self.zone_window(&self.blocks[&id], zone) else {
                    continue;
                };
                let pages = &mut self.blocks.get_mut(&id).expect("listed").pages;
                let freed: u64 = pages
                    .reassign_in(PageState::Balloon, None, left, false, window)
                    .iter()
                    .map(|r| r.1 - r.0)
                    .sum();
                self.node_mut(nid).zone_mut(zone).managed += freed;
                left -= freed;
            }
        }
        self.vm_events.balloon_deflate += n - left;
        if left < n {
            self.touch_global();
        }
        n - left
    }
}
