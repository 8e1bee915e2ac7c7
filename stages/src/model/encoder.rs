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

/// Which terms of a vector are kept: those above zero and at least `min_weight`, then the `top_k`
/// strongest (0 = all; ties at the cut broken towards the lower term id, as [`prune`] does).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sparsify {
    /// Keep this many strongest terms (0 = all).
    pub top_k: usize,
    /// Drop terms below this weight.
    pub min_weight: f32,
}

/// A loaded SPLADE encoder on one device.
#[derive(Clone)]
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
    /// Which terms are kept (applied on the device; only those are downloaded).
    pub sparsify: Sparsify,
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
            sparsify: Sparsify::default(),
            precision: Precision::F32,
        })
    }

    /// The same encoder with its weights copied to `device` (a worker's replica).
    pub fn replica(&self, device: &Device) -> SpladeEncoder {
        let mut copy = self.clone();
        copy.model = burn::module::Module::fork(copy.model, device);
        copy.device = device.clone();
        copy
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
        sparse_rows(rep, self.sparsify)
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

/// The kept entries of each row of `rep` `[B, V]`, selected on its device: only term ids and
/// weights (and, with `top_k`, `B × (k+1)` candidates) are downloaded, never the dense matrix.
/// Equal, bit for bit, to [`to_sparse`] then [`prune`] on the downloaded rows.
pub fn sparse_rows(rep: Tensor<2>, keep: Sparsify) -> Result<Vec<SparseVector>> {
    let [b, v] = rep.dims();
    if keep.top_k > 0 && keep.top_k < v {
        return top_k_rows(rep, keep);
    }
    let kept = rep.clone().greater_elem(0.0);
    let kept = if keep.min_weight > 0.0 {
        kept.bool_and(rep.clone().greater_equal_elem(keep.min_weight))
    } else {
        kept
    };
    let counts = ints(kept.clone().int().sum_dim(1))?;
    if counts.iter().all(|c| *c == 0) {
        // Nothing kept (e.g. a `min_weight` above every weight): `nonzero` has no rows to give.
        return Ok(vec![SparseVector::default(); b]);
    }
    let coordinates = kept.nonzero();
    let (rows, cols) = match coordinates.as_slice() {
        [rows, cols] => (rows.clone(), cols.clone()),
        _ => {
            return Err(StageError::Other(
                "nonzero of a matrix gave no coordinates".into(),
            ))
        }
    };
    let flat = rows.mul_scalar(v as i64).add(cols.clone());
    let weights = floats(rep.reshape([b * v]).select(0, flat))?;
    let terms = ints(cols)?;
    let mut out = Vec::with_capacity(b);
    let mut at = 0usize;
    for count in counts {
        let n = count.max(0) as usize;
        out.push(SparseVector {
            terms: terms[at..at + n].iter().map(|t| *t as u32).collect(),
            weights: weights[at..at + n].to_vec(),
        });
        at += n;
    }
    Ok(out)
}

/// [`sparse_rows`] with `top_k`: the `k + 1` strongest of each row come down; a row whose
/// `k`-th and `k+1`-th weights tie (the device's order between equals is its own) is redone
/// exactly from its full kept entries.
fn top_k_rows(rep: Tensor<2>, keep: Sparsify) -> Result<Vec<SparseVector>> {
    let [b, v] = rep.dims();
    let k = keep.top_k;
    let take = (k + 1).min(v);
    let (values, indices) = rep.clone().topk_with_indices(take, 1);
    let values = floats(values)?;
    let indices = ints(indices)?;
    let mut out = Vec::with_capacity(b);
    for row in 0..b {
        let vals = &values[row * take..(row + 1) * take];
        let idx = &indices[row * take..(row + 1) * take];
        let passes = |w: f32| w > 0.0 && w >= keep.min_weight;
        let tie = take > k && passes(vals[k]) && vals[k] == vals[k - 1];
        if tie {
            let full = sparse_rows(rep.clone().narrow(0, row, 1), Sparsify { top_k: 0, ..keep })?;
            out.push(prune(&full[0], k, keep.min_weight));
            continue;
        }
        let mut pairs: Vec<(u32, f32)> = idx[..k.min(take)]
            .iter()
            .zip(&vals[..k.min(take)])
            .filter(|(_, w)| passes(**w))
            .map(|(t, w)| (*t as u32, *w))
            .collect();
        pairs.sort_by_key(|p| p.0);
        out.push(SparseVector {
            terms: pairs.iter().map(|p| p.0).collect(),
            weights: pairs.iter().map(|p| p.1).collect(),
        });
    }
    Ok(out)
}

fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| StageError::Other(format!("reading encoder output: {e:?}")))
}

fn ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    t.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| StageError::Other(format!("reading encoder output: {e:?}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_on_the_device_equals_pruning_the_full_vectors() {
        // Rows with ties at the top-k cut, zeros, negative values and values at the threshold.
        let rows: Vec<Vec<f32>> = vec![
            vec![0.5, 0.0, 0.5, 0.5, 0.2, -1.0, 0.1, 0.5],
            vec![0.0; 8],
            vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            vec![0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
            vec![0.05, 0.0, 0.0, 0.049, 0.051, 0.0, 0.0, 2.0],
        ];
        let device = Device::flex();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        for top_k in [0usize, 1, 2, 3, 4, 7, 8, 20] {
            for min_weight in [0.0f32, 0.05, 0.3, f32::INFINITY] {
                let rep =
                    Tensor::<2>::from_data(TensorData::new(flat.clone(), [rows.len(), 8]), &device);
                let got = sparse_rows(rep, Sparsify { top_k, min_weight }).unwrap();
                for (r, v) in rows.iter().zip(&got) {
                    let want = prune(&to_sparse(r), top_k, min_weight);
                    assert_eq!(
                        v.terms, want.terms,
                        "top_k {top_k} min {min_weight} row {r:?}"
                    );
                    assert_eq!(v.weights, want.weights);
                }
            }
        }
    }
}
