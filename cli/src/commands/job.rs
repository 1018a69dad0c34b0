//! `backazon job ...`, `daemon` and `status`: jobs defined once and run by hand or on
//! their schedule. A job run is a backup with the job's selection, then the job's
//! retention; its result goes to the job's state and to the log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use backazon_engine::backup::BackupProgress;
use backazon_engine::forget;
use backazon_engine::progress::Steps;
use clap::{Args, Subcommand};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::backup::{BackupArgs, SelectArgs};
use super::forget::KeepArgs;
use crate::ctx::Ctx;
use crate::format::{bytes, local_time};
use crate::jobs::{self, Job, LoadedJob, RunProgress, RunRecord, RunStats, StateDir};
use crate::notify;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Define a job (repository, password and S3 settings come from --repo,
    /// --password-file/--password-command, --replica, --s3-*)
    Add(Box<AddArgs>),
    /// List the jobs
    List,
    /// Show one job as it is stored, with its state
    Show { name: String },
    /// Remove a job (its snapshots stay in the repository)
    Remove { name: String },
    /// Back up now with the job's selection, then apply its retention
    Run(RunArgs),
    /// Prune the job's repository now
    Prune(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    name: String,
    /// The schedule slot this run covers (set by the daemon)
    #[arg(long, hide = true)]
    slot: Option<Timestamp>,
    /// Why the run started: schedule, catch-up or manual (set by the daemon)
    #[arg(long, hide = true, default_value = "manual")]
    trigger: String,
    /// Which try this is at a run whose repository could not be reached (set by the
    /// daemon)
    #[arg(long, hide = true, default_value_t = 1)]
    attempt: u32,
}

#[derive(Args)]
pub struct AddArgs {
    /// Letters, digits, '-', '_', '.'
    name: String,
    /// A file or folder to back up (repeatable)
    #[arg(long = "path", required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    select: SelectArgs,
    /// Tag its snapshots (repeatable)
    #[arg(long)]
    tag: Vec<String>,
    /// Host name recorded in its snapshots
    #[arg(long)]
    host: Option<String>,
    /// zstd level, 0 to store uncompressed
    #[arg(long)]
    compression: Option<i32>,
    /// hourly, 'daily HH:MM', 'weekly DAY HH:MM', 'monthly DAY HH:MM' or a cron
    /// expression (5 fields, or 6 with seconds first); without it the job runs only
    /// with `job run`
    #[arg(long)]
    schedule: Option<String>,
    /// When to prune the repository (same forms as --schedule)
    #[arg(long)]
    prune_schedule: Option<String>,
    #[command(flatten)]
    keep: KeepArgs,
    /// Do not open the repository to check the password
    #[arg(long)]
    no_check: bool,
    /// POST a JSON summary of a run here (see --notify-on; email: edit the jobs file)
    #[arg(long)]
    webhook: Option<String>,
    /// A healthchecks.io-style check URL, pinged at each run's start and end
    #[arg(long)]
    healthchecks: Option<String>,
    /// Which runs the webhook and email tell of: failure, warning, success (repeatable;
    /// default: failure and warning)
    #[arg(long)]
    notify_on: Vec<String>,
    /// Windows: read the files from a Volume Shadow Copy made for each run (the daemon
    /// must run as an administrator)
    #[arg(long)]
    vss: bool,
}

pub fn config_path(ctx: &Ctx) -> PathBuf {
    ctx.global
        .config
        .clone()
        .unwrap_or_else(jobs::default_config_path)
}

pub fn state_dir(ctx: &Ctx) -> StateDir {
    StateDir(
        ctx.global
            .state_dir
            .clone()
            .unwrap_or_else(jobs::default_state_dir),
    )
}

pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("finding the current folder")?
        .join(p))
}

