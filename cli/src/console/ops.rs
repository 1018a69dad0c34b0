//! The console's operations on a job's repository beyond browsing: restore a folder to
//! a path, check, prune, compare two snapshots, find a file name across snapshots, and
//! mount every snapshot as a drive. Long ones run as tasks (`tasks.rs`) or, like job
//! runs, as processes of their own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use backazon_engine::index::Index;
use backazon_engine::pack::BlobKind;
use backazon_engine::restore::{self, RestoreOptions, RestoreProgress};
use backazon_engine::tree::{Node, NodeKind};
use backazon_engine::{Id, Repository};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{blocking, load_job, opened, ApiError, ApiResult, Opened};
use super::Console;
use crate::commands::job::job_ctx;
use crate::ctx::Ctx;
use crate::daemon::{job_command, Task};
use crate::format::bytes;

#[derive(Deserialize)]
pub struct RestoreForm {
    snapshot: String,
    #[serde(default)]
    path: String,
    target: String,
    #[serde(default)]
    overwrite: bool,
}

/// Restores a snapshot's folder (or file) into a folder of this computer, counting what
/// it will write first so that the page shows how far it is.
pub async fn restore(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Json(f): Json<RestoreForm>,
) -> ApiResult<Json<Value>> {
    let target = PathBuf::from(f.target.trim());
    if !target.is_absolute() {
        return Err(ApiError::field(
            "target",
            format!(
                "{:?} is not a full path (like /home/alice/restored)",
                f.target
            ),
        ));
    }
    let o = opened(&c, &name).await?;
    let title = format!(
        "Restore {}:{} to {}",
        f.snapshot,
        if f.path.is_empty() { "/" } else { &f.path },
        target.display()
    );
    let id = c.tasks.start("restore", &name, title, move |t| {
        let snap = o.repo.find_snapshot(&f.snapshot)?;
        let path = f.path.trim_end_matches('/');
        let mut opts = RestoreOptions::new(target.clone());
        opts.threads = opts.threads.max(o.repo.backend().concurrency());
        opts.overwrite = f.overwrite;
        // The selection is counted as the restore goes, for the page's percentage.
        opts.count_ahead = true;
        let progress = RestoreProgress::new(|_| {});
        let done = std::thread::scope(|s| {
            let run = s.spawn(|| {
                restore::restore(
                    &o.repo,
                    &o.index,
                    &snap.snapshot.tree,
                    path,
                    &opts,
                    &progress,
                )
            });
            while !run.is_finished() {
                t.files.store(progress.files_done.load(Relaxed), Relaxed);
                t.bytes.store(progress.bytes_done.load(Relaxed), Relaxed);
                if progress.totals.done.load(Relaxed) {
                    let whole = progress.totals.bytes.load(Relaxed);
                    t.total_bytes.store(whole.max(1), Relaxed);
                    t.say("restoring");
                } else {
                    t.say("restoring (counting the selection)");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            run.join().expect("the restore thread")
        })?;
        t.files.store(done.files, Relaxed);
        t.bytes.store(done.bytes, Relaxed);
        t.total_bytes.store(done.bytes.max(1), Relaxed);
        let mut summary = format!(
            "{} files, {} folders, {} restored to {}",
            done.files,
            done.dirs,
            bytes(done.bytes),
            target.display()
        );
        if done.unchanged > 0 {
            summary.push_str(&format!(" ({} already there whole)", done.unchanged));
        }
        if done.errors > 0 {
            anyhow::bail!("{summary}, but {} items could not be restored", done.errors);
        }
        Ok(summary)
    });
    Ok(Json(json!({ "task": id })))
}

#[derive(Deserialize)]
pub struct CheckForm {
    #[serde(default)]
    read_data: bool,
}

/// `check` (and `--read-data`) of the job's repository, as a task.
pub async fn check(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Json(f): Json<CheckForm>,
) -> ApiResult<Json<Value>> {
    let job = load_job(&c, &name)?.job;
    let global = c.global.clone();
    let title = format!(
        "Check {}{}",
        job.repository,
        if f.read_data { ", every byte" } else { "" }
    );
    let id = c.tasks.start("check", &name, title, move |t| {
        let repo = job_ctx(&Ctx::new(global), &job).open()?;
        let r = backazon_engine::check::check(&repo, f.read_data, &t.steps)?;
        if !r.errors.is_empty() {
            let n = r.errors.len();
            anyhow::bail!(
                "{n} problem{}: {}",
                if n == 1 { "" } else { "s" },
                r.errors
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(format!(
            "no errors: {} snapshots, {} trees, {} packs{}",
            r.snapshots,
            r.trees,
            r.packs,
            if r.warnings.is_empty() {
                String::new()
            } else {
                format!("; {} warnings: {}", r.warnings.len(), r.warnings.join("; "))
            }
        ))
    });
    Ok(Json(json!({ "task": id })))
}

/// Prunes the job's repository now, as a process of its own under the job's lock (as
/// the daemon's scheduled prunes run); its result is the job's `last_prune`.
pub async fn prune(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    load_job(&c, &name)?;
    if let Some(who) = c.state().running(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {name} is running ({who}); prune when it is done"),
        ));
    }
    let mut cmd = job_command(&c.exe, &c.child, Task::Prune, &name);
    cmd.arg("--trigger").arg("console");
    super::api::spawn_watched(&c, cmd, &name, Task::Prune)?;
    Ok(StatusCode::ACCEPTED)
}

// ---------------------------------------------------------------------------------------
// A folder as a zip.

#[derive(Deserialize)]
pub struct ZipQuery {
    snapshot: String,
    #[serde(default)]
    path: String,
}

/// Bytes written by the zip writer, sent on to the response in 256 KiB pieces.
struct ToBody {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const PIECE: usize = 256 * 1024;

impl std::io::Write for ToBody {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= PIECE {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::other("the download was cancelled"))
    }
}

/// A zip's time for a node's modification time (zip keeps local time, 1980 to 2107).
fn zip_time(nanos: i64) -> Option<zip::DateTime> {
    let t = jiff::Timestamp::from_nanosecond(nanos as i128).ok()?;
    let d = t.to_zoned(jiff::tz::TimeZone::system()).datetime();
    zip::DateTime::from_date_and_time(
        u16::try_from(d.year()).ok()?,
        d.month() as u8,
        d.day() as u8,
        d.hour() as u8,
        d.minute() as u8,
        d.second() as u8,
    )
    .ok()
}

/// Writes the folder's files and subfolders into the zip, depth first.
fn zip_folder<W: std::io::Write>(
    o: &Opened,
    zip: &mut zip::ZipWriter<zip::write::StreamWriter<W>>,
    tree: &Id,
    prefix: &str,
    depth: usize,
) -> anyhow::Result<()> {
    use std::io::Write;
    if depth >= backazon_engine::MAX_DEPTH {
        return Ok(());
    }
    for n in children(&o.repo, &o.index, tree)? {
        // The name as restore would write it: never a path of its own.
        if !n.name.is_safe_component() {
            continue;
        }
        let path = format!("{prefix}{}", n.name.to_string_lossy());
        let mut opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(n.mode & 0o777)
            .large_file(n.size >= u32::MAX as u64);
        if let Some(t) = zip_time(n.mtime) {
            opts = opts.last_modified_time(t);
        }
        match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(sub)) => {
                zip.add_directory(format!("{path}/"), opts)?;
                zip_folder(o, zip, &sub, &format!("{path}/"), depth + 1)?;
            }
            (NodeKind::File, _) => {
                zip.start_file(path, opts)?;
                for id in &n.content {
                    let data = o
                        .repo
                        .read_blob(&o.index, BlobKind::Data, id)
                        .map_err(|e| anyhow::anyhow!("reading chunk {}: {e}", id.short()))?;
                    zip.write_all(&data)?;
                }
            }
            // Links, devices and the like have no place in a zip a person opens.
            _ => {}
        }
    }
    Ok(())
}

