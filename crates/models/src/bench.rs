//! Training throughput (samples/s) of a model + embedding method on random data of a given shape.
//! Used by `cqr bench`; a benchmark, not a test.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cqr_data::{Dataset, SkipReport, Splits};

use crate::train::{train, ModelConfig, TrainConfig, TrainError};
use crate::EmbeddingSpec;

/// Random DLRM-shaped data: `n_tables` columns of `vocab` uniform ids, 13 dense features.
pub fn random_dataset(rows: usize, n_tables: usize, vocab: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let eval = 64;
    let n = rows + 2 * eval;
    Dataset {
        name: format!("random-{n_tables}x{vocab}"),
        dense_names: (1..=13).map(|i| format!("I{i}")).collect(),
        cat_names: (1..=n_tables).map(|i| format!("C{i}")).collect(),
        dense: (0..n * 13).map(|_| rng.random_range(0.0..5.0)).collect(),
        cats: (0..n * n_tables).map(|_| rng.random_range(0..vocab as u32)).collect(),
        labels: (0..n).map(|i| (i % 4 == 0) as u8 as f32).collect(),
        cardinalities: vec![vocab; n_tables],
        splits: Splits { train: 0..rows, val: rows..rows + eval, test: rows + eval..n },
        skipped: SkipReport::default(),
        teacher: None,
    }
}

/// Trains one epoch of `steps` batches and returns training samples/s (evaluation, clustering and
/// data generation excluded).
pub fn throughput(model: &ModelConfig, spec: &EmbeddingSpec, ds: &Dataset, cfg: &TrainConfig) -> Result<f64, TrainError> {
    let cfg = TrainConfig { epochs: 1, progress: false, ..cfg.clone() };
    Ok(train(ds, model, spec, &cfg)?.train_samples_per_s)
}
