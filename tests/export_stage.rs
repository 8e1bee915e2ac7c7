//! Export to Anserini JsonVectorCollection, Anserini query TSV and CIFF, read back and compared
//! with the vectors they came from.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

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

#[test]
fn exports_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("art");
    let p = pipeline(tmp.path());
    ok(&a, &["run", &p]);
    let vocab = vocab();
    let (ids, vectors) =
        read_sparse(&PathBuf::from(ok(&a, &["path", &p, "docs.vectors"]).trim())).unwrap();
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
