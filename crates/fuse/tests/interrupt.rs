//! Writes that block (an offline retrying until its writer is signalled):
//! a signal to the writer must interrupt them with EINTR, and nobody else
//! may wait behind them.

mod fixture;

use fixture::writer::{catch_sigalrm_without_restart, fork_writer, kill_and_reap, wait_for};
use fixture::{errno_of, read_at_0, FixtureTree, Mounted};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BLOCKED: Duration = Duration::from_secs(10);

/// Write `offline\n` to `path` on a new thread; returns the thread's id and
/// the handle yielding the write's result.
fn blocked_writer(path: PathBuf) -> (libc::pthread_t, thread::JoinHandle<std::io::Result<usize>>) {
    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.write(b"offline\n")
    });
    (rx.recv().unwrap(), writer)
}

fn signal_thread(thread: libc::pthread_t) {
    // SAFETY: `thread` is alive (we have not joined it) and SIGALRM is caught.
    assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGALRM) }, 0);
}

fn interrupt_one_blocked_write(m: &Mounted) {
    catch_sigalrm_without_restart();
    let before = m.tree.cancelled_writes();
    let (tid, writer) = blocked_writer(m.path("dir/block"));
    assert!(
        m.tree.wait_blocked(1, BLOCKED),
        "the write never reached the tree"
    );
    signal_thread(tid);
    let result = writer.join().unwrap();
    assert_eq!(errno_of(result), libc::EINTR);
    assert_eq!(m.tree.cancelled_writes(), before + 1);
}

#[test]
fn blocked_write_returns_eintr_when_its_thread_catches_sigalrm() {
    let m = Mounted::new(FixtureTree::standard());
    interrupt_one_blocked_write(&m);
}

#[test]
fn interrupts_keep_arriving_after_the_first_one() {
    // Answering an interrupt with ENOSYS makes the kernel stop sending them
    // (fc->no_interrupt): the second write would then hang.
    let m = Mounted::new(FixtureTree::standard());
    for _ in 0..3 {
        interrupt_one_blocked_write(&m);
    }
}

#[test]
fn readers_and_other_writers_are_not_blocked_behind_a_blocked_write() {
    let m = Mounted::new(FixtureTree::standard());
    catch_sigalrm_without_restart();
    let (tid, writer) = blocked_writer(m.path("dir/block"));
    assert!(m.tree.wait_blocked(1, BLOCKED));

    let start = Instant::now();
    assert_eq!(std::fs::read(m.path("dir/block")).unwrap(), b"online\n");
    assert_eq!(std::fs::read(m.path("dir/ro")).unwrap(), b"read-only\n");
    assert!(std::fs::metadata(m.path("dir/block")).is_ok());
    assert_eq!(std::fs::read_dir(m.path("dir")).unwrap().count(), 9);
    // A second writer of the same file must not wait for the first one's
    // inode lock.
    let mut f = m.open_write("dir/block");
    assert_eq!(f.write(b"online\n").unwrap(), 7);
    let mut f = m.open_write("dir/rw");
    assert_eq!(f.write(b"online\n").unwrap(), 7);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(m.tree.blocked_now(), 1, "the first write is still blocked");

    signal_thread(tid);
    assert_eq!(errno_of(writer.join().unwrap()), libc::EINTR);
}

#[test]
fn alarm_in_the_writer_process_interrupts_its_blocked_write_with_eintr() {
    let m = Mounted::new(FixtureTree::standard());
    let file = m.open_write("dir/block");
    let pid = fork_writer(file.as_raw_fd(), true);
    let Some(status) = wait_for(pid, Duration::from_secs(20)) else {
        kill_and_reap(pid);
        panic!("the alarmed writer hung in write(2): the interrupt was not delivered");
    };
    assert!(libc::WIFEXITED(status), "writer died: status {status:#x}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "0 = EINTR, 2 = other error, 3 = written"
    );
    assert_eq!(m.tree.cancelled_writes(), 1);
}

#[test]
fn sigkilled_writer_process_exits_instead_of_hanging_in_its_write() {
    // A fatal signal still waits for the answer to a request already sent;
    // only the interrupt makes the tree give up.
    let m = Mounted::new(FixtureTree::standard());
    let file = m.open_write("dir/block");
    let pid = fork_writer(file.as_raw_fd(), false);
    assert!(
        m.tree.wait_blocked(1, BLOCKED),
        "the write never reached the tree"
    );
    // SAFETY: `pid` is our own, not yet reaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status =
        wait_for(pid, Duration::from_secs(10)).expect("the killed writer is stuck in its write");
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert_eq!(m.tree.cancelled_writes(), 1);
    // The mount still serves.
    assert_eq!(std::fs::read(m.path("dir/ro")).unwrap(), b"read-only\n");
}

#[test]
fn reader_holding_the_file_open_sees_a_blocked_writes_going_offline_without_a_poll() {
    // No poll for changes behind the mount's back within the test: only a
    // write in flight can make the caches catch up with the tree.
    let m = Mounted::with_options(
        FixtureTree::standard(),
        &memhp_fuse::MountOptions {
            poll_interval: Duration::from_secs(3600),
            passthrough: true,
            ..memhp_fuse::MountOptions::default()
        },
    );
    catch_sigalrm_without_restart();
    let reader = std::fs::File::open(m.path("going")).unwrap();
    assert_eq!(read_at_0(&reader), b"online\n");
    let (tid, writer) = blocked_writer(m.path("going"));
    assert!(m.tree.wait_blocked(1, BLOCKED));
    let deadline = Instant::now() + BLOCKED;
    let mut seen = read_at_0(&reader);
    while seen != b"going-offline\n" && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
        seen = read_at_0(&reader);
    }
    // The writer goes first: a panic with it blocked would hang the test.
    signal_thread(tid);
    assert_eq!(errno_of(writer.join().unwrap()), libc::EINTR);
    assert_eq!(
        seen, b"going-offline\n",
        "the blocked write's state never seen"
    );
    assert_eq!(read_at_0(&reader), b"online\n", "caught up before EINTR");
}
