//! Directory listings read ahead of the walker. Listing a folder (readdir, an lstat per
//! entry, sorting) and decoding the parent snapshot's tree of it are most of a no-change
//! backup's work; the walker itself only compares and queues. So the walker hands the
//! folders it meets to a few lister threads and takes each listing when its walk
//! reaches the folder.
//!
//! Order and bounds: whoever lists a folder queues its sub-folders on a stack, first
//! child on top, so the listers run down the tree in the walk's own depth-first order
//! and the listings waiting are the next ones the walker needs. At most `AHEAD` entries
//! wait in finished listings; a folder the walker reaches before any lister started it
//! is listed by the walker itself, so the walker never waits on work nobody is doing.
//!
//! Before all that, while the password is stretched and the index read (the one part
//! of a backup that runs on one core), a `Prescan` thread lists the first folders of
//! the walk on the other core, so their listings are ready when the walk begins.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::glob::{any_matches, Pattern};
use crate::id::Id;
use crate::index::Index;
use crate::repo::Repository;
use crate::sys;
use crate::tree::{Name, NodeKind, Tree};

use super::SourceMap;

/// Entries in finished listings waiting for the walker, at most (about 300 bytes each).
const AHEAD: usize = 4_000;

/// Entries the prescan lists before the walk begins, at most (about 300 bytes each, so
/// 14 MB): about what one core lists while the password is stretched (600,000 PBKDF2
/// rounds) and the index is read. The no-change backup of the kernel tree (78,000
/// entries) took 0.25 s with none ahead, 0.24 s with 32,000 and 0.23 s with 48,000.
const PRESCAN_ENTRIES: usize = 48_000;

/// A folder's entries as read from the file system, with what could not be read.
type Entries = Vec<(Name, OsString, io::Result<Metadata>)>;

/// Reads a folder: its entries (each stat'ed relative to the open folder: no walk of
/// the whole path), sorted by name; the folder's own error; the entries' errors.
fn read_folder(path: &Path) -> (Entries, Option<io::Error>, Vec<io::Error>) {
    let mut entry_errors = Vec::new();
    let (mut entries, error) = match fs::read_dir(path) {
        Ok(rd) => (
            rd.filter_map(|e| match e {
                Ok(e) => {
                    let os = e.file_name();
                    Some((sys::name_of(&os), os, e.metadata()))
                }
                Err(err) => {
                    entry_errors.push(err);
                    None
                }
            })
            .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    (entries, error, entry_errors)
}

/// Listings of the walk's first folders, made on a thread of their own from before the
/// repository is open until the walk begins (`stop`); the walk takes them instead of
/// reading those folders itself. A folder that could not be read whole is left to the
/// walk, which reports it. Bounded to `PRESCAN_ENTRIES` entries.
pub struct Prescan {
    shared: Arc<PrescanShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct PrescanShared {
    listed: Mutex<HashMap<PathBuf, Entries>>,
    stop: AtomicBool,
}

impl std::fmt::Debug for Prescan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.shared.listed.lock().unwrap().len();
        write!(f, "Prescan({n} folders listed)")
    }
}

impl Prescan {
    /// Starts listing `paths` (absolute, as they are read) depth first in the walk's
    /// order, leaving out folders that match `excludes`. On a single core it lists
    /// nothing: there it would only slow the key derivation it is meant to overlap.
    pub fn start(paths: &[PathBuf], excludes: &[Pattern]) -> Prescan {
        let shared = Arc::new(PrescanShared::default());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut stack: Vec<PathBuf> = paths
            .iter()
            .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
            .cloned()
            .collect();
        stack.sort();
        stack.dedup();
        stack.reverse();
        let excludes = excludes.to_vec();
        let thread = (cores > 1 && !stack.is_empty()).then(|| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut total = 0;
                while let Some(dir) = stack.pop() {
                    if shared.stop.load(Relaxed) || total >= PRESCAN_ENTRIES {
                        break;
                    }
                    let (entries, error, entry_errors) = read_folder(&dir);
                    if error.is_some() || !entry_errors.is_empty() {
                        continue;
                    }
                    total += entries.len();
                    let first_child = stack.len();
                    for (_, os, md) in &entries {
                        if md.as_ref().is_ok_and(|m| m.is_dir()) {
                            let child = dir.join(os);
                            if !any_matches(&excludes, &sys::match_path(&child)) {
                                stack.push(child);
                            }
                        }
                    }
                    stack[first_child..].reverse();
                    shared.listed.lock().unwrap().insert(dir, entries);
                }
            })
        });
        Prescan {
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// No more listing: waits for the folder under way, keeps what was listed.
    pub fn stop(&self) {
        self.shared.stop.store(true, Relaxed);
        self.join();
    }

    fn join(&self) {
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }

    /// The listing of `path`, once.
    fn take(&self, path: &Path) -> Option<Entries> {
        self.shared.listed.lock().unwrap().remove(path)
    }

    /// Folders listed and not (yet) taken.
    pub fn waiting(&self) -> usize {
        self.shared.listed.lock().unwrap().len()
    }

    /// Drops the listings not taken (folders the walk left out).
    pub fn clear(&self) {
        self.stop();
        self.shared.listed.lock().unwrap().clear();
    }
}

