//! Decoded chunks: an LRU cache bounded in bytes, one load per chunk however many readers
//! want it at once, and read-ahead threads that load the next chunks of a file being read
//! in order before the kernel asks for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use backazon_engine::id::IdHashBuilder;
use backazon_engine::Id;
use lru::LruCache;

pub type Chunk = Arc<Vec<u8>>;
type Loaded = Result<Chunk, String>;

/// One load in progress: readers that want the same chunk wait for it.
#[derive(Default)]
struct InFlight {
    result: Mutex<Option<Loaded>>,
    done: Condvar,
}

struct Lru {
    map: LruCache<Id, Chunk, IdHashBuilder>,
    bytes: usize,
}

pub struct ChunkCache {
    lru: Mutex<Lru>,
    budget: usize,
    loading: Mutex<HashMap<Id, Arc<InFlight>, IdHashBuilder>>,
}

impl ChunkCache {
    pub fn new(budget: usize) -> ChunkCache {
        ChunkCache {
            lru: Mutex::new(Lru {
                map: LruCache::unbounded_with_hasher(IdHashBuilder::default()),
                bytes: 0,
            }),
            budget,
            loading: Mutex::new(HashMap::default()),
        }
    }

    pub fn cached(&self, id: &Id) -> Option<Chunk> {
        self.lru.lock().unwrap().map.get(id).cloned()
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.lru.lock().unwrap().map.contains(id)
    }

    fn insert(&self, id: Id, chunk: Chunk) {
        let mut lru = self.lru.lock().unwrap();
        if chunk.len() > self.budget {
            return;
        }
        lru.bytes += chunk.len();
        if let Some(old) = lru.map.put(id, chunk) {
            lru.bytes -= old.len();
        }
        while lru.bytes > self.budget {
            match lru.map.pop_lru() {
                Some((_, c)) => lru.bytes -= c.len(),
                None => break,
            }
        }
    }

    /// The chunk `id`, from the cache or from `load` (called once however many threads
    /// ask at the same time).
    pub fn get(&self, id: &Id, load: impl FnOnce() -> Loaded) -> Loaded {
        self.get_or_load(id, load, true)
    }

    /// [`ChunkCache::get`], without keeping what this call loads (readers asking at the
    /// same time still share it): for chunks handed on elsewhere, such as the OS's cache.
    pub fn get_passing(&self, id: &Id, load: impl FnOnce() -> Loaded) -> Loaded {
        self.get_or_load(id, load, false)
    }

    fn get_or_load(&self, id: &Id, load: impl FnOnce() -> Loaded, keep: bool) -> Loaded {
        if let Some(c) = self.cached(id) {
            return Ok(c);
        }
        let (flight, mine) = {
            let mut loading = self.loading.lock().unwrap();
            match loading.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    // Loaded between the cache check and here?
                    if let Some(c) = self.cached(id) {
                        return Ok(c);
                    }
                    let f = Arc::new(InFlight::default());
                    loading.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        if mine {
            let result = load();
            if let (Ok(c), true) = (&result, keep) {
                self.insert(*id, c.clone());
            }
            *flight.result.lock().unwrap() = Some(result.clone());
            flight.done.notify_all();
            self.loading.lock().unwrap().remove(id);
            return result;
        }
        let mut r = flight.result.lock().unwrap();
        while r.is_none() {
            r = flight.done.wait(r).unwrap();
        }
        r.clone().expect("set before notify")
    }
}

/// True once after work was done and none is left.
fn burst_over(pending: &AtomicUsize, trimmed: &AtomicBool) -> bool {
    pending.load(Ordering::SeqCst) == 0 && !trimmed.swap(true, Ordering::Relaxed)
}

/// How often a long burst of read-ahead gives freed memory back.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// A bounded queue of batches of things to load ahead (chunks, folders); when it is
/// full, read-ahead is skipped.
pub struct Prefetcher<J> {
    tx: SyncSender<Vec<J>>,
    /// Batches queued and not yet done.
    pending: Arc<AtomicUsize>,
}

impl<J: Send + 'static> Prefetcher<J> {
    /// Starts `threads` threads that call `load` for each queued item. They stop when
    /// the prefetcher is dropped.
    pub fn start(threads: usize, load: Arc<dyn Fn(J) + Send + Sync>) -> Prefetcher<J> {
        let (tx, rx) = sync_channel::<Vec<J>>(8192);
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let trimmed = Arc::new(AtomicBool::new(true));
        let last_trim = Arc::new(Mutex::new(std::time::Instant::now()));
        for i in 0..threads.max(1) {
            let trimmed = trimmed.clone();
            let last_trim = last_trim.clone();
            let rx: Arc<Mutex<Receiver<Vec<J>>>> = rx.clone();
            let load = load.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("read-ahead-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap().recv_timeout(Duration::from_secs(1));
                    let ids = match next {
                        Ok(ids) => ids,
                        Err(RecvTimeoutError::Timeout) => {
                            // A second without work after a burst of read-ahead: the
                            // decoded chunks it handed on were freed, give their memory
                            // back (once per burst, by the first thread to notice).
                            if burst_over(&pending, &trimmed) {
                                backazon_engine::sys::give_back_freed_memory();
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    trimmed.store(false, Ordering::Relaxed);
                    for id in ids {
                        load(id);
                    }
                    pending.fetch_sub(1, Ordering::SeqCst);
                    // A long burst gives memory back on the way too, once a second (a
                    // call takes 2-3 ms here during a `cat` of the kernel tree): glibc's
                    // per-thread arenas otherwise keep what a few dozen threads freed
                    // (mount RSS after that `cat` from S3: 161 MiB before, see README).
                    let due = {
                        let mut t = last_trim.lock().unwrap();
                        let due = t.elapsed() >= TRIM_EVERY;
                        if due {
                            *t = std::time::Instant::now();
                        }
                        due
                    };
                    if due {
                        backazon_engine::sys::give_back_freed_memory();
                    }
                })
                .expect("starting a read-ahead thread");
        }
        Prefetcher { tx, pending }
    }

    /// Nothing queued or being loaded.
    pub fn idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    pub fn queue(&self, ids: Vec<J>) {
        if ids.is_empty() {
            return;
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(ids) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_loaded_once() {
        let cache = Arc::new(ChunkCache::new(10));
        let loads = Arc::new(AtomicUsize::new(0));
        let id = Id([1; 32]);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                std::thread::spawn(move || {
                    cache
                        .get(&id, || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(Arc::new(vec![7u8; 6]))
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), vec![7u8; 6]);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // A second 6-byte chunk pushes the first out of a 10-byte budget.
        cache
            .get(&Id([2; 32]), || Ok(Arc::new(vec![0u8; 6])))
            .unwrap();
        assert!(!cache.contains(&id));
        assert!(cache.contains(&Id([2; 32])));
        // Failures are not cached.
        assert!(cache.get(&Id([3; 32]), || Err("bad".into())).is_err());
        assert!(!cache.contains(&Id([3; 32])));
    }
}
