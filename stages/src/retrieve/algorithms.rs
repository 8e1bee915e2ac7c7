//! Query processing over the quantized index. Scores are integers (quantized query weight ×
//! impact), so every algorithm computes exactly the same scores and, with the shared tie rule,
//! the same top-k: dynamic pruning is safe by construction, and property-tested.

use crate::index::format::TermMeta;
use crate::index::reader::{InvertedIndex, END};
use crate::parquet_io::SparseVector;

use super::topk::{Hit, TopK};

/// Query weights are quantized as `round(w · QUERY_SCALE)` (Anserini's ×100 convention).
pub const QUERY_SCALE: f32 = 100.0;

/// A query weight as the integer every algorithm scores with (`None` when it rounds below 1).
pub fn quantized_query_weight(w: f32) -> Option<u32> {
    let qw = (w * QUERY_SCALE).round();
    (qw >= 1.0).then(|| qw.min(u32::MAX as f32 / 256.0) as u32)
}

/// A query's terms that have postings: `(term id, postings, integer weight)`.
pub fn prepare_terms(index: &InvertedIndex, q: &SparseVector) -> Vec<(u32, TermMeta, u32)> {
    q.terms
        .iter()
        .zip(&q.weights)
        .filter_map(|(t, w)| {
            let qw = quantized_query_weight(*w)?;
            index.term(*t).map(|m| (*t, m, qw))
        })
        .collect()
}

/// A query's terms that have postings, with integer weights.
pub fn prepare(index: &InvertedIndex, q: &SparseVector) -> Vec<(TermMeta, u32)> {
    prepare_terms(index, q)
        .into_iter()
        .map(|(_, m, qw)| (m, qw))
        .collect()
}

/// Docs scored per accumulator pass of [`exhaustive`]: 64k u32 scores = 256 KiB, which stays in
/// L2, so every posting's add hits cache however large the collection is.
pub const ACCUMULATOR_DOCS: u32 = 1 << 16;

/// Term-at-a-time over every posting with a dense accumulator: the reference.
pub fn exhaustive(
    index: &InvertedIndex,
    q: &SparseVector,
    k: usize,
    acc: &mut Vec<u32>,
) -> Vec<Hit> {
    exhaustive_in_slices(index, q, k, acc, ACCUMULATOR_DOCS)
}

/// [`exhaustive`] taking the doc-id space in slices of `slice` docs: every term's cursor is
/// advanced through a slice, then the slice's scores are offered to the top-k. Same scores and
/// top-k as one collection-wide accumulator, with far fewer cache misses on large collections.
pub fn exhaustive_in_slices(
    index: &InvertedIndex,
    q: &SparseVector,
    k: usize,
    acc: &mut Vec<u32>,
    slice: u32,
) -> Vec<Hit> {
    let mut cursors: Vec<_> = prepare(index, q)
        .into_iter()
        .map(|(meta, qw)| (index.cursor(meta), qw))
        .collect();
    let slice = slice.clamp(1, index.n_docs.max(1));
    acc.clear();
    acc.resize(slice as usize, 0);
    let mut top = TopK::new(k);
    let mut lo = 0u32;
    while lo < index.n_docs {
        let hi = lo.saturating_add(slice).min(index.n_docs);
        for (c, qw) in cursors.iter_mut() {
            c.accumulate_until(hi, lo, *qw, acc);
        }
        for (i, s) in acc[..(hi - lo) as usize].iter_mut().enumerate() {
            if *s > 0 {
                top.push(Hit {
                    score: *s,
                    doc: lo + i as u32,
                });
                *s = 0;
            }
        }
        lo = hi;
    }
    top.into_sorted()
}

/// MaxScore (Turtle & Flood) document-at-a-time: terms sorted by their maximum contribution;
/// those whose summed maxima cannot beat the current k-th score are only probed for documents
/// found through the others, and a document is abandoned as soon as its upper bound cannot enter.
pub fn maxscore(index: &InvertedIndex, q: &SparseVector, k: usize) -> Vec<Hit> {
    let mut terms = prepare(index, q);
    terms.sort_by_key(|(m, qw)| qw * m.max_impact as u32);
    let max: Vec<u32> = terms
        .iter()
        .map(|(m, qw)| qw * m.max_impact as u32)
        .collect();
    // ub[i] = Σ_{j ≤ i} max[j]
    let mut ub = Vec::with_capacity(max.len());
    let mut s = 0u32;
    for m in &max {
        s += m;
        ub.push(s);
    }
    let weights: Vec<u32> = terms.iter().map(|t| t.1).collect();
    let mut cursors: Vec<_> = terms.iter().map(|(m, _)| index.cursor(*m)).collect();
    let mut top = TopK::new(k);
    let mut threshold = 0u32;
    // Terms [0, first_essential) are non-essential.
    let mut first_essential = 0usize;
    let n = cursors.len();
    let mut doc = cursors.iter().map(|c| c.doc()).min().unwrap_or(END);
    while doc != END {
        // Score the essential terms and find the next candidate in the same pass.
        let mut score = 0u32;
        let mut next = END;
        for i in first_essential..n {
            let c = &mut cursors[i];
            if c.doc() == doc {
                score += weights[i] * c.impact();
                c.next();
            }
            next = next.min(c.doc());
        }
        let mut alive = true;
        for i in (0..first_essential).rev() {
            if score + ub[i] <= threshold {
                alive = false;
                break;
            }
            cursors[i].next_geq(doc);
            if cursors[i].doc() == doc {
                score += weights[i] * cursors[i].impact();
            }
        }
        if alive && score > threshold {
            top.push(Hit { score, doc });
            let t = top.threshold();
            if t != threshold {
                threshold = t;
                let before = first_essential;
                while first_essential < n && ub[first_essential] <= threshold {
                    first_essential += 1;
                }
                if first_essential == n {
                    break;
                }
                if first_essential != before {
                    next = cursors[first_essential..]
                        .iter()
                        .map(|c| c.doc())
                        .min()
                        .unwrap_or(END);
                }
            }
        }
        doc = next;
    }
    top.into_sorted()
}
