//! Attributes as sysfs reports them: directories 0755 with a link count of
//! two plus their subdirectories, attributes with their mode and a size of
//! 4096 whatever their content, symlinks 0777 sized by their target; all
//! owned by root, all with the same timestamp (the mount time) until what
//! the kernel caches of them changes (see `fs::MemhpFs::attr_for`).

use memhp_sysfs::vfs::EntryKind;
use std::time::SystemTime;

/// The size sysfs reports for every attribute file (one page).
pub(crate) const FILE_SIZE: u64 = 4096;

/// The link count of a directory with these entries: `.`, the entry in its
/// parent, and one `..` per subdirectory.
pub(crate) fn dir_nlink(entries: &[(String, EntryKind)]) -> u32 {
    let subdirs = entries
        .iter()
        .filter(|(_, k)| matches!(k, EntryKind::Dir))
        .count();
    2u32.saturating_add(u32::try_from(subdirs).unwrap_or(u32::MAX))
}

pub(crate) fn file_type(kind: &EntryKind) -> fuser::FileType {
    match kind {
        EntryKind::Dir => fuser::FileType::Directory,
        EntryKind::File { .. } => fuser::FileType::RegularFile,
        EntryKind::Symlink { .. } => fuser::FileType::Symlink,
    }
}

/// The attributes of inode `ino` holding `kind` (`nlink` is only used for
/// directories).
pub(crate) fn attributes(
    ino: u64,
    kind: &EntryKind,
    nlink: u32,
    time: SystemTime,
) -> fuser::FileAttr {
    let (perm, size, nlink) = match kind {
        EntryKind::Dir => (0o755, 0, nlink),
        EntryKind::File { mode } => (mode & 0o7777, FILE_SIZE, 1),
        // kernfs symlinks report size 0 (not their target's length).
        EntryKind::Symlink { .. } => (0o777, 0, 1),
    };
    fuser::FileAttr {
        ino: fuser::INodeNo(ino),
        size,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: file_type(kind),
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: FILE_SIZE as u32,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_link_count_counts_subdirectories_only() {
        let entries = vec![
            ("a".to_string(), EntryKind::Dir),
            ("b".to_string(), EntryKind::File { mode: 0o644 }),
            ("c".to_string(), EntryKind::Symlink { target: "a".into() }),
            ("d".to_string(), EntryKind::Dir),
        ];
        assert_eq!(dir_nlink(&entries), 4);
        assert_eq!(dir_nlink(&[]), 2);
    }

    #[test]
    fn files_report_one_page_whatever_their_mode() {
        let now = SystemTime::UNIX_EPOCH;
        let a = attributes(5, &EntryKind::File { mode: 0o200 }, 9, now);
        assert_eq!(
            (a.perm, a.size, a.nlink, a.uid, a.gid),
            (0o200, 4096, 1, 0, 0)
        );
        let l = attributes(
            6,
            &EntryKind::Symlink {
                target: "../../node/node0".into(),
            },
            9,
            now,
        );
        // kernfs symlinks are size 0 (`stat` in the guest: recorded in
        // conformance/behaviour `fs-walk`), not their target's length.
        assert_eq!(
            (l.perm, l.size, l.kind),
            (0o777, 0, fuser::FileType::Symlink)
        );
        let d = attributes(7, &EntryKind::Dir, 3, now);
        assert_eq!(
            (d.perm, d.nlink, d.kind),
            (0o755, 3, fuser::FileType::Directory)
        );
    }
}
