//! The working files of a training run in its staging directory: checkpoints, the JSON-lines
//! train and validation logs (cut back to a checkpoint on resume), the best weights so far, and
//! the logs' conversion to Parquet at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{Map, Value};

use crate::error::{Result, StageError};
use crate::parquet_io::ParquetSink;

/// Where a run keeps its state while it trains; all of it survives a crash.
pub(super) struct RunFiles {
    /// The stage's staging directory.
    pub staging: PathBuf,
    /// Checkpoint directories (`step-NNNNNNNNN`).
    pub checkpoints: PathBuf,
    /// The train log, one JSON line per optimizer step.
    pub log: PathBuf,
    /// The validation log, one JSON line per validation.
    pub validation: PathBuf,
    /// The best weights so far (`model`, `query_model`), exported as Hugging Face directories.
    pub best: PathBuf,
    /// The documents' texts, copied to be memory-mapped (rewritten at every start).
    pub texts: PathBuf,
}

impl RunFiles {
    /// The files of a run staged in `staging`.
    pub fn new(staging: &Path) -> Self {
        RunFiles {
            staging: staging.to_path_buf(),
            checkpoints: staging.join("checkpoints"),
            log: staging.join("train_log.jsonl"),
            validation: staging.join("validation.jsonl"),
            best: staging.join("best"),
            texts: staging.join("doc_texts.bin"),
        }
    }

    /// Cuts both logs back to the lengths a checkpoint recorded.
    pub fn cut_logs(&self, log_bytes: u64, validation_bytes: u64) -> Result<()> {
        truncate(&self.log, log_bytes)?;
        truncate(&self.validation, validation_bytes)
    }

    /// Empties the logs and removes the checkpoints and best weights of an earlier attempt.
    pub fn start_fresh(&self) -> Result<()> {
        self.cut_logs(0, 0)?;
        remove_dir_if_exists(&self.checkpoints)?;
        remove_dir_if_exists(&self.best)
    }

    /// Removes the checkpoints, the best weights and the logs once the outputs are written.
    pub fn remove(&self) -> Result<()> {
        remove_dir_if_exists(&self.checkpoints)?;
        remove_dir_if_exists(&self.best)?;
        for f in [&self.log, &self.validation, &self.texts] {
            if f.exists() {
                std::fs::remove_file(f).map_err(|e| StageError::io(f, e))?;
            }
        }
        Ok(())
    }
}

/// Removes the directory `d` and its contents, if it exists.
pub(super) fn remove_dir_if_exists(d: &Path) -> Result<()> {
    if d.exists() {
        std::fs::remove_dir_all(d).map_err(|e| StageError::io(d, e))?;
    }
    Ok(())
}

/// The length of the file at `path` in bytes; 0 when it does not exist.
pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Cuts `path` to `len` bytes (creating it empty if absent): drops log lines written after the
/// checkpoint being resumed, so the log has no duplicated steps.
fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StageError::io(path, e))?;
    f.set_len(len).map_err(|e| StageError::io(path, e))?;
    f.sync_all().map_err(|e| StageError::io(path, e))
}

/// Appends `value` as one JSON line to `path` (created if absent).
pub(super) fn append_line(path: &Path, value: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| StageError::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| StageError::io(path, e))
}

/// Converts a JSON-lines log (`step` + numeric columns) into a Parquet table.
pub(super) fn jsonl_to_parquet(from: &Path, to: &Path) -> Result<u64> {
    let rows = read_jsonl(from)?;
    let keys: Vec<String> = rows
        .first()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_else(|| vec!["step".into()]);
    let fields: Vec<Field> = keys
        .iter()
        .map(|k| Field::new(k, column_type(k), true))
        .collect();
    let mut sink = ParquetSink::create(to, Arc::new(Schema::new(fields)))?;
    sink.write_columns(keys.iter().map(|k| column(&rows, k)).collect())?;
    sink.finish()
}

/// The lines of a JSON-lines file as objects; a bad line is an error naming it.
fn read_jsonl(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| StageError::malformed(path, i + 1, e.to_string()))
        })
        .collect()
}

/// A log column's type: `step` is an integer, every other column a float.
fn column_type(key: &str) -> DataType {
    if key == "step" {
        DataType::Int64
    } else {
        DataType::Float64
    }
}

/// The values of column `key` over `rows` (null where a row lacks it).
fn column(rows: &[Map<String, Value>], key: &str) -> ArrayRef {
    match column_type(key) {
        DataType::Int64 => Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| r.get(key).and_then(Value::as_i64)),
        )),
        _ => Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.get(key).and_then(Value::as_f64)),
        )),
    }
}
