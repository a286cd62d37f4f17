//! The relay between `/dev/fuse` and fuser, which exists for one reason:
//! `FUSE_INTERRUPT`.
//!
//! fuser (up to and including 0.18.0 and its master branch) answers every
//! `FUSE_INTERRUPT` with `ENOSYS` without telling the file system. The kernel
//! takes that `ENOSYS` as "this daemon never handles interrupts" and sets
//! `fc->no_interrupt`: from then on a process blocked in a FUSE request can
//! only be woken by a fatal signal, so an `offline` write that retries until
//! its writer is signalled would hang for ever.
//!
//! fuser's `Session::from_fd` accepts any descriptor that behaves like
//! `/dev/fuse` (one whole message per `read(2)`, one per `writev(2)`). We
//! hand it one end of an `AF_UNIX`/`SOCK_SEQPACKET` socket pair, which keeps
//! message boundaries, and keep the real `/dev/fuse` descriptor here:
//!
//! * kernel → fs: every request is forwarded, except `FUSE_INTERRUPT`, which
//!   the relay handles itself by cancelling the [`Cancel`] token of the
//!   interrupted write. A `FUSE_WRITE` gets its token registered *before* it
//!   is forwarded, so an interrupt can never race ahead of its write. When
//!   the connection ends (`ENODEV`) the relay feeds fuser a `FUSE_DESTROY`
//!   so its session loop returns cleanly.
//! * fs → kernel: replies are written back to `/dev/fuse` (and retire the
//!   write's token). Notifications (`unique == 0`) go to a third thread,
//!   because a `FUSE_NOTIFY_INVAL_ENTRY` takes the parent directory's inode
//!   lock in the kernel and may have to wait for a lookup in that directory
//!   — whose reply must not be queued behind the notification.
//!
//! The interrupt itself is never answered: the kernel accepts silence, and
//! never answering `ENOSYS` keeps interrupts coming.
//!
//! The price is two more thread wake-ups per request: about 10–20 µs each
//! request on a 2-vCPU VM, i.e. `lsmem` over 8,192 blocks in 6.6 s instead
//! of 4.2 s. Drop the relay once fuser delivers `FUSE_INTERRUPT` to the
//! file system (cberner/fuser issue #14).

use crate::wire;
use memhp_sysfs::vfs::Cancel;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The largest `FUSE_WRITE` payload the kernel may send us (negotiated in
/// `init`). Anything above 4096 bytes is enough to see that a write was
/// longer than a page, which is all sysfs needs to answer with a short write.
pub(crate) const MAX_WRITE: u32 = 128 * 1024;

/// Buffer for one message in either direction: a maximal write request, or
/// a maximal read/readdir reply (at most `max_pages` pages, derived from
/// `MAX_WRITE`), plus headers and room for a 64 KiB xattr value.
const MESSAGE_BUFFER: usize = MAX_WRITE as usize + 64 * 1024 + 4096;

/// `unique` of the `FUSE_DESTROY` the relay synthesizes; its reply is
/// dropped. Kernel ids are allocated upwards from small numbers, never this.
const SYNTHETIC_DESTROY_UNIQUE: u64 = u64::MAX - 1;

/// Cancellation tokens of the writes currently handed to the file system,
/// by request `unique`.
#[derive(Default)]
pub(crate) struct InflightWrites {
    tokens: Mutex<HashMap<u64, Cancel>>,
}

impl InflightWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cancel>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, unique: u64) {
        self.lock().insert(unique, Cancel::new());
    }

    /// The token the write with this `unique` must honour.
    pub(crate) fn token(&self, unique: u64) -> Cancel {
        self.lock().entry(unique).or_default().clone()
    }

    /// Cancel the write `unique`; false if it is not (or no longer) in flight.
    fn interrupt(&self, unique: u64) -> bool {
        match self.lock().get(&unique) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn answered(&self, unique: u64) {
        self.lock().remove(&unique);
    }

    /// The connection is gone: nobody waits for these writes any more, so
    /// let them stop blocking.
    fn cancel_all(&self) {
        for token in self.lock().values() {
            token.cancel();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Counts notifications actually written to `/dev/fuse`, so that whoever
/// sent them can wait until the kernel has applied them.
#[derive(Default)]
pub(crate) struct NotifyDelivery {
    delivered: Mutex<u64>,
    cv: Condvar,
}

impl NotifyDelivery {
    fn mark_delivered(&self) {
        *self.delivered.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }

    /// Wait until at least `count` notifications have been delivered; false
    /// on timeout.
    pub(crate) fn wait_for(&self, count: u64, timeout: Duration) -> bool {
        let guard = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |delivered| *delivered < count)
            .unwrap_or_else(|e| e.into_inner());
        *guard >= count
    }
}

/// The running relay threads.
///
/// Our end of the socket pair stays open until fuser's side is closed
/// everywhere (the fs → kernel thread sees end of stream): a reply sent by a
/// write that finishes during teardown still finds a reader, instead of
/// failing in fuser with `EPIPE`.
pub(crate) struct Relay {
    kernel_side_done: Arc<AtomicBool>,
    from_kernel: Option<JoinHandle<()>>,
    to_kernel: Option<JoinHandle<()>>,
    notify: Option<JoinHandle<()>>,
}

/// A connected `SOCK_SEQPACKET` pair: (ours, fuser's).
fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as socketpair(2)
    // requires; on success both descriptors are new and owned by nobody else.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are open descriptors we now own.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&pair.0, &pair.1] {
        enlarge_send_buffer(fd);
    }
    Ok(pair)
}

