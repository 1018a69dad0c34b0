//! The repository's `config`: plaintext JSON anyone with write access to the storage can
//! replace (format, version, chunker parameters, pack size).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = backazon_engine::repo::decode_config("config", data) {
        // What a repository opened with this config relies on.
        assert!(c.chunker.validate().is_ok());
        assert!(backazon_engine::PACK_SIZES.contains(&c.pack_size));
        let _ = backazon_engine::chunker::Chunker::new(0, c.chunker);
    }
});
