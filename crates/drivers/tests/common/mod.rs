//! Helpers shared by the drivers' integration tests.

#![allow(dead_code)] // each test crate uses its own subset

use memhp_drivers::host::Host;

/// The uevents after seqnum `*seen` as `ACTION name` words
/// (`add memory32`, `remove node1`); moves `*seen`.
pub fn uevents(h: &Host, seen: &mut u64) -> Vec<String> {
    let evs = h.shared.read(|s| s.events.uevents_after(*seen));
    if let Some(u) = evs.last() {
        *seen = u.seqnum;
    }
    evs.iter()
        .map(|u| {
            let dev = u.devpath.rsplit('/').next().unwrap_or("");
            format!("{} {dev}", u.action.as_str())
        })
        .collect()
}
