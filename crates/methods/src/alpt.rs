//! ALPT (Li et al., "Adaptive Low-Precision Training for Embeddings in Click-Through Rate
//! Prediction", AAAI 2023): the table is stored and trained as `bits`-bit integer codes with a
//! learned step size per row; every weight is `Δ_r · c`, `c` an integer in `[-2^(b-1), 2^(b-1) - 1]`.
//!
//! One optimizer step, for the rows a batch read:
//! 1. The dequantized rows `w = Δ·c` are updated in full precision by the table's optimizer:
//!    `w' = w − step(g)` (the gradient with respect to the codes is taken as the gradient with
//!    respect to `w`: a straight-through estimate of the rounding).
//! 2. The step sizes learn by LSQ (Esser et al. 2020) on the quantization of `w'`: with
//!    `v = w'/Δ`, `∂Q(w')/∂Δ = round(v) − v` inside the range and the bound outside it;
//!    `∂L/∂Δ_r = Σ_k g_k · ∂Q/∂Δ`, scaled by `1 / sqrt(lookups · dim · Q_p)` as ALPT does, and
//!    applied by the same optimizer kind with learning rate `step_lr`.
//! 3. `w'` is re-quantized with the new step size, by stochastic rounding (`round(x) = ⌊x + u⌋`,
//!    `u ~ U[0, 1)`, unbiased) or to nearest, and clamped to the range.
//!
//! Where we chose: ALPT's step 2 runs a second forward pass through the whole model at the
//! re-quantized weights; a table method sees only this step's output gradient, so here the
//! step-size gradient uses that gradient (taken one optimizer step earlier). The step sizes
//! start at LSQ's rule for a uniform start, `Δ_0 = 2·E|w| / sqrt(Q_p) = init_scale / sqrt(Q_p)`
//! (ALPT and the Hetu study start every row at one tuned constant).
//!
//! Rows: `R = min(vocab, ⌊B / (dim + 1)⌋)` (codes plus one step size per row, both trainable);
//! ids are hashed into them when `R < vocab` (the hashing trick), one row per id otherwise, so
//! with `dense_under_cap: false` and a budget of at least `vocab · (dim + 1)` ALPT is the
//! paper's full low-precision table. Bytes, during training and after: `⌈R·dim·bits/8⌉` for the
//! codes plus 4 per row for Δ (`Accounting::quantized_param_bytes`), optimizer state as the
//! optimizer keeps it (f32), one hash function. Held here as the dequantized f32 values (each
//! exactly `Δ_r · c`, tested) so the shared row optimizer applies; the count is of the codes.
//! `rounding: none` skips steps 2 and 3: the same rows in f32, the control for what the low
//! precision costs (counted at 4 bytes a weight).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

/// How updated weights return to the integer grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    #[default]
    Stochastic,
    Nearest,
    /// No quantization: the f32 control.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlptOptions {
    /// Code width in bits, 2..=8 (default 8).
    pub bits: u32,
    pub rounding: Rounding,
    /// Learn the step sizes (default true; false keeps Δ_0).
    pub learn_step: bool,
    /// Learning rate of the step sizes (default: the table's).
    pub step_lr: Option<f32>,
}

impl Default for AlptOptions {
    fn default() -> Self {
        AlptOptions { bits: 8, rounding: Rounding::Stochastic, learn_step: true, step_lr: None }
    }
}

/// LSQ's derivative of `Δ · clamp(round(v), lo, hi)` with respect to Δ, at `v = w / Δ`.
#[inline]
fn lsq_grad(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v.round() - v
    }
}

/// Stochastic rounding: `⌊x + u⌋` with `u ~ U[0, 1)`; its mean is `x`.
#[inline]
pub fn stochastic_round(x: f32, rng: &mut impl Rng) -> f32 {
    (x + rng.random::<f32>()).floor()
}

/// The smallest step size kept (a step that reaches 0 would divide by zero).
const MIN_STEP: f32 = 1e-8;

pub struct Alpt {
    vocab: usize,
    table: Table,
    /// One step size per row (a `rows x 1` table with its own optimizer state).
    step: Table,
    /// `None`: one row per id.
    hash: Option<UniversalHash>,
    bits: u32,
    lo: f32,
    hi: f32,
    rounding: Rounding,
    learn_step: bool,
    rng: ChaCha8Rng,
    rows_buf: Vec<u32>,
    touched: Vec<u32>,
    step_grad: Vec<f32>,
}

