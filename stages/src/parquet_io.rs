//! Parquet writing (arrow-rs, zstd, atomic rename) and schema-checked reading of artifacts.
//!
//! A sharded output is a directory of `part-NNNNN.parquet` files read in name order; a single
//! output is one file. Readers check every expected column's name and type and name the file on
//! any mismatch, so a wrong or corrupt artifact is never read silently.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, Float64Array, Float64Builder, Int32Array,
    Int32Builder, ListArray, ListBuilder, RecordBatch, StringArray, StringBuilder, UInt32Array,
    UInt32Builder,
};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub use crate::domain::{IdText, NegativesRow, PackedIdText, Qrel, RunRow, SparseVector};
use crate::error::{Result, StageError};
use crate::schema;

/// Writes record batches of one schema to a Parquet file via `<path>.tmp` + fsync + rename.
pub struct ParquetSink {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    rows: u64,
}

impl ParquetSink {
    /// Starts a new file at `path` (written in full only by [`ParquetSink::finish`]).
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        let tmp = path.with_extension("parquet.tmp");
        let file = File::create(&tmp).map_err(|e| StageError::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(256 * 1024))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| StageError::parquet(&tmp, e))?;
        Ok(ParquetSink {
            path: path.to_path_buf(),
            tmp,
            writer,
            schema,
            rows: 0,
        })
    }

    /// The schema every batch must have.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .map_err(|e| StageError::parquet(&self.tmp, e))
    }

    /// Appends columns as one batch.
    pub fn write_columns(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| StageError::parquet(&self.tmp, e))?;
        self.write(&batch)
    }

    /// Closes, fsyncs and renames the file into place; returns the number of rows.
    pub fn finish(self) -> Result<u64> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| StageError::parquet(&self.tmp, e))?;
        file.sync_all().map_err(|e| StageError::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| StageError::io(&self.path, e))?;
        Ok(self.rows)
    }
}

/// The Parquet files of an output: the file itself, or the `*.parquet` files of a shard directory
/// in name order.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| StageError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        files.sort();
        Ok(files)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(StageError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ))
    }
}

/// Reads every batch of an output, checking that each expected column exists with its type.
pub fn read_batches(path: &Path, expected: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for_each_batch(path, expected, |_, b| {
        out.push(b);
        Ok(())
    })?;
    Ok(out)
}

/// Streams the batches of an output (file or shard directory) through `f` without holding them
/// all, reading only the `expected` columns (checked for name and type) and passing the file each
/// batch comes from.
pub fn for_each_batch(
    path: &Path,
    expected: &SchemaRef,
    mut f: impl FnMut(&Path, RecordBatch) -> Result<()>,
) -> Result<()> {
    for file in parquet_files(path)? {
        for batch in open_batches(&file, expected)? {
            f(&file, batch.map_err(|e| StageError::parquet(&file, e))?)?;
        }
    }
    Ok(())
}

