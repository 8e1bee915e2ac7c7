//! The driver's side of the Slurm executor: submit a stage as a job (`sbatch --parsable` of
//! `splade worker JOBDIR`), wait for it (`scontrol show job`), resubmit it after a checkpointed
//! SIGUSR1 (time limit or preemption warning), and report a failed job with its id, state and
//! the tail of its log. Job ids are recorded in the job directory, so a driver killed and rerun
//! re-attaches to a job still queued or running instead of submitting it again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::worker::{JobDir, JobSpec, WorkerResult, WorkerStatus};
use super::SlurmOptions;

/// The jobs submitted for one stage fingerprint, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Submitted {
    /// Slurm job ids of single jobs.
    pub jobs: Vec<u64>,
    /// Slurm job ids of job arrays.
    #[serde(default)]
    pub arrays: Vec<u64>,
}

/// A job of the stage still queued or running, found when the driver starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveJob {
    /// A single job (a whole stage, or the last step after an array).
    Single(u64),
    /// A job array writing the shards.
    Array(u64),
}

/// What `scontrol show job` says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    /// `JobState` (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, ...).
    pub state: String,
    /// `ExitCode` (`status:signal`).
    pub exit_code: String,
    /// `ArrayTaskId`, for a task of a job array.
    pub task: Option<usize>,
}

impl JobInfo {
    /// Queued, running or on its way to either: the job is not over.
    pub fn is_live(&self) -> bool {
        let state = self.state.split_whitespace().next().unwrap_or_default();
        matches!(
            state,
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "REQUEUED"
                | "REQUEUE_FED"
                | "REQUEUE_HOLD"
                | "RESIZING"
                | "SUSPENDED"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
        )
    }
}

/// One stage run through Slurm.
#[derive(Debug, Clone)]
pub struct SlurmStage {
    /// The stage's job directory.
    pub jobs: JobDir,
    /// The stage's name (the job is named `splade-<name>`).
    pub stage: String,
    /// Its `sbatch` options.
    pub options: SlurmOptions,
    /// Whether the stage stops at checkpoints (gets `--signal=B:USR1@..` and `--requeue`).
    pub checkpoints: bool,
    /// Time between two looks at the job.
    pub poll: Duration,
    /// Resubmissions allowed after checkpointed SIGUSR1 stops.
    pub max_requeues: u32,
    /// The `splade` binary the job runs (on a filesystem every node sees).
    pub exe: PathBuf,
    /// The job's working directory (the driver's, so relative paths resolve alike).
    pub cwd: PathBuf,
    /// For stages with independent shards: a job array of this many tasks writes the shards
    /// first, then one job adds what needs them all.
    pub array_tasks: Option<usize>,
}

impl SlurmStage {
    /// The newest job (or array) of this stage if Slurm still has it queued or running.
    pub fn live_job(&self) -> Result<Option<LiveJob>> {
        let Some(submitted) = JobDir::read_json::<Submitted>(&self.jobs.submitted_file())? else {
            return Ok(None);
        };
        if let Some(&id) = submitted.jobs.last() {
            if job_states(id)?.iter().any(JobInfo::is_live) {
                return Ok(Some(LiveJob::Single(id)));
            }
        }
        if let Some(&id) = submitted.arrays.last() {
            if job_states(id)?.iter().any(JobInfo::is_live) {
                return Ok(Some(LiveJob::Array(id)));
            }
        }
        Ok(None)
    }

