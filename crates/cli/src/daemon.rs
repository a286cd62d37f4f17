//! `memhp mount` / `memhp umount`: serve a machine's tree on a mount point
//! with its control socket, daemonizing once the mount is ready (like
//! sshfs); SIGTERM, SIGINT or an unmount end it cleanly.

use crate::ctl::socket_for_root;
use crate::machine_args::MachineArgs;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to serve: user-space onliners to simulate (`--onliner
/// KIND[:DELAY_MS]`, raced by `seed`), the per-client event queue size, and
/// how opens work.
pub struct ServeOptions {
    pub list: Vec<memhp_control::agents::Agent>,
    pub seed: u64,
    pub event_buffer: usize,
    pub opens: memhp_fuse::Opens,
    /// Read-only opens read from backing files (FUSE passthrough).
    pub passthrough: bool,
    /// Also send uevents on a NETLINK_KOBJECT_UEVENT socket.
    pub netlink_uevents: bool,
}

fn check_root(root: &Path) -> Result<()> {
    match memhp_fuse::recover_stale(root) {
        Ok(true) => eprintln!("memhp: recovered a stale mount at {}", root.display()),
        Ok(false) => {}
        Err(e) => bail!("{}: {e}", root.display()),
    }
    let meta =
        std::fs::metadata(root).with_context(|| format!("mount point {}", root.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", root.display());
    }
    if std::fs::read_dir(root)?.next().is_some() {
        bail!("mount point {} is not empty", root.display());
    }
    Ok(())
}

/// Block SIGTERM/SIGINT/SIGHUP in this thread (and the threads it starts)
/// so that the main loop can wait for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the calls only touch `set` and the
    // calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait up to 100 ms for a termination signal.
fn signalled(set: &libc::sigset_t) -> bool {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    // SAFETY: set is initialised; a null siginfo pointer is allowed.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) > 0 }
}

/// Mount and serve until told to stop. `ready` is called once everything is
/// up (with `None`) or when starting failed (with the error).
fn serve(
    machine: &MachineArgs,
    root: &Path,
    socket: &Path,
    offline_timeout: Option<f64>,
    serve_opts: &ServeOptions,
    ready: &mut dyn FnMut(Option<&str>),
) -> Result<()> {
    let set = block_signals();
    crate::nofile::raise_soft_to_hard();
    let started = (|| -> Result<_> {
        check_root(root)?;
        let host = Arc::new(machine.host()?);
        host.shared
            .set_retry_timeout(offline_timeout.map(std::time::Duration::from_secs_f64));
        let tree: Arc<dyn memhp_sysfs::vfs::Tree> = memhp_control::guest_tree(&host);
        let mount = memhp_fuse::spawn_mount(
            tree,
            root,
            &memhp_fuse::MountOptions {
                opens: serve_opts.opens,
                passthrough: serve_opts.passthrough,
                ..memhp_fuse::MountOptions::default()
            },
        )
        .with_context(|| format!("mount {}", root.display()))?;
        let view = mount.cache_sync();
        let mut bus =
            memhp_control::EventBus::with_agents(serve_opts.list.clone(), serve_opts.seed)
                .with_capacity(serve_opts.event_buffer)
                .with_view_sync(Arc::new(move || {
                    view.sync();
                }));
        if serve_opts.netlink_uevents {
            bus = bus.with_netlink_uevents()?;
        }
        let ctl = memhp_control::ControlServer::start(host, Arc::new(bus), socket)?;
        Ok((mount, ctl))
    })();
    let (mount, ctl) = match started {
        Ok(x) => x,
        Err(e) => {
            ready(Some(&format!("{e:#}")));
            return Err(e);
        }
    };
    ready(None);
    while !mount.is_finished() {
        if signalled(&set) {
            break;
        }
    }
    drop(ctl);
    if !mount.is_finished() {
        mount.unmount().context("unmount")?;
    }
    Ok(())
}

/// `memhp mount`.
pub fn mount(
    machine: &MachineArgs,
    root: &Path,
    socket: Option<PathBuf>,
    foreground: bool,
    offline_timeout: Option<f64>,
    serve_opts: &ServeOptions,
) -> Result<()> {
    let socket = socket.unwrap_or_else(|| socket_for_root(root));
    if foreground {
        return serve(
            machine,
            root,
            &socket,
            offline_timeout,
            serve_opts,
            &mut |r| {
                if r.is_none() {
                    eprintln!(
                        "memhp: serving {} (control socket {})",
                        root.display(),
                        socket.display()
                    );
                }
            },
        );
    }
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the pipe fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no threads have been started yet in this process, so fork is
    // safe; the child continues single-threaded until it mounts.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid > 0 {
        drop(wr);
        let mut msg = String::new();
        std::fs::File::from(rd).read_to_string(&mut msg)?;
        if msg == "ok" {
            return Ok(());
        }
        bail!(
            "{}",
            if msg.is_empty() {
                "the daemon died before the mount was ready".to_string()
            } else {
                msg
            }
        );
    }
    drop(rd);
    // SAFETY: setsid in the freshly forked child detaches it from the
    // terminal's session; it cannot fail for a non-leader.
    unsafe { libc::setsid() };
    let mut wr = Some(std::fs::File::from(wr));
    let r = serve(
        machine,
        root,
        &socket,
        offline_timeout,
        serve_opts,
        &mut |res| {
            if let Some(mut w) = wr.take() {
                let _ = w.write_all(res.unwrap_or("ok").as_bytes());
                if res.is_none() {
                    // Detach stdio now that the parent has its answer.
                    if let Ok(null) = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/null")
                    {
                        use std::os::fd::AsRawFd;
                        for fd in 0..3 {
                            // SAFETY: duplicating /dev/null over the standard fds.
                            unsafe { libc::dup2(null.as_raw_fd(), fd) };
                        }
                    }
                }
            }
        },
    );
    std::process::exit(i32::from(r.is_err()));
}

/// `memhp umount`.
pub fn umount(root: &Path) -> Result<()> {
    memhp_fuse::unmount(root).with_context(|| format!("unmount {}", root.display()))
}
