//! A local cache of index objects and tree packs, so listing and restoring do not
//! download them again. Every object is named by the BLAKE3 of its bytes, so a cached
//! copy is checked on read; a damaged or stale cache is only ever a slower path.
//! Deleting the whole folder is always safe.

use std::collections::HashSet;
use std::fs;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::id::Id;

/// `len` bytes of `f` from `offset`, or None if the file is shorter or unreadable.
pub(crate) fn read_exact_at(f: &fs::File, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match crate::sys::read_at(f, &mut buf[got..], offset + got as u64) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
    }
    Some(buf)
}

#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    /// Cached tree packs open for ranged reads (listing a snapshot reads many small
    /// ranges of the same few packs).
    open: Arc<Mutex<LruCache<String, Arc<fs::File>>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({})", self.dir.display())
    }
}

impl Cache {
    /// `base` is the cache root (e.g. ~/.cache/backazon); each repository gets a folder by id.
    pub fn new(base: PathBuf, repo_id: &Id) -> Cache {
        // Mark the cache as one, so backups with --exclude-caches (ours and other
        // tools') leave it out.
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() && crate::sys::create_private_dir(&base).is_ok() {
            let _ = fs::write(
                &tag,
                b"Signature: 8a477f597d28d172789f06886806bc55\n# This file marks the Backazon cache: deleting the folder is safe.\n",
            );
        }
        Cache {
            dir: base.join(repo_id.to_hex()),
            open: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(16).expect("non-zero"),
            ))),
        }
    }

    /// The platform's cache folder: $BACKAZON_CACHE_DIR, else $XDG_CACHE_HOME/backazon or
    /// ~/.cache/backazon (Windows: %LOCALAPPDATA%\backazon\cache).
    pub fn default_base() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("BACKAZON_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        crate::sys::default_cache_dir()
    }

    /// This repository's folder in the cache.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn path(&self, folder: &str, name: &str) -> PathBuf {
        self.dir.join(folder).join(name)
    }

    pub fn get(&self, folder: &str, name: &str) -> Option<Vec<u8>> {
        let p = self.path(folder, name);
        let data = fs::read(&p).ok()?;
        if Id::of_object(&data).to_hex() == name {
            Some(data)
        } else {
            let _ = fs::remove_file(&p);
            None
        }
    }

    /// Part of a cached object, unverified: for blobs, whose seal and id are checked by
    /// the reader anyway (which drops the copy and reads storage if they fail).
    pub fn get_range(&self, folder: &str, name: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
        let key = format!("{folder}/{name}");
        let cached = self.open.lock().unwrap().get(&key).cloned();
        let f = match cached {
            Some(f) => f,
            None => {
                let f = Arc::new(fs::File::open(self.path(folder, name)).ok()?);
                // Whoever reads one tree of a pack reads its neighbours next: have the
                // kernel fetch the whole (small) pack at once.
                crate::sys::read_ahead(&f, 0, 0);
                self.open.lock().unwrap().put(key, f.clone());
                f
            }
        };
        read_exact_at(&f, offset, len)
    }

    pub fn remove(&self, folder: &str, name: &str) {
        self.open.lock().unwrap().pop(&format!("{folder}/{name}"));
        let _ = fs::remove_file(self.path(folder, name));
    }

    /// Best effort: a cache that cannot be written only costs speed.
    pub fn put(&self, folder: &str, name: &str, data: &[u8]) {
        let d = self.dir.join(folder);
        if fs::create_dir_all(&d).is_err() {
            return;
        }
        let tmp = d.join(format!(".tmp-{}", Id::random().short()));
        if fs::write(&tmp, data).is_ok() && fs::rename(&tmp, d.join(name)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Removes cached objects of `folder` that are no longer in the repository.
    pub fn retain(&self, folder: &str, keep: &HashSet<String>) {
        if let Ok(rd) = fs::read_dir(self.dir.join(folder)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}
