//! Teacher (cross-encoder) scores held by interned integer ids, shared by `mine`'s false-negative
//! filter and `train`'s distillation losses.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arrow::array::{Array, Float32Array, StringArray};

use crate::error::Result;
use crate::parquet_io::{column, for_each_batch};
use crate::schema;

/// Scores by (query handle, document handle), each query's scores a list sorted by document:
/// 8 bytes per score. The handles are whatever the reader interned the ids to.
#[derive(Default)]
pub struct ScoreLists {
    /// Per query handle: (document handle, score), sorted by document, one per document.
    lists: Vec<Vec<(u32, f32)>>,
    len: usize,
}

impl ScoreLists {
    /// The score of (query handle, document handle), if any.
    pub fn get(&self, q: u32, d: u32) -> Option<f32> {
        let list = self.lists.get(q as usize)?;
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

    fn push(&mut self, q: u32, d: u32, score: f32) {
        if self.lists.len() <= q as usize {
            self.lists.resize_with(q as usize + 1, Vec::new);
        }
        self.lists[q as usize].push((d, score));
    }

    /// Sorts each query's list by document; of a pair given twice, the last score read wins.
    fn seal(&mut self) {
        self.len = 0;
        for list in &mut self.lists {
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

/// Teacher scores keyed by ids interned here (160M MS MARCO cross-encoder scores: 1.3 GB plus
/// the id maps, where a map of id pairs took ~20 bytes per score and nested string maps far more).
#[derive(Default)]
pub struct TeacherIndex {
    qids: HashMap<String, u32>,
    dids: HashMap<String, u32>,
    scores: ScoreLists,
}

impl TeacherIndex {
    /// The query's handle, if the teacher scored it at all.
    pub fn query(&self, qid: &str) -> Option<u32> {
        self.qids.get(qid).copied()
    }

    /// The score of (query handle, did), if any.
    pub fn score(&self, q: u32, did: &str) -> Option<f32> {
        self.scores.get(q, *self.dids.get(did)?)
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

/// Calls `row(qid, did, score)` for every non-null score of a teacher-scores artifact.
fn for_each_score(path: &Path, mut row: impl FnMut(&str, &str, f32)) -> Result<()> {
    for_each_batch(path, &schema::teacher_scores(), |file, batch| {
        let q = column::<StringArray>(file, &batch, "qid")?;
        let d = column::<StringArray>(file, &batch, "did")?;
        let s = column::<Float32Array>(file, &batch, "score")?;
        for i in (0..batch.num_rows()).filter(|i| !s.is_null(*i)) {
            row(q.value(i), d.value(i), s.value(i));
        }
        Ok(())
    })
}

/// Reads a teacher-scores artifact, keeping only the queries `keep` accepts (all when `None`).
pub fn read_teacher_scores(path: &Path, keep: Option<&HashSet<String>>) -> Result<TeacherIndex> {
    let mut t = TeacherIndex::default();
    let intern = |map: &mut HashMap<String, u32>, id: &str| match map.get(id) {
        Some(x) => *x,
        None => {
            let x = map.len() as u32;
            map.insert(id.to_string(), x);
            x
        }
    };
    for_each_score(path, |qid, did, score| {
        if keep.is_some_and(|k| !k.contains(qid)) {
            return;
        }
        let q = intern(&mut t.qids, qid);
        let d = intern(&mut t.dids, did);
        t.scores.push(q, d, score);
    })?;
    t.scores.seal();
    Ok(t)
}

/// Reads only the scores of the pairs `handles(qid, did)` maps to the caller's own handles
/// (query, document), dropping the others: a training run keeps its candidates' scores under
/// the ids it interned already, with no second id map.
pub fn read_teacher_scores_as(
    path: &Path,
    mut handles: impl FnMut(&str, &str) -> Option<(u32, u32)>,
) -> Result<ScoreLists> {
    let mut scores = ScoreLists::default();
    for_each_score(path, |qid, did, score| {
        if let Some((q, d)) = handles(qid, did) {
            scores.push(q, d, score);
        }
    })?;
    scores.seal();
    Ok(scores)
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
        // The caller's handles: only q1's pairs, documents numbered by the caller.
        let only = read_teacher_scores_as(&path, |q, d| {
            (q == "q1").then_some((7, if d == "d9" { 0 } else { 5 }))
        })
        .unwrap();
        assert_eq!(only.get(7, 0), Some(4.0), "the last duplicate wins");
        assert_eq!(only.get(7, 5), Some(3.0));
        assert_eq!(
            (only.get(0, 0), only.get(7, 1), only.len()),
            (None, None, 2)
        );
    }
}
