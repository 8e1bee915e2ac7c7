//! `mine`: hard negatives per query, sampled deterministically (a pure function of `seed` and the
//! qid), from either a ranked run (+ qrels) or sentence-transformers' `msmarco-hard-negatives.jsonl`
//! (one ranked list per retrieval system). An optional teacher-score filter drops likely false
//! negatives. Output is written in query shards, the resume unit; the rows do not depend on where
//! shard boundaries fall.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use arrow::array::{Float32Array, StringArray};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::contract::{shard_file, Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{
    for_each_batch, read_ids, read_qrels, read_teacher_scores, write_negatives, NegativesRow,
};
use crate::rng::splitmix64;
use crate::text_input::{excerpt, Lines};

/// The mine stage kind.
pub struct Mine;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::with_default("run", ParamType::Artifact, "null", "a run over the training queries (e.g. BM25 or a SPLADE model); or give `hard_negatives`"),
    ParamSpec::with_default("hard_negatives", ParamType::File, "null", "sentence-transformers msmarco-hard-negatives.jsonl(.gz): {qid, pos, neg: {system: [pid...]}}; instead of `run`"),
    ParamSpec::with_default("systems", ParamType::StrList, "[]", "hard_negatives: the systems to take negatives from, each giving `negatives` (empty = every system of each line)"),
    ParamSpec::with_default("qrels", ParamType::Artifact, "null", "training qrels (required with `run`); every positive is excluded from negatives"),
    ParamSpec::with_default("docs", ParamType::Artifact, "null", "hard_negatives: the collection; every pid must be one of its ids"),
    ParamSpec::with_default("queries", ParamType::Artifact, "null", "hard_negatives: the training queries; every qid must be one of their ids"),
    ParamSpec::with_default("depth", ParamType::Int, "100", "consider the top `depth` documents of each ranked list"),
    ParamSpec::with_default("rank_range", ParamType::IntList, "[1, 100]", "[min, max] ranks (1-based, inclusive) negatives come from"),
    ParamSpec::with_default("negatives", ParamType::Int, "8", "negatives per query (per system with hard_negatives)"),
    ParamSpec::with_default(
        "sampling",
        ParamType::Choice(&["random", "top", "stratified"]),
        "\"random\"",
        "random: uniform in the window; top: the best-ranked; stratified: one per equal-width rank stratum",
    ),
    ParamSpec::with_default("seed", ParamType::Int, "7", "sampling seed (the same seed gives the same negatives)"),
    ParamSpec::with_default("queries_limit", ParamType::Int, "0", "keep at most this many queries (0 = all), in qid order (file order with hard_negatives)"),
    ParamSpec::with_default("source", ParamType::Str, "\"run\"", "label stored with each row (e.g. bm25, splade-round1); with hard_negatives the system name is stored"),
    ParamSpec::with_default("teacher_scores", ParamType::Artifact, "null", "teacher scores (a distill output) for the false-negative filter"),
    ParamSpec::with_default("margin", ParamType::Float, "null", "drop a negative whose teacher score >= the best positive's teacher score - margin"),
    ParamSpec::with_default("max_score", ParamType::Float, "null", "drop a negative whose teacher score is above this value"),
    ParamSpec::with_default(
        "unscored",
        ParamType::Choice(&["keep", "drop"]),
        "\"keep\"",
        "with teacher_scores: keep or drop candidates that have no teacher score",
    ),
    ParamSpec::with_default("shard_size", ParamType::Int, "50000", "queries per output shard (the resume unit)"),
];

#[derive(Deserialize)]
struct Params {
    run: Option<String>,
    hard_negatives: Option<String>,
    systems: Vec<String>,
    qrels: Option<String>,
    depth: i64,
    rank_range: Vec<i64>,
    negatives: i64,
    sampling: String,
    seed: i64,
    queries_limit: i64,
    source: String,
    teacher_scores: Option<String>,
    margin: Option<f64>,
    max_score: Option<f64>,
    unscored: String,
    shard_size: i64,
}

/// Counters of a mining run, carried across shards in the resume state.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Stats {
    queries_kept: usize,
    queries_dropped_not_in_run: usize,
    queries_dropped_no_candidates: usize,
    queries_dropped_no_positives: usize,
    rows: usize,
    negatives: usize,
    rank_histogram: BTreeMap<String, usize>,
    per_source: BTreeMap<String, usize>,
    /// hard_negatives: lines that lack a requested system.
    system_missing_in_line: BTreeMap<String, usize>,
    candidates_seen: usize,
    dropped_margin: usize,
    dropped_max_score: usize,
    dropped_unscored: usize,
    kept_unscored: usize,
    queries_without_positive_score: usize,
    /// hard_negatives: every system named in the file so far.
    systems_seen: BTreeSet<String>,
}

