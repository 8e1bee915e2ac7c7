//! `index`: sparse vectors → a block-compressed, quantized inverted index (see [`format`]).

pub mod build;
pub mod format;
pub mod reader;

use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::Result;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_sparse, write_id_text, IdText};

/// The index stage kind.
pub struct Index;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("input", ParamType::Artifact, "document sparse vectors"),
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

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let max_weight: f64 = ctx.param("max_weight")?;
        let vocab: i64 = ctx.param("vocab")?;
        let started = std::time::Instant::now();
        let (ids, vectors) = read_sparse(ctx.input("input")?.path())?;
        let dir = ctx.output_dir("index")?;
        let stats = build::build(&dir, &vectors, vocab.max(0) as usize, max_weight as f32)?;
        write_id_text(
            &ctx.output_file("doc_ids"),
            &IdText {
                texts: vec![String::new(); ids.len()],
                ids,
            },
        )?;
        let secs = started.elapsed().as_secs_f64();
        let mut m = Map::new();
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
