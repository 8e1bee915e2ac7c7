//! Approximate retrieval in the manner of Seismic (Bruch et al., SIGIR 2024), built from the
//! quantized index at retrieve time:
//! - every term's postings are statically pruned to its `n_postings` highest impacts;
//! - the kept postings are clustered into blocks (one pass of nearest-centroid assignment, the
//!   centroids a deterministic sample of `centroid_fraction` of the list, similarity the dot
//!   product of a document's strongest terms with a centroid's whole row; clusters of at most
//!   two documents dissolved and their documents assigned again, as Seismic does);
//! - each block has a summary: per term, the largest impact among its documents, cut to the
//!   strongest entries holding `summary_energy` of the summary's mass; a list's summaries are
//!   stored inverted (per term, the blocks whose summary holds it), so a query scores all the
//!   blocks of a list by reading only its own terms' entries (found through a per-list
//!   directory of vocabulary buckets, so the list's other summary terms are never read);
//! - a query walks the lists of its `query_cut` strongest terms, blocks in decreasing order of
//!   summary score, and scores every document of a block exactly (forward index, the same integer
//!   scores as the exact algorithms) unless the block's summary score is under `heap_factor` × the
//!   current k-th score;
//! - optionally (`row_prefix`), a document is scored on its strongest entries first (rows are
//!   stored strongest first) and the rest of its row is read only when that partial score
//!   reaches `completion` × the k-th score: most scored documents never enter the top k, and a
//!   scored document's cost is the memory its row spans, so most rows are read a third at a
//!   time. A returned score is still exact; a dropped document is one more way to miss.
//!
//! Summaries under-estimate (they are cut), so blocks holding top-k documents can be skipped:
//! recall is traded for speed with `query_cut` and `heap_factor` (1.0 skips most; lower values
//! read more blocks).

use rayon::prelude::*;

use crate::index::reader::{InvertedIndex, END};
use crate::parquet_io::SparseVector;

use super::algorithms::quantized_query_weight;
use super::topk::{Hit, TopK};

/// How the approximate structure is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildKnobs {
    /// Postings kept per term (its highest impacts).
    pub n_postings: usize,
    /// Centroids per list, as a fraction of its kept postings.
    pub centroid_fraction: f32,
    /// Share of a block summary's impact mass kept (its strongest entries).
    pub summary_energy: f32,
    /// How lists are pruned to about `n_postings` each.
    pub pruning: ListPruning,
}

/// Static pruning of the lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListPruning {
    /// Each list keeps its `n_postings` highest impacts.
    PerList,
    /// After Seismic's global threshold: about the collection's `n_postings × terms` highest
    /// impacts (terms that have postings; cut at a whole impact level, so up to one level
    /// fewer), each list holding at most `max_fraction × n_postings` of them; lists of strong
    /// terms keep more, lists of terms that only ever weigh little keep fewer.
    Global {
        /// Cap of a list, as a multiple of `n_postings`.
        max_fraction: f32,
    },
}

/// How a query is processed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchKnobs {
    /// The query's strongest terms whose lists are walked.
    pub query_cut: usize,
    /// A block is read when its summary score is at least this × the current k-th score.
    pub heap_factor: f32,
    /// A document is first scored on its `row_prefix` strongest entries (0: its whole row).
    pub row_prefix: usize,
    /// The rest of its row is read only when that partial score is at least this × the
    /// current k-th score; otherwise the document is dropped (no hit ever holds a partial
    /// score).
    pub completion: f32,
}

impl SearchKnobs {
    /// Walks `query_cut` lists, reads blocks by `heap_factor`, scores whole rows.
    pub fn whole_rows(query_cut: usize, heap_factor: f32) -> Self {
        SearchKnobs {
            query_cut,
            heap_factor,
            row_prefix: 0,
            completion: 0.0,
        }
    }
}

/// Terms of a document used to assign it to a centroid (Seismic's `doc_cut`).
const DOC_CUT: usize = 15;

/// Clusters of at most this many documents are dissolved (Seismic's `min_cluster_size`).
const MIN_CLUSTER: usize = 2;

/// Largest vocabulary the structure holds (terms are stored in 16 bits; BERT's is 30,522).
pub const MAX_TERMS: usize = 1 << 16;

/// A term and its impact, packed in 3 bytes: scoring a document streams its row from memory,
/// so its size is the cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
struct Entry {
    term: u16,
    impact: u8,
}

