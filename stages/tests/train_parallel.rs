//! Data parallelism keeps the loss global: 2 and 4 devices give the loss and the gradients of
//! single-device training on the same global batch (within 1e-5), and so do the regularizers.
//! Mixed precision (bf16 compute, f32 master weights) stays close to full precision.

use std::path::PathBuf;

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};
use splade_stages::model::loader::load_mlm_as;
use splade_stages::model::network::{MlmEncoder, PoolingKind};
use splade_stages::model::{ModelConfig, TextTokenizer};
use splade_stages::train::encoders::{EncoderPair, Encoding, Precision, QueryEncoding};
use splade_stages::train::examples::Example;
use splade_stages::train::losses::RankingLoss;
use splade_stages::train::regularizer::{
    LambdaSchedule, LambdaWarmup, Regularizer, RegularizerKind,
};
use splade_stages::train::step::{
    DataParallel, Objective, StepPosition, StepStats, TokenizedBatch,
};

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conf/models/splade-tiny")
}

fn examples() -> Vec<Example> {
    let q = [
        "how do bees find flowers",
        "why do corals grow slowly",
        "when is bread done",
        "what makes a loaf heavy",
        "how far can a bee fly",
        "do corals need sunlight",
    ];
    let d = [
        "Forager honeybees share the location of food through the waggle dance.",
        "Massive boulder corals add only a few millimetres per year.",
        "A loaf is done when it sounds hollow when tapped on the bottom.",
        "Dense bread often comes from under-proofed dough or too much flour.",
        "Honeybees usually forage within a few kilometres of the hive.",
        "Reef-building corals host algae that need light to photosynthesise.",
    ];
    (0..q.len())
        .map(|i| Example {
            qid: i.to_string(),
            query: q[i].to_string(),
            docs: vec![d[i].to_string(), d[(i + 3) % d.len()].to_string()],
            teacher: Some(vec![5.0 + i as f32 * 0.1, 1.0 - i as f32 * 0.2]),
        })
        .collect()
}

fn objective() -> Objective {
    Objective {
        losses: vec![
            (RankingLoss::InBatchPairwiseNll, 1.0),
            (RankingLoss::Contrastive, 0.5),
            (RankingLoss::MarginMse, 0.05),
            (RankingLoss::KlDiv, 0.3),
        ],
        regularizers: vec![
            Regularizer {
                kind: RegularizerKind::Flops,
                query: LambdaSchedule {
                    lambda: 0.01,
                    warmup: 0,
                    counting: LambdaWarmup::Steps,
                },
                doc: LambdaSchedule {
                    lambda: 0.02,
                    warmup: 0,
                    counting: LambdaWarmup::Steps,
                },
                pooled_docs: false,
            },
            Regularizer {
                kind: RegularizerKind::L1,
                query: LambdaSchedule {
                    lambda: 0.001,
                    warmup: 0,
                    counting: LambdaWarmup::Steps,
                },
                doc: LambdaSchedule {
                    lambda: 0.0,
                    warmup: 0,
                    counting: LambdaWarmup::Steps,
                },
                pooled_docs: false,
            },
        ],
        anti_zero: false,
    }
}

/// Dropout of the tests that compare device counts: BERT's, so masks matter.
const DROPOUT: f64 = 0.1;

/// Gradients (as flat vectors of a set of parameters) and stats with `n` logical CPU devices,
/// dropout on.
fn gradients(base: &Device, n: usize) -> (Vec<Vec<f32>>, StepStats) {
    gradients_in(base, n, Precision::F32, DROPOUT)
}

fn tiny_pair(device: &Device) -> (ModelConfig, EncoderPair) {
    let cfg = ModelConfig::from_dir(&model_dir()).unwrap();
    let (cfg, model) = load_mlm_as(&model_dir(), cfg, device).unwrap();
    let pair = burn::module::Module::train(EncoderPair {
        doc: model,
        query: None,
    });
    (cfg, pair)
}

