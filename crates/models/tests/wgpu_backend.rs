//! The GPU path: a small DLRM trained a few steps on burn's wgpu backend must match the flex (CPU)
//! backend. Only compiled with `--features wgpu`; it needs a Vulkan driver (on a machine without a
//! GPU, Mesa's lavapipe: `apt-get install mesa-vulkan-drivers`) and skips with a message when wgpu
//! finds no adapter. Run: `cargo test --release -p cqr-models --features wgpu --test wgpu_backend`.
#![cfg(feature = "wgpu")]

use cqr_data::synthetic::{generate_criteo, CriteoSynthConfig};
use cqr_models::{train, Backend, DlrmConfig, EmbeddingSpec, ModelConfig, TrainConfig};

#[test]
fn wgpu_matches_flex_on_losses_scores_and_tables() {
    let ds = generate_criteo(&CriteoSynthConfig { rows: 6000, cardinality_scale: 0.001, max_cardinality: 50, seed: 2, ..Default::default() }).unwrap();
    let spec = EmbeddingSpec { method: "hashing".into(), budget: 160, options: serde_json::Value::Null, init_scale: 0.05 };
    let model = ModelConfig::Dlrm(DlrmConfig::small());
    let cfg = |backend| TrainConfig { lr: 3e-3, batch_size: 256, epochs: 1, eval_every_steps: Some(4), seed: 1, backend, ..Default::default() };
    let flex = train(&ds, &model, &spec, &cfg(Backend::Flex)).unwrap();
    let gpu = match std::panic::catch_unwind(|| train(&ds, &model, &spec, &cfg(Backend::Wgpu))) {
        Ok(r) => r.unwrap(),
        // CI sets CQR_REQUIRE_WGPU=1 after installing lavapipe: there a missing adapter is a failure.
        Err(_) if std::env::var_os("CQR_REQUIRE_WGPU").is_some() => panic!("wgpu found no usable adapter and CQR_REQUIRE_WGPU is set"),
        Err(_) => {
            eprintln!("skipping: wgpu found no usable adapter (install mesa-vulkan-drivers for lavapipe)");
            return;
        }
    };
    // The tables are updated on the host from the embedding gradient the backend computes, so
    // equal losses after many steps mean equal forward passes and equal gradients (MLP and
    // embedding). Tolerance: float sums in another order, 1e-5 relative.
    assert_eq!(flex.evals.len(), gpu.evals.len());
    for (a, b) in flex.evals.iter().zip(&gpu.evals) {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(1e-3);
        assert!(close(a.train_loss, b.train_loss), "train loss flex {} vs wgpu {}", a.train_loss, b.train_loss);
        assert!(close(a.scores.val_bce, b.scores.val_bce) && close(a.scores.test_bce, b.scores.test_bce), "{:?} vs {:?}", a.scores, b.scores);
    }
    eprintln!("flex {:.0} samples/s, wgpu {:.0} samples/s", flex.train_samples_per_s, gpu.train_samples_per_s);
}
