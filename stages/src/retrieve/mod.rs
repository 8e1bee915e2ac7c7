//! `retrieve`: query vectors × index → top-k run (qid, did, rank, score), batched over queries
//! with rayon and resumable per batch.

pub mod algorithms;
pub mod block_max;
pub mod exact;
pub mod topk;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::encode::{EncodeOptions, TextEncoder};
use crate::error::{Result, StageError};
use crate::index::reader::InvertedIndex;
use crate::model::encoder::Pooling;
use crate::model::Precision;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, read_run, read_sparse, write_run, RunRow, SparseVector};
use algorithms::{exhaustive, maxscore, QUERY_SCALE};
use block_max::{block_max, BlockMaxScratch, RangeMaxima};

/// Text queries are encoded as the encode stage's defaults do: batches of 32 texts, length-sorted
/// within windows of 2048, 8192 vocabulary terms projected at a time.
const ENCODE_BATCH: usize = 32;
const ENCODE_SORT_WINDOW: usize = 2048;
const ENCODE_VOCAB_CHUNK: usize = 8192;

/// The retrieve stage kind.
pub struct Retrieve;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("index", ParamType::Artifact, "an index (`<stage>.index`)"),
    ParamSpec::with_default(
        "queries",
        ParamType::Artifact,
        "null",
        "query sparse vectors (or `query_text`: exactly one of the two)",
    ),
    ParamSpec::with_default(
        "query_text",
        ParamType::Artifact,
        "null",
        "queries (id, text), encoded inside the stage with `model` (or `queries`)",
    ),
    ParamSpec::with_default(
        "model",
        ParamType::FileOrArtifact,
        "null",
        "with `query_text`: the query encoder, a model directory or a trained model (\"train.model\")",
    ),
    ParamSpec::with_default(
        "mode",
        ParamType::Choice(&["splade", "bag_of_words"]),
        "\"splade\"",
        "with `query_text`: splade, or bag_of_words (binary bag of the model tokenizer's tokens)",
    ),
    ParamSpec::with_default(
        "max_length",
        ParamType::Int,
        "256",
        "with `query_text`: tokens per query, special tokens included",
    ),
    ParamSpec::with_default(
        "precision",
        ParamType::Choice(&["f32", "bf16"]),
        "\"f32\"",
        "with `query_text`: compute precision of the model (as encode's)",
    ),
    ParamSpec::with_default("k", ParamType::Int, "1000", "documents per query"),
    ParamSpec::with_default(
        "algorithm",
        ParamType::Choice(&["exhaustive", "maxscore", "block_max"]),
        "\"exhaustive\"",
        "exhaustive term-at-a-time, or safe dynamic pruning with the same top-k: maxscore, block_max (doc-range bounds)",
    ),
    ParamSpec::with_default(
        "batch_size",
        ParamType::Int,
        "10000",
        "queries per output shard (the resume unit)",
    ),
    ParamSpec::with_default(
        "remove_self_matches",
        ParamType::Bool,
        "false",
        "drop documents whose id equals the query id",
    ),
    ParamSpec::with_default(
        "min_score",
        ParamType::Float,
        "0.0",
        "drop hits scoring below this",
    ),
    ParamSpec::with_default(
        "trec",
        ParamType::Bool,
        "false",
        "also write a TREC run file (output `trec`)",
    ),
];

#[derive(Deserialize)]
struct Params {
    mode: String,
    max_length: i64,
    precision: String,
    k: i64,
    algorithm: String,
    batch_size: i64,
    remove_self_matches: bool,
    min_score: f64,
    trec: bool,
}

