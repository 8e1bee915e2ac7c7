//! The executor: resolves inputs, fingerprints stages, finds cached artifacts, runs what is
//! stale (resuming interrupted work), commits artifacts and records everything in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use splade_stages::contract::ResumeError;
use splade_stages::params::ParamType;
use splade_stages::{
    Registry, ResolvedInput, ResumeStore, Stage, StageContext, StageError, StageOutcome,
};

use crate::artifact::{ArtifactRoot, Manifest};
use crate::dag::Dag;
use crate::executor::slurm::SlurmStage;
use crate::executor::worker::{JobDir, JobSpec};
use crate::executor::ExecutorKind;
use crate::fingerprint::{combine, stage_fingerprint, walk_files, Fingerprint};
use crate::pipeline::{InputDecl, Pipeline, StageDecl};
use crate::records::{
    join_reasons, ArtifactRecord, RunRecord, RunResult, RunStageRecord, RunningStage,
    StageStatusRecord, StaleReason,
};
use crate::store::{now_ns, Store};

/// A stage's inputs resolved to paths and content digests, and the fingerprint they give.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The stage's fingerprint.
    pub fp: Fingerprint,
    /// Input key → content digest.
    pub digests: BTreeMap<String, String>,
    /// Input key → where to read it.
    pub inputs: BTreeMap<String, ResolvedInput>,
}

/// Where a stage stands before a run.
#[derive(Debug, Clone)]
pub enum StageState {
    /// Its artifact exists. `note` says when it is an earlier artifact restored by a swap-back.
    Cached {
        /// Its fingerprint.
        fp: Fingerprint,
        /// The artifact's manifest.
        manifest: Box<Manifest>,
        /// Set when the artifact is an earlier one found again.
        note: Option<String>,
    },
    /// Interrupted work with resume state exists for this fingerprint.
    Partial {
        /// Its fingerprint.
        fp: Fingerprint,
        /// The saved resume state.
        state: Value,
        /// Why it differs from what was last recorded.
        reasons: Vec<StaleReason>,
    },
    /// Must run; `fp` is unknown while an upstream stage is not cached.
    Stale {
        /// Its fingerprint, when the inputs are known.
        fp: Option<Fingerprint>,
        /// Why it must run.
        reasons: Vec<StaleReason>,
    },
}

impl StageState {
    /// `cached`, `partial`, `corrupt` (stale because its artifact is damaged) or `stale`.
    pub fn label(&self) -> &'static str {
        match self {
            StageState::Cached { .. } => "cached",
            StageState::Partial { .. } => "partial",
            StageState::Stale { reasons, .. }
                if reasons
                    .iter()
                    .any(|r| matches!(r, StaleReason::CorruptManifest(_))) =>
            {
                "corrupt"
            }
            StageState::Stale { .. } => "stale",
        }
    }

    /// The fingerprint, when known.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        match self {
            StageState::Cached { fp, .. } | StageState::Partial { fp, .. } => Some(fp),
            StageState::Stale { fp, .. } => fp.as_ref(),
        }
    }
}

/// How one stage went in a run.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It ran (continuing interrupted work when `resumed`).
    Executed {
        /// Seconds it ran.
        seconds: f64,
        /// Whether it continued from resume state.
        resumed: bool,
    },
    /// Its artifact existed.
    Cached,
    /// It failed; the error.
    Failed(String),
    /// It stopped at a step or shard boundary because the run was asked to (Ctrl-C, SIGTERM,
    /// preemption), after saving what the rerun resumes from; where it stopped.
    Stopped(String),
    /// It did not run; why.
    Skipped(String),
}

impl Outcome {
    /// `executed`, `resumed`, `cached`, `failed` or `skipped`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Executed { resumed: true, .. } => "resumed",
            Outcome::Executed { .. } => "executed",
            Outcome::Cached => "cached",
            Outcome::Failed(_) => "failed",
            Outcome::Stopped(_) => "stopped",
            Outcome::Skipped(_) => "skipped",
        }
    }

    /// Seconds it ran (0 unless executed).
    pub fn seconds(&self) -> f64 {
        match self {
            Outcome::Executed { seconds, .. } => *seconds,
            _ => 0.0,
        }
    }

    /// The error or the reason it was skipped.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Failed(e) | Outcome::Stopped(e) | Outcome::Skipped(e) => Some(e),
            _ => None,
        }
    }
}

/// One line of a run's report.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Stage kind.
    pub kind: String,
    /// Its fingerprint, once resolved.
    pub fp: Option<Fingerprint>,
    /// How it went.
    pub outcome: Outcome,
    /// The human summary its artifact carries.
    pub summary: Option<String>,
    /// The artifact directory.
    pub artifact: Option<PathBuf>,
}

impl StageReport {
    /// The report as one JSON object (`splade run --json`): stage, kind, state, reason,
    /// fingerprint, seconds.
    pub fn to_json(&self) -> Value {
        json!({
            "stage": self.name,
            "kind": self.kind,
            "state": self.outcome.label(),
            "reason": self.outcome.detail(),
            "fingerprint": self.fp.as_ref().map(|f| f.0.clone()),
            "seconds": self.outcome.seconds(),
        })
    }

