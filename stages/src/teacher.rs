//! Teacher (cross-encoder) scores held by interned integer ids, shared by `mine`'s false-negative
//! filter and `train`'s distillation losses.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arrow::array::{Array, Float32Array, StringArray};

use crate::error::Result;
use crate::parquet_io::{column, for_each_batch};
use crate::schema;

/// Teacher scores keyed by interned ids: about 16 bytes per score, so the 160M scores of the MS
/// MARCO cross-encoder file fit in memory (as nested string maps they would not).
#[derive(Default)]
pub struct TeacherIndex {
    qids: HashMap<String, u32>,
    dids: HashMap<String, u32>,
    scores: HashMap<(u32, u32), f32>,
}

impl TeacherIndex {
    /// The query's handle, if the teacher scored it at all.
    pub fn query(&self, qid: &str) -> Option<u32> {
        self.qids.get(qid).copied()
    }

    /// The score of (query handle, did), if any.
    pub fn score(&self, q: u32, did: &str) -> Option<f32> {
        self.dids
            .get(did)
            .and_then(|d| self.scores.get(&(q, *d)))
            .copied()
    }

    /// Number of scores held.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no score is held.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

/// Reads a teacher-scores artifact, keeping only the queries `keep` accepts (all when `None`).
pub fn read_teacher_scores(path: &Path, keep: Option<&HashSet<String>>) -> Result<TeacherIndex> {
    let mut t = TeacherIndex::default();
    for_each_batch(path, &schema::teacher_scores(), |file, batch| {
        let q = column::<StringArray>(file, &batch, "qid")?;
        let d = column::<StringArray>(file, &batch, "did")?;
        let s = column::<Float32Array>(file, &batch, "score")?;
        for i in 0..batch.num_rows() {
            if s.is_null(i) {
                continue;
            }
            let qid = q.value(i);
            if keep.is_some_and(|k| !k.contains(qid)) {
                continue;
            }
            let qi = match t.qids.get(qid) {
                Some(x) => *x,
                None => {
                    let x = t.qids.len() as u32;
                    t.qids.insert(qid.to_string(), x);
                    x
                }
            };
            let did = d.value(i);
            let di = match t.dids.get(did) {
                Some(x) => *x,
                None => {
                    let x = t.dids.len() as u32;
                    t.dids.insert(did.to_string(), x);
                    x
                }
            };
            t.scores.insert((qi, di), s.value(i));
        }
        Ok(())
    })?;
    Ok(t)
}
