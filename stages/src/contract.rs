//! The stage contract: what a stage kind declares and what it gets when it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

use crate::error::{Result, StageError};
use crate::params::ParamSpec;

/// A stage kind: a named, versioned computation from declared inputs and params to named outputs.
///
/// Contract: `run` reads only `ctx`'s inputs and params, writes only into `ctx.staging_dir()`, and
/// is deterministic for the same inputs and params (so the fingerprint names its result). Long
/// work saves resume state through `ctx` and, when restarted with the same fingerprint, continues
/// from it instead of starting over. Bump `version` whenever the output for the same inputs changes.
pub trait Stage: Send + Sync {
    /// The kind name used in pipeline files (`kind = "ingest"`).
    fn kind(&self) -> &'static str;
    /// Bumped when the same inputs and params would now give a different output.
    fn version(&self) -> u32;
    /// One line on what the stage does (shown by `splade kinds`).
    fn doc(&self) -> &'static str;
    /// The declared params, including input params (files and artifact references).
    fn params(&self) -> &'static [ParamSpec];
    /// The outputs this stage produces for the given canonical params.
    fn outputs(&self, params: &Value) -> Vec<String>;
    /// Cross-field checks run before any stage executes; `Err((key, message))`.
    fn check(&self, _params: &Value) -> std::result::Result<(), (String, String)> {
        Ok(())
    }
    /// Does the work.
    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome>;
}

/// What a stage reports back: statistics for the manifest and an optional human summary that is
/// printed at the end of every run that reaches this stage (also when it is cached).
#[derive(Debug, Default, Clone)]
pub struct StageOutcome {
    pub stats: Map<String, Value>,
    pub summary: Option<String>,
}

/// One declared input of a stage, as the engine resolved it.
#[derive(Debug, Clone)]
pub enum ResolvedInput {
    /// A user file or directory.
    File(PathBuf),
    /// Another stage's output: `path` is its file (`x.parquet`) or shard directory inside `artifact`.
    Artifact {
        reference: String,
        artifact: PathBuf,
        path: PathBuf,
    },
}

impl ResolvedInput {
    /// The path to read.
    pub fn path(&self) -> &Path {
        match self {
            ResolvedInput::File(p) => p,
            ResolvedInput::Artifact { path, .. } => path,
        }
    }
}

/// A named input slot, for listing by tools.
#[derive(Debug, Clone)]
pub struct InputSlot {
    pub key: String,
    pub input: ResolvedInput,
}

/// Where a stage keeps its in-progress state across crashes. The engine backs it with its store,
/// keyed by the stage's fingerprint.
pub trait ResumeStore: Send + Sync {
    /// The last state saved for this fingerprint, if any.
    fn load(&self) -> Option<Value>;
    /// Durably records `state` (flushed before returning).
    fn save(&self, state: &Value) -> std::result::Result<(), String>;
}

/// Everything a running stage may touch.
pub struct StageContext {
    /// The stage's name in the pipeline (`[stage.NAME]`).
    pub name: String,
    /// Canonical params with defaults filled.
    pub params: Value,
    /// Resolved inputs keyed by param name (`docs`, or `queries.train` for file maps).
    pub inputs: BTreeMap<String, ResolvedInput>,
    /// The directory the stage writes into; kept across crashes while resume state exists.
    pub staging: PathBuf,
    /// The pipeline's `[backend]` table, for stages that run models.
    pub backend: Value,
    /// Threads the stage may use.
    pub threads: usize,
    /// Whether to draw progress bars.
    pub show_progress: bool,
    pub resume: Box<dyn ResumeStore>,
}

impl StageContext {
    /// The directory outputs are written into.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Where a single-file output named `name` must be written.
    pub fn output_file(&self, name: &str) -> PathBuf {
        self.staging.join(format!("{name}.parquet"))
    }

    /// Where a sharded output named `name` keeps its shards (created on demand).
    pub fn output_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.staging.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
        Ok(dir)
    }

    /// A resolved input; an error naming the key if the engine did not provide it.
    pub fn input(&self, key: &str) -> Result<&ResolvedInput> {
        self.inputs.get(key).ok_or_else(|| StageError::Param {
            key: key.into(),
            message: "this input is required".into(),
        })
    }

    /// The entries of a file-map input (`queries.train`, `queries.dev` → ("train", path), ...).
    pub fn file_map(&self, key: &str) -> Vec<(String, PathBuf)> {
        let prefix = format!("{key}.");
        self.inputs
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .map(|name| (name.to_string(), v.path().to_path_buf()))
            })
            .collect()
    }

    /// A typed param; the engine validated types already, so a mismatch is a bug in the stage.
    pub fn param<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self.params.get(key).cloned().unwrap_or(Value::Null);
        serde_json::from_value(v).map_err(|e| StageError::Param {
            key: key.into(),
            message: e.to_string(),
        })
    }

    /// The whole params table as the stage's own params struct.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone()).map_err(|e| StageError::Param {
            key: self.name.clone(),
            message: e.to_string(),
        })
    }

    /// Resume state saved by an earlier, interrupted run of this same fingerprint.
    pub fn resume_state(&self) -> Option<Value> {
        self.resume.load()
    }

    /// Shards `0..n` of `dir` (files `part-NNNNN.parquet`) that an interrupted run committed: the
    /// `done` count of the saved resume state, trusted only as far as those files exist.
    pub fn committed_shards(&self, dir: &Path, shards: usize) -> usize {
        let done = self
            .resume_state()
            .and_then(|s| s.get("done").and_then(Value::as_u64))
            .unwrap_or(0) as usize;
        (0..done.min(shards))
            .take_while(|s| shard_file(dir, *s).is_file())
            .count()
    }

    /// Durably saves resume state. Call it only after the work it describes is on disk.
    pub fn save_resume_state(&self, state: &Value) -> Result<()> {
        self.resume
            .save(state)
            .map_err(|e| StageError::Other(format!("saving resume state: {e}")))
    }

    /// A progress bar with rate and ETA, drawn on stderr when progress is enabled.
    pub fn progress(&self, len: u64, unit: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(
            Some(len),
            if self.show_progress {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        let template =
            format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(self.name.clone());
        bar
    }
}

/// With the `test-stages` feature, sleeps the milliseconds named by the environment variable
/// `var` (if set) so kill -9 tests can interrupt a stage right after it committed progress;
/// a no-op in normal builds.
pub fn test_pause(var: &str) {
    #[cfg(feature = "test-stages")]
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    #[cfg(not(feature = "test-stages"))]
    let _ = var;
}

/// The file of shard `index` in a sharded output directory.
pub fn shard_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("part-{index:05}.parquet"))
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, so a crash leaves either
/// the old file or the new one, never a torn one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| StageError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| StageError::io(&tmp, e))?;
    f.sync_all().map_err(|e| StageError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StageError::io(path, e))
}
