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

/// The manifest stats of a pipeline output.
fn stats(a: &std::path::Path, pipeline: &str, target: &str, sets: &[&str]) -> serde_json::Value {
    let mut args = vec!["inspect", pipeline, target, "--manifest"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let m: serde_json::Value = serde_json::from_str(&ok(a, &args)).unwrap();
    m["stats"].clone()
}

/// A teacher score class per (qid, did), so the test knows what the filter must do: 9.5 (within
/// margin 1 of the positives' 10), 20 (above max_score 15), none, or 0 (kept).
fn teacher_class(qid: &str, did: &str) -> u32 {
    (qid.bytes().chain(did.bytes()).map(u32::from).sum::<u32>()) % 4
}

#[test]
fn teacher_filter_drops_likely_false_negatives_and_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("artifacts");
    ok(&a, &["run", MINING]);
    let run = splade_stages::parquet_io::read_run(&PathBuf::from(
        ok(&a, &["path", MINING, "bm25_train.run"]).trim(),
    ))
    .unwrap();
    let qrels = read_qrels(&PathBuf::from(
        ok(&a, &["path", MINING, "ingest.train_qrels"]).trim(),
    ))
    .unwrap();
    let mut pos: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for q in qrels.iter().filter(|q| q.rel > 0) {
        pos.entry(&q.qid).or_default().push(&q.did);
    }
    // The teacher file (TREC): positives 10, the run's other documents by class.
    let mut trec = String::new();
    let mut expected = [0usize; 4];
    let mut by_q: std::collections::BTreeMap<&str, Vec<&splade_stages::parquet_io::RunRow>> =
        Default::default();
    for r in &run {
        by_q.entry(&r.qid).or_default().push(r);
    }
    for (q, ps) in &pos {
        for p in ps {
            trec.push_str(&format!("{q} Q0 {p} 0 10 t\n"));
        }
        let Some(list) = by_q.get_mut(q) else {
            continue;
        };
        list.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.did.cmp(&a.did)));
        for r in list
            .iter()
            .take(100)
            .filter(|r| !ps.contains(&r.did.as_str()))
        {
            let c = teacher_class(q, &r.did);
            expected[c as usize] += 1;
            match c {
                0 => trec.push_str(&format!("{q} Q0 {} 0 9.5 t\n", r.did)),
                1 => trec.push_str(&format!("{q} Q0 {} 0 20 t\n", r.did)),
                2 => {}
                _ => trec.push_str(&format!("{q} Q0 {} 0 0 t\n", r.did)),
            }
        }
    }
    let teacher = tmp.path().join("teacher.trec");
    std::fs::write(&teacher, trec).unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        "filter.toml",
        &format!(
            "name = \"toy-mining-filter\"\ninclude = [\"{MINING}\"]\n\
             [stage.teacher]\nkind = \"distill\"\nscores = \"{}\"\n\
             [stage.mine]\nteacher_scores = \"teacher.teacher_scores\"\nmargin = 1.0\nmax_score = 15.0\nunscored = \"drop\"\n",
            teacher.display()
        ),
    );
    let out = ok(&a, &["run", &pipeline]);
    assert_eq!(outcome_of(&out, "bm25_train"), "cached", "{out}");
    let s = stats(&a, &pipeline, "mine.negatives", &[]);
    assert_eq!(s["dropped_margin"], expected[0], "{s}");
    assert_eq!(s["dropped_max_score"], expected[1], "{s}");
    assert_eq!(s["dropped_unscored"], expected[2], "{s}");
    assert_eq!(s["kept_unscored"], 0, "{s}");
    assert_eq!(s["candidates_seen"], expected.iter().sum::<usize>(), "{s}");
    let rows = read_negatives(&PathBuf::from(
        ok(&a, &["path", &pipeline, "mine.negatives"]).trim(),
    ))
    .unwrap();
    assert!(rows.len() > 100);
    for r in &rows {
        for n in &r.neg {
            assert_eq!(
                teacher_class(&r.qid, n),
                3,
                "({}, {n}) should have been filtered",
                r.qid
            );
        }
    }
    // Keeping unscored candidates: they come back, counted.
    let keep = ["mine.unscored=\"keep\""];
    ok(&a, &["run", &pipeline, "--set", keep[0]]);
    let s = stats(&a, &pipeline, "mine.negatives", &keep);
    assert_eq!(s["kept_unscored"], expected[2], "{s}");
    assert_eq!(s["dropped_unscored"], 0, "{s}");
    // A filter without teacher scores is rejected before anything runs.
    let err = fails(&a, &["plan", MINING, "--set", "mine.margin=1.0"]);
    assert!(
        err.contains("stage.mine.margin") && err.contains("teacher_scores"),
        "{err}"
    );
}

