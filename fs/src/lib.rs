//! Backazon's read-only view of a repository's snapshots, once, for every platform:
//! [`SnapshotFs`] answers lookup, getattr, readdir, readlink, open and read by inode
//! number, and the adapters (`fuse` for Linux and macOS, `winfsp` for Windows) only
//! translate those calls, so everything below them is tested without a mount.
//!
//! Inodes: the layout folders (`by-date/`, `by-job/`, `by-id/`, `latest/`) have small
//! numbers that never change during a mount. A snapshot folder's entries get a block of
//! consecutive numbers the first time the folder is visited, one per entry in name
//! order, so an entry is found again from its number through its folder's tree; what is
//! remembered per visited folder is a few words, not a record per file. Trees and
//! decoded chunks live in LRU caches bounded in bytes.

pub mod chunks;
pub mod layout;

#[cfg(unix)]
pub mod fuse;
#[cfg(target_os = "linux")]
mod reader_cpu;
mod walk;
#[cfg(windows)]
pub mod winfsp;
pub mod winview;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use backazon_engine::id::IdHashBuilder;
use backazon_engine::index::Index;
use backazon_engine::pack::BlobKind;
use backazon_engine::paged::{self, PagedTree};
use backazon_engine::snapshot::SnapshotEntry;
use backazon_engine::tree::{Node, NodeKind, Tree};
use backazon_engine::{Id, Kind, Repository};
use dashmap::DashMap;
use lru::LruCache;

use chunks::{Chunk, ChunkCache, Prefetcher};
use layout::{InoMap, Layout, VKind, VNode, FIRST_TREE_INO, ROOT_INO};

pub type Ino = u64;
pub use layout::ROOT_INO as ROOT;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl From<NodeKind> for FileKind {
    fn from(k: NodeKind) -> Self {
        match k {
            NodeKind::File => FileKind::File,
            NodeKind::Dir => FileKind::Dir,
            NodeKind::Symlink => FileKind::Symlink,
            NodeKind::Fifo => FileKind::Fifo,
            NodeKind::Socket => FileKind::Socket,
            NodeKind::Chardev => FileKind::CharDevice,
            NodeKind::Blockdev => FileKind::BlockDevice,
        }
    }
}

/// What `stat` shows. Times are nanoseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    /// Creation time (nanoseconds since the Unix epoch), 0 when not recorded (Windows
    /// records it; Linux does not).
    pub created: i64,
    /// Windows file attributes as recorded (`FILE_ATTRIBUTE_*`), 0 for a node made
    /// elsewhere.
    pub attributes: u32,
    /// A snapshot's contents never change: adapters may cache this for long.
    pub immutable: bool,
}

/// Why a call failed; adapters turn this into an errno or an NTSTATUS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    NotADirectory,
    IsADirectory,
    NotASymlink,
    BadHandle,
    /// Damaged or missing repository data, already logged with file and object named.
    Io,
}

pub type FsResult<T> = std::result::Result<T, FsError>;

/// Bytes read from a file: a slice of one cached chunk (no copy), or bytes gathered
/// from several.
pub enum Data {
    Slice(Chunk, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Slice(c, r) => &c[r.clone()],
            Data::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Data({} bytes)", self.len())
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        **self == **other
    }
}

pub struct Options {
    /// Bytes of decoded chunks kept in memory.
    pub chunk_cache_bytes: usize,
    /// Bytes (estimated) of decoded directory trees kept in memory.
    pub tree_cache_bytes: usize,
    /// How often the snapshot list is looked at again, at most.
    pub refresh_every: Duration,
    /// Chunks loaded ahead of a file being read in order.
    pub read_ahead_chunks: usize,
    /// Threads loading chunks ahead.
    pub read_ahead_threads: usize,
    /// Owner shown on the layout folders (the mounting user).
    pub owner: (u32, u32),
    /// Where problems are reported (damaged data, unreadable snapshots).
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_cache_bytes: 96 << 20,
            tree_cache_bytes: 32 << 20,
            refresh_every: Duration::from_secs(2),
            read_ahead_chunks: 6,
            // One per core: while one waits for the disk another decodes. Measured on two
            // cores (`cat` of the kernel tree): 2 threads 5.1 s, 1 thread 5.4 s, 3 5.5 s.
            read_ahead_threads: cores().min(4),
            owner: (0, 0),
            log: Arc::new(|m| eprintln!("{m}")),
        }
    }
}

/// How far ahead of a program reading a file in order its data is fetched from a remote
/// repository (S3): several of the pack reader's largest requests, in flight at once.
const FETCH_AHEAD: u64 = 128 << 20;

/// Entries of one visited folder of a snapshot: `len` inodes from `first`, in name order.
struct DirRec {
    tree: Id,
    first: Ino,
    len: u64,
    /// The snapshot folder this folder is in (hard links are one inode within it).
    root: Ino,
    /// The place of the file whose reading from the start began last (`u64::MAX`: none
    /// yet), to tell a program reading the folder's files one after another (`cp -r`,
    /// `tar`, `cat *`).
    last_started: AtomicU64,
    /// Listed by the adapter: the OS knows its entries' inodes (see [`Pusher`]).
    listed: std::sync::atomic::AtomicBool,
}

