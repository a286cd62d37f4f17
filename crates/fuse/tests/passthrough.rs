//! Reads through backing files (FUSE passthrough, `MountOptions::passthrough`
//! with exact opens): a read never reaches the daemon, yet shows the tree
//! as it is after every write, and everything else an open file does stays
//! as sysfs does it.

mod fixture;

use fixture::{errno_of, read_at_0, FixtureTree, Mounted};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

#[test]
fn rereads_through_a_kept_descriptor_never_reach_the_tree() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = File::open(m.path("dir/ro")).unwrap();
    for _ in 0..5 {
        assert_eq!(read_at_0(&f), b"read-only\n");
    }
    assert_eq!(m.tree.reads_of("dir/ro"), 1, "rendered once, by the open");
}

#[test]
fn write_while_a_reader_holds_the_file_open_succeeds_and_the_reader_sees_it_at_once() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let reader = File::open(m.path("dir/rw")).unwrap();
    assert_eq!(read_at_0(&reader), b"initial\n");
    // An open that does not name the inode's backing file fails with EIO.
    let mut writer = m.open_write("dir/rw");
    assert_eq!(writer.write(b"online\n").unwrap(), 7);
    assert_eq!(
        m.tree.last_write(),
        b"online\n",
        "the write reached the tree"
    );
    assert_eq!(read_at_0(&reader), b"online\n");
    drop(writer);
    let mut rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("dir/rw"))
        .unwrap();
    assert_eq!(rw.write(b"offline\n").unwrap(), 8);
    assert_eq!(
        read_at_0(&rw),
        b"offline\n",
        "read and write file: through us"
    );
    assert_eq!(read_at_0(&reader), b"offline\n");
}

#[test]
fn reader_opened_while_a_writer_holds_the_file_reads_current_content() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let mut writer = m.open_write("dir/rw");
    let reader = File::open(m.path("dir/rw")).unwrap();
    assert_eq!(writer.write(b"online\n").unwrap(), 7);
    assert_eq!(read_at_0(&reader), b"online\n");
    drop(writer);
    drop(reader);
    let reader = File::open(m.path("dir/rw")).unwrap();
    assert_eq!(read_at_0(&reader), b"online\n");
}

#[test]
fn backed_file_keeps_the_sysfs_size_after_sendfile() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = File::open(m.path("dir/ro")).unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are open; a null offset uses the file's.
    let sent = unsafe { libc::sendfile(fds[1], f.as_raw_fd(), std::ptr::null_mut(), 4096) };
    assert_eq!(sent, 10);
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is writable for its length; fds[0] is open.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(&buf[..n as usize], b"read-only\n");
    // SAFETY: closing the descriptors pipe(2) gave us, once each.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(f.metadata().unwrap().len(), 4096);
    assert_eq!(std::fs::metadata(m.path("dir/ro")).unwrap().len(), 4096);
}

#[test]
fn file_whose_read_has_effects_is_read_through_the_daemon_every_time() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = File::open(m.path("effect")).unwrap();
    for _ in 0..3 {
        assert_eq!(read_at_0(&f), b"effect\n");
    }
    assert_eq!(m.tree.reads_of("effect"), 3);
}

#[test]
fn unreadable_file_still_fails_its_reads() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = File::open(m.path("dir/eio")).unwrap();
    assert_eq!(errno_of(f.read_at(&mut [0u8; 64], 0)), libc::EIO);
}

#[test]
fn removed_file_read_through_a_kept_descriptor_is_empty_and_its_fstat_fails() {
    let m = Mounted::with_passthrough(FixtureTree::standard());
    let f = File::open(m.path("dir/sub/leaf")).unwrap();
    assert_eq!(read_at_0(&f), b"leaf\n");
    let mut eject = m.open_write("eject");
    assert_eq!(eject.write(b"1").unwrap(), 1);
    assert_eq!(read_at_0(&f), b"");
    assert_eq!(errno_of(f.metadata()), libc::ENOENT);
    assert_eq!(errno_of(File::open(m.path("dir/sub/leaf"))), libc::ENOENT);
}

#[test]
fn without_passthrough_every_read_reaches_the_tree() {
    let m = Mounted::new(FixtureTree::standard());
    let f = File::open(m.path("dir/ro")).unwrap();
    for _ in 0..3 {
        assert_eq!(read_at_0(&f), b"read-only\n");
    }
    assert_eq!(m.tree.reads_of("dir/ro"), 3);
}
