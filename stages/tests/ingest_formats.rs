//! Every supported input format reads right, and every malformed-input class gives an error
//! naming file and line.

use std::io::Write;
use std::path::{Path, PathBuf};

use splade_stages::ingest::formats::{
    read_id_text, read_qrels, read_run, resolve_text_source, TextFormat,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn write_gz(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    p
}

fn rows(path: &Path, fmt: TextFormat) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    read_id_text(path, fmt, |i, t| {
        out.push((i.to_string(), t.to_string()));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn tsv_with_extra_columns_and_gzip() {
    let d = tempfile::tempdir().unwrap();
    let text = "7\tfirst passage\n8\ttitle\tbody text\n\n9\tthird\r\n";
    let plain = write(d.path(), "c.tsv", text);
    let gz = write_gz(d.path(), "c.tsv.gz", text);
    let want = vec![
        ("7".to_string(), "first passage".to_string()),
        ("8".into(), "title body text".into()),
        ("9".into(), "third".into()),
    ];
    assert_eq!(rows(&plain, TextFormat::Tsv).unwrap(), want);
    assert_eq!(rows(&gz, TextFormat::Tsv).unwrap(), want);
}

#[test]
fn naver_raw_tsv_directory_and_beir_jsonl() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("collection")).unwrap();
    write(d.path(), "collection/raw.tsv", "1\tx\n");
    let (p, f) = resolve_text_source(&d.path().join("collection"), "corpus.jsonl").unwrap();
    assert!(p.ends_with("raw.tsv") && f == TextFormat::Tsv);

    std::fs::create_dir(d.path().join("beir")).unwrap();
    write(
        d.path(),
        "beir/corpus.jsonl",
        "{\"_id\": \"doc1\", \"title\": \"Title\", \"text\": \"Body.\"}\n{\"_id\": 2, \"title\": \"\", \"text\": \"No title\"}\n",
    );
    let (p, f) = resolve_text_source(&d.path().join("beir"), "corpus.jsonl").unwrap();
    assert_eq!(f, TextFormat::Jsonl);
    assert_eq!(
        rows(&p, f).unwrap(),
        vec![
            ("doc1".to_string(), "Title Body.".to_string()),
            ("2".into(), "No title".into())
        ]
    );
    let err = resolve_text_source(d.path(), "corpus.jsonl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither raw.tsv nor corpus.jsonl"), "{err}");
}

#[test]
fn malformed_tsv_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "bad.tsv", "1\tok\n2 no tab here\n");
    let err = rows(&p, TextFormat::Tsv).unwrap_err();
    assert!(
        err.contains("bad.tsv:2") && err.contains("no tab here"),
        "{err}"
    );
    let p = write(
        d.path(),
        "bad.jsonl",
        "{\"_id\": \"a\", \"text\": \"x\"}\n{\"_id\": \"b\", \"text\": \n",
    );
    let err = rows(&p, TextFormat::Jsonl).unwrap_err();
    assert!(
        err.contains("bad.jsonl:2") && err.contains("invalid JSON"),
        "{err}"
    );
    let p = write(d.path(), "noid.jsonl", "{\"text\": \"x\"}\n");
    let err = rows(&p, TextFormat::Jsonl).unwrap_err();
    assert!(err.contains("noid.jsonl:1") && err.contains("_id"), "{err}");
}

#[test]
fn duplicate_ids_are_listed_with_lines() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "dup.tsv", "a\tx\nb\ty\na\tz\nb\tw\n");
    let err = rows(&p, TextFormat::Tsv).unwrap_err();
    assert!(
        err.contains("duplicate ids")
            && err.contains("`a` (lines 1 and 3)")
            && err.contains("`b` (lines 2 and 4)"),
        "{err}"
    );
}

#[test]
fn truncated_gzip_is_an_error_not_a_short_read() {
    let d = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..20000 {
        text += &format!("{i}\tpassage number {i} with some words\n");
    }
    let p = write_gz(d.path(), "c.tsv.gz", &text);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = rows(&p, TextFormat::Tsv).unwrap_err();
    assert!(
        err.contains("c.tsv.gz:") && err.contains("cannot read line"),
        "{err}"
    );
}

