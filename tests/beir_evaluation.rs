//! `pipelines/beir.toml` end to end on the tiny BEIR-layout fixture (tests/fixtures/beir: three
//! datasets, one whose query ids are document ids): ingest → encode/BM25 → index → retrieve →
//! evaluate → report, the report checked against pytrec_eval + scipy on the same runs
//! (tests/fixtures/beir/reference_report.py).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, Float64Array, StringArray};
use serde_json::Value;

const DATASETS: [&str; 3] = ["minifact", "miniargs", "minicovid"];
const SYSTEMS: [&str; 2] = ["bm25", "splade-tiny"];

/// A working directory laid out as the pipeline expects: data/beir/<dataset>, conf/, pipelines/.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        repo().join("tests/fixtures/beir/data"),
        dir.path().join("data"),
    )
    .expect("symlink");
    link_repo(dir.path(), &["conf", "pipelines"]);
    dir
}

fn splade_ok(dir: &Path, args: &[&str]) -> String {
    let out = splade_in(dir).args(args).output().expect("spawn splade");
    assert!(
        out.status.success(),
        "splade {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const MATRIX: &str = "matrix.dataset=[\"minifact\", \"miniargs\", \"minicovid\"]";

fn output(dir: &Path, target: &str) -> PathBuf {
    PathBuf::from(
        splade_ok(
            dir,
            &["path", "pipelines/beir.toml", "--set", MATRIX, target],
        )
        .trim(),
    )
}

fn strings(batch: &arrow::record_batch::RecordBatch, name: &str) -> Vec<String> {
    let c = batch.column_by_name(name).unwrap();
    let c = c.as_any().downcast_ref::<StringArray>().unwrap();
    (0..c.len()).map(|i| c.value(i).to_string()).collect()
}

fn floats(batch: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = batch.column_by_name(name).unwrap();
    let c = c.as_any().downcast_ref::<Float64Array>().unwrap();
    (0..c.len())
        .map(|i| (!c.is_null(i)).then(|| c.value(i)))
        .collect()
}

/// The Python with pytrec_eval, scipy and statsmodels, or why there is none. `.ci/run` installs
/// them and sets SPLADE_REQUIRE_REFERENCES=1, so CI never skips.
fn reference_python() -> Option<String> {
    let probe = ["-c", "import pytrec_eval, scipy, statsmodels"];
    let found = first_runnable(&["python3".to_string()], &probe);
    if found.is_none() {
        assert!(
            std::env::var_os("SPLADE_REQUIRE_REFERENCES").is_none(),
            "SPLADE_REQUIRE_REFERENCES is set but python3 lacks pytrec_eval/scipy/statsmodels \
             (pip install pytrec-eval-terrier scipy statsmodels)"
        );
        skip(
            "the pytrec_eval comparison: python3 with pytrec_eval, scipy and statsmodels not \
             found (pip install pytrec-eval-terrier scipy statsmodels)",
        );
    }
    found
}

#[test]
fn beir_pipeline_reports_what_pytrec_eval_and_scipy_compute() {
    let dir = workdir();
    let d = dir.path();
    let out = splade_ok(d, &["run", "pipelines/beir.toml", "--set", MATRIX]);
    assert!(out.contains("report: nDCG@10 (3 datasets"), "{out}");
    // README and docs/evaluation.md show this table: keep them true.
    let printed: String = out
        .split("\n\n")
        .find(|block| block.starts_with("report: nDCG@10"))
        .expect("the nDCG@10 table")
        .to_string();
    for page in ["README.md", "docs/evaluation.md"] {
        let text = std::fs::read_to_string(repo().join(page)).unwrap();
        assert!(text.contains(&printed), "{page} should show:\n{printed}");
    }

    // The wide table: the three datasets and their mean, both systems, both metrics.
    let table = &parquet_batches(&output(d, "report.table"))[0];
    assert_eq!(
        strings(table, "dataset"),
        ["minifact", "miniargs", "minicovid", "mean"]
    );
    for metric in ["nDCG@10", "Recall@100"] {
        for system in SYSTEMS {
            let column = floats(table, &format!("{metric}/{system}"));
            assert!(column.iter().all(Option::is_some), "{metric}/{system}");
            let mean = column[..3].iter().flatten().sum::<f64>() / 3.0;
            assert!((column[3].unwrap() - mean).abs() < 1e-12);
        }
    }

    // Only the judged queries were kept (minifact's queries.jsonl holds 4 more, as BEIR's do).
    let queries = parquet_batches(&output(d, "ingest_minifact.test_queries"));
    assert_eq!(queries.iter().map(|b| b.num_rows()).sum::<usize>(), 12);

    // Self-matches are gone from the ArguAna-like runs (query ids there are document ids).
    for stage in ["retrieve_miniargs_splade-tiny", "bm25_retrieve_miniargs"] {
        let run = std::fs::read_to_string(output(d, &format!("{stage}.trec"))).unwrap();
        assert!(run.lines().count() > 0);
        for line in run.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_ne!(f[0], f[2], "{stage} retrieved the query itself: {line}");
        }
    }

    let Some(python) = reference_python() else {
        return;
    };
    let reference = d.join("reference.json");
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/fixtures/beir/reference_report.py"))
        .arg("--out")
        .arg(&reference)
        .args(["--measures", "ndcg_cut_10", "recall_100"]);
    for system in SYSTEMS {
        for dataset in DATASETS {
            let stage = if system == "bm25" {
                format!("bm25_retrieve_{dataset}")
            } else {
                format!("retrieve_{dataset}_{system}")
            };
            let qrels = repo().join(format!(
                "tests/fixtures/beir/data/beir/{dataset}/qrels/test.tsv"
            ));
            let run = output(d, &format!("{stage}.trec"));
            cmd.arg(format!(
                "{dataset}:{system}:{}:{}:1",
                qrels.display(),
                run.display()
            ));
        }
    }
    tool_stdout(&mut cmd);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();

    let names = [("nDCG@10", "ndcg_cut_10"), ("Recall@100", "recall_100")];
    for (row, dataset) in DATASETS.iter().enumerate() {
        for system in SYSTEMS {
            for (ours, theirs) in names {
                let got = floats(table, &format!("{ours}/{system}"))[row].unwrap();
                let want = expected["means"][dataset][system][theirs].as_f64().unwrap();
                assert!(
                    (got - want).abs() < 1e-9,
                    "{dataset} {system} {ours}: ours {got}, pytrec_eval {want}"
                );
            }
        }
    }
    for system in SYSTEMS {
        for (ours, theirs) in names {
            let got = floats(table, &format!("{ours}/{system}"))[3].unwrap();
            let want = expected["mean_over_datasets"][system][theirs]
                .as_f64()
                .unwrap();
            assert!((got - want).abs() < 1e-9, "mean {system} {ours}");
        }
    }

    // The t-tests (raw and Holm-corrected) against scipy / statsmodels.
    let comparisons = &parquet_batches(&output(d, "report.comparisons"))[0];
    assert_eq!(comparisons.num_rows(), 6, "3 datasets x 2 metrics x 1 pair");
    let (ds, ms) = (
        strings(comparisons, "dataset"),
        strings(comparisons, "metric"),
    );
    let p = floats(comparisons, "p_t_test");
    let p_holm = floats(comparisons, "p_t_test_corrected");
    for i in 0..comparisons.num_rows() {
        let theirs = names.iter().find(|(o, _)| *o == ms[i]).unwrap().1;
        let want = &expected["comparisons"][&ds[i]][theirs]["bm25|splade-tiny"];
        match want["p_t_test"].as_f64() {
            None => assert_eq!(p[i], None, "{} {}: scipy gives nan", ds[i], ms[i]),
            Some(w) => {
                assert!((p[i].unwrap() - w).abs() < 1e-6, "{} {}: p", ds[i], ms[i]);
                let w = want["p_t_test_holm"].as_f64().unwrap();
                assert!(
                    (p_holm[i].unwrap() - w).abs() < 1e-6,
                    "{} {}: holm",
                    ds[i],
                    ms[i]
                );
            }
        }
    }
}
