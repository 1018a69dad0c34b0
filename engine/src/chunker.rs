//! Content-defined chunking: FastCDC with normalised chunking, its gear table derived from
//! the repository's secret chunker seed so cut points reveal nothing across repositories.

use std::io::Read;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.min >= 4096
            && self.min < self.avg
            && self.avg < self.max
            && self.avg.is_power_of_two()
            && self.max <= 64 * 1024 * 1024;
        if ok {
            Ok(())
        } else {
            Err(format!("unsupported chunker parameters {self:?}"))
        }
    }
}

/// The cut-point rule, independent of where the bytes come from.
#[derive(Clone)]
pub struct Chunker {
    gear: [u64; 256],
    params: ChunkerParams,
    mask_small: u64,
    mask_large: u64,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `bits` one-bits at the top of a u64: the gear hash shifts left, so the top bits
/// depend on the most bytes of the window.
fn top_mask(bits: u32) -> u64 {
    !0u64 << (64 - bits)
}

impl Chunker {
    pub fn new(seed: u64, params: ChunkerParams) -> Chunker {
        let mut state = seed;
        let mut gear = [0u64; 256];
        for g in gear.iter_mut() {
            *g = splitmix64(&mut state);
        }
        let bits = params.avg.trailing_zeros();
        Chunker {
            gear,
            params,
            mask_small: top_mask(bits + 2),
            mask_large: top_mask(bits - 2),
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the next chunk at the start of `data`. `data` must hold at least
    /// `max` bytes unless it is the end of the stream.
    pub fn cut(&self, data: &[u8]) -> usize {
        let mut scan = Scan::default();
        match self.scan(&mut scan, data) {
            Some(n) => n,
            None => data.len().min(self.params.max),
        }
    }

    /// Continues a cut-point search over `data` (the current chunk's bytes so far, from
    /// its start). Returns the cut length once one is found; `None` means more data is
    /// needed (or, at the end of the stream, the whole of `data` is the chunk).
    fn scan(&self, st: &mut Scan, data: &[u8]) -> Option<usize> {
        let p = &self.params;
        let end = data.len().min(p.max);
        let mut i = st.pos.max(p.min);
        if i >= end {
            // Nothing new to scan: below the minimum size, or already at the maximum.
            return (data.len() >= p.max).then_some(p.max);
        }
        let mut fp = st.fp;
        // Slices, not indexing: the hot loop then has no bounds checks.
        let normal_end = end.min(p.avg).max(i);
        for (k, &b) in data[i..normal_end].iter().enumerate() {
            fp = (fp << 1).wrapping_add(self.gear[b as usize]);
            if fp & self.mask_small == 0 {
                return Some(i + k + 1);
            }
        }
        i = normal_end;
        for (k, &b) in data[i..end].iter().enumerate() {
            fp = (fp << 1).wrapping_add(self.gear[b as usize]);
            if fp & self.mask_large == 0 {
                return Some(i + k + 1);
            }
        }
        i = end;
        if data.len() >= p.max {
            return Some(p.max);
        }
        st.pos = i;
        st.fp = fp;
        None
    }

    /// Reads `reader` to its end, handing each chunk to `f`. Memory holds the current
    /// chunk and one read ahead (typically ~2 MiB, at most about `max` + 1 MiB, twice
    /// that while the buffer grows), whatever the stream's length; `buf` is scratch
    /// space the caller reuses across files.
    pub fn for_each_chunk<R: Read, E>(
        &self,
        reader: &mut R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
        mut on_read_error: impl FnMut(std::io::Error) -> E,
    ) -> Result<u64, E> {
        const READ: u64 = 1 << 20;
        buf.clear();
        let mut start = 0;
        let mut total = 0u64;
        let mut scan = Scan::default();
        let mut eof = false;
        loop {
            if let Some(n) = self.scan(&mut scan, &buf[start..]) {
                f(&buf[start..start + n])?;
                start += n;
                scan = Scan::default();
                continue;
            }
            if eof {
                if start < buf.len() {
                    f(&buf[start..])?;
                }
                return Ok(total);
            }
            // Consumed bytes are dropped when the next read would otherwise grow the
            // buffer: it stays at about the largest chunk plus one read, and the bytes
            // moved are a partial chunk, once per buffer's worth read. (Dropping them
            // only every 4 MiB let each reader's buffer grow to 16 MiB.)
            if start == buf.len() {
                buf.clear();
                start = 0;
            } else if start > 0 && buf.len() + READ as usize > buf.capacity() {
                buf.drain(..start);
                start = 0;
            }
            let n = reader
                .by_ref()
                .take(READ)
                .read_to_end(buf)
                .map_err(&mut on_read_error)? as u64;
            total += n;
            eof = n < READ;
        }
    }
}

/// Where a cut-point search stopped for want of data.
#[derive(Default)]
struct Scan {
    pos: usize,
    fp: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..len).map(|_| splitmix64(&mut s) as u8).collect()
    }

    fn chunks(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.for_each_chunk::<_, std::io::Error>(
            &mut &data[..],
            &mut Vec::new(),
            |ch| {
                out.push(ch.to_vec());
                Ok(())
            },
            |e| e,
        )
        .unwrap();
        out
    }

    #[test]
    fn sizes_are_within_bounds_and_average_near_target() {
        let c = Chunker::new(7, ChunkerParams::default());
        let data = pseudo_random(64 << 20, 1);
        let cs = chunks(&c, &data);
        assert_eq!(cs.concat(), data);
        for ch in &cs[..cs.len() - 1] {
            assert!(
                ch.len() >= 512 * 1024 && ch.len() <= 8 << 20,
                "{}",
                ch.len()
            );
        }
        let avg = data.len() / cs.len();
        assert!((700 << 10..1600 << 10).contains(&avg), "average {avg}");
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let c = Chunker::new(99, ChunkerParams::default());
        let data = pseudo_random(32 << 20, 2);
        let mut edited = data[..10 << 20].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[10 << 20..]);
        let a = chunks(&c, &data);
        let b = chunks(&c, &edited);
        let shared = a.iter().filter(|x| b.contains(x)).count();
        assert!(
            shared + 3 >= a.len(),
            "only {shared} of {} chunks shared",
            a.len()
        );
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo_random(16 << 20, 3);
        let a = chunks(&Chunker::new(1, ChunkerParams::default()), &data);
        let b = chunks(&Chunker::new(2, ChunkerParams::default()), &data);
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn streaming_cuts_match_whole_buffer_cuts() {
        let c = Chunker::new(5, ChunkerParams::default());
        let mut data = pseudo_random(40 << 20, 4);
        // A long run of one byte forces maximum-size chunks too.
        data[10 << 20..30 << 20].fill(0);
        let mut expected = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = c.cut(rest);
            expected.push(n);
            rest = &rest[n..];
        }
        let got: Vec<usize> = chunks(&c, &data).iter().map(Vec::len).collect();
        assert_eq!(got, expected);
        assert!(got.contains(&(8 << 20)));
    }

    #[test]
    fn small_and_empty_streams() {
        let c = Chunker::new(0, ChunkerParams::default());
        assert!(chunks(&c, b"").is_empty());
        assert_eq!(chunks(&c, b"abc"), vec![b"abc".to_vec()]);
    }
}
