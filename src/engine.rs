//! The executor: resolves inputs, fingerprints stages, finds cached artifacts, runs what is
//! stale (resuming interrupted work), commits artifacts and records everything in the store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use splade_stages::{Registry, ResolvedInput, ResumeStore, StageContext};

use crate::artifact::{ArtifactRoot, Manifest};
use crate::dag::Dag;
use crate::fingerprint::{combine, stage_fingerprint, walk_files, Fingerprint};
use crate::pipeline::{InputDecl, Pipeline, StageDecl};
use crate::store::{now_ns, Store};

/// A stage's inputs resolved to paths and content digests, and the fingerprint they give.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub fp: Fingerprint,
    pub digests: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, ResolvedInput>,
}

/// Where a stage stands before a run.
#[derive(Debug, Clone)]
pub enum StageState {
    /// Its artifact exists. `note` says when it is an earlier artifact restored by a swap-back.
    Cached {
        fp: Fingerprint,
        manifest: Box<Manifest>,
        note: Option<String>,
    },
    /// Interrupted work with resume state exists for this fingerprint.
    Partial {
        fp: Fingerprint,
        state: Value,
        reasons: Vec<String>,
    },
    /// Must run; `fp` is unknown while an upstream stage is not cached.
    Stale {
        fp: Option<Fingerprint>,
        reasons: Vec<String>,
    },
}

impl StageState {
    /// `cached`, `partial` or `stale`.
    pub fn label(&self) -> &'static str {
        match self {
            StageState::Cached { .. } => "cached",
            StageState::Partial { .. } => "partial",
            StageState::Stale { .. } => "stale",
        }
    }
}

/// How one stage went in a run.
#[derive(Debug, Clone)]
pub enum Outcome {
    Executed { seconds: f64, resumed: bool },
    Cached,
    Failed(String),
    Skipped(String),
}

/// One line of a run's report.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    pub fp: Option<Fingerprint>,
    pub outcome: Outcome,
    pub summary: Option<String>,
    pub artifact: Option<PathBuf>,
}

/// Knobs of `splade run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub until: Option<String>,
    pub force: Vec<String>,
    pub jobs: usize,
    pub show_progress: bool,
}

/// A pipeline bound to an artifact root and an open store.
pub struct Engine {
    pub registry: Registry,
    pub root: ArtifactRoot,
    pub store: Arc<Store>,
    pub pipeline: Pipeline,
    pub dag: Dag,
}

struct StoreResume {
    store: Arc<Store>,
    fp: String,
}

impl ResumeStore for StoreResume {
    fn load(&self) -> Option<Value> {
        self.store.resume_state(&self.fp).ok().flatten()
    }
    fn save(&self, state: &Value) -> std::result::Result<(), String> {
        self.store
            .save_resume_state(&self.fp, state)
            .map_err(|e| e.to_string())
    }
}

