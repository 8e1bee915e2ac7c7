//! The stage contract: what a stage kind declares and what it gets when it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

use crate::error::{Result, StageError};
use crate::params::{ParamError, ParamSpec, StageParams};

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
    /// Cross-field checks run before any stage executes.
    fn check(&self, params: &Value) -> std::result::Result<(), ParamError>;
    /// Does the work.
    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome>;
    /// True for kinds that watch [`StageContext::cancelled`] and stop at their next checkpoint or
    /// shard boundary with [`StageError::Cancelled`] after saving it (others are stopped where
    /// they are, like a kill).
    fn stops_at_checkpoints(&self) -> bool {
        false
    }
    /// True for sharded kinds whose shards are independent (`encode`, `retrieve`): run with a
    /// [`ShardSlice`], they write only that slice's missing shards and return; run without one
    /// after all slices, they only add what needs every shard (statistics, a TREC file).
    fn splits_into_tasks(&self) -> bool {
        false
    }
    /// The kinds of artifact the reference param `param` accepts; `None` accepts anything.
    fn accepts(&self, _param: &str) -> Option<&'static [Holds]> {
        None
    }
}

/// What a stage output holds, so `plan` can refuse a reference to the wrong kind of artifact
/// (a qrels table where documents are expected) before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// `id, text` rows: documents or queries.
    Texts,
    /// Relevance judgments.
    Qrels,
    /// A ranked run (qid, did, rank, score).
    Run,
    /// Sparse vectors (id, terms, weights).
    Vectors,
    /// An inverted index.
    Index,
    /// A model directory.
    Model,
    /// Mined negatives.
    Negatives,
    /// Teacher scores.
    TeacherScores,
    /// Per-query metric values of an evaluation.
    PerQuery,
    /// Anything else (metrics, logs, exports, reports): not referenced by other stages' typed
    /// inputs.
    Other,
}

impl Holds {
    /// What an output named `output` holds, by the names stages give their outputs.
    pub fn of_output(output: &str) -> Holds {
        match output {
            "docs" | "shards" => Holds::Texts,
            o if o.ends_with("_queries") => Holds::Texts,
            o if o.ends_with("_qrels") => Holds::Qrels,
            "run" => Holds::Run,
            o if o.ends_with("_run") => Holds::Run,
            "vectors" => Holds::Vectors,
            "index" => Holds::Index,
            "model" | "query_model" => Holds::Model,
            "negatives" => Holds::Negatives,
            "teacher_scores" => Holds::TeacherScores,
            "per_query" => Holds::PerQuery,
            _ => Holds::Other,
        }
    }

    /// How it reads in an error message.
    pub fn describe(self) -> &'static str {
        match self {
            Holds::Texts => "texts (documents or queries)",
            Holds::Qrels => "qrels",
            Holds::Run => "a run",
            Holds::Vectors => "sparse vectors",
            Holds::Index => "an index",
            Holds::Model => "a model",
            Holds::Negatives => "mined negatives",
            Holds::TeacherScores => "teacher scores",
            Holds::PerQuery => "per-query metric values",
            Holds::Other => "something no stage reads",
        }
    }
}

/// A stage written against its typed params; every `TypedStage` is a [`Stage`] (the engine's
/// object-safe view), which deserializes the canonical params once per call.
pub trait TypedStage: Send + Sync {
    /// The params struct, declared with [`stage_params!`](crate::stage_params).
    type Params: StageParams;
    /// The kind name used in pipeline files (`kind = "ingest"`).
    const KIND: &'static str;
    /// Bumped when the same inputs and params would now give a different output.
    const VERSION: u32;
    /// One line on what the stage does (shown by `splade kinds`).
    const DOC: &'static str;
    /// The outputs this stage produces for these params.
    fn outputs(&self, params: &Self::Params) -> Vec<String>;
    /// Cross-field checks run before any stage executes.
    fn check(&self, _params: &Self::Params) -> std::result::Result<(), ParamError> {
        Ok(())
    }
    /// Does the work.
    fn run(&self, params: Self::Params, ctx: &mut StageContext) -> Result<StageOutcome>;
    /// See [`Stage::stops_at_checkpoints`].
    const STOPS_AT_CHECKPOINTS: bool = false;
    /// See [`Stage::splits_into_tasks`].
    const SPLITS_INTO_TASKS: bool = false;
    /// What the artifact param `param` accepts (`None`: anything).
    fn accepts(&self, _param: &str) -> Option<&'static [Holds]> {
        None
    }
}

