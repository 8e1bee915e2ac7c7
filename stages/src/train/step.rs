//! One training micro-step over one or several devices, with the loss and the sparsity statistics
//! computed over the **global** batch.
//!
//! With one device the batch is encoded, scored and back-propagated in one graph. With several,
//! a two-pass (GradCache-style) step keeps the loss global: each device encodes its share, the
//! representations are gathered on the first device where the loss and its gradient with
//! respect to every representation are computed; then each device re-encodes its share under
//! the same dropout seed and back-propagates `Σ rep · ∂loss/∂rep`, and the parameter gradients
//! are summed on the first device. The result equals single-device training on the same global
//! batch (up to float summation order), unlike the original's DataParallel whose in-batch
//! negatives only span one GPU.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use std::sync::Mutex;

use super::encoders::{EncoderPair, Encoding};
use super::examples::Example;
use super::losses::{BatchScores, RankingLoss};
use super::regularizer::{anti_zero, Regularizer, TrainClock};
use crate::error::{Result, StageError};
use crate::model::dropout::{with_scope, DropoutScope};
use crate::model::{DeviceWorkers, TextTokenizer};
use crate::rng::splitmix64;

/// The training objective: weighted ranking losses plus regularizers.
#[derive(Debug, Clone)]
pub struct Objective {
    /// Ranking losses with their weights in the total.
    pub losses: Vec<(RankingLoss, f64)>,
    /// Sparsity regularizers (one whose λ are both 0 adds nothing).
    pub regularizers: Vec<Regularizer>,
    /// Whether to add the HF stack's `1/(ΣQ)² + 1/(ΣD)²` term.
    pub anti_zero: bool,
}

/// Loss terms and sparsity figures of one micro-step, for the train log.
#[derive(Debug, Clone, Default)]
pub struct StepStats {
    /// `(name, value)` of each ranking loss (unweighted), then `reg`, then `total`.
    pub terms: Vec<(String, f64)>,
    /// Mean non-zero terms per query representation.
    pub nnz_q: f64,
    /// Mean non-zero terms per document representation.
    pub nnz_d: f64,
    /// FLOPS of the document batch (expected multiply-adds per query-document pair).
    pub flops_d: f64,
}

/// A micro-step's loss terms and sparsity figures while still on the device: read with
/// [`PendingStats::read_all`], one download for the figures of many micro-steps.
pub struct PendingStats {
    names: Vec<String>,
    values: Vec<Tensor<1>>,
}

impl PendingStats {
    /// The figures on the host (one device → host transfer).
    pub fn read(self) -> Result<StepStats> {
        let mut all = Self::read_all(vec![self])?;
        all.pop()
            .ok_or_else(|| StageError::Other("no figures to read".into()))
    }

    /// The figures of several micro-steps, in order, with one device → host transfer (all of
    /// them sit on the main device).
    pub fn read_all(pending: Vec<PendingStats>) -> Result<Vec<StepStats>> {
        let tensors: Vec<Tensor<1>> = pending.iter().flat_map(|p| p.values.clone()).collect();
        if tensors.is_empty() {
            return Ok(pending.iter().map(|_| StepStats::default()).collect());
        }
        let values: Vec<f64> = Tensor::cat(tensors, 0)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| StageError::Other(format!("reading the steps' figures: {e:?}")))?;
        let mut values = values.into_iter();
        Ok(pending
            .into_iter()
            .map(|p| {
                let mut stats = StepStats::default();
                for (name, value) in p.names.into_iter().zip(values.by_ref()) {
                    match name.as_str() {
                        "nnz_q" => stats.nnz_q = value,
                        "nnz_d" => stats.nnz_d = value,
                        "flops_d" => stats.flops_d = value,
                        _ => stats.terms.push((name, value)),
                    }
                }
                stats
            })
            .collect())
    }

    fn push(&mut self, name: &str, value: Tensor<1>) {
        self.names.push(name.to_string());
        self.values.push(
            value
                .detach()
                .reshape([1])
                .cast(burn::tensor::FloatDType::F32),
        );
    }
}

impl Objective {
    /// Whether any loss reads teacher scores.
    pub fn needs_teacher(&self) -> bool {
        self.losses.iter().any(|(l, _)| l.needs_teacher())
    }

