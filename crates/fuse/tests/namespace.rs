//! What the tree looks like through a real mount: attributes, inode
//! numbers, symlinks, directory listings.

mod fixture;

use fixture::{errno_of, FixtureTree, Mounted};
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn mode_of(m: &Mounted, rel: &str) -> u32 {
    std::fs::symlink_metadata(m.path(rel)).unwrap().mode()
}

#[test]
fn stat_reports_sysfs_modes_sizes_and_root_ownership() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(mode_of(&m, ""), libc::S_IFDIR | 0o755);
    assert_eq!(mode_of(&m, "dir"), libc::S_IFDIR | 0o755);
    assert_eq!(mode_of(&m, "dir/rw"), libc::S_IFREG | 0o644);
    assert_eq!(mode_of(&m, "dir/ro"), libc::S_IFREG | 0o444);
    assert_eq!(mode_of(&m, "dir/wo"), libc::S_IFREG | 0o200);
    assert_eq!(mode_of(&m, "dir/link"), libc::S_IFLNK | 0o777);
    for rel in ["dir/rw", "dir/ro", "dir/wo", "dir/long", "dir/eio"] {
        let md = std::fs::metadata(m.path(rel)).unwrap();
        assert_eq!(md.len(), 4096, "{rel}");
        assert_eq!((md.uid(), md.gid(), md.nlink()), (0, 0, 1), "{rel}");
    }
    let link = std::fs::symlink_metadata(m.path("dir/link")).unwrap();
    // kernfs: a link's size is 0, whatever its target.
    assert_eq!(link.len(), 0);
    assert_eq!(
        std::fs::read_link(m.path("dir/link")).unwrap(),
        std::path::Path::new("../dir/ro")
    );
    assert_eq!((link.uid(), link.gid()), (0, 0));
}

#[test]
fn directory_link_count_is_two_plus_subdirectories() {
    let m = Mounted::new(FixtureTree::standard());
    // Root: dir, dyn (eject is a file).
    assert_eq!(std::fs::metadata(m.path("")).unwrap().nlink(), 4);
    assert_eq!(std::fs::metadata(m.path("dir")).unwrap().nlink(), 3);
    assert_eq!(std::fs::metadata(m.path("dir/sub")).unwrap().nlink(), 2);
}

#[test]
fn root_is_inode_1_and_inode_numbers_stay_stable() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(std::fs::metadata(m.path("")).unwrap().ino(), 1);
    let first: Vec<u64> = ["dir", "dir/rw", "dir/sub/leaf"]
        .iter()
        .map(|rel| std::fs::metadata(m.path(rel)).unwrap().ino())
        .collect();
    assert_eq!(
        first.iter().collect::<HashSet<_>>().len(),
        3,
        "distinct: {first:?}"
    );
    m.tree.set_content("dir/rw", b"changed\n");
    assert!(m.handle().sync_caches());
    let again: Vec<u64> = ["dir", "dir/rw", "dir/sub/leaf"]
        .iter()
        .map(|rel| std::fs::metadata(m.path(rel)).unwrap().ino())
        .collect();
    assert_eq!(first, again);
}

#[test]
fn readlink_returns_the_trees_target_and_the_link_resolves() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(
        std::fs::read_link(m.path("dir/link")).unwrap(),
        Path::new("../dir/ro")
    );
    assert_eq!(std::fs::read(m.path("dir/link")).unwrap(), b"read-only\n");
    assert_eq!(errno_of(std::fs::read_link(m.path("dir/ro"))), libc::EINVAL);
}

