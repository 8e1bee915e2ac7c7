//! `index`: sparse vectors → a block-compressed, quantized inverted index (see [`format`]).

pub mod build;
pub mod format;
pub mod reader;
pub mod spill;
pub mod writer;

use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::Result;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_sparse, write_id_text, IdText};

/// The index stage kind.
pub struct Index;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "input",
        ParamType::FileOrArtifact,
        "document sparse vectors: a reference (\"encode_docs.vectors\") or a Parquet file or shard directory",
    ),
    ParamSpec::with_default(
        "memory_budget",
        ParamType::Float,
        "0.0",
        "MiB of postings held in memory; beyond it, sorted runs are spilled per input shard and merged (0 = no limit)",
    ),
    ParamSpec::with_default(
        "max_weight",
        ParamType::Float,
        "0.0",
        "weight mapped to impact 255 (0 = the collection's largest weight)",
    ),
    ParamSpec::with_default(
        "vocab",
        ParamType::Int,
        "30522",
        "vocabulary size (term ids below it)",
    ),
];

impl Stage for Index {
    fn kind(&self) -> &'static str {
        "index"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "sparse vectors → inverted index: u8 impacts, 128-doc bit-packed blocks, block maxima"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["index".into(), "doc_ids".into()]
    }

    fn check(&self, params: &Value) -> std::result::Result<(), (String, String)> {
        if params
            .get("memory_budget")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            < 0.0
        {
            return Err(("memory_budget".into(), "must be >= 0 (0 = no limit)".into()));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let max_weight: f64 = ctx.param("max_weight")?;
        let vocab: i64 = ctx.param("vocab")?;
        let budget_mib: f64 = ctx.param("memory_budget")?;
        let input = ctx.input("input")?.path().to_path_buf();
        let started = std::time::Instant::now();
        let dir = ctx.output_dir("index")?;
        let budget = (budget_mib * (1u64 << 20) as f64) as usize;
        let doc_ids = ctx.output_file("doc_ids");
        let scan = if budget > 0 {
            Some(spill::scan(&input, &doc_ids)?)
        } else {
            None
        };
        // A scan has already streamed the doc ids to their output (same bytes as below).
        let ids_written = scan.is_some();
        let mut m = Map::new();
        let (stats, ids) = match scan {
            Some(scan) if scan.postings as usize * spill::BYTES_PER_POSTING > budget => {
                let job = spill::ExternalBuild {
                    input,
                    dir,
                    runs_dir: ctx.staging_dir().join("spill-runs"),
                    vocab: vocab.max(0) as usize,
                    max_weight: max_weight as f32,
                    budget,
                };
                let saved = ctx.resume_state();
                let mut state = spill::SpillState::from_json(saved.as_ref());
                if !(0..state.runs).all(|i| spill::run_file(&job.runs_dir, i).is_file()) {
                    state = spill::SpillState::default();
                }
                let resumed_from = state.runs;
                if resumed_from > 0 {
                    tracing::info!(stage = %ctx.name, runs = resumed_from, "resuming after spilled runs");
                }
                let (stats, runs) = spill::build_external(&job, &scan, state, |s| {
                    ctx.save_resume_state(&s.to_json())
                })?;
                m.insert("spilled_runs".into(), json!(runs));
                m.insert("resumed_from_run".into(), json!(resumed_from));
                (stats, None)
            }
            _ => {
                let (ids, vectors) = read_sparse(&input)?;
                let stats = build::build(&dir, &vectors, vocab.max(0) as usize, max_weight as f32)?;
                (stats, Some(ids).filter(|_| !ids_written))
            }
        };
        if let Some(ids) = ids {
            write_id_text(
                &doc_ids,
                &IdText {
                    texts: vec![String::new(); ids.len()],
                    ids,
                },
            )?;
        }
        let secs = started.elapsed().as_secs_f64();
        m.insert("docs".into(), json!(stats.n_docs));
        m.insert("terms".into(), json!(stats.n_terms));
        m.insert("postings".into(), json!(stats.n_postings));
        m.insert("postings_bytes".into(), json!(stats.postings_bytes));
        m.insert(
            "bytes_per_posting".into(),
            json!(stats.postings_bytes as f64 / stats.n_postings.max(1) as f64),
        );
        m.insert("scale".into(), json!(stats.scale));
        m.insert(
            "postings_dropped_by_quantization".into(),
            json!(stats.dropped_postings),
        );
        m.insert(
            "docs_per_s".into(),
            json!(stats.n_docs as f64 / secs.max(1e-9)),
        );
        Ok(StageOutcome {
            stats: m,
            summary: None,
        })
    }
}