impl Stage for Retrieve {
    fn kind(&self) -> &'static str {
        "retrieve"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "query vectors (or texts encoded in the stage) × index → top-k run, resumable per query batch"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, params: &Value) -> Vec<String> {
        let mut o = vec!["run".to_string()];
        if params.get("trec").and_then(Value::as_bool) == Some(true) {
            o.push("trec".into());
        }
        o
    }
    fn check(&self, params: &Value) -> std::result::Result<(), (String, String)> {
        for key in ["k", "batch_size"] {
            if params.get(key).and_then(Value::as_i64).unwrap_or(0) < 1 {
                return Err((key.into(), "must be a positive integer".into()));
            }
        }
        let set = |key: &str| params.get(key).is_some_and(|v| !v.is_null());
        match (set("queries"), set("query_text")) {
            (true, true) => {
                return Err((
                    "query_text".into(),
                    "give either `queries` (query vectors) or `query_text` (texts encoded with \
                     `model`), not both"
                        .into(),
                ))
            }
            (false, false) => {
                return Err((
                    "queries".into(),
                    "missing: give `queries` (query vectors, e.g. \"encode_queries.vectors\") \
                     or `query_text` (queries to encode, e.g. \"ingest.dev_queries\") with `model`"
                        .into(),
                ))
            }
            (false, true) if !set("model") => {
                return Err((
                    "model".into(),
                    "`query_text` needs `model` (a model directory or \"train.model\"; with \
                     mode = \"bag_of_words\" only its tokenizer is used)"
                        .into(),
                ))
            }
            (true, false) if set("model") => {
                return Err((
                    "model".into(),
                    "`model` encodes `query_text`; `queries` are already vectors".into(),
                ))
            }
            _ => {}
        }
        if params
            .get("max_length")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            < 2
        {
            return Err((
                "max_length".into(),
                "must leave room for [CLS] and [SEP]".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let p: Params = ctx.params_as()?;
        let index_input = ctx.input("index")?.clone();
        let index = InvertedIndex::open(index_input.path())?;
        let artifact = match &index_input {
            crate::contract::ResolvedInput::Artifact { artifact, .. } => artifact.clone(),
            crate::contract::ResolvedInput::File(p) => {
                p.parent().map(|p| p.to_path_buf()).unwrap_or_default()
            }
        };
        let doc_ids = read_id_text(&artifact.join("doc_ids.parquet"))?.ids;
        if doc_ids.len() != index.n_docs as usize {
            return Err(StageError::Other(format!(
                "{}: doc_ids has {} rows but the index has {} documents",
                artifact.display(),
                doc_ids.len(),
                index.n_docs
            )));
        }
        let table = (p.algorithm == "block_max").then(|| {
            let t0 = std::time::Instant::now();
            let table = RangeMaxima::build(&index);
            tracing::info!(
                entries = table.entries(),
                "block-max bound table built in {:.2}s",
                t0.elapsed().as_secs_f64()
            );
            table
        });
        let source = QuerySource::open(ctx, &p)?;
        let qids = source.ids().to_vec();
        let k = p.k as usize + usize::from(p.remove_self_matches);
        let batch = p.batch_size as usize;
        let shards = qids.len().div_ceil(batch).max(1);
        let dir = ctx.output_dir("run")?;
        let shard_path = |s: usize| crate::contract::shard_file(&dir, s);
        let done = ctx.committed_shards(&dir, shards);
        let to_float = 1.0 / (index.scale * QUERY_SCALE);
        let bar = ctx.progress(qids.len() as u64, "queries");
        bar.set_position((done * batch).min(qids.len()) as u64);
        let encode_bar = indicatif::ProgressBar::hidden();
        let started = std::time::Instant::now();
        let mut searched = 0usize;
        for s in done..shards {
            let lo = s * batch;
            let hi = ((s + 1) * batch).min(qids.len());
            let queries = source.vectors(lo, hi, &encode_bar)?;
            let results: Vec<Vec<RunRow>> = (lo..hi)
                .into_par_iter()
                .map_init(
                    || (Vec::new(), BlockMaxScratch::default()),
                    |(acc, scratch), i| {
                        let q = &queries[i - lo];
                        let hits = match (&table, p.algorithm.as_str()) {
                            (Some(table), _) => block_max(&index, table, q, k, scratch),
                            (None, "maxscore") => maxscore(&index, q, k),
                            _ => exhaustive(&index, q, k, acc),
                        };
                        let mut rows = Vec::with_capacity(hits.len());
                        for h in hits {
                            let did = &doc_ids[h.doc as usize];
                            let score = h.score as f32 * to_float;
                            if (p.remove_self_matches && *did == qids[i])
                                || (score as f64) < p.min_score
                            {
                                continue;
                            }
                            if rows.len() == p.k as usize {
                                break;
                            }
                            rows.push(RunRow {
                                qid: qids[i].clone(),
                                did: did.clone(),
                                rank: rows.len() as u32 + 1,
                                score,
                            });
                        }
                        rows
                    },
                )
                .collect();
            let rows: Vec<RunRow> = results.into_iter().flatten().collect();
            write_run(&shard_path(s), &rows)?;
            ctx.save_resume_state(&json!({ "done": s + 1, "shards": shards }))?;
            bar.inc((hi - lo) as u64);
            searched += hi - lo;
        }
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        if p.trec {
            let mut text = String::new();
            for r in read_run(&dir)? {
                text += &format!("{} Q0 {} {} {:.6} splade\n", r.qid, r.did, r.rank, r.score);
            }
            let path = ctx.staging_dir().join("trec.run");
            std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))?;
        }
        let mut m = Map::new();
        m.insert("queries".into(), json!(qids.len()));
        m.insert("searched_this_run".into(), json!(searched));
        m.insert("resumed_from_batch".into(), json!(done));
        m.insert(
            "queries_per_s".into(),
            json!(searched as f64 / secs.max(1e-9)),
        );
        m.insert("index_postings_bytes".into(), json!(index.postings_bytes()));
        Ok(StageOutcome {
            stats: m,
            summary: None,
        })
    }
}

