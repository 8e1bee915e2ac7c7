//! Approximate retrieval in the manner of Seismic (Bruch et al., SIGIR 2024), built from the
//! quantized index at retrieve time:
//! - every term's postings are statically pruned to its `n_postings` highest impacts;
//! - the kept postings are clustered into blocks (one pass of nearest-centroid assignment, the
//!   centroids a deterministic sample of `centroid_fraction` of the list, similarity measured on
//!   each document's strongest terms);
//! - each block has a summary: per term, the largest impact among its documents, cut to the
//!   strongest entries holding `summary_energy` of the summary's mass;
//! - a query walks the lists of its `query_cut` strongest terms, blocks in decreasing order of
//!   summary score, and scores every document of a block exactly (forward index, the same integer
//!   scores as the exact algorithms) unless the block's summary score is under `heap_factor` × the
//!   current k-th score.
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
}

/// How a query is processed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchKnobs {
    /// The query's strongest terms whose lists are walked.
    pub query_cut: usize,
    /// A block is read when its summary score is at least this × the current k-th score.
    pub heap_factor: f32,
}

/// Terms of a document used to assign it to a centroid (Seismic's `doc_cut`).
const DOC_CUT: usize = 15;

/// Largest vocabulary the structure holds (terms are stored in 16 bits; BERT's is 30,522).
pub const MAX_TERMS: usize = 1 << 16;

/// A term and its impact, packed in 4 bytes so a document or summary is one memory stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Block `b`'s documents: `block_docs[block_doc_start[b]..block_doc_start[b + 1]]`.
    block_doc_start: Vec<u64>,
    block_docs: Vec<u32>,
    /// Block `b`'s summary: `summaries[summary_start[b]..summary_start[b + 1]]`, terms ascending.
    summary_start: Vec<u64>,
    summaries: Vec<Entry>,
    n_terms: usize,
}

/// One block of a term's list, while building.
struct BuiltBlock {
    docs: Vec<u32>,
    summary: Vec<(u32, u8)>,
}

/// Per-query scratch: the dense query and the per-document visit stamps.
pub struct ApproximateScratch {
    /// Indexed by a `u16` term, so lookups need no bounds check.
    query: Box<[u32; MAX_TERMS]>,
    seen: Vec<u32>,
    stamp: u32,
}

impl Default for ApproximateScratch {
    fn default() -> Self {
        ApproximateScratch {
            query: Box::new([0; MAX_TERMS]),
            seen: Vec::new(),
            stamp: 0,
        }
    }
}

impl ApproximateIndex {
    /// Builds the structure from `index` (every posting is read once); `None` when the index's
    /// vocabulary is larger than [`MAX_TERMS`].
    pub fn build(index: &InvertedIndex, knobs: BuildKnobs) -> Option<Self> {
        let n_terms = index.n_terms() as usize;
        if n_terms > MAX_TERMS {
            return None;
        }
        let lists: Vec<Vec<(u32, u8)>> = (0..n_terms as u32)
            .into_par_iter()
            .map(|t| read_list(index, t))
            .collect();
        let (doc_start, fwd) = forward(&lists, index.n_docs as usize);
        let mut me = ApproximateIndex {
            doc_start,
            fwd,
            term_blocks: vec![0],
            block_doc_start: vec![0],
            block_docs: Vec::new(),
            summary_start: vec![0],
            summaries: Vec::new(),
            n_terms,
        };
        let built: Vec<Vec<BuiltBlock>> = lists
            .into_par_iter()
            .map(|list| me.blocks_of(list, knobs))
            .collect();
        for blocks in built {
            for b in blocks {
                me.block_docs.extend_from_slice(&b.docs);
                me.block_doc_start.push(me.block_docs.len() as u64);
                me.summaries.extend(b.summary.iter().map(|(t, i)| Entry {
                    term: *t as u16,
                    impact: *i,
                }));
                me.summary_start.push(me.summaries.len() as u64);
            }
            me.term_blocks.push(me.block_doc_start.len() as u32 - 1);
        }
        Some(me)
    }

    /// Blocks in the structure.
    pub fn blocks(&self) -> usize {
        self.block_doc_start.len() - 1
    }

