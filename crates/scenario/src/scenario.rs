//! The `.scn` scenario format (see the oracle README, "Scenario format").
//!
//! ```text
//! # comment lines
//! mem: 1G,slots=4,maxmem=4G   (QEMU -m, default 1G,slots=4,maxmem=4G)
//! smp: 2                      (default 1)
//! machine: pc                 (default pc)
//! qemu: -object ... -numa ... (repeatable)
//! cmdline: movable_node ...   (repeatable)
//! timeout: 900                (seconds, default 900)
//! steps:
//! <guest shell lines>
//! ## section header
//! @hotadd ID SIZE [node=N] [addr=A] [driver=..] [backend=..] [wait=S]
//! @unplug ID [wait=S]
//! @qmp COMMAND [JSON]
//! @vmem-resize ID SIZE [wait=S]
//! @sleep S
//! ```

use crate::qemu::{parse_qemu_args, QemuArg, QemuArgError};
use crate::shlex::{self, ShlexError};
use crate::size::{parse_size, MemSpec, MemSpecError, SizeError};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Default `timeout:` (seconds), as the oracle runner uses.
pub const DEFAULT_TIMEOUT_SECS: u64 = 900;
/// Default `wait=` of `@hotadd` (seconds).
pub const DEFAULT_HOTADD_WAIT_SECS: u64 = 300;
/// Default `wait=` of `@unplug` (seconds).
pub const DEFAULT_UNPLUG_WAIT_SECS: u64 = 120;
/// Default `wait=` of `@vmem-resize` (seconds).
pub const DEFAULT_VMEM_RESIZE_WAIT_SECS: u64 = 300;

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file name without `.scn`.
    pub name: String,
    /// QEMU `-m`.
    pub mem: MemSpec,
    /// QEMU `-smp` (number of CPUs).
    pub smp: u32,
    /// QEMU `-smp ...,maxcpus=M`: possible CPUs (as many as `smp` unless
    /// more are given).
    pub maxcpus: u32,
    /// QEMU `-M`.
    pub machine: String,
    /// All `qemu:` lines, split and typed, in order.
    pub qemu: Vec<QemuArg>,
    /// All `cmdline:` words, in order (appended to the base kernel command line).
    pub cmdline: Vec<String>,
    /// Wall-clock limit of the whole run.
    pub timeout: Duration,
    /// The steps, one per line after `steps:`.
    pub steps: Vec<Step>,
    /// The scenario text exactly as read (the transcript header repeats it).
    pub text: String,
}

/// One line after `steps:`.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A guest shell line, verbatim (trailing whitespace removed, indentation
    /// kept). Consecutive lines stay separate steps; together they form the
    /// guest script (a loop may span several lines). Blank lines and `#`
    /// comment lines are kept too.
    Shell(String),
    /// A `##` line: the text the guest echoes into the transcript, exactly as
    /// it appears there, **`##` included** (e.g. `"## before hot-add"`).
    Section(String),
    /// A host action (`@...` line).
    Host(HostStep),
}

/// A host action with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStep {
    /// The action.
    pub action: HostAction,
    /// The line as written, without surrounding whitespace (e.g.
    /// `@hotadd dimm1 512M node=0`): the transcript shows exactly this line
    /// where the guest waited.
    pub text: String,
    /// 1-based line number in the scenario file.
    pub line: usize,
}

/// What a host step does (all `wait=` values have their defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub enum HostAction {
    /// `@hotadd ID SIZE [node=N] [addr=A] [driver=..] [backend=..] [wait=S]`
    Hotadd(Hotadd),
    /// `@unplug ID [wait=S]`
    Unplug {
        /// device id
        id: String,
        /// how long to wait for the eject to finish or fail (default 120 s)
        wait: Duration,
    },
    /// `@qmp COMMAND [JSON-ARGUMENTS]`
    Qmp {
        /// the QMP command name
        command: String,
        /// its arguments (a JSON object), if any
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// `@vmem-resize ID SIZE [wait=S]`: set a virtio-mem device's requested size.
    VmemResize {
        /// device id
        id: String,
        /// new requested size in bytes
        size: u64,
        /// how long to wait until the device's size equals `size` (default 300 s)
        wait: Duration,
    },
    /// `@sleep S`
    Sleep(Duration),
}

