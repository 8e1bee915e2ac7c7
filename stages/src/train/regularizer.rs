//! Sparsity regularizers (FLOPS, L1) with the original's quadratic λ warm-up, and the HF stack's
//! optional anti-zero term.

use burn::tensor::Tensor;

/// `Σ_v (mean_i |R_iv|)²` (Paria et al.): penalises terms that are active for many texts.
pub fn flops(r: Tensor<2>) -> Tensor<1> {
    r.abs().mean_dim(0).powi_scalar(2).sum()
}

/// `mean_i Σ_v |R_iv|`.
pub fn l1(r: Tensor<2>) -> Tensor<1> {
    r.abs().sum_dim(1).mean()
}

crate::param_choice! {
    /// What the λ warm-up counts, and what `T = 0` means: the three trainers differ.
    pub enum LambdaWarmup {
        /// `λ·min(1, (t/T)²)` at optimizer step t; `T = 0`: constant λ (this project's default).
        Steps = "steps",
        /// naver's legacy trainer: a counter advanced once per micro-batch before its loss and only
        /// while below T: `λ·(min(k, T)/T)²` at micro-batch k; `T = 0`: λ stays 0.
        Legacy = "legacy",
        /// naver's HF trainer: `min(λ, λ·(k/(T+1))²)` at micro-batch k; `T = 0`: constant λ.
        Hf = "hf",
    }
}

/// When in training a λ is read: the optimizer step and the micro-batch, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainClock {
    /// Optimizer step, 1-based.
    pub step: u64,
    /// Micro-batch since the start, 1-based (`(step − 1)·accumulation + i + 1`).
    pub micro: u64,
}

/// A quadratic λ warm-up over `T` steps or micro-batches (see [`LambdaWarmup`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambdaSchedule {
    /// λ once warmed up.
    pub lambda: f64,
    /// `T`: warm-up length (what it counts depends on `counting`).
    pub warmup: u64,
    /// What is counted, and what `T = 0` means.
    pub counting: LambdaWarmup,
}

impl LambdaSchedule {
    /// λ at `clock`.
    pub fn at(&self, clock: TrainClock) -> f64 {
        let (lambda, big_t) = (self.lambda, self.warmup as f64);
        match self.counting {
            LambdaWarmup::Steps if self.warmup == 0 || clock.step >= self.warmup => lambda,
            LambdaWarmup::Steps => lambda * (clock.step as f64 / big_t).powi(2),
            LambdaWarmup::Legacy if self.warmup == 0 => 0.0,
            LambdaWarmup::Legacy => lambda * (clock.micro.min(self.warmup) as f64 / big_t).powi(2),
            LambdaWarmup::Hf => lambda.min(lambda * (clock.micro as f64 / (big_t + 1.0)).powi(2)),
        }
    }
}

/// Which regularizer a λ applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegularizerKind {
    /// FLOPS: `Σ_v (mean_i |R_iv|)²` ([`flops`]).
    Flops,
    /// L1: `mean_i Σ_v |R_iv|` ([`l1`]).
    L1,
}

/// One regularization term: kind, λ schedule for queries and for documents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regularizer {
    /// Which regularizer.
    pub kind: RegularizerKind,
    /// λ schedule on the query representations.
    pub query: LambdaSchedule,
    /// λ schedule on the document representations.
    pub doc: LambdaSchedule,
    /// Document FLOPS over all documents of the batch at once (the HF trainer), instead of the
    /// mean over document slots (the legacy trainer's `½(FLOPS(D⁺) + FLOPS(D⁻))`).
    pub pooled_docs: bool,
}

impl Regularizer {
    fn value(&self, r: Tensor<2>) -> Tensor<1> {
        match self.kind {
            RegularizerKind::Flops => flops(r),
            RegularizerKind::L1 => l1(r),
        }
    }

