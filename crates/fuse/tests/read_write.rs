//! Reading and writing attributes through a real mount, as sysfs behaves.

mod fixture;

use fixture::{errno_of, long_content, FixtureTree, Mounted, LONG_LEN};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

#[test]
fn read_returns_the_content_length_not_the_reported_4096() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = File::open(m.path("dir/rw")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 4096);
    let mut buf = vec![0u8; 4096];
    assert_eq!(f.read(&mut buf).unwrap(), 8);
    assert_eq!(&buf[..8], b"initial\n");
    assert_eq!(f.read(&mut buf).unwrap(), 0, "second read is end of file");
    assert_eq!(
        std::fs::read_to_string(m.path("dir/ro")).unwrap(),
        "read-only\n"
    );
}

#[test]
fn read_at_offset_returns_the_remainder_and_past_the_end_nothing() {
    let m = Mounted::new(FixtureTree::standard());
    let f = File::open(m.path("dir/ro")).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(f.read_at(&mut buf, 5).unwrap(), 5);
    assert_eq!(&buf[..5], b"only\n");
    assert_eq!(f.read_at(&mut buf, 10).unwrap(), 0, "at the end");
    assert_eq!(f.read_at(&mut buf, 4000).unwrap(), 0, "past the end");
    assert_eq!(f.read_at(&mut buf, 1 << 40).unwrap(), 0, "far past the end");
}

#[test]
fn small_reads_reassemble_a_file_longer_than_a_page() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = File::open(m.path("dir/long")).unwrap();
    let mut content = Vec::new();
    let mut chunk = [0u8; 7];
    loop {
        let n = f.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        content.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(content.len(), LONG_LEN);
    assert_eq!(content, long_content());
    assert_eq!(std::fs::read(m.path("dir/long")).unwrap(), long_content());
}

#[test]
fn write_open_of_read_only_file_is_eacces_even_for_root() {
    let m = Mounted::new(FixtureTree::standard());
    let e = errno_of(OpenOptions::new().write(true).open(m.path("dir/ro")));
    assert_eq!(e, libc::EACCES);
    let e = errno_of(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path("dir/ro")),
    );
    assert_eq!(e, libc::EACCES);
}

#[test]
fn read_open_of_write_only_file_is_eacces_even_for_root() {
    let m = Mounted::new(FixtureTree::standard());
    assert_eq!(errno_of(File::open(m.path("dir/wo"))), libc::EACCES);
    let e = errno_of(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path("dir/wo")),
    );
    assert_eq!(e, libc::EACCES);
    let mut f = m.open_write("dir/wo");
    assert_eq!(f.write(b"1\n").unwrap(), 2);
}

#[test]
fn write_of_online_returns_7_and_is_read_back() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = m.open_write("dir/rw");
    assert_eq!(f.write(b"online\n").unwrap(), 7);
    assert_eq!(m.tree.last_write(), b"online\n");
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"online\n");
}

#[test]
fn write_longer_than_a_page_is_a_short_write_of_4096() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = m.open_write("dir/rw");
    let data = vec![b'x'; 10_000];
    assert_eq!(f.write(&data).unwrap(), 4096);
    assert_eq!(m.tree.write_calls(), 1, "the kernel must not send the rest");
    assert_eq!(m.tree.last_write().len(), 4096);
    let huge = vec![b'y'; 1 << 20];
    assert_eq!(f.write(&huge).unwrap(), 4096);
    assert_eq!(m.tree.write_calls(), 2);
}

#[test]
fn zero_length_write_returns_0_without_reaching_the_tree() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = m.open_write("dir/rw");
    assert_eq!(f.write(b"").unwrap(), 0);
    assert_eq!(m.tree.write_calls(), 0);
}

#[test]
fn open_with_o_trunc_succeeds_and_keeps_the_attribute() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("dir/rw"))
        .unwrap();
    assert_eq!(std::fs::metadata(m.path("dir/rw")).unwrap().len(), 4096);
    assert_eq!(f.write(b"online\n").unwrap(), 7);
    // What `echo online > file` does.
    std::fs::write(m.path("dir/rw"), b"offline\n").unwrap();
    assert_eq!(std::fs::read(m.path("dir/rw")).unwrap(), b"offline\n");
}

#[test]
fn failing_show_method_returns_eio_on_read_not_on_open() {
    let m = Mounted::new(FixtureTree::standard());
    let mut f = File::open(m.path("dir/eio")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(errno_of(f.read(&mut buf)), libc::EIO);
}

#[test]
fn creating_a_file_is_refused_like_sysfs() {
    let m = Mounted::new(FixtureTree::standard());
    let e = errno_of(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(m.path("dir/new")),
    );
    assert_eq!(e, libc::EACCES);
    assert_eq!(
        errno_of(std::fs::create_dir(m.path("dir/newdir"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(std::fs::remove_file(m.path("dir/rw"))),
        libc::EPERM
    );
}

#[test]
fn readers_holding_a_file_open_while_it_is_rewritten_see_only_whole_contents() {
    // Lengths differ, so a read mixing one content's size with the other's
    // bytes would show (as reads of backing files being rewritten can).
    const A: &[u8] = b"online\n";
    const B: &[u8] = b"Normal Movable\n";
    let m = Mounted::new(FixtureTree::standard());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reads = std::sync::atomic::AtomicU64::new(0);
    let torn = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let f = File::open(m.path("dir/rw")).unwrap();
                    let mut torn = Vec::new();
                    let mut buf = [0u8; 64];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let n = f.read_at(&mut buf, 0).unwrap();
                        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if ![A, B, b"initial\n"].contains(&&buf[..n]) {
                            torn.push(buf[..n].to_vec());
                        }
                    }
                    torn
                })
            })
            .collect();
        let mut w = m.open_write("dir/rw");
        for i in 0..20_000 {
            w.write_all(if i % 2 == 0 { A } else { B }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(reads.into_inner() > 1000, "the readers hardly ran");
    assert!(
        torn.is_empty(),
        "{} torn reads, e.g. {:?}",
        torn.len(),
        &torn[..torn.len().min(3)]
    );
}
