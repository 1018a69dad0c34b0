//! Links WinFsp's calls (Windows) to [`SnapshotFs`]: paths are resolved by looking up
//! each component, attributes become `FileInfo`, listings fill WinFsp's directory buffer,
//! and the volume is read-only, so Windows refuses every change before it reaches here.
//!
//! Written against the `winfsp` crate's documented API (0.12); it cannot be built on the
//! Linux machines this project is developed on. Everything it calls is tested there.

use std::ffi::{c_void, OsString};
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo,
    VolumeInfo, WideNameInfo,
};
use winfsp::host::{FileSystemHost, VolumeParams};
use winfsp::{FspError, U16CStr};

use crate::{Attr, FileKind, FsError, Ino, SnapshotFs, ROOT};

// NTSTATUS values (ntstatus.h), as WinFsp expects them.
const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
const STATUS_OBJECT_PATH_NOT_FOUND: i32 = 0xC000_003A_u32 as i32;
const STATUS_NOT_A_DIRECTORY: i32 = 0xC000_0103_u32 as i32;
const STATUS_FILE_IS_A_DIRECTORY: i32 = 0xC000_00BA_u32 as i32;
const STATUS_INVALID_HANDLE: i32 = 0xC000_0008_u32 as i32;
const STATUS_IO_DEVICE_ERROR: i32 = 0xC000_0185_u32 as i32;
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
const STATUS_END_OF_FILE: i32 = 0xC000_0011_u32 as i32;

const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;

/// 100-nanosecond intervals between 1601-01-01 (Windows) and 1970-01-01 (Unix).
const EPOCH_DIFFERENCE: i64 = 116_444_736_000_000_000;

fn status(e: FsError) -> FspError {
    FspError::NTSTATUS(match e {
        FsError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        FsError::NotADirectory => STATUS_NOT_A_DIRECTORY,
        FsError::IsADirectory => STATUS_FILE_IS_A_DIRECTORY,
        FsError::NotASymlink => STATUS_INVALID_PARAMETER,
        FsError::BadHandle => STATUS_INVALID_HANDLE,
        FsError::Io => STATUS_IO_DEVICE_ERROR,
    })
}

fn filetime(unix_nanos: i64) -> u64 {
    (unix_nanos / 100 + EPOCH_DIFFERENCE).max(0) as u64
}

fn fill(info: &mut FileInfo, a: &Attr) {
    info.file_attributes = FILE_ATTRIBUTE_READONLY
        | if a.kind == FileKind::Dir {
            FILE_ATTRIBUTE_DIRECTORY
        } else {
            0
        };
    info.reparse_tag = 0;
    info.file_size = a.size;
    info.allocation_size = a.size.div_ceil(4096) * 4096;
    info.creation_time = filetime(a.mtime);
    info.last_access_time = filetime(a.atime);
    info.last_write_time = filetime(a.mtime);
    info.change_time = filetime(a.ctime);
    info.index_number = a.ino;
    info.hard_links = 0;
    info.ea_size = 0;
}

/// One open file or folder.
pub struct Handle {
    ino: Ino,
    kind: FileKind,
    /// The view's handle of an open file.
    fh: Option<u64>,
    /// A folder's listing, filled on the first read of it.
    dir: DirBuffer,
}

struct Adapter {
    fs: SnapshotFs,
}

impl Adapter {
    /// `\by-date\2026-11-22 02.00.05 laptop\home\...` to an inode, one lookup per component.
    fn resolve(&self, path: &U16CStr) -> winfsp::Result<Attr> {
        let wide = path.as_slice();
        let mut attr = self.fs.getattr(ROOT).map_err(status)?;
        let parts: Vec<&[u16]> = wide
            .split(|&c| c == b'\\' as u16)
            .filter(|p| !p.is_empty())
            .collect();
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.into_iter().enumerate() {
            let name = OsString::from_wide(part);
            let name = name.to_string_lossy();
            attr = self.fs.lookup(attr.ino, name.as_bytes()).map_err(|e| {
                if e == FsError::NotFound && i < last {
                    FspError::NTSTATUS(STATUS_OBJECT_PATH_NOT_FOUND)
                } else {
                    status(e)
                }
            })?;
        }
        Ok(attr)
    }
}