    /// The total loss at `clock` (for the λ schedules) on global representations `q` `[B, V]`
    /// and `d` `[B·M, V]`, and the step's figures (left on the device).
    pub fn loss(
        &self,
        clock: TrainClock,
        q: &Tensor<2>,
        d: &Tensor<2>,
        teacher: Option<&Tensor<2>>,
        per_query: usize,
    ) -> (Tensor<1>, PendingStats) {
        let scores = BatchScores::new(q.clone(), d.clone(), per_query);
        let mut stats = PendingStats {
            names: Vec::new(),
            values: Vec::new(),
        };
        let mut total: Option<Tensor<1>> = None;
        let mut add = |x: Tensor<1>| {
            total = Some(match total.take() {
                Some(t) => t + x,
                None => x,
            })
        };
        for (loss, weight) in &self.losses {
            let value = scores.loss(*loss, teacher);
            stats.push(loss.name(), value.clone());
            add(value * *weight);
        }
        let mut reg: Option<Tensor<1>> = None;
        let mut add_reg = |x: Tensor<1>| {
            reg = Some(match reg.take() {
                Some(r) => r + x.clone().detach(),
                None => x.clone().detach(),
            });
            add(x);
        };
        for r in &self.regularizers {
            if let Some(x) = r.term(clock, q, d, per_query) {
                add_reg(x);
            }
        }
        if self.anti_zero {
            add_reg(anti_zero(q, d));
        }
        let zero = || Tensor::<1>::zeros([1], &q.device());
        stats.push("reg", reg.unwrap_or_else(zero));
        let total = total.unwrap_or_else(|| (q.clone().sum() * 0.0) + (d.clone().sum() * 0.0));
        stats.push("total", total.clone());
        let nnz = |r: &Tensor<2>| {
            let rows = r.dims()[0].max(1) as f64;
            r.clone().detach().greater_elem(0.0).float().sum() / rows
        };
        stats.push("nnz_q", nnz(q));
        stats.push("nnz_d", nnz(d));
        stats.push("flops_d", super::regularizer::flops(d.clone().detach()));
        (total, stats)
    }
}

/// Token ids of a micro-batch, split the way the devices share it.
pub struct TokenizedBatch {
    /// Query token sequences (ids, special tokens included), one per example.
    pub queries: Vec<Vec<u32>>,
    /// Query-major: the `M` documents of query `i` at `i·M .. (i+1)·M`.
    pub docs: Vec<Vec<u32>>,
    /// `M`: documents per query (positive first).
    pub per_query: usize,
    /// `[B·M]` teacher scores, query-major, when the objective needs them.
    pub teacher: Option<Vec<f32>>,
    /// Tokens of the longest query: every share pads its queries to it.
    pub query_len: usize,
    /// Tokens of the longest document: every share pads its documents to it.
    pub doc_len: usize,
}

impl TokenizedBatch {
    /// Tokenizes `examples` (queries and documents with their own length limits).
    pub fn new(
        examples: &[Example],
        query_tokenizer: &TextTokenizer,
        doc_tokenizer: &TextTokenizer,
    ) -> Result<Self> {
        let per_query = examples.first().map(|e| e.docs.len()).unwrap_or(1);
        let queries: Vec<&str> = examples.iter().map(|e| e.query.as_str()).collect();
        let docs: Vec<&str> = examples
            .iter()
            .flat_map(|e| e.docs.iter().map(String::as_str))
            .collect();
        let teacher = if examples.iter().all(|e| e.teacher.is_some()) && !examples.is_empty() {
            let t: Vec<f32> = examples
                .iter()
                .flat_map(|e| e.teacher.clone().unwrap_or_default())
                .collect();
            if let Some(i) = t.iter().position(|x| !x.is_finite()) {
                return Err(StageError::Other(format!(
                    "teacher score of query {} is missing or not finite",
                    examples[i / per_query].qid
                )));
            }
            Some(t)
        } else {
            None
        };
        let queries = query_tokenizer.encode_batch(&queries)?;
        let docs = doc_tokenizer.encode_batch(&docs)?;
        let longest = |s: &[Vec<u32>]| s.iter().map(Vec::len).max().unwrap_or(1);
        Ok(TokenizedBatch {
            query_len: longest(&queries),
            doc_len: longest(&docs),
            queries,
            docs,
            per_query,
            teacher,
        })
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }
}

/// The seed of the dropout masks of one micro-step's queries (`part` 0) or documents (`part` 1):
/// a pure function of the run's seed, so masks repeat across passes, resumes and device counts.
pub fn mask_seed(seed: u64, micro_step: u64, part: usize) -> u64 {
    let mut s = seed ^ micro_step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((part as u64) << 48);
    splitmix64(&mut s)
}

