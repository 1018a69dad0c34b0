//! The snapshots as a Windows drive (or folder) through WinFsp: each call WinFsp makes
//! is answered from [`WinView`], and the volume is read-only, so every change is refused.
//!
//! How it reaches WinFsp: its DLL is loaded when `mount` runs, from WinFsp's install
//! folder (registry `HKLM\SOFTWARE\WOW6432Node\WinFsp`, `InstallDir`, then
//! `bin\winfsp-x64.dll`), as WinFsp's own `FspLoad` (winfsp/launch.h) does for languages
//! without delay-loading; the part of its API this needs is declared here, from
//! WinFsp's headers (fsctl.h, winfsp.h: layouts and sizes checked at compile time).
//! Why not the `winfsp` crate: its `winfsp-sys` builds only for MSVC targets and needs
//! libclang, and linking WinFsp's import library would stop backazon.exe from starting
//! on a machine without WinFsp. This way the exe starts everywhere, `mount` says what to
//! install when WinFsp is missing, and every callback below is an ordinary function that
//! the tests call as WinFsp would (under Wine, where WinFsp's driver cannot run).

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use windows_sys::Win32::Foundation::LocalFree;
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::GetSecurityDescriptorLength;
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryW};
use windows_sys::Win32::System::Registry::{RegGetValueW, HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ};

use crate::winview::{attributes, times, Listing, Missing, WinView};
use crate::{Attr, FileKind, FsError};

pub type NtStatus = i32;

// NTSTATUS values (ntstatus.h).
pub const STATUS_SUCCESS: NtStatus = 0;
pub const STATUS_BUFFER_OVERFLOW: NtStatus = 0x8000_0005_u32 as i32;
pub const STATUS_INVALID_DEVICE_REQUEST: NtStatus = 0xC000_0010_u32 as i32;
pub const STATUS_END_OF_FILE: NtStatus = 0xC000_0011_u32 as i32;
pub const STATUS_OBJECT_NAME_NOT_FOUND: NtStatus = 0xC000_0034_u32 as i32;
pub const STATUS_OBJECT_PATH_NOT_FOUND: NtStatus = 0xC000_003A_u32 as i32;
pub const STATUS_MEDIA_WRITE_PROTECTED: NtStatus = 0xC000_00A2_u32 as i32;
pub const STATUS_FILE_IS_A_DIRECTORY: NtStatus = 0xC000_00BA_u32 as i32;
pub const STATUS_NOT_A_DIRECTORY: NtStatus = 0xC000_0103_u32 as i32;
pub const STATUS_IO_DEVICE_ERROR: NtStatus = 0xC000_0185_u32 as i32;
pub const STATUS_INVALID_HANDLE: NtStatus = 0xC000_0008_u32 as i32;
pub const STATUS_INTERNAL_ERROR: NtStatus = 0xC000_00E5_u32 as i32;

/// NtCreateFile's CreateOptions that matter here.
pub const FILE_DIRECTORY_FILE: u32 = 0x1;
pub const FILE_NON_DIRECTORY_FILE: u32 = 0x40;

/// FSP_FSCTL_VOLUME_PARAMS (fsctl.h), version 1.
#[repr(C)]
pub struct VolumeParams {
    pub version: u16,
    pub sector_size: u16,
    pub sectors_per_allocation_unit: u16,
    pub max_component_length: u16,
    pub volume_creation_time: u64,
    pub volume_serial_number: u32,
    pub transact_timeout: u32,
    pub irp_timeout: u32,
    pub irp_capacity: u32,
    pub file_info_timeout: u32,
    /// CaseSensitiveSearch (bit 0) to KmReservedFlags (bit 31): see [`flags`].
    pub flags: u32,
    pub prefix: [u16; 192],
    pub file_system_name: [u16; 16],
    /// VolumeInfoTimeoutValid (bit 0), DirInfoTimeoutValid, SecurityTimeoutValid, ...
    pub flags1: u32,
    pub volume_info_timeout: u32,
    pub dir_info_timeout: u32,
    pub security_timeout: u32,
    pub stream_info_timeout: u32,
    pub ea_timeout: u32,
    pub fsext_control_code: u32,
    pub reserved32: [u32; 1],
    pub reserved64: [u64; 2],
}
const _: () = assert!(std::mem::size_of::<VolumeParams>() == 504);

/// Bits of [`VolumeParams::flags`], in fsctl.h's order.
pub mod flags {
    pub const CASE_SENSITIVE_SEARCH: u32 = 1 << 0;
    pub const CASE_PRESERVED_NAMES: u32 = 1 << 1;
    pub const UNICODE_ON_DISK: u32 = 1 << 2;
    pub const PERSISTENT_ACLS: u32 = 1 << 3;
    pub const READ_ONLY_VOLUME: u32 = 1 << 9;
    pub const PASS_QUERY_DIRECTORY_FILE_NAME: u32 = 1 << 13;
    pub const UM_FILE_CONTEXT_IS_USER_CONTEXT2: u32 = 1 << 16;
    // flags1
    pub const VOLUME_INFO_TIMEOUT_VALID: u32 = 1 << 0;
    pub const DIR_INFO_TIMEOUT_VALID: u32 = 1 << 1;
    pub const SECURITY_TIMEOUT_VALID: u32 = 1 << 2;
}

