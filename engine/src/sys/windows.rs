//! Windows: names are UTF-16 (stored as UTF-8, or WTF-8 when they hold an unpaired
//! surrogate: `crate::names`), paths are recorded as `/C/Users/alice` (restic's form),
//! and a node keeps the file attributes and the creation, modification and access times
//! at Windows' 100 ns. Restore sets times and attributes in one call through a handle
//! opened on the entry itself (a link is never followed).
//!
//! What Windows has no equivalent for: owners and modes. A node made here has owner 0
//! and a mode read off its attributes (read-only files 0444, other files 0644, folders
//! 0755), so it shows sensibly on Unix; restoring a Unix node here sets no owner, and
//! marks the file read-only when its mode has no owner-write bit. There is no change
//! time and no inode to be had without opening every file, so the next backup
//! trusts size and modification time (as restic does here).

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::{Component, Path, PathBuf, Prefix};

use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
use windows_sys::Win32::Storage::FileSystem::{
    FileBasicInfo, SetFileInformationByHandle, FILE_ATTRIBUTE_ARCHIVE, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_NOT_CONTENT_INDEXED,
    FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_SYSTEM, FILE_ATTRIBUTE_TEMPORARY, FILE_BASIC_INFO,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_FLAG_SEQUENTIAL_SCAN,
    FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::RecordedStep;
use crate::error::{Error, Result};
use crate::names;
use crate::tree::{Name, Node, NodeKind};

/// Windows refuses some names: they are restored escaped (`crate::names`).
pub const NAME_RULE: fn(&[u8]) -> Option<Vec<u8>> = names::windows_escape;

/// Paths and patterns may use `\` (and drive letters); globs have no escape character.
pub const WINDOWS_PATHS: bool = true;

/// The attributes a restore sets; the others (directory, reparse point, compressed,
/// encrypted, sparse) describe how a file is stored and are the file system's to set.
const RESTORED_ATTRIBUTES: u32 = FILE_ATTRIBUTE_READONLY
    | FILE_ATTRIBUTE_HIDDEN
    | FILE_ATTRIBUTE_SYSTEM
    | FILE_ATTRIBUTE_ARCHIVE
    | FILE_ATTRIBUTE_TEMPORARY
    | FILE_ATTRIBUTE_NOT_CONTENT_INDEXED;

pub fn name_of(os: &OsStr) -> Name {
    match os.to_str() {
        Some(s) => Name(s.as_bytes().to_vec()),
        None => Name(names::from_utf16(&os.encode_wide().collect::<Vec<_>>())),
    }
}

/// The OS name for a stored name; `None` for bytes that are not text (only Unix makes
/// those), which the restore escapes first.
pub fn os_name(stored: &[u8]) -> Option<Cow<'_, OsStr>> {
    if let Ok(s) = std::str::from_utf8(stored) {
        return Some(Cow::Borrowed(OsStr::new(s)));
    }
    let wide = names::to_utf16(stored)?;
    Some(Cow::Owned(OsString::from_wide(&wide)))
}

