//! `retrieve`: query vectors × index → top-k run (qid, did, rank, score), batched over queries
//! with rayon and resumable per batch.

pub mod algorithms;
pub mod approximate;
pub mod block_max;
pub mod exact;
pub mod rescore;
pub mod topk;

use rayon::prelude::*;
use serde_json::{json, Map};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::encode::EncodeMode;
use crate::error::{Result, StageError};
use crate::index::reader::InvertedIndex;
use crate::model::encoder::{prune, Pooling};
use crate::model::text_encoder::{EncodeOptions, TextEncoder};
use crate::model::Precision;
use crate::params::{at_most, ParamError};
use crate::parquet_io::{
    read_id_text, read_query_vectors, read_run, weights_past, write_run, RunRow, SparseVector,
    MAX_QUERY_WEIGHT_SUM,
};
use crate::sharded::ShardedOutput;
use algorithms::{exhaustive, maxscore, QUERY_SCALE};
use approximate::{ApproximateIndex, ApproximateScratch, BuildKnobs, SearchKnobs};
use block_max::{block_max, BlockMaxScratch, RangeMaxima};
use rescore::ForwardIndex;

/// Text queries are encoded as the encode stage's defaults do: batches of 32 texts, length-sorted
/// within windows of 2048, 8192 vocabulary terms projected at a time.
const ENCODE_BATCH: usize = 32;
const ENCODE_SORT_WINDOW: usize = 2048;
const ENCODE_VOCAB_CHUNK: usize = 8192;

/// The most documents per query `k` may ask for.
const MAX_K: i64 = 1_000_000;

/// The retrieve stage kind.
pub struct Retrieve;

crate::param_choice! {
    /// How `retrieve` walks the index (all give the same top-k).
    pub enum Algorithm {
        /// Term-at-a-time over every posting, a decoded block at a time.
        Exhaustive = "exhaustive",
        /// Safe MaxScore dynamic pruning.
        Maxscore = "maxscore",
        /// Safe block-max pruning over doc ranges.
        BlockMax = "block_max",
        /// Seismic-style approximate search (pruned, clustered, summarised lists; see the
        /// `approx_*` knobs): faster, not exact.
        Approximate = "approximate",
    }
}

crate::stage_params! {
    /// Params of [`Retrieve`].
    pub struct RetrieveParams {
        /// an index (`<stage>.index`)
        index: String [Artifact],
        /// query sparse vectors (or `query_text`: exactly one of the two)
        queries: Option<String> [Artifact] = "null",
        /// queries (id, text), encoded inside the stage with `model` (or `queries`)
        query_text: Option<String> [Artifact] = "null",
        /// with `query_text`: the query encoder, a model directory or a trained model ("train.model")
        model: Option<String> [FileOrArtifact] = "null",
        /// with `query_text`: splade, or bag_of_words (binary bag of the model tokenizer's tokens)
        mode: EncodeMode [Choice(EncodeMode::NAMES)] = "\"splade\"",
        /// with `query_text`: tokens per query, special tokens included
        max_length: i64 [Int] = "256",
        /// with `query_text`: compute precision of the model (as encode's)
        precision: Precision [Choice(Precision::NAMES)] = "\"f32\"",
        /// documents per query
        k: i64 [Int] = "1000",
        /// exhaustive term-at-a-time, safe dynamic pruning with the same top-k (maxscore, block_max: doc-range bounds), or approximate (Seismic-style, see `approx_*`)
        algorithm: Algorithm [Choice(Algorithm::NAMES)] = "\"exhaustive\"",
        /// queries per output shard (the resume unit)
        batch_size: i64 [Int] = "10000",
        /// drop documents whose id equals the query id
        remove_self_matches: bool [Bool] = "false",
        /// drop hits scoring below this
        min_score: f64 [Float] = "0.0",
        /// also write a TREC run file (output `trec`)
        trec: bool [Bool] = "false",
        /// two-step SPLADE: search the index with each query's `query_top_k` strongest terms (0 = all)
        query_top_k: i64 [Int] = "0",
        /// two-step SPLADE: the index's documents as full vectors (e.g. an unpruned encode's vectors); the index pass's candidates are rescored by exact dot products with the full queries
        rescore: Option<String> [Artifact] = "null",
        /// with `rescore`: candidates taken from the index pass (0 = k)
        rescore_depth: i64 [Int] = "0",
        /// approximate: postings kept per term (its highest impacts)
        approx_postings: i64 [Int] = "3500",
        /// approximate: centroids per list, as a fraction of its kept postings (block count)
        approx_centroid_fraction: f64 [Float] = "0.1",
        /// approximate: share of a block summary's impact mass kept
        approx_summary_energy: f64 [Float] = "0.4",
        /// approximate: the query's strongest terms whose lists are walked
        approx_query_cut: i64 [Int] = "10",
        /// approximate: read a block when its summary score is at least this × the k-th score (lower: more recall, slower)
        approx_heap_factor: f64 [Float] = "0.7",
        /// approximate: score a document on its strongest entries first, this many (0 = whole rows; 96 is 1.5–1.7× faster on realistic vectors for 0.002–0.003 recall@10)
        approx_row_prefix: i64 [Int] = "96",
        /// approximate, with `approx_row_prefix`: read the rest of a row only when the prefix scores at least this × the k-th score
        approx_completion: f64 [Float] = "0.7",
    }
}