impl Drop for Prescan {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One folder as the walker needs it: its entries sorted by name, what could not be
/// read, and the parent snapshot's tree of the same folder.
pub(super) struct Listing {
    pub entries: Vec<(Name, OsString, io::Result<Metadata>)>,
    /// The sub-folders, already handed to the listers: (index in `entries`, ticket).
    pub folders: Vec<(usize, Ticket)>,
    /// The folder could not be listed at all.
    pub error: Option<io::Error>,
    /// Entries that could not be read while listing.
    pub entry_errors: Vec<io::Error>,
    /// The parent tree's id and its contents.
    pub parent: Option<(Id, Tree)>,
}

/// Where a listing is read from.
pub(super) struct Reader<'a> {
    pub repo: &'a Repository,
    pub index: &'a Index,
    pub source: &'a SourceMap,
    /// Folders matching these are not listed (the walker leaves them out).
    pub excludes: &'a [Pattern],
    /// Listings made before the walk began, taken instead of reading those folders.
    pub prescan: Option<&'a Prescan>,
}

impl Reader<'_> {
    /// Lists `path` (its recorded name; read through the source map), decodes the parent
    /// tree `parent` (an unreadable parent tree only means the files are read), and
    /// hands the sub-folders to `ahead`.
    pub fn list(&self, ahead: &Ahead, path: &Path, parent: Option<&Id>) -> Listing {
        let read = self.source.read_path(path);
        let (entries, error, entry_errors) = match self.prescan.and_then(|p| p.take(&read)) {
            Some(entries) => (entries, None, Vec::new()),
            None => read_folder(&read),
        };
        let parent = parent.and_then(|id| Some((*id, self.repo.read_tree(self.index, id).ok()?)));
        let mut at = Vec::new();
        let mut folders = Vec::new();
        for (i, (name, os, md)) in entries.iter().enumerate() {
            if md.as_ref().is_ok_and(|m| m.is_dir()) {
                let child = path.join(os);
                if !any_matches(self.excludes, &sys::match_path(&child)) {
                    let old = parent.as_ref().and_then(|(_, t)| t.find(&name.0));
                    let subtree = old
                        .filter(|n| n.kind == NodeKind::Dir)
                        .and_then(|n| n.subtree);
                    folders.push((child, subtree));
                    at.push(i);
                }
            }
        }
        let folders = at.into_iter().zip(ahead.submit(folders)).collect();
        Listing {
            entries,
            folders,
            error,
            entry_errors,
            parent,
        }
    }
}

enum State {
    Queued,
    Listing,
    Done(Box<Listing>),
    /// Taken by the walker, listed by the walker, or no longer wanted.
    Gone,
}

struct Job {
    path: PathBuf,
    parent: Option<Id>,
    state: Mutex<State>,
    done: Condvar,
}

struct Queue {
    stack: Vec<Arc<Job>>,
    /// Entries in listings finished and not yet taken, plus one per listing under way.
    ahead: usize,
    /// Listers waiting for work.
    idle: usize,
    closed: bool,
}

