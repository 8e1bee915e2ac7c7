//! Ranking losses over a global batch of SPLADE representations.
//!
//! Layout: `q` is `[B, V]` (one row per query), `d` is `[B·M, V]` with the `M = 1 + N` documents
//! of query `i` (positive first) in rows `i·M .. (i+1)·M`; teacher scores are `[B, M]`.

use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Int, Tensor, TensorData};

/// One ranking loss of the original (legacy trainer and HF stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankingLoss {
    /// Each query against every positive of the *global* batch plus its own negatives;
    /// cross-entropy towards its own positive (legacy `InBatchPairwiseNLL`, without the per-GPU
    /// restriction of the original's DataParallel).
    InBatchPairwiseNll,
    /// `-log softmax([s⁺, s⁻])[0]` for each own negative, averaged (legacy `PairwiseNLL`).
    PairwiseNll,
    /// The positive against every negative of the global batch, target the positive (HF
    /// `contrastive`, multi-negative).
    Contrastive,
    /// `MSE(s⁺ − s⁻, t⁺ − t⁻)` over own negatives (`DistilMarginMSE`).
    MarginMse,
    /// `KL(softmax(t) ‖ softmax(s))` over the `M` own documents: two-way for one negative,
    /// N-way otherwise (`DistilKLLoss`, HF `kldiv`).
    KlDiv,
    /// MSE between all pairwise margins of the `M` own documents, student vs teacher (HF
    /// `mse_margin`).
    MseMargin,
}

impl RankingLoss {
    /// Every loss, by its name in pipeline files.
    pub const ALL: [(&'static str, RankingLoss); 6] = [
        ("in_batch_pairwise_nll", RankingLoss::InBatchPairwiseNll),
        ("pairwise_nll", RankingLoss::PairwiseNll),
        ("contrastive", RankingLoss::Contrastive),
        ("margin_mse", RankingLoss::MarginMse),
        ("kl_div", RankingLoss::KlDiv),
        ("mse_margin", RankingLoss::MseMargin),
    ];

    /// The loss named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
    }

    /// Its name in pipeline files and logs.
    pub fn name(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, l)| l == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether the loss reads teacher scores.
    pub fn needs_teacher(&self) -> bool {
        matches!(
            self,
            RankingLoss::MarginMse | RankingLoss::KlDiv | RankingLoss::MseMargin
        )
    }

    /// Whether the loss needs at least one negative per query.
    pub fn needs_negatives(&self) -> bool {
        !matches!(self, RankingLoss::InBatchPairwiseNll)
    }
}

/// Student scores of a global batch.
pub struct BatchScores {
    /// `[B, B·M]`: every query against every document of the batch.
    pub all: Tensor<2>,
    /// `[B, M]`: each query against its own documents (positive first).
    pub own: Tensor<2>,
    /// `B`: queries in the batch.
    pub queries: usize,
    /// `M`: documents per query (positive first).
    pub per_query: usize,
}

fn int_tensor<const D: usize>(
    values: Vec<i64>,
    shape: [usize; D],
    like: &Tensor<2>,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), &like.device())
}

fn float_tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    like: &Tensor<2>,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), &like.device())
}

impl BatchScores {
    /// Dot products of `q` `[B, V]` with `d` `[B·M, V]`.
    pub fn new(q: Tensor<2>, d: Tensor<2>, per_query: usize) -> Self {
        let b = q.dims()[0];
        let all = q.matmul(d.transpose());
        let idx: Vec<i64> = (0..b)
            .flat_map(|i| (0..per_query).map(move |j| (i * per_query + j) as i64))
            .collect();
        let own = all.clone().gather(1, int_tensor(idx, [b, per_query], &all));
        BatchScores {
            all,
            own,
            queries: b,
            per_query,
        }
    }

    /// Columns of `all` holding documents at slot `j` (0 = positives) of every query.
    fn columns(&self, slots: impl Fn(usize) -> bool) -> Tensor<2> {
        let cols: Vec<i64> = (0..self.queries * self.per_query)
            .filter(|c| slots(c % self.per_query))
            .map(|c| c as i64)
            .collect();
        let n = cols.len();
        self.all
            .clone()
            .select(1, int_tensor::<1>(cols, [n], &self.all))
    }

    /// `-mean_i log softmax(logits_i)[target_i]`.
    fn cross_entropy(logits: Tensor<2>, targets: &[usize]) -> Tensor<1> {
        let [b, k] = logits.dims();
        let mut onehot = vec![0f32; b * k];
        for (i, t) in targets.iter().enumerate() {
            onehot[i * k + t] = 1.0;
        }
        let mask = float_tensor(onehot, [b, k], &logits);
        (log_softmax(logits, 1) * mask).sum().neg() / b as f64
    }

