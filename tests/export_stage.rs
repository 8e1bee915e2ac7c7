//! Export to Anserini JsonVectorCollection, Anserini query TSV and CIFF, read back and compared
//! with the vectors they came from.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use splade_stages::export::ciff;
use splade_stages::parquet_io::read_sparse;

fn pipeline(dir: &std::path::Path) -> String {
    write_pipeline(
        dir,
        "export.toml",
        "name = \"export\"\n\
         [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\nqueries = { dev = \"pipelines/data/toy/queries.dev.tsv\" }\n\
         [stage.docs]\nkind = \"bm25\"\ninput = \"ingest.docs\"\n\
         [stage.queries]\nkind = \"encode\"\ninput = \"ingest.dev_queries\"\nmode = \"bag_of_words\"\n\
         [stage.anserini]\nkind = \"export\"\ninput = \"docs.vectors\"\ntexts = \"ingest.docs\"\nformat = \"anserini_docs\"\n\
         [stage.anserini_q]\nkind = \"export\"\ninput = \"queries.vectors\"\nformat = \"anserini_queries\"\n\
         [stage.ciff]\nkind = \"export\"\ninput = \"docs.vectors\"\nformat = \"ciff\"\n",
    )
}

fn vocab() -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("conf/models/splade-tiny/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let mut out = vec![String::new(); 30522];
    for (tok, id) in v["model"]["vocab"].as_object().unwrap() {
        out[id.as_u64().unwrap() as usize] = tok.clone();
    }
    out
}

/// Runs the export pipeline under `a`; returns the pipeline file, the doc ids and each
/// document's expected integer vector (token → round(w × 100)).
fn run_exports(dir: &Path, a: &Path) -> (String, Vec<String>, Vec<BTreeMap<String, i64>>) {
    let p = pipeline(dir);
    ok(a, &["run", &p]);
    let vocab = vocab();
    let (ids, vectors) =
        read_sparse(&PathBuf::from(ok(a, &["path", &p, "docs.vectors"]).trim())).unwrap();
    let expected: Vec<BTreeMap<String, i64>> = vectors
        .iter()
        .map(|v| {
            v.terms
                .iter()
                .zip(&v.weights)
                .map(|(t, w)| {
                    (
                        vocab[*t as usize].clone(),
                        (*w as f64 * 100.0).round() as i64,
                    )
                })
                .filter(|(_, q)| *q > 0)
                .collect()
        })
        .collect();
    (p, ids, expected)
}

#[test]
fn exports_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("art");
    let (p, ids, expected) = run_exports(tmp.path(), &a);

    // Anserini JsonVectorCollection: {"id", "content", "vector": {token: int}}.
    let text = std::fs::read_to_string(PathBuf::from(
        ok(&a, &["path", &p, "anserini.export"]).trim(),
    ))
    .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["id"], ids[i]);
        assert!(!l["content"].as_str().unwrap().is_empty());
        let got: BTreeMap<String, i64> = l["vector"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
            .collect();
        assert_eq!(got, expected[i], "doc {}", ids[i]);
    }

    // Query TSV: each token repeated by its integer weight (bag of words: weight 1 × 100).
    let q = std::fs::read_to_string(PathBuf::from(
        ok(&a, &["path", &p, "anserini_q.export"]).trim(),
    ))
    .unwrap();
    let first = q.lines().next().unwrap();
    let (qid, toks) = first.split_once('\t').unwrap();
    assert_eq!(qid, "2000");
    let n = toks.split(' ').count();
    assert_eq!(n % 100, 0, "every bag-of-words token repeated 100 times");

    // CIFF: header, postings lists (sorted terms, gap-coded), doc records.
    let bytes = std::fs::read(PathBuf::from(ok(&a, &["path", &p, "ciff.export"]).trim())).unwrap();
    let (header, lists, docs) = ciff::read_all(&mut bytes.as_slice()).unwrap();
    assert_eq!(header.num_docs as usize, ids.len());
    assert_eq!(
        docs.iter()
            .map(|d| d.collection_docid.clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert!(
        lists.windows(2).all(|w| w[0].term < w[1].term),
        "terms sorted"
    );
    let mut rebuilt: Vec<BTreeMap<String, i64>> = vec![BTreeMap::new(); ids.len()];
    for list in &lists {
        assert_eq!(list.df as usize, list.postings.len());
        let mut doc = 0;
        for p in &list.postings {
            doc += p.docid;
            rebuilt[doc as usize].insert(list.term.clone(), p.tf as i64);
        }
    }
    assert_eq!(rebuilt, expected);
}

/// PISA's own converter (`cargo install ciff`), from `SPLADE_TEST_CIFF2PISA` or `PATH`.
fn ciff2pisa() -> Option<String> {
    let candidates = [
        std::env::var("SPLADE_TEST_CIFF2PISA").unwrap_or_default(),
        "ciff2pisa".into(),
    ];
    first_runnable(&candidates, &["--version"])
}

/// The u32 sequences of a PISA binary-collection file: `[n, x1..xn]` repeated.
fn pisa_sequences(path: &Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(path).unwrap();
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let n = words[i] as usize;
        out.push(words[i + 1..i + 1 + n].to_vec());
        i += 1 + n;
    }
    out
}

#[test]
fn ciff_converts_with_pisas_ciff2pisa() {
    let Some(tool) = ciff2pisa() else {
        skip("no ciff2pisa (cargo install ciff, or set SPLADE_TEST_CIFF2PISA)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("art");
    let (p, ids, expected) = run_exports(tmp.path(), &a);
    let ciff_file = ok(&a, &["path", &p, "ciff.export"]).trim().to_string();
    let base = tmp.path().join("pisa");
    tool_stdout(
        std::process::Command::new(&tool)
            .args(["--ciff-file", &ciff_file, "--output"])
            .arg(&base),
    );

    // PISA's binary collection: .docs = [num_docs] then one doc-id list per term, .freqs the
    // matching impacts, .terms / .documents the lexicons.
    let file = |ext: &str| tmp.path().join(format!("pisa.{ext}"));
    let docs = pisa_sequences(&file("docs"));
    let freqs = pisa_sequences(&file("freqs"));
    let terms: Vec<String> = std::fs::read_to_string(file("terms"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let names: Vec<String> = std::fs::read_to_string(file("documents"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(names, ids);
    assert_eq!(docs[0], vec![ids.len() as u32]);
    assert_eq!(docs.len() - 1, terms.len());
    assert_eq!(freqs.len(), terms.len());
    let mut rebuilt: Vec<BTreeMap<String, i64>> = vec![BTreeMap::new(); ids.len()];
    for ((term, list), impacts) in terms.iter().zip(&docs[1..]).zip(&freqs) {
        assert_eq!(list.len(), impacts.len(), "{term}");
        for (d, f) in list.iter().zip(impacts) {
            rebuilt[*d as usize].insert(term.clone(), *f as i64);
        }
    }
    assert_eq!(
        rebuilt, expected,
        "PISA's view of our CIFF differs from the vectors"
    );
}
