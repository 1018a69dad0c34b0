//! What the fuzz targets share: one set of master keys per process, and the way an
//! object's plaintext reaches the decoders. Without the keys no input gets past
//! authentication, so the targets that read what a password holder could craft seal the
//! fuzzer's bytes first, then decode them as the engine decodes a stored object.

use std::sync::LazyLock;

use backazon_engine::blob;
use backazon_engine::crypto::{MasterKeys, ObjectType};
use backazon_engine::Id;

pub static KEYS: LazyLock<MasterKeys> = LazyLock::new(MasterKeys::generate);

/// Seals `body` (a flag byte, raw or zstd, then the payload) as an object of type `ty`
/// and opens it the way the engine opens stored objects, with `raw_len` as the index's
/// claimed length where there is one.
pub fn stored(
    ty: ObjectType,
    id: Option<&Id>,
    body: &[u8],
    raw_len: Option<usize>,
) -> backazon_engine::Result<Vec<u8>> {
    let sealed = KEYS.seal(ty, id, body);
    blob::decode(&KEYS, ty, id, sealed, raw_len, &|| "fuzzed object".into())
}

/// The input as stored bytes that were never sealed with this repository's keys:
/// every such object must be refused, never decoded.
pub fn unsealed(ty: ObjectType, id: Option<&Id>, data: &[u8]) {
    let r = blob::decode(&KEYS, ty, id, data.to_vec(), None, &|| "fuzzed".into());
    assert!(r.is_err(), "bytes never sealed were opened");
}