    fn record(&self) -> RunStageRecord {
        let outcome = match self.outcome.detail() {
            Some(d) => format!("{}: {d}", self.outcome.label()),
            None => self.outcome.label().to_string(),
        };
        RunStageRecord {
            stage: self.name.clone(),
            outcome,
            seconds: self.outcome.seconds(),
            fingerprint: self.fp.as_ref().map(|f| f.0.clone()),
        }
    }
}

/// One stage of `splade plan`: its state and why.
#[derive(Debug, Clone)]
pub struct PlanEntry {
    /// Stage name.
    pub name: String,
    /// Stage kind.
    pub kind: String,
    /// Where it stands.
    pub state: StageState,
}

impl PlanEntry {
    /// What `plan` prints after the fingerprint: the artifact (or the note on a found-again
    /// one), the resume state, or the reasons it is stale.
    pub fn detail(&self, root: &ArtifactRoot) -> String {
        match &self.state {
            StageState::Cached { fp, note, .. } => note
                .clone()
                .unwrap_or_else(|| root.dir(&self.kind, fp).display().to_string()),
            StageState::Partial { state, reasons, .. } => format!(
                "interrupted, will resume from {state}; {}",
                join_reasons(reasons)
            ),
            StageState::Stale { reasons, .. } => join_reasons(reasons),
        }
    }

    /// The entry as one JSON object (`splade plan --json`): stage, kind, state, reason,
    /// fingerprint, seconds (of the cached artifact's computation; null otherwise).
    pub fn to_json(&self, root: &ArtifactRoot) -> Value {
        let seconds = match &self.state {
            StageState::Cached { manifest, .. } => Some(manifest.seconds),
            _ => None,
        };
        json!({
            "stage": self.name,
            "kind": self.kind,
            "state": self.state.label(),
            "reason": self.detail(root),
            "fingerprint": self.state.fingerprint().map(|f| f.0.clone()),
            "seconds": seconds,
        })
    }
}

/// Knobs of `splade run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only this stage and its ancestors.
    pub until: Option<String>,
    /// Recompute these stages even when cached.
    pub force: Vec<String>,
    /// Independent stages run at once.
    pub jobs: usize,
    /// Draw progress bars.
    pub show_progress: bool,
}

/// A pipeline bound to an artifact root and an open store.
pub struct Engine {
    /// The stage kinds.
    pub registry: Registry,
    /// Where artifacts live.
    pub root: ArtifactRoot,
    /// The open store.
    pub store: Arc<Store>,
    /// The validated pipeline.
    pub pipeline: Pipeline,
    /// Its stage graph.
    pub dag: Dag,
    /// The record of the run in progress, kept current in the store for readers.
    history: Mutex<Option<RunRecord>>,
}

struct StoreResume {
    store: Arc<Store>,
    fp: String,
}

impl ResumeStore for StoreResume {
    fn load(&self) -> Option<Value> {
        self.store.resume_state(&self.fp).ok().flatten()
    }
    fn save(&self, state: &Value) -> std::result::Result<(), ResumeError> {
        Ok(self.store.save_resume_state(&self.fp, state)?)
    }
}

/// Replaces the input param at `key` (`docs`, `queries.train`, `evaluations.3`) by `v`. An array
/// index selects a record of an [`ParamType::ArtifactRecords`] param: only its reference field
/// (the one holding a `<stage>.<output>` string) is replaced, its labels stay hashed.
///
/// [`ParamType::ArtifactRecords`]: splade_stages::params::ParamType::ArtifactRecords
fn set_at(params: &mut Value, key: &str, reference_field: Option<&str>, v: Value) {
    let mut node = params;
    for part in key.split('.') {
        node = match node {
            Value::Array(items) => {
                match part.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(item) => item,
                    None => return,
                }
            }
            other => &mut other[part],
        };
    }
    match (node, reference_field) {
        (Value::Object(record), Some(field)) => {
            record.insert(field.to_string(), v);
        }
        (node, _) => *node = v,
    }
}

/// The reference field of the records param an input key (`evaluations.3`) belongs to, if any.
fn records_field(kind: &dyn Stage, key: &str) -> Option<&'static str> {
    let param = key.split('.').next()?;
    kind.params().iter().find_map(|spec| match spec.ty {
        ParamType::ArtifactRecords(field) if spec.name == param => Some(field),
        _ => None,
    })
}

impl Engine {
    /// Binds a validated pipeline to `root` and `store`.
    pub fn new(
        registry: Registry,
        root: ArtifactRoot,
        store: Arc<Store>,
        pipeline: Pipeline,
    ) -> Result<Self> {
        let dag = Dag::build(&pipeline)?;
        Ok(Engine {
            registry,
            root,
            store,
            pipeline,
            dag,
            history: Mutex::new(None),
        })
    }

    fn decl(&self, name: &str) -> &StageDecl {
        self.pipeline.stage(name).expect("DAG nodes are stages")
    }

    fn file_digest(&self, path: &Path) -> Result<String> {
        if path.is_dir() {
            let mut entries = Vec::new();
            for rel in walk_files(path).with_context(|| format!("listing {}", path.display()))? {
                let h = self
                    .store
                    .file_hash(&path.join(&rel))
                    .with_context(|| format!("hashing {}", path.join(&rel).display()))?;
                entries.push((rel, h));
            }
            Ok(combine(&entries))
        } else {
            self.store
                .file_hash(path)
                .with_context(|| format!("hashing input file {}", path.display()))
        }
    }