#[test]
fn qrels_in_trec_beir_and_naver_json() {
    let d = tempfile::tempdir().unwrap();
    let trec = write(d.path(), "q.trec", "q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 2\n");
    let beir = write(
        d.path(),
        "q.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t2\n",
    );
    let json = write(
        d.path(),
        "q.json",
        "{\"q1\": {\"d1\": 1, \"d2\": 0}, \"q2\": {\"d3\": 2}}",
    );
    assert_eq!(read_qrels(&trec).unwrap().len(), 3);
    assert_eq!(read_qrels(&beir).unwrap().len(), 2);
    let j = read_qrels(&json).unwrap();
    assert_eq!(j.len(), 3);
    assert!(j
        .iter()
        .any(|q| q.qid == "q2" && q.did == "d3" && q.rel == 2));

    let bad = write(d.path(), "bad.trec", "q1 0 d1 1\nq1 0 d2 high\n");
    let err = read_qrels(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.trec:2") && err.contains("not an integer"),
        "{err}"
    );
    // The format is decided once per file: a 3-field line inside TREC qrels is an error, not a
    // BEIR judgment of document "0" with relevance 151 (the real judgment would be lost).
    let mixed = write(d.path(), "mixed.trec", "2003 0 d1 1\n2003 0 151\n");
    let err = read_qrels(&mixed).unwrap_err().to_string();
    assert!(
        err.contains("mixed.trec:2") && err.contains("TREC") && err.contains("line 1"),
        "{err}"
    );
    let mixed = write(
        d.path(),
        "mixed.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 0 d2 1\n",
    );
    let err = read_qrels(&mixed).unwrap_err().to_string();
    assert!(err.contains("mixed.tsv:3") && err.contains("BEIR"), "{err}");
    let dup = write(d.path(), "dup.trec", "q1 0 d1 1\nq1 0 d1 0\n");
    let err = read_qrels(&dup).unwrap_err().to_string();
    assert!(
        err.contains("duplicate (qid, did) pairs: (q1, d1)"),
        "{err}"
    );
    let bad_json = write(d.path(), "bad.json", "{\"q1\": {\"d1\": 1,}}");
    let err = read_qrels(&bad_json).unwrap_err().to_string();
    assert!(err.contains("bad.json:1"), "{err}");
    let shape = write(d.path(), "shape.json", "[1, 2]");
    assert!(read_qrels(&shape)
        .unwrap_err()
        .to_string()
        .contains("expected {qid: {did: rel}}"));
}

#[test]
fn runs_in_trec_and_json_reject_nan_and_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let trec = write(d.path(), "r.trec", "q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 1.5 t\n");
    assert_eq!(read_run(&trec).unwrap().len(), 2);
    let json = write(
        d.path(),
        "r.json",
        "{\"q1\": {\"d1\": 1.0, \"d2\": 3.0, \"d0\": 3.0}}",
    );
    let r = read_run(&json).unwrap();
    let order: Vec<(&str, u32)> = r.iter().map(|x| (x.did.as_str(), x.rank)).collect();
    assert_eq!(order, vec![("d2", 1), ("d0", 2), ("d1", 3)]);

    let nan = write(d.path(), "nan.trec", "q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 NaN t\n");
    let err = read_run(&nan).unwrap_err().to_string();
    assert!(
        err.contains("nan.trec:2") && err.contains("not a finite number"),
        "{err}"
    );
    let inf = write(d.path(), "inf.trec", "q1 Q0 d1 1 inf t\n");
    assert!(read_run(&inf)
        .unwrap_err()
        .to_string()
        .contains("inf.trec:1"));
    let short = write(d.path(), "short.trec", "q1 Q0 d1 1 2.5\n");
    let err = read_run(&short).unwrap_err().to_string();
    assert!(
        err.contains("short.trec:1") && err.contains("qid Q0 did rank score tag"),
        "{err}"
    );
    let dup = write(d.path(), "dup.trec", "q1 Q0 d1 1 2.5 t\nq1 Q0 d1 2 1.5 t\n");
    assert!(read_run(&dup)
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
}
