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

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::{Result, StageError};
use crate::params::ParamError;
use crate::parquet_io::{write_qrels, write_run, ParquetSink};
use crate::schema;

/// The ingest stage kind.
pub struct Ingest;

crate::stage_params! {
    /// Params of [`Ingest`].
    pub struct IngestParams {
        /// collection: id<TAB>text TSV, a raw.tsv directory, or BEIR corpus.jsonl
        docs: Option<String> [File] = "null",
        /// query sets by name: TSV or BEIR queries.jsonl
        queries: Map<String, Value> [FileMap] = "{}",
        /// qrels by name: TREC, BEIR tsv or naver JSON
        qrels: Map<String, Value> [FileMap] = "{}",
        /// runs by name: TREC or naver JSON
        runs: Map<String, Value> [FileMap] = "{}",
        /// keep only queries judged in the qrels of the same name (BEIR's queries.jsonl holds every split)
        queries_in_qrels: bool [Bool] = "false",
        /// accept files with no rows (written as empty outputs); otherwise an empty file is an error
        allow_empty: bool [Bool] = "false",
    }
}

const ROWS_PER_BATCH: usize = 64 * 1024;

/// Streams an id/text source into a Parquet file in batches; returns the row count.
/// `keep` filters ids (`None` keeps every row).
fn ingest_id_text(
    source: &std::path::Path,
    beir_name: &str,
    out: &std::path::Path,
    keep: Option<&std::collections::HashSet<String>>,
    allow_empty: bool,
) -> Result<u64> {
    let (file, format) = formats::resolve_text_source(source, beir_name)?;
    let mut sink = ParquetSink::create(out, schema::id_text())?;
    let mut ids = StringBuilder::new();
    let mut texts = StringBuilder::new();
    let mut pending = 0usize;
    formats::read_id_text(&file, format, |id, text| {
        if keep.is_some_and(|k| !k.contains(id)) {
            return Ok(());
        }
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
    let rows = sink.finish()?;
    if rows == 0 && !allow_empty {
        return Err(match keep {
            Some(_) => StageError::malformed(
                &file,
                0,
                "no query of this file is judged in the qrels of the same name \
                 (queries_in_qrels = true); set allow_empty = true to accept that",
            ),
            None => empty_input(&file),
        });
    }
    Ok(rows)
}

/// The error for a user file that holds no rows: nothing downstream can work on it.
fn empty_input(path: &std::path::Path) -> StageError {
    StageError::malformed(
        path,
        0,
        "no rows: the file is empty or holds only blank lines (set `allow_empty = true` to \
         accept that)",
    )
}

impl TypedStage for Ingest {
    type Params = IngestParams;
    const KIND: &'static str = "ingest";
    const VERSION: u32 = 2;
    const DOC: &'static str =
        "read collections, queries, qrels and runs from user files into Parquet";

    fn outputs(&self, p: &IngestParams) -> Vec<String> {
        let mut out = Vec::new();
        if p.docs.is_some() {
            out.push("docs".to_string());
        }
        for (names, suffix) in [
            (&p.queries, "queries"),
            (&p.qrels, "qrels"),
            (&p.runs, "run"),
        ] {
            out.extend(names.keys().map(|n| format!("{n}_{suffix}")));
        }
        out
    }

    fn check(&self, p: &IngestParams) -> std::result::Result<(), ParamError> {
        if TypedStage::outputs(self, p).is_empty() {
            return Err(ParamError::new(
                "docs",
                "ingest needs at least one of docs, queries, qrels, runs",
            ));
        }
        if p.queries_in_qrels {
            if let Some(name) = p.queries.keys().find(|n| !p.qrels.contains_key(*n)) {
                return Err(ParamError::new(
                    "queries_in_qrels",
                    format!(
                        "query set `{name}` has no qrels of the same name to filter by \
                         (qrels: {})",
                        p.qrels.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn run(&self, p: IngestParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let mut stats = Map::new();
        if ctx.inputs.contains_key("docs") {
            let started = Instant::now();
            let source = ctx.input("docs")?.path().to_path_buf();
            let rows = ingest_id_text(
                &source,
                "corpus.jsonl",
                &ctx.output_file("docs"),
                None,
                p.allow_empty,
            )?;
            let secs = started.elapsed().as_secs_f64();
            stats.insert(
                "docs".into(),
                json!({"rows": rows, "seconds": secs, "rows_per_s": rows as f64 / secs.max(1e-9)}),
            );
        }
        let qrels_files: std::collections::HashMap<String, std::path::PathBuf> =
            ctx.file_map("qrels").into_iter().collect();
        for (name, path) in ctx.file_map("queries") {
            let judged = match qrels_files.get(&name).filter(|_| p.queries_in_qrels) {
                Some(qrels) => Some(
                    formats::read_qrels(qrels)?
                        .into_iter()
                        .map(|q| q.qid)
                        .collect::<std::collections::HashSet<_>>(),
                ),
                None => None,
            };
            let rows = ingest_id_text(
                &path,
                "queries.jsonl",
                &ctx.output_file(&format!("{name}_queries")),
                judged.as_ref(),
                p.allow_empty,
            )?;
            stats.insert(format!("{name}_queries"), json!({"rows": rows}));
        }
        for (name, path) in ctx.file_map("qrels") {
            let qrels = formats::read_qrels(&path)?;
            if qrels.is_empty() && !p.allow_empty {
                return Err(empty_input(&path));
            }
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
            if run.is_empty() && !p.allow_empty {
                return Err(empty_input(&path));
            }
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
