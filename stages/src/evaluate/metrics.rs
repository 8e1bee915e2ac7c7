//! trec_eval-identical retrieval metrics over in-memory runs and qrels.
//!
//! Conventions (those of trec_eval / pytrec_eval): a run is ordered by score descending, ties by
//! document id descending (byte order), ignoring the rank column; a document is relevant for the
//! binary measures when `rel >= relevance_level`; nDCG uses gain = rel (rel > 0) with a log2
//! discount and the ideal ranking of all judged documents; a query is evaluated when it is in both
//! the run and the qrels, and `complete` (trec_eval -c) averages over every qrels query instead,
//! counting missing ones as 0. A query whose judgments are all non-relevant is evaluated (scores 0).

use std::collections::{BTreeMap, HashMap};

use crate::parquet_io::{Qrel, RunRow};

/// One measure, with its cut-off where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Reciprocal rank of the first relevant document within the top k (naver's MRR@k).
    Mrr(usize),
    /// Reciprocal rank without a cut-off (trec_eval `recip_rank`).
    Rr,
    /// Relevant retrieved in the top k / all relevant (trec_eval `recall_k`).
    Recall(usize),
    /// Relevant retrieved in the top k / min(k, all relevant) (BEIR `R_cap@k`).
    RCap(usize),
    /// Precision at k, always divided by k (trec_eval `P_k`).
    Precision(usize),
    /// nDCG at k (trec_eval `ndcg_cut_k`).
    Ndcg(usize),
    /// Mean average precision over the whole run (trec_eval `map`).
    Map,
}

impl Measure {
    /// The name used in metric tables (`MRR@10`, `nDCG@10`, `Recall@100`, `MAP`, ...).
    pub fn name(&self) -> String {
        match self {
            Measure::Mrr(k) => format!("MRR@{k}"),
            Measure::Rr => "RR".into(),
            Measure::Recall(k) => format!("Recall@{k}"),
            Measure::RCap(k) => format!("R_cap@{k}"),
            Measure::Precision(k) => format!("P@{k}"),
            Measure::Ndcg(k) => format!("nDCG@{k}"),
            Measure::Map => "MAP".into(),
        }
    }

    /// Parses a measure spec: `mrr@10`, `recall@100`, `ndcg@10`, `p@5`, `r_cap@100`, `map`, `rr`,
    /// or a cut-off family without `@k` (`recall`), expanded over `ks`.
    pub fn parse(spec: &str, ks: &[usize]) -> Result<Vec<Measure>, String> {
        let lower = spec.trim().to_ascii_lowercase();
        let (family, cut) = match lower.split_once('@') {
            Some((f, k)) => {
                let k: usize = k
                    .parse()
                    .ok()
                    .filter(|k| *k > 0)
                    .ok_or_else(|| format!("`{spec}`: cut-off must be a positive integer"))?;
                (f.to_string(), Some(k))
            }
            None => (lower.clone(), None),
        };
        let cuts: Vec<usize> = match cut {
            Some(k) => vec![k],
            None => ks.to_vec(),
        };
        let make: fn(usize) -> Measure = match family.as_str() {
            "mrr" | "mrr_cut" => Measure::Mrr,
            "recall" => Measure::Recall,
            "r_cap" | "rcap" => Measure::RCap,
            "p" | "precision" => Measure::Precision,
            "ndcg" | "ndcg_cut" => Measure::Ndcg,
            "map" | "rr" | "recip_rank" if cut.is_none() => {
                return Ok(vec![if family == "map" {
                    Measure::Map
                } else {
                    Measure::Rr
                }])
            }
            "map" | "rr" | "recip_rank" => {
                return Err(format!("`{spec}`: {family} takes no cut-off"))
            }
            _ => {
                return Err(format!(
                    "unknown measure `{spec}` (known: mrr, rr, recall, r_cap, p, ndcg, map; \
                     cut-offs as `ndcg@10`)"
                ))
            }
        };
        if cuts.is_empty() {
            return Err(format!(
                "`{spec}` needs a cut-off: write `{family}@10` or set k"
            ));
        }
        Ok(cuts.into_iter().map(make).collect())
    }
}

/// How to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Minimum judgment `rel` counted as relevant by the binary measures (≥ 1).
    pub relevance_level: i32,
    /// Average over every qrels query, counting those missing from the run as 0 (trec_eval -c).
    pub complete: bool,
    /// Drop retrieved documents whose id equals the query id.
    pub remove_self_matches: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            relevance_level: 1,
            complete: false,
            remove_self_matches: false,
        }
    }
}

/// Per-query values and their means, in the order of the measures asked for.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// The measures, in the order asked for.
    pub measures: Vec<Measure>,
    /// Query id → one value per measure (in the order of `measures`).
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// Mean of each measure over the evaluated queries (0 when there are none).
    pub means: Vec<f64>,
    /// Queries averaged over.
    pub n_queries: usize,
}

