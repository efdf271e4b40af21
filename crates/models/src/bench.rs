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
pub fn throughput(
    model: &ModelConfig,
    spec: &EmbeddingSpec,
    ds: &Dataset,
    cfg: &TrainConfig,
) -> Result<f64, TrainError> {
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
        cats: (0..n)
            .flat_map(|_| [rng.random_range(0..users as u32), rng.random_range(0..items as u32)])
            .collect::<Vec<u32>>()
            .into(),
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
    let a = Tensor::<2>::from_data(
        TensorData::new((0..m * k).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<f32>>(), [m, k]),
        device,
    );
    let b = Tensor::<2>::from_data(
        TensorData::new((0..k * n).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<f32>>(), [k, n]),
        device,
    );
    let run = || {
        let t0 = Instant::now();
        // Read one scalar that depends on every output element: on a lazy backend (wgpu) the
        // product must run before the clock stops. (Discarding `into_data()` measured 141,865
        // GFLOP/s on a software Vulkan driver, 2026-12-04.)
        let s: f32 = a.clone().matmul(b.clone()).sum().into_scalar();
        std::hint::black_box(s);
        t0.elapsed().as_secs_f64()
    };
    run();
    let best = (0..reps.max(1)).map(|_| run()).fold(f64::INFINITY, f64::min);
    2.0 * (m * k * n) as f64 / best / 1e9
}

/// One matrix product of a DLRM training step: `[m, k] x [k, n]`, with either operand read
/// transposed from how the step stores it (`lhs_t`: the activations `X` as `Xᵀ` for dW; `rhs_t`:
/// the weight `W` as `Wᵀ` for dX).
#[derive(Debug, Clone, PartialEq)]
pub struct GemmShape {
    /// e.g. `bottom 13x512`.
    pub layer: String,
    /// `forward` (Y = XW), `dX` (dY Wᵀ) or `dW` (Xᵀ dY).
    pub pass: &'static str,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub lhs_t: bool,
    pub rhs_t: bool,
}

impl GemmShape {
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
}

/// The matrix products of one DLRM training step at `batch` (every linear layer of both MLPs:
/// forward, dX and dW; no dX for the first bottom layer, whose input needs no gradient). The
/// pairwise interaction (a batched `[n+1, d] x [d, n+1]` product per sample) is not a GEMM of
/// this size and is left out.
pub fn dlrm_step_gemms(cfg: &DlrmConfig, batch: usize, n_tables: usize) -> Vec<GemmShape> {
    let n_vec = n_tables + 1;
    let mut top = vec![cfg.dim + n_vec * (n_vec - 1) / 2];
    top.extend(&cfg.top);
    let mut out = vec![];
    for (part, sizes) in [("bottom", &cfg.bottom), ("top", &top)] {
        for (i, w) in sizes.windows(2).enumerate() {
            let (din, dout) = (w[0], w[1]);
            let layer = format!("{part} {din}x{dout}");
            let g = |pass, m, k, n, lhs_t, rhs_t| GemmShape { layer: layer.clone(), pass, m, k, n, lhs_t, rhs_t };
            out.push(g("forward", batch, din, dout, false, false));
            if !(part == "bottom" && i == 0) {
                out.push(g("dX", batch, dout, din, false, true));
            }
            out.push(g("dW", din, batch, dout, true, false));
        }
    }
    out
}

/// Deterministic operands for a shape: (lhs as stored, rhs as stored).
fn gemm_operands(s: &GemmShape) -> (Vec<f32>, Vec<f32>) {
    let fill = |n: usize, p: usize| (0..n).map(|i| ((i % p) as f32 - p as f32 / 2.0) * 0.01).collect::<Vec<f32>>();
    (fill(s.m * s.k, 7), fill(s.k * s.n, 5))
}

/// Seconds per call of `f`: one warm-up call, then `repeats` timings of a loop long enough to
/// take ~20 ms; returns (median, min, max).
pub fn time_per_call(repeats: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64().max(1e-7);
    let iters = ((0.02 / once).ceil() as usize).clamp(1, 10_000);
    let mut runs: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            (0..iters).for_each(|_| f());
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    let n = runs.len();
    let median = if n % 2 == 1 { runs[n / 2] } else { (runs[n / 2 - 1] + runs[n / 2]) / 2.0 };
    (median, runs[0], runs[n - 1])
}

/// GFLOP/s (median, min, max) of `shape` through the `gemm` crate called directly, row-major
/// operands with the shape's transposes as strides, on `threads` threads (1: no parallelism).
pub fn gemm_direct_gflops(shape: &GemmShape, threads: usize, repeats: usize) -> (f64, f64, f64) {
    let (a, b) = gemm_operands(shape);
    let mut c = vec![0.0f32; shape.m * shape.n];
    let (med, lo, hi) = time_per_call(repeats, || gemm_direct(shape, &a, &b, &mut c, threads));
    std::hint::black_box(&c);
    let f = shape.flops() / 1e9;
    (f / med, f / hi, f / lo)
}

