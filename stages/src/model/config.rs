//! `config.json` of a Hugging Face BERT or DistilBERT masked-LM checkpoint.

use std::path::Path;

use serde_json::Value;

use crate::error::{Result, StageError};

/// The architectures we load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT (`model_type = "bert"`), with token type embeddings.
    Bert,
    /// DistilBERT (`model_type = "distilbert"`): no token types.
    DistilBert,
}

/// The shape of a masked-LM encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which architecture (`model_type`).
    pub arch: Arch,
    /// Vocabulary size: word embedding rows and MLM logits per token.
    pub vocab_size: usize,
    /// Hidden size (`hidden_size` / `dim`).
    pub hidden: usize,
    /// Transformer layers (`num_hidden_layers` / `n_layers`).
    pub layers: usize,
    /// Attention heads per layer (`num_attention_heads` / `n_heads`).
    pub heads: usize,
    /// Feed-forward inner size (`intermediate_size` / `hidden_dim`).
    pub intermediate: usize,
    /// Longest sequence in tokens the position embeddings cover (`max_position_embeddings`).
    pub max_positions: usize,
    /// 0 for DistilBERT (no token types).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (`layer_norm_eps`; 1e-12 for DistilBERT).
    pub layer_norm_eps: f64,
    /// Token id used for padding (`pad_token_id`, default 0).
    pub pad_token_id: u32,
    /// Dropout probability in training (`hidden_dropout_prob` / `dropout`; unused when encoding).
    pub dropout: f64,
}

impl ModelConfig {
    /// Reads `dir/config.json`; an unsupported model type or activation is an error naming the key.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| StageError::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| StageError::malformed(&path, e.line(), e.to_string()))?;
        let bad = |m: String| StageError::malformed(&path, 0, m);
        let get = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("missing or non-integer `{k}`")))
        };
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let pad = v.get("pad_token_id").and_then(Value::as_u64).unwrap_or(0) as u32;
        match model_type {
            "bert" => {
                let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu");
                if act != "gelu" {
                    return Err(bad(format!(
                        "`hidden_act` = \"{act}\" is not supported (only exact \"gelu\")"
                    )));
                }
                if let Some(p) = v.get("position_embedding_type").and_then(Value::as_str) {
                    if p != "absolute" {
                        return Err(bad(format!("`position_embedding_type` = \"{p}\" is not supported")));
                    }
                }
                Ok(ModelConfig {
                    arch: Arch::Bert,
                    vocab_size: get("vocab_size")?,
                    hidden: get("hidden_size")?,
                    layers: get("num_hidden_layers")?,
                    heads: get("num_attention_heads")?,
                    intermediate: get("intermediate_size")?,
                    max_positions: get("max_position_embeddings")?,
                    type_vocab_size: get("type_vocab_size").unwrap_or(2),
                    layer_norm_eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12),
                    pad_token_id: pad,
                    dropout: v.get("hidden_dropout_prob").and_then(Value::as_f64).unwrap_or(0.1),
                })
            }
            "distilbert" => {
                let act = v.get("activation").and_then(Value::as_str).unwrap_or("gelu");
                if act != "gelu" {
                    return Err(bad(format!("`activation` = \"{act}\" is not supported (only \"gelu\")")));
                }
                Ok(ModelConfig {
                    arch: Arch::DistilBert,
                    vocab_size: get("vocab_size")?,
                    hidden: get("dim")?,
                    layers: get("n_layers")?,
                    heads: get("n_heads")?,
                    intermediate: get("hidden_dim")?,
                    max_positions: get("max_position_embeddings")?,
                    type_vocab_size: 0,
                    layer_norm_eps: 1e-12,
                    pad_token_id: pad,
                    dropout: v.get("dropout").and_then(Value::as_f64).unwrap_or(0.1),
                })
            }
            other => Err(bad(format!(
                "`model_type` = \"{other}\": only BERT and DistilBERT masked-LM checkpoints are supported"
            ))),
        }
    }
}
