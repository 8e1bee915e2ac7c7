//! The train stage's params: their declaration, their cross-field checks, and the objective,
//! optimizer and schedule they describe.

use serde_json::{Map, Value};

use super::losses::RankingLoss;
pub use super::regularizer::LambdaWarmup;
use super::regularizer::{LambdaSchedule, LearningRateSchedule, Regularizer, RegularizerKind};

crate::param_choice! {
    /// How documents enter the FLOPS regularizer.
    pub enum FlopsDocs {
        /// The mean over document slots: `½(FLOPS(D⁺) + FLOPS(D⁻))` for one negative (legacy).
        PerSlot = "per_slot",
        /// All documents of the batch at once (naver's HF trainer).
        Pooled = "pooled",
    }
}
use super::step::Objective;
use crate::model::network::PoolingKind;
use crate::model::Precision;
use crate::params::{at_most, did_you_mean, ParamError};

/// The most queries per optimizer step (`batch_size`).
const MAX_BATCH_SIZE: i64 = 1 << 16;
/// The most hard negatives per query and step (`negatives_per_query`).
const MAX_NEGATIVES_PER_QUERY: i64 = 1024;
/// The most micro-batches per optimizer step (`gradient_accumulation`).
const MAX_GRADIENT_ACCUMULATION: i64 = 1 << 16;

crate::param_choice! {
    /// How queries are encoded (the `query_encoder` param).
    pub enum QueryEncoder {
        /// One encoder for queries and documents.
        Shared = "shared",
        /// A query encoder of its own (efficient SPLADE V/VI).
        Separate = "separate",
        /// Binary bags of the query's tokens, no query encoder (SPLADE-doc).
        BagOfWords = "bag_of_words",
    }
}

crate::param_choice! {
    /// Where the weights start (the `init` param).
    pub enum Init {
        /// The model directory's weights.
        Pretrained = "pretrained",
        /// A BERT-style random initialisation of the model's shape.
        Random = "random",
    }
}

crate::param_choice! {
    /// Which weights the stage outputs (the `select` param).
    pub enum Select {
        /// Those of the last step.
        Last = "last",
        /// Those with the best validation MRR@10.
        Best = "best",
    }
}

