//! `bm25`: documents → BM25 term-weight vectors over the model's WordPiece vocabulary, so BM25
//! runs through the same `index` and `retrieve` stages as SPLADE (queries: `encode` with
//! `mode = "bag_of_words"`). Lucene's idf `ln(1 + (N − df + 0.5)/(df + 0.5))`.

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::{json, Map, Value};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::encode::vector_stats;
use crate::error::Result;
use crate::model::{TextTokenizer, BERT_VOCAB_SIZE};
use crate::params::ParamError;
use crate::parquet_io::{read_id_text, write_sparse, SparseVector};

/// The bm25 stage kind.
pub struct Bm25;

crate::stage_params! {
    /// Params of [`Bm25`].
    pub struct Bm25Params {
        /// documents (id, text)
        input: String [Artifact],
        /// model directory whose tokenizer.json is used
        model: String [File] = "\"conf/models/splade-tiny\"",
        /// term-frequency saturation
        k1: f64 [Float] = "0.9",
        /// length normalisation
        b: f64 [Float] = "0.4",
        /// tokens per document
        max_length: i64 [Int] = "512",
    }
}

impl TypedStage for Bm25 {
    type Params = Bm25Params;
    const KIND: &'static str = "bm25";
    const VERSION: u32 = 1;
    const DOC: &'static str =
        "documents → BM25 weight vectors (index them with `index`, query with bag-of-words vectors)";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "input" => Some(&[Holds::Texts]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &Bm25Params) -> Vec<String> {
        vec!["vectors".into()]
    }

    fn check(&self, p: &Bm25Params) -> std::result::Result<(), ParamError> {
        if p.k1 < 0.0 {
            return Err(ParamError::new(
                "k1",
                format!(
                    "must be >= 0 (0 = binary term weights; usual: 0.9 to 1.2), got {}",
                    p.k1
                ),
            ));
        }
        if !(0.0..=1.0).contains(&p.b) {
            return Err(ParamError::new(
                "b",
                format!(
                    "must be in [0, 1] (0 = no length normalisation, 1 = full), got {}",
                    p.b
                ),
            ));
        }
        if p.max_length < 2 {
            return Err(ParamError::new(
                "max_length",
                format!(
                    "must leave room for [CLS] and [SEP] (at least 2), got {}",
                    p.max_length
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, p: Bm25Params, ctx: &mut StageContext) -> Result<StageOutcome> {
        let (k1, b, max_len) = (p.k1, p.b, p.max_length);
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
        let mut stats: Map<String, Value> = vector_stats(&vectors, BERT_VOCAB_SIZE);
        stats.insert("avg_doc_tokens".into(), json!(avgdl));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
