//! What is trained: one shared SPLADE encoder, or a document encoder with its own query encoder
//! (efficient SPLADE V/VI), or a document encoder with bag-of-words queries (SPLADE-doc).

use std::collections::HashSet;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::network::{MlmEncoder, PoolingKind};
/// Compute precision of training: with `Bf16` every micro-step runs the encoders on a bf16 cast
/// of the f32 parameters; master weights, gradients, optimizer state and losses stay f32.
pub use crate::model::precision::Precision;
use crate::model::precision::{cast_for, splade_in};

/// The trainable encoders: `query` is present only for separate query/document encoders.
#[derive(Module, Debug)]
pub struct EncoderPair {
    /// The document encoder (also encodes queries unless `query` is set).
    pub doc: MlmEncoder,
    /// The separate query encoder ([`QueryEncoding::Separate`]).
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
        /// Special token ids left out of the bag.
        specials: Arc<HashSet<u32>>,
        /// Vocabulary size: width of the dense bag vectors.
        vocab: usize,
    },
}

/// How representations are computed: pooling, vocabulary chunking, padding id, query encoding,
/// precision.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// How token activations are pooled into one vector.
    pub pooling: PoolingKind,
    /// Vocabulary terms projected at a time (bounds activation memory).
    pub vocab_chunk: usize,
    /// Padding token id of the batches.
    pub pad: u32,
    /// How queries are represented.
    pub queries: QueryEncoding,
    /// Compute precision of the encoders.
    pub precision: Precision,
    /// Dropout probability of the encoders while training (see [`crate::model::dropout`]).
    pub dropout: f64,
}

impl Encoding {
    /// `pair` as this encoding computes with it: its parameters cast to the precision once (for
    /// f32, the pair itself). [`Encoding::docs`] and [`Encoding::queries`] take such a view.
    pub fn view(&self, pair: &EncoderPair) -> EncoderPair {
        EncoderPair {
            doc: cast_for(pair.doc.clone(), self.precision),
            query: pair
                .query
                .as_ref()
                .map(|q| cast_for(q.clone(), self.precision)),
        }
    }

    fn splade(
        &self,
        model: &MlmEncoder,
        seqs: &[Vec<u32>],
        len: usize,
        device: &Device,
    ) -> Tensor<2> {
        let ids = padded_ids(seqs, self.pad, len, device);
        // The mask is computed where the ids are: one upload per batch, not two.
        let mask = ids.clone().not_equal_elem(self.pad as i64).float();
        splade_in(
            model,
            self.precision,
            ids,
            mask,
            self.pooling,
            self.vocab_chunk,
        )
    }

    /// Document representations `[n, V]` from a [`Encoding::view`], padded to `len` tokens
    /// (at least the longest sequence).
    pub fn docs(
        &self,
        pair: &EncoderPair,
        seqs: &[Vec<u32>],
        len: usize,
        device: &Device,
    ) -> Tensor<2> {
        self.splade(&pair.doc, seqs, len, device)
    }

    /// Query representations `[n, V]` from a [`Encoding::view`], padded to `len` tokens.
    pub fn queries(
        &self,
        pair: &EncoderPair,
        seqs: &[Vec<u32>],
        len: usize,
        device: &Device,
    ) -> Tensor<2> {
        match &self.queries {
            QueryEncoding::Shared => self.splade(&pair.doc, seqs, len, device),
            QueryEncoding::Separate => {
                self.splade(pair.query.as_ref().unwrap_or(&pair.doc), seqs, len, device)
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

/// `[n, max(len, longest)]` token ids padded with `pad`, uploaded at once.
fn padded_ids(seqs: &[Vec<u32>], pad: u32, len: usize, device: &Device) -> Tensor<2, Int> {
    let l = seqs.iter().map(Vec::len).max().unwrap_or(1).max(len).max(1);
    let mut ids = vec![pad as i64; seqs.len() * l];
    for (i, s) in seqs.iter().enumerate() {
        for (j, t) in s.iter().enumerate() {
            ids[i * l + j] = *t as i64;
        }
    }
    Tensor::from_data(TensorData::new(ids, [seqs.len(), l]), device)
}
