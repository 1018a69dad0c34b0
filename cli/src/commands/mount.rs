//! `backazon mount`: every snapshot as a read-only folder (Linux, macOS: FUSE) or drive
//! (Windows: WinFsp) until Ctrl-C or SIGTERM, then a clean unmount. The filesystem
//! itself is the `backazon-fs` crate; this file only wires it to the command line and to
//! signals.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::ctx::Ctx;

#[derive(Args)]
pub struct MountArgs {
    /// An empty folder. Windows: a free drive letter (B:), * for the next free one
    /// counting down from Z:, or a folder that does not exist yet
    pub mountpoint: PathBuf,
    /// Memory for decoded chunks and folders (the data cache on disk is --cache-size)
    #[arg(long, default_value = "64MiB", value_parser = crate::format::parse_size)]
    pub memory: u64,
    /// Let other users see the drive (needs user_allow_other in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Let the drive's threads run on any CPU, instead of on the CPU of the one
    /// program reading it (Linux)
    #[arg(long)]
    pub no_follow_reader: bool,
    /// Windows: a network drive (\\backazon\NAME) instead of a local disk, for
    /// programs that slow down or freeze scanning local disks (not with a folder)
    #[arg(long)]
    pub network: bool,
}

/// What Explorer shows beside the letter: `Backazon` and the repository's last name
/// (`s3://bucket/photos` gives `Backazon photos`).
#[cfg_attr(not(windows), allow(dead_code))]
pub fn volume_label(repo: Option<&str>) -> String {
    let name = repo
        .unwrap_or("")
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\', ':'])
        .find(|p| !p.is_empty())
        .unwrap_or("");
    if name.is_empty() {
        "Backazon".into()
    } else {
        format!("Backazon {name}")
    }
}

/// What the drive cost in requests, for repositories where requests cost (S3): GETs in
/// all and those for file data (ranged reads of packs, several files' worth each).
fn say_requests(
    ctx: &Ctx,
    backend: &dyn backazon_engine::Backend,
    packs: Option<&backazon_engine::fetch::PackReader>,
) {
    if let Some(st) = backend.stats() {
        ctx.say(format!(
            "requests to {}: {} GET ({} for file data), {} list, {:.1} MB received",
            backend.location(),
            st.gets,
            packs.map_or(0, |p| p.fetches()),
            st.lists,
            st.bytes_received as f64 / 1e6
        ));
    }
}

pub fn run(ctx: &Ctx, args: &MountArgs) -> Result<u8> {
    #[cfg(windows)]
    {
        use crate::sys::{self, Signal};
        use anyhow::anyhow;
        use backazon_fs::winfsp::{self, Adapter, MountOptions};
        use backazon_fs::winview::WinView;
        use backazon_fs::{Options, SnapshotFs};
        use std::sync::Arc;

        let point = args.mountpoint.to_string_lossy().into_owned();
        let point = (point != "*").then_some(point);
        // Without WinFsp nothing else matters: said before the password is asked for.
        winfsp::check_installed().map_err(|e| anyhow!(e))?;
        let repo = ctx.open()?;
        let backend = repo.backend().clone();
        let packs = repo.pack_reader().cloned();
        let id = repo.config().id.0;
        let cache = args.memory as usize;
        let opts = Options {
            chunk_cache_bytes: cache / 4 * 3,
            tree_cache_bytes: cache / 4,
            log: Arc::new(|m| eprintln!("{m}")),
            ..Options::default()
        };
        let label = volume_label(ctx.global.repo.as_deref());
        let signals = sys::stop_signals()?;
        let adapter = Adapter::new(WinView::new(SnapshotFs::new(repo, opts)?), &label)
            .map_err(|e| anyhow!(e))?;
        let mounted = winfsp::mount(
            adapter,
            point.as_deref(),
            &MountOptions {
                label,
                network: args.network,
                threads: 0,
                serial: u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
            },
        )
        .map_err(|e| anyhow!(e))?;
        let at = mounted.mount_point().to_string();
        if sys::elevated() && at.ends_with(':') {
            crate::ctx::warn(&format!(
                "this console runs as administrator: Explorer, which does not, will not \
                 see {at} (Windows keeps the drive letters of elevated programs apart). \
                 Mount from a console that is not elevated, or on a folder instead"
            ));
        }
        ctx.say(format!("snapshots at {at} (read-only); Ctrl-C unmounts"));
        while let Ok(signal) = signals.recv() {
            if let Signal::Stop(name) = signal {
                if !ctx.global.quiet {
                    eprintln!("{name}: unmounting {at}");
                }
                break;
            }
        }
        drop(mounted);
        ctx.say(format!("unmounted {at}"));
        say_requests(ctx, &*backend, packs.as_ref());
        Ok(0)
    }
    #[cfg(unix)]
    {
        use crate::sys::{self, Signal};
        use anyhow::anyhow;
        use backazon_fs::{Options, SnapshotFs};
        use std::sync::Arc;

        if args.network {
            anyhow::bail!("--network is for Windows (a network drive rather than a local disk)");
        }
        // A stale or missing mount point is reported before the password is asked for.
        backazon_fs::fuse::check_mountpoint(&args.mountpoint).map_err(|e| anyhow!(e))?;
        let repo = ctx.open()?;
        let backend = repo.backend().clone();
        let packs = repo.pack_reader().cloned();
        let cache = args.memory as usize;
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
            &args.mountpoint,
            &backazon_fs::fuse::MountOptions {
                allow_other: args.allow_other,
                follow_reader: !args.no_follow_reader,
                ..Default::default()
            },
        )
        .map_err(|e| anyhow!(e))?;
        ctx.say(format!(
            "snapshots mounted at {} (read-only); Ctrl-C or SIGTERM unmounts",
            args.mountpoint.display()
        ));
        loop {
            match signals.recv_timeout(std::time::Duration::from_millis(250)) {
                Ok(Signal::Stop(name)) => {
                    if !ctx.global.quiet {
                        eprintln!("{name}: unmounting {}", args.mountpoint.display());
                    }
                    break;
                }
                Ok(Signal::Reload) | Err(_) => {}
            }
            if mounted.ended() {
                ctx.say(format!("{} was unmounted", args.mountpoint.display()));
                say_requests(ctx, &*backend, packs.as_ref());
                return Ok(0);
            }
        }
        mounted
            .unmount()
            .map_err(|e| anyhow!("unmounting {}: {e}", args.mountpoint.display()))?;
        ctx.say(format!("unmounted {}", args.mountpoint.display()));
        say_requests(ctx, &*backend, packs.as_ref());
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_volume_label_names_the_repository() {
        use super::volume_label;
        assert_eq!(volume_label(Some("s3://bucket/photos")), "Backazon photos");
        assert_eq!(volume_label(Some(r"D:\Backups\office\")), "Backazon office");
        assert_eq!(volume_label(Some("/srv/backup/repo")), "Backazon repo");
        assert_eq!(volume_label(Some("s3://bucket")), "Backazon bucket");
        assert_eq!(volume_label(None), "Backazon");
    }
}