/// An open file: its chunks and where each starts.
struct OpenFile {
    ino: Ino,
    chunks: Vec<Id>,
    /// `starts[i]` is chunk i's offset; the last element is the file size.
    starts: Vec<u64>,
    /// End of the last read, to tell sequential reading.
    last_end: AtomicU64,
    /// Chunks before this one were queued for read-ahead already.
    queued_until: std::sync::atomic::AtomicUsize,
    /// Remote repositories: chunks before this one were asked of the pack reader.
    fetched_until: std::sync::atomic::AtomicUsize,
}

struct TreeCache {
    map: LruCache<Id, (Folder, usize), IdHashBuilder>,
    bytes: usize,
}

/// A folder's entries as the mount holds them: decoded whole, or, for a folder too large
/// to hold decoded (a tree over 8 MiB: some 50,000 entries or more), in compressed pages
/// decoded a few at a time ([`PagedTree`]).
#[derive(Clone)]
enum Folder {
    Whole(Arc<Tree>),
    Paged(Arc<PagedTree>),
}

impl Folder {
    fn len(&self) -> usize {
        match self {
            Folder::Whole(t) => t.nodes.len(),
            Folder::Paged(p) => p.len(),
        }
    }

    /// Entry `i`: the tree (a page of it, for a paged folder) holding it, and its place
    /// there.
    fn at(&self, i: usize) -> Option<(Arc<Tree>, usize)> {
        match self {
            Folder::Whole(t) => (i < t.nodes.len()).then(|| (t.clone(), i)),
            Folder::Paged(p) => p.at(i),
        }
    }

    /// The place of the entry named `name`.
    fn find(&self, name: &[u8]) -> Option<usize> {
        match self {
            Folder::Whole(t) => t
                .nodes
                .binary_search_by(|n| n.name.0.as_slice().cmp(name))
                .ok(),
            Folder::Paged(p) => p.find(name),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Folder::Whole(t) => tree_bytes(t),
            Folder::Paged(p) => p.bytes(),
        }
    }

    /// Whether an entry in `range` is a file; `None` when that would take looking at
    /// more than `limit` entries (a paged folder decodes a page per 1,024).
    fn any_file(&self, range: std::ops::Range<usize>, limit: usize) -> Option<bool> {
        match self {
            Folder::Whole(t) => Some(
                t.nodes
                    .get(range)
                    .is_some_and(|ns| ns.iter().any(|n| n.kind == NodeKind::File)),
            ),
            Folder::Paged(_) if range.len() > limit => None,
            Folder::Paged(_) => {
                let mut found = false;
                for i in range {
                    let (page, j) = self.at(i)?;
                    found |= page.nodes[j].kind == NodeKind::File;
                }
                Some(found)
            }
        }
    }
}

struct Inner {
    repo: Repository,
    opts: Options,
    index: RwLock<Arc<Index>>,
    layout: RwLock<Arc<Layout>>,
    inos: Mutex<InoMap>,
    /// Snapshots read so far, by object name (snapshots never change).
    known: Mutex<HashMap<String, SnapshotEntry>>,
    last_refresh: Mutex<Instant>,
    dirs: RwLock<HashMap<Ino, Arc<DirRec>>>,
    /// (snapshot folder, device, inode) of a hard-linked file -> the one inode all its
    /// names show, so `cp -a` and `find -samefile` see the links.
    links: Mutex<HashMap<(Ino, u64, u64), Ino>>,
    /// First inode of each visited folder's block -> that folder's inode.
    blocks: RwLock<BTreeMap<Ino, Ino>>,
    next_ino: AtomicU64,
    trees: Mutex<TreeCache>,
    chunks: ChunkCache,
    handles: DashMap<u64, Arc<OpenFile>>,
    /// Hands file contents to the OS's cache ahead of reads, when the adapter can.
    pusher: Arc<OnceLock<Pusher>>,
    /// Programs reading files in the order of a walk of the tree, followed.
    walks: Mutex<walk::Walks>,
    /// Chunk lists of files read without a handle, most recent first.
    files: Mutex<LruCache<Ino, Arc<OpenFile>>>,
    next_fh: AtomicU64,
}

/// A read-only view of every snapshot of a repository.
pub struct SnapshotFs {
    inner: Arc<Inner>,
    prefetch: Prefetcher<Ahead>,
}

/// What the read-ahead threads load.
#[derive(Clone)]
enum Ahead {
    Chunk(Id),
    /// A folder's tree, and the inode of its parent (for messages).
    Tree(Id, Ino),
    /// A whole file (its inode, and its place in a folder's tree), decoded and handed to
    /// the OS's cache through the [`Pusher`].
    Push(Ino, Arc<Tree>, usize),
}

/// Gives `bytes` of file `ino` from `offset` to the OS's page cache, so that a program
/// reading the file finds them there without asking; false when the OS refused. The FUSE
/// adapter sets one (the kernel's "store" notification).
pub type Pusher = Arc<dyn Fn(Ino, u64, &[u8]) -> bool + Send + Sync>;

