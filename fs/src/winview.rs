//! The snapshots as Windows sees them, for the WinFsp adapter (`winfsp.rs`): the same
//! view and layout as on Linux (`by-date`, `by-job`, `by-id`, `latest`), with
//! - names in UTF-16, each folder's names chosen exactly as a restore onto Windows
//!   chooses them (`backazon_engine::names::place`): a name Windows cannot hold (`a:b`,
//!   `CON`, a trailing dot) shows escaped (`a：b`, `CON_`), and of two names that differ
//!   only in case the first in the snapshot's order keeps its name and the next shows as
//!   `name (2).ext` — so every name of a folder is distinct ignoring case;
//! - lookup that ignores case, as Explorer and every Windows program expect (each
//!   character's simple upper case, as NTFS compares: `names::fold`);
//! - listings in one fixed order (by that folded key), resumed after a marker name as
//!   WinFsp's ReadDirectory asks, `.` and `..` first in every folder but the root;
//! - Windows attributes and FILETIMEs.
//!
//! Symbolic links and Unix-only kinds (fifo, socket, devices) are not shown: a link
//! would need WinFsp's reparse-point calls, which this view does not answer yet.
//!
//! Pure Rust over [`SnapshotFs`]: tested on every OS, and under Wine with the adapter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use backazon_engine::names;
use lru::LruCache;

use crate::{Attr, FileKind, FsError, FsResult, Ino, SnapshotFs, ROOT};

/// `FILE_ATTRIBUTE_*` (winnt.h).
pub const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
pub const FILE_ATTRIBUTE_HIDDEN: u32 = 0x2;
pub const FILE_ATTRIBUTE_SYSTEM: u32 = 0x4;
pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
pub const FILE_ATTRIBUTE_ARCHIVE: u32 = 0x20;

/// 100-nanosecond intervals from 1601-01-01 (Windows' epoch) to 1970-01-01.
const EPOCH_DIFFERENCE: i64 = 116_444_736_000_000_000;

/// A time as Windows counts it (100 ns since 1601), from nanoseconds since 1970.
pub fn filetime(unix_nanos: i64) -> u64 {
    (unix_nanos.div_euclid(100) + EPOCH_DIFFERENCE).max(0) as u64
}

/// What a file or folder shows in Explorer: everything is read-only; the hidden, system
/// and archive attributes recorded on Windows are kept; other recorded attributes
/// (reparse point, compressed, sparse, ...) describe the original disk, not this view.
pub fn attributes(a: &Attr) -> u32 {
    let kept =
        a.attributes & (FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM | FILE_ATTRIBUTE_ARCHIVE);
    let dir = if a.kind == FileKind::Dir {
        FILE_ATTRIBUTE_DIRECTORY
    } else {
        0
    };
    FILE_ATTRIBUTE_READONLY | dir | kept
}

/// The four times Windows shows, as FILETIMEs: creation, last access, last write,
/// change. A node made on Linux has no creation time: its modification time stands in.
pub fn times(a: &Attr) -> [u64; 4] {
    let created = if a.created != 0 { a.created } else { a.mtime };
    let changed = if a.ctime != 0 { a.ctime } else { a.mtime };
    [
        filetime(created),
        filetime(a.atime),
        filetime(a.mtime),
        filetime(changed),
    ]
}

/// One entry of a folder as Windows sees it.
pub struct Entry {
    /// The name shown, UTF-16.
    pub name: Vec<u16>,
    pub attr: Attr,
    /// `names::fold` of the name shown, in stored form: the order and the lookup key.
    key: Vec<u8>,
}

/// A folder's entries in the order they are listed, with `.` and `..` (not in the root).
pub struct Listing {
    pub dir: Attr,
    /// `.` and `..`: the folder itself and its parent; `None` for the root.
    pub dots: Option<(Attr, Attr)>,
    pub entries: Vec<Entry>,
    by_key: HashMap<Vec<u8>, usize>,
}

/// Where a listing goes on after `marker`, the last name WinFsp was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From the start: `.` first.
    Start,
    /// From `..`.
    DotDot,
    /// From this entry of [`Listing::entries`].
    At(usize),
}

impl Listing {
    /// The entry `name` names, ignoring case.
    pub fn find(&self, name: &[u16]) -> Option<&Entry> {
        let key = names::fold(&names::from_utf16(name));
        self.by_key.get(&key).map(|&i| &self.entries[i])
    }

    /// Where to go on after `marker` (`None`: from the start). Names after the marker in
    /// the listing's order come next, whether or not the marker itself is still there.
    pub fn resume(&self, marker: Option<&[u16]>) -> Resume {
        let dot: &[u16] = &[b'.' as u16];
        let dotdot: &[u16] = &[b'.' as u16, b'.' as u16];
        match marker {
            None => Resume::Start,
            Some(m) if m == dot && self.dots.is_some() => Resume::DotDot,
            Some(m) if m == dotdot && self.dots.is_some() => Resume::At(0),
            Some(m) => {
                let key = names::fold(&names::from_utf16(m));
                Resume::At(self.entries.partition_point(|e| e.key <= key))
            }
        }
    }

