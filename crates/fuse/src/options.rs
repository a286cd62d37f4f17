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
    /// Whether opens are sent to us.
    pub opens: Opens,
    /// With [`Opens::Exact`]: answer read-only opens of files whose read
    /// has no side effect with a backing file the kernel reads without
    /// asking us (FUSE passthrough, Linux 6.9+, root), kept current after
    /// every change; see the `backing` module. Off by default: a read
    /// that races with a change of the same file may see part of each
    /// version (the scenario runner, whose steps never race, turns it
    /// on). Without kernel support it stays off, and every read is a
    /// request.
    pub passthrough: bool,
}

/// How opening a file works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Opens {
    /// Every `open(2)` is a request (about 45 µs on a 2-vCPU VM), answered
    /// as kernfs answers it: `EACCES` for a read-only attribute opened for
    /// writing or a write-only one opened for reading, even for root.
    /// Reads never go through the page cache, so sizes stay sysfs's 4096:
    /// each is a request (`FOPEN_DIRECT_IO`), or, for a file opened
    /// read-only, a read of its backing file (see
    /// [`MountOptions::passthrough`]).
    #[default]
    Exact,
    /// Opens never leave the kernel (`fc->no_open`): opening, reading and
    /// closing a cached attribute costs what it costs on tmpfs. The access
    /// check of the open moves to the first read (`EACCES` from `read(2)`),
    /// write (`EACCES` from `write(2)`) or `O_TRUNC` (`EACCES` from
    /// `open(2)`, as with a shell's `>`; `truncate(2)` of a read-only
    /// attribute, which sysfs lets root do, is refused too). A readable
    /// file's size is its content's length, not 4096, and its mtime moves
    /// with its content (see `content` and `attr_for` in `fs`).
    Cached,
}

impl Default for MountOptions {
    fn default() -> Self {
        // Entries and attributes are invalidated explicitly whenever the
        // tree changes, so the TTLs only bound the damage of a missed change
        // and can be long enough that repeated walks never round-trip.
        MountOptions {
            fsname: "memhp".to_string(),
            allow_other: true,
            entry_ttl: Duration::from_secs(3600),
            attr_ttl: Duration::from_secs(3600),
            poll_interval: Duration::from_millis(10),
            opens: Opens::Exact,
            passthrough: false,
        }
    }
}
