//! `train`: SPLADE training in burn — ranking losses and their weighted mixes, FLOPS/L1 sparsity
//! regularization with the quadratic λ warm-up, AdamW with linear warm-up/decay, gradient
//! accumulation, data parallelism over several devices with global in-batch negatives,
//! step-level checkpoints that resume bit-identically, validation with best-model selection, and
//! a Hugging Face model directory as output.

pub mod checkpoint;
pub mod encoders;
pub mod examples;
pub mod losses;
pub mod regularizer;
pub mod step;
pub mod validation;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::model::export::export_hf;
use crate::model::loader::load_mlm_as;
use crate::model::network::{MlmEncoder, PoolingKind};
use crate::model::{devices_from_backend, ModelConfig, TextTokenizer};
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, read_qrels, ParquetSink};
use checkpoint::TrainState;
use encoders::{EncoderPair, Encoding, Precision, QueryEncoding};
use examples::{read_teacher_scores, TrainingSet};
use losses::RankingLoss;
use regularizer::{LambdaSchedule, LearningRateSchedule, Regularizer, RegularizerKind};
use step::{DataParallel, Objective, StepPosition, TokenizedBatch};
use validation::ValidationSet;

/// The train stage kind.
pub struct Train;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("negatives", ParamType::Artifact, "mined negatives (`mine.negatives`)"),
    ParamSpec::required("docs", ParamType::Artifact, "documents (id, text)"),
    ParamSpec::required("queries", ParamType::Artifact, "training queries (id, text)"),
    ParamSpec::with_default("teacher_scores", ParamType::Artifact, "null", "teacher scores (`distill.teacher_scores`), for margin_mse / kl_div / mse_margin"),
    ParamSpec::with_default("model", ParamType::FileOrArtifact, "\"conf/models/splade-tiny\"", "Hugging Face masked-LM directory to start from (or its shape and tokenizer, with init = \"random\")"),
    ParamSpec::with_default("query_encoder", ParamType::Choice(&["shared", "separate", "bag_of_words"]), "\"shared\"", "one shared encoder; a separate query encoder (efficient SPLADE V/VI); or bag-of-words queries (SPLADE-doc)"),
    ParamSpec::with_default("query_model", ParamType::FileOrArtifact, "null", "the separate query encoder's starting point; default: `model`"),
    ParamSpec::with_default("init", ParamType::Choice(&["pretrained", "random"]), "\"pretrained\"", "start from the model's weights, or from a BERT-style random initialisation of its shape"),
    ParamSpec::with_default("steps", ParamType::Int, "1000", "optimizer steps"),
    ParamSpec::with_default("batch_size", ParamType::Int, "32", "queries per optimizer step, over all devices (global batch)"),
    ParamSpec::with_default("negatives_per_query", ParamType::Int, "1", "hard negatives sampled per query and step"),
    ParamSpec::with_default("gradient_accumulation", ParamType::Int, "1", "micro-batches per optimizer step (gradients averaged)"),
    ParamSpec::with_default("max_length", ParamType::Int, "256", "document tokens (special tokens included)"),
    ParamSpec::with_default("query_max_length", ParamType::Int, "0", "query tokens; 0 = max_length (the original uses one length for both)"),
    ParamSpec::with_default("lr", ParamType::Float, "2e-5", "peak learning rate (AdamW)"),
    ParamSpec::with_default("weight_decay", ParamType::Float, "0.01", "AdamW decoupled weight decay, over all parameters as in the original"),
    ParamSpec::with_default("adam_eps", ParamType::Float, "1e-6", "AdamW epsilon (transformers' default, as in the original)"),
    ParamSpec::with_default("warmup_steps", ParamType::Int, "0", "linear learning-rate warm-up, then linear decay to 0 at `steps`"),
    ParamSpec::with_default("grad_clip", ParamType::Float, "0", "gradient norm clipping; 0 = off (the original never clips)"),
    ParamSpec::with_default("losses", ParamType::FloatMap, "{\"in_batch_pairwise_nll\": 1.0}", "ranking losses and their weights: in_batch_pairwise_nll, pairwise_nll, contrastive, margin_mse, kl_div, mse_margin"),
    ParamSpec::with_default("flops_lambda_q", ParamType::Float, "0", "FLOPS weight on queries"),
    ParamSpec::with_default("flops_lambda_d", ParamType::Float, "0", "FLOPS weight on documents"),
    ParamSpec::with_default("l1_lambda_q", ParamType::Float, "0", "L1 weight on queries"),
    ParamSpec::with_default("l1_lambda_d", ParamType::Float, "0", "L1 weight on documents"),
    ParamSpec::with_default("lambda_warmup_steps", ParamType::Int, "0", "T of the quadratic λ warm-up λ·(t/T)², in optimizer steps; 0 = constant λ"),
    ParamSpec::with_default("anti_zero", ParamType::Bool, "false", "add the HF stack's 1/(ΣQ)² + 1/(ΣD)² term"),
    ParamSpec::with_default("dropout", ParamType::Float, "null", "dropout probability; default: the model config's hidden_dropout_prob"),
    ParamSpec::with_default("pooling", ParamType::Choice(&["max", "sum"]), "\"max\"", "SPLADE pooling over tokens"),
    ParamSpec::with_default("precision", ParamType::Choice(&["f32", "bf16"]), "\"f32\"", "compute precision of the encoders; bf16 keeps f32 master weights, gradients, optimizer state and losses (mixed precision, for GPUs)"),
    ParamSpec::with_default("seed", ParamType::Int, "123", "seeds sampling, dropout and random init (all of them, unlike the original)"),
    ParamSpec::with_default("checkpoint_every", ParamType::Int, "1000", "optimizer steps between resumable checkpoints"),
    ParamSpec::with_default("validate_every", ParamType::Int, "0", "optimizer steps between validations (and at the end); 0 = off"),
    ParamSpec::with_default("validation_queries", ParamType::Artifact, "null", "dev queries (id, text)"),
    ParamSpec::with_default("validation_qrels", ParamType::Artifact, "null", "dev qrels"),
    ParamSpec::with_default("validation_docs", ParamType::Artifact, "null", "dev collection; default: `docs`"),
    ParamSpec::with_default("recall_k", ParamType::Int, "100", "validation Recall@k"),
    ParamSpec::with_default("select", ParamType::Choice(&["last", "best"]), "\"last\"", "output the last weights, or those with the best validation MRR@10"),
    ParamSpec::with_default("vocab_chunk", ParamType::Int, "8192", "vocabulary terms projected at a time"),
];

