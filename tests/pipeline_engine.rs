//! The engine end to end on the toy pipeline: cache skip, param change → exact sub-DAG rerun,
//! swap-back, plan reasons, inspect/path, verify, gc, status.

mod common;
use common::*;

const TOY: &str = "pipelines/toy-retrieval.toml";

#[test]
fn toy_runs_then_every_stage_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let first = ok(a, &["run", TOY]);
    for stage in [
        "ingest",
        "encode_docs",
        "index",
        "retrieve",
        "evaluate",
        "bm25_evaluate",
    ] {
        assert_eq!(outcome_of(&first, stage), "executed", "{first}");
    }
    assert!(first.contains("MRR@10"), "metrics table printed:\n{first}");
    assert!(first.contains("Recall@100"), "{first}");
    assert!(
        first.contains("\nevaluate (50 queries)"),
        "SPLADE metrics: {first}"
    );
    assert!(
        first.contains("\nbm25_evaluate (50 queries)"),
        "BM25 metrics: {first}"
    );
    assert!(first.contains("12 stages: 12 executed"), "{first}");
    let second = ok(a, &["run", TOY]);
    for stage in [
        "ingest",
        "encode_docs",
        "index",
        "retrieve",
        "evaluate",
        "bm25_evaluate",
    ] {
        assert_eq!(outcome_of(&second, stage), "cached", "{second}");
    }
    assert!(second.contains("0 executed, 12 cached"), "{second}");
    // The cached run still shows the metrics, identical to the first run's.
    let table = |s: &str| {
        s.lines()
            .filter(|l| l.contains("MRR@10"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(table(&first), table(&second));

    // Fingerprints are the engine's regression test: every toy stage that can be resolved
    // without training has the fingerprint README prints (toy.toml includes this pipeline, and
    // fingerprints do not depend on the pipeline's name).
    let mined = json_states(a, &["run", "pipelines/toy.toml", "--until", "mine"]);
    assert_eq!(mined["mine"]["state"], "executed", "{mined:?}");
    assert_eq!(mined["ingest"]["state"], "cached", "{mined:?}");
    let plan = json_states(a, &["plan", "pipelines/toy.toml"]);
    let readme = readme_toy_fingerprints();
    assert_eq!(readme.len(), 27, "README toy block: {readme:?}");
    // README's run is a release build. splade-tiny's vectors differ in their last bits between
    // an optimized and an unoptimized splade-stages, so in a debug build the stages downstream
    // of `encode_docs`'s vectors have other (equally stable) fingerprints; they are compared in
    // release (`cargo test --release`) only.
    let downstream_of_vectors = ["index", "retrieve", "evaluate"];
    let mut compared = 0;
    for (stage, entry) in &plan {
        let Some(fp) = entry["fingerprint"].as_str() else {
            continue;
        };
        if cfg!(debug_assertions) && downstream_of_vectors.contains(&stage.as_str()) {
            continue;
        }
        assert_eq!(&fp[..12], readme[stage], "fingerprint of `{stage}` changed");
        compared += 1;
    }
    // 15 cached stages, plus train and scratch whose inputs are all known.
    let expected = if cfg!(debug_assertions) { 14 } else { 17 };
    assert_eq!(compared, expected, "{plan:?}");
    assert_eq!(plan["train"]["state"], "stale");
    assert_eq!(plan["ft_docs"]["fingerprint"], serde_json::Value::Null);
    assert_eq!(plan["ft_docs"]["reason"], "never run");
}

#[test]
fn plan_and_run_print_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let plan = json_states(a, &["plan", TOY]);
    assert_eq!(plan.len(), 12);
    assert_eq!(plan["ingest"]["state"], "stale");
    assert_eq!(plan["ingest"]["reason"], "never run");
    assert_eq!(plan["ingest"]["kind"], "ingest");
    assert!(plan["ingest"]["fingerprint"].is_string());
    assert_eq!(plan["evaluate"]["fingerprint"], serde_json::Value::Null);
    let run = json_states(a, &["run", TOY, "--until", "bm25"]);
    assert_eq!(run.len(), 2, "{run:?}");
    assert_eq!(run["bm25"]["state"], "executed");
    assert!(run["bm25"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(run["ingest"]["fingerprint"], plan["ingest"]["fingerprint"]);
    let after = json_states(a, &["plan", TOY]);
    assert_eq!(run["bm25"]["fingerprint"], after["bm25"]["fingerprint"]);
    assert_eq!(after["bm25"]["state"], "cached");
    assert_eq!(after["bm25"]["reason"].as_str().unwrap(), {
        let dir = ok(a, &["path", TOY, "bm25"]);
        dir.trim().to_string()
    });

    // A stage that fails at run time: its JSON line says so and names the file and line.
    std::fs::write(a.join("bad.trec"), "q1 0 d1 1\nq2 0 d2 x\n").unwrap();
    let p = write_pipeline(
        a,
        "bad.toml",
        &format!(
            "name = \"bad\"\n[stage.ingest]\nkind = \"ingest\"\nqrels = {{ dev = \"{}\" }}\n",
            a.join("bad.trec").display()
        ),
    );
    let out = common::run(a, &["run", &p, "--json"]);
    assert!(!out.status.success());
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["state"], "failed");
    assert!(
        line["reason"].as_str().unwrap().contains("bad.trec:2"),
        "{line}"
    );
    // Nothing resumable was saved, so the failed stage leaves no staging directory behind.
    let staged = std::fs::read_dir(a.join(".staging"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "failed stage left its staging directory");
    // Malformed input is not something a rerun fixes: no "rerun to continue" hint.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("rerun"));
}

#[test]
fn stage_reference_page_is_current() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = ok(tmp.path(), &["kinds", "--markdown"]);
    let page = std::fs::read_to_string(repo().join("docs/stages.md")).unwrap_or_default();
    assert!(
        page == generated,
        "docs/stages.md is not what `splade kinds --markdown` prints; regenerate it with\n  \
         cargo run -- kinds --markdown > docs/stages.md"
    );
    for kind in ["ingest", "encode", "train", "retrieve", "evaluate"] {
        assert!(
            generated.contains(&format!("\n## {kind} (v")),
            "{kind} section"
        );
    }
    assert!(
        !generated.contains("slow_shards"),
        "test-only kinds stay out"
    );
}

#[test]
fn param_change_reruns_only_dependents_and_swap_back_hits_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let plan0 = ok(a, &["plan", TOY]);
    assert_eq!(plan_of(&plan0, "ingest").0, "stale");
    assert!(plan_of(&plan0, "ingest").1.contains("never run"), "{plan0}");
    ok(a, &["run", TOY]);

    let plan1 = ok(a, &["plan", TOY, "--set", "evaluate.k=[5,50]"]);
    assert_eq!(plan_of(&plan1, "ingest").0, "cached", "{plan1}");
    assert_eq!(plan_of(&plan1, "retrieve").0, "cached", "{plan1}");
    let (status, line) = plan_of(&plan1, "evaluate");
    assert_eq!(status, "stale", "{plan1}");
    assert!(
        line.contains("param `k` changed: [10,100] -> [5,50]"),
        "{line}"
    );

    let changed = ok(a, &["run", TOY, "--set", "evaluate.k=[5,50]"]);
    assert_eq!(outcome_of(&changed, "ingest"), "cached");
    assert_eq!(outcome_of(&changed, "retrieve"), "cached");
    assert_eq!(outcome_of(&changed, "evaluate"), "executed");
    assert!(changed.contains("1 executed, 11 cached"), "{changed}");
    assert!(changed.contains("Recall@50 "), "{changed}");

    let plan2 = ok(a, &["plan", TOY]);
    let (status, line) = plan_of(&plan2, "evaluate");
    assert_eq!(status, "cached", "{plan2}");
    assert!(line.contains("earlier artifact"), "{line}");
    let back = ok(a, &["run", TOY]);
    assert!(back.contains("0 executed, 12 cached"), "{back}");

    // Writing a param out at its default value is the same stage: still cached.
    let explicit = ok(
        a,
        &[
            "run",
            TOY,
            "--set",
            "retrieve.algorithm=\"exhaustive\"",
            "--set",
            "encode_docs.precision=\"f32\"",
        ],
    );
    assert!(explicit.contains("0 executed, 12 cached"), "{explicit}");
}

#[test]
fn input_file_change_is_named_in_plan_and_reruns_downstream() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let data = tmp.path().join("run.trec");
    std::fs::copy(repo().join("pipelines/data/toy/run.dev.bm25.trec"), &data).unwrap();
    let set = format!("ingest.runs.bm25_dev={}", data.display());
    ok(a, &["run", TOY, "--set", &set]);
    // Drop the last line of the run: ingest and the evaluation of that run rerun, and plan says
    // why; the docs output did not change, so everything downstream of it stays cached.
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let plan = ok(a, &["plan", TOY, "--set", &set]);
    let (status, line) = plan_of(&plan, "ingest");
    assert_eq!(status, "stale");
    assert!(line.contains("input `runs.bm25_dev` changed"), "{line}");
    let (status, line) = plan_of(&plan, "bundled_bm25_evaluate");
    assert_eq!(status, "stale");
    assert!(line.contains("waits on upstream `ingest`"), "{line}");
    let out = ok(a, &["run", TOY, "--set", &set]);
    assert_eq!(outcome_of(&out, "ingest"), "executed");
    assert_eq!(outcome_of(&out, "bundled_bm25_evaluate"), "executed");
    assert_eq!(
        outcome_of(&out, "encode_docs"),
        "cached",
        "content-addressed inputs: {out}"
    );
    assert_eq!(outcome_of(&out, "evaluate"), "cached", "{out}");
}

