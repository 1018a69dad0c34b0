//! Reading a remote repository's packs, where every read is a request (S3): a blob's
//! bytes come from the data cache ([`DataCache`]) or from the segments of its pack around
//! it, fetched with one ranged read for several segments. Concurrent wants of one segment
//! make one request.
//!
//! How much is fetched at once follows how the pack is read, as mountpoint-s3's
//! prefetcher follows a file: a read continuing where the last fetch of that pack ended
//! doubles the next fetch (up to [`MAX_FETCH`]), anything else fetches only the segments
//! it needs. A program reading files in the order they were backed up reads packs in
//! order, so a whole pack comes in a few large reads; a random read costs one segment
//! or two. [`PackReader::prefetch`] fetches the packs' parts for blobs that will be wanted
//! soon, on background threads, several in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::backend::{Backend, Kind};
use crate::datacache::{DataCache, SegKey, SEGMENT};
use crate::id::Id;
use crate::index::BlobLocation;

/// The largest single fetch (a pack is 16 MiB by default).
pub const MAX_FETCH: u64 = 16 << 20;
/// The first fetch of prefetched data: enough to be worth a request.
const FIRST_PREFETCH: u64 = 4 << 20;
/// Needed segments this close are fetched together, the gap read through.
const GAP_SEGMENTS: u32 = 1;

/// One segment being fetched: whoever else wants it waits here.
#[derive(Default)]
struct Pending {
    done: Mutex<bool>,
    arrived: Condvar,
}

impl Pending {
    fn finish(&self) {
        *self.done.lock().unwrap() = true;
        self.arrived.notify_all();
    }

    fn wait(&self) {
        let mut d = self.done.lock().unwrap();
        while !*d {
            d = self.arrived.wait(d).unwrap();
        }
    }
}

/// How a pack was read last: where the last fetch ended and how large it was.
#[derive(Clone, Copy)]
struct Window {
    next: u64,
    size: u64,
}

/// A fetch of segments `first..end` of a pack.
struct Fetch {
    pack: Id,
    first: u32,
    end: u32,
}

struct Shared {
    backend: Arc<dyn Backend>,
    cache: Arc<DataCache>,
    pack_sizes: RwLock<HashMap<Id, u64>>,
    pending: Mutex<HashMap<SegKey, Arc<Pending>>>,
    windows: Mutex<HashMap<Id, Window>>,
    /// The last window that grew, and when: a program reading on from one pack into the
    /// next keeps its pace there.
    last_grown: Mutex<Option<(std::time::Instant, u64)>>,
    queue: Mutex<VecDeque<Fetch>>,
    queued: Condvar,
    stop: AtomicBool,
    threads: usize,
    started: std::sync::Once,
    fetches: AtomicU64,
}

/// The segments reader of one remote repository. Cheap to share: clones use the same
/// cache, requests in flight and background threads.
#[derive(Clone)]
pub struct PackReader {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Relaxed);
        self.0.queued.notify_all();
    }
}

impl std::fmt::Debug for PackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackReader({:?})", self.shared.cache)
    }
}

impl PackReader {
    /// `threads`: fetches in flight for [`PackReader::prefetch`].
    pub fn new(backend: Arc<dyn Backend>, cache: Arc<DataCache>, threads: usize) -> PackReader {
        let shared = Arc::new(Shared {
            backend,
            cache,
            pack_sizes: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            last_grown: Mutex::new(None),
            queue: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            stop: AtomicBool::new(false),
            threads: threads.max(1),
            started: std::sync::Once::new(),
            fetches: AtomicU64::new(0),
        });
        PackReader {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        }
    }

    pub fn cache(&self) -> &Arc<DataCache> {
        &self.shared.cache
    }

    /// The packs' sizes (from listing them), so fetches ahead stop at a pack's end.
    pub fn set_pack_sizes(&self, sizes: &HashMap<Id, u64>) {
        *self.shared.pack_sizes.write().unwrap() = sizes.clone();
    }

