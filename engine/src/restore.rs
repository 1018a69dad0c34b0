//! The restore operation: walks a snapshot's trees, creates folders, links and special
//! files in this thread, and restores file contents on worker threads. Every chunk is
//! verified before it is written; a file whose data cannot be read is removed and named,
//! and the others are restored. Nothing is ever written outside the target: every name
//! is checked, entries must be strictly sorted (no duplicates), existing symlinks in the
//! way are replaced, never followed, and a folder's metadata is applied through the
//! folder itself.
//!
//! Names the target cannot hold as they are (Windows' rules; two names that differ only
//! in case, in a folder that ignores case) are restored under another name
//! (`crate::names`), listed in the summary. Without that, a folder `A` and a link `a`
//! beside it would be one entry on such a folder, and `A`'s files would be written
//! wherever the link points. As a second guard, a folder this restore made is never
//! removed to make room for another entry (on Unix, where a file's identity is cheap).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::sync_channel;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::glob::{any_matches, Pattern};
use crate::id::Id;
use crate::index::Index;
use crate::names::{self, Renamed};
use crate::pack::BlobKind;
use crate::progress::{StopCount, Totals};
use crate::repo::Repository;
use crate::sys;
use crate::tree::{Name, Node, NodeKind, Tree};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    pub threads: usize,
    /// Restore owners (only possible as root).
    pub owners: bool,
    /// Write every file, even one already there whole (same size and modification time
    /// as in the snapshot), which is otherwise left as it is.
    pub overwrite: bool,
    /// Count what would be restored, writing nothing.
    pub dry_run: bool,
    /// Count the selection on a thread of its own while the restore runs, into
    /// [`RestoreProgress::totals`] (a front end's percentage and time left).
    pub count_ahead: bool,
}

impl RestoreOptions {
    pub fn new(target: PathBuf) -> RestoreOptions {
        RestoreOptions {
            target,
            include: Vec::new(),
            exclude: Vec::new(),
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            owners: sys::can_restore_owners(),
            overwrite: false,
            dry_run: false,
            count_ahead: false,
        }
    }
}

pub struct RestoreProgress {
    /// Files restored or found already there whole, and their bytes.
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    pub errors: AtomicU64,
    /// The selection's whole, with [`RestoreOptions::count_ahead`].
    pub totals: Totals,
    warn: Box<dyn Fn(&str) + Send + Sync>,
}

impl RestoreProgress {
    pub fn new(warn: impl Fn(&str) + Send + Sync + 'static) -> RestoreProgress {
        RestoreProgress {
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            totals: Totals::default(),
            warn: Box::new(warn),
        }
    }

