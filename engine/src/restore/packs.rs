//! Restoring from a repository where every read is a request (S3): the files of a batch
//! are restored in the order their data lies in the packs, not file by file. Each pack's
//! needed span (its first needed blob to its last) is read once, streamed (never held
//! whole), and each blob, as it arrives, is verified and written at its place in every
//! file of the batch that holds it. Blobs the data cache holds (a mount read them) are
//! taken from it. A file is finished (its metadata applied) when its last blob is
//! written; a file one of whose blobs cannot be had is removed and named, as in the
//! file-by-file restore.
//!
//! Memory: the batch's plan (a few dozen bytes per blob of each file), one blob and one
//! piece of a response per pack being read, and at most [`OPEN_FILES`] open files.

use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{clear_for_create, FileJob, MadeDirs, RestoreOptions, RestoreProgress};
use crate::backend::Kind;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{BlobLocation, Index};
use crate::pack::BlobKind;
use crate::repo::Repository;
use crate::sys;

/// Files kept open between writes (a large file's blobs come from several packs).
const OPEN_FILES: usize = 256;

/// One blob the batch needs, and where it goes.
struct Need {
    loc: BlobLocation,
    id: Id,
    /// (file, offset in it) for every place the blob is in.
    targets: Vec<(u32, u64)>,
}

/// A file of the batch being written.
struct FileState {
    /// Blobs still to be written.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// Held while the file is made or opened again.
    created: Mutex<bool>,
}

struct Batch<'a> {
    repo: &'a Repository,
    index: &'a Index,
    jobs: &'a [FileJob],
    files: Vec<FileState>,
    open: Mutex<LruCache<u32, Arc<File>>>,
    opts: &'a RestoreOptions,
    made: &'a MadeDirs,
    progress: &'a RestoreProgress,
}

/// Restores the contents of `jobs` (files whose folders exist), pack by pack.
pub(super) fn restore_files(
    repo: &Repository,
    index: &Index,
    jobs: Vec<FileJob>,
    opts: &RestoreOptions,
    made: &MadeDirs,
    progress: &RestoreProgress,
) {
    let mut b = Batch {
        repo,
        index,
        jobs: &jobs,
        files: Vec::with_capacity(jobs.len()),
        open: Mutex::new(LruCache::new(
            NonZeroUsize::new(OPEN_FILES).expect("non-zero"),
        )),
        opts,
        made,
        progress,
    };
    // The plan: every needed blob once, by pack, with the places it goes.
    let mut by_pack: HashMap<Id, Vec<Need>> = HashMap::new();
    let mut need_of: HashMap<Id, (Id, usize)> = HashMap::new();
    let mut unknown: Vec<(u32, Id)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let j = j as u32;
        b.files.push(FileState {
            remaining: AtomicUsize::new(job.node.content.len()),
            failed: AtomicBool::new(false),
            created: Mutex::new(false),
        });
        let mut at = 0u64;
        for id in &job.node.content {
            let Some(loc) = index.get(id) else {
                unknown.push((j, *id));
                continue;
            };
            let (pack, i) = *need_of.entry(*id).or_insert_with(|| {
                let list = by_pack.entry(loc.pack).or_default();
                list.push(Need {
                    loc,
                    id: *id,
                    targets: Vec::new(),
                });
                (loc.pack, list.len() - 1)
            });
            by_pack.get_mut(&pack).expect("planned")[i]
                .targets
                .push((j, at));
            at += loc.raw_length as u64;
        }
    }
    drop(need_of);
    for (j, id) in unknown {
        b.fail(
            j,
            &Error::NotFound(format!(
                "blob {id} is in no index (its pack is missing or damaged)"
            )),
        );
    }
    // Empty files are finished now.
    for (j, job) in jobs.iter().enumerate() {
        if job.node.content.is_empty() {
            b.finish(j as u32);
        }
    }
    let mut packs: Vec<(Id, Vec<Need>)> = by_pack.into_iter().collect();
    for (_, needs) in &mut packs {
        needs.sort_unstable_by_key(|n| n.loc.offset);
    }
    // Largest first, so that the last pack read is a short one.
    packs.sort_by_key(|(_, needs)| std::cmp::Reverse(needs.len()));
    let next = AtomicUsize::new(0);
    let packs = Mutex::new(packs.into_iter().map(Some).collect::<Vec<_>>());
    let count = packs.lock().unwrap().len();
    let threads = repo
        .backend()
        .concurrency()
        .max(opts.threads)
        .clamp(1, count.max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= count {
                    return;
                }
                let taken = packs.lock().unwrap()[i].take();
                if let Some((pack, needs)) = taken {
                    b.restore_pack(&pack, needs);
                }
            });
        }
    });
}