fn gz(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

fn hard_negatives_pipeline(dir: &std::path::Path, file: &std::path::Path, systems: &str) -> String {
    write_pipeline(
        dir,
        "hn.toml",
        &format!(
            "name = \"hn\"\n\
             [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\n\
             queries = {{ train = \"pipelines/data/toy/queries.train.tsv\" }}\n\
             qrels = {{ train = \"pipelines/data/toy/qrels.train.json\" }}\n\
             [stage.mine]\nkind = \"mine\"\nhard_negatives = \"{}\"\nsystems = {systems}\n\
             negatives = 3\nsampling = \"top\"\ndocs = \"ingest.docs\"\nqueries = \"ingest.train_queries\"\n\
             qrels = \"ingest.train_qrels\"\n",
            file.display()
        ),
    )
}

#[test]
fn sentence_transformers_hard_negatives_are_imported_per_system() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("artifacts");
    // 20 train queries (1000..1019); documents are 0..299. Ints as in the real file, the
    // positive also listed by bm25 (it must not come back as a negative).
    let mut text = String::new();
    for q in 1000..1020u32 {
        let p = q % 300;
        let bm25: Vec<u32> = (1..=10).map(|i| (q + i * 7) % 300).chain([p]).collect();
        let tasb: Vec<u32> = (1..=6).map(|i| (q + i * 11) % 300).collect();
        let other: Vec<u32> = (1..=5).map(|i| (q + i * 13) % 300).collect();
        text.push_str(&format!(
            "{{\"qid\": {q}, \"pos\": [{p}], \"neg\": {{\"bm25\": {bm25:?}, \"msmarco-distilbert-base-tas-b\": {tasb:?}, \"other\": {other:?}}}}}\n"
        ));
    }
    let file = tmp.path().join("hn.jsonl.gz");
    gz(&file, &text);
    let pipeline = hard_negatives_pipeline(
        tmp.path(),
        &file,
        "[\"bm25\", \"msmarco-distilbert-base-tas-b\"]",
    );
    ok(&a, &["run", &pipeline]);
    let rows = read_negatives(&PathBuf::from(
        ok(&a, &["path", &pipeline, "mine.negatives"]).trim(),
    ))
    .unwrap();
    assert_eq!(rows.len(), 40, "one row per (query, system)");
    for r in &rows {
        let q: u32 = r.qid.parse().unwrap();
        assert!(r.pos.contains(&(q % 300).to_string()));
        let (list, step): (Vec<u32>, u32) = match r.source.as_str() {
            "bm25" => ((1..=10).map(|i| (q + i * 7) % 300).collect(), 7),
            "msmarco-distilbert-base-tas-b" => ((1..=6).map(|i| (q + i * 11) % 300).collect(), 11),
            s => panic!("unexpected source {s}"),
        };
        let _ = step;
        // `top`: the best-ranked non-positives, with their positions in the system's list.
        let want: Vec<(String, u32)> = list
            .iter()
            .enumerate()
            .filter(|(_, d)| !r.pos.contains(&d.to_string()))
            .take(3)
            .map(|(i, d)| (d.to_string(), i as u32 + 1))
            .collect();
        let got: Vec<(String, u32)> = r
            .neg
            .iter()
            .cloned()
            .zip(r.neg_rank.iter().copied())
            .collect();
        assert_eq!(got, want, "{} {}", r.qid, r.source);
    }
    let s = stats(&a, &pipeline, "mine.negatives", &[]);
    assert_eq!(s["queries_kept"], 20, "{s}");
    assert_eq!(s["per_source"]["bm25"], 60, "{s}");

    // A malformed line, an unknown pid and an unknown system are errors naming what is wrong.
    let bad = tmp.path().join("bad.jsonl.gz");
    gz(
        &bad,
        &format!(
            "{}{}",
            text.lines()
                .take(2)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            "{\"qid\": 1002, \"pos\": [1], \"neg\": [3]}\n"
        ),
    );
    let p = hard_negatives_pipeline(tmp.path(), &bad, "[]");
    let err = fails(&a, &["run", &p]);
    assert!(err.contains("bad.jsonl.gz:3"), "{err}");
    let unknown = tmp.path().join("unknown.jsonl.gz");
    gz(
        &unknown,
        "{\"qid\": 1000, \"pos\": [1], \"neg\": {\"bm25\": [2, 99999]}}\n",
    );
    let p = hard_negatives_pipeline(tmp.path(), &unknown, "[]");
    let err = fails(&a, &["run", &p]);
    assert!(
        err.contains("unknown.jsonl.gz:1") && err.contains("pid 99999 is not in the docs artifact"),
        "{err}"
    );
    let p = hard_negatives_pipeline(tmp.path(), &file, "[\"bm26\"]");
    let err = fails(&a, &["run", &p]);
    assert!(
        err.contains("system `bm26`") && err.contains("msmarco-distilbert-base-tas-b"),
        "{err}"
    );
    // Lines for queries outside `queries`: an error by default, skipped and counted on request
    // (mining for a subset of the file's queries).
    let wider = tmp.path().join("wider.jsonl.gz");
    gz(
        &wider,
        &format!(
            "{text}{}",
            "{\"qid\": 5000, \"pos\": [1], \"neg\": {\"bm25\": [2, 3, 4, 5]}}\n\
             {\"qid\": 5001, \"pos\": [1], \"neg\": {\"bm25\": [2, 3, 4, 5]}}\n"
        ),
    );
    let p = hard_negatives_pipeline(tmp.path(), &wider, "[\"bm25\"]");
    let err = fails(&a, &["run", &p]);
    assert!(
        err.contains("wider.jsonl.gz:21")
            && err.contains("qid 5000 is not in the queries artifact")
            && err.contains("other_queries"),
        "{err}"
    );
    let skip = "mine.other_queries=\"skip\"";
    ok(&a, &["run", &p, "--set", skip]);
    let s = stats(&a, &p, "mine.negatives", &[skip]);
    assert_eq!(s["queries_kept"], 20, "{s}");
    assert_eq!(s["queries_dropped_not_in_queries"], 2, "{s}");
}

