//! `memhp scenario run`: replay an oracle scenario against a memhp machine.
//!
//! The machine is booted from the scenario's headers, its tree is mounted
//! with FUSE, and the steps run in a real `sh` inside a private mount
//! namespace where that tree stands at the Linux paths (`/sys`,
//! `/proc/{zoneinfo,iomem,meminfo}`) and `/tmp` is a fresh tmpfs. Host steps
//! use the oracle's turn-taking: the shell prints `@@WAIT N` and blocks
//! reading `GO N` from fd 3 while memhp performs step N.

use crate::machine_args::ORACLE_BASE_CMDLINE;
use crate::namespace;
use anyhow::{bail, Context, Result};
use memhp_drivers::host::{Host, HostCommand};
use memhp_drivers::HostEvent;
use memhp_model::machine::{QemuNuma, QemuPc, VirtioBalloonSpec, VirtioMemSpec};
use memhp_model::units::format_size;
use memhp_model::KernelVersion;
pub use memhp_scenario::Scenario;
use memhp_scenario::{HostAction, QemuArg};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

/// The QEMU machine a scenario's headers describe.
pub fn machine(scn: &Scenario) -> Result<QemuPc> {
    let mut q = QemuPc {
        smp: scn.smp,
        maxcpus: scn.maxcpus,
        ..QemuPc::default()
    };
    q.parse_mem_option(&scn.mem.raw)?;
    if scn.machine != "pc" {
        bail!("only QEMU's pc machine is modelled, not {:?}", scn.machine);
    }
    let backends: BTreeMap<&str, u64> = scn
        .qemu
        .iter()
        .filter_map(|a| match a {
            QemuArg::MemoryBackend(b) => Some((b.id.as_str(), b.size)),
            _ => None,
        })
        .collect();
    let backend = |id: &str| {
        backends
            .get(id)
            .copied()
            .with_context(|| format!("unknown memdev {id:?}"))
    };
    // Virtio PCI devices take PCI slots in argument order.
    let mut virtio_pci = 0u32;
    for a in &scn.qemu {
        match a {
            QemuArg::VirtioBalloon(b) => {
                q.balloon = Some(VirtioBalloonSpec {
                    id: b.id.clone(),
                    pci_index: virtio_pci,
                });
                virtio_pci += 1;
            }
            QemuArg::NumaDist(d) => q.numa_dist.push((d.src, d.dst, d.val)),
            QemuArg::NumaNode(n) => q.numa.push(QemuNuma {
                nodeid: n.nodeid.context("-numa node without nodeid")?,
                cpus: n.cpus.iter().flat_map(|r| r.first..=r.last).collect(),
                mem: n.memdev.as_deref().map(backend).transpose()?.unwrap_or(0),
                generic_initiator: false,
            }),
            QemuArg::VirtioMem(v) => {
                q.virtio_mem.push(VirtioMemSpec {
                    id: v.id.clone().context("virtio-mem-pci without id")?,
                    node: v.node.unwrap_or(0),
                    region_size: backend(&v.memdev)?,
                    block_size: v.block_size.unwrap_or(2 << 20),
                    requested_size: v.requested_size,
                });
                virtio_pci += 1;
            }
            _ => {}
        }
    }
    for a in &scn.qemu {
        if let QemuArg::GenericInitiator(g) = a {
            let n = q
                .numa
                .iter_mut()
                .find(|n| n.nodeid == g.node)
                .with_context(|| {
                    format!(
                        "acpi-generic-initiator {}: node {} is not a -numa node",
                        g.id, g.node
                    )
                })?;
            n.generic_initiator = true;
        }
    }
    Ok(q)
}