/// Contiguous, as-even-as-possible shares of `n` queries over `devices` devices.
pub fn shares(n: usize, devices: usize) -> Vec<std::ops::Range<usize>> {
    let devices = devices.max(1).min(n.max(1));
    let (base, extra) = (n / devices, n % devices);
    let mut out = Vec::with_capacity(devices);
    let mut start = 0;
    for i in 0..devices {
        let len = base + usize::from(i < extra);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// Where a micro-step is in the run: optimizer step `t` (1-based, for the λ schedules), global
/// micro-step index and the run's seed (together they fix the dropout masks).
#[derive(Debug, Clone, Copy)]
pub struct StepPosition {
    /// Optimizer step, 1-based.
    pub t: u64,
    /// Global micro-batch index, 0-based (`step · gradient_accumulation + i`).
    pub micro: u64,
    /// The run's seed.
    pub seed: u64,
}

/// Data-parallel gradient computation: one worker thread per device, each with a replica of the
/// model that persists across the micro-steps of an optimizer step (re-copied from the main
/// device only when the weights changed). The model, the optimizer and the global loss live on
/// the first (main) device; parameter gradients are summed there in device order.
pub struct DataParallel {
    workers: DeviceWorkers,
    /// How representations are computed on every device.
    pub encoding: Encoding,
    replicas: Mutex<Replicas>,
}

/// Replicas of the model on devices 1.., with the optimizer step whose weights they hold.
#[derive(Default)]
struct Replicas {
    step: Option<u64>,
    pairs: Vec<EncoderPair>,
}

/// One share's slice of a micro-batch: its queries and their documents.
struct Share {
    queries: std::ops::Range<usize>,
    docs: std::ops::Range<usize>,
}

impl DataParallel {
    /// Workers for the autodiff `devices` (the first is the main one), sharing `threads` CPU
    /// threads.
    pub fn new(devices: Vec<Device>, encoding: Encoding, threads: usize) -> Result<Self> {
        Ok(DataParallel {
            workers: DeviceWorkers::new(devices, threads)?,
            encoding,
            replicas: Mutex::new(Replicas::default()),
        })
    }

    /// The devices, the first being the main one.
    pub fn devices(&self) -> &[Device] {
        self.workers.devices()
    }

    /// The workers, one per device.
    pub fn workers(&self) -> &DeviceWorkers {
        &self.workers
    }

    /// The model on the first `n` devices: `model` itself on the main one, then the replicas,
    /// copied again only when `weights_step` (the optimizer step `model`'s weights are from)
    /// changed.
    pub fn replicas(&self, model: &EncoderPair, weights_step: u64, n: usize) -> Vec<EncoderPair> {
        let mut held = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if held.step != Some(weights_step) || held.pairs.len() + 1 < n {
            held.pairs = self.devices()[1..n]
                .iter()
                .map(|d| model.clone().fork(d))
                .collect();
            held.step = Some(weights_step);
        }
        std::iter::once(model.clone())
            .chain(held.pairs.iter().take(n - 1).cloned())
            .collect()
    }

    /// Dropout scopes of a share's queries and documents within the global batch.
    fn scopes(&self, batch: &TokenizedBatch, share: &Share, at: StepPosition) -> [DropoutScope; 2] {
        let scope = |part: usize, rows: &std::ops::Range<usize>, global: usize| DropoutScope {
            seed: mask_seed(at.seed, at.micro, part),
            rows: rows.clone(),
            global_rows: global,
            prob: self.encoding.dropout,
        };
        [
            scope(0, &share.queries, batch.queries.len()),
            scope(1, &share.docs, batch.docs.len()),
        ]
    }

    /// Query and document representations of `share` with `replica` on `device`, padded to the
    /// global batch's lengths and under the global batch's dropout masks.
    fn encode_share(
        &self,
        replica: &EncoderPair,
        batch: &TokenizedBatch,
        share: &Share,
        at: StepPosition,
        device: &Device,
    ) -> (Tensor<2>, Tensor<2>) {
        let [query_scope, doc_scope] = self.scopes(batch, share, at);
        let view = self.encoding.view(replica);
        let q = with_scope(query_scope, || {
            self.encoding.queries(
                &view,
                &batch.queries[share.queries.clone()],
                batch.query_len,
                device,
            )
        });
        let d = with_scope(doc_scope, || {
            self.encoding.docs(
                &view,
                &batch.docs[share.docs.clone()],
                batch.doc_len,
                device,
            )
        });
        (q, d)
    }

    /// Gradients of `objective` on `batch` (scaled by `scale`, e.g. 1/accumulation) for `model`
    /// (whose weights are those of optimizer step `weights_step`) on the main device,
    /// accumulated into `acc`; the figures stay on the main device until read.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        &self,
        model: &EncoderPair,
        weights_step: u64,
        batch: &TokenizedBatch,
        objective: &Objective,
        at: StepPosition,
        scale: f64,
        acc: &mut GradientsAccumulator<EncoderPair>,
    ) -> Result<PendingStats> {
        let main = &self.devices()[0];
        let m = batch.per_query;
        let clock = TrainClock {
            step: at.t,
            micro: at.micro + 1,
        };
        let teacher = batch
            .teacher
            .as_ref()
            .map(|t| Tensor::<2>::from_data(TensorData::new(t.clone(), [batch.len(), m]), main));
        let parts: Vec<Share> = shares(batch.len(), self.workers.len())
            .into_iter()
            .map(|r| Share {
                docs: r.start * m..r.end * m,
                queries: r,
            })
            .collect();
        if parts.len() == 1 {
            // One graph, in the device's own pool.
            let mut out = self.workers.each("train_step", 1, |_| {
                let (q, d) = self.encode_share(model, batch, &parts[0], at, main);
                let (loss, stats) = objective.loss(clock, &q, &d, teacher.as_ref(), m);
                let grads = (loss * scale).backward();
                Ok((GradientsParams::from_grads(grads, model), stats))
            })?;
            let (params, stats) = out
                .pop()
                .ok_or_else(|| StageError::Other("the training step computed nothing".into()))?;
            acc.accumulate(model, params);
            return Ok(stats);
        }
        let replicas = self.replicas(model, weights_step, parts.len());
        let plain_main = main.clone().inner();
        // Pass 1, every device at once: each share's representations with their autodiff graph
        // (kept on the worker's device for pass 2), and a copy of them as constants on the main
        // device.
        let encoded = self.workers.each("train_forward", parts.len(), |i| {
            let (q, d) = self.encode_share(&replicas[i], batch, &parts[i], at, &self.devices()[i]);
            let gathered = (
                q.clone().detach().inner().to_device(&plain_main),
                d.clone().detach().inner().to_device(&plain_main),
            );
            Ok((gathered, (q, d)))
        })?;
        let (gathered, kept): (Vec<_>, Vec<_>) = encoded.into_iter().unzip();
        let (qs, ds): (Vec<_>, Vec<_>) = gathered.into_iter().unzip();
        let q_all = Tensor::cat(qs, 0).autodiff().require_grad();
        let d_all = Tensor::cat(ds, 0).autodiff().require_grad();
        let (loss, stats) = objective.loss(clock, &q_all, &d_all, teacher.as_ref(), m);
        let grads = (loss * scale).backward();
        let missing =
            || StageError::Other("no gradient reached the gathered representations".into());
        let gq = q_all.grad(&grads).ok_or_else(missing)?;
        let gd = d_all.grad(&grads).ok_or_else(missing)?;
        // Pass 2, every device at once: each share back-propagates its slice of ∂loss/∂rep
        // through the graph pass 1 recorded (nothing is encoded twice).
        let grads = self.workers.each("train_backward", parts.len(), |i| {
            let plain = self.devices()[i].clone().inner();
            let share = &parts[i];
            let (q, d) = kept[i].clone();
            let slice = |g: &Tensor<2>, rows: &std::ops::Range<usize>| {
                g.clone()
                    .narrow(0, rows.start, rows.len())
                    .to_device(&plain)
                    .autodiff()
            };
            let surrogate =
                (q * slice(&gq, &share.queries)).sum() + (d * slice(&gd, &share.docs)).sum();
            let grads = surrogate.backward();
            Ok(GradientsParams::from_grads(grads, &replicas[i]).to_device(main, model))
        })?;
        for params in grads {
            acc.accumulate(model, params);
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_evenly() {
        assert_eq!(shares(10, 4), vec![0..3, 3..6, 6..8, 8..10]);
        assert_eq!(shares(3, 1), vec![0..3]);
        assert_eq!(shares(2, 4), vec![0..1, 1..2]);
    }
}
