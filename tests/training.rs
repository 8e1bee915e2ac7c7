//! Training through the real binary: kill -9 mid-training and resume bit-identically, resume a
//! 4-device checkpoint on 1 device, never retrain a finished model, export a Hugging Face
//! directory that transformers loads, and reject bad settings before anything runs.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use arrow::array::PrimitiveArray;
use arrow::datatypes::{ArrowPrimitiveType, Float64Type, Int64Type};

/// The toy mining stages plus a small `train` stage; `overrides` replace or add train params.
fn training_pipeline(dir: &Path, name: &str, devices: usize, overrides: &[(&str, &str)]) -> String {
    let mining = std::fs::read_to_string(repo().join("pipelines/toy-mining.toml")).unwrap();
    let mining = mining.replace("name = \"toy-mining\"", &format!("name = \"{name}\""));
    let devices = vec!["\"cpu\""; devices].join(", ");
    let mut params: Vec<(String, String)> = [
        ("kind", "\"train\""),
        ("negatives", "\"mine.negatives\""),
        ("docs", "\"ingest.docs\""),
        ("queries", "\"ingest.train_queries\""),
        ("steps", "6"),
        ("batch_size", "4"),
        ("negatives_per_query", "1"),
        ("max_length", "48"),
        ("query_max_length", "16"),
        ("lr", "5e-5"),
        ("warmup_steps", "2"),
        ("flops_lambda_q", "1e-3"),
        ("flops_lambda_d", "1e-3"),
        ("lambda_warmup_steps", "3"),
        ("checkpoint_every", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        match params.iter_mut().find(|(pk, _)| pk == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => params.push((k.to_string(), v.to_string())),
        }
    }
    let train: String = params.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let text = format!(
        "{mining}\n[backend]\nkind = \"flex\"\ndevices = [{devices}]\n\n[stage.train]\n{train}"
    );
    write_pipeline(dir, &format!("{name}.toml"), &text)
}

/// The staging checkpoints of any in-progress training under `artifacts`.
fn checkpoints(artifacts: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(artifacts.join(".staging")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_dir(e.path().join("checkpoints")).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        .collect()
}

/// One column of the train log.
fn log_column<T: ArrowPrimitiveType>(a: &Path, pipeline: &str, name: &str) -> Vec<T::Native> {
    output_column::<T>(a, pipeline, "train.train_log", name)
}

/// One column of a Parquet output of the pipeline.
fn output_column<T: ArrowPrimitiveType>(
    a: &Path,
    pipeline: &str,
    output: &str,
    name: &str,
) -> Vec<T::Native> {
    let path = PathBuf::from(ok(a, &["path", pipeline, output]).trim());
    let mut out = Vec::new();
    for batch in parquet_batches(&path) {
        let col = batch.column_by_name(name).unwrap();
        let col = col.as_any().downcast_ref::<PrimitiveArray<T>>().unwrap();
        out.extend(col.values().iter().copied());
    }
    out
}

fn logged_steps(a: &Path, pipeline: &str) -> Vec<i64> {
    log_column::<Int64Type>(a, pipeline, "step")
}

/// Starts a run, kills it (SIGKILL) once a checkpoint is surely committed, and returns.
///
/// A checkpoint directory appears (rename) just before the store records it, so seeing step 2
/// alone could race the record; step 4 on disk means step 2's record is saved (its directory is
/// pruned only after step 4's record). The pause after each checkpoint keeps the run from
/// finishing before the kill lands.
fn kill_after_checkpoint(a: &Path, pipeline: &str) {
    let mut child = splade(a)
        .args(["run", pipeline])
        .env("SPLADE_TEST_TRAIN_CHECKPOINT_DELAY_MS", "3000")
        .spawn()
        .unwrap();
    let step = |name: &String| name.trim_start_matches("step-").parse::<u64>().unwrap_or(0);
    wait_for(
        || checkpoints(a).iter().any(|n| step(n) >= 4),
        "a committed training checkpoint",
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_training_resumes_bit_identically_and_is_never_retrained() {
    let tmp = tempfile::tempdir().unwrap();
    // Dropout stays on (0.1): its masks are a function of (seed, step), so resume is exact.
    let pipeline = training_pipeline(tmp.path(), "resume", 1, &[]);
    let reference = tmp.path().join("reference");
    let out = ok(&reference, &["run", &pipeline]);
    assert_eq!(outcome_of(&out, "train"), "executed", "{out}");

    let a = tmp.path().join("killed");
    kill_after_checkpoint(&a, &pipeline);
    let plan = ok(&a, &["plan", &pipeline]);
    assert_eq!(plan_of(&plan, "train").0, "partial", "{plan}");
    let out = ok(&a, &["run", &pipeline]);
    assert_eq!(outcome_of(&out, "train"), "resumed", "{out}");
    assert!(out.contains("resumed at step"), "{out}");

    assert_eq!(
        output_files(&a, &pipeline, "train.model"),
        output_files(&reference, &pipeline, "train.model"),
        "resumed weights differ from the uninterrupted run"
    );
    let model = PathBuf::from(ok(&a, &["path", &pipeline, "train.model"]).trim());
    let outputs = model.parent().unwrap();
    assert!(outputs.join("train_log.parquet").exists(), "{outputs:?}");
    assert!(
        !outputs.join("doc_texts.bin").exists(),
        "the memory-mapped texts outlive the run in {outputs:?}"
    );
    assert_eq!(logged_steps(&a, &pipeline), (1..=6).collect::<Vec<_>>());
    assert_eq!(
        logged_steps(&reference, &pipeline),
        (1..=6).collect::<Vec<_>>()
    );

    let again = ok(&a, &["run", &pipeline]);
    assert_eq!(outcome_of(&again, "train"), "cached", "{again}");
}

#[test]
fn figures_read_from_the_device_every_few_steps_log_the_same_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let no_checkpoint = ("checkpoint_every", "100");
    let every = training_pipeline(tmp.path(), "every", 1, &[("log_every", "1"), no_checkpoint]);
    let batched = training_pipeline(
        tmp.path(),
        "batched",
        1,
        &[("log_every", "4"), no_checkpoint],
    );
    ok(&a, &["run", &every]);
    // Read at steps 4 and 6 (the end): each line must still carry its own step's figures.
    ok(&a, &["run", &batched]);
    assert_eq!(logged_steps(&a, &batched), (1..=6).collect::<Vec<_>>());
    for column in ["lr", "loss_total", "loss_reg", "nnz_q", "nnz_d"] {
        let one = log_column::<Float64Type>(&a, &every, column);
        assert_eq!(one.len(), 6, "{column}");
        assert_eq!(
            one,
            log_column::<Float64Type>(&a, &batched, column),
            "{column}"
        );
    }
}

/// SPLADE vectors of a few texts under the model directory `model`.
fn vectors(a: &Path, model: &str) -> Vec<serde_json::Value> {
    let out = ok(
        a,
        &[
            "expand",
            "--model",
            model,
            "--json",
            "how do honeybees find flowers",
            "why does bread go stale",
        ],
    );
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["weights"].clone())
        .collect()
}

fn max_difference(a: &[serde_json::Value], b: &[serde_json::Value]) -> f64 {
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
        for k in x.keys().chain(y.keys()) {
            let d = (x.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0)
                - y.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0))
            .abs();
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
fn checkpoints_resume_across_device_counts_with_dropout_on() {
    // Dropout masks are a function of (seed, micro-step, example), not of the device split, so
    // a run killed on 4 devices and resumed on 1 (and the reverse) ends where 1 device does.
    // Validation runs on every device too: its figures must not depend on the count either.
    let tmp = tempfile::tempdir().unwrap();
    let validation = [
        ("validation_queries", "\"ingest.train_queries\""),
        ("validation_qrels", "\"ingest.train_qrels\""),
        ("validate_every", "6"),
    ];
    let one = training_pipeline(tmp.path(), "one", 1, &validation);
    let four = training_pipeline(tmp.path(), "four", 4, &validation);
    let mrr =
        |a: &Path, p: &str| output_column::<Float64Type>(a, p, "train.validation", "mrr_at_10");
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &one]);
    let model = |art: &Path, p: &str| ok(art, &["path", p, "train.model"]).trim().to_string();
    let want = vectors(&reference, &model(&reference, &one));
    for (killed, resumed, name) in [(&four, &one, "4→1"), (&one, &four, "1→4")] {
        let a = tmp.path().join(name);
        kill_after_checkpoint(&a, killed);
        // The backend is not part of the fingerprint: the other pipeline picks up the checkpoint.
        let out = ok(&a, &["run", resumed]);
        assert_eq!(outcome_of(&out, "train"), "resumed", "{name}: {out}");
        let got = vectors(&a, &model(&a, resumed));
        let diff = max_difference(&got, &want);
        let (got_mrr, want_mrr) = (mrr(&a, resumed), mrr(&reference, &one));
        assert_eq!(got_mrr.len(), 2, "validated at steps 0 and 6");
        for (g, w) in got_mrr.iter().zip(&want_mrr) {
            assert!(
                (g - w).abs() < 1e-6,
                "{name}: validation MRR {got_mrr:?} vs {want_mrr:?}"
            );
        }
        assert!(
            diff < 1e-3,
            "{name}-device resume drifted from 1-device training by {diff}"
        );
    }
}

