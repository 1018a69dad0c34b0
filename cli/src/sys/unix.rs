//! Unix: signals through `signal-hook`, children stopped with SIGTERM (`rustix`), the
//! jobs file watched with inotify on Linux, XDG folders (Application Support on macOS).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc::{channel, Receiver};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};

use super::{home, Signal};

/// SIGINT and SIGTERM as [`Signal::Stop`], SIGHUP as [`Signal::Reload`], from now on
/// (their default actions no longer end the process).
pub fn stop_signals() -> Result<Receiver<Signal>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let ev = match sig {
                    SIGHUP => Signal::Reload,
                    SIGINT => Signal::Stop("SIGINT"),
                    _ => Signal::Stop("SIGTERM"),
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Asks a child to stop (SIGTERM): it ends as a backup killed at any moment does, with
/// everything stored so far kept.
pub fn terminate(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// The signal that ended a child, if one did.
pub fn ended_by_signal(status: &ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// How a signal that ended a child reads in the job's record, and whether someone asked
/// for that stop (SIGTERM: a cancel, the service or system stopping; SIGINT: Ctrl-C).
/// Any other signal is the run killed or crashed: SIGKILL from the out-of-memory killer
/// or `kill -9`, SIGSEGV, SIGBUS, SIGABRT.
pub fn signal_ending(sig: i32) -> (String, bool) {
    let (name, asked) = match sig {
        libc::SIGTERM => ("SIGTERM", true),
        libc::SIGINT => ("SIGINT", true),
        libc::SIGKILL => ("SIGKILL: the out-of-memory killer, or kill -9", false),
        libc::SIGSEGV => ("SIGSEGV", false),
        libc::SIGBUS => ("SIGBUS", false),
        libc::SIGABRT => ("SIGABRT", false),
        _ => return (format!("signal {sig}"), false),
    };
    (format!("signal {sig} ({name})"), asked)
}

/// `sh -c CMD`.
pub fn shell_command(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    c
}

/// Ends the program as a tool killed by SIGPIPE (exit status 141 in the shell): a closed
/// pipe on stdout (`backazon ls | head`). SIGPIPE itself stays ignored otherwise, so a
/// connection reset by a server is an error to retry, not the end of the process.
pub fn broken_pipe() -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(SIGPIPE);
    std::process::exit(1)
}

/// The owner the mounted files show: the user who mounted them.
pub fn mount_owner() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

/// `$XDG_CONFIG_HOME` or `~/.config` (macOS: `~/Library/Application Support`).
pub fn config_dir() -> PathBuf {
    if cfg!(target_os = "macos") {
        return home().join("Library/Application Support");
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".config"))
}

/// `$XDG_STATE_HOME/backazon` or `~/.local/state/backazon` (macOS: in Application Support).
pub fn state_dir() -> PathBuf {
    if cfg!(target_os = "macos") {
        return home().join("Library/Application Support/backazon/state");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(".local/state"))
        .join("backazon")
}

/// glibc raises its mmap threshold as large buffers (packs, chunks) are freed, after
/// which freed chunk buffers stay in per-thread arenas: peak RSS nearly doubles.
/// Fixed thresholds keep large buffers mapped and returned (measured on the kernel
/// tree: 113-128 MB down to about 66 MB, same time).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

/// Calls `changed` whenever a file named `name` in `dir` is written, replaced, created
/// or deleted (inotify on the folder). False when the folder cannot be watched (not
/// Linux): the caller then checks the file's time now and then.
pub fn watch_folder(
    dir: &Path,
    name: &std::ffi::OsStr,
    changed: impl Fn() -> bool + Send + 'static,
) -> bool {
    #[cfg(target_os = "linux")]
    {
        let _ = std::fs::create_dir_all(dir);
        let name = name.to_os_string();
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return false;
        }
        let Ok(cdir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_CREATE
            | libc::IN_DELETE;
        // SAFETY: fd is an inotify descriptor and cdir a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd, cdir.as_ptr(), mask) } < 0 {
            return false;
        }
        std::thread::Builder::new()
            .name("watch-jobs".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    // SAFETY: buf is valid for its length.
                    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                        {
                            continue;
                        }
                        return;
                    }
                    let mut off = 0usize;
                    let mut ours = false;
                    while off + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                        // SAFETY: the kernel wrote a whole event at `off`; read unaligned.
                        let ev: libc::inotify_event =
                            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                        let start = off + std::mem::size_of::<libc::inotify_event>();
                        let end = (start + ev.len as usize).min(n as usize);
                        let raw = &buf[start..end];
                        let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                        if raw == name.as_encoded_bytes() {
                            ours = true;
                        }
                        off = end;
                    }
                    if ours && !changed() {
                        return;
                    }
                }
            })
            .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (dir, name, changed);
        false
    }
}

/// Opens a web address in the user's browser (`open` on macOS, `xdg-open` elsewhere),
/// without waiting for it.
pub fn open_browser(url: &str) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let mut cmd = Command::new(opener);
    cmd.arg(url);
    super::spawn_detached(cmd)
}

/// Where the console's folder picker starts: the file system's one root.
pub fn roots() -> Vec<PathBuf> {
    vec![PathBuf::from("/")]
}
