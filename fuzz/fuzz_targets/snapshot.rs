//! A snapshot object, once opened: root tree, time, host, paths, tags, summary.
#![no_main]
use backazon_engine::crypto::ObjectType;
use backazon_engine::snapshot::Snapshot;
use backazon_fuzz::{stored, unsealed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(plain) = stored(ObjectType::Snapshot, None, data, None) {
        if let Ok(s) = Snapshot::decode(&plain) {
            let _ = s.timestamp();
            let _ = serde_json::to_vec(&s);
        }
    }
    unsealed(ObjectType::Snapshot, None, data);
});