/// A datagram larger than the send buffer fails with `EMSGSIZE`; make room
/// for the largest message (root may exceed `net.core.wmem_max`).
fn enlarge_send_buffer(fd: &OwnedFd) {
    let size: libc::c_int = (4 * MESSAGE_BUFFER) as libc::c_int;
    for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: `fd` is an open socket, and we pass a pointer to a live
        // c_int together with its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    tracing::debug!(
        error = %io::Error::last_os_error(),
        "could not enlarge relay socket buffer; keeping the default"
    );
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Send one message on the socket; a SOCK_SEQPACKET send is all or
/// nothing. A gone peer is `EPIPE` (`MSG_NOSIGNAL`: never a SIGPIPE, which
/// Linux only raises for stream sockets anyway).
fn send_message(sock: &File, msg: &[u8]) -> io::Result<()> {
    loop {
        // SAFETY: `msg` is valid for reads of `msg.len()` bytes for the whole
        // call, and `sock` is an open socket.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if errno_of(&e) == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n as usize != msg.len() {
            return Err(io::Error::other(format!(
                "short datagram send: {n} of {} bytes",
                msg.len()
            )));
        }
        return Ok(());
    }
}

/// Receive one message; `Ok(None)` at end of stream. A message larger than
/// the buffer is reported as an error rather than silently truncated.
fn recv_message(sock: &File, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
        // call, and `sock` is an open socket.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if errno_of(&e) == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        if n == 0 {
            return Ok(None);
        }
        if n > buf.len() {
            return Err(io::Error::other(format!(
                "message of {n} bytes exceeds the relay buffer of {}",
                buf.len()
            )));
        }
        return Ok(Some(n));
    }
}