    /// Runs the stage to its end: a job array writing the shards first when asked for, then
    /// one job (or several, after checkpointed preemption warnings). Attaches to `live`
    /// instead of submitting it again. Ok only when the worker finished.
    pub fn drive(&self, spec: &JobSpec, live: Option<LiveJob>) -> Result<WorkerResult> {
        let single = match live {
            Some(LiveJob::Single(id)) => Some(id),
            _ => None,
        };
        if let (Some(tasks), None) = (self.array_tasks, single) {
            let array = match live {
                Some(LiveJob::Array(id)) => {
                    tracing::info!(stage = %self.stage, job = id, "re-attaching to a running job array");
                    id
                }
                _ => self.submit_array(spec, tasks)?,
            };
            self.wait_array(array, tasks)?;
        }
        let mut job = match single {
            Some(id) => {
                tracing::info!(stage = %self.stage, job = id, "re-attaching to a running job");
                id
            }
            None => self.submit(spec)?,
        };
        let mut requeues = 0;
        loop {
            let info = self.wait(job)?;
            let result: Option<WorkerResult> = JobDir::read_json(&self.jobs.result_file())?;
            match result {
                Some(r) if r.status == WorkerStatus::Done => return Ok(r),
                Some(r)
                    if r.status == WorkerStatus::Cancelled
                        && r.signal.as_deref() == Some("SIGUSR1")
                        && requeues < self.max_requeues =>
                {
                    requeues += 1;
                    tracing::info!(stage = %self.stage, job, requeues, "checkpointed before the time limit; resubmitting");
                    job = self.submit(spec)?;
                }
                Some(r) => bail!(
                    "Slurm job {job} ({}, exit {}): {}\n{}",
                    info.state,
                    info.exit_code,
                    r.message,
                    tail(&self.log_file(job))
                ),
                None => bail!(
                    "Slurm job {job} ended {} (exit {}) before the stage finished\n{}",
                    info.state,
                    info.exit_code,
                    tail(&self.log_file(job))
                ),
            }
        }
    }

    /// Submits a job array of `tasks` tasks, each writing its share of the shards.
    fn submit_array(&self, spec: &JobSpec, tasks: usize) -> Result<u64> {
        std::fs::create_dir_all(&self.jobs.0)
            .with_context(|| format!("creating {}", self.jobs.0.display()))?;
        let mut array_spec = spec.clone();
        array_spec.array_tasks = Some(tasks);
        JobDir::write_json(&self.jobs.array_spec_file(), &array_spec)?;
        // The staging directory now holds shards a rerun must keep: record that.
        if !self.jobs.has_resume_state() {
            JobDir::write_json(
                &self.jobs.resume_file(),
                &serde_json::json!({"array_tasks": tasks}),
            )?;
        }
        for t in 0..tasks {
            let _ = std::fs::remove_file(self.jobs.task_result_file(t));
        }
        let id = self.sbatch(
            &[
                format!("--array=0-{}", tasks - 1),
                format!("--output={}", self.jobs.0.join("slurm-%A_%a.out").display()),
            ],
            &self.jobs.array_spec_file(),
            false,
        )?;
        let mut submitted: Submitted =
            JobDir::read_json(&self.jobs.submitted_file())?.unwrap_or_default();
        submitted.arrays.push(id);
        JobDir::write_json(&self.jobs.submitted_file(), &submitted)?;
        tracing::info!(stage = %self.stage, job = id, tasks, "submitted a job array");
        Ok(id)
    }

    /// Waits for every task of array `id`; an error naming each task that did not finish.
    fn wait_array(&self, id: u64, tasks: usize) -> Result<()> {
        let states = loop {
            let states = job_states(id)?;
            if states.iter().any(JobInfo::is_live) {
                std::thread::sleep(self.poll);
            } else {
                break states;
            }
        };
        let mut failures = Vec::new();
        for t in 0..tasks {
            let result: Option<WorkerResult> = JobDir::read_json(&self.jobs.task_result_file(t))?;
            if result
                .as_ref()
                .is_some_and(|r| r.status == WorkerStatus::Done)
            {
                continue;
            }
            let state = states
                .iter()
                .find(|s| s.task == Some(t))
                .map(|s| format!("{}, exit {}", s.state, s.exit_code))
                .unwrap_or_else(|| "state unknown".into());
            let why = result
                .map(|r| r.message)
                .unwrap_or_else(|| "no result".into());
            let log = self.jobs.0.join(format!("slurm-{id}_{t}.out"));
            failures.push(format!("task {id}_{t} ({state}): {why}\n{}", tail(&log)));
        }
        if !failures.is_empty() {
            bail!(
                "{} of {tasks} tasks of Slurm job array {id} did not finish (their finished \
                 shards are kept):\n{}",
                failures.len(),
                failures.join("\n")
            );
        }
        Ok(())
    }

