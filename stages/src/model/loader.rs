//! Loading Hugging Face weights (`model.safetensors` or `pytorch_model.bin`) into [`MlmEncoder`]
//! with burn-store, mapping HF names onto our module paths. A missing or unexpected weight is an
//! error that lists the keys: never a silently random-initialised model.

use std::path::{Path, PathBuf};

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use burn::tensor::Device;

use super::config::{Arch, ModelConfig};
use super::network::MlmEncoder;
use crate::error::{Result, StageError};

/// HF key pattern → our module path, applied in order (anchored, so each key matches once).
fn key_map(arch: Arch, bias_from_decoder: bool) -> Vec<(&'static str, &'static str)> {
    let mut m = match arch {
        Arch::Bert => vec![
            (r"^bert\.embeddings\.LayerNorm\.", "embeddings.layer_norm."),
            (r"^bert\.embeddings\.", "embeddings."),
            (
                r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.",
                "encoder.layers.$1.mha.$2.",
            ),
            (
                r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\.",
                "encoder.layers.$1.mha.output.",
            ),
            (
                r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
                "encoder.layers.$1.norm_1.",
            ),
            (
                r"^bert\.encoder\.layer\.(\d+)\.intermediate\.dense\.",
                "encoder.layers.$1.pwff.linear_inner.",
            ),
            (
                r"^bert\.encoder\.layer\.(\d+)\.output\.dense\.",
                "encoder.layers.$1.pwff.linear_outer.",
            ),
            (
                r"^bert\.encoder\.layer\.(\d+)\.output\.LayerNorm\.",
                "encoder.layers.$1.norm_2.",
            ),
            (r"^cls\.predictions\.transform\.dense\.", "head.dense."),
            (
                r"^cls\.predictions\.transform\.LayerNorm\.",
                "head.layer_norm.",
            ),
        ],
        Arch::DistilBert => vec![
            (
                r"^distilbert\.embeddings\.LayerNorm\.",
                "embeddings.layer_norm.",
            ),
            (r"^distilbert\.embeddings\.", "embeddings."),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.attention\.q_lin\.",
                "encoder.layers.$1.mha.query.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.attention\.k_lin\.",
                "encoder.layers.$1.mha.key.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.attention\.v_lin\.",
                "encoder.layers.$1.mha.value.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.attention\.out_lin\.",
                "encoder.layers.$1.mha.output.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.sa_layer_norm\.",
                "encoder.layers.$1.norm_1.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.ffn\.lin1\.",
                "encoder.layers.$1.pwff.linear_inner.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.ffn\.lin2\.",
                "encoder.layers.$1.pwff.linear_outer.",
            ),
            (
                r"^distilbert\.transformer\.layer\.(\d+)\.output_layer_norm\.",
                "encoder.layers.$1.norm_2.",
            ),
            (r"^vocab_transform\.", "head.dense."),
            (r"^vocab_layer_norm\.", "head.layer_norm."),
            (r"^vocab_projector\.bias$", "head.bias"),
        ],
    };
    if arch == Arch::Bert {
        // The decoder bias is tied to `cls.predictions.bias`; checkpoints keep either or both.
        if bias_from_decoder {
            m.push((r"^cls\.predictions\.decoder\.bias$", "head.bias"));
            m.push((r"^cls\.predictions\.bias$", "tied.predictions_bias"));
        } else {
            m.push((r"^cls\.predictions\.bias$", "head.bias"));
            m.push((r"^cls\.predictions\.decoder\.bias$", "tied.decoder_bias"));
        }
    }
    m
}

/// Keys a checkpoint may carry that the encoder does not use.
fn ignorable(key: &str) -> bool {
    key.starts_with("tied.")
        || key.ends_with("position_ids")
        || key.starts_with("bert.pooler.")
        || key.starts_with("cls.seq_relationship.")
        || key == "cls.predictions.decoder.weight"
        || key == "vocab_projector.weight"
}

/// The weights file of a model directory: safetensors preferred, else the PyTorch pickle.
pub fn weights_file(dir: &Path) -> Result<PathBuf> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(StageError::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model.safetensors or pytorch_model.bin in this model directory",
        ),
    ))
}

fn try_load(
    cfg: &ModelConfig,
    weights: &Path,
    device: &Device,
    bias_from_decoder: bool,
) -> Result<(MlmEncoder, Vec<String>)> {
    let mut model = MlmEncoder::init(cfg, device);
    let is_safetensors = weights.extension().is_some_and(|e| e == "safetensors");
    let map = key_map(cfg.arch, bias_from_decoder);
    let result = if is_safetensors {
        let mut store = SafetensorsStore::from_file(weights)
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true);
        for (from, to) in &map {
            store = store.with_key_remapping(*from, *to);
        }
        model
            .load_from(&mut store)
            .map_err(|e| StageError::Other(format!("{}: {e}", weights.display())))?
    } else {
        let mut store = PytorchStore::from_file(weights).allow_partial(true);
        for (from, to) in &map {
            store = store.with_key_remapping(*from, *to);
        }
        model
            .load_from(&mut store)
            .map_err(|e| StageError::Other(format!("{}: {e}", weights.display())))?
    };
    let mut problems = Vec::new();
    if !result.errors.is_empty() {
        problems.push(format!(
            "weights that do not fit: {}",
            result
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if !result.missing.is_empty() {
        problems.push(format!(
            "missing weights (module paths): {}",
            result
                .missing
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let unexpected: Vec<&str> = result
        .unused
        .iter()
        .map(String::as_str)
        .filter(|k| !ignorable(k))
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!(
            "unexpected weights (after mapping to module paths): {}",
            unexpected.join(", ")
        ));
    }
    Ok((model, problems))
}

/// Builds the encoder of `dir` (a Hugging Face BERT/DistilBERT masked-LM directory) on `device`.
pub fn load_mlm(dir: &Path, device: &Device) -> Result<(ModelConfig, MlmEncoder)> {
    let cfg = ModelConfig::from_dir(dir)?;
    load_mlm_as(dir, cfg, device)
}

/// Like [`load_mlm`], with a config read (and possibly adjusted, e.g. dropout) by the caller.
pub fn load_mlm_as(
    dir: &Path,
    cfg: ModelConfig,
    device: &Device,
) -> Result<(ModelConfig, MlmEncoder)> {
    let weights = weights_file(dir)?;
    let (model, problems) = try_load(&cfg, &weights, device, false)?;
    if problems.is_empty() {
        return Ok((cfg, model));
    }
    if cfg.arch == Arch::Bert && problems.iter().any(|p| p.contains("head.bias")) {
        let (model, again) = try_load(&cfg, &weights, device, true)?;
        if again.is_empty() {
            return Ok((cfg, model));
        }
    }
    Err(StageError::malformed(
        &weights,
        0,
        format!(
            "does not fit a {:?} masked-LM of this config: {}",
            cfg.arch,
            problems.join("; ")
        ),
    ))
}