/// Where the queries come from: vectors read whole, or texts encoded one batch at a time.
enum QuerySource {
    Vectors(Vec<String>, Vec<SparseVector>),
    Texts(crate::parquet_io::IdText, Box<TextEncoder>),
}

impl QuerySource {
    fn open(ctx: &StageContext, p: &Params) -> Result<Self> {
        if ctx.inputs.contains_key("queries") {
            let (ids, vectors) = read_sparse(ctx.input("queries")?.path())?;
            return Ok(QuerySource::Vectors(ids, vectors));
        }
        let rows = read_id_text(ctx.input("query_text")?.path())?;
        let opts = EncodeOptions {
            max_length: p.max_length as usize,
            pooling: Pooling::Max,
            batch_size: ENCODE_BATCH,
            sort_window: ENCODE_SORT_WINDOW,
            vocab_chunk: ENCODE_VOCAB_CHUNK,
            precision: Precision::from_param(&p.precision),
        };
        let encoder = TextEncoder::load(ctx.input("model")?.path(), &p.mode, &opts, &ctx.backend)?;
        Ok(QuerySource::Texts(rows, Box::new(encoder)))
    }

    fn ids(&self) -> &[String] {
        match self {
            QuerySource::Vectors(ids, _) => ids,
            QuerySource::Texts(rows, _) => &rows.ids,
        }
    }

    /// The vectors of queries `lo..hi`.
    fn vectors(
        &self,
        lo: usize,
        hi: usize,
        bar: &indicatif::ProgressBar,
    ) -> Result<std::borrow::Cow<'_, [SparseVector]>> {
        match self {
            QuerySource::Vectors(_, v) => Ok(std::borrow::Cow::Borrowed(&v[lo..hi])),
            QuerySource::Texts(rows, enc) => {
                let texts: Vec<&str> = rows.texts[lo..hi].iter().map(String::as_str).collect();
                Ok(std::borrow::Cow::Owned(enc.encode(&texts, bar)?))
            }
        }
    }
}
