//! `evaluate`: run + qrels → metrics summary (`metrics`) and per-query values (`per_query`), with
//! trec_eval conventions (see [`metrics`]).

pub mod metrics;

use serde_json::{json, Map};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::{Result, StageError};
use crate::params::ParamError;
use crate::parquet_io::{read_qrels, read_run, write_metrics, write_per_query};
use metrics::{evaluate, EvalOptions, Measure};

/// The evaluate stage kind.
pub struct Evaluate;

crate::stage_params! {
    /// Params of [`Evaluate`].
    pub struct EvaluateParams {
        /// the run to evaluate
        run: String [Artifact],
        /// relevance judgments
        qrels: String [Artifact],
        /// mrr, rr, recall, r_cap, p, ndcg, map; `name@k` or a family expanded over `k`
        measures: Vec<String> [StrList] = r#"["mrr@10", "recall", "ndcg@10", "map"]"#,
        /// cut-offs for measures given without @k
        k: Vec<i64> [IntList] = "[100, 1000]",
        /// average over all qrels queries, 0 for those missing from the run (trec_eval -c)
        complete: bool [Bool] = "false",
        /// drop retrieved documents whose id equals the query id (BEIR ArguAna/Quora)
        remove_self_matches: bool [Bool] = "false",
        /// minimum rel counted as relevant by binary measures
        relevance_level: i32 [Int] = "1",
    }
}

fn parse_measures(measures: &[String], k: &[i64]) -> std::result::Result<Vec<Measure>, String> {
    let ks: Vec<usize> = k
        .iter()
        .map(|k| usize::try_from(*k).ok().filter(|k| *k > 0))
        .collect::<Option<_>>()
        .ok_or("cut-offs in `k` must be positive integers")?;
    let mut out: Vec<Measure> = Vec::new();
    for spec in measures {
        for m in Measure::parse(spec, &ks)? {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    if out.is_empty() {
        return Err("no measures asked for".into());
    }
    Ok(out)
}

/// Formats a metrics table for the terminal.
pub fn format_table(title: &str, rows: &[(String, f64)], n_queries: usize) -> String {
    let width = rows.iter().map(|(m, _)| m.len()).max().unwrap_or(6).max(6);
    let mut s = format!("{title} ({n_queries} queries)\n");
    s += &format!("  {:<width$}  {:>8}\n", "metric", "value");
    for (m, v) in rows {
        s += &format!("  {m:<width$}  {v:>8.4}\n");
    }
    s
}

impl TypedStage for Evaluate {
    type Params = EvaluateParams;
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 1;
    const DOC: &'static str =
        "compute MRR@k, Recall@k, nDCG@k, MAP, P@k, R_cap@k of a run (trec_eval conventions)";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "run" => Some(&[Holds::Run]),
            "qrels" => Some(&[Holds::Qrels]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &EvaluateParams) -> Vec<String> {
        vec!["metrics".into(), "per_query".into()]
    }

    fn check(&self, p: &EvaluateParams) -> std::result::Result<(), ParamError> {
        if let Some(bad) = p.k.iter().find(|k| **k < 1) {
            return Err(ParamError::new(
                "k",
                format!("cut-offs in `k` must be positive integers, got {bad}"),
            ));
        }
        parse_measures(&p.measures, &p.k).map_err(|e| ParamError::new("measures", e))?;
        if p.relevance_level < 1 {
            return Err(ParamError::new(
                "relevance_level",
                format!(
                    "must be at least 1, got {}: judgments with rel >= relevance_level count as \
                     relevant, and unjudged documents have rel 0",
                    p.relevance_level
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, p: EvaluateParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let measures = parse_measures(&p.measures, &p.k).map_err(|message| StageError::Param {
            key: "measures".into(),
            message,
        })?;
        let run = read_run(ctx.input("run")?.path())?;
        let qrels = read_qrels(ctx.input("qrels")?.path())?;
        let opts = EvalOptions {
            relevance_level: p.relevance_level,
            complete: p.complete,
            remove_self_matches: p.remove_self_matches,
        };
        let eval = evaluate(&run, &qrels, &measures, opts);
        let summary: Vec<(String, f64)> = measures
            .iter()
            .zip(&eval.means)
            .map(|(m, v)| (m.name(), *v))
            .collect();
        write_metrics(&ctx.output_file("metrics"), &summary)?;
        let mut rows = Vec::with_capacity(eval.per_query.len() * measures.len());
        for (qid, values) in &eval.per_query {
            for (m, v) in measures.iter().zip(values) {
                rows.push((qid.clone(), m.name(), *v));
            }
        }
        write_per_query(&ctx.output_file("per_query"), &rows)?;
        let qrels_queries: std::collections::HashSet<&str> =
            qrels.iter().map(|q| q.qid.as_str()).collect();
        let run_queries: std::collections::HashSet<&str> =
            run.iter().map(|r| r.qid.as_str()).collect();
        let mut stats = Map::new();
        stats.insert("queries_evaluated".into(), json!(eval.n_queries));
        stats.insert("queries_in_qrels".into(), json!(qrels_queries.len()));
        stats.insert("queries_in_run".into(), json!(run_queries.len()));
        stats.insert(
            "qrels_queries_missing_from_run".into(),
            json!(qrels_queries.difference(&run_queries).count()),
        );
        for (m, v) in &summary {
            stats.insert(m.clone(), json!(v));
        }
        Ok(StageOutcome {
            summary: Some(format_table(&ctx.name, &summary, eval.n_queries)),
            stats,
        })
    }
}
