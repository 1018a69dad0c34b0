//! Any blob's body (flag byte, then raw or zstd bytes) against the length the index
//! claims for it (the first four input bytes): never more output than claimed, and what
//! is reserved is bounded by the input, not by the claim.
#![no_main]
use backazon_engine::crypto::ObjectType;
use backazon_fuzz::stored;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let claimed = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let body = &data[4..];
    if let Ok(plain) = stored(ObjectType::DataBlob, None, body, Some(claimed)) {
        assert!(plain.len() <= claimed.max(body.len()));
    }
});