/// `C:\Users\alice` as `C`, `Users`, `alice`; a share `\\nas\docs\x` as `UNC`, `nas`,
/// `docs`, `x`.
pub fn recorded_components(abs: &Path) -> Result<Vec<RecordedStep>> {
    let mut out = Vec::new();
    let mut here = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::Prefix(p) => match p.kind() {
                Prefix::Disk(d) | Prefix::VerbatimDisk(d) => {
                    let drive = (d as char).to_ascii_uppercase();
                    here = PathBuf::from(format!("{drive}:\\"));
                    out.push(RecordedStep {
                        name: vec![drive as u8],
                        os_path: Some(here.clone()),
                    });
                }
                Prefix::UNC(server, share) | Prefix::VerbatimUNC(server, share) => {
                    here = PathBuf::from(r"\\").join(server).join(share);
                    here.push("");
                    out.push(RecordedStep {
                        name: b"UNC".to_vec(),
                        os_path: None,
                    });
                    out.push(RecordedStep {
                        name: name_of(server).0,
                        os_path: None,
                    });
                    out.push(RecordedStep {
                        name: name_of(share).0,
                        os_path: Some(here.clone()),
                    });
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "{}: give a path on a drive (C:\\...) or a share (\\\\server\\share\\...)",
                        abs.display()
                    )))
                }
            },
            Component::Normal(n) => {
                here.push(n);
                out.push(RecordedStep {
                    name: name_of(n).0,
                    os_path: Some(here.clone()),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The bytes globs are matched against: the path as the snapshot records it.
pub fn match_path(path: &Path) -> Cow<'_, [u8]> {
    let mut out = Vec::with_capacity(path.as_os_str().len() + 2);
    for step in recorded_components(path).unwrap_or_default() {
        out.push(b'/');
        out.extend_from_slice(&step.name);
    }
    Cow::Owned(out)
}

/// 100 ns intervals since 1601 (FILETIME), as nanoseconds since 1970; 0 stays 0 (unknown).
fn filetime_to_ns(ft: u64) -> i64 {
    if ft == 0 {
        return 0;
    }
    const EPOCH_DIFF: i64 = 116_444_736_000_000_000;
    (ft as i64 - EPOCH_DIFF).saturating_mul(100)
}

fn ns_to_filetime(ns: i64) -> i64 {
    const EPOCH_DIFF: i64 = 116_444_736_000_000_000;
    ns.div_euclid(100) + EPOCH_DIFF
}

/// A node from a directory listing's or `symlink_metadata`'s data.
pub fn node_from_metadata(name: Name, md: &Metadata) -> Node {
    let attributes = md.file_attributes();
    let ft = md.file_type();
    let kind = if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_dir() {
        NodeKind::Dir
    } else {
        NodeKind::File
    };
    let mode = match kind {
        NodeKind::Dir => 0o755,
        NodeKind::Symlink => 0o777,
        _ if attributes & FILE_ATTRIBUTE_READONLY != 0 => 0o444,
        _ => 0o644,
    };
    let mtime = filetime_to_ns(md.last_write_time());
    Node {
        kind,
        mode,
        size: if kind == NodeKind::File { md.len() } else { 0 },
        mtime,
        // As on Unix: listing a folder moves its access time.
        atime: if kind == NodeKind::Dir {
            mtime
        } else {
            filetime_to_ns(md.last_access_time())
        },
        created: filetime_to_ns(md.creation_time()),
        attributes,
        // Owner, change time, inode and links stay 0: Windows has none to give here.
        ..Node::layout_dir(name)
    }
}

/// No file identity without opening the file: `None`.
pub fn file_id(_: &Metadata) -> Option<(u64, u64)> {
    None
}

/// A symlink's or junction's target, as Windows reports it.
pub fn read_link(path: &Path) -> io::Result<Name> {
    Ok(name_of(fs::read_link(path)?.as_os_str()))
}

/// std opens with every sharing mode, so a backup never stops other programs from
/// writing or deleting; a file opened elsewhere without read sharing fails here with a
/// sharing violation, which the backup reports and skips.
pub fn open_for_backup(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_SEQUENTIAL_SCAN)
        .open(path)
}

pub fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::windows::fs::FileExt;
    f.seek_read(buf, offset)
}

/// Windows' cache manager writes back on its own.
pub fn start_writeback(_: &File) {}

/// Windows' cache manager reads ahead on its own.
pub fn read_ahead(_: &File, _: u64, _: u64) {}

pub fn drop_cached_pages(_: &File) {}

/// Windows' heap gives freed memory back on its own.
pub fn give_back_freed_memory() {}

/// Makes a folder and its missing parents. Windows gives a new folder its parent's
/// permissions; the user's profile folders (where the cache and state live) are the
/// user's alone.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Files are created with the folder's inherited permissions (see above).
pub fn private_file(o: &mut OpenOptions) -> &mut OpenOptions {
    o
}

/// Bytes the volume holding `path` has room for (for this user); NTFS has no file limit
/// worth checking.
pub fn free_space(path: &Path) -> Option<(u64, Option<u64>)> {
    use windows_sys::Win32::Storage::FileSystem::GetDiskFreeSpaceExW;
    let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    let mut avail = 0u64;
    // SAFETY: a NUL-terminated wide path and valid out-pointers (the others may be null).
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            wide.as_ptr(),
            &mut avail,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some((avail, None))
}

