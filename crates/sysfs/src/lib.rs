//! memhp-sysfs: the byte-exact sysfs/procfs view over the model.
//!
//! Pure functions render and parse every attribute; [`vfs::Tree`] is the
//! contract the transports (FUSE, the scenario runner) serve.

pub mod vfs;
