//! The index: blob id -> pack, offset, length. In memory it is one sorted array of small
//! fixed-size entries (about 52 bytes per blob), plus a table of where each range of
//! leading id bits starts (about 2 bytes per blob), so a lookup touches one or two
//! cache lines instead of bisecting the whole array; on storage, `index/<id>` objects
//! each list some packs and the blobs they hold.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{BlobKind, PackBlob};

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: Id,
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
}

/// Where to find one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_numbers: HashMap<Id, u32>,
    entries: Vec<Entry>,
    /// `entries[starts[b]..starts[b + 1]]` are the ids whose leading `bits` bits are `b`.
    /// Ids are keyed hashes, so the ranges are about the same size.
    starts: Vec<u32>,
    bits: u32,
    sorted: bool,
}

impl Index {
    pub fn new() -> Index {
        Index {
            sorted: true,
            ..Default::default()
        }
    }

    /// Adds a pack's blobs; call [`Index::sort`] before lookups.
    pub fn add_pack(&mut self, pack: Id, blobs: &[PackBlob]) {
        let next = self.packs.len() as u32;
        let n = *self.pack_numbers.entry(pack).or_insert(next);
        if n == next {
            self.packs.push(pack);
        }
        self.entries.extend(blobs.iter().map(|b| Entry {
            id: b.id,
            pack: n,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            kind: b.kind,
        }));
        self.sorted = false;
    }

    /// Sorts by id and keeps one location per blob (a blob stored twice by an
    /// interrupted run is found in either pack; the first seen is kept).
    pub fn sort(&mut self) {
        if !self.sorted {
            self.entries.sort_by_key(|e| e.id);
            self.entries.dedup_by(|a, b| a.id == b.id);
            self.entries.shrink_to_fit();
            self.build_starts();
            self.sorted = true;
        }
    }

    /// Forgets the blobs of these packs (an index replayed from an older state names
    /// packs a prune has since removed): lookups no longer find them there. The packs
    /// stay in [`Index::packs`], which names every pack an index object names.
    pub fn forget_packs(&mut self, gone: &HashSet<Id>) {
        self.sort();
        let numbers: HashSet<u32> = gone
            .iter()
            .filter_map(|p| self.pack_numbers.get(p).copied())
            .collect();
        self.entries.retain(|e| !numbers.contains(&e.pack));
        self.build_starts();
    }