/// `%LOCALAPPDATA%\backazon\cache`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("LOCALAPPDATA").map(|d| PathBuf::from(d).join("backazon").join("cache"))
}

pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // SAFETY: OpenProcess returns a handle we close, or null; GetExitCodeProcess writes
    // one u32.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            // No such process, or one we may not query (which exists).
            return io::Error::last_os_error().raw_os_error() != Some(87);
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code) != 0;
        CloseHandle(h);
        !ok || code == STILL_ACTIVE as u32
    }
}

/// Windows files have ACLs, not Unix owners: none are set.
pub fn can_restore_owners() -> bool {
    false
}

pub fn user_fallback() -> String {
    "user".into()
}

/// A new file for restored contents: `CREATE_NEW` fails on anything already there,
/// a link included, and never follows one.
pub fn create_file(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// A file this restore created, opened again for writing: never through a link (the
/// reparse point itself would be opened, and it is no file this restore made).
pub fn reopen_for_restore(path: &Path) -> io::Result<File> {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    if f.metadata()?.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a link replaced the file being restored",
        ));
    }
    Ok(f)
}

/// Writes all of `buf` at `offset` (several threads write one file at once).
pub fn write_at(f: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The attributes a node is restored with: its own (from Windows), or read-only for a
/// Unix file without an owner-write bit.
fn attributes_of(node: &Node) -> u32 {
    let a = if node.attributes != 0 {
        node.attributes & RESTORED_ATTRIBUTES
    } else if node.kind == NodeKind::File && node.mode & 0o200 == 0 {
        FILE_ATTRIBUTE_READONLY
    } else {
        0
    };
    // Zero would mean "leave as they are"; NORMAL means none.
    if a == 0 {
        FILE_ATTRIBUTE_NORMAL
    } else {
        a
    }
}

/// Times and attributes in one call through an open handle.
fn set_basic_info(f: &File, node: &Node) -> io::Result<()> {
    let info = FILE_BASIC_INFO {
        // Zero leaves a time as it is: a Unix node has no creation time.
        CreationTime: if node.created != 0 {
            ns_to_filetime(node.created)
        } else {
            0
        },
        LastAccessTime: ns_to_filetime(node.atime),
        LastWriteTime: ns_to_filetime(node.mtime),
        ChangeTime: 0,
        FileAttributes: attributes_of(node),
    };
    // SAFETY: the handle is open with FILE_WRITE_ATTRIBUTES; info is a FILE_BASIC_INFO
    // of the size passed.
    let ok = unsafe {
        SetFileInformationByHandle(
            f.as_raw_handle(),
            FileBasicInfo,
            (&info as *const FILE_BASIC_INFO).cast(),
            std::mem::size_of::<FILE_BASIC_INFO>() as u32,
        )
    };
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn apply_file_metadata(f: &File, node: &Node, _owners: bool) -> io::Result<()> {
    set_basic_info(f, node)
}

/// Opens an entry itself (a link as the link, never its target) to set its times and
/// attributes.
fn open_entry(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// A restored folder's times and attributes, through the folder itself: if something
/// replaced it with a link, that is refused instead of followed.
pub fn apply_dir_metadata(path: &Path, node: &Node, _owners: bool) -> io::Result<()> {
    let dir = open_entry(path)?;
    let md = dir.metadata()?;
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no longer a folder (something replaced it); left alone",
        ));
    }
    set_basic_info(&dir, node)
}

