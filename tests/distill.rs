//! `distill` through the real binary: naver's 5-column triplet TSV mapped back to ids, unknown
//! ids rejected or dropped (and counted), a streamed pickle.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn texts(file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(repo().join(file))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(i, t)| (i.to_string(), t.to_string()))
        .collect()
}

fn pipeline(dir: &Path, name: &str, scores: &Path, extra: &str) -> String {
    write_pipeline(
        dir,
        name,
        &format!(
            "name = \"distill\"\n\
             [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\n\
             queries = {{ train = \"pipelines/data/toy/queries.train.tsv\" }}\n\
             [stage.distill]\nkind = \"distill\"\nscores = \"{}\"\n{extra}",
            scores.display()
        ),
    )
}

fn scores(a: &Path, p: &str) -> Vec<(String, String, f32)> {
    let path = PathBuf::from(ok(a, &["path", p, "distill.teacher_scores"]).trim());
    splade_stages::parquet_io::read_teacher_rows(&path).unwrap()
}

fn stats(a: &Path, p: &str) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_str(&ok(
        a,
        &["inspect", p, "distill.teacher_scores", "--manifest"],
    ))
    .unwrap();
    m["stats"].clone()
}

#[test]
fn triplet_tsv_texts_map_back_to_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("artifacts");
    let q = texts("pipelines/data/toy/queries.train.tsv");
    let d = texts("pipelines/data/toy/collection.tsv");
    let mut tsv = String::new();
    let mut want = Vec::new();
    for i in 0..10 {
        let (qi, qt) = &q[i];
        let (pi, pt) = &d[i];
        let (ni, nt) = &d[100 + i];
        tsv.push_str(&format!("{qt}\t{pt}\t{nt}\t{}\t{}\n", 5.0 + i as f32, -1.5));
        want.push((qi.clone(), pi.clone(), 5.0 + i as f32));
        want.push((qi.clone(), ni.clone(), -1.5));
    }
    // The same positive again (kept once), an unknown query, an unknown negative.
    tsv.push_str(&format!("{}\t{}\t{}\t5\t-2\n", q[0].1, d[0].1, d[200].1));
    want.push((q[0].0.clone(), d[200].0.clone(), -2.0));
    tsv.push_str(&format!("no such query\t{}\t{}\t1\t0\n", d[0].1, d[1].1));
    tsv.push_str(&format!("{}\t{}\tno such passage\t1\t0\n", q[1].1, d[3].1));
    want.push((q[1].0.clone(), d[3].0.clone(), 1.0));
    let file = tmp.path().join("triplets.tsv");
    std::fs::write(&file, tsv).unwrap();
    let p = pipeline(
        tmp.path(),
        "distill.toml",
        &file,
        "docs = \"ingest.docs\"\nqueries = \"ingest.train_queries\"\nteacher = \"vienna\"\n",
    );
    ok(&a, &["run", &p]);
    assert_eq!(scores(&a, &p), want);
    let s = stats(&a, &p);
    assert_eq!(s["format"], "triplets", "{s}");
    assert_eq!(s["triplet_lines"], 13, "{s}");
    assert_eq!(s["unmatched_queries"], 1, "{s}");
    assert_eq!(s["unmatched_negatives"], 1, "{s}");
    assert_eq!(s["repeated_pairs"], 1, "{s}");

    // Without the artifacts to map texts, a clear error; a bad line names file:line.
    let p2 = pipeline(tmp.path(), "bare.toml", &file, "");
    let err = fails(&a, &["run", &p2]);
    assert!(err.contains("`docs` and `queries`"), "{err}");
    std::fs::write(
        &file,
        format!("{}\t{}\t{}\t1\t0\n{}\tx\n", q[0].1, d[0].1, d[1].1, q[1].1),
    )
    .unwrap();
    let err = fails(&a, &["run", &p, "--set", "distill.format=\"triplets\""]);
    assert!(
        err.contains("triplets.tsv:2") && err.contains("5 tab-separated"),
        "{err}"
    );
}

#[test]
fn unknown_ids_are_errors_or_counted_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("artifacts");
    let file = tmp.path().join("ce.trec");
    std::fs::write(
        &file,
        "1000 Q0 17 1 3.5 ce\n1000 Q0 nope 2 1.0 ce\n9999999 Q0 3 1 2.0 ce\n1001 Q0 42 1 0.5 ce\n",
    )
    .unwrap();
    let p = pipeline(
        tmp.path(),
        "distill.toml",
        &file,
        "docs = \"ingest.docs\"\nqueries = \"ingest.train_queries\"\n",
    );
    let err = fails(&a, &["run", &p]);
    assert!(
        err.contains("ce.trec") && err.contains("did nope is not in the docs artifact"),
        "{err}"
    );
    let drop = "distill.on_missing=\"drop\"";
    ok(&a, &["run", &p, "--set", drop]);
    let path = PathBuf::from(ok(&a, &["path", &p, "distill.teacher_scores", "--set", drop]).trim());
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path.parent().unwrap().join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["stats"]["dropped_unknown_did"], 1, "{}", m["stats"]);
    assert_eq!(m["stats"]["dropped_unknown_qid"], 1, "{}", m["stats"]);
    assert_eq!(m["stats"]["scores"], 2, "{}", m["stats"]);
}

#[test]
fn pickles_stream_into_teacher_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("artifacts");
    let file = repo().join("tests/fixtures/distill/ce_batched_p5.pkl.gz");
    let p = pipeline(tmp.path(), "p.toml", &file, "teacher = \"minilm\"\n");
    ok(&a, &["run", &p]);
    let rows = scores(&a, &p);
    assert_eq!(rows.len(), 4500);
    assert!(rows.contains(&(
        "1099511627779".into(),
        "0".into(),
        ((1099511627779i64 * 31) % 1000) as f32 / 8.0 - 60.0
    )));
    assert_eq!(stats(&a, &p)["format"], "pickle");
}
