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

use super::encoders::{EncoderPair, Encoding};
use super::examples::Example;
use super::losses::{BatchScores, RankingLoss};
use super::regularizer::{anti_zero, Regularizer, TrainClock};
use crate::error::{Result, StageError};
use crate::model::TextTokenizer;
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

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone()
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN)
}

impl Objective {
    /// Whether any loss reads teacher scores.
    pub fn needs_teacher(&self) -> bool {
        self.losses.iter().any(|(l, _)| l.needs_teacher())
    }

    /// The total loss at `clock` (for the λ schedules) on global representations `q` `[B, V]`
    /// and `d` `[B·M, V]`.
    pub fn loss(
        &self,
        clock: TrainClock,
        q: &Tensor<2>,
        d: &Tensor<2>,
        teacher: Option<&Tensor<2>>,
        per_query: usize,
    ) -> (Tensor<1>, StepStats) {
        let scores = BatchScores::new(q.clone(), d.clone(), per_query);
        let mut stats = StepStats::default();
        let mut total: Option<Tensor<1>> = None;
        let mut add = |x: Tensor<1>| {
            total = Some(match total.take() {
                Some(t) => t + x,
                None => x,
            })
        };
        for (loss, weight) in &self.losses {
            let value = scores.loss(*loss, teacher);
            stats.terms.push((loss.name().to_string(), scalar(&value)));
            add(value * *weight);
        }
        let mut reg_value = 0.0;
        for r in &self.regularizers {
            if let Some(x) = r.term(clock, q, d, per_query) {
                reg_value += scalar(&x);
                add(x);
            }
        }
        if self.anti_zero {
            let x = anti_zero(q, d);
            reg_value += scalar(&x);
            add(x);
        }
        stats.terms.push(("reg".into(), reg_value));
        let total = total.unwrap_or_else(|| (q.clone().sum() * 0.0) + (d.clone().sum() * 0.0));
        stats.terms.push(("total".into(), scalar(&total)));
        let nnz = |r: &Tensor<2>| {
            let rows = r.dims()[0].max(1) as f64;
            scalar(&r.clone().detach().greater_elem(0.0).float().sum()) / rows
        };
        stats.nnz_q = nnz(q);
        stats.nnz_d = nnz(d);
        stats.flops_d = scalar(&super::regularizer::flops(d.clone().detach()));
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
        Ok(TokenizedBatch {
            queries: query_tokenizer.encode_batch(&queries)?,
            docs: doc_tokenizer.encode_batch(&docs)?,
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

/// The dropout seed of one device share of one micro-step: a pure function of the run's seed.
pub fn share_seed(seed: u64, micro_step: u64, share: usize) -> u64 {
    let mut s = seed ^ micro_step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((share as u64) << 48);
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

/// Data-parallel gradient computation over `devices` (autodiff devices; the first is the main one,
/// where the model, the optimizer and the global loss live).
pub struct DataParallel {
    /// Autodiff devices sharing each batch; the first is the main one.
    pub devices: Vec<Device>,
    /// How representations are computed on every device.
    pub encoding: Encoding,
}

impl DataParallel {
    /// Query and document representations of share `i` (queries `range`) on its device, under
    /// the share's dropout seed — the same masks in both passes of a step.
    fn encode_share(
        &self,
        replica: &EncoderPair,
        batch: &TokenizedBatch,
        range: &std::ops::Range<usize>,
        at: StepPosition,
        i: usize,
    ) -> (Tensor<2>, Tensor<2>) {
        let dev = &self.devices[i];
        let m = batch.per_query;
        dev.seed(share_seed(at.seed, at.micro, i));
        let view = self.encoding.view(replica);
        let q = self
            .encoding
            .queries(&view, &batch.queries[range.clone()], dev);
        let d = self
            .encoding
            .docs(&view, &batch.docs[range.start * m..range.end * m], dev);
        (q, d)
    }

    /// Gradients of `objective` on `batch` (scaled by `scale`, e.g. 1/accumulation) for `model`
    /// on the main device, accumulated into `acc`.
    pub fn accumulate(
        &self,
        model: &EncoderPair,
        batch: &TokenizedBatch,
        objective: &Objective,
        at: StepPosition,
        scale: f64,
        acc: &mut GradientsAccumulator<EncoderPair>,
    ) -> Result<StepStats> {
        let main = &self.devices[0];
        let m = batch.per_query;
        let clock = TrainClock {
            step: at.t,
            micro: at.micro + 1,
        };
        let teacher = batch
            .teacher
            .as_ref()
            .map(|t| Tensor::<2>::from_data(TensorData::new(t.clone(), [batch.len(), m]), main));
        let parts = shares(batch.len(), self.devices.len());
        if parts.len() == 1 {
            main.seed(share_seed(at.seed, at.micro, 0));
            let view = self.encoding.view(model);
            let q = self.encoding.queries(&view, &batch.queries, main);
            let d = self.encoding.docs(&view, &batch.docs, main);
            let (loss, stats) = objective.loss(clock, &q, &d, teacher.as_ref(), m);
            let grads = (loss * scale).backward();
            acc.accumulate(model, GradientsParams::from_grads(grads, model));
            return Ok(stats);
        }
        let replicas: Vec<EncoderPair> = parts
            .iter()
            .enumerate()
            .map(|(i, _)| {
                if i == 0 {
                    model.clone()
                } else {
                    model.clone().fork(&self.devices[i])
                }
            })
            .collect();
        let plain_main = main.clone().inner();
        // Pass 1: representations of every share, gathered (as constants) on the main device.
        let mut qs = Vec::with_capacity(parts.len());
        let mut ds = Vec::with_capacity(parts.len());
        for (i, range) in parts.iter().enumerate() {
            let (q, d) = self.encode_share(&replicas[i], batch, range, at, i);
            qs.push(q.detach().inner().to_device(&plain_main));
            ds.push(d.detach().inner().to_device(&plain_main));
        }
        let q_all = Tensor::cat(qs, 0).autodiff().require_grad();
        let d_all = Tensor::cat(ds, 0).autodiff().require_grad();
        let (loss, stats) = objective.loss(clock, &q_all, &d_all, teacher.as_ref(), m);
        let grads = (loss * scale).backward();
        let missing =
            || StageError::Other("no gradient reached the gathered representations".into());
        let gq = q_all.grad(&grads).ok_or_else(missing)?;
        let gd = d_all.grad(&grads).ok_or_else(missing)?;
        // Pass 2: each share back-propagates its slice of ∂loss/∂rep through its own encoder.
        for (i, range) in parts.iter().enumerate() {
            let dev = &self.devices[i];
            let (q, d) = self.encode_share(&replicas[i], batch, range, at, i);
            let plain = dev.clone().inner();
            let gq_i = gq
                .clone()
                .narrow(0, range.start, range.len())
                .to_device(&plain)
                .autodiff();
            let gd_i = gd
                .clone()
                .narrow(0, range.start * m, range.len() * m)
                .to_device(&plain)
                .autodiff();
            let surrogate = (q * gq_i).sum() + (d * gd_i).sum();
            let grads = surrogate.backward();
            let params = GradientsParams::from_grads(grads, &replicas[i]).to_device(main, model);
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
