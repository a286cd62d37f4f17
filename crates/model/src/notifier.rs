//! Blocking notifier chains (spec 02 §1–§4): registration by priority,
//! return-value encoding, the plain and the robust call, the memory chain
//! and (mainline) the node chain, with the in-kernel consumers registered
//! at boot in each version.

use crate::events::{
    ChainCall, MemAction, MemoryNotify, NodeAction, NodeNotify, NotifierInjection,
};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const NOTIFY_DONE: i32 = 0x0000;
pub const NOTIFY_OK: i32 = 0x0001;
pub const NOTIFY_STOP_MASK: i32 = 0x8000;
pub const NOTIFY_BAD: i32 = NOTIFY_STOP_MASK | 0x0002;
pub const NOTIFY_STOP: i32 = NOTIFY_OK | NOTIFY_STOP_MASK;

/// `notifier_from_errno()`: 0 → NOTIFY_OK, else the stop bit plus the errno.
pub const fn notifier_from_errno(err: i32) -> i32 {
    if err != 0 {
        NOTIFY_STOP_MASK | (NOTIFY_OK - err)
    } else {
        NOTIFY_OK
    }
}

/// `notifier_to_errno()`.
pub const fn notifier_to_errno(ret: i32) -> i32 {
    let r = ret & !NOTIFY_STOP_MASK;
    if r > NOTIFY_OK {
        NOTIFY_OK - r
    } else {
        0
    }
}

/// An event of a notifier chain: its argument type, its kernel name, and
/// how it appears in the global trace.
pub trait ChainEvent: Copy + PartialEq + Send + Sync + 'static {
    /// The `void *` argument the chain passes (`struct memory_notify`,
    /// `struct node_notify`).
    type Arg: Copy + Send + Sync + 'static;
    fn name(self) -> &'static str;
    /// The call as a trace entry.
    fn record(self, arg: &Self::Arg) -> ChainCall;
    /// What `memory-notifier-error-inject` returns for this event (it only
    /// sits on the memory chain).
    fn injected_errno(self, _inj: &NotifierInjection) -> i32 {
        0
    }
}

impl ChainEvent for MemAction {
    type Arg = MemoryNotify;
    fn name(self) -> &'static str {
        MemAction::name(self)
    }
    fn record(self, arg: &MemoryNotify) -> ChainCall {
        ChainCall::Memory {
            action: self,
            arg: *arg,
        }
    }
    fn injected_errno(self, inj: &NotifierInjection) -> i32 {
        match self {
            MemAction::GoingOnline => inj.going_online,
            MemAction::GoingOffline => inj.going_offline,
            _ => 0,
        }
    }
}

impl ChainEvent for NodeAction {
    type Arg = NodeNotify;
    fn name(self) -> &'static str {
        NodeAction::name(self)
    }
    fn record(self, arg: &NodeNotify) -> ChainCall {
        ChainCall::Node {
            action: self,
            arg: *arg,
        }
    }
}

/// A chain callback: `(action, arg) -> NOTIFY_*`.
pub type Callback<E> = Arc<dyn Fn(E, &<E as ChainEvent>::Arg) -> i32 + Send + Sync>;
/// A memory-notifier callback.
pub type MemoryCallback = Callback<MemAction>;
/// A node-notifier callback.
pub type NodeCallback = Callback<NodeAction>;

/// Registration handle (unique across the chains of one system).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotifierId(pub u64);

/// Why a registration change failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotifierError {
    /// The block is already on the chain.
    #[error("notifier already registered (EEXIST)")]
    Exists,
    /// The block is not on the chain.
    #[error("notifier not registered (ENOENT)")]
    NotFound,
    /// Registration from inside a callback of the same chain would deadlock
    /// on the chain's rwsem.
    #[error("registration from inside a callback would deadlock")]
    Reentrant,
}

/// What a chain entry runs.
enum Entry<E: ChainEvent> {
    Callback(Callback<E>),
    /// `memory-notifier-error-inject`: returns the configured error for
    /// MEM_GOING_ONLINE / MEM_GOING_OFFLINE.
    Injector,
}

impl<E: ChainEvent> Clone for Entry<E> {
    fn clone(&self) -> Self {
        match self {
            Entry::Callback(c) => Entry::Callback(Arc::clone(c)),
            Entry::Injector => Entry::Injector,
        }
    }
}

struct Block<E: ChainEvent> {
    id: NotifierId,
    name: std::sync::Arc<str>,
    priority: i32,
    entry: Entry<E>,
}