    /// Calls `add(name, attributes)` for each entry from `from` until it returns false
    /// (its buffer is full); true when every entry was given.
    pub fn each_from(&self, from: Resume, mut add: impl FnMut(&[u16], &Attr) -> bool) -> bool {
        let first = match (from, &self.dots) {
            (Resume::Start, Some((me, parent))) => {
                if !add(&[b'.' as u16], me) || !add(&[b'.' as u16, b'.' as u16], parent) {
                    return false;
                }
                0
            }
            (Resume::DotDot, Some((_, parent))) => {
                if !add(&[b'.' as u16, b'.' as u16], parent) {
                    return false;
                }
                0
            }
            (Resume::Start | Resume::DotDot, None) => 0,
            (Resume::At(i), _) => i,
        };
        self.entries[first.min(self.entries.len())..]
            .iter()
            .all(|e| add(&e.name, &e.attr))
    }
}

/// Folders' listings kept: enough for a file manager's worth of open folders; bounded in
/// entries, so a few folders of 100,000 files do not hold memory for long.
const KEPT_ENTRIES: usize = 400_000;

/// [`SnapshotFs`] seen through Windows names.
pub struct WinView {
    pub fs: SnapshotFs,
    listings: Mutex<(LruCache<Ino, Arc<Listing>>, usize)>,
}

impl WinView {
    pub fn new(fs: SnapshotFs) -> WinView {
        WinView {
            fs,
            listings: Mutex::new((LruCache::unbounded(), 0)),
        }
    }

    /// The folder `ino`'s listing, made on first use and kept while room allows. The
    /// layout folders (`latest`, `by-date`, ...) change when a snapshot is added, so
    /// theirs are made again each time.
    pub fn listing(&self, ino: Ino) -> FsResult<Arc<Listing>> {
        if let Some(l) = self.listings.lock().unwrap().0.get(&ino) {
            return Ok(l.clone());
        }
        let listing = Arc::new(self.make_listing(ino)?);
        if listing.dir.immutable {
            let mut kept = self.listings.lock().unwrap();
            kept.1 += listing.entries.len() + 1;
            if let Some(old) = kept.0.put(ino, listing.clone()) {
                kept.1 -= old.entries.len() + 1;
            }
            while kept.1 > KEPT_ENTRIES && kept.0.len() > 1 {
                if let Some((_, old)) = kept.0.pop_lru() {
                    kept.1 -= old.entries.len() + 1;
                }
            }
        }
        Ok(listing)
    }

    fn make_listing(&self, ino: Ino) -> FsResult<Listing> {
        let dir = self.fs.getattr(ino)?;
        if dir.kind != FileKind::Dir {
            return Err(FsError::NotADirectory);
        }
        let mut found: Vec<(Vec<u8>, Attr)> = Vec::new();
        self.fs.readdir(ino, 0, |a, name, _| {
            if matches!(a.kind, FileKind::File | FileKind::Dir) {
                found.push((name.to_vec(), a.clone()));
            }
            false
        })?;
        let stored: Vec<&[u8]> = found.iter().map(|(n, _)| n.as_slice()).collect();
        let placed = names::place(&stored, names::windows_escape, || true);
        let mut entries: Vec<Entry> = found
            .iter()
            .zip(placed)
            .map(|((name, attr), placed)| {
                let shown = placed.map_or_else(|| name.clone(), |(n, _)| n);
                let utf16 = names::to_utf16(&shown)
                    .unwrap_or_else(|| String::from_utf8_lossy(&shown).encode_utf16().collect());
                Entry {
                    key: names::fold(&shown),
                    name: utf16,
                    attr: attr.clone(),
                }
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let by_key = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
        let dots = if ino == ROOT {
            None
        } else {
            Some((dir.clone(), self.fs.getattr(self.fs.parent(ino)?)?))
        };
        Ok(Listing {
            dir,
            dots,
            entries,
            by_key,
        })
    }

    /// `\by-date\2026-11-22 02.00.05 laptop\C\Users\...` (WinFsp's form of a path, `/`
    /// accepted too) to its attributes, one folder at a time, and the path with each
    /// name as the view spells it (Windows shows that case, not the case asked for).
    /// A missing folder on the way is [`Missing::Path`], a missing last name
    /// [`Missing::Name`], as Windows tells them apart.
    pub fn resolve(&self, path: &[u16]) -> Result<(Attr, Vec<u16>), Missing> {
        let mut attr = self.fs.getattr(ROOT).map_err(Missing::Error)?;
        let mut spelled = vec![b'\\' as u16];
        let sep = |c: &u16| *c == b'\\' as u16 || *c == b'/' as u16;
        let mut parts = path.split(sep).filter(|p| !p.is_empty()).peekable();
        while let Some(part) = parts.next() {
            if attr.kind != FileKind::Dir {
                return Err(Missing::Path);
            }
            let listing = self.listing(attr.ino).map_err(Missing::Error)?;
            let Some(e) = listing.find(part) else {
                return Err(if parts.peek().is_some() {
                    Missing::Path
                } else {
                    Missing::Name
                });
            };
            if spelled.len() > 1 {
                spelled.push(b'\\' as u16);
            }
            spelled.extend_from_slice(&e.name);
            attr = e.attr.clone();
        }
        Ok((attr, spelled))
    }
}

/// Why a path does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A folder on the way is not there (or is a file).
    Path,
    /// The last name is not there.
    Name,
    Error(FsError),
}

#[cfg(test)]
pub(crate) mod tests;
