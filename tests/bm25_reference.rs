//! The `bm25` stage and `bag_of_words` queries against an independent Python implementation of
//! Lucene's classic BM25 over the same WordPiece tokens (tests/fixtures/bm25/reference.py, its
//! output committed as tests/fixtures/bm25/toy_reference.json; issue 14).
//!
//! The stage computes every weight in f64 and stores it as f32; the reference keeps f64 and
//! writes 9 significant digits. An f32 is within half an ulp, 2^-24 ≈ 6e-8 relative, of the
//! f64 it rounds, and the 9 digits add at most 5e-9 relative, so a correct stage differs from
//! the reference by well under 1e-7·|w|. The tolerance, |ours − ref| ≤ 1e-6·max(1, |ref|),
//! leaves an order of magnitude of slack for libm's `ln` differing in the last f64 bit, yet
//! catches any formula slip (a wrong dl or avgdl moves weights by > 1e-3 relative). Query
//! scores (sums of ≤ 12 such weights) get the same tolerance; rankings are compared exactly:
//! the smallest gap between distinct reference scores in a top-100 is 5e-6 relative, far above
//! f32 noise, and documents that tie exactly (same tf and length for the matched terms) tie
//! exactly in both, broken by doc id as a string, ascending.

mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;
use splade_stages::parquet_io::{read_sparse, SparseVector};

const TOY: &str = "pipelines/toy-retrieval.toml";
const FIXTURE: &str = "tests/fixtures/bm25/toy_reference.json";
const REGENERATE: &str =
    "python3 tests/fixtures/bm25/reference.py > tests/fixtures/bm25/toy_reference.json";

/// |ours − reference| ≤ TOL·max(1, |reference|) (see the module comment).
const TOL: f64 = 1e-6;

fn close(ours: f64, reference: f64) -> bool {
    (ours - reference).abs() <= TOL * reference.abs().max(1.0)
}

/// The toy pipeline's `[stage.NAME]` table.
fn toy_stage(name: &str) -> toml::Table {
    let toy: toml::Table = std::fs::read_to_string(repo().join(TOY))
        .unwrap()
        .parse()
        .unwrap();
    toy["stage"][name].as_table().unwrap().clone()
}

/// A pipeline of the toy's ingest (docs and dev queries), and its `bm25` and `bow_dev_queries`
/// stages copied verbatim, so this test follows the toy's parameters.
fn pipeline(dir: &Path) -> String {
    let mut ingest = toml::Table::new();
    ingest.insert("kind".into(), "ingest".into());
    ingest.insert("docs".into(), "pipelines/data/toy/collection.tsv".into());
    let mut queries = toml::Table::new();
    queries.insert("dev".into(), "pipelines/data/toy/queries.dev.tsv".into());
    ingest.insert("queries".into(), queries.into());
    let mut stages = toml::Table::new();
    stages.insert("ingest".into(), ingest.into());
    stages.insert("bm25".into(), toy_stage("bm25").into());
    stages.insert(
        "bow_dev_queries".into(),
        toy_stage("bow_dev_queries").into(),
    );
    let mut p = toml::Table::new();
    p.insert("name".into(), "bm25-reference".into());
    p.insert("stage".into(), stages.into());
    write_pipeline(dir, "bm25_reference.toml", &toml::to_string(&p).unwrap())
}

fn vectors(a: &Path, pipeline: &str, target: &str) -> BTreeMap<String, SparseVector> {
    let p = PathBuf::from(ok(a, &["path", pipeline, target]).trim());
    let (ids, vecs) = read_sparse(&p).unwrap();
    let n = ids.len();
    let map: BTreeMap<String, SparseVector> = ids.into_iter().zip(vecs).collect();
    assert_eq!(map.len(), n, "duplicate ids in {target}");
    map
}