impl<T: TypedStage> Stage for T {
    fn stops_at_checkpoints(&self) -> bool {
        T::STOPS_AT_CHECKPOINTS
    }
    fn splits_into_tasks(&self) -> bool {
        T::SPLITS_INTO_TASKS
    }
    fn accepts(&self, param: &str) -> Option<&'static [Holds]> {
        TypedStage::accepts(self, param)
    }
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn version(&self) -> u32 {
        T::VERSION
    }
    fn doc(&self) -> &'static str {
        T::DOC
    }
    fn params(&self) -> &'static [ParamSpec] {
        T::Params::SPECS
    }
    fn outputs(&self, params: &Value) -> Vec<String> {
        // The engine calls this only with params that passed `check`, so they deserialize.
        T::Params::from_canonical(params)
            .map(|p| TypedStage::outputs(self, &p))
            .unwrap_or_default()
    }
    fn check(&self, params: &Value) -> std::result::Result<(), ParamError> {
        TypedStage::check(self, &T::Params::from_canonical(params)?)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let params = T::Params::from_canonical(&ctx.params)?;
        TypedStage::run(self, params, ctx)
    }
}

/// What a stage reports back: statistics for the manifest and an optional human summary that is
/// printed at the end of every run that reaches this stage (also when it is cached).
#[derive(Debug, Default, Clone)]
pub struct StageOutcome {
    /// Figures recorded in the artifact's manifest (name → JSON value).
    pub stats: Map<String, Value>,
    /// Human summary stored in the manifest and printed at the end of the run; `None` for none.
    pub summary: Option<String>,
}

/// One declared input of a stage, as the engine resolved it (serializable: a Slurm worker gets
/// its inputs resolved by the driver).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ResolvedInput {
    /// A user file or directory.
    File(PathBuf),
    /// Another stage's output: `path` is its file (`x.parquet`) or shard directory inside `artifact`.
    Artifact {
        /// The upstream output as `"<stage>.<output>"`.
        reference: String,
        /// The upstream stage's artifact directory.
        artifact: PathBuf,
        /// The output's file or shard directory inside `artifact`.
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
    /// The param that declares the input (`docs`, or `queries.train` for file maps).
    pub key: String,
    /// Where the input resolved to.
    pub input: ResolvedInput,
}

/// Why resume state could not be saved (the store's own error, boxed).
pub type ResumeError = Box<dyn std::error::Error + Send + Sync>;

/// Where a stage keeps its in-progress state across crashes. The engine backs it with its store,
/// keyed by the stage's fingerprint.
pub trait ResumeStore: Send + Sync {
    /// The last state saved for this fingerprint, if any.
    fn load(&self) -> Option<Value>;
    /// Durably records `state` (flushed before returning).
    fn save(&self, state: &Value) -> std::result::Result<(), ResumeError>;
}

/// Resume state held in memory, for stages run once in-process (benchmarks, tests).
#[derive(Default)]
pub struct MemoryResume(std::sync::Mutex<Option<Value>>);

