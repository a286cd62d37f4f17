//! Host-side fault injection into the notifier chains: for any memory
//! event (and, in mainline, any node event), a callback that returns an errno always, once, on every
//! Nth matching call, or with a probability drawn from a seeded generator
//! (deterministic: the same seed fails the same calls).
//!
//! This is memhp's own tool, beside the kernel's
//! `memory-notifier-error-inject` module (which memhp also models exactly:
//! two debugfs files, GOING events only, always on). A rule joins the chain
//! as the consumer `memhp_fault_inject` at the priority it is given, so
//! where it sits relative to the kernel's consumers decides which of them
//! see the event and which get the cancel (spec 02 §2.5). As in the kernel,
//! an error only vetoes `MEM_GOING_ONLINE` / `MEM_GOING_OFFLINE` (and
//! `NODE_ADDING_FIRST_MEMORY` / `NODE_REMOVING_LAST_MEMORY`); for the other
//! events it is recorded in the chain trace and otherwise ignored.

use crate::events::{MemAction, NodeAction};
use crate::notifier::{
    notifier_from_errno, Callback, ChainEvent, NotifierError, NotifierId, NOTIFY_DONE,
};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// The consumer name a rule has in the chain and its trace.
pub const FAULT_CONSUMER: &str = "memhp_fault_inject";

/// When a rule fails a matching call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultMode {
    /// Every matching call.
    Always,
    /// The first matching call only.
    Once,
    /// Matching calls N, 2N, 3N, ... (1-based).
    EveryNth(u64),
    /// Each matching call with probability `p`, from a generator seeded
    /// with `seed`.
    Probability { p: f64, seed: u64 },
}

/// The event a rule fails: on the memory chain or on the node chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultEvent {
    Memory(MemAction),
    Node(NodeAction),
}

impl FaultEvent {
    /// The event named `name` (`MEM_*` or `NODE_*`).
    pub fn from_name(name: &str) -> Option<FaultEvent> {
        MemAction::from_name(name)
            .map(FaultEvent::Memory)
            .or_else(|| NodeAction::from_name(name).map(FaultEvent::Node))
    }

    pub const fn name(self) -> &'static str {
        match self {
            FaultEvent::Memory(a) => a.name(),
            FaultEvent::Node(a) => a.name(),
        }
    }
}

impl From<MemAction> for FaultEvent {
    fn from(a: MemAction) -> Self {
        FaultEvent::Memory(a)
    }
}

impl From<NodeAction> for FaultEvent {
    fn from(a: NodeAction) -> Self {
        FaultEvent::Node(a)
    }
}

/// A rule: fail `action` with `errno` (negative) according to `mode`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultRule {
    pub action: FaultEvent,
    pub errno: i32,
    pub mode: FaultMode,
}

#[derive(Debug, Error, PartialEq)]
pub enum FaultError {
    #[error("errno {0} is not in -4095..-1")]
    Errno(i64),
    #[error("every-Nth needs N >= 1")]
    ZeroPeriod,
    #[error("probability {0} is not in 0..1")]
    Probability(f64),
    #[error("no fault rule {0}")]
    NotFound(u64),
    #[error("notifier chain: {0}")]
    Chain(#[from] NotifierError),
    #[error("{0} needs the node notifier chain, which Linux 6.1 does not have")]
    NoNodeChain(&'static str),
}

impl FaultError {
    /// The errno a kernel-style interface would report.
    pub fn errno(&self) -> i32 {
        match self {
            FaultError::NotFound(_) => 2,
            FaultError::Chain(NotifierError::Exists) => 17,
            _ => 22,
        }
    }
}

impl FaultRule {
    /// A checked rule.
    pub fn new(
        action: impl Into<FaultEvent>,
        errno: i64,
        mode: FaultMode,
    ) -> Result<FaultRule, FaultError> {
        let action = action.into();
        if !(-4095..=-1).contains(&errno) {
            return Err(FaultError::Errno(errno));
        }
        match mode {
            FaultMode::EveryNth(0) => return Err(FaultError::ZeroPeriod),
            FaultMode::Probability { p, .. } if !(0.0..=1.0).contains(&p) => {
                return Err(FaultError::Probability(p))
            }
            _ => {}
        }
        Ok(FaultRule {
            action,
            errno: errno as i32,
            mode,
        })
    }
}

/// splitmix64: small, seedable, and the same on every platform.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a rule has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Calls for the rule's action.
    pub matched: u64,
    /// Calls it failed.
    pub fired: u64,
}

#[derive(Debug)]
struct FaultState {
    counts: FaultCounts,
    rng: u64,
}

/// A rule in the chain.
#[derive(Clone, Debug)]
pub struct ActiveFault {
    pub id: NotifierId,
    pub rule: FaultRule,
    pub priority: i32,
    state: Arc<Mutex<FaultState>>,
}

impl ActiveFault {
    pub fn counts(&self) -> FaultCounts {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).counts
    }
}