/// Answer request `unique` with `-errno` directly on the device.
fn answer_error(dev: &File, unique: u64, errno: i32) {
    let mut msg = [0u8; wire::OUT_HEADER_LEN];
    msg[0..4].copy_from_slice(&(wire::OUT_HEADER_LEN as u32).to_ne_bytes());
    msg[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    msg[8..16].copy_from_slice(&unique.to_ne_bytes());
    if let Err(e) = (&*dev).write(&msg) {
        tracing::debug!(unique, error = %e, "could not answer request with an error");
    }
}

impl Relay {
    /// Start relaying between `dev` (an open, mounted `/dev/fuse`) and the
    /// returned descriptor, which is what fuser gets.
    pub(crate) fn start(
        dev: File,
        inflight: Arc<InflightWrites>,
        delivery: Arc<NotifyDelivery>,
    ) -> io::Result<(Relay, OwnedFd)> {
        let (ours, theirs) = seqpacket_pair()?;
        let dev = Arc::new(dev);
        let ours = Arc::new(File::from(ours));
        let kernel_side_done = Arc::new(AtomicBool::new(false));
        let (notify_tx, notify_rx) = mpsc::channel::<Vec<u8>>();

        let from_kernel = {
            let (dev, ours, inflight, done) = (
                dev.clone(),
                ours.clone(),
                inflight.clone(),
                kernel_side_done.clone(),
            );
            thread::Builder::new()
                .name("memhp-fuse-rx".into())
                .spawn(move || kernel_to_fs(&dev, &ours, &inflight, &done))?
        };
        let to_kernel = {
            let (dev, ours, done) = (dev.clone(), ours.clone(), kernel_side_done.clone());
            thread::Builder::new()
                .name("memhp-fuse-tx".into())
                .spawn(move || fs_to_kernel(&dev, &ours, &inflight, &done, notify_tx))?
        };
        let notify = thread::Builder::new()
            .name("memhp-fuse-notify".into())
            .spawn(move || deliver_notifications(&dev, notify_rx, &delivery))?;

        Ok((
            Relay {
                kernel_side_done,
                from_kernel: Some(from_kernel),
                to_kernel: Some(to_kernel),
                notify: Some(notify),
            },
            theirs,
        ))
    }

    /// Whether the kernel side has ended (connection gone or fuser gone).
    pub(crate) fn kernel_side_done(&self) -> bool {
        self.kernel_side_done.load(Ordering::SeqCst)
    }

    /// Wait (up to `grace`) for the relay threads to end, which they do by
    /// themselves: the kernel side when the connection ends (or fuser's side
    /// is gone), the fs side when every holder of fuser's descriptor (the
    /// session, notifiers, replies of writes still finishing) has dropped it.
    /// Threads still running after `grace` are left to end on their own:
    /// e.g. the `/dev/fuse` reader of a lazily unmounted tree whose files are
    /// still open.
    pub(crate) fn stop(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let handles = [
            self.from_kernel.take(),
            self.to_kernel.take(),
            self.notify.take(),
        ];
        for handle in handles.into_iter().flatten() {
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::debug!(
                    thread = handle.thread().name().unwrap_or("?"),
                    "relay thread left to end with the connection"
                );
            }
        }
    }
}

fn kernel_to_fs(dev: &File, ours: &File, inflight: &InflightWrites, done: &AtomicBool) {
    let mut buf = vec![0u8; MESSAGE_BUFFER];
    loop {
        let n = match (&*dev).read(&mut buf) {
            Ok(n) => n,
            Err(e) => match errno_of(&e) {
                // ENOENT: the request was interrupted before we could read it.
                libc::EINTR | libc::EAGAIN | libc::ENOENT => continue,
                // Unmounted, or aborted through the fuse control file system.
                libc::ENODEV | libc::ECONNABORTED => {
                    tracing::debug!(error = %e, "FUSE connection ended");
                    break;
                }
                _ => {
                    tracing::error!(error = %e, "reading /dev/fuse failed; stopping");
                    break;
                }
            },
        };
        let msg = &buf[..n];
        let Some(header) = wire::request_header(msg) else {
            tracing::warn!(len = n, "ignoring a runt message from /dev/fuse");
            continue;
        };
        match header.opcode {
            wire::FUSE_INTERRUPT => {
                match wire::interrupt_target(msg) {
                    Some(target) if inflight.interrupt(target) => {
                        tracing::debug!(unique = target, "write interrupted by a signal");
                    }
                    Some(target) => {
                        tracing::trace!(unique = target, "interrupt for no blocking write")
                    }
                    None => tracing::warn!("malformed FUSE_INTERRUPT"),
                }
                continue;
            }
            wire::FUSE_WRITE => inflight.register(header.unique),
            _ => {}
        }
        if let Err(e) = send_message(ours, msg) {
            if header.opcode == wire::FUSE_WRITE {
                inflight.answered(header.unique);
            }
            if errno_of(&e) == libc::EMSGSIZE {
                tracing::error!(
                    len = n,
                    opcode = header.opcode,
                    "request too large to relay"
                );
                answer_error(dev, header.unique, libc::EIO);
                continue;
            }
            tracing::debug!(error = %e, "file system side of the relay is gone");
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
    inflight.cancel_all();
    // Let fuser's session loop end the way it does on a real FUSE_DESTROY.
    let _ = send_message(ours, &wire::destroy_request(SYNTHETIC_DESTROY_UNIQUE));
}

fn fs_to_kernel(
    dev: &File,
    ours: &File,
    inflight: &InflightWrites,
    done: &AtomicBool,
    notify: mpsc::Sender<Vec<u8>>,
) {
    let mut buf = vec![0u8; MESSAGE_BUFFER];
    loop {
        let n = match recv_message(ours, &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "reading fuser's replies failed; stopping");
                break;
            }
        };
        let msg = &buf[..n];
        let Some(unique) = wire::reply_unique(msg) else {
            tracing::warn!(len = n, "ignoring a runt reply");
            continue;
        };
        if unique == 0 {
            // A notification; its delivery may block (see the module docs).
            if notify.send(msg.to_vec()).is_err() {
                break;
            }
            continue;
        }
        inflight.answered(unique);
        if unique == SYNTHETIC_DESTROY_UNIQUE || done.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = (&*dev).write(msg) {
            match errno_of(&e) {
                // The requester went away (fatal signal) or the request was aborted.
                libc::ENOENT => tracing::debug!(unique, "kernel no longer waits for this reply"),
                libc::ENODEV | libc::ECONNABORTED => done.store(true, Ordering::SeqCst),
                _ => tracing::warn!(unique, error = %e, "writing a reply to /dev/fuse failed"),
            }
        }
    }
}

