//! `splade bench retrieve` on vectors given as files (`--docs`, `--queries`): a warm-up pass,
//! repeated timed passes, the median and range of each algorithm — a smoke test of the command,
//! not a timing (figures are in docs/performance.md).

mod common;
use common::*;

#[test]
fn bench_retrieve_takes_vector_files_and_reports_median_and_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("synth");
    let art = tmp.path().join("artifacts");
    let d = dir.to_string_lossy().into_owned();
    ok(
        &art,
        &[
            "bench",
            "synth",
            "--docs",
            "400",
            "--queries",
            "12",
            "--out",
            &d,
        ],
    );
    let docs = dir.join("docs.parquet");
    let queries = dir.join("queries.parquet");
    let out = ok(
        &art,
        &[
            "bench",
            "retrieve",
            "--docs",
            &docs.to_string_lossy(),
            "--queries",
            &queries.to_string_lossy(),
            "--repeats",
            "2",
        ],
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("retrieve ")).collect();
    assert_eq!(lines.len(), 8, "4 algorithms x 2 cut-offs:\n{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("(min ") && l.contains("repeats=2")),
        "{out}"
    );
    assert!(
        !dir.join("index").exists(),
        "files given: the index goes to a temporary dir"
    );
    let err = fails(
        &art,
        &["bench", "retrieve", "--docs", &docs.to_string_lossy()],
    );
    assert!(err.contains("both --docs and --queries"), "{err}");
    // A build streamed through spilled runs (1 MiB of postings: about 52k of the 68k) answers
    // the queries exactly as the in-memory one: the dumped top-1000 are the same bytes.
    let dump = |budget: &str| {
        let path = tmp.path().join(format!("dump-{budget}.tsv"));
        let out = ok(
            &art,
            &[
                "bench",
                "retrieve",
                &d,
                "--repeats",
                "1",
                "--algorithms",
                "exhaustive",
                "--memory-budget",
                budget,
                "--dump",
                &path.to_string_lossy(),
            ],
        );
        (out, std::fs::read(&path).unwrap())
    };
    let (in_memory, want) = dump("0");
    let (spilled, got) = dump("1");
    assert!(in_memory.contains("spilled_runs=0"), "{in_memory}");
    assert!(spilled.contains("spilled_runs=2"), "{spilled}");
    assert!(!want.is_empty() && got == want, "{spilled}");
    assert!(
        !dir.join("index.runs").exists(),
        "the spilled runs are removed"
    );
    let err = fails(
        &art,
        &[
            "bench",
            "retrieve",
            &d,
            "--memory-budget",
            "1",
            "--reorder",
            "bp",
        ],
    );
    assert!(err.contains("--memory-budget"), "{err}");
}

/// `bench synth --profile` streams documents to disk a batch at a time: a collection over one
/// batch (16,384 rows) comes back as [`Profile::generate`] draws it in memory, in order, and each
/// query still shares its terms with the document it was written for.
#[test]
fn profile_draws_stream_and_keep_queries_tied_to_their_documents() {
    use splade_bench::profile::{query_anchors, Profile, Topics};
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let profile = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/profiles/msmarco-synth-splade-tiny.json");
    let out_dir = tmp.path().join("drawn");
    let (n_docs, n_queries, seed) = (17_000, 30, 42u64);
    ok(
        &art,
        &[
            "bench",
            "synth",
            "--profile",
            &profile.to_string_lossy(),
            "--docs",
            &n_docs.to_string(),
            "--queries",
            &n_queries.to_string(),
            "--topics",
            "50",
            "--query-overlap",
            "1.0",
            "--out",
            &out_dir.to_string_lossy(),
        ],
    );
    let (ids, docs) =
        splade_stages::parquet_io::read_sparse(&out_dir.join("docs.parquet")).unwrap();
    let topics = Topics {
        count: 50,
        share: 0.5,
    };
    let (want, _) = Profile::read(&profile)
        .unwrap()
        .generate(false, n_docs, seed, topics, None);
    assert_eq!(ids.len(), n_docs);
    assert!(ids.iter().enumerate().all(|(i, id)| *id == format!("d{i}")));
    assert!(
        docs == want,
        "streamed documents differ from the in-memory draw"
    );
    let (_, queries) =
        splade_stages::parquet_io::read_sparse(&out_dir.join("queries.parquet")).unwrap();
    // With overlap 1 a query takes as many of its document's strongest terms as it has terms
    // (all the document's when it has fewer).
    let anchors = query_anchors(n_queries, n_docs, seed ^ 0xA4C1);
    assert_eq!(queries.len(), n_queries);
    for (q, &d) in queries.iter().zip(&anchors) {
        let doc = &docs[d];
        let shared = q.terms.iter().filter(|t| doc.terms.contains(t)).count();
        assert!(
            shared >= q.nnz().min(doc.nnz()),
            "query {:?} shares {shared} terms with its document d{d}",
            q.terms
        );
    }
}

