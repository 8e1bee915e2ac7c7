//! `export`: sparse vectors → the formats other engines read: Anserini JsonVectorCollection
//! (documents), Anserini pre-tokenized query TSV, and CIFF (for PISA's ciff2pisa).

pub mod ciff;

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::model::TextTokenizer;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, read_sparse};

/// The export stage kind.
pub struct Export;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "input",
        ParamType::Artifact,
        "sparse vectors (documents, or queries for `anserini_queries`)",
    ),
    ParamSpec::required(
        "format",
        ParamType::Choice(&["anserini_docs", "anserini_queries", "ciff"]),
        "anserini_docs (JsonVectorCollection), anserini_queries (TSV, tokens repeated), ciff",
    ),
    ParamSpec::with_default(
        "texts",
        ParamType::Artifact,
        "null",
        "docs (id, text) for the `content` field",
    ),
    ParamSpec::with_default(
        "model",
        ParamType::File,
        "\"conf/models/splade-tiny\"",
        "model whose tokenizer names the terms",
    ),
    ParamSpec::with_default(
        "scale",
        ParamType::Float,
        "100.0",
        "integer weight = round(weight × scale), as Anserini expects",
    ),
];

impl Stage for Export {
    fn kind(&self) -> &'static str {
        "export"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "sparse vectors → Anserini JsonVectorCollection / query TSV, or CIFF"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["export".into()]
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let format: String = ctx.param("format")?;
        let scale: f64 = ctx.param("scale")?;
        let tok = TextTokenizer::load(ctx.input("model")?.path(), 512)?;
        let (ids, vectors) = read_sparse(ctx.input("input")?.path())?;
        let texts = match ctx.inputs.get("texts") {
            Some(t) => Some(read_id_text(t.path())?),
            None => None,
        };
        let quant = |w: f32| (w as f64 * scale).round() as i64;
        let (name, bytes) = match format.as_str() {
            "anserini_docs" => {
                let content: BTreeMap<&str, &str> = texts
                    .as_ref()
                    .map(|t| {
                        t.ids
                            .iter()
                            .map(String::as_str)
                            .zip(t.texts.iter().map(String::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut out = Vec::new();
                for (id, v) in ids.iter().zip(&vectors) {
                    let mut vector = Map::new();
                    for (t, w) in v.terms.iter().zip(&v.weights) {
                        let q = quant(*w);
                        if q > 0 {
                            vector.insert(tok.token(*t), json!(q));
                        }
                    }
                    let line = json!({"id": id, "content": content.get(id.as_str()).copied().unwrap_or(""), "vector": vector});
                    writeln!(out, "{line}").map_err(|e| StageError::Other(e.to_string()))?;
                }
                ("export.jsonl", out)
            }
            "anserini_queries" => {
                let mut out = String::new();
                for (id, v) in ids.iter().zip(&vectors) {
                    let mut toks = Vec::new();
                    for (t, w) in v.terms.iter().zip(&v.weights) {
                        let token = tok.token(*t);
                        for _ in 0..quant(*w).max(0) {
                            toks.push(token.clone());
                        }
                    }
                    out += &format!("{id}\t{}\n", toks.join(" "));
                }
                ("export.tsv", out.into_bytes())
            }
            _ => (
                "export.ciff",
                ciff_bytes(&ids, &vectors, &|t| tok.token(t), &quant)?,
            ),
        };
        let path = ctx.staging_dir().join(name);
        std::fs::write(&path, &bytes).map_err(|e| StageError::io(&path, e))?;
        let mut stats = Map::new();
        stats.insert("rows".into(), json!(ids.len()));
        stats.insert("bytes".into(), json!(bytes.len()));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}

/// A CIFF stream of `vectors` (doc ids = row order; tf = quantized weight; terms named by
/// `token` and sorted by name).
pub fn ciff_bytes(
    ids: &[String],
    vectors: &[crate::parquet_io::SparseVector],
    token: &dyn Fn(u32) -> String,
    quant: &dyn Fn(f32) -> i64,
) -> Result<Vec<u8>> {
    let mut lists: BTreeMap<String, Vec<(i32, i32)>> = BTreeMap::new();
    let mut lengths = vec![0i64; ids.len()];
    for (d, v) in vectors.iter().enumerate() {
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let q = quant(*w);
            if q > 0 {
                lists
                    .entry(token(*t))
                    .or_default()
                    .push((d as i32, q.min(i32::MAX as i64) as i32));
                lengths[d] += q;
            }
        }
    }
    let total: i64 = lengths.iter().sum();
    let header = ciff::Header {
        version: 1,
        num_postings_lists: lists.len() as i32,
        num_docs: ids.len() as i32,
        total_postings_lists: lists.len() as i32,
        total_docs: ids.len() as i32,
        total_terms_in_collection: total,
        average_doclength: total as f64 / ids.len().max(1) as f64,
        description: "splade export".into(),
    };
    let mut out = Vec::new();
    let io = |e: std::io::Error| StageError::Other(format!("writing CIFF: {e}"));
    ciff::write_delimited(&mut out, &header).map_err(io)?;
    for (term, postings) in &lists {
        let mut prev = 0;
        let list = ciff::PostingsList {
            term: term.clone(),
            df: postings.len() as i64,
            cf: postings.iter().map(|p| p.1 as i64).sum(),
            postings: postings
                .iter()
                .map(|(d, tf)| {
                    let gap = d - prev;
                    prev = *d;
                    ciff::Posting {
                        docid: gap,
                        tf: *tf,
                    }
                })
                .collect(),
        };
        ciff::write_delimited(&mut out, &list).map_err(io)?;
    }
    for (d, id) in ids.iter().enumerate() {
        let rec = ciff::DocRecord {
            docid: d as i32,
            collection_docid: id.clone(),
            doclength: lengths[d].min(i32::MAX as i64) as i32,
        };
        ciff::write_delimited(&mut out, &rec).map_err(io)?;
    }
    Ok(out)
}