    /// About two entries per range: a lookup is one table read and a short search.
    fn build_starts(&mut self) {
        let n = self.entries.len();
        self.bits = if n < 4 { 0 } else { (n / 2).ilog2().min(24) };
        let ranges = 1usize << self.bits;
        let mut starts = Vec::with_capacity(ranges + 1);
        let mut i = 0;
        for b in 0..ranges {
            while i < n && Self::range_of(&self.entries[i].id, self.bits) < b {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(n as u32);
        self.starts = starts;
    }

    fn range_of(id: &Id, bits: u32) -> usize {
        if bits == 0 {
            return 0;
        }
        let lead = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
        (lead >> (32 - bits)) as usize
    }

    /// The bytes a file made of these chunks holds, or `None` when one is not indexed.
    pub fn bytes_of(&self, ids: &[Id]) -> Option<u64> {
        ids.iter()
            .try_fold(0u64, |sum, id| Some(sum + self.get(id)?.raw_length as u64))
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        debug_assert!(self.sorted, "index looked up before sort()");
        let r = Self::range_of(id, self.bits);
        let (from, to) = match self.starts.get(r..r + 2) {
            Some(w) => (w[0] as usize, w[1] as usize),
            None => (0, self.entries.len()),
        };
        let range = &self.entries[from..to];
        let e = &range[range.binary_search_by(|e| e.id.cmp(id)).ok()?];
        Some(BlobLocation {
            pack: self.packs[e.pack as usize],
            kind: e.kind,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    pub fn has_pack(&self, pack: &Id) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many blobs of this kind are indexed.
    pub fn count_of(&self, kind: BlobKind) -> usize {
        self.entries.iter().filter(|e| e.kind == kind).count()
    }

    /// Every blob with its location, grouped by pack in pack order.
    pub fn blobs_by_pack(&self) -> Vec<(Id, Vec<PackBlob>)> {
        let mut groups: Vec<Vec<PackBlob>> = vec![Vec::new(); self.packs.len()];
        for e in &self.entries {
            groups[e.pack as usize].push(PackBlob {
                kind: e.kind,
                id: e.id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
        for g in &mut groups {
            g.sort_by_key(|b| b.offset);
        }
        self.packs.iter().copied().zip(groups).collect()
    }
}

const FILE_VERSION: u8 = 1;

/// Plaintext of an `index/<id>` object (before compression and sealing).
pub fn encode_file(packs: &[(Id, Vec<PackBlob>)]) -> Vec<u8> {
    let mut out = vec![FILE_VERSION];
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (pack, blobs) in packs {
        out.extend_from_slice(&pack.0);
        out.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
        for b in blobs {
            out.push(b.kind.code());
            out.extend_from_slice(&b.id.0);
            out.extend_from_slice(&b.offset.to_le_bytes());
            out.extend_from_slice(&b.length.to_le_bytes());
            out.extend_from_slice(&b.raw_length.to_le_bytes());
        }
    }
    out
}

pub fn decode_file(name: &str, data: &[u8]) -> Result<Vec<(Id, Vec<PackBlob>)>> {
    let bad = || Error::corrupt(format!("index/{name}"), "malformed index contents");
    let mut r = Reader { data, pos: 0 };
    if r.take(1).ok_or_else(bad)?[0] != FILE_VERSION {
        return Err(Error::corrupt(
            format!("index/{name}"),
            "unknown index version",
        ));
    }
    let npacks = r.u32().ok_or_else(bad)?;
    let mut out = Vec::new();
    for _ in 0..npacks {
        let pack = Id(r.take(32).ok_or_else(bad)?.try_into().unwrap());
        let n = r.u32().ok_or_else(bad)?;
        // Room for what the bytes left can hold, not for what the count claims.
        let room = (data.len() - r.pos) / (1 + 32 + 12);
        let mut blobs = Vec::with_capacity((n as usize).min(room));
        for _ in 0..n {
            let kind = BlobKind::from_code(r.take(1).ok_or_else(bad)?[0]).ok_or_else(bad)?;
            let id = Id(r.take(32).ok_or_else(bad)?.try_into().unwrap());
            blobs.push(PackBlob {
                kind,
                id,
                offset: r.u32().ok_or_else(bad)?,
                length: r.u32().ok_or_else(bad)?,
                raw_length: r.u32().ok_or_else(bad)?,
            });
        }
        out.push((pack, blobs));
    }
    if r.pos != data.len() {
        return Err(bad());
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, offset: u32) -> PackBlob {
        PackBlob {
            kind: BlobKind::Data,
            id: Id([n; 32]),
            offset,
            length: 10,
            raw_length: 20,
        }
    }

    #[test]
    fn lookup_and_file_round_trip() {
        let packs = vec![
            (Id([100; 32]), vec![blob(3, 0), blob(1, 10)]),
            (Id([101; 32]), vec![blob(2, 0)]),
        ];
        let bytes = encode_file(&packs);
        let back = decode_file("x", &bytes).unwrap();
        assert_eq!(back, packs);
        assert!(decode_file("x", &bytes[..bytes.len() - 1]).is_err());

        let mut idx = Index::new();
        for (p, b) in &back {
            idx.add_pack(*p, b);
        }
        idx.sort();
        assert_eq!(idx.len(), 3);
        let loc = idx.get(&Id([2; 32])).unwrap();
        assert_eq!(loc.pack, Id([101; 32]));
        assert_eq!(idx.get(&Id([1; 32])).unwrap().offset, 10);
        assert!(!idx.contains(&Id([9; 32])));
        assert_eq!(std::mem::size_of::<Entry>(), 52);
    }

    #[test]
    fn lookup_by_leading_bits_finds_every_blob() {
        // Hashed ids (as in a repository) and ids sharing their first bytes (worst case
        // for the range table); present ones are found, absent ones are not.
        for skewed in [false, true] {
            for n in [0u32, 1, 3, 4, 5, 100, 5000] {
                let id = |i: u32| {
                    let mut b = *blake3::hash(&i.to_le_bytes()).as_bytes();
                    if skewed {
                        b[..3].copy_from_slice(&[7, 7, 7]);
                    }
                    Id(b)
                };
                let blobs: Vec<PackBlob> = (0..n)
                    .map(|i| PackBlob {
                        id: id(i),
                        offset: i,
                        ..blob(0, 0)
                    })
                    .collect();
                let mut idx = Index::new();
                idx.add_pack(Id([1; 32]), &blobs);
                idx.sort();
                for i in 0..n {
                    assert_eq!(idx.get(&id(i)).map(|l| l.offset), Some(i), "n={n} i={i}");
                }
                for i in n..n + 50 {
                    assert!(idx.get(&id(i)).is_none());
                }
            }
        }
    }
}