    /// Resolves a stage's inputs given the manifests of its (cached or finished) upstream stages;
    /// `None` when an upstream stage has no artifact yet.
    pub fn resolve(
        &self,
        stage: &StageDecl,
        known: &HashMap<String, (PathBuf, Manifest)>,
    ) -> Result<Option<Resolved>> {
        let kind = self
            .registry
            .get(&stage.kind)
            .ok_or_else(|| anyhow!("unknown kind {}", stage.kind))?;
        let mut params = stage.params.clone();
        let mut digests = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        for input in &stage.inputs {
            match input {
                InputDecl::File { key, path, origin } => {
                    if !path.exists() {
                        bail!(
                            "{origin}: `stage.{}.{key}`: file `{}` not found",
                            stage.name,
                            path.display()
                        );
                    }
                    let d = self.file_digest(path)?;
                    set_at(&mut params, key, None, json!(format!("blake3:{d}")));
                    digests.insert(key.clone(), d);
                    inputs.insert(key.clone(), ResolvedInput::File(path.clone()));
                }
                InputDecl::Artifact {
                    key,
                    stage: up,
                    output,
                    origin,
                } => {
                    let Some((dir, manifest)) = known.get(up) else {
                        return Ok(None);
                    };
                    let entry = manifest.outputs.get(output).ok_or_else(|| {
                        anyhow!(
                            "{origin}: artifact {} of stage `{up}` has no output `{output}`",
                            dir.display()
                        )
                    })?;
                    let field = records_field(kind, key);
                    set_at(
                        &mut params,
                        key,
                        field,
                        json!(format!("blake3:{}", entry.digest)),
                    );
                    digests.insert(key.clone(), entry.digest.clone());
                    inputs.insert(
                        key.clone(),
                        ResolvedInput::Artifact {
                            reference: format!("{up}.{output}"),
                            artifact: dir.clone(),
                            path: dir.join(&entry.path),
                        },
                    );
                }
            }
        }
        // Params left at their defaults are not hashed: a new release adding a param whose
        // default keeps the old behaviour does not invalidate anyone's cache.
        if let Value::Object(map) = &mut params {
            for spec in kind.params() {
                if spec.default_value().as_ref() == map.get(spec.name) {
                    map.remove(spec.name);
                }
            }
        }
        let fp = stage_fingerprint(&stage.kind, kind.version(), &params);
        Ok(Some(Resolved {
            fp,
            digests,
            inputs,
        }))
    }

    /// The kind a validated stage declares.
    fn kind_of(&self, stage: &StageDecl) -> Result<&dyn Stage> {
        self.registry
            .get(&stage.kind)
            .ok_or_else(|| anyhow!("unknown kind {}", stage.kind))
    }

    /// Why `stage` (now at `resolved`) differs from what this pipeline last recorded for it.
    fn reasons(&self, stage: &StageDecl, resolved: Option<&Resolved>) -> Result<Vec<StaleReason>> {
        let Some(last) = self.store.stage_status(&self.pipeline.name, &stage.name)? else {
            return Ok(vec![StaleReason::NeverRun]);
        };
        let mut reasons = Vec::new();
        let version = self.kind_of(stage).map(|k| k.version()).unwrap_or(0);
        if last.kind != stage.kind {
            reasons.push(StaleReason::KindChanged {
                from: last.kind.clone(),
                to: stage.kind.clone(),
            });
        } else if last.version != version {
            reasons.push(StaleReason::VersionChanged {
                kind: stage.kind.clone(),
                from: last.version,
                to: version,
            });
        }
        reasons.extend(self.param_changes(stage, &last));
        match resolved {
            Some(r) => reasons.extend(self.input_changes(stage, r, &last)),
            None => {
                let ups: Vec<String> = stage
                    .inputs
                    .iter()
                    .filter_map(|i| match i {
                        InputDecl::Artifact { stage, .. } => Some(stage.clone()),
                        _ => None,
                    })
                    .collect();
                reasons.push(StaleReason::WaitsOnUpstream(ups));
            }
        }
        if reasons.is_empty() {
            reasons.push(StaleReason::NoArtifact);
        }
        Ok(reasons)
    }

