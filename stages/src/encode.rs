//! `encode`: docs or queries → SPLADE sparse vectors, in resumable shards.
//!
//! Batches are length-bucketed (token lengths sorted within a window, input order restored on
//! output) to cut padding. `mode = "bag_of_words"` gives splade_doc's inference-free queries.
//! Separate query and document encoders (efficient SPLADE) are two encode stages with two models.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::Result;
use crate::model::encoder::{Pooling, Sparsify};
use crate::model::text_encoder::{EncodeOptions, TextEncoder};
use crate::model::Precision;
use crate::params::{positive, ParamError};
use crate::parquet_io::{count_rows, read_sparse, write_sparse, IdTextChunks, SparseVector};
use crate::sharded::ShardedOutput;

/// The encode stage kind.
pub struct Encode;

crate::param_choice! {
    /// What `encode` computes: SPLADE vectors, or binary bags of tokens (no model).
    pub enum EncodeMode {
        /// The SPLADE model's vectors.
        Splade = "splade",
        /// splade_doc's inference-free queries: the binary bag of the tokenizer's tokens.
        BagOfWords = "bag_of_words",
    }
}

crate::stage_params! {
    /// Params of [`Encode`].
    pub struct EncodeParams {
        /// docs or queries (id, text)
        input: String [Artifact],
        /// Hugging Face BERT/DistilBERT masked-LM directory, or a trained model ("train.model")
        model: String [FileOrArtifact] = "\"conf/models/splade-tiny\"",
        /// splade, or bag_of_words (splade_doc queries: binary bag of tokens, no model)
        mode: EncodeMode [Choice(EncodeMode::NAMES)] = "\"splade\"",
        /// tokens per text, special tokens included
        max_length: i64 [Int] = "256",
        /// pooling over tokens
        pooling: Pooling [Choice(Pooling::NAMES)] = "\"max\"",
        /// texts per forward pass
        batch_size: i64 [Int] = "32",
        /// rows per output shard (the resume unit)
        shard_size: i64 [Int] = "10000",
        /// texts sorted by length within windows of this size before batching (0 = off)
        sort_window: i64 [Int] = "2048",
        /// keep the k strongest terms per vector (0 = all)
        top_k: i64 [Int] = "0",
        /// drop terms below this weight
        min_weight: f64 [Float] = "0.0",
        /// vocabulary terms projected at a time
        vocab_chunk: i64 [Int] = "8192",
        /// compute precision of the model (bf16: for GPUs; the vectors stay f32)
        precision: Precision [Choice(Precision::NAMES)] = "\"f32\"",
    }
}

impl EncodeParams {
    /// The batching options of [`TextEncoder`] these params ask for.
    pub fn options(&self) -> EncodeOptions {
        EncodeOptions {
            max_length: self.max_length as usize,
            pooling: self.pooling,
            batch_size: self.batch_size as usize,
            sort_window: self.sort_window as usize,
            vocab_chunk: self.vocab_chunk as usize,
            precision: self.precision,
            sparsify: Sparsify {
                top_k: self.top_k as usize,
                min_weight: self.min_weight as f32,
            },
        }
    }
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
    let mut stats = VectorStats::new(vocab);
    stats.add(vectors);
    stats.finish()
}

/// [`vector_stats`] over vectors seen a batch at a time: 4 bytes per vector and one counter per
/// vocabulary term are held, never the vectors (same figures, bit for bit, as all at once).
pub struct VectorStats {
    nnz: Vec<u32>,
    total_weight: f64,
    df: Vec<u32>,
}

impl VectorStats {
    /// No vectors yet, over a vocabulary of `vocab` terms.
    pub fn new(vocab: usize) -> Self {
        VectorStats {
            nnz: Vec::new(),
            total_weight: 0.0,
            df: vec![0; vocab.max(1)],
        }
    }

    /// Counts `vectors` (in collection order).
    pub fn add(&mut self, vectors: &[SparseVector]) {
        for v in vectors {
            self.nnz.push(v.nnz() as u32);
            for w in &v.weights {
                self.total_weight += *w as f64;
            }
            for t in &v.terms {
                if let Some(c) = self.df.get_mut(*t as usize) {
                    *c += 1;
                }
            }
        }
    }

    /// The statistics: count, nnz mean and percentiles, mean weight, FLOPS of the collection.
    pub fn finish(mut self) -> Map<String, Value> {
        let nnz = &mut self.nnz;
        nnz.sort_unstable();
        let n = nnz.len().max(1) as f64;
        let pct = |p: f64| {
            nnz.get(((nnz.len().saturating_sub(1)) as f64 * p) as usize)
                .copied()
                .unwrap_or(0)
        };
        let total_nnz: u64 = nnz.iter().map(|x| *x as u64).sum();
        let flops: f64 = self.df.iter().map(|c| (*c as f64 / n).powi(2)).sum();
        let mut m = Map::new();
        m.insert("vectors".into(), json!(nnz.len()));
        m.insert("nnz_mean".into(), json!(total_nnz as f64 / n));
        m.insert("nnz_p50".into(), json!(pct(0.5)));
        m.insert("nnz_p90".into(), json!(pct(0.9)));
        m.insert("nnz_p99".into(), json!(pct(0.99)));
        m.insert("nnz_max".into(), json!(nnz.last().copied().unwrap_or(0)));
        m.insert(
            "weight_mean".into(),
            json!(self.total_weight / (total_nnz.max(1) as f64)),
        );
        m.insert("flops_self".into(), json!(flops));
        m
    }
}

