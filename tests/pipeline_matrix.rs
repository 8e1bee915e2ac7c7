//! `[matrix]` pipelines expand into ordinary stages: the same fingerprints as the stages written by
//! hand, `--set` on one instance or on all, `--until` an instance, errors naming file, line and
//! instance; and the `report` stage over the expanded evaluations.

mod common;
use common::*;

use arrow::array::{Array, Float64Array, StringArray};

const TOY: &str = "pipelines/data/toy";

/// BM25 over the toy collection, retrieved and evaluated for each query split, with the bundled
/// BM25 run (dev only) as a second system, and a report over both.
fn matrix_pipeline() -> String {
    format!(
        r#"name = "m"

[matrix]
split = ["dev", "train"]

[stage.ingest]
kind = "ingest"
docs = "{TOY}/collection.tsv"
queries = {{ train = "{TOY}/queries.train.tsv", dev = "{TOY}/queries.dev.tsv" }}
qrels = {{ train = "{TOY}/qrels.train.json", dev = "{TOY}/qrels.dev.trec" }}
runs = {{ bundled_dev = "{TOY}/run.dev.bm25.trec" }}

[stage.bm25]
kind = "bm25"
input = "ingest.docs"

[stage.bm25_index]
kind = "index"
input = "bm25.vectors"

[stage."bow_{{split}}"]
kind = "encode"
input = "ingest.{{split}}_queries"
mode = "bag_of_words"
max_length = 64

[stage."retrieve_{{split}}"]
kind = "retrieve"
index = "bm25_index.index"
queries = "bow_{{split}}.vectors"
k = 100

[stage."evaluate_{{split}}"]
kind = "evaluate"
run = "retrieve_{{split}}.run"
qrels = "ingest.{{split}}_qrels"
measures = ["mrr@10", "ndcg@10"]
complete = true

# More specific than the template: wins for the train split only.
[stage.evaluate_train]
measures = ["ndcg@10", "mrr@10", "recall@100"]

[stage.evaluate_bundled]
kind = "evaluate"
run = "ingest.bundled_dev_run"
qrels = "ingest.dev_qrels"
measures = ["mrr@10", "ndcg@10"]
complete = true

[stage.report]
kind = "report"
evaluations = [
  {{ dataset = "{{split}}", system = "wordpiece", per_query = "evaluate_{{split}}.per_query" }},
  {{ dataset = "dev", system = "bundled", per_query = "evaluate_bundled.per_query" }},
]
measures = ["ndcg@10", "mrr@10"]
permutations = 1000
"#
    )
}

/// The same graph written out by hand.
fn hand_written() -> String {
    let mut text = matrix_pipeline();
    let start = text.find("[stage.\"bow_").unwrap();
    let end = text.find("[stage.evaluate_bundled]").unwrap();
    let mut stages = String::new();
    for split in ["dev", "train"] {
        let measures = if split == "train" {
            r#"["ndcg@10", "mrr@10", "recall@100"]"#
        } else {
            r#"["mrr@10", "ndcg@10"]"#
        };
        stages += &format!(
            "[stage.bow_{split}]\nkind = \"encode\"\ninput = \"ingest.{split}_queries\"\n\
             mode = \"bag_of_words\"\nmax_length = 64\n\n\
             [stage.retrieve_{split}]\nkind = \"retrieve\"\nindex = \"bm25_index.index\"\n\
             queries = \"bow_{split}.vectors\"\nk = 100\n\n\
             [stage.evaluate_{split}]\nkind = \"evaluate\"\nrun = \"retrieve_{split}.run\"\n\
             qrels = \"ingest.{split}_qrels\"\nmeasures = {measures}\ncomplete = true\n\n"
        );
    }
    text.replace_range(start..end, &stages);
    text = text.replace("[matrix]\nsplit = [\"dev\", \"train\"]\n", "");
    text.replace(
        "  { dataset = \"{split}\", system = \"wordpiece\", per_query = \"evaluate_{split}.per_query\" },\n",
        "  { dataset = \"dev\", system = \"wordpiece\", per_query = \"evaluate_dev.per_query\" },\n  \
         { dataset = \"train\", system = \"wordpiece\", per_query = \"evaluate_train.per_query\" },\n",
    )
}