#[test]
fn lookup_of_a_missing_name_is_enoent_and_through_a_file_enotdir() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(
        errno_of(std::fs::metadata(m.path("dir/nope"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(std::fs::metadata(m.path("dir/rw/x"))),
        libc::ENOTDIR
    );
}

/// Every entry of a directory as libc's readdir returns it, `.` and `..`
/// included: (name, d_ino, d_type).
fn raw_readdir(dir: &Path) -> Vec<(String, u64, u8)> {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid path; the DIR stream is used only until the
    // closedir below, and every dirent pointer only until the next readdir.
    unsafe {
        let stream = libc::opendir(c.as_ptr());
        assert!(!stream.is_null(), "opendir {}", dir.display());
        let mut out = Vec::new();
        loop {
            let entry = libc::readdir64(stream);
            if entry.is_null() {
                break;
            }
            let name = CStr::from_ptr((*entry).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push((name, (*entry).d_ino, (*entry).d_type));
        }
        libc::closedir(stream);
        out
    }
}

#[test]
fn readdir_lists_dot_and_dotdot_then_the_trees_order_with_types_and_inodes() {
    let m = Mounted::new(FixtureTree::standard());
    let entries = raw_readdir(&m.path("dir"));
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [".", "..", "rw", "ro", "wo", "eio", "block", "slow", "long", "link", "sub"]
    );
    for (name, ino, d_type) in &entries[2..] {
        let md = std::fs::symlink_metadata(m.path(&format!("dir/{name}"))).unwrap();
        assert_eq!(*ino, md.ino(), "d_ino of {name}");
        let expected = match name.as_str() {
            "link" => libc::DT_LNK,
            "sub" => libc::DT_DIR,
            _ => libc::DT_REG,
        };
        assert_eq!(*d_type, expected, "d_type of {name}");
    }
    assert_eq!(
        entries[0].1,
        std::fs::metadata(m.path("dir")).unwrap().ino()
    );
    assert_eq!(entries[1].1, 1, ".. of dir is the root");
}

#[test]
fn readdir_pages_a_directory_of_70000_entries_in_order_without_repeats() {
    const N: usize = 70_000;
    let m = Mounted::new(FixtureTree::with_big_dir(N));
    let entries = raw_readdir(&m.path("big"));
    assert_eq!(entries.len(), N + 2);
    assert_eq!(entries[0].0, ".");
    assert_eq!(entries[1].0, "..");
    for (i, (name, _, d_type)) in entries[2..].iter().enumerate() {
        assert_eq!(name, &format!("memory{i}"));
        assert_eq!(*d_type, libc::DT_DIR);
    }
    let inodes: HashSet<u64> = entries[2..].iter().map(|e| e.1).collect();
    assert_eq!(inodes.len(), N, "every entry has its own inode number");
    assert_eq!(std::fs::read_dir(m.path("big")).unwrap().count(), N);
}

#[test]
fn rewinddir_sees_entries_added_since_the_directory_was_opened() {
    let m = Mounted::new(FixtureTree::standard());
    let c = CString::new(m.path("dyn").as_os_str().as_bytes()).unwrap();
    // SAFETY: as in raw_readdir; the stream is closed before returning.
    unsafe {
        let stream = libc::opendir(c.as_ptr());
        assert!(!stream.is_null());
        let mut count = 0;
        while !libc::readdir64(stream).is_null() {
            count += 1;
        }
        assert_eq!(count, 2, ". and .. only");
        m.tree
            .add("dyn/new", memhp_sysfs::vfs::EntryKind::File { mode: 0o444 });
        // The kernel caches listings; a change made behind the file
        // system's back reaches it by the next poll, or at once with a sync.
        assert!(m.handle().sync_caches());
        libc::rewinddir(stream);
        let mut names = Vec::new();
        loop {
            let entry = libc::readdir64(stream);
            if entry.is_null() {
                break;
            }
            names.push(
                CStr::from_ptr((*entry).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        libc::closedir(stream);
        assert_eq!(names, [".", "..", "new"]);
    }
}

#[test]
fn access_follows_mode_bits_with_root_overriding_read_and_write() {
    let m = Mounted::new(FixtureTree::standard());
    let ok = |rel: &str, mode: libc::c_int| {
        let c = CString::new(m.path(rel).as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        unsafe { libc::access(c.as_ptr(), mode) == 0 }
    };
    assert!(ok("dir/ro", libc::R_OK | libc::W_OK), "root's DAC override");
    assert!(!ok("dir/ro", libc::X_OK));
    assert!(ok("dir", libc::X_OK));
    assert!(!ok("dir/nope", libc::F_OK));
    assert_eq!(
        std::fs::metadata(m.path("dir/ro"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o444
    );
}

#[test]
fn statfs_reports_page_sized_blocks() {
    let m = Mounted::new(FixtureTree::standard());
    let c = CString::new(m.path("").as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statfs is a valid out buffer for statfs(2).
    let st = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        assert_eq!(libc::statfs(c.as_ptr(), &mut st), 0);
        st
    };
    assert_eq!(st.f_bsize, 4096);
    assert_eq!(st.f_type, 0x6573_5546, "FUSE_SUPER_MAGIC");
}
