//! What is trained: one shared SPLADE encoder, or a document encoder with its own query encoder
//! (efficient SPLADE V/VI), or a document encoder with bag-of-words queries (SPLADE-doc).

use std::collections::HashSet;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::model::encoder::batch_tensors;
use crate::model::network::{MlmEncoder, PoolingKind};

/// The trainable encoders: `query` is present only for separate query/document encoders.
#[derive(Module, Debug)]
pub struct EncoderPair {
    pub doc: MlmEncoder,
    pub query: Option<MlmEncoder>,
}

/// How queries are represented.
#[derive(Debug, Clone)]
pub enum QueryEncoding {
    /// By the document encoder (one shared model).
    Shared,
    /// By the pair's own query encoder.
    Separate,
    /// As the binary bag of their tokens (SPLADE-doc): no query encoder, no query gradient.
    BagOfWords {
        specials: Arc<HashSet<u32>>,
        vocab: usize,
    },
}

/// Compute precision of the encoders' forward and backward passes. Master weights, gradients,
/// optimizer state and the losses stay f32 either way (burn has no autocast: with `Bf16` every
/// step runs on a bf16 cast of the f32 parameters, and the cast's backward returns f32 gradients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

/// Casts every float parameter, keeping its id and its place in the autodiff graph.
struct CastParams(FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// How representations are computed: pooling, vocabulary chunking, padding id, query encoding,
/// precision.
#[derive(Debug, Clone)]
pub struct Encoding {
    pub pooling: PoolingKind,
    pub vocab_chunk: usize,
    pub pad: u32,
    pub queries: QueryEncoding,
    pub precision: Precision,
}

impl Encoding {
    fn splade(&self, model: &MlmEncoder, seqs: &[Vec<u32>], device: &Device) -> Tensor<2> {
        let (ids, mask): (Tensor<2, Int>, Tensor<2>) = batch_tensors(seqs, self.pad, device);
        match self.precision {
            Precision::F32 => model.splade(ids, mask, self.pooling, self.vocab_chunk),
            Precision::Bf16 => {
                let half = model.clone().map(&mut CastParams(FloatDType::BF16));
                half.splade(
                    ids,
                    mask.cast(FloatDType::BF16),
                    self.pooling,
                    self.vocab_chunk,
                )
                .cast(FloatDType::F32)
            }
        }
    }

    /// Document representations `[n, V]`.
    pub fn docs(&self, pair: &EncoderPair, seqs: &[Vec<u32>], device: &Device) -> Tensor<2> {
        self.splade(&pair.doc, seqs, device)
    }

    /// Query representations `[n, V]`.
    pub fn queries(&self, pair: &EncoderPair, seqs: &[Vec<u32>], device: &Device) -> Tensor<2> {
        match &self.queries {
            QueryEncoding::Shared => self.splade(&pair.doc, seqs, device),
            QueryEncoding::Separate => {
                self.splade(pair.query.as_ref().unwrap_or(&pair.doc), seqs, device)
            }
            QueryEncoding::BagOfWords { specials, vocab } => {
                let mut dense = vec![0f32; seqs.len() * vocab];
                for (i, s) in seqs.iter().enumerate() {
                    for t in s.iter().filter(|t| !specials.contains(t)) {
                        if (*t as usize) < *vocab {
                            dense[i * vocab + *t as usize] = 1.0;
                        }
                    }
                }
                Tensor::from_data(TensorData::new(dense, [seqs.len(), *vocab]), device)
            }
        }
    }
}
