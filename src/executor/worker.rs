//! The files a driver and a Slurm worker exchange in a stage's job directory
//! (`<root>/.jobs/<fingerprint>/`), and the worker itself (`splade worker DIR`).
//!
//! The driver writes `job.json` (what to run, with inputs already resolved) and submits; the
//! worker runs the stage into the staging directory, keeps its resume state in `resume.json`
//! and ends by writing `result.json`. Workers never open the store: the driver stays its only
//! writer, reads `result.json` and commits exactly as a local run does. Every file is written to
//! a temporary name and renamed, so a killed process never leaves half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use splade_stages::contract::{write_atomically, ResumeError, ShardSlice};
use splade_stages::{Registry, ResolvedInput, ResumeStore, StageContext, StageError};

use crate::store::now_ns;

/// What a worker runs: one stage, its params and resolved inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The stage's name in the pipeline.
    pub stage: String,
    /// Its kind.
    pub kind: String,
    /// Canonical params.
    pub params: Value,
    /// Inputs by key, resolved by the driver.
    pub inputs: BTreeMap<String, ResolvedInput>,
    /// The pipeline's `[backend]` table.
    pub backend: Value,
    /// Threads when Slurm does not say (`SLURM_CPUS_PER_TASK` wins).
    pub threads: usize,
    /// The staging directory the stage writes into.
    pub staging: PathBuf,
    /// Set for a job array: each task (`SLURM_ARRAY_TASK_ID`) writes its share of the shards.
    pub array_tasks: Option<usize>,
}

/// How a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// The stage finished; its outputs are in the staging directory.
    Done,
    /// The stage stopped at a checkpoint after a signal; a new job resumes it.
    Cancelled,
    /// The stage failed.
    Failed,
}

/// What a worker reports in `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    /// How it ended.
    pub status: WorkerStatus,
    /// The error, for failed and cancelled stages.
    pub message: String,
    /// The signal that stopped it (`SIGUSR1`, `SIGTERM`), when one did.
    pub signal: Option<String>,
    /// The stage's statistics (for the manifest).
    pub stats: Map<String, Value>,
    /// The stage's summary.
    pub summary: Option<String>,
    /// When the stage started (ns since the epoch).
    pub started_ns: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

/// A stage's job directory: the exchange files of one fingerprint.
#[derive(Debug, Clone)]
pub struct JobDir(pub PathBuf);

impl JobDir {
    /// The job directory of fingerprint `fp` under the artifact root.
    pub fn new(root: &Path, fp: &str) -> Self {
        JobDir(root.join(".jobs").join(fp))
    }

    /// `job.json`: what the single job runs.
    pub fn spec_file(&self) -> PathBuf {
        self.0.join("job.json")
    }
    /// `array.json`: what the tasks of a job array run.
    pub fn array_spec_file(&self) -> PathBuf {
        self.0.join("array.json")
    }
    /// `result.json`.
    pub fn result_file(&self) -> PathBuf {
        self.0.join("result.json")
    }
    /// `result-<task>.json`, what array task `task` reports.
    pub fn task_result_file(&self, task: usize) -> PathBuf {
        self.0.join(format!("result-{task}.json"))
    }
    /// `resume.json`.
    pub fn resume_file(&self) -> PathBuf {
        self.0.join("resume.json")
    }
    /// `submitted.json`: the job ids of this stage, newest last.
    pub fn submitted_file(&self) -> PathBuf {
        self.0.join("submitted.json")
    }

    /// Writes `value` as JSON to `path`, atomically.
    pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)?;
        write_atomically(path, &bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads JSON from `path`; `None` when the file does not exist.
    pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Whether a worker saved resume state for this fingerprint.
    pub fn has_resume_state(&self) -> bool {
        self.resume_file().is_file()
    }
}

/// Resume state in the job directory (workers never open the store).
struct FileResume(PathBuf);

impl ResumeStore for FileResume {
    fn load(&self) -> Option<Value> {
        JobDir::read_json(&self.0).ok().flatten()
    }
    fn save(&self, state: &Value) -> std::result::Result<(), ResumeError> {
        JobDir::write_json(&self.0, state).map_err(|e| format!("{e:#}").into())
    }
}