impl TypedStage for Retrieve {
    type Params = RetrieveParams;
    const KIND: &'static str = "retrieve";
    const SPLITS_INTO_TASKS: bool = true;
    // 3: the approximate algorithm clusters its blocks as Seismic does (other runs).
    // 4: the approximate algorithm scores rows by prefix by default (other runs).
    const VERSION: u32 = 4;
    const STOPS_AT_CHECKPOINTS: bool = true;
    const DOC: &'static str =
        "query vectors (or texts encoded in the stage) × index → top-k run, resumable per query batch";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "index" => Some(&[Holds::Index]),
            "queries" => Some(&[Holds::Vectors]),
            "query_text" => Some(&[Holds::Texts]),
            "model" => Some(&[Holds::Model]),
            "rescore" => Some(&[Holds::Vectors]),
            _ => None,
        }
    }

    fn outputs(&self, p: &RetrieveParams) -> Vec<String> {
        let mut o = vec!["run".to_string()];
        if p.trec {
            o.push("trec".into());
        }
        o
    }

    fn check(&self, p: &RetrieveParams) -> std::result::Result<(), ParamError> {
        for (key, value) in [("k", p.k), ("batch_size", p.batch_size)] {
            if value < 1 {
                return Err(ParamError::new(key, "must be a positive integer"));
            }
        }
        for (key, value) in [
            ("query_top_k", p.query_top_k),
            ("rescore_depth", p.rescore_depth),
            ("approx_row_prefix", p.approx_row_prefix),
        ] {
            if value < 0 {
                return Err(ParamError::new(
                    key,
                    format!("must be >= 0 (0 = off), got {value}"),
                ));
            }
        }
        if !(p.approx_completion >= 0.0 && p.approx_completion.is_finite()) {
            return Err(ParamError::new(
                "approx_completion",
                format!("must be a finite number >= 0, got {}", p.approx_completion),
            ));
        }
        for (key, value) in [
            ("approx_postings", p.approx_postings),
            ("approx_query_cut", p.approx_query_cut),
        ] {
            if value < 1 {
                return Err(ParamError::new(key, "must be a positive integer"));
            }
        }
        for (key, value) in [
            ("approx_centroid_fraction", p.approx_centroid_fraction),
            ("approx_summary_energy", p.approx_summary_energy),
            ("approx_heap_factor", p.approx_heap_factor),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(ParamError::new(
                    key,
                    format!("must be in (0, 1], got {value}"),
                ));
            }
        }
        at_most(
            "rescore_depth",
            p.rescore_depth,
            MAX_K,
            "candidates per query (each search keeps them in memory)",
        )?;
        if p.rescore_depth > 0 && p.rescore.is_none() {
            return Err(ParamError::new(
                "rescore_depth",
                "needs `rescore` (the full document vectors the candidates are rescored with)",
            ));
        }
        at_most(
            "k",
            p.k,
            MAX_K,
            "documents per query (each search keeps k hits in memory)",
        )?;
        match (p.queries.is_some(), p.query_text.is_some()) {
            (true, true) => {
                return Err(ParamError::new(
                    "query_text",
                    "give either `queries` (query vectors) or `query_text` (texts encoded with \
                     `model`), not both",
                ))
            }
            (false, false) => {
                return Err(ParamError::new(
                    "queries",
                    "missing: give `queries` (query vectors, e.g. \"encode_queries.vectors\") \
                     or `query_text` (queries to encode, e.g. \"ingest.dev_queries\") with `model`",
                ))
            }
            (false, true) if p.model.is_none() => {
                return Err(ParamError::new(
                    "model",
                    "`query_text` needs `model` (a model directory or \"train.model\"; with \
                     mode = \"bag_of_words\" only its tokenizer is used)",
                ))
            }
            (true, false) if p.model.is_some() => {
                return Err(ParamError::new(
                    "model",
                    "`model` encodes `query_text`; `queries` are already vectors",
                ))
            }
            _ => {}
        }
        if p.max_length < 2 {
            return Err(ParamError::new(
                "max_length",
                "must leave room for [CLS] and [SEP]",
            ));
        }
        Ok(())
    }

    fn run(&self, p: RetrieveParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let (index, doc_ids) = open_index(ctx)?;
        let table = if p.algorithm == Algorithm::BlockMax {
            let t0 = std::time::Instant::now();
            let table = RangeMaxima::load(&index, ctx.input("index")?.path())?;
            tracing::info!(
                entries = table.entries(),
                "block-max bound table opened in {:.2}s",
                t0.elapsed().as_secs_f64()
            );
            Some(table)
        } else {
            None
        };
        let approx = match p.algorithm {
            Algorithm::Approximate => Some(build_approximate(&index, &p)?),
            _ => None,
        };
        let forward = match &p.rescore {
            Some(_) => Some(ForwardIndex::open(ctx.input("rescore")?.path(), &doc_ids)?),
            None => None,
        };
        let source = QuerySource::open(ctx, &p)?;
        let qids = source.ids().to_vec();
        let batch = p.batch_size as usize;
        let shards = qids.len().div_ceil(batch).max(1);
        let mut out = ShardedOutput::open(ctx, "run", shards)?;
        let todo = out.missing(ctx);
        let done = shards - todo.len();
        let searcher = Searcher {
            p: &p,
            index: &index,
            table: table.as_ref(),
            approx: approx.as_ref(),
            forward: forward.as_ref(),
            doc_ids: &doc_ids,
            qids: &qids,
        };
        let bar = ctx.progress(qids.len() as u64, "queries");
        bar.set_position((done * batch).min(qids.len()) as u64);
        let encode_bar = indicatif::ProgressBar::hidden();
        let started = std::time::Instant::now();
        let mut searched = 0usize;
        for s in todo {
            let lo = s * batch;
            let hi = ((s + 1) * batch).min(qids.len());
            let queries = source.vectors(lo, hi, &encode_bar)?;
            write_run(&out.path(s), &searcher.search(lo, &queries))?;
            out.commit(ctx, s, Map::new())?;
            bar.inc((hi - lo) as u64);
            searched += hi - lo;
        }
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        if let Some(slice) = ctx.shard_slice {
            return Ok(crate::sharded::task_outcome(slice, searched, secs));
        }
        if p.trec {
            write_trec(out.dir(), &ctx.staging_dir().join("trec.run"))?;
        }
        let mut m = Map::new();
        m.insert("queries".into(), json!(qids.len()));
        m.insert("searched_this_run".into(), json!(searched));
        m.insert("resumed_from_batch".into(), json!(done));
        m.insert(
            "queries_per_s".into(),
            json!(searched as f64 / secs.max(1e-9)),
        );
        m.insert("index_postings_bytes".into(), json!(index.postings_bytes()));
        Ok(StageOutcome {
            stats: m,
            summary: None,
        })
    }
}