impl Alpt {
    pub const NAME: &'static str = "alpt";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: AlptOptions = p.options(Self::NAME)?;
        let bad = |r: String| MethodError::BadOptions { method: Self::NAME.into(), reason: r };
        if !(2..=8).contains(&o.bits) {
            return Err(bad(format!("bits must be in 2..=8, got {}", o.bits)));
        }
        if let Some(lr) = o.step_lr {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(bad(format!("step_lr must be positive, got {lr}")));
            }
        }
        let per_row = p.dim as u64 + 1;
        if p.budget < per_row {
            return Err(MethodError::Budget { method: Self::NAME.into(), budget: p.budget, reason: format!("needs at least 1 row of dim {} plus its step size ({per_row} parameters)", p.dim) });
        }
        let rows = ((p.budget / per_row) as usize).min(p.vocab);
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let hash = (rows < p.vocab).then(|| UniversalHash::new(rows, &mut rng));
        let mut table = Table::new(rows, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut rng);
        let (lo, hi) = (-((1u32 << (o.bits - 1)) as f32), ((1u32 << (o.bits - 1)) - 1) as f32);
        // No decay of the step sizes: shrinking Δ is not a regulariser of the weights.
        let step_opt = p.optimizer.with_lr_without_decay(o.step_lr.unwrap_or(p.optimizer.lr()));
        let mut step = Table::new(rows, 1, step_opt);
        step.weights.fill(p.init_scale.max(1e-3) / hi.sqrt());
        let mut m = Alpt { vocab: p.vocab, table, step, hash, bits: o.bits, lo, hi, rounding: o.rounding, learn_step: o.learn_step, rng, rows_buf: vec![], touched: vec![], step_grad: vec![] };
        if m.rounding != Rounding::None {
            m.touched = (0..rows as u32).collect();
            m.requantize_touched();
        }
        Ok(m)
    }

    #[inline]
    fn row_of(&self, id: u32) -> u32 {
        self.hash.map_or(id, |h| h.hash(id))
    }

    /// Puts every row in `self.touched` back on its grid `Δ_r · c`.
    fn requantize_touched(&mut self) {
        let d = self.table.dim;
        for &r in &self.touched {
            let s = self.step.weights[r as usize];
            let w = &mut self.table.weights[r as usize * d..(r as usize + 1) * d];
            for x in w.iter_mut() {
                let v = *x / s;
                let c = match self.rounding {
                    Rounding::Stochastic => stochastic_round(v, &mut self.rng),
                    _ => v.round(),
                };
                *x = s * c.clamp(self.lo, self.hi);
            }
        }
    }

    /// LSQ's step-size gradient of each lookup at the updated weights (step 2 of the module docs).
    fn step_gradients(&mut self, grad: &[f32]) {
        let d = self.table.dim;
        let scale = 1.0 / ((self.rows_buf.len() * d) as f32 * self.hi).sqrt();
        self.step_grad.clear();
        for (g, &r) in grad.chunks_exact(d).zip(&self.rows_buf) {
            let s = self.step.weights[r as usize];
            let w = self.table.row(r as usize);
            let dot: f32 = w.iter().zip(g).map(|(&w, &g)| g * lsq_grad(w / s, self.lo, self.hi)).sum();
            self.step_grad.push(scale * dot);
        }
    }
}

