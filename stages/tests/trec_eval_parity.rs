//! Metrics identical (1e-9) to pytrec_eval on generated fixtures with ties, graded qrels, empty
//! runs and queries missing on either side (tests/fixtures/eval, made by make_fixtures.py).

use std::path::PathBuf;

use serde_json::Value;
use splade_stages::evaluate::metrics::{evaluate, EvalOptions, Measure};
use splade_stages::ingest::formats::{read_qrels, read_run};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/eval")
}

/// pytrec_eval measure name → ours.
fn measures() -> Vec<(&'static str, Measure)> {
    vec![
        ("ndcg_cut_5", Measure::Ndcg(5)),
        ("ndcg_cut_10", Measure::Ndcg(10)),
        ("ndcg_cut_100", Measure::Ndcg(100)),
        ("map", Measure::Map),
        ("P_5", Measure::Precision(5)),
        ("P_10", Measure::Precision(10)),
        ("recall_10", Measure::Recall(10)),
        ("recall_100", Measure::Recall(100)),
        ("recall_1000", Measure::Recall(1000)),
        ("recip_rank", Measure::Rr),
        ("mrr_10", Measure::Mrr(10)),
        ("r_cap_100", Measure::RCap(100)),
    ]
}

fn check_case(name: &str) {
    let dir = fixtures().join(name);
    let qrels = read_qrels(&dir.join("qrels.trec")).unwrap();
    let run = read_run(&dir.join("run.trec")).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let names: Vec<&str> = measures().iter().map(|(n, _)| *n).collect();
    let ms: Vec<Measure> = measures().iter().map(|(_, m)| *m).collect();
    for complete in [false, true] {
        let opts = EvalOptions {
            complete,
            ..EvalOptions::default()
        };
        let e = evaluate(&run, &qrels, &ms, opts);
        let (mean_key, n_key) = if complete {
            ("mean_complete", "n_queries_complete")
        } else {
            ("mean", "n_queries")
        };
        assert_eq!(
            e.n_queries as u64,
            expected[n_key].as_u64().unwrap(),
            "{name} {n_key}"
        );
        for (i, m) in names.iter().enumerate() {
            let want = expected[mean_key][m].as_f64().unwrap();
            assert!(
                (e.means[i] - want).abs() < 1e-9,
                "{name} {mean_key} {m}: ours {} pytrec_eval {want}",
                e.means[i]
            );
            if complete {
                continue;
            }
            let per_q = expected["per_query"][m].as_object().unwrap();
            assert_eq!(
                per_q.len(),
                e.per_query.len(),
                "{name} {m}: evaluated queries"
            );
            for (qid, v) in per_q {
                let ours = e
                    .per_query
                    .get(qid)
                    .unwrap_or_else(|| panic!("{name}: query {qid} not evaluated"))[i];
                let want = v.as_f64().unwrap();
                assert!(
                    (ours - want).abs() < 1e-9,
                    "{name} {m} query {qid}: ours {ours} pytrec_eval {want}"
                );
            }
        }
    }
}

#[test]
fn basic() {
    check_case("case_basic");
}

#[test]
fn ties_broken_by_docid_descending() {
    check_case("case_ties");
}

#[test]
fn graded_qrels_and_deep_runs() {
    check_case("case_graded");
}

#[test]
fn queries_missing_on_either_side() {
    check_case("case_missing");
}

#[test]
fn empty_run() {
    check_case("case_empty_run");
}

/// Full-precision scores with near-ties float32 cannot tell apart: trec_eval rounds scores to
/// f32 (its `sim` is a C float), so these tie there and the docid decides; ordering by the f64
/// values would change every query of this case.
#[test]
fn full_precision_scores_and_near_ties_as_trec_eval() {
    check_case("case_precision");
}

/// A run keeps the precision it came with: the scores of an ingested run are the f64 values
/// of its text, digit for digit.
#[test]
fn runs_keep_full_precision() {
    let path = fixtures().join("case_precision/run.trec");
    let text = std::fs::read_to_string(&path).unwrap();
    let run = read_run(&path).unwrap();
    let mut near_ties = 0;
    for (line, row) in text.lines().zip(&run) {
        let written: f64 = line.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert_eq!(row.score.to_bits(), written.to_bits(), "{line}");
        near_ties += usize::from(f64::from(row.score as f32) != row.score);
    }
    assert!(
        near_ties > 100,
        "the fixture's scores need more than f32: {near_ties}"
    );
}