/// A Python with transformers, if this machine has one (`SPLADE_TEST_PYTHON` or the venv the
/// docs/backends.md sets up).
fn python_with_transformers() -> Option<String> {
    let candidates = [
        std::env::var("SPLADE_TEST_PYTHON").unwrap_or_default(),
        "/opt/torchvenv/bin/python".into(),
        "python3".into(),
    ];
    first_runnable(&candidates, &["-c", "import torch, transformers"])
}

#[test]
fn trained_model_loads_in_transformers_and_encodes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = training_pipeline(tmp.path(), "export", 1, &[("steps", "2")]);
    let a = tmp.path().join("a");
    ok(&a, &["run", &pipeline]);
    let model = ok(&a, &["path", &pipeline, "train.model"])
        .trim()
        .to_string();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(
            Path::new(&model).join(f).is_file(),
            "{f} missing in {model}"
        );
    }
    let ours = vectors(&a, &model);
    // Training moved the weights: the exported model is not the one it started from.
    let base = vectors(&a, "conf/models/splade-tiny");
    assert!(max_difference(&ours, &base) > 1e-6);

    let Some(python) = python_with_transformers() else {
        skip(
            "the transformers check: no Python with torch + transformers here (CI has none: \
             PyPI has no CPU-only PyTorch wheel, only the CUDA one of several GB)",
        );
        return;
    };
    let script = repo().join("tests/fixtures/model/splade_vectors.py");
    let stdout = tool_stdout(
        std::process::Command::new(&python)
            .arg(&script)
            .arg(&model)
            .args(["how do honeybees find flowers", "why does bread go stale"]),
    );
    let theirs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let diff = max_difference(&ours, &theirs);
    assert!(diff < 1e-4, "transformers disagrees by {diff}");
}