    /// Bytes held (forward index, blocks, summaries).
    pub fn bytes(&self) -> usize {
        (self.fwd.len() + self.summaries.len()) * std::mem::size_of::<Entry>()
            + self.doc_start.len() * 8
            + self.block_docs.len() * 4
            + (self.block_doc_start.len() + self.summary_start.len()) * 8
    }

    fn doc(&self, d: u32) -> &[Entry] {
        &self.fwd[self.doc_start[d as usize] as usize..self.doc_start[d as usize + 1] as usize]
    }

    /// A list's kept postings, clustered into summarised blocks.
    fn blocks_of(&self, mut list: Vec<(u32, u8)>, knobs: BuildKnobs) -> Vec<BuiltBlock> {
        if list.is_empty() {
            return Vec::new();
        }
        // Static pruning: the highest impacts (ties: lower doc first), then back to doc order.
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        list.truncate(knobs.n_postings.max(1));
        let docs: Vec<u32> = list.iter().map(|p| p.0).collect();
        let clusters = self.cluster(&docs, knobs.centroid_fraction);
        clusters
            .into_iter()
            .filter(|c| !c.is_empty())
            .map(|mut c| {
                c.sort_unstable();
                let summary = self.summary(&c, knobs.summary_energy);
                BuiltBlock { docs: c, summary }
            })
            .collect()
    }