    fn warn(&self, msg: String) {
        self.errors.fetch_add(1, Relaxed);
        (self.warn)(&msg);
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Files restored (or, in a dry run, to restore); not those left as they were.
    pub files: u64,
    /// Files already there whole, left as they were (not counted in `files`, `bytes`).
    pub unchanged: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Entries restored under another name than the snapshot's.
    pub renamed: Vec<RenamedEntry>,
    /// Entries this system cannot hold at all (fifos, sockets, devices on Windows).
    pub skipped: Vec<SkippedEntry>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RenamedEntry {
    /// The entry's path in the snapshot.
    pub path: String,
    /// Where it was restored.
    pub restored_as: PathBuf,
    pub reason: Renamed,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SkippedEntry {
    pub path: String,
    pub reason: String,
}

/// Finds the node at `path` ("/home/alice/x") in a snapshot; `None` for the root.
pub fn find_node(repo: &Repository, index: &Index, root: &Id, path: &str) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found = None;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // The path is checked as every tree entry is: a snapshot may hold an entry named
    // `..`, and restoring it by name would write (or clear) the target's parent.
    if let Some(bad) = parts
        .iter()
        .find(|p| !Name(p.as_bytes().to_vec()).is_safe_component())
    {
        return Err(Error::Invalid(format!(
            "{path}: {bad:?} cannot be part of a path in a snapshot; name folders and files \
             as they are listed (`backazon ls`), without `.` or `..`"
        )));
    }
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.read_tree(index, &tree_id)?;
        let node = tree
            .find(part.as_bytes())
            .ok_or_else(|| Error::NotFound(format!("{path}: not in this snapshot")))?
            .clone();
        if i + 1 < parts.len() {
            tree_id = node
                .subtree
                .ok_or_else(|| Error::NotFound(format!("{path}: {part} is not a directory")))?;
        }
        found = Some(node);
    }
    Ok(found)
}

mod later;
mod packs;

/// Hands files to the workers in batches: one wake-up per batch, not per file.
struct Batcher {
    tx: std::sync::mpsc::SyncSender<Vec<FileJob>>,
    batch: Vec<FileJob>,
    bytes: u64,
    /// A batch closes at this many files or bytes: larger for backends where reads are
    /// requests, so that more neighbouring blobs share one.
    max_files: usize,
    max_bytes: u64,
}

impl Batcher {
    fn push(&mut self, job: FileJob) {
        self.bytes = self.bytes.saturating_add(job.node.size);
        self.batch.push(job);
        if self.batch.len() >= self.max_files || self.bytes >= self.max_bytes {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.bytes = 0;
            let _ = self.tx.send(std::mem::take(&mut self.batch));
        }
    }
}

struct FileJob {
    dest: PathBuf,
    snap_path: String,
    node: Node,
}

/// The folders this restore made, by file identity (Unix): never removed to make room
/// for another entry, which could only be one whose name the file system takes for the
/// folder's (case, Unicode normalisation).
#[derive(Default)]
struct MadeDirs(Mutex<HashSet<(u64, u64)>>);

impl MadeDirs {
    fn add(&self, path: &Path) {
        if let Some(id) = fs::symlink_metadata(path)
            .ok()
            .and_then(|m| sys::file_id(&m))
        {
            self.0.lock().unwrap().insert(id);
        }
    }

    fn holds(&self, md: &fs::Metadata) -> bool {
        sys::file_id(md).is_some_and(|id| self.0.lock().unwrap().contains(&id))
    }
}

/// A folder on the way to the entries being restored, made when the first of them is.
struct PendingDir {
    path: PathBuf,
    node: Node,
    made: bool,
    /// Made by this restore, so empty: nothing in it can be intact already.
    fresh: bool,
    /// Listed once the folder is made, if it is restored under another name.
    renamed: Option<RenamedEntry>,
}

struct Restorer<'a> {
    repo: &'a Repository,
    index: &'a Index,
    opts: &'a RestoreOptions,
    progress: &'a RestoreProgress,
    made: &'a MadeDirs,
    /// Whether the target ignores case, found out when first needed.
    ignores_case: OnceLock<bool>,
    /// Folders made so far, for their metadata at the end (deepest last).
    dirs: later::FolderMetadata,
    /// (device, inode) of a file with several links -> where it was restored.
    hard_links: HashMap<(u64, u64), PathBuf>,
    pending_links: Vec<(PathBuf, PathBuf, String)>,
    summary: RestoreSummary,
    /// The target was made by this restore or was empty.
    target_fresh: bool,
    /// Bytes and files the target's file system had room for at the start.
    room: Option<(u64, Option<u64>)>,
    /// Why the walk stopped early, when it did.
    stopped: Option<String>,
}

/// Removes whatever non-folder is at `path`, so creating there never follows a link. A
/// folder in the way is removed too, unless this restore made it.
fn clear_for_create(path: &Path, made: &MadeDirs) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() && made.holds(&md) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a folder this restore made has that name here (the file system takes the two \
             names for one); left as it is",
        )),
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes a folder unless one is there; `true` when it was made (and so is empty).
fn ensure_dir(path: &Path) -> std::io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Ok(false),
        Ok(_) => {
            fs::remove_file(path)?;
            fs::create_dir(path).map(|_| true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(path).map(|_| true),
        Err(e) => Err(e),
    }
}

