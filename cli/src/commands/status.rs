//! `backazon status`: per job its last run, result and next run, and whether the daemon
//! runs; read from the same state files the daemon and `job run` write.

use anyhow::Result;

use super::daemon::DAEMON_LOCK;
use super::job::{config_path, job_json, print_state, state_dir};
use crate::ctx::Ctx;
use crate::jobs;

pub fn run(ctx: &Ctx) -> Result<u8> {
    let path = config_path(ctx);
    let jobs = jobs::load(&path)?;
    let state = state_dir(ctx);
    let daemon = state.running(DAEMON_LOCK);
    if ctx.global.json {
        let v = serde_json::json!({
            "config": path,
            "state_dir": state.0,
            "log": state.log_path(),
            "daemon": daemon,
            "jobs": jobs.jobs.iter().map(|j| job_json(j, &state)).collect::<Vec<_>>(),
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    match &daemon {
        Some(d) => out!("daemon: running ({d})"),
        None => out!("daemon: not running (scheduled jobs run only while it runs: `backazon daemon` or `backazon service install`)"),
    }
    out!("jobs file: {}", path.display());
    out!("log: {}", state.log_path().display());
    for j in &jobs.jobs {
        out!(
            "\n{} — {} -> {}",
            j.name,
            j.job.schedule.as_deref().unwrap_or("by hand"),
            j.job.repository
        );
        print_state(j, &state);
    }
    Ok(0)
}
