//! `splade bench msmarco-synth` at 1/1000 of MS MARCO's size, run through the MS MARCO data
//! pipeline as shipped (pipelines/msmarco-ensembledistil-data.toml: ingest, CE-score distill,
//! hard-negative mining with the teacher filter, BM25 mining) plus a BM25 evaluation, and through
//! `plan` of pipelines/msmarco-eval.toml (every file it needs is there, in naver's layout).

mod common;
use common::*;

use std::path::Path;

fn succeeds(dir: &Path, args: &[&str]) -> (String, String) {
    let out = splade_in(dir).args(args).output().expect("spawn splade");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "splade {args:?}\n{stdout}\n{stderr}");
    (stdout, stderr)
}

const PIPELINE: &str = r#"name = "msmarco-synth"
include = ["pipelines/msmarco-ensembledistil-data.toml"]

[stage.ingest]
queries = { train = "data/msmarco/train_queries/queries", dev = "data/msmarco/dev_queries" }
qrels = { train = "data/msmarco/train_queries/qrels.json", dev = "data/msmarco/dev_qrel.json" }

[stage.bm25_train_evaluate]
kind = "evaluate"
run = "bm25_train.run"
qrels = "ingest.train_qrels"
measures = ["mrr@10", "recall@100"]
complete = true
"#;

fn metric(stdout: &str, stage: &str, name: &str) -> f64 {
    let block = stdout
        .split(&format!("{stage} ("))
        .nth(1)
        .unwrap_or_else(|| panic!("no summary of {stage}:\n{stdout}"));
    block
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next().unwrap().parse::<f64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {stage}"))
}

#[test]
fn synthetic_msmarco_runs_through_the_msmarco_pipelines() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    link_repo(d, &["conf", "pipelines"]);
    let tokenizer = repo().join("conf/models/splade-tiny/tokenizer.json");
    let tokenizer = tokenizer.to_string_lossy();
    let generate = |out: &str| {
        let args = [
            "bench",
            "msmarco-synth",
            "--scale",
            "0.001",
            "--tokenizer",
            &tokenizer,
            out,
        ];
        succeeds(d, &args).1
    };
    let stderr = generate("data/msmarco");
    assert!(
        stderr.contains("passages=8842 train_queries=503"),
        "{stderr}"
    );
    // Deterministic: a second generation is byte for byte the same.
    generate("again");
    for file in [
        "full_collection/raw.tsv",
        "train_queries/qrels.json",
        "hard_negatives_scores/cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz",
        "msmarco-hard-negatives.jsonl.gz",
        "TREC_DL_2020/qrel.json",
    ] {
        let a = std::fs::read(d.join("data/msmarco").join(file)).unwrap();
        assert!(
            a == std::fs::read(d.join("again").join(file)).unwrap(),
            "{file}"
        );
    }

    std::fs::write(d.join("synth.toml"), PIPELINE).unwrap();
    let (stdout, _) = succeeds(d, &["run", "synth.toml"]);
    for stage in ["ingest", "ce_scores", "mine_hn", "bm25_train", "mine_bm25"] {
        assert_eq!(outcome_of(&stdout, stage), "executed", "{stdout}");
    }
    // Every score of the pickle made it into the teacher scores.
    let scores: u64 = stderr
        .split("scores=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let teacher = succeeds(d, &["path", "synth.toml", "ce_scores.teacher_scores"]).0;
    let rows: usize = parquet_batches(Path::new(teacher.trim()))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows as u64, scores);
    // BM25 finds the positive often, not always (the topic's other passages share its words).
    let mrr = metric(&stdout, "bm25_train_evaluate", "MRR@10");
    assert!((0.2..0.9).contains(&mrr), "BM25 MRR@10 {mrr}");
    assert!(stdout.contains("mine_hn: 503 queries"), "{stdout}");

    // The evaluation pipeline finds every file it reads (TREC DL in naver's layout included).
    succeeds(d, &["plan", "pipelines/msmarco-eval.toml"]);
}
