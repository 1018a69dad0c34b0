//! A pack's header (entry count, then kind, id, length, raw length per blob) and its
//! length trailer: first as plaintext sealed with the keys, then as bytes never sealed.
#![no_main]
use backazon_engine::crypto::ObjectType;
use backazon_engine::pack;
use backazon_engine::Id;
use backazon_fuzz::KEYS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = Id::default();
    let sealed = KEYS.seal(ObjectType::PackHeader, None, data);
    if let Ok(blobs) = pack::parse_header(&KEYS, &id, &sealed) {
        // Offsets follow each other without overflow.
        let mut at = 0u64;
        for b in &blobs {
            assert_eq!(b.offset as u64, at);
            at += b.length as u64;
        }
    }
    assert!(pack::parse_header(&KEYS, &id, data).is_err());
    if data.len() >= 4 {
        let _ = pack::header_length(data);
    }
});
