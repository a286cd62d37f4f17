//! Errors of mounting, serving and unmounting.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("mount point {} does not exist", path.display())]
    MountpointMissing { path: PathBuf },

    #[error("mount point {} is not a directory", path.display())]
    MountpointNotDirectory { path: PathBuf },

    #[error(
        "mount point {} is not empty; refusing to mount over its contents \
         (unmount whatever is there or choose an empty directory)",
        path.display()
    )]
    MountpointNotEmpty { path: PathBuf },

    #[error(
        "mount point {} is a dead FUSE mount of another file system ({fstype}); \
         not touching it",
        path.display()
    )]
    ForeignStaleMount { path: PathBuf, fstype: String },

    #[error("{} is not a mount point", path.display())]
    NotMounted { path: PathBuf },

    #[error("path {} contains a NUL byte", path.display())]
    InvalidPath { path: PathBuf },

    #[error("file system name {fsname:?} contains a NUL byte")]
    InvalidFsname { fsname: String },

    #[error("cannot open /dev/fuse (is the fuse module loaded, and are we root?): {source}")]
    OpenDevice { source: io::Error },

    #[error("mounting on {} failed: {source}", path.display())]
    Mount { path: PathBuf, source: io::Error },

    #[error("unmounting {} failed: {source}", path.display())]
    Unmount { path: PathBuf, source: io::Error },

    #[error("inspecting {} failed: {source}", path.display())]
    Inspect { path: PathBuf, source: io::Error },

    #[error("FUSE session: {what}: {source}")]
    Session {
        what: &'static str,
        source: io::Error,
    },
}