/// `c = op(a) · op(b)` for `shape` through `gemm::gemm`: `a` and `b` row-major as stored
/// (`[k, m]` for a transposed lhs, `[n, k]` for a transposed rhs), `c` row-major `[m, n]`.
pub fn gemm_direct(shape: &GemmShape, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    let (m, k, n) = (shape.m, shape.k, shape.n);
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "operand sizes do not match {shape:?}");
    // (column stride, row stride) of each operand as the product reads it.
    let (lhs_cs, lhs_rs) = if shape.lhs_t { (m as isize, 1) } else { (1, k as isize) };
    let (rhs_cs, rhs_rs) = if shape.rhs_t { (k as isize, 1) } else { (1, n as isize) };
    let par = if threads <= 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
    // SAFETY: the lengths are checked above and the strides address exactly those elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            lhs_cs,
            lhs_rs,
            b.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

/// GFLOP/s (median, min, max) of `shape` through the backend's `matmul` as the training step
/// calls it (transposes as views), summed to one scalar that is read back (so a lazy backend
/// runs it; the sum is m·n additions against 2·m·k·n FLOPs).
pub fn gemm_backend_gflops(device: &Device, shape: &GemmShape, repeats: usize) -> (f64, f64, f64) {
    let (a, b) = gemm_operands(shape);
    let (m, k, n) = (shape.m, shape.k, shape.n);
    let lhs_dims = if shape.lhs_t { [k, m] } else { [m, k] };
    let rhs_dims = if shape.rhs_t { [n, k] } else { [k, n] };
    let lhs = Tensor::<2>::from_data(TensorData::new(a, lhs_dims), device);
    let rhs = Tensor::<2>::from_data(TensorData::new(b, rhs_dims), device);
    let (med, lo, hi) = time_per_call(repeats, || {
        let l = if shape.lhs_t { lhs.clone().transpose() } else { lhs.clone() };
        let r = if shape.rhs_t { rhs.clone().transpose() } else { rhs.clone() };
        let s: f32 = l.matmul(r).sum().into_scalar();
        std::hint::black_box(s);
    });
    let f = shape.flops() / 1e9;
    (f / med, f / hi, f / lo)
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
pub fn cluster_step(
    cards: &[usize],
    dim: usize,
    cap: u64,
    rows: usize,
    zipf_s: f64,
    options: serde_json::Value,
    seed: u64,
) -> Result<ClusterBench, TrainError> {
    let names: Vec<String> = (1..=cards.len()).map(|i| format!("C{i}")).collect();
    let spec = EmbeddingSpec {
        method: "cqr".into(),
        budget: cap,
        options,
        init_scale: 0.05,
        quantize: None,
        dense_under_cap: true,
    };
    let mut tables =
        EmbeddingTables::new(&spec, &names, cards, dim, cqr_methods::RowOptimizer::default(), 2, (0, None), seed, &[])?;
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
            ids.extend(
                (start..(start + batch).min(rows))
                    .map(|_| ((zipf.sample(&mut rng) as u64 * 2_654_435_761) % cards[c] as u64) as u32),
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_gemms_add_up_to_the_mlp_flops() {
        let cfg = DlrmConfig::kaggle();
        let shapes = dlrm_step_gemms(&cfg, 2048, 26);
        assert_eq!(shapes.len(), 3 * 7 - 1, "7 layers, no dX for the first");
        let sum: f64 = shapes.iter().map(GemmShape::flops).sum();
        // dlrm_train_flops_per_sample counts 6 MACs-worth per layer weight (dX of the input
        // layer included) and the interaction; take those two out.
        let n_vec = 27.0;
        let skipped_dx = 2.0 * 13.0 * 512.0;
        let interaction = 6.0 * n_vec * n_vec * 16.0;
        let want = 2048.0 * (dlrm_train_flops_per_sample(&cfg, 26) - interaction - skipped_dx);
        assert!((sum - want).abs() < 1e-6 * want, "{sum} vs {want}");
        assert_eq!((shapes[0].m, shapes[0].k, shapes[0].n), (2048, 13, 512));
        assert!(shapes
            .iter()
            .any(|s| s.layer == "top 367x512" && s.pass == "dW" && (s.m, s.k, s.n) == (367, 2048, 512)));
    }

    #[test]
    fn direct_gemm_reads_the_transposes_right() {
        let (m, k, n) = (5, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        for (lhs_t, rhs_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let s = GemmShape { layer: "t".into(), pass: "forward", m, k, n, lhs_t, rhs_t };
            let at = |i: usize, p: usize| if lhs_t { a[p * m + i] } else { a[i * k + p] };
            let bt = |p: usize, j: usize| if rhs_t { b[j * k + p] } else { b[p * n + j] };
            for threads in [1, 2] {
                let mut c = vec![f32::NAN; m * n];
                gemm_direct(&s, &a, &b, &mut c, threads);
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                        assert!(
                            (c[i * n + j] - want).abs() < 1e-4,
                            "{lhs_t} {rhs_t}: c[{i},{j}] = {} vs {want}",
                            c[i * n + j]
                        );
                    }
                }
            }
        }
    }
}
