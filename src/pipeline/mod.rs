//! Pipeline files: TOML parsing with line numbers, includes, `--set` overrides, and validation
//! of every stage against its kind's declared params — all before any stage runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;
use splade_stages::params::{did_you_mean, ParamError, ParamSpec, ParamType};
use splade_stages::Registry;
use splade_stages::Stage;
use toml::de::{DeTable, DeValue};

mod matrix;

/// Where a value came from: a file and 1-based line, or a `--set` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The pipeline file as given, or `--set KEY=VALUE`.
    pub file: String,
    /// 1-based line in the pipeline file (0 = the whole file or argument).
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// A pipeline error: where, which key, and what is wrong.
#[derive(Debug, Clone)]
pub struct PipelineError {
    /// Where the offending value (or table) came from.
    pub origin: Origin,
    /// The dotted key concerned (`stage.NAME.PARAM`, `backend.KEY`, ...); empty if none.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for PipelineError {}

fn err(origin: &Origin, key: impl Into<String>, message: impl Into<String>) -> PipelineError {
    PipelineError {
        origin: origin.clone(),
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
struct Located {
    value: Value,
    origin: Origin,
}

#[derive(Debug, Clone, Default)]
struct RawStage {
    header: Option<Origin>,
    params: IndexMap<String, Located>,
    /// For a stage expanded from a `[matrix]` template: which template, with which values.
    instance_of: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct RawPipeline {
    name: Option<Located>,
    backend: IndexMap<String, Located>,
    executor: IndexMap<String, Located>,
    matrix: IndexMap<String, Located>,
    stages: IndexMap<String, RawStage>,
}

/// One input of a stage, resolved against the pipeline.
#[derive(Debug, Clone)]
pub enum InputDecl {
    /// A user file or directory (hashed by content).
    File {
        /// The param key (`docs`, `queries.train`).
        key: String,
        /// The file or directory, as written in the pipeline.
        path: PathBuf,
        /// Where the param was set.
        origin: Origin,
    },
    /// Another stage's output: a DAG edge.
    Artifact {
        /// The param key (`run`, `docs`).
        key: String,
        /// The stage whose output is read.
        stage: String,
        /// The name of that stage's output.
        output: String,
        /// Where the param was set.
        origin: Origin,
    },
}

impl InputDecl {
    /// The param key (`docs`, `queries.train`, `run`).
    pub fn key(&self) -> &str {
        match self {
            InputDecl::File { key, .. } | InputDecl::Artifact { key, .. } => key,
        }
    }
}

/// A validated stage declaration.
#[derive(Debug, Clone)]
pub struct StageDecl {
    /// The stage's name (`NAME` in `[stage.NAME]`).
    pub name: String,
    /// Its stage kind (`kind = "..."`).
    pub kind: String,
    /// Where its `[stage.NAME]` table starts (the file if unknown).
    pub header: Origin,
    /// Canonical params with defaults filled.
    pub params: Value,
    /// Its file and artifact inputs.
    pub inputs: Vec<InputDecl>,
    /// Names of the outputs it writes.
    pub outputs: Vec<String>,
    /// Its `sbatch` options under the Slurm executor: `[executor]`'s, overridden by
    /// `[stage.NAME.slurm]` (not part of its fingerprint).
    pub slurm: crate::executor::SlurmOptions,
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline's `name`.
    pub name: String,
    /// The pipeline file it was read from.
    pub file: PathBuf,
    /// The `[backend]` table as a JSON object (`kind`, `devices`, `threads`, `precision`).
    pub backend: Value,
    /// The `[executor]` table: where stages run (not part of any fingerprint).
    pub executor: crate::executor::ExecutorConfig,
    /// Its stages, in declaration order.
    pub stages: Vec<StageDecl>,
}

impl Pipeline {
    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageDecl> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// An error for an unknown stage name, with a suggestion.
    pub fn unknown_stage(&self, name: &str) -> String {
        let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        format!(
            "no stage `{name}` in pipeline `{}` (stages: {}){}",
            self.name,
            names.join(", "),
            did_you_mean(name, names.iter().copied())
        )
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn to_json(v: &DeValue<'_>, origin: &Origin, key: &str) -> Result<Value, PipelineError> {
    Ok(match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            let n = i64::from_str_radix(digits, i.radix())
                .map_err(|e| err(origin, key, format!("integer out of range: {e}")))?;
            Value::from(n)
        }
        DeValue::Float(f) => {
            let x: f64 = f
                .as_str()
                .replace('_', "")
                .parse()
                .map_err(|_| err(origin, key, format!("bad float `{}`", f.as_str())))?;
            if !x.is_finite() {
                return Err(err(origin, key, "inf and nan are not allowed here"));
            }
            Value::from(x)
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| to_json(i.get_ref(), origin, key))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(t) => {
            let mut m = serde_json::Map::new();
            for (k, v) in t.iter() {
                m.insert(k.get_ref().to_string(), to_json(v.get_ref(), origin, key)?);
            }
            Value::Object(m)
        }
    })
}

fn parse_file(
    path: &Path,
    into: &mut RawPipeline,
    depth: usize,
    chain: &mut Vec<PathBuf>,
) -> Result<(), PipelineError> {
    let source = SourceFile::read(path, depth, chain)?;
    let table = source.table()?;
    chain.push(source.canonical.clone());
    // Includes first, so this file's keys win.
    for target in source.includes(&table)? {
        parse_file(&target, into, depth + 1, chain)?;
    }
    source.merge_into(&table, into)?;
    chain.pop();
    Ok(())
}

/// One pipeline file, read and parsed as TOML with positions.
struct SourceFile<'a> {
    path: &'a Path,
    shown: String,
    canonical: PathBuf,
    text: String,
}

impl<'a> SourceFile<'a> {
    /// Reads `path`, refusing include cycles and nesting deeper than 16 files.
    fn read(path: &'a Path, depth: usize, chain: &[PathBuf]) -> Result<Self, PipelineError> {
        let shown = path.display().to_string();
        let whole = Origin {
            file: shown.clone(),
            line: 0,
        };
        if depth > 16 {
            return Err(err(
                &whole,
                "include",
                "includes nested deeper than 16 levels",
            ));
        }
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if chain.contains(&canonical) {
            return Err(err(&whole, "include", "include cycle"));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(&whole, "", format!("cannot read pipeline file: {e}")))?;
        Ok(SourceFile {
            path,
            shown,
            canonical,
            text,
        })
    }

    /// Where byte `offset` of the file is.
    fn at(&self, offset: usize) -> Origin {
        Origin {
            file: self.shown.clone(),
            line: line_of(&self.text, offset),
        }
    }

    fn table(&self) -> Result<toml::Spanned<DeTable<'_>>, PipelineError> {
        DeTable::parse(&self.text).map_err(|e| {
            let span = e.span();
            let line = span
                .clone()
                .map(|s| line_of(&self.text, s.start))
                .unwrap_or(0);
            let origin = Origin {
                file: self.shown.clone(),
                line,
            };
            // toml names no key in "duplicate key"; the span covers it.
            let key = span
                .and_then(|s| self.text.get(s))
                .filter(|k| e.message().contains("duplicate") && !k.contains('\n'))
                .unwrap_or_default();
            err(
                &origin,
                key.trim(),
                format!("invalid TOML: {}", e.message()),
            )
        })
    }

    /// The files its `include = [...]` names, found as given or beside this file.
    fn includes(&self, table: &toml::Spanned<DeTable<'_>>) -> Result<Vec<PathBuf>, PipelineError> {
        let mut out = Vec::new();
        for (k, v) in table.get_ref().iter() {
            if k.get_ref() != "include" {
                continue;
            }
            let origin = self.at(v.span().start);
            let list = to_json(v.get_ref(), &origin, "include")?;
            let items = list
                .as_array()
                .filter(|a| a.iter().all(Value::is_string))
                .ok_or_else(|| err(&origin, "include", "expected an array of file paths"))?;
            for item in items {
                let rel = PathBuf::from(item.as_str().unwrap_or_default());
                let beside = self.path.parent().map(|p| p.join(&rel));
                let target = if rel.exists() {
                    rel.clone()
                } else if let Some(b) = beside.filter(|b| b.exists()) {
                    b
                } else {
                    return Err(err(
                        &origin,
                        "include",
                        format!("included file `{}` not found", rel.display()),
                    ));
                };
                out.push(target);
            }
        }
        Ok(out)
    }

    /// Merges its `name`, `[backend]` and `[stage.NAME]` keys into `into` (later keys win).
    fn merge_into(
        &self,
        table: &toml::Spanned<DeTable<'_>>,
        into: &mut RawPipeline,
    ) -> Result<(), PipelineError> {
        for (k, v) in table.get_ref().iter() {
            let key = k.get_ref().as_ref();
            let origin = self.at(k.span().start);
            match key {
                "include" => {}
                "name" => {
                    let value = to_json(v.get_ref(), &origin, "name")?;
                    if !value.is_string() {
                        return Err(err(&origin, "name", "expected a string"));
                    }
                    into.name = Some(Located { value, origin });
                }
                "backend" => {
                    let DeValue::Table(t) = v.get_ref() else {
                        return Err(err(&origin, "backend", "expected a table [backend]"));
                    };
                    for (bk, bv) in t.iter() {
                        let o = self.at(bk.span().start);
                        let name = format!("backend.{}", bk.get_ref());
                        let value = to_json(bv.get_ref(), &o, &name)?;
                        into.backend
                            .insert(bk.get_ref().to_string(), Located { value, origin: o });
                    }
                }
                "executor" => {
                    let DeValue::Table(t) = v.get_ref() else {
                        return Err(err(&origin, "executor", "expected a table [executor]"));
                    };
                    for (ek, ev) in t.iter() {
                        let o = self.at(ek.span().start);
                        let name = format!("executor.{}", ek.get_ref());
                        let value = to_json(ev.get_ref(), &o, &name)?;
                        into.executor
                            .insert(ek.get_ref().to_string(), Located { value, origin: o });
                    }
                }
                "matrix" => {
                    let DeValue::Table(t) = v.get_ref() else {
                        return Err(err(&origin, "matrix", "expected a table [matrix]"));
                    };
                    for (ak, av) in t.iter() {
                        let o = self.at(ak.span().start);
                        let name = format!("matrix.{}", ak.get_ref());
                        let value = to_json(av.get_ref(), &o, &name)?;
                        into.matrix
                            .insert(ak.get_ref().to_string(), Located { value, origin: o });
                    }
                }
                "stage" => {
                    let DeValue::Table(t) = v.get_ref() else {
                        return Err(err(&origin, "stage", "expected tables [stage.NAME]"));
                    };
                    for (sk, sv) in t.iter() {
                        self.merge_stage(sk, sv, into)?;
                    }
                }
                other => {
                    let known = ["name", "include", "backend", "executor", "matrix", "stage"];
                    return Err(err(
                        &origin,
                        other,
                        format!(
                            "unknown top-level key (valid: {}){}",
                            known.join(", "),
                            did_you_mean(other, known.iter().copied())
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Merges one `[stage.NAME]` table.
    fn merge_stage(
        &self,
        sk: &toml::Spanned<std::borrow::Cow<'_, str>>,
        sv: &toml::Spanned<DeValue<'_>>,
        into: &mut RawPipeline,
    ) -> Result<(), PipelineError> {
        let sname = sk.get_ref().to_string();
        let so = self.at(sk.span().start);
        // Template names (`encode_{dataset}`) are checked again once expanded.
        validate_stage_name(&sname.replace(['{', '}'], ""), &so)
            .map_err(|e| err(&e.origin, format!("stage.{sname}"), e.message))?;
        let DeValue::Table(params) = sv.get_ref() else {
            return Err(err(&so, format!("stage.{sname}"), "expected a table"));
        };
        let entry = into.stages.entry(sname.clone()).or_default();
        entry.header = Some(so);
        for (pk, pv) in params.iter() {
            let o = self.at(pk.span().start);
            let full = format!("stage.{sname}.{}", pk.get_ref());
            let value = to_json(pv.get_ref(), &o, &full)?;
            entry
                .params
                .insert(pk.get_ref().to_string(), Located { value, origin: o });
        }
        Ok(())
    }
}

fn validate_stage_name(name: &str, origin: &Origin) -> Result<(), PipelineError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(err(
            origin,
            format!("stage.{name}"),
            "stage names use letters, digits, `_` and `-` only (and `{axis}` placeholders of \
             the [matrix])",
        ));
    }
    Ok(())
}

/// Applies one `--set stage.key=value` (or `backend.key=value`, `name=value`). The value is read
/// as TOML (`10`, `[10, 100]`, `true`, `"x"`); anything that is not valid TOML is a plain string.
fn apply_set(raw: &mut RawPipeline, assignment: &str) -> Result<(), PipelineError> {
    let origin = Origin {
        file: format!("--set {assignment}"),
        line: 0,
    };
    let (path, text) = assignment
        .split_once('=')
        .ok_or_else(|| err(&origin, "", "expected `stage.key=value`"))?;
    let path = path.trim();
    let value = match DeValue::parse(text.trim()) {
        Ok(v) => to_json(v.get_ref(), &origin, path)?,
        Err(_) => Value::String(text.trim().to_string()),
    };
    let parts: Vec<&str> = path.split('.').collect();
    let parts: &[&str] = if parts.first() == Some(&"stage") {
        &parts[1..]
    } else {
        &parts
    };
    match parts {
        ["name"] => {
            raw.name = Some(Located { value, origin });
        }
        ["backend", key] => {
            raw.backend
                .insert(key.to_string(), Located { value, origin });
        }
        ["executor", key] => {
            raw.executor
                .insert(key.to_string(), Located { value, origin });
        }
        ["matrix", axis] => {
            raw.matrix
                .insert(axis.to_string(), Located { value, origin });
        }
        [stage, key, rest @ ..] => {
            let Some(entry) = raw.stages.get_mut(*stage) else {
                let names: Vec<&str> = raw.stages.keys().map(String::as_str).collect();
                return Err(err(
                    &origin,
                    path,
                    format!(
                        "no stage `{stage}` (stages: {}){}",
                        names.join(", "),
                        did_you_mean(stage, names.iter().copied())
                    ),
                ));
            };
            if rest.is_empty() {
                entry
                    .params
                    .insert(key.to_string(), Located { value, origin });
            } else {
                let slot = entry
                    .params
                    .entry(key.to_string())
                    .or_insert_with(|| Located {
                        value: Value::Object(Default::default()),
                        origin: origin.clone(),
                    });
                let mut node = &mut slot.value;
                for part in &rest[..rest.len() - 1] {
                    if !node.is_object() {
                        *node = Value::Object(Default::default());
                    }
                    node = node
                        .as_object_mut()
                        .map(|m| m.entry(part.to_string()).or_insert(Value::Null))
                        .ok_or_else(|| err(&origin, path, "not a table"))?;
                }
                if !node.is_object() {
                    *node = Value::Object(Default::default());
                }
                if let Some(m) = node.as_object_mut() {
                    m.insert(rest[rest.len() - 1].to_string(), value);
                }
                slot.origin = origin;
            }
        }
        _ => {
            return Err(err(
                &origin,
                path,
                "expected `stage.key=value`, `backend.key=value`, `matrix.axis=value` or \
                 `name=value`",
            ))
        }
    }
    Ok(())
}

/// Reads, merges, overrides and validates a pipeline file.
pub fn load(path: &Path, sets: &[String], registry: &Registry) -> Result<Pipeline, PipelineError> {
    let mut raw = RawPipeline::default();
    parse_file(path, &mut raw, 0, &mut Vec::new())?;
    // Sets on the matrix or on a template apply before expansion; sets on a plain or expanded
    // stage name after it.
    let (before, after): (Vec<&String>, Vec<&String>) =
        sets.iter().partition(|s| set_applies_before_expansion(s));
    for s in before {
        apply_set(&mut raw, s)?;
    }
    let axes = matrix::parse_axes(&raw.matrix)?;
    raw.stages = matrix::expand(&axes, std::mem::take(&mut raw.stages))?;
    for s in after {
        apply_set(&mut raw, s)?;
    }
    validate(path, raw, registry)
}

/// True for `--set matrix.AXIS=...` and for sets on a template stage (`retrieve_{dataset}.k=...`).
fn set_applies_before_expansion(assignment: &str) -> bool {
    let path = assignment
        .split_once('=')
        .map_or(assignment, |(p, _)| p)
        .trim();
    let path = path.strip_prefix("stage.").unwrap_or(path);
    path.starts_with("matrix.") || path.split('.').next().is_some_and(|s| s.contains('{'))
}

fn validate(path: &Path, raw: RawPipeline, registry: &Registry) -> Result<Pipeline, PipelineError> {
    let file_origin = Origin {
        file: path.display().to_string(),
        line: 0,
    };
    let name = pipeline_name(&raw, &file_origin)?;
    let backend = backend_table(&raw)?;
    if raw.stages.is_empty() {
        return Err(err(
            &file_origin,
            "stage",
            "the pipeline declares no [stage.NAME]",
        ));
    }
    // First pass: kinds, params, defaults, outputs.
    let mut stages = Vec::new();
    let mut origins: HashMap<String, HashMap<String, Origin>> = HashMap::new();
    for (sname, rs) in &raw.stages {
        let (decl, stage_origins) =
            declare_stage(sname, rs, &file_origin, registry).map_err(|e| naming_instance(e, rs))?;
        origins.insert(sname.clone(), stage_origins);
        stages.push(decl);
    }
    // Second pass: inputs (files must exist; references must name a stage output).
    let outputs_by_stage: BTreeMap<String, Vec<String>> = stages
        .iter()
        .map(|s| (s.name.clone(), s.outputs.clone()))
        .collect();
    let mut missing = Vec::new();
    for stage in &mut stages {
        if let Some(kind) = registry.get(&stage.kind) {
            let origins = &origins[&stage.name];
            stage.inputs = stage_inputs(stage, kind, origins, &outputs_by_stage, &mut missing)
                .map_err(|e| naming_instance(e, &raw.stages[&stage.name]))?;
        }
    }
    if let Some(e) = missing_files_error(missing, &file_origin) {
        return Err(e);
    }
    check_backend_values(&raw, &backend, &file_origin)?;
    let executor = executor_config(&raw, &file_origin)?;
    for stage in &mut stages {
        let rs = &raw.stages[&stage.name];
        stage.slurm = stage_slurm_options(&executor, rs, &stage.name)?;
        let splits = registry
            .get(&stage.kind)
            .is_some_and(|k| k.splits_into_tasks());
        if stage.slurm.array_tasks.is_some_and(|n| n > 1) && !splits {
            let origin = rs.params.get("slurm").map(|l| l.origin.clone());
            return Err(err(
                origin.as_ref().unwrap_or(&stage.header),
                format!("stage.{}.slurm.array_tasks", stage.name),
                format!(
                    "`{}` stages do not split into array tasks (encode and retrieve do)",
                    stage.kind
                ),
            ));
        }
    }
    Ok(Pipeline {
        name,
        file: path.to_path_buf(),
        backend: Value::Object(backend),
        executor,
        stages,
    })
}

/// Adds which template and matrix values a stage came from to an error about it.
fn naming_instance(mut e: PipelineError, stage: &RawStage) -> PipelineError {
    if let Some(instance) = &stage.instance_of {
        e.message = format!("{} (in {instance})", e.message);
    }
    e
}

/// One error naming every input file that does not exist (so a user fetching data sees the whole
/// list at once), or `None` when all exist.
fn missing_files_error(missing: Vec<PipelineError>, file_origin: &Origin) -> Option<PipelineError> {
    match missing.len() {
        0 => None,
        1 => missing.into_iter().next(),
        n => {
            let lines: Vec<String> = missing
                .iter()
                .map(|e| format!("  {}", e.to_string().trim_end_matches(RELATIVE_PATHS)))
                .collect();
            Some(err(
                file_origin,
                "",
                format!(
                    "{n} input files not found (relative paths are resolved from the current \
                     directory):\n{}",
                    lines.join("\n")
                ),
            ))
        }
    }
}

/// The `[executor]` table, checked (errors at the offending key's line).
fn executor_config(
    raw: &RawPipeline,
    file_origin: &Origin,
) -> Result<crate::executor::ExecutorConfig, PipelineError> {
    let table: serde_json::Map<String, Value> = raw
        .executor
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    crate::executor::ExecutorConfig::from_table(&table).map_err(|e| {
        let origin = raw
            .executor
            .get(&e.key)
            .map(|l| l.origin.clone())
            .unwrap_or_else(|| file_origin.clone());
        err(&origin, format!("executor.{}", e.key), e.message)
    })
}

/// A stage's `sbatch` options: the executor's, overridden by its `slurm` table.
fn stage_slurm_options(
    executor: &crate::executor::ExecutorConfig,
    stage: &RawStage,
    name: &str,
) -> Result<crate::executor::SlurmOptions, PipelineError> {
    let mut options = executor.slurm.clone();
    let Some(table) = stage.params.get("slurm") else {
        return Ok(options);
    };
    let key = format!("stage.{name}.slurm");
    let map = table
        .value
        .as_object()
        .ok_or_else(|| err(&table.origin, &key, "expected a table [stage.NAME.slurm]"))?;
    options
        .apply(map, crate::executor::STAGE_SLURM_KEYS)
        .map_err(|e| err(&table.origin, format!("{key}.{}", e.key), e.message))?;
    Ok(options)
}

/// The pipeline's `name`.
fn pipeline_name(raw: &RawPipeline, file_origin: &Origin) -> Result<String, PipelineError> {
    match &raw.name {
        Some(Located {
            value: Value::String(s),
            ..
        }) if !s.trim().is_empty() => Ok(s.clone()),
        Some(l) => Err(err(&l.origin, "name", "must be a non-empty string")),
        None => Err(err(file_origin, "name", "missing `name = \"...\"`")),
    }
}

/// The `[backend]` table, with its keys checked.
fn backend_table(raw: &RawPipeline) -> Result<serde_json::Map<String, Value>, PipelineError> {
    let mut backend = serde_json::Map::new();
    let backend_keys = ["kind", "devices", "threads", "precision"];
    for (k, v) in &raw.backend {
        if !backend_keys.contains(&k.as_str()) {
            return Err(err(
                &v.origin,
                format!("backend.{k}"),
                format!(
                    "unknown backend key (valid: {}){}",
                    backend_keys.join(", "),
                    did_you_mean(k, backend_keys.iter().copied())
                ),
            ));
        }
        backend.insert(k.clone(), v.value.clone());
    }
    Ok(backend)
}

/// The `[backend]` values no stage could run with (checked without opening a device).
fn check_backend_values(
    raw: &RawPipeline,
    backend: &serde_json::Map<String, Value>,
    file_origin: &Origin,
) -> Result<(), PipelineError> {
    let table = Value::Object(backend.clone());
    let Err(ParamError { key, message }) = splade_stages::model::backend::check_backend(&table)
    else {
        return Ok(());
    };
    let origin = raw
        .backend
        .get(&key)
        .map(|l| l.origin.clone())
        .unwrap_or_else(|| file_origin.clone());
    Err(err(&origin, format!("backend.{key}"), message))
}

/// One `[stage.NAME]` table as a declaration (inputs still empty), and where each param was set.
fn declare_stage(
    sname: &str,
    rs: &RawStage,
    file_origin: &Origin,
    registry: &Registry,
) -> Result<(StageDecl, HashMap<String, Origin>), PipelineError> {
    let header = rs.header.clone().unwrap_or_else(|| file_origin.clone());
    let (kind_name, kind) = stage_kind(sname, rs, &header, registry)?;
    let (params, stage_origins) = canonical_params(sname, rs, kind, &header)?;
    if let Err(ParamError { key, message }) = kind.check(&params) {
        let o = stage_origins
            .get(&key)
            .cloned()
            .unwrap_or_else(|| header.clone());
        return Err(err(&o, format!("stage.{sname}.{key}"), message));
    }
    let outputs = kind.outputs(&params);
    let decl = StageDecl {
        name: sname.to_string(),
        kind: kind_name,
        header,
        params,
        inputs: Vec::new(),
        outputs,
        slurm: Default::default(),
    };
    Ok((decl, stage_origins))
}

/// The stage's `kind`, looked up in the registry.
fn stage_kind<'r>(
    sname: &str,
    rs: &RawStage,
    header: &Origin,
    registry: &'r Registry,
) -> Result<(String, &'r dyn Stage), PipelineError> {
    let kind_loc = rs.params.get("kind").ok_or_else(|| {
        err(
            header,
            format!("stage.{sname}"),
            format!(
                "missing `kind` (known kinds: {})",
                registry.names().join(", ")
            ),
        )
    })?;
    let kind_name = kind_loc.value.as_str().unwrap_or_default();
    let kind = registry.get(kind_name).ok_or_else(|| {
        err(
            &kind_loc.origin,
            format!("stage.{sname}.kind"),
            format!(
                "unknown stage kind `{kind_name}` (known: {}){}",
                registry.names().join(", "),
                did_you_mean(kind_name, registry.names().into_iter())
            ),
        )
    })?;
    Ok((kind_name.to_string(), kind))
}

/// The stage's params checked against the kind's specs, with defaults filled, in the kind's
/// declared order (the canonical form fingerprints are made of).
fn canonical_params(
    sname: &str,
    rs: &RawStage,
    kind: &dyn Stage,
    header: &Origin,
) -> Result<(Value, HashMap<String, Origin>), PipelineError> {
    let specs = kind.params();
    let mut params = serde_json::Map::new();
    let mut stage_origins = HashMap::new();
    // `kind` names the kind; `slurm` says where it runs (not a param, not fingerprinted).
    for (key, loc) in rs
        .params
        .iter()
        .filter(|(k, _)| *k != "kind" && *k != "slurm")
    {
        let full = format!("stage.{sname}.{key}");
        let Some(spec) = specs.iter().find(|s| s.name == key) else {
            let valid: Vec<&str> = specs.iter().map(|s| s.name).collect();
            return Err(err(
                &loc.origin,
                full,
                format!(
                    "unknown param for kind `{}` (valid: {}){}",
                    kind.kind(),
                    valid.join(", "),
                    did_you_mean(key, valid.iter().copied())
                ),
            ));
        };
        let value = spec
            .ty
            .canonicalize(&loc.value)
            .map_err(|m| err(&loc.origin, &full, m))?;
        params.insert(key.clone(), value);
        stage_origins.insert(key.clone(), loc.origin.clone());
    }
    let mut ordered = serde_json::Map::new();
    for spec in specs {
        let value = match params.remove(spec.name) {
            Some(v) => v,
            None => spec
                .default_value()
                .ok_or_else(|| missing(sname, spec, header))?,
        };
        ordered.insert(spec.name.to_string(), value);
    }
    Ok((Value::Object(ordered), stage_origins))
}

fn missing(sname: &str, spec: &ParamSpec, header: &Origin) -> PipelineError {
    err(
        header,
        format!("stage.{sname}.{}", spec.name),
        format!(
            "missing required param: {} ({})",
            spec.doc,
            spec.ty.describe()
        ),
    )
}

/// Params naming a model directory, which may also be a Hugging Face name (see [`crate::hub`]).
const MODEL_PARAMS: &[&str] = &["model", "query_model"];

/// The stage's inputs: files that must exist, references that must name a stage output.
fn stage_inputs(
    stage: &StageDecl,
    kind: &dyn Stage,
    origins: &HashMap<String, Origin>,
    outputs_by_stage: &BTreeMap<String, Vec<String>>,
    missing: &mut Vec<PipelineError>,
) -> Result<Vec<InputDecl>, PipelineError> {
    let mut inputs = Vec::new();
    for spec in kind.params() {
        let value = &stage.params[spec.name];
        if value.is_null() {
            continue;
        }
        let origin = origins
            .get(spec.name)
            .cloned()
            .unwrap_or_else(|| stage.header.clone());
        let full = format!("stage.{}.{}", stage.name, spec.name);
        let is_model = MODEL_PARAMS.contains(&spec.name);
        let file = |path: &str, key: String, full: &str, origin: Origin| {
            let path = if is_model {
                crate::hub::resolve_model(path).map_err(|m| err(&origin, full, m))?
            } else {
                let path = PathBuf::from(path);
                check_exists(&path, &origin, full)?;
                path
            };
            Ok::<_, PipelineError>(InputDecl::File { key, path, origin })
        };
        let text = value.as_str().unwrap_or_default();
        let accepted = kind.accepts(spec.name);
        let typed = |decl: InputDecl, key: &str| check_holds(decl, accepted, key);
        let mut found = |result: Result<InputDecl, PipelineError>| match result {
            Ok(decl) => inputs.push(decl),
            Err(e) => missing.push(e),
        };
        match spec.ty {
            ParamType::File => found(file(text, spec.name.into(), &full, origin)),
            ParamType::FileMap => {
                for (entry, v) in value.as_object().into_iter().flatten() {
                    found(file(
                        v.as_str().unwrap_or_default(),
                        format!("{}.{entry}", spec.name),
                        &format!("{full}.{entry}"),
                        origin.clone(),
                    ));
                }
            }
            ParamType::FileOrArtifact
                if !text
                    .split_once('.')
                    .is_some_and(|(target, _)| outputs_by_stage.contains_key(target)) =>
            {
                found(file(text, spec.name.into(), &full, origin))
            }
            ParamType::FileOrArtifact | ParamType::Artifact => found(Ok(typed(
                resolve_reference(text, spec.name, outputs_by_stage, origin, &full)?,
                &full,
            )?)),
            ParamType::ArtifactRecords(field) => {
                for (i, record) in value.as_array().into_iter().flatten().enumerate() {
                    let reference = record[field].as_str().unwrap_or_default();
                    let item = format!("{full}[{i}].{field}");
                    found(Ok(typed(
                        resolve_reference(
                            reference,
                            &format!("{}.{i}", spec.name),
                            outputs_by_stage,
                            origin.clone(),
                            &item,
                        )?,
                        &item,
                    )?));
                }
            }
            _ => {}
        }
    }
    Ok(inputs)
}

/// Refuses a reference to an output that holds something the param does not take (qrels where
/// documents are expected), naming what each is.
fn check_holds(
    decl: InputDecl,
    accepted: Option<&'static [splade_stages::contract::Holds]>,
    key: &str,
) -> Result<InputDecl, PipelineError> {
    let (
        Some(accepted),
        InputDecl::Artifact {
            stage,
            output,
            origin,
            ..
        },
    ) = (accepted, &decl)
    else {
        return Ok(decl);
    };
    let holds = splade_stages::contract::Holds::of_output(output);
    if accepted.contains(&holds) {
        return Ok(decl);
    }
    let wanted: Vec<&str> = accepted.iter().map(|h| h.describe()).collect();
    Err(err(
        origin,
        key,
        format!(
            "`{stage}.{output}` holds {}, but this param takes {}",
            holds.describe(),
            wanted.join(" or ")
        ),
    ))
}

/// Resolves a reference `"<stage>.<output>"` to an artifact input, or says what is wrong with it.
fn resolve_reference(
    reference: &str,
    key: &str,
    outputs_by_stage: &BTreeMap<String, Vec<String>>,
    origin: Origin,
    full: &str,
) -> Result<InputDecl, PipelineError> {
    let Some((target, output)) = reference.split_once('.') else {
        return Err(err(
            &origin,
            full,
            format!("`{reference}` is not a reference \"<stage>.<output>\""),
        ));
    };
    let Some(outs) = outputs_by_stage.get(target) else {
        let names: Vec<&str> = outputs_by_stage.keys().map(String::as_str).collect();
        return Err(err(
            &origin,
            full,
            format!(
                "`{reference}` names no stage `{target}` (stages: {}){}",
                names.join(", "),
                did_you_mean(target, names.iter().copied())
            ),
        ));
    };
    if !outs.iter().any(|x| x == output) {
        return Err(err(
            &origin,
            full,
            format!(
                "stage `{target}` has no output `{output}` (outputs: {}){}",
                outs.join(", "),
                did_you_mean(output, outs.iter().map(String::as_str))
            ),
        ));
    }
    Ok(InputDecl::Artifact {
        key: key.into(),
        stage: target.into(),
        output: output.into(),
        origin,
    })
}

/// The hint ending every file-not-found message.
const RELATIVE_PATHS: &str = " (relative paths are resolved from the current directory)";

fn check_exists(p: &Path, origin: &Origin, key: &str) -> Result<(), PipelineError> {
    if p.exists() {
        Ok(())
    } else {
        Err(err(
            origin,
            key,
            format!("file `{}` not found{RELATIVE_PATHS}", p.display()),
        ))
    }
}