/// Where an adapter puts its [`Pusher`] once it has one (after mounting).
#[derive(Clone)]
pub struct PushSlot(Arc<OnceLock<Pusher>>);

impl PushSlot {
    pub fn set(&self, p: Pusher) {
        let _ = self.0.set(p);
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Rough memory of a decoded tree, for the cache's byte budget.
fn tree_bytes(t: &Tree) -> usize {
    t.nodes
        .iter()
        .map(|n| {
            200 + n.name.0.len() + n.content.len() * 32 + n.target.as_ref().map_or(0, |t| t.0.len())
        })
        .sum()
}

impl SnapshotFs {
    /// Loads the index and the snapshot list. Directories are read later, when visited.
    pub fn new(repo: Repository, opts: Options) -> backazon_engine::Result<SnapshotFs> {
        let loaded = repo.load_index()?;
        for p in &loaded.problems {
            (opts.log)(&format!("warning: {p}"));
        }
        let inner = Arc::new(Inner {
            chunks: ChunkCache::new(opts.chunk_cache_bytes),
            repo,
            index: RwLock::new(Arc::new(loaded.index)),
            layout: RwLock::new(Arc::new(Layout::default())),
            inos: Mutex::new(InoMap::default()),
            known: Mutex::new(HashMap::new()),
            last_refresh: Mutex::new(Instant::now()),
            dirs: RwLock::new(HashMap::new()),
            blocks: RwLock::new(BTreeMap::new()),
            links: Mutex::new(HashMap::new()),
            next_ino: AtomicU64::new(FIRST_TREE_INO),
            trees: Mutex::new(TreeCache {
                map: LruCache::unbounded_with_hasher(IdHashBuilder::default()),
                bytes: 0,
            }),
            handles: DashMap::new(),
            pusher: Arc::new(OnceLock::new()),
            walks: Mutex::new(walk::Walks::new((opts.chunk_cache_bytes / 2) as u64)),
            files: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(1024).expect("non-zero"),
            )),
            next_fh: AtomicU64::new(1),
            opts,
        });
        inner.refresh(false)?;
        let weak = Arc::downgrade(&inner);
        let prefetch = Prefetcher::start(
            inner.opts.read_ahead_threads,
            Arc::new(move |job| {
                if let Some(inner) = weak.upgrade() {
                    match job {
                        Ahead::Chunk(id) => {
                            let _ = inner.chunk(&id);
                        }
                        Ahead::Tree(id, at) => {
                            let _ = inner.folder(&id, at);
                        }
                        Ahead::Push(ino, tree, i) => {
                            // Not when its reader got there first (and read it).
                            if inner.walks.lock().unwrap().known(ino) {
                                inner.push_file(ino, &tree.nodes[i]);
                            }
                        }
                    }
                }
            }),
        );
        Ok(SnapshotFs { inner, prefetch })
    }

