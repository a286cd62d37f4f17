//! memhp-fuse: serves a `memhp_sysfs::vfs::Tree` over FUSE.
