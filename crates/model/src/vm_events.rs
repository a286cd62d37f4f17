//! The event counters of `/proc/vmstat` that memory hotplug and the
//! balloon move (`count_vm_events`): pages migrated (`migrate_pages`'
//! successes: an offline's movable and balloon pages, a soft offline's
//! page) and pages into, out of and moved within the balloon. The other
//! event counters (faults, reclaim, compaction) count what the guest's
//! processes do and read 0.

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
}

impl VmEvents {
    /// The counter `/proc/vmstat` names `name`, if it is one of these.
    pub fn get(&self, name: &str) -> Option<u64> {
        Some(match name {
            "pgmigrate_success" => self.pgmigrate_success,
            "balloon_inflate" => self.balloon_inflate,
            "balloon_deflate" => self.balloon_deflate,
            "balloon_migrate" => self.balloon_migrate,
            _ => return None,
        })
    }
}