/// The context a job runs in: the job's repository and password over the global options.
pub(crate) fn job_ctx(ctx: &Ctx, job: &Job) -> Ctx {
    let mut g = ctx.global.clone();
    g.repo = Some(job.repository.clone());
    g.replica = job.replica.clone();
    if job.s3_endpoint.is_some() {
        g.s3_endpoint = job.s3_endpoint.clone();
    }
    if job.replica_s3_endpoint.is_some() {
        g.replica_s3_endpoint = job.replica_s3_endpoint.clone();
    }
    g.s3_path_style |= job.s3_path_style;
    if job.s3_region.is_some() {
        g.s3_region = job.s3_region.clone();
    }
    g.password_file = job.password_file.clone();
    g.password_command = job.password_command.clone();
    Ctx::new(g)
}

fn backup_args(name: &str, job: &Job) -> BackupArgs {
    BackupArgs {
        paths: job.paths.clone(),
        select: SelectArgs {
            exclude: job.exclude.clone(),
            exclude_file: job.exclude_file.clone(),
            exclude_if_present: job.exclude_if_present.clone(),
            exclude_caches: job.exclude_caches,
            exclude_larger_than: job.exclude_larger_than.clone(),
        },
        tag: job.tags.clone(),
        host: job.host.clone(),
        job: Some(name.to_string()),
        compression: job.compression.unwrap_or(3),
        vss: job.use_vss,
        ..Default::default()
    }
}

pub fn run(ctx: &Ctx, command: JobCommand) -> Result<u8> {
    let path = config_path(ctx);
    match command {
        JobCommand::Add(a) => add(ctx, &path, a),
        JobCommand::List => list(ctx, &path),
        JobCommand::Show { name } => show(ctx, &path, &name),
        JobCommand::Remove { name } => {
            jobs::remove(&path, &name)?;
            ctx.say(format!(
                "removed job {name} from {} (its snapshots stay in the repository)",
                path.display()
            ));
            Ok(0)
        }
        JobCommand::Run(r) => run_job(ctx, &path, &r),
        JobCommand::Prune(r) => prune_job(ctx, &path, &r),
    }
}

fn add(ctx: &Ctx, path: &Path, a: Box<AddArgs>) -> Result<u8> {
    let a = *a;
    let Some(repository) = ctx.global.repo.clone() else {
        bail!("no repository given: use --repo (or BACKAZON_REPOSITORY)");
    };
    let repository = if repository.contains("://") {
        repository
    } else {
        absolute(Path::new(&repository))?.display().to_string()
    };
    let job = Job {
        repository,
        replica: ctx.global.replica.clone(),
        s3_endpoint: ctx.global.s3_endpoint.clone(),
        replica_s3_endpoint: ctx.global.replica_s3_endpoint.clone(),
        s3_path_style: ctx.global.s3_path_style,
        s3_region: ctx.global.s3_region.clone(),
        paths: a.paths.iter().map(|p| absolute(p)).collect::<Result<_>>()?,
        exclude: a.select.exclude,
        exclude_file: a
            .select
            .exclude_file
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<_>>()?,
        exclude_if_present: a.select.exclude_if_present,
        exclude_caches: a.select.exclude_caches,
        exclude_larger_than: a.select.exclude_larger_than,
        tags: a.tag,
        host: a.host,
        compression: a.compression,
        schedule: a.schedule,
        prune_schedule: a.prune_schedule,
        password_file: ctx
            .global
            .password_file
            .as_deref()
            .map(absolute)
            .transpose()?,
        password_command: ctx.global.password_command.clone(),
        use_vss: a.vss,
        keep: a.keep.rules(),
        notify: notify::Notify {
            on: a.notify_on,
            webhook: a.webhook,
            healthchecks: a.healthchecks,
            email: None,
        },
    };
    if !a.no_check {
        job_ctx(ctx, &job).open().with_context(|| {
            format!(
                "opening {} with the job's password (use --no-check to add the job anyway)",
                job.repository
            )
        })?;
    }
    jobs::add(path, &a.name, &job)?;
    ctx.say(format!("added job {} to {}", a.name, path.display()));
    Ok(0)
}

