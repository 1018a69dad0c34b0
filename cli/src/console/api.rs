//! The console's page and its JSON API. Job state is read from the state folder as
//! `backazon status` reads it; jobs are changed through `crate::jobs` as `job add` and
//! `job remove` change them (comments kept); snapshots are read through the engine.
//! Engine work runs on threads of its own, never on the server's.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use backazon_engine::index::Index;
use backazon_engine::pack::BlobKind;
use backazon_engine::restore::find_node;
use backazon_engine::snapshot::SnapshotEntry;
use backazon_engine::tree::NodeKind;
use backazon_engine::{Error as EngineError, Kind, Repository};
use futures_util::stream::{self, Stream};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Console;
use crate::commands::daemon::DAEMON_LOCK;
use crate::commands::job::{job_ctx, job_json};
use crate::ctx::Ctx;
use crate::daemon::{ended_by_signal, job_command, Task};
use crate::jobs::{self, Job, StateDir};
use crate::schedule::Schedule;

// ---------------------------------------------------------------------------------------
// Errors: a status, a sentence, and the form field it belongs to when there is one.

pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }

    pub(super) fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        let status = match e.downcast_ref::<EngineError>() {
            Some(EngineError::NotFound(_)) => StatusCode::NOT_FOUND,
            Some(EngineError::WrongPassword) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.message, "field": self.field })),
        )
            .into_response()
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Runs engine work on a thread of its own (the engine blocks, and its S3 client runs
/// a runtime of its own that may not start inside the server's).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await
        .unwrap_or_else(|_| Err(anyhow!("the worker thread ended early")))
        .map_err(ApiError::from)
}

// ---------------------------------------------------------------------------------------
// The page.

pub async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page/index.html"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("page/app.js"),
    )
}

pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("page/app.css"),
    )
}

// ---------------------------------------------------------------------------------------
// Job state: the dashboard.

/// Every job with its state, as `status --json`, and the console's tasks and mounts.
/// `history`: whether each job's last 90 runs are added.
fn status_value(c: &Console, history: bool) -> Value {
    let state = c.state();
    let daemon = state.running(DAEMON_LOCK);
    match jobs::load(&c.child.config) {
        Ok(jobs) => json!({
            "config": c.child.config,
            "windows": cfg!(windows),
            "remote": c.remote.is_some(),
            "daemon": daemon,
            "tasks": c.tasks.json(),
            "mounts": super::ops::mounts_json(c),
            "jobs": jobs.jobs.iter().map(|j| {
                let mut v = job_json(j, &state);
                if history {
                    v["history"] = json!(state.history(&j.name, jobs::HISTORY_RUNS));
                }
                v
            }).collect::<Vec<_>>(),
        }),
        Err(e) => json!({
            "config": c.child.config,
            "windows": cfg!(windows),
            "remote": c.remote.is_some(),
            "daemon": daemon,
            "jobs": [],
            "error": format!("{e:#}"),
        }),
    }
}

pub async fn status(State(c): State<Arc<Console>>) -> Json<Value> {
    Json(status_value(&c, true))
}

