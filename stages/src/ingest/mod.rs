//! `ingest`: user files (MS MARCO TSV, naver raw.tsv dirs, BEIR jsonl, TREC/BEIR/JSON qrels,
//! TREC/JSON runs; gzip transparently) → Parquet artifacts with string ids.
//!
//! Outputs: `docs` (when `docs` is set), and `<name>_queries`, `<name>_qrels`, `<name>_run` for
//! each entry of the `queries`, `qrels` and `runs` tables.

pub mod formats;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::StringBuilder;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::Result;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{write_qrels, write_run, ParquetSink};
use crate::schema;

/// The ingest stage kind.
pub struct Ingest;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::with_default(
        "docs",
        ParamType::File,
        "null",
        "collection: id<TAB>text TSV, a raw.tsv directory, or BEIR corpus.jsonl",
    ),
    ParamSpec::with_default(
        "queries",
        ParamType::FileMap,
        "{}",
        "query sets by name: TSV or BEIR queries.jsonl",
    ),
    ParamSpec::with_default(
        "qrels",
        ParamType::FileMap,
        "{}",
        "qrels by name: TREC, BEIR tsv or naver JSON",
    ),
    ParamSpec::with_default(
        "runs",
        ParamType::FileMap,
        "{}",
        "runs by name: TREC or naver JSON",
    ),
];

fn names(params: &Value, key: &str) -> Vec<String> {
    params
        .get(key)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

const ROWS_PER_BATCH: usize = 64 * 1024;

/// Streams an id/text source into a Parquet file in batches; returns the row count.
fn ingest_id_text(source: &std::path::Path, beir_name: &str, out: &std::path::Path) -> Result<u64> {
    let (file, format) = formats::resolve_text_source(source, beir_name)?;
    let mut sink = ParquetSink::create(out, schema::id_text())?;
    let mut ids = StringBuilder::new();
    let mut texts = StringBuilder::new();
    let mut pending = 0usize;
    formats::read_id_text(&file, format, |id, text| {
        ids.append_value(id);
        texts.append_value(text);
        pending += 1;
        if pending == ROWS_PER_BATCH {
            sink.write_columns(vec![Arc::new(ids.finish()), Arc::new(texts.finish())])?;
            pending = 0;
        }
        Ok(())
    })?;
    sink.write_columns(vec![Arc::new(ids.finish()), Arc::new(texts.finish())])?;
    sink.finish()
}

impl Stage for Ingest {
    fn kind(&self) -> &'static str {
        "ingest"
    }

    fn version(&self) -> u32 {
        1
    }

    fn doc(&self) -> &'static str {
        "read collections, queries, qrels and runs from user files into Parquet"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn outputs(&self, params: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if params.get("docs").is_some_and(|d| !d.is_null()) {
            out.push("docs".to_string());
        }
        for (key, suffix) in [("queries", "queries"), ("qrels", "qrels"), ("runs", "run")] {
            out.extend(
                names(params, key)
                    .into_iter()
                    .map(|n| format!("{n}_{suffix}")),
            );
        }
        out
    }

    fn check(&self, params: &Value) -> std::result::Result<(), (String, String)> {
        if self.outputs(params).is_empty() {
            return Err((
                "docs".into(),
                "ingest needs at least one of docs, queries, qrels, runs".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let mut stats = Map::new();
        if ctx.inputs.contains_key("docs") {
            let started = Instant::now();
            let source = ctx.input("docs")?.path().to_path_buf();
            let rows = ingest_id_text(&source, "corpus.jsonl", &ctx.output_file("docs"))?;
            let secs = started.elapsed().as_secs_f64();
            stats.insert(
                "docs".into(),
                json!({"rows": rows, "seconds": secs, "rows_per_s": rows as f64 / secs.max(1e-9)}),
            );
        }
        for (name, path) in ctx.file_map("queries") {
            let rows = ingest_id_text(
                &path,
                "queries.jsonl",
                &ctx.output_file(&format!("{name}_queries")),
            )?;
            stats.insert(format!("{name}_queries"), json!({"rows": rows}));
        }
        for (name, path) in ctx.file_map("qrels") {
            let qrels = formats::read_qrels(&path)?;
            let queries: std::collections::HashSet<&str> =
                qrels.iter().map(|q| q.qid.as_str()).collect();
            let relevant = qrels.iter().filter(|q| q.rel > 0).count();
            let n_queries = queries.len();
            let rows = write_qrels(&ctx.output_file(&format!("{name}_qrels")), &qrels)?;
            stats.insert(
                format!("{name}_qrels"),
                json!({"rows": rows, "queries": n_queries, "relevant": relevant}),
            );
        }
        for (name, path) in ctx.file_map("runs") {
            let run = formats::read_run(&path)?;
            let queries: std::collections::HashSet<&str> =
                run.iter().map(|r| r.qid.as_str()).collect();
            let n_queries = queries.len();
            let rows = write_run(&ctx.output_file(&format!("{name}_run")), &run)?;
            stats.insert(
                format!("{name}_run"),
                json!({"rows": rows, "queries": n_queries}),
            );
        }
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
