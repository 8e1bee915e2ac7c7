//! `train`: SPLADE training in burn — ranking losses and their weighted mixes, FLOPS/L1 sparsity
//! regularization with the quadratic λ warm-up, AdamW with linear warm-up/decay, gradient
//! accumulation, data parallelism over several devices with global in-batch negatives,
//! step-level checkpoints that resume bit-identically, validation with best-model selection, and
//! a Hugging Face model directory as output.

pub mod checkpoint;
pub mod encoders;
pub mod examples;
mod files;
pub mod losses;
mod params;
pub mod prefetch;
pub mod regularizer;
pub mod step;
mod texts;
pub mod validation;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, ModuleOptimizer};
use burn::tensor::Device;
use serde_json::{json, Map, Value};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::domain::{IdText, Qrel};
use crate::error::{Result, StageError};
use crate::model::export::export_hf;
use crate::model::loader::load_mlm_as;
use crate::model::network::MlmEncoder;
use crate::model::{devices_from_backend, ModelConfig, TextTokenizer};
use crate::params::ParamError;
use crate::parquet_io::{read_id_text, read_qrels};
use checkpoint::TrainState;
use encoders::{EncoderPair, Encoding, QueryEncoding};
use examples::{TrainingInputs, TrainingSet};
use files::{append_line, file_len, jsonl_to_parquet, remove_dir_if_exists, RunFiles};
pub use params::{Init, QueryEncoder, Select, TrainParams};
use regularizer::{LearningRateSchedule, RegularizerKind, TrainClock};
use step::{DataParallel, Objective, PendingStats, StepPosition, StepStats};
use validation::ValidationSet;

/// The train stage kind.
pub struct Train;

/// The outputs holding trained weights (Hugging Face directories).
const MODEL_OUTPUTS: [&str; 2] = ["model", "query_model"];

impl TypedStage for Train {
    type Params = TrainParams;
    const KIND: &'static str = "train";
    const STOPS_AT_CHECKPOINTS: bool = true;
    const VERSION: u32 = 2;
    const DOC: &'static str = "negatives + texts (+ teacher scores) → a trained SPLADE model (Hugging Face directory) + train log";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "negatives" => Some(&[Holds::Negatives]),
            "docs" | "queries" | "validation_queries" | "validation_docs" => Some(&[Holds::Texts]),
            "teacher_scores" => Some(&[Holds::TeacherScores]),
            "validation_qrels" => Some(&[Holds::Qrels]),
            "model" | "query_model" => Some(&[Holds::Model]),
            _ => None,
        }
    }

    fn outputs(&self, p: &TrainParams) -> Vec<String> {
        let mut out = vec!["model".to_string(), "train_log".to_string()];
        if p.query_encoder == QueryEncoder::Separate {
            out.push("query_model".into());
        }
        if p.validate_every > 0 {
            out.push("validation".into());
        }
        out
    }

    fn check(&self, p: &TrainParams) -> std::result::Result<(), ParamError> {
        p.check()
    }

    fn run(&self, p: TrainParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let stage_started = Instant::now();
        let (trainer, model) = Trainer::prepare(p, ctx)?;
        let mut progress = trainer.restore_checkpoint(ctx, model)?;
        let resumed_at = progress.state.step;
        if progress.state.step == 0 {
            trainer.validate(0, &progress.model, &mut progress.state)?;
        }
        let startup_seconds = stage_started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (progress, last) = trainer.training_loop(ctx, progress)?;
        let (log_rows, validation_log) = trainer.export_result(ctx, &progress.model)?;
        let report = Report {
            resumed_at,
            log_rows,
            last,
            best: progress.state.best,
            seconds: started.elapsed().as_secs_f64(),
            startup_seconds,
            validation_log,
        };
        Ok(trainer.outcome(&ctx.name, &report))
    }
}

/// A training run's fixed parts: what the optimization loop reads and where it writes.
struct Trainer {
    p: TrainParams,
    objective: Objective,
    sources: ModelSources,
    /// The separate query encoder's config (with the run's dropout), for its export.
    query_cfg: Option<ModelConfig>,
    set: Arc<TrainingSet>,
    batches: prefetch::BatchSource,
    validation: Option<ValidationSet>,
    /// The devices (the first is the main one) and the encoding.
    parallel: DataParallel,
    lr_schedule: LearningRateSchedule,
    files: RunFiles,
}

