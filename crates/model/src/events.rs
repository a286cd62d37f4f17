//! What the model reports as it works: kernel log lines, uevents (spec 01
//! §10) and the notifier-chain trace (spec 02 §2, §3), plus the error-injection
//! settings that act on the notifier chain (spec 02 §8).

use serde::{Deserialize, Serialize};

/// A uevent action (`kobject_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UeventAction {
    Add,
    Remove,
    Online,
    Offline,
    /// Only synthesised (a write to a `uevent` file, `udevadm trigger`).
    Change,
    Move,
    Bind,
    Unbind,
}

impl UeventAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            UeventAction::Add => "add",
            UeventAction::Remove => "remove",
            UeventAction::Online => "online",
            UeventAction::Offline => "offline",
            UeventAction::Change => "change",
            UeventAction::Move => "move",
            UeventAction::Bind => "bind",
            UeventAction::Unbind => "unbind",
        }
    }
}

/// One uevent as the kernel sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uevent {
    pub seqnum: u64,
    pub action: UeventAction,
    /// Below /sys, e.g. `/devices/system/memory/memory32`.
    pub devpath: String,
    /// `memory` or `node`.
    pub subsystem: String,
}

impl Uevent {
    /// The environment in the kernel's order: ACTION, DEVPATH, SUBSYSTEM,
    /// SEQNUM.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ACTION".into(), self.action.as_str().into()),
            ("DEVPATH".into(), self.devpath.clone()),
            ("SUBSYSTEM".into(), self.subsystem.clone()),
            ("SEQNUM".into(), self.seqnum.to_string()),
        ]
    }
}

/// Memory notifier actions (spec 02 §2.2; 6.1 bit values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemAction {
    Online,
    GoingOffline,
    Offline,
    GoingOnline,
    CancelOnline,
    CancelOffline,
}

impl MemAction {
    /// Every action, in the order of the kernel's `MEM_*` values.
    pub const ALL: [MemAction; 6] = [
        MemAction::Online,
        MemAction::GoingOffline,
        MemAction::Offline,
        MemAction::GoingOnline,
        MemAction::CancelOnline,
        MemAction::CancelOffline,
    ];

    /// The action named `name` (`MEM_GOING_ONLINE`, ...).
    pub fn from_name(name: &str) -> Option<MemAction> {
        MemAction::ALL.into_iter().find(|a| a.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            MemAction::Online => "MEM_ONLINE",
            MemAction::GoingOffline => "MEM_GOING_OFFLINE",
            MemAction::Offline => "MEM_OFFLINE",
            MemAction::GoingOnline => "MEM_GOING_ONLINE",
            MemAction::CancelOnline => "MEM_CANCEL_ONLINE",
            MemAction::CancelOffline => "MEM_CANCEL_OFFLINE",
        }
    }
}

/// `struct memory_notify`. The status fields exist in 6.1 only (spec 02
/// §2.3); mainline's struct is `start_pfn` and `nr_pages`, and the model
/// keeps the status fields at -1 there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryNotify {
    pub start_pfn: u64,
    pub nr_pages: u64,
    /// -1 or the node.
    pub status_change_nid_normal: i32,
    pub status_change_nid: i32,
}

impl MemoryNotify {
    /// The struct's fields in `version`, in declaration order.
    pub fn fields(&self, version: crate::KernelVersion) -> Vec<(&'static str, i64)> {
        let mut f = vec![
            ("start_pfn", self.start_pfn as i64),
            ("nr_pages", self.nr_pages as i64),
        ];
        if version == crate::KernelVersion::V6_1 {
            f.push((
                "status_change_nid_normal",
                i64::from(self.status_change_nid_normal),
            ));
            f.push(("status_change_nid", i64::from(self.status_change_nid)));
        }
        f
    }
}

/// Node notifier actions (spec 02 §3.1): mainline only; 6.1 expresses the
/// same transitions through the memory events' status fields (§3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeAction {
    AddingFirstMemory,
    AddedFirstMemory,
    CancelAddingFirstMemory,
    RemovingLastMemory,
    RemovedLastMemory,
    CancelRemovingLastMemory,
}

