//! The backup operation. One walker thread compares each folder's listing (made ahead of
//! it by lister threads: `listing`) with the parent snapshot and queues the files that
//! changed; worker threads read, chunk, hash, compress and seal them; uploader threads
//! store finished packs and write the index every few packs; this thread assembles
//! directory trees in post-order as their files complete. All queues are bounded, so
//! memory does not grow with the number or size of files.
//!
//! Write order (docs/FORMAT.md, "Crash safety"): packs, then index objects naming
//! them, then the snapshot naming the root tree.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashSet;

use crate::blob::{self, worth_compressing};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::glob::{any_matches, Pattern};
use crate::id::Id;
use crate::index::Index;
use crate::pack::{BlobKind, FinishedPack, PackBlob, PackBuilder};
use crate::repo::Repository;
use crate::snapshot::{Snapshot, SnapshotEntry, Summary};
use crate::sys;
use crate::tree::{Name, Node, NodeKind, Tree};

mod count;
mod listing;

use crate::progress::StopCount;
pub use crate::progress::Totals;
pub use listing::Prescan;
use listing::{Ahead, Listing, Reader, Ticket};

/// Starts listing the folders a backup of `paths` will walk first, before the repository
/// is open: its key derivation and index reading run on one core, and this uses another.
/// Hand it to the backup in [`BackupOptions::prescan`].
pub fn prescan(paths: &[PathBuf], excludes: &[Pattern]) -> Arc<Prescan> {
    let paths: Vec<PathBuf> = paths.iter().filter_map(|p| normalise(p).ok()).collect();
    Arc::new(Prescan::start(&paths, excludes))
}

/// What to leave out of a backup.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub excludes: Vec<Pattern>,
    /// A directory holding a file of one of these names is left out whole.
    pub exclude_if_present: Vec<String>,
    /// Leave out directories holding a valid CACHEDIR.TAG.
    pub exclude_caches: bool,
    pub exclude_larger_than: Option<u64>,
}

impl Selection {
    /// Whether a folder (as it is read) is left out whole: it holds an
    /// `exclude_if_present` marker, or a valid CACHEDIR.TAG with `exclude_caches`.
    pub fn excludes_folder(&self, path: &Path) -> bool {
        if self
            .exclude_if_present
            .iter()
            .any(|m| path.join(m).symlink_metadata().is_ok())
        {
            return true;
        }
        if self.exclude_caches {
            if let Ok(mut f) = File::open(path.join("CACHEDIR.TAG")) {
                let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
                if f.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE {
                    return true;
                }
            }
        }
        false
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentChoice {
    /// The newest snapshot of the same host, paths and job.
    Auto,
    /// Read every file again.
    None,
    Given(Id),
}

/// Where files are read from when that is not where they are recorded: a frozen copy of
/// a volume (a Windows shadow copy, an LVM, btrfs or ZFS snapshot) is read in place of
/// the live folders, while the snapshot records the live paths, so that it restores and
/// mounts as if the live folders had been read, and the next run compares with it.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    /// (recorded prefix, read prefix); the longest recorded prefix that matches wins.
    pub views: Vec<(PathBuf, PathBuf)>,
}

impl SourceMap {
    /// The path to read for a recorded path (itself when no view covers it).
    pub fn read_path<'p>(&self, recorded: &'p Path) -> Cow<'p, Path> {
        let best = self
            .views
            .iter()
            .filter_map(|(rec, read)| Some((rec, read, recorded.strip_prefix(rec).ok()?)))
            .max_by_key(|(rec, _, _)| rec.as_os_str().len());
        match best {
            Some((_, read, rest)) if rest.as_os_str().is_empty() => Cow::Owned(read.clone()),
            Some((_, read, rest)) => Cow::Owned(read.join(rest)),
            None => Cow::Borrowed(recorded),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    /// Read the paths from elsewhere (a frozen copy) while recording them as they are.
    pub source: SourceMap,
    pub selection: Selection,
    pub tags: Vec<String>,
    pub hostname: String,
    pub job: Option<String>,
    pub parent: ParentChoice,
    /// Files read and compressed at once.
    pub threads: usize,
    /// Concurrent pack uploads.
    pub uploads: usize,
    /// Write an index object after this many packs (and at least every `index_interval`).
    pub index_every_packs: usize,
    pub index_interval: Duration,
    /// How long to wait while prune holds the repository's exclusive lock.
    pub lock_wait: Duration,
    /// Folders listed while the repository was being opened ([`Prescan::start`]).
    pub prescan: Option<Arc<Prescan>>,
    /// Count the selection on a thread of its own while the backup runs, into
    /// [`BackupProgress::totals`] (a front end's percentage and time left).
    pub count_ahead: bool,
}

impl BackupOptions {
    pub fn new(paths: Vec<PathBuf>) -> BackupOptions {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BackupOptions {
            paths,
            source: SourceMap::default(),
            selection: Selection::default(),
            tags: Vec::new(),
            hostname: crate::sys::hostname(),
            job: None,
            parent: ParentChoice::Auto,
            threads: cores.max(2),
            uploads: 2,
            index_every_packs: 4,
            index_interval: Duration::from_secs(20),
            lock_wait: Duration::from_secs(10 * 60),
            prescan: None,
            count_ahead: false,
        }
    }
}

/// Live counters a front end may show while the backup runs, and where warnings go.
pub struct BackupProgress {
    /// The selection counted ahead of the readers, when asked for
    /// ([`BackupOptions::count_ahead`]).
    pub totals: Arc<Totals>,
    pub files_done: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_added: AtomicU64,
    pub errors: AtomicU64,
    pub current: Mutex<PathBuf>,
    warn: Box<dyn Fn(&str) + Send + Sync>,
}

impl BackupProgress {
    pub fn new(warn: impl Fn(&str) + Send + Sync + 'static) -> BackupProgress {
        BackupProgress {
            totals: Arc::default(),
            files_done: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            current: Mutex::new(PathBuf::new()),
            warn: Box::new(warn),
        }
    }
}

pub struct BackupResult {
    pub snapshot: SnapshotEntry,
    /// Problems met while loading the index (damaged index objects and the like).
    pub index_problems: Vec<String>,
    /// The repository's packs after this backup, in bytes: those in storage when it
    /// started and what it added (for a history of the repository's size).
    pub repository_bytes: u64,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unchanged: AtomicU64,
    changed_during_read: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    blobs_added: AtomicU64,
    data_added_raw: AtomicU64,
    packs_written: AtomicU64,
}

/// Everything the threads share.
struct Shared<'a> {
    repo: &'a Repository,
    index: &'a Index,
    seen: DashSet<Id>,
    packers: [Mutex<PackBuilder>; 2],
    /// Buffers of stored packs, emptied for the next ones.
    spare_buffers: Mutex<Vec<Vec<u8>>>,
    upload_tx: Mutex<Option<SyncSender<FinishedPack>>>,
    failed: AtomicBool,
    first_failure: Mutex<Option<Error>>,
    progress: &'a BackupProgress,
    counters: Counters,
    error_messages: Mutex<Vec<String>>,
    chunker: Chunker,
    selection: &'a Selection,
    source: &'a SourceMap,
    /// Entries of folders queued for the tree assembler.
    queued_entries: Budget,
    /// The tree assembler is waiting for a file: the walker hands over its batch.
    assembler_waiting: AtomicBool,
}

