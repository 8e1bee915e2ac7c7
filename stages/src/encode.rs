//! `encode`: docs or queries → SPLADE sparse vectors, in resumable shards.
//!
//! Batches are length-bucketed (token lengths sorted within a window, input order restored on
//! output) to cut padding. `mode = "bag_of_words"` gives splade_doc's inference-free queries.
//! Separate query and document encoders (efficient SPLADE) are two encode stages with two models.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::model::encoder::{bag_of_words, prune, Pooling, SpladeEncoder};
use crate::model::{devices_from_backend, Precision, TextTokenizer};
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, read_sparse, write_sparse, SparseVector};

/// The encode stage kind.
pub struct Encode;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("input", ParamType::Artifact, "docs or queries (id, text)"),
    ParamSpec::with_default(
        "model",
        ParamType::FileOrArtifact,
        "\"conf/models/splade-tiny\"",
        "Hugging Face BERT/DistilBERT masked-LM directory, or a trained model (\"train.model\")",
    ),
    ParamSpec::with_default(
        "mode",
        ParamType::Choice(&["splade", "bag_of_words"]),
        "\"splade\"",
        "splade, or bag_of_words (splade_doc queries: binary bag of tokens, no model)",
    ),
    ParamSpec::with_default(
        "max_length",
        ParamType::Int,
        "256",
        "tokens per text, special tokens included",
    ),
    ParamSpec::with_default(
        "pooling",
        ParamType::Choice(&["max", "sum"]),
        "\"max\"",
        "pooling over tokens",
    ),
    ParamSpec::with_default("batch_size", ParamType::Int, "32", "texts per forward pass"),
    ParamSpec::with_default(
        "shard_size",
        ParamType::Int,
        "10000",
        "rows per output shard (the resume unit)",
    ),
    ParamSpec::with_default(
        "sort_window",
        ParamType::Int,
        "2048",
        "texts sorted by length within windows of this size before batching (0 = off)",
    ),
    ParamSpec::with_default(
        "top_k",
        ParamType::Int,
        "0",
        "keep the k strongest terms per vector (0 = all)",
    ),
    ParamSpec::with_default(
        "min_weight",
        ParamType::Float,
        "0.0",
        "drop terms below this weight",
    ),
    ParamSpec::with_default(
        "vocab_chunk",
        ParamType::Int,
        "8192",
        "vocabulary terms projected at a time",
    ),
    ParamSpec::with_default(
        "precision",
        ParamType::Choice(&["f32", "bf16"]),
        "\"f32\"",
        "compute precision of the model (bf16: for GPUs; the vectors stay f32)",
    ),
];

#[derive(Deserialize)]
struct Params {
    mode: String,
    max_length: i64,
    pooling: String,
    batch_size: i64,
    shard_size: i64,
    sort_window: i64,
    top_k: i64,
    min_weight: f64,
    vocab_chunk: i64,
    precision: String,
}

fn positive(key: &str, v: i64) -> std::result::Result<usize, (String, String)> {
    usize::try_from(v).ok().filter(|x| *x > 0).ok_or_else(|| {
        (
            key.to_string(),
            format!("must be a positive integer, got {v}"),
        )
    })
}

/// Batches of row indices: within each window, rows sorted by token length (stable).
pub fn length_bucketed_batches(lengths: &[usize], batch: usize, window: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if window > 1 {
        for w in order.chunks_mut(window) {
            w.sort_by_key(|i| lengths[*i]);
        }
    }
    order.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
}

