//! Uevents on a real `NETLINK_KOBJECT_UEVENT` socket, in a network
//! namespace of memhp's own, as the kernel multicasts them to group 1: one
//! datagram per uevent, `ACTION@DEVPATH\0` then `KEY=VALUE\0` for each
//! variable of the model's uevent (`ACTION`, `DEVPATH`, `SUBSYSTEM`,
//! `SEQNUM`, in the kernel's order).
//!
//! The sender is a user-space socket, so its port id is not 0: listeners
//! that accept only kernel messages (systemd-udevd, libudev monitors) drop
//! these; listeners that do not check the sender (busybox `uevent` and
//! `mdev`, custom agents) receive them. Real kernel uevents broadcast to
//! every network namespace reach the same listeners too.
//!
//! Uevents wait in a bounded queue (the control socket's `--event-buffer`)
//! for the sending thread; when it is full they are dropped and counted.

use memhp_model::events::Uevent;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// The multicast group uevents go to.
pub const UEVENT_GROUP: u32 = 1;

/// Why the uevent socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("unshare(CLONE_NEWNET): {0}")]
    Netns(std::io::Error),
    #[error("NETLINK_KOBJECT_UEVENT socket: {0}")]
    Socket(std::io::Error),
    #[error("the uevent thread ended before its socket was ready")]
    Thread,
}

/// The kernel's wire format of one uevent.
pub fn encode(u: &Uevent) -> Vec<u8> {
    let mut msg = format!("{}@{}", u.action.as_str(), u.devpath).into_bytes();
    msg.push(0);
    for (k, v) in u.env() {
        msg.extend_from_slice(k.as_bytes());
        msg.push(b'=');
        msg.extend_from_slice(v.as_bytes());
        msg.push(0);
    }
    msg
}

/// A bounded queue of encoded uevents with its counters.
pub struct UeventQueue {
    tx: SyncSender<Vec<u8>>,
    capacity: usize,
    dropped: AtomicU64,
    sent: Arc<AtomicU64>,
}

impl UeventQueue {
    /// A queue of `capacity` messages and its receiving end.
    pub fn new(capacity: usize) -> (UeventQueue, Receiver<Vec<u8>>) {
        let (tx, rx) = sync_channel(capacity);
        let q = UeventQueue {
            tx,
            capacity,
            dropped: AtomicU64::new(0),
            sent: Arc::new(AtomicU64::new(0)),
        };
        (q, rx)
    }

    /// Queue one uevent; a full queue drops it (counted).
    pub fn push(&self, u: &Uevent) {
        match self.tx.try_send(encode(u)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `(capacity, sent, dropped)`.
    pub fn stats(&self) -> (usize, u64, u64) {
        (
            self.capacity,
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The uevent socket in memhp's network namespace, fed by a queue.
pub struct UeventSender {
    queue: UeventQueue,
    netns: PathBuf,
}

impl UeventSender {
    /// Start the sending thread: it moves into a new network namespace,
    /// opens and binds its socket, and then sends whatever is queued.
    pub fn start(capacity: usize) -> Result<UeventSender, NetlinkError> {
        let (queue, rx) = UeventQueue::new(capacity);
        let sent = Arc::clone(&queue.sent);
        let (ready_tx, ready_rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("uevent-netlink".into())
            .spawn(move || {
                let fd = match open_in_new_netns() {
                    Ok(fd) => fd,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let netns =
                    PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()));
                let _ = ready_tx.send(Ok(netns));
                for msg in rx {
                    match send_group(&fd, &msg) {
                        Ok(()) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!("uevent netlink send: {e}"),
                    }
                }
            })
            .map_err(NetlinkError::Socket)?;
        let netns = ready_rx.recv().map_err(|_| NetlinkError::Thread)??;
        Ok(UeventSender { queue, netns })
    }

    /// The namespace listeners must join (`nsenter --net=PATH`); valid
    /// while memhp runs.
    pub fn netns(&self) -> &std::path::Path {
        &self.netns
    }

    pub fn queue(&self) -> &UeventQueue {
        &self.queue
    }
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// On the calling thread: a new network namespace, and a
/// `NETLINK_KOBJECT_UEVENT` socket bound in it (port id chosen by the
/// kernel, no groups).
fn open_in_new_netns() -> Result<std::os::fd::OwnedFd, NetlinkError> {
    use std::os::fd::FromRawFd;
    // SAFETY: unshare only changes this thread's namespace membership.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(NetlinkError::Netns(last_error()));
    }
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    };
    if raw < 0 {
        return Err(NetlinkError::Socket(last_error()));
    }
    // SAFETY: raw is a fresh descriptor owned by nobody else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let addr = sockaddr_nl(0);
    // SAFETY: addr is a valid sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(NetlinkError::Socket(last_error()));
    }
    Ok(fd)
}

fn sockaddr_nl(groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_groups = groups;
    a
}

/// Multicast one message to the uevent group.
fn send_group(fd: &std::os::fd::OwnedFd, msg: &[u8]) -> std::io::Result<()> {
    let dest = sockaddr_nl(UEVENT_GROUP);
    // SAFETY: msg and dest are valid for the lengths passed.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&dest as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(last_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use memhp_model::events::UeventAction;

    fn ev(seqnum: u64) -> Uevent {
        Uevent {
            seqnum,
            action: UeventAction::Add,
            devpath: "/devices/system/memory/memory32".into(),
            subsystem: "memory".into(),
        }
    }

    #[test]
    fn wire_format_is_the_kernels() {
        assert_eq!(
            encode(&ev(7)),
            b"add@/devices/system/memory/memory32\0ACTION=add\0DEVPATH=/devices/system/memory/memory32\0SUBSYSTEM=memory\0SEQNUM=7\0"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (q, rx) = UeventQueue::new(2);
        for s in 1..=5 {
            q.push(&ev(s));
        }
        assert_eq!(q.stats(), (2, 0, 3));
        let got: Vec<Vec<u8>> = rx.try_iter().collect();
        assert_eq!(got, [encode(&ev(1)), encode(&ev(2))]);
        q.push(&ev(6));
        assert_eq!(q.stats(), (2, 0, 3));
    }
}
