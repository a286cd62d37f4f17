//! Mounting and unmounting, done directly with mount(2)/umount2(2) as root
//! (no libfuse, no fusermount), and the mount point checks around it.

use crate::error::FuseError;
use crate::options::MountOptions;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The file system type we mount as: `fuse` with subtype `memhp`, which is
/// how a stale mount is recognised as ours.
pub(crate) const FSTYPE: &str = "fuse.memhp";

fn c_path(path: &Path) -> Result<CString, FuseError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| FuseError::InvalidPath {
        path: path.to_path_buf(),
    })
}

/// A mount point as the kernel lists it: the canonical parent plus the last
/// component (which cannot be canonicalized itself when it is a dead mount).
fn listed_path(mountpoint: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(mountpoint)?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => Ok(absolute),
    }
}

/// Undo the octal escapes (`\040` for a space, ...) of a mountinfo field.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) mountpoint: PathBuf,
    pub(crate) fstype: String,
    pub(crate) source: String,
}

pub(crate) fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mountpoint = before.split(' ').nth(4)?;
    let mut rest = after.split(' ');
    let fstype = rest.next()?;
    let source = rest.next()?;
    Some(MountEntry {
        mountpoint: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(mountpoint))),
        fstype: fstype.to_string(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
    })
}

/// The topmost mount at `mountpoint`, if any.
pub(crate) fn mount_at(mountpoint: &Path) -> Result<Option<MountEntry>, FuseError> {
    let listed = listed_path(mountpoint).map_err(|source| FuseError::Inspect {
        path: mountpoint.to_path_buf(),
        source,
    })?;
    let table =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| FuseError::Inspect {
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
    // The last match is the topmost of stacked mounts.
    Ok(table
        .lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|entry| entry.mountpoint == listed))
}

fn is_ours(entry: &MountEntry) -> bool {
    entry.fstype == FSTYPE
}

/// If `mountpoint` is a dead FUSE mount (its daemon died: `ENOTCONN`),
/// detach it and return true; false if it is not dead. A dead mount of
/// another FUSE file system is left alone and reported as an error.
pub fn recover_stale(mountpoint: &Path) -> Result<bool, FuseError> {
    match std::fs::metadata(mountpoint) {
        Ok(_) => return Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
        Err(source) => {
            return Err(FuseError::Inspect {
                path: mountpoint.to_path_buf(),
                source,
            })
        }
    }
    match mount_at(mountpoint)? {
        Some(entry) if is_ours(&entry) => {
            tracing::info!(mountpoint = %mountpoint.display(), "detaching stale memhp mount");
            detach(mountpoint)?;
            Ok(true)
        }
        entry => Err(FuseError::ForeignStaleMount {
            path: mountpoint.to_path_buf(),
            fstype: entry.map_or_else(|| "unknown".to_string(), |e| e.fstype),
        }),
    }
}

/// Lazily unmount `mountpoint` (umount2 with `MNT_DETACH`): it disappears at
/// once, and the connection ends when the last open file on it is closed.
pub fn unmount(mountpoint: &Path) -> Result<(), FuseError> {
    detach(mountpoint)
}

fn umount2(mountpoint: &Path, flags: libc::c_int) -> Result<(), FuseError> {
    let path = c_path(mountpoint)?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(path.as_ptr(), flags) };
    if rc == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::EINVAL) {
        return Err(FuseError::NotMounted {
            path: mountpoint.to_path_buf(),
        });
    }
    Err(FuseError::Unmount {
        path: mountpoint.to_path_buf(),
        source,
    })
}

pub(crate) fn detach(mountpoint: &Path) -> Result<(), FuseError> {
    umount2(mountpoint, libc::MNT_DETACH)
}

/// Unmount cleanly if nothing is open on the file system, lazily otherwise.
/// Returns whether the unmount had to be lazy.
pub(crate) fn unmount_preferring_clean(mountpoint: &Path) -> Result<bool, FuseError> {
    match umount2(mountpoint, 0) {
        Ok(()) => Ok(false),
        Err(FuseError::Unmount { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
            detach(mountpoint)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Check that `mountpoint` can take a mount: an existing, empty directory.
/// A stale memhp mount left by a killed daemon is detached first.
pub(crate) fn prepare_mountpoint(mountpoint: &Path) -> Result<(), FuseError> {
    let path = mountpoint.to_path_buf();
    if recover_stale(mountpoint).map_err(|e| match e {
        FuseError::Inspect { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            FuseError::MountpointMissing { path: path.clone() }
        }
        other => other,
    })? {
        tracing::warn!(mountpoint = %mountpoint.display(), "recovered a stale memhp mount");
    }
    let metadata = std::fs::metadata(mountpoint).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => FuseError::MountpointMissing { path: path.clone() },
        _ => FuseError::Inspect {
            path: path.clone(),
            source,
        },
    })?;
    if !metadata.is_dir() {
        return Err(FuseError::MountpointNotDirectory { path });
    }
    let mut entries = std::fs::read_dir(mountpoint).map_err(|source| FuseError::Inspect {
        path: path.clone(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(FuseError::MountpointNotEmpty { path });
    }
    Ok(())
}

/// Open `/dev/fuse` for a new connection.
pub(crate) fn open_device() -> Result<File, FuseError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|source| FuseError::OpenDevice { source })
}

/// The mount(2) data string: the connection and our options. No
/// `default_permissions`: the tree decides `EACCES`, as sysfs's open does.
pub(crate) fn mount_data(fd: i32, options: &MountOptions) -> String {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid}");
    if options.allow_other {
        data.push_str(",allow_other");
    }
    data
}

/// Mount the connection `dev` at `mountpoint` (nosuid, nodev, noexec, like
/// sysfs itself).
pub(crate) fn mount(
    dev: &File,
    mountpoint: &Path,
    options: &MountOptions,
) -> Result<(), FuseError> {
    let target = c_path(mountpoint)?;
    let source = CString::new(options.fsname.as_str()).map_err(|_| FuseError::InvalidFsname {
        fsname: options.fsname.clone(),
    })?;
    let fstype = CString::new(FSTYPE).expect("no NUL in FSTYPE");
    let data = CString::new(mount_data(dev.as_raw_fd(), options)).expect("no NUL in mount data");
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME;
    // SAFETY: all four strings are valid and NUL-terminated for the whole
    // call; `data` is the text option string the fuse file system expects.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(FuseError::Mount {
            path: mountpoint.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_line_with_escaped_space_parses() {
        let line = "1030 29 0:97 / /tmp/a\\040b rw,nosuid,nodev,noexec,relatime - fuse.memhp memhp rw,user_id=0,group_id=0,allow_other";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.mountpoint, PathBuf::from("/tmp/a b"));
        assert_eq!(entry.fstype, "fuse.memhp");
        assert_eq!(entry.source, "memhp");
        assert!(is_ours(&entry));
    }

    #[test]
    fn mountinfo_line_with_optional_fields_parses() {
        let line = "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue";
        let entry = parse_mountinfo_line(line).unwrap();
        assert_eq!(entry.mountpoint, PathBuf::from("/mnt/parent"));
        assert_eq!(entry.fstype, "ext3");
        assert!(!is_ours(&entry));
    }

    #[test]
    fn mount_data_never_asks_the_kernel_to_check_permissions() {
        let data = mount_data(7, &MountOptions::default());
        assert!(data.starts_with("fd=7,rootmode=40000,"));
        assert!(data.ends_with(",allow_other"));
        assert!(!data.contains("default_permissions"));
    }
}