/// `@hotadd` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Hotadd {
    /// device id (the backend is named `mem-ID`)
    pub id: String,
    /// size in bytes
    pub size: u64,
    /// `node=`
    pub node: Option<u32>,
    /// `addr=` (guest physical address)
    pub addr: Option<u64>,
    /// `driver=` (default `pc-dimm`)
    pub driver: String,
    /// `backend=` (default `memory-backend-ram`)
    pub backend: String,
    /// how long to wait for the guest's final `_OST` (default 300 s)
    pub wait: Duration,
}

/// A parse error at a line of the scenario file.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("line {line}: {kind}")]
pub struct ScenarioError {
    /// 1-based line number (for a missing `steps:`, the line after the last).
    pub line: usize,
    /// What is wrong.
    pub kind: ScenarioErrorKind,
}

/// What is wrong with a scenario line.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScenarioErrorKind {
    /// A header line that is not `key: value`.
    #[error("header line `{0}` is not `key: value`")]
    MalformedHeader(String),
    /// A header key this format does not know.
    #[error("unknown header `{0}` (expected mem, smp, machine, qemu, cmdline, timeout, steps)")]
    UnknownHeader(String),
    /// A single-valued header given twice.
    #[error("header `{0}` given twice")]
    DuplicateHeader(String),
    /// A header without a value.
    #[error("header `{0}` has no value")]
    EmptyHeader(String),
    /// Text after `steps:`.
    #[error("unexpected text after `steps:`: `{0}`")]
    TextAfterSteps(String),
    /// No `steps:` line.
    #[error("no `steps:` line")]
    MissingSteps,
    /// `mem:` is malformed.
    #[error("mem: {0}")]
    Mem(#[from] MemSpecError),
    /// `smp:` is not QEMU's `-smp` with a positive CPU count.
    #[error("smp: bad CPU count `{0}` (expected N[,sockets=S][,dies=D][,cores=C][,threads=T][,maxcpus=M] with M at least N)")]
    Smp(String),
    /// `timeout:` is not a number of seconds.
    #[error("timeout: bad number of seconds `{0}`")]
    Timeout(String),
    /// A `qemu:` argument is malformed.
    #[error("qemu: {0}")]
    Qemu(#[from] QemuArgError),
    /// Quoting error in a `qemu:` or `@` line.
    #[error("{0}")]
    Quote(#[from] ShlexError),
    /// `@` without a verb.
    #[error("host step without a verb")]
    EmptyHostStep,
    /// `@verb` is not one of hotadd, unplug, qmp, vmem-resize, sleep.
    #[error("unknown host verb `@{0}` (expected hotadd, unplug, qmp, vmem-resize, sleep)")]
    UnknownHostVerb(String),
    /// A required positional argument is missing.
    #[error("@{verb}: missing {what}")]
    MissingArgument {
        /// the verb
        verb: String,
        /// e.g. `ID`, `SIZE`
        what: &'static str,
    },
    /// More positional arguments than the verb takes.
    #[error("@{verb}: unexpected argument `{arg}`")]
    UnexpectedArgument {
        /// the verb
        verb: String,
        /// the argument
        arg: String,
    },
    /// A `key=value` option the verb does not take.
    #[error("@{verb}: unknown option `{key}=`")]
    UnknownOption {
        /// the verb
        verb: String,
        /// the key
        key: String,
    },
    /// The same `key=` twice.
    #[error("@{verb}: option `{key}=` given twice")]
    DuplicateOption {
        /// the verb
        verb: String,
        /// the key
        key: String,
    },
    /// A malformed size.
    #[error("@{verb}: {source}")]
    BadSize {
        /// the verb
        verb: String,
        /// the size error
        source: SizeError,
    },
    /// A malformed number (node, addr) or duration (wait, sleep).
    #[error("@{verb}: bad {what} `{value}`")]
    BadValue {
        /// the verb
        verb: String,
        /// e.g. `node=`, `wait=`, `seconds`
        what: &'static str,
        /// the text
        value: String,
    },
    /// The `@qmp` arguments are not a JSON object.
    #[error("@qmp: arguments are not a JSON object: {0}")]
    BadJson(String),
}

/// A scenario file could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// the I/O error
        source: std::io::Error,
    },
    /// Parsing failed.
    #[error("{path}: {source}")]
    Parse {
        /// the file
        path: PathBuf,
        /// the parse error
        source: Box<ScenarioError>,
    },
}

