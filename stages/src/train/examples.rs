//! Training examples: a query, one positive and N negatives (texts, optional teacher scores),
//! drawn from the `negatives` artifact as a pure function of `(seed, step)` so a resumed run
//! sees exactly the batches an uninterrupted run would have seen.

use std::collections::HashMap;
use std::path::Path;

use super::texts::MappedTexts;
use crate::error::{Result, StageError};
use crate::parquet_io::{read_negatives, read_packed_id_text_where, PackedIdText};
use crate::rng::splitmix64;
use crate::teacher::{read_teacher_scores_as, ScoreLists};

/// One training example: query text and `1 + N` document texts (positive first).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Query id.
    pub qid: String,
    /// Query text.
    pub query: String,
    /// Document texts: the positive first, then the negatives.
    pub docs: Vec<String>,
    /// Teacher scores of `docs`, in the same order, when the loss needs them.
    pub teacher: Option<Vec<f32>>,
}

/// A query usable for training: its positives and candidate negatives (rows of `docs`).
struct Entry {
    query: u32,
    pos: Vec<u32>,
    neg: Vec<u32>,
}

/// The files a training set is read from.
pub struct TrainingInputs<'a> {
    /// The `negatives` artifact.
    pub negatives: &'a Path,
    /// The documents' `id, text` artifact.
    pub docs: &'a Path,
    /// The queries' `id, text` artifact.
    pub queries: &'a Path,
    /// Teacher scores, when a loss needs them.
    pub teacher: Option<&'a Path>,
    /// Where the documents' texts are copied to be memory-mapped (a scratch file).
    pub texts_scratch: &'a Path,
}

/// Why queries of the negatives artifact were not used, for the manifest.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    /// Rows (queries) in the negatives artifact.
    pub queries_in: usize,
    /// Rows (queries) kept for training.
    pub queries_used: usize,
    /// Distinct query ids among the kept rows (fewer than `queries_used` when the negatives
    /// hold one row per query and retrieval system, as an imported hard-negatives file does).
    pub distinct_queries_used: usize,
    /// Queries dropped for having no positive.
    pub dropped_no_positive: usize,
    /// Queries dropped for having no negative (only when negatives are drawn).
    pub dropped_no_negative: usize,
    /// Queries dropped because none of their positives has a teacher score.
    pub dropped_no_teacher: usize,
    /// Negatives removed for lacking a teacher score, summed over queries.
    pub negatives_without_teacher: usize,
}

/// The examples a training run draws from.
pub struct TrainingSet {
    docs: MappedTexts,
    queries: PackedIdText,
    entries: Vec<Entry>,
    /// Teacher scores by (query row, document row), only for each query's own candidates.
    teacher: Option<ScoreLists>,
    negatives: usize,
    seed: u64,
    /// The permutation of the epoch last sampled from, `(epoch, order)`: built once per epoch.
    epoch_order: std::sync::Mutex<(u64, Vec<usize>)>,
    /// Which queries of the negatives artifact were used, and why the others were not.
    pub coverage: Coverage,
}

/// A row of the negatives artifact with its ids interned.
struct InternedRow {
    query: u32,
    pos: Vec<u32>,
    neg: Vec<u32>,
}

/// Marks an interned id whose text is not in the docs/queries artifact.
const MISSING: u32 = u32::MAX;

/// The rows with every id replaced by a dense index, and the two id → index maps; the rows'
/// strings are freed as they are consumed.
fn intern(
    rows: Vec<crate::parquet_io::NegativesRow>,
) -> (Vec<InternedRow>, HashMap<String, u32>, HashMap<String, u32>) {
    let mut docs: HashMap<String, u32> = HashMap::new();
    let mut queries: HashMap<String, u32> = HashMap::new();
    let id = |map: &mut HashMap<String, u32>, key: String| {
        let next = map.len() as u32;
        *map.entry(key).or_insert(next)
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(InternedRow {
            query: id(&mut queries, row.qid),
            pos: row.pos.into_iter().map(|d| id(&mut docs, d)).collect(),
            neg: row.neg.into_iter().map(|d| id(&mut docs, d)).collect(),
        });
    }
    (out, docs, queries)
}

