//! Links fuser's calls (Linux, macOS) to [`SnapshotFs`]: each method asks the view and
//! replies with its answer, or with the errno of its error. Every change is refused with
//! EROFS. Snapshots never change, so entries and attributes are cached by the kernel for
//! long, file pages are kept across opens, and folder listings are cached.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, MountOption, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::{Attr, FileKind, FsError, SnapshotFs};

/// How the drive is mounted.
pub struct MountOptions {
    /// Threads answering the kernel.
    pub threads: usize,
    /// Let other users see the drive (needs `user_allow_other` in /etc/fuse.conf unless root).
    pub allow_other: bool,
    /// Keep each thread on the CPU of the one program it answers (Linux; see
    /// `reader_cpu`).
    pub follow_reader: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            // Requests are short; more threads than cores only add context switches.
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            allow_other: false,
            follow_reader: true,
        }
    }
}

struct Adapter {
    fs: SnapshotFs,
    /// The kernel reads files without `open`/`release` round trips (and keeps their pages).
    no_open: AtomicBool,
    /// The kernel lists folders without `opendir`/`releasedir` round trips, caching
    /// listings until a folder's mtime changes.
    no_opendir: AtomicBool,
    /// Answer on the reading program's CPU (Linux only: `reader_cpu`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    follow_reader: bool,
}

fn errno(e: FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::NotADirectory => Errno::ENOTDIR,
        FsError::IsADirectory => Errno::EISDIR,
        FsError::NotASymlink => Errno::EINVAL,
        FsError::BadHandle => Errno::EBADF,
        FsError::Io => Errno::EIO,
    }
}

fn time(nanos: i64) -> SystemTime {
    let d = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.mtime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        // What ordinary filesystems say: `cat` and `cp` allocate a buffer of this size
        // (at least 128 KiB) per file; the kernel's read-ahead makes the large reads.
        blksize: 4096,
        flags: 0,
    }
}

impl Adapter {
    /// Every request that a program waits for (lookups, listings, reads) comes here.
    fn asked_by(&self, _req: &Request) {
        #[cfg(target_os = "linux")]
        if self.follow_reader {
            crate::reader_cpu::note_request(_req.pid());
        }
    }

    fn entry(&self, r: Result<Attr, FsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&self.fs.ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }
}

