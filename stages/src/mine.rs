//! `mine`: hard negatives per query, sampled deterministically (a pure function of `seed` and the
//! qid), from either a ranked run (+ qrels) or sentence-transformers' `msmarco-hard-negatives.jsonl`
//! (one ranked list per retrieval system). An optional teacher-score filter drops likely false
//! negatives. Output is written in query shards, the resume unit; the rows do not depend on where
//! shard boundaries fall.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::{Result, StageError};
use crate::params::ParamError;
use crate::parquet_io::{for_each_batch, read_ids, read_qrels, write_negatives, NegativesRow};
use crate::rng::splitmix64;
use crate::sharded::ShardedOutput;
use crate::teacher::{read_teacher_scores, TeacherIndex};
use crate::text_input::{excerpt, Lines};

/// The mine stage kind.
pub struct Mine;

crate::param_choice! {
    /// How `mine` picks a query's negatives among its candidates.
    pub enum Sampling {
        /// Uniformly at random in the rank window.
        Random = "random",
        /// The best-ranked candidates.
        Top = "top",
        /// One per equal-width rank stratum.
        Stratified = "stratified",
    }
}

crate::param_choice! {
    /// What `mine` does with a hard-negatives line whose query is not in `queries`.
    pub enum OtherQueries {
        /// Fail, naming the line (a wrong `queries` artifact is the usual cause).
        Error = "error",
        /// Skip the line (counted as `queries_dropped_not_in_queries`): mining for a subset.
        Skip = "skip",
    }
}

crate::param_choice! {
    /// What the teacher filter does with a candidate the teacher did not score.
    pub enum Unscored {
        /// Keep it (counted as `kept_unscored`).
        Keep = "keep",
        /// Drop it (counted as `dropped_unscored`).
        Drop = "drop",
    }
}

crate::stage_params! {
    /// Params of [`Mine`].
    pub struct MineParams {
        /// a run over the training queries (e.g. BM25 or a SPLADE model); or give `hard_negatives`
        run: Option<String> [Artifact] = "null",
        /// sentence-transformers msmarco-hard-negatives.jsonl(.gz): {qid, pos, neg: {system: [pid...]}}; instead of `run`
        hard_negatives: Option<String> [File] = "null",
        /// hard_negatives: the systems to take negatives from, each giving `negatives` (empty = every system of each line)
        systems: Vec<String> [StrList] = "[]",
        /// training qrels (required with `run`); every positive is excluded from negatives
        qrels: Option<String> [Artifact] = "null",
        /// hard_negatives: the collection; every pid must be one of its ids
        docs: Option<String> [Artifact] = "null",
        /// hard_negatives: the training queries; every qid must be one of their ids (see `other_queries`)
        queries: Option<String> [Artifact] = "null",
        /// hard_negatives: a line whose qid is not in `queries`: error, or skip it (mine for a subset of the queries)
        other_queries: OtherQueries [Choice(OtherQueries::NAMES)] = "\"error\"",
        /// consider the top `depth` documents of each ranked list
        depth: i64 [Int] = "100",
        /// [min, max] ranks (1-based, inclusive) negatives come from
        rank_range: Vec<i64> [IntList] = "[1, 100]",
        /// negatives per query (per system with hard_negatives)
        negatives: i64 [Int] = "8",
        /// random: uniform in the window; top: the best-ranked; stratified: one per equal-width rank stratum
        sampling: Sampling [Choice(Sampling::NAMES)] = "\"random\"",
        /// sampling seed (the same seed gives the same negatives)
        seed: i64 [Int] = "7",
        /// keep at most this many queries (0 = all), in qid order (file order with hard_negatives)
        queries_limit: i64 [Int] = "0",
        /// label stored with each row (e.g. bm25, splade-round1); with hard_negatives the system name is stored
        source: String [Str] = "\"run\"",
        /// teacher scores (a distill output) for the false-negative filter
        teacher_scores: Option<String> [Artifact] = "null",
        /// drop a negative whose teacher score >= the best positive's teacher score - margin
        margin: Option<f64> [Float] = "null",
        /// drop a negative whose teacher score is above this value
        max_score: Option<f64> [Float] = "null",
        /// with teacher_scores: keep or drop candidates that have no teacher score
        unscored: Unscored [Choice(Unscored::NAMES)] = "\"keep\"",
        /// queries per output shard (the resume unit)
        shard_size: i64 [Int] = "50000",
    }
}

