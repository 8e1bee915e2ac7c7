//! The on-disk inverted index: posting lists of 128-document blocks, doc ids delta-encoded and
//! impacts (u8) bit-packed with `bitpacking` (SIMD BitPacker4x), and a fixed-size block table with
//! each block's last doc id and max impact (for block-max skipping).
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

    /// Bytes of the block's payload.
    pub fn payload_len(&self) -> usize {
        (self.doc_bits as usize + self.impact_bits as usize) * BLOCK / 8
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
    let bp = BitPacker4x::new();
    let n = docs.len();
    let mut d = [0u32; BLOCK];
    let mut w = [0u32; BLOCK];
    d[..n].copy_from_slice(docs);
    d[n..].fill(docs[n - 1]);
    for (i, x) in impacts.iter().enumerate() {
        w[i] = *x as u32;
    }
    let doc_bits = bp.num_bits_sorted(prev_last, &d);
    let impact_bits = bp.num_bits(&w);
    let start = payload.len();
    payload.resize(
        start + (doc_bits as usize + impact_bits as usize) * BLOCK / 8,
        0,
    );
    let used = bp.compress_sorted(prev_last, &d, &mut payload[start..], doc_bits);
    bp.compress(&w, &mut payload[start + used..], impact_bits);
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
    let bp = BitPacker4x::new();
    let used = bp.decompress_sorted(prev_last, payload, docs, meta.doc_bits);
    bp.decompress(&payload[used..], impacts, meta.impact_bits);
}