    /// The value of `loss` on this batch; `teacher` is `[B, M]` when the loss needs it.
    pub fn loss(&self, loss: RankingLoss, teacher: Option<&Tensor<2>>) -> Tensor<1> {
        let (b, m) = (self.queries, self.per_query);
        let own = self.own.clone();
        let pos = || own.clone().narrow(1, 0, 1);
        let negs = || own.clone().narrow(1, 1, m - 1);
        match loss {
            RankingLoss::InBatchPairwiseNll => {
                let logits = Tensor::cat(vec![self.columns(|j| j == 0), negs()], 1);
                Self::cross_entropy(logits, &(0..b).collect::<Vec<_>>())
            }
            RankingLoss::PairwiseNll => {
                // softplus(s⁻ − s⁺), computed stably.
                let x = negs() - pos();
                (relu(x.clone()) + x.abs().neg().exp().log1p()).mean()
            }
            RankingLoss::Contrastive => {
                let logits = Tensor::cat(vec![pos(), self.columns(|j| j > 0)], 1);
                Self::cross_entropy(logits, &vec![0; b])
            }
            RankingLoss::MarginMse => {
                let t = teacher.cloned().unwrap_or_else(|| own.clone().detach());
                let ts = t.clone().narrow(1, 0, 1) - t.narrow(1, 1, m - 1);
                let ss = pos() - negs();
                (ss - ts).powi_scalar(2).mean()
            }
            RankingLoss::KlDiv => {
                let t = teacher.cloned().unwrap_or_else(|| own.clone().detach());
                let log_ps = log_softmax(own, 1);
                let pt = softmax(t.clone(), 1);
                let log_pt = log_softmax(t, 1);
                (pt * (log_pt - log_ps)).sum() / b as f64
            }
            RankingLoss::MseMargin => {
                let t = teacher.cloned().unwrap_or_else(|| own.clone().detach());
                let margins = |s: Tensor<2>| s.clone().reshape([b, m, 1]) - s.reshape([b, 1, m]);
                (margins(own) - margins(t)).powi_scalar(2).mean()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t2(v: &[f32], shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Device::flex())
    }

    fn value(x: Tensor<1>) -> f64 {
        x.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0]
    }

    fn ce(logits: &[f64], target: usize) -> f64 {
        let z: f64 = logits.iter().map(|x| x.exp()).sum();
        z.ln() - logits[target]
    }

    /// Two queries over a two-term vocabulary, each with a positive and one negative:
    /// scores q0 → [2, 1, 0, 0], q1 → [0, 0, 3, 1] (columns: d0⁺ d0⁻ d1⁺ d1⁻).
    fn scores() -> BatchScores {
        let q = t2(&[1.0, 0.0, 0.0, 1.0], [2, 2]);
        let d = t2(&[2.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 1.0], [4, 2]);
        BatchScores::new(q, d, 2)
    }

    #[test]
    fn losses_match_hand_computed_values() {
        let s = scores();
        let close = |got: f64, want: f64| assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        close(
            value(s.loss(RankingLoss::PairwiseNll, None)),
            ((1f64 + (-1f64).exp()).ln() + (1f64 + (-2f64).exp()).ln()) / 2.0,
        );
        close(
            value(s.loss(RankingLoss::InBatchPairwiseNll, None)),
            (ce(&[2.0, 0.0, 1.0], 0) + ce(&[0.0, 3.0, 1.0], 1)) / 2.0,
        );
        close(
            value(s.loss(RankingLoss::Contrastive, None)),
            (ce(&[2.0, 1.0, 0.0], 0) + ce(&[3.0, 0.0, 1.0], 0)) / 2.0,
        );
        let teacher = t2(&[4.0, 1.0, 2.0, 2.0], [2, 2]);
        close(value(s.loss(RankingLoss::MarginMse, Some(&teacher))), 4.0);
        let same = t2(&[2.0, 1.0, 3.0, 1.0], [2, 2]);
        close(value(s.loss(RankingLoss::KlDiv, Some(&same))), 0.0);
        close(value(s.loss(RankingLoss::MseMargin, Some(&same))), 0.0);
        // KL against a teacher that prefers the negative is positive.
        let flipped = t2(&[1.0, 2.0, 1.0, 3.0], [2, 2]);
        assert!(value(s.loss(RankingLoss::KlDiv, Some(&flipped))) > 0.5);
    }
}