fn parallel(
    device: &Device,
    n: usize,
    cfg: &ModelConfig,
    precision: Precision,
    dropout: f64,
) -> DataParallel {
    let encoding = Encoding {
        pooling: PoolingKind::Max,
        vocab_chunk: 8192,
        pad: cfg.pad_token_id,
        queries: QueryEncoding::Shared,
        precision,
        dropout,
    };
    DataParallel::new(vec![device.clone(); n], encoding, 2).unwrap()
}

fn tokenized() -> TokenizedBatch {
    let tok_q = TextTokenizer::load(&model_dir(), 16).unwrap();
    let tok_d = TextTokenizer::load(&model_dir(), 32).unwrap();
    TokenizedBatch::new(&examples(), &tok_q, &tok_d).unwrap()
}

/// [`gradients`] with the encoders computing in `precision`, with `dropout`.
fn gradients_in(
    base: &Device,
    n: usize,
    precision: Precision,
    dropout: f64,
) -> (Vec<Vec<f32>>, StepStats) {
    let device = base.clone().autodiff();
    let (cfg, pair) = tiny_pair(&device);
    let batch = tokenized();
    let dp = parallel(&device, n, &cfg, precision, dropout);
    let mut acc = GradientsAccumulator::<EncoderPair>::new();
    let stats = dp
        .accumulate(
            &pair,
            0,
            &batch,
            &objective(),
            StepPosition {
                t: 1,
                micro: 0,
                seed: 1,
            },
            1.0,
            &mut acc,
        )
        .unwrap()
        .read()
        .unwrap();
    let grads: GradientsParams = acc.grads();
    let flat2 = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let flat1 = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let model: &MlmEncoder = &pair.doc;
    let layer = &model.encoder.layers[1];
    let g2 = |id| flat2(grads.get::<2>(id).expect("gradient present"));
    let g1 = |id| flat1(grads.get::<1>(id).expect("gradient present"));
    let out = vec![
        g2(model.embeddings.word_embeddings.weight.id),
        g2(layer.mha.query.weight.id),
        g2(layer.pwff.linear_inner.weight.id),
        g2(model.head.dense.weight.id),
        g1(model.head.bias.id),
        g1(layer.norm_2.gamma.id),
    ];
    (out, stats)
}

fn devices_match_one_device(base: &Device) {
    let (one, s1) = gradients(base, 1);
    // Dropout is really on: without it the gradients differ.
    let (no_dropout, _) = gradients_in(base, 1, Precision::F32, 0.0);
    let moved = one
        .iter()
        .zip(&no_dropout)
        .flat_map(|(a, b)| a.iter().zip(b))
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(moved > 1e-4, "dropout changed no gradient ({moved})");
    let total = |s: &StepStats| s.terms.iter().find(|(k, _)| k == "total").unwrap().1;
    assert!(total(&s1).is_finite() && total(&s1) > 0.0);
    let scale: f32 = one.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 1e-6, "gradients are all zero");
    for n in [2, 4] {
        let (got, s) = gradients(base, n);
        assert!(
            (total(&s) - total(&s1)).abs() < 1e-5,
            "{n} devices: loss {} vs {}",
            total(&s),
            total(&s1)
        );
        for (a, b) in got.iter().zip(&one) {
            assert_eq!(a.len(), b.len());
            let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst < 1e-5, "{n} devices: gradient differs by {worst}");
        }
    }
}

#[test]
fn two_and_four_devices_match_one_device() {
    devices_match_one_device(&Device::flex());
}

