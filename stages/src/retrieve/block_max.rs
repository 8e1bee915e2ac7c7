//! Block-max pruning over doc-id ranges (after Mallia, Suel & Tonellotto, SIGIR 2024): the
//! collection is cut into ranges of [`RANGE_DOCS`] consecutive doc indexes; each term keeps its
//! maximum impact per range. A query sums those maxima into one upper bound per range, scores
//! ranges in rounds of the highest bounds left (picked from a histogram of the bounds; a small
//! term-at-a-time accumulator per range), and stops when no remaining range can beat the
//! current k-th hit. Query terms are taken by reach (weight × their list's max impact), largest
//! first: the 32 whose presence each range notes are those that matter most, and a scored range
//! is dropped as soon as its best partial score plus what its unscored terms can still add falls
//! under the k-th score. Safe: the same top-k as [`super::algorithms::exhaustive`], ties
//! included, because a range is skipped or dropped only when its best conceivable hit (at its
//! lowest doc index) loses to the current k-th, and a tie does not lose.

use crate::index::format::TermMeta;
use crate::index::reader::InvertedIndex;
use crate::parquet_io::SparseVector;

use super::algorithms::prepare_terms;
use super::topk::{Hit, TopK};

pub use crate::index::ranges::{RangeTable as RangeMaxima, RANGE_BITS, RANGE_DOCS};

/// Buckets of the bound histogram that picks each round's ranges.
const BUCKETS: usize = 1024;

