//! Validation during training: encode a small dev collection and its queries with the current
//! weights, retrieve exhaustively in memory, and score MRR@10 and Recall@k with the same metric
//! code as the `evaluate` stage.

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::encoders::{EncoderPair, Encoding};
use crate::error::Result;
use crate::evaluate::metrics::{evaluate, EvalOptions, Measure};
use crate::model::encoder::{sparse_rows, Sparsify};
use crate::model::TextTokenizer;
use crate::parquet_io::{IdText, Qrel, RunRow, SparseVector};

/// A dev set held in memory for the whole run.
pub struct ValidationSet {
    /// Dev queries (id, text).
    pub queries: IdText,
    /// Dev collection (id, text) retrieved from.
    pub docs: IdText,
    /// Relevance judgments of the dev queries.
    pub qrels: Vec<Qrel>,
    /// `k` of the reported Recall@k.
    pub recall_k: usize,
}

fn encode_all(
    tokenizer: &TextTokenizer,
    texts: &[String],
    encode: impl Fn(&[Vec<u32>]) -> Tensor<2>,
) -> Result<Vec<SparseVector>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let rep = encode(&tokenizer.encode_batch(&refs)?);
        out.extend(sparse_rows(rep, Sparsify::default())?);
    }
    Ok(out)
}

impl ValidationSet {
    /// `(MRR@10, Recall@recall_k)` of `pair` (its weights as they are now; dropout off).
    pub fn measure(
        &self,
        pair: &EncoderPair,
        encoding: &Encoding,
        query_tokenizer: &TextTokenizer,
        doc_tokenizer: &TextTokenizer,
        device: &Device,
    ) -> Result<(f64, f64)> {
        let plain = encoding.view(&pair.valid());
        let device = device.clone().inner();
        let docs = encode_all(doc_tokenizer, &self.docs.texts, |ids| {
            encoding.docs(&plain, ids, 0, &device)
        })?;
        let queries = encode_all(query_tokenizer, &self.queries.texts, |ids| {
            encoding.queries(&plain, ids, 0, &device)
        })?;
        let mut postings: HashMap<u32, Vec<(usize, f32)>> = HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            for (t, w) in d.terms.iter().zip(&d.weights) {
                postings.entry(*t).or_default().push((i, *w));
            }
        }
        let k = self.recall_k.max(10);
        let mut run = Vec::new();
        let mut acc = vec![0f32; docs.len()];
        for (qi, q) in queries.iter().enumerate() {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (t, w) in q.terms.iter().zip(&q.weights) {
                for (d, dw) in postings.get(t).map(Vec::as_slice).unwrap_or(&[]) {
                    acc[*d] += w * dw;
                }
            }
            let mut ranked: Vec<(usize, f32)> = acc
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > 0.0)
                .map(|(d, s)| (d, *s))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            ranked.truncate(k);
            for (rank, (d, s)) in ranked.into_iter().enumerate() {
                run.push(RunRow {
                    qid: self.queries.ids[qi].clone(),
                    did: self.docs.ids[d].clone(),
                    rank: rank as u32 + 1,
                    score: f64::from(s),
                });
            }
        }
        let measures = [Measure::Mrr(10), Measure::Recall(self.recall_k)];
        let e = evaluate(
            &run,
            &self.qrels,
            &measures,
            EvalOptions {
                complete: true,
                ..EvalOptions::default()
            },
        );
        Ok((e.means[0], e.means[1]))
    }
}
