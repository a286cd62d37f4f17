//! `memhp scenario run`: replay an oracle scenario against a memhp machine.
//!
//! The machine is booted from the scenario's headers, its tree is mounted
//! with FUSE, and the steps run in a real `sh` inside a private mount
//! namespace where that tree stands at the Linux paths (`/sys`,
//! `/proc/{zoneinfo,iomem,meminfo}`) and `/tmp` is a fresh tmpfs. Host steps
//! use the oracle's turn-taking: the shell prints `@@WAIT N` and blocks
//! reading `GO N` from fd 3 while memhp performs step N.

use crate::machine_args::ORACLE_BASE_CMDLINE;
use anyhow::{bail, Context, Result};
use memhp_drivers::host::{Host, HostCommand};
use memhp_drivers::HostEvent;
use memhp_model::machine::{QemuNuma, QemuPc, VirtioMemSpec};
use memhp_model::units::{format_size, parse_size};
use memhp_model::KernelVersion;
use memhp_sysfs::SysfsTree;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the oracle's guest prints as its identity.
const UNAME_R: &str = "6.1.0-56-amd64";
const UNAME_V: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)";

/// A host step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostStep {
    Hotadd {
        id: String,
        size: u64,
        node: Option<u32>,
        addr: Option<u64>,
    },
    Unplug {
        id: String,
    },
    VmemResize {
        id: String,
        size: u64,
    },
    Qmp {
        command: String,
        args: String,
    },
    Sleep,
}

/// One step line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Shell(String),
    Section(String),
    Host { text: String, step: HostStep },
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub text: String,
    pub mem: String,
    pub smp: u32,
    pub qemu: Vec<String>,
    pub cmdline: Vec<String>,
    pub timeout: Option<u64>,
    pub steps: Vec<Step>,
}

fn kv_args(words: &[&str]) -> BTreeMap<String, String> {
    words
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_host(line: &str, lineno: usize) -> Result<HostStep> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let need = |n: usize| -> Result<()> {
        if words.len() < n {
            bail!("line {lineno}: {:?} needs {} arguments", words[0], n - 1);
        }
        Ok(())
    };
    let size = |s: &str| parse_size(s).with_context(|| format!("line {lineno}: bad size {s:?}"));
    Ok(match words[0] {
        "@hotadd" => {
            need(3)?;
            let kv = kv_args(&words[3..]);
            HostStep::Hotadd {
                id: words[1].to_string(),
                size: size(words[2])?,
                node: kv
                    .get("node")
                    .map(|n| n.parse())
                    .transpose()
                    .with_context(|| format!("line {lineno}: bad node"))?,
                addr: kv.get("addr").map(|a| size(a)).transpose()?,
            }
        }
        "@unplug" => {
            need(2)?;
            HostStep::Unplug {
                id: words[1].to_string(),
            }
        }
        "@vmem-resize" => {
            need(3)?;
            HostStep::VmemResize {
                id: words[1].to_string(),
                size: size(words[2])?,
            }
        }
        "@qmp" => {
            need(2)?;
            HostStep::Qmp {
                command: words[1].to_string(),
                args: line
                    .splitn(3, char::is_whitespace)
                    .nth(2)
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            }
        }
        "@sleep" => HostStep::Sleep,
        other => bail!("line {lineno}: unknown host step {other:?}"),
    })
}