/// The forward index (each document's terms and impacts) and the blocked, summarised lists.
pub struct ApproximateIndex {
    doc_start: Vec<u64>,
    fwd: Vec<Entry>,
    /// Blocks of term `t`: `term_blocks[t]..term_blocks[t + 1]`.
    term_blocks: Vec<u32>,
    /// Block `b`'s documents: `block_docs[block_doc_start[b]..block_doc_start[b + 1]]`, and
    /// where each one's row lies in `fwd` (the same positions of `block_rows`, see [`Row`]), so
    /// scoring a block reads no offset table.
    block_doc_start: Vec<u64>,
    block_docs: Vec<u32>,
    block_rows: Vec<Row>,
    /// The summaries of term `t`'s blocks, inverted: the terms they hold are
    /// `summary_terms[term_summaries[t]..term_summaries[t + 1]]` (ascending); summary term `i`'s
    /// entries (block within the list, impact) end at `summary_term_end[i]`, counted from the
    /// list's first entry `summary_entries[list_entries[t]]` (and start where the list's
    /// previous summary term's end, or at 0).
    term_summaries: Vec<u64>,
    /// Where each bucket of [`SUMMARY_BUCKET`] consecutive vocabulary terms starts among a
    /// list's summary terms: term `t`'s `n_buckets() + 1` offsets, relative to
    /// `term_summaries[t]`, are `summary_dir[t * (n_buckets() + 1)..]`. A list's summaries hold
    /// about a third of the vocabulary (10,762 terms per walked list on the realistic 1M
    /// collection) and a query some twenty terms: each is found in its bucket of a few dozen
    /// instead of a pass over all of them.
    summary_dir: Vec<u32>,
    summary_terms: Vec<u16>,
    summary_term_end: Vec<u32>,
    list_entries: Vec<u64>,
    summary_entries: Vec<SummaryEntry>,
    n_terms: usize,
}

/// A document's row in the forward index: start `<< ROW_LEN_BITS` | length.
#[derive(Debug, Clone, Copy)]
struct Row(u64);

/// Bits of a [`Row`] holding the length (a row has at most [`MAX_TERMS`] entries).
const ROW_LEN_BITS: u32 = 17;

impl Row {
    fn new(start: u64, len: usize) -> Self {
        Row(start << ROW_LEN_BITS | len as u64)
    }

    #[inline]
    fn range(self) -> std::ops::Range<usize> {
        let start = (self.0 >> ROW_LEN_BITS) as usize;
        start..start + (self.0 & ((1 << ROW_LEN_BITS) - 1)) as usize
    }
}

/// A block (numbered within its list) whose summary holds a term, and the term's impact there.
#[derive(Debug, Clone, Copy)]
struct SummaryEntry {
    block: u16,
    impact: u8,
}

/// Vocabulary terms per bucket of a list's summary directory.
const SUMMARY_BUCKET: usize = 128;

/// Most blocks one list is clustered into (its blocks are numbered in 16 bits).
const MAX_BLOCKS_PER_LIST: usize = 1 << 16;

/// One term's list, while building: its blocks' documents and their summaries, inverted.
#[derive(Default)]
struct BuiltList {
    blocks: Vec<Vec<u32>>,
    /// Summary terms ascending, each with its entries' count.
    terms: Vec<(u16, u32)>,
    entries: Vec<SummaryEntry>,
}

/// What [`ListPruning`] keeps of every list: impacts from `min_impact`, at most `max_len`.
#[derive(Debug, Clone, Copy)]
struct ListCut {
    min_impact: u8,
    max_len: usize,
}

impl ListCut {
    /// The cut for `knobs` over `lists` non-empty lists, given how many postings have each
    /// impact (`impacts[i]`).
    fn new(knobs: BuildKnobs, lists: usize, impacts: &[u64; 256]) -> Self {
        let n = knobs.n_postings.max(1);
        match knobs.pruning {
            ListPruning::PerList => ListCut {
                min_impact: 0,
                max_len: n,
            },
            ListPruning::Global { max_fraction } => {
                let budget = (n as u64).saturating_mul(lists as u64);
                // Whole impact levels, highest first, while they fit the budget (so up to one
                // level fewer than it); the highest level present is kept even when it alone
                // does not fit. Impact 0 is never indexed: threshold 1 keeps everything.
                let mut at_least = 0u64;
                let mut min_impact = None;
                for i in (1..=255u8).rev().filter(|i| impacts[*i as usize] > 0) {
                    at_least += impacts[i as usize];
                    if at_least > budget && min_impact.is_some() {
                        break;
                    }
                    min_impact = Some(i);
                }
                ListCut {
                    min_impact: min_impact.unwrap_or(255),
                    max_len: ((n as f32 * max_fraction.max(0.0)) as usize).max(1),
                }
            }
        }
    }
}

/// Lists blocked per parallel batch while building.
const TERMS_PER_BATCH: usize = 512;

/// Per-query scratch: the dense query, the documents already scored, and counts of the work
/// done (summed over the queries run with it).
pub struct ApproximateScratch {
    /// Indexed by a `u16` term, so lookups need no bounds check.
    query: Box<[u32; MAX_TERMS]>,
    /// One bit per document (an eighth of a byte each: it stays in cache where per-document
    /// stamps would not), cleared after each query through `visited_words`.
    visited: Vec<u64>,
    visited_words: Vec<u32>,
    /// Summary scores of the blocks of the list being walked.
    block_scores: Vec<u32>,
    /// The blocks of the list being walked, best first: `!summary score << 32 | block`, so an
    /// ascending sort orders by score descending, then block.
    ranked: Vec<u64>,
    /// The query's terms found in a bucket of the list being walked, `(term, weight, bucket
    /// range)`, then those found in the list, `(weight, entry range)`.
    buckets: Vec<(u32, u32, u32, u32)>,
    matches: Vec<(u32, usize, usize)>,
    /// Documents scored, summed over the queries run with this scratch.
    pub docs_scored: u64,
    /// Blocks scored, summed the same way.
    pub blocks_scored: u64,
    /// Blocks whose summary was scored, summed the same way.
    pub blocks_ranked: u64,
    /// Forward-index entries read while scoring documents, summed the same way.
    pub entries_scored: u64,
    /// Documents whose row was read past its prefix, summed the same way.
    pub rows_completed: u64,
}

