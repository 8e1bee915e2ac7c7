//! The masked-LM network: embeddings, a post-LN transformer encoder, and the MLM head whose
//! decoder is tied to the word embeddings — plus the SPLADE activation and pooling.

use burn::module::{Module, Param};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderLayer,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor};

use super::config::ModelConfig;
use super::dropout::dropout;

/// Word + position (+ token type) embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// Token id → hidden vector; also the (tied) MLM decoder weight.
    pub word_embeddings: Embedding,
    /// Absolute position → hidden vector.
    pub position_embeddings: Embedding,
    /// Segment id → hidden vector; `None` for DistilBERT.
    pub token_type_embeddings: Option<Embedding>,
    /// Applied to the summed embeddings.
    pub layer_norm: LayerNorm,
}

/// The MLM head: dense → GELU → LayerNorm, then `· word_embeddingsᵀ + bias`.
#[derive(Module, Debug)]
pub struct MlmHead {
    /// Hidden → hidden projection before the GELU.
    pub dense: Linear,
    /// Applied after the GELU.
    pub layer_norm: LayerNorm,
    /// Decoder bias, one per vocabulary term.
    pub bias: Param<Tensor<1>>,
}

/// A BERT/DistilBERT masked-LM encoder.
#[derive(Module, Debug)]
pub struct MlmEncoder {
    /// Word, position (and token type) embeddings.
    pub embeddings: Embeddings,
    /// The post-LN transformer layers.
    pub encoder: TransformerEncoder,
    /// The MLM head: per-token vocabulary logits.
    pub head: MlmHead,
}

crate::param_choice! {
    /// How token activations become one vector (the `pooling` param).
    pub enum PoolingKind {
        /// `max_j mask_j · log(1 + relu(logit_jv))` (SPLADE-max, v2 onwards).
        Max = "max",
        /// `Σ_j mask_j · log(1 + relu(logit_jv))` (SPLADE v1).
        Sum = "sum",
    }
}

impl MlmEncoder {
    /// A network of the given shape with burn's default initialisation (weights are then loaded).
    pub fn init(cfg: &ModelConfig, device: &Device) -> Self {
        Self::init_with(cfg, device, None)
    }

