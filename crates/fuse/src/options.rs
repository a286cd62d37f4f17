//! How to mount.

use std::time::Duration;

/// Mount options. `MountOptions::default()` is what `memhp` uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// The mount source shown in `/proc/mounts` (`memhp`).
    pub fsname: String,
    /// Let users other than the mounting one (root) in: `allow_other`.
    pub allow_other: bool,
    /// How long the kernel may trust a name → inode lookup.
    pub entry_ttl: Duration,
    /// How long the kernel may trust an inode's attributes.
    pub attr_ttl: Duration,
    /// How often the tree's generation is polled for changes made behind
    /// the file system's back (control socket, scenario runner).
    pub poll_interval: Duration,
    /// How long a `write(2)`'s reply may wait for the kernel's caches to be
    /// invalidated after the tree changed.
    pub write_sync_timeout: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        // Entries and attributes are invalidated explicitly whenever the
        // tree changes, so the TTLs only bound the damage of a missed change
        // and can be long enough that repeated walks never round-trip.
        MountOptions {
            fsname: "memhp".to_string(),
            allow_other: true,
            entry_ttl: Duration::from_secs(60),
            attr_ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(10),
            write_sync_timeout: Duration::from_secs(5),
        }
    }
}
