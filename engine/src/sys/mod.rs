//! Everything in the engine that differs between operating systems, one file per OS
//! behind the same functions (as std's own `sys/{unix,windows}`): what a file's
//! metadata is and how it is read (`node_from_metadata`, `read_link`), how it is applied
//! on restore (`create_file`, `apply_file_metadata`, `apply_dir_metadata`,
//! `create_symlink`, `create_special`), how OS names and paths map to the names and
//! paths a snapshot records, file I/O hints, and small facts about the system. Backup,
//! restore and the backends call these and never ask which OS they run on; nothing
//! outside this folder names `libc`, `std::os::unix` or `std::os::windows`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

use std::path::{Path, PathBuf};

pub use imp::{
    apply_dir_metadata, apply_file_metadata, can_restore_owners, create_file, create_private_dir,
    create_special, create_symlink, default_cache_dir, drop_cached_pages, file_id, free_space,
    give_back_freed_memory, match_path, name_of, node_from_metadata, open_for_backup, os_name,
    private_file, process_alive, read_ahead, read_at, read_link, recorded_components,
    reopen_for_restore, start_writeback, write_at, NAME_RULE, WINDOWS_PATHS,
};

/// One step of an absolute path as a snapshot records it: its name, and the OS path of
/// that folder (`None` for a folder that exists only in the snapshot's layout, as `UNC`
/// and the server above a Windows share).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStep {
    pub name: Vec<u8>,
    pub os_path: Option<PathBuf>,
}

/// How an absolute path is recorded in a snapshot: `/home/alice` on Unix,
/// `/C/Users/alice` for `C:\Users\alice` on Windows (the form restic uses).
pub fn recorded_path(abs: &Path) -> crate::error::Result<String> {
    let steps = recorded_components(abs)?;
    let mut out = String::new();
    for s in &steps {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(&s.name));
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// A path inside a snapshot as a user types it, in the snapshot's form: on Windows
/// `C:\Users\alice` and `C:/Users/alice` both mean `/C/Users/alice`; elsewhere, and for
/// paths already in that form, it is used as given.
pub fn snapshot_path(text: &str) -> String {
    if !WINDOWS_PATHS {
        return text.to_string();
    }
    let slashed = text.replace('\\', "/");
    let b = slashed.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        let rest = slashed[2..].trim_start_matches('/');
        let drive = (b[0] as char).to_ascii_uppercase();
        return if rest.is_empty() {
            format!("/{drive}")
        } else {
            format!("/{drive}/{rest}")
        };
    }
    if let Some(unc) = slashed.strip_prefix("//") {
        return format!("/UNC/{unc}");
    }
    slashed
}

/// The host's name, as snapshots, key files and locks record it.
pub fn hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().into_owned();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// The user's name, from the environment (`USER`, `LOGNAME`, Windows' `USERNAME`).
pub fn username() -> String {
    for var in ["USER", "LOGNAME", "USERNAME"] {
        if let Ok(u) = std::env::var(var) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    imp::user_fallback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_paths_take_the_snapshot_form() {
        assert_eq!(snapshot_path("/home/alice"), "/home/alice");
        if WINDOWS_PATHS {
            assert_eq!(snapshot_path(r"C:\Users\alice"), "/C/Users/alice");
            assert_eq!(snapshot_path("c:/Users"), "/C/Users");
            assert_eq!(snapshot_path(r"D:\"), "/D");
            assert_eq!(snapshot_path(r"\\nas\share\x"), "/UNC/nas/share/x");
        } else {
            assert_eq!(snapshot_path(r"C:\Users"), r"C:\Users");
        }
    }

    #[test]
    fn the_host_has_a_name() {
        assert!(!hostname().is_empty());
        assert!(!username().is_empty());
    }
}