/// A stage parameter as the run resolved it (defaults included), from the output's manifest.
fn resolved_param(a: &Path, pipeline: &str, target: &str, key: &str) -> f64 {
    let m: Value =
        serde_json::from_str(&ok(a, &["inspect", pipeline, target, "--manifest"])).unwrap();
    let params = &m["params"];
    params[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no `{key}` in the params of {target}: {params}"))
}

#[test]
fn bm25_and_bag_of_words_match_the_lucene_reference() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(FIXTURE)).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    let pipe = pipeline(a);
    ok(a, &["run", &pipe]);

    // The fixture was made with the parameters the toy runs with.
    let rp = &reference["params"];
    for (target, key, rkey) in [
        ("bm25.vectors", "k1", "k1"),
        ("bm25.vectors", "b", "b"),
        ("bm25.vectors", "max_length", "max_length"),
        ("bow_dev_queries.vectors", "max_length", "query_max_length"),
    ] {
        let ours = resolved_param(a, &pipe, target, key);
        assert_eq!(
            ours,
            rp[rkey].as_f64().unwrap(),
            "{TOY} runs {target} with {key} = {ours}, the fixture has {rkey} = {}; regenerate \
             it with `{REGENERATE}` after updating reference.py's parameters",
            rp[rkey]
        );
    }

    let m: Value =
        serde_json::from_str(&ok(a, &["inspect", &pipe, "bm25.vectors", "--manifest"])).unwrap();
    let (ours, r) = (
        m["stats"]["avg_doc_tokens"].as_f64().unwrap(),
        rp["avgdl"].as_f64().unwrap(),
    );
    assert!(close(ours, r), "avgdl: ours {ours} vs reference {r}");

    // Documents: the same term sets, weights within the tolerance.
    let docs = vectors(a, &pipe, "bm25.vectors");
    let ref_docs = reference["docs"].as_object().unwrap();
    assert_eq!(docs.len(), ref_docs.len(), "number of documents");
    let (mut max_abs, mut max_rel, mut n_weights) = (0f64, 0f64, 0usize);
    for (id, rw) in ref_docs {
        let v = docs
            .get(id)
            .unwrap_or_else(|| panic!("doc {id} of the reference is not in bm25.vectors"));
        let rw: BTreeMap<u32, f64> = rw
            .as_object()
            .unwrap()
            .iter()
            .map(|(t, w)| (t.parse().unwrap(), w.as_f64().unwrap()))
            .collect();
        let ours: BTreeMap<u32, f64> = v
            .terms
            .iter()
            .zip(&v.weights)
            .map(|(t, w)| (*t, *w as f64))
            .collect();
        assert_eq!(ours.len(), v.terms.len(), "doc {id}: repeated terms");
        if let Some(t) = rw.keys().find(|t| !ours.contains_key(t)) {
            panic!("doc {id}: reference term {t} (weight {}) missing", rw[t]);
        }
        if let Some(t) = ours.keys().find(|t| !rw.contains_key(t)) {
            panic!(
                "doc {id}: term {t} (weight {}) not in the reference",
                ours[t]
            );
        }
        for (t, r) in &rw {
            let o = ours[t];
            assert!(
                close(o, *r),
                "doc {id} term {t}: ours {o:.9} vs reference {r:.9} (diff {:e})",
                o - r
            );
            max_abs = max_abs.max((o - r).abs());
            max_rel = max_rel.max((o - r).abs() / r.abs());
            n_weights += 1;
        }
    }
    eprintln!(
        "{} docs, {n_weights} weights: max |diff| {max_abs:e}, max relative diff {max_rel:e}",
        docs.len()
    );

    // Queries: binary bags of the same tokens; the top 100 by exact scoring of our vectors.
    let queries = vectors(a, &pipe, "bow_dev_queries.vectors");
    let ref_queries = reference["queries"].as_object().unwrap();
    assert_eq!(queries.len(), ref_queries.len(), "number of dev queries");
    let doc_maps: Vec<(&String, HashMap<u32, f32>)> = docs
        .iter()
        .map(|(id, v)| {
            (
                id,
                v.terms
                    .iter()
                    .copied()
                    .zip(v.weights.iter().copied())
                    .collect(),
            )
        })
        .collect();
    let mut max_score_diff = 0f64;
    for (qid, rq) in ref_queries {
        let q = queries
            .get(qid)
            .unwrap_or_else(|| panic!("query {qid} of the reference is not in bow_dev_queries"));
        let ref_terms: Vec<u32> = rq["terms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(q.terms, ref_terms, "query {qid}: bag of tokens");
        assert!(
            q.weights.iter().all(|w| *w == 1.0),
            "query {qid}: bag-of-words weights must all be 1: {:?}",
            q.weights
        );
        // Σ over the bag of w(d, t), in f64 over our f32 weights; documents sharing no token
        // with the query are not ranked.
        let mut scored: Vec<(&String, f64)> = doc_maps
            .iter()
            .filter_map(|(id, w)| {
                let hits: Vec<f64> = q
                    .terms
                    .iter()
                    .filter_map(|t| w.get(t).map(|x| *x as f64))
                    .collect();
                (!hits.is_empty()).then(|| (*id, hits.iter().sum()))
            })
            .collect();
        scored.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(y.0)));
        scored.truncate(100);
        let ref_top: Vec<(&str, f64)> = rq["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        for (rank, (ours, r)) in scored.iter().zip(&ref_top).enumerate() {
            assert_eq!(
                ours.0.as_str(),
                r.0,
                "query {qid}, rank {}: ours doc {} (score {:.9}) vs reference doc {} (score \
                 {:.9})\nours:      {:?}\nreference: {:?}",
                rank + 1,
                ours.0,
                ours.1,
                r.0,
                r.1,
                &scored[rank..(rank + 5).min(scored.len())],
                &ref_top[rank..(rank + 5).min(ref_top.len())]
            );
            assert!(
                close(ours.1, r.1),
                "query {qid}, rank {}, doc {}: score {:.9} vs reference {:.9}",
                rank + 1,
                r.0,
                ours.1,
                r.1
            );
            max_score_diff = max_score_diff.max((ours.1 - r.1).abs());
        }
        assert_eq!(
            scored.len(),
            ref_top.len(),
            "query {qid}: number of documents ranked"
        );
    }
    eprintln!(
        "{} dev queries: top-100 rankings identical, max |score diff| {max_score_diff:e}",
        queries.len()
    );
}