/// Evaluates `run` against `qrels`.
pub fn evaluate(
    run: &[RunRow],
    qrels: &[Qrel],
    measures: &[Measure],
    opts: EvalOptions,
) -> Evaluation {
    let mut judged: HashMap<&str, HashMap<&str, i32>> = HashMap::new();
    for q in qrels {
        judged
            .entry(q.qid.as_str())
            .or_default()
            .insert(q.did.as_str(), q.rel);
    }
    // trec_eval keeps each score as a C float (`TEXT_RESULTS.sim`), so scores closer than f32
    // can tell apart tie there, and the tie goes to the docid: compared the same way here.
    let mut ranked: HashMap<&str, Vec<(&str, f32)>> = HashMap::new();
    for r in run {
        if opts.remove_self_matches && r.did == r.qid {
            continue;
        }
        ranked
            .entry(r.qid.as_str())
            .or_default()
            .push((r.did.as_str(), r.score as f32));
    }
    let mut per_query = BTreeMap::new();
    for (qid, docs) in ranked.iter_mut() {
        let Some(judgments) = judged.get(qid) else {
            continue;
        };
        docs.sort_by(|a, b| {
            (b.1 as f64)
                .total_cmp(&(a.1 as f64))
                .then_with(|| b.0.as_bytes().cmp(a.0.as_bytes()))
        });
        let rels: Vec<i32> = docs
            .iter()
            .map(|(d, _)| judgments.get(d).copied().unwrap_or(0))
            .collect();
        let values = measures
            .iter()
            .map(|m| query_value(*m, &rels, judgments, opts.relevance_level))
            .collect();
        per_query.insert(qid.to_string(), values);
    }
    if opts.complete {
        for qid in judged.keys() {
            per_query
                .entry(qid.to_string())
                .or_insert_with(|| vec![0.0; measures.len()]);
        }
    }
    let n = per_query.len();
    let means = (0..measures.len())
        .map(|i| {
            if n == 0 {
                0.0
            } else {
                per_query.values().map(|v| v[i]).sum::<f64>() / n as f64
            }
        })
        .collect();
    Evaluation {
        measures: measures.to_vec(),
        per_query,
        means,
        n_queries: n,
    }
}

/// One measure for one query; `rels[i]` is the judgment of the document at rank i+1 (0 if unjudged).
fn query_value(m: Measure, rels: &[i32], judgments: &HashMap<&str, i32>, level: i32) -> f64 {
    let num_rel = judgments.values().filter(|r| **r >= level).count();
    let hits_in = |k: usize| rels.iter().take(k).filter(|r| **r >= level).count();
    match m {
        Measure::Mrr(k) => rels
            .iter()
            .take(k)
            .position(|r| *r >= level)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64),
        Measure::Rr => rels
            .iter()
            .position(|r| *r >= level)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64),
        Measure::Recall(k) => {
            if num_rel == 0 {
                0.0
            } else {
                hits_in(k) as f64 / num_rel as f64
            }
        }
        Measure::RCap(k) => {
            if num_rel == 0 {
                0.0
            } else {
                hits_in(k) as f64 / k.min(num_rel) as f64
            }
        }
        Measure::Precision(k) => hits_in(k) as f64 / k as f64,
        Measure::Map => {
            if num_rel == 0 {
                return 0.0;
            }
            let mut hits = 0usize;
            let mut sum = 0.0;
            for (i, r) in rels.iter().enumerate() {
                if *r >= level {
                    hits += 1;
                    sum += hits as f64 / (i + 1) as f64;
                }
            }
            sum / num_rel as f64
        }
        Measure::Ndcg(k) => {
            let dcg: f64 = rels
                .iter()
                .take(k)
                .enumerate()
                .filter(|(_, r)| **r > 0)
                .map(|(i, r)| *r as f64 / ((i + 2) as f64).log2())
                .sum();
            let mut ideal: Vec<i32> = judgments.values().copied().filter(|r| *r > 0).collect();
            ideal.sort_unstable_by(|a, b| b.cmp(a));
            let idcg: f64 = ideal
                .iter()
                .take(k)
                .enumerate()
                .map(|(i, r)| *r as f64 / ((i + 2) as f64).log2())
                .sum();
            if idcg > 0.0 {
                dcg / idcg
            } else {
                0.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(q: &str, d: &str, s: f32) -> RunRow {
        RunRow {
            qid: q.into(),
            did: d.into(),
            rank: 0,
            score: f64::from(s),
        }
    }
    fn qrel(q: &str, d: &str, r: i32) -> Qrel {
        Qrel {
            qid: q.into(),
            did: d.into(),
            rel: r,
        }
    }

    #[test]
    fn ties_break_by_docid_descending() {
        // d9 > d10 in byte order, so d9 ranks first among the tied pair.
        let run = vec![row("q", "d10", 1.0), row("q", "d9", 1.0)];
        let qrels = vec![qrel("q", "d9", 1)];
        let e = evaluate(&run, &qrels, &[Measure::Mrr(10)], EvalOptions::default());
        assert_eq!(e.means, vec![1.0]);
        let qrels = vec![qrel("q", "d10", 1)];
        let e = evaluate(&run, &qrels, &[Measure::Mrr(10)], EvalOptions::default());
        assert_eq!(e.means, vec![0.5]);
    }

    #[test]
    fn parses_families_and_cuts() {
        let m = Measure::parse("recall", &[10, 100]).unwrap();
        assert_eq!(m, vec![Measure::Recall(10), Measure::Recall(100)]);
        assert_eq!(
            Measure::parse("nDCG@5", &[]).unwrap(),
            vec![Measure::Ndcg(5)]
        );
        assert!(Measure::parse("map@10", &[]).is_err());
        assert!(Measure::parse("bogus", &[10]).is_err());
        assert!(Measure::parse("mrr", &[]).is_err());
    }
}
