//! Every class of pipeline-file mistake is caught before any stage runs, with file, line and key.

mod common;
use common::*;
use std::path::Path;

const HEAD: &str = "name = \"t\"\n";
const INGEST: &str = "[stage.ingest]\nkind = \"ingest\"\nqrels = { dev = \"pipelines/data/toy/qrels.dev.trec\" }\nruns = { r = \"pipelines/data/toy/run.dev.bm25.trec\" }\n";

/// Runs `splade run` on `body`, asserts failure, that nothing was computed, and returns stderr.
fn rejects(body: &str) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_pipeline(tmp.path(), "p.toml", body);
    let art = tmp.path().join("artifacts");
    let err = fails(&art, &["run", &file]);
    assert!(
        !art.join("ingest").exists(),
        "no stage may run on an invalid pipeline"
    );
    (err, file)
}

#[test]
fn unknown_kind_suggests_the_nearest() {
    let (err, file) = rejects(&format!("{HEAD}[stage.x]\nkind = \"evalute\"\n"));
    assert!(err.contains(&format!("{file}:3")), "{err}");
    assert!(
        err.contains("stage.x.kind") && err.contains("did you mean `evaluate`"),
        "{err}"
    );
    assert!(
        err.contains("known: ingest, bm25, encode, index, retrieve, evaluate"),
        "{err}"
    );
}

#[test]
fn unknown_param_lists_valid_ones() {
    let (err, file) = rejects(&format!(
        "{HEAD}{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"ingest.r_run\"\nqrels = \"ingest.dev_qrels\"\nmeasurs = [\"map\"]\n"
    ));
    assert!(err.contains(&format!("{file}:10")), "{err}");
    assert!(
        err.contains("stage.e.measurs") && err.contains("did you mean `measures`"),
        "{err}"
    );
    assert!(err.contains("valid: run, qrels, measures"), "{err}");
}

#[test]
fn wrong_type_says_expected_and_got() {
    let (err, file) = rejects(&format!(
        "{HEAD}{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"ingest.r_run\"\nqrels = \"ingest.dev_qrels\"\nk = \"10\"\n"
    ));
    assert!(err.contains(&format!("{file}:10")), "{err}");
    assert!(
        err.contains("stage.e.k") && err.contains("expected an array of integers, got a string"),
        "{err}"
    );
}

#[test]
fn bad_references_name_stage_and_output() {
    let (err, _) = rejects(&format!(
        "{HEAD}{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"ingets.r_run\"\nqrels = \"ingest.dev_qrels\"\n"
    ));
    assert!(
        err.contains("names no stage `ingets`") && err.contains("did you mean `ingest`"),
        "{err}"
    );
    let (err, file) = rejects(&format!(
        "{HEAD}{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"ingest.r_rn\"\nqrels = \"ingest.dev_qrels\"\n"
    ));
    assert!(err.contains(&format!("{file}:8")), "{err}");
    assert!(
        err.contains("has no output `r_rn`") && err.contains("outputs: dev_qrels, r_run"),
        "{err}"
    );
    let (err, _) = rejects(&format!(
        "{HEAD}{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"nodot\"\nqrels = \"ingest.dev_qrels\"\n"
    ));
    assert!(err.contains("is not a reference"), "{err}");
}

#[test]
fn cycles_are_printed_as_a_path() {
    let (err, _) = rejects(&format!(
        "{HEAD}[stage.a]\nkind = \"slow_shards\"\ninput = \"b.shards\"\n[stage.b]\nkind = \"slow_shards\"\ninput = \"a.shards\"\n"
    ));
    assert!(
        err.contains("cycle: a -> b -> a") || err.contains("cycle: b -> a -> b"),
        "{err}"
    );
}

#[test]
fn missing_required_param_and_missing_kind() {
    let (err, file) = rejects(&format!(
        "{HEAD}{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"ingest.r_run\"\n"
    ));
    assert!(
        err.contains(&format!("{file}:6"))
            && err.contains("stage.e.qrels")
            && err.contains("missing required"),
        "{err}"
    );
    let (err, _) = rejects(&format!("{HEAD}[stage.e]\nrun = \"x.y\"\n"));
    assert!(err.contains("missing `kind`"), "{err}");
}

#[test]
fn invalid_toml_and_duplicate_tables_give_lines() {
    let (err, file) = rejects(&format!("{HEAD}[stage.ingest]\nkind = \"ingest\n"));
    assert!(
        err.contains(&format!("{file}:3")) && err.contains("invalid TOML"),
        "{err}"
    );
    let (err, file) = rejects(&format!("{HEAD}{INGEST}{INGEST}"));
    assert!(
        err.contains(&format!("{file}:")) && err.contains("invalid TOML"),
        "{err}"
    );
    // A key given twice in one table: the error names it.
    let (err, file) = rejects(&format!(
        "{HEAD}[stage.ingest]\nkind = \"ingest\"\nqrels = {{}}\nqrels = {{}}\n"
    ));
    assert!(
        err.contains(&format!("{file}:5")) && err.contains("`qrels`") && err.contains("duplicate"),
        "{err}"
    );
    let (err, _) = rejects("[stage.a]\nkind = \"ingest\"\n");
    assert!(err.contains("missing `name"), "{err}");
    let (err, file) = rejects(&format!("{HEAD}stages = 1\n"));
    assert!(
        err.contains(&format!("{file}:2")) && err.contains("did you mean `stage`"),
        "{err}"
    );
}