/// Reusable per-thread buffers of [`block_max`].
#[derive(Default)]
pub struct BlockMaxScratch {
    /// Per range: its bound (high 32 bits) and which of the query's first 32 terms occur in it
    /// (bit i of the low 32 = term i).
    slots: Vec<u64>,
    /// Per histogram bucket: ranges in it.
    counts: Vec<u32>,
    batch: Vec<u32>,
    /// Ranges under the rounds scored so far that may still enter, ascending.
    candidates: Vec<u32>,
    /// Ranges scored, summed over the queries run with this scratch (against `ranges_bounded`:
    /// how much work pruning saved).
    pub ranges_scored: u64,
    /// (range, query term) pairs scored, summed the same way: a term counts in every scored
    /// range it occurs in (terms past the query's first 32 in every scored range), up to the
    /// term at which the range was cut.
    pub range_terms_scored: u64,
    /// Scored ranges left with terms still unscored, because those could no longer lift any
    /// of the range's documents to the k-th score; summed the same way.
    pub ranges_cut: u64,
    /// Ranges with a non-zero bound (the candidates before pruning), summed the same way.
    pub ranges_bounded: u64,
    /// Seconds spent computing the ranges' bounds, summed the same way (the rest of the time
    /// is choosing and scoring ranges).
    pub bounds_s: f64,
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

/// Query terms whose presence each range notes (the rest are looked up in every scored range).
const FLAGGED: usize = 32;

/// The bound half of a range's slot.
#[inline]
fn bound(slot: u64) -> u32 {
    (slot >> 32) as u32
}

/// The most a term of query weight `qw` adds to any document's score.
#[inline]
fn reach(m: &TermMeta, qw: u32) -> u32 {
    qw * u32::from(m.max_impact)
}

/// The top `k` of `q` by block-max pruning over `table` (built from the same `index`).
pub fn block_max(
    index: &InvertedIndex,
    table: &RangeMaxima,
    q: &SparseVector,
    k: usize,
    scratch: &mut BlockMaxScratch,
) -> Vec<Hit> {
    let started = std::time::Instant::now();
    let mut terms = prepare_terms(index, q);
    // Largest possible contribution first: flags go to the terms that matter most, and a range
    // is scored in that order, so it can be dropped once its unscored terms cannot lift it.
    terms.sort_by_key(|(_, m, qw)| std::cmp::Reverse(reach(m, *qw)));
    add_bounds(table, &terms, scratch);
    scratch.bounds_s += started.elapsed().as_secs_f64();
    let Some(max) = scratch
        .slots
        .iter()
        .map(|s| bound(*s))
        .max()
        .filter(|m| *m > 0)
    else {
        return Vec::new();
    };
    // bucket(b) = ⌊b · (BUCKETS − 1) / max⌋, ascending in b, by a multiply and a shift.
    let factor = (((BUCKETS - 1) as u64) << 32) / u64::from(max);
    let bucket = |b: u32| ((u64::from(b) * factor) >> 32) as usize;
    // The smallest bound in bucket j or above (bucket(b) ≥ j ⟺ b · factor ≥ j · 2^32).
    let edge = |j: usize| ((((j as u64) << 32).div_ceil(factor)) as u32).max(1);
    fill_histogram(scratch, bucket);

    let mut top = TopK::new(k);
    // Rounds of doubling size take the ranges of the next highest buckets (at least `round`
    // of them, bounds from `cut` up), scored in doc order so cursors only move forward
    // (fresh each round). A round's hits raise the k-th score; the rounds stop when every
    // range left has a bound under it.
    let mut round = k.div_ceil(RANGE_DOCS) + 8;
    let mut next_bucket = BUCKETS;
    let mut first_round = true;
    while let Some((lo, cut)) = next_cut(scratch, next_bucket, round, edge) {
        take_round(scratch, cut, first_round);
        let batch = std::mem::take(&mut scratch.batch);
        score_ranges(index, &terms, &batch, &mut top, scratch);
        scratch.batch = batch;
        if first_round {
            first_round = false;
            let floor = top.worst().map_or(1, |w| w.score.max(1));
            keep_candidates(scratch, floor, cut);
        }
        (next_bucket, round) = (lo, round * 2);
        // Every range left has a bound below `cut`: none can enter once the k-th score is at
        // least `cut` (a hit's score never exceeds its range's bound).
        if top.worst().is_some_and(|w| w.score >= cut) || scratch.candidates.is_empty() {
            break;
        }
    }
    top.into_sorted()
}

/// The next round's buckets: those below `above`, highest first, until they hold `round` ranges
/// (or none is left). Returns the lowest bucket taken and its lower edge (`edge`: no bound
/// below it is in a bucket taken, none from it up in a bucket left); `None` when no bucket
/// below `above` holds a range.
fn next_cut(
    scratch: &BlockMaxScratch,
    above: usize,
    round: usize,
    edge: impl Fn(usize) -> u32,
) -> Option<(usize, u32)> {
    let mut lo = above;
    let mut n = 0usize;
    while lo > 0 && n < round {
        lo -= 1;
        n += scratch.counts[lo] as usize;
    }
    (n > 0).then(|| (lo, edge(lo)))
}

/// Fills `scratch.batch` with the ranges (ascending) whose bound is at least `cut`: on the first
/// round by scanning every range, afterwards by moving them out of `scratch.candidates`.
fn take_round(scratch: &mut BlockMaxScratch, cut: u32, first_round: bool) {
    let BlockMaxScratch {
        slots,
        batch,
        candidates,
        ..
    } = scratch;
    if first_round {
        select_ranges(slots, |b| b >= cut, batch);
        return;
    }
    // Branch-free: which ranges pass is close to random. Each range is written to both lists
    // and counted in the one it belongs to; `candidates` is compacted in place (kept ≤ read).
    batch.clear();
    batch.resize(candidates.len(), 0);
    let (mut taken, mut kept) = (0, 0);
    for i in 0..candidates.len() {
        let r = candidates[i];
        let take = bound(slots[r as usize]) >= cut;
        batch[taken] = r;
        candidates[kept] = r;
        taken += usize::from(take);
        kept += usize::from(!take);
    }
    batch.truncate(taken);
    candidates.truncate(kept);
}

/// Sets `out` to the ranges (ascending) whose bound passes `keep`. Branch-free: every range is
/// written at the end of those kept so far (never past itself) and counted only if it passes.
fn select_ranges(slots: &[u64], keep: impl Fn(u32) -> bool, out: &mut Vec<u32>) {
    out.clear();
    out.resize(slots.len(), 0);
    let mut n = 0;
    for (r, s) in slots.iter().enumerate() {
        out[n] = r as u32;
        n += usize::from(keep(bound(*s)));
    }
    out.truncate(n);
}

/// After the first round (which took every bound from `cut` up): the ranges that may still
/// enter, those with a bound from `floor` (the k-th score, or 1) to under `cut`. The k-th score
/// only rises, so later rounds need look at no other range.
fn keep_candidates(scratch: &mut BlockMaxScratch, floor: u32, cut: u32) {
    select_ranges(
        &scratch.slots,
        |b| (floor..cut).contains(&b),
        &mut scratch.candidates,
    );
}

/// Sums the query's per-range maxima into `scratch.slots`, noting which of its first
/// [`FLAGGED`] terms occur in each range. With AVX2 where the CPU has it (checked at run time):
/// the dense rows' pass then adds four slots per instruction instead of two.
fn add_bounds(table: &RangeMaxima, terms: &[(u32, TermMeta, u32)], scratch: &mut BlockMaxScratch) {
    let slots = &mut scratch.slots;
    slots.clear();
    slots.resize(table.n_slots(), 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { add_bounds_avx2(table, terms, slots) };
        return;
    }
    add_bounds_to(table, terms, slots)
}

#[inline(always)]
fn add_bounds_to(table: &RangeMaxima, terms: &[(u32, TermMeta, u32)], slots: &mut [u64]) {
    for (i, (t, _, qw)) in terms.iter().enumerate() {
        let flag = if i < FLAGGED { 1 << i } else { 0 };
        table.add_bounds(*t, *qw, flag, slots);
    }
}

/// [`add_bounds_to`] compiled for AVX2.
///
/// # Safety
/// Only on a CPU with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_bounds_avx2(table: &RangeMaxima, terms: &[(u32, TermMeta, u32)], slots: &mut [u64]) {
    add_bounds_to(table, terms, slots)
}