    /// `λq·REG(Q) + λd·mean_j REG(D_j)` where `D_j` are the documents at slot `j` (positive,
    /// negative 1, ...) of every query — for one negative the legacy trainer's
    /// `½(REG(D⁺) + REG(D⁻))` — or `λd·REG(D)` over all documents when `pooled_docs` (the HF
    /// trainer). `d` is `[B·M, V]`, query-major. `None` when both λ are 0.
    pub fn term(
        &self,
        clock: TrainClock,
        q: &Tensor<2>,
        d: &Tensor<2>,
        per_query: usize,
    ) -> Option<Tensor<1>> {
        let (lq, ld) = (self.query.at(clock), self.doc.at(clock));
        let query_term = (lq > 0.0).then(|| self.value(q.clone()) * lq);
        let doc_term = (ld > 0.0).then(|| self.doc_value(d, per_query) * ld);
        match (query_term, doc_term) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        }
    }

    /// REG over the documents: pooled, or the mean over slots.
    fn doc_value(&self, d: &Tensor<2>, per_query: usize) -> Tensor<1> {
        if self.pooled_docs || per_query == 1 {
            return self.value(d.clone());
        }
        let [rows, v] = d.dims();
        let b = rows / per_query;
        let slots = d.clone().reshape([b, per_query, v]);
        let parts =
            (0..per_query).map(|j| self.value(slots.clone().narrow(1, j, 1).reshape([b, v])));
        let sum = parts
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| self.value(d.clone()));
        sum / per_query as f64
    }
}

/// `1/(Σ Q)² + 1/(Σ D)²`: keeps the representations from collapsing to all zeros (HF stack).
pub fn anti_zero(q: &Tensor<2>, d: &Tensor<2>) -> Tensor<1> {
    q.clone().sum().powi_scalar(2).recip() + d.clone().sum().powi_scalar(2).recip()
}

/// Linear warm-up from 0 to `lr` over `warmup` optimizer steps, then linear decay to 0 at `total`
/// (Hugging Face `get_linear_schedule_with_warmup`; `step` is 0-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRateSchedule {
    /// Peak learning rate, reached at the end of the warm-up.
    pub lr: f64,
    /// Warm-up length in optimizer steps.
    pub warmup: u64,
    /// Optimizer steps of the run; the rate reaches 0 there.
    pub total: u64,
}

impl LearningRateSchedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        let factor = if step < self.warmup {
            step as f64 / self.warmup.max(1) as f64
        } else {
            let rest = self.total.saturating_sub(self.warmup).max(1) as f64;
            (self.total.saturating_sub(step) as f64 / rest).max(0.0)
        };
        self.lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_warms_up_quadratically_then_stays() {
        let clock = |step| TrainClock { step, micro: step };
        let s = LambdaSchedule {
            lambda: 0.5,
            warmup: 10,
            counting: LambdaWarmup::Steps,
        };
        assert_eq!(s.at(clock(0)), 0.0);
        assert!((s.at(clock(5)) - 0.125).abs() < 1e-12);
        assert_eq!(s.at(clock(10)), 0.5);
        assert_eq!(s.at(clock(1000)), 0.5);
        let flat = LambdaSchedule {
            lambda: 0.3,
            warmup: 0,
            counting: LambdaWarmup::Steps,
        };
        assert_eq!(flat.at(clock(1)), 0.3);
    }

    #[test]
    fn flops_and_l1_match_their_definitions() {
        use burn::tensor::{Device, TensorData};
        let r = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 3.0, 2.0, 0.0, 1.0], [2, 3]),
            &Device::flex(),
        );
        let v = |x: Tensor<1>| x.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0];
        // column means 1.5, 0, 2 → 2.25 + 0 + 4
        assert!((v(flops(r.clone())) - 6.25).abs() < 1e-6);
        // row sums 4 and 3 → mean 3.5
        assert!((v(l1(r)) - 3.5).abs() < 1e-6);
    }

    #[test]
    fn learning_rate_follows_hf_linear_schedule() {
        let s = LearningRateSchedule {
            lr: 1.0,
            warmup: 4,
            total: 12,
        };
        let got: Vec<f64> = (0..13).map(|t| s.at(t)).collect();
        let want = [
            0.0, 0.25, 0.5, 0.75, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }
}
