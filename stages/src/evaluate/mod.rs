//! `evaluate`: run + qrels → metrics summary (`metrics`) and per-query values (`per_query`), with
//! trec_eval conventions (see [`metrics`]).

pub mod metrics;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_qrels, read_run, write_metrics, write_per_query};
use metrics::{evaluate, EvalOptions, Measure};

/// The evaluate stage kind.
pub struct Evaluate;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required("run", ParamType::Artifact, "the run to evaluate"),
    ParamSpec::required("qrels", ParamType::Artifact, "relevance judgments"),
    ParamSpec::with_default(
        "measures",
        ParamType::StrList,
        r#"["mrr@10", "recall", "ndcg@10", "map"]"#,
        "mrr, rr, recall, r_cap, p, ndcg, map; `name@k` or a family expanded over `k`",
    ),
    ParamSpec::with_default(
        "k",
        ParamType::IntList,
        "[100, 1000]",
        "cut-offs for measures given without @k",
    ),
    ParamSpec::with_default(
        "complete",
        ParamType::Bool,
        "false",
        "average over all qrels queries, 0 for those missing from the run (trec_eval -c)",
    ),
    ParamSpec::with_default(
        "remove_self_matches",
        ParamType::Bool,
        "false",
        "drop retrieved documents whose id equals the query id (BEIR ArguAna/Quora)",
    ),
    ParamSpec::with_default(
        "relevance_level",
        ParamType::Int,
        "1",
        "minimum rel counted as relevant by binary measures",
    ),
];

#[derive(Deserialize)]
struct Params {
    measures: Vec<String>,
    k: Vec<i64>,
    complete: bool,
    remove_self_matches: bool,
    relevance_level: i32,
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

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        1
    }

    fn doc(&self) -> &'static str {
        "compute MRR@k, Recall@k, nDCG@k, MAP, P@k, R_cap@k of a run (trec_eval conventions)"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["metrics".into(), "per_query".into()]
    }

    fn check(&self, params: &Value) -> std::result::Result<(), (String, String)> {
        let p: Params = serde_json::from_value(params.clone())
            .map_err(|e| ("measures".into(), e.to_string()))?;
        parse_measures(&p.measures, &p.k).map_err(|e| ("measures".into(), e))?;
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let p: Params = ctx.params_as()?;
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
