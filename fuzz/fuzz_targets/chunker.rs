//! The chunker: chunks cover the input exactly, in order, each within the size bounds
//! but the last, and the cuts do not depend on how the reads are split.
#![no_main]
use backazon_engine::chunker::{Chunker, ChunkerParams};
use libfuzzer_sys::fuzz_target;

/// A reader handing out the data in pieces whose lengths come from the input.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    at: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let step = self
            .sizes
            .get(self.at % self.sizes.len().max(1))
            .copied()
            .unwrap_or(255);
        self.at += 1;
        let n = (step as usize * 97 + 1).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 9 {
        return;
    }
    let seed = u64::from_le_bytes(input[..8].try_into().unwrap());
    let split = (input[8] as usize).min(input.len() - 9);
    let (sizes, data) = input[9..].split_at(split);
    // The smallest chunks the format allows, so that short inputs hold several.
    let params = ChunkerParams {
        min: 4096,
        avg: 8192,
        max: 16384,
    };
    params.validate().unwrap();
    let c = Chunker::new(seed, params);
    // Cut by cut over the whole input.
    let mut whole = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = c.cut(rest);
        assert!(n > 0 && n <= rest.len() && n <= params.max);
        assert!(n >= params.min || n == rest.len());
        whole.push(n);
        rest = &rest[n..];
    }
    // Streamed through short reads.
    let mut streamed = Vec::new();
    let mut joined = Vec::new();
    let mut buf = Vec::new();
    let total = c
        .for_each_chunk(
            &mut Pieces { data, sizes, at: 0 },
            &mut buf,
            |chunk| {
                streamed.push(chunk.len());
                joined.extend_from_slice(chunk);
                Ok::<(), ()>(())
            },
            |_| (),
        )
        .unwrap();
    assert_eq!(total as usize, data.len());
    assert_eq!(joined, data);
    assert_eq!(streamed, whole);
});
