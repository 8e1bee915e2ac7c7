//! Texts → sparse vectors the way the `encode` stage computes them, shared by `encode`,
//! `retrieve`'s text queries and training validation.

use std::collections::HashSet;
use std::path::Path;

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde_json::Value;

use super::encoder::{bag_of_words, Pooling, SpladeEncoder};
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
}

/// Texts → sparse vectors exactly as the encode stage computes them: a SPLADE model with
/// length-bucketed batches, or (`mode = "bag_of_words"`) the binary bag of the model tokenizer's
/// tokens. `retrieve` uses it to encode text queries.
pub struct TextEncoder {
    encoder: Option<SpladeEncoder>,
    tokenizer: Option<TextTokenizer>,
    specials: HashSet<u32>,
    opts: EncodeOptions,
}

impl TextEncoder {
    /// Loads the model (or only its tokenizer, for `bag_of_words`) from `model_dir` on the
    /// pipeline's first backend device.
    pub fn load(
        model_dir: &Path,
        mode: EncodeMode,
        opts: &EncodeOptions,
        backend: &Value,
    ) -> Result<Self> {
        let (encoder, tokenizer) = if mode == EncodeMode::Splade {
            let devices = devices_from_backend(backend)?;
            let mut enc =
                SpladeEncoder::load(model_dir, opts.max_length, opts.pooling, &devices[0])?;
            enc.vocab_chunk = opts.vocab_chunk;
            enc.set_precision(opts.precision);
            (Some(enc), None)
        } else {
            (None, Some(TextTokenizer::load(model_dir, opts.max_length)?))
        };
        let specials = match (&encoder, &tokenizer) {
            (Some(e), _) => e.tokenizer.special_ids().clone(),
            (_, Some(t)) => t.special_ids().clone(),
            _ => HashSet::new(),
        };
        Ok(TextEncoder {
            encoder,
            tokenizer,
            specials,
            opts: *opts,
        })
    }

    /// Vocabulary size of the model ([`BERT_VOCAB_SIZE`] for a bare tokenizer).
    pub fn vocab(&self) -> usize {
        self.encoder
            .as_ref()
            .map(|e| e.config.vocab_size)
            .unwrap_or(BERT_VOCAB_SIZE)
    }

    fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        match (&self.encoder, &self.tokenizer) {
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
        let mut vectors = vec![SparseVector::default(); texts.len()];
        match &self.encoder {
            Some(enc) => {
                let lengths: Vec<usize> = token_ids.iter().map(Vec::len).collect();
                for batch in
                    length_bucketed_batches(&lengths, self.opts.batch_size, self.opts.sort_window)
                {
                    let seqs: Vec<Vec<u32>> = batch.iter().map(|i| token_ids[*i].clone()).collect();
                    let out = enc.encode_ids(&seqs)?;
                    for (i, v) in batch.iter().zip(out) {
                        vectors[*i] = v;
                    }
                    bar.inc(batch.len() as u64);
                }
            }
            None => {
                for (i, ids) in token_ids.iter().enumerate() {
                    vectors[i] = bag_of_words(ids, &self.specials);
                }
                bar.inc(texts.len() as u64);
            }
        }
        Ok(vectors)
    }
}