#[test]
fn bad_training_settings_fail_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let p = training_pipeline(tmp.path(), "t1", 1, &[("losses", "{ margin_mse = 1.0 }")]);
    let err = fails(&a, &["plan", &p]);
    assert!(
        err.contains("stage.train.teacher_scores") && err.contains("margin_mse"),
        "{err}"
    );
    let p = training_pipeline(tmp.path(), "t2", 1, &[("losses", "{ kl_divv = 1.0 }")]);
    let err = fails(&a, &["plan", &p]);
    assert!(
        err.contains("stage.train.losses") && err.contains("kl_div"),
        "{err}"
    );
    let p = training_pipeline(tmp.path(), "t3", 1, &[("select", "\"best\"")]);
    let err = fails(&a, &["plan", &p]);
    assert!(err.contains("stage.train.select"), "{err}");
    let p = training_pipeline(tmp.path(), "t4", 1, &[("max_length", "4096")]);
    let err = fails(&a, &["run", &p]);
    assert!(err.contains("max_position_embeddings"), "{err}");
    assert!(!a.join(".staging").exists() || checkpoints(&a).is_empty());
}

#[test]
fn separate_and_bag_of_words_query_encoders_train() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let separate = training_pipeline(
        tmp.path(),
        "separate",
        2,
        &[
            ("steps", "2"),
            ("query_encoder", "\"separate\""),
            ("lr", "1e-3"),
        ],
    );
    let out = ok(&a, &["run", &separate]);
    assert_eq!(outcome_of(&out, "train"), "executed", "{out}");
    let doc = ok(&a, &["path", &separate, "train.model"])
        .trim()
        .to_string();
    let query = ok(&a, &["path", &separate, "train.query_model"])
        .trim()
        .to_string();
    // Both start from splade-tiny; trained on different texts, they part ways.
    let diff = max_difference(&vectors(&a, &doc), &vectors(&a, &query));
    assert!(diff > 1e-4, "query and document encoders are identical");

    let bow = training_pipeline(
        tmp.path(),
        "bow",
        1,
        &[
            ("steps", "2"),
            ("query_encoder", "\"bag_of_words\""),
            ("flops_lambda_q", "0"),
        ],
    );
    let out = ok(&a, &["run", &bow]);
    assert_eq!(outcome_of(&out, "train"), "executed", "{out}");
    let err = fails(
        &a,
        &[
            "plan",
            &training_pipeline(
                tmp.path(),
                "bow_reg",
                1,
                &[("query_encoder", "\"bag_of_words\"")],
            ),
        ],
    );
    assert!(err.contains("stage.train.query_encoder"), "{err}");
}