    /// One pass of nearest-centroid assignment; centroids are evenly spaced picks of `docs`
    /// (which are in decreasing impact order, so the picks span the list's impact range).
    fn cluster(&self, docs: &[u32], fraction: f32) -> Vec<Vec<u32>> {
        let n_centroids = ((docs.len() as f32 * fraction).ceil() as usize).clamp(1, docs.len());
        if n_centroids == 1 {
            return vec![docs.to_vec()];
        }
        let step = docs.len() as f64 / n_centroids as f64;
        let centroids: Vec<u32> = (0..n_centroids)
            .map(|c| docs[(c as f64 * step) as usize])
            .collect();
        // Centroids' strongest terms, inverted: term → (centroid, impact).
        let mut by_term: std::collections::HashMap<u32, Vec<(u32, u32)>> = Default::default();
        for (c, d) in centroids.iter().enumerate() {
            for (t, i) in self.strongest(*d, DOC_CUT) {
                by_term.entry(t).or_default().push((c as u32, i));
            }
        }
        let mut clusters = vec![Vec::new(); n_centroids];
        let mut score = vec![0u32; n_centroids];
        for d in docs {
            score.iter_mut().for_each(|s| *s = 0);
            for (t, i) in self.strongest(*d, DOC_CUT) {
                for (c, ci) in by_term.get(&t).into_iter().flatten() {
                    score[*c as usize] += i * ci;
                }
            }
            // Best centroid; ties (and no shared term) go to the lowest.
            let best = (0..n_centroids)
                .max_by(|a, b| score[*a].cmp(&score[*b]).then(b.cmp(a)))
                .unwrap_or(0);
            clusters[best].push(*d);
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
    /// the total; terms ascending.
    fn summary(&self, docs: &[u32], energy: f32) -> Vec<(u32, u8)> {
        // Every (term, impact) of the block's documents, then the largest impact per term.
        let mut all: Vec<(u32, u8)> = docs
            .iter()
            .flat_map(|d| self.doc(*d).iter().map(|e| (u32::from(e.term), e.impact)))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        all.dedup_by_key(|e| e.0);
        let mut entries = all;
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = entries.iter().map(|e| f64::from(e.1)).sum();
        let mut kept = 0.0;
        let mut n = 0;
        while n < entries.len() && kept < f64::from(energy) * total {
            kept += f64::from(entries[n].1);
            n += 1;
        }
        entries.truncate(n.max(1));
        entries.sort_unstable_by_key(|e| e.0);
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
        s.seen.resize(self.doc_start.len() - 1, 0);
        s.stamp = s.stamp.wrapping_add(1);
        if s.stamp == 0 {
            s.seen.iter_mut().for_each(|x| *x = 0);
            s.stamp = 1;
        }
        terms.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut top = TopK::new(k);
        let mut ranked: Vec<(u32, u32)> = Vec::new();
        for (t, _) in terms.iter().take(knobs.query_cut.max(1)) {
            let (lo, hi) = (
                self.term_blocks[*t as usize],
                self.term_blocks[*t as usize + 1],
            );
            ranked.clear();
            ranked.extend((lo..hi).map(|b| (self.summary_score(b, &s.query), b)));
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for (bound, b) in &ranked {
                if (*bound as f32) < knobs.heap_factor * top.threshold() as f32 {
                    break;
                }
                self.score_block(*b, s, &mut top);
            }
        }
        for (t, _) in &terms {
            s.query[*t as usize] = 0;
        }
        top.into_sorted()
    }

    fn summary_score(&self, b: u32, query: &[u32; MAX_TERMS]) -> u32 {
        let (lo, hi) = (
            self.summary_start[b as usize] as usize,
            self.summary_start[b as usize + 1] as usize,
        );
        self.summaries[lo..hi]
            .iter()
            .map(|e| query[e.term as usize] * u32::from(e.impact))
            .sum()
    }

    fn score_block(&self, b: u32, s: &mut ApproximateScratch, top: &mut TopK) {
        let (lo, hi) = (
            self.block_doc_start[b as usize] as usize,
            self.block_doc_start[b as usize + 1] as usize,
        );
        for d in &self.block_docs[lo..hi] {
            if s.seen[*d as usize] == s.stamp {
                continue;
            }
            s.seen[*d as usize] = s.stamp;
            let score: u32 = self
                .doc(*d)
                .iter()
                .map(|e| s.query[e.term as usize] * u32::from(e.impact))
                .sum();
            if score > 0 {
                top.push(Hit { score, doc: *d });
            }
        }
    }
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

/// The forward index of `lists` over `n_docs` documents: offsets and entries (terms ascending).
fn forward(lists: &[Vec<(u32, u8)>], n_docs: usize) -> (Vec<u64>, Vec<Entry>) {
    let mut start = vec![0u64; n_docs + 1];
    for list in lists {
        for (d, _) in list {
            start[*d as usize + 1] += 1;
        }
    }
    for i in 0..n_docs {
        start[i + 1] += start[i];
    }
    let total = start[n_docs] as usize;
    let mut entries = vec![Entry { term: 0, impact: 0 }; total];
    let mut fill = start.clone();
    for (t, list) in lists.iter().enumerate() {
        for (d, i) in list {
            entries[fill[*d as usize] as usize] = Entry {
                term: t as u16,
                impact: *i,
            };
            fill[*d as usize] += 1;
        }
    }
    (start, entries)
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
        };
        let approx = ApproximateIndex::build(&index, knobs).unwrap();
        let search = SearchKnobs {
            query_cut: usize::MAX,
            heap_factor: 1.0,
        };
        let mut scratch = ApproximateScratch::default();
        let mut acc = Vec::new();
        for q in docs.iter().step_by(37) {
            // Full summaries are upper bounds, so skipping by them loses nothing.
            let got = approx.search(q, 10, search, &mut scratch);
            assert_eq!(got, exhaustive(&index, q, 10, &mut acc));
        }
    }

    #[test]
    fn pruning_trades_recall_for_fewer_documents_scored() {
        let (_dir, index, docs) = collection();
        let knobs = BuildKnobs {
            n_postings: 30,
            centroid_fraction: 0.2,
            summary_energy: 0.4,
        };
        let approx = ApproximateIndex::build(&index, knobs).unwrap();
        assert!(approx.blocks() > 0);
        let mut scratch = ApproximateScratch::default();
        let mut acc = Vec::new();
        let (mut found, mut wanted) = (0, 0);
        for q in docs.iter().step_by(37) {
            let exact = exhaustive(&index, q, 10, &mut acc);
            let knobs = SearchKnobs {
                query_cut: 5,
                heap_factor: 0.9,
            };
            let got = approx.search(q, 10, knobs, &mut scratch);
            // Every returned score is the exact one.
            for h in &got {
                let want: u32 = approx
                    .doc(h.doc)
                    .iter()
                    .map(|e| {
                        q.terms
                            .iter()
                            .position(|x| *x == u32::from(e.term))
                            .and_then(|p| quantized_query_weight(q.weights[p]))
                            .unwrap_or(0)
                            * u32::from(e.impact)
                    })
                    .sum();
                assert_eq!(h.score, want);
            }
            wanted += exact.len();
            found += got.iter().filter(|h| exact.contains(h)).count();
        }
        let recall = found as f64 / wanted as f64;
        assert!((0.3..1.0).contains(&recall), "recall {recall}");
    }
}