/// A shard whose Parquet file is being written on its own thread.
type PendingShard<'scope> = (usize, std::thread::ScopedJoinHandle<'scope, Result<()>>);

/// Waits for `pending`'s file, then commits the shard (which stops the stage when asked to).
fn commit_written(
    pending: Option<PendingShard<'_>>,
    out: &mut ShardedOutput,
    ctx: &StageContext,
) -> Result<()> {
    let Some((s, handle)) = pending else {
        return Ok(());
    };
    handle
        .join()
        .map_err(|_| crate::StageError::Other(format!("writing shard {s} panicked")))??;
    out.commit(ctx, s, Map::new())
}

impl TypedStage for Encode {
    type Params = EncodeParams;
    const KIND: &'static str = "encode";
    const SPLITS_INTO_TASKS: bool = true;
    const VERSION: u32 = 1;
    const STOPS_AT_CHECKPOINTS: bool = true;
    const DOC: &'static str =
        "texts → SPLADE sparse vectors (id, terms, weights), sharded and resumable";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "input" => Some(&[Holds::Texts]),
            "model" => Some(&[Holds::Model]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &EncodeParams) -> Vec<String> {
        vec!["vectors".into()]
    }

    fn check(&self, p: &EncodeParams) -> std::result::Result<(), ParamError> {
        positive("max_length", p.max_length)?;
        positive("batch_size", p.batch_size)?;
        positive("shard_size", p.shard_size)?;
        positive("vocab_chunk", p.vocab_chunk)?;
        for (key, value) in [("sort_window", p.sort_window), ("top_k", p.top_k)] {
            if value < 0 {
                return Err(ParamError::new(
                    key,
                    format!("must be >= 0 (0 = off), got {value}"),
                ));
            }
        }
        if p.max_length < 2 {
            return Err(ParamError::new(
                "max_length",
                "must leave room for [CLS] and [SEP]",
            ));
        }
        Ok(())
    }

    fn run(&self, p: EncodeParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let model_dir = ctx.input("model")?.path().to_path_buf();
        let input = ctx.input("input")?.path().to_path_buf();
        let n = count_rows(&input)? as usize;
        let shard_size = p.shard_size as usize;
        let shards = n.div_ceil(shard_size).max(1);
        let mut out = ShardedOutput::open(ctx, "vectors", shards)?;
        let todo: std::collections::BTreeSet<usize> = out.missing(ctx).into_iter().collect();
        let done = shards - todo.len();
        let encoder =
            TextEncoder::load(&model_dir, p.mode, &p.options(), &ctx.backend, ctx.threads)?;
        let bar = ctx.progress(n as u64, "texts");
        bar.set_position((done * shard_size).min(n) as u64);
        let started = Instant::now();
        let mut encoded = 0usize;
        // Statistics over every shard in shard order: those encoded now as they are made, those
        // an earlier run committed read back (not timed as encoding). Array tasks keep none.
        let mut acc = VectorStats::new(encoder.vocab());
        let mut reading = std::time::Duration::ZERO;
        // The collection is read a shard at a time, never held whole; a shard's Parquet file is
        // written on its own thread while the next shard encodes, and committed after.
        let mut chunks = IdTextChunks::open(&input, shard_size)?;
        std::thread::scope(|scope| -> Result<()> {
            let mut writing: Option<PendingShard<'_>> = None;
            for s in 0..shards {
                if ctx.cancelled() {
                    // Stop at this boundary: commit what is written, encode nothing more.
                    commit_written(writing.take(), &mut out, ctx)?;
                }
                let rows = chunks.next_chunk()?.unwrap_or_default();
                if !todo.contains(&s) {
                    if ctx.shard_slice.is_none() {
                        let t0 = Instant::now();
                        acc.add(&read_sparse(&out.path(s))?.1);
                        reading += t0.elapsed();
                    }
                    continue;
                }
                let texts: Vec<&str> = rows.texts.iter().map(String::as_str).collect();
                let vectors = encoder.encode(&texts, &bar)?;
                acc.add(&vectors);
                encoded += rows.ids.len();
                commit_written(writing.take(), &mut out, ctx)?;
                let path = out.path(s);
                let handle =
                    scope.spawn(move || write_sparse(&path, &rows.ids, &vectors).map(drop));
                writing = Some((s, handle));
            }
            commit_written(writing, &mut out, ctx)
        })?;
        bar.finish_and_clear();
        let secs = (started.elapsed() - reading).as_secs_f64();
        if let Some(slice) = ctx.shard_slice {
            return Ok(crate::sharded::task_outcome(slice, encoded, secs));
        }
        let mut stats = acc.finish();
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