/// What changes as the run trains; exactly what a checkpoint saves.
struct Progress {
    state: TrainState,
    model: EncoderPair,
    optim: ModuleOptimizer,
}

/// An optimizer step whose figures are still on the device; its train-log line is written when
/// they are read (every `log_every` steps, before a checkpoint, at the end).
struct PendingRow {
    t: u64,
    lr: f64,
    seconds: f64,
    micro: Vec<PendingStats>,
}

/// Loss and sparsity of an optimizer step, for the final stats and summary.
#[derive(Debug, Default, Clone, Copy)]
struct StepSummary {
    loss: f64,
    nnz_q: f64,
    nnz_d: f64,
}

/// Loss terms and sparsity figures of one optimizer step, averaged over its micro-batches.
#[derive(Debug, Default)]
struct StepMeans {
    terms: BTreeMap<String, f64>,
    nnz_q: f64,
    nnz_d: f64,
    flops_d: f64,
}

/// How a finished run went, for the stats and the summary.
struct Report {
    resumed_at: u64,
    log_rows: u64,
    last: StepSummary,
    best: Option<(f64, u64)>,
    /// From the first optimizer step of this attempt to the written outputs.
    seconds: f64,
    /// From the stage's start to its first optimizer step: loading the examples, texts, teacher
    /// scores and model, restoring a checkpoint, the step-0 validation.
    startup_seconds: f64,
    /// The validation log's text (its first line is the step-0 validation, if any).
    validation_log: String,
}

/// The model directories a run starts from, the document model's config and the tokenizers.
struct ModelSources {
    /// The document (or shared) model's directory.
    dir: PathBuf,
    /// Its config, with the run's dropout.
    cfg: ModelConfig,
    /// The query model's directory: `query_model`, else `dir`.
    query_dir: PathBuf,
    query_tok: TextTokenizer,
    doc_tok: TextTokenizer,
}

impl Trainer {
    /// Everything a run needs before its first step, and the encoders to train (initialised).
    fn prepare(p: TrainParams, ctx: &StageContext) -> Result<(Self, EncoderPair)> {
        let objective = p.objective()?;
        let devices = training_devices(ctx, p.batch_size as usize)?;
        let sources = ModelSources::load(ctx, &p)?;
        let files = RunFiles::new(ctx.staging_dir());
        let set = Arc::new(load_training_set(ctx, &p, &objective, &files.texts)?);
        let batches = prefetch::BatchSource::new(
            Arc::clone(&set),
            &sources.query_tok,
            &sources.doc_tok,
            p.batch_size as usize,
        );
        let validation = load_validation_set(ctx, &p)?;
        let (model, query_cfg) = build_encoders(&p, &sources, &devices[0])?;
        let parallel = DataParallel::new(devices, encoding(&p, &sources), ctx.threads)?;
        let trainer = Trainer {
            lr_schedule: p.lr_schedule(),
            files,
            p,
            objective,
            sources,
            query_cfg,
            set,
            batches,
            validation,
            parallel,
        };
        Ok((trainer, model))
    }

    /// `model` and a fresh optimizer, restored from the last checkpoint this fingerprint committed
    /// (the logs cut back to it), or else at step 0 with what an earlier attempt left cleared.
    fn restore_checkpoint(&self, ctx: &StageContext, model: EncoderPair) -> Result<Progress> {
        let optim = self.p.optimizer();
        let progress = match committed_checkpoint(ctx, &self.files) {
            Some(dir) => self.resume_from(&dir, model, optim)?,
            None => {
                self.files.start_fresh()?;
                Progress {
                    state: TrainState::default(),
                    model,
                    optim,
                }
            }
        };
        let root = &self.files.checkpoints;
        std::fs::create_dir_all(root).map_err(|e| StageError::io(root, e))?;
        Ok(progress)
    }

    /// Loads the checkpoint in `dir` into `model` and `optim` and cuts the logs back to it.
    fn resume_from(
        &self,
        dir: &Path,
        model: EncoderPair,
        optim: ModuleOptimizer,
    ) -> Result<Progress> {
        let (state, model, optim) = checkpoint::load(dir, model, optim)?;
        self.files
            .cut_logs(state.log_bytes, state.validation_bytes)?;
        tracing::info!(
            step = state.step,
            "resuming training from {}",
            dir.display()
        );
        Ok(Progress {
            state,
            model,
            optim,
        })
    }

