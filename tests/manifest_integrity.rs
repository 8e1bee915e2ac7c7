//! A manifest carries the digest of its own content: an edited metric or a damaged byte is
//! reported (with the `--force` that recomputes it), never printed as if computed, and does not
//! stop `plan` or `verify` from reading the other artifacts.

mod common;
use common::*;

const PIPELINE: &str = "name = \"m\"\n\
    [stage.ingest]\nkind = \"ingest\"\n\
    qrels = { dev = \"pipelines/data/toy/qrels.dev.trec\" }\n\
    runs = { bm25 = \"pipelines/data/toy/run.dev.bm25.trec\" }\n\
    [stage.evaluate]\nkind = \"evaluate\"\nrun = \"ingest.bm25_run\"\nqrels = \"ingest.dev_qrels\"\n\
    measures = [\"mrr@10\"]\n";

#[test]
fn an_edited_manifest_is_reported_and_recomputed_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let file = write_pipeline(tmp.path(), "m.toml", PIPELINE);
    let first = ok(&art, &["run", &file]);
    assert!(first.contains("0.7114"), "{first}");

    // Somebody "improves" the metric in the manifest.
    let dir = std::path::PathBuf::from(ok(&art, &["path", &file, "evaluate.metrics"]).trim())
        .parent()
        .unwrap()
        .to_path_buf();
    let manifest = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\"digest\""));
    std::fs::write(&manifest, text.replace("0.7114", "0.9114")).unwrap();

    let plan = ok(&art, &["plan", &file]);
    assert_eq!(plan_of(&plan, "ingest").0, "cached", "{plan}");
    let (state, line) = plan_of(&plan, "evaluate");
    assert_eq!(state, "corrupt", "{plan}");
    assert!(
        line.contains("corrupt artifact") && line.contains("--force"),
        "{line}"
    );

    let err = fails(&art, &["run", &file]);
    assert!(err.contains("no longer matches the digest"), "{err}");
    assert!(err.contains("--force evaluate"), "{err}");
    assert!(!err.contains("0.9114"));

    let verify = run(&art, &["verify", &file]);
    assert!(!verify.status.success());
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(out.contains("CORRUPT") && out.contains("ingest"), "{out}");

    let fixed = ok(&art, &["run", &file, "--force", "evaluate"]);
    assert!(
        fixed.contains("0.7114") && !fixed.contains("0.9114"),
        "{fixed}"
    );
    assert!(ok(&art, &["verify", &file]).contains("ok"));
}