/// For each interned id, its row in `table` ([`MISSING`] when the table lacks it; the last row
/// when the table repeats it).
fn rows_of(ids: &HashMap<String, u32>, table: &PackedIdText) -> Vec<u32> {
    let mut row = vec![MISSING; ids.len()];
    for r in 0..table.len() {
        if let Some(i) = ids.get(table.id(r)) {
            row[*i as usize] = r as u32;
        }
    }
    row
}

/// Each query row's candidate documents (positives and negatives of all its rows; sorted,
/// distinct), so that only their teacher scores are kept.
fn candidates_by_query(rows: &[Entry], queries: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); queries];
    for row in rows {
        let list: &mut Vec<u32> = &mut out[row.query as usize];
        list.extend(&row.pos);
        list.extend(&row.neg);
    }
    for list in &mut out {
        list.sort_unstable();
        list.dedup();
        list.shrink_to_fit();
    }
    out
}

/// How many distinct values below `bound` `values` holds.
fn distinct(values: impl Iterator<Item = u32>, bound: usize) -> usize {
    let mut seen = vec![false; bound];
    values
        .filter(|v| !std::mem::replace(&mut seen[*v as usize], true))
        .count()
}

fn mix(a: u64, b: u64) -> u64 {
    let mut s = a ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    splitmix64(&mut s)
}

impl TrainingSet {
    /// Joins the negatives artifact with the texts (and teacher scores). Ids that the texts do not
    /// know are an error naming the file; queries left without a positive or a negative (or, with
    /// a teacher, without scores) are dropped and counted.
    pub fn load(inputs: &TrainingInputs<'_>, negatives: usize, seed: u64) -> Result<Self> {
        let rows = read_negatives(inputs.negatives)?;
        let mut coverage = Coverage {
            queries_in: rows.len(),
            ..Coverage::default()
        };
        // Ids interned once each, and the rows' strings freed, before any text is read: only the
        // texts the negatives name are held (sampling works on positions within each row's
        // lists, so what is held does not change the examples).
        let (raw, doc_ids, query_ids) = intern(rows);
        let mut doc_row = vec![MISSING; doc_ids.len()];
        let docs = MappedTexts::build(inputs.docs, inputs.texts_scratch, |id, row| {
            let interned = doc_ids.get(id);
            if let Some(i) = interned {
                doc_row[*i as usize] = row; // the last row wins when the table repeats an id
            }
            interned.is_some()
        })?;
        let queries = read_packed_id_text_where(inputs.queries, |id| query_ids.contains_key(id))?;
        let query_row = rows_of(&query_ids, &queries);
        let missing = |ids: &HashMap<String, u32>, row: &[u32], what: &str| -> Vec<String> {
            let mut m: Vec<String> = ids
                .iter()
                .filter(|(_, i)| row[**i as usize] == MISSING)
                .map(|(id, _)| format!("{what} {id}"))
                .collect();
            m.sort();
            m
        };
        let mut unknown = missing(&query_ids, &query_row, "query");
        unknown.extend(missing(&doc_ids, &doc_row, "document"));
        if !unknown.is_empty() {
            return Err(StageError::malformed(
                inputs.negatives,
                0,
                format!(
                    "{} distinct ids are not in the docs/queries artifacts (e.g. {})",
                    unknown.len(),
                    unknown[..unknown.len().min(5)].join(", ")
                ),
            ));
        }
        // Every id is known from here on: the rows in query and document rows, resolved once.
        let resolve =
            |ids: &[u32]| -> Vec<u32> { ids.iter().map(|d| doc_row[*d as usize]).collect() };
        let rows: Vec<Entry> = raw
            .into_iter()
            .map(|row| Entry {
                query: query_row[row.query as usize],
                pos: resolve(&row.pos),
                neg: resolve(&row.neg),
            })
            .collect();
        let teacher = match inputs.teacher {
            Some(path) => {
                let candidates = candidates_by_query(&rows, queries.len());
                Some(read_teacher_scores_as(path, |qid, did| {
                    let q = query_row[*query_ids.get(qid)? as usize];
                    let d = doc_row[*doc_ids.get(did)? as usize];
                    candidates[q as usize].binary_search(&d).ok()?;
                    Some((q, d))
                })?)
            }
            None => None,
        };
        drop((doc_ids, query_ids));
        let mut entries = Vec::with_capacity(rows.len());
        for Entry {
            query: q,
            mut pos,
            mut neg,
        } in rows
        {
            if let Some(t) = &teacher {
                let scored = |d: &u32| t.get(q, *d).is_some();
                let had_positives = !pos.is_empty();
                let before = neg.len();
                pos.retain(scored);
                neg.retain(scored);
                coverage.negatives_without_teacher += before - neg.len();
                if pos.is_empty() && had_positives {
                    coverage.dropped_no_teacher += 1;
                    continue;
                }
            }
            if pos.is_empty() {
                coverage.dropped_no_positive += 1;
                continue;
            }
            if negatives > 0 && neg.is_empty() {
                coverage.dropped_no_negative += 1;
                continue;
            }
            entries.push(Entry { query: q, pos, neg });
        }
        if entries.is_empty() {
            return Err(StageError::malformed(
                inputs.negatives,
                0,
                format!(
                    "no usable training query (of {}): {coverage:?}",
                    coverage.queries_in
                ),
            ));
        }
        entries.shrink_to_fit();
        coverage.queries_used = entries.len();
        coverage.distinct_queries_used = distinct(entries.iter().map(|e| e.query), queries.len());
        Ok(TrainingSet {
            docs,
            queries,
            entries,
            teacher,
            negatives,
            seed,
            epoch_order: std::sync::Mutex::new((u64::MAX, Vec::new())),
            coverage,
        })
    }

