//! `report`: many `evaluate` outputs → one table of dataset × system × metric with the mean over
//! datasets (BEIR-style), and paired significance tests between systems per dataset and metric.
//!
//! Outputs: `table` (wide: a row per dataset and a `mean` row, a column per `metric/system`),
//! `scores` (tidy: dataset, system, metric, value, queries) and `comparisons` (one row per
//! dataset × metric × compared pair, with t-test and randomization p-values, raw and corrected).
//! Memory: the per-query values of every evaluation.

pub mod results;
pub mod stats;
pub mod tables;

use serde_json::{json, Map};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::Result;
use crate::evaluate::metrics::Measure;
use crate::params::{at_most, ParamError};
use results::{Comparisons, Evaluations, TestOptions};

/// The report stage kind.
pub struct Report;

/// One evaluation a report reads: which dataset and system it is, and its `per_query` output.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationEntry {
    /// The dataset's label (a row of the table).
    pub dataset: String,
    /// The system's label (a column group of the table).
    pub system: String,
    /// The evaluate stage's per-query values, `"<stage>.per_query"`.
    pub per_query: String,
}

crate::param_choice! {
    /// Which pairs of systems are tested.
    pub enum Pairs {
        /// Every system against the baseline.
        Baseline = "baseline",
        /// Every pair of systems.
        AllPairs = "all_pairs",
    }
}

crate::param_choice! {
    /// The test whose corrected p-value marks a difference as significant.
    pub enum Test {
        /// Paired Student t-test.
        TTest = "t_test",
        /// Fisher's paired randomization test.
        Randomization = "randomization",
    }
}

crate::param_choice! {
    /// Multiple-comparison correction over the tests of one dataset and metric.
    pub enum Correction {
        /// Holm–Bonferroni step-down.
        Holm = "holm",
        /// Bonferroni.
        Bonferroni = "bonferroni",
        /// None.
        None = "none",
    }
}

crate::stage_params! {
    /// Params of [`Report`].
    pub struct ReportParams {
        /// the evaluations: tables { dataset = "...", system = "...", per_query = "<evaluate stage>.per_query" }
        evaluations: Vec<EvaluationEntry> [ArtifactRecords("per_query")],
        /// metrics to report (`ndcg@10`, `recall@100`, ...); empty: every metric of the evaluations
        measures: Vec<String> [StrList] = "[]",
        /// the system others are compared with; default: the first system listed
        baseline: Option<String> [Str] = "null",
        /// baseline: each system against the baseline; all_pairs: every pair
        pairs: Pairs [Choice(Pairs::NAMES)] = "\"baseline\"",
        /// the test whose corrected p-value marks significance (`*`) in the printed table
        test: Test [Choice(Test::NAMES)] = "\"t_test\"",
        /// correction over the comparisons of one dataset and metric
        correction: Correction [Choice(Correction::NAMES)] = "\"holm\"",
        /// significance level
        alpha: f64 [Float] = "0.05",
        /// random sign flips of the randomization test (exact enumeration when 2^queries is fewer)
        permutations: i64 [Int] = "10000",
        /// seed of the randomization test
        seed: i64 [Int] = "42",
    }
}

/// The most sign flips a randomization test may draw (each costs a pass over the queries).
const MAX_PERMUTATIONS: i64 = 10_000_000;

impl ReportParams {
    fn measure_names(&self) -> std::result::Result<Vec<String>, String> {
        let mut names = Vec::new();
        for spec in &self.measures {
            for m in Measure::parse(spec, &[])? {
                if !names.contains(&m.name()) {
                    names.push(m.name());
                }
            }
        }
        Ok(names)
    }
}

impl TypedStage for Report {
    type Params = ReportParams;
    const KIND: &'static str = "report";
    const VERSION: u32 = 1;
    const DOC: &'static str = "evaluations of several systems on several datasets → one table \
         (with the mean over datasets) and paired significance tests per dataset";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "evaluations" => Some(&[Holds::PerQuery]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &ReportParams) -> Vec<String> {
        vec!["table".into(), "scores".into(), "comparisons".into()]
    }

    fn check(&self, p: &ReportParams) -> std::result::Result<(), ParamError> {
        if p.evaluations.is_empty() {
            return Err(ParamError::new(
                "evaluations",
                "give at least one evaluation",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &p.evaluations {
            if e.dataset.trim().is_empty() || e.system.trim().is_empty() {
                return Err(ParamError::new(
                    "evaluations",
                    "every evaluation needs a non-empty `dataset` and `system`",
                ));
            }
            if !seen.insert((e.dataset.as_str(), e.system.as_str())) {
                return Err(ParamError::new(
                    "evaluations",
                    format!(
                        "dataset `{}`, system `{}` is listed twice",
                        e.dataset, e.system
                    ),
                ));
            }
        }
        if let Some(b) = &p.baseline {
            if !p.evaluations.iter().any(|e| &e.system == b) {
                let systems: Vec<&str> = p.evaluations.iter().map(|e| e.system.as_str()).collect();
                return Err(ParamError::new(
                    "baseline",
                    format!(
                        "`{b}` is not a system of the evaluations (systems: {}){}",
                        systems.join(", "),
                        crate::params::did_you_mean(b, systems.iter().copied())
                    ),
                ));
            }
        }
        p.measure_names()
            .map_err(|e| ParamError::new("measures", e))?;
        if !(p.alpha > 0.0 && p.alpha < 1.0) {
            return Err(ParamError::new("alpha", "must be between 0 and 1"));
        }
        if p.permutations < 1 {
            return Err(ParamError::new(
                "permutations",
                "must be a positive integer",
            ));
        }
        at_most(
            "permutations",
            p.permutations,
            MAX_PERMUTATIONS,
            "sign flips (each is a pass over the queries)",
        )
    }

    fn run(&self, p: ReportParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let measures = p
            .measure_names()
            .map_err(|message| crate::error::StageError::Param {
                key: "measures".into(),
                message,
            })?;
        let evaluations = Evaluations::read(&p.evaluations, &measures, ctx)?;
        let options = TestOptions {
            baseline: p
                .baseline
                .clone()
                .unwrap_or_else(|| evaluations.systems[0].clone()),
            all_pairs: p.pairs == Pairs::AllPairs,
            correction: p.correction,
            permutations: p.permutations as u64,
            seed: p.seed as u64,
        };
        let comparisons = Comparisons::compute(&evaluations, &options);
        tables::write_table(&ctx.output_file("table"), &evaluations)?;
        tables::write_scores(&ctx.output_file("scores"), &evaluations)?;
        tables::write_comparisons(
            &ctx.output_file("comparisons"),
            &comparisons,
            p.alpha,
            p.test,
        )?;
        let summary = tables::format_report(&ctx.name, &evaluations, &comparisons, &p, &options);
        let mut stats = Map::new();
        stats.insert("datasets".into(), json!(evaluations.datasets.len()));
        stats.insert("systems".into(), json!(evaluations.systems.len()));
        stats.insert("metrics".into(), json!(evaluations.metrics.len()));
        stats.insert("comparisons".into(), json!(comparisons.rows.len()));
        Ok(StageOutcome {
            summary: Some(summary),
            stats,
        })
    }
}
