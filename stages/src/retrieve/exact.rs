//! Exact float scoring without quantization: the reference that the quantized index's rankings
//! are measured against (`splade bench quantization`).

use crate::parquet_io::SparseVector;

/// An in-memory float inverted index: per term, `(doc index, weight)` in doc order.
pub struct FloatIndex {
    postings: Vec<Vec<(u32, f32)>>,
    /// Documents indexed.
    pub n_docs: u32,
}

impl FloatIndex {
    /// Inverts `docs` (weights kept as they are).
    pub fn build(docs: &[SparseVector]) -> Self {
        let vocab = docs
            .iter()
            .flat_map(|v| v.terms.iter())
            .map(|t| *t as usize + 1)
            .max()
            .unwrap_or(0);
        let mut postings = vec![Vec::new(); vocab];
        for (d, v) in docs.iter().enumerate() {
            for (t, w) in v.terms.iter().zip(&v.weights) {
                postings[*t as usize].push((d as u32, *w));
            }
        }
        FloatIndex {
            postings,
            n_docs: docs.len() as u32,
        }
    }

    /// The `k` best `(doc index, score)` by the exact dot product, score descending then doc
    /// index ascending; documents scoring 0 are left out. Scores are
    /// accumulated in query-term order in f32.
    pub fn top_k(&self, q: &SparseVector, k: usize, acc: &mut Vec<f32>) -> Vec<(u32, f32)> {
        acc.clear();
        acc.resize(self.n_docs as usize, 0.0);
        for (t, w) in q.terms.iter().zip(&q.weights) {
            for (d, dw) in self.postings.get(*t as usize).into_iter().flatten() {
                acc[*d as usize] += w * dw;
            }
        }
        let mut hits: Vec<(u32, f32)> = acc
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > 0.0)
            .map(|(d, s)| (d as u32, *s))
            .collect();
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if hits.len() > k && k > 0 {
            hits.select_nth_unstable_by(k - 1, order);
            hits.truncate(k);
        }
        hits.sort_by(order);
        hits
    }
}

/// Share of `reference`'s first `k` documents that are also among `candidate`'s first `k`
/// (1.0 when the reference is empty).
pub fn overlap_at(reference: &[u32], candidate: &[u32], k: usize) -> f64 {
    let want: std::collections::HashSet<u32> = reference.iter().take(k).copied().collect();
    if want.is_empty() {
        return 1.0;
    }
    let found = candidate
        .iter()
        .take(k)
        .filter(|d| want.contains(d))
        .count();
    found as f64 / want.len() as f64
}
