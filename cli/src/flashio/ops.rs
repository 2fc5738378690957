//! flashio's I/O loops over the pipelined NBD client: ranged writes, in-order reads, track
//! selection for `dirty`, and deterministic data.
//!
//! Every loop keeps up to `depth` requests in flight; reads are handed to the caller in offset
//! order (a small reorder buffer), so checksums and output files are sequential.

use anyhow::{Context, Result, anyhow, bail};
use flashtrack::nbd::client::{Client, Request};
use std::collections::{BTreeMap, HashMap};

/// How requests are cut and pipelined.
#[derive(Debug, Clone, Copy)]
pub struct Pipe {
    /// Bytes per request (at most the server's maximum).
    pub io_size: u32,
    /// Requests in flight per connection.
    pub depth: usize,
}

impl Pipe {
    /// Clamps to what the server accepts.
    pub fn for_client(self, c: &Client) -> Pipe {
        Pipe { io_size: self.io_size.clamp(1, c.block_sizes().max.max(1)), depth: self.depth.max(1) }
    }
}

/// Collects one reply; failures name the offset of the request.
fn complete(c: &mut Client, pending: &mut HashMap<u64, u64>) -> Result<(u64, Vec<u8>)> {
    let done = c.wait().context("NBD connection failed")?;
    let offset = pending.remove(&done.cookie).ok_or_else(|| anyhow!("reply for unknown request"))?;
    let data = done.result.with_context(|| format!("request at offset {offset} failed"))?;
    Ok((offset, data))
}

/// Checks `[offset, offset + len)` against the export size.
pub fn check_range(c: &Client, offset: u64, len: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > c.size()) {
        bail!("range {offset}+{len} is past the end of the export ({} bytes)", c.size());
    }
    Ok(())
}

/// Writes the given `(offset, len)` extents in order, each split into `io_size` requests, with
/// data from `fill(absolute_offset, buf)`.
pub fn write_extents(
    c: &mut Client,
    pipe: Pipe,
    extents: impl IntoIterator<Item = (u64, u64)>,
    fua: bool,
    mut fill: impl FnMut(u64, &mut [u8]),
) -> Result<()> {
    let mut buf = vec![0u8; pipe.io_size as usize];
    let mut pending = HashMap::new();
    for (start, len) in extents {
        let mut off = start;
        while off < start + len {
            let n = (start + len - off).min(u64::from(pipe.io_size)) as usize;
            fill(off, &mut buf[..n]);
            if pending.len() >= pipe.depth {
                complete(c, &mut pending)?;
            }
            // submit() sends the data before returning, so `buf` is free again at once.
            let ck = c.submit(Request::Write { offset: off, data: &buf[..n], fua })?;
            pending.insert(ck, off);
            off += n as u64;
        }
    }
    while !pending.is_empty() {
        complete(c, &mut pending)?;
    }
    Ok(())
}

/// Reads a range with `depth` requests in flight, yielding chunks in offset order.
#[derive(Debug)]
pub struct OrderedReader<'c> {
    c: &'c mut Client,
    pipe: Pipe,
    next_submit: u64,
    next_emit: u64,
    end: u64,
    pending: HashMap<u64, u64>,
    done: BTreeMap<u64, Vec<u8>>,
}

impl<'c> OrderedReader<'c> {
    pub fn new(c: &'c mut Client, pipe: Pipe, offset: u64, len: u64) -> Self {
        let end = offset + len;
        OrderedReader {
            c,
            pipe,
            next_submit: offset,
            next_emit: offset,
            end,
            pending: HashMap::new(),
            done: BTreeMap::new(),
        }
    }

    /// The next chunk `(offset, data)` in order; `None` at the end of the range.
    pub fn next_chunk(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        if self.next_emit >= self.end {
            return Ok(None);
        }
        loop {
            if let Some(data) = self.done.remove(&self.next_emit) {
                let off = self.next_emit;
                self.next_emit += data.len() as u64;
                return Ok(Some((off, data)));
            }
            while self.pending.len() < self.pipe.depth && self.next_submit < self.end {
                let n = (self.end - self.next_submit).min(u64::from(self.pipe.io_size)) as u32;
                let ck = self.c.submit(Request::Read { offset: self.next_submit, len: n })?;
                self.pending.insert(ck, self.next_submit);
                self.next_submit += u64::from(n);
            }
            let (off, data) = complete(self.c, &mut self.pending)?;
            self.done.insert(off, data);
        }
    }
}

/// SplitMix64: small, fast, and good enough for test data and sampling.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with pseudo-random bytes that depend only on `seed` and the absolute offset of
/// each byte, so data is reproducible whatever the request size or order.
pub fn fill_random(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut p = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix64(seed ^ (p / 8).wrapping_mul(0xD605_BBB5_8C8A_BBB5)).to_le_bytes();
        let skip = (p % 8) as usize;
        let n = (8 - skip).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[skip..skip + n]);
        i += n;
        p += n as u64;
    }
}

/// Picks exactly `k` of `n` track numbers, ascending, from `seed` (Knuth's selection
/// sampling: one pass, no memory beyond the result).
pub fn pick_tracks(n: u64, k: u64, seed: u64) -> Vec<u64> {
    let k = k.min(n);
    let mut state = splitmix64(seed);
    let mut out = Vec::with_capacity(usize::try_from(k).unwrap_or(0));
    for t in 0..n {
        let need = k - out.len() as u64;
        if need == 0 {
            break;
        }
        state = splitmix64(state);
        // Modulo bias is below 2^-40 for any realistic track count; irrelevant here.
        if state % (n - t) < need {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_data_is_position_determined() {
        let mut whole = vec![0u8; 100];
        fill_random(7, 1000, &mut whole);
        let mut parts = vec![0u8; 100];
        fill_random(7, 1000, &mut parts[..13]);
        fill_random(7, 1013, &mut parts[13..]);
        assert_eq!(whole, parts);
        let mut other = vec![0u8; 100];
        fill_random(8, 1000, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn pick_tracks_exact_sorted_seeded() {
        for (n, k) in [(0, 0), (10, 0), (10, 10), (10, 20), (1000, 137)] {
            let v = pick_tracks(n, k, 42);
            assert_eq!(v.len() as u64, k.min(n));
            assert!(v.windows(2).all(|w| w[0] < w[1]) && v.iter().all(|&t| t < n));
        }
        assert_eq!(pick_tracks(1000, 50, 1), pick_tracks(1000, 50, 1));
        assert_ne!(pick_tracks(1000, 50, 1), pick_tracks(1000, 50, 2));
    }
}
