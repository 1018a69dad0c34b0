//! Backup jobs: the jobs file (TOML, hand-editable, validated with line and key in every
//! message), each job's persisted state (last run, result, the schedule slot it covered),
//! the per-job run lock that keeps two runs of one job apart across processes, and the
//! log every run appends to.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use backazon_engine::forget::KeepRules;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::notify::Notify;
use crate::schedule::Schedule;

/// The jobs file: `[settings]` and one `[jobs.NAME]` table per job.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsFile {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub jobs: BTreeMap<String, Spanned<Job>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Jobs the daemon runs at once.
    pub max_concurrent: usize,
    /// A scheduled backup that could not reach its repository is tried again after each
    /// of these pauses (`30s`, `5m`, `1h`) before it counts as failed.
    pub retry_after: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_concurrent: 2,
            retry_after: vec!["5m".into(), "15m".into(), "45m".into()],
        }
    }
}

impl Settings {
    /// The pauses of `retry_after` (checked when the file is read).
    pub fn retry_delays(&self) -> Vec<std::time::Duration> {
        self.retry_after
            .iter()
            .filter_map(|d| parse_pause(d).ok())
            .collect()
    }
}

/// `30s`, `5m`, `2h`.
fn parse_pause(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a pause like 30s, 5m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a pause like 30s, 5m or 2h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One job. Field names are the TOML keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_s3_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub s3_path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    pub paths: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_file: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exclude_caches: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_larger_than: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<i32>,
    /// None: the job runs only with `job run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<String>,
    /// Windows: read files from a Volume Shadow Copy made for each run (cli/src/vss.rs).
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_vss: bool,
    #[serde(default, skip_serializing_if = "KeepRules::is_empty")]
    pub keep: KeepRules,
    #[serde(default, skip_serializing_if = "Notify::is_empty")]
    pub notify: Notify,
}

/// A job checked and ready to run: its name and parsed schedules.
#[derive(Clone, Debug)]
pub struct LoadedJob {
    pub name: String,
    pub job: Job,
    pub schedule: Option<Schedule>,
    pub prune_schedule: Option<Schedule>,
}

pub struct Jobs {
    pub path: PathBuf,
    pub settings: Settings,
    pub jobs: Vec<LoadedJob>,
}

impl Jobs {
    pub fn get(&self, name: &str) -> Result<&LoadedJob> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            anyhow!(
                "no job named {name:?} in {} (see `backazon job list`)",
                self.path.display()
            )
        })
    }
}

/// `line N` for a byte offset of the file.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Checks one job; `Err((key, message))`.
pub(crate) fn check_job(name: &str, job: &Job) -> std::result::Result<LoadedJob, (String, String)> {
    let at = |key: &str, msg: String| (format!("jobs.{name}.{key}"), msg);
    if !valid_name(name) {
        return Err((
            format!("jobs.{name}"),
            "a job name uses letters, digits, '-', '_' and '.' (at most 64, not starting with '.')"
                .into(),
        ));
    }
    if job.repository.trim().is_empty() {
        return Err(at("repository", "is empty".into()));
    }
    if job.paths.is_empty() {
        return Err(at("paths", "names no file or folder to back up".into()));
    }
    for p in &job.paths {
        if !p.is_absolute() {
            return Err(at(
                "paths",
                format!("{} is not an absolute path", p.display()),
            ));
        }
    }
    if job.password_file.is_none() && job.password_command.is_none() {
        return Err(at(
            "password_file",
            "a job needs password_file or password_command (a scheduled run cannot ask)".into(),
        ));
    }
    if job.password_file.is_some() && job.password_command.is_some() {
        return Err(at(
            "password_command",
            "give password_file or password_command, not both".into(),
        ));
    }
    if let Some(s) = &job.exclude_larger_than {
        crate::format::parse_size(s).map_err(|e| at("exclude_larger_than", e))?;
    }
    if let Some(c) = job.compression {
        if !(0..=22).contains(&c) {
            return Err(at("compression", format!("{c} is not a zstd level (0-22)")));
        }
    }
    for g in &job.exclude {
        backazon_engine::glob::Pattern::new(g).map_err(|e| at("exclude", format!("{g:?}: {e}")))?;
    }
    job.keep
        .validate()
        .map_err(|e| at("keep.within", e.to_string()))?;
    job.notify
        .validate()
        .map_err(|(key, e)| at(&format!("notify.{key}"), e))?;
    let schedule = job
        .schedule
        .as_deref()
        .map(Schedule::parse)
        .transpose()
        .map_err(|e| at("schedule", e))?;
    let prune_schedule = job
        .prune_schedule
        .as_deref()
        .map(Schedule::parse)
        .transpose()
        .map_err(|e| at("prune_schedule", e))?;
    if job.use_vss && !cfg!(windows) {
        return Err(at(
            "use_vss",
            "Volume Shadow Copies exist only on Windows; remove the key (here a file that \
             changes while it is read is recorded in the snapshot summary)"
                .into(),
        ));
    }
    Ok(LoadedJob {
        name: name.to_string(),
        job: job.clone(),
        schedule,
        prune_schedule,
    })
}