/// The callback of `rule`, failing `target` on its chain, and the state it
/// updates.
fn callback<E: ChainEvent>(rule: FaultRule, target: E) -> (Callback<E>, Arc<Mutex<FaultState>>) {
    let seed = match rule.mode {
        FaultMode::Probability { seed, .. } => seed,
        _ => 0,
    };
    let state = Arc::new(Mutex::new(FaultState {
        counts: FaultCounts::default(),
        rng: seed,
    }));
    let shared = state.clone();
    let cb: Callback<E> = Arc::new(move |action, _arg| {
        if action != target {
            return NOTIFY_DONE;
        }
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.counts.matched += 1;
        let fire = match rule.mode {
            FaultMode::Always => true,
            FaultMode::Once => s.counts.fired == 0,
            FaultMode::EveryNth(n) => s.counts.matched.is_multiple_of(n),
            FaultMode::Probability { p, .. } => {
                // 53 random bits as a fraction in [0, 1).
                let x = (splitmix64(&mut s.rng) >> 11) as f64 / (1u64 << 53) as f64;
                x < p
            }
        };
        if fire {
            s.counts.fired += 1;
            notifier_from_errno(rule.errno)
        } else {
            NOTIFY_DONE
        }
    });
    (cb, state)
}

impl crate::System {
    /// Add `rule` to its chain at `priority`.
    pub fn add_fault(&mut self, rule: FaultRule, priority: i32) -> Result<NotifierId, FaultError> {
        let (id, state) = match rule.action {
            FaultEvent::Memory(a) => {
                let (cb, state) = callback(rule, a);
                (
                    self.memory_chain.register(FAULT_CONSUMER, priority, cb)?,
                    state,
                )
            }
            FaultEvent::Node(a) if self.version == crate::KernelVersion::V6_1 => {
                return Err(FaultError::NoNodeChain(a.name()))
            }
            FaultEvent::Node(a) => {
                let (cb, state) = callback(rule, a);
                (
                    self.node_chain.register(FAULT_CONSUMER, priority, cb)?,
                    state,
                )
            }
        };
        self.faults.push(ActiveFault {
            id,
            rule,
            priority,
            state,
        });
        Ok(id)
    }