    /// How long an adapter may cache what it was told about `attr`: long for snapshot
    /// contents, which never change; short for the layout folders, which gain snapshots.
    pub fn ttl(&self, attr: &Attr) -> Duration {
        if attr.immutable {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_secs(1)
        }
    }

    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        self.inner.getattr(ino)
    }

    /// Where the adapter may put a [`Pusher`]; without one, read-ahead only decodes.
    pub fn push_slot(&self) -> PushSlot {
        PushSlot(self.inner.pusher.clone())
    }

    pub fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Attr> {
        self.inner.lookup(parent, name)
    }

    /// The folder above `ino` (the root's parent is the root).
    pub fn parent(&self, ino: Ino) -> FsResult<Ino> {
        self.inner.parent(ino)
    }

    /// Calls `add(attributes, name, next_offset)` for the folder's entries from `offset`
    /// (0 = the first), in name order, until it returns `true` (its buffer is full).
    /// `.` and `..` are the adapter's business.
    pub fn readdir(
        &self,
        ino: Ino,
        offset: u64,
        add: impl FnMut(&Attr, &[u8], u64) -> bool,
    ) -> FsResult<()> {
        self.inner.readdir(ino, offset, add)?;
        if offset == 0 {
            self.read_ahead_folders(ino);
        }
        Ok(())
    }

    /// Once a folder is listed, its sub-folders are likely next (`find`, `cp -r`, a
    /// file manager): their trees are decoded ahead, a few at a time.
    fn read_ahead_folders(&self, ino: Ino) {
        let Ok(rec) = self.inner.dir_rec(ino) else {
            return;
        };
        let Ok(folder) = self.inner.folder(&rec.tree, ino) else {
            return;
        };
        // The first sub-folders (of a paged folder, among its first pages).
        let subtrees: Vec<Id> = match &folder {
            Folder::Whole(t) => t.nodes.iter().filter_map(|n| n.subtree).collect(),
            Folder::Paged(p) => (0..p.len().min(4 * paged::PAGE))
                .filter_map(|i| p.at(i).and_then(|(page, j)| page.nodes[j].subtree))
                .collect(),
        };
        let cached = self.inner.trees.lock().unwrap();
        let jobs: Vec<Ahead> = subtrees
            .into_iter()
            .filter(|t| !cached.map.contains(t))
            .take(64)
            .map(|t| Ahead::Tree(t, ino))
            .collect();
        drop(cached);
        for batch in jobs.chunks(8) {
            self.prefetch.queue(batch.to_vec());
        }
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let (tree, i) = self.inner.tree_node(ino)?;
        let n = &tree.nodes[i];
        match (&n.kind, &n.target) {
            (NodeKind::Symlink, Some(t)) => Ok(t.0.clone()),
            _ => Err(FsError::NotASymlink),
        }
    }

    /// Opens a file for reading; the handle goes to [`SnapshotFs::read`] and
    /// [`SnapshotFs::release`].
    pub fn open(&self, ino: Ino) -> FsResult<u64> {
        self.inner.open(ino)
    }

    /// Up to `size` bytes from `offset` of an open file (fewer only at its end).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Data> {
        let file = self
            .inner
            .handles
            .get(&fh)
            .map(|f| f.clone())
            .ok_or(FsError::BadHandle)?;
        self.read_file(&file, offset, size)
    }

    /// [`SnapshotFs::read`] without an open handle, for adapters whose kernel skips
    /// `open` (FUSE's no-open mode): the file's chunk list is kept in a small LRU.
    pub fn read_ino(&self, ino: Ino, offset: u64, size: u32) -> FsResult<Data> {
        let cached = self.inner.files.lock().unwrap().get(&ino).cloned();
        let file = match cached {
            Some(f) => f,
            None => {
                let f = Arc::new(self.inner.open_file(ino)?);
                self.inner.files.lock().unwrap().put(ino, f.clone());
                f
            }
        };
        self.read_file(&file, offset, size)
    }

    fn read_file(&self, file: &OpenFile, offset: u64, size: u32) -> FsResult<Data> {
        let size_total = *file.starts.last().unwrap_or(&0);
        if offset >= size_total || size == 0 {
            return Ok(Data::Owned(Vec::new()));
        }
        let end = size_total.min(offset + size as u64);
        // The chunk holding `offset`: the last one starting at or before it.
        let mut i = file.starts.partition_point(|&s| s <= offset) - 1;
        self.follow_walk(file.ino, offset);
        let sequential = file.last_end.swap(end, Relaxed) == offset;
        if sequential {
            // Keep the next chunks queued, each once.
            let ahead = self.inner.opts.read_ahead_chunks;
            let end_chunk = (i + 1 + ahead).min(file.chunks.len());
            let from = file
                .queued_until
                .swap(end_chunk, Relaxed)
                .clamp(i + 1, end_chunk);
            let ids: Vec<Ahead> = file.chunks[from..end_chunk]
                .iter()
                .filter(|id| !self.inner.chunks.contains(id))
                .map(|id| Ahead::Chunk(*id))
                .collect();
            self.prefetch.queue(ids);
            self.fetch_ahead(file, i + 1);
        }
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let chunk = self.inner.chunk(&file.chunks[i]).map_err(|e| {
                (self.inner.opts.log)(&format!(
                    "error: reading {}: {e}",
                    self.inner.path_of(file.ino)
                ));
                FsError::Io
            })?;
            let from = (pos - file.starts[i]) as usize;
            let to = ((end - file.starts[i]) as usize).min(chunk.len());
            if from >= to {
                return Err(FsError::Io);
            }
            if pos == offset && pos + (to - from) as u64 == end {
                // All of it in one chunk: hand out the cached bytes as they are.
                return Ok(Data::Slice(chunk, from..to));
            }
            if out.is_empty() {
                out.reserve_exact((end - offset) as usize);
            }
            out.extend_from_slice(&chunk[from..to]);
            pos += (to - from) as u64;
            i += 1;
        }
        Ok(Data::Owned(out))
    }

    /// A remote repository: the pack parts holding the next [`FETCH_AHEAD`] bytes of a
    /// file read in order are asked for ahead of the decoding read-ahead, so that they
    /// come with few large requests, several at once, while the program reads.
    fn fetch_ahead(&self, file: &OpenFile, from: usize) {
        let repo = &self.inner.repo;
        if repo.pack_reader().is_none() {
            return;
        }
        let done = file.fetched_until.load(Relaxed).max(from);
        // Asked again once a quarter of what was asked for has been read.
        let start_at = file.starts[from.min(file.chunks.len())];
        let asked_to = file.starts[done.min(file.chunks.len())];
        if done > from && asked_to >= start_at + FETCH_AHEAD * 3 / 4 {
            return;
        }
        let limit = start_at + FETCH_AHEAD;
        let mut end = done;
        while end < file.chunks.len() && file.starts[end] < limit {
            end += 1;
        }
        if end > done {
            file.fetched_until.store(end, Relaxed);
            let index = self.inner.index.read().unwrap().clone();
            repo.prefetch(&index, &file.chunks[done..end]);
        }
    }

    /// A program reading files one after another in the order of a walk of the tree
    /// (see `walk`) has the next ones loaded before it asks: each small file is otherwise
    /// one round trip through the OS, decoded while the program waits. With a [`Pusher`]
    /// they go on into the OS's cache, and are read without a round trip at all; the
    /// program is then seen again only at a file not pushed (yet), which moves its walk on.
    fn follow_walk(&self, ino: Ino, offset: u64) {
        let inner = &self.inner;
        let mut walks = inner.walks.lock().unwrap();
        let w = match walks.reached(ino) {
            walk::Reached::GoOn(w) => w,
            walk::Reached::Ahead => return,
            walk::Reached::Unknown if offset != 0 => return,
            walk::Reached::Unknown => {
                let Ok((dir, rec, i)) = inner.block_of(ino) else {
                    return;
                };
                let last = rec.last_started.swap(i as u64, Relaxed);
                // The next file of a walk whose reader read all it was handed without
                // asking (from the OS's cache)?
                let resumed = walks.positions().into_iter().find_map(|(w, at)| {
                    let mut at = at;
                    let mut steps = 256;
                    match inner.walk_next(&mut at, &mut steps) {
                        Some((next, _, _)) if next == ino => Some((w, at)),
                        _ => None,
                    }
                });
                if let Some((w, at)) = resumed {
                    walks.resume(w, at)
                } else {
                    let Ok(folder) = inner.folder(&rec.tree, dir) else {
                        return;
                    };
                    // The folder's files are read in order: from its first file on, or
                    // the one after the file started last.
                    let no_file = |r| folder.any_file(r, 4096) == Some(false);
                    let in_order = if last == u64::MAX {
                        no_file(0..i)
                    } else {
                        (last as usize) < i && no_file(last as usize + 1..i)
                    };
                    if !in_order {
                        return;
                    }
                    walks.start(dir, i)
                }
            }
        };
        let push = inner.pusher.get().is_some();
        let mut jobs = Vec::new();
        // A bounded number of entries looked at per call, however many are not files.
        let mut steps = 4096;
        while walks.wants_more(w) {
            let Some((ino, tree, j)) = inner.walk_next(walks.at(w), &mut steps) else {
                break;
            };
            let n = &tree.nodes[j];
            let room = walks.room(w);
            if push && n.size <= room / 4 {
                walks.handed(w, ino, n.size);
                jobs.push(Ahead::Push(ino, tree.clone(), j));
            } else {
                // Large files: their first chunks are decoded, and the OS's own
                // read-ahead asks for the rest.
                let index = inner.index.read().unwrap().clone();
                let mut bytes = 0u64;
                for id in n.content.iter().take(inner.opts.read_ahead_chunks) {
                    bytes += index.get(id).map_or(0, |l| l.raw_length as u64);
                    if !inner.chunks.contains(id) {
                        jobs.push(Ahead::Chunk(*id));
                    }
                }
                walks.handed(w, ino, bytes.min(room));
            }
        }
        drop(walks);
        if inner.repo.pack_reader().is_some() {
            // A remote repository: the pack parts of all of them at once, in few requests.
            let mut ids = Vec::new();
            for job in &jobs {
                match job {
                    Ahead::Push(_, tree, j) => ids.extend_from_slice(&tree.nodes[*j].content),
                    Ahead::Chunk(id) => ids.push(*id),
                    Ahead::Tree(..) => {}
                }
            }
            let index = inner.index.read().unwrap().clone();
            inner.repo.prefetch(&index, &ids);
        }
        // One file at a time, so that every read-ahead thread works on the next files.
        for job in jobs {
            self.prefetch.queue(vec![job]);
        }
    }

    /// Waits until the read-ahead threads have nothing left to do (tests).
    #[cfg(test)]
    fn wait_read_ahead(&self) {
        while !self.prefetch.idle() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn release(&self, fh: u64) {
        self.inner.handles.remove(&fh);
    }

    /// The path of `ino` below the mount point, for messages.
    pub fn path_of(&self, ino: Ino) -> String {
        self.inner.path_of(ino)
    }

    /// Total stored bytes of the repository's packs, for `df`.
    pub fn stored_bytes(&self) -> u64 {
        self.inner
            .repo
            .backend()
            .list(Kind::Pack)
            .map(|l| l.iter().map(|(_, s)| *s).sum())
            .unwrap_or(0)
    }
}

