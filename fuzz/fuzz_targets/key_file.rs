//! `keys/<id>`: plaintext JSON around the wrapped master keys. Decoding must refuse a
//! derivation this version does not run or a round count outside its bounds before any
//! key is derived (unlocking itself costs 600,000 rounds and is not run here).
#![no_main]
use backazon_engine::crypto::{KeyFile, MAX_KDF_ROUNDS, MIN_KDF_ROUNDS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = KeyFile::decode(data) {
        assert!((MIN_KDF_ROUNDS..=MAX_KDF_ROUNDS).contains(&k.rounds));
    }
});