impl<E: ChainEvent> Clone for Block<E> {
    fn clone(&self) -> Self {
        Block {
            id: self.id,
            name: self.name.clone(),
            priority: self.priority,
            entry: self.entry.clone(),
        }
    }
}

/// One call of one callback, for traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The callback's name (shared with the chain: a call costs no copy).
    pub consumer: std::sync::Arc<str>,
    pub call: ChainCall,
    pub ret: i32,
}

impl CallRecord {
    /// The event's kernel name.
    pub fn event(&self) -> &'static str {
        self.call.name()
    }

    /// The memory action, if this was a memory-chain call.
    pub fn mem_action(&self) -> Option<MemAction> {
        match self.call {
            ChainCall::Memory { action, .. } => Some(action),
            ChainCall::Node { .. } => None,
        }
    }
}

/// What the chains of one system share: the per-callback trace (one
/// sequence across both chains) and the registration-id counter.
#[derive(Clone, Default)]
pub struct ChainContext {
    trace: Arc<Mutex<Vec<CallRecord>>>,
    ids: Arc<AtomicU64>,
}

impl ChainContext {
    /// Drain the per-callback trace.
    pub fn take_trace(&self) -> Vec<CallRecord> {
        std::mem::take(&mut *self.trace.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, r: CallRecord) {
        let mut trace = self.trace.lock().unwrap_or_else(|e| e.into_inner());
        trace.push(r);
        if trace.len() > crate::events::LOG_CAPACITY {
            trace.drain(..crate::events::LOG_CAPACITY / 4);
        }
    }
}

/// A blocking notifier chain (`struct blocking_notifier_head`).
pub struct NotifierChain<E: ChainEvent> {
    blocks: Vec<Block<E>>,
    ctx: ChainContext,
    in_call: bool,
}

/// The memory chain (`memory_chain`).
pub type MemoryChain = NotifierChain<MemAction>;
/// The node chain (`node_chain`, mainline).
pub type NodeChain = NotifierChain<NodeAction>;

impl<E: ChainEvent> Clone for NotifierChain<E> {
    fn clone(&self) -> Self {
        NotifierChain {
            blocks: self.blocks.clone(),
            ctx: self.ctx.clone(),
            in_call: self.in_call,
        }
    }
}

impl<E: ChainEvent> Default for NotifierChain<E> {
    fn default() -> Self {
        NotifierChain::new(ChainContext::default())
    }
}

impl<E: ChainEvent> fmt::Debug for NotifierChain<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.blocks.iter().map(|b| (&b.name, b.priority)))
            .finish()
    }
}

impl<E: ChainEvent> NotifierChain<E> {
    /// An empty chain recording into `ctx`.
    pub fn new(ctx: ChainContext) -> Self {
        NotifierChain {
            blocks: Vec::new(),
            ctx,
            in_call: false,
        }
    }

    /// `notifier_chain_register`: before the first entry with a strictly
    /// lower priority (descending priority, FIFO among equals).
    pub fn register(
        &mut self,
        name: &str,
        priority: i32,
        callback: Callback<E>,
    ) -> Result<NotifierId, NotifierError> {
        if self.in_call {
            return Err(NotifierError::Reentrant);
        }
        if self
            .blocks
            .iter()
            .any(|b| matches!(&b.entry, Entry::Callback(c) if Arc::ptr_eq(c, &callback)))
        {
            return Err(NotifierError::Exists);
        }
        Ok(self.insert(name, priority, Entry::Callback(callback)))
    }

    fn insert(&mut self, name: &str, priority: i32, entry: Entry<E>) -> NotifierId {
        let id = NotifierId(self.ctx.ids.fetch_add(1, Ordering::Relaxed) + 1);
        let pos = self
            .blocks
            .iter()
            .position(|b| b.priority < priority)
            .unwrap_or(self.blocks.len());
        self.blocks.insert(
            pos,
            Block {
                id,
                name: name.into(),
                priority,
                entry,
            },
        );
        id
    }

    /// Register the error injector (module load with `priority=`).
    pub fn register_injector(&mut self, priority: i32) -> Result<NotifierId, NotifierError> {
        if self
            .blocks
            .iter()
            .any(|b| matches!(b.entry, Entry::Injector))
        {
            return Err(NotifierError::Exists);
        }
        Ok(self.insert("memory_notifier_err_inject", priority, Entry::Injector))
    }

    /// Unregister the error injector (module unload).
    pub fn unregister_injector(&mut self) -> Result<(), NotifierError> {
        let pos = self
            .blocks
            .iter()
            .position(|b| matches!(b.entry, Entry::Injector))
            .ok_or(NotifierError::NotFound)?;
        self.blocks.remove(pos);
        Ok(())
    }