/// Parses and checks a jobs file's text; messages name the file, line and key.
pub fn parse(path: &Path, text: &str) -> Result<Jobs> {
    let file: JobsFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        match line {
            Some(l) => anyhow!("{} line {l}: {}", path.display(), e.message()),
            None => anyhow!("{}: {}", path.display(), e.message()),
        }
    })?;
    for d in &file.settings.retry_after {
        parse_pause(d).map_err(|e| anyhow!("{}: settings.retry_after: {e}", path.display()))?;
    }
    if file.settings.max_concurrent == 0 {
        bail!(
            "{}: settings.max_concurrent must be at least 1",
            path.display()
        );
    }
    let mut jobs = Vec::new();
    for (name, spanned) in &file.jobs {
        let line = line_of(text, spanned.span().start);
        let job = check_job(name, spanned.get_ref())
            .map_err(|(key, msg)| anyhow!("{} line {line}, {key}: {msg}", path.display()))?;
        jobs.push(job);
    }
    Ok(Jobs {
        path: path.to_path_buf(),
        settings: file.settings,
        jobs,
    })
}

/// Loads the jobs file; a missing file is no jobs.
pub fn load(path: &Path) -> Result<Jobs> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(path, &text)
}

const HEADER: &str = "\
# Backazon backup jobs. `backazon job add` and `job remove` edit this file and keep your
# comments; hand edits are welcome (the daemon reloads it when it changes).
# Keys: repository, replica, paths, exclude, exclude_if_present, exclude_caches,
# exclude_larger_than, tags, host, compression, schedule, prune_schedule,
# password_file | password_command, [jobs.NAME.keep] last/hourly/daily/weekly/monthly/
# yearly/within.  Schedules: hourly, daily HH:MM, weekly DAY HH:MM, monthly DAY HH:MM,
# or cron (5 fields, or 6 with seconds first).

";

/// Writes `text` to `path` whole or not at all, readable by its owner only (the jobs
/// file names password sources; the state files say what ran where), in a folder made
/// for its owner only when it is missing.
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        backazon_engine::sys::create_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = backazon_engine::sys::private_file(&mut OpenOptions::new())
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// Changes the jobs file in place (comments kept), checks the result, then writes it.
pub fn edit(
    path: &Path,
    change: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<()>,
) -> Result<()> {
    let (text, header) = match fs::read_to_string(path) {
        Ok(t) => (t, ""),
        // A new file starts with a comment saying what it is.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), HEADER),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML; fix it first", path.display()))?;
    change(&mut doc)?;
    let new = format!("{header}{doc}");
    parse(path, &new)?;
    write_atomic(path, new.as_bytes())
}

pub fn add(path: &Path, name: &str, job: &Job) -> Result<()> {
    check_job(name, job).map_err(|(key, msg)| anyhow!("{key}: {msg}"))?;
    edit(path, |doc| {
        let jobs = doc
            .entry("jobs")
            .or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                toml_edit::Item::Table(t)
            })
            .as_table_mut()
            .ok_or_else(|| anyhow!("`jobs` in {} is not a table", path.display()))?;
        if jobs.contains_key(name) {
            bail!(
                "a job named {name:?} exists already (remove it first, or edit {})",
                path.display()
            );
        }
        let table = toml_edit::ser::to_document(job)
            .context("serialising the job")?
            .as_table()
            .clone();
        jobs.insert(name, toml_edit::Item::Table(table));
        Ok(())
    })
}

