//! The FUSE operations, answered from a [`Tree`] the way kernfs answers them
//! for sysfs.
//!
//! Everything but `write` is answered inline on fuser's single dispatch
//! thread (tree lookups and reads are cheap by contract). A write may block
//! for as long as an offline retries, so it runs on a thread of its own and
//! answers from there; the request loop, and every reader, carries on.

use crate::attr::{self, attributes, dir_nlink};
use crate::backing::{Answer, BackingFiles, Content};
use crate::content::{listing, Listing, PageCache};
use crate::inodes::{join, Inodes, NodeType, Reported};
use crate::interrupt::InflightWrites;
use crate::invalidate::Invalidator;
use crate::options::Opens;
use crate::warm::Warmer;
use crate::writers::Writers;
use fuser::{
    AccessFlags, FileHandle, FopenFlags, Generation, INodeNo, KernelConfig, OpenAccMode, OpenFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use memhp_sysfs::vfs::{EntryKind, Tree};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// sysfs stores at most one page per `write(2)`; longer writes are short.
const MAX_STORE: usize = 4096;

/// The largest `FUSE_WRITE` payload we ask the kernel for. Anything above
/// 4096 bytes is enough to see that a write was longer than a page, which
/// is all sysfs needs to answer with a short write.
const MAX_WRITE: u32 = 128 * 1024;

fn errno(e: memhp_sysfs::vfs::Errno) -> fuser::Errno {
    // The kernel rejects FUSE replies with an error outside -511..-1 and
    // leaves the request hanging; such errnos (a notifier may return any
    // value down to -4095) reach FUSE clients as EIO.
    if !(1..512).contains(&e.0) {
        return fuser::Errno::EIO;
    }
    fuser::Errno::from_i32(e.0)
}

/// An open attribute (when opens are sent to us). `content` is what the
/// last read at offset 0 rendered; reads further on continue in it, as
/// seq_file does.
struct OpenFile {
    content: Option<Arc<[u8]>>,
    /// Counted by the backing files (see `backing`): released there too.
    tracked: bool,
}

#[derive(Default)]
struct Handles {
    next: u64,
    open: HashMap<u64, OpenFile>,
    /// Exact opens: per file, the generation and length it was last served
    /// at (what a short read through the page cache may have left the
    /// kernel's size at).
    served: HashMap<u64, (u64, usize)>,
}

/// The records of what the kernel may hold from us: cached contents and
/// listings, and backing files.
pub(crate) struct Served {
    pub(crate) page_cache: Arc<PageCache>,
    pub(crate) backing: Arc<BackingFiles>,
}

/// Timeouts and TTLs the operations need.
pub(crate) struct FsConfig {
    pub(crate) entry_ttl: Duration,
    pub(crate) attr_ttl: Duration,
    pub(crate) opens: Opens,
    pub(crate) passthrough: bool,
}

pub(crate) struct MemhpFs {
    tree: Arc<dyn Tree>,
    inodes: Arc<Inodes>,
    inflight: Arc<InflightWrites>,
    invalidator: Arc<Invalidator>,
    page_cache: Arc<PageCache>,
    backing: Arc<BackingFiles>,
    /// Opens are answered with backing files where they can be (asked
    /// for, and granted by the kernel at `init`).
    passthrough: AtomicBool,
    /// The kernel refused to register a backing file: no new ones.
    backing_refused: AtomicBool,
    /// Lists directories to the end for the kernel (`Opens::Cached`).
    warmer: Option<Arc<Warmer>>,
    writers: Writers,
    handles: Mutex<Handles>,
    config: FsConfig,
    /// Every timestamp: sysfs inodes keep the time they were created.
    time: SystemTime,
}

impl MemhpFs {
    pub(crate) fn new(
        tree: Arc<dyn Tree>,
        inodes: Arc<Inodes>,
        inflight: Arc<InflightWrites>,
        invalidator: Arc<Invalidator>,
        served: Served,
        warmer: Option<Arc<Warmer>>,
        config: FsConfig,
    ) -> MemhpFs {
        let Served {
            page_cache,
            backing,
        } = served;
        MemhpFs {
            tree,
            inodes,
            inflight,
            invalidator,
            page_cache,
            backing,
            passthrough: AtomicBool::new(config.passthrough && config.opens == Opens::Exact),
            backing_refused: AtomicBool::new(false),
            warmer,
            writers: Writers::new(),
            handles: Mutex::new(Handles::default()),
            config,
            time: SystemTime::now(),
        }
    }

    fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_handle(&self, handle: OpenFile) -> FileHandle {
        let mut handles = self.handles();
        handles.next += 1;
        let fh = handles.next;
        handles.open.insert(fh, handle);
        FileHandle(fh)
    }

    fn node(&self, ino: INodeNo) -> Result<(Arc<str>, NodeType), fuser::Errno> {
        self.inodes.get(ino.0).ok_or(fuser::Errno::ENOENT)
    }

    /// What inode `ino` holds now; `ENOENT` if its path is gone or now names
    /// a different type of entry (another inode).
    fn current(&self, ino: INodeNo) -> Result<(Arc<str>, EntryKind), fuser::Errno> {
        let (path, node_type) = self.node(ino)?;
        match self.tree.lookup(&path) {
            Some(kind) if NodeType::of(&kind) == node_type => Ok((path, kind)),
            _ => Err(fuser::Errno::ENOENT),
        }
    }

    fn reported(&self, path: &str, kind: EntryKind) -> Reported {
        let nlink = match kind {
            EntryKind::Dir => self
                .tree
                .readdir(path)
                .map(|entries| dir_nlink(&entries))
                .unwrap_or(2),
            _ => 1,
        };
        Reported { kind, nlink }
    }

    /// The attributes of inode `ino` at `path`: mtime and ctime move with
    /// the version of what the kernel may cache of it. With [`Opens::Cached`] a
    /// file's size is its content's length (recorded like served content),
    /// not sysfs's 4096: the kernel sets the size of a cached file to where
    /// a read came up short, and drops its pages whenever a later
    /// attribute reply disagrees, which would make every `stat` cost a read.
    fn attr_for(&self, ino: u64, path: &str, reported: &Reported) -> fuser::FileAttr {
        let mut attr = attributes(ino, &reported.kind, reported.nlink, self.time);
        if matches!(reported.kind, EntryKind::File { .. }) {
            attr.size = self.tree.file_size(path);
        }
        // The version of what the kernel may cache (a listing; a file's
        // content with `Opens::Cached`): 0 (the mount time) until it
        // changes.
        let version = Duration::from_nanos(self.page_cache.version(ino));
        attr.mtime += version;
        attr.ctime += version;
        // A file that cannot be read keeps 4096, so that a read reaches us
        // (and fails as it should) instead of ending at size 0.
        if self.config.opens == Opens::Cached
            && matches!(reported.kind, EntryKind::File { .. })
            && self.tree.open(path, true, false).is_ok()
        {
            if let Ok(content) = self.cached_render(ino, path) {
                attr.size = content.len() as u64;
            }
        }
        attr
    }

    /// Send the attributes of `ino` (holding `kind`) and remember them.
    fn reply_attr(&self, ino: INodeNo, path: &str, kind: EntryKind, reply: ReplyAttr) {
        let reported = self.reported(path, kind);
        let attr = self.attr_for(ino.0, path, &reported);
        self.inodes.attributes_sent(ino.0, reported);
        reply.attr(&self.config.attr_ttl, &attr);
    }

    /// When opens are not sent to us (`Opens::Cached`) the access check of
    /// open happens at the first read, write or O_TRUNC instead.
    fn access_without_open(
        &self,
        path: &str,
        fh: FileHandle,
        read: bool,
        write: bool,
    ) -> Result<(), fuser::Errno> {
        if self.config.opens == Opens::Cached && fh.0 == 0 {
            self.tree.open(path, read, write).map_err(errno)?;
        }
        Ok(())
    }

    /// The path of file `ino` for a read or write through `fh`, checked as
    /// its open would have been (see [`MemhpFs::access_without_open`]).
    fn io_path(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        read: bool,
        write: bool,
    ) -> Result<Arc<str>, fuser::Errno> {
        let (path, _) = self.node(ino)?;
        self.access_without_open(&path, fh, read, write)?;
        Ok(path)
    }

    /// The listing a readdir at `offset` continues in: a new snapshot at
    /// offset 0 (which the kernel may cache, see [`PageCache`]), the one
    /// being read otherwise.
    fn dir_listing_for_read(&self, ino: INodeNo, offset: u64) -> Result<Listing, fuser::Errno> {
        if offset > 0 {
            if let Some(listing) = self.page_cache.dir_listing(ino.0) {
                return Ok(listing);
            }
        }
        let (path, _) = self.node(ino)?;
        let listing = listing(&*self.tree, &self.inodes, ino.0, &path).map_err(errno)?;
        if self.page_cache.dir_served(ino.0, listing.clone()) {
            self.invalidator.request();
        }
        if let Some(warmer) = &self.warmer {
            warmer.listed(ino.0, &path);
        }
        Ok(listing)
    }

    /// The content a read at `offset` of file `ino` slices: rendered anew
    /// at offset 0 (seq_file's first read) and the buffer of that first
    /// read further on (kept per open file); per inode and generation when
    /// opens are not sent to us.
    fn file_content(
        &self,
        ino: INodeNo,
        path: &str,
        fh: FileHandle,
        offset: u64,
    ) -> Result<Arc<[u8]>, fuser::Errno> {
        if self.config.opens == Opens::Cached {
            return self.cached_render(ino.0, path);
        }
        if offset > 0 {
            if let Some(OpenFile {
                content: Some(content),
                ..
            }) = self.handles().open.get(&fh.0)
            {
                return Ok(content.clone());
            }
        }
        let generation = self.tree.generation();
        let content: Arc<[u8]> = self.tree.read(path).map_err(errno)?.into();
        let mut handles = self.handles();
        if let Some(OpenFile { content: slot, .. }) = handles.open.get_mut(&fh.0) {
            *slot = Some(content.clone());
        }
        handles.served.insert(ino.0, (generation, content.len()));
        drop(handles);
        Ok(content)
    }

    /// Direct-I/O contents bypass the page cache, except that splice and
    /// sendfile fill it anyway, and a short read there makes the kernel
    /// shrink the file's size to what it read (`fuse_short_read`); no read
    /// or (for a file bind-mounted on its own) lookup brings it back, so a
    /// longer content would be cut. When file `ino` changed since it was
    /// last served and grew, its new content is stored in the kernel's cache
    /// before the open is answered, which grows the size; the open then
    /// drops the pages again (no `FOPEN_KEEP_CACHE`).
    fn grow_cached_size(&self, ino: u64, path: &str) {
        let generation = self.tree.generation();
        let Some((served_at, len)) = self.handles().served.get(&ino).copied() else {
            return;
        };
        if served_at == generation {
            return;
        }
        let Ok(content) = self.tree.read(path) else {
            return;
        };
        let stored = content.len() > len && self.invalidator.store(ino, &content);
        // The least size the kernel may keep now.
        let least = if stored {
            content.len()
        } else {
            len.min(content.len())
        };
        self.handles().served.insert(ino, (generation, least));
    }

    /// With [`Opens::Cached`]: the content of file `ino` as recorded at the
    /// tree's current generation, or rendered and recorded now (the kernel
    /// may cache what it is given; see [`PageCache`]).
    fn cached_render(&self, ino: u64, path: &str) -> Result<Arc<[u8]>, fuser::Errno> {
        let generation = self.tree.generation();
        if let Some(content) = self.page_cache.file_content(ino, generation) {
            return Ok(content);
        }
        let content: Arc<[u8]> = self.tree.read(path).map_err(errno)?.into();
        let scope = self.tree.scope(path);
        self.page_cache
            .file_served(ino, content.clone(), generation, scope);
        if self.tree.generation() != generation {
            // Rendered while the tree changed: whatever the kernel caches
            // now must be compared again.
            self.invalidator.request();
        }
        Ok(content)
    }
}

impl MemhpFs {
    /// Answer an open of file `ino` at `path` with the inode's backing
    /// file if it is to have one (see `backing`): read from directly when
    /// opened read-only, with direct I/O to us on top when opened for
    /// `write`. The reply back when the open is to be answered with direct
    /// I/O instead (counted as such): a direct open of the inode is still
    /// open, or its read has side effects, or it cannot be rendered (its
    /// reads must fail as they should), or no backing file could be made.
    fn open_passthrough(
        &self,
        ino: u64,
        path: &str,
        write: bool,
        reply: ReplyOpen,
    ) -> Option<ReplyOpen> {
        let rendered = match write
            || self.backing_refused.load(Ordering::Relaxed)
            || self.tree.read_has_effects(path)
        {
            true => None,
            false => self.render_settled(path),
        };
        let answer = match &rendered {
            None => self.backing.join(ino),
            Some((generation, bytes)) => {
                let content = Content {
                    bytes,
                    generation: *generation,
                    scope: self.tree.scope(path),
                };
                match self
                    .backing
                    .open_read(ino, Some(content), |file| reply.open_backing(file))
                {
                    Ok(answer) => answer,
                    Err(e) => {
                        // Refused by the kernel (EPERM without
                        // CAP_SYS_ADMIN): no use asking again. Out of
                        // descriptors or memory: this open only.
                        let refused = matches!(
                            e.raw_os_error(),
                            Some(libc::EPERM | libc::EINVAL | libc::ENOTTY | libc::EOPNOTSUPP)
                        );
                        match refused {
                            true => {
                                tracing::warn!(path, error = %e, "no backing files; reads go through the daemon");
                                self.backing_refused.store(true, Ordering::Relaxed);
                            }
                            false => {
                                tracing::debug!(path, error = %e, "no backing file for this open")
                            }
                        }
                        self.backing.join(ino)
                    }
                }
            }
        };
        let id = match answer {
            Answer::Backed(id) => id,
            Answer::Direct => return Some(reply),
        };
        if let Some((generation, _)) = rendered {
            if self.tree.generation() != generation {
                // The tree moved after the render: whoever changed it may
                // already have brought the backing files up to date without
                // this one, so compare it now, before the open returns.
                self.invalidator.request();
                self.invalidator.sync(&*self.tree);
            }
        }
        let fh = self.add_handle(OpenFile {
            content: None,
            tracked: true,
        });
        // DIRECT_IO overrides PASSTHROUGH for reads and writes alike.
        let flags = match write {
            true => {
                FopenFlags::FOPEN_DIRECT_IO
                    | FopenFlags::FOPEN_NOFLUSH
                    | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
            }
            false => FopenFlags::FOPEN_NOFLUSH,
        };
        reply.opened_passthrough(fh, flags, &id);
        None
    }

    /// The content of `path` and the generation it was rendered at: a
    /// change in the middle is rendered again (a few times at most; the
    /// caller compares the generation afterwards anyway). `None` if the
    /// file cannot be read.
    fn render_settled(&self, path: &str) -> Option<(u64, Vec<u8>)> {
        let mut rendered = None;
        for _ in 0..3 {
            let generation = self.tree.generation();
            let content = self.tree.read(path).ok()?;
            let settled = self.tree.generation() == generation;
            rendered = Some((generation, content));
            if settled {
                break;
            }
        }
        rendered
    }
}

/// Whether a caller may access an entry of `kind` with `mask`, by the mode
/// bits (owner and group are root). Root may read and write anything, as
/// with `CAP_DAC_OVERRIDE`; `open` is where sysfs really refuses.
fn may_access(kind: &EntryKind, mask: AccessFlags, uid: u32, gid: u32) -> bool {
    let perm = match kind {
        EntryKind::Dir => 0o755,
        EntryKind::File { mode } => mode & 0o777,
        EntryKind::Symlink { .. } => 0o777,
    };
    let wants_exec = mask.contains(AccessFlags::X_OK);
    if uid == 0 {
        return !wants_exec || matches!(kind, EntryKind::Dir) || perm & 0o111 != 0;
    }
    let bits = if gid == 0 {
        (perm >> 3) & 0o7
    } else {
        perm & 0o7
    };
    let needed = [
        (AccessFlags::R_OK, 0o4),
        (AccessFlags::W_OK, 0o2),
        (AccessFlags::X_OK, 0o1),
    ]
    .into_iter()
    .filter(|&(flag, _)| mask.contains(flag))
    .fold(0, |needed, (_, bit)| needed | bit);
    bits & needed == needed
}

impl fuser::Filesystem for MemhpFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Drop a directory's cached listing, or a cached file's pages, when
        // its mtime or size changes (see `content`); without it they would
        // be kept.
        if let Err(missing) = config.add_capabilities(fuser::InitFlags::FUSE_AUTO_INVAL_DATA) {
            tracing::warn!(
                ?missing,
                "kernel lacks FUSE_AUTO_INVAL_DATA; cached listings may go stale"
            );
        }
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        if self.passthrough.load(Ordering::Relaxed) {
            // Backing files are memfds (shmem, stacking depth 0).
            let granted = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !granted {
                tracing::info!("kernel lacks FUSE passthrough; every read is a request");
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (parent_path, parent_type) = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if parent_type != NodeType::Dir {
            return reply.error(fuser::Errno::ENOTDIR);
        }
        let Some(name) = name.to_str() else {
            return reply.error(fuser::Errno::ENOENT);
        };
        let path = join(&parent_path, name);
        let Some(kind) = self.tree.lookup(&path) else {
            // No negative entry: a block hot-added later must show up at once.
            return reply.error(fuser::Errno::ENOENT);
        };
        let ino = self.inodes.intern(parent.0, &path, &kind);
        let reported = self.reported(&path, kind);
        let attr = self.attr_for(ino, &path, &reported);
        self.inodes.looked_up(ino, reported);
        reply.entry_with_ttls(
            &self.config.attr_ttl,
            &self.config.entry_ttl,
            &attr,
            Generation(0),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.inodes.forget(ino.0, nlookup) {
            self.page_cache.forget(ino.0);
            self.handles().served.remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        // The kernel asks again after every read (a read invalidates atime).
        // What we last sent is still right unless the invalidator has seen
        // the tree change since, in which case it has cleared the record.
        if let (Some(reported), Some((path, _))) =
            (self.inodes.reported(ino.0), self.inodes.get(ino.0))
        {
            let attr = self.attr_for(ino.0, &path, &reported);
            return reply.attr(&self.config.attr_ttl, &attr);
        }
        match self.current(ino) {
            Ok((path, kind)) => self.reply_attr(ino, &path, kind, reply),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(fuser::Errno::EPERM);
        }
        // A size change is O_TRUNC or truncate(2): attributes have no
        // storage to cut, so (as on sysfs) it succeeds and changes nothing.
        // Times are accepted and not kept. When opens are not sent to us,
        // the truncation of an O_TRUNC open is where an open for writing
        // is refused.
        // (The kernel sends an O_TRUNC's truncation without a file handle,
        // so truncate(2) of a read-only attribute is refused as well.)
        if let (Some(_), Ok((path, _))) = (size, self.node(ino)) {
            let fh = fh.unwrap_or(FileHandle(0));
            if let Err(e) = self.access_without_open(&path, fh, false, true) {
                return reply.error(e);
            }
        }
        match self.current(ino) {
            Ok((path, kind)) => self.reply_attr(ino, &path, kind, reply),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.current(ino) {
            Ok((_, EntryKind::Symlink { target })) => reply.data(target.as_bytes()),
            Ok(_) => reply.error(fuser::Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::EPERM);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (path, node_type) = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if node_type == NodeType::Dir {
            return reply.error(fuser::Errno::EISDIR);
        }
        let (read, write) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        if self.config.opens == Opens::Cached {
            // ENOSYS: "opened, and do not send opens any more"
            // (`fc->no_open`). Not checked here, so that the first open
            // behaves like all later ones: refused at its first read,
            // write or O_TRUNC.
            return reply.error(fuser::Errno::ENOSYS);
        }
        if let Err(e) = self.tree.open(&path, read, write) {
            return reply.error(errno(e));
        }
        // Every open of an inode with a backing file must name it (the
        // kernel fails any other with EIO), so opens for writing get one
        // too, with direct I/O on top: their writes still come to us.
        // With passthrough every open is counted by the backing files,
        // direct ones too: an inode's opens are all backed or all direct.
        let tracked = self.passthrough.load(Ordering::Relaxed);
        let reply = match tracked {
            true => match self.open_passthrough(ino.0, &path, write, reply) {
                Some(reply) => reply,
                None => return,
            },
            false => reply,
        };
        if read {
            self.grow_cached_size(ino.0, &path);
        }
        let fh = self.add_handle(OpenFile {
            content: None,
            tracked,
        });
        // DIRECT_IO: reads return exactly the content and never come from
        // the page cache (which would make the kernel shrink the file's
        // 4096-byte size to the content's). PARALLEL_DIRECT_WRITES: a write
        // blocked in an offline must not hold the inode lock against a
        // second writer.
        reply.opened(
            fh,
            FopenFlags::FOPEN_DIRECT_IO
                | FopenFlags::FOPEN_NOFLUSH
                | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let path = match self.io_path(ino, fh, true, false) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        match self.file_content(ino, &path, fh, offset) {
            Ok(content) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(content.len());
                let end = start.saturating_add(size as usize).min(content.len());
                reply.data(&content[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let path = match self.io_path(ino, fh, false, true) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        if data.is_empty() {
            return reply.written(0);
        }
        let unique = req.unique().0;
        let cancel = self.inflight.begin(unique, req.pid());
        let inflight = self.inflight.clone();
        let data = data[..data.len().min(MAX_STORE)].to_vec();
        let tree = self.tree.clone();
        let invalidator = self.invalidator.clone();
        let ino = ino.0;
        let page_cache = (self.config.opens == Opens::Cached).then(|| self.page_cache.clone());
        self.writers.run(move || {
            let result = tree.write(&path, &data, &cancel);
            inflight.end(unique);
            // A write through the page cache (`Opens::Cached`) leaves the
            // written bytes in the file's page, whatever the tree made of
            // them; the kernel refreshes the attributes of a written file,
            // and the new version (mtime) makes it drop that page.
            if let Some(page_cache) = &page_cache {
                page_cache.written(ino);
            }
            // Whoever wrote must not see caches older than the write.
            if !invalidator.sync(&*tree) {
                tracing::warn!(
                    path = &*path,
                    "write answered before caches were invalidated"
                );
            }
            move || match result {
                Ok(n) => reply.written(n.min(data.len()) as u32),
                Err(e) => {
                    tracing::debug!(path = &*path, errno = e.0, "write failed");
                    reply.error(errno(e));
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush; ENOSYS tells the kernel never to ask again.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let released = self.handles().open.remove(&fh.0);
        if released.is_some_and(|f| f.tracked) {
            self.backing.release(ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok((_, NodeType::Dir)) => {
                // ENOSYS: "opened, and do not send opendirs any more"
                // (`fc->no_opendir`); the kernel then caches listings
                // (`FOPEN_CACHE_DIR`), which the invalidator keeps current.
                reply.error(fuser::Errno::ENOSYS)
            }
            Ok(_) => reply.error(fuser::Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.dir_listing_for_read(ino, offset) {
            Ok(listing) => listing,
            Err(e) => return reply.error(e),
        };
        let parent = self.inodes.parent(ino.0).unwrap_or(ino.0);
        let dots = [(ino.0, "."), (parent, "..")];
        // Entry i (dots first) carries offset i + 1: where the next read
        // resumes.
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for index in start..dots.len().saturating_add(listing.len()) {
            let next = index as u64 + 1;
            let full = match dots.get(index) {
                Some(&(dot_ino, name)) => {
                    reply.add(INodeNo(dot_ino), next, fuser::FileType::Directory, name)
                }
                None => {
                    let entry = &listing[index - dots.len()];
                    reply.add(INodeNo(entry.ino), next, entry.kind, &entry.name)
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        // Directories are never opened through us (see `opendir`).
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let page = attr::FILE_SIZE as u32;
        reply.statfs(0, 0, 0, 0, 0, page, 255, page);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // No extended attributes; ENOSYS makes the kernel answer
        // EOPNOTSUPP from then on without asking.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.current(ino) {
            Ok((_, kind)) if may_access(&kind, mask, req.uid(), req.gid()) => reply.ok(),
            Ok(_) => reply.error(fuser::Errno::EACCES),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        // sysfs directories have no create method: open(O_CREAT) is EACCES.
        reply.error(fuser::Errno::EACCES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_may_read_and_write_anything_but_execute_only_with_an_x_bit() {
        let wo = EntryKind::File { mode: 0o200 };
        let rw_x = AccessFlags::R_OK | AccessFlags::W_OK;
        assert!(may_access(&wo, rw_x, 0, 0));
        assert!(!may_access(&wo, AccessFlags::X_OK, 0, 0));
        assert!(may_access(&EntryKind::Dir, AccessFlags::X_OK, 0, 0));
    }

    #[test]
    fn other_users_get_the_other_bits() {
        let rw = EntryKind::File { mode: 0o644 };
        assert!(may_access(&rw, AccessFlags::R_OK, 1000, 1000));
        assert!(!may_access(&rw, AccessFlags::W_OK, 1000, 1000));
        assert!(may_access(
            &EntryKind::Dir,
            AccessFlags::X_OK | AccessFlags::R_OK,
            1000,
            1000
        ));
        let wo = EntryKind::File { mode: 0o200 };
        assert!(!may_access(&wo, AccessFlags::R_OK, 1000, 0));
        assert!(may_access(&wo, AccessFlags::F_OK, 1000, 0));
    }
}
