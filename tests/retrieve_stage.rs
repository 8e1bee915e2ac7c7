//! `retrieve` with text queries through the real binary: encoding inside the stage gives the
//! same run as encode → retrieve, for SPLADE and bag-of-words queries; every algorithm writes the
//! same run; plan explains bad params.

mod common;
use common::*;

const TOY: &str = "pipelines/toy-retrieval.toml";

/// The toy pipeline plus two retrieve stages that encode the dev queries themselves.
fn pipeline(dir: &std::path::Path) -> String {
    write_pipeline(
        dir,
        "text.toml",
        &format!(
            "name = \"text-queries\"\ninclude = [\"{}/{TOY}\"]\n\
             [stage.text_retrieve]\nkind = \"retrieve\"\nindex = \"index.index\"\n\
             query_text = \"ingest.dev_queries\"\nmodel = \"conf/models/splade-tiny\"\n\
             max_length = 64\nk = 100\n\
             [stage.text_bm25_retrieve]\nkind = \"retrieve\"\nindex = \"bm25_index.index\"\n\
             query_text = \"ingest.dev_queries\"\nmodel = \"conf/models/splade-tiny\"\n\
             mode = \"bag_of_words\"\nmax_length = 64\nk = 100\n",
            repo().display()
        ),
    )
}

#[test]
fn text_queries_give_the_same_run_as_encode_then_retrieve() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path());
    let a = tmp.path().join("art");
    let out = ok(&a, &["run", &p]);
    assert_eq!(outcome_of(&out, "text_retrieve"), "executed", "{out}");
    assert_eq!(
        output_files(&a, &p, "text_retrieve.run"),
        output_files(&a, &p, "retrieve.run"),
        "SPLADE text queries"
    );
    assert_eq!(
        output_files(&a, &p, "text_bm25_retrieve.run"),
        output_files(&a, &p, "bm25_retrieve.run"),
        "bag-of-words text queries"
    );
    let again = ok(&a, &["run", &p]);
    assert!(again.contains("0 executed"), "{again}");
}

#[test]
fn plan_explains_query_param_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path());
    let a = tmp.path().join("art");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "text_retrieve.queries=encode_dev_queries.vectors"],
            "either `queries`",
        ),
        (
            &["--set", "retrieve.model=conf/models/splade-tiny"],
            "`queries` are already vectors",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["plan", p.as_str()];
        all.extend_from_slice(args);
        let err = fails(&a, &all);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Missing both, and query_text without a model.
    let bare = write_pipeline(
        tmp.path(),
        "bare.toml",
        "name = \"bare\"\n\
         [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\n\
         queries = { dev = \"pipelines/data/toy/queries.dev.tsv\" }\n\
         [stage.bow]\nkind = \"bm25\"\ninput = \"ingest.docs\"\n\
         [stage.index]\nkind = \"index\"\ninput = \"bow.vectors\"\n\
         [stage.retrieve]\nkind = \"retrieve\"\nindex = \"index.index\"\n",
    );
    let err = fails(&a, &["plan", &bare]);
    assert!(
        err.contains("stage.retrieve.queries") && err.contains("query_text"),
        "{err}"
    );
    let err = fails(
        &a,
        &[
            "plan",
            &bare,
            "--set",
            "retrieve.query_text=ingest.dev_queries",
        ],
    );
    assert!(
        err.contains("stage.retrieve.model") && err.contains("needs `model`"),
        "{err}"
    );
}

#[test]
fn every_algorithm_writes_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = format!(
        "name = \"algorithms\"\ninclude = [\"{}/{TOY}\"]\n",
        repo().display()
    );
    for (index, queries, prefix) in [
        ("index.index", "encode_dev_queries.vectors", "splade"),
        ("bm25_index.index", "bow_dev_queries.vectors", "bm25"),
    ] {
        // Approximate with nothing pruned: every posting kept, whole summaries (upper bounds),
        // every query term walked, blocks skipped only when they cannot reach the top k, whole
        // rows scored; and the same with rows scored on their 8 strongest entries first,
        // always completed.
        let all_kept = "approx_postings = 1000000\napprox_summary_energy = 1.0\n\
                        approx_query_cut = 10000\napprox_heap_factor = 1.0\n";
        let whole_rows = format!("{all_kept}approx_row_prefix = 0\n");
        let prefixed = format!("{all_kept}approx_row_prefix = 8\napprox_completion = 0.0\n");
        for (algo, knobs) in [
            ("exhaustive", ""),
            ("maxscore", ""),
            ("block_max", ""),
            ("approximate", whole_rows.as_str()),
            ("approximate_prefixed", prefixed.as_str()),
        ] {
            let algorithm = algo.trim_end_matches("_prefixed");
            text += &format!(
                "[stage.{prefix}_{algo}]\nkind = \"retrieve\"\nindex = \"{index}\"\n\
                 queries = \"{queries}\"\nk = 100\nalgorithm = \"{algorithm}\"\n{knobs}"
            );
        }
        text += &format!(
            "[stage.{prefix}_approximate_default]\nkind = \"retrieve\"\nindex = \"{index}\"\n\
             queries = \"{queries}\"\nk = 100\nalgorithm = \"approximate\"\n"
        );
    }
    let p = write_pipeline(tmp.path(), "algorithms.toml", &text);
    let a = tmp.path().join("art");
    ok(&a, &["run", &p]);
    for prefix in ["splade", "bm25"] {
        let want = output_files(&a, &p, &format!("{prefix}_exhaustive.run"));
        assert!(!want.is_empty());
        for algo in [
            "maxscore",
            "block_max",
            "approximate",
            "approximate_prefixed",
        ] {
            assert_eq!(
                output_files(&a, &p, &format!("{prefix}_{algo}.run")),
                want,
                "{prefix}: {algo} differs from exhaustive"
            );
        }
        // With its default knobs it prunes: a different run of the same shape.
        let approx = output_files(&a, &p, &format!("{prefix}_approximate_default.run"));
        assert_eq!(approx.len(), want.len());
        assert_ne!(
            approx, want,
            "{prefix}: default approximate search pruned nothing"
        );
    }
}

