//! The jobs file (TOML written by people and by `backazon job add`): any text loads or
//! is refused with a message naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("jobs.toml");
    if let Err(e) = backazon::jobs::parse(path, text) {
        assert!(format!("{e:#}").contains("jobs.toml"));
    }
});
