//! A repository in a local (or NAS-mounted) folder: `config`, `keys/`, `data/<2 hex>/`,
//! `index/`, `snapshots/`, `locks/`. Objects are written to a temporary name, synced,
//! then renamed into place, so a crash never leaves a half-written object under its name.
//! Packs are synced in batches: written under their temporary name with writeback
//! started at once, then synced and renamed together before the next index or snapshot
//! is stored, so the disk works while the next packs are built.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{Backend, Kind, Leftover};
use crate::error::{Error, Result};
use crate::sys;

pub struct LocalBackend {
    root: PathBuf,
    /// Open packs for ranged reads: restoring many small files reads many small ranges
    /// of the same packs, and packs never change once written.
    open_packs: Mutex<LruCache<String, Arc<OpenPack>>>,
    /// Packs written but not yet synced and renamed: the open file (synced through the
    /// handle it was written with: Windows syncs only handles open for writing), its
    /// temporary path and its final path.
    unsynced: Mutex<Vec<(File, PathBuf, PathBuf)>>,
}

const OPEN_PACKS: usize = 64;

/// A pack open for ranged reads, and how far the kernel was asked to read ahead in it.
struct OpenPack {
    file: File,
    ahead_until: std::sync::atomic::AtomicU64,
}

impl OpenPack {
    /// Keeps the kernel fetching the part of the pack after `end`, asking again only
    /// when reads come close to where the last request ended.
    fn read_ahead_from(&self, end: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let until = self.ahead_until.load(Relaxed);
        if end + PACK_READ_AHEAD / 2 <= until {
            return;
        }
        let from = end.max(until);
        self.ahead_until.store(from + PACK_READ_AHEAD, Relaxed);
        sys::read_ahead(&self.file, from, PACK_READ_AHEAD);
    }
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend {
            root: root.into(),
            open_packs: Mutex::new(LruCache::new(NonZeroUsize::new(OPEN_PACKS).unwrap())),
            unsynced: Mutex::new(Vec::new()),
        }
    }

    fn open_pack(&self, name: &str) -> Result<Arc<OpenPack>> {
        if let Some(f) = self.open_packs.lock().unwrap().get(name) {
            return Ok(f.clone());
        }
        let p = self.path(Kind::Pack, name);
        let file = File::open(&p).map_err(|e| not_found_or_io(e, "opening", &p))?;
        let f = Arc::new(OpenPack {
            file,
            ahead_until: std::sync::atomic::AtomicU64::new(0),
        });
        self.open_packs
            .lock()
            .unwrap()
            .put(name.to_string(), f.clone());
        Ok(f)
    }

    fn dir(&self, kind: Kind, name: &str) -> PathBuf {
        match kind {
            Kind::Config => self.root.clone(),
            Kind::Pack => self.root.join("data").join(&name[..name.len().min(2)]),
            _ => self.root.join(kind.dir()),
        }
    }

    fn path(&self, kind: Kind, name: &str) -> PathBuf {
        match kind {
            Kind::Config => self.root.join("config"),
            _ => self.dir(kind, name).join(name),
        }
    }
}

fn not_found_or_io(e: std::io::Error, op: &'static str, path: &Path) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(format!("{} is missing", path.display()))
    } else {
        Error::io(op, path, e)
    }
}

/// How much of a pack past a ranged read is fetched ahead: blobs of the same folder
/// sit next to each other, and a cold disk answers one large read much sooner than many
/// small ones.
const PACK_READ_AHEAD: u64 = 2 << 20;