    /// Params (and input references) that differ from the recorded ones.
    fn param_changes(&self, stage: &StageDecl, last: &StageStatusRecord) -> Vec<StaleReason> {
        let input_keys: HashSet<&str> = stage
            .inputs
            .iter()
            .map(|i| i.key().split('.').next().unwrap_or(""))
            .collect();
        let Some(old) = last.params.as_object() else {
            return Vec::new();
        };
        stage
            .params
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let before = old.get(k).cloned().unwrap_or(Value::Null);
                (&before != v).then(|| StaleReason::ParamChanged {
                    key: k.clone(),
                    input: input_keys.contains(k.as_str()),
                    before,
                    after: v.clone(),
                })
            })
            .collect()
    }

    /// Inputs whose content digest differs from the recorded one.
    fn input_changes(
        &self,
        stage: &StageDecl,
        r: &Resolved,
        last: &StageStatusRecord,
    ) -> Vec<StaleReason> {
        r.digests
            .iter()
            .filter(|(k, d)| last.inputs.get(*k) != Some(*d))
            .map(|(k, _)| {
                let upstream = stage.inputs.iter().find_map(|i| match i {
                    InputDecl::Artifact {
                        key, stage, output, ..
                    } if key == k => Some((stage.clone(), output.clone())),
                    _ => None,
                });
                StaleReason::InputContentChanged {
                    key: k.clone(),
                    upstream,
                }
            })
            .collect()
    }

    /// The state of every stage (upstream first), without running anything; cached artifacts
    /// are checked by file sizes.
    pub fn plan(&self) -> Result<Vec<PlanEntry>> {
        self.plan_checked(false)
    }

    /// [`Engine::plan`], rehashing every file of each cached artifact when `rehash`.
    pub fn plan_checked(&self, rehash: bool) -> Result<Vec<PlanEntry>> {
        let mut known: HashMap<String, (PathBuf, Manifest)> = HashMap::new();
        let mut out = Vec::new();
        for name in self.dag.order() {
            let stage = self.decl(name);
            let resolved = self.resolve(stage, &known)?;
            let state = match &resolved {
                None => StageState::Stale {
                    fp: None,
                    reasons: self.reasons(stage, None)?,
                },
                Some(r) => self.state_of(stage, r, rehash)?,
            };
            if let StageState::Cached { fp, manifest, .. } = &state {
                known.insert(
                    name.clone(),
                    (self.root.dir(&stage.kind, fp), (**manifest).clone()),
                );
            }
            out.push(PlanEntry {
                name: name.clone(),
                kind: stage.kind.clone(),
                state,
            });
        }
        Ok(out)
    }

    fn state_of(&self, stage: &StageDecl, r: &Resolved, rehash: bool) -> Result<StageState> {
        let found = match self.root.find(&stage.kind, &r.fp) {
            Ok(Some(m)) if rehash => match self
                .root
                .verify(&self.root.dir(&stage.kind, &r.fp), &m)
                .first()
            {
                Some(c) => {
                    return Ok(StageState::Stale {
                        fp: Some(r.fp.clone()),
                        reasons: vec![StaleReason::CorruptManifest(format!(
                            "{}: {}",
                            c.file.display(),
                            c.problem
                        ))],
                    })
                }
                None => Some(m),
            },
            Ok(found) => found,
            Err(
                e @ (crate::artifact::ArtifactError::Manifest { .. }
                | crate::artifact::ArtifactError::Damaged { .. }),
            ) => {
                return Ok(StageState::Stale {
                    fp: Some(r.fp.clone()),
                    reasons: vec![StaleReason::CorruptManifest(e.to_string())],
                })
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(manifest) = found {
            let last = self.store.stage_status(&self.pipeline.name, &stage.name)?;
            let note = match last {
                Some(l) if l.fingerprint != r.fp.0 => {
                    Some("earlier artifact found again; nothing to recompute".to_string())
                }
                _ => None,
            };
            return Ok(StageState::Cached {
                fp: r.fp.clone(),
                manifest: Box::new(manifest),
                note,
            });
        }
        let reasons = self.reasons(stage, Some(r))?;
        if let Some(state) = self.store.resume_state(&r.fp.0)? {
            if self.root.staging(&r.fp).is_dir() {
                return Ok(StageState::Partial {
                    fp: r.fp.clone(),
                    state,
                    reasons,
                });
            }
        }
        Ok(StageState::Stale {
            fp: Some(r.fp.clone()),
            reasons,
        })
    }

    /// The committed artifact of `stage` for the pipeline as it is now, or an error saying why
    /// there is none.
    pub fn artifact_of(&self, stage: &str) -> Result<(PathBuf, Manifest)> {
        if self.pipeline.stage(stage).is_none() {
            bail!("{}", self.pipeline.unknown_stage(stage));
        }
        let entry = self
            .plan()?
            .into_iter()
            .find(|e| e.name == stage)
            .ok_or_else(|| anyhow!("stage `{stage}` is not in the plan"))?;
        match entry.state {
            StageState::Cached { fp, manifest, .. } => {
                Ok((self.root.dir(&entry.kind, &fp), *manifest))
            }
            StageState::Partial { reasons, .. } | StageState::Stale { reasons, .. } => bail!(
                "stage `{stage}` has no artifact for the pipeline as it is now ({}); run `splade run {} --until {stage}` first",
                join_reasons(&reasons),
                self.pipeline.file.display()
            ),
        }
    }

    fn status_record(&self, stage: &StageDecl, r: &Resolved) -> StageStatusRecord {
        StageStatusRecord {
            fingerprint: r.fp.0.clone(),
            kind: stage.kind.clone(),
            version: self.kind_of(stage).map(|k| k.version()).unwrap_or(0),
            params: stage.params.clone(),
            inputs: r.digests.clone(),
            recorded_ns: now_ns(),
        }
    }

    /// The stages `opts` selects, upstream first.
    fn select(&self, opts: &RunOptions) -> Result<Vec<String>> {
        for f in &opts.force {
            if self.pipeline.stage(f).is_none() {
                bail!("--force: {}", self.pipeline.unknown_stage(f));
            }
        }
        let Some(u) = &opts.until else {
            return Ok(self.dag.order().to_vec());
        };
        if self.pipeline.stage(u).is_none() {
            bail!("--until: {}", self.pipeline.unknown_stage(u));
        }
        let keep = self.dag.with_ancestors(u);
        Ok(self
            .dag
            .order()
            .iter()
            .filter(|n| keep.contains(*n))
            .cloned()
            .collect())
    }

    /// Runs the pipeline (or the part `--until` selects), calling `report` as each stage ends.
    pub fn run(
        &self,
        opts: &RunOptions,
        report: &(dyn Fn(&StageReport) + Sync),
    ) -> Result<Vec<StageReport>> {
        let selected = self.select(opts)?;
        let history = RunRecord {
            pipeline: self.pipeline.name.clone(),
            file: self.pipeline.file.display().to_string(),
            args: std::env::args().collect(),
            started_ns: now_ns(),
            result: RunResult::Running,
            stages: Vec::new(),
            ended_ns: None,
            running: Vec::new(),
        };
        self.store.put_run(&history)?;
        *lock(&self.history)? = Some(history);
        let mut reports = self.schedule(&selected, opts, report);
        let mut history = lock(&self.history)?
            .take()
            .ok_or_else(|| anyhow!("the run record went missing"))?;
        let failed = reports
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed(_) | Outcome::Stopped(_)));
        for name in &selected {
            if !reports.iter().any(|r| &r.name == name) {
                let r = StageReport {
                    name: name.clone(),
                    kind: self.decl(name).kind.clone(),
                    fp: None,
                    outcome: Outcome::Skipped("an upstream stage failed".into()),
                    summary: None,
                    artifact: None,
                };
                report(&r);
                reports.push(r);
            }
        }
        history.result = if failed {
            RunResult::Failed
        } else {
            RunResult::Ok
        };
        history.ended_ns = Some(now_ns());
        history.stages = reports.iter().map(StageReport::record).collect();
        history.running.clear();
        self.store.put_run(&history)?;
        Ok(reports)
    }

    /// Runs `selected` stages as their parents finish, up to `opts.jobs` at once, until all ran
    /// or one failed; returns the reports of the stages that ran.
    fn schedule(
        &self,
        selected: &[String],
        opts: &RunOptions,
        report: &(dyn Fn(&StageReport) + Sync),
    ) -> Vec<StageReport> {
        let jobs = opts.jobs.max(1);
        let known: Mutex<HashMap<String, (PathBuf, Manifest)>> = Mutex::new(HashMap::new());
        let verified: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
        let mut pending_parents: HashMap<String, usize> = selected
            .iter()
            .map(|n| (n.clone(), self.dag.parents(n).len()))
            .collect();
        let mut ready: Vec<String> = selected
            .iter()
            .filter(|n| pending_parents[*n] == 0)
            .cloned()
            .collect();
        ready.reverse();
        let mut reports: Vec<StageReport> = Vec::new();
        let mut failed = false;
        let (tx, rx) = mpsc::channel::<StageReport>();
        std::thread::scope(|scope| {
            let mut running = 0usize;
            loop {
                while !failed && running < jobs {
                    let Some(name) = ready.pop() else { break };
                    running += 1;
                    let tx = tx.clone();
                    let known = &known;
                    let verified = &verified;
                    scope.spawn(move || {
                        let r = self.process(&name, opts, known, verified);
                        let _ = tx.send(r);
                    });
                }
                if running == 0 {
                    break;
                }
                let Ok(r) = rx.recv() else { break };
                running -= 1;
                self.note_ended(&r);
                report(&r);
                if matches!(r.outcome, Outcome::Failed(_) | Outcome::Stopped(_)) {
                    failed = true;
                } else {
                    for child in selected {
                        if self.dag.parents(child).contains(&r.name) {
                            if let Some(c) = pending_parents.get_mut(child) {
                                *c -= 1;
                                if *c == 0 {
                                    ready.insert(0, child.clone());
                                }
                            }
                        }
                    }
                }
                reports.push(r);
            }
        });
        reports
    }

    fn process(
        &self,
        name: &str,
        opts: &RunOptions,
        known: &Mutex<HashMap<String, (PathBuf, Manifest)>>,
        verified: &Mutex<HashSet<String>>,
    ) -> StageReport {
        let stage = self.decl(name);
        let mut report = StageReport {
            name: name.to_string(),
            kind: stage.kind.clone(),
            fp: None,
            outcome: Outcome::Cached,
            summary: None,
            artifact: None,
        };
        // A panic is a bug, but it must end this stage as failed, not leave the scheduler
        // waiting for a report that never comes.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.process_inner(stage, opts, known, verified, &mut report)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                report.outcome = match e.chain().find_map(|c| c.downcast_ref::<StageError>()) {
                    Some(StageError::Cancelled(at)) => Outcome::Stopped(at.clone()),
                    _ => Outcome::Failed(format!("{e:#}")),
                }
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                report.outcome = Outcome::Failed(format!("the stage panicked (a bug): {what}"));
            }
        }
        report
    }

    /// Resolves the stage; uses its cached artifact, or checks its inputs, runs it, commits its
    /// artifact and records it.
    fn process_inner(
        &self,
        stage: &StageDecl,
        opts: &RunOptions,
        known: &Mutex<HashMap<String, (PathBuf, Manifest)>>,
        verified: &Mutex<HashSet<String>>,
        report: &mut StageReport,
    ) -> Result<()> {
        let snapshot = lock(known)?.clone();
        let resolved = self
            .resolve(stage, &snapshot)?
            .ok_or_else(|| anyhow!("upstream artifacts missing"))?;
        report.fp = Some(resolved.fp.clone());
        let forced = opts.force.iter().any(|f| f == &stage.name);
        let dir = self.root.dir(&stage.kind, &resolved.fp);
        let cached = match forced {
            true => None,
            false => self.root.find(&stage.kind, &resolved.fp).map_err(|e| {
                anyhow!(
                    "{e}; recompute it with `splade run {} --force {}`",
                    self.pipeline.file.display(),
                    stage.name
                )
            })?,
        };
        let manifest = match cached {
            Some(manifest) => manifest,
            None => {
                self.verify_inputs(stage, &snapshot, verified)?;
                self.note_started(&stage.name, &resolved.fp);
                let (manifest, seconds, resumed) = self.execute(stage, &resolved, opts, forced)?;
                report.outcome = Outcome::Executed { seconds, resumed };
                manifest
            }
        };
        self.store.set_stage_status(
            &self.pipeline.name,
            &stage.name,
            &self.status_record(stage, &resolved),
        )?;
        if matches!(report.outcome, Outcome::Executed { .. }) {
            self.store.flush()?;
        }
        report.summary = manifest.summary.clone();
        report.artifact = Some(dir.clone());
        lock(known)?.insert(stage.name.clone(), (dir, manifest));
        Ok(())
    }

    /// Records in the run's history that `stage` started executing (best effort: the record is
    /// for readers watching the run).
    fn note_started(&self, stage: &str, fp: &Fingerprint) {
        self.update_history(|h| {
            h.running.push(RunningStage {
                stage: stage.to_string(),
                fingerprint: fp.0.clone(),
                started_ns: now_ns(),
            })
        });
    }

    /// Records in the run's history that a stage ended.
    fn note_ended(&self, r: &StageReport) {
        self.update_history(|h| {
            h.running.retain(|s| s.stage != r.name);
            h.stages.push(r.record());
        });
    }

    /// Changes the record of the run in progress and stores it (best effort).
    fn update_history(&self, change: impl FnOnce(&mut RunRecord)) {
        if let Ok(mut guard) = self.history.lock() {
            if let Some(h) = guard.as_mut() {
                change(h);
                let _ = self.store.put_run(h);
            }
        }
    }

    /// Never read a corrupt input: rehashes the upstream outputs `stage` reads (once per run).
    fn verify_inputs(
        &self,
        stage: &StageDecl,
        snapshot: &HashMap<String, (PathBuf, Manifest)>,
        verified: &Mutex<HashSet<String>>,
    ) -> Result<()> {
        for input in &stage.inputs {
            let InputDecl::Artifact {
                stage: up, output, ..
            } = input
            else {
                continue;
            };
            let key = format!("{up}.{output}");
            if lock(verified)?.contains(&key) {
                continue;
            }
            let (updir, manifest) = &snapshot[up];
            let bad = self.root.verify_output(updir, manifest, output);
            if let Some(c) = bad.first() {
                bail!(
                    "input `{key}` is corrupt: {}: {}; recompute it with `splade run {} --force {up}`",
                    c.file.display(),
                    c.problem,
                    self.pipeline.file.display()
                );
            }
            lock(verified)?.insert(key);
        }
        Ok(())
    }

    /// The staging directory of `fp`, kept when it holds resumable work and started afresh
    /// otherwise; returns it and whether the stage resumes.
    fn prepare_staging(
        &self,
        fp: &Fingerprint,
        forced: bool,
        worker_state: bool,
    ) -> Result<(PathBuf, bool)> {
        let staging = self.root.staging(fp);
        let mut state = self.store.resume_state(&fp.0)?;
        if worker_state && !forced && staging.is_dir() {
            // A Slurm worker's resume state (in the job directory) counts as the store's does.
            state = Some(Value::Bool(true));
        }
        if state.is_some() && (forced || !staging.is_dir()) {
            self.store.clear_resume_state(&fp.0)?;
            state = None;
        }
        if state.is_none() && staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing stale staging dir {}", staging.display()))?;
        }
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        Ok((staging, state.is_some()))
    }

    /// After a failure: a staging directory without resume state holds nothing a rerun could
    /// continue from, so it goes (one with resume state stays for the rerun).
    fn discard_unresumable(&self, fp: &Fingerprint, staging: &Path) {
        if matches!(self.store.resume_state(&fp.0), Ok(None)) {
            let _ = std::fs::remove_dir_all(staging);
        }
    }

    /// Runs the stage (here, or as a Slurm job) in its staging directory and commits its
    /// artifact; returns the committed manifest, the seconds the stage ran and whether it resumed.
    fn execute(
        &self,
        stage: &StageDecl,
        resolved: &Resolved,
        opts: &RunOptions,
        forced: bool,
    ) -> Result<(Manifest, f64, bool)> {
        let kind = self.kind_of(stage)?;
        let ran = match self.pipeline.executor.kind {
            ExecutorKind::Local => self.run_here(stage, kind, resolved, opts, forced)?,
            ExecutorKind::Slurm => self.run_on_slurm(stage, kind, resolved, forced)?,
        };
        let manifest = Manifest {
            kind: stage.kind.clone(),
            kind_version: kind.version(),
            fingerprint: resolved.fp.0.clone(),
            pipeline: self.pipeline.name.clone(),
            stage: stage.name.clone(),
            params: stage.params.clone(),
            inputs: resolved.digests.clone(),
            outputs: BTreeMap::new(),
            files: Vec::new(),
            started_at_ns: ran.started_ns,
            seconds: ran.seconds,
            stats: ran.outcome.stats,
            summary: ran.outcome.summary,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            digest: None,
        };
        let manifest = self
            .root
            .commit(
                &ran.staging,
                &stage.kind,
                &resolved.fp,
                &stage.outputs,
                manifest,
            )
            .with_context(|| format!("committing the artifact of stage `{}`", stage.name))?;
        self.store.put_artifact(
            &resolved.fp.0,
            &ArtifactRecord {
                kind: stage.kind.clone(),
                stage: stage.name.clone(),
                pipeline: self.pipeline.name.clone(),
                committed_ns: now_ns(),
            },
        )?;
        self.store.clear_resume_state(&resolved.fp.0)?;
        let jobs = JobDir::new(&self.root.root, &resolved.fp.0);
        if jobs.0.exists() {
            std::fs::remove_dir_all(&jobs.0)
                .with_context(|| format!("removing {}", jobs.0.display()))?;
        }
        Ok((manifest, ran.seconds, ran.resumed))
    }

    /// Threads a stage may use: `[backend] threads`, or every core.
    fn threads(&self) -> usize {
        self.pipeline.backend["threads"]
            .as_u64()
            .map(|t| t as usize)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
    }

    /// Runs the stage in this process.
    fn run_here(
        &self,
        stage: &StageDecl,
        kind: &dyn Stage,
        resolved: &Resolved,
        opts: &RunOptions,
        forced: bool,
    ) -> Result<Ran> {
        let (staging, resumed) = self.prepare_staging(&resolved.fp, forced, false)?;
        let threads = self.threads();
        let mut ctx = StageContext::new(stage.name.clone(), stage.params.clone(), &staging)
            .with_backend(self.pipeline.backend.clone())
            .with_threads(threads)
            .with_progress(opts.show_progress)
            .with_cancel(crate::interrupt::cancel_flag())
            .with_resume(Box::new(StoreResume {
                store: self.store.clone(),
                fp: resolved.fp.0.clone(),
            }));
        ctx.inputs = resolved.inputs.clone();
        tracing::info!(stage = %stage.name, kind = %stage.kind, fingerprint = %resolved.fp.short(), resumed, "running");
        let started_ns = now_ns();
        let t0 = Instant::now();
        // `[backend] threads` bounds the stage's data-parallel work (rayon); default: every core.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("starting the stage's thread pool")?;
        crate::interrupt::stage_started(&stage.name, kind.stops_at_checkpoints());
        let result = pool.install(|| kind.run(&mut ctx));
        crate::interrupt::stage_ended(&stage.name);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => {
                self.discard_unresumable(&resolved.fp, &staging);
                // The run names the stage (`stage `x`: ...`); the error says what went wrong.
                return Err(e.into());
            }
        };
        Ok(Ran {
            staging,
            outcome,
            started_ns,
            seconds: t0.elapsed().as_secs_f64(),
            resumed,
        })
    }

    /// Runs the stage as Slurm jobs (re-attaching to one a killed driver left running) and
    /// waits for the worker's result; the driver remains the store's only writer.
    fn run_on_slurm(
        &self,
        stage: &StageDecl,
        kind: &dyn Stage,
        resolved: &Resolved,
        forced: bool,
    ) -> Result<Ran> {
        let jobs = JobDir::new(&self.root.root, &resolved.fp.0);
        let slurm = SlurmStage {
            jobs: jobs.clone(),
            stage: stage.name.clone(),
            options: stage.slurm.clone(),
            checkpoints: kind.stops_at_checkpoints(),
            poll: std::time::Duration::from_secs_f64(self.pipeline.executor.poll_seconds),
            max_requeues: self.pipeline.executor.max_requeues,
            exe: std::env::current_exe().context("locating the splade binary for the jobs")?,
            cwd: std::env::current_dir().context("reading the current directory")?,
            array_tasks: stage
                .slurm
                .array_tasks
                .map(|n| n as usize)
                .filter(|n| *n > 1 && kind.splits_into_tasks()),
        };
        if forced && jobs.0.exists() {
            std::fs::remove_dir_all(&jobs.0)
                .with_context(|| format!("removing {}", jobs.0.display()))?;
        }
        let live = slurm.live_job()?;
        let (staging, resumed) = match live {
            Some(_) => (self.root.staging(&resolved.fp), true),
            None => self.prepare_staging(&resolved.fp, forced, jobs.has_resume_state())?,
        };
        if !resumed {
            let _ = std::fs::remove_file(jobs.resume_file());
        }
        if crate::executor::slurm::looks_node_local(&self.root.root) {
            tracing::warn!(root = %self.root.root.display(), "the artifact root looks node-local: Slurm jobs on other nodes will not see it");
        }
        let spec = JobSpec {
            stage: stage.name.clone(),
            kind: stage.kind.clone(),
            params: stage.params.clone(),
            inputs: resolved.inputs.clone(),
            backend: self.pipeline.backend.clone(),
            threads: self.threads(),
            staging: std::path::absolute(&staging).unwrap_or_else(|_| staging.clone()),
            array_tasks: None,
        };
        crate::interrupt::stage_started(&stage.name, false);
        let result = slurm.drive(&spec, live);
        crate::interrupt::stage_ended(&stage.name);
        if result.is_err() && !jobs.has_resume_state() {
            self.discard_unresumable(&resolved.fp, &staging);
        }
        let result = result?;
        Ok(Ran {
            staging,
            outcome: StageOutcome {
                stats: result.stats,
                summary: result.summary,
            },
            started_ns: result.started_ns,
            seconds: result.seconds,
            resumed,
        })
    }
}