/// A per-query random state: blake3 of (seed, key), so results do not depend on query order.
fn query_rng(seed: i64, key: &str) -> u64 {
    let h = blake3::hash(format!("{seed}\u{0}{key}").as_bytes());
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

use crate::parquet_io::TeacherIndex as Teacher;

/// The per-query work shared by both sources: rank window, positives excluded, teacher filter,
/// sampling.
struct Miner<'a> {
    p: &'a Params,
    teacher: Option<Teacher>,
    stats: Stats,
}

impl Miner<'_> {
    /// Mines one ranked list (`ranked`: dids best first) of `qid`; `None` if nothing is left.
    fn mine_list(
        &mut self,
        qid: &str,
        pos: &[String],
        ranked: &[&str],
        source: &str,
        rng_key: &str,
    ) -> Option<NegativesRow> {
        let (lo, hi) = (self.p.rank_range[0] as usize, self.p.rank_range[1] as usize);
        let scores = self
            .teacher
            .as_ref()
            .and_then(|t| t.query(qid).map(|q| (t, q)));
        let score_of = |d: &str| scores.and_then(|(t, q)| t.score(q, d));
        let best_pos = pos.iter().filter_map(|d| score_of(d)).reduce(f32::max);
        if self.teacher.is_some() && self.p.margin.is_some() && best_pos.is_none() {
            self.stats.queries_without_positive_score += 1;
        }
        let mut candidates: Vec<(&str, u32)> = Vec::new();
        for (i, d) in ranked.iter().take(self.p.depth as usize).enumerate() {
            let r = i + 1;
            if r < lo || r > hi || pos.iter().any(|x| x == d) {
                continue;
            }
            if self.teacher.is_some() {
                self.stats.candidates_seen += 1;
                match score_of(d) {
                    None if self.p.unscored == "drop" => {
                        self.stats.dropped_unscored += 1;
                        continue;
                    }
                    None => self.stats.kept_unscored += 1,
                    Some(s) => {
                        if self.p.max_score.is_some_and(|m| f64::from(s) > m) {
                            self.stats.dropped_max_score += 1;
                            continue;
                        }
                        if let (Some(m), Some(b)) = (self.p.margin, best_pos) {
                            if f64::from(s) >= f64::from(b) - m {
                                self.stats.dropped_margin += 1;
                                continue;
                            }
                        }
                    }
                }
            }
            candidates.push((d, r as u32));
        }
        if candidates.is_empty() {
            return None;
        }
        let mut rng = query_rng(self.p.seed, rng_key);
        let picked = sample(
            &candidates,
            self.p.negatives as usize,
            &self.p.sampling,
            &mut rng,
        );
        for (_, r) in &picked {
            let bucket = match r {
                1..=10 => "1-10",
                11..=50 => "11-50",
                51..=100 => "51-100",
                101..=200 => "101-200",
                _ => ">200",
            };
            *self.stats.rank_histogram.entry(bucket.into()).or_default() += 1;
        }
        self.stats.negatives += picked.len();
        self.stats.rows += 1;
        *self.stats.per_source.entry(source.into()).or_default() += picked.len();
        Some(NegativesRow {
            qid: qid.to_string(),
            pos: pos.to_vec(),
            neg: picked.iter().map(|x| x.0.to_string()).collect(),
            neg_rank: picked.iter().map(|x| x.1).collect(),
            source: source.to_string(),
        })
    }

    fn limit_reached(&self) -> bool {
        self.p.queries_limit > 0 && self.stats.queries_kept >= self.p.queries_limit as usize
    }
}

/// Run rows grouped by query, with documents interned (a 50M-row run would not fit as strings).
struct GroupedRun {
    docs: Vec<String>,
    lists: HashMap<String, Vec<(u32, f32)>>,
}

