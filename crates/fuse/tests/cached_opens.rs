//! `Opens::Cached`: opens never leave the kernel, cached attributes cost no
//! request, and nothing a reader sees is older than the tree. What moves is
//! where an access is refused: at the first read, write or `O_TRUNC`.

mod fixture;

use fixture::{errno_of, FixtureTree, Mounted};
use memhp_fuse::{MountOptions, Opens};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

fn cached(tree: Arc<FixtureTree>) -> Mounted {
    Mounted::with_options(
        tree,
        &MountOptions {
            opens: Opens::Cached,
            ..MountOptions::default()
        },
    )
}

#[test]
fn repeated_open_read_close_of_an_unchanged_file_reaches_the_tree_once() {
    let m = cached(FixtureTree::standard());
    for _ in 0..50 {
        assert_eq!(std::fs::read(m.path("dir/ro")).unwrap(), b"read-only\n");
    }
    // One render, for the size in the first attribute reply; the reads
    // were served from what it recorded, then from the kernel's cache.
    assert!(
        m.tree.reads_of("dir/ro") == 1,
        "{} renders for 50 reads",
        m.tree.reads_of("dir/ro")
    );
}

#[test]
fn size_is_the_content_length_so_that_stat_keeps_the_cache() {
    let m = cached(FixtureTree::standard());
    assert_eq!(std::fs::read(m.path("dir/ro")).unwrap(), b"read-only\n");
    assert_eq!(std::fs::metadata(m.path("dir/ro")).unwrap().size(), 10);
    let before = m.tree.reads_of("dir/ro");
    for _ in 0..20 {
        std::fs::metadata(m.path("dir/ro")).unwrap();
        assert_eq!(std::fs::read(m.path("dir/ro")).unwrap(), b"read-only\n");
    }
    assert_eq!(m.tree.reads_of("dir/ro"), before);
}

#[test]
fn changed_content_is_never_read_stale_after_a_sync() {
    let m = cached(FixtureTree::standard());
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"initial\n");
    m.tree.set_content("dir/rw", b"offline\n");
    assert!(m.handle().sync_caches());
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"offline\n");
    assert_eq!(std::fs::metadata(m.path("dir/rw")).unwrap().size(), 8);
    // Shorter again: no stale tail from the longer page.
    m.tree.set_content("dir/rw", b"on\n");
    assert!(m.handle().sync_caches());
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"on\n");
}

#[test]
fn write_then_read_of_the_same_file_sees_the_write() {
    let m = cached(FixtureTree::standard());
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"initial\n");
    let mut f = m.open_write("dir/rw");
    f.write_all(b"x\n").unwrap();
    drop(f);
    assert_eq!(m.tree.last_write(), b"x\n");
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"x\n");
}

#[test]
fn write_only_file_opens_but_its_read_fails_with_eacces() {
    let m = cached(FixtureTree::standard());
    let mut f = File::open(m.path("dir/wo")).unwrap();
    let mut buf = Vec::new();
    assert_eq!(errno_of(f.read_to_end(&mut buf)), libc::EACCES);
}

#[test]
fn read_only_file_refuses_o_trunc_at_open_and_writes_after_a_plain_open() {
    let m = cached(FixtureTree::standard());
    // A shell's `>`: O_WRONLY|O_CREAT|O_TRUNC.
    let trunc = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("dir/ro"));
    assert_eq!(errno_of(trunc), libc::EACCES);
    let mut f = m.open_write("dir/ro");
    assert_eq!(errno_of(f.write(b"1\n")), libc::EACCES);
    assert_eq!(m.tree.write_calls(), 0);
    // The writable file truncates and writes as on sysfs.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("dir/rw"))
        .unwrap();
    assert_eq!(f.write(b"online\n").unwrap(), 7);
}

#[test]
fn directory_listing_cached_by_the_kernel_follows_additions_and_removals() {
    let m = cached(FixtureTree::standard());
    let names = |m: &Mounted| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(m.path("dyn"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(names(&m).is_empty());
    // Our own warming of the listing may still be under way.
    std::thread::sleep(Duration::from_millis(100));
    let before = m.tree.readdirs();
    assert!(names(&m).is_empty());
    assert_eq!(
        m.tree.readdirs(),
        before,
        "second listing came from the kernel"
    );
    m.tree
        .add("dyn/new", memhp_sysfs::vfs::EntryKind::File { mode: 0o444 });
    assert!(m.handle().sync_caches());
    assert_eq!(names(&m), ["new"]);
    m.tree.remove("dyn/new");
    assert!(m.handle().sync_caches());
    assert!(names(&m).is_empty());
}
