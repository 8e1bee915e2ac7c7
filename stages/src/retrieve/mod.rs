//! `retrieve`: query vectors × index → top-k run (qid, did, rank, score), batched over queries
//! with rayon and resumable per batch.

pub mod algorithms;
pub mod topk;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::index::reader::InvertedIndex;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, read_run, read_sparse, write_run, RunRow};
use algorithms::{exhaustive, maxscore, QUERY_SCALE};

/// The retrieve stage kind.
pub struct Retrieve;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("index", ParamType::Artifact, "an index (`<stage>.index`)"),
    ParamSpec::required("queries", ParamType::Artifact, "query sparse vectors"),
    ParamSpec::with_default("k", ParamType::Int, "1000", "documents per query"),
    ParamSpec::with_default(
        "algorithm",
        ParamType::Choice(&["exhaustive", "maxscore"]),
        "\"exhaustive\"",
        "exhaustive term-at-a-time (fastest today) or maxscore (safe dynamic pruning, same top-k)",
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
        "query vectors × index → top-k run (MaxScore or exhaustive), resumable per query batch"
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
        let (qids, queries) = read_sparse(ctx.input("queries")?.path())?;
        let k = p.k as usize + usize::from(p.remove_self_matches);
        let batch = p.batch_size as usize;
        let shards = qids.len().div_ceil(batch).max(1);
        let dir = ctx.output_dir("run")?;
        let shard_path = |s: usize| crate::contract::shard_file(&dir, s);
        let done = ctx.committed_shards(&dir, shards);
        let to_float = 1.0 / (index.scale * QUERY_SCALE);
        let bar = ctx.progress(qids.len() as u64, "queries");
        bar.set_position((done * batch).min(qids.len()) as u64);
        let started = std::time::Instant::now();
        let mut searched = 0usize;
        for s in done..shards {
            let lo = s * batch;
            let hi = ((s + 1) * batch).min(qids.len());
            let results: Vec<Vec<RunRow>> = (lo..hi)
                .into_par_iter()
                .map_init(Vec::new, |acc, i| {
                    let hits = if p.algorithm == "exhaustive" {
                        exhaustive(&index, &queries[i], k, acc)
                    } else {
                        maxscore(&index, &queries[i], k)
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
                })
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