pub(crate) fn next_of(
    s: &Option<crate::schedule::Schedule>,
    last: Option<Timestamp>,
) -> Option<Timestamp> {
    let now = Timestamp::now();
    s.as_ref()?
        .next_after(last.unwrap_or(now), &TimeZone::system())
}

pub(crate) fn when(t: Option<Timestamp>) -> String {
    match t {
        None => "-".into(),
        Some(t) if t <= Timestamp::now() => format!("due now ({})", local_time(t)),
        Some(t) => local_time(t),
    }
}

fn list(ctx: &Ctx, path: &Path) -> Result<u8> {
    let jobs = jobs::load(path)?;
    let state = state_dir(ctx);
    if ctx.global.json {
        let v: Vec<_> = jobs.jobs.iter().map(|j| job_json(j, &state)).collect();
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if jobs.jobs.is_empty() {
        ctx.say(format!(
            "no jobs in {} (add one with `backazon job add`)",
            path.display()
        ));
        return Ok(0);
    }
    out!(
        "{:<16}  {:<22}  {:<30}  Paths",
        "Job",
        "Schedule",
        "Repository"
    );
    for j in &jobs.jobs {
        out!(
            "{:<16}  {:<22}  {:<30}  {}",
            j.name,
            j.job.schedule.as_deref().unwrap_or("(by hand)"),
            j.job.repository,
            j.job
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(0)
}

/// A job's state in one word, as the console shows it: `running`, `failed` (its last
/// run failed or was interrupted), `overdue` (a scheduled run is more than an hour late:
/// the daemon is not running, or the job cannot start), `retrying` (its repository
/// could not be reached; the daemon tries again), `partial`, `ok` or `never`.
pub(crate) fn state_word(j: &LoadedJob, state: &StateDir) -> &'static str {
    let s = state.read(&j.name);
    if state.running(&j.name).is_some() {
        return "running";
    }
    let late = next_of(&j.schedule, s.last_slot)
        .is_some_and(|t| Timestamp::now().duration_since(t).as_secs() > 3600);
    match s.last_run.as_ref().map(|r| r.result.as_str()) {
        Some("retrying") => "retrying",
        Some("failed" | "interrupted" | "running") => "failed",
        _ if late => "overdue",
        Some("partial") => "partial",
        Some(_) => "ok",
        None => "never",
    }
}

pub(crate) fn job_json(j: &LoadedJob, state: &StateDir) -> serde_json::Value {
    let s = state.read(&j.name);
    serde_json::json!({
        "name": j.name,
        "job": j.job,
        "state": state_word(j, state),
        "progress": state.progress(&j.name),
        "running": state.running(&j.name),
        "last_run": s.last_run,
        "last_success": s.last_success,
        "last_prune": s.last_prune,
        "next_run": next_of(&j.schedule, s.last_slot).map(|t| t.to_string()),
        "next_prune": next_of(&j.prune_schedule, s.prune_slot).map(|t| t.to_string()),
    })
}

fn show(ctx: &Ctx, path: &Path, name: &str) -> Result<u8> {
    let jobs = jobs::load(path)?;
    let j = jobs.get(name)?;
    let state = state_dir(ctx);
    if ctx.global.json {
        out!("{}", serde_json::to_string_pretty(&job_json(j, &state))?);
        return Ok(0);
    }
    let table = toml_edit::ser::to_document(&j.job)?;
    out!("[jobs.{name}]");
    out!("{}", table.to_string().trim_end());
    print_state(j, &state);
    Ok(0)
}

pub(crate) fn print_state(j: &LoadedJob, state: &StateDir) {
    let s = state.read(&j.name);
    if let Some(r) = state.running(&j.name) {
        out!("  running:      {r}");
    }
    match &s.last_run {
        Some(r) => out!("  last run:     {}", describe(r)),
        None => out!("  last run:     never"),
    }
    if let Some(t) = &s.last_success {
        out!("  last success: {}", show_time(t));
    }
    if j.schedule.is_some() {
        out!(
            "  next run:     {}",
            when(next_of(&j.schedule, s.last_slot))
        );
    }
    if j.prune_schedule.is_some() {
        if let Some(r) = &s.last_prune {
            out!("  last prune:   {}", describe(r));
        }
        out!(
            "  next prune:   {}",
            when(next_of(&j.prune_schedule, s.prune_slot))
        );
    }
}

pub(crate) fn show_time(t: &str) -> String {
    t.parse().map(local_time).unwrap_or_else(|_| t.to_string())
}

pub(crate) fn describe(r: &RunRecord) -> String {
    let mut s = format!("{} {} ({})", show_time(&r.started), r.result, r.trigger);
    if let Some(snap) = &r.snapshot {
        s.push_str(&format!(", snapshot {snap}"));
    }
    if let Some(sum) = &r.summary {
        s.push_str(&format!(", {sum}"));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

fn record(state: &StateDir, name: &str, prune: bool, rec: RunRecord) -> Result<()> {
    state.update(name, |s| {
        if prune {
            s.last_prune = Some(rec);
        } else {
            if rec.result == "success" || rec.result == "partial" {
                s.last_success = rec.finished.clone();
            }
            s.last_run = Some(rec);
        }
    })
}

/// The start of a job's backup or prune: the job, its run lock, a log line, and the
/// schedule slot marked covered (whatever the outcome: a failed run is retried at the
/// next slot, not at once).
fn begin(
    ctx: &Ctx,
    path: &Path,
    r: &RunArgs,
    what: &str,
) -> Result<(Begun, StateDir, jobs::JobLock, Timestamp)> {
    let (j, settings) = load_one(path, &r.name)?;
    let state = state_dir(ctx);
    let lock = state.lock_job(&r.name)?;
    let started = Timestamp::now();
    let slot = r.slot.unwrap_or(started);
    state.log(&format!("job {}: {what} started ({})", r.name, r.trigger));
    state.update(&r.name, |s| {
        let covered = if what == "prune" {
            &mut s.prune_slot
        } else {
            &mut s.last_slot
        };
        *covered = Some(covered.map_or(slot, |l| l.max(slot)));
    })?;
    Ok((Begun { job: j, settings }, state, lock, started))
}

/// A run's job, and the jobs file's settings as they were when it began.
struct Begun {
    job: LoadedJob,
    settings: jobs::Settings,
}

/// A job and the jobs file's settings.
fn load_one(path: &Path, name: &str) -> Result<(LoadedJob, jobs::Settings)> {
    let jobs = jobs::load(path)?;
    Ok((jobs.get(name)?.clone(), jobs.settings.clone()))
}

/// Whether a failed run should be tried again later: its repository could not be
/// reached (a server down, a network or a drive not there yet).
fn unreachable(e: &anyhow::Error) -> bool {
    use backazon_engine::Error;
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<Error>(),
            Some(Error::Unreachable(_) | Error::NoRepository(_))
        )
    })
}

fn run_job(ctx: &Ctx, path: &Path, r: &RunArgs) -> Result<u8> {
    let (Begun { job: j, settings }, state, _lock, started) = begin(ctx, path, r, "backup")?;
    let mut rec = RunRecord {
        started: started.to_string(),
        result: "running".into(),
        trigger: r.trigger.clone(),
        pid: std::process::id(),
        attempt: (r.attempt > 1).then_some(r.attempt),
        ..Default::default()
    };
    // What the last run covered: this run's progress is shown against it.
    let expected = state
        .history(&r.name, 1)
        .pop()
        .and_then(|h| h.stats)
        .map(|s| s.bytes);
    record(&state, &r.name, false, rec.clone())?;
    if let Some(e) = j.job.notify.started() {
        state.log(&format!("job {}: {e}", r.name));
    }
    let jctx = job_ctx(ctx, &j.job);
    let progress = Arc::new(super::backup::progress_for(&jctx));
    let writer = ProgressWriter::backup(&state, &r.name, &rec, expected, progress.clone());
    let mut args = backup_args(&r.name, &j.job);
    // Started by a person, who watches it: counted ahead for a true percentage. A
    // scheduled run is measured against the last run instead, at no cost.
    args.count_ahead = matches!(r.trigger.as_str(), "manual" | "console");
    let outcome = super::backup::run_with(&jctx, args, Some(progress));
    drop(writer);
    state.clear_progress(&r.name);
    rec.finished = Some(Timestamp::now().to_string());
    let code = match &outcome {
        Ok((code, done)) => {
            let snap = &done.snapshot;
            let s = &snap.snapshot.summary;
            rec.exit_code = Some(*code);
            rec.result = if *code == 0 { "success" } else { "partial" }.into();
            rec.snapshot = Some(snap.id.short());
            rec.summary = Some(format!(
                "{} files ({} new, {} changed), {} added, {} errors, {:.1} s",
                s.total_files,
                s.files_new,
                s.files_changed,
                bytes(s.bytes_added),
                s.errors,
                s.duration_seconds
            ));
            rec.stats = Some(RunStats {
                files: s.total_files,
                bytes: s.total_bytes,
                bytes_added: s.bytes_added,
                errors: s.errors,
                seconds: s.duration_seconds,
                repository_bytes: Some(done.repository_bytes),
            });
            state.log(&format!(
                "job {}: backup {}: snapshot {}, {}",
                r.name,
                rec.result,
                snap.id.short(),
                rec.summary.as_deref().unwrap_or("")
            ));
            *code
        }
        Err(e) => {
            rec.error = Some(format!("{e:#}"));
            // By hand, the person sees the failure at once; on a schedule the daemon
            // tries again before it counts as failed.
            let delays = settings.retry_delays();
            let by_hand = matches!(r.trigger.as_str(), "manual" | "console");
            match delays.get(r.attempt.max(1) as usize - 1) {
                Some(pause) if unreachable(e) && !by_hand => {
                    let at = Timestamp::now() + *pause;
                    rec.result = "retrying".into();
                    rec.retry_at = Some(at.to_string());
                    state.log(&format!(
                        "job {}: backup could not reach its repository (try {} of {}); \
                         trying again at {}: {e:#}",
                        r.name,
                        r.attempt.max(1),
                        delays.len() + 1,
                        local_time(at)
                    ));
                }
                _ => {
                    rec.result = "failed".into();
                    state.log(&format!("job {}: backup failed: {e:#}", r.name));
                }
            }
            0
        }
    };
    if outcome.is_ok() && !j.job.keep.is_empty() {
        match apply_retention(&jctx, &r.name, &j) {
            Ok((kept, removed)) => state.log(&format!(
                "job {}: retention kept {kept} snapshots, removed {removed}",
                r.name
            )),
            Err(e) => {
                state.log(&format!("job {}: retention failed: {e:#}", r.name));
                rec.error = Some(format!("retention failed: {e:#}"));
            }
        }
    }
    let host = j
        .job
        .host
        .clone()
        .unwrap_or_else(backazon_engine::sys::hostname);
    if rec.result != "retrying" {
        rec.notify_errors = j
            .job
            .notify
            .finished(&r.name, &host, &rec, notify::Event::of(&rec));
    }
    for e in &rec.notify_errors {
        state.log(&format!("job {}: notification failed: {e}", r.name));
    }
    if let Err(e) = state.append_history(&r.name, &rec) {
        state.log(&format!("job {}: keeping its history: {e:#}", r.name));
    }
    record(&state, &r.name, false, rec)?;
    outcome.map(|_| code)
}

/// Writes a running job's progress (what `now` makes of its counters) to the job's
/// state twice a second, until dropped.
struct ProgressWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressWriter {
    fn start(
        state: &StateDir,
        job: &str,
        now: impl Fn() -> RunProgress + Send + 'static,
    ) -> ProgressWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let (state, job, s) = (StateDir(state.0.clone()), job.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !s.load(Relaxed) {
                    state.write_progress(&job, &now());
                    std::thread::park_timeout(Duration::from_millis(500));
                }
            })
            .ok();
        ProgressWriter { stop, thread }
    }

    /// A backup's counters, shown against the selection's whole once counted, else
    /// against what the last run covered.
    fn backup(
        state: &StateDir,
        job: &str,
        rec: &RunRecord,
        expected_bytes: Option<u64>,
        p: Arc<BackupProgress>,
    ) -> ProgressWriter {
        let (pid, started) = (rec.pid, rec.started.clone());
        ProgressWriter::start(state, job, move || RunProgress {
            pid,
            started: started.clone(),
            files: p.files_done.load(Relaxed),
            bytes_done: p.bytes_done.load(Relaxed),
            bytes_read: p.bytes_read.load(Relaxed),
            bytes_added: p.bytes_added.load(Relaxed),
            errors: p.errors.load(Relaxed),
            expected_bytes: if p.totals.done.load(Relaxed) {
                Some(p.totals.bytes.load(Relaxed))
            } else {
                expected_bytes
            },
            current: p.current.lock().unwrap().display().to_string(),
            step: None,
        })
    }
}

