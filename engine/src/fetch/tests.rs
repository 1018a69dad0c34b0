//! The pack reader against a real repository in a local folder that is read as S3 is:
//! each read counted as a request, large reads preferred.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::backend::{Backend, BackendStats, Kind};
use crate::backup::{backup, BackupOptions, BackupProgress, ParentChoice};
use crate::datacache::SEGMENT;
use crate::error::Result;
use crate::index::Index;
use crate::pack::BlobKind;
use crate::{Id, LocalBackend, Repository};

/// A local folder whose pack reads are counted, as an S3 server counts GETs.
struct Counted {
    inner: LocalBackend,
    pack_reads: AtomicU64,
}

impl Backend for Counted {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        if kind == Kind::Pack {
            self.pack_reads.fetch_add(1, Relaxed);
        }
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: usize) -> Result<Vec<u8>> {
        if kind == Kind::Pack {
            self.pack_reads.fetch_add(1, Relaxed);
        }
        self.inner.read_range(kind, name, offset, length)
    }
    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)
    }
    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        self.inner.list(kind)
    }
    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        self.inner.remove(kind, name)
    }
    fn exists(&self, kind: Kind, name: &str) -> Result<bool> {
        self.inner.exists(kind, name)
    }
    fn stats(&self) -> Option<BackendStats> {
        None
    }
    fn concurrency(&self) -> usize {
        4
    }
    fn prefers_large_reads(&self) -> bool {
        true
    }
}

struct Fixture {
    dir: PathBuf,
    backend: Arc<Counted>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Pseudo-random bytes that compress a little, as documents do.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                b'a'
            } else {
                x as u8
            }
        })
        .collect()
}

/// A repository of 4 MiB packs holding 300 small files and 3 large ones (about 14 MiB).
fn fixture() -> Fixture {
    let dir = std::env::temp_dir().join(format!("bz-fetch-{}", Id::random().short()));
    let src = dir.join("src");
    for i in 0..300u64 {
        let d = src.join(format!("d{}", i / 50));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("f{i:03}")),
            bytes(i, 20_000 + (i as usize * 97) % 30_000),
        )
        .unwrap();
    }
    for i in 0..3u64 {
        fs::write(src.join(format!("large{i}")), bytes(1000 + i, 3 << 20)).unwrap();
    }
    let backend = Arc::new(Counted {
        inner: LocalBackend::new(dir.join("repo")),
        pack_reads: AtomicU64::new(0),
    });
    Repository::init(backend.clone(), b"pw", 4 << 20).unwrap();
    let repo = Repository::open(backend.clone(), b"pw").unwrap();
    let mut opts = BackupOptions::new(vec![src]);
    opts.parent = ParentChoice::None;
    opts.threads = 1; // the same packs every run
    backup(&repo, &opts, &BackupProgress::new(|_| {})).unwrap();
    Fixture { dir, backend }
}

impl Fixture {
    /// The repository with a fresh data cache of `budget` bytes in `cache`.
    fn open(&self, cache: &str, budget: u64) -> (Repository, Index) {
        let repo = Repository::open(self.backend.clone(), b"pw")
            .unwrap()
            .with_cache(Some(self.dir.join(cache)))
            .with_data_cache(budget);
        let index = repo.load_index().unwrap().index;
        (repo, index)
    }

    fn reads(&self) -> u64 {
        self.backend.pack_reads.load(Relaxed)
    }
}

