//! Teacher (cross-encoder) scores held by interned integer ids, shared by `mine`'s false-negative
//! filter and `train`'s distillation losses.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arrow::array::{Array, Float32Array, StringArray};

use crate::error::Result;
use crate::parquet_io::{column, for_each_batch};
use crate::schema;

/// Teacher scores keyed by interned ids, each query's scores a list sorted by document: 8 bytes
/// per score (160M MS MARCO cross-encoder scores: 1.3 GB, where a map of id pairs took ~20 bytes
/// per score and nested string maps far more).
#[derive(Default)]
pub struct TeacherIndex {
    qids: HashMap<String, u32>,
    dids: HashMap<String, u32>,
    /// Per query handle: (document handle, score), sorted by document, one per document.
    scores: Vec<Vec<(u32, f32)>>,
    len: usize,
}

impl TeacherIndex {
    /// The query's handle, if the teacher scored it at all.
    pub fn query(&self, qid: &str) -> Option<u32> {
        self.qids.get(qid).copied()
    }

    /// The score of (query handle, did), if any.
    pub fn score(&self, q: u32, did: &str) -> Option<f32> {
        let d = *self.dids.get(did)?;
        let list = self.scores.get(q as usize)?;
        list.binary_search_by_key(&d, |e| e.0)
            .ok()
            .map(|i| list[i].1)
    }

    /// Number of scores held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no score is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sorts each query's list by document; of a pair given twice, the last score read wins.
    fn seal(&mut self) {
        self.len = 0;
        for list in &mut self.scores {
            list.sort_by_key(|e| e.0); // stable: equal documents stay in reading order
            let mut kept: Vec<(u32, f32)> = Vec::with_capacity(list.len());
            for e in list.drain(..) {
                match kept.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => kept.push(e),
                }
            }
            kept.shrink_to_fit();
            self.len += kept.len();
            *list = kept;
        }
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
                    t.scores.push(Vec::new());
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
            t.scores[qi as usize].push((di, s.value(i)));
        }
        Ok(())
    })?;
    t.seal();
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::ParquetSink;
    use std::sync::Arc;

    #[test]
    fn scores_are_found_by_query_and_document_and_the_last_duplicate_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let mut sink = ParquetSink::create(&path, schema::teacher_scores()).unwrap();
        let rows = [
            ("q1", "d9", 1.0),
            ("q2", "d1", 2.0),
            ("q1", "d1", 3.0),
            ("q1", "d9", 4.0),
        ];
        sink.write_columns(vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float32Array::from_iter_values(
                rows.iter().map(|r| r.2 as f32),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "t"))),
        ])
        .unwrap();
        sink.finish().unwrap();
        let t = read_teacher_scores(&path, None).unwrap();
        let q1 = t.query("q1").unwrap();
        let q2 = t.query("q2").unwrap();
        assert_eq!(
            t.score(q1, "d9"),
            Some(4.0),
            "the last duplicate wins, as before"
        );
        assert_eq!(t.score(q1, "d1"), Some(3.0));
        assert_eq!(t.score(q2, "d1"), Some(2.0));
        assert_eq!(t.score(q2, "d9"), None);
        assert_eq!(t.score(q1, "unknown"), None);
        assert_eq!(t.len(), 3);
        let only_q2: HashSet<String> = ["q2".to_string()].into();
        let t = read_teacher_scores(&path, Some(&only_q2)).unwrap();
        assert_eq!(t.query("q1"), None);
        assert_eq!(t.len(), 1);
    }
}