impl Default for ApproximateScratch {
    fn default() -> Self {
        ApproximateScratch {
            query: Box::new([0; MAX_TERMS]),
            visited: Vec::new(),
            visited_words: Vec::new(),
            block_scores: Vec::new(),
            ranked: Vec::new(),
            buckets: Vec::new(),
            matches: Vec::new(),
            docs_scored: 0,
            blocks_scored: 0,
            blocks_ranked: 0,
            entries_scored: 0,
            rows_completed: 0,
        }
    }
}

impl ApproximateScratch {
    fn was_visited(&self, d: u32) -> bool {
        self.visited[(d >> 6) as usize] & 1 << (d & 63) != 0
    }

    /// Marks `d` visited; false when it already was.
    #[inline]
    fn visit(&mut self, d: u32) -> bool {
        let w = &mut self.visited[(d >> 6) as usize];
        if *w & 1 << (d & 63) != 0 {
            return false;
        }
        if *w == 0 {
            self.visited_words.push(d >> 6);
        }
        *w |= 1 << (d & 63);
        true
    }

    /// Readies the visited set for a query over `n_docs` documents.
    fn reset(&mut self, n_docs: usize) {
        for w in self.visited_words.drain(..) {
            self.visited[w as usize] = 0;
        }
        self.visited.resize(n_docs.div_ceil(64), 0);
    }
}

impl ApproximateIndex {
    /// Builds the structure from `index` (every posting is read three times: twice for the
    /// forward index, once for the lists); `None` when the index's vocabulary is larger than
    /// [`MAX_TERMS`].
    pub fn build(index: &InvertedIndex, knobs: BuildKnobs) -> Option<Self> {
        let n_terms = index.n_terms() as usize;
        if n_terms > MAX_TERMS {
            return None;
        }
        let (doc_start, fwd, impacts) = forward(index);
        let lists = (0..index.n_terms())
            .filter(|t| index.term(*t).is_some())
            .count();
        let cut = ListCut::new(knobs, lists, &impacts);
        let mut me = ApproximateIndex {
            doc_start,
            fwd,
            term_blocks: vec![0],
            block_doc_start: vec![0],
            block_docs: Vec::new(),
            block_rows: Vec::new(),
            term_summaries: vec![0],
            summary_dir: Vec::new(),
            summary_terms: Vec::new(),
            summary_term_end: Vec::new(),
            list_entries: Vec::new(),
            summary_entries: Vec::new(),
            n_terms,
        };
        // A few hundred lists at a time, so only their blocks are held twice (built, then
        // appended), not the whole structure's.
        let terms: Vec<u32> = (0..n_terms as u32).collect();
        for chunk in terms.chunks(TERMS_PER_BATCH) {
            let built: Vec<BuiltList> = chunk
                .par_iter()
                .map(|t| me.blocks_of(read_list(index, *t), knobs, cut))
                .collect();
            for list in built {
                me.append(list);
            }
        }
        Some(me)
    }

    /// Appends one term's list.
    fn append(&mut self, list: BuiltList) {
        for docs in list.blocks {
            self.block_docs.extend_from_slice(&docs);
            let rows = docs.iter().map(|d| {
                let (lo, hi) = (self.doc_start[*d as usize], self.doc_start[*d as usize + 1]);
                Row::new(lo, (hi - lo) as usize)
            });
            self.block_rows.extend(rows);
            self.block_doc_start.push(self.block_docs.len() as u64);
        }
        self.term_blocks.push(self.block_doc_start.len() as u32 - 1);
        self.list_entries.push(self.summary_entries.len() as u64);
        let mut dir = vec![0u32; self.n_buckets() + 1];
        for (term, _) in &list.terms {
            dir[*term as usize / SUMMARY_BUCKET + 1] += 1;
        }
        for b in 0..self.n_buckets() {
            dir[b + 1] += dir[b];
        }
        self.summary_dir.extend(dir);
        let mut end = 0u32;
        for (term, n) in list.terms {
            self.summary_terms.push(term);
            end += n;
            self.summary_term_end.push(end);
        }
        self.summary_entries.extend(list.entries);
        self.term_summaries.push(self.summary_terms.len() as u64);
    }

    /// Buckets of the vocabulary in a list's summary directory.
    fn n_buckets(&self) -> usize {
        self.n_terms.div_ceil(SUMMARY_BUCKET).max(1)
    }

    /// Postings kept in the lists (block members).
    pub fn kept_postings(&self) -> usize {
        self.block_docs.len()
    }

    /// Blocks in the structure.
    pub fn blocks(&self) -> usize {
        self.block_doc_start.len() - 1
    }

    /// Bytes held (forward index, blocks, summaries).
    pub fn bytes(&self) -> usize {
        self.fwd.len() * std::mem::size_of::<Entry>()
            + self.summary_entries.len() * std::mem::size_of::<SummaryEntry>()
            + self.summary_terms.len() * (2 + 4)
            + self.list_entries.len() * 8
            + self.summary_dir.len() * 4
            + self.doc_start.len() * 8
            + self.block_docs.len() * (4 + std::mem::size_of::<Row>())
            + (self.block_doc_start.len() + self.term_summaries.len()) * 8
    }