#[test]
fn missing_input_files_are_reported_before_running() {
    let (err, file) = rejects(&format!(
        "{HEAD}[stage.ingest]\nkind = \"ingest\"\ndocs = \"no/such/file.tsv\"\n"
    ));
    assert!(
        err.contains(&format!("{file}:4"))
            && err.contains("no/such/file.tsv")
            && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn set_overrides_are_typed_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let err = fails(
        a,
        &[
            "run",
            "pipelines/toy-retrieval.toml",
            "--set",
            "evaluate.k=ten",
        ],
    );
    assert!(
        err.contains("--set evaluate.k=ten") && err.contains("expected an array of integers"),
        "{err}"
    );
    let err = fails(
        a,
        &[
            "run",
            "pipelines/toy-retrieval.toml",
            "--set",
            "evaluat.k=[1]",
        ],
    );
    assert!(err.contains("did you mean `evaluate`"), "{err}");
    let err = fails(
        a,
        &[
            "run",
            "pipelines/toy-retrieval.toml",
            "--set",
            "evaluate.complete=maybe",
        ],
    );
    assert!(err.contains("expected a boolean"), "{err}");
    assert!(!a.join("ingest").exists());
}

#[test]
fn includes_merge_with_later_keys_winning() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_pipeline(
        tmp.path(),
        "base.toml",
        &format!("name = \"base\"\n{INGEST}[stage.e]\nkind = \"evaluate\"\nrun = \"ingest.r_run\"\nqrels = \"ingest.dev_qrels\"\nk = [3]\n"),
    );
    let top = write_pipeline(
        tmp.path(),
        "top.toml",
        &format!("name = \"top\"\ninclude = [\"{base}\"]\n[stage.e]\nmeasures = [\"recall\"]\nk = [20]\n"),
    );
    let a = tmp.path().join("artifacts");
    let out = ok(&a, &["run", &top]);
    assert!(out.contains("pipeline `top`"), "{out}");
    assert!(
        out.contains("Recall@20") && !out.contains("Recall@3 "),
        "{out}"
    );
}

/// `splade ... | head` closes stdout under a running command: the process ends the way `cat`
/// does (SIGPIPE), never with a panic.
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = splade(tmp.path())
        .args(["kinds", "--markdown"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first write
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.signal() == Some(libc::SIGPIPE) || out.status.success(),
        "{:?}: {stderr}",
        out.status
    );
}

/// A backend this build cannot run is rejected by `plan`, before any stage runs.
#[test]
fn backend_without_its_feature_is_rejected_at_plan() {
    if cfg!(feature = "tch") {
        skip("this build has the tch feature, so kind = \"tch\" is valid");
        return;
    }
    let (err, file) = rejects(&format!(
        "{HEAD}[backend]\nkind = \"tch\"\ndevices = [\"cuda:0\"]\n{INGEST}"
    ));
    assert!(
        err.contains(&format!("{file}:3"))
            && err.contains("backend.kind")
            && err.contains("--features tch"),
        "{err}"
    );
}

/// A reference to an output that holds the wrong kind of data is refused before anything runs.
#[test]
fn references_to_the_wrong_kind_of_artifact_are_refused() {
    let (err, file) = rejects(&format!(
        "{HEAD}{INGEST}[stage.index]\nkind = \"index\"\ninput = \"ingest.dev_qrels\"\n"
    ));
    assert!(err.contains(&format!("{file}:8")), "{err}");
    assert!(err.contains("stage.index.input"), "{err}");
    assert!(
        err.contains("`ingest.dev_qrels` holds qrels, but this param takes sparse vectors"),
        "{err}"
    );
}

/// An empty input file is an error naming it, unless the pipeline says empty is fine.
#[test]
fn empty_files_are_errors_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("empty.trec"), "\n\n").unwrap();
    let body = |allow: &str| {
        format!(
            "{HEAD}[stage.ingest]\nkind = \"ingest\"\n\
             qrels = {{ dev = \"pipelines/data/toy/qrels.dev.trec\" }}\n\
             runs = {{ r = \"{}\" }}\n{allow}",
            tmp.path().join("empty.trec").display()
        )
    };
    let art = tmp.path().join("artifacts");
    let strict = write_pipeline(tmp.path(), "strict.toml", &body(""));
    let err = fails(&art, &["run", &strict]);
    assert!(
        err.contains("empty.trec") && err.contains("no rows") && err.contains("allow_empty"),
        "{err}"
    );
    let allowed = write_pipeline(tmp.path(), "allowed.toml", &body("allow_empty = true\n"));
    ok(&art, &["run", &allowed]);
    let m: serde_json::Value = serde_json::from_str(&ok(
        &art,
        &["inspect", &allowed, "ingest.r_run", "--manifest"],
    ))
    .unwrap();
    assert_eq!(m["outputs"]["r_run"]["rows"], 0, "{m}");
}

/// stdout and stderr on a full disk (/dev/full): a clear line and status 74, never a panic.
#[test]
fn output_to_a_full_disk_ends_with_status_74() {
    if !Path::new("/dev/full").exists() {
        skip("no /dev/full on this system");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = splade(&tmp.path().join("a"))
        .args(["kinds"])
        .stdout(full())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(
        err.contains("failed printing to stdout") && !err.contains("panicked"),
        "{err}"
    );
    let out = splade(&tmp.path().join("a"))
        .args(["run", "pipelines/toy-retrieval.toml", "--until", "ingest"])
        .stdout(full())
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
}