    /// Ranged reads made so far.
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Relaxed)
    }

    /// The stored (sealed) bytes of a blob: from the cache, else fetched with the
    /// segments around it. `None` when they could not be had that way (a fetch failed, or
    /// the cache could not keep them): the caller reads the blob on its own.
    pub fn stored(&self, loc: &BlobLocation) -> Option<Vec<u8>> {
        let (offset, len) = (loc.offset as u64, loc.length as usize);
        if let Some(b) = self.shared.cache.read(&loc.pack, offset, len) {
            return Some(b);
        }
        let first = (offset / SEGMENT) as u32;
        let last = ((offset + len as u64).saturating_sub(1) / SEGMENT) as u32;
        let (fetches, waits) = self.shared.claim(loc.pack, &[(first, last)], 0);
        for f in fetches {
            self.shared.run(f);
        }
        for w in waits {
            w.wait();
        }
        self.shared.cache.read(&loc.pack, offset, len)
    }

    /// Drops the cached segments under a blob whose bytes failed their check.
    pub fn forget(&self, loc: &BlobLocation) {
        let (offset, len) = (loc.offset as u64, loc.length as u64);
        for s in offset / SEGMENT..=(offset + len).saturating_sub(1) / SEGMENT {
            self.shared.cache.remove(&(loc.pack, s as u32));
        }
    }

    /// Fetches, in the background, the parts of packs holding these blobs (wanted soon,
    /// in this order) that are neither cached nor on their way.
    pub fn prefetch(&self, locs: &[BlobLocation]) {
        let mut by_pack: Vec<(Id, Vec<(u32, u32)>)> = Vec::new();
        let mut seen: HashMap<Id, usize> = HashMap::new();
        for l in locs {
            let first = (l.offset as u64 / SEGMENT) as u32;
            let last = ((l.offset as u64 + l.length as u64).saturating_sub(1) / SEGMENT) as u32;
            let i = *seen.entry(l.pack).or_insert_with(|| {
                by_pack.push((l.pack, Vec::new()));
                by_pack.len() - 1
            });
            by_pack[i].1.push((first, last));
        }
        let mut jobs = Vec::new();
        for (pack, mut spans) in by_pack {
            spans.sort_unstable();
            let (fetches, _) = self.shared.claim(pack, &spans, FIRST_PREFETCH);
            jobs.extend(fetches);
        }
        if jobs.is_empty() {
            return;
        }
        self.start_threads();
        self.shared.queue.lock().unwrap().extend(jobs);
        self.shared.queued.notify_all();
    }

    fn start_threads(&self) {
        let shared = &self.shared;
        shared.started.call_once(|| {
            for n in 0..shared.threads {
                let s = shared.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("fetch-{n}"))
                    .spawn(move || s.work());
            }
        });
    }
}

