//! The GPU path: the small DLRM on burn's wgpu backend must match the flex (CPU) backend, on one
//! batch (loss and input gradients) and over an epoch of training (every evaluation). Only
//! compiled with `--features wgpu`; it needs a Vulkan driver (on a machine without a GPU, Mesa's
//! lavapipe: `apt-get install mesa-vulkan-drivers`) and skips with a message when wgpu finds no
//! adapter, unless CQR_REQUIRE_WGPU is set (as in CI). Run: `just test-gpu`, or
//! `cargo test --profile gpu-check -p cqr-models --features wgpu --test wgpu_backend`.
#![cfg(feature = "wgpu")]

use burn::tensor::{Device, Tensor, TensorData};
use cqr_data::synthetic::{generate_criteo, CriteoSynthConfig};
use cqr_models::net::{graph_bce_with_logits, Dlrm};
use cqr_models::{train, DlrmConfig, EmbeddingSpec, MlpBackend, ModelConfig, Precision, TrainConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `f`'s result, or `None` (after a message) when wgpu panics, as burn does when it finds no
/// adapter. CI sets CQR_REQUIRE_WGPU=1 after installing lavapipe: there any panic is a failure.
/// The panic's own message is passed on, so a wgpu bug is not mistaken for a missing driver.
fn wgpu_or_skip<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Option<T> {
    let payload = match std::panic::catch_unwind(f) {
        Ok(r) => return Some(r),
        Err(p) => p,
    };
    let why = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    if std::env::var_os("CQR_REQUIRE_WGPU").is_some() {
        panic!("wgpu failed and CQR_REQUIRE_WGPU is set: {why}");
    }
    eprintln!("skipping: wgpu failed, most likely no adapter (install mesa-vulkan-drivers for lavapipe): {why}");
    None
}

/// One forward and backward pass of the small DLRM on each backend, same weights (drawn on the
/// host from one seed) and same batch: the loss and the gradients with respect to both inputs
/// agree within 1e-4 of the gradient's largest entry. The gradient of the embedding vectors is
/// what the host tables are updated from; with the dense-feature gradient it back-propagates
/// through every layer of both MLPs and the pairwise interactions.
#[test]
fn wgpu_loss_and_gradients_match_flex_on_one_batch() {
    let cfg = DlrmConfig::small();
    let (b, n_dense, n_cat, dim) = (64, 13, 8, cfg.dim);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let dense: Vec<f32> = (0..b * n_dense).map(|_| rng.random_range(-1.0..1.0)).collect();
    let emb: Vec<f32> = (0..n_cat * b * dim).map(|_| rng.random_range(-0.3..0.3)).collect();
    let labels: Vec<f32> = (0..b).map(|_| if rng.random_bool(0.3) { 1.0 } else { 0.0 }).collect();
    let pass = |device: Device| {
        let net = Dlrm::new(&cfg, n_dense, n_cat, 7, &device);
        let d = Tensor::<2>::from_data(TensorData::new(dense.clone(), [b, n_dense]), &device).require_grad();
        let e = Tensor::<3>::from_data(TensorData::new(emb.clone(), [n_cat, b, dim]), &device).require_grad();
        let y = Tensor::<2>::from_data(TensorData::new(labels.clone(), [b, 1]), &device);
        let loss = graph_bce_with_logits(net.forward(d.clone(), e.clone()), y);
        let value: f32 = loss.clone().into_scalar();
        let mut grads = loss.backward();
        let ge = e.grad_remove(&mut grads).expect("embedding gradient").into_data().try_into_vec::<f32>().unwrap();
        let gd = d.grad_remove(&mut grads).expect("dense gradient").into_data().try_into_vec::<f32>().unwrap();
        (value, ge, gd)
    };
    let flex = pass(Device::flex().autodiff());
    let Some(gpu) = wgpu_or_skip(|| pass(Device::wgpu(Default::default()).autodiff())) else { return };
    assert!((flex.0 - gpu.0).abs() <= 1e-5 * flex.0.abs(), "loss flex {} vs wgpu {}", flex.0, gpu.0);
    for (name, a, g) in [("embedding", &flex.1, &gpu.1), ("dense", &flex.2, &gpu.2)] {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{name} gradient is zero");
        let worst = a.iter().zip(g.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{name} gradient: largest difference {worst} against scale {scale}");
        eprintln!("{name} gradient: largest difference {worst:.2e}, largest entry {scale:.2e}");
    }
}

#[test]
fn wgpu_matches_flex_over_an_epoch_of_training() {
    let ds = generate_criteo(&CriteoSynthConfig {
        rows: 6000,
        cardinality_scale: 0.001,
        max_cardinality: 50,
        seed: 2,
        ..Default::default()
    })
    .unwrap();
    let spec = EmbeddingSpec {
        method: "hashing".into(),
        budget: 160,
        options: serde_json::Value::Null,
        init_scale: 0.05,
        quantize: None,
        dense_under_cap: true,
    };
    let model = ModelConfig::Dlrm(DlrmConfig::small());
    let cfg = |backend| TrainConfig {
        lr: 3e-3,
        batch_size: 256,
        epochs: 1,
        eval_every_steps: Some(4),
        seed: 1,
        backend,
        ..Default::default()
    };
    let flex = train(&ds, &model, &spec, &cfg(MlpBackend::Flex)).unwrap();
    let Some(gpu) = wgpu_or_skip(|| train(&ds, &model, &spec, &cfg(MlpBackend::Wgpu))) else { return };
    let gpu = gpu.unwrap();
    // The tables are updated on the host from the embedding gradient the backend computes, so
    // equal losses after many steps mean equal forward passes and equal gradients (MLP and
    // embedding). Tolerance: float sums in another order, 1e-5 relative.
    assert_eq!(flex.evals.len(), gpu.evals.len());
    for (a, b) in flex.evals.iter().zip(&gpu.evals) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(1e-3);
        assert!(close(a.train_loss, b.train_loss), "train loss flex {} vs wgpu {}", a.train_loss, b.train_loss);
        assert!(
            close(a.scores.val_bce, b.scores.val_bce) && close(a.scores.test_bce, b.scores.test_bce),
            "{:?} vs {:?}",
            a.scores,
            b.scores
        );
    }
    eprintln!("flex {:.0} samples/s, wgpu {:.0} samples/s", flex.train_samples_per_s, gpu.train_samples_per_s);
    // bf16 runs on the fused CPU kernels only: refused on wgpu, before any training.
    let err = train(&ds, &model, &spec, &TrainConfig { precision: Precision::Bf16, ..cfg(MlpBackend::Wgpu) })
        .unwrap_err()
        .to_string();
    assert!(err.contains("bf16") && err.contains("fused"), "{err}");
}
