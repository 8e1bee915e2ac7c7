//! The on-disk inverted index: posting lists of 128-document blocks, doc ids delta-encoded and
//! impacts (u8) bit-packed — full blocks with `bitpacking` (SIMD BitPacker4x), the partial block
//! ending each list packed to its real length (real vocabularies are long-tailed: most lists are
//! shorter than one block) — and a fixed-size block table with each block's last doc id and max
//! impact (for block-max skipping).
//!
//! Files in the index directory:
//! * `postings.bin` — block payloads: packed doc deltas, then packed impacts.
//! * `blocks.bin`   — one 16-byte [`BlockMeta`] per block, term after term.
//! * `terms.bin`    — one 20-byte [`TermMeta`] per term id in `0..vocab` (df 0 = absent).
//!
//! All integers little-endian. `terms.parquet` and `doc_ids.parquet` beside them hold the same
//! term statistics and the doc-index → id table for Polars.

use bitpacking::{BitPacker, BitPacker4x};

/// Documents per block.
pub const BLOCK: usize = BitPacker4x::BLOCK_LEN;

/// One block of a posting list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockMeta {
    /// Doc index of the block's last posting (for skipping).
    pub last_doc: u32,
    /// Byte offset of the payload in `postings.bin`.
    pub offset: u64,
    /// Largest impact in the block.
    pub max_impact: u8,
    /// Postings in the block (1..=128).
    pub len: u8,
    /// Bits per doc-id delta in this block.
    pub doc_bits: u8,
    /// Bits per impact in this block.
    pub impact_bits: u8,
}

impl BlockMeta {
    /// Size in bytes of one encoded record in `blocks.bin`.
    pub const BYTES: usize = 16;

    /// Appends the 16-byte encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.last_doc.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&[
            self.max_impact,
            self.len.wrapping_sub(1),
            self.doc_bits,
            self.impact_bits,
        ]);
    }

    /// Decodes one record.
    pub fn read(b: &[u8]) -> Self {
        BlockMeta {
            last_doc: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
            max_impact: b[12],
            len: b[13].wrapping_add(1),
            doc_bits: b[14],
            impact_bits: b[15],
        }
    }

    /// Bytes of the block's payload: `BLOCK` values per field for a full block, `len` (rounded
    /// up to whole bytes per field) for a partial one.
    pub fn payload_len(&self) -> usize {
        let n = self.len as usize;
        if n == BLOCK {
            (self.doc_bits as usize + self.impact_bits as usize) * BLOCK / 8
        } else {
            packed_len(n, self.doc_bits) + packed_len(n, self.impact_bits)
        }
    }
}

/// One term's posting list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TermMeta {
    /// Document frequency: postings of the term (0 = absent).
    pub df: u32,
    /// Index of the term's first record in `blocks.bin` (in records, not bytes).
    pub first_block: u64,
    /// Blocks in the term's posting list.
    pub n_blocks: u32,
    /// Largest impact in the term's posting list.
    pub max_impact: u8,
}

impl TermMeta {
    /// Size in bytes of one encoded record in `terms.bin`.
    pub const BYTES: usize = 20;

    /// Appends the 20-byte encoding.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.df.to_le_bytes());
        out.extend_from_slice(&self.first_block.to_le_bytes());
        out.extend_from_slice(&self.n_blocks.to_le_bytes());
        out.extend_from_slice(&[self.max_impact, 0, 0, 0]);
    }

    /// Decodes one record.
    pub fn read(b: &[u8]) -> Self {
        TermMeta {
            df: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            first_block: u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
            n_blocks: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            max_impact: b[16],
        }
    }
}

/// Encodes one block (`docs` strictly increasing, `impacts` ≥ 1, same length ≤ 128) into
/// `payload`; `prev_last` is the previous block's last doc (or 0) for delta coding.
pub fn encode_block(
    docs: &[u32],
    impacts: &[u8],
    prev_last: u32,
    offset: u64,
    payload: &mut Vec<u8>,
) -> BlockMeta {
    let n = docs.len();
    let mut d = [0u32; BLOCK];
    let mut w = [0u32; BLOCK];
    let mut prev = prev_last;
    for i in 0..n {
        d[i] = docs[i] - prev;
        prev = docs[i];
        w[i] = impacts[i] as u32;
    }
    let bits = |v: &[u32]| 32 - v.iter().fold(0u32, |m, x| m | x).leading_zeros();
    let (doc_bits, impact_bits) = (bits(&d[..n]) as u8, bits(&w[..n]) as u8);
    if n == BLOCK {
        let bp = BitPacker4x::new();
        let start = payload.len();
        payload.resize(
            start + (doc_bits as usize + impact_bits as usize) * BLOCK / 8,
            0,
        );
        let used = bp.compress_sorted(prev_last, docs, &mut payload[start..], doc_bits);
        bp.compress(&w, &mut payload[start + used..], impact_bits);
    } else {
        pack(&d[..n], doc_bits, payload);
        pack(&w[..n], impact_bits, payload);
    }
    BlockMeta {
        last_doc: docs[n - 1],
        offset,
        max_impact: impacts.iter().copied().max().unwrap_or(0),
        len: n as u8,
        doc_bits,
        impact_bits,
    }
}