/// `bench profile` of a collection, `bench synth --profile` from it, and `bench retrieve --approx`
/// on the drawn collection: the profile's document count and the drawn nnz come back, and the
/// approximate curve's recall falls as lists are cut and fewer query terms are walked.
#[test]
fn profiles_draw_collections_and_the_approximate_curve_reports_recall() {
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("artifacts");
    let src = tmp.path().join("src");
    let s = src.to_string_lossy().into_owned();
    ok(
        &art,
        &[
            "bench",
            "synth",
            "--docs",
            "600",
            "--queries",
            "20",
            "--out",
            &s,
        ],
    );
    let profile = tmp.path().join("p.json");
    let out = ok(
        &art,
        &[
            "bench",
            "profile",
            "--docs",
            &src.join("docs.parquet").to_string_lossy(),
            "--queries",
            &src.join("queries.parquet").to_string_lossy(),
            "--out",
            &profile.to_string_lossy(),
        ],
    );
    assert!(out.contains("profile docs vectors=600"), "{out}");
    let drawn = tmp.path().join("drawn");
    let out = ok(
        &art,
        &[
            "bench",
            "synth",
            "--profile",
            &profile.to_string_lossy(),
            "--docs",
            "500",
            "--queries",
            "15",
            "--out",
            &drawn.to_string_lossy(),
        ],
    );
    // The source's nnz: log-normal around 150 (bench synth); the drawn mean within 15 %.
    let mean: f64 = out
        .split("doc_nnz_mean=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!((140.0..200.0).contains(&mean), "{out}");
    let (drawn_docs, drawn_queries) = (
        drawn.join("docs.parquet").to_string_lossy().into_owned(),
        drawn.join("queries.parquet").to_string_lossy().into_owned(),
    );
    let on_drawn = [
        "bench",
        "retrieve",
        "--docs",
        &drawn_docs,
        "--queries",
        &drawn_queries,
    ];
    let approx_curve = [
        "--repeats",
        "1",
        "--approx",
        "100000:1.0,1:1.0",
        "--approx-postings",
        "5",
        "--approx-summary-energy",
        "1.0",
        "--approx-only",
    ];
    let out = ok(&art, &[&on_drawn[..], &approx_curve].concat());
    let recall = |cut: &str| -> f64 {
        out.lines()
            .find(|l| l.contains(&format!("query_cut={cut} ")))
            .and_then(|l| l.split("recall_at_10=").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    // 5 postings per term: documents outside every list are never found, so even walking every
    // term loses recall; one term loses more.
    assert!(
        recall("100000") < 1.0 && recall("1") < recall("100000"),
        "{out}"
    );
    // An unknown algorithm is named before the index is built.
    let out = run(
        &art,
        &[&on_drawn[..], &["--algorithms", "exhaustive,bogus"]].concat(),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("unknown `bogus`"), "{stderr}");
    assert!(!stdout.contains("index docs="), "{stdout}");
    // A setting with three fields is neither form.
    let bad = fails(
        &art,
        &[
            "bench",
            "retrieve",
            "--docs",
            "x",
            "--queries",
            "y",
            "--approx",
            "10:0.9:96",
        ],
    );
    assert!(bad.contains("`10:0.9:96`"), "{bad}");
    let bad = fails(
        &art,
        &[
            "bench",
            "synth",
            "--profile",
            "/nonexistent.json",
            "--out",
            &s,
        ],
    );
    assert!(bad.contains("/nonexistent.json"), "{bad}");
}