#[test]
fn inspect_and_path_show_artifacts_through_polars() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["run", TOY]);
    let path = ok(a, &["path", TOY, "ingest.docs"]);
    let path = std::path::PathBuf::from(path.trim());
    assert!(
        path.is_file() && path.to_string_lossy().ends_with("docs.parquet"),
        "{path:?}"
    );

    let schema = ok(a, &["inspect", TOY, "ingest.docs", "--schema"]);
    assert!(
        schema.contains("id: str") && schema.contains("text: str"),
        "{schema}"
    );
    let head = ok(a, &["inspect", TOY, "ingest.dev_queries", "--head", "3"]);
    assert!(head.contains("shape: (3, 2)"), "{head}");
    let sql = ok(
        a,
        &[
            "inspect",
            TOY,
            "ingest.docs",
            "--sql",
            "SELECT count(*) AS n FROM t",
        ],
    );
    assert!(sql.contains("300"), "{sql}");
    let desc = ok(a, &["inspect", TOY, "ingest.bm25_dev_run", "--describe"]);
    assert!(
        desc.contains("score (f64)") && desc.contains("mean="),
        "{desc}"
    );
    let metrics = ok(
        a,
        &[
            "inspect",
            TOY,
            "evaluate.metrics",
            "--sql",
            "SELECT value FROM metrics WHERE metric = 'MRR@10'",
        ],
    );
    assert!(metrics.contains("0."), "{metrics}");
    let err = fails(a, &["inspect", TOY, "evaluate"]);
    assert!(
        err.contains("several outputs") && err.contains("evaluate.per_query"),
        "{err}"
    );
    let err = fails(a, &["inspect", TOY, "evalute.metrics"]);
    assert!(err.contains("did you mean `evaluate`"), "{err}");
}