#[test]
fn every_training_preset_validates_in_a_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let presets: Vec<PathBuf> = std::fs::read_dir(repo().join("conf/train"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    assert!(presets.len() >= 8, "{presets:?}");
    let mining = std::fs::read_to_string(repo().join("pipelines/toy-mining.toml")).unwrap();
    let mining = mining
        .replace("name = \"toy-mining\"", "name = \"preset\"")
        .replace(
            "queries = { train = \"pipelines/data/toy/queries.train.tsv\" }",
            "queries = { train = \"pipelines/data/toy/queries.train.tsv\", dev = \"pipelines/data/toy/queries.dev.tsv\" }",
        )
        .replace(
            "qrels = { train = \"pipelines/data/toy/qrels.train.json\" }",
            "qrels = { train = \"pipelines/data/toy/qrels.train.json\", dev = \"pipelines/data/toy/qrels.dev.trec\" }",
        );
    for preset in presets {
        let text = format!(
            "include = [\"{}\"]\n{mining}\n[stage.distill]\nkind = \"distill\"\nscores = \"pipelines/data/toy/run.dev.bm25.trec\"\n\n[stage.train]\nnegatives = \"mine.negatives\"\ndocs = \"ingest.docs\"\nqueries = \"ingest.train_queries\"\nteacher_scores = \"distill.teacher_scores\"\nvalidation_queries = \"ingest.dev_queries\"\nvalidation_qrels = \"ingest.dev_qrels\"\n",
            preset.display()
        );
        let gpu = std::fs::read_to_string(&preset)
            .unwrap()
            .contains("kind = \"tch\"");
        if gpu && !cfg!(feature = "tch") {
            // This build cannot run the GPU presets' libtorch backend: plan says so up front…
            let p = write_pipeline(tmp.path(), "preset.toml", &text);
            let err = String::from_utf8_lossy(&run(&a, &["plan", &p]).stderr).into_owned();
            assert!(
                err.contains("backend.kind") && err.contains("--features tch"),
                "{err}"
            );
        }
        // …and with the CPU backend the rest of the preset validates (also for presets that
        // inherit a libtorch backend through their own includes).
        let text = match !cfg!(feature = "tch") {
            true => format!("{text}\n[backend]\nkind = \"flex\"\ndevices = [\"cpu\"]\n"),
            false => text,
        };
        let p = write_pipeline(tmp.path(), "preset.toml", &text);
        let out = run(&a, &["plan", &p]);
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            preset.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(plan.contains("train"), "{plan}");
    }
}

#[test]
fn swapping_mining_settings_retrains_and_swapping_back_restores_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let p = training_pipeline(tmp.path(), "swap", 1, &[("steps", "2")]);
    ok(&a, &["run", &p]);
    let model = output_files(&a, &p, "train.model");
    let plan = ok(&a, &["plan", &p, "--set", "mine.negatives=4"]);
    for stage in [
        "ingest",
        "bm25",
        "bm25_index",
        "bow_train_queries",
        "bm25_train",
    ] {
        assert_eq!(plan_of(&plan, stage).0, "cached", "{plan}");
    }
    assert_eq!(plan_of(&plan, "mine").0, "stale", "{plan}");
    assert_ne!(plan_of(&plan, "train").0, "cached", "{plan}");
    let out = ok(&a, &["run", &p, "--set", "mine.negatives=4"]);
    assert!(out.contains("2 executed, 5 cached"), "{out}");
    let back = ok(&a, &["run", &p]);
    assert!(back.contains("0 executed, 7 cached"), "{back}");
    assert_eq!(output_files(&a, &p, "train.model"), model);
}

/// `loss_total` of each logged step.
fn logged_losses(a: &Path, pipeline: &str) -> Vec<f64> {
    log_column::<Float64Type>(a, pipeline, "loss_total")
}

#[test]
fn bf16_mixed_precision_trains_like_full_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let no_dropout = ("dropout", "0.0");
    let full = training_pipeline(tmp.path(), "full", 1, &[no_dropout]);
    let half = training_pipeline(
        tmp.path(),
        "half",
        1,
        &[no_dropout, ("precision", "\"bf16\"")],
    );
    ok(&a, &["run", &full]);
    let out = ok(&a, &["run", &half]);
    // Precision is a training setting: it gets its own model, the f32 one is not reused.
    assert_eq!(outcome_of(&out, "train"), "executed", "{out}");
    let (l32, l16) = (logged_losses(&a, &full), logged_losses(&a, &half));
    eprintln!("loss_total f32 {l32:?}\nloss_total bf16 {l16:?}");
    assert_eq!(l16.len(), 6);
    for (step, (x, y)) in l16.iter().zip(&l32).enumerate() {
        assert!(x.is_finite(), "step {}: bf16 loss {x}", step + 1);
        assert!(
            (x - y).abs() <= 0.15 * y.abs().max(0.05),
            "step {}: bf16 loss {x} vs f32 {y}",
            step + 1
        );
    }
    // The master weights are f32: the exported model is f32 and encodes like the f32 run's.
    let model = |p: &str| ok(&a, &["path", p, "train.model"]).trim().to_string();
    assert_ne!(
        output_files(&a, &full, "train.model"),
        output_files(&a, &half, "train.model")
    );
    let diff = max_difference(&vectors(&a, &model(&full)), &vectors(&a, &model(&half)));
    assert!(diff < 0.05, "bf16-trained vectors differ by {diff}");
}
