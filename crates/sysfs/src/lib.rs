//! memhp-sysfs: the byte-exact sysfs/procfs view over the model.
//!
//! [`render`] and [`store`] are the attribute show/store methods, [`stats`]
//! the page-counter files of procfs and the node directories; [`tree`]
//! resolves paths into them; [`vfs::Tree`] is the contract the transports
//! (FUSE, the scenario runner) serve.

pub mod acpi;
pub mod cpu;
pub mod pci;
pub mod render;
pub mod stats;
pub mod store;
pub mod tree;
pub mod vfs;

pub use tree::SysfsTree;