/// The index input and its document ids (checked to match the index's document count).
fn open_index(ctx: &StageContext) -> Result<(InvertedIndex, Vec<String>)> {
    let index_input = ctx.input("index")?.clone();
    let index = InvertedIndex::open(index_input.path())?;
    let artifact = match &index_input {
        crate::contract::ResolvedInput::Artifact { artifact, .. } => artifact.clone(),
        crate::contract::ResolvedInput::File(p) => {
            p.parent().map(|p| p.to_path_buf()).unwrap_or_default()
        }
    };
    let doc_ids = read_id_text(&artifact.join("doc_ids.parquet"))?.ids;
    if doc_ids.len() != index.n_docs as usize {
        return Err(StageError::Other(format!(
            "{}: doc_ids has {} rows but the index has {} documents",
            artifact.display(),
            doc_ids.len(),
            index.n_docs
        )));
    }
    Ok((index, doc_ids))
}

/// The approximate algorithm's structure over `index`.
fn build_approximate(index: &InvertedIndex, p: &RetrieveParams) -> Result<ApproximateIndex> {
    let t0 = std::time::Instant::now();
    let approx = ApproximateIndex::build(index, p.build_knobs()).ok_or_else(|| {
        StageError::Other(format!(
            "algorithm = \"approximate\" holds terms in 16 bits: the index has {} terms (at \
             most {}); use another algorithm",
            index.n_terms(),
            approximate::MAX_TERMS
        ))
    })?;
    tracing::info!(
        blocks = approx.blocks(),
        bytes = approx.bytes(),
        "approximate index built in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(approx)
}

impl RetrieveParams {
    fn build_knobs(&self) -> BuildKnobs {
        BuildKnobs {
            n_postings: self.approx_postings as usize,
            centroid_fraction: self.approx_centroid_fraction as f32,
            summary_energy: self.approx_summary_energy as f32,
            pruning: approximate::ListPruning::PerList,
        }
    }

    fn search_knobs(&self) -> SearchKnobs {
        SearchKnobs {
            row_prefix: self.approx_row_prefix as usize,
            completion: self.approx_completion as f32,
            ..SearchKnobs::whole_rows(
                self.approx_query_cut as usize,
                self.approx_heap_factor as f32,
            )
        }
    }
}

/// One batch of queries against the index, as run rows.
struct Searcher<'a> {
    p: &'a RetrieveParams,
    index: &'a InvertedIndex,
    table: Option<&'a RangeMaxima>,
    approx: Option<&'a ApproximateIndex>,
    forward: Option<&'a ForwardIndex>,
    doc_ids: &'a [String],
    qids: &'a [String],
}