    /// Number of usable queries (one epoch).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to train on (never after a successful `load`).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The position in epoch order of global example `g`: each epoch is a fresh seeded permutation.
    fn entry_of(&self, g: u64, perm: &mut (u64, Vec<usize>)) -> usize {
        // Rebuilt only when `g` is in another epoch than the last call's.
        let n = self.entries.len() as u64;
        let epoch = g / n;
        if perm.1.len() != self.entries.len() || perm.0 != epoch {
            let mut order: Vec<usize> = (0..self.entries.len()).collect();
            let mut s = mix(self.seed, epoch.wrapping_add(0x5EED));
            for i in (1..order.len()).rev() {
                let j = (splitmix64(&mut s) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            *perm = (epoch, order);
        }
        perm.1[(g % n) as usize]
    }

    /// Examples `first .. first + count` of the endless, epoch-shuffled example stream.
    pub fn examples(&self, first: u64, count: usize) -> Vec<Example> {
        let mut perm = self.epoch_order.lock().unwrap_or_else(|e| e.into_inner());
        (0..count as u64)
            .map(|i| {
                let g = first + i;
                let entry = &self.entries[self.entry_of(g, &mut perm)];
                let mut s = mix(self.seed ^ 0xE4A3_9C17, g);
                let pos = entry.pos[(splitmix64(&mut s) % entry.pos.len() as u64) as usize];
                let mut docs = vec![pos];
                if entry.neg.len() >= self.negatives {
                    // Without replacement: a partial Fisher-Yates over the candidate list.
                    let mut pool = entry.neg.clone();
                    for k in 0..self.negatives {
                        let j = k + (splitmix64(&mut s) % (pool.len() - k) as u64) as usize;
                        pool.swap(k, j);
                        docs.push(pool[k]);
                    }
                } else {
                    for _ in 0..self.negatives {
                        docs.push(
                            entry.neg[(splitmix64(&mut s) % entry.neg.len() as u64) as usize],
                        );
                    }
                }
                let teacher = self.teacher.as_ref().map(|t| {
                    docs.iter()
                        .map(|d| t.get(entry.query, *d).unwrap_or(f32::NAN))
                        .collect()
                });
                Example {
                    qid: self.queries.id(entry.query as usize).to_string(),
                    query: self.queries.text(entry.query as usize).to_string(),
                    docs: docs
                        .iter()
                        .map(|d| self.docs.text(*d as usize).into_owned())
                        .collect(),
                    teacher,
                }
            })
            .collect()
    }
}
