//! Built-in user-space onliners: programs that react to memory `add`
//! uevents by writing sysfs files, the way distributions and guest agents
//! do, racing each other and the kernel's own auto-online. Each agent acts
//! after its delay (virtual milliseconds after the uevent); agents with the
//! same delay are ordered by a seeded shuffle, so a race is decided the same
//! way for the same seed.
//!
//! * `rhel`: `online_movable` on bare metal, `online` in a VM, only if the
//!   block still reads `offline` (RHEL's udev rule);
//! * `ubuntu-hyperv`: writes `online` to `state` unconditionally (EINVAL
//!   when the kernel or someone else was first);
//! * `kata-agent`: writes `1` to `online`, ignoring errors;
//! * `daxctl`: `online_movable` if offline, then re-reads `valid_zones` and
//!   reports a lost race when the block is not in ZONE_MOVABLE.

use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use std::fmt;

/// Which program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    Rhel,
    UbuntuHyperv,
    KataAgent,
    Daxctl,
}

impl AgentKind {
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Rhel => "rhel",
            AgentKind::UbuntuHyperv => "ubuntu-hyperv",
            AgentKind::KataAgent => "kata-agent",
            AgentKind::Daxctl => "daxctl",
        }
    }
}

impl std::str::FromStr for AgentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            AgentKind::Rhel,
            AgentKind::UbuntuHyperv,
            AgentKind::KataAgent,
            AgentKind::Daxctl,
        ]
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| format!("unknown onliner {s:?} (rhel, ubuntu-hyperv, kata-agent, daxctl)"))
    }
}

/// One configured agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agent {
    pub kind: AgentKind,
    /// Virtual milliseconds between the `add` uevent and the agent's write.
    pub delay_ms: u64,
}

impl std::str::FromStr for Agent {
    type Err = String;
    /// `KIND[:DELAY_MS]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, d) = s.split_once(':').unwrap_or((s, "0"));
        let delay_ms = d
            .parse()
            .map_err(|_| format!("onliner {s:?}: delay must be milliseconds"))?;
        Ok(Agent {
            kind: k.parse()?,
            delay_ms,
        })
    }
}

/// What an agent did to one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAction {
    pub agent: AgentKind,
    pub block: u64,
    /// The file written and the value, or `None` when the agent decided not
    /// to write.
    pub write: Option<(String, String)>,
    pub result: Result<usize, Errno>,
    /// `daxctl`'s verdict: the zone it found, when it lost the race.
    pub lost_race: Option<String>,
}

impl fmt::Display for AgentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.write {
            None => write!(
                f,
                "{} memory{}: already online, nothing to do",
                self.agent.name(),
                self.block
            ),
            Some((file, value)) => {
                write!(
                    f,
                    "{} memory{}: {file} <- {value:?}: ",
                    self.agent.name(),
                    self.block
                )?;
                match self.result {
                    Ok(n) => write!(f, "OK ({n})")?,
                    Err(e) => write!(f, "errno {}", e.0)?,
                }
                if let Some(z) = &self.lost_race {
                    write!(f, " (lost the race: block is in {z})")?;
                }
                Ok(())
            }
        }
    }
}

/// splitmix64: a tiny deterministic generator for tie-breaking.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The order agents act in for one block: by delay, ties by a seeded shuffle.
pub fn schedule(agents: &[Agent], seed: u64, block: u64) -> Vec<Agent> {
    let mut rng = seed ^ block.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut keyed: Vec<(u64, u64, Agent)> = agents
        .iter()
        .map(|a| (a.delay_ms, splitmix(&mut rng), *a))
        .collect();
    keyed.sort_by_key(|k| (k.0, k.1));
    keyed.into_iter().map(|k| k.2).collect()
}

fn read(tree: &dyn Tree, path: &str) -> String {
    tree.read(path)
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
        .unwrap_or_default()
}

/// Let every agent react to the `add` of `blocks`, in schedule order.
pub fn react(
    tree: &dyn Tree,
    agents: &[Agent],
    seed: u64,
    hypervisor: bool,
    blocks: &[u64],
) -> Vec<AgentAction> {
    let mut out = Vec::new();
    for &b in blocks {
        let dir = format!("sys/devices/system/memory/memory{b}");
        for a in schedule(agents, seed, b) {
            let state = read(tree, &format!("{dir}/state"));
            let write = |file: &str, value: &str| {
                let path = format!("{dir}/{file}");
                let r = tree
                    .open(&path, false, true)
                    .and_then(|_| tree.write(&path, value.as_bytes(), &Cancel::new()));
                (Some((file.to_string(), value.to_string())), r)
            };
            let (w, result, lost) = match a.kind {
                AgentKind::Rhel if state != "offline" => (None, Ok(0), None),
                AgentKind::Rhel => {
                    let (w, r) = write(
                        "state",
                        if hypervisor {
                            "online"
                        } else {
                            "online_movable"
                        },
                    );
                    (w, r, None)
                }
                AgentKind::UbuntuHyperv => {
                    let (w, r) = write("state", "online");
                    (w, r, None)
                }
                AgentKind::KataAgent => {
                    let (w, r) = write("online", "1");
                    (w, r, None)
                }
                AgentKind::Daxctl => {
                    let (w, r) = if state == "offline" {
                        write("state", "online_movable")
                    } else {
                        (
                            Some(("state".into(), "online_movable".into())),
                            Err(Errno::EINVAL),
                        )
                    };
                    let zones = read(tree, &format!("{dir}/valid_zones"));
                    let lost = (zones != "Movable").then_some(zones);
                    (w, r, lost)
                }
            };
            out.push(AgentAction {
                agent: a.kind,
                block: b,
                write: w,
                result,
                lost_race: lost,
            });
        }
    }
    out
}