impl ResumeStore for MemoryResume {
    fn load(&self) -> Option<Value> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
    fn save(&self, state: &Value) -> std::result::Result<(), ResumeError> {
        let mut slot = self.0.lock().map_err(|_| "resume state lock poisoned")?;
        *slot = Some(state.clone());
        Ok(())
    }
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
    /// Where resume state is kept (the engine's store, or memory).
    pub resume: Box<dyn ResumeStore>,
    /// Set when the run is asked to stop (see [`StageContext::cancelled`]).
    pub cancel: Arc<AtomicBool>,
    /// For one task of a Slurm job array: write only this task's shards (see [`ShardSlice`]).
    pub shard_slice: Option<ShardSlice>,
}

/// One task's share of a sharded stage's shards: shard `s` belongs to task `s % tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSlice {
    /// This task's index, `0..tasks`.
    pub task: usize,
    /// How many tasks share the shards.
    pub tasks: usize,
}

impl ShardSlice {
    /// Whether shard `s` is this task's.
    pub fn owns(&self, s: usize) -> bool {
        self.tasks > 0 && s % self.tasks == self.task
    }
}

impl StageContext {
    /// A context for stage `name` with canonical `params`, writing into `staging`: no inputs, an
    /// empty backend table (flex on the CPU), every core, no progress bars, resume state in
    /// memory. The `with_*` methods set the rest.
    pub fn new(name: impl Into<String>, params: Value, staging: impl Into<PathBuf>) -> Self {
        StageContext {
            name: name.into(),
            params,
            inputs: BTreeMap::new(),
            staging: staging.into(),
            backend: Value::Object(Map::new()),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            show_progress: false,
            resume: Box::new(MemoryResume::default()),
            cancel: Arc::new(AtomicBool::new(false)),
            shard_slice: None,
        }
    }

    /// Makes this run one task of a job array (see [`ShardSlice`]).
    pub fn with_shard_slice(mut self, slice: Option<ShardSlice>) -> Self {
        self.shard_slice = slice;
        self
    }

    /// Shares `flag` as the cancellation request (the engine passes its signal flag).
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = flag;
        self
    }

    /// True once the run was asked to stop: a stage that can, saves what it needs to resume and
    /// returns [`StageError::Cancelled`] at its next checkpoint boundary.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Adds input `key` (`docs`, or `queries.train` for a file-map entry).
    pub fn with_input(mut self, key: impl Into<String>, input: ResolvedInput) -> Self {
        self.inputs.insert(key.into(), input);
        self
    }

    /// Sets the pipeline's `[backend]` table.
    pub fn with_backend(mut self, backend: Value) -> Self {
        self.backend = backend;
        self
    }

    /// Sets the threads the stage may use.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Draws progress bars on stderr when `show` is true.
    pub fn with_progress(mut self, show: bool) -> Self {
        self.show_progress = show;
        self
    }

    /// Keeps resume state in `resume` (the engine passes its store).
    pub fn with_resume(mut self, resume: Box<dyn ResumeStore>) -> Self {
        self.resume = resume;
        self
    }

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

    /// Resume state saved by an earlier, interrupted run of this same fingerprint.
    pub fn resume_state(&self) -> Option<Value> {
        self.resume.load()
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

/// Runs `kind` in this process the way the engine would, with `params` over the kind's defaults
/// (checked by the kind's `check`), in a context made by [`StageContext::new`] and `configure`.
/// Creates the staging directory. For benchmarks and tests; pipelines run through the engine.
pub fn run_stage(
    kind: &dyn Stage,
    params: &Value,
    staging: &Path,
    configure: impl FnOnce(StageContext) -> StageContext,
) -> Result<StageOutcome> {
    let mut full = Map::new();
    for spec in kind.params() {
        let value = params
            .get(spec.name)
            .cloned()
            .or_else(|| spec.default_value())
            .unwrap_or(Value::Null);
        full.insert(spec.name.to_string(), value);
    }
    let full = Value::Object(full);
    kind.check(&full)?;
    std::fs::create_dir_all(staging).map_err(|e| StageError::io(staging, e))?;
    let mut ctx = configure(StageContext::new(kind.kind(), full, staging));
    kind.run(&mut ctx)
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