#[derive(Debug, Deserialize)]
struct TrainParams {
    query_encoder: String,
    init: String,
    steps: u64,
    batch_size: usize,
    negatives_per_query: usize,
    gradient_accumulation: u64,
    max_length: usize,
    query_max_length: usize,
    lr: f64,
    weight_decay: f64,
    adam_eps: f64,
    warmup_steps: u64,
    grad_clip: f64,
    flops_lambda_q: f64,
    flops_lambda_d: f64,
    l1_lambda_q: f64,
    l1_lambda_d: f64,
    lambda_warmup_steps: u64,
    anti_zero: bool,
    dropout: Option<f64>,
    pooling: String,
    precision: String,
    seed: u64,
    checkpoint_every: u64,
    validate_every: u64,
    recall_k: usize,
    select: String,
    vocab_chunk: usize,
}

fn parse_losses(params: &Value) -> std::result::Result<Vec<(RankingLoss, f64)>, (String, String)> {
    let names: Vec<&str> = RankingLoss::ALL.iter().map(|(n, _)| *n).collect();
    let mut out = Vec::new();
    for (name, w) in params["losses"].as_object().into_iter().flatten() {
        let Some(loss) = RankingLoss::parse(name) else {
            return Err((
                "losses".into(),
                format!(
                    "unknown loss `{name}` (one of {}){}",
                    names.join(", "),
                    crate::params::suggest(name, names.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default()
                ),
            ));
        };
        let w = w.as_f64().unwrap_or(0.0);
        if w < 0.0 {
            return Err(("losses".into(), format!("weight of `{name}` is negative")));
        }
        out.push((loss, w));
    }
    if out.is_empty() {
        return Err(("losses".into(), "at least one loss is needed".into()));
    }
    Ok(out)
}

impl Stage for Train {
    fn kind(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        1
    }

    fn doc(&self) -> &'static str {
        "negatives + texts (+ teacher scores) → a trained SPLADE model (Hugging Face directory) + train log"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn outputs(&self, params: &Value) -> Vec<String> {
        let mut out = vec!["model".to_string(), "train_log".to_string()];
        if params["query_encoder"] == "separate" {
            out.push("query_model".into());
        }
        if params["validate_every"].as_i64().unwrap_or(0) > 0 {
            out.push("validation".into());
        }
        out
    }

    fn check(&self, p: &Value) -> std::result::Result<(), (String, String)> {
        let losses = parse_losses(p)?;
        let int = |k: &str| p[k].as_i64().unwrap_or(0);
        for key in [
            "steps",
            "batch_size",
            "gradient_accumulation",
            "max_length",
            "checkpoint_every",
            "vocab_chunk",
        ] {
            if int(key) < 1 {
                return Err((key.into(), "must be at least 1".into()));
            }
        }
        for key in [
            "negatives_per_query",
            "query_max_length",
            "warmup_steps",
            "lambda_warmup_steps",
            "validate_every",
        ] {
            if int(key) < 0 {
                return Err((key.into(), "must not be negative".into()));
            }
        }
        if let Some((l, _)) = losses.iter().find(|(l, _)| l.needs_negatives()) {
            if int("negatives_per_query") < 1 {
                return Err((
                    "negatives_per_query".into(),
                    format!("loss `{}` needs at least one negative per query", l.name()),
                ));
            }
        }
        if let Some((l, _)) = losses.iter().find(|(l, _)| l.needs_teacher()) {
            if p["teacher_scores"].is_null() {
                return Err((
                    "teacher_scores".into(),
                    format!(
                        "loss `{}` needs teacher scores (e.g. \"distill.teacher_scores\")",
                        l.name()
                    ),
                ));
            }
        }
        if let Some(d) = p["dropout"].as_f64() {
            if !(0.0..1.0).contains(&d) {
                return Err(("dropout".into(), "must be in [0, 1)".into()));
            }
        }
        if int("validate_every") > 0 {
            for key in ["validation_queries", "validation_qrels"] {
                if p[key].is_null() {
                    return Err((key.into(), "validate_every > 0 needs it".into()));
                }
            }
        } else if p["select"] == "best" {
            return Err((
                "select".into(),
                "\"best\" needs validation (validate_every > 0)".into(),
            ));
        }
        if !p["query_model"].is_null() && p["query_encoder"] != "separate" {
            return Err((
                "query_model".into(),
                "only used with query_encoder = \"separate\"".into(),
            ));
        }
        if p["query_encoder"] == "bag_of_words"
            && (p["flops_lambda_q"].as_f64().unwrap_or(0.0) > 0.0
                || p["l1_lambda_q"].as_f64().unwrap_or(0.0) > 0.0)
        {
            return Err(("query_encoder".into(), "bag-of-words queries have no encoder to regularize: set flops_lambda_q and l1_lambda_q to 0".into()));
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let p: TrainParams = ctx.params_as()?;
        let objective = Objective {
            losses: parse_losses(&ctx.params)
                .map_err(|(key, message)| StageError::Param { key, message })?,
            regularizers: vec![
                Regularizer {
                    kind: RegularizerKind::Flops,
                    query: LambdaSchedule {
                        lambda: p.flops_lambda_q,
                        warmup: p.lambda_warmup_steps,
                    },
                    doc: LambdaSchedule {
                        lambda: p.flops_lambda_d,
                        warmup: p.lambda_warmup_steps,
                    },
                },
                Regularizer {
                    kind: RegularizerKind::L1,
                    query: LambdaSchedule {
                        lambda: p.l1_lambda_q,
                        warmup: p.lambda_warmup_steps,
                    },
                    doc: LambdaSchedule {
                        lambda: p.l1_lambda_d,
                        warmup: p.lambda_warmup_steps,
                    },
                },
            ],
            anti_zero: p.anti_zero,
        };
        let pooling = if p.pooling == "sum" {
            PoolingKind::Sum
        } else {
            PoolingKind::Max
        };
        let devices: Vec<_> = devices_from_backend(&ctx.backend)?
            .into_iter()
            .map(|d| d.autodiff())
            .collect();
        if devices.len() > p.batch_size {
            return Err(StageError::Param {
                key: "batch_size".into(),
                message: format!(
                    "{} is smaller than the number of devices ({})",
                    p.batch_size,
                    devices.len()
                ),
            });
        }
        let main = devices[0].clone();

        let model_dir = ctx.input("model")?.path().to_path_buf();
        // A model directory's config, with the run's dropout override.
        let config_of = |dir: &Path| -> Result<ModelConfig> {
            let mut c = ModelConfig::from_dir(dir)?;
            if let Some(d) = p.dropout {
                c.dropout = d;
            }
            Ok(c)
        };
        let cfg = config_of(&model_dir)?;
        let query_len = if p.query_max_length == 0 {
            p.max_length
        } else {
            p.query_max_length
        };
        for (key, len) in [
            ("max_length", p.max_length),
            ("query_max_length", query_len),
        ] {
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
        let query_dir = ctx
            .inputs
            .get("query_model")
            .map(|i| i.path().to_path_buf())
            .unwrap_or_else(|| model_dir.clone());
        let query_tok = TextTokenizer::load(&query_dir, query_len)?;
        let doc_tok = TextTokenizer::load(&model_dir, p.max_length)?;

        let teacher = match ctx.inputs.get("teacher_scores") {
            Some(t) => Some(read_teacher_scores(t.path())?),
            None => None,
        };
        let set = TrainingSet::load(
            ctx.input("negatives")?.path(),
            ctx.input("docs")?.path(),
            ctx.input("queries")?.path(),
            teacher.filter(|_| objective.needs_teacher()),
            p.negatives_per_query,
            p.seed,
        )?;
        let validation = if p.validate_every > 0 {
            let docs_key = if ctx.inputs.contains_key("validation_docs") {
                "validation_docs"
            } else {
                "docs"
            };
            Some(ValidationSet {
                queries: read_id_text(ctx.input("validation_queries")?.path())?,
                docs: read_id_text(ctx.input(docs_key)?.path())?,
                qrels: read_qrels(ctx.input("validation_qrels")?.path())?,
                recall_k: p.recall_k,
            })
        } else {
            None
        };

        main.seed(p.seed);
        let init = |dir: &Path, c: &ModelConfig| -> Result<MlmEncoder> {
            if p.init == "random" {
                Ok(MlmEncoder::init_random(c, &main))
            } else {
                Ok(load_mlm_as(dir, c.clone(), &main)?.1)
            }
        };
        let doc_model = init(&model_dir, &cfg)?;
        let (query_cfg, query_model) = if p.query_encoder == "separate" {
            let c = config_of(&query_dir)?;
            let m = init(&query_dir, &c)?;
            (Some(c), Some(m))
        } else {
            (None, None)
        };
        if let Some(qc) = &query_cfg {
            if qc.vocab_size != cfg.vocab_size {
                return Err(StageError::Param {
                    key: "query_model".into(),
                    message: format!(
                        "vocabulary of {} terms, the document model has {}: they must share one",
                        qc.vocab_size, cfg.vocab_size
                    ),
                });
            }
        }
        let mut model = EncoderPair {
            doc: doc_model,
            query: query_model,
        }
        .train();
        let query_encoding = match p.query_encoder.as_str() {
            "separate" => QueryEncoding::Separate,
            "bag_of_words" => QueryEncoding::BagOfWords {
                specials: Arc::new(query_tok.special_ids().clone()),
                vocab: cfg.vocab_size,
            },
            _ => QueryEncoding::Shared,
        };
        let encoding = Encoding {
            pooling,
            vocab_chunk: p.vocab_chunk,
            pad: cfg.pad_token_id,
            queries: query_encoding,
            precision: Precision::from_param(&p.precision),
        };
        let mut adamw = AdamWConfig::new()
            .with_epsilon(p.adam_eps as f32)
            .with_weight_decay(p.weight_decay as f32);
        if p.grad_clip > 0.0 {
            adamw = adamw.with_grad_clipping(Some(
                burn::grad_clipping::GradientClippingConfig::Norm(p.grad_clip as f32),
            ));
        }
        let mut optim = adamw.init();

        // Resume from the last checkpoint this fingerprint committed, if any.
        let staging = ctx.staging_dir().to_path_buf();
        let ckpt_root = staging.join("checkpoints");
        let log_path = staging.join("train_log.jsonl");
        let val_path = staging.join("validation.jsonl");
        let best_dir = staging.join("best");
        let mut state = TrainState::default();
        let resumed_from = ctx
            .resume_state()
            .and_then(|s| {
                s.get("checkpoint")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .map(|name| ckpt_root.join(name))
            .filter(|dir| dir.is_dir());
        if let Some(dir) = &resumed_from {
            let (s, m, o) = checkpoint::load(dir, model, optim)?;
            state = s;
            model = m;
            optim = o;
            truncate(&log_path, state.log_bytes)?;
            truncate(&val_path, state.validation_bytes)?;
            tracing::info!(
                step = state.step,
                "resuming training from {}",
                dir.display()
            );
        } else {
            for p in [&log_path, &val_path] {
                truncate(p, 0)?;
            }
            for d in [&ckpt_root, &best_dir] {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(|e| StageError::io(d, e))?;
                }
            }
        }
        std::fs::create_dir_all(&ckpt_root).map_err(|e| StageError::io(&ckpt_root, e))?;
        let resumed_at = state.step;

        let parallel = DataParallel {
            devices: devices.clone(),
            encoding: encoding.clone(),
        };
        let lr_schedule = LearningRateSchedule {
            lr: p.lr,
            warmup: p.warmup_steps,
            total: p.steps,
        };
        // Validation (and best-model export): at step 0, every `validate_every` steps, at the end.
        let validate = |t: u64, model: &EncoderPair, state: &mut TrainState| -> Result<()> {
            let Some(v) = &validation else {
                return Ok(());
            };
            let (mrr, recall) = v.measure(model, &encoding, &query_tok, &doc_tok, &main)?;
            append_line(
                &val_path,
                &json!({"step": t, "mrr_at_10": mrr, "recall": recall}),
            )?;
            if state.best.is_none_or(|(b, _)| mrr > b) {
                state.best = Some((mrr, t));
                if p.select == "best" {
                    export_pair(
                        model,
                        &cfg,
                        &model_dir,
                        query_cfg.as_ref().map(|c| (c, query_dir.as_path())),
                        &best_dir,
                    )?;
                }
            }
            Ok(())
        };
        if state.step == 0 {
            validate(0, &model, &mut state)?;
        }
        let bar = ctx.progress(p.steps, "steps");
        bar.set_position(state.step);
        let started = Instant::now();
        let mut last = StepSummary::default();
        while state.step < p.steps {
            let step_started = Instant::now();
            let t = state.step + 1;
            let lr = lr_schedule.at(state.step);
            let mut acc = GradientsAccumulator::<EncoderPair>::new();
            let mut terms: BTreeMap<String, f64> = BTreeMap::new();
            let (mut nnz_q, mut nnz_d, mut flops_d) = (0.0, 0.0, 0.0);
            let gas = p.gradient_accumulation;
            for micro in 0..gas {
                let index = state.step * gas + micro;
                let examples = set.examples(index * p.batch_size as u64, p.batch_size);
                let batch = TokenizedBatch::new(&examples, &query_tok, &doc_tok)?;
                let stats = parallel.accumulate(
                    &model,
                    &batch,
                    &objective,
                    StepPosition {
                        t,
                        micro: index,
                        seed: p.seed,
                    },
                    1.0 / gas as f64,
                    &mut acc,
                )?;
                for (k, v) in stats.terms {
                    *terms.entry(k).or_default() += v / gas as f64;
                }
                nnz_q += stats.nnz_q / gas as f64;
                nnz_d += stats.nnz_d / gas as f64;
                flops_d += stats.flops_d / gas as f64;
            }
            if let Some((name, _)) = terms.iter().find(|(_, v)| !v.is_finite()) {
                return Err(StageError::Other(format!(
                    "training diverged at step {t}: `{name}` is not finite (try a lower lr)"
                )));
            }
            model = optim.step(lr, model, acc.grads());
            state.step = t;

            let mut row = Map::new();
            row.insert("step".into(), json!(t));
            row.insert("lr".into(), json!(lr));
            for r in &objective.regularizers {
                let name = match r.kind {
                    RegularizerKind::Flops => "flops",
                    RegularizerKind::L1 => "l1",
                };
                row.insert(format!("lambda_{name}_q"), json!(r.query.at(t)));
                row.insert(format!("lambda_{name}_d"), json!(r.doc.at(t)));
            }
            for (k, v) in &terms {
                row.insert(format!("loss_{k}"), json!(v));
            }
            row.insert("nnz_q".into(), json!(nnz_q));
            row.insert("nnz_d".into(), json!(nnz_d));
            row.insert("flops_d".into(), json!(flops_d));
            let secs = step_started.elapsed().as_secs_f64().max(1e-9);
            row.insert(
                "examples_per_s".into(),
                json!((p.batch_size as u64 * gas) as f64 / secs),
            );
            append_line(&log_path, &Value::Object(row))?;
            last = StepSummary {
                loss: terms.get("total").copied().unwrap_or(f64::NAN),
                nnz_q,
                nnz_d,
            };

            if validation.is_some() && (t % p.validate_every == 0 || t == p.steps) {
                validate(t, &model, &mut state)?;
            }
            if t % p.checkpoint_every == 0 && t < p.steps {
                state.log_bytes = file_len(&log_path);
                state.validation_bytes = file_len(&val_path);
                let dir = checkpoint::save(&ckpt_root, &state, &model, &optim)?;
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ctx.save_resume_state(&json!({ "checkpoint": name, "step": t }))?;
                checkpoint::prune(&ckpt_root, &dir)?;
                crate::contract::test_pause("SPLADE_TEST_TRAIN_CHECKPOINT_DELAY_MS");
            }
            bar.set_position(t);
        }
        bar.finish_and_clear();

        for name in ["model", "query_model"] {
            let d = staging.join(name);
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(|e| StageError::io(&d, e))?;
            }
        }
        if !(p.select == "best" && best_dir.is_dir()) {
            export_pair(
                &model,
                &cfg,
                &model_dir,
                query_cfg.as_ref().map(|c| (c, query_dir.as_path())),
                &best_dir,
            )?;
        }
        for name in ["model", "query_model"] {
            let from = best_dir.join(name);
            if from.is_dir() {
                let to = staging.join(name);
                std::fs::rename(&from, &to).map_err(|e| StageError::io(&to, e))?;
            }
        }
        let val_path_for_summary = std::fs::read_to_string(&val_path).unwrap_or_default();
        let log_rows = jsonl_to_parquet(&log_path, &ctx.output_file("train_log"))?;
        if validation.is_some() {
            jsonl_to_parquet(&val_path, &ctx.output_file("validation"))?;
        }
        for d in [&ckpt_root, &best_dir] {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(|e| StageError::io(d, e))?;
            }
        }
        for f in [&log_path, &val_path] {
            if f.exists() {
                std::fs::remove_file(f).map_err(|e| StageError::io(f, e))?;
            }
        }

        let seconds = started.elapsed().as_secs_f64();
        let trained = p.steps - resumed_at;
        let mut stats = Map::new();
        stats.insert("steps".into(), json!(p.steps));
        stats.insert("resumed_at_step".into(), json!(resumed_at));
        stats.insert("log_rows".into(), json!(log_rows));
        stats.insert("devices".into(), json!(devices.len()));
        stats.insert("queries_in".into(), json!(set.coverage.queries_in));
        stats.insert("queries_used".into(), json!(set.coverage.queries_used));
        stats.insert(
            "dropped_no_positive".into(),
            json!(set.coverage.dropped_no_positive),
        );
        stats.insert(
            "dropped_no_negative".into(),
            json!(set.coverage.dropped_no_negative),
        );
        stats.insert(
            "dropped_no_teacher".into(),
            json!(set.coverage.dropped_no_teacher),
        );
        stats.insert(
            "negatives_without_teacher".into(),
            json!(set.coverage.negatives_without_teacher),
        );
        stats.insert("final_loss".into(), json!(last.loss));
        stats.insert("final_nnz_q".into(), json!(last.nnz_q));
        stats.insert("final_nnz_d".into(), json!(last.nnz_d));
        stats.insert(
            "examples_per_s".into(),
            json!(
                (trained * p.gradient_accumulation * p.batch_size as u64) as f64
                    / seconds.max(1e-9)
            ),
        );
        if let Some((mrr, at)) = state.best {
            stats.insert("best_mrr_at_10".into(), json!(mrr));
            stats.insert("best_step".into(), json!(at));
        }
        let mut summary = format!(
            "{}: {} steps on {} device(s) over {} queries{}: final loss {:.4}, nnz q/d {:.1}/{:.1}",
            ctx.name,
            p.steps,
            devices.len(),
            set.coverage.queries_used,
            if resumed_at > 0 {
                format!(" (resumed at step {resumed_at})")
            } else {
                String::new()
            },
            last.loss,
            last.nnz_q,
            last.nnz_d
        );
        if let Some((mrr, at)) = state.best {
            let start = first_validation(&val_path_for_summary)
                .map(|m| format!("{m:.4} at step 0, "))
                .unwrap_or_default();
            summary.push_str(&format!("; dev MRR@10 {start}best {mrr:.4} at step {at}"));
        }
        Ok(StageOutcome {
            stats,
            summary: Some(summary),
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct StepSummary {
    loss: f64,
    nnz_q: f64,
    nnz_d: f64,
}

/// MRR@10 of the first validation line (step 0) of a validation log's text.
fn first_validation(text: &str) -> Option<f64> {
    let first: Value = serde_json::from_str(text.lines().next()?).ok()?;
    (first["step"] == 0)
        .then(|| first["mrr_at_10"].as_f64())
        .flatten()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Cuts `path` to `len` bytes (creating it empty if absent): drops log lines written after the
/// checkpoint being resumed, so the log has no duplicated steps.
fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StageError::io(path, e))?;
    f.set_len(len).map_err(|e| StageError::io(path, e))?;
    f.sync_all().map_err(|e| StageError::io(path, e))
}

fn append_line(path: &Path, value: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| StageError::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| StageError::io(path, e))
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
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| StageError::io(&tmp, e))?;
    }
    let plain = pair.valid();
    export_hf(&plain.doc, cfg, source, &tmp.join("model"))?;
    if let (Some(q), Some((qcfg, qsource))) = (&plain.query, query) {
        export_hf(q, qcfg, qsource, &tmp.join("query_model"))?;
    }
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| StageError::io(to, e))?;
    }
    std::fs::rename(&tmp, to).map_err(|e| StageError::io(to, e))
}

/// Converts a JSON-lines log (`step` + numeric columns) into a Parquet table.
fn jsonl_to_parquet(from: &Path, to: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(from).map_err(|e| StageError::io(from, e))?;
    let rows: Vec<Map<String, Value>> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| StageError::malformed(from, i + 1, e.to_string()))
        })
        .collect::<Result<_>>()?;
    let keys: Vec<String> = rows
        .first()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_else(|| vec!["step".into()]);
    let fields: Vec<Field> = keys
        .iter()
        .map(|k| {
            Field::new(
                k,
                if k == "step" {
                    DataType::Int64
                } else {
                    DataType::Float64
                },
                true,
            )
        })
        .collect();
    let mut sink = ParquetSink::create(to, Arc::new(Schema::new(fields)))?;
    let columns: Vec<ArrayRef> = keys
        .iter()
        .map(|k| -> ArrayRef {
            if k == "step" {
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|r| r.get(k).and_then(Value::as_i64)),
                ))
            } else {
                Arc::new(Float64Array::from_iter(
                    rows.iter().map(|r| r.get(k).and_then(Value::as_f64)),
                ))
            }
        })
        .collect();
    sink.write_columns(columns)?;
    sink.finish()
}