/// Every data blob, pack by pack in pack order (as files backed up in order are read).
fn data_blobs(index: &Index) -> Vec<(Id, Vec<Id>)> {
    index
        .blobs_by_pack()
        .into_iter()
        .map(|(p, blobs)| {
            (
                p,
                blobs
                    .into_iter()
                    .filter(|b| b.kind == BlobKind::Data)
                    .map(|b| b.id)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, b)| !b.is_empty())
        .collect()
}

fn cache_bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for e in walk(dir) {
        total += fs::metadata(e).map(|m| m.len()).unwrap_or(0);
    }
    total
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn reading_packs_in_order_grows_the_fetches_and_a_second_pass_reads_nothing() {
    let f = fixture();
    let (repo, index) = f.open("cache", 1 << 30);
    let packs = data_blobs(&index);
    assert!(packs.len() >= 3, "{} data packs", packs.len());
    let before = f.reads();
    for (_, blobs) in &packs {
        for id in blobs {
            // read_blob verifies every byte against the blob's id.
            repo.read_blob(&index, BlobKind::Data, id).unwrap();
        }
    }
    let first_pass = f.reads() - before;
    // 1, 2, then the rest of a 4 MiB pack: at most 3 reads each, not one per blob.
    let blobs: usize = packs.iter().map(|(_, b)| b.len()).sum();
    assert!(
        first_pass <= 3 * packs.len() as u64,
        "{first_pass} reads for {} packs ({blobs} blobs)",
        packs.len()
    );
    let before = f.reads();
    for (_, blobs) in &packs {
        for id in blobs {
            repo.read_blob(&index, BlobKind::Data, id).unwrap();
        }
    }
    assert_eq!(f.reads(), before, "the second pass came from the cache");
    // Another process with the same cache folder reads nothing either.
    let (again, index2) = f.open("cache", 1 << 30);
    let before = f.reads();
    for (_, blobs) in &packs {
        again.read_blob(&index2, BlobKind::Data, &blobs[0]).unwrap();
    }
    assert_eq!(f.reads(), before);
}

#[test]
fn prefetched_packs_come_in_one_read_each_and_a_random_read_fetches_little() {
    let f = fixture();
    let (repo, index) = f.open("cache", 1 << 30);
    let packs = data_blobs(&index);
    let all: Vec<Id> = packs.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let before = f.reads();
    repo.prefetch(&index, &all);
    for id in &all {
        repo.read_blob(&index, BlobKind::Data, id).unwrap();
    }
    // One read per pack; a pack the first read does not cover (a pack closes past its
    // target size, by up to a chunk) may take a second, larger one, and so may a pack
    // whose first blob is asked for before the prefetch has started on it (a slow
    // machine, or Wine, runs the reader ahead of the prefetching threads). Never a
    // read per blob.
    let sizes: HashMap<String, u64> = f.backend.list(Kind::Pack).unwrap().into_iter().collect();
    let blobs = all.len() as u64;
    let reads = f.reads() - before;
    assert!(
        (packs.len() as u64..=2 * packs.len() as u64).contains(&reads) && reads < blobs / 4,
        "{reads} reads for {} packs of {blobs} blobs (sizes {sizes:?})",
        packs.len()
    );

    // A single blob in the middle of a pack, on a fresh cache: one read, of about the
    // segments it lies in.
    let (fresh, index) = f.open("cache-2", 1 << 30);
    let (pack, blobs) = &packs[0];
    let id = blobs[blobs.len() / 2];
    let before = f.reads();
    fresh.read_blob(&index, BlobKind::Data, &id).unwrap();
    assert_eq!(f.reads() - before, 1);
    let cached = cache_bytes_on_disk(&f.dir.join("cache-2"));
    let loc = index.get(&id).unwrap();
    assert!(
        cached <= loc.length as u64 + 2 * SEGMENT,
        "{cached} bytes fetched for a blob of {} in pack {pack}",
        loc.length
    );
}

#[test]
fn readers_of_one_blob_at_once_make_one_request() {
    let f = fixture();
    let (repo, index) = f.open("cache", 1 << 30);
    let id = data_blobs(&index)[1].1[3];
    let want = repo
        .without_cache()
        .read_blob(&index, BlobKind::Data, &id)
        .unwrap();
    let before = f.reads();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert_eq!(repo.read_blob(&index, BlobKind::Data, &id).unwrap(), want));
        }
    });
    assert_eq!(f.reads() - before, 1);
}

#[test]
fn a_damaged_cached_segment_is_dropped_and_read_again() {
    let f = fixture();
    let (repo, index) = f.open("cache", 1 << 30);
    let (_, blobs) = &data_blobs(&index)[0];
    let want: Vec<Vec<u8>> = blobs
        .iter()
        .map(|id| repo.read_blob(&index, BlobKind::Data, id).unwrap())
        .collect();
    // Every cached byte changed.
    for seg in walk(&f.dir.join("cache")).into_iter().filter(|p| {
        p.parent()
            .and_then(|d| d.parent())
            .is_some_and(|d| d.ends_with("data"))
    }) {
        let mut b = fs::read(&seg).unwrap();
        for x in b.iter_mut() {
            *x ^= 0x5a;
        }
        fs::write(&seg, b).unwrap();
    }
    let (again, index) = f.open("cache", 1 << 30);
    let before = f.reads();
    for (id, want) in blobs.iter().zip(&want) {
        assert_eq!(&again.read_blob(&index, BlobKind::Data, id).unwrap(), want);
    }
    assert!(f.reads() > before, "read again from storage");
}

#[test]
fn the_cache_stays_within_its_budget_on_disk() {
    let f = fixture();
    let budget = 3 * SEGMENT;
    let (repo, index) = f.open("cache", budget);
    for (_, blobs) in data_blobs(&index) {
        for id in blobs {
            repo.read_blob(&index, BlobKind::Data, &id).unwrap();
        }
    }
    let on_disk = cache_bytes_on_disk(&f.dir.join("cache"));
    let data_dir: u64 = walk(&f.dir.join("cache"))
        .iter()
        .filter(|p| {
            p.to_string_lossy().contains("/data/") || p.to_string_lossy().contains("\\data\\")
        })
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        data_dir <= budget,
        "{data_dir} bytes of data cache ({on_disk} in all)"
    );
    assert!(repo.pack_reader().unwrap().cache().bytes() <= budget);
}