/// Counts the ranges with a non-zero bound per bucket. Four interleaved tallies, so runs of
/// ranges in one bucket do not wait on each other's increments.
fn fill_histogram(scratch: &mut BlockMaxScratch, bucket: impl Fn(u32) -> usize) {
    let mut tallies = [[0u32; BUCKETS]; 4];
    let mut bounded = 0usize;
    // Whole pages of slots: a multiple of four.
    for four in scratch.slots.chunks_exact(4) {
        for (tally, s) in tallies.iter_mut().zip(four) {
            let b = bound(*s);
            tally[bucket(b)] += 1;
            bounded += usize::from(b > 0);
        }
    }
    scratch.counts.clear();
    scratch
        .counts
        .extend((0..BUCKETS).map(|j| tallies.iter().map(|t| t[j]).sum::<u32>()));
    // Bucket 0 also tallied the ranges without a bound.
    scratch.counts[0] -= (scratch.slots.len() - bounded) as u32;
    scratch.ranges_bounded += bounded as u64;
}

/// Scores the ranges of `batch` (ascending) that may still enter `top`, offering their
/// documents to it. `terms` are the query's `(term, postings, weight)`.
fn score_ranges(
    index: &InvertedIndex,
    terms: &[(u32, TermMeta, u32)],
    batch: &[u32],
    top: &mut TopK,
    scratch: &mut BlockMaxScratch,
) {
    let mut cursors: Vec<_> = terms
        .iter()
        .map(|(_, m, qw)| (index.cursor(*m), *qw))
        .collect();
    let reaches: Vec<u32> = terms.iter().map(|(_, m, qw)| reach(m, *qw)).collect();
    let flagged = terms.len().min(FLAGGED);
    let unflagged_reach: u32 = reaches[flagged..].iter().sum();
    let mut acc = [0u32; RANGE_DOCS];
    'ranges: for &r in batch {
        let lo = r << RANGE_BITS;
        let slot = scratch.slots[r as usize];
        if !may_enter(top, bound(slot), lo) {
            continue;
        }
        let hi = lo + RANGE_DOCS as u32;
        scratch.ranges_scored += 1;
        acc.fill(0);
        // The flagged terms occurring in the range (bit i = term i), then every other term.
        // What the terms not scored yet can still add to any of its documents is at most both
        // their lists' maxima (`by_lists`) and the range's bound less each scored term's largest
        // contribution here (`by_range`: the bound counted at least that much for the term).
        let unflagged = flagged..terms.len();
        let mut by_lists = BitIter(slot as u32).map(|i| reaches[i]).sum::<u32>() + unflagged_reach;
        let mut by_range = bound(slot);
        let mut unscored = (slot as u32).count_ones() as usize + unflagged.len();
        for i in BitIter(slot as u32).chain(unflagged) {
            let (c, qw) = &mut cursors[i];
            c.next_geq(lo);
            let added = *qw * c.accumulate_until_max(hi, lo, *qw, &mut acc);
            scratch.range_terms_scored += 1;
            unscored -= 1;
            by_lists -= reaches[i];
            by_range = by_range.saturating_sub(added);
            let left = by_lists.min(by_range);
            if let Some(w) = top.worst() {
                if left < w.score && acc.iter().max().map_or(0, |b| *b) + left < w.score {
                    // No document of the range can reach the k-th score (not even tie it).
                    scratch.ranges_cut += u64::from(unscored > 0);
                    continue 'ranges;
                }
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

/// The indexes of the set bits of a u32, ascending.
struct BitIter(u32);

impl Iterator for BitIter {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let i = self.0.trailing_zeros() as usize;
            self.0 &= self.0 - 1;
            i
        })
    }
}