impl Searcher<'_> {
    /// Candidates the index pass returns per query: `k` (one more with `remove_self_matches`),
    /// or `rescore_depth` when rescoring.
    fn depth(&self) -> usize {
        let k = self.p.k as usize + usize::from(self.p.remove_self_matches);
        match (self.forward, self.p.rescore_depth) {
            (Some(_), d) if d > 0 => (d as usize).max(k),
            _ => k,
        }
    }

    /// `(doc index, score)` of query `q` by score: the index pass (on its `query_top_k`
    /// strongest terms), then, two-step, the candidates rescored with the full vectors.
    fn ranked(
        &self,
        q: &SparseVector,
        acc: &mut Vec<u32>,
        scratch: &mut (BlockMaxScratch, ApproximateScratch),
    ) -> Vec<(u32, f32)> {
        let p = self.p;
        let pruned;
        let first = if p.query_top_k > 0 && q.terms.len() > p.query_top_k as usize {
            pruned = prune(q, p.query_top_k as usize, 0.0);
            &pruned
        } else {
            q
        };
        let depth = self.depth();
        let hits = match (self.table, self.approx, p.algorithm) {
            (_, Some(approx), _) => approx.search(first, depth, p.search_knobs(), &mut scratch.1),
            (Some(table), _, _) => block_max(self.index, table, first, depth, &mut scratch.0),
            (None, None, Algorithm::Maxscore) => maxscore(self.index, first, depth),
            _ => exhaustive(self.index, first, depth, acc),
        };
        match self.forward {
            Some(forward) => {
                let candidates: Vec<u32> = hits.iter().map(|h| h.doc).collect();
                let k = p.k as usize + usize::from(p.remove_self_matches);
                forward.rescore(q, &candidates, k)
            }
            None => {
                let to_float = 1.0 / (self.index.scale * QUERY_SCALE);
                hits.into_iter()
                    .map(|h| (h.doc, h.score as f32 * to_float))
                    .collect()
            }
        }
    }

    /// The run rows of queries `lo..lo + queries.len()` (in query order, ranks from 1).
    fn search(&self, lo: usize, queries: &[SparseVector]) -> Vec<RunRow> {
        let p = self.p;
        let results: Vec<Vec<RunRow>> = (lo..lo + queries.len())
            .into_par_iter()
            .map_init(
                || (Vec::new(), Default::default()),
                |(acc, scratch), i| {
                    let ranked = self.ranked(&queries[i - lo], acc, scratch);
                    let mut rows = Vec::with_capacity(ranked.len());
                    for (doc, score) in ranked {
                        let did = &self.doc_ids[doc as usize];
                        if (p.remove_self_matches && *did == self.qids[i])
                            || (score as f64) < p.min_score
                        {
                            continue;
                        }
                        if rows.len() == p.k as usize {
                            break;
                        }
                        rows.push(RunRow {
                            qid: self.qids[i].clone(),
                            did: did.clone(),
                            rank: rows.len() as u32 + 1,
                            score: f64::from(score),
                        });
                    }
                    rows
                },
            )
            .collect();
        results.into_iter().flatten().collect()
    }
}

