//! memhp-control: the host side of a machine over a QMP-style JSON control
//! socket. One JSON object per line:
//!
//! * the server greets with `{"QMP": {"version": ..., "capabilities": []}}`;
//! * a client sends `{"execute": NAME, "arguments": {...}, "id": ...}` and
//!   gets `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`
//!   (the `id` is echoed);
//! * asynchronous `{"event": NAME, "data": {...}, "timestamp": {...}}` lines
//!   carry uevents (`UEVENT`), `ACPI_DEVICE_OST`, `DEVICE_DELETED` and
//!   `MEMORY_DEVICE_SIZE_CHANGE`.
//!
//! The socket is created with mode 0600. Bad JSON or unknown commands get a
//! QMP error; the server never stops for a client's mistake.

pub mod agents;
mod commands;
pub mod netlink;

pub use commands::{dispatch, CommandError};

use memhp_drivers::host::Host;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {0} is in use by a running memhp")]
    InUse(PathBuf),
}

/// Default number of events a subscriber may have waiting.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// Subscribers of asynchronous events.
#[derive(Default)]
pub struct EventBus {
    /// User-space onliners reacting to memory `add` uevents, and their seed.
    agents: Vec<agents::Agent>,
    agent_seed: u64,
    subscribers: Mutex<Vec<SyncSender<Value>>>,
    /// Events a subscriber may have waiting before new ones are dropped
    /// (like a netlink socket's receive buffer); 0 means the default.
    capacity: usize,
    /// Events dropped because a subscriber's queue was full.
    dropped: AtomicU64,
    /// Uevents of the model already published.
    /// SEQNUM of the last uevent published.
    uevents_seen: Mutex<Option<u64>>,
    /// Uevents also go out on this netlink socket.
    netlink: Option<netlink::UeventSender>,
    /// Brings the machine's views (a FUSE mount's kernel caches) up to date.
    view_sync: Option<ViewSync>,
}

/// Brings a view of the machine up to date with the model: a FUSE mount
/// invalidates what the kernel caches of the tree (entries of removed
/// blocks, attributes). The bus runs it before anyone outside hears of a
/// change (an event, a command's reply), so that whoever reacts to the news
/// by looking at the tree finds it there.
pub type ViewSync = Arc<dyn Fn() + Send + Sync>;

fn timestamp() -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    json!({"seconds": now.as_secs(), "microseconds": now.subsec_micros()})
}

impl EventBus {
    /// A bus whose `add` uevents also reach the given onliners.
    pub fn with_agents(list: Vec<agents::Agent>, seed: u64) -> Self {
        EventBus {
            agents: list,
            agent_seed: seed,
            ..EventBus::default()
        }
    }

