//! `splade bench msmarco-synth` at 1/1000 of MS MARCO's size, run through the whole MS MARCO graph
//! of pipelines/msmarco-synthetic.toml (the data pipeline as shipped: ingest, CE-score distill,
//! hard-negative mining with the teacher filter, BM25 mining; BM25 on dev; splade-tiny trained
//! with MarginMSE + FLOPS, then encoding, indexing, retrieving and evaluating the dev slice) plus
//! a BM25 evaluation on the train queries, and through `plan` of pipelines/msmarco-eval.toml
//! (every file it needs is there, in naver's layout).

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
include = ["pipelines/msmarco-synthetic.toml"]

# Four small steps (the graph is what is tested here; training has its own tests).
[stage.train]
steps = 4
batch_size = 4
checkpoint_every = 2

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
            "--slice",
            "300",
            out,
        ];
        succeeds(d, &args).1
    };
    let stderr = generate("data/msmarco");
    assert!(
        stderr.contains("passages=8842 train_queries=503 dev_queries=20 scores=")
            && stderr.contains("slice=300 "),
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
        "dev_slice/raw.tsv",
        "train_queries/queries_20k/raw.tsv",
    ] {
        let a = std::fs::read(d.join("data/msmarco").join(file)).unwrap();
        assert!(
            a == std::fs::read(d.join("again").join(file)).unwrap(),
            "{file}"
        );
    }

    std::fs::write(d.join("synth.toml"), PIPELINE).unwrap();
    let (stdout, _) = succeeds(d, &["run", "synth.toml"]);
    assert!(stdout.contains("19 stages: 19 executed"), "{stdout}");
    // The slice holds every dev query's positive, so each dev query can find it.
    let dev_qrels = std::fs::read_to_string(d.join("data/msmarco/dev_qrel.json")).unwrap();
    let slice = std::fs::read_to_string(d.join("data/msmarco/dev_slice/raw.tsv")).unwrap();
    let slice_ids: std::collections::HashSet<&str> = slice
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let positives: Vec<&str> = dev_qrels
        .split("{\"")
        .skip(2)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(positives.len(), 20, "{dev_qrels}");
    assert!(
        positives.iter().all(|p| slice_ids.contains(p)),
        "{positives:?}"
    );
    assert_eq!(slice_ids.len(), 300);
    let recall = metric(&stdout, "slice_evaluate", "Recall@1000");
    let mrr = metric(&stdout, "slice_evaluate", "MRR@10");
    assert!(
        recall > 0.9 && mrr > 0.3,
        "fine-tuned splade-tiny on the dev slice: R@1000 {recall}, MRR@10 {mrr}"
    );
    assert!(stdout.contains("train: 4 steps"), "{stdout}");
    // The imported hard negatives hold a row per (query, system): the summary says both.
    assert!(stdout.contains("negatives rows of 503 queries"), "{stdout}");
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
