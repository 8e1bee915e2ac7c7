//! Index builds in bounded memory: documents are quantized and inverted a chunk at a time into
//! sorted runs on disk (never crossing an input shard), then the runs are k-way merged term by
//! term through the same [`IndexWriter`] as the in-memory build, so the files are byte-identical.
//!
//! Run file: for each term with postings in the chunk, ascending: `term u32, n u32, n × doc u32,
//! n × impact u8` (little-endian). Runs hold ascending, disjoint doc ranges in run order, so
//! concatenating a term's lists in run order gives its sorted posting list.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::StringBuilder;

use serde_json::{json, Value};

use super::build::{quantize, scale_for, BuildStats};
use super::writer::IndexWriter;
use crate::error::{Result, StageError};
use crate::parquet_io::{for_each_sparse_batch, ParquetSink, SparseVector};
use crate::schema;

/// Bytes one buffered posting costs while a run is built: the vector's term and weight (8) and
/// the `(term, doc, impact)` tuple it is inverted into (12).
pub const BYTES_PER_POSTING: usize = 20;

/// Rows read from the input at a time.
const READ_ROWS: usize = 1024;

/// What a first streaming pass learns about the input.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Documents (rows) in the input.
    pub docs: usize,
    /// `(term, weight)` entries over all vectors, before quantization.
    pub postings: u64,
    /// Largest weight in the input (0 when empty).
    pub max_weight: f32,
    /// One past the largest term id in the input (0 when empty).
    pub vocab: usize,
}

/// Reads the input once, keeping only the row and posting counts, the largest weight and term
/// id, and streams the doc ids to `doc_ids` (an `id, text` file with empty texts), so the ids of
/// a collection larger than the budget are never all in memory.
pub fn scan(input: &Path, doc_ids: &Path) -> Result<Scan> {
    let mut s = Scan {
        docs: 0,
        postings: 0,
        max_weight: 0.0,
        vocab: 0,
    };
    let mut sink = ParquetSink::create(doc_ids, schema::id_text())?;
    for_each_sparse_batch(input, READ_ROWS, |_, ids, vectors| {
        let mut id_col = StringBuilder::new();
        let mut text_col = StringBuilder::new();
        for id in &ids {
            id_col.append_value(id);
            text_col.append_value("");
        }
        sink.write_columns(vec![Arc::new(id_col.finish()), Arc::new(text_col.finish())])?;
        s.docs += ids.len();
        for v in &vectors {
            s.postings += v.nnz() as u64;
            s.max_weight = v.weights.iter().copied().fold(s.max_weight, f32::max);
            if let Some(t) = v.terms.last() {
                s.vocab = s.vocab.max(*t as usize + 1);
            }
        }
        Ok(())
    })?;
    sink.finish()?;
    Ok(s)
}

/// Progress of an external build, saved as the stage's resume state after every durable run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillState {
    /// Runs written (`run-00000.bin` ..).
    pub runs: usize,
    /// Input rows they cover.
    pub rows: usize,
    /// Postings dropped by quantization in those rows.
    pub dropped: u64,
}

impl SpillState {
    /// As JSON for the resume store.
    pub fn to_json(self) -> Value {
        json!({ "spill_runs": self.runs, "rows": self.rows, "dropped": self.dropped })
    }

    /// From a saved resume state (anything else starts over).
    pub fn from_json(v: Option<&Value>) -> Self {
        let get = |k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_u64);
        match (get("spill_runs"), get("rows"), get("dropped")) {
            (Some(runs), Some(rows), Some(dropped)) => SpillState {
                runs: runs as usize,
                rows: rows as usize,
                dropped,
            },
            _ => SpillState::default(),
        }
    }
}

/// The file of run `i`.
pub fn run_file(runs_dir: &Path, i: usize) -> PathBuf {
    runs_dir.join(format!("run-{i:05}.bin"))
}

/// Inverts `chunk` (docs numbered from `first_doc`) and writes it atomically as run `i`;
/// returns the postings dropped by quantization.
fn write_run(
    runs_dir: &Path,
    i: usize,
    chunk: &[SparseVector],
    first_doc: u32,
    scale: f32,
) -> Result<u64> {
    let mut postings: Vec<(u32, u32, u8)> = Vec::new();
    let mut dropped = 0u64;
    for (d, v) in chunk.iter().enumerate() {
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let q = quantize(*w, scale);
            if q > 0 {
                postings.push((*t, first_doc + d as u32, q));
            } else {
                dropped += 1;
            }
        }
    }
    // Docs were pushed in order: a stable sort by term leaves each term's docs ascending.
    postings.sort_by_key(|p| p.0);
    let path = run_file(runs_dir, i);
    let tmp = path.with_extension("tmp");
    let io = |e| StageError::io(&tmp, e);
    let mut out = BufWriter::new(File::create(&tmp).map_err(io)?);
    for group in postings.chunk_by(|a, b| a.0 == b.0) {
        out.write_all(&group[0].0.to_le_bytes()).map_err(io)?;
        out.write_all(&(group.len() as u32).to_le_bytes())
            .map_err(io)?;
        for p in group {
            out.write_all(&p.1.to_le_bytes()).map_err(io)?;
        }
        let imps: Vec<u8> = group.iter().map(|p| p.2).collect();
        out.write_all(&imps).map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| StageError::io(&path, e))?;
    Ok(dropped)
}