impl fuser::Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Large reads; the kernel caps this at what it offered (see `raise_read_ahead`).
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        // Each costs a round trip per file or folder saved: `find`, `cp -r` and `cat` of
        // many small files are dominated by round trips, not by data.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Every listing with attributes, not only its first page ("auto"): the kernel
        // then knows every listed file's inode, which pushed read-ahead needs (see
        // `mount`), and `cat` or `cp` of a big folder's later files needs no lookups.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let caps = config.capabilities();
        self.no_open
            .store(caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT), Relaxed);
        self.no_opendir
            .store(caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT), Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.asked_by(_req);
        self.entry(self.fs.lookup(parent.0, name.as_bytes()), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.asked_by(_req);
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.fs.ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.asked_by(_req);
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.asked_by(_req);
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        if self.no_open.load(Relaxed) {
            // From now on the kernel opens files itself, keeping their cached pages, and
            // reads come by inode (`fh` 0).
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.open(ino.0) {
            // Keep the kernel's cached pages across opens: the file never changes.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(e)),
        }
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
        self.asked_by(_req);
        let r = if fh.0 == 0 {
            self.fs.read_ino(ino.0, offset, size)
        } else {
            self.fs.read(fh.0, offset, size)
        };
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.asked_by(_req);
        if self.no_opendir.load(Relaxed) {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind != FileKind::Dir => reply.error(Errno::ENOTDIR),
            // Snapshot folders never change: the kernel may keep their listings.
            Ok(a) if a.immutable => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
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
        self.asked_by(_req);
        // Offsets: 1 after ".", 2 after "..", 2 + n after the view's n-th entry.
        let mut offset = offset;
        if offset == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            offset = 1;
        }
        if offset == 1 {
            let parent = self.fs.parent(ino.0).unwrap_or(ino.0);
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            offset = 2;
        }
        let r = self.fs.readdir(ino.0, offset - 2, |a, name, next| {
            reply.add(
                INodeNo(a.ino),
                next + 2,
                file_type(a.kind),
                OsStr::from_bytes(name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Entries with their attributes, so listing a folder needs no lookup per entry.
    /// Offsets as in `readdir`.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.asked_by(_req);
        let mut offset = offset;
        let dots = [(".", ino.0), ("..", self.fs.parent(ino.0).unwrap_or(ino.0))];
        for (i, (dot, at)) in dots.into_iter().enumerate() {
            if offset > i as u64 {
                continue;
            }
            let a = match self.fs.getattr(at) {
                Ok(a) => a,
                Err(e) => return reply.error(errno(e)),
            };
            offset += 1;
            if reply.add(
                INodeNo(at),
                offset,
                dot,
                &self.fs.ttl(&a),
                &file_attr(&a),
                Generation(0),
            ) {
                return reply.ok();
            }
        }
        let r = self.fs.readdir(ino.0, offset - 2, |a, name, next| {
            reply.add(
                INodeNo(a.ino),
                next + 2,
                OsStr::from_bytes(name),
                &self.fs.ttl(a),
                &file_attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.fs.stored_bytes().div_ceil(4096);
        reply.statfs(blocks, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS)
        } else {
            reply.ok()
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    // Everything below would change the snapshot: refused.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
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
        reply.error(Errno::EROFS);
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
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
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
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

/// Why a mount point cannot be used, in words a user can act on.
pub fn check_mountpoint(mountpoint: &Path) -> Result<(), String> {
    let shown = mountpoint.display();
    if is_mount_point(mountpoint) {
        // A FUSE mount whose server is gone still shows cached entries; asking for the
        // filesystem's statistics always reaches the server.
        return Err(match statfs(mountpoint) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => format!(
                "{shown} is a stale mount left by a mount that ended without unmounting; \
                 run `fusermount3 -u {shown}` (or `umount {shown}`), then mount again"
            ),
            _ => format!(
                "something is already mounted at {shown}; unmount it first \
                 (`fusermount3 -u {shown}`) or choose another folder"
            ),
        });
    }
    match std::fs::metadata(mountpoint) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(format!("{shown} is not a folder")),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(format!(
            "{shown} is a stale mount left by a mount that ended without unmounting; \
             run `fusermount3 -u {shown}` (or `umount {shown}`), then mount again"
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("{shown} does not exist; create the folder first"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

fn statfs(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid C string and `st` a properly sized out-parameter.
    let r = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a filesystem is mounted exactly at `path` (Linux: /proc/self/mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let Ok(abs) = std::path::absolute(path) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mount_path(m)) == abs)
}

/// Mount paths in mountinfo have spaces, tabs, newlines and backslashes as octal escapes.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mounted drive. Dropping it (or [`Mounted::unmount`]) unmounts.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl Mounted {
    /// True once the drive went away on its own (`fusermount3 -u`, `umount`).
    pub fn ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) if !s.guard.is_finished() => s.umount_and_join(),
            Some(s) => s.join(),
            None => Ok(()),
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mounts `fs` read-only at `mountpoint` and serves it from background threads.
pub fn mount(fs: SnapshotFs, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted, String> {
    check_mountpoint(mountpoint)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("backazon".into()),
        MountOption::Subtype("backazon".into()),
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let slot = fs.push_slot();
    let session = fuser::spawn_mount2(
        Adapter {
            fs,
            no_open: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
            follow_reader: opts.follow_reader,
        },
        mountpoint,
        &config,
    )
    .map_err(|e| format!("cannot mount at {}: {e}", mountpoint.display()))?;
    // Read-ahead of a folder's next files puts them straight into the kernel's page
    // cache (a "store" notification): `cp -r` or `cat *` then read them without a round
    // trip each. A file the kernel has not looked up yet is skipped by the kernel.
    let notifier = session.notifier();
    slot.set(Arc::new(move |ino, offset, bytes: &[u8]| {
        notifier.store(INodeNo(ino), offset, bytes).is_ok()
    }));
    let mounted = Mounted {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    };
    raise_read_ahead(mountpoint);
    Ok(mounted)
}

/// The kernel offers 128 KiB of read-ahead at mount time whatever the filesystem asks;
/// raising the mount's `read_ahead_kb` afterwards is what makes it send 1 MiB reads.
/// Best effort: it needs root, and the drive works without it.
fn raise_read_ahead(mountpoint: &Path) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(md) = std::fs::metadata(mountpoint) {
            let dev = md.dev();
            let (major, minor) = (libc::major(dev), libc::minor(dev));
            let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
            let _ = std::fs::write(knob, "1024");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mountpoint;
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(
            super::unescape_mount_path(r"/mnt/my\040drive"),
            "/mnt/my drive"
        );
        assert_eq!(super::unescape_mount_path(r"/a\134b"), r"/a\b");
        assert_eq!(super::unescape_mount_path("/plain"), "/plain");
    }
}