    /// Take rule `id` out of the chain.
    pub fn remove_fault(&mut self, id: NotifierId) -> Result<(), FaultError> {
        let pos = self
            .faults
            .iter()
            .position(|f| f.id == id)
            .ok_or(FaultError::NotFound(id.0))?;
        match self.faults[pos].rule.action {
            FaultEvent::Memory(_) => self.memory_chain.unregister(id)?,
            FaultEvent::Node(_) => self.node_chain.unregister(id)?,
        }
        self.faults.remove(pos);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::tests::arg;

    fn fires(rule: FaultRule, calls: usize) -> Vec<bool> {
        let FaultEvent::Memory(a) = rule.action else {
            panic!("memory rules only")
        };
        let (cb, _) = callback(rule, a);
        (0..calls).map(|_| cb(a, &arg()) != NOTIFY_DONE).collect()
    }

    #[test]
    fn once_fails_only_the_first_matching_call() {
        let rule = FaultRule::new(MemAction::GoingOffline, -16, FaultMode::Once).unwrap();
        assert_eq!(fires(rule, 3), [true, false, false]);
    }

    #[test]
    fn every_third_fails_calls_3_and_6() {
        let rule = FaultRule::new(MemAction::GoingOnline, -12, FaultMode::EveryNth(3)).unwrap();
        assert_eq!(fires(rule, 6), [false, false, true, false, false, true]);
    }

    #[test]
    fn other_actions_pass_and_do_not_count() {
        let rule = FaultRule::new(MemAction::GoingOnline, -12, FaultMode::Once).unwrap();
        let (cb, state) = callback(rule, MemAction::GoingOnline);
        assert_eq!(cb(MemAction::GoingOffline, &arg()), NOTIFY_DONE);
        assert_eq!(state.lock().unwrap().counts, FaultCounts::default());
        assert_eq!(cb(MemAction::GoingOnline, &arg()), notifier_from_errno(-12));
    }

    #[test]
    fn probability_is_reproducible_from_its_seed_and_near_p() {
        let mode = FaultMode::Probability { p: 0.25, seed: 42 };
        let rule = FaultRule::new(MemAction::GoingOffline, -11, mode).unwrap();
        let a = fires(rule, 4000);
        assert_eq!(a, fires(rule, 4000));
        let n = a.iter().filter(|f| **f).count();
        assert!((900..1100).contains(&n), "{n} of 4000 at p=0.25");
        let other = FaultMode::Probability { p: 0.25, seed: 43 };
        assert_ne!(
            a,
            fires(
                FaultRule {
                    mode: other,
                    ..rule
                },
                4000
            )
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let a = MemAction::GoingOnline;
        assert_eq!(
            FaultRule::new(a, 0, FaultMode::Always),
            Err(FaultError::Errno(0))
        );
        assert_eq!(
            FaultRule::new(a, -4096, FaultMode::Always),
            Err(FaultError::Errno(-4096))
        );
        assert_eq!(
            FaultRule::new(a, -1, FaultMode::EveryNth(0)),
            Err(FaultError::ZeroPeriod)
        );
        assert_eq!(
            FaultRule::new(a, -1, FaultMode::Probability { p: 1.5, seed: 0 }),
            Err(FaultError::Probability(1.5))
        );
    }

    /// A 1 GiB qemu-pc with one offline hot-added block; its id.
    fn machine_with_offline_block() -> (crate::System, u64) {
        let mut q = crate::machine::QemuPc::default();
        q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
        let spec = q
            .machine("memhp_default_state=offline", crate::KernelVersion::V6_1)
            .unwrap();
        let mut sys = crate::System::boot(&spec).unwrap();
        let base = spec.dimm.unwrap().base;
        let bs = sys.block_size;
        sys.add_memory(&crate::hotadd::AddRequest::system_ram(0, base, bs, false))
            .unwrap();
        sys.memory_chain.take_trace();
        (sys, base / bs)
    }

    #[test]
    fn failed_going_online_reaches_higher_priorities_and_cancel_reaches_all() {
        let (mut sys, id) = machine_with_offline_block();
        let rule = FaultRule::new(MemAction::GoingOnline, -12, FaultMode::Always).unwrap();
        sys.add_fault(rule, 50).unwrap();
        assert_eq!(
            sys.device_online(id),
            Err(crate::hotplug::HotplugError::Notifier(-12))
        );
        let trace: Vec<(String, &str, i32)> = sys
            .memory_chain
            .take_trace()
            .into_iter()
            .map(|r| (r.consumer.to_string(), r.event(), r.ret))
            .collect();
        let going: Vec<&str> = trace
            .iter()
            .filter(|t| t.1 == "MEM_GOING_ONLINE")
            .map(|t| t.0.as_str())
            .collect();
        // Priority 100 consumers first, then the rule, which stops the chain.
        assert_eq!(
            going,
            [
                "ksm_memory_callback",
                "memtier_hotplug_callback",
                FAULT_CONSUMER
            ]
        );
        assert_eq!(trace[2].2, notifier_from_errno(-12));
        // MEM_CANCEL_ONLINE goes to the whole chain, the consumers that never
        // saw MEM_GOING_ONLINE included.
        let cancel: Vec<&str> = trace
            .iter()
            .filter(|t| t.1 == "MEM_CANCEL_ONLINE")
            .map(|t| t.0.as_str())
            .collect();
        assert_eq!(cancel.len(), sys.memory_chain.order().len());
        assert!(cancel.contains(&"slab_memory_callback"));
        assert_eq!(sys.blocks[&id].state, crate::BlockState::Offline);
        assert_eq!(
            sys.faults[0].counts(),
            FaultCounts {
                matched: 1,
                fired: 1
            }
        );
    }

    #[test]
    fn removed_rule_leaves_the_chain_as_booted() {
        let (mut sys, id) = machine_with_offline_block();
        let before = sys.memory_chain.order();
        let rule = FaultRule::new(MemAction::GoingOnline, -12, FaultMode::Always).unwrap();
        let fid = sys.add_fault(rule, 50).unwrap();
        sys.remove_fault(fid).unwrap();
        assert_eq!(sys.memory_chain.order(), before);
        assert_eq!(sys.remove_fault(fid), Err(FaultError::NotFound(fid.0)));
        assert!(sys.device_online(id).is_ok());
    }
}