    fn doc(&self, d: u32) -> &[Entry] {
        &self.fwd[self.doc_start[d as usize] as usize..self.doc_start[d as usize + 1] as usize]
    }

    /// A list's kept postings, clustered into summarised blocks.
    fn blocks_of(&self, mut list: Vec<(u32, u8)>, knobs: BuildKnobs, cut: ListCut) -> BuiltList {
        // Static pruning: the highest impacts (ties: lower doc first).
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept = list.partition_point(|p| p.1 >= cut.min_impact);
        list.truncate(kept.min(cut.max_len));
        if list.is_empty() {
            return BuiltList::default();
        }
        let docs: Vec<u32> = list.iter().map(|p| p.0).collect();
        let mut blocks = self.cluster(&docs, knobs.centroid_fraction);
        blocks.retain(|c| !c.is_empty());
        // A list's summary entries are counted in 32 bits.
        let max_summary = u32::MAX as usize / blocks.len().max(1);
        // Every (term, block, impact) of the blocks' summaries, grouped by term.
        let mut inverted: Vec<(u16, u16, u8)> = Vec::new();
        for (b, docs) in blocks.iter_mut().enumerate() {
            docs.sort_unstable();
            let summary = self.summary(docs, knobs.summary_energy, max_summary);
            inverted.extend(summary.iter().map(|e| (e.term, b as u16, e.impact)));
        }
        inverted.sort_unstable();
        let mut terms: Vec<(u16, u32)> = Vec::new();
        for (t, ..) in &inverted {
            match terms.last_mut() {
                Some((last, n)) if last == t => *n += 1,
                _ => terms.push((*t, 1)),
            }
        }
        let entries = inverted
            .iter()
            .map(|(_, block, impact)| SummaryEntry {
                block: *block,
                impact: *impact,
            })
            .collect();
        BuiltList {
            blocks,
            terms,
            entries,
        }
    }

    /// One pass of nearest-centroid assignment; centroids are evenly spaced picks of `docs`
    /// (which are in decreasing impact order, so the picks span the list's impact range), a
    /// document's similarity to one the dot product of its [`DOC_CUT`] strongest terms with the
    /// centroid's whole row (as Seismic's). Clusters of at most [`MIN_CLUSTER`] documents are
    /// dissolved and their documents assigned again among the others, so no block is a lone
    /// document whose summary barely prunes.
    fn cluster(&self, docs: &[u32], fraction: f32) -> Vec<Vec<u32>> {
        let n_centroids = ((docs.len() as f32 * fraction).ceil() as usize)
            .clamp(1, docs.len().min(MAX_BLOCKS_PER_LIST));
        if n_centroids == 1 {
            return vec![docs.to_vec()];
        }
        let step = docs.len() as f64 / n_centroids as f64;
        let centroids: Vec<u32> = (0..n_centroids)
            .map(|c| docs[(c as f64 * step) as usize])
            .collect();
        // Each document's strongest terms, read once for both assignment passes.
        let strongest: Vec<Vec<(u32, u32)>> =
            docs.iter().map(|d| self.strongest(*d, DOC_CUT)).collect();
        let all = CentroidTerms::new(self, &centroids, |_| true);
        let mut scores = vec![0u32; n_centroids];
        let mut assigned: Vec<u32> = strongest
            .iter()
            .map(|terms| all.nearest(terms, &mut scores))
            .collect();
        let mut sizes = vec![0usize; n_centroids];
        assigned.iter().for_each(|c| sizes[*c as usize] += 1);
        let kept = |c: u32| sizes[c as usize] > MIN_CLUSTER;
        if (0..n_centroids as u32).any(|c| sizes[c as usize] > 0 && !kept(c)) {
            if (0..n_centroids as u32).any(kept) {
                let survivors = CentroidTerms::new(self, &centroids, kept);
                for (terms, c) in strongest.iter().zip(assigned.iter_mut()) {
                    if !kept(*c) {
                        *c = survivors.nearest(terms, &mut scores);
                    }
                }
            } else {
                assigned.iter_mut().for_each(|c| *c = 0);
            }
        }
        let mut clusters = vec![Vec::new(); n_centroids];
        for (d, c) in docs.iter().zip(&assigned) {
            clusters[*c as usize].push(*d);
        }
        clusters
    }

    /// Document `d`'s `n` highest-impact terms.
    fn strongest(&self, d: u32, n: usize) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = self
            .doc(d)
            .iter()
            .map(|e| (u32::from(e.term), u32::from(e.impact)))
            .collect();
        if v.len() > n {
            v.select_nth_unstable_by(n - 1, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(n);
        }
        v
    }

    /// Per term the largest impact of `docs`, cut to the strongest entries holding `energy` of
    /// the total (at most `max_len`); terms ascending.
    fn summary(&self, docs: &[u32], energy: f32, max_len: usize) -> Vec<Entry> {
        // Every (term, impact) of the block's documents, then the largest impact per term.
        let mut entries: Vec<Entry> = docs.iter().flat_map(|d| self.doc(*d)).copied().collect();
        entries.sort_unstable_by_key(|e| (e.term, std::cmp::Reverse(e.impact)));
        entries.dedup_by_key(|e| e.term);
        entries.sort_by_key(|e| (std::cmp::Reverse(e.impact), e.term));
        let total: f64 = entries.iter().map(|e| f64::from(e.impact)).sum();
        let mut kept = 0.0;
        let mut n = 0;
        while n < entries.len() && kept < f64::from(energy) * total {
            kept += f64::from(entries[n].impact);
            n += 1;
        }
        entries.truncate(n.clamp(1, max_len));
        entries.sort_unstable_by_key(|e| e.term);
        entries
    }

