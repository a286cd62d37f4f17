//! What the model reports as it works: kernel log lines, uevents (spec 01
//! §10) and the memory-notifier trace (spec 02 §2), plus the error-injection
//! settings that act on the notifier chain (spec 02 §8).

use serde::{Deserialize, Serialize};

/// A uevent action (`kobject_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UeventAction {
    Add,
    Remove,
    Online,
    Offline,
}

impl UeventAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            UeventAction::Add => "add",
            UeventAction::Remove => "remove",
            UeventAction::Online => "online",
            UeventAction::Offline => "offline",
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

/// `struct memory_notify` (6.1 layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryNotify {
    pub start_pfn: u64,
    pub nr_pages: u64,
    /// -1 or the node.
    pub status_change_nid_normal: i32,
    pub status_change_nid: i32,
}

/// One call of the memory notifier chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierCall {
    pub action: MemAction,
    pub arg: MemoryNotify,
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
    /// Clamp a written value to `[-MAX_ERRNO, 0]` as the injector does.
    pub fn clamp(v: i64) -> i32 {
        v.clamp(-4095, 0) as i32
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
    pub notifier: Vec<NotifierCall>,
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
    pub fn trace_notifier(&mut self, call: NotifierCall) {
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
