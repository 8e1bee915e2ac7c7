//! Block-max pruning over doc-id ranges (after Mallia, Suel & Tonellotto, SIGIR 2024): the
//! collection is cut into ranges of [`RANGE_DOCS`] consecutive doc indexes; each term keeps its
//! maximum impact per range. A query sums those maxima into one upper bound per range, scores
//! ranges best bound first (a small term-at-a-time accumulator per range), and stops when no
//! remaining range can beat the current k-th hit. Safe: the same top-k as [`super::algorithms::exhaustive`],
//! ties included, because a range is skipped only when its best conceivable hit (its bound at its
//! lowest doc index) loses to the current k-th.

use rayon::prelude::*;

use crate::index::reader::{InvertedIndex, END};
use crate::parquet_io::SparseVector;

use super::algorithms::prepare_terms;
use super::topk::{Hit, TopK};

/// log2 of the docs per range.
const RANGE_BITS: u32 = 6;
/// Docs per range: small enough for tight bounds, large enough that the bound table stays a
/// fraction of the postings.
pub const RANGE_DOCS: usize = 1 << RANGE_BITS;

/// Per-term maxima of impacts over doc ranges: the bound table, built from the postings once
/// per opened index (one decoding pass, parallel over terms).
pub struct RangeMaxima {
    /// Row `t` is `ranges[offsets[t]..offsets[t + 1]]` (ascending) with `maxima` beside it.
    offsets: Vec<usize>,
    ranges: Vec<u32>,
    maxima: Vec<u8>,
    n_ranges: usize,
}

impl RangeMaxima {
    /// Scans every posting list of `index`.
    pub fn build(index: &InvertedIndex) -> Self {
        let rows: Vec<(Vec<u32>, Vec<u8>)> = (0..index.n_terms())
            .into_par_iter()
            .map(|t| {
                let (mut ranges, mut maxima): (Vec<u32>, Vec<u8>) = (Vec::new(), Vec::new());
                if let Some(meta) = index.term(t) {
                    let mut c = index.cursor(meta);
                    while c.doc() != END {
                        let r = c.doc() >> RANGE_BITS;
                        let imp = c.impact().min(255) as u8;
                        if ranges.last() == Some(&r) {
                            let last = maxima.len() - 1;
                            maxima[last] = maxima[last].max(imp);
                        } else {
                            ranges.push(r);
                            maxima.push(imp);
                        }
                        c.next();
                    }
                }
                (ranges, maxima)
            })
            .collect();
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        let total: usize = rows.iter().map(|r| r.0.len()).sum();
        let (mut ranges, mut maxima) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for (r, m) in rows {
            ranges.extend_from_slice(&r);
            maxima.extend_from_slice(&m);
            offsets.push(ranges.len());
        }
        RangeMaxima {
            offsets,
            ranges,
            maxima,
            n_ranges: (index.n_docs as usize).div_ceil(RANGE_DOCS),
        }
    }

    /// Entries in the table (one per term and range it occurs in).
    pub fn entries(&self) -> usize {
        self.ranges.len()
    }

    fn row(&self, term: u32) -> (&[u32], &[u8]) {
        let t = term as usize;
        match (self.offsets.get(t), self.offsets.get(t + 1)) {
            (Some(&lo), Some(&hi)) => (&self.ranges[lo..hi], &self.maxima[lo..hi]),
            _ => (&[], &[]),
        }
    }
}

/// Reusable per-thread buffers of [`block_max`].
#[derive(Default)]
pub struct BlockMaxScratch {
    bounds: Vec<u32>,
    order: Vec<(u32, u32)>,
    /// Ranges scored, summed over the queries run with this scratch (against `ranges_bounded`:
    /// how much work pruning saved).
    pub ranges_scored: u64,
    /// Ranges with a non-zero bound (the candidates before pruning), summed the same way.
    pub ranges_bounded: u64,
}

/// Whether a range whose best conceivable hit is `(bound, first doc)` can still enter `top`.
fn may_enter(top: &TopK, bound: u32, first_doc: u32) -> bool {
    match top.worst() {
        None => bound > 0,
        Some(worst) => {
            Hit {
                score: bound,
                doc: first_doc,
            } > worst
        }
    }
}

/// The top `k` of `q` by block-max pruning over `table` (built from the same `index`).
pub fn block_max(
    index: &InvertedIndex,
    table: &RangeMaxima,
    q: &SparseVector,
    k: usize,
    scratch: &mut BlockMaxScratch,
) -> Vec<Hit> {
    let terms = prepare_terms(index, q);
    let bounds = &mut scratch.bounds;
    bounds.clear();
    bounds.resize(table.n_ranges, 0);
    for (t, _, qw) in &terms {
        let (ranges, maxima) = table.row(*t);
        for (r, m) in ranges.iter().zip(maxima) {
            bounds[*r as usize] += qw * *m as u32;
        }
    }
    let order = &mut scratch.order;
    order.clear();
    order.extend(
        bounds
            .iter()
            .enumerate()
            .filter(|(_, b)| **b > 0)
            .map(|(r, b)| (*b, r as u32)),
    );
    // Best bound first; among equal bounds the lower range (lower doc indexes win ties).
    scratch.ranges_bounded += order.len() as u64;
    let better = |a: &(u32, u32), b: &(u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));

    let mut top = TopK::new(k);
    let mut acc = [0u32; RANGE_DOCS];
    // Ranges are scored in rounds of doubling size, each round the best bounds left (selected,
    // not sorted); inside a round in doc order, so cursors only move forward (fresh each round).
    let mut round = k.div_ceil(RANGE_DOCS) + 8;
    let mut batch: Vec<u32> = Vec::new();
    let mut rest = &mut order[..];
    while !rest.is_empty() {
        if top.worst().is_some() {
            // Drop every range that can no longer enter; stop when none is left.
            let mut keep = 0;
            for i in 0..rest.len() {
                let (b, r) = rest[i];
                if may_enter(&top, b, r << RANGE_BITS) {
                    rest.swap(keep, i);
                    keep += 1;
                }
            }
            rest = &mut rest[..keep];
            if rest.is_empty() {
                break;
            }
        }
        let take = round.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, better);
        }
        let (now, later) = std::mem::take(&mut rest).split_at_mut(take);
        rest = later;
        batch.clear();
        batch.extend(now.iter().map(|(_, r)| *r));
        batch.sort_unstable();
        round *= 2;
        let mut cursors: Vec<_> = terms
            .iter()
            .map(|(_, m, qw)| (index.cursor(*m), *qw))
            .collect();
        for &r in batch.iter() {
            let lo = r << RANGE_BITS;
            if !may_enter(&top, bounds[r as usize], lo) {
                continue;
            }
            let hi = lo + RANGE_DOCS as u32;
            scratch.ranges_scored += 1;
            acc.fill(0);
            for (c, qw) in cursors.iter_mut() {
                c.next_geq(lo);
                c.accumulate_until(hi, lo, *qw, &mut acc);
            }
            for (i, s) in acc.iter().enumerate() {
                if *s > 0 {
                    top.push(Hit {
                        score: *s,
                        doc: lo + i as u32,
                    });
                }
            }
        }
    }
    top.into_sorted()
}