impl Shared {
    fn work(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if self.stop.load(Relaxed) {
                        return;
                    }
                    if let Some(j) = q.pop_front() {
                        break j;
                    }
                    q = self.queued.wait(q).unwrap();
                }
            };
            self.run(job);
        }
    }

    /// Claims the segments of `spans` (sorted, of one pack) that are neither cached nor
    /// being fetched, as fetches to make; the ones being fetched by others are to be
    /// waited for. The last fetch grows with the pack's read window; `min_first` is the
    /// size of a fetch that does not continue one.
    fn claim(
        &self,
        pack: Id,
        spans: &[(u32, u32)],
        min_first: u64,
    ) -> (Vec<Fetch>, Vec<Arc<Pending>>) {
        let size = self.pack_sizes.read().unwrap().get(&pack).copied();
        let seg_count = size.map(|s| s.div_ceil(SEGMENT) as u32);
        let mut pending = self.pending.lock().unwrap();
        let mut waits = Vec::new();
        // Needed segments, as runs to fetch with small gaps read through.
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &(first, last) in spans {
            for s in first..=last {
                let key = (pack, s);
                if let Some(p) = pending.get(&key) {
                    waits.push(p.clone());
                    continue;
                }
                if self.cache.contains(&key) {
                    continue;
                }
                match runs.last_mut() {
                    Some(r) if s <= r.1 + GAP_SEGMENTS => r.1 = r.1.max(s + 1),
                    _ => runs.push((s, s + 1)),
                }
            }
        }
        if runs.is_empty() {
            return (Vec::new(), waits);
        }
        // The window: a fetch continuing the last one of this pack grows.
        {
            let mut windows = self.windows.lock().unwrap();
            let start = runs[0].0 as u64 * SEGMENT;
            let w = windows.entry(pack).or_insert(Window {
                next: u64::MAX,
                size: 0,
            });
            let continues =
                w.next != u64::MAX && start <= w.next + SEGMENT && start + MAX_FETCH >= w.next;
            let mut last_grown = self.last_grown.lock().unwrap();
            w.size = if continues {
                let size = (w.size * 2).clamp(SEGMENT, MAX_FETCH);
                *last_grown = Some((std::time::Instant::now(), size));
                size
            } else {
                // Read ahead into a new pack (not a random read: those ask for no
                // minimum) at the pace reached in the last one, if that was just now.
                let pace = match *last_grown {
                    Some((when, size)) if min_first > 0 && when.elapsed().as_secs() < 2 => size,
                    _ => 0,
                };
                min_first.max(pace).max(SEGMENT)
            };
            let last = runs.last_mut().expect("not empty");
            let want_end = (last.0 as u64 * SEGMENT + w.size).div_ceil(SEGMENT) as u32;
            let mut end = last.1.max(want_end);
            if let Some(n) = seg_count {
                end = end.min(n).max(last.1);
                // A pack holds a little more than its target size: its last bit comes
                // with the fetch before it rather than in a request of its own.
                let window_segs = (w.size / SEGMENT) as u32;
                if end > last.0 && n - end <= (window_segs / 4).max(1) {
                    end = n;
                }
            } else {
                end = last.1;
            }
            // Not into what is cached or coming already.
            let mut e = last.1;
            while e < end && !pending.contains_key(&(pack, e)) && !self.cache.contains(&(pack, e)) {
                e += 1;
            }
            last.1 = e;
            w.next = e as u64 * SEGMENT;
        }
        let mut fetches = Vec::new();
        for (first, end) in runs {
            // Each fetch at most MAX_FETCH and a pack's tail.
            let per = (MAX_FETCH / SEGMENT * 5 / 4) as u32;
            let mut s = first;
            while s < end {
                let e = (s + per).min(end);
                for k in s..e {
                    pending.insert((pack, k), Arc::new(Pending::default()));
                }
                fetches.push(Fetch {
                    pack,
                    first: s,
                    end: e,
                });
                s = e;
            }
        }
        (fetches, waits)
    }

    /// Makes one fetch: one ranged read, each segment cached as soon as it is whole and
    /// its waiters woken; on failure the rest are released (their readers read on their
    /// own and report the error).
    fn run(&self, f: Fetch) {
        let start = f.first as u64 * SEGMENT;
        let size = self.pack_sizes.read().unwrap().get(&f.pack).copied();
        let mut end = f.end as u64 * SEGMENT;
        if let Some(s) = size {
            end = end.min(s);
        }
        let mut next = f.first;
        if end > start {
            self.fetches.fetch_add(1, Relaxed);
            let mut buf: Vec<u8> = Vec::with_capacity(SEGMENT as usize);
            let mut pos = start;
            let _ = self.backend.read_range_to(
                Kind::Pack,
                &f.pack.to_hex(),
                start,
                (end - start) as usize,
                &mut |mut piece: &[u8]| {
                    while !piece.is_empty() {
                        let room = (SEGMENT as usize - buf.len()).min(piece.len());
                        buf.extend_from_slice(&piece[..room]);
                        piece = &piece[room..];
                        pos += room as u64;
                        if buf.len() == SEGMENT as usize || pos == end {
                            self.cache.put((f.pack, next), &buf);
                            self.release(f.pack, next);
                            next += 1;
                            buf.clear();
                        }
                    }
                    Ok(())
                },
            );
        }
        for s in next..f.end {
            self.release(f.pack, s);
        }
    }

    fn release(&self, pack: Id, seg: u32) {
        if let Some(p) = self.pending.lock().unwrap().remove(&(pack, seg)) {
            p.finish();
        }
    }
}

#[cfg(test)]
mod tests;
