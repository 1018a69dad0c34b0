//! `backazon daemon`: the scheduler in the foreground (`crate::daemon`), once per state
//! folder.

use std::sync::mpsc::Receiver;

use anyhow::Result;
use clap::Args;

use super::job::{absolute, config_path, state_dir};
use crate::ctx::Ctx;
use crate::sys::Signal;

/// The daemon's own lock in the state folder ('.' keeps it apart from job names).
pub(crate) const DAEMON_LOCK: &str = ".daemon";

#[derive(Args, Default)]
pub struct DaemonArgs {
    /// Serve the web console too (its address, with an access token, is the first line
    /// of standard output)
    #[cfg(feature = "console")]
    #[arg(long)]
    ui: bool,
    /// The console's port on 127.0.0.1
    #[cfg(feature = "console")]
    #[arg(long, default_value_t = crate::console::DEFAULT_PORT)]
    ui_port: u16,
    #[cfg(feature = "console")]
    #[command(flatten)]
    listen: crate::console::ListenArgs,
}

pub fn run(ctx: &Ctx, args: &DaemonArgs) -> Result<u8> {
    run_with(ctx, args, crate::sys::stop_signals()?)
}

/// The daemon with its stop requests from elsewhere (the Windows service manager).
pub fn run_with(ctx: &Ctx, args: &DaemonArgs, signals: Receiver<Signal>) -> Result<u8> {
    let state = state_dir(ctx);
    let _lock = state.lock_job(DAEMON_LOCK).map_err(|_| {
        anyhow::anyhow!(
            "a daemon is already running for {} ({})",
            state.0.display(),
            state.running(DAEMON_LOCK).unwrap_or_default()
        )
    })?;
    let child = crate::daemon::ChildArgs {
        config: absolute(&config_path(ctx))?,
        state_dir: absolute(&state.0)?,
        cache_dir: ctx.global.cache_dir.clone(),
    };
    // Served until the daemon stops.
    #[cfg(feature = "console")]
    let _console = if args.ui {
        let server = crate::console::start(&ctx.global, child.clone(), args.ui_port, &args.listen)?;
        crate::console::announce(&server, false);
        Some(server)
    } else {
        None
    };
    crate::daemon::run(child, signals)
}
