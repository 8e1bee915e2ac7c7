//! `bm25`: documents → BM25 term-weight vectors over the model's WordPiece vocabulary, so BM25
//! runs through the same `index` and `retrieve` stages as SPLADE (queries: `encode` with
//! `mode = "bag_of_words"`). Lucene's idf `ln(1 + (N − df + 0.5)/(df + 0.5))`.

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::encode::vector_stats;
use crate::error::Result;
use crate::model::TextTokenizer;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, write_sparse, SparseVector};

/// The bm25 stage kind.
pub struct Bm25;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("input", ParamType::Artifact, "documents (id, text)"),
    ParamSpec::with_default(
        "model",
        ParamType::File,
        "\"conf/models/splade-tiny\"",
        "model directory whose tokenizer.json is used",
    ),
    ParamSpec::with_default("k1", ParamType::Float, "0.9", "term-frequency saturation"),
    ParamSpec::with_default("b", ParamType::Float, "0.4", "length normalisation"),
    ParamSpec::with_default("max_length", ParamType::Int, "512", "tokens per document"),
];

impl Stage for Bm25 {
    fn kind(&self) -> &'static str {
        "bm25"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "documents → BM25 weight vectors (index them with `index`, query with bag-of-words vectors)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["vectors".into()]
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let k1: f64 = ctx.param("k1")?;
        let b: f64 = ctx.param("b")?;
        let max_len: i64 = ctx.param("max_length")?;
        let tok = TextTokenizer::load(ctx.input("model")?.path(), max_len.max(2) as usize)?;
        let docs = read_id_text(ctx.input("input")?.path())?;
        let specials = tok.special_ids().clone();
        let tfs: Vec<(HashMap<u32, u32>, u32)> = docs
            .texts
            .par_chunks(256)
            .map(|chunk| {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                tok.encode_batch(&refs).map(|ids| {
                    ids.into_iter()
                        .map(|ids| {
                            let mut tf = HashMap::new();
                            let mut len = 0u32;
                            for t in ids.into_iter().filter(|t| !specials.contains(t)) {
                                *tf.entry(t).or_insert(0u32) += 1;
                                len += 1;
                            }
                            (tf, len)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let n = tfs.len() as f64;
        let avgdl = tfs.iter().map(|(_, l)| *l as f64).sum::<f64>() / n.max(1.0);
        let mut df: HashMap<u32, u32> = HashMap::new();
        for (tf, _) in &tfs {
            for t in tf.keys() {
                *df.entry(*t).or_insert(0) += 1;
            }
        }
        let vectors: Vec<SparseVector> = tfs
            .iter()
            .map(|(tf, len)| {
                let norm = k1 * (1.0 - b + b * *len as f64 / avgdl.max(1e-9));
                let mut pairs: Vec<(u32, f32)> = tf
                    .iter()
                    .map(|(t, f)| {
                        let d = df[t] as f64;
                        let idf = (1.0 + (n - d + 0.5) / (d + 0.5)).ln();
                        let f = *f as f64;
                        (*t, (idf * f * (k1 + 1.0) / (f + norm)) as f32)
                    })
                    .filter(|(_, w)| *w > 0.0)
                    .collect();
                pairs.sort_by_key(|p| p.0);
                SparseVector {
                    terms: pairs.iter().map(|p| p.0).collect(),
                    weights: pairs.iter().map(|p| p.1).collect(),
                }
            })
            .collect();
        write_sparse(&ctx.output_file("vectors"), &docs.ids, &vectors)?;
        let mut stats: Map<String, Value> = vector_stats(&vectors, 30522);
        stats.insert("avg_doc_tokens".into(), json!(avgdl));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