impl NodeAction {
    /// Every action, in the order of the kernel's `NODE_*` values.
    pub const ALL: [NodeAction; 6] = [
        NodeAction::AddingFirstMemory,
        NodeAction::AddedFirstMemory,
        NodeAction::CancelAddingFirstMemory,
        NodeAction::RemovingLastMemory,
        NodeAction::RemovedLastMemory,
        NodeAction::CancelRemovingLastMemory,
    ];

    /// The action named `name` (`NODE_ADDING_FIRST_MEMORY`, ...).
    pub fn from_name(name: &str) -> Option<NodeAction> {
        NodeAction::ALL.into_iter().find(|a| a.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            NodeAction::AddingFirstMemory => "NODE_ADDING_FIRST_MEMORY",
            NodeAction::AddedFirstMemory => "NODE_ADDED_FIRST_MEMORY",
            NodeAction::CancelAddingFirstMemory => "NODE_CANCEL_ADDING_FIRST_MEMORY",
            NodeAction::RemovingLastMemory => "NODE_REMOVING_LAST_MEMORY",
            NodeAction::RemovedLastMemory => "NODE_REMOVED_LAST_MEMORY",
            NodeAction::CancelRemovingLastMemory => "NODE_CANCEL_REMOVING_LAST_MEMORY",
        }
    }
}

/// `struct node_notify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNotify {
    pub nid: i32,
}

/// One call of a notifier chain, memory or node (the global sequence of
/// spec 02 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "chain", rename_all = "lowercase")]
pub enum ChainCall {
    Memory {
        action: MemAction,
        arg: MemoryNotify,
    },
    Node {
        action: NodeAction,
        arg: NodeNotify,
    },
}

impl ChainCall {
    /// The event's kernel name.
    pub const fn name(&self) -> &'static str {
        match self {
            ChainCall::Memory { action, .. } => action.name(),
            ChainCall::Node { action, .. } => action.name(),
        }
    }

    /// The call as one line: the event, then the argument struct's fields
    /// in `version` (`MEM_ONLINE start_pfn=0x100000 nr_pages=32768 ...`).
    pub fn render(&self, version: crate::KernelVersion) -> String {
        match self {
            ChainCall::Memory { action, arg } => {
                let mut s = action.name().to_string();
                for (k, v) in arg.fields(version) {
                    if k == "start_pfn" {
                        s.push_str(&format!(" {k}={v:#x}"));
                    } else {
                        s.push_str(&format!(" {k}={v}"));
                    }
                }
                s
            }
            ChainCall::Node { action, arg } => format!("{} nid={}", action.name(), arg.nid),
        }
    }
}

/// Errors injected into the memory chain (the debugfs `error` files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierInjection {
    /// Whether `memory-notifier-error-inject` is loaded (its debugfs tree
    /// exists).
    pub loaded: bool,
    /// `actions/MEM_GOING_ONLINE/error`, in `[-4095, 0]`.
    pub going_online: i32,
    /// `actions/MEM_GOING_OFFLINE/error`, in `[-4095, 0]`.
    pub going_offline: i32,
}

impl NotifierInjection {
    /// A written value as the injector's errno file keeps it: cast to an
    /// `int` (its low 32 bits: 4294967284 is -12, -2^63 is 0), then clamped
    /// to `[-MAX_ERRNO, 0]` (`debugfs_create_errno`; recorded).
    pub fn clamp(v: i64) -> i32 {
        (v as i32).clamp(-4095, 0)
    }
}

/// The logs of one system.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventLog {
    /// Kernel log lines, oldest first; `klog_read` marks what was consumed.
    pub klog: Vec<String>,
    pub klog_read: usize,
    pub uevents: Vec<Uevent>,
    pub seqnum: u64,
    /// Every notifier-chain call (memory and node chains), in order.
    pub notifier: Vec<ChainCall>,
    /// Errnos a transport could not deliver (FUSE carries only 1..511), by
    /// the path of the write, for helpers that ask (`wide-errno`).
    #[serde(default)]
    pub wide_errnos: std::collections::BTreeMap<String, i32>,
}