impl Drop for ProgressWriter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The job's keep rules over this host's snapshots of the job.
fn apply_retention(ctx: &Ctx, name: &str, j: &LoadedJob) -> Result<(usize, usize)> {
    let repo = ctx.open()?;
    let host = j
        .job
        .host
        .clone()
        .unwrap_or_else(backazon_engine::sys::hostname);
    let (snaps, _) = repo.snapshots()?;
    let mine: Vec<_> = snaps
        .into_iter()
        .filter(|s| s.snapshot.job.as_deref() == Some(name) && s.snapshot.hostname == host)
        .collect();
    let plan = forget::plan(&mine, &j.job.keep, &TimeZone::system())?;
    let removed = forget::forget(&repo, &plan)?;
    Ok((plan.len() - removed, removed))
}

fn prune_job(ctx: &Ctx, path: &Path, r: &RunArgs) -> Result<u8> {
    let (Begun { job: j, .. }, state, _lock, started) = begin(ctx, path, r, "prune")?;
    let jctx = job_ctx(ctx, &j.job);
    let mut rec = RunRecord {
        started: started.to_string(),
        trigger: r.trigger.clone(),
        pid: std::process::id(),
        ..Default::default()
    };
    // Its steps for `status` and the console.
    let steps = Arc::new(Steps::default());
    let writer = {
        let (steps, pid, started) = (steps.clone(), rec.pid, rec.started.clone());
        ProgressWriter::start(&state, &r.name, move || RunProgress {
            pid,
            started: started.clone(),
            step: Some(steps.view()),
            ..Default::default()
        })
    };
    let outcome = jctx.open().and_then(|repo| {
        let opts = backazon_engine::prune::PruneOptions::default();
        backazon_engine::prune::prune(&repo, &opts, &steps).map_err(anyhow::Error::from)
    });
    drop(writer);
    state.clear_progress(&r.name);
    rec.finished = Some(Timestamp::now().to_string());
    match &outcome {
        Ok(p) => {
            rec.result = "success".into();
            rec.exit_code = Some(0);
            rec.summary = Some(format!(
                "{} packs removed, {} repacked; {} -> {}",
                p.packs_unused,
                p.packs_repacked,
                bytes(p.bytes_before),
                bytes(p.bytes_after)
            ));
            state.log(&format!(
                "job {}: prune done: {}",
                r.name,
                rec.summary.as_deref().unwrap_or("")
            ));
        }
        Err(e) => {
            rec.result = "failed".into();
            rec.error = Some(format!("{e:#}"));
            state.log(&format!("job {}: prune failed: {e:#}", r.name));
        }
    }
    record(&state, &r.name, true, rec)?;
    outcome.map(|_| 0)
}
