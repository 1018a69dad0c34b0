//! An index object (`index/<id>`), once opened: packs and the blobs each holds.
#![no_main]
use backazon_engine::crypto::ObjectType;
use backazon_engine::index::{self, Index};
use backazon_fuzz::{stored, unsealed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(plain) = stored(ObjectType::Index, None, data, None) {
        if let Ok(packs) = index::decode_file("fuzzed", &plain) {
            let mut idx = Index::new();
            for (pack, blobs) in &packs {
                idx.add_pack(*pack, blobs);
            }
            idx.sort();
            for (_, blobs) in &packs {
                for b in blobs {
                    assert!(idx.get(&b.id).is_some());
                }
            }
        }
    }
    unsealed(ObjectType::Index, None, data);
});