fn sync_dir(dir: &Path) {
    // Best effort: some filesystems (and network shares) refuse fsync on directories.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        if self.root.join("config").exists() {
            return Err(Error::RepositoryExists(self.location()));
        }
        // The repository is its owner's alone: everything in it is encrypted, but key
        // files are what a password guesser needs.
        sys::create_private_dir(&self.root).map_err(|e| Error::io("creating", &self.root, e))?;
        for d in ["keys", "data", "index", "snapshots", "locks"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        for i in 0..256 {
            let p = self.root.join("data").join(format!("{i:02x}"));
            fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        Ok(())
    }

    fn read(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        fs::read(&p).map_err(|e| not_found_or_io(e, "reading", &p))
    }

    fn read_range(&self, kind: Kind, name: &str, offset: u64, length: usize) -> Result<Vec<u8>> {
        // The path only for a message or a file not kept open: a restore reads a blob
        // here per file, and three allocations a read made its threads wait on malloc.
        let p = || self.path(kind, name);
        let pack = if kind == Kind::Pack {
            Some(self.open_pack(name)?)
        } else {
            None
        };
        let other;
        let f = match &pack {
            Some(pack) => &pack.file,
            None => {
                let p = p();
                other = File::open(&p).map_err(|e| not_found_or_io(e, "opening", &p))?;
                &other
            }
        };
        let mut buf = vec![0u8; length];
        let mut got = 0;
        while got < length {
            match sys::read_at(f, &mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", p(), e)),
            }
        }
        if got < length {
            return Err(Error::corrupt(
                p().display().to_string(),
                format!(
                    "object is truncated (wanted bytes {offset}..{})",
                    offset + length as u64
                ),
            ));
        }
        if let Some(pack) = pack {
            pack.read_ahead_from(offset + length as u64);
        }
        Ok(buf)
    }

    fn write(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        let dir = self.dir(kind, name);
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let final_path = self.path(kind, name);
        let tmp = dir.join(format!(".tmp-{}-{}", name, crate::id::Id::random().short()));
        let batched = kind == Kind::Pack;
        if !batched {
            self.flush()?;
        }
        let result = (|| {
            let mut f = sys::private_file(&mut OpenOptions::new())
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io("creating", &tmp, e))?;
            f.write_all(data)
                .map_err(|e| Error::io("writing", &tmp, e))?;
            if batched {
                sys::start_writeback(&f);
                return Ok(Some(f));
            }
            f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
            drop(f);
            fs::rename(&tmp, &final_path).map_err(|e| Error::io("renaming", &tmp, e))?;
            Ok(None)
        })();
        match result {
            Ok(Some(f)) => self.unsynced.lock().unwrap().push((f, tmp, final_path)),
            Ok(None) => sync_dir(&dir),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.unsynced.lock().unwrap());
        let mut dirs = Vec::new();
        for (f, tmp, final_path) in pending {
            f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
            sys::drop_cached_pages(&f);
            drop(f);
            fs::rename(&tmp, &final_path).map_err(|e| Error::io("renaming", &tmp, e))?;
            if let Some(d) = final_path.parent() {
                if !dirs.iter().any(|x: &PathBuf| x == d) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            sync_dir(&d);
        }
        Ok(())
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join(kind.dir())];
        if kind == Kind::Pack {
            dirs = read_dir_names(&dirs[0])?
                .into_iter()
                .map(|(n, _)| dirs[0].join(n))
                .collect();
        }
        for d in dirs {
            for (name, size) in read_dir_names(&d)? {
                if !name.starts_with('.') {
                    out.push((name, size));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, kind: Kind, name: &str) -> Result<()> {
        self.open_packs.lock().unwrap().pop(name);
        let p = self.path(kind, name);
        fs::remove_file(&p).map_err(|e| not_found_or_io(e, "removing", &p))
    }

    fn leftovers(&self) -> Result<Vec<Leftover>> {
        // Temporary files sit beside the object they were to become (`write`).
        let mut dirs = Vec::new();
        for kind in [
            Kind::Config,
            Kind::Key,
            Kind::Index,
            Kind::Snapshot,
            Kind::Lock,
        ] {
            dirs.push((kind, self.root.join(kind.dir())));
        }
        let data = self.root.join(Kind::Pack.dir());
        for (n, _) in read_dir_names(&data)? {
            dirs.push((Kind::Pack, data.join(n)));
        }
        let mut out = Vec::new();
        for (kind, d) in dirs {
            for (name, size) in read_dir_names(&d)? {
                if !name.starts_with(".tmp-") {
                    continue;
                }
                let p = d.join(&name);
                let age = fs::symlink_metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                out.push(Leftover {
                    kind,
                    path: p.display().to_string(),
                    size,
                    age,
                });
            }
        }
        Ok(out)
    }

    fn remove_leftovers(
        &self,
        unowned: &[Kind],
        older_than: std::time::Duration,
    ) -> Result<(usize, u64)> {
        let mut removed = (0, 0);
        for l in self.leftovers()? {
            if (unowned.contains(&l.kind) || l.age >= older_than)
                && fs::remove_file(&l.path).is_ok()
            {
                removed.0 += 1;
                removed.1 += l.size;
            }
        }
        Ok(removed)
    }

    fn exists(&self, kind: Kind, name: &str) -> Result<bool> {
        let p = self.path(kind, name);
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("checking", &p, e)),
        }
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        // Packs of a run that stopped early are still complete: keep them for reuse.
        let _ = self.flush();
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<(String, u64)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, size));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_remove() {
        let dir = std::env::temp_dir().join(format!("bz-local-{}", std::process::id()));
        let b = LocalBackend::new(&dir);
        b.create().unwrap();
        b.write(Kind::Pack, "abcdef", b"0123456789").unwrap();
        // Packs are held back until a flush, or until anything else is written.
        assert!(b.list(Kind::Pack).unwrap().is_empty());
        b.write(Kind::Index, "ff00", b"index").unwrap();
        assert_eq!(b.read(Kind::Pack, "abcdef").unwrap(), b"0123456789");
        assert_eq!(b.read_range(Kind::Pack, "abcdef", 2, 3).unwrap(), b"234");
        assert!(b.read_range(Kind::Pack, "abcdef", 8, 5).is_err());
        assert_eq!(b.list(Kind::Pack).unwrap(), vec![("abcdef".into(), 10)]);
        b.remove(Kind::Pack, "abcdef").unwrap();
        assert!(matches!(
            b.read(Kind::Pack, "abcdef"),
            Err(Error::NotFound(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
