//! `backazon daemon`: the scheduler in the foreground (`crate::daemon`), once per state
//! folder.

use std::sync::mpsc::Receiver;

use anyhow::Result;

use super::job::{absolute, config_path, state_dir};
use crate::ctx::Ctx;
use crate::sys::Signal;

/// The daemon's own lock in the state folder ('.' keeps it apart from job names).
pub(crate) const DAEMON_LOCK: &str = ".daemon";

pub fn run(ctx: &Ctx) -> Result<u8> {
    run_with(ctx, crate::sys::stop_signals()?)
}

/// The daemon with its stop requests from elsewhere (the Windows service manager).
pub fn run_with(ctx: &Ctx, signals: Receiver<Signal>) -> Result<u8> {
    let state = state_dir(ctx);
    let _lock = state.lock_job(DAEMON_LOCK).map_err(|_| {
        anyhow::anyhow!(
            "a daemon is already running for {} ({})",
            state.0.display(),
            state.running(DAEMON_LOCK).unwrap_or_default()
        )
    })?;
    crate::daemon::run(
        crate::daemon::ChildArgs {
            config: absolute(&config_path(ctx))?,
            state_dir: absolute(&state.0)?,
            cache_dir: ctx.global.cache_dir.clone(),
        },
        signals,
    )
}