/// Whether a file restored earlier (by a run that was interrupted, say) is already
/// there whole: a regular file of the size its chunks hold, with the snapshot's
/// modification time. Restore sets that time only once every byte is written, so a file
/// cut short has the time of its interruption instead.
fn intact(path: &Path, node: &Node, size: u64) -> bool {
    let Ok(md) = fs::symlink_metadata(path) else {
        return false;
    };
    let mtime = md.modified().ok().and_then(|t| {
        let ns = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).ok()?,
            Err(e) => -i64::try_from(e.duration().as_nanos()).ok()?,
        };
        Some(ns)
    });
    md.file_type().is_file() && md.len() == size && mtime == Some(node.mtime)
}

/// Whether `dir` takes names that differ only in case for one: a probe file made
/// there and looked up in upper case. If no probe can be made, it is assumed to.
fn folder_ignores_case(dir: &Path) -> bool {
    let probe = format!(".backazon-case-probe-{}", Id::random().short());
    let lower = dir.join(&probe);
    if fs::File::create(&lower).is_err() {
        return true;
    }
    let ignores = fs::symlink_metadata(dir.join(probe.to_uppercase())).is_ok();
    let _ = fs::remove_file(&lower);
    ignores
}

/// The walk's stack: [`crate::MAX_DEPTH`] levels take about a tenth of it.
const WALK_STACK: usize = 256 << 20;

/// Files restored pack by pack at once from a remote repository: each pack is read once
/// per batch, so once in all for a restore of up to this many files; the batch's plan is
/// what a restore holds in memory.
const PACK_ORDER_FILES: usize = 200_000;

fn restore_file(
    repo: &Repository,
    index: &Index,
    job: &FileJob,
    owners: bool,
    made: &MadeDirs,
    progress: &RestoreProgress,
) -> bool {
    let dest = &job.dest;
    let result = (|| -> Result<()> {
        // Into an empty target the first try succeeds; otherwise replace what is there.
        let mut f = match sys::create_file(dest, job.node.mode) {
            Ok(f) => f,
            Err(_) => {
                clear_for_create(dest, made).map_err(|e| Error::io("replacing", dest, e))?;
                sys::create_file(dest, job.node.mode).map_err(|e| Error::io("creating", dest, e))?
            }
        };
        for id in &job.node.content {
            let data = repo.read_blob(index, BlobKind::Data, id)?;
            f.write_all(&data)
                .map_err(|e| Error::io("writing", dest, e))?;
            progress.bytes_done.fetch_add(data.len() as u64, Relaxed);
        }
        sys::apply_file_metadata(&f, &job.node, owners)
            .map_err(|e| Error::io("setting metadata of", dest, e))
    })();
    match result {
        Ok(()) => {
            progress.files_done.fetch_add(1, Relaxed);
            true
        }
        Err(e) => {
            let _ = fs::remove_file(dest);
            progress.warn(format!("{}: not restored: {e}", job.snap_path));
            false
        }
    }
}

