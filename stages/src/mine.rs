//! `mine`: hard negatives from a ranked run — for each query, documents in a rank window that are
//! not judged relevant, sampled deterministically (a pure function of `seed` and the qid).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_qrels, read_run, write_negatives, NegativesRow};
use crate::rng::splitmix64;

/// The mine stage kind.
pub struct Mine;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("run", ParamType::Artifact, "a run over the training queries (e.g. BM25 or a SPLADE model)"),
    ParamSpec::required("qrels", ParamType::Artifact, "training qrels; every positive is excluded from negatives"),
    ParamSpec::with_default("depth", ParamType::Int, "100", "consider the top `depth` documents of each query"),
    ParamSpec::with_default("rank_range", ParamType::IntList, "[1, 100]", "[min, max] ranks (1-based, inclusive) negatives come from"),
    ParamSpec::with_default("negatives", ParamType::Int, "8", "negatives per query"),
    ParamSpec::with_default(
        "sampling",
        ParamType::Choice(&["random", "top", "stratified"]),
        "\"random\"",
        "random: uniform in the window; top: the best-ranked; stratified: one per equal-width rank stratum",
    ),
    ParamSpec::with_default("seed", ParamType::Int, "7", "sampling seed (the same seed gives the same negatives)"),
    ParamSpec::with_default("queries_limit", ParamType::Int, "0", "keep at most this many queries (0 = all), in qid order"),
    ParamSpec::with_default("source", ParamType::Str, "\"run\"", "label stored with each row (e.g. bm25, splade-round1)"),
];

#[derive(Deserialize)]
struct Params {
    depth: i64,
    rank_range: Vec<i64>,
    negatives: i64,
    sampling: String,
    seed: i64,
    queries_limit: i64,
    source: String,
}

/// A per-query random state: blake3 of (seed, qid), so results do not depend on query order.
fn query_rng(seed: i64, qid: &str) -> u64 {
    let h = blake3::hash(format!("{seed}\u{0}{qid}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Picks `n` of `candidates` (already in rank order) by `sampling`; returns them in rank order.
pub fn sample<T: Clone>(candidates: &[T], n: usize, sampling: &str, rng: &mut u64) -> Vec<T> {
    if candidates.len() <= n {
        return candidates.to_vec();
    }
    let mut picked: Vec<usize> = match sampling {
        "top" => (0..n).collect(),
        "stratified" => (0..n)
            .map(|s| {
                let lo = s * candidates.len() / n;
                let hi = ((s + 1) * candidates.len() / n).max(lo + 1);
                lo + (splitmix64(rng) % (hi - lo) as u64) as usize
            })
            .collect(),
        _ => {
            // Partial Fisher-Yates.
            let mut idx: Vec<usize> = (0..candidates.len()).collect();
            for i in 0..n {
                let j = i + (splitmix64(rng) % (idx.len() - i) as u64) as usize;
                idx.swap(i, j);
            }
            idx.truncate(n);
            idx
        }
    };
    picked.sort_unstable();
    picked.into_iter().map(|i| candidates[i].clone()).collect()
}

impl Stage for Mine {
    fn kind(&self) -> &'static str {
        "mine"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "run + qrels → hard negatives per query (rank window, random/top/stratified sampling)"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["negatives".into()]
    }
    fn check(&self, params: &Value) -> std::result::Result<(), (String, String)> {
        let p: Params =
            serde_json::from_value(params.clone()).map_err(|e| ("run".into(), e.to_string()))?;
        if p.rank_range.len() != 2 || p.rank_range[0] < 1 || p.rank_range[1] < p.rank_range[0] {
            return Err((
                "rank_range".into(),
                "must be [min, max] with 1 <= min <= max".into(),
            ));
        }
        if p.negatives < 1 || p.depth < 1 {
            return Err((
                "negatives".into(),
                "negatives and depth must be positive".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let p: Params = ctx.params_as()?;
        let run = read_run(ctx.input("run")?.path())?;
        let qrels = read_qrels(ctx.input("qrels")?.path())?;
        let mut positives: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut judged_relevant: HashSet<(&str, &str)> = HashSet::new();
        for q in &qrels {
            if q.rel > 0 {
                positives
                    .entry(q.qid.as_str())
                    .or_default()
                    .push(q.did.as_str());
                judged_relevant.insert((q.qid.as_str(), q.did.as_str()));
            }
        }
        let mut ranked: HashMap<&str, Vec<(&str, f32, u32)>> = HashMap::new();
        for r in &run {
            ranked
                .entry(r.qid.as_str())
                .or_default()
                .push((r.did.as_str(), r.score, r.rank));
        }
        let (lo, hi) = (p.rank_range[0] as usize, p.rank_range[1] as usize);
        let depth = p.depth as usize;
        let mut rows = Vec::new();
        let (mut no_run, mut no_negatives) = (0usize, 0usize);
        let mut rank_hist: BTreeMap<String, usize> = BTreeMap::new();
        for (qid, pos) in &positives {
            if p.queries_limit > 0 && rows.len() >= p.queries_limit as usize {
                break;
            }
            let Some(list) = ranked.get_mut(qid) else {
                no_run += 1;
                continue;
            };
            // Our own order (score desc, did desc, as trec_eval), whatever the rank column says.
            list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(a.0)));
            let candidates: Vec<(String, u32)> = list
                .iter()
                .take(depth)
                .enumerate()
                .map(|(i, (d, _, _))| (d.to_string(), i as u32 + 1))
                .filter(|(d, r)| {
                    (*r as usize) >= lo
                        && (*r as usize) <= hi
                        && !judged_relevant.contains(&(*qid, d.as_str()))
                })
                .collect();
            if candidates.is_empty() {
                no_negatives += 1;
                continue;
            }
            let mut rng = query_rng(p.seed, qid);
            let picked = sample(&candidates, p.negatives as usize, &p.sampling, &mut rng);
            for (_, r) in &picked {
                let bucket = match r {
                    1..=10 => "1-10",
                    11..=50 => "11-50",
                    51..=100 => "51-100",
                    101..=200 => "101-200",
                    _ => ">200",
                };
                *rank_hist.entry(bucket.to_string()).or_default() += 1;
            }
            rows.push(NegativesRow {
                qid: qid.to_string(),
                pos: pos.iter().map(|s| s.to_string()).collect(),
                neg: picked.iter().map(|x| x.0.clone()).collect(),
                neg_rank: picked.iter().map(|x| x.1).collect(),
                source: p.source.clone(),
            });
        }
        if rows.is_empty() {
            return Err(StageError::Other(format!(
                "no query got negatives ({} with positives: {no_run} absent from the run, {no_negatives} with no candidate in ranks {lo}..={hi})",
                positives.len()
            )));
        }
        write_negatives(&ctx.output_file("negatives"), &rows)?;
        let total: usize = rows.iter().map(|r| r.neg.len()).sum();
        let mut stats = Map::new();
        stats.insert("queries_kept".into(), json!(rows.len()));
        stats.insert("queries_dropped_not_in_run".into(), json!(no_run));
        stats.insert("queries_dropped_no_candidates".into(), json!(no_negatives));
        stats.insert(
            "negatives_per_query".into(),
            json!(total as f64 / rows.len() as f64),
        );
        stats.insert("rank_histogram".into(), json!(rank_hist));
        Ok(StageOutcome {
            summary: Some(format!(
                "{}: {} queries, {:.1} negatives/query, ranks {:?}\n",
                ctx.name,
                rows.len(),
                total as f64 / rows.len() as f64,
                rank_hist
            )),
            stats,
        })
    }
}