    /// Runs the optimizer steps left, validating and checkpointing on schedule; returns the
    /// progress at the end and the last step's figures.
    fn training_loop(
        &self,
        ctx: &StageContext,
        mut progress: Progress,
    ) -> Result<(Progress, StepSummary)> {
        let steps = self.p.steps as u64;
        let bar = ctx.progress(steps, "steps");
        bar.set_position(progress.state.step);
        let mut last = StepSummary::default();
        let mut pending = Vec::new();
        while progress.state.step < steps {
            let row;
            (progress, row) = self.optimizer_step(progress)?;
            pending.push(row);
            let t = progress.state.step;
            let cancelled = ctx.cancelled() && t < steps;
            if cancelled || self.log_due(t) {
                last = self.write_log(&mut pending)?.unwrap_or(last);
            }
            self.on_schedule(ctx, &mut progress)?;
            bar.set_position(t);
            if cancelled {
                return Err(self.stop_at_checkpoint(ctx, &mut progress)?);
            }
        }
        bar.finish_and_clear();
        Ok((progress, last))
    }

    /// One optimizer step: the micro-batches' gradients and the AdamW update; its figures stay
    /// on the device (see [`PendingRow`]).
    fn optimizer_step(&self, mut progress: Progress) -> Result<(Progress, PendingRow)> {
        let started = Instant::now();
        let step = progress.state.step;
        let t = step + 1;
        let lr = self.lr_schedule.at(step);
        let (mut acc, micro) = self.accumulate(&progress.model, step, t)?;
        progress.model = progress.optim.step(lr, progress.model, acc.grads());
        progress.state.step = t;
        let seconds = started.elapsed().as_secs_f64();
        Ok((
            progress,
            PendingRow {
                t,
                lr,
                seconds,
                micro,
            },
        ))
    }

    /// Whether step `t`'s figures are read now: every `log_every` steps, at a checkpoint (whose
    /// recorded log length must cover its steps) and at the end.
    fn log_due(&self, t: u64) -> bool {
        t.is_multiple_of(self.p.log_every as u64)
            || t.is_multiple_of(self.p.checkpoint_every as u64)
            || t == self.p.steps as u64
    }

    /// Reads the pending steps' figures in one download, checks that every loss term is finite
    /// (an error naming the first step that diverged) and appends their train-log lines; the
    /// last step's summary, if any was pending.
    fn write_log(&self, pending: &mut Vec<PendingRow>) -> Result<Option<StepSummary>> {
        let gas = self.p.gradient_accumulation as u64;
        let mut rows = std::mem::take(pending);
        let counts: Vec<usize> = rows.iter().map(|r| r.micro.len()).collect();
        let all = rows.iter_mut().flat_map(|r| r.micro.drain(..)).collect();
        let mut stats = PendingStats::read_all(all)?.into_iter();
        let mut last = None;
        for (row, count) in rows.iter().zip(counts) {
            let mut means = StepMeans::default();
            stats.by_ref().take(count).for_each(|s| means.add(s, gas));
            means.check_finite(row.t)?;
            append_line(
                &self.files.log,
                &self.log_row(row.t, row.lr, &means, row.seconds),
            )?;
            last = Some(means.summary());
        }
        Ok(last)
    }

    /// The gradients of step `t`'s micro-batches, each scaled by 1/accumulation, and their
    /// figures (on the device).
    fn accumulate(
        &self,
        model: &EncoderPair,
        step: u64,
        t: u64,
    ) -> Result<(GradientsAccumulator<EncoderPair>, Vec<PendingStats>)> {
        let gas = self.p.gradient_accumulation as u64;
        let mut acc = GradientsAccumulator::<EncoderPair>::new();
        let mut figures = Vec::with_capacity(gas as usize);
        for micro in 0..gas {
            let index = step * gas + micro;
            let batch = self.batches.batch(index)?;
            let at = StepPosition {
                t,
                micro: index,
                seed: self.p.seed,
            };
            let stats = self.parallel.accumulate(
                model,
                step,
                &batch,
                &self.objective,
                at,
                1.0 / gas as f64,
                &mut acc,
            )?;
            figures.push(stats);
        }
        Ok((acc, figures))
    }