    /// The approximate top `k` of `q`, with the exact algorithms' integer scores and tie rule.
    pub fn search(
        &self,
        q: &SparseVector,
        k: usize,
        knobs: SearchKnobs,
        s: &mut ApproximateScratch,
    ) -> Vec<Hit> {
        let mut terms: Vec<(u32, u32)> = q
            .terms
            .iter()
            .zip(&q.weights)
            .filter(|(t, _)| (**t as usize) < self.n_terms)
            .filter_map(|(t, w)| Some((*t, quantized_query_weight(*w)?)))
            .collect();
        for (t, qw) in &terms {
            s.query[*t as usize] = *qw;
        }
        s.reset(self.doc_start.len() - 1);
        // By weight, for choosing the lists walked.
        terms.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut top = TopK::new(k);
        let mut ranked = std::mem::take(&mut s.ranked);
        for (t, _) in terms.iter().take(knobs.query_cut.max(1)) {
            let (lo, hi) = (
                self.term_blocks[*t as usize],
                self.term_blocks[*t as usize + 1],
            );
            self.summary_scores(*t, &terms, (hi - lo) as usize, s);
            s.blocks_ranked += u64::from(hi - lo);
            ranked.clear();
            let keys = s.block_scores.iter().zip(lo..hi);
            ranked.extend(keys.map(|(score, b)| u64::from(!*score) << 32 | u64::from(b)));
            ranked.sort_unstable();
            let reads = |key: u64, top: &TopK| {
                let bound = !((key >> 32) as u32);
                bound as f32 >= knobs.heap_factor * top.threshold() as f32
            };
            for (i, key) in ranked.iter().enumerate() {
                if !reads(*key, &top) {
                    break;
                }
                // The next block is fetched while this one is scored, when it would be read as
                // things stand (the k-th score only rises: a guess, never a change of results).
                if let Some(next) = ranked.get(i + 1).filter(|next| reads(**next, &top)) {
                    self.prefetch_block(*next as u32, knobs.row_prefix, s);
                }
                self.score_block(*key as u32, knobs, s, &mut top);
            }
        }
        for (t, _) in &terms {
            s.query[*t as usize] = 0;
        }
        s.ranked = ranked;
        top.into_sorted()
    }

    /// The summary score of each of term `t`'s `n_blocks` blocks against the `query`'s
    /// `(term, weight)`s, into `s.block_scores`. Three passes over the query's terms (directory,
    /// bucket, entries), each one's loads independent of the others', so that the cache misses
    /// of one level overlap instead of queueing behind each other; then the sums.
    fn summary_scores(
        &self,
        t: u32,
        query: &[(u32, u32)],
        n_blocks: usize,
        s: &mut ApproximateScratch,
    ) {
        let t = t as usize;
        let (lo, hi) = (
            self.term_summaries[t] as usize,
            self.term_summaries[t + 1] as usize,
        );
        let (terms, ends) = (&self.summary_terms[lo..hi], &self.summary_term_end[lo..hi]);
        let width = self.n_buckets() + 1;
        let dir = &self.summary_dir[t * width..(t + 1) * width];
        let entries = &self.summary_entries[self.list_entries[t] as usize..];
        for (qt, _) in query {
            prefetch(std::slice::from_ref(&dir[*qt as usize / SUMMARY_BUCKET]));
        }
        s.buckets.clear();
        for (qt, qw) in query {
            let b = *qt as usize / SUMMARY_BUCKET;
            let (from, to) = (dir[b], dir[b + 1]);
            if from < to {
                prefetch(&terms[from as usize..to as usize]);
                prefetch(&ends[(from as usize).saturating_sub(1)..to as usize]);
                s.buckets.push((*qt, *qw, from, to));
            }
        }
        s.matches.clear();
        for (qt, qw, from, to) in &s.buckets {
            let bucket = &terms[*from as usize..*to as usize];
            if let Ok(i) = bucket.binary_search(&(*qt as u16)) {
                let i = *from as usize + i;
                let start = if i == 0 { 0 } else { ends[i - 1] as usize };
                prefetch(&entries[start..ends[i] as usize]);
                s.matches.push((*qw, start, ends[i] as usize));
            }
        }
        s.block_scores.clear();
        s.block_scores.resize(n_blocks, 0);
        for (qw, start, end) in &s.matches {
            for e in &entries[*start..*end] {
                s.block_scores[e.block as usize] += qw * u32::from(e.impact);
            }
        }
    }

    /// Block `b`'s documents and where their rows lie.
    fn block(&self, b: u32) -> (&[u32], &[Row]) {
        let (lo, hi) = (
            self.block_doc_start[b as usize] as usize,
            self.block_doc_start[b as usize + 1] as usize,
        );
        (&self.block_docs[lo..hi], &self.block_rows[lo..hi])
    }

