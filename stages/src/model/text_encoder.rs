//! Texts → sparse vectors the way the `encode` stage computes them, shared by `encode`,
//! `retrieve`'s text queries and training validation.

use std::collections::HashSet;
use std::path::Path;

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde_json::Value;

use super::encoder::{bag_of_words, prune, Pooling, Sparsify, SpladeEncoder};
use super::workers::DeviceWorkers;
use super::{devices_from_backend, Precision, TextTokenizer, BERT_VOCAB_SIZE};
use crate::domain::SparseVector;
use crate::encode::{length_bucketed_batches, EncodeMode};
use crate::error::{Result, StageError};

/// How [`TextEncoder`] batches and encodes texts (the encode stage's params).
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Tokens per text, special tokens included (longer texts are truncated).
    pub max_length: usize,
    /// How token activations are pooled into one vector.
    pub pooling: Pooling,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Texts are sorted by length within windows of this many before batching (0 = off).
    pub sort_window: usize,
    /// Vocabulary terms projected at a time (bounds activation memory).
    pub vocab_chunk: usize,
    /// Compute precision of the model (the vectors stay f32).
    pub precision: Precision,
    /// Which terms of each vector are kept (selected on the device).
    pub sparsify: Sparsify,
}

/// Texts → sparse vectors exactly as the encode stage computes them: a SPLADE model with
/// length-bucketed batches, or (`mode = "bag_of_words"`) the binary bag of the model tokenizer's
/// tokens. `retrieve` uses it to encode text queries. With several devices, one worker per
/// device takes the next batch as it frees up; the vectors do not depend on the device count.
pub struct TextEncoder {
    /// One replica per device (none for `bag_of_words`).
    encoders: Vec<SpladeEncoder>,
    workers: Option<DeviceWorkers>,
    tokenizer: Option<TextTokenizer>,
    specials: HashSet<u32>,
    opts: EncodeOptions,
}

impl TextEncoder {
    /// Loads the model (or only its tokenizer, for `bag_of_words`) from `model_dir` onto every
    /// device of the pipeline's backend, sharing `threads` CPU threads among their workers.
    pub fn load(
        model_dir: &Path,
        mode: EncodeMode,
        opts: &EncodeOptions,
        backend: &Value,
        threads: usize,
    ) -> Result<Self> {
        let (encoders, workers, tokenizer) = if mode == EncodeMode::Splade {
            let devices = devices_from_backend(backend)?;
            let mut enc =
                SpladeEncoder::load(model_dir, opts.max_length, opts.pooling, &devices[0])?;
            enc.vocab_chunk = opts.vocab_chunk;
            enc.sparsify = opts.sparsify;
            enc.set_precision(opts.precision);
            let mut encoders: Vec<SpladeEncoder> =
                devices[1..].iter().map(|d| enc.replica(d)).collect();
            encoders.insert(0, enc);
            let workers = DeviceWorkers::new(devices, threads)?;
            (encoders, Some(workers), None)
        } else {
            let tokenizer = TextTokenizer::load(model_dir, opts.max_length)?;
            (Vec::new(), None, Some(tokenizer))
        };
        let specials = match (encoders.first(), &tokenizer) {
            (Some(e), _) => e.tokenizer.special_ids().clone(),
            (_, Some(t)) => t.special_ids().clone(),
            _ => HashSet::new(),
        };
        Ok(TextEncoder {
            encoders,
            workers,
            tokenizer,
            specials,
            opts: *opts,
        })
    }

    /// Vocabulary size of the model ([`BERT_VOCAB_SIZE`] for a bare tokenizer).
    pub fn vocab(&self) -> usize {
        self.encoders
            .first()
            .map(|e| e.config.vocab_size)
            .unwrap_or(BERT_VOCAB_SIZE)
    }

    /// Token ids of `texts` (special tokens included, truncated to `max_length`).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        match (self.encoders.first(), &self.tokenizer) {
            (Some(e), _) => e.tokenizer.encode_batch(texts),
            (_, Some(t)) => t.encode_batch(texts),
            _ => Err(StageError::Other("no tokenizer".into())),
        }
    }

    /// The vectors of `texts`, in input order; `bar` advances by the texts done.
    pub fn encode(&self, texts: &[&str], bar: &ProgressBar) -> Result<Vec<SparseVector>> {
        let token_ids: Vec<Vec<u32>> = texts
            .par_chunks(256)
            .map(|c| self.tokenize(c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        self.encode_tokens(&token_ids, bar)
    }

    /// The vectors of tokenized texts (from this encoder's tokenizer), in input order.
    pub fn encode_tokens(
        &self,
        token_ids: &[Vec<u32>],
        bar: &ProgressBar,
    ) -> Result<Vec<SparseVector>> {
        let mut vectors = vec![SparseVector::default(); token_ids.len()];
        match &self.workers {
            Some(workers) => {
                let lengths: Vec<usize> = token_ids.iter().map(Vec::len).collect();
                let batches =
                    length_bucketed_batches(&lengths, self.opts.batch_size, self.opts.sort_window);
                let encoded = workers.pull("encode", batches.len(), |device, b| {
                    let seqs: Vec<Vec<u32>> =
                        batches[b].iter().map(|i| token_ids[*i].clone()).collect();
                    let out = self.encoders[device].encode_ids(&seqs)?;
                    bar.inc(seqs.len() as u64);
                    Ok(out)
                })?;
                for (batch, out) in batches.iter().zip(encoded) {
                    for (i, v) in batch.iter().zip(out) {
                        vectors[*i] = v;
                    }
                }
            }
            None => {
                let keep = self.opts.sparsify;
                for (i, ids) in token_ids.iter().enumerate() {
                    vectors[i] = prune(
                        &bag_of_words(ids, &self.specials),
                        keep.top_k,
                        keep.min_weight,
                    );
                }
                bar.inc(token_ids.len() as u64);
            }
        }
        Ok(vectors)
    }
}
