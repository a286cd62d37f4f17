//! The event counters of `/proc/vmstat` that the model moves
//! (`count_vm_events`): pages migrated (`migrate_pages`' successes: an
//! offline's movable and balloon pages, a soft offline's page), pages into,
//! out of and moved within the balloon, the huge page pool's buddy
//! allocations, and `drop_caches` writes. The other event counters
//! (faults, reclaim, compaction) count what the guest's processes do and
//! read 0.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvents {
    /// `pgmigrate_success`.
    pub pgmigrate_success: u64,
    /// `balloon_inflate`: pages put in the balloon.
    pub balloon_inflate: u64,
    /// `balloon_deflate`: pages given back.
    pub balloon_deflate: u64,
    /// `balloon_migrate`: balloon pages migrated (an offline moved them).
    pub balloon_migrate: u64,
    /// `htlb_buddy_alloc_success`: huge pages the pool got from the buddy
    /// allocator.
    pub htlb_buddy_alloc_success: u64,
    /// `htlb_buddy_alloc_fail`: tries on a node that got none.
    pub htlb_buddy_alloc_fail: u64,
    /// `drop_pagecache`: writes of 1 or 3 to `drop_caches`.
    pub drop_pagecache: u64,
    /// `drop_slab`: writes of 2 or 3 to `drop_caches`.
    pub drop_slab: u64,
}

impl VmEvents {
    /// The counter `/proc/vmstat` names `name`, if it is one of these.
    pub fn get(&self, name: &str) -> Option<u64> {
        Some(match name {
            "pgmigrate_success" => self.pgmigrate_success,
            "balloon_inflate" => self.balloon_inflate,
            "balloon_deflate" => self.balloon_deflate,
            "balloon_migrate" => self.balloon_migrate,
            "htlb_buddy_alloc_success" => self.htlb_buddy_alloc_success,
            "htlb_buddy_alloc_fail" => self.htlb_buddy_alloc_fail,
            "drop_pagecache" => self.drop_pagecache,
            "drop_slab" => self.drop_slab,
            _ => return None,
        })
    }
}