/// Writes the run in `run_dir` as a TREC run file.
fn write_trec(run_dir: &std::path::Path, path: &std::path::Path) -> Result<()> {
    let mut text = String::new();
    for r in read_run(run_dir)? {
        text += &format!("{} Q0 {} {} {:.6} splade\n", r.qid, r.did, r.rank, r.score);
    }
    std::fs::write(path, text).map_err(|e| StageError::io(path, e))
}

/// Where the queries come from: vectors read whole, or texts encoded one batch at a time.
enum QuerySource {
    Vectors(Vec<String>, Vec<SparseVector>),
    Texts(crate::parquet_io::IdText, Box<TextEncoder>),
}

impl QuerySource {
    fn open(ctx: &StageContext, p: &RetrieveParams) -> Result<Self> {
        if ctx.inputs.contains_key("queries") {
            let (ids, vectors) = read_query_vectors(ctx.input("queries")?.path())?;
            return Ok(QuerySource::Vectors(ids, vectors));
        }
        let rows = read_id_text(ctx.input("query_text")?.path())?;
        let opts = EncodeOptions {
            max_length: p.max_length as usize,
            pooling: Pooling::Max,
            batch_size: ENCODE_BATCH,
            sort_window: ENCODE_SORT_WINDOW,
            vocab_chunk: ENCODE_VOCAB_CHUNK,
            precision: p.precision,
            sparsify: Default::default(),
        };
        let encoder = TextEncoder::load(
            ctx.input("model")?.path(),
            p.mode,
            &opts,
            &ctx.backend,
            ctx.threads,
        )?;
        Ok(QuerySource::Texts(rows, Box::new(encoder)))
    }

    fn ids(&self) -> &[String] {
        match self {
            QuerySource::Vectors(ids, _) => ids,
            QuerySource::Texts(rows, _) => &rows.ids,
        }
    }

    /// The vectors of queries `lo..hi`.
    fn vectors(
        &self,
        lo: usize,
        hi: usize,
        bar: &indicatif::ProgressBar,
    ) -> Result<std::borrow::Cow<'_, [SparseVector]>> {
        match self {
            QuerySource::Vectors(_, v) => Ok(std::borrow::Cow::Borrowed(&v[lo..hi])),
            QuerySource::Texts(rows, enc) => {
                let texts: Vec<&str> = rows.texts[lo..hi].iter().map(String::as_str).collect();
                let vectors = enc.encode(&texts, bar)?;
                for (id, v) in rows.ids[lo..hi].iter().zip(&vectors) {
                    if let Some(sum) = weights_past(v, MAX_QUERY_WEIGHT_SUM) {
                        return Err(StageError::Other(format!(
                            "query `{id}`: its encoded weights sum to {sum}, over the \
                             {MAX_QUERY_WEIGHT_SUM} integer scoring holds"
                        )));
                    }
                }
                Ok(std::borrow::Cow::Owned(vectors))
            }
        }
    }
}
