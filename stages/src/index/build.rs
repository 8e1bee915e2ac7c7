//! Building an index from sparse vectors: quantize weights to u8 impacts, invert (CSR, two
//! passes), and write block-compressed posting lists through [`IndexWriter`].

use std::path::Path;

use super::writer::IndexWriter;
use crate::error::Result;
use crate::parquet_io::SparseVector;

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildStats {
    /// Documents indexed (input rows, including those left without postings).
    pub n_docs: u32,
    /// Terms with at least one posting.
    pub n_terms: u32,
    /// Postings written (after dropping impacts quantized to 0).
    pub n_postings: u64,
    /// Size of `postings.bin` in bytes.
    pub postings_bytes: u64,
    /// Quantization scale: impact = round(weight · scale), `255 / max_weight`.
    pub scale: f32,
    /// Postings dropped because their weight quantized to impact 0.
    pub dropped_postings: u64,
}

/// The u8 impact of weight `w` under `scale` (0 means the posting is dropped).
pub fn quantize(w: f32, scale: f32) -> u8 {
    (w * scale).round().clamp(0.0, 255.0) as u8
}

/// `(max_weight, scale)`: the weight mapped to impact 255 (`max_weight`, or the collection's
/// largest weight `observed` when `max_weight` ≤ 0) and `255 / max_weight`.
pub fn scale_for(max_weight: f32, observed: f32) -> (f32, f32) {
    let max_w = if max_weight > 0.0 {
        max_weight
    } else {
        observed.max(f32::MIN_POSITIVE)
    };
    (max_w, 255.0 / max_w)
}

/// Writes `postings.bin`, `blocks.bin`, `terms.bin` and `meta.json` into `dir`. Impacts are
/// `round(w · 255 / max_weight)`; `max_weight` ≤ 0 means the collection's largest weight.
pub fn build(
    dir: &Path,
    vectors: &[SparseVector],
    vocab: usize,
    max_weight: f32,
) -> Result<BuildStats> {
    let observed = vectors
        .iter()
        .flat_map(|v| v.weights.iter().copied())
        .fold(0f32, f32::max);
    let (max_w, scale) = scale_for(max_weight, observed);
    let vocab = vocab.max(
        vectors
            .iter()
            .flat_map(|v| v.terms.iter())
            .map(|t| *t as usize + 1)
            .max()
            .unwrap_or(0),
    );
    // Pass 1: document frequencies of the postings that survive quantization.
    let mut df = vec![0u64; vocab];
    let mut dropped = 0u64;
    for v in vectors {
        for (t, w) in v.terms.iter().zip(&v.weights) {
            if quantize(*w, scale) > 0 {
                df[*t as usize] += 1;
            } else {
                dropped += 1;
            }
        }
    }
    let mut start = vec![0u64; vocab + 1];
    for t in 0..vocab {
        start[t + 1] = start[t] + df[t];
    }
    let total = start[vocab] as usize;
    // Pass 2: fill (docs are visited in order, so each list is sorted).
    let mut docs = vec![0u32; total];
    let mut imps = vec![0u8; total];
    let mut fill = start.clone();
    for (d, v) in vectors.iter().enumerate() {
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let q = quantize(*w, scale);
            if q > 0 {
                let slot = fill[*t as usize] as usize;
                docs[slot] = d as u32;
                imps[slot] = q;
                fill[*t as usize] += 1;
            }
        }
    }
    let mut w = IndexWriter::create(dir, vectors.len() as u32)?;
    for t in 0..vocab {
        for i in start[t] as usize..start[t + 1] as usize {
            w.push(docs[i], imps[i])?;
        }
        w.end_term()?;
    }
    w.finish(vocab, scale, max_w, dropped)
}