fn read_grouped_run(path: &Path, keep: &BTreeMap<String, Vec<String>>) -> Result<GroupedRun> {
    // One allocation per distinct document: the id → index map; the index → id table is built
    // from it at the end.
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut lists: Vec<Vec<(u32, f32)>> = Vec::new();
    let mut list_of: HashMap<String, usize> = HashMap::new();
    // Runs come grouped by query: look the query up once per group, not once per row.
    let mut current: Option<(String, Option<usize>)> = None;
    for_each_batch(path, &crate::schema::run(), |file, batch| {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| StageError::parquet(file, format!("column `{name}` missing")))
        };
        let (q, d, s) = (col("qid")?, col("did")?, col("score")?);
        let q = q.as_any().downcast_ref::<StringArray>();
        let d = d.as_any().downcast_ref::<StringArray>();
        let s = s.as_any().downcast_ref::<Float32Array>();
        let (Some(q), Some(d), Some(s)) = (q, d, s) else {
            return Err(StageError::parquet(file, "run columns mistyped"));
        };
        for i in 0..batch.num_rows() {
            let qid = q.value(i);
            let slot = match &current {
                Some((c, slot)) if c == qid => *slot,
                _ => {
                    let slot = keep.contains_key(qid).then(|| {
                        *list_of.entry(qid.to_string()).or_insert_with(|| {
                            lists.push(Vec::new());
                            lists.len() - 1
                        })
                    });
                    current = Some((qid.to_string(), slot));
                    slot
                }
            };
            let Some(slot) = slot else { continue };
            let did = d.value(i);
            let id = match interned.get(did) {
                Some(id) => *id,
                None => {
                    let id = interned.len() as u32;
                    interned.insert(did.to_string(), id);
                    id
                }
            };
            lists[slot].push((id, s.value(i)));
        }
        Ok(())
    })?;
    let mut docs = vec![String::new(); interned.len()];
    for (d, i) in interned {
        docs[i as usize] = d;
    }
    let lists = list_of
        .into_iter()
        .map(|(q, i)| (q, std::mem::take(&mut lists[i])))
        .collect();
    Ok(GroupedRun { docs, lists })
}