/// Counters of a mining run, carried across shards in the resume state.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Stats {
    queries_kept: usize,
    queries_dropped_not_in_run: usize,
    queries_dropped_no_candidates: usize,
    queries_dropped_no_positives: usize,
    /// hard_negatives with `other_queries = "skip"`: lines whose query is not in `queries`.
    #[serde(default)]
    queries_dropped_not_in_queries: usize,
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

impl Stats {
    /// The teacher filter's verdict on a candidate with teacher score `score` (counted): whether
    /// it stays a candidate.
    fn teacher_keeps(&mut self, p: &MineParams, score: Option<f32>, best_pos: Option<f32>) -> bool {
        self.candidates_seen += 1;
        match score {
            None if p.unscored == Unscored::Drop => {
                self.dropped_unscored += 1;
                false
            }
            None => {
                self.kept_unscored += 1;
                true
            }
            Some(s) => {
                if p.max_score.is_some_and(|m| f64::from(s) > m) {
                    self.dropped_max_score += 1;
                    return false;
                }
                if let (Some(m), Some(b)) = (p.margin, best_pos) {
                    if f64::from(s) >= f64::from(b) - m {
                        self.dropped_margin += 1;
                        return false;
                    }
                }
                true
            }
        }
    }

    /// The counters as manifest stats; the teacher filter's only when it ran.
    fn to_map(&self, teacher: bool) -> Map<String, Value> {
        let mut out = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if !teacher {
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
        out
    }
}

/// A per-query random state: blake3 of (seed, key), so results do not depend on query order.
fn query_rng(seed: i64, key: &str) -> u64 {
    let h = blake3::hash(format!("{seed}\u{0}{key}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Picks `n` of `candidates` (already in rank order) by `sampling`; returns them in rank order.
pub fn sample<T: Clone>(candidates: &[T], n: usize, sampling: Sampling, rng: &mut u64) -> Vec<T> {
    if candidates.len() <= n {
        return candidates.to_vec();
    }
    let mut picked: Vec<usize> = match sampling {
        Sampling::Top => (0..n).collect(),
        Sampling::Stratified => (0..n)
            .map(|s| {
                let lo = s * candidates.len() / n;
                let hi = ((s + 1) * candidates.len() / n).max(lo + 1);
                lo + (splitmix64(rng) % (hi - lo) as u64) as usize
            })
            .collect(),
        Sampling::Random => {
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

/// The per-query work shared by both sources: rank window, positives excluded, teacher filter,
/// sampling.
struct Miner<'a> {
    p: &'a MineParams,
    teacher: Option<TeacherIndex>,
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
        let candidates = self.candidates(qid, pos, ranked);
        if candidates.is_empty() {
            return None;
        }
        let mut rng = query_rng(self.p.seed, rng_key);
        let picked = sample(
            &candidates,
            self.p.negatives as usize,
            self.p.sampling,
            &mut rng,
        );
        self.count_picked(&picked, source);
        Some(NegativesRow {
            qid: qid.to_string(),
            pos: pos.to_vec(),
            neg: picked.iter().map(|x| x.0.to_string()).collect(),
            neg_rank: picked.iter().map(|x| x.1).collect(),
            source: source.to_string(),
        })
    }

    /// The dids of `ranked` in the rank window that are not positives and pass the teacher
    /// filter, with their ranks.
    fn candidates<'r>(
        &mut self,
        qid: &str,
        pos: &[String],
        ranked: &[&'r str],
    ) -> Vec<(&'r str, u32)> {
        let p = self.p;
        let (lo, hi) = (p.rank_range[0] as usize, p.rank_range[1] as usize);
        let scores = self
            .teacher
            .as_ref()
            .and_then(|t| t.query(qid).map(|q| (t, q)));
        let score_of = |d: &str| scores.and_then(|(t, q)| t.score(q, d));
        let best_pos = pos.iter().filter_map(|d| score_of(d)).reduce(f32::max);
        if self.teacher.is_some() && p.margin.is_some() && best_pos.is_none() {
            self.stats.queries_without_positive_score += 1;
        }
        let mut candidates: Vec<(&str, u32)> = Vec::new();
        for (i, d) in ranked.iter().take(p.depth as usize).enumerate() {
            let r = i + 1;
            if r < lo || r > hi || pos.iter().any(|x| x == d) {
                continue;
            }
            if self.teacher.is_some() && !self.stats.teacher_keeps(p, score_of(d), best_pos) {
                continue;
            }
            candidates.push((*d, r as u32));
        }
        candidates
    }

    /// Counts a row's picked negatives (rank histogram, per source).
    fn count_picked(&mut self, picked: &[(&str, u32)], source: &str) {
        for (_, r) in picked {
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
    }

    /// Whether `queries_limit` queries are kept already.
    fn limit_reached(&self) -> bool {
        self.p.queries_limit > 0 && self.stats.queries_kept >= self.p.queries_limit as usize
    }

    /// Mines the run lists of `qids` (one shard's queries) against their `positives`.
    fn mine_run_queries(
        &mut self,
        run: &mut GroupedRun,
        positives: &BTreeMap<String, Vec<String>>,
        qids: &[&String],
    ) -> Vec<NegativesRow> {
        let p = self.p;
        let mut rows = Vec::new();
        for qid in qids {
            if self.limit_reached() {
                break;
            }
            let Some(list) = run.lists.get_mut(qid.as_str()) else {
                self.stats.queries_dropped_not_in_run += 1;
                continue;
            };
            let ranked = ranked_dids(list, &run.docs, p.depth as usize);
            match self.mine_list(qid, &positives[*qid], &ranked, &p.source, qid) {
                Some(row) => {
                    self.stats.queries_kept += 1;
                    rows.push(row);
                }
                None => self.stats.queries_dropped_no_candidates += 1,
            }
        }
        rows
    }

    /// Mines one `hard_negatives` line into `rows`: a row per system with candidates left.
    fn mine_line(&mut self, line: &HardNegativesEntry, rows: &mut Vec<NegativesRow>) {
        let p = self.p;
        for s in &p.systems {
            if !line.lists.contains_key(s) {
                *self
                    .stats
                    .system_missing_in_line
                    .entry(s.clone())
                    .or_default() += 1;
            }
        }
        if line.pos.is_empty() {
            self.stats.queries_dropped_no_positives += 1;
            return;
        }
        let before = rows.len();
        for system in line.system_order(&p.systems) {
            let ranked: Vec<&str> = line.lists[system].iter().map(String::as_str).collect();
            let key = format!("{}\u{0}{system}", line.qid);
            if let Some(row) = self.mine_list(&line.qid, &line.pos, &ranked, system, &key) {
                rows.push(row);
            }
        }
        if rows.len() > before {
            self.stats.queries_kept += 1;
        } else {
            self.stats.queries_dropped_no_candidates += 1;
        }
    }
}

/// The positives (rel > 0) of a qrels artifact, by qid.
fn read_positives(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let mut positives: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for q in read_qrels(path)?.into_iter().filter(|q| q.rel > 0) {
        positives.entry(q.qid).or_default().push(q.did);
    }
    Ok(positives)
}

/// Run rows grouped by query, with documents interned (a 50M-row run would not fit as strings).
struct GroupedRun {
    docs: Vec<String>,
    lists: HashMap<String, Vec<(u32, f32)>>,
}

/// Reads the run rows of the queries in `keep`, grouped by query.
fn read_grouped_run(path: &Path, keep: &BTreeMap<String, Vec<String>>) -> Result<GroupedRun> {
    // One allocation per distinct document: the id → index map; the index → id table is built
    // from it at the end.
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut lists: Vec<Vec<(u32, f32)>> = Vec::new();
    let mut list_of: HashMap<String, usize> = HashMap::new();
    // Runs come grouped by query: look the query up once per group, not once per row.
    let mut current: Option<(String, Option<usize>)> = None;
    for_each_batch(path, &crate::schema::run(), |file, batch| {
        let (q, d, s) = run_columns(file, &batch)?;
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
            lists[slot].push((id, s.value(i) as f32));
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

/// The `qid`, `did` and `score` columns of a batch of run rows.
fn run_columns<'b>(
    file: &Path,
    batch: &'b RecordBatch,
) -> Result<(&'b StringArray, &'b StringArray, &'b Float64Array)> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| StageError::parquet(file, format!("column `{name}` missing")))
    };
    let (q, d, s) = (col("qid")?, col("did")?, col("score")?);
    let q = q.as_any().downcast_ref::<StringArray>();
    let d = d.as_any().downcast_ref::<StringArray>();
    let s = s.as_any().downcast_ref::<Float64Array>();
    let (Some(q), Some(d), Some(s)) = (q, d, s) else {
        return Err(StageError::parquet(file, "run columns mistyped"));
    };
    Ok((q, d, s))
}

/// Sorts a run list in our own order (score desc, did desc, as trec_eval), whatever the rank
/// column says, and returns its top `depth` dids.
fn ranked_dids<'d>(list: &mut [(u32, f32)], docs: &'d [String], depth: usize) -> Vec<&'d str> {
    list.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| docs[b.0 as usize].cmp(&docs[a.0 as usize]))
    });
    list.iter()
        .take(depth)
        .map(|(d, _)| docs[*d as usize].as_str())
        .collect()
}

/// One line of `msmarco-hard-negatives.jsonl`.
#[derive(Deserialize)]
struct HardNegativesLine {
    qid: Value,
    pos: Vec<Value>,
    neg: BTreeMap<String, Vec<Value>>,
}

/// The id a JSON int or string stands for.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A checked `hard_negatives` line: its qid, positives, and the ranked lists of the selected
/// systems.
struct HardNegativesEntry {
    qid: String,
    pos: Vec<String>,
    lists: BTreeMap<String, Vec<String>>,
}

impl HardNegativesEntry {
    /// The systems to mine, in `systems` order when given, else by system name.
    fn system_order<'s>(&'s self, systems: &'s [String]) -> Vec<&'s str> {
        if systems.is_empty() {
            self.lists.keys().map(String::as_str).collect()
        } else {
            systems
                .iter()
                .map(String::as_str)
                .filter(|s| self.lists.contains_key(*s))
                .collect()
        }
    }
}

/// The `hard_negatives` file and what its lines are checked against and completed with.
struct HardNegativesFile {
    path: PathBuf,
    docs: Option<HashSet<String>>,
    queries: Option<HashSet<String>>,
    /// Positives of the optional qrels, added to each line's.
    qrel_pos: BTreeMap<String, Vec<String>>,
}

impl HardNegativesFile {
    /// The file's path and the optional `docs`, `queries` and `qrels` inputs.
    fn open(ctx: &StageContext) -> Result<Self> {
        let path = ctx.input("hard_negatives")?.path().to_path_buf();
        let ids = |key: &str| -> Result<Option<HashSet<String>>> {
            ctx.inputs
                .get(key)
                .map(|i| read_ids(i.path()).map(|v| v.into_iter().collect()))
                .transpose()
        };
        let (docs, queries) = (ids("docs")?, ids("queries")?);
        let qrel_pos = match ctx.inputs.get("qrels") {
            Some(q) => read_positives(q.path())?,
            None => BTreeMap::new(),
        };
        Ok(HardNegativesFile {
            path,
            docs,
            queries,
            qrel_pos,
        })
    }

    /// Parses and checks line `no`, keeping the lists of `systems` (all when empty); every
    /// system it names goes into `seen`. `None`: a query not in `queries`, skipped.
    fn parse(
        &self,
        no: usize,
        text: &str,
        systems: &[String],
        other_queries: OtherQueries,
        seen: &mut BTreeSet<String>,
    ) -> Result<Option<HardNegativesEntry>> {
        let bad = |m: String| StageError::malformed(&self.path, no, m);
        let l: HardNegativesLine = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "expected {{\"qid\": .., \"pos\": [..], \"neg\": {{system: [..]}}}}: {e} in {}",
                excerpt(text)
            ))
        })?;
        let qid =
            id_of(&l.qid).ok_or_else(|| bad(format!("qid {} is not an int or str id", l.qid)))?;
        if self.queries.as_ref().is_some_and(|q| !q.contains(&qid)) {
            if other_queries == OtherQueries::Skip {
                return Ok(None);
            }
            return Err(bad(format!(
                "qid {qid} is not in the queries artifact (other_queries = \"skip\" mines \
                 only the queries it has)"
            )));
        }
        let check_doc = |v: &Value| -> Result<String> {
            let d = id_of(v)
                .ok_or_else(|| bad(format!("qid {qid}: pid {v} is not an int or str id")))?;
            if self.docs.as_ref().is_some_and(|docs| !docs.contains(&d)) {
                return Err(bad(format!(
                    "qid {qid}: pid {d} is not in the docs artifact"
                )));
            }
            Ok(d)
        };
        let mut pos: Vec<String> = l.pos.iter().map(check_doc).collect::<Result<_>>()?;
        for d in self.qrel_pos.get(&qid).into_iter().flatten() {
            if !pos.contains(d) {
                pos.push(d.clone());
            }
        }
        let mut lists = BTreeMap::new();
        for (system, pids) in l.neg {
            seen.insert(system.clone());
            if systems.is_empty() || systems.contains(&system) {
                let ranked = pids.iter().map(check_doc).collect::<Result<_>>()?;
                lists.insert(system, ranked);
            }
        }
        Ok(Some(HardNegativesEntry { qid, pos, lists }))
    }
}

