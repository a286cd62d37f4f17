//! The kernel may cache entries and attributes, but a reader must never see
//! anything older than the tree: not after a write, and not after a change
//! made behind the mount's back (a control socket) once it has been picked
//! up by the poller or by `MountHandle::sync_caches`.

mod fixture;

use fixture::{errno_of, read_at_0, FixtureTree, Mounted};
use memhp_sysfs::vfs::EntryKind;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// `dir/sub` and its leaf no longer resolve, and `dir` counts one link
/// fewer.
fn assert_sub_gone(m: &Mounted) {
    assert_eq!(errno_of(std::fs::metadata(m.path("dir/sub"))), libc::ENOENT);
    assert_eq!(
        errno_of(std::fs::metadata(m.path("dir/sub/leaf"))),
        libc::ENOENT
    );
    assert_eq!(std::fs::metadata(m.path("dir")).unwrap().nlink(), 2);
}

#[test]
fn content_changed_behind_the_mounts_back_is_read_fresh_at_once() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"initial\n");
    m.tree.set_content("dir/rw", b"online\n");
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"online\n");
    m.tree.set_content("dir/rw", b"offline\n");
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"offline\n");
}

/// `dir/rw` opened and read once (its initial content), then changed
/// behind the mount's back to `online\n`.
fn kept_rw_changed_behind_the_mounts_back(m: &Mounted) -> File {
    let f = File::open(m.path("dir/rw")).unwrap();
    assert_eq!(read_at_0(&f), b"initial\n");
    m.tree.set_content("dir/rw", b"online\n");
    f
}

#[test]
fn file_kept_open_with_passthrough_sees_new_content_once_synced() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = kept_rw_changed_behind_the_mounts_back(&m);
    assert!(m.handle().sync_caches());
    assert_eq!(read_at_0(&f), b"online\n");
}

#[test]
fn file_kept_open_with_passthrough_sees_a_change_behind_the_mounts_back_within_the_poll_interval() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = kept_rw_changed_behind_the_mounts_back(&m);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = read_at_0(&f);
        if now == b"online\n" {
            break;
        }
        assert_eq!(now, b"initial\n", "only the old or the new content");
        assert!(Instant::now() < deadline, "change never seen");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn file_kept_open_and_reread_from_offset_0_sees_a_change_behind_the_mounts_back_at_once() {
    let m = Mounted::new(FixtureTree::standard());
    let f = kept_rw_changed_behind_the_mounts_back(&m);
    assert_eq!(read_at_0(&f), b"online\n");
}

#[test]
fn entry_added_behind_the_mounts_back_resolves_at_once() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(
        errno_of(std::fs::metadata(m.path("dyn/memory9"))),
        libc::ENOENT
    );
    m.tree.add("dyn/memory9", EntryKind::Dir);
    assert!(std::fs::metadata(m.path("dyn/memory9")).unwrap().is_dir());
}

#[test]
fn entry_removed_behind_the_mounts_back_stops_resolving_within_the_poll_interval() {
    let m = Mounted::new(FixtureTree::standard());
    m.tree.add("dyn/memory9", EntryKind::Dir);
    m.tree
        .add("dyn/memory9/state", EntryKind::File { mode: 0o644 });
    assert!(std::fs::metadata(m.path("dyn/memory9/state")).is_ok());
    m.tree.remove("dyn/memory9");
    let start = Instant::now();
    while std::fs::metadata(m.path("dyn/memory9")).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still resolves after 2 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        errno_of(std::fs::metadata(m.path("dyn/memory9/state"))),
        libc::ENOENT
    );
    eprintln!("removal seen after {:?}", start.elapsed());
}

#[test]
fn sync_caches_makes_a_removal_visible_before_it_returns() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(std::fs::read(m.path("dir/sub/leaf")).unwrap(), b"leaf\n");
    m.tree.remove("dir/sub");
    assert!(m.handle().sync_caches());
    assert_sub_gone(&m);
}

#[test]
fn write_that_removes_entries_has_them_gone_when_it_returns() {
    let m = Mounted::new(FixtureTree::standard());
    assert!(std::fs::metadata(m.path("dir/sub/leaf")).is_ok());
    assert_eq!(std::fs::metadata(m.path("dir")).unwrap().nlink(), 3);
    let mut eject = m.open_write("eject");
    assert_eq!(eject.write(b"1\n").unwrap(), 2);
    // No waiting: the write's reply waited for the invalidation.
    assert_sub_gone(&m);
}

#[test]
fn mode_changed_behind_the_mounts_back_is_seen_after_sync() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(
        std::fs::metadata(m.path("dir/ro")).unwrap().mode() & 0o777,
        0o444
    );
    m.tree.set_mode("dir/ro", 0o644);
    assert!(m.handle().sync_caches());
    assert_eq!(
        std::fs::metadata(m.path("dir/ro")).unwrap().mode() & 0o777,
        0o644
    );
}

#[test]
fn repeated_stats_and_opens_are_answered_from_the_kernel_cache() {
    let m = Mounted::new(FixtureTree::standard());
    for _ in 0..50 {
        std::fs::metadata(m.path("dir/ro")).unwrap();
        assert_eq!(std::fs::read(m.path("dir/ro")).unwrap(), b"read-only\n");
    }
    assert_eq!(m.tree.lookups_of("dir/ro"), 1, "one LOOKUP, then cached");
    assert_eq!(m.tree.lookups_of("dir"), 1);
}

#[test]
fn unrelated_changes_do_not_flush_cached_entries() {
    let m = Mounted::new(FixtureTree::standard());
    std::fs::metadata(m.path("dir/ro")).unwrap();
    for i in 0..20 {
        m.tree.set_content("dir/rw", format!("{i}\n").as_bytes());
        assert!(m.handle().sync_caches());
        std::fs::metadata(m.path("dir/ro")).unwrap();
    }
    assert_eq!(m.tree.lookups_of("dir/ro"), 1);
}

#[test]
fn content_changes_alone_never_rescan_the_tree() {
    let m = Mounted::new(FixtureTree::standard());
    std::fs::metadata(m.path("dir/sub/leaf")).unwrap();
    assert!(m.handle().sync_caches());
    let before = m.tree.readdirs();
    for i in 0..10 {
        let mut f = m.open_write("dir/rw");
        assert_eq!(f.write(format!("{i}\n").as_bytes()).unwrap(), 2);
        m.tree.set_content("dir/ro", b"x\n");
        assert!(m.handle().sync_caches());
    }
    assert_eq!(
        m.tree.readdirs(),
        before,
        "a content change made the tree be walked"
    );
    m.tree.remove("dyn");
    assert!(m.handle().sync_caches());
    assert!(
        m.tree.readdirs() > before,
        "a layout change must be scanned"
    );
}

#[test]
fn tree_without_a_layout_generation_still_invalidates_on_any_change() {
    let m = Mounted::new(FixtureTree::generation_only());
    assert!(std::fs::metadata(m.path("dir/sub/leaf")).is_ok());
    let mut eject = m.open_write("eject");
    assert_eq!(eject.write(b"1\n").unwrap(), 2);
    assert_eq!(errno_of(std::fs::metadata(m.path("dir/sub"))), libc::ENOENT);
    m.tree.remove("dyn");
    assert!(m.handle().sync_caches());
    assert_eq!(errno_of(std::fs::metadata(m.path("dyn"))), libc::ENOENT);
}
