//! The local data cache of a remote repository: segments of data packs (aligned
//! [`SEGMENT`]-byte parts, the last one of a pack shorter) as they were fetched, on disk in
//! the cache folder (`<cache>/<repository id>/data/<pack>/<n>`), bounded in bytes and
//! evicted least recently used. Mount and restore share it, so what one fetched the other
//! reads without a request.
//!
//! Nothing read from it is trusted: its bytes hold sealed blobs, and a blob's seal binds
//! its id, so a damaged or truncated segment fails the blob's decode and is dropped and
//! fetched again. Segments stay encrypted on disk, as in the repository. Deleting the
//! folder is always safe. Several processes may share it; each keeps its own count of the
//! bytes in it (from a scan at start), so together they may briefly exceed the bound.

use std::collections::HashMap;
use std::fs::{self, File};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::id::Id;

/// Bytes of a pack each cached segment holds: the unit of fetching and of eviction.
pub const SEGMENT: u64 = 1 << 20;

/// A segment: a pack and its segment number.
pub type SegKey = (Id, u32);

struct State {
    /// Every segment known to be cached, least recently used first, with its size.
    lru: LruCache<SegKey, u64>,
    bytes: u64,
    /// Segment files open for reads (a blob is read from a few; many blobs share one).
    open: LruCache<SegKey, Arc<File>>,
    /// Without a folder: the segments themselves.
    memory: HashMap<SegKey, Arc<Vec<u8>>>,
}

/// What looking up a segment found.
enum Lookup {
    /// Not a cached segment.
    Absent,
    /// A cached segment whose file is gone or shorter than the read.
    Lost,
    Bytes(Vec<u8>),
}

pub struct DataCache {
    /// `None`: segments are kept in memory only (no cache folder, or `--no-cache`).
    dir: Option<PathBuf>,
    budget: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for DataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataCache({:?}, {} bytes)", self.dir, self.budget)
    }
}

fn state() -> State {
    State {
        lru: LruCache::unbounded(),
        bytes: 0,
        open: LruCache::new(NonZeroUsize::new(64).expect("non-zero")),
        memory: Default::default(),
    }
}