impl Restorer<'_> {
    /// Whether one more file of `size` bytes fits what the target had room for. What a
    /// snapshot expands to is only known by walking it (folders shared many times over
    /// can make a 1 MB repository claim terabytes), so the walk stops, before handing
    /// out the file that would not fit, rather than fill the disk.
    fn fits(&mut self, size: u64) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        let Some((bytes, files)) = self.room else {
            return true;
        };
        let need = self.summary.bytes.saturating_add(size);
        let count = self.summary.files + self.summary.dirs + 1;
        if need > bytes || files.is_some_and(|f| count > f) {
            self.stopped = Some(format!(
                "{} needs more than the {} bytes{} free where it is restored: stopped \
                 after {} files ({} bytes); restore less (SNAPSHOT:PATH, --include) or \
                 make room",
                self.opts.target.display(),
                bytes,
                files.map_or(String::new(), |f| format!(" and {f} files")),
                self.summary.files,
                self.summary.bytes
            ));
            return false;
        }
        true
    }

    /// Creates the folders on the way to an entry that is restored inside them.
    fn make_dirs(&mut self, stack: &mut [PendingDir]) -> bool {
        for PendingDir {
            path,
            node,
            made,
            fresh,
            renamed,
        } in stack.iter_mut()
        {
            if !*made {
                if !self.fits(0) {
                    return false;
                }
                if self.opts.dry_run {
                    *fresh = !path.exists();
                } else {
                    match ensure_dir(path) {
                        Ok(new) => *fresh = new,
                        Err(e) => {
                            self.progress
                                .warn(format!("{}: cannot create folder: {e}", path.display()));
                            return false;
                        }
                    }
                    self.made.add(path);
                }
                self.summary.renamed.extend(renamed.take());
                *made = true;
                self.summary.dirs += 1;
                if !self.opts.dry_run {
                    if let Err(e) = self.dirs.push(path.clone(), node.clone()) {
                        self.progress.warn(format!(
                            "{}: its times and mode will not be set: {e}",
                            path.display()
                        ));
                    }
                }
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        tree_id: &Id,
        dest: &Path,
        snap_path: &str,
        included: bool,
        stack: &mut Vec<PendingDir>,
        jobs: &mut Batcher,
    ) {
        let large = self
            .index
            .get(tree_id)
            .is_some_and(|l| l.raw_length > crate::repo::STREAM_OVER);
        if large {
            return self.walk_large(tree_id, dest, snap_path, included, stack, jobs);
        }
        let tree: Tree = match self.repo.read_tree(self.index, tree_id) {
            Ok(t) => t,
            Err(e) => {
                self.progress
                    .warn(format!("{snap_path}/: folder not restored: {e}"));
                return;
            }
        };
        if self.stopped.is_some() {
            return;
        }
        let mut previous: Option<&[u8]> = None;
        let mut valid = Vec::with_capacity(tree.nodes.len());
        for node in &tree.nodes {
            if self.valid_entry(snap_path, &node.name, previous, true) {
                previous = Some(&node.name.0);
                valid.push(node);
            }
        }
        let names: Vec<&[u8]> = valid.iter().map(|n| n.name.0.as_slice()).collect();
        let target_root = &self.opts.target;
        let cell = &self.ignores_case;
        let placed = names::place(&names, sys::NAME_RULE, || {
            *cell.get_or_init(|| folder_ignores_case(target_root))
        });
        for (node, place) in valid.into_iter().zip(placed) {
            self.entry(node, place, dest, snap_path, included, stack, jobs);
        }
    }

    /// Whether a folder's entry may be restored: a safe name, after the one before it
    /// (`previous`) in the folder's order. Says why not when `warn`.
    fn valid_entry(
        &self,
        snap_path: &str,
        name: &Name,
        previous: Option<&[u8]>,
        warn: bool,
    ) -> bool {
        let why = if !name.is_safe_component() {
            "the snapshot holds an unsafe name {}; refusing to restore it"
        } else if previous.is_some_and(|p| p >= name.0.as_slice()) {
            "the snapshot's folder lists {} out of order or twice; refusing it"
        } else {
            return true;
        };
        if warn {
            let quoted = format!("{:?}", name.to_string_lossy());
            self.progress
                .warn(format!("{snap_path}/: {}", why.replace("{}", &quoted)));
        }
        false
    }

    /// [`Restorer::walk`] for a folder too large to hold (over 8 MiB of tree: a folder
    /// of some 50,000 entries or more): its entries are read as they are decoded, in a
    /// pass that plans their names ([`names::LargePlace`]), a second when some must
    /// change, and the pass that restores them; memory holds one entry at a time.
    #[allow(clippy::too_many_arguments)]
    fn walk_large(
        &mut self,
        tree_id: &Id,
        dest: &Path,
        snap_path: &str,
        included: bool,
        stack: &mut Vec<PendingDir>,
        jobs: &mut Batcher,
    ) {
        let (repo, index) = (self.repo, self.index);
        let mut placer = names::LargePlace::new(sys::NAME_RULE);
        // The names of the valid entries, in order, to a pass that takes them.
        let names_pass = |take: &mut dyn FnMut(&[u8])| {
            let mut previous = Name(Vec::new());
            let mut first = true;
            repo.for_each_tree_node(index, tree_id, &mut |node| {
                let prev = (!first).then_some(previous.0.as_slice());
                if self.valid_entry(snap_path, &node.name, prev, false) {
                    take(&node.name.0);
                    previous = node.name;
                    first = false;
                }
                Ok(())
            })
        };
        let planned = names_pass(&mut |n| placer.plan(n)).and_then(|()| {
            let target_root = &self.opts.target;
            let cell = &self.ignores_case;
            if placer.needs_claims(|| *cell.get_or_init(|| folder_ignores_case(target_root))) {
                names_pass(&mut |n| placer.claim(n))?;
            }
            Ok(())
        });
        if let Err(e) = planned {
            self.progress
                .warn(format!("{snap_path}/: folder not restored: {e}"));
            return;
        }
        let mut previous = Name(Vec::new());
        let mut first = true;
        let r = repo.for_each_tree_node(index, tree_id, &mut |node| {
            if self.stopped.is_some() {
                return Err(Error::Invalid("stopped".into()));
            }
            let prev = (!first).then_some(previous.0.as_slice());
            if self.valid_entry(snap_path, &node.name, prev, true) {
                let place = placer.next(&node.name.0);
                self.entry(&node, place, dest, snap_path, included, stack, jobs);
                previous = node.name;
                first = false;
            }
            Ok(())
        });
        if let (Err(e), None) = (r, &self.stopped) {
            self.progress
                .warn(format!("{snap_path}/: folder not restored whole: {e}"));
        }
    }

    /// Restores one entry of the folder `snap_path` into `dest`, under its own name or
    /// the one `place` gives.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        node: &Node,
        place: Option<(Vec<u8>, Renamed)>,
        dest: &Path,
        snap_path: &str,
        included: bool,
        stack: &mut Vec<PendingDir>,
        jobs: &mut Batcher,
    ) {
        let name = &node.name;
        let path = format!("{snap_path}/{}", name.to_string_lossy());
        let mut path_bytes = snap_path.as_bytes().to_vec();
        path_bytes.push(b'/');
        path_bytes.extend_from_slice(&name.0);
        let Some(inc) = selected(self.opts, &path_bytes, included) else {
            return;
        };
        let stored = place
            .as_ref()
            .map_or(name.0.as_slice(), |(n, _)| n.as_slice());
        let Some(os_name) = sys::os_name(stored) else {
            // Only bytes that are not text lack an OS name, and the rule escapes those.
            self.progress.warn(format!(
                "{path}: no name this system can hold; not restored"
            ));
            return;
        };
        let target = dest.join(os_name);
        let mut renamed = place.map(|(_, reason)| RenamedEntry {
            path: path.clone(),
            restored_as: target.clone(),
            reason,
        });
        match node.kind {
            NodeKind::Dir => {
                let Some(sub) = node.subtree else { return };
                if stack.len() >= crate::MAX_DEPTH {
                    self.progress.warn(format!(
                        "{path}: folders nested deeper than {} levels; not restored",
                        crate::MAX_DEPTH
                    ));
                    return;
                }
                stack.push(PendingDir {
                    path: target.clone(),
                    node: node.clone(),
                    made: false,
                    fresh: false,
                    renamed,
                });
                if inc {
                    self.make_dirs(stack);
                }
                self.walk(&sub, &target, &path, inc, stack, jobs);
                stack.pop();
            }
            _ if !inc => return,
            _ if !self.make_dirs(stack) => return,
            _ => self.summary.renamed.extend(renamed.take()),
        }
        match node.kind {
            NodeKind::Dir => {}
            NodeKind::File => {
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(first) = self.hard_links.get(&key) {
                        self.pending_links.push((first.clone(), target, path));
                        return;
                    }
                    self.hard_links.insert(key, target.clone());
                }
                // A crafted tree may claim any size: what is written, counted and
                // shown is what the chunks hold, and a difference is reported.
                let held = self.index.bytes_of(&node.content);
                if let Some(held) = held.filter(|&h| h != node.size) {
                    self.progress.warn(format!(
                        "{path}: the snapshot gives its size as {} bytes but its chunks hold \
                         {held}; restored as the chunks hold it",
                        node.size
                    ));
                }
                let size = held.unwrap_or(node.size);
                let fresh = stack.last().map_or(self.target_fresh, |d| d.fresh);
                if !fresh && !self.opts.overwrite && intact(&target, node, size) {
                    self.summary.unchanged += 1;
                    // Done as much as a file written: what the count ahead counts.
                    self.progress.files_done.fetch_add(1, Relaxed);
                    self.progress.bytes_done.fetch_add(size, Relaxed);
                    return;
                }
                if !self.fits(size) {
                    return;
                }
                self.summary.files += 1;
                self.summary.bytes = self.summary.bytes.saturating_add(size);
                if self.opts.dry_run {
                    return;
                }
                jobs.push(FileJob {
                    dest: target,
                    snap_path: path,
                    node: node.clone(),
                });
            }
            NodeKind::Symlink => {
                if node.target.is_none() {
                    return;
                }
                if self.opts.dry_run {
                    self.summary.links += 1;
                    return;
                }
                let r = clear_for_create(&target, self.made)
                    .and_then(|_| sys::create_symlink(&target, node, self.opts.owners));
                match r {
                    Ok(()) => self.summary.links += 1,
                    Err(e) => self
                        .progress
                        .warn(format!("{path}: symlink not restored: {e}")),
                }
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev | NodeKind::Socket => {
                if self.opts.dry_run {
                    return;
                }
                let r = clear_for_create(&target, self.made)
                    .and_then(|_| sys::create_special(&target, node, self.opts.owners));
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                        self.summary.skipped.push(SkippedEntry {
                            path,
                            reason: e.to_string(),
                        })
                    }
                    Err(e) => self
                        .progress
                        .warn(format!("{path}: special file not restored: {e}")),
                }
            }
        }
    }
}