    /// Writes `job.json` and submits the worker; records and returns the job id.
    fn submit(&self, spec: &JobSpec) -> Result<u64> {
        std::fs::create_dir_all(&self.jobs.0)
            .with_context(|| format!("creating {}", self.jobs.0.display()))?;
        JobDir::write_json(&self.jobs.spec_file(), spec)?;
        let _ = std::fs::remove_file(self.jobs.result_file());
        let output = format!("--output={}", self.jobs.0.join("slurm-%j.out").display());
        let id = self.sbatch(&[output], &self.jobs.spec_file(), self.checkpoints)?;
        let mut submitted: Submitted =
            JobDir::read_json(&self.jobs.submitted_file())?.unwrap_or_default();
        submitted.jobs.push(id);
        JobDir::write_json(&self.jobs.submitted_file(), &submitted)?;
        tracing::info!(stage = %self.stage, job = id, "submitted");
        Ok(id)
    }

    /// `sbatch --parsable` of `splade worker JOBDIR --spec SPEC` with the stage's options;
    /// the job id.
    fn sbatch(&self, args: &[String], spec: &Path, checkpoints: bool) -> Result<u64> {
        let output = Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--job-name=splade-{}", self.stage))
            .arg(format!("--chdir={}", self.cwd.display()))
            .args(args)
            .args(self.options.sbatch_args(checkpoints))
            .arg("--wrap")
            .arg(format!(
                "exec {} worker {} --spec {}",
                shell_quote(&self.exe.display().to_string()),
                shell_quote(&self.jobs.0.display().to_string()),
                shell_quote(&spec.display().to_string())
            ))
            .output()
            .context("running sbatch (is Slurm installed and on PATH?)")?;
        if !output.status.success() {
            bail!(
                "sbatch refused the job of stage `{}`: {}",
                self.stage,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .split(';')
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("sbatch printed `{}`, not a job id", text.trim()))
    }

    /// Polls until job `id` is over; its last known state (or `UNKNOWN` once Slurm forgot it).
    fn wait(&self, id: u64) -> Result<JobInfo> {
        loop {
            let states = job_states(id)?;
            match states.into_iter().next() {
                Some(info) if info.is_live() => std::thread::sleep(self.poll),
                Some(info) => return Ok(info),
                None => {
                    return Ok(JobInfo {
                        state: "UNKNOWN (no longer known to Slurm)".into(),
                        exit_code: "?".into(),
                        task: None,
                    })
                }
            }
        }
    }

    /// The path of job `id`'s log.
    pub fn log_file(&self, id: u64) -> PathBuf {
        self.jobs.0.join(format!("slurm-{id}.out"))
    }
}

/// The last lines of a job's log, for error messages.
fn tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            format!("last lines of {}:\n  {}", path.display(), tail.join("\n  "))
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// `scontrol show job -o ID`: one entry per job (per task for an array); empty when Slurm no
/// longer knows the job.
pub fn job_states(id: u64) -> Result<Vec<JobInfo>> {
    let output = Command::new("scontrol")
        .args(["show", "job", "-o", &id.to_string()])
        .output()
        .context("running scontrol (is Slurm installed and on PATH?)")?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        if err.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        bail!("scontrol show job {id}: {}", err.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name))
                    .map(str::to_string)
            };
            JobInfo {
                state: field("JobState=").unwrap_or_else(|| "?".into()),
                exit_code: field("ExitCode=").unwrap_or_else(|| "?".into()),
                task: field("ArrayTaskId=").and_then(|t| t.parse().ok()),
            }
        })
        .collect())
}

/// `s` single-quoted for sh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `path` can be seen by other nodes: refuses the usual node-local places.
pub fn looks_node_local(path: &Path) -> bool {
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    ["/tmp", "/var/tmp", "/dev/shm", "/run"]
        .iter()
        .any(|local| p.starts_with(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_states_keep_the_driver_waiting() {
        let info = |s: &str| JobInfo {
            state: s.into(),
            exit_code: "0:0".into(),
            task: None,
        };
        assert!(info("PENDING").is_live());
        assert!(info("RUNNING").is_live());
        assert!(!info("COMPLETED").is_live());
        assert!(!info("CANCELLED").is_live());
        assert!(!info("TIMEOUT").is_live());
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
