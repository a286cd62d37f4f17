//! memhp-fuse: serves a [`memhp_sysfs::vfs::Tree`] as a FUSE file system that
//! behaves, as seen from user space, like sysfs/kernfs: attributes report a
//! size of 4096 but read exactly their content, opens are refused with the
//! tree's errno (`EACCES` even for root), a write stores at most one page,
//! a blocked write is interrupted by a signal to its writer (`EINTR`), and
//! nothing a reader sees is older than the tree.
//!
//! ```no_run
//! # fn demo(tree: std::sync::Arc<dyn memhp_sysfs::vfs::Tree>) -> Result<(), memhp_fuse::FuseError> {
//! use memhp_fuse::{spawn_mount, MountOptions};
//! let mount = spawn_mount(tree, "/run/memhp".as_ref(), &MountOptions::default())?;
//! // ... lsmem --sysroot /run/memhp ...
//! mount.unmount()?;
//! # Ok(()) }
//! ```
//!
//! Mounting needs root and `/dev/fuse`; no libfuse or `fusermount` is used.
//!
//! Inside: `fs` answers the FUSE operations; `interrupt` notices that the
//! writer of a blocked write was signalled (fuser answers `FUSE_INTERRUPT`
//! itself, with `ENOSYS`); `writers` runs writes off the request
//! loop; `invalidate` keeps the kernel's entry and attribute caches in step
//! with the tree (driven by [`Tree::layout_generation`]); `backing` keeps
//! the backing files that reads of read-only opens go to with
//! [`MountOptions::passthrough`]; `inodes` numbers paths; `mount` does
//! mount(2)/umount2(2) and stale-mount recovery.
//!
//! [`Tree::layout_generation`]: memhp_sysfs::vfs::Tree::layout_generation

mod attr;
mod backing;
mod content;
mod error;
mod fs;
mod inodes;
mod interrupt;
mod invalidate;
mod mount;
mod options;
mod session;
mod warm;
mod writers;

pub use error::FuseError;
pub use mount::{recover_stale, unmount};
pub use options::{MountOptions, Opens};
pub use session::{serve, spawn_mount, CacheSync, MountHandle};
