//! What the command line does differently per OS, one file per OS: stop signals
//! (SIGINT/SIGTERM/SIGHUP through `signal-hook`; Ctrl-C and closing the console through
//! `ctrlc` on Windows), stopping a child, running a shell command, where the jobs file
//! and the state live, watching the jobs file, allocator tuning, and (Windows) whether the console is
//! elevated and the daemon as a Windows service. Commands call
//! these and never ask which OS they run on.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

#[cfg(unix)]
pub use imp::mount_owner;
pub use imp::{
    broken_pipe, config_dir, ended_by_signal, open_browser, roots, shell_command, signal_ending,
    state_dir, stop_signals, terminate, tune_allocator, watch_folder,
};
#[cfg(windows)]
pub use imp::{elevated, service};

/// A request to the process from outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Stop (SIGINT, SIGTERM; Ctrl-C, Ctrl-Break, closing the console), with its name.
    Stop(&'static str),
    /// Read the jobs file again (SIGHUP; Windows has none).
    #[cfg_attr(windows, allow(dead_code))]
    Reload,
}

/// The user's home folder (`HOME`, Windows' `USERPROFILE`).
pub fn home() -> std::path::PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/"))
}

/// Starts a program with no standard input or output of ours, without waiting for it.
fn spawn_detached(mut cmd: std::process::Command) -> std::io::Result<()> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
}