/// nnz percentiles, mean weight and Σ_v p_v² (the expected FLOPS of a vector of this set
/// against one drawn from the same distribution; SPLADE's FLOPS measure).
pub fn vector_stats(vectors: &[SparseVector], vocab: usize) -> Map<String, Value> {
    let mut nnz: Vec<usize> = vectors.iter().map(SparseVector::nnz).collect();
    nnz.sort_unstable();
    let n = nnz.len().max(1) as f64;
    let pct = |p: f64| {
        nnz.get(((nnz.len().saturating_sub(1)) as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let total_w: f64 = vectors
        .iter()
        .flat_map(|v| v.weights.iter())
        .map(|w| *w as f64)
        .sum();
    let total_nnz: usize = nnz.iter().sum();
    let mut df = vec![0u32; vocab.max(1)];
    for v in vectors {
        for t in &v.terms {
            if let Some(c) = df.get_mut(*t as usize) {
                *c += 1;
            }
        }
    }
    let flops: f64 = df.iter().map(|c| (*c as f64 / n).powi(2)).sum();
    let mut m = Map::new();
    m.insert("vectors".into(), json!(vectors.len()));
    m.insert("nnz_mean".into(), json!(total_nnz as f64 / n));
    m.insert("nnz_p50".into(), json!(pct(0.5)));
    m.insert("nnz_p90".into(), json!(pct(0.9)));
    m.insert("nnz_p99".into(), json!(pct(0.99)));
    m.insert("nnz_max".into(), json!(nnz.last().copied().unwrap_or(0)));
    m.insert(
        "weight_mean".into(),
        json!(total_w / (total_nnz.max(1) as f64)),
    );
    m.insert("flops_self".into(), json!(flops));
    m
}

/// How [`TextEncoder`] batches and encodes texts (the encode stage's params).
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    pub max_length: usize,
    pub pooling: Pooling,
    pub batch_size: usize,
    pub sort_window: usize,
    pub vocab_chunk: usize,
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
        mode: &str,
        opts: &EncodeOptions,
        backend: &Value,
    ) -> Result<Self> {
        let (encoder, tokenizer) = if mode == "splade" {
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

    /// Vocabulary size of the model (30522 for a bare tokenizer).
    pub fn vocab(&self) -> usize {
        self.encoder
            .as_ref()
            .map(|e| e.config.vocab_size)
            .unwrap_or(30522)
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

impl Stage for Encode {
    fn kind(&self) -> &'static str {
        "encode"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "texts → SPLADE sparse vectors (id, terms, weights), sharded and resumable"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["vectors".into()]
    }
    fn check(&self, params: &Value) -> std::result::Result<(), (String, String)> {
        let p: Params =
            serde_json::from_value(params.clone()).map_err(|e| ("input".into(), e.to_string()))?;
        positive("max_length", p.max_length)?;
        positive("batch_size", p.batch_size)?;
        positive("shard_size", p.shard_size)?;
        positive("vocab_chunk", p.vocab_chunk)?;
        if p.sort_window < 0 || p.top_k < 0 {
            return Err(("top_k".into(), "sort_window and top_k must be >= 0".into()));
        }
        if p.max_length < 2 {
            return Err((
                "max_length".into(),
                "must leave room for [CLS] and [SEP]".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let p: Params = ctx.params_as()?;
        let model_dir = ctx.input("model")?.path().to_path_buf();
        let rows = read_id_text(ctx.input("input")?.path())?;
        let n = rows.ids.len();
        let shard_size = p.shard_size as usize;
        let shards = n.div_ceil(shard_size).max(1);
        let dir = ctx.output_dir("vectors")?;
        let shard_path = |s: usize| crate::contract::shard_file(&dir, s);
        let done = ctx.committed_shards(&dir, shards);
        if done > 0 {
            tracing::info!(stage = %ctx.name, done, shards, "resuming after committed shards");
        }
        let pooling = if p.pooling == "sum" {
            Pooling::Sum
        } else {
            Pooling::Max
        };
        let encoder = TextEncoder::load(
            &model_dir,
            &p.mode,
            &EncodeOptions {
                max_length: p.max_length as usize,
                pooling,
                batch_size: p.batch_size as usize,
                sort_window: p.sort_window as usize,
                vocab_chunk: p.vocab_chunk as usize,
                precision: Precision::from_param(&p.precision),
            },
            &ctx.backend,
        )?;
        let bar = ctx.progress(n as u64, "texts");
        bar.set_position((done * shard_size).min(n) as u64);
        let started = Instant::now();
        let mut encoded = 0usize;
        for s in done..shards {
            let lo = s * shard_size;
            let hi = ((s + 1) * shard_size).min(n);
            let texts: Vec<&str> = rows.texts[lo..hi].iter().map(String::as_str).collect();
            let mut vectors = encoder.encode(&texts, &bar)?;
            if p.top_k > 0 || p.min_weight > 0.0 {
                for v in vectors.iter_mut() {
                    *v = prune(v, p.top_k as usize, p.min_weight as f32);
                }
            }
            write_sparse(&shard_path(s), &rows.ids[lo..hi], &vectors)?;
            ctx.save_resume_state(&json!({ "done": s + 1, "shards": shards }))?;
            encoded += hi - lo;
        }
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        let (_, all) = read_sparse(&dir)?;
        let mut stats = vector_stats(&all, encoder.vocab());
        stats.insert("shards".into(), json!(shards));
        stats.insert("resumed_from_shard".into(), json!(done));
        stats.insert("encoded_this_run".into(), json!(encoded));
        stats.insert("texts_per_s".into(), json!(encoded as f64 / secs.max(1e-9)));
        Ok(StageOutcome {
            summary: None,
            stats,
        })
    }
}