impl FileSystemContext for Adapter {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        _security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let a = self.resolve(file_name)?;
        let mut info = FileInfo::default();
        fill(&mut info, &a);
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: 0,
            attributes: info.file_attributes,
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        _create_options: u32,
        _granted_access: u32,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        let a = self.resolve(file_name)?;
        fill(file_info.as_mut(), &a);
        let fh = match a.kind {
            FileKind::File => Some(self.fs.open(a.ino).map_err(status)?),
            _ => None,
        };
        Ok(Handle {
            ino: a.ino,
            kind: a.kind,
            fh,
            dir: DirBuffer::new(),
        })
    }

    fn close(&self, context: Handle) {
        if let Some(fh) = context.fh {
            self.fs.release(fh);
        }
    }

    fn get_file_info(&self, context: &Handle, file_info: &mut FileInfo) -> winfsp::Result<()> {
        let a = self.fs.getattr(context.ino).map_err(status)?;
        fill(file_info, &a);
        Ok(())
    }

    fn read_directory(
        &self,
        context: &Handle,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        if context.kind != FileKind::Dir {
            return Err(status(FsError::NotADirectory));
        }
        if marker.is_none() {
            // First read of this listing: fill the buffer WinFsp pages through.
            let lock = context.dir.acquire(true, None)?;
            let mut failed = None;
            self.fs
                .readdir(context.ino, 0, |a, name, _| {
                    let mut entry: DirInfo<255> = DirInfo::new();
                    fill(entry.file_info_mut(), a);
                    let name = String::from_utf8_lossy(name).into_owned();
                    if let Err(e) = entry.set_name(name.as_str()) {
                        failed = Some(e);
                        return true;
                    }
                    if let Err(e) = lock.write(&mut entry) {
                        failed = Some(e);
                        return true;
                    }
                    false
                })
                .map_err(status)?;
            drop(lock);
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(context.dir.read(marker, buffer))
    }

    fn read(&self, context: &Handle, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
        let data = match (context.kind, context.fh) {
            (FileKind::File, Some(fh)) => self
                .fs
                .read(fh, offset, buffer.len().min(u32::MAX as usize) as u32)
                .map_err(status)?
                .to_vec(),
            // Windows sees a symbolic link of a Unix snapshot as a small file holding
            // its target.
            (FileKind::Symlink, _) => {
                let t = self.fs.readlink(context.ino).map_err(status)?;
                t.get(offset as usize..).unwrap_or_default().to_vec()
            }
            _ => return Err(status(FsError::IsADirectory)),
        };
        if data.is_empty() && !buffer.is_empty() {
            return Err(FspError::NTSTATUS(STATUS_END_OF_FILE));
        }
        let n = data.len().min(buffer.len());
        buffer[..n].copy_from_slice(&data[..n]);
        Ok(n as u32)
    }

    fn get_volume_info(&self, out_volume_info: &mut VolumeInfo) -> winfsp::Result<()> {
        out_volume_info.total_size = self.fs.stored_bytes();
        out_volume_info.free_size = 0;
        out_volume_info.set_volume_label("Backazon");
        Ok(())
    }
}

/// Mounts `fs` read-only at `mountpoint` (a drive letter such as `B:`, or an empty
/// folder) and serves it until the process ends; WinFsp removes the drive then, also
/// when the process is stopped with Ctrl-C.
pub fn serve(fs: SnapshotFs, mountpoint: &Path) -> Result<(), String> {
    winfsp::winfsp_init().map_err(|e| format!("WinFsp is not installed or not usable: {e:?}"))?;
    let mut params = VolumeParams::new();
    params
        .filesystem_name("backazon")
        .read_only_volume(true)
        .case_sensitive_search(true)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .persistent_acls(false)
        .max_component_length(255)
        .sector_size(4096)
        .sectors_per_allocation_unit(1)
        // Snapshots never change: let the Windows cache manager keep what it read.
        .file_info_timeout(u32::MAX);
    let mut host = FileSystemHost::new(params, Adapter { fs })
        .map_err(|e| format!("cannot create the WinFsp file system: {e:?}"))?;
    let point: Vec<u16> = mountpoint.as_os_str().encode_wide().collect();
    host.mount(String::from_utf16_lossy(&point))
        .map_err(|e| format!("cannot mount at {}: {e:?}", mountpoint.display()))?;
    host.start()
        .map_err(|e| format!("cannot start serving {}: {e:?}", mountpoint.display()))?;
    eprintln!(
        "snapshots mounted at {} (read-only); Ctrl-C unmounts",
        mountpoint.display()
    );
    loop {
        std::thread::park();
    }
}
