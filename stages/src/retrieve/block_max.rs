//! Block-max pruning over doc-id ranges (after Mallia, Suel & Tonellotto, SIGIR 2024): the
//! collection is cut into ranges of [`RANGE_DOCS`] consecutive doc indexes; each term keeps its
//! maximum impact per range. A query sums those maxima into one upper bound per range, scores
//! ranges best bound first (a small term-at-a-time accumulator per range), and stops when no
//! remaining range can beat the current k-th hit. Safe: the same top-k as [`super::algorithms::exhaustive`],
//! ties included, because a range is skipped only when its best conceivable hit (its bound at its
//! lowest doc index) loses to the current k-th.

use crate::index::reader::InvertedIndex;
use crate::parquet_io::SparseVector;

use super::algorithms::prepare_terms;
use super::topk::{Hit, TopK};

pub use crate::index::ranges::{RangeTable as RangeMaxima, RANGE_BITS, RANGE_DOCS};

/// Reusable per-thread buffers of [`block_max`].
#[derive(Default)]
pub struct BlockMaxScratch {
    bounds: Vec<u32>,
    /// Per range, which of the query's first 64 terms occur in it (bit i = term i).
    present: Vec<u64>,
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
    bounds.resize(table.n_ranges(), 0);
    // With at most 64 terms, each range also notes which terms occur in it, so scoring a range
    // visits only those (most of a query's terms are absent from most small ranges).
    let masked = terms.len() <= 64;
    let present = &mut scratch.present;
    present.clear();
    if masked {
        present.resize(table.n_ranges(), 0);
    }
    for (i, (t, _, qw)) in terms.iter().enumerate() {
        let flags = masked.then(|| (&mut present[..], i as u32));
        table.add_bounds(*t, *qw, bounds, flags);
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
            if masked {
                let mut bits = present[r as usize];
                while bits != 0 {
                    let (c, qw) = &mut cursors[bits.trailing_zeros() as usize];
                    bits &= bits - 1;
                    c.next_geq(lo);
                    c.accumulate_until(hi, lo, *qw, &mut acc);
                }
            } else {
                for (c, qw) in cursors.iter_mut() {
                    c.next_geq(lo);
                    c.accumulate_until(hi, lo, *qw, &mut acc);
                }
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