/// FSP_FSCTL_VOLUME_INFO.
#[repr(C)]
pub struct VolumeInfo {
    pub total_size: u64,
    pub free_size: u64,
    pub volume_label_length: u16,
    pub volume_label: [u16; 32],
}
const _: () = assert!(std::mem::size_of::<VolumeInfo>() == 88);

/// FSP_FSCTL_FILE_INFO.
#[repr(C)]
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub file_attributes: u32,
    pub reparse_tag: u32,
    pub allocation_size: u64,
    pub file_size: u64,
    pub creation_time: u64,
    pub last_access_time: u64,
    pub last_write_time: u64,
    pub change_time: u64,
    pub index_number: u64,
    pub hard_links: u32,
    pub ea_size: u32,
}
const _: () = assert!(std::mem::size_of::<FileInfo>() == 72);

/// FSP_FSCTL_OPEN_FILE_INFO: what Open's FileInfo really points to.
#[repr(C)]
pub struct OpenFileInfo {
    pub file_info: FileInfo,
    pub normalized_name: *mut u16,
    /// In: the buffer's size in bytes; out: the name's.
    pub normalized_name_size: u16,
}

/// FSP_FSCTL_DIR_INFO, followed by the name (UTF-16, no terminator).
#[repr(C)]
pub struct DirInfo {
    /// Bytes of this record with its name.
    pub size: u16,
    pub file_info: FileInfo,
    pub next_offset_or_padding: [u64; 3],
}
const _: () = assert!(std::mem::size_of::<DirInfo>() == 104);

/// The head of FSP_FILE_SYSTEM (792 bytes on 64-bit): only `UserContext` is used here.
#[repr(C)]
pub struct FileSystem {
    pub version: u16,
    pub user_context: *mut c_void,
}

type Fs = *mut FileSystem;
type Ctx = *mut c_void;
type Wstr = *const u16;

/// FSP_FILE_SYSTEM_INTERFACE: 64 function pointers, in winfsp.h's order.
#[repr(C)]
pub struct Interface {
    pub get_volume_info: Option<unsafe extern "C" fn(Fs, *mut VolumeInfo) -> NtStatus>,
    pub set_volume_label: Option<unsafe extern "C" fn(Fs, Wstr, *mut VolumeInfo) -> NtStatus>,
    pub get_security_by_name:
        Option<unsafe extern "C" fn(Fs, Wstr, *mut u32, *mut c_void, *mut usize) -> NtStatus>,
    #[allow(clippy::type_complexity)]
    pub create: Option<
        unsafe extern "C" fn(
            Fs,
            Wstr,
            u32,
            u32,
            u32,
            *mut c_void,
            u64,
            *mut Ctx,
            *mut FileInfo,
        ) -> NtStatus,
    >,
    pub open: Option<unsafe extern "C" fn(Fs, Wstr, u32, u32, *mut Ctx, *mut FileInfo) -> NtStatus>,
    pub overwrite: Option<unsafe extern "C" fn(Fs, Ctx, u32, u8, u64, *mut FileInfo) -> NtStatus>,
    pub cleanup: Option<unsafe extern "C" fn(Fs, Ctx, Wstr, u32)>,
    pub close: Option<unsafe extern "C" fn(Fs, Ctx)>,
    pub read: Option<unsafe extern "C" fn(Fs, Ctx, *mut c_void, u64, u32, *mut u32) -> NtStatus>,
    #[allow(clippy::type_complexity)]
    pub write: Option<
        unsafe extern "C" fn(
            Fs,
            Ctx,
            *mut c_void,
            u64,
            u32,
            u8,
            u8,
            *mut u32,
            *mut FileInfo,
        ) -> NtStatus,
    >,
    pub flush: Option<unsafe extern "C" fn(Fs, Ctx, *mut FileInfo) -> NtStatus>,
    pub get_file_info: Option<unsafe extern "C" fn(Fs, Ctx, *mut FileInfo) -> NtStatus>,
    #[allow(clippy::type_complexity)]
    pub set_basic_info:
        Option<unsafe extern "C" fn(Fs, Ctx, u32, u64, u64, u64, u64, *mut FileInfo) -> NtStatus>,
    pub set_file_size: Option<unsafe extern "C" fn(Fs, Ctx, u64, u8, *mut FileInfo) -> NtStatus>,
    pub can_delete: Option<unsafe extern "C" fn(Fs, Ctx, Wstr) -> NtStatus>,
    pub rename: Option<unsafe extern "C" fn(Fs, Ctx, Wstr, Wstr, u8) -> NtStatus>,
    pub get_security: Option<unsafe extern "C" fn(Fs, Ctx, *mut c_void, *mut usize) -> NtStatus>,
    pub set_security: Option<unsafe extern "C" fn(Fs, Ctx, u32, *mut c_void) -> NtStatus>,
    pub read_directory:
        Option<unsafe extern "C" fn(Fs, Ctx, Wstr, Wstr, *mut c_void, u32, *mut u32) -> NtStatus>,
    pub resolve_reparse_points: Option<unsafe extern "C" fn()>,
    pub get_reparse_point: Option<unsafe extern "C" fn()>,
    pub set_reparse_point:
        Option<unsafe extern "C" fn(Fs, Ctx, Wstr, *mut c_void, usize) -> NtStatus>,
    pub delete_reparse_point:
        Option<unsafe extern "C" fn(Fs, Ctx, Wstr, *mut c_void, usize) -> NtStatus>,
    pub get_stream_info: Option<unsafe extern "C" fn()>,
    pub get_dir_info_by_name: Option<unsafe extern "C" fn(Fs, Ctx, Wstr, *mut DirInfo) -> NtStatus>,
    pub control: Option<unsafe extern "C" fn()>,
    pub set_delete: Option<unsafe extern "C" fn(Fs, Ctx, Wstr, u8) -> NtStatus>,
    pub create_ex: Option<unsafe extern "C" fn()>,
    pub overwrite_ex: Option<unsafe extern "C" fn()>,
    pub get_ea: Option<unsafe extern "C" fn()>,
    pub set_ea: Option<unsafe extern "C" fn(Fs, Ctx, *mut c_void, u32, *mut FileInfo) -> NtStatus>,
    pub obsolete0: Option<unsafe extern "C" fn()>,
    pub dispatcher_stopped: Option<unsafe extern "C" fn(Fs, u8)>,
    pub reserved: [Option<unsafe extern "C" fn()>; 31],
}
const _: () = assert!(std::mem::size_of::<Interface>() == 64 * std::mem::size_of::<usize>());

