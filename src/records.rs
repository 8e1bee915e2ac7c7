//! Typed engine records: what the store keeps per stage and per run, and why a stage is stale.
//!
//! The records are stored as JSON with the same field names they always had, so stores written by
//! earlier releases read unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the store remembers of a pipeline stage after it was committed or found cached: the
/// fingerprint it pointed at and what that fingerprint was made of (to explain later changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStatusRecord {
    /// The artifact's fingerprint.
    pub fingerprint: String,
    /// Stage kind name.
    pub kind: String,
    /// Kind version at the time.
    pub version: u32,
    /// Canonical params (references, not digests).
    pub params: Value,
    /// Input key → content digest.
    pub inputs: BTreeMap<String, String>,
    /// When it was recorded (ns since the epoch).
    pub recorded_ns: u64,
}

/// What the store remembers of a committed artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Stage kind name.
    pub kind: String,
    /// The stage that computed it.
    pub stage: String,
    /// The pipeline that stage belongs to.
    pub pipeline: String,
    /// When it was committed (ns since the epoch).
    pub committed_ns: u64,
}

/// How a run ended (`running` while it goes on, or if it died).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Still going, or killed before it could say.
    Running,
    /// Every selected stage finished.
    Ok,
    /// A stage failed.
    Failed,
}

/// One `splade run` in the store's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline file as given.
    pub file: String,
    /// The command line.
    pub args: Vec<String>,
    /// Start time (ns since the epoch); also the record's key.
    pub started_ns: u64,
    /// How it ended.
    pub result: RunResult,
    /// One entry per stage, in the order they ended.
    #[serde(default)]
    pub stages: Vec<RunStageRecord>,
    /// End time, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ns: Option<u64>,
    /// Stages executing right now (kept current while the run goes on, for readers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<RunningStage>,
}

/// A stage a run is executing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningStage {
    /// Stage name.
    pub stage: String,
    /// Its fingerprint (its staging directory's name).
    pub fingerprint: String,
    /// When it started (ns since the epoch).
    pub started_ns: u64,
}

/// How one stage went in a recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStageRecord {
    /// Stage name.
    pub stage: String,
    /// `executed`, `resumed`, `cached`, `failed: ...` or `skipped: ...`.
    pub outcome: String,
    /// Seconds the stage ran (0 unless executed).
    pub seconds: f64,
    /// Its fingerprint, when it was resolved.
    pub fingerprint: Option<String>,
}

/// Why a stage has to run (or what makes it differ from what the pipeline last recorded).
#[derive(Debug, Clone, PartialEq)]
pub enum StaleReason {
    /// Nothing was ever recorded for this pipeline stage.
    NeverRun,
    /// The stage now names another kind.
    KindChanged {
        /// The recorded kind.
        from: String,
        /// The kind now.
        to: String,
    },
    /// The kind's version was bumped (same inputs now give another output).
    VersionChanged {
        /// The kind.
        kind: String,
        /// The recorded version.
        from: u32,
        /// The version now.
        to: u32,
    },
    /// A param (or the reference of an input) differs from the recorded one.
    ParamChanged {
        /// The param.
        key: String,
        /// Whether the param is an input reference.
        input: bool,
        /// The recorded value (`null` when it was not recorded).
        before: Value,
        /// The value now.
        after: Value,
    },
    /// An input's content differs.
    InputContentChanged {
        /// The input key.
        key: String,
        /// `(stage, output)` when the input is another stage's output; `None` for a user file.
        upstream: Option<(String, String)>,
    },
    /// Upstream stages have no artifact yet, so this stage's fingerprint is unknown.
    WaitsOnUpstream(Vec<String>),
    /// Same recorded params and inputs, but no artifact for the fingerprint (e.g. removed by gc).
    NoArtifact,
    /// The artifact's manifest cannot be trusted (unreadable, or edited since it was written).
    CorruptManifest(String),
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::NeverRun => write!(f, "never run"),
            StaleReason::KindChanged { from, to } => write!(f, "kind changed: {from} -> {to}"),
            StaleReason::VersionChanged { kind, from, to } => {
                write!(f, "kind `{kind}` version changed: {from} -> {to}")
            }
            StaleReason::ParamChanged {
                key,
                input,
                before,
                after,
            } => {
                let what = if *input { "input" } else { "param" };
                write!(f, "{what} `{key}` changed: {before} -> {after}")
            }
            StaleReason::InputContentChanged {
                key,
                upstream: Some((stage, output)),
            } => write!(
                f,
                "input `{key}` changed: output `{stage}.{output}` has new content"
            ),
            StaleReason::InputContentChanged {
                key,
                upstream: None,
            } => write!(f, "input `{key}` changed: file content differs"),
            StaleReason::WaitsOnUpstream(stages) => {
                let names: Vec<String> = stages.iter().map(|s| format!("`{s}`")).collect();
                write!(f, "waits on upstream {}", names.join(", "))
            }
            StaleReason::NoArtifact => write!(f, "no artifact for the current fingerprint"),
            StaleReason::CorruptManifest(problem) => {
                write!(
                    f,
                    "corrupt artifact: {problem}; `--force` the stage to recompute it"
                )
            }
        }
    }
}

/// Reasons joined the way `plan` prints them.
pub fn join_reasons(reasons: &[StaleReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_render_as_before() {
        let cases = [
            (StaleReason::NeverRun, "never run"),
            (
                StaleReason::ParamChanged {
                    key: "k".into(),
                    input: false,
                    before: json!([10]),
                    after: json!([10, 100]),
                },
                "param `k` changed: [10] -> [10,100]",
            ),
            (
                StaleReason::InputContentChanged {
                    key: "run".into(),
                    upstream: Some(("retrieve".into(), "run".into())),
                },
                "input `run` changed: output `retrieve.run` has new content",
            ),
            (
                StaleReason::WaitsOnUpstream(vec!["a".into(), "b".into()]),
                "waits on upstream `a`, `b`",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn run_records_read_what_earlier_releases_wrote() {
        let old = json!({"pipeline": "toy", "file": "p.toml", "args": ["splade"], "started_ns": 5,
                         "result": "running", "stages": []});
        let r: RunRecord = serde_json::from_value(old).unwrap();
        assert_eq!(r.result, RunResult::Running);
        assert_eq!(r.ended_ns, None);
        let status = json!({"fingerprint": "ab", "kind": "ingest", "version": 1, "params": {},
                            "inputs": {"docs": "cd"}, "recorded_ns": 7});
        let s: StageStatusRecord = serde_json::from_value(status.clone()).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), status);
    }
}