/// Entries of folders between the walker and the tree assembler, at most: the walker
/// runs ahead of files still being read, but not by more than this.
const QUEUED_ENTRIES: usize = 8_000;

/// A count that waits when full; a single item larger than the limit still passes
/// when nothing else is queued. Closed, it never waits (the run is ending).
struct Budget {
    used: Mutex<(usize, bool)>,
    freed: Condvar,
    limit: usize,
}

impl Budget {
    fn new(limit: usize) -> Budget {
        Budget {
            used: Mutex::new((0, false)),
            freed: Condvar::new(),
            limit,
        }
    }

    fn try_acquire(&self, n: usize) -> bool {
        let mut u = self.used.lock().unwrap();
        let fits = u.1 || u.0 == 0 || u.0 + n <= self.limit;
        if fits {
            u.0 += n;
        }
        fits
    }

    fn acquire(&self, n: usize) {
        let mut u = self.used.lock().unwrap();
        while !(u.1 || u.0 == 0 || u.0 + n <= self.limit) {
            u = self.freed.wait(u).unwrap();
        }
        u.0 += n;
    }

    fn release(&self, n: usize) {
        let mut u = self.used.lock().unwrap();
        u.0 = u.0.saturating_sub(n);
        drop(u);
        self.freed.notify_one();
    }

    fn close(&self) {
        self.used.lock().unwrap().1 = true;
        self.freed.notify_all();
    }
}

const MAX_ERROR_MESSAGES: usize = 100;