/// A symlink at `path` (nothing may be there). A link made on Windows keeps its kind
/// (file or folder link, from its attributes); a Unix link's `/` become `\`, and it is
/// a folder link when its target is a folder. Windows needs administrator rights or
/// Developer Mode to make links.
pub fn create_symlink(path: &Path, node: &Node, _owners: bool) -> io::Result<()> {
    let stored = node.target.as_ref().map(|t| t.0.as_slice()).unwrap_or(b"");
    let from_windows = node.attributes != 0;
    let mut target = match os_name(stored) {
        Some(t) => PathBuf::from(t.into_owned()),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "its target is not text Windows can hold",
            ))
        }
    };
    if !from_windows {
        target = PathBuf::from(target.to_string_lossy().replace('/', "\\"));
    }
    let is_dir = if from_windows {
        node.attributes & FILE_ATTRIBUTE_DIRECTORY != 0
    } else {
        path.parent()
            .map(|p| p.join(&target))
            .is_some_and(|t| t.is_dir())
    };
    let made = if is_dir {
        std::os::windows::fs::symlink_dir(&target, path)
    } else {
        std::os::windows::fs::symlink_file(&target, path)
    };
    made.map_err(|e| {
        if e.raw_os_error() == Some(1314) {
            io::Error::new(
                e.kind(),
                "making links on Windows needs administrator rights or Developer Mode",
            )
        } else {
            e
        }
    })?;
    // Wine reports links made that it did not make: believe only what is there.
    let there = fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if !there {
        let _ = fs::remove_file(path);
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this system said the link was made, but it is not there (Wine cannot make links)",
        ));
    }
    set_basic_info(&open_entry(path)?, node)
}

