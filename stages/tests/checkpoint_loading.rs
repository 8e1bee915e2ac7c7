//! DistilBERT (safetensors) and BERT (`pytorch_model.bin`) checkpoints load with the right key
//! mapping and reproduce transformers' SPLADE vectors; wrong checkpoints fail listing the keys.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::Value;
use splade_stages::model::encoder::batch_tensors;
use splade_stages::model::loader::load_mlm;
use splade_stages::model::network::PoolingKind;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/model")
}

fn check(model: &str) {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
            .unwrap();
    let batch: Vec<Vec<u32>> = expected["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let device = Device::flex();
    let (cfg, net) = load_mlm(&fixtures().join(model), &device).unwrap();
    let (ids, mask) = batch_tensors(&batch, cfg.pad_token_id, &device);
    let rep = net.splade(ids, mask, PoolingKind::Max, 300);
    let got: Vec<f32> = rep.into_data().try_to_vec::<f32>().unwrap();
    let want: Vec<f32> = expected["models"][model]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(got.len(), want.len());
    let nonzero = want.iter().filter(|w| **w > 0.0).count();
    assert!(
        nonzero > 50,
        "fixture has a meaningful number of active terms ({nonzero})"
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() < 1e-4,
            "{model}: row {} term {}: ours {g} transformers {w}",
            i / 1000,
            i % 1000
        );
        assert_eq!(
            *g > 0.0,
            *w > 0.0,
            "{model}: same non-zero terms (term {})",
            i % 1000
        );
    }
}

#[test]
fn distilbert_safetensors_matches_transformers() {
    check("distilbert-random");
}

#[test]
fn bert_pytorch_bin_matches_transformers() {
    check("bert-random-bin");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn missing_and_unexpected_weights_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixtures().join("distilbert-random"), &dir);
    edit_config(&dir, |v| v["n_layers"] = 3.into());
    let err = load_mlm(&dir, &Device::flex()).unwrap_err().to_string();
    assert!(
        err.contains("missing weights") && err.contains("encoder.layers.2."),
        "{err}"
    );

    edit_config(&dir, |v| v["n_layers"] = 1.into());
    let err = load_mlm(&dir, &Device::flex()).unwrap_err().to_string();
    assert!(
        err.contains("unexpected weights") && err.contains("encoder.layers.1.mha.key.weight"),
        "{err}"
    );

    edit_config(&dir, |v| v["dim"] = 48.into());
    let err = load_mlm(&dir, &Device::flex()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    edit_config(&dir, |v| v["model_type"] = "roberta".into());
    let err = load_mlm(&dir, &Device::flex()).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("roberta"),
        "{err}"
    );

    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    edit_config(&dir, |v| v["model_type"] = "distilbert".into());
    let err = load_mlm(&dir, &Device::flex()).unwrap_err().to_string();
    assert!(
        err.contains("no model.safetensors or pytorch_model.bin"),
        "{err}"
    );
}