#[test]
fn verify_reports_a_flipped_byte_and_the_engine_never_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["run", TOY]);
    let report = ok(a, &["verify", TOY]);
    assert!(
        report.contains("ingest") && report.contains("ok"),
        "{report}"
    );
    let run_path = ok(a, &["path", TOY, "ingest.bm25_dev_run"]);
    let run_path = run_path.trim();
    let mut bytes = std::fs::read(run_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(run_path, bytes).unwrap();

    let out = run(a, &["verify", TOY]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CORRUPT") && stdout.contains("bm25_dev_run.parquet"),
        "{stdout}"
    );
    let all = run(a, &["verify"]);
    assert!(!all.status.success());

    // A stage that must read the corrupt output refuses to.
    let err = fails(a, &["run", TOY, "--set", "bundled_bm25_evaluate.k=[7]"]);
    assert!(
        err.contains("corrupt") && err.contains("--force ingest"),
        "{err}"
    );
    let out = ok(
        a,
        &[
            "run",
            TOY,
            "--set",
            "bundled_bm25_evaluate.k=[7]",
            "--force",
            "ingest",
        ],
    );
    assert_eq!(outcome_of(&out, "ingest"), "executed");
    assert_eq!(outcome_of(&out, "bundled_bm25_evaluate"), "executed");
    ok(a, &["verify", TOY]);
}

#[test]
fn gc_removes_only_unreferenced_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["run", TOY, "--set", "evaluate.k=[5]"]);
    ok(a, &["run", TOY]);
    let dry = ok(a, &["gc", "--dry-run"]);
    assert!(dry.contains("would remove artifact evaluate/"), "{dry}");
    assert!(!dry.contains("artifact ingest/"), "{dry}");
    let count = |kind: &str| std::fs::read_dir(a.join(kind)).unwrap().count();
    assert_eq!(count("evaluate"), 4, "dry run removes nothing");
    ok(a, &["gc"]);
    assert_eq!(count("evaluate"), 3);
    let again = ok(a, &["run", TOY]);
    assert!(again.contains("0 executed"), "{again}");
}

#[test]
fn status_lists_runs_and_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["run", TOY]);
    ok(a, &["run", TOY]);
    let s = ok(a, &["status", TOY]);
    assert!(s.contains("recent runs"), "{s}");
    assert!(s.contains("executed 12"), "{s}");
    assert!(s.contains("cached 12"), "{s}");
    assert!(s.contains("docs: 300 rows"), "{s}");
}

#[test]
fn until_runs_only_ancestors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let out = ok(a, &["run", TOY, "--until", "ingest"]);
    assert_eq!(outcome_of(&out, "ingest"), "executed");
    assert!(!out.contains("encode_docs"), "{out}");
    let plan = ok(a, &["plan", TOY]);
    assert_eq!(plan_of(&plan, "evaluate").0, "stale");
    let err = fails(a, &["run", TOY, "--until", "nope"]);
    assert!(err.contains("no stage `nope`"), "{err}");
}