/// The toy pipeline plus two-step SPLADE: documents pruned to 32 terms in the index, queries to
/// 8 terms in the index pass, 50 candidates rescored with the full vectors.
fn two_step_pipeline(dir: &std::path::Path) -> String {
    write_pipeline(
        dir,
        "two-step.toml",
        &format!(
            "name = \"two-step\"\ninclude = [\"{}/{TOY}\"]\n\
             [stage.pruned_docs]\nkind = \"encode\"\ninput = \"ingest.docs\"\n\
             model = \"conf/models/splade-tiny\"\nmax_length = 256\nshard_size = 100\ntop_k = 32\n\
             [stage.pruned_index]\nkind = \"index\"\ninput = \"pruned_docs.vectors\"\n\
             [stage.two_step]\nkind = \"retrieve\"\nindex = \"pruned_index.index\"\n\
             queries = \"encode_dev_queries.vectors\"\nk = 10\nquery_top_k = 8\n\
             rescore = \"encode_docs.vectors\"\nrescore_depth = 50\n",
            repo().display()
        ),
    )
}

fn float_dot(
    a: &splade_stages::parquet_io::SparseVector,
    b: &splade_stages::parquet_io::SparseVector,
) -> f64 {
    let weights: std::collections::HashMap<u32, f32> = b
        .terms
        .iter()
        .copied()
        .zip(b.weights.iter().copied())
        .collect();
    a.terms
        .iter()
        .zip(&a.weights)
        .filter_map(|(t, w)| weights.get(t).map(|x| *w as f64 * *x as f64))
        .sum()
}

#[test]
fn two_step_rescores_pruned_candidates_with_the_full_vectors() {
    use splade_stages::parquet_io::{read_run, read_sparse};
    let tmp = tempfile::tempdir().unwrap();
    let p = two_step_pipeline(tmp.path());
    let a = tmp.path().join("art");
    let out = ok(&a, &["run", &p]);
    assert_eq!(outcome_of(&out, "two_step"), "executed", "{out}");
    let path = |target: &str| std::path::PathBuf::from(ok(&a, &["path", &p, target]).trim());
    let (doc_ids, docs) = read_sparse(&path("encode_docs.vectors")).unwrap();
    let (qids, queries) = read_sparse(&path("encode_dev_queries.vectors")).unwrap();
    let (_, pruned) = read_sparse(&path("pruned_docs.vectors")).unwrap();
    assert!(pruned.iter().all(|v| v.terms.len() <= 32));
    assert!(
        docs.iter().any(|v| v.terms.len() > 32),
        "pruning had nothing to prune"
    );
    let doc = |id: &str| &docs[doc_ids.iter().position(|d| d == id).unwrap()];
    let query = |id: &str| &queries[qids.iter().position(|q| q == id).unwrap()];
    let run = read_run(&path("two_step.run")).unwrap();
    let full = read_run(&path("retrieve.run")).unwrap();
    assert!(!run.is_empty());
    // Every score is the exact dot product of the full vectors, ranks follow the scores.
    for r in &run {
        let want = float_dot(query(&r.qid), doc(&r.did));
        assert!(
            (r.score - want).abs() <= 1e-5 * want.max(1.0),
            "{} {}: score {} vs full dot {want}",
            r.qid,
            r.did,
            r.score
        );
    }
    for w in run.windows(2).filter(|w| w[0].qid == w[1].qid) {
        assert!(w[0].score >= w[1].score && w[1].rank == w[0].rank + 1);
    }
    // Quality against exhaustive retrieval over the full vectors: top-10 overlap.
    let top10 = |rows: &[splade_stages::parquet_io::RunRow], q: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.qid == q && r.rank <= 10)
            .map(|r| r.did.clone())
            .collect()
    };
    let mut overlap = 0.0;
    for q in &qids {
        let exact = top10(&full, q);
        let got = top10(&run, q);
        overlap +=
            got.iter().filter(|d| exact.contains(d)).count() as f64 / exact.len().max(1) as f64;
    }
    overlap /= qids.len() as f64;
    eprintln!("two-step top-10 overlap with full retrieval: {overlap:.3}");
    assert!(overlap >= 0.9, "two-step top-10 overlap {overlap}");
    // rescore_depth means nothing without the full vectors.
    let err = fails(&a, &["plan", &p, "--set", "retrieve.rescore_depth=100"]);
    assert!(
        err.contains("rescore_depth") && err.contains("needs `rescore`"),
        "{err}"
    );
    // The approximate search's row knobs are checked when the pipeline is planned.
    for (set, key) in [
        ("retrieve.approx_row_prefix=-1", "approx_row_prefix"),
        ("retrieve.approx_completion=-0.5", "approx_completion"),
    ] {
        let err = fails(&a, &["plan", &p, "--set", set]);
        assert!(err.contains(key) && err.contains(">= 0"), "{err}");
    }
}

