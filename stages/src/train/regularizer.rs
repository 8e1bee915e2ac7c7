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

/// `λ_t = λ · min(1, (t / T)²)` for optimizer step `t` (1-based); constant λ when `T = 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambdaSchedule {
    /// λ once warmed up.
    pub lambda: f64,
    /// `T`: warm-up length in optimizer steps (0 = constant λ).
    pub warmup: u64,
}

impl LambdaSchedule {
    /// λ at optimizer step `t` (the original advances its counter before the first loss: t ≥ 1).
    pub fn at(&self, t: u64) -> f64 {
        if self.warmup == 0 || t >= self.warmup {
            self.lambda
        } else {
            self.lambda * (t as f64 / self.warmup as f64).powi(2)
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
}

impl Regularizer {
    fn value(&self, r: Tensor<2>) -> Tensor<1> {
        match self.kind {
            RegularizerKind::Flops => flops(r),
            RegularizerKind::L1 => l1(r),
        }
    }

    /// `λq(t)·REG(Q) + λd(t)·mean_j REG(D_j)` where `D_j` are the documents at slot `j` (positive,
    /// negative 1, ...) of every query: for one negative this is the original's
    /// `½(REG(D⁺) + REG(D⁻))`. `d` is `[B·M, V]`, query-major. Returns `None` when both λ are 0.
    pub fn term(
        &self,
        t: u64,
        q: &Tensor<2>,
        d: &Tensor<2>,
        per_query: usize,
    ) -> Option<Tensor<1>> {
        let (lq, ld) = (self.query.at(t), self.doc.at(t));
        let mut out: Option<Tensor<1>> = None;
        if lq > 0.0 {
            out = Some(self.value(q.clone()) * lq);
        }
        if ld > 0.0 {
            let [rows, v] = d.dims();
            let b = rows / per_query;
            let slots = d.clone().reshape([b, per_query, v]);
            let mut sum: Option<Tensor<1>> = None;
            for j in 0..per_query {
                let part = self.value(slots.clone().narrow(1, j, 1).reshape([b, v]));
                sum = Some(match sum {
                    Some(s) => s + part,
                    None => part,
                });
            }
            if let Some(s) = sum {
                let dterm = s * (ld / per_query as f64);
                out = Some(match out {
                    Some(o) => o + dterm,
                    None => dterm,
                });
            }
        }
        out
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
        let s = LambdaSchedule {
            lambda: 0.5,
            warmup: 10,
        };
        assert_eq!(s.at(0), 0.0);
        assert!((s.at(5) - 0.125).abs() < 1e-12);
        assert_eq!(s.at(10), 0.5);
        assert_eq!(s.at(1000), 0.5);
        let flat = LambdaSchedule {
            lambda: 0.3,
            warmup: 0,
        };
        assert_eq!(flat.at(1), 0.3);
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