fn err(line: usize, kind: impl Into<ScenarioErrorKind>) -> ScenarioError {
    ScenarioError {
        line,
        kind: kind.into(),
    }
}

impl Scenario {
    /// Reads and parses `path`; the name is the file name without extension.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scenario::parse(&name, &text).map_err(|source| LoadError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Parses scenario text.
    pub fn parse(name: &str, text: &str) -> Result<Self, ScenarioError> {
        let mut scn = Scenario {
            name: name.to_string(),
            mem: MemSpec::default(),
            smp: 1,
            maxcpus: 1,
            machine: "pc".to_string(),
            qemu: Vec::new(),
            cmdline: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            steps: Vec::new(),
            text: text.to_string(),
        };
        let mut seen: Vec<&'static str> = Vec::new();
        let mut in_steps = false;
        let mut last_line = 0;
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            last_line = lineno;
            let line = raw.trim_end();
            if in_steps {
                scn.steps.push(parse_step(line, lineno)?);
                continue;
            }
            let s = line.trim();
            if s.is_empty() || s.starts_with('#') {
                continue;
            }
            let Some((key, value)) = s.split_once(':') else {
                return Err(err(
                    lineno,
                    ScenarioErrorKind::MalformedHeader(s.to_string()),
                ));
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            let single: Option<&'static str> = match key.as_str() {
                "mem" => Some("mem"),
                "smp" => Some("smp"),
                "machine" => Some("machine"),
                "timeout" => Some("timeout"),
                _ => None,
            };
            if let Some(k) = single {
                if seen.contains(&k) {
                    return Err(err(lineno, ScenarioErrorKind::DuplicateHeader(key)));
                }
                seen.push(k);
                if value.is_empty() {
                    return Err(err(lineno, ScenarioErrorKind::EmptyHeader(key)));
                }
            }
            match key.as_str() {
                "steps" => {
                    if !value.is_empty() {
                        return Err(err(lineno, ScenarioErrorKind::TextAfterSteps(value.into())));
                    }
                    in_steps = true;
                }
                "mem" => scn.mem = MemSpec::parse(value).map_err(|e| err(lineno, e))?,
                "smp" => {
                    (scn.smp, scn.maxcpus) = parse_smp(value)
                        .ok_or_else(|| err(lineno, ScenarioErrorKind::Smp(value.into())))?;
                }
                "machine" => scn.machine = value.to_string(),
                "qemu" => {
                    let words = shlex::split(value).map_err(|e| err(lineno, e))?;
                    let args = parse_qemu_args(&words).map_err(|e| err(lineno, e))?;
                    scn.qemu.extend(args);
                }
                "cmdline" => scn
                    .cmdline
                    .extend(value.split_whitespace().map(String::from)),
                "timeout" => {
                    let secs = value
                        .parse::<u64>()
                        .map_err(|_| err(lineno, ScenarioErrorKind::Timeout(value.into())))?;
                    scn.timeout = Duration::from_secs(secs);
                }
                _ => return Err(err(lineno, ScenarioErrorKind::UnknownHeader(key))),
            }
        }
        if !in_steps {
            return Err(err(last_line + 1, ScenarioErrorKind::MissingSteps));
        }
        Ok(scn)
    }

    /// The host steps in order; a step's index here is its number in the
    /// `host N` / `@@WAIT N` / `GO N` protocol.
    pub fn host_steps(&self) -> impl Iterator<Item = &HostStep> {
        self.steps.iter().filter_map(|s| match s {
            Step::Host(h) => Some(h),
            _ => None,
        })
    }

    /// The guest script, compiled as the oracle runner does: shell lines
    /// verbatim, a section as `say '## text'`, the N-th host step (0-based)
    /// as `host N`; lines joined with `\n`, with a final `\n`.
    ///
    /// Scenario lines may call the guest's helper by its path
    /// (`/bin/ohelper dump ...`); see [`rewrite_ohelper_calls`].
    pub fn guest_script(&self) -> String {
        let mut out = String::new();
        let mut n = 0;
        for step in &self.steps {
            match step {
                Step::Shell(l) => out.push_str(l),
                Step::Section(s) => {
                    out.push_str("say ");
                    out.push_str(&shlex::quote(s));
                }
                Step::Host(_) => {
                    out.push_str(&format!("host {n}"));
                    n += 1;
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Replaces each `/bin/ohelper` word in a guest script with `$OHELPER`, so
/// that scenario lines calling the guest helper by its path use the helper
/// command the shell library is configured with (see
/// [`crate::helpers_sh::HELPERS_SH`]).
pub fn rewrite_ohelper_calls(script: &str) -> String {
    const WORD: &str = "/bin/ohelper";
    let sep_before = |c: char| c.is_whitespace() || ";|&(`".contains(c);
    let sep_after = |c: char| c.is_whitespace() || ";|&)`".contains(c);
    let mut out = String::with_capacity(script.len());
    let mut last = 0;
    for (i, _) in script.match_indices(WORD) {
        let before_ok = script[..i].chars().next_back().is_none_or(sep_before);
        let after_ok = script[i + WORD.len()..]
            .chars()
            .next()
            .is_none_or(sep_after);
        if before_ok && after_ok {
            out.push_str(&script[last..i]);
            out.push_str("$OHELPER");
            last = i + WORD.len();
        }
    }
    out.push_str(&script[last..]);
    out
}

fn parse_step(line: &str, lineno: usize) -> Result<Step, ScenarioError> {
    let s = line.trim();
    if let Some(body) = s.strip_prefix('@') {
        let action = parse_host_action(body).map_err(|k| err(lineno, k))?;
        return Ok(Step::Host(HostStep {
            action,
            text: s.to_string(),
            line: lineno,
        }));
    }
    if s.starts_with("##") {
        return Ok(Step::Section(s.to_string()));
    }
    Ok(Step::Shell(line.to_string()))
}

fn parse_duration(
    verb: &str,
    what: &'static str,
    text: &str,
) -> Result<Duration, ScenarioErrorKind> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| ScenarioErrorKind::BadValue {
            verb: verb.to_string(),
            what,
            value: text.to_string(),
        })
}

/// Python's `int(text, 0)`: decimal, or `0x`/`0o`/`0b` prefixed.
fn parse_int_auto(text: &str) -> Option<u64> {
    let t = text.replace('_', "");
    let lower = t.to_ascii_lowercase();
    let (digits, radix) = if let Some(h) = lower.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (o, 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (b, 2)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn parse_host_action(body: &str) -> Result<HostAction, ScenarioErrorKind> {
    let verb = body.split_whitespace().next().unwrap_or("");
    if verb.is_empty() {
        return Err(ScenarioErrorKind::EmptyHostStep);
    }
    if verb == "qmp" {
        // @qmp COMMAND [JSON]: the JSON text is kept as written (not shell-split)
        let mut parts = body.trim().splitn(3, char::is_whitespace);
        parts.next();
        let command = parts
            .next()
            .filter(|c| !c.is_empty())
            .ok_or(ScenarioErrorKind::MissingArgument {
                verb: "qmp".into(),
                what: "COMMAND",
            })?
            .to_string();
        let arguments = match parts.next().map(str::trim).filter(|j| !j.is_empty()) {
            None => None,
            Some(json) => match serde_json::from_str::<serde_json::Value>(json) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                Ok(other) => return Err(ScenarioErrorKind::BadJson(format!("got `{other}`"))),
                Err(e) => return Err(ScenarioErrorKind::BadJson(e.to_string())),
            },
        };
        return Ok(HostAction::Qmp { command, arguments });
    }
    let words = shlex::split(body)?;
    let verb = words[0].clone();
    let mut pos: Vec<String> = Vec::new();
    let mut opts: Vec<(String, String)> = Vec::new();
    for w in &words[1..] {
        match w.split_once('=') {
            Some((k, v)) => {
                if opts.iter().any(|(k2, _)| k2 == k) {
                    return Err(ScenarioErrorKind::DuplicateOption {
                        verb,
                        key: k.to_string(),
                    });
                }
                opts.push((k.to_string(), v.to_string()));
            }
            None => pos.push(w.clone()),
        }
    }
    let (pos_names, allowed): (&[&'static str], &[&str]) = match verb.as_str() {
        "hotadd" => (
            &["ID", "SIZE"],
            &["node", "addr", "driver", "backend", "wait"],
        ),
        "unplug" => (&["ID"], &["wait"]),
        "vmem-resize" => (&["ID", "SIZE"], &["wait"]),
        "sleep" => (&["SECONDS"], &[]),
        _ => return Err(ScenarioErrorKind::UnknownHostVerb(verb)),
    };
    if let Some((k, _)) = opts.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(ScenarioErrorKind::UnknownOption {
            verb,
            key: k.clone(),
        });
    }
    if pos.len() < pos_names.len() {
        return Err(ScenarioErrorKind::MissingArgument {
            verb,
            what: pos_names[pos.len()],
        });
    }
    if let Some(extra) = pos.get(pos_names.len()) {
        return Err(ScenarioErrorKind::UnexpectedArgument {
            verb,
            arg: extra.clone(),
        });
    }
    let opt = |k: &str| opts.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_str());
    let wait = |default: u64| -> Result<Duration, ScenarioErrorKind> {
        opt("wait").map_or(Ok(Duration::from_secs(default)), |w| {
            parse_duration(&verb, "wait=", w)
        })
    };
    let size = |text: &str| {
        parse_size(text).map_err(|source| ScenarioErrorKind::BadSize {
            verb: verb.clone(),
            source,
        })
    };
    Ok(match verb.as_str() {
        "hotadd" => {
            let node = opt("node")
                .map(|n| {
                    n.parse::<u32>().map_err(|_| ScenarioErrorKind::BadValue {
                        verb: verb.clone(),
                        what: "node=",
                        value: n.to_string(),
                    })
                })
                .transpose()?;
            let addr = opt("addr")
                .map(|a| {
                    parse_int_auto(a).ok_or_else(|| ScenarioErrorKind::BadValue {
                        verb: verb.clone(),
                        what: "addr=",
                        value: a.to_string(),
                    })
                })
                .transpose()?;
            HostAction::Hotadd(Hotadd {
                id: pos[0].clone(),
                size: size(&pos[1])?,
                node,
                addr,
                driver: opt("driver").unwrap_or("pc-dimm").to_string(),
                backend: opt("backend").unwrap_or("memory-backend-ram").to_string(),
                wait: wait(DEFAULT_HOTADD_WAIT_SECS)?,
            })
        }
        "unplug" => HostAction::Unplug {
            id: pos[0].clone(),
            wait: wait(DEFAULT_UNPLUG_WAIT_SECS)?,
        },
        "vmem-resize" => HostAction::VmemResize {
            id: pos[0].clone(),
            size: size(&pos[1])?,
            wait: wait(DEFAULT_VMEM_RESIZE_WAIT_SECS)?,
        },
        _ => HostAction::Sleep(parse_duration(&verb, "seconds", &pos[0])?),
    })
}

/// QEMU's `-smp [cpus=]N[,sockets=S][,dies=D][,cores=C][,threads=T][,maxcpus=M]`:
/// the present CPU count (the topology's product when N is left out) and
/// the possible one (`maxcpus`, at least N).
pub fn parse_smp(value: &str) -> Option<(u32, u32)> {
    let mut cpus = None;
    let mut product = 1u32;
    let mut maxcpus = None;
    for (i, part) in value.split(',').enumerate() {
        let (key, v) = match part.split_once('=') {
            Some((k, v)) => (k, v),
            None if i == 0 => ("cpus", part),
            None => return None,
        };
        let n: u32 = v.parse().ok().filter(|&n| n > 0)?;
        match key {
            "cpus" => cpus = Some(n),
            "sockets" | "dies" | "clusters" | "cores" | "threads" => {
                product = product.checked_mul(n)?
            }
            "maxcpus" => maxcpus = Some(n),
            _ => return None,
        }
    }
    let n = cpus.unwrap_or(product);
    let max = maxcpus.unwrap_or(n);
    (max >= n).then_some((n, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smp_takes_qemus_topology_forms_and_maxcpus() {
        assert_eq!(parse_smp("2"), Some((2, 2)));
        assert_eq!(parse_smp("cpus=3"), Some((3, 3)));
        assert_eq!(parse_smp("4,sockets=2,cores=2"), Some((4, 4)));
        assert_eq!(parse_smp("sockets=2,cores=2,threads=2"), Some((8, 8)));
        assert_eq!(parse_smp("2,maxcpus=2"), Some((2, 2)));
        assert_eq!(parse_smp("1,maxcpus=8"), Some((1, 8)));
        // QEMU: "maxcpus must be equal to or greater than smp".
        assert_eq!(parse_smp("4,maxcpus=2"), None);
        assert_eq!(parse_smp("0"), None);
        assert_eq!(parse_smp("2,bogus=1"), None);
        assert_eq!(parse_smp("two"), None);
    }

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse("t", text)
    }

    #[test]
    fn defaults_apply_when_headers_are_absent() {
        let s = parse("steps:\nblocks\n").unwrap();
        assert_eq!(s.mem, MemSpec::default());
        assert_eq!(s.mem.raw, "1G,slots=4,maxmem=4G");
        assert_eq!(s.smp, 1);
        assert_eq!(s.machine, "pc");
        assert_eq!(s.timeout, Duration::from_secs(900));
        assert_eq!(s.steps, vec![Step::Shell("blocks".into())]);
    }

    #[test]
    fn steps_keep_shell_lines_separate_and_type_sections_and_host_steps() {
        let s = parse(
            "steps:\nfor b in 1 2; do\n  echo $b\ndone\n## head line\n  @hotadd d1 512M node=1 addr=0x140000000 wait=5\n@unplug d1\n@sleep 0.5\n@vmem-resize vm0 300M wait=120\n@qmp qom-get {\"path\":\"/x\", \"property\":\"size\"}\n@qmp query-memory-devices\n",
        )
        .unwrap();
        assert_eq!(s.steps[0], Step::Shell("for b in 1 2; do".into()));
        assert_eq!(s.steps[1], Step::Shell("  echo $b".into()));
        assert_eq!(s.steps[2], Step::Shell("done".into()));
        assert_eq!(s.steps[3], Step::Section("## head line".into()));
        let Step::Host(h) = &s.steps[4] else { panic!() };
        assert_eq!(h.text, "@hotadd d1 512M node=1 addr=0x140000000 wait=5");
        assert_eq!(h.line, 6);
        assert_eq!(
            h.action,
            HostAction::Hotadd(Hotadd {
                id: "d1".into(),
                size: 512 << 20,
                node: Some(1),
                addr: Some(0x1_4000_0000),
                driver: "pc-dimm".into(),
                backend: "memory-backend-ram".into(),
                wait: Duration::from_secs(5),
            })
        );
        let actions: Vec<_> = s.host_steps().map(|h| h.action.clone()).collect();
        assert_eq!(
            actions[1],
            HostAction::Unplug {
                id: "d1".into(),
                wait: Duration::from_secs(120)
            }
        );
        assert_eq!(actions[2], HostAction::Sleep(Duration::from_millis(500)));
        assert_eq!(
            actions[3],
            HostAction::VmemResize {
                id: "vm0".into(),
                size: 300 << 20,
                wait: Duration::from_secs(120)
            }
        );
        let HostAction::Qmp { command, arguments } = &actions[4] else {
            panic!()
        };
        assert_eq!(command, "qom-get");
        assert_eq!(arguments.as_ref().unwrap()["property"], "size");
        assert_eq!(
            actions[5],
            HostAction::Qmp {
                command: "query-memory-devices".into(),
                arguments: None
            }
        );
    }

    #[test]
    fn guest_script_compiles_like_run_py() {
        let s = parse("smp: 1\nsteps:\nr $M/x\n  ## it's here\n  @hotadd d 128M\nfor i in 1; do\n@unplug d\ndone\n").unwrap();
        assert_eq!(
            s.guest_script(),
            "r $M/x\nsay '## it'\"'\"'s here'\nhost 0\nfor i in 1; do\nhost 1\ndone\n"
        );
    }

    #[test]
    fn rewrite_ohelper_calls_only_replaces_the_command_word() {
        assert_eq!(
            rewrite_ohelper_calls(
                "/bin/ohelper dump /x\nx=$(/bin/ohelper ms); echo /bin/ohelperx a/bin/ohelper\n"
            ),
            "$OHELPER dump /x\nx=$($OHELPER ms); echo /bin/ohelperx a/bin/ohelper\n"
        );
    }

    fn kind(text: &str) -> (usize, ScenarioErrorKind) {
        let e = parse(text).unwrap_err();
        (e.line, e.kind)
    }

    #[test]
    fn header_errors_name_the_line() {
        assert_eq!(
            kind("# c\nmem: 1G\nfoo: bar\nsteps:\n"),
            (3, ScenarioErrorKind::UnknownHeader("foo".into()))
        );
        assert!(matches!(
            kind("\nmem: 1X\nsteps:\n"),
            (2, ScenarioErrorKind::Mem(_))
        ));
        assert_eq!(
            kind("smp: 0\nsteps:\n"),
            (1, ScenarioErrorKind::Smp("0".into()))
        );
        assert_eq!(
            kind("timeout: soon\nsteps:\n"),
            (1, ScenarioErrorKind::Timeout("soon".into()))
        );
        assert_eq!(
            kind("smp: 1\nsmp: 2\nsteps:\n"),
            (2, ScenarioErrorKind::DuplicateHeader("smp".into()))
        );
        assert_eq!(
            kind("mem 1G\nsteps:\n"),
            (1, ScenarioErrorKind::MalformedHeader("mem 1G".into()))
        );
        assert_eq!(kind("mem: 1G\n"), (2, ScenarioErrorKind::MissingSteps));
        assert_eq!(
            kind("steps: now\n"),
            (1, ScenarioErrorKind::TextAfterSteps("now".into()))
        );
        assert!(matches!(
            kind("qemu: -object 'memory-backend-ram\nsteps:\n"),
            (1, ScenarioErrorKind::Quote(ShlexError::UnclosedQuote))
        ));
        assert!(matches!(
            kind("qemu: -numa node,nodeid=x\nsteps:\n"),
            (1, ScenarioErrorKind::Qemu(_))
        ));
    }

    #[test]
    fn host_step_errors_name_the_line() {
        assert_eq!(
            kind("steps:\nblocks\n@hotplug d 1G\n"),
            (3, ScenarioErrorKind::UnknownHostVerb("hotplug".into()))
        );
        assert_eq!(kind("steps:\n@\n"), (2, ScenarioErrorKind::EmptyHostStep));
        assert_eq!(
            kind("steps:\n@hotadd d1\n"),
            (
                2,
                ScenarioErrorKind::MissingArgument {
                    verb: "hotadd".into(),
                    what: "SIZE"
                }
            )
        );
        assert_eq!(
            kind("steps:\n@unplug\n"),
            (
                2,
                ScenarioErrorKind::MissingArgument {
                    verb: "unplug".into(),
                    what: "ID"
                }
            )
        );
        assert_eq!(
            kind("steps:\n@qmp\n"),
            (
                2,
                ScenarioErrorKind::MissingArgument {
                    verb: "qmp".into(),
                    what: "COMMAND"
                }
            )
        );
        assert!(matches!(
            kind("steps:\n@hotadd d1 12Q\n"),
            (2, ScenarioErrorKind::BadSize { .. })
        ));
        assert!(matches!(
            kind("steps:\n@vmem-resize vm0 1.5G\n"),
            (2, ScenarioErrorKind::BadSize { .. })
        ));
        assert_eq!(
            kind("steps:\n@hotadd d1 1G nod=1\n"),
            (
                2,
                ScenarioErrorKind::UnknownOption {
                    verb: "hotadd".into(),
                    key: "nod".into()
                }
            )
        );
        assert_eq!(
            kind("steps:\n@unplug d1 d2\n"),
            (
                2,
                ScenarioErrorKind::UnexpectedArgument {
                    verb: "unplug".into(),
                    arg: "d2".into()
                }
            )
        );
        assert!(matches!(
            kind("steps:\n@sleep soon\n"),
            (
                2,
                ScenarioErrorKind::BadValue {
                    what: "seconds",
                    ..
                }
            )
        ));
        assert!(matches!(
            kind("steps:\n@sleep -1\n"),
            (
                2,
                ScenarioErrorKind::BadValue {
                    what: "seconds",
                    ..
                }
            )
        ));
        assert!(matches!(
            kind("steps:\n@hotadd d 1G node=-1\n"),
            (2, ScenarioErrorKind::BadValue { what: "node=", .. })
        ));
        assert!(matches!(
            kind("steps:\n@hotadd d 1G addr=0xZZ\n"),
            (2, ScenarioErrorKind::BadValue { what: "addr=", .. })
        ));
        assert!(matches!(
            kind("steps:\n@qmp qom-get [1]\n"),
            (2, ScenarioErrorKind::BadJson(_))
        ));
        assert!(matches!(
            kind("steps:\n@qmp qom-get {bad\n"),
            (2, ScenarioErrorKind::BadJson(_))
        ));
        assert!(matches!(
            kind("steps:\n@unplug 'd1\n"),
            (2, ScenarioErrorKind::Quote(_))
        ));
    }

    #[test]
    fn error_display_carries_line_number() {
        let e = parse("steps:\n\n@frob x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: unknown host verb `@frob` (expected hotadd, unplug, qmp, vmem-resize, sleep)"
        );
    }
}
