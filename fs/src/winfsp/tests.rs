//! Each callback of [`INTERFACE`] called the way WinFsp calls it — through the table,
//! with an FSP_FILE_SYSTEM whose UserContext is the adapter, WinFsp's buffers and
//! UTF-16 paths — against a real repository. WinFsp's driver cannot run under Wine;
//! everything up to it runs here.

use std::ptr::{null, null_mut};

use std::sync::Arc;

use backazon_engine::craft::Crafted;
use backazon_engine::restore::find_node;
use backazon_engine::{LocalBackend, Repository};

use super::*;
use crate::winview::tests::{crafted, page_through, snapshot_path, view_of, w, Crafted1, Folder};
use crate::winview::{FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_READONLY};

/// An FSP_FILE_SYSTEM as WinFsp allocates it (792 bytes), pointing at an adapter.
struct Host {
    fs: Box<[u64; 99]>,
    _adapter: Box<Adapter>,
    folder: Option<Folder>,
}

impl Host {
    fn new(c: Crafted1) -> Host {
        let mut h = Host::of(c.view);
        h.folder = Some(c.folder);
        h
    }

    fn of(view: WinView) -> Host {
        let mut adapter = Box::new(Adapter::new(view, "Backazon test").unwrap());
        let mut fs = Box::new([0u64; 99]);
        // SAFETY: the buffer is as big and aligned as FSP_FILE_SYSTEM.
        unsafe {
            (*(fs.as_mut_ptr() as *mut FileSystem)).user_context =
                &mut *adapter as *mut Adapter as *mut c_void;
        }
        Host {
            fs,
            _adapter: adapter,
            folder: None,
        }
    }

    fn fs(&self) -> Fs {
        self.fs.as_ptr() as Fs
    }

    /// Open as WinFsp does: the FileInfo is an FSP_FSCTL_OPEN_FILE_INFO with room for
    /// the normalized name.
    fn open(&self, path: &str, options: u32) -> Result<(Ctx, FileInfo, String), NtStatus> {
        let name = wstr(path);
        let mut normalized = vec![0u16; 1024];
        let mut info = OpenFileInfo {
            file_info: FileInfo::default(),
            normalized_name: normalized.as_mut_ptr(),
            normalized_name_size: 2048,
        };
        let mut ctx: Ctx = null_mut();
        let s = unsafe {
            (INTERFACE.open.unwrap())(
                self.fs(),
                name.as_ptr(),
                options,
                0x1200a9, // FILE_GENERIC_READ | FILE_EXECUTE
                &mut ctx,
                &mut info as *mut OpenFileInfo as *mut FileInfo,
            )
        };
        if s != STATUS_SUCCESS {
            return Err(s);
        }
        let n = info.normalized_name_size as usize / 2;
        Ok((
            ctx,
            info.file_info,
            String::from_utf16(&normalized[..n]).unwrap(),
        ))
    }

    fn close(&self, ctx: Ctx) {
        unsafe {
            (INTERFACE.cleanup.unwrap())(self.fs(), ctx, null(), 0);
            (INTERFACE.close.unwrap())(self.fs(), ctx);
        }
    }

    fn read(&self, ctx: Ctx, offset: u64, len: u32) -> Result<Vec<u8>, NtStatus> {
        let mut buf = vec![0u8; len as usize];
        let mut got = 0u32;
        let s = unsafe {
            (INTERFACE.read.unwrap())(
                self.fs(),
                ctx,
                buf.as_mut_ptr() as *mut c_void,
                offset,
                len,
                &mut got,
            )
        };
        if s != STATUS_SUCCESS {
            return Err(s);
        }
        buf.truncate(got as usize);
        Ok(buf)
    }