/// What this file system answers. Left out: reparse points, streams, extended
/// attributes and control codes (WinFsp answers those itself as not supported), and
/// `Create`/`CreateEx`/`OverwriteEx` (a read-only volume never passes a create on).
pub static INTERFACE: Interface = Interface {
    get_volume_info: Some(get_volume_info),
    set_volume_label: Some(set_volume_label),
    get_security_by_name: Some(get_security_by_name),
    create: Some(create),
    open: Some(open),
    overwrite: Some(overwrite),
    cleanup: Some(cleanup),
    close: Some(close),
    read: Some(read),
    write: Some(write),
    flush: Some(flush),
    get_file_info: Some(get_file_info),
    set_basic_info: Some(set_basic_info),
    set_file_size: Some(set_file_size),
    can_delete: Some(can_delete),
    rename: Some(rename),
    get_security: Some(get_security),
    set_security: Some(set_security),
    read_directory: Some(read_directory),
    resolve_reparse_points: None,
    get_reparse_point: None,
    set_reparse_point: Some(set_reparse_point),
    delete_reparse_point: Some(delete_reparse_point),
    get_stream_info: None,
    get_dir_info_by_name: Some(get_dir_info_by_name),
    control: None,
    set_delete: Some(set_delete),
    create_ex: None,
    overwrite_ex: None,
    get_ea: None,
    set_ea: Some(set_ea),
    obsolete0: None,
    dispatcher_stopped: None,
    reserved: [None; 31],
};

/// Everything may read, nothing may change: owner and group Administrators; read and
/// execute for SYSTEM, Administrators and Everyone.
const SDDL: &str = "O:BAG:BAD:P(A;;FRFX;;;SY)(A;;FRFX;;;BA)(A;;FRFX;;;WD)";

/// What the callbacks answer from: the view, the security descriptor every file has,
/// the volume's label and size.
pub struct Adapter {
    pub view: WinView,
    security: Vec<u8>,
    label: Vec<u16>,
    total_size: u64,
}

impl Adapter {
    /// `label`: what Explorer shows beside the letter (cut to 32 characters).
    pub fn new(view: WinView, label: &str) -> Result<Adapter, String> {
        let total_size = view.fs.stored_bytes();
        Ok(Adapter {
            view,
            security: security_descriptor(SDDL)?,
            label: label.encode_utf16().take(32).collect(),
            total_size,
        })
    }
}

/// A self-relative security descriptor from its SDDL.
fn security_descriptor(sddl: &str) -> Result<Vec<u8>, String> {
    let wide = wstr(sddl);
    let mut sd: *mut c_void = std::ptr::null_mut();
    // SAFETY: `wide` is NUL-terminated; the descriptor Windows allocates is copied out
    // and freed with LocalFree, as the function's documentation says.
    unsafe {
        if ConvertStringSecurityDescriptorToSecurityDescriptorW(
            wide.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        ) == 0
        {
            return Err(format!(
                "making the drive's security descriptor: {}",
                std::io::Error::last_os_error()
            ));
        }
        let len = GetSecurityDescriptorLength(sd) as usize;
        let copy = std::slice::from_raw_parts(sd as *const u8, len).to_vec();
        LocalFree(sd);
        Ok(copy)
    }
}