    /// The train-log line of step `t`: lr, λs, loss terms, sparsity and throughput.
    fn log_row(&self, t: u64, lr: f64, means: &StepMeans, seconds: f64) -> Value {
        let mut row = Map::new();
        row.insert("step".into(), json!(t));
        row.insert("lr".into(), json!(lr));
        for r in &self.objective.regularizers {
            let name = match r.kind {
                RegularizerKind::Flops => "flops",
                RegularizerKind::L1 => "l1",
            };
            // The λ of the step's last micro-batch.
            let clock = TrainClock {
                step: t,
                micro: t * self.p.gradient_accumulation as u64,
            };
            row.insert(format!("lambda_{name}_q"), json!(r.query.at(clock)));
            row.insert(format!("lambda_{name}_d"), json!(r.doc.at(clock)));
        }
        for (k, v) in &means.terms {
            row.insert(format!("loss_{k}"), json!(v));
        }
        row.insert("nnz_q".into(), json!(means.nnz_q));
        row.insert("nnz_d".into(), json!(means.nnz_d));
        row.insert("flops_d".into(), json!(means.flops_d));
        let secs = seconds.max(1e-9);
        let examples = (self.p.batch_size as u64 * self.p.gradient_accumulation as u64) as f64;
        row.insert("examples_per_s".into(), json!(examples / secs));
        Value::Object(row)
    }

    /// After a step: validation every `validate_every` steps and at the end, a checkpoint every
    /// `checkpoint_every` steps before the end.
    fn on_schedule(&self, ctx: &StageContext, progress: &mut Progress) -> Result<()> {
        let t = progress.state.step;
        let steps = self.p.steps as u64;
        if self.validation.is_some()
            && (t.is_multiple_of(self.p.validate_every as u64) || t == steps)
        {
            self.validate(t, &progress.model, &mut progress.state)?;
        }
        if t.is_multiple_of(self.p.checkpoint_every as u64) && t < steps {
            self.checkpoint(ctx, progress)?;
        }
        Ok(())
    }

    /// Measures the dev set at step `t` and logs it; the best step so far is kept in `state`
    /// (and its weights exported with `select = "best"`). Does nothing without validation.
    fn validate(&self, t: u64, model: &EncoderPair, state: &mut TrainState) -> Result<()> {
        let Some(v) = &self.validation else {
            return Ok(());
        };
        let workers = self.parallel.workers();
        let (mrr, recall) = v.measure(
            &self.parallel.replicas(model, t, workers.len()),
            workers,
            &self.parallel.encoding,
            &self.sources.query_tok,
            &self.sources.doc_tok,
        )?;
        append_line(
            &self.files.validation,
            &json!({"step": t, "mrr_at_10": mrr, "recall": recall}),
        )?;
        if state.best.is_none_or(|(b, _)| mrr > b) {
            state.best = Some((mrr, t));
            if self.p.select == Select::Best {
                self.export_to(model, &self.files.best)?;
            }
        }
        Ok(())
    }

    /// Cancellation: a checkpoint of the current step (unless the schedule just wrote it), then
    /// the error that tells the engine the stage stopped resumably.
    fn stop_at_checkpoint(
        &self,
        ctx: &StageContext,
        progress: &mut Progress,
    ) -> Result<StageError> {
        let t = progress.state.step;
        if !t.is_multiple_of(self.p.checkpoint_every as u64) {
            self.checkpoint(ctx, progress)?;
        }
        Ok(StageError::Cancelled(format!(
            "at step {t} (checkpoint written)"
        )))
    }

    /// Saves a checkpoint of the current step (with the logs' lengths), records it as the resume
    /// state, and removes the older ones.
    fn checkpoint(&self, ctx: &StageContext, progress: &mut Progress) -> Result<()> {
        let root = &self.files.checkpoints;
        progress.state.log_bytes = file_len(&self.files.log);
        progress.state.validation_bytes = file_len(&self.files.validation);
        let dir = checkpoint::save(root, &progress.state, &progress.model, &progress.optim)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ctx.save_resume_state(&json!({ "checkpoint": name, "step": progress.state.step }))?;
        checkpoint::prune(root, &dir)?;
        crate::contract::test_pause("SPLADE_TEST_TRAIN_CHECKPOINT_DELAY_MS");
        Ok(())
    }

    /// Writes the outputs (the selected weights, the logs as Parquet) and removes the working
    /// files; returns the train log's row count and the validation log's text.
    fn export_result(&self, ctx: &StageContext, model: &EncoderPair) -> Result<(u64, String)> {
        self.publish_model(model)?;
        let validation_log = std::fs::read_to_string(&self.files.validation).unwrap_or_default();
        let log_rows = jsonl_to_parquet(&self.files.log, &ctx.output_file("train_log"))?;
        if self.validation.is_some() {
            jsonl_to_parquet(&self.files.validation, &ctx.output_file("validation"))?;
        }
        self.files.remove()?;
        Ok((log_rows, validation_log))
    }