impl Inner {
    fn log(&self, m: &str) {
        (self.opts.log)(m)
    }

    /// Looks at the snapshot list again when it is older than `refresh_every`; a new
    /// snapshot shows up in the layout folders (and the index gains its packs).
    fn maybe_refresh(&self) {
        let due = {
            let mut last = self.last_refresh.lock().unwrap();
            if last.elapsed() >= self.opts.refresh_every {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            if let Err(e) = self.refresh(true) {
                self.log(&format!("warning: cannot list snapshots: {e}"));
            }
        }
    }

    fn refresh(&self, reload_index: bool) -> backazon_engine::Result<()> {
        let mut names: Vec<String> = self
            .repo
            .backend()
            .list(Kind::Snapshot)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| Id::from_hex(n).is_ok())
            .collect();
        names.sort();
        if self.layout.read().unwrap().shown == names {
            return Ok(());
        }
        let mut known = self.known.lock().unwrap();
        let mut new = false;
        for n in &names {
            if !known.contains_key(n) {
                match self.repo.read_snapshot(n) {
                    Ok(snapshot) => {
                        known.insert(
                            n.clone(),
                            SnapshotEntry {
                                id: Id::from_hex(n)?,
                                snapshot,
                            },
                        );
                        new = true;
                    }
                    Err(e) => self.log(&format!("warning: skipping snapshot {n}: {e}")),
                }
            }
        }
        known.retain(|n, _| names.binary_search(n).is_ok());
        if new && reload_index {
            // A backup since the mount added packs: their blobs must be found.
            let loaded = self.repo.load_index()?;
            *self.index.write().unwrap() = Arc::new(loaded.index);
        }
        let mut snaps: Vec<SnapshotEntry> = known.values().cloned().collect();
        snaps.sort_by_key(|s| (s.snapshot.timestamp(), s.id));
        let previous = self.layout();
        let mut layout = layout::build(
            &snaps,
            &mut self.inos.lock().unwrap(),
            &previous,
            now_nanos(),
        );
        // Snapshots that could not be read stay out, but do not cause a rebuild every time.
        layout.shown = names;
        *self.layout.write().unwrap() = Arc::new(layout);
        Ok(())
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.read().unwrap().clone()
    }