    /// GetDirInfoByName in folder `ctx`: the name of the record it filled.
    fn dir_info_by_name(&self, ctx: Ctx, name: &str) -> Result<String, NtStatus> {
        let mut buf = vec![0u64; 128];
        let name = wstr(name);
        let s = unsafe {
            (INTERFACE.get_dir_info_by_name.unwrap())(
                self.fs(),
                ctx,
                name.as_ptr(),
                buf.as_mut_ptr() as *mut DirInfo,
            )
        };
        if s != STATUS_SUCCESS {
            return Err(s);
        }
        let size = unsafe { *(buf.as_ptr() as *const u16) } as u32;
        let (records, _) = parse_dir_buffer(&buf, size);
        Ok(records[0].0.clone())
    }

    /// One ReadDirectory call: the records it filled, and whether it ended the listing.
    fn read_dir(
        &self,
        ctx: Ctx,
        marker: Option<&str>,
        len: u32,
    ) -> (Vec<(String, FileInfo)>, bool) {
        let marker = marker.map(wstr);
        let mut buf = vec![0u64; len as usize / 8 + 1];
        let mut used = 0u32;
        let s = unsafe {
            (INTERFACE.read_directory.unwrap())(
                self.fs(),
                ctx,
                null(),
                marker.as_ref().map_or(null(), |m| m.as_ptr()),
                buf.as_mut_ptr() as *mut c_void,
                len,
                &mut used,
            )
        };
        assert_eq!(s, STATUS_SUCCESS);
        assert!(used <= len);
        parse_dir_buffer(&buf, used)
    }
}

/// The records of a ReadDirectory buffer, as WinFsp's driver reads them.
fn parse_dir_buffer(buf: &[u64], used: u32) -> (Vec<(String, FileInfo)>, bool) {
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, used as usize) };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 2 <= bytes.len() {
        let size = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        if size == 0 {
            return (out, true);
        }
        assert_eq!(at % 8, 0, "records are 8-byte aligned");
        let rec = unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr() as *const DirInfo) };
        let name: Vec<u16> = bytes[at + 104..at + size]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.push((String::from_utf16(&name).unwrap(), rec.file_info));
        at += size.div_ceil(8) * 8;
    }
    (out, false)
}

fn tree() -> Vec<Crafted> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        Crafted::file("Report.PDF", "pdf bytes"),
        Crafted::file("a:b", "colon"),
        Crafted::file("big.bin", big),
        Crafted::dir("docs", vec![Crafted::file("inside.txt", "in docs")]),
        Crafted::file("empty", ""),
        Crafted::file("report.pdf", "the other report"),
    ]
}

fn host(name: &str, entries: Vec<Crafted>) -> (Host, String) {
    let c = crafted(name, entries);
    let snap = snapshot_path(&c.view);
    (Host::new(c), snap)
}

#[test]
fn volume_info_names_the_repository_and_is_read_only_sized() {
    let (h, _) = host("volume", tree());
    let mut info = VolumeInfo {
        total_size: 1,
        free_size: 1,
        volume_label_length: 0,
        volume_label: [0; 32],
    };
    let s = unsafe { (INTERFACE.get_volume_info.unwrap())(h.fs(), &mut info) };
    assert_eq!(s, STATUS_SUCCESS);
    let label = String::from_utf16(&info.volume_label[..info.volume_label_length as usize / 2]);
    assert_eq!(label.unwrap(), "Backazon test");
    assert_eq!(info.free_size, 0);
    assert!(info.total_size > 3_000_000, "the repository's stored bytes");
}