/// What running a stage (anywhere) left to commit.
struct Ran {
    staging: PathBuf,
    outcome: StageOutcome,
    started_ns: u64,
    seconds: f64,
    resumed: bool,
}

/// Locks a mutex of the run's shared maps (poisoned only if a stage thread panicked).
fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow!("a stage thread panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A two-stage pipeline (ingest a run and qrels → evaluate) in `dir`, with files there.
    fn write_pipeline(dir: &Path, k: &str) -> PathBuf {
        std::fs::write(dir.join("qrels.trec"), "q1 0 d1 1\nq2 0 d2 1\n").unwrap();
        std::fs::write(
            dir.join("run.trec"),
            "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq2 Q0 d1 1 2.0 t\nq2 Q0 d2 2 1.0 t\n",
        )
        .unwrap();
        let toml = format!(
            "name = \"unit\"\n\
             [stage.ingest]\nkind = \"ingest\"\n\
             qrels = {{ dev = \"{q}\" }}\nruns = {{ r = \"{r}\" }}\n\
             [stage.evaluate]\nkind = \"evaluate\"\nrun = \"ingest.r_run\"\n\
             qrels = \"ingest.dev_qrels\"\nmeasures = [\"mrr@10\"]\nk = {k}\n",
            q = dir.join("qrels.trec").display(),
            r = dir.join("run.trec").display(),
        );
        let path = dir.join("p.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    fn engine(dir: &Path, k: &str) -> Engine {
        let path = write_pipeline(dir, k);
        crate::open_engine(&dir.join("artifacts"), &path, &[]).unwrap()
    }

    fn states(e: &Engine) -> Vec<(String, &'static str, String)> {
        e.plan()
            .unwrap()
            .into_iter()
            .map(|p| (p.name.clone(), p.state.label(), p.detail(&e.root)))
            .collect()
    }

    fn run(e: &Engine) -> Vec<StageReport> {
        let opts = RunOptions {
            jobs: 1,
            ..RunOptions::default()
        };
        e.run(&opts, &|_| {}).unwrap()
    }

    #[test]
    fn plan_before_and_after_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), "[10]");
        let before = states(&e);
        assert_eq!(before[0], ("ingest".into(), "stale", "never run".into()));
        assert_eq!(
            before[1],
            (
                "evaluate".into(),
                "stale",
                "never run".into() // no record yet, so no upstream reason either
            )
        );
        let reports = run(&e);
        assert!(reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Executed { resumed: false, .. })));
        let after = e.plan().unwrap();
        assert!(after.iter().all(|p| p.state.label() == "cached"));
        // The store holds a typed status record pointing at the committed artifact.
        let status = e.store.stage_status("unit", "evaluate").unwrap().unwrap();
        let fp = after[1].state.fingerprint().unwrap();
        assert_eq!(status.fingerprint, fp.0);
        assert!(e.root.dir("evaluate", fp).join("manifest.json").is_file());
        let history = e.store.recent_runs(1).unwrap();
        assert_eq!(history[0].result, crate::records::RunResult::Ok);
        assert_eq!(history[0].stages.len(), 2);
    }

    #[test]
    fn changed_param_and_input_are_named() {
        let dir = tempfile::tempdir().unwrap();
        run(&engine(dir.path(), "[10]"));
        let e = engine(dir.path(), "[10, 100]");
        let plan = e.plan().unwrap();
        assert_eq!(plan[0].state.label(), "cached");
        let StageState::Stale { reasons, .. } = &plan[1].state else {
            panic!("evaluate should be stale: {:?}", plan[1].state.label());
        };
        assert_eq!(
            reasons,
            &vec![StaleReason::ParamChanged {
                key: "k".into(),
                input: false,
                before: json!([10]),
                after: json!([10, 100]),
            }]
        );
        drop(e);
        // New qrels content: ingest is stale for its input, evaluate waits on it.
        let e = engine(dir.path(), "[10]");
        std::fs::write(dir.path().join("qrels.trec"), "q1 0 d2 1\n").unwrap();
        let plan = e.plan().unwrap();
        let StageState::Stale { reasons, .. } = &plan[0].state else {
            panic!("ingest should be stale");
        };
        assert_eq!(
            reasons,
            &vec![StaleReason::InputContentChanged {
                key: "qrels.dev".into(),
                upstream: None
            }]
        );
        assert_eq!(
            plan[1].detail(&e.root),
            "waits on upstream `ingest`, `ingest`"
        );
    }

    #[test]
    fn a_cached_stage_is_not_rerun_and_force_recomputes_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), "[10]");
        run(&e);
        let again = run(&e);
        assert!(again.iter().all(|r| matches!(r.outcome, Outcome::Cached)));
        let opts = RunOptions {
            force: vec!["evaluate".into()],
            jobs: 1,
            ..RunOptions::default()
        };
        let forced = e.run(&opts, &|_| {}).unwrap();
        assert!(matches!(forced[0].outcome, Outcome::Cached));
        assert!(matches!(forced[1].outcome, Outcome::Executed { .. }));
        assert_eq!(forced[0].fp, again[0].fp);
        assert_eq!(forced[1].fp, again[1].fp);
    }
}
