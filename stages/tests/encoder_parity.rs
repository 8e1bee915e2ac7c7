//! splade-tiny on flex reproduces PyTorch's SPLADE vectors (tests/fixtures/model/
//! splade_tiny_reference.json): the same non-zero terms and every weight within 1e-4, batched
//! (padded to the longest, as the reference was made) and one text at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::Device;
use serde_json::Value;
use splade_stages::model::encoder::{Pooling, SpladeEncoder};
use splade_stages::parquet_io::SparseVector;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference() -> Vec<(String, Vec<u32>, BTreeMap<u32, f32>)> {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/model/splade_tiny_reference.json"))
            .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let ids = r["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let weights = r["all_nonzero"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, w)| (k.parse().unwrap(), w.as_f64().unwrap() as f32))
                .collect();
            (r["text"].as_str().unwrap().to_string(), ids, weights)
        })
        .collect()
}

fn compare(text: &str, ours: &SparseVector, want: &BTreeMap<u32, f32>) {
    let got: BTreeMap<u32, f32> = ours
        .terms
        .iter()
        .copied()
        .zip(ours.weights.iter().copied())
        .collect();
    let missing: Vec<&u32> = want.keys().filter(|t| !got.contains_key(t)).collect();
    let extra: Vec<&u32> = got.keys().filter(|t| !want.contains_key(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{text}: missing terms {missing:?}, extra terms {extra:?} ({got:?})"
    );
    for (t, w) in want {
        let diff = (got[t] - w).abs();
        assert!(
            diff < 1e-4,
            "{text}: term {t} ours {} reference {w} (diff {diff})",
            got[t]
        );
    }
}

#[test]
fn splade_tiny_matches_pytorch_on_flex() {
    let enc = SpladeEncoder::load(
        &root().join("conf/models/splade-tiny"),
        256,
        Pooling::Max,
        &Device::flex(),
    )
    .unwrap();
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
    let ids = enc.tokenizer.encode_batch(&texts).unwrap();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(ids[i], r.1, "tokenization of {:?}", r.0);
    }
    let batched = enc.encode_texts(&texts).unwrap();
    for (v, r) in batched.iter().zip(&refs) {
        compare(&r.0, v, &r.2);
    }
    for r in &refs {
        let single = enc.encode_texts(&[r.0.as_str()]).unwrap();
        compare(&r.0, &single[0], &r.2);
    }
    // A small vocabulary chunk changes nothing (the chunked projection is exact).
    let mut small = enc;
    small.vocab_chunk = 1000;
    let chunked = small.encode_texts(&texts).unwrap();
    for (v, r) in chunked.iter().zip(&refs) {
        compare(&r.0, v, &r.2);
    }
}

/// The same parity on libtorch (CPU), when the `tch` feature is built.
#[cfg(feature = "tch")]
#[test]
fn splade_tiny_matches_pytorch_on_tch() {
    let devices = splade_stages::model::devices_from_backend(
        &serde_json::json!({"kind": "tch", "devices": ["cpu"]}),
    )
    .unwrap();
    let enc = SpladeEncoder::load(
        &root().join("conf/models/splade-tiny"),
        256,
        Pooling::Max,
        &devices[0],
    )
    .unwrap();
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.0.as_str()).collect();
    let batched = enc.encode_texts(&texts).unwrap();
    for (v, r) in batched.iter().zip(&refs) {
        compare(&r.0, v, &r.2);
    }
}