/// What makes a job's history change: its last finished run.
fn history_stamp(job: &Value) -> String {
    job["last_run"]["finished"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Server-sent events: the status whenever it changes (the state files are looked at
/// twice a second here, so that the page never polls). A job's history goes with the
/// first event and again only when a run of it has finished since.
pub async fn events(
    State(c): State<Arc<Console>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start = (c, String::new(), HashMap::<String, String>::new());
    let s = stream::unfold(start, |(c, last, mut sent)| async move {
        loop {
            let mut v = status_value(&c, false);
            let now = v.to_string();
            if now != last {
                let state = c.state();
                for j in v["jobs"].as_array_mut().into_iter().flatten() {
                    let name = j["name"].as_str().unwrap_or("").to_string();
                    let stamp = history_stamp(j);
                    if sent.get(&name) != Some(&stamp) {
                        j["history"] = json!(state.history(&name, jobs::HISTORY_RUNS));
                        sent.insert(name, stamp);
                    }
                }
                let ev = Event::default().event("status").data(v.to_string());
                return Some((Ok(ev), (c, now, sent)));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------------------------------
// Jobs: read, create, change, remove, run, cancel.

pub(super) fn load_job(c: &Console, name: &str) -> ApiResult<jobs::LoadedJob> {
    let jobs = jobs::load(&c.child.config)?;
    jobs.get(name)
        .cloned()
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
}

pub async fn get_job(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let j = load_job(&c, &name)?;
    let mut job = serde_json::to_value(&j.job).map_err(anyhow::Error::from)?;
    // A password command may hold a secret itself: it is never sent back.
    if job.get("password_command").is_some() {
        job["password_command"] = json!("");
        job["password_command_set"] = json!(true);
    }
    Ok(Json(json!({ "name": j.name, "job": job })))
}

#[derive(Deserialize)]
pub struct JobForm {
    name: String,
    job: Value,
}

/// Checks a job as the jobs file would, then what only exists on this computer: its
/// folders, and its repository opened with its password. The first problem is named
/// with the form field it belongs to.
async fn checked_job(c: &Arc<Console>, name: &str, job: Value) -> ApiResult<Job> {
    let job: Job = serde_json::from_value(job).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .unwrap_or("");
        ApiError::field(field, msg.clone())
    })?;
    if let Err((key, msg)) = jobs::check_job(name, &job) {
        let field = key
            .strip_prefix(&format!("jobs.{name}"))
            .map(|k| k.trim_start_matches('.'))
            .filter(|k| !k.is_empty())
            .unwrap_or("name");
        return Err(ApiError::field(field, msg));
    }
    for p in &job.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(ApiError::field(
                "paths",
                format!("{} does not exist on this computer", p.display()),
            ));
        }
    }
    open_check(c, &job, "repository").await?;
    Ok(job)
}

/// Opens the job's repository with its password; a failure is named with the field
/// that caused it (`where_`, or the password's field when the password is refused).
async fn open_check(c: &Console, job: &Job, where_: &str) -> ApiResult<()> {
    let global = c.global.clone();
    let j = job.clone();
    blocking(move || {
        job_ctx(&Ctx::new(global), &j).open()?;
        Ok(())
    })
    .await
    .map_err(|e| {
        let field = if e.status == StatusCode::FORBIDDEN {
            if job.password_file.is_some() {
                "password_file"
            } else {
                "password_command"
            }
        } else {
            where_
        };
        ApiError::field(field, e.message)
    })
}

/// "Test connection": opens the form's repository, then its replica alone, with the
/// form's password; says what failed beside its field.
pub async fn test_repository(
    State(c): State<Arc<Console>>,
    Json(form): Json<JobForm>,
) -> ApiResult<Json<Value>> {
    let mut job: Job = serde_json::from_value(form.job)
        .map_err(|e| ApiError::field("repository", e.to_string()))?;
    // Left empty while editing: the saved job's password source.
    if job.password_file.is_none() && job.password_command.is_none() {
        if let Ok(old) = load_job(&c, &form.name) {
            job.password_file = old.job.password_file;
            job.password_command = old.job.password_command;
        }
    }
    if job.password_file.is_none() && job.password_command.is_none() {
        return Err(ApiError::field(
            "password_file",
            "give a password file or command",
        ));
    }
    let replica = job.replica.take();
    open_check(&c, &job, "repository").await?;
    let mut said = vec![format!("{}: opened", job.repository)];
    if let Some(r) = replica {
        let mut alone = job.clone();
        alone.repository = r.clone();
        if job.replica_s3_endpoint.is_some() {
            alone.s3_endpoint = job.replica_s3_endpoint.clone();
        }
        open_check(&c, &alone, "replica").await?;
        said.push(format!("replica {r}: opened"));
    }
    Ok(Json(json!({ "ok": said.join("; ") })))
}

pub async fn create_job(
    State(c): State<Arc<Console>>,
    Json(form): Json<JobForm>,
) -> ApiResult<StatusCode> {
    if jobs::load(&c.child.config)?.get(&form.name).is_ok() {
        return Err(ApiError::field(
            "name",
            format!("a job named {:?} exists already", form.name),
        ));
    }
    let job = checked_job(&c, &form.name, form.job).await?;
    jobs::add(&c.child.config, &form.name, &job)
        .map_err(|e| ApiError::field("", format!("{e:#}")))?;
    Ok(StatusCode::CREATED)
}

pub async fn update_job(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Json(mut form): Json<JobForm>,
) -> ApiResult<StatusCode> {
    let old = load_job(&c, &name)?;
    // Password fields left empty keep the job's password source.
    let given = |k: &str| {
        form.job
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !given("password_file") && !given("password_command") {
        if let Some(f) = &old.job.password_file {
            form.job["password_file"] = json!(f);
        }
        if let Some(cmd) = &old.job.password_command {
            form.job["password_command"] = json!(cmd);
        }
    }
    for k in ["password_file", "password_command"] {
        if form.job.get(k).and_then(Value::as_str) == Some("") {
            form.job.as_object_mut().map(|o| o.remove(k));
        }
    }
    let job = checked_job(&c, &name, form.job).await?;
    jobs::replace(&c.child.config, &name, &job)
        .map_err(|e| ApiError::field("", format!("{e:#}")))?;
    // Opened repositories are found by what opens them: one no job uses may go.
    c.opened.lock().unwrap().clear();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_job(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    jobs::remove(&c.child.config, &name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("{e:#}")))?;
    c.opened.lock().unwrap().clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a backup of the job now, as a process of its own (as the daemon starts one).
pub async fn run_job(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    load_job(&c, &name)?;
    let state = c.state();
    if let Some(who) = state.running(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {name} is running already ({who})"),
        ));
    }
    let mut cmd = job_command(&c.exe, &c.child, Task::Backup, &name);
    cmd.arg("--trigger").arg("console");
    spawn_watched(&c, cmd, &name, Task::Backup)?;
    Ok(StatusCode::ACCEPTED)
}

/// Starts a job's run process and records it as interrupted if a signal ends it (a
/// cancel, or a kill that is notified); it records every other ending itself.
pub(super) fn spawn_watched(
    c: &Console,
    mut cmd: std::process::Command,
    name: &str,
    task: Task,
) -> ApiResult<()> {
    cmd.arg("--quiet")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("starting {}: {e}", c.exe.display()))?;
    let pid = child.id();
    let (dir, config, name) = (
        c.child.state_dir.clone(),
        c.child.config.clone(),
        name.to_string(),
    );
    std::thread::spawn(move || {
        if let Ok(s) = child.wait() {
            if let Some(sig) = crate::sys::ended_by_signal(&s) {
                let jobs = jobs::load(&config).ok();
                let job = jobs.as_ref().and_then(|j| j.get(&name).ok());
                ended_by_signal(&StateDir(dir), job, &name, task, pid, sig);
            }
        }
    });
    Ok(())
}

pub async fn cancel_job(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let state = c.state();
    let pid = state
        .progress(&name)
        .map(|p| p.pid)
        .or_else(|| {
            state.running(&name)?;
            state.read(&name).last_run.map(|r| r.pid)
        })
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, format!("job {name} is not running")))?;
    crate::sys::terminate(pid);
    state.log(&format!(
        "job {name}: cancel asked from the console (pid {pid})"
    ));
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
pub struct NotifyForm {
    name: String,
    notify: crate::notify::Notify,
}

/// "Send test": the notification settings as the form has them (saved or not), each
/// notifier sent a test message; what failed is said per notifier.
pub async fn notify_test(Json(form): Json<NotifyForm>) -> ApiResult<Json<Value>> {
    form.notify
        .validate()
        .map_err(|(k, m)| ApiError::field(&format!("notify.{k}"), m))?;
    if form.notify.webhook.is_none()
        && form.notify.healthchecks.is_none()
        && form.notify.email.is_none()
    {
        return Err(ApiError::field("notify.webhook", "no notifier is set"));
    }
    let failed = blocking(move || {
        let now = Timestamp::now().to_string();
        let rec = crate::jobs::RunRecord {
            started: now.clone(),
            finished: Some(now),
            result: "test".into(),
            trigger: "console".into(),
            summary: Some("a test message from the Backazon console".into()),
            pid: std::process::id(),
            ..Default::default()
        };
        let host = backazon_engine::sys::hostname();
        Ok(form
            .notify
            .finished(&form.name, &host, &rec, crate::notify::Event::Test))
    })
    .await?;
    Ok(Json(json!({ "failed": failed })))
}

#[derive(Deserialize)]
pub struct ScheduleQuery {
    schedule: String,
}

/// The next five runs of a schedule, in this computer's time zone.
pub async fn schedule_preview(Query(q): Query<ScheduleQuery>) -> ApiResult<Json<Value>> {
    let s = Schedule::parse(&q.schedule).map_err(|e| ApiError::field("schedule", e))?;
    let tz = TimeZone::system();
    let mut t = Timestamp::now();
    let mut next = Vec::new();
    while next.len() < 5 {
        let Some(n) = s.next_after(t, &tz) else { break };
        next.push(crate::format::local_time(n));
        t = n;
    }
    Ok(Json(json!({ "next": next })))
}

#[derive(Deserialize)]
pub struct FolderQuery {
    #[serde(default)]
    path: String,
}

/// The folder picker: the subfolders of a folder of this computer.
pub async fn folders(Query(q): Query<FolderQuery>) -> ApiResult<Json<Value>> {
    blocking(move || {
        if q.path.is_empty() {
            let mut roots = crate::sys::roots();
            roots.insert(0, crate::sys::home());
            let folders: Vec<Value> = roots
                .iter()
                .map(|p| json!({ "name": p.display().to_string(), "path": p }))
                .collect();
            return Ok(json!({ "path": "", "parent": null, "folders": folders }));
        }
        let dir = PathBuf::from(&q.path);
        if !dir.is_absolute() {
            anyhow::bail!("{} is not an absolute path", dir.display());
        }
        let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| anyhow!("listing {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        names.sort_by_key(|(n, _)| n.to_lowercase());
        Ok(json!({
            "path": dir,
            "parent": dir.parent(),
            "folders": names.iter().map(|(n, p)| json!({ "name": n, "path": p })).collect::<Vec<_>>(),
        }))
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    job: String,
    /// `error`: only lines of failures and interruptions.
    #[serde(default)]
    level: String,
}

/// The newest 500 lines of the log, of one job or all.
pub async fn log(State(c): State<Arc<Console>>, Query(q): Query<LogQuery>) -> Json<Value> {
    let text = std::fs::read_to_string(c.state().log_path()).unwrap_or_default();
    let needle = format!("] job {}:", q.job);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| q.job.is_empty() || l.contains(&needle))
        .filter(|l| {
            q.level != "error"
                || ["failed", "interrupted", "error", "could not"]
                    .iter()
                    .any(|w| l.contains(w))
        })
        .collect();
    let from = lines.len().saturating_sub(500);
    Json(json!({ "lines": &lines[from..] }))
}

// ---------------------------------------------------------------------------------------
// Snapshots: list, browse, download.

/// A job's repository opened for browsing, with its index.
pub struct Opened {
    pub(super) repo: Repository,
    pub(super) index: Index,
    /// The job's last finished run when opened: a newer run means a newer index.
    stamp: Option<String>,
    /// The snapshots as last listed.
    snapshots: Mutex<Option<Arc<Listed>>>,
}

/// A repository's snapshots: their names, the readable ones oldest first, and a message
/// for each unreadable one.
pub(super) struct Listed {
    names: HashSet<String>,
    pub list: Vec<SnapshotEntry>,
    pub problems: Vec<String>,
}

impl Opened {
    /// A snapshot (id, unique prefix or `latest`) and the tree of one of its folders
    /// (`""` for its root).
    pub(super) fn folder(
        &self,
        snapshot: &str,
        path: &str,
    ) -> backazon_engine::Result<(SnapshotEntry, backazon_engine::Id)> {
        let snap = self.repo.find_snapshot(snapshot)?;
        let tree = match find_node(&self.repo, &self.index, &snap.snapshot.tree, path)? {
            None => snap.snapshot.tree,
            Some(n) => n.subtree.ok_or_else(|| {
                EngineError::NotFound(format!(
                    "{path} is not a folder in snapshot {}",
                    snap.id.short()
                ))
            })?,
        };
        Ok((snap, tree))
    }

    /// The snapshots, oldest first. Only snapshots not seen before are read: the list
    /// of names is all a repeated call costs (10,000 snapshots are read once).
    pub(super) fn snapshots(&self) -> backazon_engine::Result<Arc<Listed>> {
        let names: HashSet<String> = self
            .repo
            .backend()
            .list(Kind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut cached = self.snapshots.lock().unwrap();
        if let Some(l) = cached.as_ref().filter(|l| l.names == names) {
            return Ok(l.clone());
        }
        let known: HashMap<String, SnapshotEntry> = cached
            .take()
            .map(|l| l.list.iter().map(|s| (s.id.to_hex(), s.clone())).collect())
            .unwrap_or_default();
        let mut list = Vec::with_capacity(names.len());
        let mut problems = Vec::new();
        let mut new = Vec::new();
        for name in &names {
            match known.get(name) {
                Some(s) => list.push(s.clone()),
                None => new.push(name.clone()),
            }
        }
        for (name, read) in new.iter().zip(self.repo.read_snapshots(&new)) {
            let Ok(id) = backazon_engine::Id::from_hex(name) else {
                continue;
            };
            match read {
                Ok(snapshot) => list.push(SnapshotEntry { id, snapshot }),
                Err(e) => problems.push(e.to_string()),
            }
        }
        list.sort_by_key(|s| (s.snapshot.timestamp(), s.id));
        let listed = Arc::new(Listed {
            names,
            list,
            problems,
        });
        *cached = Some(listed.clone());
        Ok(listed)
    }
}

/// What makes jobs' repositories one opened repository: where it is and how it opens.
/// Jobs backing up into one repository share its opening (the password stretched once,
/// the index and the snapshots read once).
fn repo_key(job: &Job) -> String {
    json!([
        job.repository,
        job.replica,
        job.s3_endpoint,
        job.replica_s3_endpoint,
        job.s3_path_style,
        job.s3_region,
        job.password_file,
        job.password_command,
    ])
    .to_string()
}

/// The newest finished run of any job writing into the job's repository: a newer one
/// means a newer index.
fn stamp(state: &StateDir, jobs: &jobs::Jobs, key: &str) -> Option<String> {
    jobs.jobs
        .iter()
        .filter(|j| repo_key(&j.job) == key)
        .filter_map(|j| state.read(&j.name).last_run.and_then(|r| r.finished))
        .max()
}

/// The job's repository opened for browsing: the one already open for any job of the
/// same repository unless a run has ended since, else opened now (blocking).
pub(super) fn open_for(c: &Console, name: &str) -> ApiResult<Arc<Opened>> {
    let jobs = jobs::load(&c.child.config)?;
    let job = jobs
        .get(name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?
        .job
        .clone();
    let key = repo_key(&job);
    let stamp_now = stamp(&c.state(), &jobs, &key);
    // One opening at a time: two pages asking at once stretch the password once.
    let _one = c.opening.lock().unwrap();
    if let Some(o) = c.opened.lock().unwrap().get(&key) {
        if o.stamp == stamp_now {
            return Ok(o.clone());
        }
    }
    let repo = job_ctx(&Ctx::new(c.global.clone()), &job).open()?;
    let index = repo.load_index().map_err(anyhow::Error::from)?.index;
    let o = Arc::new(Opened {
        repo,
        index,
        stamp: stamp_now,
        snapshots: Mutex::default(),
    });
    c.opened.lock().unwrap().insert(key, o.clone());
    Ok(o)
}

pub(super) async fn opened(c: &Arc<Console>, name: &str) -> ApiResult<Arc<Opened>> {
    let (c, name) = (c.clone(), name.to_string());
    // A thread of its own, as [`blocking`]'s.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(open_for(&c, &name));
    });
    rx.await
        .unwrap_or_else(|_| Err(anyhow!("the worker thread ended early").into()))
}

/// Opens, on a thread of its own, the repository of every job whose password is in a
/// file and reads its snapshots, so that the first look at them is quick. Jobs with a
/// password command are opened when first looked at (the command may ask someone).
pub(super) fn warm_up(c: Arc<Console>) {
    let _ = std::thread::Builder::new()
        .name("warm-up".into())
        .spawn(move || {
            let Ok(jobs) = jobs::load(&c.child.config) else {
                return;
            };
            let mut seen = HashSet::new();
            for j in &jobs.jobs {
                if j.job.password_file.is_none() || !seen.insert(repo_key(&j.job)) {
                    continue;
                }
                if let Ok(o) = open_for(&c, &j.name) {
                    let _ = o.snapshots();
                }
            }
        });
}

pub async fn snapshots(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let o = opened(&c, &name).await?;
    blocking(move || {
        let snaps = o.snapshots()?;
        let list: Vec<Value> = snaps
            .list
            .iter()
            .rev()
            .map(|s| {
                let sn = &s.snapshot;
                json!({
                    "id": s.id.to_hex(),
                    "short": s.id.short(),
                    "time": sn.time,
                    "host": sn.hostname,
                    "job": sn.job,
                    "tags": sn.tags,
                    "paths": sn.paths,
                    "files": sn.summary.total_files,
                    "bytes": sn.summary.total_bytes,
                    "added": sn.summary.bytes_added,
                    "errors": sn.summary.errors,
                })
            })
            .collect();
        Ok(Json(
            json!({ "snapshots": list, "problems": snaps.problems }),
        ))
    })
    .await
}

#[derive(Deserialize)]
pub struct FolderPage {
    snapshot: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    offset: usize,
    #[serde(default = "page_size")]
    limit: usize,
}

fn page_size() -> usize {
    500
}

/// Stops a tree walk once a page is full.
#[derive(Debug)]
struct PageFull;

impl std::fmt::Display for PageFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("page full")
    }
}

/// One page of a snapshot's folder, in name order. The folder's tree is decoded as it is
/// read and the walk stops once the page is full, so the first page of a folder of
/// 100,000 entries comes without the rest being held.
pub async fn list_folder(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<FolderPage>,
) -> ApiResult<Json<Value>> {
    let o = opened(&c, &name).await?;
    blocking(move || {
        let path = q.path.trim_end_matches('/').to_string();
        let (snap, tree) = o.folder(&q.snapshot, &path)?;
        let limit = q.limit.clamp(1, 5000);
        let mut seen = 0usize;
        let mut entries = Vec::new();
        let mut more = false;
        let walk = o.repo.for_each_tree_node(&o.index, &tree, &mut |n| {
            seen += 1;
            if seen <= q.offset {
                return Ok(());
            }
            if entries.len() == limit {
                more = true;
                return Err(EngineError::Invalid(PageFull.to_string()));
            }
            entries.push(json!({
                "name": n.name.to_string_lossy(),
                "type": n.kind,
                "size": n.size,
                "mtime": crate::format::nanos_to_rfc3339(n.mtime),
            }));
            Ok(())
        });
        match walk {
            Err(EngineError::Invalid(m)) if more && m == PageFull.to_string() => {}
            other => other?,
        }
        Ok(Json(json!({
            "snapshot": snap.id.short(),
            "path": path,
            "offset": q.offset,
            "entries": entries,
            "more": more,
        })))
    })
    .await
}

#[derive(Deserialize)]
pub struct FileQuery {
    snapshot: String,
    path: String,
}

/// `attachment; filename*=UTF-8''...` for any name.
pub(super) fn attachment(name: &str) -> String {
    let enc: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename*=UTF-8''{enc}")
}

/// One file of a snapshot, its chunks read and sent one after another.
pub async fn download(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Response> {
    let o = opened(&c, &name).await?;
    let path = q.path.clone();
    let node = {
        let o = o.clone();
        blocking(move || {
            let snap = o.repo.find_snapshot(&q.snapshot)?;
            find_node(
                &o.repo,
                &o.index,
                &snap.snapshot.tree,
                path.trim_end_matches('/'),
            )?
            .filter(|n| n.kind == NodeKind::File)
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "{path} is not a file in snapshot {}",
                    snap.id.short()
                ))
                .into()
            })
        })
        .await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let file_name = Path::new(&q.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let size = node.size;
    std::thread::spawn(move || {
        for id in &node.content {
            let piece = o
                .repo
                .read_blob(&o.index, BlobKind::Data, id)
                .map(Bytes::from)
                .map_err(|e| std::io::Error::other(format!("reading chunk {}: {e}", id.short())));
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    let body = Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, attachment(&file_name)),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_file_name_is_a_safe_attachment() {
        assert_eq!(
            attachment("a b.txt"),
            "attachment; filename*=UTF-8''a%20b.txt"
        );
        assert_eq!(
            attachment("é\";x"),
            "attachment; filename*=UTF-8''%C3%A9%22%3Bx"
        );
    }
}