/// Replaces a job's settings, keeping the comments above and inside its table and the
/// layout of every value that did not change.
pub fn replace(path: &Path, name: &str, job: &Job) -> Result<()> {
    check_job(name, job).map_err(|(key, msg)| anyhow!("{key}: {msg}"))?;
    edit(path, |doc| {
        let table = doc
            .get_mut("jobs")
            .and_then(|j| j.as_table_mut())
            .and_then(|j| j.get_mut(name))
            .and_then(|t| t.as_table_mut())
            .ok_or_else(|| anyhow!("no job named {name:?} in {}", path.display()))?;
        let new = toml_edit::ser::to_document(job).context("serialising the job")?;
        let new = new.as_table();
        let gone: Vec<String> = table
            .iter()
            .map(|(k, _)| k.to_string())
            .filter(|k| !new.contains_key(k))
            .collect();
        for k in gone {
            table.remove(&k);
        }
        for (k, v) in new.iter() {
            let same = table
                .get(k)
                .is_some_and(|old| old.to_string().trim() == v.to_string().trim());
            if !same {
                table.insert(k, v.clone());
            }
        }
        Ok(())
    })
}

pub fn remove(path: &Path, name: &str) -> Result<()> {
    edit(path, |doc| {
        let removed = doc
            .get_mut("jobs")
            .and_then(|j| j.as_table_mut())
            .and_then(|j| j.remove(name));
        if removed.is_none() {
            bail!("no job named {name:?} in {}", path.display());
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// State: what happened, per job, in `<state dir>/<job>.json`.

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// `success`, `partial` (some files unreadable), `failed`, `interrupted`, `retrying`
    /// (the repository could not be reached; the daemon tries again at `retry_at`).
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    /// `schedule`, `catch-up`, `resume` (a run the daemon found unfinished) or `manual`.
    pub trigger: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pid: u32,
    /// Which try at this run this is (the daemon tries again when the repository
    /// cannot be reached), from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `retrying`: when the daemon tries again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Notifiers that failed to tell of this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify_errors: Vec<String>,
    /// Figures of a finished backup, for the console's history chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<RunStats>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunStats {
    pub files: u64,
    pub bytes: u64,
    pub bytes_added: u64,
    pub errors: u64,
    pub seconds: f64,
    /// The repository's packs after the run, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_bytes: Option<u64>,
}

/// A run in progress, as its process last wrote it (about twice a second).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunProgress {
    pub pid: u32,
    pub started: String,
    pub files: u64,
    pub bytes_done: u64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub errors: u64,
    /// Bytes the last run of the job covered: what this one will probably reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_bytes: Option<u64>,
    pub current: String,
    /// A prune's step, and how far it is (a backup has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<backazon_engine::progress::StepView>,
}

/// Runs kept in a job's history (`<job>.history`, one JSON record a line).
pub const HISTORY_RUNS: usize = 90;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobState {
    /// The newest schedule slot a run has covered: a slot after it and not after now is
    /// due (once, however many were missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_slot: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune: Option<RunRecord>,
}

pub struct StateDir(pub PathBuf);

impl StateDir {
    fn file(&self, job: &str) -> PathBuf {
        self.0.join(format!("{job}.json"))
    }

    pub fn read(&self, job: &str) -> JobState {
        fs::read(self.file(job))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn write(&self, job: &str, state: &JobState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state)?;
        write_atomic(&self.file(job), &bytes)
    }

    pub fn update(&self, job: &str, f: impl FnOnce(&mut JobState)) -> Result<()> {
        let mut s = self.read(job);
        f(&mut s);
        self.write(job, &s)
    }

    fn progress_file(&self, job: &str) -> PathBuf {
        self.0.join(format!("{job}.progress"))
    }

    pub fn write_progress(&self, job: &str, p: &RunProgress) {
        if let Ok(bytes) = serde_json::to_vec(p) {
            let _ = write_atomic(&self.progress_file(job), &bytes);
        }
    }

    /// The progress of a running job, if a run of it is in progress.
    pub fn progress(&self, job: &str) -> Option<RunProgress> {
        self.running(job)?;
        let b = fs::read(self.progress_file(job)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn clear_progress(&self, job: &str) {
        let _ = fs::remove_file(self.progress_file(job));
    }

    fn history_file(&self, job: &str) -> PathBuf {
        self.0.join(format!("{job}.history"))
    }

    /// Appends a finished run to the job's history; past twice [`HISTORY_RUNS`] records
    /// the file is rewritten with the newest ones.
    pub fn append_history(&self, job: &str, rec: &RunRecord) -> Result<()> {
        let path = self.history_file(job);
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        let mut f = backazon_engine::sys::private_file(&mut OpenOptions::new())
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(&line)
            .with_context(|| format!("writing {}", path.display()))?;
        drop(f);
        let runs = self.history(job, usize::MAX);
        if runs.len() > 2 * HISTORY_RUNS {
            let mut text = Vec::new();
            for r in &runs[runs.len() - HISTORY_RUNS..] {
                text.extend(serde_json::to_vec(r)?);
                text.push(b'\n');
            }
            write_atomic(&path, &text)?;
        }
        Ok(())
    }

    /// The job's newest `most` finished runs, oldest first (a damaged line is skipped).
    pub fn history(&self, job: &str, most: usize) -> Vec<RunRecord> {
        let text = fs::read_to_string(self.history_file(job)).unwrap_or_default();
        let runs: Vec<RunRecord> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let skip = runs.len().saturating_sub(most);
        runs.into_iter().skip(skip).collect()
    }

    pub fn log_path(&self) -> PathBuf {
        self.0.join("backazon.log")
    }

    /// Appends a line to the log file and prints it on stderr (the journal, under systemd).
    pub fn log(&self, line: &str) {
        let stamp = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S");
        let text = format!("{stamp} [{}] {line}\n", std::process::id());
        eprint!("{text}");
        let _ = backazon_engine::sys::create_private_dir(&self.0);
        if let Ok(mut f) = backazon_engine::sys::private_file(&mut OpenOptions::new())
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = f.write_all(text.as_bytes());
        }
    }

    /// Takes the run lock of a job, held until the returned guard is dropped (or the
    /// process ends, however it ends: the OS releases it). std's file locks: `flock` on
    /// Unix, `LockFileEx` on Windows. Who holds it is written beside it (`NAME.run`),
    /// since Windows lets nobody else read a locked file.
    pub fn lock_job(&self, job: &str) -> Result<JobLock> {
        backazon_engine::sys::create_private_dir(&self.0)
            .with_context(|| format!("creating {}", self.0.display()))?;
        let path = self.0.join(format!("{job}.lock"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if f.try_lock().is_err() {
            return Err(AlreadyRunning(format!(
                "job {job} is already running ({}); wait for it to finish",
                self.holder(job)
            ))
            .into());
        }
        let _ = fs::write(
            self.0.join(format!("{job}.run")),
            format!(
                "pid {}, since {}",
                std::process::id(),
                jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S")
            ),
        );
        Ok(JobLock { _file: f })
    }

    fn holder(&self, job: &str) -> String {
        fs::read_to_string(self.0.join(format!("{job}.run")))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Who runs the job now, if anyone.
    pub fn running(&self, job: &str) -> Option<String> {
        let f = File::open(self.0.join(format!("{job}.lock"))).ok()?;
        match f.try_lock_shared() {
            Ok(()) => None,
            Err(_) => Some(self.holder(job)),
        }
    }
}

/// Another run of the job holds its lock (exit code 11, as a locked repository).
#[derive(Debug)]
pub struct AlreadyRunning(pub String);

impl std::fmt::Display for AlreadyRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AlreadyRunning {}

pub struct JobLock {
    _file: File,
}

/// Platform folders: the jobs file and the state folder (`crate::sys`).
pub fn default_config_path() -> PathBuf {
    crate::sys::config_dir().join("backazon").join("jobs.toml")
}

pub fn default_state_dir() -> PathBuf {
    crate::sys::state_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("jobs.toml"), text)
            .err()
            .unwrap()
            .to_string()
    }

    const GOOD: &str = r#"
[settings]
max_concurrent = 1

[jobs.docs]
repository = "/srv/backup"
paths = ["/home/a/Documents"]
schedule = "daily 02:00"
password_file = "/root/pw"

[jobs.docs.keep]
daily = 14
monthly = 12
"#;

    /// An absolute path on this OS (`C:/home/...` on Windows).
    fn abs(p: &str) -> String {
        if cfg!(windows) {
            format!("C:{p}")
        } else {
            p.to_string()
        }
    }

    fn good() -> String {
        GOOD.replace("/home/a/Documents", &abs("/home/a/Documents"))
    }

    #[test]
    fn loads_a_good_file() {
        let j = parse(Path::new("jobs.toml"), &good()).unwrap();
        assert_eq!(j.settings.max_concurrent, 1);
        assert_eq!(j.jobs.len(), 1);
        assert_eq!(j.jobs[0].job.keep.daily, Some(14));
        assert!(j.jobs[0].schedule.is_some());
    }

    #[test]
    fn messages_name_line_and_key() {
        let e = err(&good().replace("daily 02:00", "daily 25:00"));
        assert!(
            e.contains("line 5") && e.contains("jobs.docs.schedule"),
            "{e}"
        );
        let e = err(&good().replace("daily = 14", "dayly = 14"));
        assert!(e.contains("line 12") && e.contains("dayly"), "{e}");
        let e = err(&good().replace("password_file = \"/root/pw\"", ""));
        assert!(e.contains("password_file"), "{e}");
        let e = err(&good().replace(
            &format!("\"{}\"", abs("/home/a/Documents")),
            "\"Documents\"",
        ));
        assert!(e.contains("not an absolute path"), "{e}");
        let e = err(&good().replace("jobs.docs", "jobs.\"my docs\""));
        assert!(e.contains("job name"), "{e}");
        let e = err("[jobs.x\nrepository = 1");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn add_and_remove_keep_comments() {
        let dir = std::env::temp_dir().join(format!("bz-jobs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("jobs.toml");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&path, format!("# mine\n{}", good())).unwrap();
        let job = Job {
            repository: "/r".into(),
            paths: vec![abs("/p").into()],
            password_command: Some("echo pw".into()),
            schedule: Some("0 */5 * * * *".into()),
            keep: KeepRules {
                last: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        add(&path, "photos", &job).unwrap();
        assert!(add(&path, "photos", &job).is_err());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine"), "{text}");
        let j = load(&path).unwrap();
        assert_eq!(j.jobs.len(), 2);
        assert_eq!(j.get("photos").unwrap().job.keep.last, Some(3));
        remove(&path, "docs").unwrap();
        let j = load(&path).unwrap();
        assert_eq!(j.jobs.len(), 1);
        assert!(fs::read_to_string(&path).unwrap().starts_with("# mine"));
        let _ = fs::remove_dir_all(&dir);
    }
}
