//! Windows: Ctrl-C, Ctrl-Break and closing the console through `ctrlc`, children
//! stopped with TerminateProcess, `cmd /C` for commands, `%APPDATA%` and
//! `%LOCALAPPDATA%` for the jobs file and the state; the daemon as a Windows service
//! (`service.rs`).

pub mod service;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc::{channel, Receiver};

use anyhow::{Context, Result};
use windows_sys::Win32::Foundation::CloseHandle;
use windows_sys::Win32::System::Threading::{OpenProcess, TerminateProcess, PROCESS_TERMINATE};

use super::{home, Signal};

/// Ctrl-C, Ctrl-Break and closing the console as [`Signal::Stop`], from now on.
pub fn stop_signals() -> Result<Receiver<Signal>> {
    let (tx, rx) = channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(Signal::Stop("Ctrl-C"));
    })
    .context("installing the Ctrl-C handler")?;
    Ok(rx)
}

/// Whether this process runs elevated (as administrator, after a UAC prompt).
pub fn elevated() -> bool {
    use windows_sys::Win32::Security::{
        GetTokenInformation, TokenElevation, TOKEN_ELEVATION, TOKEN_QUERY,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    // SAFETY: the token handle is checked and closed; the output is a plain struct of the
    // size given.
    unsafe {
        let mut token = std::ptr::null_mut();
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return false;
        }
        let mut e = TOKEN_ELEVATION { TokenIsElevated: 0 };
        let mut len = 0u32;
        let ok = GetTokenInformation(
            token,
            TokenElevation,
            &mut e as *mut TOKEN_ELEVATION as *mut std::ffi::c_void,
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        );
        CloseHandle(token);
        ok != 0 && e.TokenIsElevated != 0
    }
}

/// Stops a child at once (Windows has no polite signal for a process without a
/// console of its own): it ends as a backup killed at any moment does, with everything
/// stored so far kept.
pub fn terminate(pid: u32) {
    // SAFETY: the handle is checked and closed; TerminateProcess takes plain values.
    unsafe {
        let h = OpenProcess(PROCESS_TERMINATE, 0, pid);
        if !h.is_null() {
            TerminateProcess(h, 130);
            CloseHandle(h);
        }
    }
}

/// Windows processes end with a code, never a signal.
pub fn ended_by_signal(_: &ExitStatus) -> Option<i32> {
    None
}

/// No child ends by a signal here ([`ended_by_signal`] is `None`): for the callers'
/// sake, as Unix's.
pub fn signal_ending(sig: i32) -> (String, bool) {
    (format!("signal {sig}"), true)
}

/// `cmd /C CMD`.
pub fn shell_command(cmd: &str) -> Command {
    let mut c = Command::new("cmd");
    c.arg("/C").arg(cmd);
    c
}

/// A closed pipe on stdout ends the program quietly.
pub fn broken_pipe() -> ! {
    std::process::exit(1)
}

/// `%APPDATA%` (roaming: the jobs file follows the user).
pub fn config_dir() -> PathBuf {
    std::env::var_os("APPDATA")
        .map(PathBuf::from)
        .unwrap_or_else(home)
}

/// `%LOCALAPPDATA%\backazon\state` (this machine's own).
pub fn state_dir() -> PathBuf {
    std::env::var_os("LOCALAPPDATA")
        .map(PathBuf::from)
        .unwrap_or_else(home)
        .join("backazon")
        .join("state")
}

/// The system allocator needs no tuning.
pub fn tune_allocator() {}

/// Not watched: the daemon checks the jobs file's time at each wake (at least once a
/// minute).
pub fn watch_folder(_: &Path, _: &std::ffi::OsStr, _: impl Fn() -> bool + Send + 'static) -> bool {
    false
}

/// Opens a web address in the user's browser (`start`, through cmd), without waiting.
pub fn open_browser(url: &str) -> std::io::Result<()> {
    let mut cmd = Command::new("cmd");
    cmd.args(["/C", "start", ""]).arg(url);
    super::spawn_detached(cmd)
}

/// Where the console's folder picker starts: the drives that exist (`C:\\`, `D:\\`, ...).
pub fn roots() -> Vec<PathBuf> {
    (b'A'..=b'Z')
        .map(|d| PathBuf::from(format!("{}:\\", d as char)))
        .filter(|p| p.is_dir())
        .collect()
}
