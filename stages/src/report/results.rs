//! The report's data: per-query values by (dataset, system, metric), and the paired comparisons
//! computed from them.

use std::collections::HashMap;

use rayon::prelude::*;

use super::stats::{bonferroni, holm, paired_t_test, randomization_test};
use super::{Correction, EvaluationEntry};
use crate::contract::StageContext;
use crate::error::{Result, StageError};
use crate::parquet_io::read_per_query;

/// One evaluation's values of one metric: (query id, value) in the evaluation's order.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Per-query values.
    pub values: Vec<(String, f64)>,
}

impl Cell {
    /// The mean over its queries (summed in file order, as `evaluate` does), 0 without queries.
    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            self.values.iter().map(|(_, v)| v).sum::<f64>() / self.values.len() as f64
        }
    }
}

/// Every evaluation of a report, indexed by dataset, system and metric (in first-seen order).
#[derive(Debug, Clone, Default)]
pub struct Evaluations {
    /// Dataset labels, in the order listed.
    pub datasets: Vec<String>,
    /// System labels, in the order listed.
    pub systems: Vec<String>,
    /// Metric names (`nDCG@10`), as asked for or in first-seen order.
    pub metrics: Vec<String>,
    cells: HashMap<(usize, usize, usize), Cell>,
}

impl Evaluations {
    /// Reads the `per_query` input of each entry (`evaluations.<i>`), keeping `measures` (every
    /// metric when empty); a metric asked for that an evaluation lacks is an error.
    pub fn read(
        entries: &[EvaluationEntry],
        measures: &[String],
        ctx: &StageContext,
    ) -> Result<Self> {
        let mut out = Evaluations {
            metrics: measures.to_vec(),
            ..Default::default()
        };
        for (i, entry) in entries.iter().enumerate() {
            let path = ctx.input(&format!("evaluations.{i}"))?.path().to_path_buf();
            let d = index_of(&mut out.datasets, &entry.dataset);
            let s = index_of(&mut out.systems, &entry.system);
            let mut seen = Vec::new();
            for (qid, metric, value) in read_per_query(&path)? {
                let m = if measures.is_empty() {
                    index_of(&mut out.metrics, &metric)
                } else if let Some(m) = measures.iter().position(|x| *x == metric) {
                    m
                } else {
                    continue;
                };
                if !seen.contains(&m) {
                    seen.push(m);
                }
                out.cells
                    .entry((d, s, m))
                    .or_default()
                    .values
                    .push((qid, value));
            }
            if let Some(lacking) = measures.iter().enumerate().find(|(m, _)| !seen.contains(m)) {
                return Err(StageError::Param {
                    key: "measures".into(),
                    message: format!(
                        "evaluations[{i}] `{}` (dataset `{}`, system `{}`) has no per-query \
                         values of `{}`: add it to that evaluate stage's `measures`",
                        entry.per_query, entry.dataset, entry.system, lacking.1
                    ),
                });
            }
        }
        Ok(out)
    }

    /// The values of one dataset, system and metric, if that evaluation exists.
    pub fn cell(&self, dataset: usize, system: usize, metric: usize) -> Option<&Cell> {
        self.cells.get(&(dataset, system, metric))
    }

    /// The mean over datasets of one system and metric, over the datasets that have it (`None`
    /// when none has), and how many datasets that is.
    pub fn mean_over_datasets(&self, system: usize, metric: usize) -> Option<(f64, usize)> {
        let means: Vec<f64> = (0..self.datasets.len())
            .filter_map(|d| self.cell(d, system, metric).map(Cell::mean))
            .collect();
        (!means.is_empty()).then(|| (means.iter().sum::<f64>() / means.len() as f64, means.len()))
    }
}

fn index_of(list: &mut Vec<String>, label: &str) -> usize {
    match list.iter().position(|x| x == label) {
        Some(i) => i,
        None => {
            list.push(label.to_string());
            list.len() - 1
        }
    }
}

/// How systems are compared.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The system compared against.
    pub baseline: String,
    /// Every pair instead of each system against the baseline.
    pub all_pairs: bool,
    /// Correction over the comparisons of one dataset and metric.
    pub correction: Correction,
    /// Random sign flips of the randomization test.
    pub permutations: u64,
    /// Seed of the randomization test (mixed with the comparison's labels).
    pub seed: u64,
}

/// One paired comparison of two systems on one dataset and metric.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Dataset label.
    pub dataset: String,
    /// Metric name.
    pub metric: String,
    /// The system compared against.
    pub baseline: String,
    /// The system compared.
    pub system: String,
    /// Mean of the baseline over the paired queries.
    pub baseline_value: f64,
    /// Mean of the system over the paired queries.
    pub system_value: f64,
    /// Queries both evaluations have.
    pub queries: usize,
    /// t statistic of system − baseline (±inf when every difference is the same non-zero value).
    pub t_statistic: Option<f64>,
    /// Two-sided p-value of the paired t-test.
    pub p_t_test: Option<f64>,
    /// Two-sided p-value of the randomization test.
    pub p_randomization: Option<f64>,
    /// True when the randomization p-value was enumerated exactly.
    pub randomization_exact: bool,
    /// `p_t_test` after the correction.
    pub p_t_test_corrected: Option<f64>,
    /// `p_randomization` after the correction.
    pub p_randomization_corrected: Option<f64>,
}