fn f64_column(batch: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Option<f64>> {
    let col = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    (0..col.len())
        .map(|i| (!col.is_null(i)).then(|| col.value(i)))
        .collect()
}

fn metric_value(art: &std::path::Path, pipeline: &str, stage: &str, metric: &str) -> f64 {
    let path = ok(art, &["path", pipeline, &format!("{stage}.metrics")]);
    let batch = &parquet_batches(std::path::Path::new(path.trim()))[0];
    let names = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let values = batch
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    (0..names.len())
        .find(|&i| names.value(i) == metric)
        .map(|i| values.value(i))
        .unwrap_or_else(|| panic!("{stage} has no {metric}"))
}

#[test]
fn matrix_runs_as_the_hand_written_stages_and_reports_them() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let matrix = write_pipeline(tmp.path(), "matrix.toml", &matrix_pipeline());
    let by_hand = write_pipeline(tmp.path(), "hand.toml", &hand_written());

    let out = ok(&art, &["run", &matrix]);
    for stage in [
        "bow_dev",
        "bow_train",
        "retrieve_train",
        "evaluate_train",
        "report",
    ] {
        assert_eq!(outcome_of(&out, stage), "executed", "{out}");
    }
    // Every stage written by hand is the same stage: all cached.
    let states = json_states(&art, &["run", &by_hand]);
    assert_eq!(states.len(), 11, "{states:?}");
    for (stage, v) in &states {
        assert_eq!(v["state"], "cached", "{stage} should be cached: {v}");
    }

    // The wide table: datasets down (then the mean), metric/system across.
    let table = ok(&art, &["path", &matrix, "report.table"]);
    let batch = &parquet_batches(std::path::Path::new(table.trim()))[0];
    let datasets = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let labels: Vec<&str> = (0..datasets.len()).map(|i| datasets.value(i)).collect();
    assert_eq!(labels, ["dev", "train", "mean"]);
    let ours = f64_column(batch, "nDCG@10/wordpiece");
    let dev = metric_value(&art, &matrix, "evaluate_dev", "nDCG@10");
    let train = metric_value(&art, &matrix, "evaluate_train", "nDCG@10");
    assert_eq!(ours, [Some(dev), Some(train), Some((dev + train) / 2.0)]);
    let bundled = f64_column(batch, "MRR@10/bundled");
    let bundled_dev = metric_value(&art, &matrix, "evaluate_bundled", "MRR@10");
    assert_eq!(bundled, [Some(bundled_dev), None, Some(bundled_dev)]);
    // The run prints the table with the comparison on dev.
    assert!(out.contains("report: nDCG@10 (2 datasets"), "{out}");
    assert!(out.contains("mean"), "{out}");

    // One comparison per metric (dev only: `bundled` has no train evaluation).
    let comparisons = ok(&art, &["path", &matrix, "report.comparisons"]);
    let batch = &parquet_batches(std::path::Path::new(comparisons.trim()))[0];
    assert_eq!(batch.num_rows(), 2);
    let p = f64_column(batch, "p_t_test");
    assert!(
        p.iter()
            .all(|p| p.is_some_and(|p| (0.0..=1.0).contains(&p))),
        "{p:?}"
    );
}