/// A requested system that no line has is a typo, not a sparse system.
fn check_systems_seen(systems: &[String], seen: &BTreeSet<String>, path: &Path) -> Result<()> {
    match systems.iter().find(|s| !seen.contains(*s)) {
        Some(s) => Err(StageError::Param {
            key: "systems".into(),
            message: format!(
                "no line of {} has system `{s}` (systems: {})",
                path.display(),
                seen.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        }),
        None => Ok(()),
    }
}

/// The `negatives` output: shards written in order, each committed with the counters so far.
struct NegativeShards {
    out: ShardedOutput,
    /// The shard written next.
    next: usize,
}

impl NegativeShards {
    /// Opens the output; the counters of committed shards come back with them, and if files went
    /// missing the run starts over.
    fn open(ctx: &StageContext) -> Result<(Self, Stats)> {
        let out = ShardedOutput::open(ctx, "negatives", usize::MAX)?;
        let (next, stats) = match out.saved("stats") {
            Some(s) if out.resumed_cleanly() => (
                out.committed(),
                serde_json::from_value::<Stats>(s.clone()).unwrap_or_default(),
            ),
            _ => (0, Stats::default()),
        };
        Ok((NegativeShards { out, next }, stats))
    }

    /// Writes `rows` as the next shard and commits it with `stats`.
    fn write(&mut self, ctx: &StageContext, rows: &[NegativesRow], stats: &Stats) -> Result<()> {
        write_negatives(&self.out.path(self.next), rows)?;
        let stats = serde_json::to_value(stats)
            .map_err(|e| StageError::Other(format!("saving mine stats: {e}")))?;
        self.out.commit(
            ctx,
            self.next,
            Map::from_iter([("stats".to_string(), stats)]),
        )?;
        crate::contract::test_pause("SPLADE_TEST_MINE_SHARD_DELAY_MS");
        self.next += 1;
        Ok(())
    }
}

/// Mines the run's lists of the judged queries, `shard_size` queries a shard in qid order.
fn from_run(ctx: &StageContext, miner: &mut Miner<'_>, shards: &mut NegativeShards) -> Result<()> {
    let p = miner.p;
    let positives = read_positives(ctx.input("qrels")?.path())?;
    if let Some(t) = ctx.inputs.get("teacher_scores") {
        let keep: HashSet<String> = positives.keys().cloned().collect();
        miner.teacher = Some(read_teacher_scores(t.path(), Some(&keep))?);
    }
    let mut run = read_grouped_run(ctx.input("run")?.path(), &positives)?;
    let qids: Vec<&String> = positives.keys().collect();
    let shard_size = p.shard_size as usize;
    let count = qids.len().div_ceil(shard_size).max(1);
    let bar = ctx.progress(qids.len() as u64, "queries");
    bar.set_position((shards.next * shard_size).min(qids.len()) as u64);
    while shards.next < count && !miner.limit_reached() {
        let lo = (shards.next * shard_size).min(qids.len());
        let hi = (lo + shard_size).min(qids.len());
        let rows = miner.mine_run_queries(&mut run, &positives, &qids[lo..hi]);
        shards.write(ctx, &rows, &miner.stats)?;
        bar.inc(shard_size as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Mines the `hard_negatives` lines, `shard_size` lines a shard in file order.
fn from_hard_negatives(
    ctx: &StageContext,
    miner: &mut Miner<'_>,
    shards: &mut NegativeShards,
) -> Result<()> {
    let p = miner.p;
    let file = HardNegativesFile::open(ctx)?;
    if let Some(t) = ctx.inputs.get("teacher_scores") {
        miner.teacher = Some(read_teacher_scores(t.path(), None)?);
    }
    let shard_size = p.shard_size as usize;
    let committed_lines = shards.next * shard_size;
    let mut lines = Lines::open(&file.path)?;
    let (mut skipped, mut in_shard, mut rows) = (0usize, 0usize, Vec::new());
    while let Some(line) = lines.next_line() {
        let (no, text) = line?;
        if text.trim().is_empty() {
            continue;
        }
        // Lines of committed shards are skipped unparsed.
        if skipped < committed_lines {
            skipped += 1;
            continue;
        }
        if miner.limit_reached() {
            break;
        }
        let entry = file.parse(
            no,
            text,
            &p.systems,
            p.other_queries,
            &mut miner.stats.systems_seen,
        )?;
        match entry {
            Some(entry) => miner.mine_line(&entry, &mut rows),
            None => miner.stats.queries_dropped_not_in_queries += 1,
        }
        in_shard += 1;
        if in_shard == shard_size {
            shards.write(ctx, &rows, &miner.stats)?;
            rows.clear();
            in_shard = 0;
        }
    }
    if in_shard > 0 || shards.next == 0 {
        shards.write(ctx, &rows, &miner.stats)?;
    }
    check_systems_seen(&p.systems, &miner.stats.systems_seen, &file.path)
}

/// The stats and summary of a finished run; an error when no query got negatives.
fn outcome(
    ctx: &StageContext,
    p: &MineParams,
    stats: Stats,
    shards: usize,
    resumed_from: usize,
    started: Instant,
) -> Result<StageOutcome> {
    if stats.rows == 0 {
        return Err(StageError::Other(format!(
            "no query got negatives ({} absent from the run, {} not in `queries`, {} with no candidate left in ranks {}..={} after filtering, {} without positives)",
            stats.queries_dropped_not_in_run,
            stats.queries_dropped_not_in_queries,
            stats.queries_dropped_no_candidates,
            p.rank_range[0],
            p.rank_range[1],
            stats.queries_dropped_no_positives,
        )));
    }
    let per_query = stats.negatives as f64 / stats.queries_kept.max(1) as f64;
    let mut out = stats.to_map(p.teacher_scores.is_some());
    out.insert("negatives_per_query".into(), json!(per_query));
    out.insert("shards".into(), json!(shards));
    out.insert("resumed_from_shard".into(), json!(resumed_from));
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

/// `run` with `qrels`, or `hard_negatives`, but not both; `systems` only with `hard_negatives`.
fn check_source(p: &MineParams) -> std::result::Result<(), ParamError> {
    match (&p.run, &p.hard_negatives) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ParamError::new(
                "run",
                "give exactly one of `run` (with `qrels`) and `hard_negatives`",
            ))
        }
        (Some(_), None) if p.qrels.is_none() => {
            return Err(ParamError::new("qrels", "`run` needs `qrels`"))
        }
        _ => {}
    }
    if p.run.is_some() && !p.systems.is_empty() {
        return Err(ParamError::new(
            "systems",
            "`systems` selects lists of `hard_negatives`; a run has one list",
        ));
    }
    Ok(())
}

/// `teacher_scores` and the filter settings come together.
fn check_teacher_filter(p: &MineParams) -> std::result::Result<(), ParamError> {
    let filtering = p.margin.is_some() || p.max_score.is_some() || p.unscored == Unscored::Drop;
    match (&p.teacher_scores, filtering) {
        (Some(_), false) => Err(ParamError::new(
            "teacher_scores",
            "set `margin`, `max_score` or `unscored = \"drop\"` to filter with teacher scores",
        )),
        (None, true) => {
            let key = if p.margin.is_some() {
                "margin"
            } else if p.max_score.is_some() {
                "max_score"
            } else {
                "unscored"
            };
            Err(ParamError::new(
                key,
                "the false-negative filter needs `teacher_scores`",
            ))
        }
        _ => Ok(()),
    }
}

impl TypedStage for Mine {
    type Params = MineParams;
    const KIND: &'static str = "mine";
    const VERSION: u32 = 2;
    const STOPS_AT_CHECKPOINTS: bool = true;
    const DOC: &'static str = "run + qrels, or msmarco-hard-negatives.jsonl → hard negatives per query (rank window, sampling, teacher false-negative filter)";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "run" => Some(&[Holds::Run]),
            "qrels" => Some(&[Holds::Qrels]),
            "docs" | "queries" => Some(&[Holds::Texts]),
            "teacher_scores" => Some(&[Holds::TeacherScores]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &MineParams) -> Vec<String> {
        vec!["negatives".into()]
    }

    fn check(&self, p: &MineParams) -> std::result::Result<(), ParamError> {
        check_source(p)?;
        if p.rank_range.len() != 2 || p.rank_range[0] < 1 || p.rank_range[1] < p.rank_range[0] {
            return Err(ParamError::new(
                "rank_range",
                "must be [min, max] with 1 <= min <= max",
            ));
        }
        for (key, value) in [
            ("negatives", p.negatives),
            ("depth", p.depth),
            ("shard_size", p.shard_size),
        ] {
            if value < 1 {
                return Err(ParamError::new(
                    key,
                    format!("negatives, depth and shard_size must be positive, got {value}"),
                ));
            }
        }
        if p.queries_limit < 0 {
            return Err(ParamError::new(
                "queries_limit",
                format!("must be >= 0 (0 = all queries), got {}", p.queries_limit),
            ));
        }
        check_teacher_filter(p)
    }

    fn run(&self, p: MineParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let (mut shards, stats) = NegativeShards::open(ctx)?;
        let resumed_from = shards.next;
        let started = Instant::now();
        let mut miner = Miner {
            p: &p,
            teacher: None,
            stats,
        };
        if p.run.is_some() {
            from_run(ctx, &mut miner, &mut shards)?;
        } else {
            from_hard_negatives(ctx, &mut miner, &mut shards)?;
        }
        outcome(ctx, &p, miner.stats, shards.next, resumed_from, started)
    }
}