    /// Asks the CPU to fetch the rows (their first `prefix` entries; 0: whole) of block `b`'s
    /// documents not scored yet.
    fn prefetch_block(&self, b: u32, prefix: usize, s: &ApproximateScratch) {
        let (docs, rows) = self.block(b);
        for (d, row) in docs.iter().zip(rows) {
            if !s.was_visited(*d) {
                let row = &self.fwd[row.range()];
                prefetch(&row[..row_head(row.len(), prefix)]);
            }
        }
    }

    /// Scores the documents of block `b` not scored yet. Their rows are prefetched first (cheap
    /// when the previous block's turn already asked for them), so their cache misses overlap
    /// instead of each stalling its document's scoring.
    fn score_block(&self, b: u32, knobs: SearchKnobs, s: &mut ApproximateScratch, top: &mut TopK) {
        let (docs, rows) = self.block(b);
        s.blocks_scored += 1;
        self.prefetch_block(b, knobs.row_prefix, s);
        for (d, row) in docs.iter().zip(rows) {
            if !s.visit(*d) {
                continue;
            }
            let row = &self.fwd[row.range()];
            let (head, tail) = row.split_at(row_head(row.len(), knobs.row_prefix));
            s.docs_scored += 1;
            s.entries_scored += head.len() as u64;
            let mut score = dot(&s.query, head);
            if !tail.is_empty() {
                if (score as f32) < knobs.completion * top.threshold() as f32 {
                    continue;
                }
                s.rows_completed += 1;
                s.entries_scored += tail.len() as u64;
                score += dot(&s.query, tail);
            }
            if score > 0 {
                top.push(Hit { score, doc: *d });
            }
        }
    }
}

/// Entries of a row of `len` scored first: `prefix`, or the whole row when that is 0.
#[inline]
fn row_head(len: usize, prefix: usize) -> usize {
    if prefix == 0 {
        len
    } else {
        prefix.min(len)
    }
}

/// The dot product of a dense quantized query and forward entries.
#[inline]
fn dot(query: &[u32; MAX_TERMS], entries: &[Entry]) -> u32 {
    entries
        .iter()
        .map(|e| query[e.term as usize] * u32::from(e.impact))
        .sum()
}

/// Some centroids' rows, inverted: `(term, centroid, impact)` by term, so a document's
/// similarity to every centroid is read from its strongest terms' entries only.
struct CentroidTerms {
    entries: Vec<(u16, u32, u8)>,
    /// The lowest centroid admitted.
    first: u32,
}

impl CentroidTerms {
    /// The rows of `centroids[c]` for every `c` that `include` admits.
    fn new(index: &ApproximateIndex, centroids: &[u32], include: impl Fn(u32) -> bool) -> Self {
        let mut entries: Vec<(u16, u32, u8)> = Vec::new();
        let mut first = None;
        for (c, d) in (0u32..).zip(centroids).filter(|(c, _)| include(*c)) {
            first = first.or(Some(c));
            entries.extend(index.doc(*d).iter().map(|e| (e.term, c, e.impact)));
        }
        entries.sort_unstable();
        CentroidTerms {
            entries,
            first: first.unwrap_or(0),
        }
    }

    /// The centroid most similar to a document given its strongest `(term, impact)`s (ties, and
    /// no shared term: the lowest admitted); `scores` is scratch, one per centroid.
    fn nearest(&self, strongest: &[(u32, u32)], scores: &mut [u32]) -> u32 {
        scores.iter_mut().for_each(|s| *s = 0);
        for &(t, i) in strongest {
            let t = t as u16;
            let from = self.entries.partition_point(|e| e.0 < t);
            for (_, c, ci) in self.entries[from..].iter().take_while(|e| e.0 == t) {
                scores[*c as usize] += i * u32::from(*ci);
            }
        }
        let mut best = (0, self.first);
        for (c, s) in (0u32..).zip(scores.iter()) {
            if *s > best.0 {
                best = (*s, c);
            }
        }
        best.1
    }
}

