//! `splade expand`: the bag of expanded words SPLADE gives each text, strongest first.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use splade_stages::model::backend::check_backend;
use splade_stages::model::{devices_from_backend, Pooling, SpladeEncoder};

/// Arguments of `splade expand`.
#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face BERT/DistilBERT masked-LM directory.
    #[arg(long, default_value = "conf/models/splade-tiny")]
    model: PathBuf,
    /// Tokens per text, special tokens included.
    #[arg(long, default_value_t = 256)]
    max_length: usize,
    /// Terms to show per text (0 = all); --json always prints all.
    #[arg(long, default_value_t = 30)]
    top: usize,
    /// Backend: `flex` (CPU) or `tch` (libtorch; builds with the `tch` feature).
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Device: `cpu`, or `cuda:N` with `--backend tch`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON line per text: {"text", "weights": {"<term id>": weight}}.
    #[arg(long)]
    json: bool,
    /// The texts.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// Encodes the texts and prints their terms.
pub fn exec(args: Args) -> Result<()> {
    let backend = json!({"kind": args.backend, "devices": [args.device]});
    check_backend(&backend).map_err(|e| {
        let flag = if e.key == "kind" { "backend" } else { "device" };
        anyhow::anyhow!("--{flag}: {}", e.message)
    })?;
    let devices = devices_from_backend(&backend)?;
    let enc = SpladeEncoder::load(&args.model, args.max_length, Pooling::Max, &devices[0])
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let vectors = enc.encode_texts(&refs)?;
    for (text, v) in args.texts.iter().zip(&vectors) {
        if args.json {
            let weights: Map<String, Value> = v
                .terms
                .iter()
                .zip(&v.weights)
                .map(|(t, w)| (t.to_string(), json!(w)))
                .collect();
            println!("{}", json!({"text": text, "weights": weights}));
            continue;
        }
        let mut pairs: Vec<(u32, f32)> = v
            .terms
            .iter()
            .copied()
            .zip(v.weights.iter().copied())
            .collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        println!(
            "{text}  ({} terms, sum {:.2})",
            pairs.len(),
            v.weights.iter().sum::<f32>()
        );
        let shown = if args.top == 0 {
            pairs.len()
        } else {
            args.top.min(pairs.len())
        };
        for (t, w) in &pairs[..shown] {
            println!("  {:<16} {:>7.4}   ({t})", enc.tokenizer.token(*t), w);
        }
    }
    Ok(())
}
