//! Training throughput (samples/s) of a model + embedding method on random data of a given shape.
//! Used by `cqr bench`; a benchmark, not a test. Also: the GEMM peak of the backend, the MLP's
//! FLOPs per sample, and the time of one CQR cluster step at a given scale.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cqr_data::{Dataset, SkipReport, Splits};

use crate::train::{train, ModelConfig, TrainConfig, TrainError};
use crate::{DlrmConfig, EmbeddingSpec, EmbeddingTables};

/// Random DLRM-shaped data: `n_tables` columns of `vocab` uniform ids, 13 dense features.
pub fn random_dataset(rows: usize, n_tables: usize, vocab: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let eval = 64;
    let n = rows + 2 * eval;
    Dataset {
        name: format!("random-{n_tables}x{vocab}"),
        dense_names: (1..=13).map(|i| format!("I{i}")).collect(),
        cat_names: (1..=n_tables).map(|i| format!("C{i}")).collect(),
        dense: (0..n * 13).map(|_| rng.random_range(0.0..5.0)).collect::<Vec<f32>>().into(),
        cats: (0..n * n_tables).map(|_| rng.random_range(0..vocab as u32)).collect::<Vec<u32>>().into(),
        labels: (0..n).map(|i| (i % 4 == 0) as u8).collect::<Vec<u8>>().into(),
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

/// Random GMF data shaped like MovieLens-1M: `users x items` uniform pairs, no dense features.
pub fn random_gmf_dataset(rows: usize, users: usize, items: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let eval = 64;
    let n = rows + 2 * eval;
    Dataset {
        name: format!("random-gmf-{users}x{items}"),
        dense_names: vec![],
        cat_names: vec!["user".into(), "item".into()],
        dense: Default::default(),
        cats: (0..n).flat_map(|_| [rng.random_range(0..users as u32), rng.random_range(0..items as u32)]).collect::<Vec<u32>>().into(),
        labels: (0..n).map(|i| (i % 2 == 0) as u8).collect::<Vec<u8>>().into(),
        cardinalities: vec![users, items],
        splits: Splits { train: 0..rows, val: rows..rows + eval, test: rows + eval..n },
        skipped: SkipReport::default(),
        teacher: None,
    }
}

/// Floating-point operations of one training sample in the MLP part of DLRM (forward, plus a
/// backward of twice the forward: gradients of inputs and of weights): 6 x (multiply-adds of
/// every linear layer + the pairwise dot products of the `n_tables + 1` vectors).
pub fn dlrm_train_flops_per_sample(cfg: &DlrmConfig, n_tables: usize) -> f64 {
    let macs = |sizes: &[usize]| sizes.windows(2).map(|w| (w[0] * w[1]) as f64).sum::<f64>();
    let n_vec = n_tables + 1;
    let top_in = cfg.dim + n_vec * (n_vec - 1) / 2;
    let mut top = vec![top_in];
    top.extend(&cfg.top);
    6.0 * (macs(&cfg.bottom) + macs(&top) + (n_vec * n_vec * cfg.dim) as f64)
}

/// GFLOP/s of one large single-precision matrix product `[m, k] x [k, n]` on `device` (the
/// backend's GEMM, as the MLPs use it): the best of `reps` timed runs after one warm-up.
pub fn gemm_peak_gflops(device: &Device, m: usize, k: usize, n: usize, reps: usize) -> f64 {
    let a = Tensor::<2>::from_data(TensorData::new((0..m * k).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<f32>>(), [m, k]), device);
    let b = Tensor::<2>::from_data(TensorData::new((0..k * n).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<f32>>(), [k, n]), device);
    let run = || {
        let t0 = Instant::now();
        let c = a.clone().matmul(b.clone());
        let _ = c.into_data();
        t0.elapsed().as_secs_f64()
    };
    run();
    let best = (0..reps.max(1)).map(|_| run()).fold(f64::INFINITY, f64::min);
    2.0 * (m * k * n) as f64 / best / 1e9
}

/// What one CQR cluster step costs at a given scale.
#[derive(Debug, Clone)]
pub struct ClusterBench {
    pub total_ids: usize,
    pub seen_ids: usize,
    pub cqr_tables: usize,
    /// Seconds to mark the seen ids (a stand-in for training: zero-gradient updates).
    pub touch_s: f64,
    pub cluster_s: f64,
}

/// One cluster step of CQR over tables of `cards` ids (a table that fits `cap` stays dense, as
/// in training), after `rows` rows of Zipf(`zipf_s`) ids have been seen, as in an epoch over
/// planted data of that many rows.
pub fn cluster_step(cards: &[usize], dim: usize, cap: u64, rows: usize, zipf_s: f64, options: serde_json::Value, seed: u64) -> Result<ClusterBench, TrainError> {
    let names: Vec<String> = (1..=cards.len()).map(|i| format!("C{i}")).collect();
    let spec = EmbeddingSpec { method: "cqr".into(), budget: cap, options, init_scale: 0.05, quantize: None, dense_under_cap: true };
    let mut tables = EmbeddingTables::new(&spec, &names, cards, dim, cqr_methods::RowOptimizer::default(), 2, (0, None), seed, &[])?;
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let batch = 1 << 16;
    let zero = vec![0.0f32; batch * dim];
    let mut seen_ids = 0;
    for (c, m) in tables.methods.iter_mut().enumerate() {
        if m.name() != "cqr" {
            continue;
        }
        let zipf = cqr_data::synthetic::Zipf::new(cards[c], zipf_s);
        let mut seen = vec![false; cards[c]];
        let mut ids = Vec::with_capacity(batch);
        for start in (0..rows).step_by(batch) {
            ids.clear();
            // Rank r -> id (r * a) mod n, a fixed odd stride: popular ids spread over the range.
            ids.extend((start..(start + batch).min(rows)).map(|_| ((zipf.sample(&mut rng) as u64 * 2_654_435_761) % cards[c] as u64) as u32));
            ids.iter().for_each(|&i| seen[i as usize] = true);
            m.backward(&ids, &zero[..ids.len() * dim]);
        }
        seen_ids += seen.iter().filter(|&&s| s).count();
    }
    let touch_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    tables.hook(|m| m.on_epoch_end(0))?;
    let cluster_s = t0.elapsed().as_secs_f64();
    Ok(ClusterBench {
        total_ids: cards.iter().sum(),
        seen_ids,
        cqr_tables: tables.methods.iter().filter(|m| m.name() == "cqr").count(),
        touch_s,
        cluster_s,
    })
}