    /// Moves the best weights (with `select = "best"`, once exported) or else `model`'s into the
    /// `model` (and `query_model`) outputs.
    fn publish_model(&self, model: &EncoderPair) -> Result<()> {
        let staging = &self.files.staging;
        for name in MODEL_OUTPUTS {
            remove_dir_if_exists(&staging.join(name))?;
        }
        if !(self.p.select == Select::Best && self.files.best.is_dir()) {
            self.export_to(model, &self.files.best)?;
        }
        for name in MODEL_OUTPUTS {
            let from = self.files.best.join(name);
            if from.is_dir() {
                let to = staging.join(name);
                std::fs::rename(&from, &to).map_err(|e| StageError::io(&to, e))?;
            }
        }
        Ok(())
    }

    /// Exports `model` as Hugging Face directories into `to` (see [`export_pair`]).
    fn export_to(&self, model: &EncoderPair, to: &Path) -> Result<()> {
        let query = self
            .query_cfg
            .as_ref()
            .map(|c| (c, self.sources.query_dir.as_path()));
        export_pair(model, &self.sources.cfg, &self.sources.dir, query, to)
    }

    /// The stats and the one-line summary of a finished run.
    fn outcome(&self, name: &str, report: &Report) -> StageOutcome {
        StageOutcome {
            stats: self.stats(report),
            summary: Some(self.summary(name, report)),
        }
    }

    /// The manifest stats: steps, resume point, data coverage, final figures, throughput, best
    /// validation.
    fn stats(&self, r: &Report) -> Map<String, Value> {
        let steps = self.p.steps as u64;
        let coverage = &self.set.coverage;
        let examples =
            (steps - r.resumed_at) * self.p.gradient_accumulation as u64 * self.p.batch_size as u64;
        let mut stats = Map::new();
        for (key, value) in [
            ("steps", json!(steps)),
            ("resumed_at_step", json!(r.resumed_at)),
            ("startup_s", json!(r.startup_seconds)),
            ("log_rows", json!(r.log_rows)),
            ("devices", json!(self.parallel.devices().len())),
            ("queries_in", json!(coverage.queries_in)),
            ("queries_used", json!(coverage.queries_used)),
            (
                "distinct_queries_used",
                json!(coverage.distinct_queries_used),
            ),
            ("dropped_no_positive", json!(coverage.dropped_no_positive)),
            ("dropped_no_negative", json!(coverage.dropped_no_negative)),
            ("dropped_no_teacher", json!(coverage.dropped_no_teacher)),
            (
                "negatives_without_teacher",
                json!(coverage.negatives_without_teacher),
            ),
            ("final_loss", json!(r.last.loss)),
            ("final_nnz_q", json!(r.last.nnz_q)),
            ("final_nnz_d", json!(r.last.nnz_d)),
            (
                "examples_per_s",
                json!(examples as f64 / r.seconds.max(1e-9)),
            ),
        ] {
            stats.insert(key.into(), value);
        }
        if let Some((mrr, at)) = r.best {
            stats.insert("best_mrr_at_10".into(), json!(mrr));
            stats.insert("best_step".into(), json!(at));
        }
        stats
    }

    /// `NAME: N steps on D device(s) over Q queries: final loss, nnz q/d[; dev MRR@10 ...]`
    /// (`over R rows of Q queries` when queries have several negatives rows).
    fn summary(&self, name: &str, r: &Report) -> String {
        let coverage = &self.set.coverage;
        let over = if coverage.queries_used == coverage.distinct_queries_used {
            format!("{} queries", coverage.queries_used)
        } else {
            format!(
                "{} negatives rows of {} queries",
                coverage.queries_used, coverage.distinct_queries_used
            )
        };
        let resumed = if r.resumed_at > 0 {
            format!(" (resumed at step {})", r.resumed_at)
        } else {
            String::new()
        };
        let mut summary = format!(
            "{}: {} steps on {} device(s) over {}{}: final loss {:.4}, nnz q/d {:.1}/{:.1}",
            name,
            self.p.steps,
            self.parallel.devices().len(),
            over,
            resumed,
            r.last.loss,
            r.last.nnz_q,
            r.last.nnz_d
        );
        if let Some((mrr, at)) = r.best {
            let start = first_validation(&r.validation_log)
                .map(|m| format!("{m:.4} at step 0, "))
                .unwrap_or_default();
            summary.push_str(&format!("; dev MRR@10 {start}best {mrr:.4} at step {at}"));
        }
        summary
    }
}

