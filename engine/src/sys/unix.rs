//! Unix (Linux, macOS): names are bytes, metadata is `lstat`'s, and restore applies
//! owner, mode and times through open descriptors or without following links.

use std::borrow::Cow;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::RecordedStep;
use crate::error::Result;
use crate::tree::{Name, Node, NodeKind};

/// Unix takes any name a snapshot can hold (bytes without `/` and NUL).
pub const NAME_RULE: fn(&[u8]) -> Option<Vec<u8>> = crate::names::keep;

/// Paths and patterns use `/`; `\` is an ordinary character (a glob escape).
pub const WINDOWS_PATHS: bool = false;

pub fn name_of(os: &OsStr) -> Name {
    Name(os.as_bytes().to_vec())
}

/// The OS name for a stored name (every stored name is a valid Unix name).
pub fn os_name(stored: &[u8]) -> Option<Cow<'_, OsStr>> {
    Some(Cow::Borrowed(OsStr::from_bytes(stored)))
}

/// The bytes globs are matched against: the path itself.
pub fn match_path(path: &Path) -> Cow<'_, [u8]> {
    Cow::Borrowed(path.as_os_str().as_bytes())
}

/// `/home/alice` is recorded as `home`, `alice`, each folder its own OS path.
pub fn recorded_components(abs: &Path) -> Result<Vec<RecordedStep>> {
    let mut here = PathBuf::from("/");
    let mut out = Vec::new();
    for c in abs.components() {
        if let Component::Normal(n) = c {
            here.push(n);
            out.push(RecordedStep {
                name: n.as_bytes().to_vec(),
                os_path: Some(here.clone()),
            });
        }
    }
    Ok(out)
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node from `lstat` data; content, sub-tree and symlink target are filled in later.
pub fn node_from_metadata(name: Name, md: &Metadata) -> Node {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::Chardev
    } else if ft.is_block_device() {
        NodeKind::Blockdev
    } else {
        NodeKind::File
    };
    Node {
        name,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == NodeKind::File { md.size() } else { 0 },
        mtime: nanos(md.mtime(), md.mtime_nsec()),
        // Listing a folder moves its atime; keeping it would make every unchanged
        // folder a new tree. Folders record their mtime as atime instead.
        atime: if kind == NodeKind::Dir {
            nanos(md.mtime(), md.mtime_nsec())
        } else {
            nanos(md.atime(), md.atime_nsec())
        },
        ctime: nanos(md.ctime(), md.ctime_nsec()),
        created: 0,
        attributes: 0,
        inode: md.ino(),
        device: md.dev(),
        links: if kind == NodeKind::Dir { 0 } else { md.nlink() },
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
            md.rdev()
        } else {
            0
        },
        target: None,
        content: Vec::new(),
        subtree: None,
    }
}

/// The identity of a file (device, inode), to tell one file from another.
pub fn file_id(md: &Metadata) -> Option<(u64, u64)> {
    Some((md.dev(), md.ino()))
}

pub fn read_link(path: &Path) -> io::Result<Name> {
    Ok(name_of(fs::read_link(path)?.as_os_str()))
}

pub fn open_for_backup(path: &Path) -> io::Result<File> {
    // O_NOATIME keeps backups from touching access times; only the owner (or root) may
    // ask for it, so fall back to a plain open.
    #[cfg(target_os = "linux")]
    let noatime = libc::O_NOATIME;
    #[cfg(not(target_os = "linux"))]
    let noatime = 0;
    OpenOptions::new()
        .read(true)
        .custom_flags(noatime)
        .open(path)
        .or_else(|_| File::open(path))
}

pub fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    f.read_at(buf, offset)
}

/// Asks the kernel to start writing a file back now, without waiting for it.
pub fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: f is an open file; the call only schedules writeback.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// Asks the kernel to start reading `len` bytes at `offset` into its cache (0: all).
pub fn read_ahead(f: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: f is an open file; the call is advice about its pages.
    unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

/// Lets the kernel drop a synced file's pages from its cache.
pub fn drop_cached_pages(f: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: f is an open file; the call is advice about its cached pages.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// `$XDG_CACHE_HOME/backazon`, else `~/.cache/backazon`.
/// Makes a folder (and its missing parents) that only its owner may enter (0700): a
/// repository, the cache, the state folder. An existing folder is left as it is.
/// Returns memory this process freed to the OS. glibc keeps freed memory in each
/// thread's arena for reuse, which after a burst of work shows as tens of MiB of
/// resident memory that nothing uses.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Files created with these options only their owner may read (0600).
pub fn private_file(o: &mut OpenOptions) -> &mut OpenOptions {
    o.mode(0o600)
}

/// Bytes and files the file system holding `path` has room for (unprivileged).
pub fn free_space(path: &Path) -> Option<(u64, Option<u64>)> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let bytes = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    // File systems without an inode limit (btrfs, some FUSE ones) report 0 files.
    let files = (st.f_files > 0).then_some(st.f_favail as u64);
    Some((bytes, files))
}

pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("backazon"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("backazon"))
}

pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Owners can be given away only by root.
pub fn can_restore_owners() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn user_fallback() -> String {
    // SAFETY: getuid has no preconditions.
    format!("uid{}", unsafe { libc::getuid() })
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL"))
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new file for restored contents: never an existing one, never through a link.
/// Made with the node's permission bits (and the owner's write bit, so that it can be
/// opened again to go on writing): for most files the final mode, which then needs no
/// `fchmod` of its own (`apply_file_metadata`).
pub fn create_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(creation_mode(mode))
        .open(path)
}

fn creation_mode(mode: u32) -> u32 {
    (mode | 0o200) & 0o777
}

/// The process's umask, read once: Linux shows it in /proc/self/status (reading it with
/// umask(2) means setting it, which other threads could see). None where it cannot be
/// read: then every restored file gets its mode set after it is written.
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// The effective user and group, asked once: restoring a file compared them with its
/// owners, two system calls per file.
fn effective_ids() -> (u32, u32) {
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    // SAFETY: geteuid and getegid have no preconditions.
    *IDS.get_or_init(|| unsafe { (libc::geteuid(), libc::getegid()) })
}

/// A file this restore created, opened again for writing: never through a link.
pub fn reopen_for_restore(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Writes all of `buf` at `offset`, not moving the file's position (several threads
/// write one file at once).
pub fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    f.write_all_at(buf, offset)
}

/// Owner, mode and times through an open descriptor: no path lookups. Owner first,
/// since changing it clears setuid/setgid bits.
/// `mode_now`: the mode the file or folder already has, when known.
fn apply_through_fd(
    fd: libc::c_int,
    node: &Node,
    owners: bool,
    mode_now: Option<u32>,
) -> io::Result<()> {
    // SAFETY (all three): fd is an open descriptor; the arguments are plain values.
    unsafe {
        let chown = owners && (node.uid, node.gid) != effective_ids();
        if chown {
            check(libc::fchown(fd, node.uid, node.gid))?;
        }
        if chown || mode_now != Some(node.mode & 0o7777) {
            check(libc::fchmod(fd, node.mode as libc::mode_t))?;
        }
        let times = [timespec(node.atime), timespec(node.mtime)];
        check(libc::futimens(fd, times.as_ptr()))
    }
}

pub fn apply_file_metadata(f: &File, node: &Node, owners: bool) -> io::Result<()> {
    // Made by `create_file` with the node's mode, less the umask.
    let mode_now = umask().map(|u| creation_mode(node.mode) & !u);
    apply_through_fd(f.as_raw_fd(), node, owners, mode_now)
}

/// A restored folder's owner, mode and times, through the folder itself: if something
/// replaced it with a link, opening fails instead of following it.
pub fn apply_dir_metadata(path: &Path, node: &Node, owners: bool) -> io::Result<()> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)?;
    apply_through_fd(dir.as_raw_fd(), node, owners, None)
}

fn set_times_nofollow(path: &Path, node: &Node) -> io::Result<()> {
    let times = [timespec(node.atime), timespec(node.mtime)];
    let p = c_path(path)?;
    // SAFETY: p is a valid C string and times points to two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// A symlink at `path` (nothing may be there), with the link's own owner and times.
pub fn create_symlink(path: &Path, node: &Node, owners: bool) -> io::Result<()> {
    let target = node.target.as_ref().map(|t| t.0.as_slice()).unwrap_or(b"");
    std::os::unix::fs::symlink(OsStr::from_bytes(target), path)?;
    if owners {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    set_times_nofollow(path, node)
}

/// A fifo or device file at `path` (nothing may be there). Sockets are not made: a
/// socket is created by the program that listens on it.
pub fn create_special(path: &Path, node: &Node, owners: bool) -> io::Result<()> {
    let kind = match node.kind {
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Chardev => libc::S_IFCHR,
        NodeKind::Blockdev => libc::S_IFBLK,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a socket is made by the program that listens on it",
            ))
        }
    };
    let p = c_path(path)?;
    // SAFETY: p is a valid C string.
    check(unsafe {
        libc::mknod(
            p.as_ptr(),
            kind | node.mode as libc::mode_t,
            node.rdev as libc::dev_t,
        )
    })?;
    if owners {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode))?;
    set_times_nofollow(path, node)
}