/// A snapshot's folder as a zip, written as it is read: nothing of it is held whole.
pub async fn download_zip(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<ZipQuery>,
) -> ApiResult<Response> {
    let o = opened(&c, &name).await?;
    let path = q.path.trim_end_matches('/').to_string();
    let (tree, label) = {
        let (o, path) = (o.clone(), path.clone());
        blocking(move || {
            let (snap, tree) = o.folder(&q.snapshot, &path)?;
            let last = path
                .rsplit('/')
                .next()
                .filter(|l| !l.is_empty())
                .unwrap_or("snapshot");
            Ok((tree, format!("{last}-{}.zip", snap.id.short())))
        })
        .await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    std::thread::spawn(move || {
        let sink = ToBody {
            tx: tx.clone(),
            buf: Vec::with_capacity(PIECE),
        };
        let mut zip = zip::ZipWriter::new_stream(sink);
        let done = zip_folder(&o, &mut zip, &tree, "", 0)
            .and_then(|()| Ok(zip.finish()?))
            .and_then(|w| Ok(std::io::Write::flush(&mut w.into_inner())?));
        if let Err(e) = done {
            // The browser sees the download fail rather than a zip cut short.
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
    });
    let body = Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, super::api::attachment(&label)),
        ],
        body,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// Comparing two snapshots.

#[derive(Deserialize)]
pub struct DiffQuery {
    a: String,
    b: String,
}

/// Which list of a comparison a path goes to.
const ADDED: usize = 0;
const REMOVED: usize = 1;
const CHANGED: usize = 2;

/// How many paths of each kind a comparison lists (the counts are always whole).
const LISTED: usize = 2000;

#[derive(Default)]
struct Diff {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    counts: [u64; 3],
}

impl Diff {
    fn note(&mut self, which: usize, path: String) {
        self.counts[which] += 1;
        let list = match which {
            ADDED => &mut self.added,
            REMOVED => &mut self.removed,
            _ => &mut self.changed,
        };
        if list.len() < LISTED {
            list.push(path);
        }
    }
}

fn children(repo: &Repository, index: &Index, tree: &Id) -> backazon_engine::Result<Vec<Node>> {
    let mut v = Vec::new();
    repo.for_each_tree_node(index, tree, &mut |n| {
        v.push(n);
        Ok(())
    })?;
    Ok(v)
}

/// Everything under a node, counted as added or removed.
fn note_all(
    repo: &Repository,
    index: &Index,
    n: &Node,
    path: &str,
    which: usize,
    d: &mut Diff,
) -> backazon_engine::Result<()> {
    d.note(which, path.to_string());
    if let Some(sub) = n.subtree {
        for c in children(repo, index, &sub)? {
            let p = format!("{path}/{}", c.name.to_string_lossy());
            note_all(repo, index, &c, &p, which, d)?;
        }
    }
    Ok(())
}

/// Walks two trees side by side in name order; a folder whose tree is the same in both
/// is passed over unread.
fn diff_trees(
    repo: &Repository,
    index: &Index,
    a: &Id,
    b: &Id,
    path: &str,
    d: &mut Diff,
) -> backazon_engine::Result<()> {
    if a == b {
        return Ok(());
    }
    let (old, new) = (children(repo, index, a)?, children(repo, index, b)?);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let n = &old[i];
                note_all(
                    repo,
                    index,
                    n,
                    &format!("{path}/{}", n.name.to_string_lossy()),
                    REMOVED,
                    d,
                )?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = &new[j];
                note_all(
                    repo,
                    index,
                    n,
                    &format!("{path}/{}", n.name.to_string_lossy()),
                    ADDED,
                    d,
                )?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&old[i], &new[j]);
                let p = format!("{path}/{}", y.name.to_string_lossy());
                match (x.kind, y.kind, x.subtree, y.subtree) {
                    (NodeKind::Dir, NodeKind::Dir, Some(s), Some(t)) => {
                        diff_trees(repo, index, &s, &t, &p, d)?
                    }
                    _ if x.kind != y.kind => {
                        note_all(repo, index, x, &p, REMOVED, d)?;
                        note_all(repo, index, y, &p, ADDED, d)?;
                    }
                    _ if x.content != y.content || x.size != y.size || x.target != y.target => {
                        d.note(CHANGED, p)
                    }
                    _ => {}
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// What changed from snapshot `a` to snapshot `b`: files and folders added, removed,
/// and files whose contents changed.
pub async fn diff(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Value>> {
    let o = opened(&c, &name).await?;
    blocking(move || {
        let a = o.repo.find_snapshot(&q.a)?;
        let b = o.repo.find_snapshot(&q.b)?;
        let mut d = Diff::default();
        diff_trees(
            &o.repo,
            &o.index,
            &a.snapshot.tree,
            &b.snapshot.tree,
            "",
            &mut d,
        )?;
        Ok(Json(json!({
            "a": { "id": a.id.short(), "time": a.snapshot.time },
            "b": { "id": b.id.short(), "time": b.snapshot.time },
            "added": d.added, "removed": d.removed, "changed": d.changed,
            "counts": {
                "added": d.counts[ADDED],
                "removed": d.counts[REMOVED],
                "changed": d.counts[CHANGED],
            },
            "listed": LISTED,
        })))
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Finding a file name across snapshots.

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
}

/// Matches returned at most.
const FOUND: usize = 500;

/// Paths under `tree` whose name holds `needle` (lowercase), relative to it; trees met
/// before (the same folder in many snapshots) are answered from `memo`.
fn search_tree(
    repo: &Repository,
    index: &Index,
    tree: &Id,
    needle: &str,
    memo: &mut HashMap<Id, Arc<Vec<(String, Node)>>>,
    depth: usize,
) -> backazon_engine::Result<Arc<Vec<(String, Node)>>> {
    if let Some(m) = memo.get(tree) {
        return Ok(m.clone());
    }
    let mut found = Vec::new();
    if depth < backazon_engine::MAX_DEPTH {
        for n in children(repo, index, tree)? {
            let name = n.name.to_string_lossy();
            if let Some(sub) = n.subtree {
                for (p, m) in search_tree(repo, index, &sub, needle, memo, depth + 1)?.iter() {
                    if found.len() < FOUND {
                        found.push((format!("/{name}{p}"), m.clone()));
                    }
                }
            }
            if name.to_lowercase().contains(needle) && found.len() < FOUND {
                found.push((format!("/{name}"), n));
            }
        }
    }
    let found = Arc::new(found);
    memo.insert(*tree, found.clone());
    Ok(found)
}

/// Files and folders whose name holds the text, in every snapshot of the job's
/// repository, newest snapshot first.
pub async fn search(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Value>> {
    let needle = q.q.trim().to_lowercase();
    if needle.is_empty() {
        return Err(ApiError::field("q", "type part of a file name"));
    }
    let o = opened(&c, &name).await?;
    blocking(move || {
        let snaps = o.snapshots()?;
        let mut memo = HashMap::new();
        let mut hits = Vec::new();
        let started = std::time::Instant::now();
        let mut complete = true;
        for s in snaps.list.iter().rev() {
            if hits.len() >= FOUND || started.elapsed() > Duration::from_secs(20) {
                complete = false;
                break;
            }
            let found = search_tree(&o.repo, &o.index, &s.snapshot.tree, &needle, &mut memo, 0)?;
            for (p, n) in found.iter().take(FOUND - hits.len()) {
                hits.push(json!({
                    "snapshot": s.id.short(),
                    "time": s.snapshot.time,
                    "path": p,
                    "type": n.kind,
                    "size": n.size,
                    "mtime": crate::format::nanos_to_rfc3339(n.mtime),
                }));
            }
        }
        Ok(Json(json!({ "hits": hits, "complete": complete })))
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Mounting.

#[derive(Deserialize)]
pub struct MountForm {
    mountpoint: String,
}

/// The job's repository as CLI options, for a `mount` child.
fn repo_args(c: &Console, job: &crate::jobs::Job) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec!["--repo".into(), job.repository.clone().into()];
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            a.push(k.into());
            a.push(v.into());
        }
    };
    opt("--replica", &job.replica);
    opt("--s3-endpoint", &job.s3_endpoint);
    opt("--replica-s3-endpoint", &job.replica_s3_endpoint);
    opt("--s3-region", &job.s3_region);
    opt("--password-command", &job.password_command);
    if let Some(f) = &job.password_file {
        a.push("--password-file".into());
        a.push(f.into());
    }
    if job.s3_path_style {
        a.push("--s3-path-style".into());
    }
    if let Some(cache) = &c.child.cache_dir {
        a.push("--cache-dir".into());
        a.push(cache.into());
    }
    a
}

/// Mounts every snapshot of the job's repository (`backazon mount`, a process of its
/// own) until unmounted here or the console stops.
pub async fn mount(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
    Json(f): Json<MountForm>,
) -> ApiResult<Json<Value>> {
    let job = load_job(&c, &name)?.job;
    let point = f.mountpoint.trim().to_string();
    if point.is_empty() {
        return Err(ApiError::field(
            "mountpoint",
            "give an empty folder (Windows: a drive letter)",
        ));
    }
    if c.mounts.lock().unwrap().contains_key(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("job {name}'s repository is mounted already"),
        ));
    }
    let mut cmd = std::process::Command::new(&c.exe);
    cmd.args(repo_args(&c, &job))
        .arg("--quiet")
        .arg("mount")
        .arg(&point)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    crate::password::scrub(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", c.exe.display()))?;
    // A mount that fails (not empty, no FUSE, wrong password) ends at once and says why.
    let ended = blocking(move || {
        for _ in 0..40 {
            if let Some(status) = child.try_wait()? {
                let mut why = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut why);
                }
                return Ok(Err(format!("mount ended ({status}): {}", why.trim())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Ok(child))
    })
    .await?;
    let child = ended.map_err(|e| ApiError::field("mountpoint", e))?;
    c.mounts.lock().unwrap().insert(
        name.clone(),
        Mounted {
            point: point.clone(),
            child,
        },
    );
    Ok(Json(json!({ "mountpoint": point })))
}

pub async fn unmount(
    State(c): State<Arc<Console>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let m = c.mounts.lock().unwrap().remove(&name);
    let Some(mut m) = m else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {name}'s repository is not mounted here"),
        ));
    };
    blocking(move || {
        m.stop();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A `backazon mount` the console started.
pub struct Mounted {
    pub point: String,
    child: Child,
}

impl Mounted {
    /// Asks the mount to end (it unmounts cleanly on SIGTERM), then waits for it.
    pub fn stop(&mut self) {
        crate::sys::terminate(self.child.id());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mounts still there: their mount points by job.
pub fn mounts_json(c: &Console) -> Value {
    let mut m = c.mounts.lock().unwrap();
    // One that ended by itself (unmounted from outside) is no longer listed.
    m.retain(|_, v| matches!(v.child.try_wait(), Ok(None)));
    json!(m
        .iter()
        .map(|(k, v)| (k.clone(), v.point.clone()))
        .collect::<HashMap<_, _>>())
}
