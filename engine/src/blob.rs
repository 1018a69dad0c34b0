//! The sealed form of a blob or small object: one flag byte (raw or zstd) and the payload,
//! sealed together, so whether something compressed well is itself encrypted.
//! Compression is skipped for file types that are already compressed, and any chunk is
//! stored raw when zstd does not shrink it by at least 2%.

use std::path::Path;

use std::cell::RefCell;

use crate::crypto::{MasterKeys, ObjectType, NONCE_LEN};
use crate::error::{Error, Result};
use crate::id::Id;

/// The largest object without a known length (index, snapshot, lock) that is decoded.
const MAX_OBJECT: usize = 256 << 20;

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

struct Scratch {
    compressor: Option<(i32, zstd::bulk::Compressor<'static>)>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    buf: Vec<u8>,
}

thread_local! {
    // Per-thread zstd contexts and output buffer: creating a zstd context per chunk
    // costs more than compressing a small one, and fresh buffers churn the allocator.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { compressor: None, decompressor: None, buf: Vec::new() }) };
}

/// Compresses (when asked and when it helps) and seals `plain`, and hands the stored
/// bytes to `f` without copying them out of this thread's scratch buffer.
/// `f` must not encode itself.
pub fn encode_with<R>(
    keys: &MasterKeys,
    ty: ObjectType,
    id: Option<&Id>,
    plain: &[u8],
    compression: Compression,
    try_compress: bool,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        let buf = &mut s.buf;
        buf.clear();
        buf.resize(NONCE_LEN, 0);
        let mut compressed = false;
        if try_compress && compression.level > 0 && plain.len() >= 64 {
            buf.push(ZSTD);
            buf.reserve(zstd::zstd_safe::compress_bound(plain.len()));
            let level = compression.level;
            if s.compressor.as_ref().is_none_or(|(l, _)| *l != level) {
                s.compressor = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
            }
            if let Some((_, c)) = &mut s.compressor {
                let mut cursor = std::io::Cursor::new(std::mem::take(buf));
                cursor.set_position((NONCE_LEN + 1) as u64);
                let n = c.compress_to_buffer(plain, &mut cursor);
                *buf = cursor.into_inner();
                compressed = n.is_ok_and(|n| n < plain.len() - plain.len() / 50);
            }
        }
        if !compressed {
            buf.truncate(NONCE_LEN);
            buf.push(RAW);
            buf.extend_from_slice(plain);
        }
        keys.seal_in_place(ty, id, buf);
        let r = f(buf);
        // Give back the room a rare large chunk needed.
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new();
        }
        r
    })
}

/// [`encode_with`], returning the stored bytes.
pub fn encode(
    keys: &MasterKeys,
    ty: ObjectType,
    id: Option<&Id>,
    plain: &[u8],
    compression: Compression,
    try_compress: bool,
) -> Vec<u8> {
    encode_with(
        keys,
        ty,
        id,
        plain,
        compression,
        try_compress,
        <[u8]>::to_vec,
    )
}

/// Opens a stored object and hands its contents out as they are decompressed, for
/// objects too large to hold whole (a tree of millions of entries). The object is
/// authenticated before any byte is handed out.
pub fn decode_reader<'a>(
    keys: &MasterKeys,
    ty: ObjectType,
    id: Option<&Id>,
    stored: &'a mut [u8],
    what: &dyn Fn() -> String,
) -> Result<Box<dyn std::io::Read + 'a>> {
    let range = keys.open_in_place(ty, id, stored, what)?;
    let body = &stored[range];
    match body.first() {
        Some(&RAW) => Ok(Box::new(&body[1..])),
        Some(&ZSTD) => zstd::stream::read::Decoder::with_buffer(&body[1..])
            .map(|d| Box::new(d) as Box<dyn std::io::Read>)
            .map_err(|e| Error::corrupt(what(), format!("cannot decompress: {e}"))),
        _ => Err(Error::corrupt(what(), "unknown encoding flag")),
    }
}

/// Opens and decompresses a stored object. `raw_len_hint` bounds the decompressed size.
pub fn decode(
    keys: &MasterKeys,
    ty: ObjectType,
    id: Option<&Id>,
    mut stored: Vec<u8>,
    raw_len_hint: Option<usize>,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let range = keys.open_in_place(ty, id, &mut stored, what)?;
    let body = &stored[range.clone()];
    match body.first() {
        Some(&RAW) => {
            stored.truncate(range.end);
            stored.drain(..range.start + 1);
            Ok(stored)
        }
        Some(&ZSTD) => {
            let limit = raw_len_hint.unwrap_or(MAX_OBJECT);
            let body = &body[1..];
            if limit > body.len().saturating_mul(32).saturating_add(1 << 20) {
                // More than most data expands to, or no length known (index, snapshot,
                // lock): the output grows as it is produced, so what is reserved is
                // what the bytes really hold, never what a crafted length claims.
                let mut out = Vec::new();
                let mut d = zstd::stream::read::Decoder::with_buffer(body)
                    .map_err(|e| Error::corrupt(what(), format!("cannot decompress: {e}")))?;
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut d, limit as u64 + 1),
                    &mut out,
                )
                .map_err(|e| Error::corrupt(what(), format!("cannot decompress: {e}")))?;
                if out.len() > limit {
                    return Err(Error::corrupt(
                        what(),
                        format!("decompresses to more than the {limit} bytes expected"),
                    ));
                }
                return Ok(out);
            }
            let cap = limit;
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                if s.decompressor.is_none() {
                    s.decompressor = zstd::bulk::Decompressor::new().ok();
                }
                let d = s
                    .decompressor
                    .as_mut()
                    .ok_or_else(|| Error::corrupt(what(), "cannot set up zstd"))?;
                let mut out = Vec::with_capacity(cap);
                d.decompress_to_buffer(body, &mut out)
                    .map_err(|e| Error::corrupt(what(), format!("cannot decompress: {e}")))?;
                Ok(out)
            })
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
                stored,
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
            decode(&k, ObjectType::DataBlob, None, stored.clone(), None, &what).unwrap(),
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
