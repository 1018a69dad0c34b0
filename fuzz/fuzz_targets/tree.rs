//! A tree blob, once opened: a folder's entries. What is wrong with it is reported by
//! `Tree::problems`, and a lookup of every name it holds answers without panicking.
#![no_main]
use backazon_engine::crypto::ObjectType;
use backazon_engine::tree::Tree;
use backazon_engine::Id;
use backazon_fuzz::{stored, unsealed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = Id::default();
    if let Ok(plain) = stored(ObjectType::TreeBlob, Some(&id), data, Some(data.len() * 64)) {
        if let Ok(t) = Tree::from_bytes(&id, &plain) {
            let problems = t.problems();
            for n in &t.nodes {
                let found = t.find(&n.name.0);
                // With sorted, unique names every entry is found as itself.
                if problems.is_empty() {
                    assert_eq!(found, Some(n));
                }
            }
        }
    }
    unsealed(ObjectType::TreeBlob, Some(&id), data);
});