    /// `notifier_chain_unregister`.
    pub fn unregister(&mut self, id: NotifierId) -> Result<(), NotifierError> {
        if self.in_call {
            return Err(NotifierError::Reentrant);
        }
        let pos = self
            .blocks
            .iter()
            .position(|b| b.id == id)
            .ok_or(NotifierError::NotFound)?;
        self.blocks.remove(pos);
        Ok(())
    }

    /// Names and priorities in call order.
    pub fn order(&self) -> Vec<(String, i32)> {
        self.blocks
            .iter()
            .map(|b| (b.name.to_string(), b.priority))
            .collect()
    }

    /// `notifier_call_chain`: call up to `nr_to_call` callbacks (`None` =
    /// all) in order, stopping after one that returns the stop bit. Returns
    /// the last return value and how many were called.
    /// The injector reads `inj` and appends its log line to `log`.
    pub fn call(
        &mut self,
        action: E,
        arg: &E::Arg,
        nr_to_call: Option<usize>,
        inj: &NotifierInjection,
        log: &mut Vec<String>,
    ) -> (i32, usize) {
        let mut ret = NOTIFY_DONE;
        let mut calls = 0;
        self.in_call = true;
        for b in self.blocks.iter().take(nr_to_call.unwrap_or(usize::MAX)) {
            ret = match &b.entry {
                Entry::Callback(cb) => cb(action, arg),
                Entry::Injector => {
                    let err = action.injected_errno(inj);
                    if err != 0 {
                        log.push(format!("Injecting error ({err}) to {}", action.name()));
                    }
                    notifier_from_errno(err)
                }
            };
            calls += 1;
            self.ctx.push(CallRecord {
                consumer: b.name.clone(),
                call: action.record(arg),
                ret,
            });
            if ret & NOTIFY_STOP_MASK != 0 {
                break;
            }
        }
        self.in_call = false;
        (ret, calls)
    }

    /// `notifier_call_chain_robust`: on a stop-bit failure, send `down` to
    /// the callbacks that accepted `up` (all but the failing one).
    pub fn call_robust(
        &mut self,
        up: E,
        down: E,
        arg: &E::Arg,
        inj: &NotifierInjection,
        log: &mut Vec<String>,
    ) -> i32 {
        let (ret, nr) = self.call(up, arg, None, inj, log);
        if ret & NOTIFY_STOP_MASK != 0 && nr > 1 {
            self.call(down, arg, Some(nr - 1), inj, log);
        }
        ret
    }

    /// Drain the call trace (shared by the chains of one system).
    pub fn take_trace(&self) -> Vec<CallRecord> {
        self.ctx.take_trace()
    }
}

/// A consumer that accepts everything (the kernel's bookkeeping consumers
/// whose side effects are not visible through sysfs).
fn accept<E: ChainEvent>() -> Callback<E> {
    Arc::new(|_, _| NOTIFY_OK)
}

fn chain_of<E: ChainEvent>(ctx: &ChainContext, consumers: &[(&str, i32)]) -> NotifierChain<E> {
    let mut c = NotifierChain::new(ctx.clone());
    for &(name, prio) in consumers {
        c.register(name, prio, accept()).expect("fresh callbacks");
    }
    c
}

/// The memory chain of a booted Linux 6.1 x86-64 (Debian config), in
/// registration order (spec 02 §4).
pub fn boot_chain_6_1() -> MemoryChain {
    boot_chains(crate::KernelVersion::V6_1, &ChainContext::default()).0
}

