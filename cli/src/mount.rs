//! `backazon mount`: every snapshot as a read-only folder until Ctrl-C or SIGTERM, then a
//! clean unmount. The filesystem itself is the `backazon-fs` crate; this file only wires
//! it to the command line and to signals.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use backazon_fs::{Options, SnapshotFs};

use crate::Ctx;

pub fn run(
    ctx: &Ctx,
    mountpoint: &Path,
    cache_size: u64,
    allow_other: bool,
    follow_reader: bool,
) -> Result<u8> {
    // A stale or missing mount point is reported before the password is asked for.
    #[cfg(unix)]
    backazon_fs::fuse::check_mountpoint(mountpoint).map_err(|e| anyhow!(e))?;
    let repo = ctx.open()?;
    let cache = cache_size as usize;
    let opts = Options {
        chunk_cache_bytes: cache / 4 * 3,
        tree_cache_bytes: cache / 4,
        owner: owner(),
        log: Arc::new(|m| eprintln!("{m}")),
        ..Options::default()
    };
    #[cfg(unix)]
    {
        // Every thread started from here on inherits this mask, so the signals wait for
        // the loop below instead of killing the process with the drive still mounted.
        let signals = signals::block();
        let fs = SnapshotFs::new(repo, opts)?;
        let mounted = backazon_fs::fuse::mount(
            fs,
            mountpoint,
            &backazon_fs::fuse::MountOptions {
                allow_other,
                follow_reader,
                ..Default::default()
            },
        )
        .map_err(|e| anyhow!(e))?;
        ctx.say(format!(
            "snapshots mounted at {} (read-only); Ctrl-C or SIGTERM unmounts",
            mountpoint.display()
        ));
        loop {
            if let Some(sig) = signals::wait(&signals, 250) {
                if !ctx.global.quiet {
                    eprintln!("signal {sig}: unmounting {}", mountpoint.display());
                }
                break;
            }
            if mounted.ended() {
                ctx.say(format!("{} was unmounted", mountpoint.display()));
                return Ok(0);
            }
        }
        mounted
            .unmount()
            .map_err(|e| anyhow!("unmounting {}: {e}", mountpoint.display()))?;
        ctx.say(format!("unmounted {}", mountpoint.display()));
        Ok(0)
    }
    #[cfg(windows)]
    {
        let fs = SnapshotFs::new(repo, opts)?;
        let _ = (allow_other, follow_reader);
        backazon_fs::winfsp::serve(fs, mountpoint).map_err(|e| anyhow!(e))?;
        Ok(0)
    }
}

#[cfg(unix)]
fn owner() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

#[cfg(not(unix))]
fn owner() -> (u32, u32) {
    (0, 0)
}

#[cfg(unix)]
pub(crate) mod signals {
    pub fn block() -> libc::sigset_t {
        // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only
        // changes this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        }
    }

    /// A blocked signal that arrived within `millis`, if any.
    pub fn wait(set: &libc::sigset_t, millis: i64) -> Option<i32> {
        let timeout = libc::timespec {
            tv_sec: millis / 1000,
            tv_nsec: (millis % 1000) * 1_000_000,
        };
        // SAFETY: `set` is a valid signal set; a null info pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        (sig > 0).then_some(sig)
    }
}
