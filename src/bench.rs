//! `splade bench ...`: measurements printed as one line of `key=value` pairs (plus a readable
//! summary), to be run side by side with the reference scripts in `bench/`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use splade_stages::encode::length_bucketed_batches;
use splade_stages::model::encoder::{Pooling, SpladeEncoder};

/// Settings of `splade bench encode`.
pub struct EncodeBench {
    pub model: PathBuf,
    pub texts: PathBuf,
    pub docs: usize,
    pub max_length: usize,
    pub batch_size: usize,
    pub sort_window: usize,
    pub vocab_chunk: usize,
    pub backend: String,
    pub device: String,
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Encodes `docs` texts (after one warm-up batch) and prints docs/s and peak memory.
pub fn encode(b: &EncodeBench) -> Result<()> {
    let text = std::fs::read_to_string(&b.texts)
        .with_context(|| format!("reading {}", b.texts.display()))?;
    let pool: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, t)| t))
        .collect();
    anyhow::ensure!(
        !pool.is_empty(),
        "{} has no id<TAB>text lines",
        b.texts.display()
    );
    let texts: Vec<&str> = (0..b.docs).map(|i| pool[i % pool.len()]).collect();
    let devices = splade_stages::model::devices_from_backend(
        &serde_json::json!({"kind": b.backend, "devices": [b.device]}),
    )?;
    let mut enc = SpladeEncoder::load(&b.model, b.max_length, Pooling::Max, &devices[0])?;
    enc.vocab_chunk = b.vocab_chunk;
    let ids = enc.tokenizer.encode_batch(&texts)?;
    let tokens: usize = ids.iter().map(Vec::len).sum();
    // Warm-up: one batch (allocators, kernels).
    enc.encode_ids(&ids[..b.batch_size.min(ids.len())])?;
    let t0 = Instant::now();
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let mut nnz = 0usize;
    let mut padded = 0usize;
    for batch in length_bucketed_batches(&lengths, b.batch_size, b.sort_window) {
        let seqs: Vec<Vec<u32>> = batch.iter().map(|i| ids[*i].clone()).collect();
        padded += seqs.len() * seqs.iter().map(Vec::len).max().unwrap_or(0);
        for v in enc.encode_ids(&seqs)? {
            nnz += v.nnz();
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "docs={} secs={secs:.3} docs_per_s={:.1} mean_tokens={:.1} padding={:.1}% mean_nnz={:.1} peak_rss_mib={:.0} threads={}",
        b.docs,
        b.docs as f64 / secs,
        tokens as f64 / b.docs as f64,
        100.0 * (1.0 - tokens as f64 / padded.max(1) as f64),
        nnz as f64 / b.docs as f64,
        peak_rss_mib(),
        rayon::current_num_threads(),
    );
    Ok(())
}