impl DataCache {
    /// The cache in `dir` (made when first written), holding at most `budget` bytes;
    /// segments already there count, oldest written first out.
    pub fn on_disk(dir: PathBuf, budget: u64) -> DataCache {
        let mut st = state();
        let mut found = Vec::new();
        if let Ok(packs) = fs::read_dir(&dir) {
            for p in packs.flatten() {
                let Ok(pack) = Id::from_hex(&p.file_name().to_string_lossy()) else {
                    continue;
                };
                let Ok(segs) = fs::read_dir(p.path()) else {
                    continue;
                };
                for s in segs.flatten() {
                    let name = s.file_name().to_string_lossy().into_owned();
                    let Ok(md) = s.metadata() else { continue };
                    match name.parse::<u32>() {
                        Ok(n) => {
                            let when = md.modified().ok();
                            found.push((when, (pack, n), md.len()));
                        }
                        // A write cut off by a crash.
                        Err(_) if name.starts_with(".tmp-") => {
                            let _ = fs::remove_file(s.path());
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        found.sort_by_key(|(when, _, _)| *when);
        for (_, key, len) in found {
            st.lru.put(key, len);
            st.bytes += len;
        }
        let me = DataCache {
            dir: Some(dir),
            budget,
            state: Mutex::new(st),
        };
        me.evict(&mut me.state.lock().unwrap());
        me
    }

    /// A cache in memory only, of at most `budget` bytes.
    pub fn in_memory(budget: u64) -> DataCache {
        DataCache {
            dir: None,
            budget,
            state: Mutex::new(state()),
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes cached now (as this process counts them).
    pub fn bytes(&self) -> u64 {
        self.state.lock().unwrap().bytes
    }

    fn path(&self, key: &SegKey) -> Option<PathBuf> {
        let d = self.dir.as_ref()?;
        Some(d.join(key.0.to_hex()).join(key.1.to_string()))
    }

    pub fn contains(&self, key: &SegKey) -> bool {
        self.state.lock().unwrap().lru.contains(key)
    }

    /// `len` bytes from `offset` of a pack, if every segment they lie in is cached (and
    /// still there). Marks those segments used.
    pub fn read(&self, pack: &Id, offset: u64, len: usize) -> Option<Vec<u8>> {
        let end = offset + len as u64;
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while pos < end {
            let key = (*pack, (pos / SEGMENT) as u32);
            let seg_start = key.1 as u64 * SEGMENT;
            let from = pos - seg_start;
            let to = (end - seg_start).min(SEGMENT);
            match self.read_segment(&key, from, (to - from) as usize) {
                Lookup::Bytes(bytes) if bytes.len() as u64 == to - from => {
                    out.extend_from_slice(&bytes)
                }
                // Not cached, or not yet: its file may be in place already, put by a
                // fetch about to record it. Only a segment known and lost is removed.
                Lookup::Absent => return None,
                _ => {
                    self.remove(&key);
                    return None;
                }
            }
            pos = seg_start + to;
        }
        Some(out)
    }

    fn read_segment(&self, key: &SegKey, from: u64, len: usize) -> Lookup {
        let found = |b: Option<Vec<u8>>| b.map_or(Lookup::Lost, Lookup::Bytes);
        let file = {
            let mut st = self.state.lock().unwrap();
            if st.lru.get(key).is_none() {
                return Lookup::Absent;
            }
            if self.dir.is_none() {
                let seg = st.memory.get(key).cloned();
                drop(st);
                return found(seg.and_then(|s| {
                    s.get(from as usize..from as usize + len)
                        .map(<[u8]>::to_vec)
                }));
            }
            st.open.get(key).cloned()
        };
        let file = match file {
            Some(f) => f,
            None => match self.path(key).map(File::open) {
                Some(Ok(f)) => {
                    let f = Arc::new(f);
                    self.state.lock().unwrap().open.put(*key, f.clone());
                    f
                }
                _ => return Lookup::Lost,
            },
        };
        found(crate::cache::read_exact_at(&file, from, len))
    }

    /// Stores a whole segment (best effort: a cache that cannot be written only costs
    /// requests), then evicts the least recently used beyond the budget.
    pub fn put(&self, key: SegKey, bytes: &[u8]) {
        if bytes.len() as u64 > self.budget {
            return;
        }
        match self.path(&key) {
            Some(path) => {
                let dir = path.parent().expect("a segment is in its pack's folder");
                if fs::create_dir_all(dir).is_err() {
                    return;
                }
                let tmp = dir.join(format!(".tmp-{}", Id::random().short()));
                if fs::write(&tmp, bytes).is_err() || fs::rename(&tmp, &path).is_err() {
                    let _ = fs::remove_file(&tmp);
                    return;
                }
            }
            None => {
                self.state
                    .lock()
                    .unwrap()
                    .memory
                    .insert(key, Arc::new(bytes.to_vec()));
            }
        }
        let mut st = self.state.lock().unwrap();
        st.open.pop(&key);
        if let Some(old) = st.lru.put(key, bytes.len() as u64) {
            st.bytes -= old;
        }
        st.bytes += bytes.len() as u64;
        self.evict(&mut st);
    }

    /// Forgets a segment (damaged, or gone from disk).
    pub fn remove(&self, key: &SegKey) {
        let mut st = self.state.lock().unwrap();
        st.open.pop(key);
        st.memory.remove(key);
        if let Some(len) = st.lru.pop(key) {
            st.bytes -= len;
        }
        drop(st);
        if let Some(p) = self.path(key) {
            let _ = fs::remove_file(p);
        }
    }

    fn evict(&self, st: &mut State) {
        while st.bytes > self.budget {
            let Some((key, len)) = st.lru.pop_lru() else {
                break;
            };
            st.bytes -= len;
            st.open.pop(&key);
            st.memory.remove(&key);
            if let Some(p) = self.path(&key) {
                let _ = fs::remove_file(&p);
                if let Some(dir) = p.parent() {
                    // Gone once its last segment is (fails while others are there).
                    let _ = fs::remove_dir(dir);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u8, len: usize) -> Vec<u8> {
        vec![n; len]
    }

    #[test]
    fn reads_span_segments_and_miss_when_one_is_missing() {
        let dir = std::env::temp_dir().join(format!("bz-datacache-{}", Id::random().short()));
        let c = DataCache::on_disk(dir.clone(), 10 * SEGMENT);
        let p = Id::random();
        c.put((p, 0), &seg(1, SEGMENT as usize));
        c.put((p, 1), &seg(2, 1000));
        let r = c.read(&p, SEGMENT - 3, 5).unwrap();
        assert_eq!(r, vec![1, 1, 1, 2, 2]);
        assert!(
            c.read(&p, SEGMENT + 990, 20).is_none(),
            "past the pack's end"
        );
        assert!(!c.contains(&(p, 1)), "a short segment is dropped");
        assert!(c.read(&p, 2 * SEGMENT, 1).is_none());
        // A new process finds what is on disk.
        let again = DataCache::on_disk(dir.clone(), 10 * SEGMENT);
        assert_eq!(again.bytes(), SEGMENT);
        assert_eq!(again.read(&p, 0, 2).unwrap(), vec![1, 1]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds_on_disk() {
        let dir = std::env::temp_dir().join(format!("bz-datacache-{}", Id::random().short()));
        let c = DataCache::on_disk(dir.clone(), 3 * SEGMENT);
        let p = Id::random();
        for n in 0..3 {
            c.put((p, n), &seg(n as u8, SEGMENT as usize));
        }
        c.read(&p, 0, 1).unwrap(); // segment 0 is now the most recent
        c.put((p, 3), &seg(3, SEGMENT as usize));
        assert!(c.contains(&(p, 0)) && !c.contains(&(p, 1)));
        assert!(c.contains(&(p, 2)) && c.contains(&(p, 3)));
        let on_disk: u64 = fs::read_dir(dir.join(p.to_hex()))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, 3 * SEGMENT);
        // A smaller budget at the next start trims what is there.
        let small = DataCache::on_disk(dir.clone(), SEGMENT);
        assert_eq!(small.bytes(), SEGMENT);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_segment_changed_on_disk_reads_as_changed_bytes_for_the_decoder_to_reject() {
        // The cache does not vouch for bytes; a truncated file is a miss.
        let dir = std::env::temp_dir().join(format!("bz-datacache-{}", Id::random().short()));
        let c = DataCache::on_disk(dir.clone(), 4 * SEGMENT);
        let p = Id::random();
        c.put((p, 0), &seg(7, 4096));
        fs::write(dir.join(p.to_hex()).join("0"), [7u8; 100]).unwrap();
        assert!(c.read(&p, 0, 4096).is_none());
        assert!(!c.contains(&(p, 0)));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_miss_leaves_a_segment_being_stored_alone() {
        // A fetch renames a segment's file into place and then records it; a reader
        // missing it in between must not delete the file (it did: every reader after
        // then found the recorded segment gone and read the pack on its own).
        let dir = std::env::temp_dir().join(format!("bz-datacache-{}", Id::random().short()));
        let c = DataCache::on_disk(dir.clone(), 4 * SEGMENT);
        let p = Id::random();
        let file = dir.join(p.to_hex()).join("0");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, seg(5, 4096)).unwrap();
        assert!(c.read(&p, 0, 10).is_none());
        assert!(file.exists(), "a miss deleted a segment being stored");
        c.put((p, 0), &seg(5, 4096));
        assert_eq!(c.read(&p, 0, 3).unwrap(), vec![5, 5, 5]);
        drop(c);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn in_memory_it_is_bounded_too() {
        let c = DataCache::in_memory(2 * SEGMENT);
        let p = Id::random();
        for n in 0..4 {
            c.put((p, n), &seg(n as u8, SEGMENT as usize));
        }
        assert_eq!(c.bytes(), 2 * SEGMENT);
        assert_eq!(c.read(&p, 3 * SEGMENT, 1).unwrap(), vec![3]);
        assert!(c.read(&p, 0, 1).is_none());
    }
}