/// A reader of `file`'s batches (64k rows), projected on the `expected` columns (checked).
fn open_batches(
    file: &Path,
    expected: &SchemaRef,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let fh = File::open(file).map_err(|e| StageError::io(file, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(fh).map_err(|e| StageError::parquet(file, e))?;
    check_schema(file, builder.schema(), expected)?;
    let wanted: Vec<usize> = expected
        .fields()
        .iter()
        .filter_map(|f| builder.schema().index_of(f.name()).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| StageError::parquet(file, e))
}

/// The rows of an `id, text` output in file order, `size` at a time, holding no more than a
/// chunk and a batch: how stages walk a collection too large to hold.
pub struct IdTextChunks {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(
        PathBuf,
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    )>,
    pending: IdText,
    size: usize,
}

impl IdTextChunks {
    /// Chunks of `size` rows (the last may be shorter) of the output at `path`.
    pub fn open(path: &Path, size: usize) -> Result<Self> {
        Ok(IdTextChunks {
            files: parquet_files(path)?.into_iter(),
            current: None,
            pending: IdText::default(),
            size: size.max(1),
        })
    }

    /// The next chunk, or `None` after the last row.
    pub fn next_chunk(&mut self) -> Result<Option<IdText>> {
        self.next_rows(self.size)
    }

    /// The next `n` rows (fewer at the end), or `None` after the last row.
    pub fn next_rows(&mut self, n: usize) -> Result<Option<IdText>> {
        while self.pending.ids.len() < n {
            if !self.read_batch()? {
                break;
            }
        }
        if self.pending.ids.is_empty() {
            return Ok(None);
        }
        let take = n.min(self.pending.ids.len());
        let chunk = IdText {
            ids: self.pending.ids.drain(..take).collect(),
            texts: self.pending.texts.drain(..take).collect(),
        };
        Ok(Some(chunk))
    }

    /// Appends the next batch to the pending rows; false when every file is read.
    fn read_batch(&mut self) -> Result<bool> {
        loop {
            if self.current.is_none() {
                let Some(file) = self.files.next() else {
                    return Ok(false);
                };
                let reader = open_batches(&file, &schema::id_text())?;
                self.current = Some((file, reader));
            }
            let Some((file, reader)) = self.current.as_mut() else {
                return Ok(false);
            };
            match reader.next() {
                Some(batch) => {
                    let batch = batch.map_err(|e| StageError::parquet(file.as_path(), e))?;
                    let ids = column::<StringArray>(file, &batch, "id")?;
                    let texts = column::<StringArray>(file, &batch, "text")?;
                    for i in 0..batch.num_rows() {
                        self.pending.ids.push(ids.value(i).to_string());
                        self.pending.texts.push(texts.value(i).to_string());
                    }
                    return Ok(true);
                }
                None => self.current = None,
            }
        }
    }
}

/// Whether `actual` stores what `expected` describes, ignoring the names and nullability of list
/// items (pyarrow writes Parquet-compliant `element`, arrow-rs and Polars write `item`).
fn same_type(actual: &DataType, expected: &DataType) -> bool {
    match (actual, expected) {
        (DataType::List(a), DataType::List(e)) => same_type(a.data_type(), e.data_type()),
        (a, e) => a == e,
    }
}

fn check_schema(file: &Path, actual: &SchemaRef, expected: &SchemaRef) -> Result<()> {
    for field in expected.fields() {
        match actual.field_with_name(field.name()) {
            Ok(f) if same_type(f.data_type(), field.data_type()) => {}
            Ok(f) => {
                return Err(StageError::parquet(
                    file,
                    format!(
                        "column `{}` has type {}, expected {}",
                        field.name(),
                        f.data_type(),
                        field.data_type()
                    ),
                ))
            }
            Err(_) => {
                return Err(StageError::parquet(
                    file,
                    format!(
                        "missing column `{}` (has: {})",
                        field.name(),
                        actual
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// The column `name` of `batch` as array type `T`, or an error naming `path` and the column.
pub fn column<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| StageError::parquet(path, format!("column `{name}` missing or mistyped")))
}

/// Reads an `id, text` artifact.
pub fn read_id_text(path: &Path) -> Result<IdText> {
    let mut out = IdText::default();
    for batch in read_batches(path, &schema::id_text())? {
        let ids = column::<StringArray>(path, &batch, "id")?;
        let texts = column::<StringArray>(path, &batch, "text")?;
        for i in 0..batch.num_rows() {
            out.ids.push(ids.value(i).to_string());
            out.texts.push(texts.value(i).to_string());
        }
    }
    Ok(out)
}

/// Calls `row(id, text)` for every row of an `id, text` artifact, a batch at a time.
fn for_each_id_text(path: &Path, mut row: impl FnMut(&str, &str)) -> Result<()> {
    try_for_each_id_text(path, |id, text| {
        row(id, text);
        Ok(())
    })
}

/// Calls `row(id, text)` for every row of an `id, text` artifact until it returns an error.
pub(crate) fn try_for_each_id_text(
    path: &Path,
    mut row: impl FnMut(&str, &str) -> Result<()>,
) -> Result<()> {
    for_each_batch(path, &schema::id_text(), |file, batch| {
        let ids = column::<StringArray>(file, &batch, "id")?;
        let texts = column::<StringArray>(file, &batch, "text")?;
        (0..batch.num_rows()).try_for_each(|i| row(ids.value(i), texts.value(i)))
    })
}

/// The rows of an `id, text` artifact whose id `keep` accepts, streaming (only kept rows are
/// held).
pub fn read_id_text_where(path: &Path, mut keep: impl FnMut(&str) -> bool) -> Result<IdText> {
    let mut out = IdText::default();
    for_each_id_text(path, |id, text| {
        if keep(id) {
            out.ids.push(id.to_string());
            out.texts.push(text.to_string());
        }
    })?;
    Ok(out)
}

/// The rows of an `id, text` artifact whose id `keep` accepts, packed (see [`PackedIdText`]).
pub fn read_packed_id_text_where(
    path: &Path,
    mut keep: impl FnMut(&str) -> bool,
) -> Result<PackedIdText> {
    let mut out = PackedIdText::default();
    for_each_id_text(path, |id, text| {
        if keep(id) {
            out.push(id, text);
        }
    })?;
    out.shrink_to_fit();
    Ok(out)
}

/// Rows of an output (file or shard directory), from the Parquet footers.
pub fn count_rows(path: &Path) -> Result<u64> {
    parquet_files(path)?
        .iter()
        .map(|f| describe_file(f).map(|(rows, _)| rows))
        .sum()
}

/// The ids of an `id, text` artifact, reading only the id column.
pub fn read_ids(path: &Path) -> Result<Vec<String>> {
    let expected = Arc::new(arrow::datatypes::Schema::new(vec![schema::id_text()
        .field(0)
        .clone()]));
    let mut out = Vec::new();
    for_each_batch(path, &expected, |file, batch| {
        let ids = column::<StringArray>(file, &batch, "id")?;
        out.extend((0..batch.num_rows()).map(|i| ids.value(i).to_string()));
        Ok(())
    })?;
    Ok(out)
}

/// Writes an `id, text` artifact.
pub fn write_id_text(path: &Path, rows: &IdText) -> Result<u64> {
    let mut sink = ParquetSink::create(path, schema::id_text())?;
    for start in (0..rows.ids.len()).step_by(64 * 1024) {
        let end = (start + 64 * 1024).min(rows.ids.len());
        let mut ids = StringBuilder::new();
        let mut texts = StringBuilder::new();
        for i in start..end {
            ids.append_value(&rows.ids[i]);
            texts.append_value(&rows.texts[i]);
        }
        sink.write_columns(vec![Arc::new(ids.finish()), Arc::new(texts.finish())])?;
    }
    sink.finish()
}

/// Reads a qrels artifact.
pub fn read_qrels(path: &Path) -> Result<Vec<Qrel>> {
    let mut out = Vec::new();
    for batch in read_batches(path, &schema::qrels())? {
        let q = column::<StringArray>(path, &batch, "qid")?;
        let d = column::<StringArray>(path, &batch, "did")?;
        let r = column::<Int32Array>(path, &batch, "rel")?;
        for i in 0..batch.num_rows() {
            out.push(Qrel {
                qid: q.value(i).into(),
                did: d.value(i).into(),
                rel: r.value(i),
            });
        }
    }
    Ok(out)
}

/// Writes a qrels artifact.
pub fn write_qrels(path: &Path, rows: &[Qrel]) -> Result<u64> {
    let mut sink = ParquetSink::create(path, schema::qrels())?;
    for chunk in rows.chunks(64 * 1024) {
        let mut q = StringBuilder::new();
        let mut d = StringBuilder::new();
        let mut r = Int32Builder::new();
        for row in chunk {
            q.append_value(&row.qid);
            d.append_value(&row.did);
            r.append_value(row.rel);
        }
        sink.write_columns(vec![
            Arc::new(q.finish()),
            Arc::new(d.finish()),
            Arc::new(r.finish()),
        ])?;
    }
    sink.finish()
}

/// Reads a run artifact.
pub fn read_run(path: &Path) -> Result<Vec<RunRow>> {
    let mut out = Vec::new();
    for batch in read_batches(path, &schema::run())? {
        let q = column::<StringArray>(path, &batch, "qid")?;
        let d = column::<StringArray>(path, &batch, "did")?;
        let r = column::<UInt32Array>(path, &batch, "rank")?;
        let s = column::<Float64Array>(path, &batch, "score")?;
        for i in 0..batch.num_rows() {
            out.push(RunRow {
                qid: q.value(i).into(),
                did: d.value(i).into(),
                rank: r.value(i),
                score: s.value(i),
            });
        }
    }
    Ok(out)
}

/// Writes a run artifact.
pub fn write_run(path: &Path, rows: &[RunRow]) -> Result<u64> {
    let mut sink = ParquetSink::create(path, schema::run())?;
    for chunk in rows.chunks(64 * 1024) {
        let mut q = StringBuilder::new();
        let mut d = StringBuilder::new();
        let mut r = UInt32Builder::new();
        let mut s = Float64Builder::new();
        for row in chunk {
            q.append_value(&row.qid);
            d.append_value(&row.did);
            r.append_value(row.rank);
            s.append_value(row.score);
        }
        sink.write_columns(vec![
            Arc::new(q.finish()),
            Arc::new(d.finish()),
            Arc::new(r.finish()),
            Arc::new(s.finish()),
        ])?;
    }
    sink.finish()
}

/// Writes a `metric, value` table.
pub fn write_metrics(path: &Path, rows: &[(String, f64)]) -> Result<u64> {
    let mut sink = ParquetSink::create(path, schema::metrics())?;
    let names = StringArray::from_iter_values(rows.iter().map(|(m, _)| m.as_str()));
    let values = Float64Array::from_iter_values(rows.iter().map(|(_, v)| *v));
    sink.write_columns(vec![Arc::new(names), Arc::new(values)])?;
    sink.finish()
}

/// Reads a `metric, value` table.
pub fn read_metrics(path: &Path) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for batch in read_batches(path, &schema::metrics())? {
        let m = column::<StringArray>(path, &batch, "metric")?;
        let v = column::<Float64Array>(path, &batch, "value")?;
        for i in 0..batch.num_rows() {
            out.push((m.value(i).to_string(), v.value(i)));
        }
    }
    Ok(out)
}

/// Writes a `qid, metric, value` table.
pub fn write_per_query(path: &Path, rows: &[(String, String, f64)]) -> Result<u64> {
    let mut sink = ParquetSink::create(path, schema::per_query_metrics())?;
    for chunk in rows.chunks(64 * 1024) {
        let q = StringArray::from_iter_values(chunk.iter().map(|r| r.0.as_str()));
        let m = StringArray::from_iter_values(chunk.iter().map(|r| r.1.as_str()));
        let v = Float64Array::from_iter_values(chunk.iter().map(|r| r.2));
        sink.write_columns(vec![Arc::new(q), Arc::new(m), Arc::new(v)])?;
    }
    if rows.is_empty() {
        let empty: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(Vec::<&str>::new())),
            Arc::new(StringArray::from(Vec::<&str>::new())),
            Arc::new(Float64Array::from(Vec::<f64>::new())),
        ];
        sink.write_columns(empty)?;
    }
    sink.finish()
}

/// Reads a `qid, metric, value` table (an `evaluate` stage's `per_query`) in file order.
pub fn read_per_query(path: &Path) -> Result<Vec<(String, String, f64)>> {
    let mut out = Vec::new();
    for batch in read_batches(path, &schema::per_query_metrics())? {
        let q = column::<StringArray>(path, &batch, "qid")?;
        let m = column::<StringArray>(path, &batch, "metric")?;
        let v = column::<Float64Array>(path, &batch, "value")?;
        for i in 0..batch.num_rows() {
            out.push((q.value(i).to_string(), m.value(i).to_string(), v.value(i)));
        }
    }
    Ok(out)
}

/// Row count and a one-line schema of a Parquet file, from its footer (for manifests).
pub fn describe_file(path: &Path) -> Result<(u64, String)> {
    let f = File::open(path).map_err(|e| StageError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| StageError::parquet(path, e))?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = builder
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((rows, schema))
}

/// Writes `(id, sparse vector)` rows a batch at a time, so a collection never has to be held
/// whole (see [`write_sparse`] for one already in memory).
pub struct SparseSink {
    sink: ParquetSink,
}

impl SparseSink {
    /// Rows per batch [`write_sparse`] appends.
    pub const BATCH_ROWS: usize = 16 * 1024;

    /// Starts a sparse-vectors file at `path` (in place only after [`SparseSink::finish`]).
    pub fn create(path: &Path) -> Result<Self> {
        Ok(SparseSink {
            sink: ParquetSink::create(path, schema::sparse_vectors())?,
        })
    }

    /// Appends `ids` and their `vectors` (same length) as one batch.
    pub fn write(&mut self, ids: &[String], vectors: &[SparseVector]) -> Result<()> {
        if ids.len() != vectors.len() {
            return Err(StageError::Parquet {
                path: self.sink.path.clone(),
                message: format!("{} ids for {} vectors", ids.len(), vectors.len()),
            });
        }
        let schema = self.sink.schema();
        let item = |i: usize| match schema.field(i).data_type() {
            arrow::datatypes::DataType::List(f) => f.clone(),
            _ => unreachable!("sparse schema columns 1 and 2 are lists"),
        };
        let mut id_b = StringBuilder::new();
        let mut t_b = ListBuilder::new(UInt32Builder::new()).with_field(item(1));
        let mut w_b = ListBuilder::new(Float32Builder::new()).with_field(item(2));
        for (id, v) in ids.iter().zip(vectors) {
            id_b.append_value(id);
            t_b.values().append_slice(&v.terms);
            t_b.append(true);
            w_b.values().append_slice(&v.weights);
            w_b.append(true);
        }
        self.sink.write_columns(vec![
            Arc::new(id_b.finish()),
            Arc::new(t_b.finish()),
            Arc::new(w_b.finish()),
        ])
    }

    /// Closes the file (one empty batch when no row was written); returns the rows written.
    pub fn finish(mut self) -> Result<u64> {
        if self.sink.rows == 0 {
            self.write(&[], &[])?;
        }
        self.sink.finish()
    }
}

/// Writes `(id, sparse vector)` rows.
pub fn write_sparse(path: &Path, ids: &[String], vectors: &[SparseVector]) -> Result<u64> {
    let mut sink = SparseSink::create(path)?;
    for start in (0..ids.len()).step_by(SparseSink::BATCH_ROWS) {
        let end = (start + SparseSink::BATCH_ROWS).min(ids.len());
        sink.write(&ids[start..end], &vectors[start..end])?;
    }
    sink.finish()
}

/// Reads `(ids, vectors)` from a sparse-vectors output (file or shard directory).
pub fn read_sparse(path: &Path) -> Result<(Vec<String>, Vec<SparseVector>)> {
    read_sparse_summing_to(path, f64::INFINITY)
}

/// [`read_sparse`], refusing a row whose positive weights sum past `max_sum`.
fn read_sparse_summing_to(path: &Path, max_sum: f64) -> Result<(Vec<String>, Vec<SparseVector>)> {
    let (mut ids, mut vectors) = (Vec::new(), Vec::new());
    let mut rows = FileRows::default();
    for_each_batch(path, &schema::sparse_vectors(), |file, batch| {
        let first_row = rows.take(file, batch.num_rows());
        sparse_rows(file, &batch, first_row, max_sum, &mut ids, &mut vectors)
    })?;
    Ok((ids, vectors))
}

/// Counts rows file by file, so an error names a row of the file it is in.
#[derive(Default)]
struct FileRows {
    file: PathBuf,
    read: usize,
}

impl FileRows {
    /// The index in `file` of the first of the next `n` rows read from it.
    fn take(&mut self, file: &Path, n: usize) -> usize {
        if self.file != file {
            (self.file, self.read) = (file.to_path_buf(), 0);
        }
        self.read += n;
        self.read - n
    }
}

/// Streams a sparse-vectors output in batches of at most `rows` rows, calling
/// `f(file index, ids, vectors)`; only one batch is in memory at a time.
pub fn for_each_sparse_batch(
    path: &Path,
    rows: usize,
    mut f: impl FnMut(usize, Vec<String>, Vec<SparseVector>) -> Result<()>,
) -> Result<()> {
    let expected = schema::sparse_vectors();
    for (i, file) in parquet_files(path)?.into_iter().enumerate() {
        let fh = File::open(&file).map_err(|e| StageError::io(&file, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(fh)
            .map_err(|e| StageError::parquet(&file, e))?;
        check_schema(&file, builder.schema(), &expected)?;
        let reader = builder
            .with_batch_size(rows.max(1))
            .build()
            .map_err(|e| StageError::parquet(&file, e))?;
        let mut first_row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| StageError::parquet(&file, e))?;
            let (mut ids, mut vectors) = (Vec::new(), Vec::new());
            sparse_rows(
                &file,
                &batch,
                first_row,
                f64::INFINITY,
                &mut ids,
                &mut vectors,
            )?;
            first_row += batch.num_rows();
            f(i, ids, vectors)?;
        }
    }
    Ok(())
}

/// Appends `batch`'s rows (the file's rows from `first_row` on) to `ids` and `vectors`, checked
/// as [`check_weights`] says and with positive weights summing to at most `max_sum`.
fn sparse_rows(
    path: &Path,
    batch: &RecordBatch,
    first_row: usize,
    max_sum: f64,
    ids: &mut Vec<String>,
    vectors: &mut Vec<SparseVector>,
) -> Result<()> {
    let id = column::<StringArray>(path, batch, "id")?;
    let terms = column::<ListArray>(path, batch, "terms")?;
    let weights = column::<ListArray>(path, batch, "weights")?;
    for b in 0..batch.num_rows() {
        let i = first_row + b;
        let t = terms.value(b);
        let w = weights.value(b);
        let t = t
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| StageError::parquet(path, "terms are not uint32"))?;
        let w = w
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| StageError::parquet(path, "weights are not float32"))?;
        if t.len() != w.len() {
            return Err(StageError::parquet(
                path,
                format!("row {i}: {} terms but {} weights", t.len(), w.len()),
            ));
        }
        let id = id.value(b);
        check_weights(path, i, id, t, w)?;
        let in_row = |why: String| StageError::parquet(path, format!("row {i} (id `{id}`): {why}"));
        let vector = ascending_vector(t.values(), w.values())
            .map_err(|term| in_row(format!("term {term} is listed more than once")))?;
        if let Some(sum) = weights_past(&vector, max_sum) {
            return Err(in_row(format!(
                "the query's weights sum to {sum}, over the {max_sum} integer scoring holds"
            )));
        }
        ids.push(id.to_string());
        vectors.push(vector);
    }
    Ok(())
}

/// The largest sum of a query vector's weights retrieval accepts: queries score in u32
/// integers (a weight × 100 times an impact ≤ 255, summed over the query's terms), which this
/// keeps from overflowing; trained SPLADE queries sum to tens.
pub const MAX_QUERY_WEIGHT_SUM: f64 = 100_000.0;

/// Query vectors for retrieval: [`read_sparse`], and a row whose positive weights sum past
/// [`MAX_QUERY_WEIGHT_SUM`] is an error naming the file, row and id.
pub fn read_query_vectors(path: &Path) -> Result<(Vec<String>, Vec<SparseVector>)> {
    read_sparse_summing_to(path, MAX_QUERY_WEIGHT_SUM)
}

/// The sum of `v`'s positive weights (those scoring counts) when it is past `max_sum`.
pub fn weights_past(v: &SparseVector, max_sum: f64) -> Option<f64> {
    let sum: f64 = v.weights.iter().map(|w| f64::from(w.max(0.0))).sum();
    (sum > max_sum).then_some(sum)
}

/// Row `i` (`id`) of a sparse-vectors file must have no null term or weight and only finite
/// weights: a NaN or infinity would poison the index's quantization scale or every score.
fn check_weights(
    path: &Path,
    i: usize,
    id: &str,
    terms: &UInt32Array,
    weights: &Float32Array,
) -> Result<()> {
    if terms.null_count() + weights.null_count() > 0 {
        return Err(StageError::parquet(
            path,
            format!("row {i} (id `{id}`): a term or weight is null"),
        ));
    }
    match weights.values().iter().position(|w| !w.is_finite()) {
        Some(j) => Err(StageError::parquet(
            path,
            format!(
                "row {i} (id `{id}`): the weight of term {} is {}, not a finite number",
                terms.value(j),
                weights.value(j)
            ),
        )),
        None => Ok(()),
    }
}

/// A row as a [`SparseVector`], terms ascending as its contract says (sorted with their weights
/// when the file lists them in another order); `Err(term)` when a term is listed twice, which
/// algorithms would otherwise count differently.
fn ascending_vector(terms: &[u32], weights: &[f32]) -> std::result::Result<SparseVector, u32> {
    if terms.windows(2).all(|w| w[0] < w[1]) {
        return Ok(SparseVector {
            terms: terms.to_vec(),
            weights: weights.to_vec(),
        });
    }
    let mut pairs: Vec<(u32, f32)> = terms.iter().copied().zip(weights.iter().copied()).collect();
    pairs.sort_unstable_by_key(|p| p.0);
    if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(w[0].0);
    }
    Ok(SparseVector {
        terms: pairs.iter().map(|p| p.0).collect(),
        weights: pairs.iter().map(|p| p.1).collect(),
    })
}

/// Writes a negatives artifact.
pub fn write_negatives(path: &Path, rows: &[NegativesRow]) -> Result<u64> {
    let schema = schema::negatives();
    let item = |i: usize| match schema.field(i).data_type() {
        arrow::datatypes::DataType::List(f) => f.clone(),
        _ => unreachable!("negatives schema columns 1..=3 are lists"),
    };
    let mut sink = ParquetSink::create(path, schema.clone())?;
    let mut q = StringBuilder::new();
    let mut pos = ListBuilder::new(StringBuilder::new()).with_field(item(1));
    let mut neg = ListBuilder::new(StringBuilder::new()).with_field(item(2));
    let mut rank = ListBuilder::new(UInt32Builder::new()).with_field(item(3));
    let mut src = StringBuilder::new();
    for r in rows {
        q.append_value(&r.qid);
        for p in &r.pos {
            pos.values().append_value(p);
        }
        pos.append(true);
        for n in &r.neg {
            neg.values().append_value(n);
        }
        neg.append(true);
        rank.values().append_slice(&r.neg_rank);
        rank.append(true);
        src.append_value(&r.source);
    }
    sink.write_columns(vec![
        Arc::new(q.finish()),
        Arc::new(pos.finish()),
        Arc::new(neg.finish()),
        Arc::new(rank.finish()),
        Arc::new(src.finish()),
    ])?;
    sink.finish()
}

/// Reads a teacher-scores artifact as `(qid, did, score)` rows in file order.
pub fn read_teacher_rows(path: &Path) -> Result<Vec<(String, String, f32)>> {
    let mut out = Vec::new();
    for_each_batch(path, &schema::teacher_scores(), |file, batch| {
        let q = column::<StringArray>(file, &batch, "qid")?;
        let d = column::<StringArray>(file, &batch, "did")?;
        let s = column::<Float32Array>(file, &batch, "score")?;
        for i in 0..batch.num_rows() {
            out.push((q.value(i).to_string(), d.value(i).to_string(), s.value(i)));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads a negatives artifact.
pub fn read_negatives(path: &Path) -> Result<Vec<NegativesRow>> {
    let strings = |a: ArrayRef| -> Vec<String> {
        a.as_any()
            .downcast_ref::<StringArray>()
            .map(|s| (0..s.len()).map(|i| s.value(i).to_string()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for batch in read_batches(path, &schema::negatives())? {
        let q = column::<StringArray>(path, &batch, "qid")?;
        let pos = column::<ListArray>(path, &batch, "pos")?;
        let neg = column::<ListArray>(path, &batch, "neg")?;
        let rank = column::<ListArray>(path, &batch, "neg_rank")?;
        let src = column::<StringArray>(path, &batch, "source")?;
        for i in 0..batch.num_rows() {
            let r = rank.value(i);
            let r = r
                .as_any()
                .downcast_ref::<UInt32Array>()
                .ok_or_else(|| StageError::parquet(path, "neg_rank is not uint32"))?;
            out.push(NegativesRow {
                qid: q.value(i).to_string(),
                pos: strings(pos.value(i)),
                neg: strings(neg.value(i)),
                neg_rank: r.values().to_vec(),
                source: src.value(i).to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Builder, ListBuilder};
    use arrow::datatypes::{Field, Schema};

    /// A NaN or infinite weight is an error naming the file, row, id and term, not a silently
    /// corrupted index.
    #[test]
    fn non_finite_weights_are_rejected_with_their_row() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let path = dir.path().join("v.parquet");
            let ids = vec!["d0".to_string(), "d1".to_string()];
            let vectors = vec![
                SparseVector {
                    terms: vec![1, 2],
                    weights: vec![0.5, 1.0],
                },
                SparseVector {
                    terms: vec![3, 9],
                    weights: vec![0.25, bad],
                },
            ];
            write_sparse(&path, &ids, &vectors).unwrap();
            let err = read_sparse(&path).unwrap_err().to_string();
            for want in [
                "v.parquet",
                "row 1",
                "`d1`",
                "term 9",
                "not a finite number",
            ] {
                assert!(err.contains(want), "{want:?} not in {err}");
            }
            let streamed = for_each_sparse_batch(&path, 10, |_, _, _| Ok(()));
            assert!(streamed.unwrap_err().to_string().contains("term 9"));
        }
    }

    /// A term listed twice in a row, or query weights past what integer scoring holds, are
    /// errors naming the file, row and id; a row listing its terms out of order reads sorted.
    #[test]
    fn repeated_terms_and_oversized_weights_are_rejected_with_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.parquet");
        let ids = vec!["d0".to_string(), "d1".to_string()];
        let row = |terms: Vec<u32>, weights: Vec<f32>| SparseVector { terms, weights };
        let repeated = "term 9 is listed more than once";
        let vectors = vec![
            row(vec![7, 2, 5], vec![1.0, 2.0, 3.0]),
            row(vec![9, 3, 9], vec![0.5, 1.0, 2.0]),
        ];
        write_sparse(&path, &ids, &vectors).unwrap();
        let err = read_sparse(&path).unwrap_err().to_string();
        for want in ["v.parquet", "row 1", "`d1`", repeated] {
            assert!(err.contains(want), "{want:?} not in {err}");
        }
        // Streamed a row per batch, the error still names the row within the file.
        let streamed = for_each_sparse_batch(&path, 1, |_, _, _| Ok(()));
        let err = streamed.unwrap_err().to_string();
        assert!(err.contains(repeated) && err.contains("row 1"), "{err}");

        let mut vectors = vec![
            row(vec![7, 2, 5], vec![1.0, 2.0, 3.0]),
            row(vec![3, 4], vec![50_000.0, 50_000.0]),
        ];
        write_sparse(&path, &ids, &vectors).unwrap();
        let read = read_query_vectors(&path).unwrap().1;
        assert_eq!(read[0], row(vec![2, 5, 7], vec![2.0, 3.0, 1.0]));
        assert_eq!(read[1], vectors[1]);
        // As documents any sum reads; as queries a sum of positive weights past the limit is
        // refused, however negative the other weights (scoring drops them).
        vectors[1] = row(vec![3, 4, 8], vec![60_000.0, 50_000.0, -100_000.0]);
        write_sparse(&path, &ids, &vectors).unwrap();
        assert_eq!(read_sparse(&path).unwrap().1[1], vectors[1]);
        let err = read_query_vectors(&path).unwrap_err().to_string();
        for want in ["v.parquet", "row 1", "`d1`", "weights sum to 110000"] {
            assert!(err.contains(want), "{want:?} not in {err}");
        }
    }

    /// pyarrow (≥ 13) names list items `element` and compresses with snappy by default (as
    /// pandas does); such vectors must read like ours.
    #[test]
    fn sparse_vectors_with_compliant_list_item_names_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pyarrow.parquet");
        let item = |t: DataType| Arc::new(Field::new("element", t, true));
        let mut terms = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
        let mut weights =
            ListBuilder::new(Float32Builder::new()).with_field(item(DataType::Float32));
        terms.values().append_slice(&[3, 7]);
        terms.append(true);
        weights.values().append_slice(&[0.5, 1.5]);
        weights.append(true);
        let mut ids = StringBuilder::new();
        ids.append_value("d1");
        let terms = terms.finish();
        let weights = weights.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("terms", terms.data_type().clone(), true),
            Field::new("weights", weights.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids.finish()), Arc::new(terms), Arc::new(weights)],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let file = File::create(&path).unwrap();
        let mut w = ArrowWriter::try_new(file, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let (ids, vectors) = read_sparse(&path).unwrap();
        assert_eq!(ids, vec!["d1".to_string()]);
        assert_eq!(vectors[0].terms, vec![3, 7]);
        assert_eq!(vectors[0].weights, vec![0.5, 1.5]);
    }
}