#[test]
fn security_by_name_gives_attributes_and_a_descriptor_windows_can_read() {
    let (h, snap) = host("security", tree());
    let get = |path: &str, sd: *mut c_void, size: Option<&mut usize>| {
        let name = wstr(path);
        let mut attrs = 0u32;
        let s = unsafe {
            (INTERFACE.get_security_by_name.unwrap())(
                h.fs(),
                name.as_ptr(),
                &mut attrs,
                sd,
                size.map_or(null_mut(), |s| s as *mut usize),
            )
        };
        (s, attrs)
    };
    assert_eq!(
        get(&format!(r"{snap}\DOCS"), null_mut(), None),
        (
            STATUS_SUCCESS,
            FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_DIRECTORY
        )
    );
    assert_eq!(
        get(&format!(r"{snap}\nope"), null_mut(), None).0,
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(
        get(&format!(r"{snap}\nope\deeper"), null_mut(), None).0,
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    // First with too small a buffer, as WinFsp does: it learns the size and asks again.
    let mut size = 4usize;
    let mut small = [0u8; 4];
    let (s, _) = get(r"\", small.as_mut_ptr() as *mut c_void, Some(&mut size));
    assert_eq!(s, STATUS_BUFFER_OVERFLOW);
    let mut sd = vec![0u8; size];
    let (s, _) = get(r"\", sd.as_mut_ptr() as *mut c_void, Some(&mut size));
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!(size, sd.len());
    // Windows reads it back as what was meant.
    use windows_sys::Win32::Security::Authorization::ConvertSecurityDescriptorToStringSecurityDescriptorW;
    let mut text: *mut u16 = null_mut();
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.as_mut_ptr() as *mut c_void,
            SDDL_REVISION_1,
            0x1 | 0x2 | 0x4, // owner, group, DACL
            &mut text,
            null_mut(),
        )
    };
    assert_ne!(ok, 0);
    let back = String::from_utf16_lossy(unsafe { wide(text).unwrap() });
    unsafe { LocalFree(text as *mut c_void) };
    assert!(back.starts_with("O:BAG:BAD:P"), "{back}");
    assert!(back.contains(";;;WD)"), "{back}");
    let mut size = 0usize;
    let mut ctxless = vec![0u8; 256];
    size = size.max(ctxless.len());
    let s = unsafe {
        (INTERFACE.get_security.unwrap())(
            h.fs(),
            null_mut(),
            ctxless.as_mut_ptr() as *mut c_void,
            &mut size,
        )
    };
    assert_eq!((s, size), (STATUS_SUCCESS, sd.len()));
}

#[test]
fn open_ignores_case_spells_the_name_as_shown_and_checks_the_kind() {
    let (h, snap) = host("open", tree());
    let (ctx, info, normalized) = h
        .open(
            &format!(r"{}\REPORT.pdf", snap.to_lowercase()),
            FILE_NON_DIRECTORY_FILE,
        )
        .unwrap();
    assert_eq!(normalized, format!(r"{snap}\Report.PDF"));
    assert_eq!(info.file_size, 9);
    assert_eq!(info.file_attributes, FILE_ATTRIBUTE_READONLY);
    assert_eq!(info.last_write_time, 133_444_736_000_000_000);
    assert_eq!(h.read(ctx, 0, 100).unwrap(), b"pdf bytes");
    let mut again = FileInfo::default();
    assert_eq!(
        unsafe { (INTERFACE.get_file_info.unwrap())(h.fs(), ctx, &mut again) },
        STATUS_SUCCESS
    );
    assert_eq!(again, info);
    h.close(ctx);
    // The case twin shows numbered, and opens by that name.
    let (ctx, _, normalized) = h.open(&format!(r"{snap}\report (2).pdf"), 0).unwrap();
    assert_eq!(normalized, format!(r"{snap}\report (2).pdf"));
    assert_eq!(h.read(ctx, 0, 100).unwrap(), b"the other report");
    h.close(ctx);
    // And the escaped name.
    let (ctx, _, _) = h.open(&format!(r"{snap}\a：b"), 0).unwrap();
    assert_eq!(h.read(ctx, 0, 100).unwrap(), b"colon");
    h.close(ctx);
    assert_eq!(
        h.open(&format!(r"{snap}\docs"), FILE_NON_DIRECTORY_FILE)
            .unwrap_err(),
        STATUS_FILE_IS_A_DIRECTORY
    );
    assert_eq!(
        h.open(&format!(r"{snap}\empty"), FILE_DIRECTORY_FILE)
            .unwrap_err(),
        STATUS_NOT_A_DIRECTORY
    );
    assert_eq!(
        h.open(&format!(r"{snap}\a:b"), 0).unwrap_err(),
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(
        h.open(r"\no\such", 0).unwrap_err(),
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    let (ctx, info, _) = h
        .open(&format!(r"{snap}\docs"), FILE_DIRECTORY_FILE)
        .unwrap();
    assert_eq!(
        info.file_attributes,
        FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_DIRECTORY
    );
    assert_eq!(
        h.read(ctx, 0, 10).unwrap_err(),
        STATUS_INVALID_DEVICE_REQUEST
    );
    h.close(ctx);
}

#[test]
fn reads_at_every_offset_match_the_file_and_past_the_end_is_end_of_file() {
    let (h, snap) = host("read", tree());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (ctx, _, _) = h.open(&format!(r"{snap}\big.bin"), 0).unwrap();
    // Offsets across chunk boundaries, odd lengths, the last byte, and the tail.
    let mut offset = 0u64;
    let mut step = 1u64;
    while offset < big.len() as u64 {
        for len in [1u32, 4095, 65_536] {
            let got = h.read(ctx, offset, len).unwrap();
            let end = (offset as usize + len as usize).min(big.len());
            assert!(
                got == big[offset as usize..end],
                "offset {offset} length {len}"
            );
        }
        offset += step;
        step = step * 3 + 1;
    }
    assert_eq!(
        h.read(ctx, big.len() as u64 - 1, 10).unwrap(),
        [big[big.len() - 1]]
    );
    assert_eq!(
        h.read(ctx, big.len() as u64, 10).unwrap_err(),
        STATUS_END_OF_FILE
    );
    assert_eq!(h.read(ctx, u64::MAX, 10).unwrap_err(), STATUS_END_OF_FILE);
    // The whole file in Explorer's 1 MiB copy reads.
    let mut all = Vec::new();
    while let Ok(part) = h.read(ctx, all.len() as u64, 1 << 20) {
        all.extend_from_slice(&part);
    }
    assert!(all == big);
    h.close(ctx);
    let (ctx, _, _) = h.open(&format!(r"{snap}\empty"), 0).unwrap();
    assert_eq!(h.read(ctx, 0, 10).unwrap_err(), STATUS_END_OF_FILE);
    h.close(ctx);
}

#[test]
fn a_folder_of_50000_entries_reads_whole_through_read_directory_at_any_buffer_size() {
    let files: Vec<Crafted> = (0..50_000)
        .map(|i| Crafted::file(format!("f{i:05}.txt"), ""))
        .collect();
    let (h, snap) = host("readdir", vec![Crafted::dir("big", files)]);
    let (ctx, _, _) = h
        .open(&format!(r"{snap}\big"), FILE_DIRECTORY_FILE)
        .unwrap();
    let mut expected = vec![".".to_string(), "..".to_string()];
    expected.extend((0..50_000).map(|i| format!("f{i:05}.txt")));
    // From the smallest buffer one of these records fits in (104 bytes and a 10-letter
    // name, 8-aligned: 128) to WinFsp's largest.
    for len in [128u32, 250, 4096, 65_536, 1 << 20] {
        let mut got: Vec<String> = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let (records, ended) = h.read_dir(ctx, marker.as_deref(), len);
            for (name, info) in &records {
                assert_ne!(info.file_attributes & FILE_ATTRIBUTE_READONLY, 0);
                got.push(name.clone());
            }
            if ended {
                break;
            }
            assert!(
                !records.is_empty(),
                "each call gives at least one entry (buffer {len})"
            );
            marker = got.last().cloned();
        }
        assert_eq!(got.len(), expected.len(), "buffer {len}");
        assert!(
            got == expected,
            "buffer {len}: lost, repeated or reordered entries"
        );
    }
    // GetDirInfoByName finds one entry ignoring case, with its shown name.
    assert_eq!(h.dir_info_by_name(ctx, "F00042.TXT").unwrap(), "f00042.txt");
    assert_eq!(
        h.dir_info_by_name(ctx, "f99999.txt").unwrap_err(),
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    h.close(ctx);
    // The same pages through the view alone (the marker rule, without buffers).
    let c = crafted(
        "readdir-view",
        vec![Crafted::dir(
            "d",
            (0..300)
                .map(|i| Crafted::file(format!("n{i:03}"), ""))
                .collect(),
        )],
    );
    let (d, _) = c
        .view
        .resolve(&w(&format!(r"{}\d", snapshot_path(&c.view))))
        .unwrap();
    assert_eq!(page_through(&c.view.listing(d.ino).unwrap(), 7).len(), 302);
}

#[test]
fn a_damaged_chunk_is_an_io_error_for_that_file_only() {
    let (h, snap) = host("damage", tree());
    let dir = h.folder.as_ref().unwrap().0.clone();
    // Flip one byte inside big.bin's chunk, in its pack.
    let repo = Repository::open(Arc::new(LocalBackend::new(dir.join("repo"))), b"pw").unwrap();
    let index = repo.load_index().unwrap().index;
    let snapshot = repo.find_snapshot("latest").unwrap().snapshot;
    let node = find_node(&repo, &index, &snapshot.tree, "big.bin")
        .unwrap()
        .unwrap();
    let loc = index.get(&node.content[0]).unwrap();
    let hex = loc.pack.to_hex();
    let pack = dir.join("repo").join("data").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[loc.offset as usize + 100] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();
    // A fresh view, so nothing decoded before is cached.
    let h2 = Host::of(view_of(&dir));
    let (ctx, _, _) = h2.open(&format!(r"{snap}\big.bin"), 0).unwrap();
    assert_eq!(h2.read(ctx, 0, 4096).unwrap_err(), STATUS_IO_DEVICE_ERROR);
    assert_eq!(
        h2.read(ctx, 2_000_000, 4096).unwrap_err(),
        STATUS_IO_DEVICE_ERROR
    );
    h2.close(ctx);
    for (path, want) in [
        ("Report.PDF", &b"pdf bytes"[..]),
        (r"docs\inside.txt", b"in docs"),
    ] {
        let (ctx, _, _) = h2.open(&format!(r"{snap}\{path}"), 0).unwrap();
        assert_eq!(h2.read(ctx, 0, 100).unwrap(), want, "{path}");
        h2.close(ctx);
    }
    drop(h);
}

#[test]
fn every_change_is_refused_as_write_protected() {
    let (h, snap) = host("refuse", tree());
    let (ctx, _, _) = h.open(&format!(r"{snap}\Report.PDF"), 0).unwrap();
    let name = wstr(&format!(r"{snap}\new.txt"));
    let other = wstr(&format!(r"{snap}\moved.pdf"));
    let mut info = FileInfo::default();
    let mut vi = VolumeInfo {
        total_size: 0,
        free_size: 0,
        volume_label_length: 0,
        volume_label: [0; 32],
    };
    let mut n = 0u32;
    let mut out: Ctx = null_mut();
    let mut data = [0u8; 8];
    let d = data.as_mut_ptr() as *mut c_void;
    let i = &mut info as *mut FileInfo;
    let fs = h.fs();
    let answers = unsafe {
        [
            (
                "SetVolumeLabel",
                (INTERFACE.set_volume_label.unwrap())(fs, name.as_ptr(), &mut vi),
            ),
            (
                "Create",
                (INTERFACE.create.unwrap())(fs, name.as_ptr(), 0, 0, 0, null_mut(), 0, &mut out, i),
            ),
            (
                "Overwrite",
                (INTERFACE.overwrite.unwrap())(fs, ctx, 0, 1, 0, i),
            ),
            (
                "Write",
                (INTERFACE.write.unwrap())(fs, ctx, d, 0, 8, 0, 0, &mut n, i),
            ),
            ("Flush", (INTERFACE.flush.unwrap())(fs, ctx, i)),
            (
                "SetBasicInfo",
                (INTERFACE.set_basic_info.unwrap())(fs, ctx, 0, 0, 0, 0, 0, i),
            ),
            (
                "SetFileSize",
                (INTERFACE.set_file_size.unwrap())(fs, ctx, 0, 0, i),
            ),
            (
                "CanDelete",
                (INTERFACE.can_delete.unwrap())(fs, ctx, name.as_ptr()),
            ),
            (
                "Rename",
                (INTERFACE.rename.unwrap())(fs, ctx, name.as_ptr(), other.as_ptr(), 1),
            ),
            (
                "SetSecurity",
                (INTERFACE.set_security.unwrap())(fs, ctx, 4, d),
            ),
            (
                "SetReparsePoint",
                (INTERFACE.set_reparse_point.unwrap())(fs, ctx, name.as_ptr(), d, 8),
            ),
            (
                "DeleteReparsePoint",
                (INTERFACE.delete_reparse_point.unwrap())(fs, ctx, name.as_ptr(), d, 8),
            ),
            (
                "SetDelete",
                (INTERFACE.set_delete.unwrap())(fs, ctx, name.as_ptr(), 1),
            ),
            ("SetEa", (INTERFACE.set_ea.unwrap())(fs, ctx, d, 8, i)),
        ]
    };
    for (call, s) in answers {
        assert_eq!(s, STATUS_MEDIA_WRITE_PROTECTED, "{call}");
    }
    assert!(out.is_null());
    assert_eq!(
        h.read(ctx, 0, 100).unwrap(),
        b"pdf bytes",
        "still as it was"
    );
    h.close(ctx);
}

#[test]
fn volume_settings_are_read_only_case_preserving_and_cached() {
    let opts = MountOptions {
        label: "Backazon nas/photos".into(),
        network: true,
        threads: 0,
        serial: 7,
    };
    let p = volume_params(&opts, 5);
    assert_eq!(p.version, 504);
    assert_ne!(p.flags & flags::READ_ONLY_VOLUME, 0);
    assert_ne!(p.flags & flags::CASE_PRESERVED_NAMES, 0);
    assert_eq!(p.flags & flags::CASE_SENSITIVE_SEARCH, 0);
    assert_ne!(p.flags & flags::UM_FILE_CONTEXT_IS_USER_CONTEXT2, 0);
    assert_eq!(p.file_info_timeout, FILE_INFO_TIMEOUT_MS);
    assert_eq!(p.dir_info_timeout, FILE_INFO_TIMEOUT_MS);
    let prefix =
        String::from_utf16(&p.prefix[..p.prefix.iter().position(|&c| c == 0).unwrap()]).unwrap();
    assert_eq!(prefix, r"\backazon\Backazon-nas-photos");
    let name = String::from_utf16(&p.file_system_name[..8]).unwrap();
    assert_eq!(name, "Backazon");
    let local = volume_params(
        &MountOptions {
            network: false,
            ..opts
        },
        5,
    );
    assert_eq!(local.prefix[0], 0, "a local disk has no UNC prefix");
}

#[test]
fn without_winfsp_mount_says_what_to_install() {
    // Wine has no WinFsp: the DLL is neither on the search path nor in the registry.
    if install_dir().is_some() {
        return; // a real Windows machine with WinFsp installed
    }
    let Crafted1 {
        folder: _kept,
        view,
    } = crafted("nowinfsp", tree());
    let adapter = Adapter::new(view, "x").unwrap();
    let opts = MountOptions {
        label: "x".into(),
        network: false,
        threads: 0,
        serial: 0,
    };
    let err = mount(adapter, Some("B:"), &opts).err().unwrap();
    assert_eq!(err, NOT_INSTALLED);
}