/// Decodes a block payload into doc indices and impacts (first `meta.len` entries valid).
pub fn decode_block(
    meta: &BlockMeta,
    payload: &[u8],
    prev_last: u32,
    docs: &mut [u32; BLOCK],
    impacts: &mut [u32; BLOCK],
) {
    let n = meta.len as usize;
    if n == BLOCK {
        let bp = BitPacker4x::new();
        let used = bp.decompress_sorted(prev_last, payload, docs, meta.doc_bits);
        bp.decompress(&payload[used..], impacts, meta.impact_bits);
        return;
    }
    let split = packed_len(n, meta.doc_bits);
    unpack(&payload[..split], meta.doc_bits, &mut docs[..n]);
    unpack(&payload[split..], meta.impact_bits, &mut impacts[..n]);
    let mut prev = prev_last;
    for d in &mut docs[..n] {
        prev += *d;
        *d = prev;
    }
}

/// Bytes of `n` values of `bits` bits, packed.
fn packed_len(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(8)
}

/// Appends `values` (each below `2^bits`) packed least-significant bit first.
fn pack(values: &[u32], bits: u8, out: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut filled = 0u32;
    for v in values {
        acc |= (*v as u64) << filled;
        filled += bits as u32;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
}

/// Reads `out.len()` values of `bits` bits packed by [`pack`].
fn unpack(bytes: &[u8], bits: u8, out: &mut [u32]) {
    let mask = if bits == 32 {
        u32::MAX as u64
    } else {
        (1u64 << bits) - 1
    };
    let mut acc = 0u64;
    let mut filled = 0u32;
    let mut next = bytes.iter();
    for v in out.iter_mut() {
        while filled < bits as u32 {
            acc |= (*next.next().unwrap_or(&0) as u64) << filled;
            filled += 8;
        }
        *v = (acc & mask) as u32;
        acc >>= bits;
        filled -= bits as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block length 1..=128 and bit widths 0..=32 round-trip, partial blocks take only the
    /// bytes their postings need, and full blocks keep the SIMD layout.
    #[test]
    fn blocks_of_every_length_round_trip() {
        let mut s = 12345u64;
        for n in 1..=BLOCK {
            for spread in [0u32, 1, 7, 1000, 1 << 20, u32::MAX / 256] {
                let prev_last = (crate::rng::splitmix64(&mut s) % 1000) as u32;
                let mut doc = prev_last;
                let docs: Vec<u32> = (0..n)
                    .map(|i| {
                        let step = if spread == 0 && i > 0 {
                            1
                        } else {
                            1 + (crate::rng::splitmix64(&mut s) % (spread as u64 + 1)) as u32
                        };
                        doc += step;
                        doc
                    })
                    .collect();
                let impacts: Vec<u8> = (0..n)
                    .map(|_| 1 + (crate::rng::splitmix64(&mut s) % 255) as u8)
                    .collect();
                let mut payload = Vec::new();
                let meta = encode_block(&docs, &impacts, prev_last, 0, &mut payload);
                assert_eq!(payload.len(), meta.payload_len(), "n {n} spread {spread}");
                if n < BLOCK {
                    let bits = meta.doc_bits as usize + meta.impact_bits as usize;
                    assert!(payload.len() <= (n * bits).div_ceil(8) + 1);
                }
                let (mut d, mut w) = ([0u32; BLOCK], [0u32; BLOCK]);
                decode_block(&meta, &payload, prev_last, &mut d, &mut w);
                assert_eq!(&d[..n], &docs[..], "n {n} spread {spread}");
                let got: Vec<u8> = w[..n].iter().map(|x| *x as u8).collect();
                assert_eq!(got, impacts);
            }
        }
    }
}