impl Batch<'_> {
    /// Writes every need of one pack: cached ones from the data cache, the rest from one
    /// streamed ranged read of the pack; what that read could not give, blob by blob.
    fn restore_pack(&self, pack: &Id, needs: Vec<Need>) {
        let mut stored_needs = Vec::with_capacity(needs.len());
        for n in needs {
            let cached = self.repo.pack_reader().and_then(|p| {
                p.cache()
                    .read(pack, n.loc.offset as u64, n.loc.length as usize)
            });
            match cached {
                Some(stored) => self.deliver(&n, stored),
                None => stored_needs.push(n),
            }
        }
        let Some(first) = stored_needs.first() else {
            return;
        };
        let start = first.loc.offset as u64;
        let end = stored_needs
            .iter()
            .map(|n| n.loc.offset as u64 + n.loc.length as u64)
            .max()
            .expect("not empty");
        // Bytes from `buf_start` on, kept until the blobs in them are taken.
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = start;
        let mut k = 0;
        let read = self.repo.backend().read_range_to(
            Kind::Pack,
            &pack.to_hex(),
            start,
            (end - start) as usize,
            &mut |piece| {
                buf.extend_from_slice(piece);
                let have = buf_start + buf.len() as u64;
                while let Some(n) = stored_needs.get(k) {
                    let (o, l) = (n.loc.offset as u64, n.loc.length as u64);
                    if o + l > have {
                        break;
                    }
                    let from = (o - buf_start) as usize;
                    let stored = buf[from..from + l as usize].to_vec();
                    self.deliver(n, stored);
                    k += 1;
                }
                // Drop what no blob still to come lies in.
                let keep_from = stored_needs
                    .get(k)
                    .map_or(have, |n| (n.loc.offset as u64).min(have));
                if keep_from > buf_start {
                    buf.drain(..(keep_from - buf_start) as usize);
                    buf_start = keep_from;
                }
                Ok(())
            },
        );
        if read.is_err() {
            // The rest one by one: the repository's own read retries and falls back to a
            // replica; what still fails names its blob and pack.
            for n in &stored_needs[k..] {
                match self.repo.read_blob(self.index, BlobKind::Data, &n.id) {
                    Ok(plain) => self.write_all(n, &plain),
                    Err(e) => {
                        for &(j, _) in &n.targets {
                            self.fail(j, &e);
                        }
                    }
                }
            }
        }
    }

    /// Verifies a blob's stored bytes and writes it to every place it goes.
    fn deliver(&self, n: &Need, stored: Vec<u8>) {
        if n.targets
            .iter()
            .all(|&(j, _)| self.files[j as usize].failed.load(Relaxed))
        {
            return;
        }
        let plain = match self.repo.decode_blob(BlobKind::Data, &n.id, &n.loc, stored) {
            Ok(p) => Ok(p),
            // A damaged copy (cached, or in this pack): the repository's own read drops a
            // cached copy, reads storage again and falls back to a replica.
            Err(_) => self.repo.read_blob(self.index, BlobKind::Data, &n.id),
        };
        match plain {
            Ok(p) => self.write_all(n, &p),
            Err(e) => {
                for &(j, _) in &n.targets {
                    self.fail(j, &e);
                }
            }
        }
    }

    fn write_all(&self, n: &Need, plain: &[u8]) {
        for &(j, at) in &n.targets {
            if self.files[j as usize].failed.load(Relaxed) {
                continue;
            }
            let dest = &self.jobs[j as usize].dest;
            let written = self.file(j).and_then(|f| {
                sys::write_at(&f, plain, at).map_err(|e| Error::io("writing", dest, e))
            });
            match written {
                Ok(()) => {
                    self.progress
                        .bytes_done
                        .fetch_add(plain.len() as u64, Relaxed);
                    if self.files[j as usize].remaining.fetch_sub(1, Relaxed) == 1 {
                        self.finish(j);
                    }
                }
                Err(e) => self.fail(j, &e),
            }
        }
    }

    /// The open file of job `j`: made on first use (replacing whatever non-folder is
    /// there, never following a link), opened again after it was closed.
    fn file(&self, j: u32) -> Result<Arc<File>> {
        let state = &self.files[j as usize];
        let mut created = state.created.lock().unwrap();
        if let Some(f) = self.open.lock().unwrap().get(&j) {
            return Ok(f.clone());
        }
        let dest = &self.jobs[j as usize].dest;
        let f = if *created {
            sys::reopen_for_restore(dest).map_err(|e| Error::io("opening again", dest, e))?
        } else {
            let f = match sys::create_file(dest, self.jobs[j as usize].node.mode) {
                Ok(f) => f,
                Err(_) => {
                    clear_for_create(dest, self.made)
                        .map_err(|e| Error::io("replacing", dest, e))?;
                    sys::create_file(dest, self.jobs[j as usize].node.mode)
                        .map_err(|e| Error::io("creating", dest, e))?
                }
            };
            *created = true;
            f
        };
        let f = Arc::new(f);
        self.open.lock().unwrap().put(j, f.clone());
        Ok(f)
    }

    /// A file whose every blob is written: its metadata, then it is closed.
    fn finish(&self, j: u32) {
        let job = &self.jobs[j as usize];
        let done = self.file(j).and_then(|f| {
            sys::apply_file_metadata(&f, &job.node, self.opts.owners)
                .map_err(|e| Error::io("setting metadata of", &job.dest, e))
        });
        self.open.lock().unwrap().pop(&j);
        match done {
            Ok(()) => {
                self.progress.files_done.fetch_add(1, Relaxed);
            }
            Err(e) => self.fail(j, &e),
        }
    }

    /// The first failure of a file: it is named, and removed.
    fn fail(&self, j: u32, e: &Error) {
        let state = &self.files[j as usize];
        if state.failed.swap(true, Relaxed) {
            return;
        }
        let job = &self.jobs[j as usize];
        self.open.lock().unwrap().pop(&j);
        if *state.created.lock().unwrap() {
            let _ = std::fs::remove_file(&job.dest);
        }
        self.progress
            .warn(format!("{}: not restored: {e}", job.snap_path));
    }
}
