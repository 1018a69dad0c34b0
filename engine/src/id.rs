//! 32-byte identifiers: chunk and tree ids (keyed hashes of plaintext) and object names
//! (unkeyed BLAKE3 of the stored bytes), written as lowercase hex.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The name of a stored object: BLAKE3 of its bytes, so `check` can verify it without a key.
    pub fn of_object(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn random() -> Id {
        let mut b = [0u8; 32];
        crate::crypto::fill_random(&mut b);
        Id(b)
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        to_hex(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Result<Id> {
        // Straight into the array: trees hold an id per chunk, decoded on every backup.
        let hex = s.as_bytes();
        if hex.len() != 64 {
            return Err(Error::Invalid(format!("not a 64-digit id: {s:?}")));
        }
        let mut id = [0u8; 32];
        for (b, pair) in id.iter_mut().zip(hex.chunks_exact(2)) {
            *b = match (nibble(pair[0]), nibble(pair[1])) {
                (Some(h), Some(l)) => h << 4 | l,
                _ => return Err(Error::Invalid(format!("not an id: {s:?}"))),
            };
        }
        Ok(Id(id))
    }
}

/// Hashes an [`Id`] by its first 8 bytes. Ids are keyed hashes: already uniformly
/// distributed, and nobody without the repository's keys can choose them, so hashing
/// them again (SipHash over 32 bytes) for a hash map only costs time.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Ids hash as a length then their bytes; anything else is folded in.
        match bytes.get(..8) {
            Some(b) => self.0 ^= u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => {
                for &b in bytes {
                    self.0 = self.0.rotate_left(8) ^ b as u64;
                }
            }
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

pub type IdHashBuilder = std::hash::BuildHasherDefault<IdHasher>;

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // A visitor, not `String::deserialize`: a tree holds an id per chunk, and the
        // string is borrowed from the object's bytes instead of allocated for each.
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id of 64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Id, E> {
                Id::from_hex(s).map_err(E::custom)
            }
        }
        d.deserialize_str(HexVisitor)
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_object(b"hello");
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(Id::from_hex("abc").is_err());
        assert!(Id::from_hex(&"zz".repeat(32)).is_err());
        assert!(Id::from_hex(&id.to_hex()[..62]).is_err());
        assert!(Id::from_hex(&format!("{}é", &id.to_hex()[..62])).is_err());
        assert_eq!(Id::from_hex(&id.to_hex().to_uppercase()).unwrap(), id);
    }
}
