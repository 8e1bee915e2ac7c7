//! Paired significance tests between two systems' per-query values, and multiple-comparison
//! corrections — the tests IR papers report (as ranx, ir_measures and scipy compute them).
//!
//! Checked against scipy (`ttest_rel`, `permutation_test`) and statsmodels (`multipletests`) on
//! the fixtures of `tests/fixtures/significance/`.

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::rng::splitmix64;

/// Largest number of pairs whose sign flips [`randomization_test`] may enumerate exactly.
const MAX_EXACT_PAIRS: usize = 24;

/// A paired Student t-test of `b - a`: the t statistic and its two-sided p-value, or `None`
/// when it is undefined (fewer than two pairs, or every difference equal to zero).
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    if var == 0.0 {
        // Every difference equal: no variance to test against.
        return (mean != 0.0).then(|| (mean.signum() * f64::INFINITY, 0.0));
    }
    let t = mean / (var / n as f64).sqrt();
    let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    let p = 2.0 * dist.sf(t.abs());
    Some((t, p.min(1.0)))
}

/// How a randomization p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Randomization {
    /// The two-sided p-value.
    pub p: f64,
    /// True when every sign assignment was enumerated (the p-value is exact).
    pub exact: bool,
}

/// Fisher's paired randomization test of mean(b - a), two-sided: the share of sign flips of the
/// differences whose mean is at least as far from zero as the observed one. Every flip is
/// enumerated when 2^n ≤ `permutations` (exact, as scipy's `permutation_test` does); otherwise
/// `permutations` random flips from `seed`, with p = (hits + 1) / (permutations + 1). `None`
/// without pairs.
pub fn randomization_test(
    a: &[f64],
    b: &[f64],
    permutations: u64,
    seed: u64,
) -> Option<Randomization> {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    if d.is_empty() {
        return None;
    }
    let observed = d.iter().sum::<f64>().abs();
    // Sums equal in exact arithmetic differ in the last bits when added in another order.
    let at_least = observed - (observed * 1e-9).max(1e-12);
    let n = d.len();
    if n <= MAX_EXACT_PAIRS && (1u64 << n) <= permutations {
        let hits = (0u64..1 << n)
            .filter(|mask| flipped_sum(&d, |i| mask >> i & 1 == 1).abs() >= at_least)
            .count();
        return Some(Randomization {
            p: hits as f64 / (1u64 << n) as f64,
            exact: true,
        });
    }
    let mut state = seed;
    let mut hits = 0u64;
    let mut bits = Vec::with_capacity(n.div_ceil(64));
    for _ in 0..permutations {
        bits.clear();
        bits.extend((0..n.div_ceil(64)).map(|_| splitmix64(&mut state)));
        if flipped_sum(&d, |i| bits[i / 64] >> (i % 64) & 1 == 1).abs() >= at_least {
            hits += 1;
        }
    }
    Some(Randomization {
        p: (hits + 1) as f64 / (permutations + 1) as f64,
        exact: false,
    })
}

fn flipped_sum(d: &[f64], flip: impl Fn(usize) -> bool) -> f64 {
    d.iter()
        .enumerate()
        .map(|(i, x)| if flip(i) { -x } else { *x })
        .sum()
}

/// Holm–Bonferroni step-down adjusted p-values, in the input order (`None` entries are not
/// tests and are left out of the family).
pub fn holm(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_some()).collect();
    order.sort_by(|&x, &y| p[x].unwrap_or(1.0).total_cmp(&p[y].unwrap_or(1.0)));
    let m = order.len();
    let mut out = vec![None; p.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        let adjusted = ((m - rank) as f64 * p[i].unwrap_or(1.0)).min(1.0);
        running = running.max(adjusted);
        out[i] = Some(running);
    }
    out
}

/// Bonferroni adjusted p-values: each times the number of tests, at most 1.
pub fn bonferroni(p: &[Option<f64>]) -> Vec<Option<f64>> {
    let m = p.iter().flatten().count() as f64;
    p.iter().map(|x| x.map(|x| (x * m).min(1.0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_test_is_undefined_without_variance_or_pairs() {
        assert_eq!(paired_t_test(&[0.5], &[0.7]), None);
        assert_eq!(paired_t_test(&[0.1, 0.2], &[0.1, 0.2]), None);
        // Dyadic values: every difference is exactly 0.125.
        assert_eq!(
            paired_t_test(&[0.125, 0.25], &[0.25, 0.375]),
            Some((f64::INFINITY, 0.0))
        );
    }

    #[test]
    fn exact_randomization_counts_every_flip() {
        // d = (1, 1): flips give sums 2, 0, 0, -2; |sum| >= 2 for 2 of 4.
        let r = randomization_test(&[0.0, 0.0], &[1.0, 1.0], 4, 0).unwrap();
        assert_eq!(
            r,
            Randomization {
                p: 0.5,
                exact: true
            }
        );
        let r = randomization_test(&[0.0; 3], &[1.0; 3], 4, 0).unwrap();
        assert!(!r.exact);
    }

    #[test]
    fn holm_is_monotone_and_clipped() {
        let p = [Some(0.01), None, Some(0.04), Some(0.03)];
        let h = holm(&p);
        assert_eq!(h[1], None);
        assert!((h[0].unwrap() - 0.03).abs() < 1e-15);
        assert!((h[3].unwrap() - 0.06).abs() < 1e-15);
        assert!((h[2].unwrap() - 0.06).abs() < 1e-15);
        assert_eq!(
            bonferroni(&[Some(0.5), Some(0.6)]),
            vec![Some(1.0), Some(1.0)]
        );
    }
}