/// How many entries each log keeps; older ones are dropped (a long-running
/// daemon must not grow without bound), a quarter at a time.
pub const LOG_CAPACITY: usize = 1 << 16;

fn trim<T>(v: &mut Vec<T>) -> usize {
    if v.len() <= LOG_CAPACITY {
        return 0;
    }
    let n = LOG_CAPACITY / 4;
    v.drain(..n);
    n
}

impl EventLog {
    pub fn log(&mut self, line: impl Into<String>) {
        self.klog.push(line.into());
        let dropped = trim(&mut self.klog);
        self.klog_read = self.klog_read.saturating_sub(dropped);
    }

    /// Record a notifier-chain call.
    pub fn trace_notifier(&mut self, call: ChainCall) {
        self.notifier.push(call);
        trim(&mut self.notifier);
    }

    /// Uevents with a sequence number above `seqnum`, oldest first.
    pub fn uevents_after(&self, seqnum: u64) -> Vec<Uevent> {
        let start = self.uevents.partition_point(|u| u.seqnum <= seqnum);
        self.uevents[start..].to_vec()
    }

    pub fn uevent(&mut self, action: UeventAction, devpath: String, subsystem: &str) {
        self.seqnum += 1;
        self.uevents.push(Uevent {
            seqnum: self.seqnum,
            action,
            devpath,
            subsystem: subsystem.into(),
        });
        trim(&mut self.uevents);
    }

    /// New kernel messages since the last call (`dmesg -c`).
    pub fn take_klog(&mut self) -> Vec<String> {
        let new = self.klog[self.klog_read..].to_vec();
        self.klog_read = self.klog.len();
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_stay_bounded_and_klog_read_follows_the_trim() {
        let mut l = EventLog::default();
        for i in 0..LOG_CAPACITY {
            l.log(format!("line {i}"));
        }
        assert_eq!(l.take_klog().len(), LOG_CAPACITY);
        l.log("one more");
        assert_eq!(l.klog.len(), LOG_CAPACITY + 1 - LOG_CAPACITY / 4);
        assert_eq!(l.take_klog(), vec!["one more".to_string()]);
        for _ in 0..=LOG_CAPACITY {
            l.uevent(
                UeventAction::Online,
                "/devices/system/memory/memory1".into(),
                "memory",
            );
        }
        assert!(l.uevents.len() <= LOG_CAPACITY);
        assert_eq!(l.seqnum, LOG_CAPACITY as u64 + 1);
        let after = l.uevents_after(l.seqnum - 2);
        assert_eq!(
            after.iter().map(|u| u.seqnum).collect::<Vec<_>>(),
            vec![l.seqnum - 1, l.seqnum]
        );
    }
}

/// The task a kernel message names (`current`): its pid and `comm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: u32,
    pub comm: String,
}

/// Resolves a task when a message needs it (the transport may have to read
/// `/proc` for its `comm`, and most operations log nothing that names it).
pub type TaskFn = dyn Fn() -> Option<Task> + Send + Sync;

/// The task an operation runs for (`current`): known, or resolved on the
/// first message that names it.
#[derive(Clone)]
pub enum CurrentTask {
    Known(Task),
    Lazy(std::sync::Arc<TaskFn>),
}

impl CurrentTask {
    pub fn resolve(&self) -> Option<Task> {
        match self {
            CurrentTask::Known(t) => Some(t.clone()),
            CurrentTask::Lazy(f) => f(),
        }
    }
}

impl std::fmt::Debug for CurrentTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CurrentTask::Known(t) => f.debug_tuple("Known").field(t).finish(),
            CurrentTask::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

impl Default for Task {
    /// A writer the transport did not name.
    fn default() -> Self {
        Task {
            pid: 1,
            comm: "init".into(),
        }
    }
}
