//! The scenario's mount namespace, set up in the guest shell's process
//! between fork and exec (no `unshare`, `sh` and `mount` processes per
//! run): a private copy of the mounts, memhp's tree bound over the Linux
//! paths, a private tmpfs on /tmp, and the runner's "GO" pipe on fd 3.

use anyhow::{Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `linux/capability.h`: loading modules, rebooting (not in the libc crate).
const CAP_SYS_MODULE: libc::c_ulong = 16;
const CAP_SYS_BOOT: libc::c_ulong = 22;

/// Everything the child needs, prepared before the fork (the child may only
/// make system calls).
pub struct Setup {
    binds: Vec<(CString, CString)>,
    root: CString,
    tmp: CString,
    tmpfs: CString,
    tmp_opts: CString,
    /// Files the guest's init leaves in /tmp before the steps: (path,
    /// content).
    tmp_files: Vec<(CString, Vec<u8>)>,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("path {}", p.display()))
}

/// A pipe: the read end (for the child's fd 3) and the write end.
pub fn pipe() -> Result<(OwnedFd, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// The guest's console for the scenario shell: a pseudo-terminal, as the
/// oracle guest's stdin, stdout and stderr are its serial console (nothing
/// is ever typed on it: a step that reads stdin waits, as in the guest). Programs then
/// behave as there: stdio line-buffers stdout (so a tool's stderr lines
/// stay in order with its stdout lines), `isatty` holds and the window
/// size is 0x0 (tools fall back to their default width). Output is raw
/// (no `\n` → `\r\n`). Returns the master (the runner reads it) and the
/// slave (the shell's stdin, stdout and stderr).
pub fn console() -> Result<(Console, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes the two descriptors into the locals; the name,
    // termios and winsize arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("openpty");
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on a descriptor owned here.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).context("FD_CLOEXEC")?;
    }
    // SAFETY: `t` is a plain C struct that tcgetattr fills before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr/cfmakeraw/tcsetattr on the slave owned here, with
    // `t` valid for the duration of each call.
    unsafe {
        check(libc::tcgetattr(slave.as_raw_fd(), &mut t)).context("tcgetattr")?;
        libc::cfmakeraw(&mut t);
        check(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t)).context("tcsetattr")?;
    }
    Ok((Console(File::from(master)), slave))
}

/// The master side of [`console`]: reads the shell's output; the end of
/// the output (every slave descriptor closed, which Linux reports as EIO)
/// reads as end of file.
pub struct Console(File);

impl std::io::Read for Console {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            r => r,
        }
    }
}

/// Create `path` (mode 0644) holding `content`, with system calls only
/// (it runs between fork and exec).
fn write_file(path: &CString, content: &[u8]) -> std::io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the flags and mode are plain values.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut done = 0;
    while done < content.len() {
        // SAFETY: the pointer and length stay within `content`.
        let n = unsafe { libc::write(fd, content[done..].as_ptr().cast(), content.len() - done) };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: `fd` was opened above and is closed once.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        done += n as usize;
    }
    // SAFETY: `fd` was opened above and is closed once.
    check(unsafe { libc::close(fd) })
}

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Setup {
    /// Bind mounts `(source, target)`, in order, and a `/tmp` of
    /// `tmp_bytes` (the guest's: tmpfs defaults to half of its RAM) that
    /// holds `tmp_files` (name, content; mode 0644, as root's shell
    /// redirections make them).
    pub fn new(
        binds: &[(PathBuf, PathBuf)],
        tmp_bytes: u64,
        tmp_files: &[(&str, Vec<u8>)],
    ) -> Result<Setup> {
        Ok(Setup {
            // A /proc file this host's kernel does not have (a container
            // may hide /proc/modules) has nothing to be bound over.
            binds: binds
                .iter()
                .filter(|(_, t)| !t.starts_with("/proc") || t.exists())
                .map(|(s, t)| Ok((cstr(s)?, cstr(t)?)))
                .collect::<Result<_>>()?,
            root: CString::new("/")?,
            tmp: CString::new("/tmp")?,
            tmpfs: CString::new("tmpfs")?,
            tmp_opts: CString::new(format!("size={}k", tmp_bytes.div_ceil(1024)))?,
            tmp_files: tmp_files
                .iter()
                .map(|(name, content)| Ok((CString::new(format!("/tmp/{name}"))?, content.clone())))
                .collect::<Result<_>>()?,
        })
    }

    /// Make `cmd`'s process enter the namespace, and take `go` as fd 3.
    pub fn apply_in_child(self, cmd: &mut Command, go: OwnedFd) {
        let go_fd = go.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes system calls on data prepared before the fork (no
        // allocation, no locks). `go` is moved in, so its descriptor stays
        // open until then.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &go;
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    self.root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (src, dst) in &self.binds {
                    check(libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                check(libc::mount(
                    self.tmpfs.as_ptr(),
                    self.tmp.as_ptr(),
                    self.tmpfs.as_ptr(),
                    0,
                    self.tmp_opts.as_ptr().cast(),
                ))?;
                for (path, content) in &self.tmp_files {
                    write_file(path, content)?;
                }
                // The guest's steps must not reach the host kernel's node
                // name, modules or power: a UTS namespace of their own with
                // the guest's name, and no CAP_SYS_MODULE / CAP_SYS_BOOT.
                check(libc::unshare(libc::CLONE_NEWUTS))?;
                let name = c"(none)";
                check(libc::sethostname(name.as_ptr(), name.count_bytes()))?;
                for cap in [CAP_SYS_MODULE, CAP_SYS_BOOT] {
                    check(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0))?;
                }
                // fd 3 for the shell, without close-on-exec (dup2 clears
                // it; a pipe that already is fd 3 needs it cleared).
                if go_fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(go_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