/// Whether an entry at `path` (in the snapshot) is walked, and if so whether it is
/// restored (`Some(true)`) or only looked into for included entries (`Some(false)`).
/// `included`: its folder is restored.
fn selected(opts: &RestoreOptions, path: &[u8], included: bool) -> Option<bool> {
    if any_matches(&opts.exclude, path) {
        return None;
    }
    Some(included || opts.include.is_empty() || any_matches(&opts.include, path))
}

/// Counts the files (and their bytes) a restore of `start` (`None`: the whole snapshot
/// `root`) will write, into `totals`, the way the restore selects them; hard links once.
/// Trees are read through the cache the restore fills, so the count costs little.
fn count(
    repo: &Repository,
    index: &Index,
    root: &Id,
    start: &Option<Node>,
    snap_base: &str,
    opts: &RestoreOptions,
    totals: &Totals,
) {
    let mut links = HashSet::new();
    let mut add = |n: &Node| {
        if n.links > 1 && !links.insert((n.device, n.inode)) {
            return;
        }
        totals.files.fetch_add(1, Relaxed);
        let size = index.bytes_of(&n.content).unwrap_or(n.size);
        totals.bytes.fetch_add(size, Relaxed);
    };
    let mut todo = match start {
        None => vec![(*root, Vec::new(), false, 0)],
        Some(n) => match n.subtree {
            Some(sub) if n.kind == NodeKind::Dir => {
                vec![(sub, snap_base.as_bytes().to_vec(), false, 0)]
            }
            _ => {
                if n.kind == NodeKind::File {
                    add(n);
                }
                Vec::new()
            }
        },
    };
    while let Some((tree, path, included, depth)) = todo.pop() {
        let mut subs = Vec::new();
        let read = repo.for_each_tree_node(index, &tree, &mut |n| {
            if totals.stop.load(Relaxed) {
                return Err(Error::Invalid("stopped".into()));
            }
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&n.name.0);
            match (n.kind, selected(opts, &p, included)) {
                (_, None) => {}
                (NodeKind::Dir, Some(inc)) => {
                    if let Some(sub) = n.subtree.filter(|_| depth + 1 < crate::MAX_DEPTH) {
                        subs.push((sub, p, inc, depth + 1));
                    }
                }
                (NodeKind::File, Some(true)) => add(&n),
                _ => {}
            }
            Ok(())
        });
        if read.is_err() && totals.stop.load(Relaxed) {
            return;
        }
        todo.extend(subs.into_iter().rev());
    }
    totals.done.store(true, Relaxed);
}