/// The memory backends and DIMMs of QEMU's command line: every
/// `-object memory-backend-*` becomes a backend object, and each
/// `-device pc-dimm` is added while the guest boots.
fn cold_plug(host: &Host, scn: &Scenario) -> Result<()> {
    for a in &scn.qemu {
        if let QemuArg::MemoryBackend(b) = a {
            let mem_path = b.extra.iter().find(|(k, _)| k == "mem-path");
            host.backends
                .add(
                    &b.qom_type,
                    &b.id,
                    b.size,
                    mem_path.map(|(_, v)| v.as_str()),
                    false,
                )
                .with_context(|| format!("-object {}", b.id))?;
            host.backends.set_command_line(&b.id);
        }
    }
    for a in &scn.qemu {
        match a {
            QemuArg::NumaNode(n) => {
                if let Some(m) = &n.memdev {
                    host.backends.bind(
                        m,
                        &format!(
                            "{}{}",
                            memhp_drivers::host::NUMA_BACKEND_USER,
                            n.nodeid.unwrap_or(0)
                        ),
                    )?;
                }
            }
            QemuArg::VirtioMem(v) => {
                host.backends
                    .bind(&v.memdev, v.id.as_deref().unwrap_or("virtio-mem"))?;
            }
            QemuArg::PcDimm(d) => {
                let id = d.id.clone().context("-device pc-dimm without id")?;
                host.cold_plug_dimm(&id, &d.memdev, (d.node, d.addr))
                    .with_context(|| format!("-device pc-dimm,id={id}"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The full kernel command line the guest boots with.
pub fn kernel_cmdline(scn: &Scenario) -> String {
    std::iter::once(ORACLE_BASE_CMDLINE.to_string())
        .chain(scn.cmdline.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a run ended.
pub struct RunOutcome {
    pub transcript: String,
    /// The thread reaping the guest's shell while it exits (after the
    /// last step, off the replay's clock).
    shell_exit: Option<std::thread::JoinHandle<std::io::Result<std::process::ExitStatus>>>,
}

impl RunOutcome {
    /// Wait until the guest's shell has exited, and with it its mount
    /// namespace and the guest's tmpfs (a tenth of a second for
    /// offline-busy-slab's files): off the clock, after the transcript is
    /// out, so that what runs next (the next scenario of a `check`) does
    /// not share the CPU with that teardown.
    pub fn wait_for_shell(self) {
        if let Some(h) = self.shell_exit {
            let _ = h.join();
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn host_lines(host: &Host, bus: &memhp_control::EventBus, action: &HostAction) -> Vec<String> {
    let mut out = Vec::new();
    let events = |evs: &[HostEvent], out: &mut Vec<String>| {
        for e in evs {
            let data = e.data();
            let shown = data.get("info").cloned().unwrap_or(data);
            out.push(format!("HOST event {} {}", e.name(), shown));
        }
    };
    match action {
        HostAction::Hotadd(h) => {
            let (id, size) = (&h.id, h.size);
            let r = host.execute(&HostCommand::HotaddDevice {
                id: id.clone(),
                size,
                node: h.node,
                addr: h.addr,
                driver: h.driver.clone(),
                backend: h.backend.clone(),
            });
            out.push(format!(
                "HOST hotadd {id} size={size} ({})",
                format_size(size)
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
        HostAction::Unplug { id, .. } => {
            match host.execute(&HostCommand::Unplug { id: id.clone() }) {
                Ok(rep) => {
                    events(&rep.events, &mut out);
                    let deleted = rep.events.iter().any(|e| e.name() == "DEVICE_DELETED");
                    out.push(format!(
                        "HOST unplug {id}: {}",
                        if deleted {
                            "deleted"
                        } else {
                            "NOT deleted (guest reported failure)"
                        }
                    ));
                }
                Err(e) => out.push(format!("HOST unplug {id}: error {e}")),
            }
        }
        HostAction::VmemResize { id, size, .. } => match host.execute(&HostCommand::VmemResize {
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
        HostAction::Qmp { command, arguments } => {
            // The control socket's dispatcher: the same QMP commands.
            let args = arguments.clone().unwrap_or_default();
            let reply = match memhp_control::dispatch(host, bus, command, &args) {
                Ok(v) => serde_json::json!({ "return": v }),
                Err(e) => serde_json::json!({"error": {"class": e.class, "desc": e.desc}}),
            };
            out.push(format!(
                "HOST qmp {command} {} -> {reply}",
                arguments
                    .as_ref()
                    .map(|a| serde_json::Value::Object(a.clone()).to_string())
                    .unwrap_or_default()
            ));
        }
        HostAction::Sleep(_) => out.push("HOST sleep (virtual time)".to_string()),
    }
    out
}

/// Run a scenario; returns the transcript text.
pub fn run(
    scn: &Scenario,
    scn_path: &str,
    version: KernelVersion,
    initrd_bytes: Option<u64>,
) -> Result<RunOutcome> {
    let started = Instant::now();
    // Backing files for everything the resident helper keeps open.
    crate::nofile::raise_soft_to_hard();
    // Server threads and the guest shell on one CPU (see cpu_pin.rs).
    let _pin = crate::cpu_pin::CpuPin::here();
    let mut qemu = machine(scn)?;
    if let Some(b) = initrd_bytes {
        qemu.initrd_bytes = b;
    }
    let spec = qemu.machine(&kernel_cmdline(scn), version)?;
    let host = Arc::new(Host::boot(&spec)?);
    cold_plug(&host, scn)?;
    let run_dir = RunDir(tempdir()?);
    let dir = run_dir.0.clone();
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let guest_tree = memhp_control::guest_tree(&host);
    let tree: Arc<dyn memhp_sysfs::vfs::Tree> = guest_tree.clone();
    let mount = memhp_fuse::spawn_mount(
        Arc::clone(&tree),
        &root,
        // Backing files: the resident helper reads the attributes it keeps
        // open again without a round trip, and no step races with another.
        &memhp_fuse::MountOptions {
            passthrough: true,
            ..memhp_fuse::MountOptions::default()
        },
    )
    .context("mounting the sysfs tree")?;
    let sock = dir.join("ctl.sock");
    // A control command (the guest's `loadmod`) syncs the kernel's caches
    // before it replies, as a host step does.
    let view = mount.cache_sync();
    let bus = Arc::new(
        memhp_control::EventBus::default().with_view_sync(Arc::new(move || {
            view.sync();
        })),
    );
    let _ctl = memhp_control::ControlServer::start(Arc::clone(&host), Arc::clone(&bus), &sock)?;

    // What the guest's init leaves in its /tmp: `dmesg > /tmp/boot.log`
    // and `ls` of the memory directory's blocks (in ls's order) into
    // /tmp/bootblocks.
    let (bootlog, bootblocks) = host.shared.read(|s| {
        let mut names: Vec<String> = s.blocks.keys().map(|id| format!("memory{id}")).collect();
        names.sort();
        (
            s.bootlog.join("\n") + "\n",
            names.iter().map(|n| format!("{n}\n")).collect::<String>(),
        )
    });
    for fifo in ["oh.req", "oh.resp", "oh.out"] {
        make_fifo(&dir.join(fifo))?;
    }
    // The transcript FIFO, drained by a thread (a frame larger than the
    // FIFO must not wait for its marker).
    let frames = Drained::start(&dir.join("oh.out"))?;
    let mut merger = memhp_scenario::ohelper::TranscriptMerger::new(BufReader::new(frames));

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
    script.push_str(&crate::guest_sh::helpers());
    script.push_str(&crate::guest_sh::identity(version, scn.smp));
    // As in the oracle's guest: `init` sources `scenario.sh`, which holds
    // the steps one per line, so a shell error names the step's line.
    let steps = dir.join("scenario.sh");
    std::fs::write(
        &steps,
        memhp_scenario::rewrite_ohelper_calls(&scn.guest_script()),
    )?;
    script.push_str("set +e\n");
    script.push_str(&format!(". {}\n", shell_quote(&steps.to_string_lossy())));
    let host_steps: Vec<&memhp_scenario::HostStep> = scn.host_steps().collect();
    script.push_str("echo @@END\n");
    let init = dir.join("init");
    std::fs::write(&init, &script)?;
    // The shell names the scripts in its errors; the guest's are /init and
    // /scenario.sh.
    let script_names = (
        format!("{}: {}: ", init.display(), steps.display()),
        "/init: /scenario.sh: ",
    );

    // Namespace setup, in the child before it runs the shell: a private
    // mount namespace with the tree at the Linux paths and a private /tmp.
    let binds: Vec<(PathBuf, PathBuf)> = std::iter::once((real_exe.clone(), exe.clone()))
        .chain(std::iter::once((root.join("sys"), PathBuf::from("/sys"))))
        .chain(
            [
                "zoneinfo",
                "iomem",
                "meminfo",
                "buddyinfo",
                "pagetypeinfo",
                "version",
                "vmstat",
                "cpuinfo",
                "modules",
                "cmdline",
                "sys/vm",
                "sys/kernel/hostname",
                "sys/kernel/osrelease",
                "sys/kernel/ostype",
                "sys/kernel/version",
            ]
            .into_iter()
            .map(|f| (root.join("proc").join(f), PathBuf::from("/proc").join(f))),
        )
        // The guest's initramfs has no user database: `ls -l` shows owners
        // as numbers there, not the host's names.
        .chain(
            ["/etc/passwd", "/etc/group"]
                .into_iter()
                .map(PathBuf::from)
                .filter(|t| t.exists())
                .map(|t| (dir.join("empty"), t)),
        )
        .collect();
    std::fs::write(dir.join("empty"), b"")?;
    // shmem's default size limit: half of the guest's RAM.
    let tmp_bytes = host.shared.read(|s| s.totalram_pages()) * 4096 / 2;
    let ns = namespace::Setup::new(
        &binds,
        tmp_bytes,
        &[
            ("boot.log", bootlog.into_bytes()),
            ("bootblocks", bootblocks.into_bytes()),
        ],
    )?;
    let (go_read, go) = namespace::pipe()?;
    let (console, console_slave) = namespace::console()?;
    let mut words = guest_shell().split_whitespace();
    let mut cmd = Command::new(words.next().unwrap_or("sh"));
    cmd.args(words)
        .arg(&init)
        .stdin(Stdio::from(console_slave.try_clone()?))
        .stdout(Stdio::from(console_slave.try_clone()?))
        .stderr(Stdio::from(console_slave));
    guest_environment(&mut cmd);
    ns.apply_in_child(&mut cmd, go_read);
    let mut child = cmd
        .spawn()
        .context("setting up the scenario's mount namespace (root is needed)")?;
    // The runner's copies of the console's slave side go with `cmd`: the
    // console ends when the shell and its children are gone.
    drop(cmd);
    // The shell's namespace is set up (spawn returns after its exec): its
    // /tmp is the guest's tmpfs, charged before each access to the tree.
    let guest_tmpfs =
        match crate::guest_tmpfs::GuestTmpfs::open(child.id(), Arc::clone(&host.shared)) {
            Ok(tmpfs) => {
                let tmpfs = Arc::new(tmpfs);
                let hook = Arc::clone(&tmpfs);
                guest_tree.set_access_hook(Arc::new(move || hook.sync()));
                Some(tmpfs)
            }
            Err(e) => {
                tracing::warn!("the guest's tmpfs will not be charged: {e:#}");
                None
            }
        };
    let mut go = go;
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
    let qemu: Vec<String> = scn.qemu.iter().flat_map(|a| a.to_args()).collect();
    transcript.push_str(&format!(
        "=== QEMU ===\nmemhp machine: qemu-pc -m {} -smp {} {}\n",
        scn.mem.raw,
        scn.smp,
        qemu.join(" ")
    ));
    transcript.push_str("=== TRANSCRIPT ===\n");
    transcript.push_str(&format!(
        "uname -r: {}\nuname -v: {}\ncmdline: {}\n",
        version.uname_release(),
        version.uname_version(),
        kernel_cmdline(scn)
    ));
    let reader = BufReader::new(console);
    let echo = std::env::var_os("MEMHP_RUNNER_ECHO").is_some();
    let mut reached_end = false;
    let deadline = Some(started + scn.timeout);
    // Lines as the oracle's recorder decodes the console: invalid UTF-8
    // (a binary file a step printed) becomes U+FFFD.
    for line in reader.split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if echo {
            eprintln!("{line}");
        }
        if line == "@@END" {
            reached_end = true;
            if let Some(tmpfs) = &guest_tmpfs {
                tmpfs.release();
            }
            continue;
        }
        // `klog` (`@@KLOG`: the messages since the last klog, taken, each
        // as "klog: ...") and `dmesg [-c]` (`@@DMESG`: the same as the
        // guest's dmesg prints them, taken only with -c), answered in
        // place while the shell waits for "GO KLOG".
        let kernel_log = match (line.as_str(), line.strip_prefix("@@DMESG").map(str::trim)) {
            ("@@KLOG", _) => Some(("klog: ", true)),
            (_, Some(opts)) => Some(("", opts == "-c")),
            _ => None,
        };
        if let Some((prefix, take)) = kernel_log {
            transcript.push_str(&merger.finish());
            let lines = host.shared.modify(|s| match take {
                true => s.events.take_klog(),
                false => s.events.klog.clone(),
            });
            for l in lines {
                transcript.push_str(prefix);
                transcript.push_str(&l);
                transcript.push('\n');
            }
            writeln!(go, "GO KLOG")?;
            go.flush()?;
            continue;
        }
        // `rmmod` in the main shell: unloaded here, the mount synced, then
        // the shell goes on with the result.
        if let Some(name) = line.strip_prefix("@@RMMOD ") {
            transcript.push_str(&merger.finish());
            // delete_module(2)'s errno: ENOENT, or EAGAIN for a module in use.
            let errno = match host.execute(&HostCommand::UnloadModule {
                name: name.trim().to_string(),
            }) {
                Ok(_) => 0,
                Err(memhp_drivers::host::HostError::ModuleInUse(_)) => libc::EAGAIN,
                Err(_) => libc::ENOENT,
            };
            mount.sync_caches();
            writeln!(go, "GO RMMOD {errno}")?;
            go.flush()?;
            continue;
        }
        if let Some(n) = line.strip_prefix("@@WAIT ") {
            let idx: usize = n.trim().parse().context("bad @@WAIT")?;
            let step = host_steps.get(idx).context("unknown host step")?;
            transcript.push_str(&step.text);
            transcript.push('\n');
            transcript.push_str(&merger.finish());
            for l in host_lines(&host, &bus, &step.action) {
                transcript.push_str(&l);
                transcript.push('\n');
            }
            mount.sync_caches();
            writeln!(go, "GO {idx}")?;
            go.flush()?;
            continue;
        }
        let line = line.replace(&script_names.0, script_names.1);
        let text = merger.line(&line).context("the resident helper's output")?;
        if echo && line.ends_with(memhp_scenario::ohelper::MARKER) {
            eprint!("{text}");
        }
        transcript.push_str(&text);
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            bail!("scenario {} exceeded its timeout", scn.name);
        }
    }
    transcript.push_str(&merger.finish());
    // The guest's run is over once its last step has printed and the shell
    // has closed the console. The shell's exit then tears its mount
    // namespace down, and with it the guest's tmpfs (offline-busy-slab's
    // 40000 files and 256 MiB take a tenth of a second to free), which a
    // guest powering off never does: that is reaped off the clock, by a
    // thread of its own, and the mount the namespace still holds is
    // detached rather than waited for.
    let mut shell_exit = None;
    let status = match child.try_wait()? {
        Some(status) => Some(status),
        None if reached_end => {
            shell_exit = Some(std::thread::spawn(move || child.wait()));
            None
        }
        None => Some(child.wait()?),
    };
    drop(go);
    let elapsed = started.elapsed();
    let complete = reached_end;
    transcript.push_str(&format!(
        "=== END: {}, qemu rc={}, wall {:.3}s ===\n",
        if complete { "complete" } else { "INCOMPLETE" },
        status.map_or(0, |s| s.code().unwrap_or(-1)),
        elapsed.as_secs_f64()
    ));
    match status {
        Some(_) => mount.unmount().ok(),
        None => mount.detach().ok(),
    };
    drop(run_dir);
    if !complete {
        // The shell's own complaints are in the transcript, as on the
        // guest's console.
        let tail: Vec<&str> = transcript.lines().rev().take(5).collect();
        let status = status.map_or_else(|| "running".to_string(), |s| s.to_string());
        bail!(
            "scenario shell failed ({status}); the transcript ends with:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(RunOutcome {
        transcript,
        shell_exit,
    })
}

/// The environment of the oracle guest's /init as far as programs notice
/// it: the kernel's `HOME=/` and `TERM=linux`, no locale (messages and
/// number formats of the C locale), no terminal size overrides, and the
/// open-file limits init gets.
fn guest_environment(cmd: &mut Command) {
    crate::nofile::guest_limits(cmd);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("LC_") || ["LANG", "LANGUAGE", "COLUMNS", "LINES"].contains(&&*k) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", "/").env("TERM", "linux");
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

/// The run directory; removed (after a lazy unmount of anything left in it)
/// however the run ends.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = memhp_fuse::unmount(&self.0.join("root"));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A FIFO at `path` (for the resident guest helper).
/// A FIFO drained by a thread; reads take what it has received, waiting
/// for more. The thread holds the FIFO open for reading and writing, so
/// that neither its open nor its reads see "no writer" before the helper
/// comes; dropping the `Drained` wakes it with one byte to let it exit.
struct Drained {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    waker: std::fs::File,
}

impl Drained {
    fn start(path: &Path) -> Result<Drained> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        let waker = f.try_clone()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("memhp-oh-out".into())
            .spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match std::io::Read::read(&mut f, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if stopped.load(std::sync::atomic::Ordering::Acquire) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(Drained {
            rx,
            chunk: Vec::new(),
            pos: 0,
            stop,
            waker,
        })
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = std::io::Write::write_all(&mut self.waker, b"\0");
    }
}

impl std::io::Read for Drained {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => (self.chunk, self.pos) = (c, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn make_fifo(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mkfifo {}", path.display()));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scn(qemu: &str) -> Scenario {
        let text = format!("mem: 1G,slots=4,maxmem=4G\nsmp: 1\nqemu: {qemu}\nsteps:\nnodes\n");
        Scenario::parse("t", &text).unwrap()
    }

    #[test]
    fn generic_initiator_object_marks_its_numa_node() {
        let q = machine(&scn(
            "-object memory-backend-ram,id=ram0,size=1G -numa node,nodeid=0,cpus=0,memdev=ram0 -numa node,nodeid=1 -object acpi-generic-initiator,id=gi0,pci-dev=dev0,node=1",
        ))
        .unwrap();
        let gi: Vec<(u32, bool)> = q
            .numa
            .iter()
            .map(|n| (n.nodeid, n.generic_initiator))
            .collect();
        assert_eq!(gi, [(0, false), (1, true)]);
        let err = machine(&scn(
            "-object memory-backend-ram,id=ram0,size=1G -numa node,nodeid=0,cpus=0,memdev=ram0 -object acpi-generic-initiator,id=gi0,pci-dev=dev0,node=3",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "acpi-generic-initiator gi0: node 3 is not a -numa node"
        );
    }
}