#[cfg(feature = "tch")]
#[test]
#[allow(deprecated)]
fn two_and_four_libtorch_devices_match_one_device() {
    devices_match_one_device(&Device::libtorch());
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Mixed precision: bf16 compute gives f32 gradients for the f32 master weights that point the
/// same way as full-precision ones, with the same loss up to bf16 rounding, on 1 and 2 devices.
#[test]
fn bf16_compute_keeps_f32_gradients_close_to_full_precision() {
    bf16_close_to_f32(&Device::flex());
}

#[cfg(feature = "tch")]
#[test]
#[allow(deprecated)]
fn bf16_libtorch_compute_keeps_f32_gradients_close_to_full_precision() {
    bf16_close_to_f32(&Device::libtorch());
}

fn bf16_close_to_f32(base: &Device) {
    let (full, s_full) = gradients_in(base, 1, Precision::F32, 0.0);
    let total = |s: &StepStats| s.terms.iter().find(|(k, _)| k == "total").unwrap().1;
    for n in [1, 2] {
        let (half, s_half) = gradients_in(base, n, Precision::Bf16, 0.0);
        let (a, b) = (total(&s_half), total(&s_full));
        assert!(
            (a - b).abs() <= 0.03 * b.abs(),
            "{n} devices: bf16 loss {a} vs f32 {b}"
        );
        // The bf16 step must really differ from f32 (it ran in bf16), yet agree in direction.
        let mut identical = true;
        let mut worst = 1f64;
        for (g16, g32) in half.iter().zip(&full) {
            assert_eq!(g16.len(), g32.len());
            identical &= g16 == g32;
            worst = worst.min(cosine(g16, g32));
        }
        eprintln!("{n} devices: bf16 loss {a:.5} vs f32 {b:.5}, worst gradient cosine {worst:.5}");
        assert!(worst > 0.98, "{n} devices: bf16 gradient cosine {worst}");
        assert!(!identical, "bf16 gradients equal the f32 ones bit for bit");
    }
}

/// Flat weights of a few parameters after `steps` AdamW steps on `n` devices, dropout on; the
/// replicas persist across the two micro-batches of each step and are refreshed after it.
fn weights_after(base: &Device, n: usize, steps: u64) -> Vec<Vec<f32>> {
    use burn::optim::AdamWConfig;
    let device = base.clone().autodiff();
    let (cfg, mut pair) = tiny_pair(&device);
    let dp = parallel(&device, n, &cfg, Precision::F32, DROPOUT);
    let mut optim = AdamWConfig::new().with_epsilon(1e-6).init();
    let batch = tokenized();
    for step in 0..steps {
        let mut acc = GradientsAccumulator::<EncoderPair>::new();
        for micro in 0..2 {
            let at = StepPosition {
                t: step + 1,
                micro: step * 2 + micro,
                seed: 7,
            };
            dp.accumulate(&pair, step, &batch, &objective(), at, 0.5, &mut acc)
                .unwrap();
        }
        pair = optim.step(1e-4, pair, acc.grads());
    }
    let flat2 = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let flat1 = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let m = &pair.doc;
    vec![
        flat2(m.embeddings.word_embeddings.weight.val()),
        flat2(m.encoder.layers[0].mha.value.weight.val()),
        flat2(m.encoder.layers[1].pwff.linear_outer.weight.val()),
        flat1(m.head.bias.val()),
    ]
}

/// Three optimizer steps of two micro-batches each, dropout on: 2 and 4 devices end with the
/// weights of 1 device within 2e-6 (AdamW steps are at most lr = 1e-4 per coordinate, so a
/// device-dependent mask or a stale replica would show as differences of order 1e-4).
#[test]
fn weights_after_several_steps_do_not_depend_on_the_device_count() {
    let base = Device::flex();
    let initial = weights_after(&base, 1, 0);
    let one = weights_after(&base, 1, 3);
    let moved = one
        .iter()
        .zip(&initial)
        .flat_map(|(a, b)| a.iter().zip(b))
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(moved > 1e-4, "training moved no weight ({moved})");
    for n in [2, 4] {
        let got = weights_after(&base, n, 3);
        let worst = got
            .iter()
            .zip(&one)
            .flat_map(|(a, b)| a.iter().zip(b))
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("{n} devices: largest weight difference after 3 steps {worst:e}");
        assert!(worst < 2e-6, "{n} devices: weights differ by {worst}");
    }
}