/// Restores `path` ("" or "/" for everything) of the snapshot whose root tree is `root`
/// into `opts.target`. A folder's contents go into the target; a single file goes into
/// the target under its own name.
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    let start = find_node(repo, index, root, path)?;
    let target_fresh = fs::read_dir(&opts.target).map_or(true, |mut d| d.next().is_none());
    if !opts.dry_run {
        fs::create_dir_all(&opts.target).map_err(|e| Error::io("creating", &opts.target, e))?;
    }
    let snap_base = path.trim_end_matches('/').to_string();
    let made = MadeDirs::default();
    let mut r = Restorer {
        repo,
        index,
        opts,
        progress,
        made: &made,
        ignores_case: OnceLock::new(),
        dirs: Default::default(),
        hard_links: HashMap::new(),
        pending_links: Vec::new(),
        summary: RestoreSummary::default(),
        target_fresh,
        room: opts
            .target
            .ancestors()
            .find(|a| a.exists())
            .and_then(sys::free_space),
        stopped: None,
    };
    let threads = opts.threads.max(1);
    let remote = repo.backend().prefers_large_reads();
    let (tx, rx) = sync_channel::<Vec<FileJob>>(if remote { 1 } else { threads * 2 });
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        let _stop_count = StopCount(&progress.totals);
        if opts.count_ahead {
            let (start, snap_base) = (&start, &snap_base);
            s.spawn(move || count(repo, index, root, start, snap_base, opts, &progress.totals));
        }
        if remote {
            // Where each read is a request: large batches, each restored pack by pack
            // (`packs`), while the walk goes on to the next.
            s.spawn(|| {
                while let Ok(batch) = rx.lock().unwrap().recv() {
                    packs::restore_files(repo, index, batch, opts, &made, progress);
                }
            });
        } else {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let batch = match rx.lock().unwrap().recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    };
                    for job in &batch {
                        restore_file(repo, index, job, opts.owners, &made, progress);
                    }
                });
            }
        }
        let mut tx = Batcher {
            tx,
            batch: Vec::new(),
            bytes: 0,
            max_files: if remote { PACK_ORDER_FILES } else { 64 },
            max_bytes: if remote { u64::MAX } else { 8 << 20 },
        };
        let (r, start, snap_base) = (&mut r, &start, &snap_base);
        // The walk recurses a level per folder: on a thread whose stack holds
        // MAX_DEPTH levels with room to spare, whatever the calling thread has.
        let walk = move || {
            let mut stack = Vec::new();
            match start {
                None => r.walk(root, &opts.target, "", false, &mut stack, &mut tx),
                Some(n) if n.kind == NodeKind::Dir => {
                    if let Some(sub) = n.subtree {
                        r.walk(&sub, &opts.target, snap_base, false, &mut stack, &mut tx)
                    }
                }
                Some(n) => {
                    let parent = snap_base.rsplit_once('/').map_or("", |(p, _)| p);
                    let place = names::place(&[n.name.0.as_slice()], sys::NAME_RULE, || false)
                        .pop()
                        .flatten();
                    r.entry(n, place, &opts.target, parent, true, &mut stack, &mut tx);
                }
            }
            tx.flush();
        };
        std::thread::Builder::new()
            .stack_size(WALK_STACK)
            .spawn_scoped(s, walk)
            .expect("starting the restore walk")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
    for (first, link, path) in std::mem::take(&mut r.pending_links) {
        if opts.dry_run {
            r.summary.files += 1;
            continue;
        }
        // Linked already (by a run this one carries on from): left as it is.
        let id = |p: &Path| fs::symlink_metadata(p).ok().and_then(|m| sys::file_id(&m));
        if id(&link).is_some() && id(&link) == id(&first) {
            r.summary.unchanged += 1;
            continue;
        }
        let res = clear_for_create(&link, &made).and_then(|_| fs::hard_link(&first, &link));
        match res {
            Ok(()) => r.summary.files += 1,
            Err(e) => progress.warn(format!("{path}: hard link not restored: {e}")),
        }
    }
    let applied = std::mem::take(&mut r.dirs).drain(|path, node| {
        if let Err(e) = sys::apply_dir_metadata(path, node, opts.owners) {
            progress.warn(format!("{}: setting folder metadata: {e}", path.display()));
        }
    });
    if let Err(e) = applied {
        progress.warn(format!("folders' times and modes not all set: {e}"));
    }
    r.summary.errors = progress.errors.load(Relaxed);
    if let Some(why) = r.stopped {
        return Err(Error::Invalid(why));
    }
    Ok(r.summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{craft_snapshot, Crafted};
    use crate::LocalBackend;
    use std::sync::Arc;

    #[test]
    fn a_path_through_dot_or_dot_dot_is_refused_and_nothing_outside_is_touched() {
        let dir = std::env::temp_dir().join(format!("bz-dotdot-{}", Id::random().short()));
        let parent = dir.join("parent");
        let target = parent.join("target");
        fs::create_dir_all(&target).unwrap();
        fs::write(parent.join("keep.txt"), "mine").unwrap();
        fs::write(target.join("also-mine.txt"), "mine").unwrap();
        let backend = Arc::new(LocalBackend::new(dir.join("repo")));
        Repository::init(backend.clone(), b"pw", 1 << 20).unwrap();
        let repo = Repository::open(backend, b"pw").unwrap();
        let snap = craft_snapshot(
            &repo,
            vec![Crafted::dir(
                "a",
                vec![
                    Crafted::file(".", "dot"),
                    Crafted::file("..", "dot dot"),
                    Crafted::file("x", "fine"),
                ],
            )],
        )
        .unwrap();
        let root = repo.read_snapshot(&snap.to_hex()).unwrap().tree;
        let index = repo.load_index().unwrap().index;
        let run = |path: &str| {
            restore(
                &repo,
                &index,
                &root,
                path,
                &RestoreOptions::new(target.clone()),
                &RestoreProgress::new(|_| {}),
            )
        };
        for path in ["/a/..", "/a/.", "/a/../a/x", "/./a", "/a/x\0"] {
            let err = run(path).expect_err(path).to_string();
            assert!(err.contains("cannot be part of a path"), "{path}: {err}");
            assert_eq!(fs::read_to_string(parent.join("keep.txt")).unwrap(), "mine");
            assert_eq!(
                fs::read_to_string(target.join("also-mine.txt")).unwrap(),
                "mine"
            );
        }
        // The folder itself restores, without its two unsafe entries.
        let sum = run("/a").unwrap();
        assert_eq!(sum.files, 1);
        assert_eq!(fs::read_to_string(target.join("x")).unwrap(), "fine");
        assert_eq!(fs::read_to_string(parent.join("keep.txt")).unwrap(), "mine");
        drop(repo);
        fs::remove_dir_all(&dir).unwrap();
    }
}