/// A NUL-terminated UTF-16 string.
pub fn wstr(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// One open file or folder: what `*PFileContext` points to.
pub struct Handle {
    pub attr: Attr,
    /// The view's handle of an open file.
    fh: Option<u64>,
    /// A folder's listing, taken when it is first read and kept while it is open, so a
    /// listing read in several calls stays one listing.
    listing: OnceLock<Arc<Listing>>,
}

fn status(e: FsError) -> NtStatus {
    match e {
        FsError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
        FsError::NotADirectory => STATUS_NOT_A_DIRECTORY,
        FsError::IsADirectory => STATUS_FILE_IS_A_DIRECTORY,
        FsError::NotASymlink => STATUS_INVALID_DEVICE_REQUEST,
        FsError::BadHandle => STATUS_INVALID_HANDLE,
        FsError::Io => STATUS_IO_DEVICE_ERROR,
    }
}

/// A file's FSP_FSCTL_FILE_INFO.
pub fn file_info(a: &Attr) -> FileInfo {
    let [creation_time, last_access_time, last_write_time, change_time] = times(a);
    FileInfo {
        file_attributes: attributes(a),
        reparse_tag: 0,
        allocation_size: a.size.div_ceil(4096) * 4096,
        file_size: if a.kind == FileKind::File { a.size } else { 0 },
        creation_time,
        last_access_time,
        last_write_time,
        change_time,
        index_number: a.ino,
        hard_links: 0,
        ea_size: 0,
    }
}

/// The characters of a NUL-terminated UTF-16 string.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that outlives the slice.
unsafe fn wide<'a>(p: Wstr) -> Option<&'a [u16]> {
    if p.is_null() {
        return None;
    }
    let mut n = 0;
    while *p.add(n) != 0 {
        n += 1;
    }
    Some(std::slice::from_raw_parts(p, n))
}

/// Runs a callback's body; a panic becomes an error for that one request instead of
/// unwinding into WinFsp.
fn guard(f: impl FnOnce() -> NtStatus) -> NtStatus {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(STATUS_INTERNAL_ERROR)
}

/// # Safety
/// `fs` is the file system this crate created, whose UserContext is its [`Adapter`].
unsafe fn adapter<'a>(fs: Fs) -> &'a Adapter {
    &*((*fs).user_context as *const Adapter)
}

/// # Safety
/// `ctx` is a context `open` returned and `close` has not taken back.
unsafe fn handle<'a>(ctx: Ctx) -> &'a Handle {
    &*(ctx as *const Handle)
}

/// Copies the security descriptor into WinFsp's buffer, or says how big it must be.
///
/// # Safety
/// `sd` has `*size` bytes when both are not null.
unsafe fn give_security(a: &Adapter, sd: *mut c_void, size: *mut usize) -> NtStatus {
    if size.is_null() {
        return STATUS_SUCCESS;
    }
    let need = a.security.len();
    if sd.is_null() || *size < need {
        *size = need;
        return STATUS_BUFFER_OVERFLOW;
    }
    std::ptr::copy_nonoverlapping(a.security.as_ptr(), sd as *mut u8, need);
    *size = need;
    STATUS_SUCCESS
}

fn missing(m: Missing) -> NtStatus {
    match m {
        Missing::Path => STATUS_OBJECT_PATH_NOT_FOUND,
        Missing::Name => STATUS_OBJECT_NAME_NOT_FOUND,
        Missing::Error(e) => status(e),
    }
}

unsafe extern "C" fn get_volume_info(fs: Fs, info: *mut VolumeInfo) -> NtStatus {
    guard(|| {
        let a = adapter(fs);
        let info = &mut *info;
        info.total_size = a.total_size;
        info.free_size = 0;
        info.volume_label = [0; 32];
        info.volume_label[..a.label.len()].copy_from_slice(&a.label);
        info.volume_label_length = (a.label.len() * 2) as u16;
        STATUS_SUCCESS
    })
}

unsafe extern "C" fn get_security_by_name(
    fs: Fs,
    name: Wstr,
    attrs: *mut u32,
    sd: *mut c_void,
    size: *mut usize,
) -> NtStatus {
    guard(|| {
        let a = adapter(fs);
        let attr = match a.view.resolve(wide(name).unwrap_or_default()) {
            Ok((attr, _)) => attr,
            Err(m) => return missing(m),
        };
        if !attrs.is_null() {
            *attrs = attributes(&attr);
        }
        give_security(a, sd, size)
    })
}

unsafe extern "C" fn open(
    fs: Fs,
    name: Wstr,
    create_options: u32,
    _granted_access: u32,
    context: *mut Ctx,
    info: *mut FileInfo,
) -> NtStatus {
    guard(|| {
        let a = adapter(fs);
        let (attr, spelled) = match a.view.resolve(wide(name).unwrap_or_default()) {
            Ok(found) => found,
            Err(m) => return missing(m),
        };
        let dir = attr.kind == FileKind::Dir;
        if dir && create_options & FILE_NON_DIRECTORY_FILE != 0 {
            return STATUS_FILE_IS_A_DIRECTORY;
        }
        if !dir && create_options & FILE_DIRECTORY_FILE != 0 {
            return STATUS_NOT_A_DIRECTORY;
        }
        let fh = if dir {
            None
        } else {
            match a.view.fs.open(attr.ino) {
                Ok(fh) => Some(fh),
                Err(e) => return status(e),
            }
        };
        // Open's FileInfo is an FSP_FSCTL_OPEN_FILE_INFO: the name as the drive spells
        // it goes there, so Windows shows `Report.pdf` when `report.PDF` was asked for.
        let open_info = &mut *(info as *mut OpenFileInfo);
        open_info.file_info = file_info(&attr);
        let room = open_info.normalized_name_size as usize / 2;
        if !open_info.normalized_name.is_null() && spelled.len() <= room {
            std::ptr::copy_nonoverlapping(
                spelled.as_ptr(),
                open_info.normalized_name,
                spelled.len(),
            );
            open_info.normalized_name_size = (spelled.len() * 2) as u16;
        }
        let h = Box::new(Handle {
            attr,
            fh,
            listing: OnceLock::new(),
        });
        *context = Box::into_raw(h) as Ctx;
        STATUS_SUCCESS
    })
}

unsafe extern "C" fn cleanup(_fs: Fs, _ctx: Ctx, _name: Wstr, _flags: u32) {
    // Nothing to do: a read-only volume has no delete-on-close and no times to update.
}

unsafe extern "C" fn close(fs: Fs, ctx: Ctx) {
    let _ = guard(|| {
        let h = Box::from_raw(ctx as *mut Handle);
        if let Some(fh) = h.fh {
            adapter(fs).view.fs.release(fh);
        }
        STATUS_SUCCESS
    });
}

unsafe extern "C" fn read(
    fs: Fs,
    ctx: Ctx,
    buffer: *mut c_void,
    offset: u64,
    length: u32,
    transferred: *mut u32,
) -> NtStatus {
    guard(|| {
        let (a, h) = (adapter(fs), handle(ctx));
        *transferred = 0;
        let Some(fh) = h.fh else {
            return STATUS_INVALID_DEVICE_REQUEST;
        };
        if offset >= h.attr.size {
            return STATUS_END_OF_FILE;
        }
        match a.view.fs.read(fh, offset, length) {
            Ok(data) => {
                let n = data.len().min(length as usize);
                std::ptr::copy_nonoverlapping(data.as_ptr(), buffer as *mut u8, n);
                *transferred = n as u32;
                STATUS_SUCCESS
            }
            Err(e) => status(e),
        }
    })
}

unsafe extern "C" fn get_file_info(_fs: Fs, ctx: Ctx, info: *mut FileInfo) -> NtStatus {
    guard(|| {
        *info = file_info(&handle(ctx).attr);
        STATUS_SUCCESS
    })
}

unsafe extern "C" fn get_security(
    fs: Fs,
    _ctx: Ctx,
    sd: *mut c_void,
    size: *mut usize,
) -> NtStatus {
    guard(|| give_security(adapter(fs), sd, size))
}

/// The open folder's listing, taken once per open.
fn listing_of<'a>(a: &Adapter, h: &'a Handle) -> Result<&'a Arc<Listing>, NtStatus> {
    if let Some(l) = h.listing.get() {
        return Ok(l);
    }
    if h.attr.kind != FileKind::Dir {
        return Err(STATUS_NOT_A_DIRECTORY);
    }
    let l = a.view.listing(h.attr.ino).map_err(status)?;
    Ok(h.listing.get_or_init(|| l))
}

