//! Writing an [`MlmEncoder`] back out as a Hugging Face model directory (`config.json`,
//! `model.safetensors` with the original parameter names, tokenizer files) that
//! `transformers.AutoModelForMaskedLM.from_pretrained` loads unchanged and that [`super::load_mlm`]
//! reads back.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};

use super::config::{Arch, ModelConfig};
use super::network::MlmEncoder;
use crate::error::{Result, StageError};

/// One named tensor, row-major f32.
struct Named {
    name: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn values<const D: usize>(t: Tensor<D>) -> Result<(Vec<usize>, Vec<u8>)> {
    let shape = t.dims().to_vec();
    let data: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| StageError::Other(format!("reading weights: {e:?}")))?;
    Ok((shape, data.iter().flat_map(|x| x.to_le_bytes()).collect()))
}

#[derive(Default)]
struct Collector(Vec<Named>);

impl Collector {
    fn tensor<const D: usize>(&mut self, name: String, t: Tensor<D>) -> Result<()> {
        let (shape, bytes) = values(t)?;
        self.0.push(Named { name, shape, bytes });
        Ok(())
    }

    fn param<const D: usize>(&mut self, name: String, p: &Param<Tensor<D>>) -> Result<()> {
        self.tensor(name, p.val())
    }

    /// A burn `Linear` (weight `[in, out]`) as a PyTorch one (weight `[out, in]`).
    fn linear(&mut self, prefix: &str, l: &Linear) -> Result<()> {
        self.tensor(format!("{prefix}.weight"), l.weight.val().transpose())?;
        if let Some(b) = &l.bias {
            self.param(format!("{prefix}.bias"), b)?;
        }
        Ok(())
    }

    fn layer_norm(&mut self, prefix: &str, n: &LayerNorm) -> Result<()> {
        self.param(format!("{prefix}.weight"), &n.gamma)?;
        if let Some(b) = &n.beta {
            self.param(format!("{prefix}.bias"), b)?;
        }
        Ok(())
    }
}

/// Hugging Face parameter names for one architecture.
struct Names {
    embeddings: &'static str,
    layer: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attn_out: &'static str,
    norm_1: &'static str,
    ffn_in: &'static str,
    ffn_out: &'static str,
    norm_2: &'static str,
    head_dense: &'static str,
    head_norm: &'static str,
    head_bias: &'static str,
}

const BERT: Names = Names {
    embeddings: "bert.embeddings",
    layer: "bert.encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    norm_1: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    norm_2: "output.LayerNorm",
    head_dense: "cls.predictions.transform.dense",
    head_norm: "cls.predictions.transform.LayerNorm",
    head_bias: "cls.predictions.bias",
};

const DISTILBERT: Names = Names {
    embeddings: "distilbert.embeddings",
    layer: "distilbert.transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    norm_1: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    norm_2: "output_layer_norm",
    head_dense: "vocab_transform",
    head_norm: "vocab_layer_norm",
    head_bias: "vocab_projector.bias",
};

fn collect(model: &MlmEncoder, arch: Arch) -> Result<Vec<Named>> {
    let n = match arch {
        Arch::Bert => &BERT,
        Arch::DistilBert => &DISTILBERT,
    };
    let mut c = Collector::default();
    let e = &model.embeddings;
    c.param(
        format!("{}.word_embeddings.weight", n.embeddings),
        &e.word_embeddings.weight,
    )?;
    c.param(
        format!("{}.position_embeddings.weight", n.embeddings),
        &e.position_embeddings.weight,
    )?;
    if let Some(tt) = &e.token_type_embeddings {
        c.param(
            format!("{}.token_type_embeddings.weight", n.embeddings),
            &tt.weight,
        )?;
    }
    c.layer_norm(&format!("{}.LayerNorm", n.embeddings), &e.layer_norm)?;
    for (i, layer) in model.encoder.layers.iter().enumerate() {
        let p = |s: &str| format!("{}.{i}.{s}", n.layer);
        c.linear(&p(n.query), &layer.mha.query)?;
        c.linear(&p(n.key), &layer.mha.key)?;
        c.linear(&p(n.value), &layer.mha.value)?;
        c.linear(&p(n.attn_out), &layer.mha.output)?;
        c.layer_norm(&p(n.norm_1), &layer.norm_1)?;
        c.linear(&p(n.ffn_in), &layer.pwff.linear_inner)?;
        c.linear(&p(n.ffn_out), &layer.pwff.linear_outer)?;
        c.layer_norm(&p(n.norm_2), &layer.norm_2)?;
    }
    c.linear(n.head_dense, &model.head.dense)?;
    c.layer_norm(n.head_norm, &model.head.layer_norm)?;
    c.param(n.head_bias.to_string(), &model.head.bias)?;
    Ok(c.0)
}

/// Files of a model directory that describe it rather than hold weights (config, tokenizer).
fn is_description(name: &str) -> bool {
    (name.ends_with(".json")
        || name.ends_with(".txt")
        || name == "LICENSE"
        || name.ends_with(".md"))
        && !name.ends_with(".index.json")
}

/// Writes `model` as a Hugging Face directory at `out`, copying config and tokenizer files from
/// `source` (the directory the model was initialised from). `out` is created; existing files in
/// it are replaced.
pub fn export_hf(model: &MlmEncoder, cfg: &ModelConfig, source: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| StageError::io(out, e))?;
    let entries = std::fs::read_dir(source).map_err(|e| StageError::io(source, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StageError::io(source, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && is_description(&name) {
            let to = out.join(&name);
            std::fs::copy(entry.path(), &to).map_err(|e| StageError::io(&to, e))?;
        }
    }
    let tensors = collect(model, cfg.arch)?;
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| StageError::Other(format!("safetensors view of {}: {e}", t.name)))
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let path = out.join("model.safetensors");
    let tmp = out.join("model.safetensors.tmp");
    safetensors::tensor::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| StageError::Other(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| StageError::io(&path, e))?;
    // A stale PyTorch pickle next to the new weights would shadow nothing for us but confuse users.
    let stale = out.join("pytorch_model.bin");
    if stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| StageError::io(&stale, e))?;
    }
    Ok(())
}
