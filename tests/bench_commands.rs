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
