//! `backazon mount`: every snapshot as a read-only folder until Ctrl-C or SIGTERM, then a
//! clean unmount. The filesystem itself is the `backazon-fs` crate; this file only wires
//! it to the command line and to signals.

use std::path::Path;

use anyhow::Result;

use crate::ctx::Ctx;

pub fn run(
    ctx: &Ctx,
    mountpoint: &Path,
    cache_size: u64,
    allow_other: bool,
    follow_reader: bool,
) -> Result<u8> {
    #[cfg(windows)]
    {
        let _ = (ctx, mountpoint, cache_size, allow_other, follow_reader);
        anyhow::bail!(
            "mounting snapshots as a drive is not in this Windows build yet (it needs WinFsp, \
             https://winfsp.dev, and its adapter is the next release); meanwhile `backazon \
             restore SNAPSHOT:PATH --target FOLDER` copies out what you need"
        )
    }
    #[cfg(unix)]
    {
        use crate::sys::{self, Signal};
        use anyhow::anyhow;
        use backazon_fs::{Options, SnapshotFs};
        use std::sync::Arc;

        // A stale or missing mount point is reported before the password is asked for.
        backazon_fs::fuse::check_mountpoint(mountpoint).map_err(|e| anyhow!(e))?;
        let repo = ctx.open()?;
        let cache = cache_size as usize;
        let opts = Options {
            chunk_cache_bytes: cache / 4 * 3,
            tree_cache_bytes: cache / 4,
            owner: sys::mount_owner(),
            log: Arc::new(|m| eprintln!("{m}")),
            ..Options::default()
        };
        // From here on SIGINT, SIGTERM and SIGHUP come to the loop below instead of
        // killing the process with the drive still mounted.
        let signals = sys::stop_signals()?;
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
            match signals.recv_timeout(std::time::Duration::from_millis(250)) {
                Ok(Signal::Stop(name)) => {
                    if !ctx.global.quiet {
                        eprintln!("{name}: unmounting {}", mountpoint.display());
                    }
                    break;
                }
                Ok(Signal::Reload) | Err(_) => {}
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
}
