//! The page model of one memory block: what its pages hold, as counts.
//! The offline path (spec 02 §7, §10.4) decides from these counts whether a
//! block can be isolated, migrated and taken offline.

use serde::{Deserialize, Serialize};

/// How migration of this block's movable pages fails, when it is made to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrateFailure {
    /// No target page can be allocated (-ENOMEM): the offline loop retries.
    NoMemory,
    /// The pages are transiently busy (-EAGAIN): the offline loop retries.
    Again,
}

/// Page counts of one block. Pages not accounted here are free (or holes,
/// when `present` is below the block size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageUsage {
    /// Pages of System RAM in the block (the rest are holes).
    pub present: u64,
    /// `PageReserved`: boot-time (memblock) allocations; never managed.
    pub reserved: u64,
    /// In-use kernel pages (slab, page tables, ...): unmovable.
    pub unmovable: u64,
    /// In-use LRU pages (anonymous, page cache, shmem): movable.
    pub movable: u64,
    /// Movable pages with a long-term pin: migration of these never succeeds.
    pub pinned: u64,
    /// Hardware-poisoned pages.
    pub hwpoison: u64,
    /// `PageOffline` pages held by a driver (virtio-mem unplugged sub-blocks).
    pub driver_offline: u64,
    /// Free pages of the hugetlb pool (2 MiB each, 512 base pages).
    #[serde(default)]
    pub huge_free: u64,
    /// Huge pages of the pool in use by an application (migratable).
    #[serde(default)]
    pub huge_used: u64,
    /// Injected migration failure for this block's movable pages.
    pub migrate_failure: Option<MigrateFailure>,
    /// The pfn of the first unmovable page, for the kernel's page dump.
    pub first_unmovable_pfn: Option<u64>,
}

impl PageUsage {
    /// Pages in use by anything (not free).
    pub fn in_use(&self) -> u64 {
        self.reserved
            + self.unmovable
            + self.movable
            + self.pinned
            + self.hwpoison
            + self.driver_offline
            + (self.huge_free + self.huge_used) * crate::hugetlb::HPAGE_PAGES
    }

    /// Free pages, given the memmap_on_memory pages the block hosts.
    pub fn free(&self, vmemmap: u64) -> u64 {
        self.present.saturating_sub(self.in_use() + vmemmap)
    }
}