fn deliver_notifications(dev: &File, queue: mpsc::Receiver<Vec<u8>>, delivery: &NotifyDelivery) {
    for msg in queue {
        if let Err(e) = (&*dev).write(&msg) {
            // ENOENT: the kernel had nothing cached under that name or inode.
            if errno_of(&e) != libc::ENOENT {
                tracing::debug!(error = %e, "notification not delivered");
            }
        }
        delivery.mark_delivered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_cancels_the_registered_write_only_until_answered() {
        let inflight = InflightWrites::default();
        inflight.register(10);
        let token = inflight.token(10);
        assert!(
            !inflight.interrupt(12),
            "unknown request must not be cancelled"
        );
        assert!(!token.is_cancelled());
        assert!(inflight.interrupt(10));
        assert!(token.is_cancelled());
        inflight.answered(10);
        assert_eq!(inflight.len(), 0);
        assert!(
            !inflight.interrupt(10),
            "answered write is no longer interruptible"
        );
    }

    #[test]
    fn interrupt_arriving_before_the_handler_runs_is_not_lost() {
        let inflight = InflightWrites::default();
        inflight.register(4);
        assert!(inflight.interrupt(4));
        assert!(inflight.token(4).is_cancelled());
    }

    #[test]
    fn seqpacket_pair_keeps_message_boundaries_for_large_messages() {
        let (a, b) = seqpacket_pair().unwrap();
        let (a, b) = (File::from(a), File::from(b));
        let big = vec![7u8; MAX_WRITE as usize + 80];
        send_message(&a, &big).unwrap();
        send_message(&a, b"tail").unwrap();
        let mut buf = vec![0u8; MESSAGE_BUFFER];
        assert_eq!(recv_message(&b, &mut buf).unwrap(), Some(big.len()));
        assert_eq!(recv_message(&b, &mut buf).unwrap(), Some(4));
        assert_eq!(&buf[..4], b"tail");
        drop(a);
        assert_eq!(recv_message(&b, &mut buf).unwrap(), None);
    }

    #[test]
    fn notification_waiters_wake_on_delivery() {
        let delivery = Arc::new(NotifyDelivery::default());
        assert!(delivery.wait_for(0, Duration::ZERO));
        assert!(!delivery.wait_for(1, Duration::from_millis(1)));
        let d = delivery.clone();
        let t = thread::spawn(move || d.mark_delivered());
        assert!(delivery.wait_for(1, Duration::from_secs(5)));
        t.join().unwrap();
    }
}