/// Appends one FSP_FSCTL_DIR_INFO with its name to WinFsp's buffer at `*used`, 8-byte
/// aligned, as WinFsp's FspFileSystemAddDirInfo does; false when it does not fit.
/// `None` adds the end-of-listing mark (a zero size).
///
/// # Safety
/// `buffer` has `length` bytes.
pub unsafe fn add_dir_info(
    entry: Option<(&[u16], &Attr)>,
    buffer: *mut c_void,
    length: u32,
    used: &mut u32,
) -> bool {
    let at = (buffer as *mut u8).add(*used as usize);
    let Some((name, attr)) = entry else {
        if *used as usize + 2 > length as usize {
            return false;
        }
        std::ptr::write_unaligned(at as *mut u16, 0);
        *used += 2;
        return true;
    };
    let size = std::mem::size_of::<DirInfo>() + name.len() * 2;
    let aligned = size.div_ceil(8) * 8;
    if *used as usize + aligned > length as usize || size > u16::MAX as usize {
        return false;
    }
    let record = DirInfo {
        size: size as u16,
        file_info: file_info(attr),
        next_offset_or_padding: [0; 3],
    };
    std::ptr::write_unaligned(at as *mut DirInfo, record);
    std::ptr::copy_nonoverlapping(
        name.as_ptr() as *const u8,
        at.add(std::mem::size_of::<DirInfo>()),
        name.len() * 2,
    );
    *used += aligned as u32;
    true
}