/// Every comparison of a report, grouped by dataset then metric.
#[derive(Debug, Clone, Default)]
pub struct Comparisons {
    /// The comparisons, dataset-major, then metric, then pair.
    pub rows: Vec<Comparison>,
}

impl Comparisons {
    /// Runs both tests on every pair asked for, then corrects per (dataset, metric).
    pub fn compute(ev: &Evaluations, opts: &TestOptions) -> Self {
        let pairs = system_pairs(ev, opts);
        let mut tasks = Vec::new();
        for d in 0..ev.datasets.len() {
            for m in 0..ev.metrics.len() {
                for &(a, b) in &pairs {
                    if let (Some(x), Some(y)) = (ev.cell(d, a, m), ev.cell(d, b, m)) {
                        tasks.push((d, m, a, b, x, y));
                    }
                }
            }
        }
        let mut rows: Vec<Comparison> = tasks
            .par_iter()
            .map(|&(d, m, a, b, x, y)| compare(ev, (d, m, a, b), x, y, opts))
            .collect();
        correct(&mut rows, opts.correction);
        Comparisons { rows }
    }

    /// The comparison of `system` against `baseline` on a dataset and metric, if made.
    pub fn find(
        &self,
        dataset: &str,
        metric: &str,
        baseline: &str,
        system: &str,
    ) -> Option<&Comparison> {
        self.rows.iter().find(|c| {
            c.dataset == dataset
                && c.metric == metric
                && c.baseline == baseline
                && c.system == system
        })
    }
}

fn system_pairs(ev: &Evaluations, opts: &TestOptions) -> Vec<(usize, usize)> {
    let n = ev.systems.len();
    if opts.all_pairs {
        return (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
    }
    let Some(base) = ev.systems.iter().position(|s| *s == opts.baseline) else {
        return Vec::new();
    };
    (0..n).filter(|&s| s != base).map(|s| (base, s)).collect()
}

fn compare(
    ev: &Evaluations,
    (d, m, a, b): (usize, usize, usize, usize),
    x: &Cell,
    y: &Cell,
    opts: &TestOptions,
) -> Comparison {
    let (xs, ys) = paired_values(x, y);
    let seed = opts.seed
        ^ label_hash(&[
            &ev.datasets[d],
            &ev.metrics[m],
            &ev.systems[a],
            &ev.systems[b],
        ]);
    let t = paired_t_test(&xs, &ys);
    let r = randomization_test(&xs, &ys, opts.permutations, seed);
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Comparison {
        dataset: ev.datasets[d].clone(),
        metric: ev.metrics[m].clone(),
        baseline: ev.systems[a].clone(),
        system: ev.systems[b].clone(),
        baseline_value: mean(&xs),
        system_value: mean(&ys),
        queries: xs.len(),
        t_statistic: t.map(|(t, _)| t),
        p_t_test: t.map(|(_, p)| p),
        p_randomization: r.map(|r| r.p),
        randomization_exact: r.is_some_and(|r| r.exact),
        p_t_test_corrected: None,
        p_randomization_corrected: None,
    }
}

/// The values of the queries both cells have, in `x`'s order.
fn paired_values(x: &Cell, y: &Cell) -> (Vec<f64>, Vec<f64>) {
    let by_query: HashMap<&str, f64> = y.values.iter().map(|(q, v)| (q.as_str(), *v)).collect();
    x.values
        .iter()
        .filter_map(|(q, v)| by_query.get(q.as_str()).map(|w| (*v, *w)))
        .unzip()
}

/// A stable 64-bit hash of labels, so each comparison draws its own sign flips whatever the
/// order comparisons run in.
fn label_hash(labels: &[&str]) -> u64 {
    let mut h = blake3::Hasher::new();
    for l in labels {
        h.update(l.as_bytes());
        h.update(&[0]);
    }
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Applies the correction within each (dataset, metric) family, separately per test.
fn correct(rows: &mut [Comparison], correction: Correction) {
    let adjust = |p: &[Option<f64>]| match correction {
        Correction::Holm => holm(p),
        Correction::Bonferroni => bonferroni(p),
        Correction::None => p.to_vec(),
    };
    let mut start = 0;
    while start < rows.len() {
        let end = (start..rows.len())
            .find(|&i| {
                rows[i].dataset != rows[start].dataset || rows[i].metric != rows[start].metric
            })
            .unwrap_or(rows.len());
        let family = &mut rows[start..end];
        let t: Vec<Option<f64>> = family.iter().map(|c| c.p_t_test).collect();
        let r: Vec<Option<f64>> = family.iter().map(|c| c.p_randomization).collect();
        for (c, (t, r)) in family
            .iter_mut()
            .zip(adjust(&t).into_iter().zip(adjust(&r)))
        {
            c.p_t_test_corrected = t;
            c.p_randomization_corrected = r;
        }
        start = end;
    }
}
