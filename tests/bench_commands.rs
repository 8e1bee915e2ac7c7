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
    let out = ok(
        &art,
        &[
            "bench",
            "retrieve",
            "--docs",
            &drawn.join("docs.parquet").to_string_lossy(),
            "--queries",
            &drawn.join("queries.parquet").to_string_lossy(),
            "--repeats",
            "1",
            "--approx",
            "100000:1.0,1:1.0",
            "--approx-postings",
            "5",
            "--approx-summary-energy",
            "1.0",
            "--approx-only",
        ],
    );
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