/// Asks the CPU to bring `entries` into cache, line by line (a hint: no effect on results; none
/// off x86-64).
#[inline]
fn prefetch<T>(entries: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = entries.as_ptr() as usize;
        for line in (start & !63..start + std::mem::size_of_val(entries)).step_by(64) {
            // SAFETY: a prefetch never faults and reads nothing into the program.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line as *const i8,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = entries;
}

/// Term `t`'s postings `(doc, impact)` in doc order.
fn read_list(index: &InvertedIndex, t: u32) -> Vec<(u32, u8)> {
    let Some(meta) = index.term(t) else {
        return Vec::new();
    };
    let mut c = index.cursor(meta);
    let mut out = Vec::new();
    while c.doc() != END {
        out.push((c.doc(), c.impact().min(255) as u8));
        c.next();
    }
    out
}

/// The forward index of `index` (every posting read twice: counts, then entries): offsets,
/// entries (strongest first within a document, ties by term) and how many postings have each
/// impact.
fn forward(index: &InvertedIndex) -> (Vec<u64>, Vec<Entry>, [u64; 256]) {
    let n_docs = index.n_docs as usize;
    let mut start = vec![0u64; n_docs + 1];
    let mut impacts = [0u64; 256];
    for t in 0..index.n_terms() {
        for (d, impact) in read_list(index, t) {
            start[d as usize + 1] += 1;
            impacts[impact as usize] += 1;
        }
    }
    for i in 0..n_docs {
        start[i + 1] += start[i];
    }
    let mut entries = vec![Entry { term: 0, impact: 0 }; start[n_docs] as usize];
    let mut fill = start.clone();
    for t in 0..index.n_terms() {
        for (d, impact) in read_list(index, t) {
            entries[fill[d as usize] as usize] = Entry {
                term: t as u16,
                impact,
            };
            fill[d as usize] += 1;
        }
    }
    // Strongest first, so a row's prefix is its strongest entries.
    for d in 0..n_docs {
        entries[start[d] as usize..start[d + 1] as usize]
            .sort_unstable_by_key(|e| (std::cmp::Reverse(e.impact), e.term));
    }
    (start, entries, impacts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieve::algorithms::exhaustive;

    fn collection() -> (tempfile::TempDir, InvertedIndex, Vec<SparseVector>) {
        let mut s = 7u64;
        let docs: Vec<SparseVector> = (0..600)
            .map(|d| {
                let topic = (d % 12) as u32 * 40;
                let mut terms: Vec<u32> = (0..25)
                    .map(|_| topic + (crate::rng::splitmix64(&mut s) % 60) as u32)
                    .collect();
                terms.sort_unstable();
                terms.dedup();
                let weights = terms
                    .iter()
                    .map(|_| 0.1 + (crate::rng::splitmix64(&mut s) % 100) as f32 / 40.0)
                    .collect();
                SparseVector { terms, weights }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        crate::index::build::build(dir.path(), &docs, 600, 0.0).unwrap();
        let index = InvertedIndex::open(dir.path()).unwrap();
        (dir, index, docs)
    }

    #[test]
    fn without_pruning_or_skipping_it_is_exact() {
        let (_dir, index, docs) = collection();
        let knobs = BuildKnobs {
            n_postings: usize::MAX,
            centroid_fraction: 0.1,
            summary_energy: 1.0,
            pruning: ListPruning::PerList,
        };
        let approx = ApproximateIndex::build(&index, knobs).unwrap();
        assert_exact(
            &approx,
            &index,
            &docs,
            37,
            SearchKnobs::whole_rows(usize::MAX, 1.0),
        );
        // Rows scored by prefix and always completed (factor 0): still exact.
        let prefixed = SearchKnobs {
            row_prefix: 4,
            completion: 0.0,
            ..SearchKnobs::whole_rows(usize::MAX, 1.0)
        };
        assert_exact(&approx, &index, &docs, 37, prefixed);
    }

    #[test]
    fn forward_rows_hold_a_documents_postings_strongest_first() {
        let (_dir, index, docs) = collection();
        let (start, fwd, _) = forward(&index);
        let scale = index.scale;
        for (d, v) in docs.iter().enumerate().step_by(29) {
            let row = &fwd[start[d] as usize..start[d + 1] as usize];
            assert!(
                row.windows(2).all(|w| w[0].impact >= w[1].impact),
                "doc {d}"
            );
            let mut got: Vec<u32> = row.iter().map(|e| u32::from(e.term)).collect();
            got.sort_unstable();
            let want: Vec<u32> = v
                .terms
                .iter()
                .zip(&v.weights)
                .filter(|(_, w)| crate::index::build::quantize(**w, scale) > 0)
                .map(|(t, _)| *t)
                .collect();
            assert_eq!(got, want, "doc {d}");
        }
    }

    /// Asserts that walking every list without skipping returns exhaustive's top 10 for every
    /// `step`-th document as a query (full summaries are upper bounds, so skipping by them at
    /// factor 1 loses nothing).
    fn assert_exact(
        approx: &ApproximateIndex,
        index: &InvertedIndex,
        queries: &[SparseVector],
        step: usize,
        search: SearchKnobs,
    ) {
        let (mut scratch, mut acc) = (ApproximateScratch::default(), Vec::new());
        for q in queries.iter().step_by(step) {
            let got = approx.search(q, 10, search, &mut scratch);
            assert_eq!(got, exhaustive(index, q, 10, &mut acc));
        }
    }

    #[test]
    fn global_pruning_keeps_the_collections_highest_impacts() {
        let knobs = |n_postings, max_fraction| BuildKnobs {
            n_postings,
            centroid_fraction: 0.1,
            summary_energy: 1.0,
            pruning: ListPruning::Global { max_fraction },
        };
        let mut impacts = [0u64; 256];
        (impacts[10], impacts[20], impacts[200]) = (5, 5, 1);
        // Budget 2 × 4 = 8: impacts ≥ 20 (6 postings) fit, adding the 10s (11) would not.
        let cut = ListCut::new(knobs(2, 1.5), 4, &impacts);
        assert_eq!((cut.min_impact, cut.max_len), (20, 3));
        assert_eq!(ListCut::new(knobs(3, 1.0), 4, &impacts).min_impact, 10);
        assert_eq!(ListCut::new(knobs(1, 1.0), 1, &impacts).min_impact, 200);
        // The highest level is kept even when it alone is over the budget.
        assert_eq!(ListCut::new(knobs(1, 1.0), 0, &impacts).min_impact, 200);
        impacts[200] = 10;
        assert_eq!(ListCut::new(knobs(2, 1.0), 2, &impacts).min_impact, 200);
        let (_dir, index, docs) = collection();
        let lists = (0..index.n_terms())
            .filter(|t| index.term(*t).is_some())
            .count();
        let per_list = |n_postings| BuildKnobs {
            pruning: ListPruning::PerList,
            ..knobs(n_postings, 1.0)
        };
        // A budget over every posting and a cap of 3: the lists are cut at 3, as per-list's are.
        let capped = ApproximateIndex::build(&index, knobs(1 << 20, 3.5 / (1 << 20) as f32));
        let three = ApproximateIndex::build(&index, per_list(3)).unwrap();
        assert_eq!(capped.unwrap().kept_postings(), three.kept_postings());
        // A budget of 2 per list keeps at most that many overall, fewer than per-list's 2 each.
        let global = ApproximateIndex::build(&index, knobs(2, 100.0)).unwrap();
        let two = ApproximateIndex::build(&index, per_list(2)).unwrap();
        assert!(
            global.kept_postings() <= 2 * lists,
            "{}",
            global.kept_postings()
        );
        assert!(global.kept_postings() < two.kept_postings());
        // A budget over every posting and no cap keeps every list whole: exact again.
        let approx = ApproximateIndex::build(&index, knobs(1 << 20, 1e6)).unwrap();
        assert_exact(
            &approx,
            &index,
            &docs,
            41,
            SearchKnobs::whole_rows(usize::MAX, 1.0),
        );
    }

    #[test]
    fn clusters_follow_topics_and_dissolve_tiny_ones() {
        let (_dir, index, _docs) = collection();
        let knobs = BuildKnobs {
            n_postings: usize::MAX,
            centroid_fraction: 0.2,
            summary_energy: 0.4,
            pruning: ListPruning::PerList,
        };
        let approx = ApproximateIndex::build(&index, knobs).unwrap();
        // Term 50 lies in topics 1 (terms 40..100) and 0 (0..60): documents of two topics.
        let mut docs: Vec<u32> = read_list(&index, 50).iter().map(|p| p.0).collect();
        assert!(docs.len() > 20, "{} documents", docs.len());
        // About three documents per centroid: many clusters start at or under MIN_CLUSTER.
        let clusters = approx.cluster(&docs, 0.3);
        let blocks: Vec<&Vec<u32>> = clusters.iter().filter(|c| !c.is_empty()).collect();
        assert!(blocks.len() > 1);
        for b in &blocks {
            assert!(b.len() > MIN_CLUSTER, "a block of {} documents", b.len());
        }
        // Every document lands in one block.
        let mut seen: Vec<u32> = blocks.iter().flat_map(|b| b.iter().copied()).collect();
        seen.sort_unstable();
        docs.sort_unstable();
        assert_eq!(seen, docs);
        // Blocks are (mostly) of one topic: the collection's topic is `doc % 12`.
        let pure: usize = blocks
            .iter()
            .map(|b| {
                let ones = b.iter().filter(|d| *d % 12 == 1).count();
                ones.max(b.len() - ones)
            })
            .sum();
        assert!(pure * 10 >= docs.len() * 8, "{pure} of {}", docs.len());
    }

    #[test]
    fn pruning_trades_recall_for_fewer_documents_scored() {
        let (_dir, index, docs) = collection();
        let knobs = BuildKnobs {
            n_postings: 30,
            centroid_fraction: 0.2,
            summary_energy: 0.4,
            pruning: ListPruning::PerList,
        };
        let approx = ApproximateIndex::build(&index, knobs).unwrap();
        assert!(approx.blocks() > 0);
        let whole = SearchKnobs::whole_rows(5, 0.9);
        // Rows of about 20 entries scored on their 6 strongest first; completed when that
        // reaches 0.9 of the k-th score.
        let prefixed = SearchKnobs {
            row_prefix: 6,
            completion: 0.9,
            ..whole
        };
        for search in [whole, prefixed] {
            let mut scratch = ApproximateScratch::default();
            let mut acc = Vec::new();
            let (mut found, mut wanted) = (0, 0);
            for q in docs.iter().step_by(37) {
                let exact = exhaustive(&index, q, 10, &mut acc);
                let got = approx.search(q, 10, search, &mut scratch);
                // Every returned score is the exact one (never a prefix's partial score).
                for h in &got {
                    assert_eq!(h.score, exact_score(&approx, q, h.doc), "{search:?}");
                }
                wanted += exact.len();
                found += got.iter().filter(|h| exact.contains(h)).count();
            }
            let recall = found as f64 / wanted as f64;
            assert!((0.3..1.0).contains(&recall), "{search:?}: recall {recall}");
            if search.row_prefix > 0 {
                // Some rows were dropped after their prefix, and some were completed.
                let completed = scratch.rows_completed;
                assert!(
                    completed > 0 && completed < scratch.docs_scored,
                    "{completed}"
                );
            }
        }
    }

    /// `q`'s dot product with document `d`'s row, from the query's own quantized weights.
    fn exact_score(approx: &ApproximateIndex, q: &SparseVector, d: u32) -> u32 {
        approx
            .doc(d)
            .iter()
            .map(|e| {
                q.terms
                    .iter()
                    .position(|x| *x == u32::from(e.term))
                    .and_then(|p| quantized_query_weight(q.weights[p]))
                    .unwrap_or(0)
                    * u32::from(e.impact)
            })
            .sum()
    }
}