unsafe extern "C" fn read_directory(
    fs: Fs,
    ctx: Ctx,
    _pattern: Wstr,
    marker: Wstr,
    buffer: *mut c_void,
    length: u32,
    transferred: *mut u32,
) -> NtStatus {
    guard(|| {
        let (a, h) = (adapter(fs), handle(ctx));
        let l = match listing_of(a, h) {
            Ok(l) => l,
            Err(s) => return s,
        };
        let mut used = 0u32;
        let all = l.each_from(l.resume(wide(marker)), |name, attr| {
            add_dir_info(Some((name, attr)), buffer, length, &mut used)
        });
        if all {
            add_dir_info(None, buffer, length, &mut used);
        }
        *transferred = used;
        STATUS_SUCCESS
    })
}

unsafe extern "C" fn get_dir_info_by_name(
    fs: Fs,
    ctx: Ctx,
    name: Wstr,
    info: *mut DirInfo,
) -> NtStatus {
    guard(|| {
        let (a, h) = (adapter(fs), handle(ctx));
        let l = match listing_of(a, h) {
            Ok(l) => l,
            Err(s) => return s,
        };
        let Some(e) = l.find(wide(name).unwrap_or_default()) else {
            return STATUS_OBJECT_NAME_NOT_FOUND;
        };
        (*info).size = (std::mem::size_of::<DirInfo>() + e.name.len() * 2) as u16;
        (*info).file_info = file_info(&e.attr);
        let name_at = (info as *mut u8).add(std::mem::size_of::<DirInfo>()) as *mut u16;
        std::ptr::copy_nonoverlapping(e.name.as_ptr(), name_at, e.name.len());
        STATUS_SUCCESS
    })
}

// Every change is refused with the status of a write-protected medium, which Windows
// shows as "The media is write protected". WinFsp refuses most of them itself on a
// read-only volume; these answer whatever still reaches here.
unsafe extern "C" fn set_volume_label(_: Fs, _: Wstr, _: *mut VolumeInfo) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn create(
    _: Fs,
    _: Wstr,
    _: u32,
    _: u32,
    _: u32,
    _: *mut c_void,
    _: u64,
    _: *mut Ctx,
    _: *mut FileInfo,
) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn overwrite(_: Fs, _: Ctx, _: u32, _: u8, _: u64, _: *mut FileInfo) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn write(
    _: Fs,
    _: Ctx,
    _: *mut c_void,
    _: u64,
    _: u32,
    _: u8,
    _: u8,
    _: *mut u32,
    _: *mut FileInfo,
) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn flush(_: Fs, _: Ctx, _: *mut FileInfo) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn set_basic_info(
    _: Fs,
    _: Ctx,
    _: u32,
    _: u64,
    _: u64,
    _: u64,
    _: u64,
    _: *mut FileInfo,
) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn set_file_size(_: Fs, _: Ctx, _: u64, _: u8, _: *mut FileInfo) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn can_delete(_: Fs, _: Ctx, _: Wstr) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn rename(_: Fs, _: Ctx, _: Wstr, _: Wstr, _: u8) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn set_security(_: Fs, _: Ctx, _: u32, _: *mut c_void) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn set_reparse_point(
    _: Fs,
    _: Ctx,
    _: Wstr,
    _: *mut c_void,
    _: usize,
) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn delete_reparse_point(
    _: Fs,
    _: Ctx,
    _: Wstr,
    _: *mut c_void,
    _: usize,
) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn set_delete(_: Fs, _: Ctx, _: Wstr, _: u8) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}
unsafe extern "C" fn set_ea(_: Fs, _: Ctx, _: *mut c_void, _: u32, _: *mut FileInfo) -> NtStatus {
    STATUS_MEDIA_WRITE_PROTECTED
}

type Farproc = unsafe extern "system" fn() -> isize;
type CreateFn =
    unsafe extern "C" fn(Wstr, *const VolumeParams, *const Interface, *mut Fs) -> NtStatus;
type SetMountPointFn = unsafe extern "C" fn(Fs, Wstr) -> NtStatus;
type MountPointFn = unsafe extern "C" fn(Fs) -> Wstr;
type StartDispatcherFn = unsafe extern "C" fn(Fs, u32) -> NtStatus;
type FsFn = unsafe extern "C" fn(Fs);

