//! Where stages run: in this process (`local`), or as Slurm jobs the driver submits, waits for
//! and commits (`slurm`). The executor is not part of any fingerprint: the same stage gives the
//! same bytes wherever it runs.
//!
//! `[executor]` in the pipeline sets the kind and the Slurm defaults; `[stage.NAME.slurm]`
//! overrides them per stage (`gres = "gpu:4"`, `time = "48:00:00"`).

pub mod slurm;
pub mod worker;

use serde_json::{Map, Value};

/// Which executor runs the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// Every stage in this process.
    #[default]
    Local,
    /// Each stage as a Slurm job.
    Slurm,
}

/// The `[executor]` table, checked.
#[derive(Debug, Clone, Default)]
pub struct ExecutorConfig {
    /// Local or Slurm.
    pub kind: ExecutorKind,
    /// Slurm settings every stage starts from (`[stage.NAME.slurm]` overrides them).
    pub slurm: SlurmOptions,
    /// Seconds between two looks at the queue.
    pub poll_seconds: f64,
    /// How many times a job stopped by SIGUSR1 (time limit or preemption warning) is resubmitted.
    pub max_requeues: u32,
}

/// What goes on a stage's `sbatch` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--time` (`HH:MM:SS`, `D-HH:MM:SS`).
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus: Option<i64>,
    /// `--mem` (`16G`).
    pub mem: Option<String>,
    /// `--gres` (`gpu:4`).
    pub gres: Option<String>,
    /// Seconds before the time limit Slurm sends SIGUSR1 to stages that checkpoint (`train`).
    pub signal_seconds: Option<i64>,
    /// Anything else, passed to `sbatch` as given (`["--qos=high", "--constraint=a100"]`).
    pub extra: Vec<String>,
    /// For stages with independent shards (`encode`, `retrieve`): a job array of this many
    /// tasks, each writing its share of the shards (per stage only).
    pub array_tasks: Option<i64>,
}

/// Keys `[executor]` accepts.
pub const EXECUTOR_KEYS: &[&str] = &[
    "kind",
    "poll_seconds",
    "max_requeues",
    "partition",
    "account",
    "time",
    "cpus",
    "mem",
    "gres",
    "signal_seconds",
    "extra",
];

/// Keys `[stage.NAME.slurm]` accepts.
pub const STAGE_SLURM_KEYS: &[&str] = &[
    "array_tasks",
    "partition",
    "account",
    "time",
    "cpus",
    "mem",
    "gres",
    "signal_seconds",
    "extra",
];

/// A bad executor setting: the key and why.
#[derive(Debug, Clone)]
pub struct ExecutorError {
    /// The key within its table.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ExecutorError {
    ExecutorError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// `value` as an integer in `lo..=hi`, or an error naming the range.
fn int_in(key: &str, value: &Value, lo: i64, hi: i64, what: &str) -> Result<i64, ExecutorError> {
    value
        .as_i64()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| bad(key, format!("expected {what} in {lo}..={hi}")))
}

impl ExecutorConfig {
    /// Reads the `[executor]` table (empty: local).
    pub fn from_table(table: &Map<String, Value>) -> Result<Self, ExecutorError> {
        let kind = match table.get("kind").map(|v| v.as_str()) {
            None | Some(Some("local")) => ExecutorKind::Local,
            Some(Some("slurm")) => ExecutorKind::Slurm,
            _ => return Err(bad("kind", "expected \"local\" or \"slurm\"")),
        };
        let poll_seconds = match table.get("poll_seconds") {
            None => 5.0,
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                .ok_or_else(|| bad("poll_seconds", "expected seconds in (0, 3600]"))?,
        };
        let max_requeues = match table.get("max_requeues") {
            None => 20,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| bad("max_requeues", "expected an integer in 0..=10000"))?,
        };
        let mut slurm = SlurmOptions::default();
        slurm.apply(table, EXECUTOR_KEYS)?;
        Ok(ExecutorConfig {
            kind,
            slurm,
            poll_seconds,
            max_requeues,
        })
    }
}

impl SlurmOptions {
    /// Overrides these options with the Slurm keys of `table`; any key outside `allowed` is an
    /// error.
    pub fn apply(
        &mut self,
        table: &Map<String, Value>,
        allowed: &[&str],
    ) -> Result<(), ExecutorError> {
        for (key, value) in table {
            if !allowed.contains(&key.as_str()) {
                return Err(bad(
                    key,
                    format!(
                        "unknown key (valid: {}){}",
                        allowed.join(", "),
                        splade_stages::params::did_you_mean(key, allowed.iter().copied())
                    ),
                ));
            }
            let text = || {
                value
                    .as_str()
                    .filter(|s| !s.trim().is_empty() && !s.contains('\n'))
                    .map(str::to_string)
                    .ok_or_else(|| bad(key, "expected a non-empty one-line string"))
            };
            match key.as_str() {
                "partition" => self.partition = Some(text()?),
                "account" => self.account = Some(text()?),
                "time" => self.time = Some(text()?),
                "mem" => self.mem = Some(text()?),
                "gres" => self.gres = Some(text()?),
                "cpus" => self.cpus = Some(int_in(key, value, 1, 4096, "an integer")?),
                "array_tasks" => {
                    self.array_tasks = Some(int_in(key, value, 1, 10_000, "an integer")?)
                }
                "signal_seconds" => {
                    self.signal_seconds = Some(int_in(key, value, 0, 65535, "seconds")?)
                }
                "extra" => {
                    self.extra = value
                        .as_array()
                        .filter(|a| {
                            a.iter()
                                .all(|x| x.as_str().is_some_and(|s| !s.contains('\n')))
                        })
                        .ok_or_else(|| bad(key, "expected an array of sbatch arguments"))?
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `sbatch` arguments these options give (without the job's own name and output).
    pub fn sbatch_args(&self, checkpoints: bool) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--partition", &self.partition),
            ("--account", &self.account),
            ("--time", &self.time),
            ("--mem", &self.mem),
            ("--gres", &self.gres),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag}={v}"));
            }
        }
        if let Some(c) = self.cpus {
            args.push(format!("--cpus-per-task={c}"));
        }
        if checkpoints {
            // The warning goes to the batch shell, which `exec`s the worker: the worker gets it.
            let seconds = self.signal_seconds.unwrap_or(300);
            args.push(format!("--signal=B:USR1@{seconds}"));
            args.push("--requeue".into());
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stage_overrides_win_and_checkpointing_stages_get_the_warning() {
        let table =
            json!({"kind": "slurm", "partition": "gpu", "time": "1:00:00", "poll_seconds": 0.5});
        let config = ExecutorConfig::from_table(table.as_object().unwrap()).unwrap();
        assert_eq!(config.kind, ExecutorKind::Slurm);
        let mut stage = config.slurm.clone();
        let over = json!({"gres": "gpu:4", "time": "48:00:00", "signal_seconds": 600});
        stage
            .apply(over.as_object().unwrap(), STAGE_SLURM_KEYS)
            .unwrap();
        assert_eq!(
            stage.sbatch_args(true),
            [
                "--partition=gpu",
                "--time=48:00:00",
                "--gres=gpu:4",
                "--signal=B:USR1@600",
                "--requeue"
            ]
        );
        let typo = json!({"partiton": "x"});
        let e = stage
            .apply(typo.as_object().unwrap(), STAGE_SLURM_KEYS)
            .unwrap_err();
        assert!(
            e.message.contains("did you mean `partition`"),
            "{}",
            e.message
        );
    }
}