impl ModelSources {
    /// The model directories, the document model's config and both tokenizers; an error when a
    /// token length exceeds the model's position embeddings.
    fn load(ctx: &StageContext, p: &TrainParams) -> Result<Self> {
        let dir = ctx.input("model")?.path().to_path_buf();
        let cfg = model_config(&dir, p)?;
        let query_len = p.query_length();
        check_lengths(&cfg, p.max_length as usize, query_len)?;
        let query_dir = ctx
            .inputs
            .get("query_model")
            .map(|i| i.path().to_path_buf())
            .unwrap_or_else(|| dir.clone());
        let query_tok = TextTokenizer::load(&query_dir, query_len)?;
        let doc_tok = TextTokenizer::load(&dir, p.max_length as usize)?;
        Ok(ModelSources {
            dir,
            cfg,
            query_dir,
            query_tok,
            doc_tok,
        })
    }
}

impl StepMeans {
    /// Adds one of `gas` micro-batches' figures.
    fn add(&mut self, stats: StepStats, gas: u64) {
        for (k, v) in stats.terms {
            *self.terms.entry(k).or_default() += v / gas as f64;
        }
        self.nnz_q += stats.nnz_q / gas as f64;
        self.nnz_d += stats.nnz_d / gas as f64;
        self.flops_d += stats.flops_d / gas as f64;
    }

    /// An error naming the first loss term that is not finite: training diverged at step `t`.
    fn check_finite(&self, t: u64) -> Result<()> {
        match self.terms.iter().find(|(_, v)| !v.is_finite()) {
            Some((name, _)) => Err(StageError::Other(format!(
                "training diverged at step {t}: `{name}` is not finite (try a lower lr)"
            ))),
            None => Ok(()),
        }
    }

    /// The total loss and the sparsity of the step.
    fn summary(&self) -> StepSummary {
        StepSummary {
            loss: self.terms.get("total").copied().unwrap_or(f64::NAN),
            nnz_q: self.nnz_q,
            nnz_d: self.nnz_d,
        }
    }
}

/// A params error as the stage error it becomes at run time.
/// The backend's devices, as autodiff devices; the global batch must give each a query.
fn training_devices(ctx: &StageContext, batch_size: usize) -> Result<Vec<Device>> {
    let devices: Vec<_> = devices_from_backend(&ctx.backend)?
        .into_iter()
        .map(|d| d.autodiff())
        .collect();
    if devices.len() > batch_size {
        return Err(StageError::Param {
            key: "batch_size".into(),
            message: format!(
                "{} is smaller than the number of devices ({})",
                batch_size,
                devices.len()
            ),
        });
    }
    Ok(devices)
}

/// A model directory's config, with the run's dropout override.
fn model_config(dir: &Path, p: &TrainParams) -> Result<ModelConfig> {
    let mut c = ModelConfig::from_dir(dir)?;
    if let Some(d) = p.dropout {
        c.dropout = d;
    }
    Ok(c)
}

/// An error when the document or query length exceeds the model's position embeddings.
fn check_lengths(cfg: &ModelConfig, max_length: usize, query_len: usize) -> Result<()> {
    for (key, len) in [("max_length", max_length), ("query_max_length", query_len)] {
        if len > cfg.max_positions {
            return Err(StageError::Param {
                key: key.into(),
                message: format!(
                    "{len} exceeds the model's max_position_embeddings ({})",
                    cfg.max_positions
                ),
            });
        }
    }
    Ok(())
}

/// The negatives joined with the texts and, when a loss needs them, the teacher scores.
fn load_training_set(
    ctx: &StageContext,
    p: &TrainParams,
    objective: &Objective,
    texts_scratch: &Path,
) -> Result<TrainingSet> {
    // Teacher scores are read only when a loss uses them (160M MS MARCO scores are gigabytes),
    // and then only those of each query's own candidates.
    let teacher = match ctx.inputs.get("teacher_scores") {
        Some(t) if objective.needs_teacher() => Some(t.path()),
        _ => None,
    };
    let inputs = TrainingInputs {
        negatives: ctx.input("negatives")?.path(),
        docs: ctx.input("docs")?.path(),
        queries: ctx.input("queries")?.path(),
        teacher,
        texts_scratch,
    };
    TrainingSet::load(&inputs, p.negatives_per_query as usize, p.seed)
}