crate::stage_params! {
    /// Params of [`Train`](super::Train).
    pub struct TrainParams {
        /// mined negatives (`mine.negatives`)
        negatives: String [Artifact],
        /// documents (id, text)
        docs: String [Artifact],
        /// training queries (id, text)
        queries: String [Artifact],
        /// teacher scores (`distill.teacher_scores`), for margin_mse / kl_div / mse_margin
        teacher_scores: Option<String> [Artifact] = "null",
        /// Hugging Face masked-LM directory to start from (or its shape and tokenizer, with init = "random")
        model: String [FileOrArtifact] = "\"conf/models/splade-tiny\"",
        /// one shared encoder; a separate query encoder (efficient SPLADE V/VI); or bag-of-words queries (SPLADE-doc)
        query_encoder: QueryEncoder [Choice(QueryEncoder::NAMES)] = "\"shared\"",
        /// the separate query encoder's starting point; default: `model`
        query_model: Option<String> [FileOrArtifact] = "null",
        /// start from the model's weights, or from a BERT-style random initialisation of its shape
        init: Init [Choice(Init::NAMES)] = "\"pretrained\"",
        /// optimizer steps
        steps: i64 [Int] = "1000",
        /// queries per optimizer step, over all devices (global batch)
        batch_size: i64 [Int] = "32",
        /// hard negatives sampled per query and step
        negatives_per_query: i64 [Int] = "1",
        /// micro-batches per optimizer step (gradients averaged)
        gradient_accumulation: i64 [Int] = "1",
        /// document tokens (special tokens included)
        max_length: i64 [Int] = "256",
        /// query tokens; 0 = max_length (the original uses one length for both)
        query_max_length: i64 [Int] = "0",
        /// peak learning rate (AdamW)
        lr: f64 [Float] = "2e-5",
        /// AdamW decoupled weight decay, over all parameters as in the original
        weight_decay: f64 [Float] = "0.01",
        /// AdamW epsilon (transformers' default, as in the original)
        adam_eps: f64 [Float] = "1e-6",
        /// linear learning-rate warm-up, then linear decay to 0 at `steps`
        warmup_steps: i64 [Int] = "0",
        /// gradient norm clipping; 0 = off (the original never clips)
        grad_clip: f64 [Float] = "0",
        /// ranking losses and their weights: in_batch_pairwise_nll, pairwise_nll, contrastive, margin_mse, kl_div, mse_margin
        losses: Map<String, Value> [FloatMap] = "{\"in_batch_pairwise_nll\": 1.0}",
        /// FLOPS weight on queries
        flops_lambda_q: f64 [Float] = "0",
        /// FLOPS weight on documents
        flops_lambda_d: f64 [Float] = "0",
        /// L1 weight on queries
        l1_lambda_q: f64 [Float] = "0",
        /// L1 weight on documents
        l1_lambda_d: f64 [Float] = "0",
        /// T of the quadratic λ warm-up (what it counts: `lambda_warmup`)
        lambda_warmup_steps: i64 [Int] = "0",
        /// steps: λ·min(1,(t/T)²) per optimizer step, T=0 constant; legacy (naver's trainer): per micro-batch, T=0 → λ=0; hf (naver's HF trainer): min(λ, λ·(k/(T+1))²) per micro-batch
        lambda_warmup: LambdaWarmup [Choice(LambdaWarmup::NAMES)] = "\"steps\"",
        /// documents' FLOPS: per_slot (mean over positive/negative slots, naver's legacy trainer) or pooled over all documents of the batch (naver's HF trainer)
        flops_docs: FlopsDocs [Choice(FlopsDocs::NAMES)] = "\"per_slot\"",
        /// add the HF stack's 1/(ΣQ)² + 1/(ΣD)² term
        anti_zero: bool [Bool] = "false",
        /// dropout probability; default: the model config's hidden_dropout_prob
        dropout: Option<f64> [Float] = "null",
        /// SPLADE pooling over tokens
        pooling: PoolingKind [Choice(PoolingKind::NAMES)] = "\"max\"",
        /// compute precision of the encoders; bf16 keeps f32 master weights, gradients, optimizer state and losses (mixed precision, for GPUs)
        precision: Precision [Choice(Precision::NAMES)] = "\"f32\"",
        /// seeds sampling, dropout and random init (all of them, unlike the original)
        seed: u64 [Int] = "123",
        /// optimizer steps between resumable checkpoints
        checkpoint_every: i64 [Int] = "1000",
        /// optimizer steps between reads of the loss and sparsity figures from the device (one transfer for all of them; the train log keeps a line per step, and a diverged loss is caught at the next read)
        log_every: i64 [Int] = "10",
        /// optimizer steps between validations (and at the end); 0 = off
        validate_every: i64 [Int] = "0",
        /// dev queries (id, text)
        validation_queries: Option<String> [Artifact] = "null",
        /// dev qrels
        validation_qrels: Option<String> [Artifact] = "null",
        /// dev collection; default: `docs`
        validation_docs: Option<String> [Artifact] = "null",
        /// most documents validation encodes: a larger collection is cut to the judged documents plus a deterministic sample (0 = all)
        validation_max_docs: usize [Int] = "20000",
        /// validation Recall@k
        recall_k: usize [Int] = "100",
        /// output the last weights, or those with the best validation MRR@10
        select: Select [Choice(Select::NAMES)] = "\"last\"",
        /// vocabulary terms projected at a time
        vocab_chunk: i64 [Int] = "8192",
    }
}

impl TrainParams {
    /// Cross-field checks: loss names and needs, counts in range, validation settings.
    pub(super) fn check(&self) -> Result<(), ParamError> {
        let losses = parse_losses(&self.losses)?;
        self.check_counts()?;
        check_loss_needs(self, &losses)?;
        if self.dropout.is_some_and(|d| !(0.0..1.0).contains(&d)) {
            return Err(ParamError::new("dropout", "must be in [0, 1)"));
        }
        self.check_rates()?;
        self.check_validation()?;
        self.check_query_encoder()
    }