/// One run being merged: its reader and the term of its next list.
struct RunReader {
    path: PathBuf,
    reader: BufReader<File>,
    head: Option<(u32, u32)>,
}

impl RunReader {
    fn open(path: PathBuf, buffer: usize) -> Result<Self> {
        let f = File::open(&path).map_err(|e| StageError::io(&path, e))?;
        let mut r = RunReader {
            reader: BufReader::with_capacity(buffer, f),
            path,
            head: None,
        };
        r.advance()?;
        Ok(r)
    }

    fn u32(&mut self) -> Result<Option<u32>> {
        let mut b = [0u8; 4];
        match self.reader.read_exact(&mut b) {
            Ok(()) => Ok(Some(u32::from_le_bytes(b))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(StageError::io(&self.path, e)),
        }
    }

    fn advance(&mut self) -> Result<()> {
        self.head = match self.u32()? {
            None => None,
            Some(term) => match self.u32()? {
                Some(n) => Some((term, n)),
                None => return Err(StageError::malformed(&self.path, 0, "truncated run")),
            },
        };
        Ok(())
    }

    /// Streams the head list into `w` and moves to the next list.
    fn copy_head(&mut self, w: &mut IndexWriter, docs: &mut Vec<u8>) -> Result<()> {
        let Some((_, n)) = self.head else {
            return Ok(());
        };
        let n = n as usize;
        docs.resize(n * 5, 0);
        self.reader
            .read_exact(docs)
            .map_err(|e| StageError::io(&self.path, e))?;
        let (d, imps) = docs.split_at(n * 4);
        for (chunk, imp) in d.chunks_exact(4).zip(imps) {
            w.push(
                u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                *imp,
            )?;
        }
        self.advance()
    }
}

/// An external build: where to read, write and spill, and the limits.
#[derive(Debug, Clone)]
pub struct ExternalBuild {
    /// Sparse vectors (file or shard directory).
    pub input: PathBuf,
    /// The index directory to write.
    pub dir: PathBuf,
    /// Where runs are spilled (removed when the merge is done).
    pub runs_dir: PathBuf,
    /// Vocabulary size (term ids `0..vocab`); raised to the scan's `vocab` when smaller.
    pub vocab: usize,
    /// As [`super::build::build`]'s `max_weight`.
    pub max_weight: f32,
    /// Bytes of buffered postings allowed (see [`BYTES_PER_POSTING`]).
    pub budget: usize,
}

/// Builds the index of `job.input` (already [`scan`]ned) holding at most about `job.budget`
/// bytes of postings in memory. `state` is where an interrupted build stopped; `save` is called
/// with the new state after each run is durable. Returns the stats and the number of runs.
pub fn build_external(
    job: &ExternalBuild,
    scan: &Scan,
    state: SpillState,
    mut save: impl FnMut(&SpillState) -> Result<()>,
) -> Result<(BuildStats, usize)> {
    let (input, dir, runs_dir, budget) = (&job.input, &job.dir, &job.runs_dir, job.budget);
    let (max_w, scale) = scale_for(job.max_weight, scan.max_weight);
    let vocab = job.vocab.max(scan.vocab);
    std::fs::create_dir_all(runs_dir).map_err(|e| StageError::io(runs_dir, e))?;
    let budget_postings = (budget / BYTES_PER_POSTING).max(1);
    let mut st = state;
    let mut row = 0usize;
    let mut chunk: Vec<SparseVector> = Vec::new();
    let mut chunk_postings = 0usize;
    let mut current_file = usize::MAX;
    let mut spill = |chunk: &mut Vec<SparseVector>, st: &mut SpillState| -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        st.dropped += write_run(runs_dir, st.runs, chunk, st.rows as u32, scale)?;
        st.runs += 1;
        st.rows += chunk.len();
        chunk.clear();
        crate::contract::test_pause("SPLADE_TEST_INDEX_RUN_DELAY_MS");
        save(st)
    };
    for_each_sparse_batch(input, READ_ROWS, |file, _, vectors| {
        if file != current_file {
            // A run never crosses an input shard.
            spill(&mut chunk, &mut st)?;
            chunk_postings = 0;
            current_file = file;
        }
        for v in vectors {
            row += 1;
            if row <= st.rows {
                continue;
            }
            if chunk_postings + v.nnz() > budget_postings && !chunk.is_empty() {
                spill(&mut chunk, &mut st)?;
                chunk_postings = 0;
            }
            chunk_postings += v.nnz();
            chunk.push(v);
        }
        Ok(())
    })?;
    spill(&mut chunk, &mut st)?;
    // Merge: per term, each run's list in run order.
    let buffer = (budget / st.runs.max(1)).clamp(4096, 1 << 20);
    let mut runs = (0..st.runs)
        .map(|i| RunReader::open(run_file(runs_dir, i), buffer))
        .collect::<Result<Vec<_>>>()?;
    let mut w = IndexWriter::create(dir, scan.docs as u32)?;
    let mut scratch = Vec::new();
    for t in 0..vocab as u32 {
        for r in runs.iter_mut() {
            if r.head.is_some_and(|(term, _)| term == t) {
                r.copy_head(&mut w, &mut scratch)?;
            }
        }
        w.end_term()?;
    }
    let stats = w.finish(vocab, scale, max_w, st.dropped)?;
    drop(runs);
    std::fs::remove_dir_all(runs_dir).map_err(|e| StageError::io(runs_dir, e))?;
    Ok((stats, st.runs))
}
