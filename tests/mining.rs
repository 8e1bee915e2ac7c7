//! Mining hard negatives, and the user story of swapping mining settings: only `mine` reruns,
//! and swapping back restores the earlier artifact without recomputation.

mod common;
use common::*;
use std::path::PathBuf;

use splade_stages::parquet_io::{read_negatives, read_qrels};

const MINING: &str = "pipelines/toy-mining.toml";

fn negatives(a: &std::path::Path, sets: &[&str]) -> Vec<splade_stages::parquet_io::NegativesRow> {
    let mut args = vec!["path", MINING, "mine.negatives"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    read_negatives(&PathBuf::from(ok(a, &args).trim())).unwrap()
}

#[test]
fn mined_negatives_exclude_positives_and_respect_the_window() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["run", MINING]);
    let rows = negatives(a, &[]);
    assert!(
        rows.len() > 100,
        "most train queries get negatives ({})",
        rows.len()
    );
    let qrels = read_qrels(&PathBuf::from(
        ok(a, &["path", MINING, "ingest.train_qrels"]).trim(),
    ))
    .unwrap();
    for r in &rows {
        assert_eq!(r.neg.len(), 8);
        assert_eq!(r.neg.len(), r.neg_rank.len());
        assert!(
            r.neg_rank.windows(2).all(|w| w[0] < w[1])
                && r.neg_rank.iter().all(|x| (1..=100).contains(x))
        );
        for n in &r.neg {
            assert!(
                !qrels
                    .iter()
                    .any(|q| q.qid == r.qid && q.did == *n && q.rel > 0),
                "positive mined as negative"
            );
        }
        assert_eq!(r.source, "bm25");
    }
    // `top` takes the best-ranked candidates; a narrow window bounds the ranks.
    ok(
        a,
        &[
            "run",
            MINING,
            "--set",
            "mine.sampling=\"top\"",
            "--set",
            "mine.rank_range=[5, 20]",
        ],
    );
    let top = negatives(a, &["mine.sampling=\"top\"", "mine.rank_range=[5, 20]"]);
    for r in &top {
        assert!(
            r.neg_rank.iter().all(|x| (5..=20).contains(x)),
            "{:?}",
            r.neg_rank
        );
    }
}

#[test]
fn swapping_mining_settings_reruns_only_mine() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path();
    ok(a, &["run", MINING]);
    let before = negatives(a, &[]);
    let plan = ok(a, &["plan", MINING, "--set", "mine.negatives=4"]);
    for stage in [
        "ingest",
        "bm25",
        "bm25_index",
        "bow_train_queries",
        "bm25_train",
    ] {
        assert_eq!(plan_of(&plan, stage).0, "cached", "{plan}");
    }
    let (status, line) = plan_of(&plan, "mine");
    assert_eq!(status, "stale");
    assert!(line.contains("param `negatives` changed: 8 -> 4"), "{line}");
    let out = ok(a, &["run", MINING, "--set", "mine.negatives=4"]);
    assert!(out.contains("1 executed, 5 cached"), "{out}");
    assert!(negatives(a, &["mine.negatives=4"])
        .iter()
        .all(|r| r.neg.len() == 4));
    let out = ok(a, &["run", MINING, "--set", "mine.sampling=\"stratified\""]);
    assert!(out.contains("1 executed, 5 cached"), "{out}");
    // Swap back: nothing recomputed, and the same negatives as before (deterministic for a seed).
    let back = ok(a, &["run", MINING]);
    assert!(back.contains("0 executed, 6 cached"), "{back}");
    assert_eq!(negatives(a, &[]), before);
    // A different seed gives different negatives.
    ok(a, &["run", MINING, "--set", "mine.seed=8"]);
    assert_ne!(negatives(a, &["mine.seed=8"]), before);
}