/// This process's share of a job array's shards (`SLURM_ARRAY_TASK_ID` of `array_tasks`).
fn array_task(spec: &JobSpec) -> Result<Option<ShardSlice>> {
    let Some(tasks) = spec.array_tasks else {
        return Ok(None);
    };
    let task: usize = std::env::var("SLURM_ARRAY_TASK_ID")
        .context("job.json asks for an array task but SLURM_ARRAY_TASK_ID is not set")?
        .parse()
        .context("SLURM_ARRAY_TASK_ID is not a number")?;
    anyhow::ensure!(task < tasks, "array task {task} of {tasks}");
    Ok(Some(ShardSlice { task, tasks }))
}

/// `splade worker DIR --spec SPEC`: runs the stage SPEC (`DIR/job.json` by default) describes
/// and writes `DIR/result.json` (`result-<task>.json` for an array task). Returns the process
/// exit status: 0 done, 3 cancelled at a checkpoint, 1 failed.
pub fn run(dir: &Path, spec_file: Option<&Path>) -> Result<i32> {
    let jobs = JobDir(dir.to_path_buf());
    let spec_file = spec_file.map_or_else(|| jobs.spec_file(), Path::to_path_buf);
    let spec: JobSpec = JobDir::read_json(&spec_file)?
        .with_context(|| format!("{} not found", spec_file.display()))?;
    let registry = Registry::builtin();
    let kind = registry
        .get(&spec.kind)
        .with_context(|| format!("this splade build has no stage kind `{}`", spec.kind))?;
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(spec.threads);
    let slice = array_task(&spec)?;
    std::fs::create_dir_all(&spec.staging)
        .with_context(|| format!("creating {}", spec.staging.display()))?;
    let mut ctx = StageContext::new(spec.stage.clone(), spec.params.clone(), &spec.staging)
        .with_backend(spec.backend.clone())
        .with_threads(threads)
        .with_cancel(crate::interrupt::cancel_flag())
        .with_shard_slice(slice)
        .with_resume(Box::new(FileResume(jobs.resume_file())));
    ctx.inputs = spec.inputs.clone();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the stage's thread pool")?;
    let started_ns = now_ns();
    let t0 = Instant::now();
    crate::interrupt::stage_started(&spec.stage, kind.stops_at_checkpoints());
    let outcome = pool.install(|| kind.run(&mut ctx));
    let seconds = t0.elapsed().as_secs_f64();
    let signal = crate::interrupt::received().map(|s| match s {
        libc::SIGUSR1 => "SIGUSR1".to_string(),
        libc::SIGTERM => "SIGTERM".to_string(),
        libc::SIGINT => "SIGINT".to_string(),
        other => format!("signal {other}"),
    });
    let (status, message, stats, summary) = match outcome {
        Ok(o) => (WorkerStatus::Done, String::new(), o.stats, o.summary),
        Err(e @ StageError::Cancelled(_)) => {
            (WorkerStatus::Cancelled, e.to_string(), Map::new(), None)
        }
        Err(e) => (WorkerStatus::Failed, e.to_string(), Map::new(), None),
    };
    let result = WorkerResult {
        status,
        message,
        signal,
        stats,
        summary,
        started_ns,
        seconds,
    };
    if status != WorkerStatus::Done {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "stage `{}` {}: {}",
            spec.stage,
            if status == WorkerStatus::Failed {
                "failed"
            } else {
                "stopped"
            },
            result.message
        );
    }
    // Written before the stage is marked ended: the signal watcher exits the process then.
    let result_file = match slice {
        Some(slice) => jobs.task_result_file(slice.task),
        None => jobs.result_file(),
    };
    JobDir::write_json(&result_file, &result)?;
    crate::interrupt::stage_ended(&spec.stage);
    Ok(match status {
        WorkerStatus::Done => 0,
        WorkerStatus::Cancelled => 3,
        WorkerStatus::Failed => 1,
    })
}