#[test]
fn set_reaches_one_instance_or_all_and_trims_the_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let file = write_pipeline(tmp.path(), "matrix.toml", &matrix_pipeline());
    let fingerprints = |sets: &[&str]| {
        let mut args = vec!["plan", file.as_str()];
        for s in sets {
            args.extend(["--set", s]);
        }
        ok(&art, &["run", &file, "--until", "retrieve_dev"]);
        json_states(&art, &args)
            .into_iter()
            .map(|(k, v)| (k, v["fingerprint"].as_str().unwrap_or("?").to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let base = fingerprints(&[]);
    assert!(base.contains_key("retrieve_train"));
    // --until an instance ran only what it needs.
    assert_eq!(base["retrieve_dev"].len(), 32, "{base:?}");

    let one = fingerprints(&["retrieve_dev.k=50"]);
    assert_ne!(one["retrieve_dev"], base["retrieve_dev"]);
    let all = fingerprints(&["retrieve_{split}.k=50"]);
    assert_eq!(all["retrieve_dev"], one["retrieve_dev"]);
    assert_eq!(all["bow_dev"], base["bow_dev"]);

    let trimmed = fingerprints(&["matrix.split=[\"dev\"]"]);
    assert!(!trimmed.contains_key("retrieve_train"), "{trimmed:?}");
    assert!(
        !trimmed.contains_key("evaluate_train"),
        "the override alone is no stage"
    );
    assert_eq!(trimmed["retrieve_dev"], base["retrieve_dev"]);
}

#[test]
fn matrix_mistakes_name_file_line_and_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let check = |text: &str, sets: &[&str], wanted: &[&str]| {
        let file = write_pipeline(tmp.path(), "bad.toml", text);
        let mut args = vec!["plan", file.as_str()];
        for s in sets {
            args.extend(["--set", s]);
        }
        let err = fails(&art, &args);
        for w in wanted {
            assert!(
                err.contains(&w.replace("FILE", &file)),
                "`{w}` not in:\n{err}"
            );
        }
    };
    let text = matrix_pipeline();
    check(
        &text.replace(
            "input = \"ingest.{split}_queries\"",
            "input = \"ingest.{splt}_queries\"",
        ),
        &[],
        &[
            "FILE:",
            "`{splt}` names no matrix axis",
            "did you mean `split`",
        ],
    );
    check(
        &text.replace("k = 100", "k = 100\nmin_score = \"{split}\""),
        &["matrix.split=[\"dev\"]"],
        &[
            "stage.retrieve_dev.min_score",
            "expected a number",
            "(in `retrieve_{split}` with split = dev)",
        ],
    );
    check(
        &text.replace("[stage.bm25]\n", "[stage.bm25]\nmodel = \"{split}\"\n"),
        &[],
        &["`{split}` is not bound here"],
    );
    check(
        &text,
        &["retrieve_train.k=0"],
        &[
            "stage.retrieve_train.k",
            "(in `retrieve_{split}` with split = train)",
        ],
    );
    check(
        &text.replace("split = [\"dev\", \"train\"]", "split = [\"dev\", \"dev\"]"),
        &[],
        &["FILE:4", "matrix.split", "two values have the label `dev`"],
    );
    check(
        &text
            .replace("pipelines/data/toy/queries.train.tsv", "missing/train.tsv")
            .replace(
                "docs = \"pipelines/data/toy/collection.tsv\"",
                "docs = \"missing/collection.tsv\"",
            ),
        &[],
        &[
            "2 input files not found",
            "missing/collection.tsv",
            "missing/train.tsv",
        ],
    );
}

#[test]
fn two_axes_with_a_trained_model_as_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let file = write_pipeline(
        tmp.path(),
        "models.toml",
        &format!(
            r#"name = "models"
include = ["pipelines/toy-mining.toml", "conf/train/toy.toml"]

[matrix]
split = ["dev", "train"]
model = ["conf/models/splade-tiny", "train.model"]

[stage.ingest]
queries = {{ train = "{TOY}/queries.train.tsv", dev = "{TOY}/queries.dev.tsv" }}

[stage.train]
negatives = "mine.negatives"
docs = "ingest.docs"
queries = "ingest.train_queries"
model = "conf/models/splade-tiny"

[stage."encode_{{split}}_{{model}}"]
kind = "encode"
input = "ingest.{{split}}_queries"
model = "{{model.value}}"
max_length = 24
"#
        ),
    );
    let plan = json_states(&art, &["plan", &file]);
    let names: Vec<&String> = plan.keys().filter(|k| k.starts_with("encode_")).collect();
    assert_eq!(
        names,
        [
            "encode_dev_splade-tiny",
            "encode_dev_train_model",
            "encode_train_splade-tiny",
            "encode_train_train_model"
        ]
    );
    // The trained model's instances wait for `train`: a DAG edge, as if written by hand.
    let dag = ok(&art, &["run", &file, "--until", "encode_dev_splade-tiny"]);
    assert!(
        !dag.lines().any(|l| l.trim_start().starts_with("train ")),
        "encoding with the bundled model needs no training:\n{dag}"
    );
    let plan = json_states(&art, &["plan", &file]);
    assert_eq!(plan["encode_dev_splade-tiny"]["state"], "cached");
    assert_eq!(plan["encode_dev_train_model"]["state"], "stale");
    assert!(plan["encode_dev_train_model"]["fingerprint"].is_null());
}
