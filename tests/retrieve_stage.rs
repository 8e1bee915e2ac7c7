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
        for algo in ["exhaustive", "maxscore", "block_max"] {
            text += &format!(
                "[stage.{prefix}_{algo}]\nkind = \"retrieve\"\nindex = \"{index}\"\n\
                 queries = \"{queries}\"\nk = 100\nalgorithm = \"{algo}\"\n"
            );
        }
    }
    let p = write_pipeline(tmp.path(), "algorithms.toml", &text);
    let a = tmp.path().join("art");
    ok(&a, &["run", &p]);
    for prefix in ["splade", "bm25"] {
        let want = output_files(&a, &p, &format!("{prefix}_exhaustive.run"));
        assert!(!want.is_empty());
        for algo in ["maxscore", "block_max"] {
            assert_eq!(
                output_files(&a, &p, &format!("{prefix}_{algo}.run")),
                want,
                "{prefix}: {algo} differs from exhaustive"
            );
        }
    }
}