#[test]
fn killed_mine_resumes_per_query_shard_and_rows_do_not_depend_on_shard_size() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", MINING, "--set", "mine.shard_size=20"]);
    let whole = negatives(&reference, &["mine.shard_size=20"]);
    ok(
        &reference,
        &["run", MINING, "--set", "mine.shard_size=1000"],
    );
    assert_eq!(negatives(&reference, &["mine.shard_size=1000"]), whole);
    ok(&reference, &["run", MINING, "--set", "mine.shard_size=7"]);
    assert_eq!(negatives(&reference, &["mine.shard_size=7"]), whole);

    let a = tmp.path().join("killed");
    ok(&a, &["run", MINING, "--until", "bm25_train"]);
    let mut child = splade(&a)
        .args([
            "run",
            MINING,
            "--no-progress",
            "--set",
            "mine.shard_size=20",
        ])
        .env("SPLADE_TEST_MINE_SHARD_DELAY_MS", "400")
        .spawn()
        .unwrap();
    wait_for(
        || committed_shards(&a, "negatives") >= 2,
        "two committed mine shards",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let out = ok(&a, &["run", MINING, "--set", "mine.shard_size=20"]);
    assert_eq!(outcome_of(&out, "mine"), "resumed", "{out}");
    let s = stats(&a, MINING, "mine.negatives", &["mine.shard_size=20"]);
    assert!(s["resumed_from_shard"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        s["queries_kept"].as_u64().unwrap() as usize,
        whole.len(),
        "{s}"
    );
    ok(&reference, &["run", MINING, "--set", "mine.shard_size=20"]);
    let files = |a: &std::path::Path| {
        let dir = PathBuf::from(
            ok(
                a,
                &[
                    "path",
                    MINING,
                    "mine.negatives",
                    "--set",
                    "mine.shard_size=20",
                ],
            )
            .trim(),
        );
        dir_files(&dir)
    };
    assert!(files(&a).len() > 2);
    assert_eq!(
        files(&a),
        files(&reference),
        "resumed shards are byte-identical"
    );
}

#[test]
fn msmarco_example_pipelines_validate_once_their_data_paths_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("artifacts");
    let data = tmp.path().join("data");
    for dir in ["full_collection", "queries", "model"] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
    }
    std::fs::write(data.join("full_collection/raw.tsv"), "0\tx\n").unwrap();
    std::fs::write(data.join("queries/raw.tsv"), "1\ty\n").unwrap();
    for f in ["qrels.json", "ce.pkl.gz", "hn.jsonl.gz"] {
        std::fs::write(data.join(f), "").unwrap();
    }
    let at = |p: &str| format!("\"{}\"", data.join(p).display());
    let common = [
        format!("ingest.docs={}", at("full_collection")),
        format!("ingest.queries.train={}", at("queries")),
        format!("ingest.qrels.train={}", at("qrels.json")),
        format!("ce_scores.scores={}", at("ce.pkl.gz")),
    ];
    let examples = [
        (
            "pipelines/msmarco-ensembledistil-data.toml",
            vec![format!("mine_hn.hard_negatives={}", at("hn.jsonl.gz"))],
            vec!["ingest", "ce_scores", "mine_hn", "bm25_train", "mine_bm25"],
        ),
        (
            "pipelines/msmarco-selfdistil-round.toml",
            vec![
                format!("encode_docs.model={}", at("model")),
                format!("encode_train_queries.model={}", at("model")),
            ],
            vec![
                "ingest",
                "encode_docs",
                "retrieve_train",
                "ce_scores",
                "mine",
            ],
        ),
    ];
    for (pipeline, extra, stages) in examples {
        // As shipped (no MS MARCO here), validation stops at the first missing data file.
        let err = fails(&a, &["plan", pipeline]);
        assert!(
            err.contains("not found") && err.contains("data/msmarco"),
            "{err}"
        );
        let mut args = vec!["plan".to_string(), pipeline.to_string()];
        // The presets train on GPUs (libtorch); a build without `tch` validates them on the CPU.
        let cpu = [
            "backend.kind=\"flex\"".to_string(),
            "backend.devices=[\"cpu\"]".to_string(),
        ];
        let cpu = if cfg!(feature = "tch") {
            &[][..]
        } else {
            &cpu[..]
        };
        for s in common.iter().chain(&extra).chain(cpu) {
            args.push("--set".into());
            args.push(s.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ok(&a, &args);
        for s in stages {
            plan_of(&out, s);
        }
    }
}
