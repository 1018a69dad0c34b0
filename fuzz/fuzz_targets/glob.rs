//! Exclude and restore patterns: the first line is the pattern, the rest a path. Any
//! pattern parses or is refused with a message, and matching takes time bounded by
//! pattern length times path length.
#![no_main]
use backazon_engine::glob::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (pattern, path) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"/home/a/b.txt"[..]),
    };
    let Ok(pattern) = std::str::from_utf8(pattern) else {
        return;
    };
    if let Ok(p) = Pattern::new(pattern) {
        let _ = p.matches(path);
        // A pattern without wildcards, `/`, `[` or `\` matches exactly itself as a component.
        if !pattern.is_empty() && !pattern.contains(['*', '?', '[', '\\', '/']) {
            assert!(p.matches(format!("/x/{pattern}").as_bytes()));
        }
    }
});