impl Scenario {
    /// Parse the `.scn` format.
    pub fn parse(name: &str, text: &str) -> Result<Scenario> {
        let mut s = Scenario {
            name: name.into(),
            text: text.into(),
            mem: "1G,slots=4,maxmem=4G".into(),
            smp: 1,
            qemu: vec![],
            cmdline: vec![],
            timeout: None,
            steps: vec![],
        };
        let mut in_steps = false;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            if in_steps {
                if let Some(h) = line.strip_prefix("## ") {
                    s.steps.push(Step::Section(h.to_string()));
                } else if line.starts_with('@') {
                    s.steps.push(Step::Host {
                        text: line.trim().to_string(),
                        step: parse_host(line.trim(), lineno)?,
                    });
                } else if !line.trim().is_empty() {
                    s.steps.push(Step::Shell(line.to_string()));
                }
                continue;
            }
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t == "steps:" {
                in_steps = true;
                continue;
            }
            let (key, value) = t
                .split_once(':')
                .with_context(|| format!("line {lineno}: expected `key: value` or `steps:`"))?;
            let value = value.split(" #").next().unwrap_or("").trim().to_string();
            match key.trim() {
                "mem" => s.mem = value,
                "smp" => {
                    s.smp = value
                        .parse()
                        .with_context(|| format!("line {lineno}: bad smp"))?
                }
                "machine" => {
                    if value != "pc" {
                        bail!("line {lineno}: only the pc machine is modelled, not {value:?}");
                    }
                }
                "qemu" => s.qemu.push(value),
                "cmdline" => s.cmdline.push(value),
                "timeout" => {
                    s.timeout = Some(
                        value
                            .parse()
                            .with_context(|| format!("line {lineno}: bad timeout"))?,
                    )
                }
                k => bail!("line {lineno}: unknown header {k:?}"),
            }
        }
        Ok(s)
    }

    /// The full kernel command line the guest boots with.
    pub fn kernel_cmdline(&self) -> String {
        std::iter::once(ORACLE_BASE_CMDLINE.to_string())
            .chain(self.cmdline.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The QEMU machine these headers describe.
    pub fn machine(&self) -> Result<QemuPc> {
        let mut q = QemuPc {
            smp: self.smp,
            ..QemuPc::default()
        };
        q.parse_mem_option(&self.mem)?;
        let mut backends: BTreeMap<String, u64> = BTreeMap::new();
        let words: Vec<String> = self
            .qemu
            .iter()
            .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .collect();
        let mut i = 0;
        while i < words.len() {
            let (opt, val) = (&words[i], words.get(i + 1).cloned().unwrap_or_default());
            let kv: BTreeMap<String, String> = val
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            match opt.as_str() {
                "-object" => {
                    if let (Some(id), Some(size)) = (kv.get("id"), kv.get("size")) {
                        backends.insert(id.clone(), parse_size(size)?);
                    }
                }
                "-numa" => {
                    let nodeid: u32 = kv.get("nodeid").context("-numa without nodeid")?.parse()?;
                    let cpus = kv
                        .get("cpus")
                        .map(|c| crate::machine_args::parse_cpus(c))
                        .transpose()?
                        .unwrap_or_default();
                    let mem = match kv.get("memdev") {
                        Some(m) => *backends
                            .get(m)
                            .with_context(|| format!("-numa: unknown memdev {m}"))?,
                        None => 0,
                    };
                    q.numa.push(QemuNuma { nodeid, cpus, mem });
                }
                "-device" if val.starts_with("virtio-mem-pci") => {
                    let id = kv.get("id").context("virtio-mem-pci without id")?.clone();
                    let memdev = kv.get("memdev").context("virtio-mem-pci without memdev")?;
                    q.virtio_mem.push(VirtioMemSpec {
                        id,
                        node: kv.get("node").map(|n| n.parse()).transpose()?.unwrap_or(0),
                        region_size: *backends
                            .get(memdev)
                            .with_context(|| format!("unknown memdev {memdev}"))?,
                        block_size: kv
                            .get("block-size")
                            .map(|b| parse_size(b))
                            .transpose()?
                            .unwrap_or(2 << 20),
                        requested_size: kv
                            .get("requested-size")
                            .map(|b| parse_size(b))
                            .transpose()?
                            .unwrap_or(0),
                    });
                }
                _ => {}
            }
            i += 2;
        }
        Ok(q)
    }
}

/// How a run ended.
pub struct RunOutcome {
    pub transcript: String,
    pub elapsed: Duration,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn host_lines(host: &Host, step: &HostStep) -> Vec<String> {
    let mut out = Vec::new();
    let events = |evs: &[HostEvent], out: &mut Vec<String>| {
        for e in evs {
            let data = e.data();
            let shown = data.get("info").cloned().unwrap_or(data);
            out.push(format!("HOST event {} {}", e.name(), shown));
        }
    };
    match step {
        HostStep::Hotadd {
            id,
            size,
            node,
            addr,
        } => {
            let r = host.execute(&HostCommand::Hotadd {
                id: id.clone(),
                size: *size,
                node: *node,
                addr: *addr,
            });
            out.push(format!(
                "HOST hotadd {id} size={size} ({})",
                format_size(*size)
            ));
            match r {
                Ok(rep) => {
                    events(&rep.events, &mut out);
                    if let Some(d) = host.dimms.list().into_iter().find(|d| &d.id == id) {
                        out.push(format!(
                            "HOST hotadd {id}: addr={:#x} size={:#x} node={} slot={}",
                            d.addr, d.size, d.node, d.slot
                        ));
                    }
                }
                Err(e) => out.push(format!("HOST hotadd {id}: error {e}")),
            }
        }
        HostStep::Unplug { id } => match host.execute(&HostCommand::Unplug { id: id.clone() }) {
            Ok(rep) => {
                events(&rep.events, &mut out);
                out.push(format!(
                    "HOST unplug {id}: {}",
                    if rep.events.iter().any(|e| e.name() == "DEVICE_DELETED") {
                        "deleted"
                    } else {
                        "NOT deleted (guest reported failure)"
                    }
                ));
            }
            Err(e) => out.push(format!("HOST unplug {id}: error {e}")),
        },
        HostStep::VmemResize { id, size } => match host.execute(&HostCommand::VmemResize {
            id: id.clone(),
            size: *size,
        }) {
            Ok(_) => {
                let now = host
                    .vmem
                    .list()
                    .into_iter()
                    .find(|v| &v.spec.id == id)
                    .map_or(0, |v| v.plugged);
                out.push(format!(
                    "HOST vmem-resize {id} requested-size={size} ({}): size={now}",
                    format_size(*size)
                ));
            }
            Err(e) => out.push(format!("HOST vmem-resize {id}: error {e}")),
        },
        HostStep::Qmp { command, args } => {
            let parsed: serde_json::Value =
                serde_json::from_str(if args.is_empty() { "{}" } else { args })
                    .unwrap_or(serde_json::Value::Null);
            let cmd = match command.as_str() {
                "qom-get" => Some(HostCommand::QomGet {
                    path: parsed["path"].as_str().unwrap_or("").to_string(),
                    property: parsed["property"].as_str().unwrap_or("").to_string(),
                }),
                "query-memory-devices" => Some(HostCommand::QueryMemoryDevices),
                _ => None,
            };
            let reply = match cmd.map(|c| host.execute(&c)) {
                Some(Ok(r)) => serde_json::json!({"return": r.value}),
                Some(Err(e)) => {
                    serde_json::json!({"error": {"class": "GenericError", "desc": e.to_string()}})
                }
                None => {
                    serde_json::json!({"error": {"class": "CommandNotFound", "desc": format!("The command {command} has not been found")}})
                }
            };
            out.push(format!("HOST qmp {command} {args} -> {reply}"));
        }
        HostStep::Sleep => out.push("HOST sleep (virtual time)".to_string()),
    }
    out
}

/// Run a scenario; returns the transcript text.
pub fn run(scn: &Scenario, scn_path: &str, version: KernelVersion) -> Result<RunOutcome> {
    let started = Instant::now();
    let spec = scn.machine()?.machine(&scn.kernel_cmdline(), version)?;
    let host = Arc::new(Host::boot(&spec)?);
    let dir = tempdir()?;
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let tree: Arc<dyn memhp_sysfs::vfs::Tree> = Arc::new(SysfsTree::new(Arc::clone(&host.shared)));
    let mount = memhp_fuse::spawn_mount(
        Arc::clone(&tree),
        &root,
        &memhp_fuse::MountOptions::default(),
    )
    .context("mounting the sysfs tree")?;
    let sock = dir.join("ctl.sock");
    let bus = Arc::new(memhp_control::EventBus::default());
    let _ctl = memhp_control::ControlServer::start(Arc::clone(&host), bus, &sock)?;

    let (bootlog, bootblocks) = host.shared.read(|s| {
        (
            s.bootlog.join("\n") + "\n",
            s.blocks
                .keys()
                .map(|id| format!("memory{id}\n"))
                .collect::<String>(),
        )
    });
    std::fs::write(dir.join("boot.log"), bootlog)?;
    std::fs::write(dir.join("bootblocks"), bootblocks)?;

    // The script: helpers, then the steps.
    // The guest reaches this binary through a bind mount in the run
    // directory: the namespace's fresh /tmp would hide it if it lives there.
    let real_exe = std::env::current_exe()?;
    let exe = dir.join("memhp");
    std::fs::write(&exe, b"")?;
    let mut script = String::new();
    script.push_str(&format!(
        "MEMHP={}\nMEMHP_SOCK={}\nexport MEMHP_SOCK\nMEMHP_DIR={}\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&sock.to_string_lossy()),
        shell_quote(&dir.to_string_lossy())
    ));
    script.push_str(crate::guest_sh::HELPERS);
    script.push_str("set +e\n");
    let mut host_steps = Vec::new();
    for step in &scn.steps {
        match step {
            Step::Shell(l) => {
                script.push_str(l);
                script.push('\n');
            }
            Step::Section(h) => {
                script.push_str(&format!("echo {}\n", shell_quote(&format!("## {h}"))))
            }
            Step::Host { text, step } => {
                host_steps.push((text.clone(), step.clone()));
                script.push_str(&format!("host {}\n", host_steps.len()));
            }
        }
    }
    script.push_str("echo @@END\n");
    std::fs::write(dir.join("scenario.sh"), &script)?;
    // `/bin/ohelper`, as in the oracle's guest: an overlay adds it to the
    // directory /bin resolves to, inside the namespace only.
    let ovl = dir.join("bin-overlay");
    std::fs::create_dir_all(&ovl)?;
    let wrapper = ovl.join("ohelper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} ohelper \"$@\"\n",
            shell_quote(&exe.to_string_lossy())
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    let bin = std::fs::canonicalize("/bin").unwrap_or_else(|_| PathBuf::from("/bin"));

    // Namespace setup: the tree at the Linux paths, a private /tmp.
    let r = root.to_string_lossy();
    let d = dir.to_string_lossy();
    let setup = format!(
        "set -e; mount --make-rprivate / ; mount --bind {x} {d}/memhp; mount --bind {r}/sys /sys; for f in zoneinfo iomem meminfo; do mount --bind {r}/proc/$f /proc/$f; done; \
         mount -t tmpfs -o size=512m memhp-tmp /tmp; mount -t overlay memhp-bin -o lowerdir={o}:{b} {b} || true; \
         set +e; exec {sh} {d}/scenario.sh 3<&0 </dev/null",
        sh = guest_shell(),
        x = shell_quote(&real_exe.to_string_lossy()),
        o = ovl.to_string_lossy(),
        b = bin.to_string_lossy()
    );
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &setup])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting unshare -m sh (util-linux unshare and root are needed)")?;
    let mut go = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut transcript = String::new();
    transcript.push_str(&format!(
        "=== SCENARIO {} ({scn_path}) ===\n{}",
        scn.name, scn.text
    ));
    if !scn.text.ends_with('\n') {
        transcript.push('\n');
    }
    transcript.push_str(&format!(
        "=== KERNEL ===\nmemhp {} model of Linux {}\n",
        env!("CARGO_PKG_VERSION"),
        match version {
            KernelVersion::V6_1 => "6.1",
            KernelVersion::Mainline => "mainline",
        }
    ));
    transcript.push_str(&format!(
        "=== QEMU ===\nmemhp machine: qemu-pc -m {} -smp {} {}\n",
        scn.mem,
        scn.smp,
        scn.qemu.join(" ")
    ));
    transcript.push_str("=== TRANSCRIPT ===\n");
    transcript.push_str(&format!(
        "uname -r: {UNAME_R}\nuname -v: {UNAME_V}\ncmdline: {}\n",
        scn.kernel_cmdline()
    ));
    let reader = BufReader::new(stdout);
    let echo = std::env::var_os("MEMHP_RUNNER_ECHO").is_some();
    let mut reached_end = false;
    let deadline = scn.timeout.map(|t| started + Duration::from_secs(t));
    for line in reader.lines() {
        let line = line?;
        if echo {
            eprintln!("{line}");
        }
        if line == "@@END" {
            reached_end = true;
            continue;
        }
        if let Some(n) = line.strip_prefix("@@WAIT ") {
            let idx: usize = n.trim().parse().context("bad @@WAIT")?;
            let (text, step) = host_steps
                .get(idx.wrapping_sub(1))
                .context("unknown host step")?;
            transcript.push_str(text);
            transcript.push('\n');
            for l in host_lines(&host, step) {
                transcript.push_str(&l);
                transcript.push('\n');
            }
            mount.sync_caches(Duration::from_secs(5));
            writeln!(go, "GO {idx}")?;
            go.flush()?;
            continue;
        }
        transcript.push_str(&line);
        transcript.push('\n');
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            bail!("scenario {} exceeded its timeout", scn.name);
        }
    }
    let status = child.wait()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    drop(go);
    let elapsed = started.elapsed();
    let complete = reached_end;
    transcript.push_str(&format!(
        "=== END: {}, memhp rc={}, wall {}s ===\n",
        if complete { "complete" } else { "INCOMPLETE" },
        status.code().unwrap_or(-1),
        elapsed.as_secs()
    ));
    mount.unmount().ok();
    let _ = std::fs::remove_dir_all(&dir);
    if !complete {
        bail!("scenario shell failed ({status}): {}", err.trim());
    }
    Ok(RunOutcome {
        transcript,
        elapsed,
    })
}

/// The guest's shell: busybox `sh` like the oracle's guest (its applets run
/// without an exec), else the system `sh`.
fn guest_shell() -> &'static str {
    const BUSYBOX: [&str; 3] = ["/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox"];
    match BUSYBOX.iter().find(|p| Path::new(p).exists()) {
        Some(p) if *p == "/usr/bin/busybox" => "/usr/bin/busybox sh",
        Some(p) if *p == "/bin/busybox" => "/bin/busybox sh",
        Some(_) => "/usr/sbin/busybox sh",
        None => "sh",
    }
}

fn tempdir() -> Result<PathBuf> {
    let base = Path::new("/run/memhp");
    std::fs::create_dir_all(base).context("create /run/memhp")?;
    for i in 0..1000u32 {
        let p = base.join(format!("run-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free run directory under /run/memhp")
}
