//! The sealed form of a blob or small object: one flag byte (raw or zstd) and the payload,
//! sealed together, so whether something compressed well is itself encrypted.
//! Compression is skipped for file types that are already compressed, and any chunk is
//! stored raw when zstd does not shrink it by at least 2%.

use std::path::Path;

use crate::crypto::{MasterKeys, ObjectType};
use crate::error::{Error, Result};
use crate::id::Id;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// File name endings whose contents are already compressed: trying zstd on them only burns CPU.
const COMPRESSED_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "avif", "jxl", "mp3", "m4a", "aac", "ogg",
    "opus", "flac", "mp4", "m4v", "mkv", "mov", "avi", "webm", "wmv", "zip", "gz", "tgz", "bz2",
    "xz", "txz", "zst", "lz4", "lzma", "7z", "rar", "br", "jar", "apk", "docx", "xlsx", "pptx",
    "odt", "ods", "odp", "epub", "deb", "rpm", "cab", "dmg",
];

pub fn worth_compressing(path: &Path) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => !COMPRESSED_EXTENSIONS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(ext)),
        None => true,
    }
}

/// Compression choice for one encoding. Level 0 turns compression off.
#[derive(Clone, Copy, Debug)]
pub struct Compression {
    pub level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression { level: 3 }
    }
}

/// Compresses (when asked and when it helps) and seals `plain`. Returns the stored bytes.
pub fn encode(
    keys: &MasterKeys,
    ty: ObjectType,
    id: Option<&Id>,
    plain: &[u8],
    compression: Compression,
    try_compress: bool,
) -> Vec<u8> {
    if try_compress && compression.level > 0 && plain.len() >= 64 {
        let mut body = vec![0u8; 1 + zstd::zstd_safe::compress_bound(plain.len())];
        body[0] = ZSTD;
        let limit = plain.len() - plain.len() / 50;
        if let Ok(n) = zstd::bulk::compress_to_buffer(plain, &mut body[1..], compression.level) {
            if n < limit {
                body.truncate(1 + n);
                return keys.seal(ty, id, &body);
            }
        }
    }
    let mut body = Vec::with_capacity(plain.len() + 1);
    body.push(RAW);
    body.extend_from_slice(plain);
    keys.seal(ty, id, &body)
}

/// Opens and decompresses a stored object. `raw_len_hint` bounds the decompressed size.
pub fn decode(
    keys: &MasterKeys,
    ty: ObjectType,
    id: Option<&Id>,
    stored: &[u8],
    raw_len_hint: Option<usize>,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let mut body = keys.open(ty, id, stored, what)?;
    match body.first() {
        Some(&RAW) => {
            body.remove(0);
            Ok(body)
        }
        Some(&ZSTD) => {
            let cap = raw_len_hint.unwrap_or(256 << 20);
            zstd::bulk::decompress(&body[1..], cap)
                .map_err(|e| Error::corrupt(what(), format!("cannot decompress: {e}")))
        }
        _ => Err(Error::corrupt(what(), "unknown encoding flag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_raw_and_compressed() {
        let k = MasterKeys::generate();
        let what = || "t".to_string();
        let text = b"hello hello hello hello hello hello hello hello hello hello".repeat(100);
        let id = k.blob_id(&text);
        let stored = encode(
            &k,
            ObjectType::DataBlob,
            Some(&id),
            &text,
            Compression::default(),
            true,
        );
        assert!(stored.len() < text.len() / 4);
        assert_eq!(
            decode(
                &k,
                ObjectType::DataBlob,
                Some(&id),
                &stored,
                Some(text.len()),
                &what
            )
            .unwrap(),
            text
        );
        let mut noise = vec![0u8; 100_000];
        crate::crypto::fill_random(&mut noise);
        let stored = encode(
            &k,
            ObjectType::DataBlob,
            None,
            &noise,
            Compression::default(),
            true,
        );
        assert_eq!(stored.len(), noise.len() + 1 + crate::crypto::SEAL_OVERHEAD);
        assert_eq!(
            decode(&k, ObjectType::DataBlob, None, &stored, None, &what).unwrap(),
            noise
        );
    }

    #[test]
    fn media_is_not_compressed() {
        assert!(!worth_compressing(Path::new("a/b/IMG_1.JPG")));
        assert!(worth_compressing(Path::new("a/b/ledger.qbw")));
        assert!(worth_compressing(Path::new("Makefile")));
    }
}