impl Shared<'_> {
    /// Something left out of the snapshot: counted as an error (exit code 3).
    fn warn(&self, msg: String) {
        self.progress.errors.fetch_add(1, Relaxed);
        self.notice(msg);
    }

    /// Something the user should hear of that lost nothing.
    fn notice(&self, msg: String) {
        (self.progress.warn)(&msg);
        let mut m = self.error_messages.lock().unwrap();
        if m.len() < MAX_ERROR_MESSAGES {
            m.push(msg);
        }
    }

    fn fail(&self, e: Error) {
        self.failed.store(true, Relaxed);
        let mut f = self.first_failure.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
    }

    fn check_failed(&self) -> Result<()> {
        if self.failed.load(Relaxed) {
            Err(Error::Backend(
                "backup aborted after a storage error".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn known(&self, id: &Id) -> bool {
        self.index.contains(id) || self.seen.contains(id)
    }

    /// Stores a blob unless the repository (or this run) already has it.
    fn save(&self, kind: BlobKind, id: Id, plain: &[u8], try_compress: bool) -> Result<()> {
        self.check_failed()?;
        if self.index.contains(&id) || !self.seen.insert(id) {
            return Ok(());
        }
        let repo = self.repo;
        self.counters.blobs_added.fetch_add(1, Relaxed);
        if kind == BlobKind::Data {
            self.counters
                .data_added_raw
                .fetch_add(plain.len() as u64, Relaxed);
        }
        let finished = blob::encode_with(
            repo.keys(),
            kind.object_type(),
            Some(&id),
            plain,
            repo.compression,
            try_compress,
            |stored| {
                self.progress
                    .bytes_added
                    .fetch_add(stored.len() as u64, Relaxed);
                let mut p = self.packers[kind.code() as usize].lock().unwrap();
                p.add(id, plain.len(), stored);
                (p.len() >= pack_limit(repo, kind)).then(|| {
                    // Spare buffers are data packs' (tree packs are smaller).
                    let spare = match kind {
                        BlobKind::Data => self.spare_buffers.lock().unwrap().pop(),
                        BlobKind::Tree => None,
                    };
                    let spare = spare.unwrap_or_default();
                    p.finish_into(repo.keys(), spare)
                })
            },
        );
        if let Some(f) = finished {
            self.send_pack(f)?;
        }
        Ok(())
    }

    fn send_pack(&self, pack: FinishedPack) -> Result<()> {
        let tx = self.upload_tx.lock().unwrap().clone();
        match tx {
            Some(tx) if tx.send(pack).is_ok() => Ok(()),
            _ => Err(Error::Backend("pack upload stopped".into())),
        }
    }

    fn flush_packs(&self) -> Result<()> {
        for p in &self.packers {
            let finished = {
                let mut p = p.lock().unwrap();
                (!p.is_empty()).then(|| p.finish(self.repo.keys()))
            };
            if let Some(f) = finished {
                self.send_pack(f)?;
            }
        }
        Ok(())
    }
}

/// Tree packs are finished at 4 MiB (or the repository's pack size, when smaller): they
/// are read whole into the local cache, and a tree pack filling beside the data pack
/// held another pack-sized buffer for the whole run.
const TREE_PACK_SIZE: usize = 4 << 20;

fn pack_limit(repo: &Repository, kind: BlobKind) -> usize {
    match kind {
        BlobKind::Data => repo.config().pack_size,
        BlobKind::Tree => repo.config().pack_size.min(TREE_PACK_SIZE),
    }
}

/// Index entries of uploaded packs not yet written to an index object.
struct PendingIndex {
    packs: Vec<(Id, Vec<PackBlob>)>,
    last_write: Instant,
}

fn upload_loop(
    shared: &Shared,
    rx: &Mutex<Receiver<FinishedPack>>,
    pending: &Mutex<PendingIndex>,
    every: usize,
    interval: Duration,
) {
    loop {
        let pack = match rx.lock().unwrap().recv() {
            Ok(p) => p,
            Err(_) => return,
        };
        if shared.failed.load(Relaxed) {
            continue; // drain so senders never block
        }
        let FinishedPack { kind, bytes, blobs } = pack;
        let written = shared.repo.write_pack(kind, &bytes);
        {
            // Hand the buffer back for a later pack: fresh 16 MiB buffers cost a page
            // fault and a zeroed page every 4 KiB, and an munmap when dropped.
            let mut spare = shared.spare_buffers.lock().unwrap();
            if spare.len() < 2 && kind == BlobKind::Data {
                spare.push(bytes);
            }
        }
        let result = written.and_then(|id| {
            shared.counters.packs_written.fetch_add(1, Relaxed);
            let mut p = pending.lock().unwrap();
            p.packs.push((id, blobs));
            if p.packs.len() >= every || p.last_write.elapsed() >= interval {
                let packs = std::mem::take(&mut p.packs);
                p.last_write = Instant::now();
                shared.repo.write_index(&packs)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            shared.fail(e);
        }
    }
}

struct FileJob {
    path: PathBuf,
    node: Node,
    done: SyncSender<Option<Node>>,
}

enum Pending {
    Ready(Node),
    File {
        path: PathBuf,
        done: Receiver<Option<Node>>,
    },
    Dir {
        node: Node,
        seq: u64,
        parent_subtree: Option<Id>,
    },
}

impl Pending {
    /// Whether this entry is what the parent snapshot recorded (for a folder: apart
    /// from its sub-tree, which the assembler compares).
    fn same_as(&self, old: Option<&Node>) -> bool {
        match (self, old) {
            (Pending::Ready(n), Some(o)) => n == o,
            (Pending::Dir { node, .. }, Some(o)) => {
                o.kind == NodeKind::Dir
                    && Node {
                        subtree: o.subtree,
                        ..node.clone()
                    } == *o
            }
            _ => false,
        }
    }
}

struct PendingDir {
    seq: u64,
    entries: Vec<Pending>,
    /// The parent snapshot's tree of this folder, when every entry is as it recorded:
    /// if the sub-folders come out unchanged too, that tree is reused as it is.
    reuse: Option<Id>,
}

/// The selected paths as a tree of names from `/`, so a snapshot holds them at their
/// real place (`home/alice/Documents/...`, `C/Users/alice/...`) with the folders above
/// them. Each folder knows its OS path (none for a folder of the snapshot's layout only).
#[derive(Default)]
struct PathTrie {
    selected: bool,
    os_path: Option<PathBuf>,
    /// A drive or share root: its attributes (hidden, system) are not the restored
    /// folder's to carry.
    volume_root: bool,
    children: BTreeMap<Vec<u8>, PathTrie>,
}

/// An absolute path with `.` and `..` resolved, in the OS's form.
fn normalise(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io("resolving", path, e))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

struct Walker<'s, 'a> {
    shared: &'s Shared<'a>,
    ahead: &'s Ahead,
    reader: &'s Reader<'a>,
    job_tx: SyncSender<Vec<FileJob>>,
    /// Files are handed to workers in batches: one wake-up per batch, not per file.
    /// A batch is closed at 32 files or 4 MiB, so large files still spread over workers.
    batch: Vec<FileJob>,
    batch_bytes: u64,
    /// Folders are handed to the tree assembler in batches too: in a backup where
    /// little changed, one wake-up of the assembler per folder was a quarter of all
    /// the context switches.
    dirs: Vec<PendingDir>,
    dir_tx: SyncSender<Vec<PendingDir>>,
    next_seq: u64,
}

/// Folders in a batch for the tree assembler, at most.
const DIR_BATCH: usize = 64;

impl Walker<'_, '_> {
    fn excluded_dir(&self, path: &Path) -> bool {
        let read = self.shared.source.read_path(path);
        self.shared.selection.excludes_folder(&read)
    }

    fn flush_dirs(&mut self) {
        if !self.dirs.is_empty() {
            // The assembler lives until the walker is done; an error means it failed.
            let _ = self.dir_tx.send(std::mem::take(&mut self.dirs));
        }
    }

    fn flush_jobs(&mut self) {
        if !self.batch.is_empty() {
            self.batch_bytes = 0;
            // The workers live until the walker is done; a send error means they failed.
            let _ = self.job_tx.send(std::mem::take(&mut self.batch));
        }
    }

    fn send_dir(&mut self, entries: Vec<Pending>, reuse: Option<Id>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sh = self.shared;
        if sh.assembler_waiting.load(Relaxed) {
            self.flush_jobs();
        }
        // Before waiting on the tree assembler, hand over the files it may be waiting for.
        let size = entries.len() + 1;
        if !sh.queued_entries.try_acquire(size) {
            self.flush_jobs();
            self.flush_dirs();
            sh.queued_entries.acquire(size);
        }
        self.dirs.push(PendingDir {
            seq,
            entries,
            reuse,
        });
        if self.dirs.len() >= DIR_BATCH {
            let dirs = std::mem::take(&mut self.dirs);
            if let Err(TrySendError::Full(dirs)) = self.dir_tx.try_send(dirs) {
                self.flush_jobs();
                let _ = self.dir_tx.send(dirs);
            }
        }
        seq
    }

    /// One directory entry: a ready node, a queued file, or a walked sub-directory.
    /// `below` is the selection trie for folders above or at the selected paths
    /// (`None` inside a selected folder).
    fn entry(
        &mut self,
        path: &Path,
        node: std::io::Result<Node>,
        parent: Option<&Node>,
        below: Option<&PathTrie>,
        ticket: Option<Ticket>,
    ) -> Option<Pending> {
        let sh = self.shared;
        let mut node = match node {
            Ok(node) => node,
            Err(e) => {
                sh.warn(format!("{}: {e} (skipped)", path.display()));
                return None;
            }
        };
        let sel = sh.selection;
        if below.is_none_or(|t| t.selected) && any_matches(&sel.excludes, &sys::match_path(path)) {
            return None;
        }
        match node.kind {
            NodeKind::File => {
                if sel.exclude_larger_than.is_some_and(|l| node.size > l) {
                    return None;
                }
                sh.counters.total_files.fetch_add(1, Relaxed);
                sh.counters.total_bytes.fetch_add(node.size, Relaxed);
                if let Some(old) = parent.filter(|old| node.unchanged_since(old)) {
                    if old.content.iter().all(|id| sh.known(id)) {
                        node.content = old.content.clone();
                        sh.counters.files_unchanged.fetch_add(1, Relaxed);
                        sh.progress.files_done.fetch_add(1, Relaxed);
                        sh.progress.bytes_done.fetch_add(node.size, Relaxed);
                        return Some(Pending::Ready(node));
                    }
                }
                let c = &sh.counters;
                if parent.is_some_and(|p| p.kind == NodeKind::File) {
                    c.files_changed.fetch_add(1, Relaxed);
                } else {
                    c.files_new.fetch_add(1, Relaxed);
                }
                let (done, rx) = sync_channel(1);
                self.batch_bytes += node.size;
                self.batch.push(FileJob {
                    path: path.to_path_buf(),
                    node,
                    done,
                });
                if self.batch.len() >= 32 || self.batch_bytes >= 4 << 20 {
                    self.flush_jobs();
                }
                Some(Pending::File {
                    path: path.to_path_buf(),
                    done: rx,
                })
            }
            NodeKind::Dir => {
                let selected = below.is_none_or(|t| t.selected);
                if selected && self.excluded_dir(path) {
                    return None;
                }
                let parent_subtree = parent
                    .filter(|n| n.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree);
                let seq = match below.filter(|t| !t.selected) {
                    Some(trie) => self.walk_trie(path, trie, parent_subtree.as_ref()),
                    None => {
                        let listing = match ticket {
                            Some(t) => t.take(self.reader),
                            None => self.reader.list(self.ahead, path, parent_subtree.as_ref()),
                        };
                        self.walk_dir(path, listing)
                    }
                };
                node.size = 0;
                Some(Pending::Dir {
                    node,
                    seq,
                    parent_subtree,
                })
            }
            NodeKind::Symlink => {
                match sys::read_link(&sh.source.read_path(path)) {
                    Ok(t) => node.target = Some(t),
                    Err(e) => {
                        sh.warn(format!("{}: reading link: {e} (skipped)", path.display()));
                        return None;
                    }
                }
                Some(Pending::Ready(node))
            }
            _ => Some(Pending::Ready(node)),
        }
    }

    fn walk_dir(&mut self, path: &Path, listing: Listing) -> u64 {
        let sh = self.shared;
        let Listing {
            entries: names,
            folders,
            error,
            entry_errors,
            parent,
        } = listing;
        if let Some(e) = error {
            sh.warn(format!("{}: cannot list directory: {e}", path.display()));
        }
        for e in entry_errors {
            sh.warn(format!("{}: listing: {e}", path.display()));
        }
        let (parent_id, parent) = match &parent {
            Some((id, tree)) => (Some(*id), Some(tree)),
            None => (None, None),
        };
        let mut tickets = folders.into_iter().peekable();
        let mut same = parent.is_some_and(|t| t.nodes.len() == names.len());
        let mut entries = Vec::with_capacity(names.len());
        for (i, (name, os, md)) in names.into_iter().enumerate() {
            if sh.failed.load(Relaxed) {
                break;
            }
            let ticket = tickets.next_if(|(at, _)| *at == i).map(|(_, t)| t);
            let old = parent.and_then(|t| t.find(&name.0));
            let node = md.map(|md| sys::node_from_metadata(name, &md));
            match self.entry(&path.join(&os), node, old, None, ticket) {
                Some(p) => {
                    same = same && p.same_as(old);
                    entries.push(p);
                }
                None => same = false,
            }
        }
        let reuse = parent_id.filter(|_| same);
        self.send_dir(entries, reuse)
    }

    fn walk_trie(&mut self, path: &Path, trie: &PathTrie, parent: Option<&Id>) -> u64 {
        if trie.selected {
            let listing = self.reader.list(self.ahead, path, parent);
            return self.walk_dir(path, listing);
        }
        let sh = self.shared;
        let parent = parent.and_then(|id| sh.repo.read_tree(sh.index, id).ok());
        let parent = parent.as_ref();
        let mut entries = Vec::new();
        for (name, child) in &trie.children {
            let old = parent.and_then(|t| t.find(name));
            let name = Name(name.clone());
            let (child_path, node) = match &child.os_path {
                Some(p) => {
                    let md = fs::symlink_metadata(self.shared.source.read_path(p));
                    let node = md.map(|md| {
                        let mut n = sys::node_from_metadata(name, &md);
                        if child.volume_root {
                            n.attributes = 0;
                        }
                        n
                    });
                    (p.clone(), node)
                }
                None => (PathBuf::new(), Ok(Node::layout_dir(name))),
            };
            if let Some(p) = self.entry(&child_path, node, old, Some(child), None) {
                entries.push(p);
            }
        }
        self.send_dir(entries, None)
    }
}

/// Reads one file into chunks. `None` when it could not be read (already warned).
fn back_up_file(sh: &Shared, job: &FileJob, scratch: &mut Vec<u8>) -> Option<Node> {
    let path = &job.path;
    let mut node = job.node.clone();
    *sh.progress.current.lock().unwrap() = path.clone();
    let mut file = match sys::open_for_backup(&sh.source.read_path(path)) {
        Ok(f) => f,
        Err(e) => {
            sh.warn(format!("{}: {e} (skipped)", path.display()));
            return None;
        }
    };
    let compress = worth_compressing(path);
    let mut content = Vec::new();
    let mut save_chunk = |chunk: &[u8]| -> Result<()> {
        let id = sh.repo.keys().blob_id(chunk);
        sh.save(BlobKind::Data, id, chunk, compress)?;
        content.push(id);
        sh.progress
            .bytes_read
            .fetch_add(chunk.len() as u64, Relaxed);
        sh.progress
            .bytes_done
            .fetch_add(chunk.len() as u64, Relaxed);
        Ok(())
    };
    // Room for the whole of a small file: one read fetches it, the next sees its end.
    scratch.clear();
    scratch.reserve((node.size as usize).min(1 << 20) + 1);
    let read = sh
        .chunker
        .for_each_chunk(&mut file, scratch, &mut save_chunk, |e| {
            Error::io("reading", path, e)
        });
    // A large file's chunks needed room most files do not: give it back.
    if scratch.capacity() > 4 << 20 {
        *scratch = Vec::new();
    }
    let total = match read {
        Ok(n) => n,
        Err(e) => {
            if !sh.failed.load(Relaxed) {
                sh.warn(format!("{e} (skipped)"));
            }
            return None;
        }
    };
    // Compared with what the walker's lstat saw before the file was opened.
    let after = file
        .metadata()
        .ok()
        .map(|a| sys::node_from_metadata(Name::default(), &a));
    let changed = match &after {
        Some(a) => {
            let before = &job.node;
            before.size != a.size || before.mtime != a.mtime || total != a.size
        }
        None => true,
    };
    if changed {
        sh.counters.changed_during_read.fetch_add(1, Relaxed);
        sh.notice(format!(
            "{}: file changed while it was read; the snapshot holds the {total} bytes read",
            path.display()
        ));
    }
    if let Some(fresh) = &after {
        // Record what was read, so the next run notices any later change.
        node.mtime = fresh.mtime;
        node.ctime = fresh.ctime;
    }
    node.size = total;
    node.content = content;
    sh.progress.files_done.fetch_add(1, Relaxed);
    Some(node)
}

/// Assembles trees in post-order as their files complete; returns the root tree id.
fn assemble_trees(sh: &Shared, dir_rx: Receiver<Vec<PendingDir>>) -> Result<Option<Id>> {
    let mut done: HashMap<u64, Id> = HashMap::new();
    let mut root = None;
    for pd in dir_rx.into_iter().flatten() {
        let queued = pd.entries.len() + 1;
        let mut nodes = Vec::with_capacity(pd.entries.len());
        let mut subtrees_same = true;
        for e in pd.entries {
            match e {
                Pending::Ready(n) => nodes.push(n),
                Pending::File { path, done: rx } => match rx.try_recv().or_else(|_| {
                    // The walker may still hold this file in its batch.
                    sh.assembler_waiting.store(true, Relaxed);
                    let r = rx.recv();
                    sh.assembler_waiting.store(false, Relaxed);
                    r
                }) {
                    Ok(Some(n)) => nodes.push(n),
                    Ok(None) => {}
                    Err(_) => {
                        sh.check_failed()?;
                        return Err(Error::Invalid(format!(
                            "internal error: no result for {}",
                            path.display()
                        )));
                    }
                },
                Pending::Dir {
                    mut node,
                    seq,
                    parent_subtree,
                } => {
                    let id = done.remove(&seq).ok_or_else(|| {
                        Error::Invalid("internal error: tree out of order".into())
                    })?;
                    let c = &sh.counters;
                    subtrees_same &= parent_subtree == Some(id);
                    match parent_subtree {
                        None => c.dirs_new.fetch_add(1, Relaxed),
                        Some(p) if p == id => c.dirs_unchanged.fetch_add(1, Relaxed),
                        Some(_) => c.dirs_changed.fetch_add(1, Relaxed),
                    };
                    node.subtree = Some(id);
                    nodes.push(node);
                }
            }
        }
        let id = match pd.reuse {
            // Nothing in it changed: the parent's tree, already stored, is this one.
            Some(id) if subtrees_same => id,
            _ => {
                let bytes = Tree { nodes }.to_bytes();
                let id = sh.repo.keys().blob_id(&bytes);
                sh.save(BlobKind::Tree, id, &bytes, true)?;
                id
            }
        };
        sh.queued_entries.release(queued);
        done.insert(pd.seq, id);
        root = Some(id);
    }
    Ok(root)
}

fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<SnapshotEntry>> {
    match &opts.parent {
        ParentChoice::None => Ok(None),
        ParentChoice::Given(id) => Ok(Some(repo.find_snapshot(&id.to_hex())?)),
        ParentChoice::Auto => {
            let (snaps, _) = repo.snapshots()?;
            Ok(snaps.into_iter().rev().find(|s| {
                let mut p = s.snapshot.paths.clone();
                p.sort();
                s.snapshot.hostname == opts.hostname && p == paths && s.snapshot.job == opts.job
            }))
        }
    }
}

/// Backs up `opts.paths` into a new snapshot.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &BackupProgress,
) -> Result<BackupResult> {
    let started = Instant::now();
    let time = jiff::Timestamp::now();
    let mut trie = PathTrie::default();
    let mut paths = Vec::new();
    let mut to_count = Vec::new();
    for p in &opts.paths {
        let abs = normalise(p)?;
        if fs::symlink_metadata(opts.source.read_path(&abs)).is_err() {
            return Err(Error::NotFound(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
        to_count.push(opts.source.read_path(&abs).into_owned());
        paths.push(sys::recorded_path(&abs)?);
        let mut t = &mut trie;
        let steps = sys::recorded_components(&abs)?;
        let first_real = steps.iter().position(|s| s.os_path.is_some());
        for (i, step) in steps.into_iter().enumerate() {
            t = t.children.entry(step.name).or_insert_with(|| PathTrie {
                os_path: step.os_path,
                volume_root: Some(i) == first_real && crate::sys::WINDOWS_PATHS,
                ..PathTrie::default()
            });
        }
        t.selected = true;
    }
    if paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    paths.sort();
    paths.dedup();
    let _stop_count = StopCount(&progress.totals);
    // A path inside another selected one is counted with it.
    to_count.sort();
    to_count.dedup_by(|inner, outer| inner.starts_with(outer));
    if opts.count_ahead {
        count::start(to_count, opts.selection.clone(), progress.totals.clone());
    }

    // Before the index is read: prune must not delete a pack this run may reuse.
    let _lock = crate::lock::lock(repo, false, "backup", opts.lock_wait)?;
    let mut loaded = repo.load_index()?;
    for p in &loaded.problems {
        (progress.warn)(&format!("index: {p}"));
    }
    // A blob whose only copy is in a pack that is gone is not reused but stored again:
    // trusting it would make this snapshot name data that is nowhere.
    if !loaded.missing_packs.is_empty() {
        (progress.warn)(&format!(
            "index: {} packs named by the index are not in the repository (lost, or \
             removed by a prune and named by an index object put back from an older \
             state), such as {}; what this backup needs from them is stored again, \
             and `backazon check` names the snapshots that need them",
            loaded.missing_packs.len(),
            loaded.missing_packs.iter().next().expect("not empty")
        ));
        loaded.index.forget_packs(&loaded.missing_packs);
    }
    let index = &loaded.index;
    let parent = find_parent(repo, opts, &paths)?;
    let parent_root = match &parent {
        Some(p) => {
            repo.read_tree(index, &p.snapshot.tree)?; // a parent that cannot be read stops here
            Some(p.snapshot.tree)
        }
        None => None,
    };
    // With nothing to compare against, the files are all read: listing saves little
    // beside that, and what was listed would only hold memory while the packs fill.
    if let (Some(p), None) = (&opts.prescan, &parent_root) {
        p.clear();
        sys::give_back_freed_memory();
    }

    let pack_capacity = repo.config().pack_size + repo.config().chunker.max + 4096;
    let new_packer = |kind| {
        let mut p = PackBuilder::new(kind);
        if kind == BlobKind::Data {
            p.reserve(pack_capacity);
        }
        Mutex::new(p)
    };
    // A rendezvous: at most one finished pack waits while another is being stored.
    let (upload_tx, upload_rx) = sync_channel::<FinishedPack>(0);
    let shared = Shared {
        repo,
        index,
        seen: DashSet::new(),
        packers: [new_packer(BlobKind::Data), new_packer(BlobKind::Tree)],
        spare_buffers: Mutex::new(Vec::new()),
        upload_tx: Mutex::new(Some(upload_tx)),
        failed: AtomicBool::new(false),
        first_failure: Mutex::new(None),
        progress,
        counters: Counters::default(),
        error_messages: Mutex::new(Vec::new()),
        chunker: Chunker::new(repo.keys().chunker_seed, repo.config().chunker),
        selection: &opts.selection,
        source: &opts.source,
        queued_entries: Budget::new(QUEUED_ENTRIES),
        assembler_waiting: AtomicBool::new(false),
    };
    let reader = Reader {
        repo,
        index,
        source: &opts.source,
        excludes: &opts.selection.excludes,
        prescan: opts.prescan.as_deref(),
    };
    let ahead = Ahead::new();
    let pending_index = Mutex::new(PendingIndex {
        packs: Vec::new(),
        last_write: Instant::now(),
    });
    let upload_rx = Mutex::new(upload_rx);
    let threads = opts.threads.max(1);
    let (job_tx, job_rx) = sync_channel::<Vec<FileJob>>(threads * 2);
    let job_rx = Mutex::new(job_rx);
    let (dir_tx, dir_rx) = sync_channel::<Vec<PendingDir>>(16);

    let root = std::thread::scope(|s| -> Result<Option<Id>> {
        let uploaders: Vec<_> = (0..opts.uploads.max(1))
            .map(|_| {
                s.spawn(|| {
                    upload_loop(
                        &shared,
                        &upload_rx,
                        &pending_index,
                        opts.index_every_packs.max(1),
                        opts.index_interval,
                    )
                })
            })
            .collect();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut scratch = Vec::new();
                    loop {
                        let batch = match job_rx.lock().unwrap().recv() {
                            Ok(b) => b,
                            Err(_) => return,
                        };
                        for job in batch {
                            let result = if shared.failed.load(Relaxed) {
                                None
                            } else {
                                // A bug met on one file must not hang the run.
                                let run = std::panic::AssertUnwindSafe(|| {
                                    back_up_file(&shared, &job, &mut scratch)
                                });
                                std::panic::catch_unwind(run).unwrap_or_else(|_| {
                                    shared.fail(Error::Invalid(format!(
                                        "internal error while reading {}",
                                        job.path.display()
                                    )));
                                    None
                                })
                            };
                            let _ = job.done.send(result);
                        }
                    }
                })
            })
            .collect();
        // Listing is syscalls and tree decoding. Compared with a parent, it is nearly
        // all the work: four listers even on two cores, so one is always at work while
        // others wait for a lock or the scheduler (a no-change backup of the kernel
        // tree: 0.31 s with two, 0.28 s with four). Otherwise a lister per core, up to 4.
        let listers = if parent_root.is_some() {
            threads.clamp(4, 8)
        } else {
            threads.min(4)
        };
        let listers: Vec<_> = (0..listers)
            .map(|_| s.spawn(|| ahead.run(&reader)))
            .collect();
        // The walk begins: what the prescan listed is ready, the listers take over.
        if let Some(p) = &opts.prescan {
            p.stop();
        }
        let shared_ref = &shared;
        let trie_ref = &trie;
        let (ahead_ref, reader_ref) = (&ahead, &reader);
        let parent_root_ref = parent_root.as_ref();
        // Deep trees recurse: give the walker a generous stack.
        let walker = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(s, move || {
                // However the walk ends, the listers stop.
                struct Close<'q>(&'q Ahead);
                impl Drop for Close<'_> {
                    fn drop(&mut self) {
                        self.0.close();
                    }
                }
                let _close = Close(ahead_ref);
                let mut w = Walker {
                    shared: shared_ref,
                    ahead: ahead_ref,
                    reader: reader_ref,
                    job_tx,
                    batch: Vec::new(),
                    batch_bytes: 0,
                    dirs: Vec::new(),
                    dir_tx,
                    next_seq: 0,
                };
                w.walk_trie(Path::new("/"), trie_ref, parent_root_ref);
                w.flush_jobs();
                w.flush_dirs();
            })
            .expect("starting the walker thread");
        let root = assemble_trees(&shared, dir_rx);
        if root.is_err() {
            shared.failed.store(true, Relaxed);
        }
        shared.queued_entries.close();
        let _ = walker.join();
        for l in listers {
            let _ = l.join();
        }
        for w in workers {
            let _ = w.join();
        }
        let flushed = if root.is_ok() {
            shared.flush_packs()
        } else {
            Ok(())
        };
        shared.upload_tx.lock().unwrap().take();
        for u in uploaders {
            let _ = u.join();
        }
        flushed?;
        root
    });
    if let Some(p) = &opts.prescan {
        p.clear();
    }
    if let Some(e) = shared.first_failure.lock().unwrap().take() {
        return Err(e);
    }
    let root = root?.ok_or_else(|| Error::Invalid("nothing was backed up".into()))?;
    let rest = std::mem::take(&mut pending_index.lock().unwrap().packs);
    if !rest.is_empty() {
        repo.write_index(&rest)?;
    }
    repo.backend().flush()?;

    let c = &shared.counters;
    let error_messages = shared.error_messages.into_inner().unwrap();
    let summary = Summary {
        files_new: c.files_new.load(Relaxed),
        files_changed: c.files_changed.load(Relaxed),
        files_unchanged: c.files_unchanged.load(Relaxed),
        dirs_new: c.dirs_new.load(Relaxed),
        dirs_changed: c.dirs_changed.load(Relaxed),
        dirs_unchanged: c.dirs_unchanged.load(Relaxed),
        files_changed_during_read: c.changed_during_read.load(Relaxed),
        errors: progress.errors.load(Relaxed),
        total_files: c.total_files.load(Relaxed),
        total_bytes: c.total_bytes.load(Relaxed),
        bytes_read: progress.bytes_read.load(Relaxed),
        data_added_raw: c.data_added_raw.load(Relaxed),
        bytes_added: progress.bytes_added.load(Relaxed),
        blobs_added: c.blobs_added.load(Relaxed),
        packs_written: c.packs_written.load(Relaxed),
        duration_seconds: started.elapsed().as_secs_f64(),
        error_messages,
    };
    let snapshot = Snapshot {
        time: time.to_string(),
        tree: root,
        paths,
        hostname: opts.hostname.clone(),
        username: crate::sys::username(),
        job: opts.job.clone(),
        tags: opts.tags.clone(),
        parent: parent.map(|p| p.id),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        summary,
    };
    let repository_bytes = loaded.pack_sizes.values().sum::<u64>() + snapshot.summary.bytes_added;
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupResult {
        snapshot: SnapshotEntry { id, snapshot },
        index_problems: loaded.problems,
        repository_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::{find_node, restore, RestoreOptions, RestoreProgress};
    use crate::LocalBackend;
    use std::sync::Arc;

    #[test]
    fn source_map_picks_the_longest_prefix() {
        let map = SourceMap {
            views: vec![
                ("/data".into(), "/snap/data".into()),
                ("/data/deep".into(), "/other".into()),
            ],
        };
        assert_eq!(map.read_path(Path::new("/data")), Path::new("/snap/data"));
        assert_eq!(
            map.read_path(Path::new("/data/a/b")),
            Path::new("/snap/data/a/b")
        );
        assert_eq!(
            map.read_path(Path::new("/data/deep/x")),
            Path::new("/other/x")
        );
        assert_eq!(
            map.read_path(Path::new("/database")),
            Path::new("/database")
        );
        assert_eq!(map.read_path(Path::new("/home")), Path::new("/home"));
    }

    /// A frozen copy read in place of the live folder: the snapshot holds the frozen
    /// bytes under the live path, and the next run compares with the live path.
    #[test]
    fn files_are_read_from_the_frozen_copy_and_recorded_at_the_live_path() {
        let dir = std::env::temp_dir().join(format!("bz-source-map-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let live = dir.join("live");
        let frozen = dir.join("frozen");
        for (root, text) in [(&live, "changed after the copy"), (&frozen, "as frozen")] {
            fs::create_dir_all(root.join("sub")).unwrap();
            fs::write(root.join("sub/ledger.qbw"), text).unwrap();
            fs::write(root.join("same.txt"), "same").unwrap();
        }
        fs::write(frozen.join("only-in-copy.txt"), "copy").unwrap();
        // Through the platform module, as a restore makes links (Wine makes none).
        let link = Node {
            kind: NodeKind::Symlink,
            target: Some(Name(b"sub/ledger.qbw".to_vec())),
            ..Node::layout_dir(Name(b"link".to_vec()))
        };
        let has_links = sys::create_symlink(&frozen.join("link"), &link, false).is_ok();
        let repo_dir = dir.join("repo");
        Repository::init(Arc::new(LocalBackend::new(&repo_dir)), b"pw", 1 << 20).unwrap();
        let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), b"pw").unwrap();

        let mut opts = BackupOptions::new(vec![live.clone()]);
        opts.source = SourceMap {
            views: vec![(live.clone(), frozen.clone())],
        };
        opts.parent = ParentChoice::None;
        let r = backup(&repo, &opts, &BackupProgress::new(|_| {})).unwrap();
        let snap = repo.find_snapshot(&r.snapshot.id.to_hex()).unwrap();
        let live_in_snapshot = sys::recorded_path(&live).unwrap();
        assert_eq!(snap.snapshot.paths, vec![live_in_snapshot.clone()]);

        let index = repo.load_index().unwrap().index;
        let target = dir.join("restored");
        restore(
            &repo,
            &index,
            &snap.snapshot.tree,
            &live_in_snapshot,
            &RestoreOptions::new(target.clone()),
            &RestoreProgress::new(|_| {}),
        )
        .unwrap();
        let got = |p: &str| fs::read_to_string(target.join(p)).unwrap();
        assert_eq!(got("sub/ledger.qbw"), "as frozen");
        assert_eq!(got("only-in-copy.txt"), "copy");
        assert_eq!(got("same.txt"), "same");
        if has_links {
            assert_eq!(
                fs::read_link(target.join("link")).unwrap(),
                Path::new(if sys::WINDOWS_PATHS {
                    r"sub\ledger.qbw"
                } else {
                    "sub/ledger.qbw"
                })
            );
        }
        // Windows removes no folder while a file in it is open (the repository's packs).
        drop(repo);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_change_deep_down_stores_new_trees_for_its_folders_only() {
        let dir = std::env::temp_dir().join(format!("bz-reuse-{}", Id::random().short()));
        let src = dir.join("src");
        // 3 levels of 4 folders, 5 files in each folder: 1 + 4 + 16 + 64 = 85 folders.
        fn fill(d: &Path, depth: u32) {
            fs::create_dir_all(d).unwrap();
            for f in 0..5 {
                fs::write(d.join(format!("f{f}.txt")), format!("{} {f}", d.display())).unwrap();
            }
            if depth > 0 {
                for c in 0..4 {
                    fill(&d.join(format!("d{c}")), depth - 1);
                }
            }
        }
        fill(&src, 3);
        let repo_dir = dir.join("repo");
        Repository::init(Arc::new(LocalBackend::new(&repo_dir)), b"pw", 1 << 20).unwrap();
        let repo = Repository::open(Arc::new(LocalBackend::new(&repo_dir)), b"pw").unwrap();
        let mut opts = BackupOptions::new(vec![src.clone()]);
        opts.threads = 3;
        let run = || backup(&repo, &opts, &BackupProgress::new(|_| {})).unwrap();
        // The first run's reads may move access times (Windows): the second settles them.
        run();
        let settled = run().snapshot.snapshot;
        let again = run().snapshot.snapshot;
        // The folders above `src` (the temporary folder) change whenever a test running
        // beside this one creates a file there, so only `src`'s own tree is compared.
        let recorded = sys::recorded_path(&src).unwrap();
        let src_tree = |root: &Id| {
            let index = repo.load_index().unwrap().index;
            find_node(&repo, &index, root, &recorded)
                .unwrap()
                .and_then(|n| n.subtree)
                .unwrap()
        };
        assert_eq!(
            src_tree(&again.tree),
            src_tree(&settled.tree),
            "nothing changed: the same tree for src"
        );
        // No data and no tree of src or below; at most the trees of the folders above
        // it and the root.
        let above = recorded.split('/').filter(|p| !p.is_empty()).count();
        assert!(
            again.summary.blobs_added as usize <= above,
            "{} blobs added, nothing changed below {recorded}",
            again.summary.blobs_added
        );

        let deep = src.join("d2/d1/d3/f4.txt");
        fs::write(&deep, "a new ledger, longer than before").unwrap();
        let third = run().snapshot.snapshot;
        let sum = &third.summary;
        assert_eq!(sum.files_changed, 1);
        // Its folder and the three above it are new trees (and the snapshot's layout
        // folders above `src`); the other 81 folders are the parent's trees, reused.
        assert_eq!(sum.dirs_unchanged, 85 - 4);
        assert!(sum.dirs_changed >= 4);
        // One data blob, a tree per changed folder, the root tree.
        assert_eq!(sum.blobs_added, 1 + sum.dirs_changed + 1);

        let index = repo.load_index().unwrap().index;
        let target = dir.join("restored");
        restore(
            &repo,
            &index,
            &third.tree,
            &recorded,
            &RestoreOptions::new(target.clone()),
            &RestoreProgress::new(|_| {}),
        )
        .unwrap();
        let got = fs::read_to_string(target.join("d2/d1/d3/f4.txt")).unwrap();
        assert_eq!(got, "a new ledger, longer than before");
        let other = fs::read_to_string(target.join("d2/d1/d2/f4.txt")).unwrap();
        let other_src = src.join("d2").join("d1").join("d2");
        assert_eq!(other, format!("{} 4", other_src.display()));
        drop(repo);
        fs::remove_dir_all(&dir).unwrap();
    }
}