impl EmbeddingMethod for Alpt {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.table.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let d = self.table.dim;
        for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
            o.copy_from_slice(self.table.row(self.row_of(id) as usize));
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let hash = self.hash;
        self.table.update_mapped(ids, |id| hash.map_or(id, |h| h.hash(id)), grad, &mut self.rows_buf);
        if self.rounding == Rounding::None {
            return;
        }
        if self.learn_step {
            self.step_gradients(grad);
            self.step.update(&self.rows_buf, &self.step_grad);
        }
        self.touched.clear();
        self.touched.extend_from_slice(&self.rows_buf);
        self.touched.sort_unstable();
        self.touched.dedup();
        for &r in &self.touched {
            let s = &mut self.step.weights[r as usize];
            *s = s.max(MIN_STEP);
        }
        self.requantize_touched();
    }
    fn accounting(&self) -> Accounting {
        let (rows, d) = (self.table.rows as u64, self.table.dim as u64);
        let quantized = (self.rounding != Rounding::None).then(|| (rows * d * self.bits as u64).div_ceil(8) + 4 * rows);
        Accounting {
            trainable_params: self.table.param_count() + self.step.param_count(),
            optimizer_state_bytes: self.table.state_bytes() + self.step.state_bytes(),
            index_bytes: 0,
            other_bytes: if self.hash.is_some() { UniversalHash::BYTES } else { 0 },
            quantized_param_bytes: quantized,
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights, &mut self.step.weights]
    }
    fn row_widths(&mut self) -> Vec<usize> {
        vec![self.table.dim, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RowOptimizer;
    use crate::testing::check_gradients;
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Alpt::new(p).unwrap())
    }

    /// Every weight is `Δ_r · c` with `c` an integer in the code range.
    fn assert_on_grid(m: &Alpt) {
        for r in 0..m.table.rows {
            let s = m.step.weights[r];
            for &w in m.table.row(r) {
                let c = w / s;
                assert!((c - c.round()).abs() < 1e-3 && c.round() >= m.lo && c.round() <= m.hi, "row {r}: {w} = {s} x {c}");
            }
        }
    }

    /// Without rounding the update is the sparse optimizer step of a hashed table (or one row
    /// per id); the step sizes get no gradient and stay as they were.
    #[test]
    fn gradients_of_the_f32_control_hashed_and_direct() {
        check_gradients(&build, &MethodParams::new(1000, 4, 5 * 40).with_options(json!({"rounding": "none"})), &[3, 5, 3, 999, 17, 250]);
        check_gradients(&build, &MethodParams::new(30, 4, 5 * 30).with_options(json!({"rounding": "none"})), &[3, 5, 3, 29]);
    }

    #[test]
    fn rows_budget_and_bytes() {
        // 10,000 ids, dim 16: ⌊50,000 / 17⌋ = 2,941 rows; codes 2,941 x 16 bytes + 4 per row.
        let m = Alpt::new(&MethodParams::new(10_000, 16, 50_000)).unwrap();
        let a = m.accounting();
        assert_eq!((m.table.rows, a.trainable_params), (2941, 2941 * 17));
        assert_eq!(a.quantized_param_bytes, Some(2941 * 16 + 4 * 2941));
        assert_eq!(a.other_bytes, UniversalHash::BYTES);
        let m4 = Alpt::new(&MethodParams::new(10_000, 16, 50_000).with_options(json!({"bits": 4}))).unwrap();
        assert_eq!(m4.accounting().quantized_param_bytes, Some(2941 * 8 + 4 * 2941));
        // A budget that holds every id: one row per id, no hash.
        let full = Alpt::new(&MethodParams::new(100, 16, 100 * 17)).unwrap();
        assert!(full.hash.is_none() && full.table.rows == 100);
        assert_eq!(full.accounting().other_bytes, 0);
        for b in [17u64, 500, 49_999] {
            let t = Alpt::new(&MethodParams::new(10_000, 16, b)).unwrap().accounting().trainable_params;
            assert!(t <= b && b - t < 17, "budget {b}: {t}");
        }
        let err = Alpt::new(&MethodParams::new(100, 16, 16)).err().unwrap().to_string();
        assert!(err.contains("at least 1 row"), "{err}");
        for bad in [json!({"bits": 1}), json!({"bits": 9}), json!({"step_lr": 0.0}), json!({"rounding": "up"}), json!({"bitz": 8})] {
            assert!(Alpt::new(&MethodParams::new(100, 4, 400).with_options(bad.clone())).is_err(), "{bad}");
        }
    }

    /// The start and every update leave the weights on the grid, at 8 and at 4 bits, with
    /// stochastic and nearest rounding, and the rows a step did not read are unchanged.
    #[test]
    fn weights_stay_on_the_grid() {
        for opts in [json!({}), json!({"bits": 4}), json!({"bits": 4, "rounding": "nearest"})] {
            let mut m = Alpt::new(&MethodParams::new(200, 8, 50 * 9).with_options(opts.clone()).with_seed(3)).unwrap();
            assert_on_grid(&m);
            let ids = [1u32, 7, 7, 150, 42];
            let r_other = (0..m.table.rows).find(|&r| !ids.iter().any(|&i| m.row_of(i) as usize == r)).unwrap();
            let other = m.table.row(r_other).to_vec();
            for s in 0..20 {
                let g: Vec<f32> = (0..ids.len() * 8).map(|i| ((i * 7 + s) as f32 * 0.61).sin()).collect();
                m.backward(&ids, &g);
                assert_on_grid(&m);
            }
            assert_eq!(m.table.row(r_other), &other[..], "{opts}: an unread row changed");
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for x in [-2.75f32, -0.3, 0.0, 0.5, 3.1] {
            let n = 40_000;
            let mean: f64 = (0..n).map(|_| stochastic_round(x, &mut rng) as f64).sum::<f64>() / n as f64;
            assert!((mean - x as f64).abs() < 0.01, "{x}: mean {mean}");
            assert!((0..100).all(|_| (stochastic_round(x, &mut rng) - x).abs() < 1.0));
        }
    }

    /// With SGD the step size moves by `-step_lr · Σ g · lsq(w'/Δ) / sqrt(n · dim · Q_p)` at
    /// the updated weights `w' = w − lr g` (repeated lookups summed).
    #[test]
    fn step_size_follows_the_lsq_gradient() {
        let (lr, step_lr) = (0.05f32, 0.01f32);
        let p = MethodParams::new(20, 4, 20 * 5).with_options(json!({"bits": 4, "rounding": "nearest", "step_lr": step_lr})).with_optimizer(RowOptimizer::Sgd { lr }).with_seed(5);
        let mut m = Alpt::new(&p).unwrap();
        let ids = [3u32, 3, 9];
        let g: Vec<f32> = (0..12).map(|i| (i as f32 * 0.9).cos()).collect();
        let (s3, s9) = (m.step.weights[3], m.step.weights[9]);
        let w3: Vec<f32> = m.table.row(3).iter().zip(&g[0..4]).zip(&g[4..8]).map(|((w, a), b)| w - lr * (a + b)).collect();
        let w9: Vec<f32> = m.table.row(9).iter().zip(&g[8..12]).map(|(w, a)| w - lr * a).collect();
        let scale = 1.0 / (3.0f32 * 4.0 * 7.0).sqrt();
        let lsq = |w: &[f32], s: f32, g: &[f32]| -> f32 { w.iter().zip(g).map(|(&w, &g)| g * lsq_grad(w / s, -8.0, 7.0)).sum() };
        let want3 = s3 - step_lr * scale * (lsq(&w3, s3, &g[0..4]) + lsq(&w3, s3, &g[4..8]));
        let want9 = s9 - step_lr * scale * lsq(&w9, s9, &g[8..12]);
        let untouched = m.step.weights[0];
        m.backward(&ids, &g);
        assert!((m.step.weights[3] - want3).abs() < 1e-6 && (m.step.weights[9] - want9).abs() < 1e-6, "{} vs {want3}, {} vs {want9}", m.step.weights[3], m.step.weights[9]);
        assert_eq!(m.step.weights[0], untouched);
        // Clipped values push Δ by the bound: far outside the range the gradient is the bound.
        assert_eq!((lsq_grad(-20.0, -8.0, 7.0), lsq_grad(20.0, -8.0, 7.0), lsq_grad(2.25, -8.0, 7.0)), (-8.0, 7.0, -0.25));
        // learn_step: false keeps every step size.
        let mut fixed = Alpt::new(&p.clone().with_options(json!({"learn_step": false}))).unwrap();
        let before = fixed.step.weights.clone();
        fixed.backward(&ids, &g);
        assert_eq!(fixed.step.weights, before);
    }

    /// Same seed, same numbers (stochastic rounding draws from the method's own seeded stream).
    #[test]
    fn reproducible() {
        let run = || {
            let mut m = Alpt::new(&MethodParams::new(500, 8, 60 * 9).with_seed(9)).unwrap();
            for s in 0..5u32 {
                let ids: Vec<u32> = (0..16).map(|i| (i * 31 + s * 7) % 500).collect();
                m.backward(&ids, &vec![0.1; 16 * 8]);
            }
            m.table.weights.clone()
        };
        assert_eq!(run(), run());
    }
}