    pub fn subscribe(&self) -> Receiver<Value> {
        let (tx, rx) = sync_channel(self.stats().0);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Each subscriber holds at most `capacity` undelivered events; later
    /// ones are dropped and counted.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Also send every uevent on a `NETLINK_KOBJECT_UEVENT` socket in a
    /// network namespace of its own, queued like a subscriber's events.
    pub fn with_netlink_uevents(mut self) -> Result<Self, netlink::NetlinkError> {
        self.netlink = Some(netlink::UeventSender::start(self.stats().0)?);
        Ok(self)
    }

    /// Run `sync` before every event and command reply that may follow a
    /// change of the machine (see [`ViewSync`]).
    pub fn with_view_sync(mut self, sync: ViewSync) -> Self {
        self.view_sync = Some(sync);
        self
    }

    /// Bring the machine's views up to date (see [`ViewSync`]).
    pub fn sync_view(&self) {
        if let Some(sync) = &self.view_sync {
            sync();
        }
    }

    /// The netlink uevent sender, if any.
    pub fn netlink(&self) -> Option<&netlink::UeventSender> {
        self.netlink.as_ref()
    }

    /// `(capacity, dropped)`.
    pub fn stats(&self) -> (usize, u64) {
        let cap = if self.capacity == 0 {
            DEFAULT_EVENT_CAPACITY
        } else {
            self.capacity
        };
        (cap, self.dropped.load(Ordering::Relaxed))
    }

    /// Send an event line to every live subscriber; a full queue drops it.
    pub fn publish(&self, event: &str, data: Value) {
        let line = json!({"event": event, "data": data, "timestamp": timestamp()});
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tx| match tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}

/// A running control socket server.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The listening socket, owned by the accept thread until it ends.
    listener_fd: std::os::fd::RawFd,
    accept: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
}

/// The sysfs tree of `host`'s guest, with what its writes ask of the
/// platform wired to `host`: a write of `1` to a DIMM slot device's `eject`
/// file ejects the DIMM, and what QEMU reports goes out with its other
/// spontaneous events.
pub fn guest_tree(host: &Arc<Host>) -> Arc<memhp_sysfs::SysfsTree> {
    let tree = Arc::new(memhp_sysfs::SysfsTree::new(Arc::clone(&host.shared)));
    let platform = Arc::clone(host);
    tree.set_eject_handler(Arc::new(move |slot| platform.guest_eject(slot)));
    tree
}

/// The greeting line.
pub fn greeting() -> Value {
    json!({"QMP": {"version": {"package": format!("memhp {}", env!("CARGO_PKG_VERSION"))}, "capabilities": []}})
}

/// Write `v` and a newline in one `write(2)` (a `Value` formats itself in
/// many small pieces; on an unbuffered socket each would be a syscall).
fn send_line(w: &mut impl Write, v: &impl std::fmt::Display) -> std::io::Result<()> {
    w.write_all(format!("{v}\n").as_bytes())
}

fn serve_client(host: Arc<Host>, bus: Arc<EventBus>, stream: UnixStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let events = bus.subscribe();
    let out = Arc::new(Mutex::new(()));
    // Event writer: forwards bus events while the client is connected.
    let mut ev_writer = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    // The greeting comes first: events that arrive meanwhile wait in the
    // subscription (a client reads the greeting as the first line).
    if send_line(&mut writer, &greeting()).is_err() {
        return;
    }
    let out2 = Arc::clone(&out);
    let evt = std::thread::spawn(move || {
        for ev in events {
            let _g = out2.lock().unwrap_or_else(|e| e.into_inner());
            if send_line(&mut ev_writer, &ev).is_err() {
                break;
            }
        }
    });
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = commands::handle_line(&host, &bus, &line);
        // A client that reads the reply and then the tree sees the change.
        bus.sync_view();
        let _g = out.lock().unwrap_or_else(|e| e.into_inner());
        if send_line(&mut writer, &reply).is_err() {
            break;
        }
    }
    let _ = writer.shutdown(std::net::Shutdown::Both);
    drop(evt);
}

impl EventBus {
    /// Publish the uevents the model sent since the last call (the first
    /// call only takes note of what is already there), and the devices'
    /// own size changes.
    pub fn pump_uevents(&self, host: &Host) {
        // Held throughout, so that a caller returns only after the onliners
        // reacted to the uevents it caused, whichever thread saw them first.
        let mut seen = self.uevents_seen.lock().unwrap_or_else(|e| e.into_inner());
        // What QEMU reported on its own since the last pump: the guest's
        // DIMM ejects, virtio-mem's size changes.
        let size_changes = host.take_async_events();
        if !size_changes.is_empty() {
            self.sync_view();
        }
        for ev in size_changes {
            self.publish(ev.name(), ev.data());
        }
        loop {
            let new: Vec<_> = host.shared.read(|s| match *seen {
                None => {
                    *seen = Some(s.events.seqnum);
                    Vec::new()
                }
                Some(n) => s.events.uevents_after(n),
            });
            if let (Some(n), Some(last)) = (seen.as_mut(), new.last()) {
                *n = last.seqnum;
                // A listener that opens the block a uevent names finds it
                // (and not a cached entry of a removed one).
                self.sync_view();
            }
            let mut added = Vec::new();
            for u in new {
                if let Some(nl) = &self.netlink {
                    nl.queue().push(&u);
                }
                if u.action == memhp_model::events::UeventAction::Add {
                    if let Some(id) = u
                        .devpath
                        .strip_prefix("/devices/system/memory/memory")
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        added.push(id);
                    }
                }
                let data: serde_json::Map<String, Value> = u
                    .env()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                self.publish("UEVENT", Value::Object(data));
            }
            if added.is_empty() || self.agents.is_empty() {
                return;
            }
            let tree = memhp_sysfs::SysfsTree::new(Arc::clone(&host.shared));
            let hypervisor = host.shared.read(|s| s.hypervisor);
            for action in agents::react(&tree, &self.agents, self.agent_seed, hypervisor, &added) {
                self.publish("ONLINER", json!({"agent": action.agent.name(), "block": action.block, "report": action.to_string()}));
            }
            // Loop: publish the agents' own uevents (online) next.
        }
    }
}