/// Fifos, sockets and device files exist only on Unix.
pub fn create_special(_: &Path, _: &Node, _: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "fifos, sockets and device files exist only on Unix",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_recorded_as_restic_does() {
        let steps = recorded_components(Path::new(r"C:\Users\alice")).unwrap();
        let names: Vec<_> = steps.iter().map(|s| s.name.clone()).collect();
        assert_eq!(
            names,
            vec![b"C".to_vec(), b"Users".to_vec(), b"alice".to_vec()]
        );
        assert_eq!(steps[0].os_path.as_deref(), Some(Path::new(r"C:\")));
        assert_eq!(
            steps[2].os_path.as_deref(),
            Some(Path::new(r"C:\Users\alice"))
        );
        assert_eq!(
            super::super::recorded_path(Path::new(r"d:\x")).unwrap(),
            "/D/x"
        );
        let share = recorded_components(Path::new(r"\\nas\docs\x")).unwrap();
        let names: Vec<_> = share.iter().map(|s| s.name.clone()).collect();
        assert_eq!(
            names,
            vec![
                b"UNC".to_vec(),
                b"nas".to_vec(),
                b"docs".to_vec(),
                b"x".to_vec()
            ]
        );
        assert_eq!(share[1].os_path, None);
        assert_eq!(share[2].os_path.as_deref(), Some(Path::new(r"\\nas\docs\")));
        assert_eq!(
            &*match_path(Path::new(r"C:\Users\a b\x.tmp")),
            b"/C/Users/a b/x.tmp"
        );
    }

    #[test]
    fn filetimes_keep_100ns() {
        let ft = 133_000_000_000_000_123u64;
        assert_eq!(ns_to_filetime(filetime_to_ns(ft)) as u64, ft);
        assert_eq!(filetime_to_ns(116_444_736_000_000_000), 0);
        assert_eq!(filetime_to_ns(116_444_736_000_000_001), 100);
    }
}

/// Backup and restore of Windows metadata through the engine, on this system's files.
#[cfg(test)]
mod round_trip {
    use std::fs::{self, FileTimes};
    use std::os::windows::fs::{FileTimesExt, MetadataExt};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use windows_sys::Win32::Storage::FileSystem::SetFileAttributesW;

    use super::*;
    use crate::backup::{backup, BackupOptions, BackupProgress, ParentChoice};
    use crate::restore::{restore, RestoreOptions, RestoreProgress};
    use crate::{LocalBackend, Repository};

    fn set_attributes(path: &Path, attributes: u32) {
        let wide: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
        // SAFETY: a NUL-terminated path.
        assert_ne!(unsafe { SetFileAttributesW(wide.as_ptr(), attributes) }, 0);
    }

    /// 2001-02-03 04:05:06 and some 100 ns steps past a second.
    fn at(extra_100ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(981_173_106)
            + Duration::from_nanos(extra_100ns * 100)
    }

    fn filetime_of(t: SystemTime) -> u64 {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        ns_to_filetime(d.as_nanos() as i64) as u64
    }

    #[test]
    fn attributes_and_times_at_100ns_come_back() {
        let dir = std::env::temp_dir().join(format!("bz-winmeta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let src = dir.join("src");
        fs::create_dir_all(src.join("folder")).unwrap();
        let files = [
            ("plain.txt", FILE_ATTRIBUTE_ARCHIVE),
            ("hidden.txt", FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_ARCHIVE),
            ("system.dat", FILE_ATTRIBUTE_SYSTEM),
            ("readonly.txt", FILE_ATTRIBUTE_READONLY),
        ];
        for (i, (name, attributes)) in files.iter().enumerate() {
            let p = src.join(name);
            fs::write(&p, format!("file {i}")).unwrap();
            let f = fs::File::options().write(true).open(&p).unwrap();
            f.set_times(
                FileTimes::new()
                    .set_modified(at(1_234_567 + i as u64))
                    .set_accessed(at(7_654_321 + i as u64))
                    .set_created(at(11 + i as u64)),
            )
            .unwrap();
            drop(f);
            set_attributes(&p, *attributes);
        }
        let repo_dir = dir.join("repo");
        Repository::init(Arc::new(LocalBackend::new(&repo_dir)), b"pw", 1 << 20).unwrap();
        let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), b"pw").unwrap();
        let mut opts = BackupOptions::new(vec![src.clone()]);
        opts.parent = ParentChoice::None;
        let r = backup(&repo, &opts, &BackupProgress::new(|_| {})).unwrap();
        assert_eq!(r.snapshot.snapshot.summary.errors, 0);
        let index = repo.load_index().unwrap().index;
        let recorded = super::super::recorded_path(&src).unwrap();
        let target = dir.join("restored");
        restore(
            &repo,
            &index,
            &r.snapshot.snapshot.tree,
            &recorded,
            &RestoreOptions::new(target.clone()),
            &RestoreProgress::new(|m| panic!("{m}")),
        )
        .unwrap();
        for (name, attributes) in files {
            let a = fs::metadata(src.join(name)).unwrap();
            let b = fs::metadata(target.join(name)).unwrap();
            assert_eq!(
                a.file_attributes() & attributes,
                attributes,
                "{name}: as set"
            );
            assert_eq!(
                b.file_attributes() & RESTORED_ATTRIBUTES,
                a.file_attributes() & RESTORED_ATTRIBUTES,
                "{name}: attributes"
            );
            assert_eq!(b.last_write_time(), a.last_write_time(), "{name}: modified");
            // Reading the file for the backup moved the original's access time; the
            // restored one has the time it had when it was read, to the 100 ns.
            let i = files.iter().position(|(n, _)| *n == name).unwrap() as u64;
            assert_eq!(
                b.last_access_time(),
                filetime_of(at(7_654_321 + i)),
                "{name}: accessed"
            );
            assert_eq!(
                b.last_write_time(),
                filetime_of(at(1_234_567 + i)),
                "{name}: modified"
            );
            assert_eq!(
                fs::read(target.join(name)).unwrap(),
                fs::read(src.join(name)).unwrap()
            );
            // Creation times are recorded as Windows reports them, and set as recorded.
            // (Under Wine a file's creation time is its modification time: Linux has no
            // birth time to set, so only real Windows shows a distinct one coming back.)
            let node = node_from_metadata(Name::default(), &a);
            assert_eq!(node.created, filetime_to_ns(a.creation_time()));
            assert_eq!(b.creation_time(), a.creation_time(), "{name}: created");
        }
        let ro = fs::metadata(target.join("readonly.txt")).unwrap();
        assert!(ro.permissions().readonly());
        for (name, _) in files {
            let mut p = fs::metadata(target.join(name)).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            fs::set_permissions(target.join(name), p.clone()).unwrap();
            fs::set_permissions(src.join(name), p).unwrap();
        }
        drop(repo);
        fs::remove_dir_all(&dir).unwrap();
    }
}
