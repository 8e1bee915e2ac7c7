//! Teacher-score pickles (int and str keys) read right; wrong shapes, NaN and truncation are
//! errors naming the file.

use std::path::PathBuf;

use splade_stages::distill::read_pickle;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/distill")
        .join(name)
}

#[test]
fn int_and_str_keyed_pickles_give_the_same_scores() {
    let mut a = read_pickle(&fixture("ce_int_keys.pkl.gz")).unwrap();
    let mut b = read_pickle(&fixture("ce_str_keys.pkl.gz")).unwrap();
    a.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    b.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    assert_eq!(a, b);
    assert_eq!(
        a,
        vec![
            ("1000".to_string(), "17".to_string(), -1.5f32),
            ("1000".into(), "3".into(), 7.25),
            ("1001".into(), "42".into(), 3.0),
        ]
    );
}

#[test]
fn bad_pickles_are_errors_naming_the_file() {
    let err = read_pickle(&fixture("bad_shape.pkl.gz"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad_shape.pkl.gz") && err.contains("{qid: {pid: score}}"),
        "{err}"
    );
    let err = read_pickle(&fixture("nan.pkl.gz")).unwrap_err().to_string();
    assert!(
        err.contains("nan.pkl.gz") && err.contains("not finite"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.pkl.gz");
    let bytes = std::fs::read(fixture("ce_int_keys.pkl.gz")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 12]).unwrap();
    let err = read_pickle(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.pkl.gz"), "{err}");
}

fn expected_score(q: i64, p: i64) -> f32 {
    ((q * 31 + p * 7).rem_euclid(1000)) as f32 / 8.0 - 60.0
}

#[test]
fn streamed_pickles_cover_batches_wide_ints_and_memo_references() {
    for name in ["ce_batched_p5.pkl.gz", "ce_batched_str_p2.pkl.gz"] {
        let rows = read_pickle(&fixture(name)).unwrap();
        assert_eq!(rows.len(), 3 * 1500, "{name}");
        for (q, p, s) in &rows {
            let (qi, pi): (i64, i64) = (q.parse().unwrap(), p.parse().unwrap());
            assert!([5, (1 << 40) + 3, -7].contains(&qi), "{name}: qid {q}");
            // Python's % is floored like rem_euclid for a positive modulus.
            assert_eq!(*s, expected_score(qi, pi), "{name}: ({q}, {p})");
        }
    }
    let shared = read_pickle(&fixture("shared_str.pkl.gz")).unwrap();
    assert_eq!(
        shared,
        vec![
            ("a".to_string(), "pid-x".to_string(), 1.0),
            ("b".into(), "pid-x".into(), 2.0)
        ]
    );
}
