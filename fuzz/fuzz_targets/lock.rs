//! A lock object, once opened: who holds it, since when, last refreshed.
#![no_main]
use backazon_engine::crypto::ObjectType;
use backazon_engine::lock::LockInfo;
use backazon_fuzz::{stored, unsealed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(plain) = stored(ObjectType::Lock, None, data, None) {
        if let Some(l) = LockInfo::decode(&plain) {
            let _ = l.is_stale(jiff::Timestamp::UNIX_EPOCH);
        }
    }
    unsealed(ObjectType::Lock, None, data);
});