    /// Counts in range: at least 1 or not negative, room for [CLS] and [SEP], sizes a step can
    /// hold.
    fn check_counts(&self) -> Result<(), ParamError> {
        for (key, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("gradient_accumulation", self.gradient_accumulation),
            ("max_length", self.max_length),
            ("checkpoint_every", self.checkpoint_every),
            ("log_every", self.log_every),
            ("vocab_chunk", self.vocab_chunk),
        ] {
            if v < 1 {
                return Err(ParamError::new(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            ("negatives_per_query", self.negatives_per_query),
            ("query_max_length", self.query_max_length),
            ("warmup_steps", self.warmup_steps),
            ("lambda_warmup_steps", self.lambda_warmup_steps),
            ("validate_every", self.validate_every),
        ] {
            if v < 0 {
                return Err(ParamError::new(key, "must not be negative"));
            }
        }
        for (key, v) in [
            ("max_length", self.max_length),
            ("query_max_length", self.query_max_length),
        ] {
            if v == 1 {
                return Err(ParamError::new(
                    key,
                    "must leave room for [CLS] and [SEP] (at least 2)",
                ));
            }
        }
        if self.recall_k == 0 {
            return Err(ParamError::new("recall_k", "must be at least 1"));
        }
        self.check_sizes()
    }

    /// Sizes beyond which a step cannot be held in memory, or the example stream's position
    /// (steps × gradient_accumulation × batch_size) would overflow.
    fn check_sizes(&self) -> Result<(), ParamError> {
        at_most(
            "batch_size",
            self.batch_size,
            MAX_BATCH_SIZE,
            "queries per optimizer step",
        )?;
        at_most(
            "negatives_per_query",
            self.negatives_per_query,
            MAX_NEGATIVES_PER_QUERY,
            "negatives per query",
        )?;
        at_most(
            "gradient_accumulation",
            self.gradient_accumulation,
            MAX_GRADIENT_ACCUMULATION,
            "micro-batches per optimizer step",
        )?;
        let examples = self
            .steps
            .checked_mul(self.gradient_accumulation)
            .and_then(|n| n.checked_mul(self.batch_size));
        if examples.is_none() {
            return Err(ParamError::new(
                "steps",
                format!(
                    "steps × gradient_accumulation × batch_size = {} × {} × {} examples \
                     overflows the example counter (at most {}): lower steps",
                    self.steps,
                    self.gradient_accumulation,
                    self.batch_size,
                    i64::MAX
                ),
            ));
        }
        Ok(())
    }

    /// Learning rate, AdamW settings, clipping and regularizer weights in their ranges.
    fn check_rates(&self) -> Result<(), ParamError> {
        for (key, v, what) in [
            ("lr", self.lr, "0 = no update"),
            ("weight_decay", self.weight_decay, "0 = none"),
            ("grad_clip", self.grad_clip, "0 = off"),
            ("flops_lambda_q", self.flops_lambda_q, "0 = off"),
            ("flops_lambda_d", self.flops_lambda_d, "0 = off"),
            ("l1_lambda_q", self.l1_lambda_q, "0 = off"),
            ("l1_lambda_d", self.l1_lambda_d, "0 = off"),
        ] {
            if v < 0.0 {
                return Err(ParamError::new(
                    key,
                    format!("must not be negative ({what}), got {v}"),
                ));
            }
        }
        if self.adam_eps <= 0.0 {
            return Err(ParamError::new(
                "adam_eps",
                format!(
                    "must be positive (it keeps AdamW's update finite; usual: 1e-8 to 1e-6), got {}",
                    self.adam_eps
                ),
            ));
        }
        Ok(())
    }

    /// Validation needs dev queries and qrels; `select = "best"` needs validation.
    fn check_validation(&self) -> Result<(), ParamError> {
        if self.validate_every > 0 {
            for (key, value) in [
                ("validation_queries", &self.validation_queries),
                ("validation_qrels", &self.validation_qrels),
            ] {
                if value.is_none() {
                    return Err(ParamError::new(key, "validate_every > 0 needs it"));
                }
            }
        } else if self.select == Select::Best {
            return Err(ParamError::new(
                "select",
                "\"best\" needs validation (validate_every > 0)",
            ));
        }
        Ok(())
    }

    /// `query_model` only with separate encoders; no query regularizer without a query encoder.
    fn check_query_encoder(&self) -> Result<(), ParamError> {
        if self.query_model.is_some() && self.query_encoder != QueryEncoder::Separate {
            return Err(ParamError::new(
                "query_model",
                "only used with query_encoder = \"separate\"",
            ));
        }
        if self.query_encoder == QueryEncoder::BagOfWords
            && (self.flops_lambda_q > 0.0 || self.l1_lambda_q > 0.0)
        {
            return Err(ParamError::new("query_encoder", "bag-of-words queries have no encoder to regularize: set flops_lambda_q and l1_lambda_q to 0"));
        }
        Ok(())
    }

    /// The weighted ranking losses, the FLOPS and L1 regularizers and the anti-zero term.
    pub(super) fn objective(&self) -> Result<Objective, ParamError> {
        let warmup = self.lambda_warmup_steps as u64;
        let counting = self.lambda_warmup;
        let regularizer = |kind, query, doc| Regularizer {
            kind,
            query: LambdaSchedule {
                lambda: query,
                warmup,
                counting,
            },
            doc: LambdaSchedule {
                lambda: doc,
                warmup,
                counting,
            },
            pooled_docs: self.flops_docs == FlopsDocs::Pooled,
        };
        Ok(Objective {
            losses: parse_losses(&self.losses)?,
            regularizers: vec![
                regularizer(
                    RegularizerKind::Flops,
                    self.flops_lambda_q,
                    self.flops_lambda_d,
                ),
                regularizer(RegularizerKind::L1, self.l1_lambda_q, self.l1_lambda_d),
            ],
            anti_zero: self.anti_zero,
        })
    }

    /// Query tokens: `query_max_length`, or `max_length` when it is 0.
    pub(super) fn query_length(&self) -> usize {
        if self.query_max_length == 0 {
            self.max_length as usize
        } else {
            self.query_max_length as usize
        }
    }

    /// Linear warm-up to `lr`, then linear decay to 0 at `steps`.
    pub(super) fn lr_schedule(&self) -> LearningRateSchedule {
        LearningRateSchedule {
            lr: self.lr,
            warmup: self.warmup_steps as u64,
            total: self.steps as u64,
        }
    }

    /// AdamW with the run's epsilon and weight decay, and gradient-norm clipping when asked.
    pub(super) fn optimizer(&self) -> burn::optim::ModuleOptimizer {
        let mut adamw = burn::optim::AdamWConfig::new()
            .with_epsilon(self.adam_eps as f32)
            .with_weight_decay(self.weight_decay as f32);
        if self.grad_clip > 0.0 {
            adamw = adamw.with_grad_clipping(Some(
                burn::grad_clipping::GradientClippingConfig::Norm(self.grad_clip as f32),
            ));
        }
        adamw.init()
    }
}

/// Losses that cannot work with these params: one needing negatives without any, or teacher
/// scores without them.
fn check_loss_needs(p: &TrainParams, losses: &[(RankingLoss, f64)]) -> Result<(), ParamError> {
    // Every loss scores each query's positive against its own negatives (in_batch_pairwise_nll
    // too: the batch's other positives are added to them, not used instead).
    if let Some((l, _)) = losses.first() {
        if p.negatives_per_query < 1 {
            return Err(ParamError::new(
                "negatives_per_query",
                format!(
                    "loss `{}` needs at least one negative per query: set negatives_per_query >= 1",
                    l.name()
                ),
            ));
        }
    }
    if let Some((l, _)) = losses.iter().find(|(l, _)| l.needs_teacher()) {
        if p.teacher_scores.is_none() {
            return Err(ParamError::new(
                "teacher_scores",
                format!(
                    "loss `{}` needs teacher scores (e.g. \"distill.teacher_scores\")",
                    l.name()
                ),
            ));
        }
    }
    Ok(())
}

/// The `losses` table as (loss, weight) in table order; unknown names, negative weights and an
/// empty table are errors.
fn parse_losses(table: &Map<String, Value>) -> Result<Vec<(RankingLoss, f64)>, ParamError> {
    let names: Vec<&str> = RankingLoss::ALL.iter().map(|(n, _)| *n).collect();
    let mut out = Vec::new();
    for (name, w) in table {
        let Some(loss) = RankingLoss::parse(name) else {
            return Err(ParamError::new(
                "losses",
                format!(
                    "unknown loss `{name}` (one of {}){}",
                    names.join(", "),
                    did_you_mean(name, names.iter().copied())
                ),
            ));
        };
        let w = w.as_f64().unwrap_or(0.0);
        if w < 0.0 {
            return Err(ParamError::new(
                "losses",
                format!("weight of `{name}` is negative"),
            ));
        }
        out.push((loss, w));
    }
    if out.is_empty() {
        return Err(ParamError::new("losses", "at least one loss is needed"));
    }
    if out.iter().all(|(_, w)| *w == 0.0) {
        return Err(ParamError::new(
            "losses",
            "every weight is 0: give at least one loss a positive weight",
        ));
    }
    Ok(out)
}