impl ControlServer {
    /// Listen on `path` (removing a stale socket left by a dead memhp).
    pub fn start(
        host: Arc<Host>,
        bus: Arc<EventBus>,
        path: &Path,
    ) -> Result<ControlServer, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        // Non-blocking, and waited on with poll(2): a client is accepted as
        // soon as it connects, and the stop flag is seen within
        // ACCEPT_STOP_CHECK.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let listener_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let (h2, b2, s2) = (Arc::clone(&host), Arc::clone(&bus), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            while !s2.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let (h, b) = (Arc::clone(&h2), Arc::clone(&b2));
                        std::thread::spawn(move || serve_client(h, b, stream));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        wait_readable(&listener, ACCEPT_STOP_CHECK)
                    }
                    Err(e) => {
                        tracing::warn!("control socket accept: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        });
        let s3 = Arc::clone(&stop);
        bus.pump_uevents(&host);
        let pump = std::thread::spawn(move || {
            while !s3.load(Ordering::Acquire) {
                bus.pump_uevents(&host);
                // Drop unparks it at once.
                std::thread::park_timeout(Duration::from_millis(5));
            }
        });
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            listener_fd,
            accept: Some(accept),
            pump: Some(pump),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop's poll now rather than at its next stop
        // check: a shut-down listener polls readable (and hung up).
        // SAFETY: the accept thread owns the descriptor and keeps it open
        // until it ends, which the join below waits for; shutdown(2)
        // touches no memory.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        if let Some(h) = self.pump.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A synchronous client: connect, read the greeting, run commands.
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events received while waiting for replies.
    pub events: Vec<Value>,
}

impl ControlClient {
    pub fn connect(path: &Path) -> std::io::Result<ControlClient> {
        let stream = UnixStream::connect(path)?;
        let writer = stream.try_clone()?;
        let mut c = ControlClient {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greet = c.read_value()?;
        if greet.get("QMP").is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no QMP greeting",
            ));
        }
        Ok(c)
    }

    fn read_value(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "control socket closed",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Run one command; returns the whole reply object (`return` or `error`).
    pub fn execute(&mut self, name: &str, args: Value) -> std::io::Result<Value> {
        send_line(
            &mut self.writer,
            &json!({"execute": name, "arguments": args}),
        )?;
        loop {
            let v = self.read_value()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            return Ok(v);
        }
    }

    /// Wait for the next event line.
    pub fn next_event(&mut self, timeout: Duration) -> std::io::Result<Value> {
        if !self.events.is_empty() {
            return Ok(self.events.remove(0));
        }
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let r = self.read_value();
        self.reader.get_ref().set_read_timeout(None)?;
        r
    }
}

/// How often the accept loop looks at its stop flag while no client comes.
const ACCEPT_STOP_CHECK: Duration = Duration::from_millis(100);

/// Wait until `listener` has a connection to accept, or `timeout`.
fn wait_readable(listener: &UnixListener, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd for the duration of the call, and
    // the descriptor stays open (`listener` is borrowed).
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        // EINTR or a transient failure: do not spin.
        std::thread::sleep(Duration::from_millis(5));
    }
}
