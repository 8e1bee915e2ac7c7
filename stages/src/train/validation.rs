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
use crate::model::{DeviceWorkers, TextTokenizer};
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

/// Sparse vectors of `texts` in chunks of 32, each chunk taken by whichever device is free.
fn encode_all(
    workers: &DeviceWorkers,
    tokenizer: &TextTokenizer,
    texts: &[String],
    encode: impl Fn(usize, &[Vec<u32>]) -> Tensor<2> + Sync,
) -> Result<Vec<SparseVector>> {
    let chunks: Vec<&[String]> = texts.chunks(32).collect();
    let vectors = workers.pull("validate", chunks.len(), |device, c| {
        let refs: Vec<&str> = chunks[c].iter().map(String::as_str).collect();
        sparse_rows(
            encode(device, &tokenizer.encode_batch(&refs)?),
            Sparsify::default(),
        )
    })?;
    Ok(vectors.into_iter().flatten().collect())
}

impl ValidationSet {
    /// `(MRR@10, Recall@recall_k)` of `replicas` (the model on each worker's device, its weights
    /// as they are now; dropout off), the dev texts spread over the devices.
    pub fn measure(
        &self,
        replicas: &[EncoderPair],
        workers: &DeviceWorkers,
        encoding: &Encoding,
        query_tokenizer: &TextTokenizer,
        doc_tokenizer: &TextTokenizer,
    ) -> Result<(f64, f64)> {
        let views: Vec<EncoderPair> = replicas.iter().map(|r| encoding.view(&r.valid())).collect();
        let devices: Vec<Device> = workers
            .devices()
            .iter()
            .map(|d| d.clone().inner())
            .collect();
        let docs = encode_all(workers, doc_tokenizer, &self.docs.texts, |i, ids| {
            encoding.docs(&views[i], ids, 0, &devices[i])
        })?;
        let queries = encode_all(workers, query_tokenizer, &self.queries.texts, |i, ids| {
            encoding.queries(&views[i], ids, 0, &devices[i])
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