    /// A network initialised as BERT pre-training does (normal(0, 0.02) weights, unit LayerNorms),
    /// for training from scratch, except the decoder bias: it starts at three standard deviations
    /// of the initial logits (`-3 · 0.02 · √hidden`) below zero, so a random model's SPLADE vectors
    /// start sparse instead of covering the whole vocabulary (from a dense start, training spends
    /// its first hundreds of steps only walking the biases down). Seed the device first for a
    /// reproducible draw.
    pub fn init_random(cfg: &ModelConfig, device: &Device) -> Self {
        let mut model = Self::init_with(
            cfg,
            device,
            Some(Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }),
        );
        let bias = -3.0 * 0.02 * (cfg.hidden as f64).sqrt();
        model.head.bias = Param::from_tensor(Tensor::full([cfg.vocab_size], bias, device));
        model
    }

    fn init_with(cfg: &ModelConfig, device: &Device, init: Option<Initializer>) -> Self {
        let embedding = |n: usize| {
            let c = EmbeddingConfig::new(n, cfg.hidden);
            match &init {
                Some(i) => c.with_initializer(i.clone()),
                None => c,
            }
            .init(device)
        };
        let embeddings = Embeddings {
            word_embeddings: embedding(cfg.vocab_size),
            position_embeddings: embedding(cfg.max_positions),
            token_type_embeddings: (cfg.type_vocab_size > 0)
                .then(|| embedding(cfg.type_vocab_size)),
            layer_norm: LayerNormConfig::new(cfg.hidden)
                .with_epsilon(cfg.layer_norm_eps)
                .init(device),
        };
        let mut encoder_cfg =
            TransformerEncoderConfig::new(cfg.hidden, cfg.intermediate, cfg.heads, cfg.layers)
                .with_norm_first(false)
                .with_layer_norm_eps(cfg.layer_norm_eps)
                .with_dropout(cfg.dropout);
        let mut dense_cfg = LinearConfig::new(cfg.hidden, cfg.hidden);
        if let Some(i) = &init {
            encoder_cfg = encoder_cfg.with_initializer(i.clone());
            dense_cfg = dense_cfg.with_initializer(i.clone());
        }
        let head = MlmHead {
            dense: dense_cfg.init(device),
            layer_norm: LayerNormConfig::new(cfg.hidden)
                .with_epsilon(cfg.layer_norm_eps)
                .init(device),
            bias: Param::from_tensor(Tensor::zeros([cfg.vocab_size], device)),
        };
        MlmEncoder {
            embeddings,
            encoder: encoder_cfg.init(device),
            head,
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.head.bias.val().dims()[0]
    }

    /// Contextual token states after the transformer (`[B, L, H]`); `pad` is true at padding.
    pub fn hidden(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device)
            .reshape([1, l])
            .repeat_dim(0, b);
        let mut x = self.embeddings.word_embeddings.forward(ids)
            + self.embeddings.position_embeddings.forward(positions);
        if let Some(tt) = &self.embeddings.token_type_embeddings {
            x = x + tt.forward(Tensor::<2, Int>::zeros([b, l], &device));
        }
        let mut x = dropout(self.embeddings.layer_norm.forward(x));
        for layer in &self.encoder.layers {
            x = bert_layer(layer, x, pad.clone());
        }
        x
    }

    /// SPLADE representations `[B, V]`. The vocabulary projection runs in chunks of `chunk`
    /// terms with the pooling applied per chunk, so the `B × L × V` logits never exist at once.
    pub fn splade(
        &self,
        ids: Tensor<2, Int>,
        mask: Tensor<2>,
        pooling: PoolingKind,
        chunk: usize,
    ) -> Tensor<2> {
        let [b, l] = ids.dims();
        let pad = mask.clone().equal_elem(0.0);
        let h = self.hidden(ids, pad);
        let h = self.head.dense.forward(h);
        let h = self.head.layer_norm.forward(gelu(h));
        let hd = h.dims()[2];
        let rows = h.reshape([b * l, hd]);
        let words = self.embeddings.word_embeddings.weight.val(); // [V, H]
        let bias = self.head.bias.val();
        let v = words.dims()[0];
        let chunk = chunk.clamp(1, v);
        // 0 on real tokens, a large negative on padding, broadcast over the vocabulary.
        let mask3 = mask.reshape([b, l, 1]);
        let pad_penalty = (mask3.clone() - 1.0) * 1e9;
        let mut parts = Vec::with_capacity(v.div_ceil(chunk));
        let mut start = 0;
        while start < v {
            let n = chunk.min(v - start);
            let w = words.clone().narrow(0, start, n).transpose(); // [H, n]
            let logits = rows.clone().matmul(w) + bias.clone().narrow(0, start, n).reshape([1, n]);
            let logits = logits.reshape([b, l, n]);
            let pooled: Tensor<2> = match pooling {
                // log1p∘relu is monotone: pool the logits first, activate B×n values only.
                PoolingKind::Max => relu((logits + pad_penalty.clone()).max_dim(1))
                    .log1p()
                    .reshape([b, n]),
                PoolingKind::Sum => (relu(logits).log1p() * mask3.clone())
                    .sum_dim(1)
                    .reshape([b, n]),
            };
            parts.push(pooled);
            start += n;
        }
        Tensor::cat(parts, 1)
    }
}

/// One post-LN BERT layer on burn's layer parameters, with BERT's dropout sites (attention
/// probabilities, attention output, feed-forward output) drawn by [`dropout`]:
/// `x₁ = LN(x + drop(attn(x)))`, `out = LN(x₁ + drop(W₂ gelu(W₁ x₁)))`.
fn bert_layer(layer: &TransformerEncoderLayer, x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
    let attended = dropout(self_attention(layer, x.clone(), pad));
    let x = layer.norm_1.forward(x + attended);
    let ff = layer.pwff.linear_inner.forward(x.clone());
    let ff = layer
        .pwff
        .linear_outer
        .forward(layer.pwff.activation.forward(ff));
    layer.norm_2.forward(x + dropout(ff))
}

/// Multi-head self-attention with padding masked out, as burn's `MultiHeadAttention` computes it
/// (scores `q·kᵀ/√d_k`, padding set to its `min_float`), plus dropout on the probabilities.
fn self_attention(
    layer: &TransformerEncoderLayer,
    x: Tensor<3>,
    pad: Tensor<2, Bool>,
) -> Tensor<3> {
    let mha = &layer.mha;
    let [b, l, d] = x.dims();
    let heads = |t: Tensor<3>| t.reshape([b, l, mha.n_heads, mha.d_k]).swap_dims(1, 2);
    let q = heads(mha.query.forward(x.clone()));
    let k = heads(mha.key.forward(x.clone()));
    let v = heads(mha.value.forward(x));
    let scores = q
        .matmul(k.transpose())
        .div_scalar((mha.d_k as f32).sqrt())
        .mask_fill(pad.reshape([b, 1, 1, l]), mha.min_float);
    let probs = dropout(softmax(scores, 3));
    let context = probs.matmul(v).swap_dims(1, 2).reshape([b, l, d]);
    mha.output.forward(context)
}
