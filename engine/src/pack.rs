//! Packs: many sealed blobs appended into one large object, followed by a sealed header
//! listing them and the header's length (u32 LE). Data and trees go to separate packs.

use crate::crypto::{MasterKeys, ObjectType};
use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn code(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    pub fn from_code(c: u8) -> Option<BlobKind> {
        match c {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }

    pub fn object_type(self) -> ObjectType {
        match self {
            BlobKind::Data => ObjectType::DataBlob,
            BlobKind::Tree => ObjectType::TreeBlob,
        }
    }
}

/// Where one blob sits in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackBlob {
    pub kind: BlobKind,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

const HEADER_VERSION: u8 = 1;
const HEADER_ENTRY_LEN: usize = 1 + 32 + 4 + 4;
pub const TRAILER_LEN: usize = 4;

/// Accumulates sealed blobs in memory until the pack is large enough to store.
pub struct PackBuilder {
    pub kind: BlobKind,
    buf: Vec<u8>,
    blobs: Vec<PackBlob>,
}

pub struct FinishedPack {
    pub kind: BlobKind,
    pub bytes: Vec<u8>,
    pub blobs: Vec<PackBlob>,
}

impl PackBuilder {
    pub fn new(kind: BlobKind) -> PackBuilder {
        PackBuilder {
            kind,
            buf: Vec::new(),
            blobs: Vec::new(),
        }
    }

    pub fn add(&mut self, id: Id, raw_length: usize, stored: &[u8]) {
        self.blobs.push(PackBlob {
            kind: self.kind,
            id,
            offset: self.buf.len() as u32,
            length: stored.len() as u32,
            raw_length: raw_length as u32,
        });
        self.buf.extend_from_slice(stored);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Reserves room once, so a growing pack is never copied to a larger buffer.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes);
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Seals the header onto the pack and hands back its bytes, leaving `self` empty.
    pub fn finish(&mut self, keys: &MasterKeys) -> FinishedPack {
        let room = self.buf.capacity();
        self.finish_into(keys, Vec::with_capacity(room))
    }

    /// [`PackBuilder::finish`], continuing in `next` (an emptied buffer from an earlier
    /// pack: reusing buffers spares the kernel zeroing fresh pages for every pack).
    pub fn finish_into(&mut self, keys: &MasterKeys, mut next: Vec<u8>) -> FinishedPack {
        let mut header = Vec::with_capacity(5 + self.blobs.len() * HEADER_ENTRY_LEN);
        header.push(HEADER_VERSION);
        header.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for b in &self.blobs {
            header.push(b.kind.code());
            header.extend_from_slice(&b.id.0);
            header.extend_from_slice(&b.length.to_le_bytes());
            header.extend_from_slice(&b.raw_length.to_le_bytes());
        }
        let sealed = keys.seal(ObjectType::PackHeader, None, &header);
        next.clear();
        // Keep the reserved room for the next pack, so it is never grown by copying.
        next.reserve(self.buf.capacity());
        let mut bytes = std::mem::replace(&mut self.buf, next);
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        FinishedPack {
            kind: self.kind,
            bytes,
            blobs: std::mem::take(&mut self.blobs),
        }
    }
}

/// Length of the sealed header, read from a pack's last four bytes.
pub fn header_length(trailer: &[u8]) -> usize {
    let mut b = [0u8; 4];
    b.copy_from_slice(&trailer[trailer.len() - 4..]);
    u32::from_le_bytes(b) as usize
}

/// Decodes a pack's sealed header into the blobs it lists, with offsets.
pub fn parse_header(keys: &MasterKeys, pack: &Id, sealed: &[u8]) -> Result<Vec<PackBlob>> {
    let what = || format!("pack {pack} header");
    let plain = keys.open(ObjectType::PackHeader, None, sealed, &what)?;
    if plain.len() < 5 || plain[0] != HEADER_VERSION {
        return Err(Error::corrupt(what(), "unknown header version"));
    }
    let count = u32::from_le_bytes(plain[1..5].try_into().unwrap()) as usize;
    let body = &plain[5..];
    if body.len() != count * HEADER_ENTRY_LEN {
        return Err(Error::corrupt(
            what(),
            "header length does not match its entry count",
        ));
    }
    let mut offset = 0u32;
    let mut out = Vec::with_capacity(count);
    for e in body.chunks(HEADER_ENTRY_LEN) {
        let kind =
            BlobKind::from_code(e[0]).ok_or_else(|| Error::corrupt(what(), "unknown blob kind"))?;
        let id = Id(e[1..33].try_into().unwrap());
        let length = u32::from_le_bytes(e[33..37].try_into().unwrap());
        let raw_length = u32::from_le_bytes(e[37..41].try_into().unwrap());
        out.push(PackBlob {
            kind,
            id,
            offset,
            length,
            raw_length,
        });
        offset = offset
            .checked_add(length)
            .ok_or_else(|| Error::corrupt(what(), "blob offsets overflow"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let k = MasterKeys::generate();
        let mut p = PackBuilder::new(BlobKind::Data);
        p.add(Id([1; 32]), 10, b"0123456789abc");
        p.add(Id([2; 32]), 5, b"xyz");
        let f = p.finish(&k);
        assert!(p.is_empty());
        let hl = header_length(&f.bytes);
        let end = f.bytes.len() - TRAILER_LEN;
        let blobs = parse_header(&k, &Id([0; 32]), &f.bytes[end - hl..end]).unwrap();
        assert_eq!(blobs, f.blobs);
        assert_eq!(blobs[1].offset, 13);
    }
}