    fn vnode_attr(&self, ino: Ino, v: &VNode) -> Attr {
        let (uid, gid) = self.opts.owner;
        Attr {
            ino,
            kind: FileKind::Dir,
            size: 0,
            perm: 0o555,
            nlink: 2,
            uid,
            gid,
            rdev: 0,
            atime: v.mtime,
            mtime: v.mtime,
            ctime: v.mtime,
            created: v.mtime,
            attributes: 0,
            immutable: false,
        }
    }

    fn node_attr(&self, ino: Ino, n: &Node) -> Attr {
        let kind = FileKind::from(n.kind);
        Attr {
            ino,
            kind,
            size: match kind {
                FileKind::File => n.size,
                FileKind::Symlink => n.target.as_ref().map_or(0, |t| t.0.len() as u64),
                _ => 0,
            },
            perm: (n.mode & 0o7777) as u16,
            nlink: if kind == FileKind::Dir {
                2
            } else {
                n.links.clamp(1, u32::MAX as u64) as u32
            },
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
            created: n.created,
            attributes: n.attributes,
            immutable: true,
        }
    }

    fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        if ino < FIRST_TREE_INO {
            if ino == ROOT_INO {
                self.maybe_refresh();
            }
            let layout = self.layout();
            let v = layout.nodes.get(&ino).ok_or(FsError::NotFound)?;
            return Ok(self.vnode_attr(ino, v));
        }
        let (tree, i) = self.tree_node(ino)?;
        Ok(self.node_attr(ino, &tree.nodes[i]))
    }

    fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Attr> {
        if parent < FIRST_TREE_INO {
            self.maybe_refresh();
            let layout = self.layout();
            match &layout.nodes.get(&parent).ok_or(FsError::NotFound)?.kind {
                VKind::Dir(children) => {
                    let i = children
                        .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                        .map_err(|_| FsError::NotFound)?;
                    let ino = children[i].1;
                    let v = layout.nodes.get(&ino).ok_or(FsError::NotFound)?;
                    return Ok(self.vnode_attr(ino, v));
                }
                VKind::Snapshot(_) => {}
            }
        }
        let rec = self.dir_rec(parent)?;
        let folder = self.folder(&rec.tree, parent)?;
        let i = folder.find(name).ok_or(FsError::NotFound)?;
        let (tree, j) = folder.at(i).ok_or(FsError::NotFound)?;
        let n = &tree.nodes[j];
        Ok(self.node_attr(self.entry_ino(&rec, i, n), n))
    }

    /// The inode an entry shows: its place in its folder's block, or for a hard-linked
    /// file the inode of the first of its names seen.
    fn entry_ino(&self, rec: &DirRec, i: usize, n: &Node) -> Ino {
        let own = rec.first + i as u64;
        if n.kind != NodeKind::File || n.links < 2 || n.inode == 0 {
            return own;
        }
        *self
            .links
            .lock()
            .unwrap()
            .entry((rec.root, n.device, n.inode))
            .or_insert(own)
    }

    fn parent(&self, ino: Ino) -> FsResult<Ino> {
        if ino < FIRST_TREE_INO {
            let layout = self.layout();
            return Ok(layout.nodes.get(&ino).ok_or(FsError::NotFound)?.parent);
        }
        Ok(self.block_of(ino)?.0)
    }

    fn readdir(
        &self,
        ino: Ino,
        offset: u64,
        mut add: impl FnMut(&Attr, &[u8], u64) -> bool,
    ) -> FsResult<()> {
        if ino < FIRST_TREE_INO {
            if offset == 0 {
                self.maybe_refresh();
            }
            let layout = self.layout();
            if let VKind::Dir(children) = &layout.nodes.get(&ino).ok_or(FsError::NotFound)?.kind {
                for (i, (name, child)) in children.iter().enumerate().skip(offset as usize) {
                    let Some(v) = layout.nodes.get(child) else {
                        continue;
                    };
                    if add(&self.vnode_attr(*child, v), name, i as u64 + 1) {
                        break;
                    }
                }
                return Ok(());
            }
        }
        let rec = self.dir_rec(ino)?;
        let folder = self.folder(&rec.tree, ino)?;
        if offset == 0 {
            rec.listed.store(true, Relaxed);
        }
        for i in offset as usize..folder.len() {
            let (tree, j) = folder.at(i).ok_or(FsError::Io)?;
            let n = &tree.nodes[j];
            if add(
                &self.node_attr(self.entry_ino(&rec, i, n), n),
                &n.name.0,
                i as u64 + 1,
            ) {
                break;
            }
        }
        Ok(())
    }

    /// The folder whose block holds `ino`, and `ino`'s place in it.
    fn block_of(&self, ino: Ino) -> FsResult<(Ino, Arc<DirRec>, usize)> {
        let dir = {
            let blocks = self.blocks.read().unwrap();
            *blocks.range(..=ino).next_back().ok_or(FsError::NotFound)?.1
        };
        let rec = self
            .dirs
            .read()
            .unwrap()
            .get(&dir)
            .cloned()
            .ok_or(FsError::NotFound)?;
        if ino >= rec.first + rec.len {
            return Err(FsError::NotFound);
        }
        Ok((dir, rec.clone(), (ino - rec.first) as usize))
    }

    /// The tree node behind a snapshot entry's inode.
    fn tree_node(&self, ino: Ino) -> FsResult<(Arc<Tree>, usize)> {
        if ino < FIRST_TREE_INO {
            return Err(FsError::NotASymlink);
        }
        let (dir, rec, i) = self.block_of(ino)?;
        self.folder(&rec.tree, dir)?.at(i).ok_or(FsError::NotFound)
    }

    /// The visited-folder record of a folder, made on its first visit.
    fn dir_rec(&self, ino: Ino) -> FsResult<Arc<DirRec>> {
        if let Some(r) = self.dirs.read().unwrap().get(&ino) {
            return Ok(r.clone());
        }
        let tree_id = if ino < FIRST_TREE_INO {
            let layout = self.layout();
            match &layout.nodes.get(&ino).ok_or(FsError::NotFound)?.kind {
                VKind::Snapshot(s) => s.tree,
                VKind::Dir(_) => return Err(FsError::NotFound),
            }
        } else {
            let (tree, i) = self.tree_node(ino)?;
            let n = &tree.nodes[i];
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(t)) => t,
                (NodeKind::Dir, None) => {
                    self.log(&format!(
                        "error: {}: folder without contents in the snapshot",
                        self.path_of(ino)
                    ));
                    return Err(FsError::Io);
                }
                _ => return Err(FsError::NotADirectory),
            }
        };
        let len = self.folder(&tree_id, ino)?.len() as u64;
        let root = if ino < FIRST_TREE_INO {
            ino
        } else {
            self.block_of(ino)?.1.root
        };
        let mut dirs = self.dirs.write().unwrap();
        if let Some(r) = dirs.get(&ino) {
            return Ok(r.clone());
        }
        let first = self.next_ino.fetch_add(len.max(1), Relaxed);
        let rec = Arc::new(DirRec {
            tree: tree_id,
            first,
            len,
            root,
            last_started: AtomicU64::new(u64::MAX),
            listed: std::sync::atomic::AtomicBool::new(false),
        });
        dirs.insert(ino, rec.clone());
        self.blocks.write().unwrap().insert(first, ino);
        Ok(rec)
    }

    /// A folder's entries, from the cache or the repository. `at` names where it is, for
    /// messages.
    fn folder(&self, id: &Id, at: Ino) -> FsResult<Folder> {
        if let Some((t, _)) = self.trees.lock().unwrap().map.get(id) {
            return Ok(t.clone());
        }
        let index = self.index.read().unwrap().clone();
        let folder = if paged::is_large(&index, id) {
            PagedTree::read(&self.repo, &index, id).map(|p| Folder::Paged(Arc::new(p)))
        } else {
            self.repo
                .read_tree(&index, id)
                .map(|t| Folder::Whole(Arc::new(t)))
        };
        let folder = folder.map_err(|e| {
            self.log(&format!("error: listing {}: {e}", self.path_of(at)));
            FsError::Io
        })?;
        let bytes = folder.bytes();
        let mut cache = self.trees.lock().unwrap();
        if let Some((_, old)) = cache.map.put(*id, (folder.clone(), bytes)) {
            cache.bytes -= old;
        }
        cache.bytes += bytes;
        while cache.bytes > self.opts.tree_cache_bytes && cache.map.len() > 1 {
            if let Some((_, (_, b))) = cache.map.pop_lru() {
                cache.bytes -= b;
            }
        }
        Ok(folder)
    }

    fn open_file(&self, ino: Ino) -> FsResult<OpenFile> {
        if ino < FIRST_TREE_INO {
            return Err(FsError::IsADirectory);
        }
        let (tree, i) = self.tree_node(ino)?;
        let n = &tree.nodes[i];
        if n.kind == NodeKind::Dir {
            return Err(FsError::IsADirectory);
        }
        let index = self.index.read().unwrap().clone();
        let mut starts = Vec::with_capacity(n.content.len() + 1);
        let mut pos = 0u64;
        for id in &n.content {
            starts.push(pos);
            match index.get(id) {
                Some(loc) => pos += loc.raw_length as u64,
                None => {
                    self.log(&format!(
                        "error: opening {}: chunk {id} is in no index (its pack is missing or damaged)",
                        self.path_of(ino)
                    ));
                    return Err(FsError::Io);
                }
            }
        }
        starts.push(pos);
        if pos != n.size && n.kind == NodeKind::File {
            self.log(&format!(
                "error: opening {}: its chunks hold {pos} bytes, the snapshot says {}",
                self.path_of(ino),
                n.size
            ));
            return Err(FsError::Io);
        }
        Ok(OpenFile {
            ino,
            chunks: n.content.clone(),
            starts,
            last_end: AtomicU64::new(0),
            queued_until: std::sync::atomic::AtomicUsize::new(0),
            fetched_until: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn open(&self, ino: Ino) -> FsResult<u64> {
        let file = self.open_file(ino)?;
        let fh = self.next_fh.fetch_add(1, Relaxed);
        self.handles.insert(fh, Arc::new(file));
        Ok(fh)
    }

    /// The next file of a walk of the snapshot from `at` (a folder and a place in it),
    /// moving `at` past it: entries in name order, into sub-folders, back up to the
    /// parent at a folder's end. `None` at the end of the snapshot, at a folder not
    /// listed yet (the OS does not know its files), or after `steps` entries.
    fn walk_next(
        &self,
        at: &mut (Ino, usize),
        steps: &mut usize,
    ) -> Option<(Ino, Arc<Tree>, usize)> {
        loop {
            *steps = steps.checked_sub(1)?;
            let (dir, i) = *at;
            let rec = self.dirs.read().unwrap().get(&dir).cloned()?;
            if !rec.listed.load(Relaxed) {
                return None;
            }
            let folder = self.folder(&rec.tree, dir).ok()?;
            let Some((tree, j)) = folder.at(i) else {
                if dir < FIRST_TREE_INO {
                    return None;
                }
                let (parent, _, place) = self.block_of(dir).ok()?;
                *at = (parent, place + 1);
                continue;
            };
            let n = &tree.nodes[j];
            let ino = self.entry_ino(&rec, i, n);
            match n.kind {
                NodeKind::File => {
                    at.1 += 1;
                    return Some((ino, tree, j));
                }
                NodeKind::Dir => *at = (ino, 0),
                _ => at.1 += 1,
            }
        }
    }

    /// Decodes file `n` (inode `ino`) and hands it to the OS's cache, chunk by chunk;
    /// stops at the first chunk that cannot be read (the reader will then ask, and get
    /// the error) or that the OS refuses.
    fn push_file(&self, ino: Ino, n: &Node) {
        let Some(push) = self.pusher.get() else {
            return;
        };
        let mut offset = 0u64;
        for id in &n.content {
            let Ok(chunk) = self.chunks.get_passing(id, || self.load_chunk(id)) else {
                return;
            };
            for piece in chunk.chunks(1 << 20) {
                if !push(ino, offset, piece) {
                    return;
                }
                offset += piece.len() as u64;
            }
        }
    }

    fn chunk(&self, id: &Id) -> Result<Chunk, String> {
        self.chunks.get(id, || self.load_chunk(id))
    }

    fn load_chunk(&self, id: &Id) -> Result<Chunk, String> {
        let index = self.index.read().unwrap().clone();
        self.repo
            .read_blob(&index, BlobKind::Data, id)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    fn name_of(&self, ino: Ino) -> Option<(Ino, Vec<u8>)> {
        if ino < FIRST_TREE_INO {
            let layout = self.layout();
            let v = layout.nodes.get(&ino)?;
            return Some((v.parent, v.name.clone()));
        }
        let (dir, rec, i) = self.block_of(ino).ok()?;
        let tree = self
            .trees
            .lock()
            .unwrap()
            .map
            .peek(&rec.tree)
            .map(|t| t.0.clone());
        let folder = match tree {
            Some(t) => t,
            None => self.folder(&rec.tree, dir).ok()?,
        };
        let (tree, j) = folder.at(i)?;
        Some((dir, tree.nodes[j].name.0.clone()))
    }

    fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT_INO && parts.len() < 4096 {
            match self.name_of(at) {
                Some((parent, name)) => {
                    parts.push(String::from_utf8_lossy(&name).into_owned());
                    at = parent;
                }
                None => {
                    parts.push(format!("<inode {at}>"));
                    break;
                }
            }
        }
        parts.reverse();
        parts.join("/")
    }
}

#[cfg(test)]
mod tests;