/// WinFsp's DLL, loaded at run time, and the calls a mount needs.
struct Dll {
    create: CreateFn,
    set_mount_point: SetMountPointFn,
    mount_point: MountPointFn,
    start_dispatcher: StartDispatcherFn,
    stop_dispatcher: FsFn,
    delete: FsFn,
}

/// Where WinFsp is installed, from the registry, as WinFsp's own loader looks for it.
fn install_dir() -> Option<String> {
    let key = wstr(r"SOFTWARE\WOW6432Node\WinFsp");
    let value = wstr("InstallDir");
    let mut buf = [0u16; 1024];
    let mut size = (buf.len() * 2) as u32;
    // SAFETY: the buffer and its size in bytes are given; strings are NUL-terminated.
    let r = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            buf.as_mut_ptr() as *mut c_void,
            &mut size,
        )
    };
    if r != 0 {
        return None;
    }
    let n = (size as usize / 2).saturating_sub(1);
    Some(String::from_utf16_lossy(&buf[..n]))
}

/// What `mount` says when WinFsp is not there.
pub const NOT_INSTALLED: &str = "WinFsp is not installed: Backazon shows snapshots as a \
     drive through WinFsp, a free driver (https://winfsp.dev/rel/, the installer's default \
     choices are enough). Install it and run the mount again; meanwhile `backazon restore \
     SNAPSHOT:PATH --target FOLDER` copies out what you need";

impl Dll {
    fn load() -> Result<Dll, String> {
        let dll = "winfsp-x64.dll";
        // SAFETY: LoadLibraryW with NUL-terminated paths; GetProcAddress's results are
        // cast to the signatures winfsp.h declares for those names.
        unsafe {
            let mut module = LoadLibraryW(wstr(dll).as_ptr());
            if module.is_null() {
                let Some(dir) = install_dir() else {
                    return Err(NOT_INSTALLED.into());
                };
                let path = format!(r"{}\bin\{dll}", dir.trim_end_matches('\\'));
                module = LoadLibraryW(wstr(&path).as_ptr());
                if module.is_null() {
                    return Err(format!(
                        "loading WinFsp from {path}: {}; reinstall WinFsp (https://winfsp.dev/rel/)",
                        std::io::Error::last_os_error()
                    ));
                }
            }
            let sym = |name: &str| {
                let c: Vec<u8> = name.bytes().chain(Some(0)).collect();
                GetProcAddress(module, c.as_ptr()).ok_or_else(|| {
                    format!("{dll} has no {name}: update WinFsp (https://winfsp.dev/rel/)")
                })
            };
            use std::mem::transmute;
            Ok(Dll {
                create: transmute::<Farproc, CreateFn>(sym("FspFileSystemCreate")?),
                set_mount_point: transmute::<Farproc, SetMountPointFn>(sym(
                    "FspFileSystemSetMountPoint",
                )?),
                mount_point: transmute::<Farproc, MountPointFn>(sym("FspFileSystemMountPointF")?),
                start_dispatcher: transmute::<Farproc, StartDispatcherFn>(sym(
                    "FspFileSystemStartDispatcher",
                )?),
                stop_dispatcher: transmute::<Farproc, FsFn>(sym("FspFileSystemStopDispatcher")?),
                delete: transmute::<Farproc, FsFn>(sym("FspFileSystemDelete")?),
            })
        }
    }
}

/// Whether WinFsp can be loaded: `Err` with [`NOT_INSTALLED`] (or why it would not
/// load) otherwise.
pub fn check_installed() -> Result<(), String> {
    Dll::load().map(|_| ())
}

/// How the drive is offered to Windows.
pub struct MountOptions {
    /// Shown beside the drive letter in Explorer (up to 32 characters).
    pub label: String,
    /// A network drive (`\\backazon\LABEL`) rather than a local disk: some programs
    /// (backup agents, indexers, antivirus) treat local disks as theirs to scan and slow
    /// to a crawl or freeze on one that answers from a remote repository; they leave
    /// network drives alone. Folder mount points need a local disk.
    pub network: bool,
    /// Threads answering Windows (0: WinFsp's choice, one per core).
    pub threads: u32,
    /// Identifies the volume to Windows (from the repository's id).
    pub serial: u32,
}

/// How long Windows may keep what it was told, in milliseconds. Files and folders of a
/// snapshot never change, but `latest`, `by-date` and `by-job` gain a snapshot after a
/// backup and the view looks for one every few seconds: 10 s for names and attributes
/// keeps Explorer fast and shows a new snapshot soon. The security descriptor and the
/// volume's label never change.
pub const FILE_INFO_TIMEOUT_MS: u32 = 10_000;
pub const SECURITY_TIMEOUT_MS: u32 = u32::MAX;