/// The dev set (its documents default to `docs`) when validation is on.
fn load_validation_set(ctx: &StageContext, p: &TrainParams) -> Result<Option<ValidationSet>> {
    if p.validate_every <= 0 {
        return Ok(None);
    }
    let docs_key = if ctx.inputs.contains_key("validation_docs") {
        "validation_docs"
    } else {
        "docs"
    };
    let queries = read_id_text(ctx.input("validation_queries")?.path())?;
    let qrels = read_qrels(ctx.input("validation_qrels")?.path())?;
    let docs = validation_docs(ctx.input(docs_key)?.path(), &queries, &qrels, p)?;
    Ok(Some(ValidationSet {
        queries,
        docs,
        qrels,
        recall_k: p.recall_k,
    }))
}

/// The documents validation encodes: all of them up to `validation_max_docs`; beyond, every
/// document the validation queries' qrels judge plus a sample of the others, chosen by a hash
/// of the id and the seed (deterministic, about `validation_max_docs` in all), so validation
/// costs the same on the toy and on 8.8M passages. Its MRR@10 is then measured against that
/// subset, as naver's validation measures against its own re-ranking subset.
fn validation_docs(
    path: &std::path::Path,
    queries: &IdText,
    qrels: &[Qrel],
    p: &TrainParams,
) -> Result<IdText> {
    let total = crate::parquet_io::count_rows(path)?;
    let limit = p.validation_max_docs as u64;
    if limit == 0 || total <= limit {
        return read_id_text(path);
    }
    let asked: HashSet<&str> = queries.ids.iter().map(String::as_str).collect();
    let judged: HashSet<&str> = qrels
        .iter()
        .filter(|q| asked.contains(q.qid.as_str()))
        .map(|q| q.did.as_str())
        .collect();
    let room = limit.saturating_sub(judged.len() as u64);
    let threshold = (room as f64 / total as f64 * u64::MAX as f64) as u64;
    let seed = p.seed.to_le_bytes();
    crate::parquet_io::read_id_text_where(path, |id| {
        judged.contains(id) || {
            let mut h = blake3::Hasher::new();
            h.update(&seed);
            h.update(id.as_bytes());
            let bytes = h.finalize();
            u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8])) < threshold
        }
    })
}

/// The encoders to train, in training mode, initialised on `main` after seeding it; with a
/// separate query encoder, also that encoder's config.
fn build_encoders(
    p: &TrainParams,
    sources: &ModelSources,
    main: &Device,
) -> Result<(EncoderPair, Option<ModelConfig>)> {
    main.seed(p.seed);
    let doc = init_encoder(p, &sources.dir, &sources.cfg, main)?;
    let (query_cfg, query) = if p.query_encoder == QueryEncoder::Separate {
        let c = model_config(&sources.query_dir, p)?;
        let m = init_encoder(p, &sources.query_dir, &c, main)?;
        (Some(c), Some(m))
    } else {
        (None, None)
    };
    if let Some(qc) = &query_cfg {
        check_shared_vocabulary(qc, &sources.cfg)?;
    }
    Ok((EncoderPair { doc, query }.train(), query_cfg))
}

/// An encoder of config `cfg`: the weights in `dir`, or a random initialisation of its shape.
fn init_encoder(
    p: &TrainParams,
    dir: &Path,
    cfg: &ModelConfig,
    main: &Device,
) -> Result<MlmEncoder> {
    match p.init {
        Init::Random => Ok(MlmEncoder::init_random(cfg, main)),
        Init::Pretrained => Ok(load_mlm_as(dir, cfg.clone(), main)?.1),
    }
}

/// An error unless the query and document models share one vocabulary.
fn check_shared_vocabulary(query: &ModelConfig, doc: &ModelConfig) -> Result<()> {
    if query.vocab_size != doc.vocab_size {
        return Err(StageError::Param {
            key: "query_model".into(),
            message: format!(
                "vocabulary of {} terms, the document model has {}: they must share one",
                query.vocab_size, doc.vocab_size
            ),
        });
    }
    Ok(())
}