/// One line of `msmarco-hard-negatives.jsonl`.
#[derive(Deserialize)]
struct HardNegativesLine {
    qid: Value,
    pos: Vec<Value>,
    neg: BTreeMap<String, Vec<Value>>,
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

impl Stage for Mine {
    fn kind(&self) -> &'static str {
        "mine"
    }
    fn version(&self) -> u32 {
        2
    }
    fn doc(&self) -> &'static str {
        "run + qrels, or msmarco-hard-negatives.jsonl → hard negatives per query (rank window, sampling, teacher false-negative filter)"
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
        match (&p.run, &p.hard_negatives) {
            (Some(_), Some(_)) | (None, None) => {
                return Err((
                    "run".into(),
                    "give exactly one of `run` (with `qrels`) and `hard_negatives`".into(),
                ))
            }
            (Some(_), None) if p.qrels.is_none() => {
                return Err(("qrels".into(), "`run` needs `qrels`".into()))
            }
            _ => {}
        }
        if p.run.is_some() && !p.systems.is_empty() {
            return Err((
                "systems".into(),
                "`systems` selects lists of `hard_negatives`; a run has one list".into(),
            ));
        }
        if p.rank_range.len() != 2 || p.rank_range[0] < 1 || p.rank_range[1] < p.rank_range[0] {
            return Err((
                "rank_range".into(),
                "must be [min, max] with 1 <= min <= max".into(),
            ));
        }
        if p.negatives < 1 || p.depth < 1 || p.shard_size < 1 {
            return Err((
                "negatives".into(),
                "negatives, depth and shard_size must be positive".into(),
            ));
        }
        let filtering = p.margin.is_some() || p.max_score.is_some() || p.unscored == "drop";
        match (&p.teacher_scores, filtering) {
            (Some(_), false) => Err((
                "teacher_scores".into(),
                "set `margin`, `max_score` or `unscored = \"drop\"` to filter with teacher scores"
                    .into(),
            )),
            (None, true) => {
                let key = if p.margin.is_some() {
                    "margin"
                } else if p.max_score.is_some() {
                    "max_score"
                } else {
                    "unscored"
                };
                Err((
                    key.into(),
                    "the false-negative filter needs `teacher_scores`".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let p: Params = ctx.params_as()?;
        let dir = ctx.output_dir("negatives")?;
        let saved = ctx.resume_state();
        let saved_done = saved
            .as_ref()
            .and_then(|s| s.get("done").and_then(Value::as_u64))
            .unwrap_or(0) as usize;
        let done = ctx.committed_shards(&dir, usize::MAX);
        // Counters of the committed shards come back with them; if files went missing, start over.
        let (done, stats) = match saved.as_ref().and_then(|s| s.get("stats")) {
            Some(s) if done == saved_done && done > 0 => (
                done,
                serde_json::from_value::<Stats>(s.clone()).unwrap_or_default(),
            ),
            _ => (0, Stats::default()),
        };
        let started = std::time::Instant::now();
        let shard_size = p.shard_size as usize;
        let mut miner = Miner {
            p: &p,
            teacher: None,
            stats,
        };
        let mut shard = done;
        let finish_shard = |ctx: &StageContext, miner: &Miner, rows: &[NegativesRow], s: usize| {
            write_negatives(&shard_file(&dir, s), rows)?;
            ctx.save_resume_state(&json!({ "done": s + 1, "stats": miner.stats }))?;
            crate::contract::test_pause("SPLADE_TEST_MINE_SHARD_DELAY_MS");
            Ok::<(), StageError>(())
        };
        if p.run.is_some() {
            let qrels = read_qrels(ctx.input("qrels")?.path())?;
            let mut positives: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for q in qrels.into_iter().filter(|q| q.rel > 0) {
                positives.entry(q.qid).or_default().push(q.did);
            }
            if let Some(t) = ctx.inputs.get("teacher_scores") {
                let keep: HashSet<String> = positives.keys().cloned().collect();
                miner.teacher = Some(read_teacher_scores(t.path(), Some(&keep))?);
            }
            let mut run = read_grouped_run(ctx.input("run")?.path(), &positives)?;
            let qids: Vec<&String> = positives.keys().collect();
            let shards = qids.len().div_ceil(shard_size).max(1);
            let bar = ctx.progress(qids.len() as u64, "queries");
            bar.set_position((done * shard_size).min(qids.len()) as u64);
            while shard < shards && !miner.limit_reached() {
                let mut rows = Vec::new();
                for qid in qids.iter().skip(shard * shard_size).take(shard_size) {
                    if miner.limit_reached() {
                        break;
                    }
                    let pos = &positives[*qid];
                    let Some(list) = run.lists.get_mut(qid.as_str()) else {
                        miner.stats.queries_dropped_not_in_run += 1;
                        continue;
                    };
                    // Our own order (score desc, did desc, as trec_eval), whatever the rank column says.
                    let docs = &run.docs;
                    list.sort_by(|a, b| {
                        b.1.total_cmp(&a.1)
                            .then_with(|| docs[b.0 as usize].cmp(&docs[a.0 as usize]))
                    });
                    let ranked: Vec<&str> = list
                        .iter()
                        .take(p.depth as usize)
                        .map(|(d, _)| docs[*d as usize].as_str())
                        .collect();
                    match miner.mine_list(qid, pos, &ranked, &p.source, qid) {
                        Some(row) => {
                            miner.stats.queries_kept += 1;
                            rows.push(row);
                        }
                        None => miner.stats.queries_dropped_no_candidates += 1,
                    }
                }
                finish_shard(ctx, &miner, &rows, shard)?;
                bar.inc(shard_size as u64);
                shard += 1;
            }
            bar.finish_and_clear();
        } else {
            let path = ctx.input("hard_negatives")?.path().to_path_buf();
            let ids = |key: &str| -> Result<Option<HashSet<String>>> {
                ctx.inputs
                    .get(key)
                    .map(|i| read_ids(i.path()).map(|v| v.into_iter().collect()))
                    .transpose()
            };
            let (docs, queries) = (ids("docs")?, ids("queries")?);
            let mut qrel_pos: HashMap<String, Vec<String>> = HashMap::new();
            if let Some(q) = ctx.inputs.get("qrels") {
                for q in read_qrels(q.path())?.into_iter().filter(|q| q.rel > 0) {
                    qrel_pos.entry(q.qid).or_default().push(q.did);
                }
            }
            if let Some(t) = ctx.inputs.get("teacher_scores") {
                miner.teacher = Some(read_teacher_scores(t.path(), None)?);
            }
            let mut lines = Lines::open(&path)?;
            let mut skipped = 0usize;
            let mut rows = Vec::new();
            let mut in_shard = 0usize;
            while let Some(line) = lines.next_line() {
                let (no, text) = line?;
                if text.trim().is_empty() {
                    continue;
                }
                // Lines of committed shards are skipped unparsed.
                if skipped < done * shard_size {
                    skipped += 1;
                    continue;
                }
                if miner.limit_reached() {
                    break;
                }
                let bad = |m: String| StageError::malformed(&path, no, m);
                let l: HardNegativesLine = serde_json::from_str(text).map_err(|e| {
                    bad(format!(
                        "expected {{\"qid\": .., \"pos\": [..], \"neg\": {{system: [..]}}}}: {e} in {}",
                        excerpt(text)
                    ))
                })?;
                let qid = id_of(&l.qid)
                    .ok_or_else(|| bad(format!("qid {} is not an int or str id", l.qid)))?;
                if queries.as_ref().is_some_and(|q| !q.contains(&qid)) {
                    return Err(bad(format!("qid {qid} is not in the queries artifact")));
                }
                let check_doc = |v: &Value| -> Result<String> {
                    let d = id_of(v).ok_or_else(|| {
                        bad(format!("qid {qid}: pid {v} is not an int or str id"))
                    })?;
                    if docs.as_ref().is_some_and(|docs| !docs.contains(&d)) {
                        return Err(bad(format!(
                            "qid {qid}: pid {d} is not in the docs artifact"
                        )));
                    }
                    Ok(d)
                };
                let mut pos: Vec<String> = l.pos.iter().map(check_doc).collect::<Result<_>>()?;
                for d in qrel_pos.get(&qid).into_iter().flatten() {
                    if !pos.contains(d) {
                        pos.push(d.clone());
                    }
                }
                let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for (system, pids) in &l.neg {
                    miner.stats.systems_seen.insert(system.clone());
                    if p.systems.is_empty() || p.systems.contains(system) {
                        lists.insert(
                            system.as_str(),
                            pids.iter().map(check_doc).collect::<Result<_>>()?,
                        );
                    }
                }
                for s in &p.systems {
                    if !lists.contains_key(s.as_str()) {
                        *miner
                            .stats
                            .system_missing_in_line
                            .entry(s.clone())
                            .or_default() += 1;
                    }
                }
                if pos.is_empty() {
                    miner.stats.queries_dropped_no_positives += 1;
                } else {
                    let before = rows.len();
                    // In `systems` order when given, else by system name.
                    let order: Vec<&str> = if p.systems.is_empty() {
                        lists.keys().copied().collect()
                    } else {
                        p.systems
                            .iter()
                            .map(String::as_str)
                            .filter(|s| lists.contains_key(s))
                            .collect()
                    };
                    for system in order {
                        let ranked: Vec<&str> = lists[system].iter().map(String::as_str).collect();
                        let key = format!("{qid}\u{0}{system}");
                        if let Some(row) = miner.mine_list(&qid, &pos, &ranked, system, &key) {
                            rows.push(row);
                        }
                    }
                    if rows.len() > before {
                        miner.stats.queries_kept += 1;
                    } else {
                        miner.stats.queries_dropped_no_candidates += 1;
                    }
                }
                in_shard += 1;
                if in_shard == shard_size {
                    finish_shard(ctx, &miner, &rows, shard)?;
                    rows.clear();
                    in_shard = 0;
                    shard += 1;
                }
            }
            if in_shard > 0 || shard == 0 {
                finish_shard(ctx, &miner, &rows, shard)?;
                shard += 1;
            }
            // A requested system that no line has is a typo, not a sparse system.
            let seen = &miner.stats.systems_seen;
            if let Some(s) = p.systems.iter().find(|s| !seen.contains(*s)) {
                return Err(StageError::Param {
                    key: "systems".into(),
                    message: format!(
                        "no line of {} has system `{s}` (systems: {})",
                        path.display(),
                        seen.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        let stats = miner.stats;
        if stats.rows == 0 {
            return Err(StageError::Other(format!(
                "no query got negatives ({} absent from the run, {} with no candidate left in ranks {}..={} after filtering, {} without positives)",
                stats.queries_dropped_not_in_run,
                stats.queries_dropped_no_candidates,
                p.rank_range[0],
                p.rank_range[1],
                stats.queries_dropped_no_positives,
            )));
        }
        let per_query = stats.negatives as f64 / stats.queries_kept.max(1) as f64;
        let mut out = match serde_json::to_value(&stats) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if p.teacher_scores.is_none() {
            for k in [
                "candidates_seen",
                "dropped_margin",
                "dropped_max_score",
                "dropped_unscored",
                "kept_unscored",
                "queries_without_positive_score",
            ] {
                out.remove(k);
            }
        }
        out.insert("negatives_per_query".into(), json!(per_query));
        out.insert("shards".into(), json!(shard));
        out.insert("resumed_from_shard".into(), json!(done));
        out.insert(
            "seconds_this_run".into(),
            json!(started.elapsed().as_secs_f64()),
        );
        Ok(StageOutcome {
            summary: Some(format!(
                "{}: {} queries, {:.1} negatives/query, ranks {:?}\n",
                ctx.name, stats.queries_kept, per_query, stats.rank_histogram
            )),
            stats: out,
        })
    }
}
