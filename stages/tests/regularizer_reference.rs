//! The FLOPS regularizer (per document slot as naver's legacy trainer, pooled as its HF trainer)
//! and the three λ warm-ups against tests/fixtures/regularizers/ (numpy, from the formulas).

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use splade_stages::train::regularizer::{
    LambdaSchedule, LambdaWarmup, Regularizer, RegularizerKind, TrainClock,
};

fn cases() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/regularizers/cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("cases.json")).expect("JSON")
}

fn schedule(lambda: f64, warmup: u64, counting: LambdaWarmup) -> LambdaSchedule {
    LambdaSchedule {
        lambda,
        warmup,
        counting,
    }
}

#[test]
fn document_flops_per_slot_and_pooled_match_numpy() {
    let device = Device::flex();
    for batch in cases()["batches"].as_array().unwrap() {
        let dim = |k: &str| batch[k].as_u64().unwrap() as usize;
        let (b, m, v) = (dim("b"), dim("m"), dim("v"));
        let docs: Vec<f32> = batch["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = Tensor::<2>::from_data(TensorData::new(docs, [b * m, v]), &device);
        let q = Tensor::<2>::zeros([b, v], &device);
        let clock = TrainClock { step: 1, micro: 1 };
        for (pooled, key) in [(false, "flops_per_slot"), (true, "flops_pooled")] {
            let reg = Regularizer {
                kind: RegularizerKind::Flops,
                query: schedule(0.0, 0, LambdaWarmup::Steps),
                doc: schedule(1.0, 0, LambdaWarmup::Steps),
                pooled_docs: pooled,
            };
            let got = reg
                .term(clock, &q, &d, m)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()[0];
            let want = batch[key].as_f64().unwrap();
            assert!(
                (got as f64 - want).abs() < 1e-5 * want.max(1.0),
                "{key} B={b} M={m}: {got} vs numpy {want}"
            );
        }
    }
}

#[test]
fn lambda_warmups_match_the_original_trainers() {
    for case in cases()["schedules"].as_array().unwrap() {
        let counting = match case["mode"].as_str().unwrap() {
            "steps" => LambdaWarmup::Steps,
            "legacy" => LambdaWarmup::Legacy,
            _ => LambdaWarmup::Hf,
        };
        let s = schedule(
            case["lambda"].as_f64().unwrap(),
            case["T"].as_u64().unwrap(),
            counting,
        );
        let gas = case["gas"].as_u64().unwrap();
        for (i, want) in case["values"].as_array().unwrap().iter().enumerate() {
            let micro = i as u64 + 1;
            let clock = TrainClock {
                step: micro.div_ceil(gas),
                micro,
            };
            let got = s.at(clock);
            assert!(
                (got - want.as_f64().unwrap()).abs() < 1e-12,
                "{case} at micro-batch {micro}: {got}"
            );
        }
    }
}