/// How the run computes representations: pooling, vocabulary chunks, padding, query encoding
/// and precision.
fn encoding(p: &TrainParams, sources: &ModelSources) -> Encoding {
    let queries = match p.query_encoder {
        QueryEncoder::Shared => QueryEncoding::Shared,
        QueryEncoder::Separate => QueryEncoding::Separate,
        QueryEncoder::BagOfWords => QueryEncoding::BagOfWords {
            specials: Arc::new(sources.query_tok.special_ids().clone()),
            vocab: sources.cfg.vocab_size,
        },
    };
    Encoding {
        pooling: p.pooling,
        vocab_chunk: p.vocab_chunk as usize,
        pad: sources.cfg.pad_token_id,
        queries,
        precision: p.precision,
        dropout: sources.cfg.dropout,
    }
}

/// The checkpoint directory named by this fingerprint's resume state, if it still exists.
fn committed_checkpoint(ctx: &StageContext, files: &RunFiles) -> Option<PathBuf> {
    ctx.resume_state()
        .and_then(|s| {
            s.get("checkpoint")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .map(|name| files.checkpoints.join(name))
        .filter(|dir| dir.is_dir())
}

/// MRR@10 of the first validation line (step 0) of a validation log's text.
fn first_validation(text: &str) -> Option<f64> {
    let first: Value = serde_json::from_str(text.lines().next()?).ok()?;
    (first["step"] == 0)
        .then(|| first["mrr_at_10"].as_f64())
        .flatten()
}

/// Writes `to/model` (and `to/query_model` for separate encoders) as Hugging Face directories,
/// replacing `to` atomically.
fn export_pair(
    pair: &EncoderPair,
    cfg: &ModelConfig,
    source: &Path,
    query: Option<(&ModelConfig, &Path)>,
    to: &Path,
) -> Result<()> {
    let tmp: PathBuf = to.with_extension("tmp");
    remove_dir_if_exists(&tmp)?;
    let plain = pair.valid();
    export_hf(&plain.doc, cfg, source, &tmp.join("model"))?;
    if let (Some(q), Some((qcfg, qsource))) = (&plain.query, query) {
        export_hf(q, qcfg, qsource, &tmp.join("query_model"))?;
    }
    remove_dir_if_exists(to)?;
    std::fs::rename(&tmp, to).map_err(|e| StageError::io(to, e))
}

#[cfg(test)]
mod validation_subset_tests {
    use super::*;
    use crate::params::StageParams;

    fn params(max_docs: usize, seed: u64) -> TrainParams {
        TrainParams::with_defaults(&json!({
            "negatives": "n", "docs": "d", "queries": "q",
            "validation_max_docs": max_docs, "seed": seed,
        }))
        .unwrap()
    }

    #[test]
    fn a_large_collection_is_cut_to_judged_docs_and_a_deterministic_sample() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("docs.parquet");
        let docs = IdText {
            ids: (0..1000).map(|i| format!("d{i}")).collect(),
            texts: (0..1000).map(|i| format!("text {i}")).collect(),
        };
        crate::parquet_io::write_id_text(&path, &docs).unwrap();
        let queries = IdText {
            ids: (0..10).map(|i| format!("q{i}")).collect(),
            texts: vec![String::new(); 10],
        };
        let mut qrels: Vec<Qrel> = (0..30)
            .map(|i| Qrel {
                qid: format!("q{}", i % 10),
                did: format!("d{}", i * 31),
                rel: 1,
            })
            .collect();
        // A judgment of a query validation does not ask is not kept for its sake.
        qrels.push(Qrel {
            qid: "other".into(),
            did: "d999".into(),
            rel: 1,
        });

        let cut = validation_docs(&path, &queries, &qrels, &params(200, 1)).unwrap();
        for i in 0..30 {
            assert!(
                cut.ids.contains(&format!("d{}", i * 31)),
                "judged d{} kept",
                i * 31
            );
        }
        assert!(
            (120..=280).contains(&cut.ids.len()),
            "{} docs",
            cut.ids.len()
        );
        assert_eq!(cut.ids.len(), cut.texts.len());
        let again = validation_docs(&path, &queries, &qrels, &params(200, 1)).unwrap();
        assert_eq!(cut.ids, again.ids, "deterministic");
        let other_seed = validation_docs(&path, &queries, &qrels, &params(200, 2)).unwrap();
        assert_ne!(cut.ids, other_seed.ids, "the sample follows the seed");
        for all in [0, 1000, 5000] {
            let whole = validation_docs(&path, &queries, &qrels, &params(all, 1)).unwrap();
            assert_eq!(whole.ids.len(), 1000, "limit {all}");
        }
    }
}
