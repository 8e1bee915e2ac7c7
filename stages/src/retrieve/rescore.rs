//! Two-step SPLADE (Lassance et al., ECIR 2024): a first pass over an index of pruned document
//! vectors with pruned queries, then the first pass's candidates rescored by the exact dot
//! product of the full query and document vectors.

use crate::error::{Result, StageError};
use crate::parquet_io::{read_sparse, SparseVector};

/// The full document vectors, by the index's document order (a forward index, held in memory:
/// about 8 bytes per term of the collection's vectors).
pub struct ForwardIndex {
    docs: Vec<SparseVector>,
}

impl ForwardIndex {
    /// Reads `path` (vectors: a Parquet file or shard directory) and checks that it holds the
    /// index's documents in the index's order.
    pub fn open(path: &std::path::Path, doc_ids: &[String]) -> Result<Self> {
        let (ids, docs) = read_sparse(path)?;
        if ids.len() != doc_ids.len() {
            return Err(StageError::Other(format!(
                "{}: `rescore` has {} vectors but the index has {} documents; it must be the \
                 index's documents, unpruned",
                path.display(),
                ids.len(),
                doc_ids.len()
            )));
        }
        if let Some(i) = (0..ids.len()).find(|i| ids[*i] != doc_ids[*i]) {
            return Err(StageError::Other(format!(
                "{}: `rescore` row {i} is document {:?} where the index has {:?}; it must hold \
                 the index's documents in the same order",
                path.display(),
                ids[i],
                doc_ids[i]
            )));
        }
        Ok(ForwardIndex { docs })
    }

    /// `candidates` (doc indexes) by the exact f32 dot product with `query`, score descending
    /// then doc index ascending, the best `k` of those scoring above 0.
    pub fn rescore(&self, query: &SparseVector, candidates: &[u32], k: usize) -> Vec<(u32, f32)> {
        let mut scored: Vec<(u32, f32)> = candidates
            .iter()
            .map(|d| (*d, query.dot(&self.docs[*d as usize])))
            .filter(|(_, s)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(terms: &[u32], weights: &[f32]) -> SparseVector {
        SparseVector {
            terms: terms.to_vec(),
            weights: weights.to_vec(),
        }
    }

    #[test]
    fn rescoring_orders_by_the_full_dot_product() {
        let forward = ForwardIndex {
            docs: vec![
                v(&[1, 5], &[1.0, 2.0]),
                v(&[2, 5, 9], &[3.0, 1.0, 1.0]),
                v(&[7], &[4.0]),
                v(&[1, 2], &[0.5, 1.0]),
            ],
        };
        let q = v(&[1, 2, 5], &[1.0, 1.0, 1.0]);
        assert_eq!(q.dot(&forward.docs[1]), 4.0);
        // Doc 2 shares no term (left out); docs 0 and 1 tie at 3 vs 4; doc 3 scores 1.5.
        let got = forward.rescore(&q, &[2, 3, 0, 1], 10);
        assert_eq!(got, vec![(1, 4.0), (0, 3.0), (3, 1.5)]);
        assert_eq!(forward.rescore(&q, &[3, 0, 1], 2), vec![(1, 4.0), (0, 3.0)]);
    }
}