/// The volume's settings for Explorer: read-only, names case-preserving and compared
/// ignoring case, Unicode, ACLs (the one descriptor), the name passed to
/// GetDirInfoByName, and our file contexts handed back as they were given.
pub fn volume_params(opts: &MountOptions, created: u64) -> VolumeParams {
    let mut p = VolumeParams {
        version: std::mem::size_of::<VolumeParams>() as u16,
        sector_size: 4096,
        sectors_per_allocation_unit: 1,
        max_component_length: 255,
        volume_creation_time: created,
        volume_serial_number: opts.serial,
        transact_timeout: 0,
        irp_timeout: 0,
        irp_capacity: 0,
        file_info_timeout: FILE_INFO_TIMEOUT_MS,
        flags: flags::CASE_PRESERVED_NAMES
            | flags::UNICODE_ON_DISK
            | flags::PERSISTENT_ACLS
            | flags::READ_ONLY_VOLUME
            | flags::PASS_QUERY_DIRECTORY_FILE_NAME
            | flags::UM_FILE_CONTEXT_IS_USER_CONTEXT2,
        prefix: [0; 192],
        file_system_name: [0; 16],
        flags1: flags::VOLUME_INFO_TIMEOUT_VALID
            | flags::DIR_INFO_TIMEOUT_VALID
            | flags::SECURITY_TIMEOUT_VALID,
        volume_info_timeout: FILE_INFO_TIMEOUT_MS,
        dir_info_timeout: FILE_INFO_TIMEOUT_MS,
        security_timeout: SECURITY_TIMEOUT_MS,
        stream_info_timeout: 0,
        ea_timeout: 0,
        fsext_control_code: 0,
        reserved32: [0],
        reserved64: [0; 2],
    };
    for (d, s) in p.file_system_name.iter_mut().zip("Backazon".encode_utf16()) {
        *d = s;
    }
    if opts.network {
        let share: String = opts
            .label
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let prefix = format!(r"\backazon\{share}");
        for (d, s) in p.prefix.iter_mut().take(191).zip(prefix.encode_utf16()) {
            *d = s;
        }
    }
    p
}

/// A mounted drive: unmounted when dropped.
pub struct Mounted {
    dll: Dll,
    fs: Fs,
    adapter: *mut Adapter,
    at: String,
}

impl Mounted {
    /// Where it is mounted (`B:`, or the folder), as Windows reports it.
    pub fn mount_point(&self) -> &str {
        &self.at
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: the dispatcher is stopped before the file system is deleted, and the
        // adapter freed only after WinFsp can no longer call into it.
        unsafe {
            (self.dll.stop_dispatcher)(self.fs);
            (self.dll.delete)(self.fs);
            drop(Box::from_raw(self.adapter));
        }
    }
}

fn failed(what: &str, s: NtStatus) -> String {
    format!("{what}: WinFsp answered NTSTATUS 0x{:08X}", s as u32)
}

/// Mounts `adapter` at `mount_point`: a drive letter (`B:`), `None` for the next free
/// letter counting down from Z:, or a folder that does not exist yet (created as the
/// mount point, local disks only).
pub fn mount(
    adapter: Adapter,
    mount_point: Option<&str>,
    opts: &MountOptions,
) -> Result<Mounted, String> {
    let dll = Dll::load()?;
    let created = crate::winview::filetime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
    );
    let params = volume_params(opts, created);
    let device = wstr(if opts.network {
        "WinFsp.Net"
    } else {
        "WinFsp.Disk"
    });
    let adapter = Box::into_raw(Box::new(adapter));
    let mut fs: Fs = std::ptr::null_mut();
    // SAFETY: WinFsp's documented sequence; the adapter lives until `Mounted` is dropped,
    // after the dispatcher has stopped.
    unsafe {
        let s = (dll.create)(device.as_ptr(), &params, &INTERFACE, &mut fs);
        if s != STATUS_SUCCESS {
            drop(Box::from_raw(adapter));
            return Err(failed("creating the WinFsp file system", s));
        }
        (*fs).user_context = adapter as *mut c_void;
        let point = mount_point.map(wstr);
        let s = (dll.set_mount_point)(fs, point.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()));
        if s != STATUS_SUCCESS {
            (dll.delete)(fs);
            drop(Box::from_raw(adapter));
            let what = format!(
                "mounting at {}",
                mount_point.unwrap_or("a free drive letter")
            );
            return Err(format!(
                "{}; a drive letter must be free, a folder must not exist yet (its parent must)",
                failed(&what, s)
            ));
        }
        let s = (dll.start_dispatcher)(fs, opts.threads);
        if s != STATUS_SUCCESS {
            (dll.delete)(fs);
            drop(Box::from_raw(adapter));
            return Err(failed("starting WinFsp's dispatcher", s));
        }
        let at = String::from_utf16_lossy(wide((dll.mount_point)(fs)).unwrap_or_default());
        Ok(Mounted {
            dll,
            fs,
            adapter,
            at,
        })
    }
}

#[cfg(test)]
mod tests;
