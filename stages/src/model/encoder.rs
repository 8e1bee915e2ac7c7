//! The SPLADE encoder: tokenizer + masked-LM network + activation/pooling → sparse vectors.

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::ModelConfig;
use super::loader::load_mlm;
use super::network::{MlmEncoder, PoolingKind};
use super::precision::{cast_for, splade_in, Precision};
use super::tokenize::TextTokenizer;
use crate::error::{Result, StageError};
use crate::parquet_io::SparseVector;

pub use super::network::PoolingKind as Pooling;

/// A loaded SPLADE encoder on one device.
pub struct SpladeEncoder {
    /// The masked-LM network.
    pub model: MlmEncoder,
    /// The checkpoint's tokenizer, truncating to the `max_len` given at load.
    pub tokenizer: TextTokenizer,
    /// The checkpoint's `config.json`.
    pub config: ModelConfig,
    /// The device the model lives and computes on.
    pub device: Device,
    /// How token activations are pooled into one vector.
    pub pooling: PoolingKind,
    /// Vocabulary terms projected at a time (bounds the `B × L × chunk` activation memory).
    pub vocab_chunk: usize,
    precision: Precision,
}

impl SpladeEncoder {
    /// Loads `dir` (config.json, weights, tokenizer.json) with sequences truncated to `max_len`.
    pub fn load(dir: &Path, max_len: usize, pooling: PoolingKind, device: &Device) -> Result<Self> {
        let (config, model) = load_mlm(dir, device)?;
        if max_len > config.max_positions {
            return Err(StageError::Param {
                key: "max_length".into(),
                message: format!(
                    "{max_len} exceeds the model's max_position_embeddings ({})",
                    config.max_positions
                ),
            });
        }
        let tokenizer = TextTokenizer::load(dir, max_len)?;
        Ok(SpladeEncoder {
            model,
            tokenizer,
            config,
            device: device.clone(),
            pooling,
            vocab_chunk: 8192,
            precision: Precision::F32,
        })
    }

    /// Switches the compute precision (casts the weights once; vectors stay f32).
    pub fn set_precision(&mut self, precision: Precision) {
        if precision != self.precision {
            self.model = cast_for(self.model.clone(), precision);
            self.precision = precision;
        }
    }

    /// SPLADE vectors of token-id sequences (one forward pass; pads to the longest).
    pub fn encode_ids(&self, seqs: &[Vec<u32>]) -> Result<Vec<SparseVector>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = batch_tensors(seqs, self.config.pad_token_id, &self.device);
        let rep = splade_in(
            &self.model,
            self.precision,
            ids,
            mask,
            self.pooling,
            self.vocab_chunk,
        );
        let [b, v] = rep.dims();
        let values: Vec<f32> = rep
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| StageError::Other(format!("reading encoder output: {e:?}")))?;
        Ok((0..b)
            .map(|i| to_sparse(&values[i * v..(i + 1) * v]))
            .collect())
    }

    /// SPLADE vectors of texts.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Vec<SparseVector>> {
        let ids = self.tokenizer.encode_batch(texts)?;
        self.encode_ids(&ids)
    }
}

/// Padded `[B, L]` id and mask tensors (mask 1.0 on tokens, 0.0 on padding).
pub fn batch_tensors(seqs: &[Vec<u32>], pad: u32, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let b = seqs.len();
    let l = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut ids = vec![pad as i64; b * l];
    let mut mask = vec![0f32; b * l];
    for (i, s) in seqs.iter().enumerate() {
        for (j, t) in s.iter().enumerate() {
            ids[i * l + j] = *t as i64;
            mask[i * l + j] = 1.0;
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [b, l]), device),
        Tensor::from_data(TensorData::new(mask, [b, l]), device),
    )
}

/// The non-zero entries of a dense row, terms ascending.
pub fn to_sparse(row: &[f32]) -> SparseVector {
    let mut v = SparseVector::default();
    for (t, w) in row.iter().enumerate() {
        if *w > 0.0 {
            v.terms.push(t as u32);
            v.weights.push(*w);
        }
    }
    v
}

/// `splade_doc` queries: the binary bag of the query's tokens, special tokens excluded.
pub fn bag_of_words(ids: &[u32], specials: &HashSet<u32>) -> SparseVector {
    let mut terms: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|t| !specials.contains(t))
        .collect();
    terms.sort_unstable();
    terms.dedup();
    let weights = vec![1.0; terms.len()];
    SparseVector { terms, weights }
}

/// Keeps the `top_k` strongest terms (0 = all) with weight ≥ `min_weight`, terms ascending.
pub fn prune(v: &SparseVector, top_k: usize, min_weight: f32) -> SparseVector {
    let mut pairs: Vec<(u32, f32)> = v
        .terms
        .iter()
        .zip(&v.weights)
        .filter(|(_, w)| **w >= min_weight)
        .map(|(t, w)| (*t, *w))
        .collect();
    if top_k > 0 && pairs.len() > top_k {
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        pairs.truncate(top_k);
        pairs.sort_by_key(|p| p.0);
    }
    SparseVector {
        terms: pairs.iter().map(|p| p.0).collect(),
        weights: pairs.iter().map(|p| p.1).collect(),
    }
}