/// The folders handed out and the listings made (a handle: clones share them).
#[derive(Clone)]
pub(super) struct Ahead(Arc<Inner>);

struct Inner {
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// A folder handed to the listers; dropping it unused frees its place.
pub(super) struct Ticket {
    ahead: Ahead,
    job: Arc<Job>,
}

impl Ahead {
    pub fn new() -> Ahead {
        Ahead(Arc::new(Inner {
            queue: Mutex::new(Queue {
                stack: Vec::new(),
                ahead: 0,
                idle: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        }))
    }

    /// Hands out folders in the order the walk will reach them.
    fn submit(&self, folders: Vec<(PathBuf, Option<Id>)>) -> Vec<Ticket> {
        let tickets: Vec<_> = folders
            .into_iter()
            .map(|(path, parent)| Ticket {
                ahead: self.clone(),
                job: Arc::new(Job {
                    path,
                    parent,
                    state: Mutex::new(State::Queued),
                    done: Condvar::new(),
                }),
            })
            .collect();
        if !tickets.is_empty() {
            let mut q = self.0.queue.lock().unwrap();
            q.stack.extend(tickets.iter().rev().map(|t| t.job.clone()));
            let wake = q.idle > 0 && q.ahead < AHEAD;
            drop(q);
            if wake && tickets.len() == 1 {
                self.0.changed.notify_one();
            } else if wake {
                self.0.changed.notify_all();
            }
        }
        tickets
    }

    /// No more folders: the listers stop.
    pub fn close(&self) {
        let mut q = self.0.queue.lock().unwrap();
        q.closed = true;
        q.stack.clear();
        drop(q);
        self.0.changed.notify_all();
    }

    /// A lister thread: lists folders until closed.
    pub fn run(&self, reader: &Reader) {
        loop {
            let job = {
                let mut q = self.0.queue.lock().unwrap();
                loop {
                    if q.closed {
                        return;
                    }
                    if q.ahead < AHEAD {
                        if let Some(job) = q.stack.pop() {
                            q.ahead += 1;
                            break job;
                        }
                    }
                    q.idle += 1;
                    q = self.0.changed.wait(q).unwrap();
                    q.idle -= 1;
                }
            };
            {
                let mut st = job.state.lock().unwrap();
                if !matches!(*st, State::Queued) {
                    drop(st);
                    self.release(1); // the walker got there first
                    continue;
                }
                *st = State::Listing;
            }
            let listing = reader.list(self, &job.path, job.parent.as_ref());
            let size = listing.entries.len();
            self.0.queue.lock().unwrap().ahead += size;
            let mut st = job.state.lock().unwrap();
            if matches!(*st, State::Listing) {
                *st = State::Done(Box::new(listing));
                job.done.notify_all();
            } else {
                drop(st);
                self.release(size + 1);
            }
        }
    }

    /// Frees the places of `n` entries. Idle listers are woken only once a quarter of
    /// the room is free again: waking them at every listing taken, to find the room
    /// full again, made most of a no-change backup's context switches.
    fn release(&self, n: usize) {
        let mut q = self.0.queue.lock().unwrap();
        q.ahead -= n;
        let wake = q.idle > 0 && !q.stack.is_empty() && q.ahead <= AHEAD - AHEAD / 4;
        drop(q);
        if wake {
            self.0.changed.notify_all();
        }
    }
}

impl Ticket {
    /// The listing: made by a lister, or here when none has started it.
    pub fn take(self, reader: &Reader) -> Listing {
        let mut st = self.job.state.lock().unwrap();
        loop {
            match std::mem::replace(&mut *st, State::Gone) {
                State::Queued => {
                    drop(st);
                    return reader.list(&self.ahead, &self.job.path, self.job.parent.as_ref());
                }
                State::Listing => {
                    *st = State::Listing;
                    st = self.job.done.wait(st).unwrap();
                }
                State::Done(listing) => {
                    drop(st);
                    self.ahead.release(listing.entries.len() + 1);
                    return *listing;
                }
                State::Gone => unreachable!("a ticket is taken once"),
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Taken: already Gone. Not taken (an excluded folder, a failed run): free its
        // place among the listings ahead, or tell a lister still at it to drop it.
        let mut st = self.job.state.lock().unwrap();
        match std::mem::replace(&mut *st, State::Gone) {
            State::Done(listing) => {
                drop(st);
                self.ahead.release(listing.entries.len() + 1);
            }
            State::Listing => *st = State::Gone,
            State::Queued | State::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_arrive_whole_in_walk_order_with_or_without_listers() {
        let root = std::env::temp_dir().join(format!("bz-listing-{}", Id::random().short()));
        let dir = &root;
        fs::create_dir_all(dir).unwrap();
        for d in 0..50 {
            let sub = dir.join(format!("d{d:02}"));
            fs::create_dir(&sub).unwrap();
            for f in 0..d {
                fs::write(sub.join(format!("f{f}")), b"x").unwrap();
            }
        }
        let backend = std::sync::Arc::new(crate::LocalBackend::new(dir.join("repo")));
        let repo = Repository::init(backend, b"pw", 1 << 20).unwrap();
        let index = Index::default();
        let source = SourceMap::default();
        let reader = Reader {
            repo: &repo,
            index: &index,
            source: &source,
            excludes: &[],
            prescan: None,
        };
        for listers in [0, 1, 3] {
            let ahead = Ahead::new();
            std::thread::scope(|s| {
                for _ in 0..listers {
                    s.spawn(|| ahead.run(&reader));
                }
                let folders = (0..50)
                    .map(|d| (dir.join(format!("d{d:02}")), None))
                    .collect();
                let mut tickets = ahead.submit(folders);
                // One left untaken: its place among the listings ahead comes back.
                drop(tickets.remove(7));
                for (i, t) in tickets.into_iter().enumerate() {
                    let d = if i < 7 { i } else { i + 1 };
                    let l = t.take(&reader);
                    assert!(l.error.is_none());
                    let names: Vec<_> = l.entries.iter().map(|e| e.0.clone()).collect();
                    let mut want: Vec<_> =
                        (0..d).map(|f| Name(format!("f{f}").into_bytes())).collect();
                    want.sort();
                    assert_eq!(names, want, "listers {listers}, folder {d}");
                }
                assert_eq!(ahead.0.queue.lock().unwrap().ahead, 0);
                ahead.close();
            });
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn prescanned_folders_list_as_read_and_are_taken_once() {
        let root = std::env::temp_dir().join(format!("bz-prescan-{}", Id::random().short()));
        for d in ["a/x", "a/y", "b", "skip/deep"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a/1", "a/x/2", "a/y/3", "b/4", "skip/deep/5", "top"] {
            fs::write(root.join(f), f).unwrap();
        }
        let skip = Pattern::new(&format!("{}/skip", root.display())).unwrap();
        let prescan = Prescan::start(std::slice::from_ref(&root), &[skip]);
        prescan.join(); // done listing: the tree is far below the bound
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Folders in walk order; the excluded one and what is under it are not listed.
        let listed = if cores > 1 { 5 } else { 0 };
        assert_eq!(prescan.waiting(), listed);
        let repo_dir = root.with_extension("repo");
        let backend = std::sync::Arc::new(crate::LocalBackend::new(&repo_dir));
        let repo = Repository::init(backend, b"pw", 1 << 20).unwrap();
        let index = Index::default();
        let source = SourceMap::default();
        let reader = |prescan| Reader {
            repo: &repo,
            index: &index,
            source: &source,
            excludes: &[],
            prescan,
        };
        let names =
            |l: Listing| -> Vec<Vec<u8>> { l.entries.into_iter().map(|e| e.0 .0).collect() };
        let ahead = Ahead::new();
        for d in ["", "a", "a/x", "a/y", "b", "skip", "skip/deep"] {
            let dir = root.join(d);
            let from_prescan = reader(Some(&prescan)).list(&ahead, &dir, None);
            let read = reader(None).list(&ahead, &dir, None);
            assert_eq!(names(from_prescan), names(read), "{d}");
        }
        assert_eq!(prescan.waiting(), 0, "each listing is taken once");
        ahead.close();
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&repo_dir).unwrap();
    }
}
