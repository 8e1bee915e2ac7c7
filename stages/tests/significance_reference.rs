//! The report's significance tests against scipy and statsmodels, on the committed fixtures of
//! tests/fixtures/significance/ (made by its make_fixtures.py).

use serde_json::Value;
use splade_stages::report::stats::{bonferroni, holm, paired_t_test, randomization_test};

fn cases() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/significance/cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("cases.json")).expect("JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn paired_t_test_matches_scipy_ttest_rel() {
    let cases = cases();
    for case in cases["tests"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        // scipy's ttest_rel(a, b) tests a − b; ours tests the second argument minus the first.
        let ours = paired_t_test(&b, &a);
        match case["p_t_test"].as_f64() {
            None => assert_eq!(ours, None, "{name}: scipy gives nan"),
            Some(p) => {
                let (t, ours_p) = ours.unwrap_or_else(|| panic!("{name}: no test"));
                assert!((ours_p - p).abs() < 1e-6, "{name}: p {ours_p} vs scipy {p}");
                if let Some(expected_t) = case["t_statistic"].as_f64() {
                    assert!(
                        (t - expected_t).abs() <= 1e-9 * expected_t.abs().max(1.0),
                        "{name}: t {t} vs scipy {expected_t}"
                    );
                }
            }
        }
    }
}

#[test]
fn randomization_test_matches_scipy_permutation_test() {
    let cases = cases();
    let permutations = 20_000u64;
    for case in cases["tests"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let expected = case["p_randomization"].as_f64().unwrap();
        if case["randomization_exact"].as_bool().unwrap() {
            // Enumerated exactly when the flips asked for cover all 2^n (as scipy does).
            let ours = randomization_test(&a, &b, 1 << a.len(), 42).unwrap();
            assert!(
                ours.exact,
                "{name}: 2^{} flips should be enumerated",
                a.len()
            );
            assert!(
                (ours.p - expected).abs() < 1e-9,
                "{name}: exact p {} vs scipy {expected}",
                ours.p
            );
        } else {
            let ours = randomization_test(&a, &b, permutations, 42).unwrap();
            assert!(!ours.exact);
            // Ours and scipy's are both Monte-Carlo estimates of the same p.
            let sd_ours = (expected * (1.0 - expected) / permutations as f64).sqrt();
            let sd_ref = case["p_randomization_sd"].as_f64().unwrap();
            let tolerance =
                4.0 * (sd_ours.powi(2) + sd_ref.powi(2)).sqrt() + 1.0 / permutations as f64;
            assert!(
                (ours.p - expected).abs() <= tolerance,
                "{name}: p {} vs scipy {expected} (tolerance {tolerance})",
                ours.p
            );
        }
    }
}

#[test]
fn randomization_test_is_deterministic_per_seed() {
    let a: Vec<f64> = (0..100).map(|i| (i % 7) as f64 / 7.0).collect();
    let b: Vec<f64> = (0..100).map(|i| (i % 5) as f64 / 5.0).collect();
    let x = randomization_test(&a, &b, 5000, 1).unwrap();
    assert_eq!(x, randomization_test(&a, &b, 5000, 1).unwrap());
    assert_ne!(x.p, randomization_test(&a, &b, 5000, 2).unwrap().p);
}

#[test]
fn corrections_match_statsmodels_multipletests() {
    let cases = cases();
    for case in cases["corrections"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let p: Vec<Option<f64>> = floats(&case["p"]).into_iter().map(Some).collect();
        for (method, ours) in [("holm", holm(&p)), ("bonferroni", bonferroni(&p))] {
            let expected = floats(&case[method]);
            for (o, e) in ours.iter().zip(&expected) {
                assert!(
                    (o.unwrap() - e).abs() < 1e-12,
                    "{name} {method}: {ours:?} vs statsmodels {expected:?}"
                );
            }
        }
    }
}