/// The memory and node chains of a booted kernel of `version`, in
/// registration order (spec 02 §4): in mainline, SLUB, memory tiers, HMAT
/// and cpuset moved to the node chain and the weighted-interleave sysfs and
/// kdump consumers are new; 6.1 has no node chain.
pub fn boot_chains(version: crate::KernelVersion, ctx: &ChainContext) -> (MemoryChain, NodeChain) {
    match version {
        crate::KernelVersion::V6_1 => (
            chain_of(
                ctx,
                &[
                    ("slab_memory_callback", 1),
                    ("page_ext_callback", 0),
                    ("mm_compute_batch_notifier", 10),
                    ("cpuset_track_online_nodes", 10),
                    ("kcore_callback", 0),
                    ("reserve_mem_notifier", 0),
                    ("ksm_memory_callback", 100),
                    ("memtier_hotplug_callback", 100),
                    ("hmat_callback", 2),
                ],
            ),
            NotifierChain::new(ctx.clone()),
        ),
        crate::KernelVersion::Mainline => (
            chain_of(
                ctx,
                &[
                    ("page_ext_callback", 0),
                    ("mm_compute_batch_notifier", 10),
                    ("kcore_callback", 0),
                    ("reserve_mem_notifier", 0),
                    ("crash_memhp_notifier", 0),
                    ("ksm_memory_callback", 100),
                ],
            ),
            chain_of(
                ctx,
                &[
                    ("slab_memory_callback", 1),
                    ("cpuset_track_online_nodes", 10),
                    ("wi_node_notifier", 0),
                    ("memtier_hotplug_callback", 100),
                    ("hmat_callback", 6),
                ],
            ),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `struct memory_notify` for one 128 MiB block at 4 GiB.
    pub(crate) fn arg() -> MemoryNotify {
        MemoryNotify {
            start_pfn: 0x100000,
            nr_pages: 32768,
            status_change_nid_normal: -1,
            status_change_nid: -1,
        }
    }

    #[test]
    fn errno_encoding_round_trips() {
        assert_eq!(notifier_from_errno(0), NOTIFY_OK);
        assert_eq!(notifier_from_errno(-12), 0x800D);
        assert_eq!(notifier_from_errno(-1), NOTIFY_BAD);
        assert_eq!(notifier_to_errno(0x800D), -12);
        assert_eq!(notifier_to_errno(NOTIFY_BAD), -1);
        assert_eq!(notifier_to_errno(NOTIFY_STOP), 0);
        assert_eq!(notifier_to_errno(0x0002), -1);
        assert_eq!(notifier_to_errno(notifier_from_errno(-4095)), -4095);
    }

    #[test]
    fn registration_is_by_descending_priority_fifo_among_equals() {
        let c = boot_chain_6_1();
        let names: Vec<String> = c.order().into_iter().map(|o| o.0).collect();
        assert_eq!(
            names,
            [
                "ksm_memory_callback",
                "memtier_hotplug_callback",
                "mm_compute_batch_notifier",
                "cpuset_track_online_nodes",
                "hmat_callback",
                "slab_memory_callback",
                "page_ext_callback",
                "kcore_callback",
                "reserve_mem_notifier"
            ]
        );
    }

    #[test]
    fn double_registration_is_eexist_and_unknown_unregister_enoent() {
        let mut c = MemoryChain::default();
        let cb: MemoryCallback = accept();
        let id = c.register("a", 0, Arc::clone(&cb)).unwrap();
        assert_eq!(c.register("a", 0, cb), Err(NotifierError::Exists));
        c.unregister(id).unwrap();
        assert_eq!(c.unregister(id), Err(NotifierError::NotFound));
    }

    #[test]
    fn stop_bit_stops_the_walk_and_error_without_it_is_overwritten() {
        let mut c = MemoryChain::default();
        c.register("bad-no-stop", 3, Arc::new(|_, _| 0x0002))
            .unwrap();
        c.register("ok", 2, accept()).unwrap();
        let (inj, mut log) = (NotifierInjection::default(), Vec::new());
        assert_eq!(
            c.call(MemAction::GoingOnline, &arg(), None, &inj, &mut log),
            (NOTIFY_OK, 2)
        );
        c.register("veto", 1, Arc::new(|_, _| notifier_from_errno(-16)))
            .unwrap();
        c.register("after", 0, accept()).unwrap();
        let (ret, n) = c.call(MemAction::GoingOnline, &arg(), None, &inj, &mut log);
        assert_eq!((notifier_to_errno(ret), n), (-16, 3));
    }

    #[test]
    fn robust_call_sends_down_only_to_those_before_the_failure() {
        let mut c = MemoryChain::default();
        c.register("a", 2, accept()).unwrap();
        c.register(
            "b",
            1,
            Arc::new(|a, _| {
                if a == MemAction::GoingOnline {
                    NOTIFY_BAD
                } else {
                    NOTIFY_OK
                }
            }),
        )
        .unwrap();
        c.register("c", 0, accept()).unwrap();
        c.take_trace();
        c.call_robust(
            MemAction::GoingOnline,
            MemAction::CancelOnline,
            &arg(),
            &NotifierInjection::default(),
            &mut Vec::new(),
        );
        let t: Vec<(String, MemAction)> = c
            .take_trace()
            .into_iter()
            .map(|r| (r.consumer.to_string(), r.mem_action().unwrap()))
            .collect();
        assert_eq!(
            t,
            vec![
                ("a".into(), MemAction::GoingOnline),
                ("b".into(), MemAction::GoingOnline),
                ("a".into(), MemAction::CancelOnline)
            ]
        );
    }
}