/// `(qid, did, score)` lines of a TREC run file.
fn trec_rows(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path.trim())
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[2].to_string(), f[4].to_string())
        })
        .collect()
}

#[test]
fn a_bisection_reordered_index_gives_the_same_hits_under_the_input_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = format!(
        "name = \"reordered\"\ninclude = [\"{}/{TOY}\"]\n\
         [stage.bp_index]\nkind = \"index\"\ninput = \"encode_docs.vectors\"\nreorder = \"bp\"\n",
        repo().display()
    );
    for (name, index, algo) in [
        ("plain", "index.index", "exhaustive"),
        ("bp", "bp_index.index", "exhaustive"),
        ("bp_block_max", "bp_index.index", "block_max"),
    ] {
        text += &format!(
            "[stage.{name}]\nkind = \"retrieve\"\nindex = \"{index}\"\n\
             queries = \"encode_dev_queries.vectors\"\nk = 100\nalgorithm = \"{algo}\"\ntrec = true\n"
        );
    }
    let p = write_pipeline(tmp.path(), "reordered.toml", &text);
    let a = tmp.path().join("art");
    ok(&a, &["run", &p]);
    let trec = |stage: &str| trec_rows(&ok(&a, &["path", &p, &format!("{stage}.trec")]));

    // The documents really moved: the doc-index → id table is a different order of the same ids.
    let ids = |stage: &str| {
        let batches = parquet_batches(std::path::Path::new(
            ok(&a, &["path", &p, &format!("{stage}.doc_ids")]).trim(),
        ));
        let mut ids = Vec::new();
        for b in &batches {
            let col = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            ids.extend(col.iter().map(|s| s.unwrap().to_string()));
        }
        ids
    };
    let (plain_ids, bp_ids) = (ids("index"), ids("bp_index"));
    assert_ne!(plain_ids, bp_ids, "bisection left the input order");
    let mut sorted = bp_ids.clone();
    sorted.sort();
    let mut want = plain_ids.clone();
    want.sort();
    assert_eq!(sorted, want);

    // Safe pruning on the reordered index: the same run as exhaustive on it.
    let bp = trec("bp");
    assert_eq!(trec("bp_block_max"), bp);
    // Against the input-order index: the same scores per query, and the same documents (named
    // by their input ids) above each query's lowest score (ties at the cut may differ in order).
    let plain = trec("plain");
    assert_eq!(plain.len(), bp.len());
    let by_query = |rows: &[(String, String, String)]| {
        let mut m: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
        for (q, d, s) in rows {
            m.entry(q.clone()).or_default().push((s.clone(), d.clone()));
        }
        m
    };
    let (plain, bp) = (by_query(&plain), by_query(&bp));
    assert_eq!(
        plain.keys().collect::<Vec<_>>(),
        bp.keys().collect::<Vec<_>>()
    );
    for (q, hits) in &plain {
        let other = &bp[q];
        let scores = |h: &[(String, String)]| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(scores(hits), scores(other), "query {q}: scores differ");
        let last = hits.last().unwrap().0.clone();
        let above = |h: &[(String, String)]| {
            let mut d: Vec<String> = h
                .iter()
                .filter(|x| x.0 != last)
                .map(|x| x.1.clone())
                .collect();
            d.sort();
            d
        };
        assert_eq!(above(hits), above(other), "query {q}: documents differ");
    }
}