fn set_at(params: &mut Value, key: &str, v: Value) {
    let mut node = params;
    let parts: Vec<&str> = key.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        node = &mut node[*p];
    }
    node[parts[parts.len() - 1]] = v;
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
                    set_at(&mut params, key, json!(format!("blake3:{d}")));
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
                    set_at(&mut params, key, json!(format!("blake3:{}", entry.digest)));
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

    /// Why `stage` (now at `resolved`) differs from what this pipeline last recorded for it.
    fn reasons(&self, stage: &StageDecl, resolved: Option<&Resolved>) -> Result<Vec<String>> {
        let Some(last) = self.store.stage_status(&self.pipeline.name, &stage.name)? else {
            return Ok(vec!["never run".into()]);
        };
        let mut reasons = Vec::new();
        let version = self
            .registry
            .get(&stage.kind)
            .map(|k| k.version())
            .unwrap_or(0);
        if last["kind"].as_str() != Some(stage.kind.as_str()) {
            reasons.push(format!(
                "kind changed: {} -> {}",
                last["kind"].as_str().unwrap_or("?"),
                stage.kind
            ));
        } else if last["version"].as_u64() != Some(version as u64) {
            reasons.push(format!(
                "kind `{}` version changed: {} -> {version}",
                stage.kind, last["version"]
            ));
        }
        let input_keys: HashSet<&str> = stage
            .inputs
            .iter()
            .map(|i| i.key().split('.').next().unwrap_or(""))
            .collect();
        if let Some(old) = last["params"].as_object() {
            for (k, v) in stage.params.as_object().into_iter().flatten() {
                let before = old.get(k).cloned().unwrap_or(Value::Null);
                if &before != v {
                    let what = if input_keys.contains(k.as_str()) {
                        "input"
                    } else {
                        "param"
                    };
                    reasons.push(format!("{what} `{k}` changed: {before} -> {v}"));
                }
            }
        }
        if let Some(r) = resolved {
            let old = last["inputs"].as_object().cloned().unwrap_or_default();
            for (k, d) in &r.digests {
                if old.get(k).and_then(Value::as_str) != Some(d.as_str()) {
                    let from = stage.inputs.iter().find(|i| i.key() == k);
                    reasons.push(match from {
                        Some(InputDecl::Artifact {
                            stage: up, output, ..
                        }) => {
                            format!("input `{k}` changed: output `{up}.{output}` has new content")
                        }
                        _ => format!("input `{k}` changed: file content differs"),
                    });
                }
            }
        } else {
            let ups: Vec<String> = stage
                .inputs
                .iter()
                .filter_map(|i| match i {
                    InputDecl::Artifact { stage, .. } => Some(format!("`{stage}`")),
                    _ => None,
                })
                .collect();
            reasons.push(format!("waits on upstream {}", ups.join(", ")));
        }
        if reasons.is_empty() {
            reasons.push("no artifact for the current fingerprint".into());
        }
        Ok(reasons)
    }

    /// The state of every stage (upstream first), without running anything.
    pub fn plan(&self) -> Result<Vec<(String, StageState)>> {
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
                Some(r) => self.state_of(stage, r)?,
            };
            if let StageState::Cached { fp, manifest, .. } = &state {
                known.insert(
                    name.clone(),
                    (self.root.dir(&stage.kind, fp), (**manifest).clone()),
                );
            }
            out.push((name.clone(), state));
        }
        Ok(out)
    }

    fn state_of(&self, stage: &StageDecl, r: &Resolved) -> Result<StageState> {
        if let Some(manifest) = self.root.find(&stage.kind, &r.fp)? {
            let last = self.store.stage_status(&self.pipeline.name, &stage.name)?;
            let note = match last {
                Some(l) if l["fingerprint"].as_str() != Some(r.fp.0.as_str()) => {
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
        for (name, state) in self.plan()? {
            if name != stage {
                continue;
            }
            return match state {
                StageState::Cached { fp, manifest, .. } => {
                    Ok((self.root.dir(&self.decl(stage).kind, &fp), *manifest))
                }
                StageState::Partial { reasons, .. } | StageState::Stale { reasons, .. } => bail!(
                    "stage `{stage}` has no artifact for the pipeline as it is now ({}); run `splade run {} --until {stage}` first",
                    reasons.join("; "),
                    self.pipeline.file.display()
                ),
            };
        }
        unreachable!("stage exists in the DAG")
    }

    fn status_record(&self, stage: &StageDecl, r: &Resolved) -> Value {
        let version = self
            .registry
            .get(&stage.kind)
            .map(|k| k.version())
            .unwrap_or(0);
        json!({
            "fingerprint": r.fp.0,
            "kind": stage.kind,
            "version": version,
            "params": stage.params,
            "inputs": r.digests,
            "recorded_ns": now_ns(),
        })
    }

    /// Runs the pipeline (or the part `--until` selects), calling `report` as each stage ends.
    pub fn run(
        &self,
        opts: &RunOptions,
        report: &(dyn Fn(&StageReport) + Sync),
    ) -> Result<Vec<StageReport>> {
        for f in &opts.force {
            if self.pipeline.stage(f).is_none() {
                bail!("--force: {}", self.pipeline.unknown_stage(f));
            }
        }
        let selected: Vec<String> = match &opts.until {
            Some(u) => {
                if self.pipeline.stage(u).is_none() {
                    bail!("--until: {}", self.pipeline.unknown_stage(u));
                }
                let keep = self.dag.with_ancestors(u);
                self.dag
                    .order()
                    .iter()
                    .filter(|n| keep.contains(*n))
                    .cloned()
                    .collect()
            }
            None => self.dag.order().to_vec(),
        };
        let started_ns = now_ns();
        let args: Vec<String> = std::env::args().collect();
        let mut history = json!({
            "pipeline": self.pipeline.name,
            "file": self.pipeline.file.display().to_string(),
            "args": args,
            "started_ns": started_ns,
            "result": "running",
            "stages": [],
        });
        self.store.put_run(started_ns, &history)?;

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
                report(&r);
                match r.outcome {
                    Outcome::Failed(_) => failed = true,
                    _ => {
                        for child in &selected {
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
                }
                reports.push(r);
            }
        });
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
        history["result"] = json!(if failed { "failed" } else { "ok" });
        history["ended_ns"] = json!(now_ns());
        history["stages"] = Value::Array(
            reports
                .iter()
                .map(|r| {
                    let (outcome, seconds) = match &r.outcome {
                        Outcome::Executed { seconds, resumed } => (
                            if *resumed { "resumed" } else { "executed" }.to_string(),
                            *seconds,
                        ),
                        Outcome::Cached => ("cached".into(), 0.0),
                        Outcome::Failed(e) => (format!("failed: {e}"), 0.0),
                        Outcome::Skipped(e) => (format!("skipped: {e}"), 0.0),
                    };
                    json!({"stage": r.name, "outcome": outcome, "seconds": seconds,
                           "fingerprint": r.fp.as_ref().map(|f| f.0.clone())})
                })
                .collect(),
        );
        self.store.put_run(started_ns, &history)?;
        Ok(reports)
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
        match self.process_inner(stage, opts, known, verified, &mut report) {
            Ok(()) => {}
            Err(e) => report.outcome = Outcome::Failed(format!("{e:#}")),
        }
        report
    }

    fn process_inner(
        &self,
        stage: &StageDecl,
        opts: &RunOptions,
        known: &Mutex<HashMap<String, (PathBuf, Manifest)>>,
        verified: &Mutex<HashSet<String>>,
        report: &mut StageReport,
    ) -> Result<()> {
        let snapshot = known.lock().map_err(|_| anyhow!("poisoned"))?.clone();
        let resolved = self
            .resolve(stage, &snapshot)?
            .ok_or_else(|| anyhow!("upstream artifacts missing"))?;
        report.fp = Some(resolved.fp.clone());
        let forced = opts.force.iter().any(|f| f == &stage.name);
        let dir = self.root.dir(&stage.kind, &resolved.fp);
        if !forced {
            if let Some(manifest) = self.root.find(&stage.kind, &resolved.fp)? {
                self.store.set_stage_status(
                    &self.pipeline.name,
                    &stage.name,
                    &self.status_record(stage, &resolved),
                )?;
                report.summary = manifest.summary.clone();
                report.artifact = Some(dir.clone());
                known
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .insert(stage.name.clone(), (dir, manifest));
                return Ok(());
            }
        }
        // Never read a corrupt input: rehash the upstream outputs this stage reads.
        for input in &stage.inputs {
            if let InputDecl::Artifact {
                stage: up, output, ..
            } = input
            {
                let key = format!("{up}.{output}");
                if verified
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .contains(&key)
                {
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
                verified
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .insert(key);
            }
        }
        let staging = self.root.staging(&resolved.fp);
        let mut state = self.store.resume_state(&resolved.fp.0)?;
        if forced && state.is_some() {
            self.store.clear_resume_state(&resolved.fp.0)?;
            state = None;
        }
        if state.is_some() && !staging.is_dir() {
            self.store.clear_resume_state(&resolved.fp.0)?;
            state = None;
        }
        if state.is_none() && staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing stale staging dir {}", staging.display()))?;
        }
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        let resumed = state.is_some();
        let kind = self
            .registry
            .get(&stage.kind)
            .ok_or_else(|| anyhow!("unknown kind {}", stage.kind))?;
        let threads = self.pipeline.backend["threads"]
            .as_u64()
            .map(|t| t as usize)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        let mut ctx = StageContext {
            name: stage.name.clone(),
            params: stage.params.clone(),
            inputs: resolved.inputs.clone(),
            staging: staging.clone(),
            backend: self.pipeline.backend.clone(),
            threads,
            show_progress: opts.show_progress,
            resume: Box::new(StoreResume {
                store: self.store.clone(),
                fp: resolved.fp.0.clone(),
            }),
        };
        tracing::info!(stage = %stage.name, kind = %stage.kind, fingerprint = %resolved.fp.short(), resumed, "running");
        let started_ns = now_ns();
        let t0 = Instant::now();
        let outcome = kind
            .run(&mut ctx)
            .with_context(|| format!("stage `{}` ({})", stage.name, stage.kind))?;
        let seconds = t0.elapsed().as_secs_f64();
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
            started_at_ns: started_ns,
            seconds,
            stats: outcome.stats,
            summary: outcome.summary,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let manifest = self
            .root
            .commit(
                &staging,
                &stage.kind,
                &resolved.fp,
                &stage.outputs,
                manifest,
            )
            .with_context(|| format!("committing the artifact of stage `{}`", stage.name))?;
        self.store.put_artifact(
            &resolved.fp.0,
            &json!({"kind": stage.kind, "stage": stage.name, "pipeline": self.pipeline.name,
                    "committed_ns": now_ns()}),
        )?;
        self.store.clear_resume_state(&resolved.fp.0)?;
        self.store.set_stage_status(
            &self.pipeline.name,
            &stage.name,
            &self.status_record(stage, &resolved),
        )?;
        self.store.flush()?;
        report.outcome = Outcome::Executed { seconds, resumed };
        report.summary = manifest.summary.clone();
        report.artifact = Some(dir.clone());
        known
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(stage.name.clone(), (dir, manifest));
        Ok(())
    }
}
