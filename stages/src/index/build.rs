//! Building an index from sparse vectors: quantize weights to u8 impacts, invert (CSR, two
//! passes), and write block-compressed posting lists.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::format::{encode_block, BlockMeta, TermMeta, BLOCK};
use crate::error::{Result, StageError};
use crate::parquet_io::SparseVector;

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildStats {
    pub n_docs: u32,
    pub n_terms: u32,
    pub n_postings: u64,
    pub postings_bytes: u64,
    pub scale: f32,
    pub dropped_postings: u64,
}

/// The u8 impact of weight `w` under `scale` (0 means the posting is dropped).
pub fn quantize(w: f32, scale: f32) -> u8 {
    (w * scale).round().clamp(0.0, 255.0) as u8
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |e| StageError::io(path, e)
}

/// Writes `postings.bin`, `blocks.bin`, `terms.bin` and `meta.json` into `dir`. Impacts are
/// `round(w · 255 / max_weight)`; `max_weight` ≤ 0 means the collection's largest weight.
pub fn build(
    dir: &Path,
    vectors: &[SparseVector],
    vocab: usize,
    max_weight: f32,
) -> Result<BuildStats> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let observed = vectors
        .iter()
        .flat_map(|v| v.weights.iter().copied())
        .fold(0f32, f32::max);
    let max_w = if max_weight > 0.0 {
        max_weight
    } else {
        observed.max(f32::MIN_POSITIVE)
    };
    let scale = 255.0 / max_w;
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
    let postings_path = dir.join("postings.bin");
    let mut postings = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&postings_path).map_err(io(&postings_path))?,
    );
    let mut blocks = Vec::new();
    let mut terms = Vec::with_capacity(vocab * TermMeta::BYTES);
    let mut offset = 0u64;
    let mut n_blocks_total = 0u64;
    let mut payload = Vec::with_capacity(BLOCK * 8);
    let mut n_terms = 0u32;
    for t in 0..vocab {
        let (lo, hi) = (start[t] as usize, start[t + 1] as usize);
        let mut meta = TermMeta {
            df: (hi - lo) as u32,
            first_block: n_blocks_total,
            ..TermMeta::default()
        };
        if hi > lo {
            n_terms += 1;
        }
        let mut prev_last = 0u32;
        for b in (lo..hi).step_by(BLOCK) {
            let e = (b + BLOCK).min(hi);
            payload.clear();
            let bm: BlockMeta =
                encode_block(&docs[b..e], &imps[b..e], prev_last, offset, &mut payload);
            postings.write_all(&payload).map_err(io(&postings_path))?;
            offset += payload.len() as u64;
            prev_last = bm.last_doc;
            meta.max_impact = meta.max_impact.max(bm.max_impact);
            meta.n_blocks += 1;
            n_blocks_total += 1;
            bm.write(&mut blocks);
        }
        meta.write(&mut terms);
    }
    postings.flush().map_err(io(&postings_path))?;
    drop(postings);
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| StageError::io(&p, e))
    };
    write("blocks.bin", &blocks)?;
    write("terms.bin", &terms)?;
    let stats = BuildStats {
        n_docs: vectors.len() as u32,
        n_terms,
        n_postings: total as u64,
        postings_bytes: offset,
        scale,
        dropped_postings: dropped,
    };
    let meta = json!({
        "format": 1,
        "n_docs": stats.n_docs,
        "vocab": vocab,
        "scale": scale,
        "max_weight": max_w,
        "n_postings": stats.n_postings,
        "block": BLOCK,
    });
    write(
        "meta.json",
        serde_json::to_string_pretty(&meta)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(stats)
}
