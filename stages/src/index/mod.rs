//! `index`: sparse vectors → a block-compressed, quantized inverted index (see [`format`]).

pub mod build;
pub mod format;
pub mod ranges;
pub mod reader;
pub mod reorder;
pub mod spill;
pub mod writer;

use serde_json::{json, Map};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::Result;
use crate::params::ParamError;
use crate::parquet_io::{read_sparse, write_id_text, IdText};

/// The index stage kind.
pub struct Index;

/// The largest `vocab` accepted: the index holds per-term tables of this length.
const MAX_VOCAB: i64 = 1 << 24;

crate::param_choice! {
    /// The order documents get their doc indexes in.
    pub enum Reorder {
        /// Input order.
        None = "none",
        /// Recursive graph bisection: documents sharing terms get nearby indexes (tighter
        /// block-max bounds); the collection is held in memory whatever `memory_budget` says.
        Bp = "bp",
    }
}

crate::stage_params! {
    /// Params of [`Index`].
    pub struct IndexParams {
        /// document sparse vectors: a reference ("encode_docs.vectors") or a Parquet file or shard directory
        input: String [FileOrArtifact],
        /// MiB of postings held in memory; beyond it, sorted runs are spilled per input shard and merged (0 = no limit; the same bytes either way)
        memory_budget: f64 [Float] = "1024.0",
        /// weight mapped to impact 255 (0 = the collection's largest weight)
        max_weight: f64 [Float] = "0.0",
        /// vocabulary size (term ids below it)
        vocab: i64 [Int] = "30522",
        /// none, or bp (recursive graph bisection: similar documents get nearby doc indexes, so block_max bounds are tighter; runs still name the input ids)
        reorder: Reorder [Choice(Reorder::NAMES)] = "\"none\"",
    }
}

impl TypedStage for Index {
    type Params = IndexParams;
    const KIND: &'static str = "index";
    const VERSION: u32 = 4;
    const DOC: &'static str =
        "sparse vectors → inverted index: u8 impacts, 128-doc bit-packed blocks, block and range maxima";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "input" => Some(&[Holds::Vectors]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &IndexParams) -> Vec<String> {
        vec!["index".into(), "doc_ids".into()]
    }

    fn check(&self, p: &IndexParams) -> std::result::Result<(), ParamError> {
        if p.memory_budget < 0.0 {
            return Err(ParamError::new(
                "memory_budget",
                "must be >= 0 (0 = no limit)",
            ));
        }
        if !(0.0..=f64::from(f32::MAX)).contains(&p.max_weight) {
            return Err(ParamError::new(
                "max_weight",
                format!(
                    "must be >= 0 (0 = the collection's largest weight) and a finite f32, got {}",
                    p.max_weight
                ),
            ));
        }
        if !(1..=MAX_VOCAB).contains(&p.vocab) {
            return Err(ParamError::new(
                "vocab",
                format!(
                    "must be from 1 to {MAX_VOCAB} (term ids are below it; BERT's is 30522), got {}",
                    p.vocab
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, p: IndexParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let (max_weight, vocab, budget_mib) = (p.max_weight, p.vocab, p.memory_budget);
        let input = ctx.input("input")?.path().to_path_buf();
        let started = std::time::Instant::now();
        let dir = ctx.output_dir("index")?;
        let budget = (budget_mib * (1u64 << 20) as f64) as usize;
        let doc_ids = ctx.output_file("doc_ids");
        let bp = p.reorder == Reorder::Bp;
        let scan = if budget > 0 && !bp {
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
                let (mut ids, mut vectors) = read_sparse(&input)?;
                if bp {
                    let t0 = std::time::Instant::now();
                    let order = reorder::bisection_order(&vectors);
                    (ids, vectors) = (
                        reorder::permute(ids, &order),
                        reorder::permute(vectors, &order),
                    );
                    m.insert("reorder".into(), json!("bp"));
                    m.insert("reorder_s".into(), json!(t0.elapsed().as_secs_f64()));
                }
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
            summary: dropped_summary(&ctx.name, &stats),
        })
    }
}

/// The summary line saying how many postings quantization dropped (none when it dropped none):
/// a weight under half an impact step (`0.5 / scale`) rounds to impact 0 and is not indexed.
fn dropped_summary(stage: &str, stats: &build::BuildStats) -> Option<String> {
    let dropped = stats.dropped_postings;
    if dropped == 0 {
        return None;
    }
    let total = stats.n_postings + dropped;
    Some(format!(
        "{stage}: {dropped} of {total} postings ({:.2}%) not indexed: their weight is under {:.4} \
         (half an impact step at scale {:.2}), which rounds to impact 0",
        100.0 * dropped as f64 / total as f64,
        0.5 / stats.scale.max(f32::MIN_POSITIVE),
        stats.scale
    ))
}
