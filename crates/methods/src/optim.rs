//! Embedding tables with fused sparse row updates.
//!
//! `Table::update` takes the rows a batch touched (with repeats) and their output gradients, sums
//! the gradients of repeated rows, and applies the optimizer once per distinct row, as FBGEMM's
//! table-batched embeddings and TorchRec do. No table-sized gradient is ever allocated, and the
//! cost of a step does not depend on the table size.

use crate::MethodError;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Optimizers for embedding rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum RowOptimizer {
    Sgd {
        lr: f32,
    },
    /// Element-wise Adagrad (state: one accumulator per weight).
    Adagrad {
        lr: f32,
        #[serde(default = "default_eps")]
        eps: f32,
    },
    /// Row-wise Adagrad (FBGEMM's default for embeddings; state: one accumulator per row, fed with
    /// the mean squared gradient of the row).
    RowWiseAdagrad {
        lr: f32,
        #[serde(default = "default_eps")]
        eps: f32,
    },
    /// Lazy Adam, as torch's `SparseAdam`: moments are updated only for rows in the batch, and bias
    /// correction uses the global step count. This differs from dense Adam, which would decay the
    /// moments of every row at every step (and move rows whose gradient is zero).
    LazyAdam {
        lr: f32,
        #[serde(default = "default_beta1")]
        beta1: f32,
        #[serde(default = "default_beta2")]
        beta2: f32,
        #[serde(default = "default_eps_adam")]
        eps: f32,
        /// AdamW's decoupled decay, `w -= lr * weight_decay * w` before the Adam step, applied
        /// to the rows a step touches only (lazily, like the moments): a row seen every k steps
        /// decays k times less than under dense AdamW, which shrinks every row every step.
        #[serde(default)]
        weight_decay: f32,
    },
}

fn default_eps() -> f32 {
    1e-8
}
fn default_eps_adam() -> f32 {
    1e-8
}
fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.999
}

impl Default for RowOptimizer {
    fn default() -> Self {
        RowOptimizer::LazyAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl RowOptimizer {
    pub fn lr(&self) -> f32 {
        match *self {
            RowOptimizer::Sgd { lr }
            | RowOptimizer::Adagrad { lr, .. }
            | RowOptimizer::RowWiseAdagrad { lr, .. }
            | RowOptimizer::LazyAdam { lr, .. } => lr,
        }
    }
    /// The same optimizer kind with learning rate `lr` and no weight decay: for a method's
    /// auxiliary parameters (ALPT's step sizes, PEP's thresholds), which decay would bias.
    pub fn with_lr_without_decay(self, lr: f32) -> Self {
        match self {
            RowOptimizer::Sgd { .. } => RowOptimizer::Sgd { lr },
            RowOptimizer::Adagrad { eps, .. } => RowOptimizer::Adagrad { lr, eps },
            RowOptimizer::RowWiseAdagrad { eps, .. } => RowOptimizer::RowWiseAdagrad { lr, eps },
            RowOptimizer::LazyAdam { beta1, beta2, eps, .. } => {
                RowOptimizer::LazyAdam { lr, beta1, beta2, eps, weight_decay: 0.0 }
            }
        }
    }
    /// Checks the settings; `method` names the method in the error.
    pub fn validate(&self, method: &str) -> Result<(), MethodError> {
        let bad = |reason: String| Err(MethodError::BadOptions { method: method.into(), reason });
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("learning rate must be positive and finite, got {lr}"));
        }
        if let RowOptimizer::LazyAdam { beta1, beta2, weight_decay, .. } = *self {
            if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                return bad(format!("adam betas must be in [0, 1), got {beta1}, {beta2}"));
            }
            if !(weight_decay.is_finite() && weight_decay >= 0.0) {
                return bad(format!("weight_decay must be >= 0, got {weight_decay}"));
            }
        }
        Ok(())
    }
    /// Bytes of optimizer state for a `rows x dim` table (f32 state, plus Adam's step counter).
    pub fn state_bytes(&self, rows: usize, dim: usize) -> u64 {
        let (r, d) = (rows as u64, dim as u64);
        match self {
            RowOptimizer::Sgd { .. } => 0,
            RowOptimizer::Adagrad { .. } => 4 * r * d,
            RowOptimizer::RowWiseAdagrad { .. } => 4 * r,
            RowOptimizer::LazyAdam { .. } => 8 * r * d + 8,
        }
    }
}

/// How many entries of the sorted (row, position) list ahead of the row being updated
/// [`Table::update`] prefetches.
const PREFETCH_AHEAD: usize = 8;

/// A prefetch hint for the cache line holding `v` (x86-64; nothing elsewhere).
#[inline(always)]
fn prefetch(v: &f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and does not change memory; the pointer comes from a reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((v as *const f32).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Prefetch hints for row `r` of a row-major array of rows `width` wide (its first and last
/// value: a row of 16 f32 may straddle two cache lines).
#[inline(always)]
fn prefetch_row_of(v: &[f32], r: usize, width: usize) {
    prefetch(&v[r * width]);
    prefetch(&v[(r + 1) * width - 1]);
}

#[inline(always)]
fn update_rows(t: &mut Table, rows: &[u32], grads: &[f32]) {
    t.update_rows(rows, grads)
}
crate::avx2_fn!(fn update_wide => update_rows, (t: &mut Table, rows: &[u32], grads: &[f32]));

/// A `rows x dim` f32 table with its optimizer state and reusable scratch buffers.
#[derive(Debug, Clone)]
pub struct Table {
    pub rows: usize,
    pub dim: usize,
    pub weights: Vec<f32>,
    opt: RowOptimizer,
    /// Adagrad accumulators, or Adam's first moments.
    s1: Vec<f32>,
    /// Adam's second moments.
    s2: Vec<f32>,
    step: u64,
    // Scratch, reused across steps (no per-step allocation once warmed up).
    order: Vec<(u32, u32)>,
    agg: Vec<f32>,
}

impl Table {
    pub fn new(rows: usize, dim: usize, opt: RowOptimizer) -> Self {
        let (n1, n2) = match opt {
            RowOptimizer::Sgd { .. } => (0, 0),
            RowOptimizer::Adagrad { .. } => (rows * dim, 0),
            RowOptimizer::RowWiseAdagrad { .. } => (rows, 0),
            RowOptimizer::LazyAdam { .. } => (rows * dim, rows * dim),
        };
        let mut t = Table {
            rows,
            dim,
            weights: vec![0.0; rows * dim],
            opt,
            s1: vec![0.0; n1],
            s2: vec![0.0; n2],
            step: 0,
            order: vec![],
            agg: vec![],
        };
        // `vec![0.0; n]` maps lazily zeroed pages; writing them now moves the page faults of a
        // large table's optimizer state out of the first training steps (measured: 26 x 1M-row
        // tables ran 10x slower for the first steps otherwise).
        t.reset_state();
        t
    }

    /// Fills weights with U(-a, a).
    pub fn init_uniform(&mut self, a: f32, rng: &mut impl Rng) {
        for w in &mut self.weights {
            *w = rng.random_range(-a..=a);
        }
    }

    #[inline]
    pub fn row(&self, r: usize) -> &[f32] {
        &self.weights[r * self.dim..(r + 1) * self.dim]
    }
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.weights[r * self.dim..(r + 1) * self.dim]
    }

    /// Copies row `r_i` into `out[i·dim..(i+1)·dim]` for each `r_i` of `rows`, prefetching the
    /// row [`PREFETCH_AHEAD`] places ahead (the rows of a batch are scattered over the table).
    pub fn gather(&self, rows: impl Iterator<Item = usize> + Clone, out: &mut [f32]) {
        let d = self.dim;
        let mut ahead = rows.clone().skip(PREFETCH_AHEAD);
        for (o, r) in out.chunks_exact_mut(d).zip(rows) {
            if let Some(a) = ahead.next() {
                prefetch_row_of(&self.weights, a, d);
            }
            o.copy_from_slice(self.row(r));
        }
    }

    pub fn optimizer(&self) -> RowOptimizer {
        self.opt
    }

    /// Clears the optimizer state (after CQR replaces the weights, old moments are meaningless).
    pub fn reset_state(&mut self) {
        for v in self.s1.iter_mut().chain(self.s2.iter_mut()) {
            // A volatile write: a plain store of 0.0 into memory the compiler may prove zero could
            // be elided, leaving the pages unmapped.
            unsafe { std::ptr::write_volatile(v, 0.0) };
        }
        self.step = 0;
    }

    /// Clears the optimizer state of row `r` only (a row handed to another id, as CAFE does).
    pub fn reset_row_state(&mut self, r: usize) {
        let d = self.dim;
        let per_row = |v: &mut Vec<f32>| {
            let w = v.len() / self.rows.max(1);
            v[r * w..(r + 1) * w].iter_mut().for_each(|x| *x = 0.0);
        };
        if !self.s1.is_empty() {
            per_row(&mut self.s1);
        }
        if !self.s2.is_empty() {
            per_row(&mut self.s2);
        }
        debug_assert!(self.s1.is_empty() || self.s1.len() == self.rows * d || self.s1.len() == self.rows);
    }

    pub fn param_count(&self) -> u64 {
        (self.rows * self.dim) as u64
    }
    /// Whether any optimizer state is non-zero (a step has run since the last reset).
    pub fn has_state(&self) -> bool {
        self.s1.iter().chain(&self.s2).any(|&v| v != 0.0)
    }
    pub fn state_bytes(&self) -> u64 {
        self.opt.state_bytes(self.rows, self.dim)
    }

    /// Applies one optimizer step. `rows[i]` received gradient `grads[i*dim..(i+1)*dim]`; repeated
    /// rows are summed first (the gradient of a sum of lookups), then each distinct row is updated
    /// once. Rows not listed are untouched.
    pub fn update(&mut self, rows: &[u32], grads: &[f32]) {
        // AVX2 where the CPU has it: the same bits (no FMA), twice the lanes for Adam's divide
        // and square root at dim 16.
        update_wide(self, rows, grads)
    }

    /// [`Table::update`] at the rows `row(id)` of `ids`, the row list built in `buf` (the
    /// caller keeps it between steps, so a step allocates nothing).
    pub fn update_mapped(&mut self, ids: &[u32], row: impl Fn(u32) -> u32, grads: &[f32], buf: &mut Vec<u32>) {
        buf.clear();
        buf.extend(ids.iter().map(|&id| row(id)));
        self.update(buf, grads);
    }

    #[inline(always)]
    fn update_rows(&mut self, rows: &[u32], grads: &[f32]) {
        let d = self.dim;
        debug_assert_eq!(rows.len() * d, grads.len());
        self.order.clear();
        self.order.extend(rows.iter().enumerate().map(|(i, &r)| (r, i as u32)));
        self.order.sort_unstable();
        self.step += 1;
        let mut i = 0;
        let bias = self.bias_correction();
        let mut order = std::mem::take(&mut self.order);
        let mut agg = std::mem::take(&mut self.agg);
        agg.resize(d, 0.0);
        while i < order.len() {
            let r = order[i].0;
            if let Some(&(ahead, at)) = order.get(i + PREFETCH_AHEAD) {
                self.prefetch_row(ahead as usize);
                prefetch(&grads[at as usize * d]);
            }
            agg.iter_mut().for_each(|v| *v = 0.0);
            // Sum in input order for determinism (sort_unstable on (row, position) is total).
            while i < order.len() && order[i].0 == r {
                let g = &grads[order[i].1 as usize * d..(order[i].1 as usize + 1) * d];
                agg.iter_mut().zip(g).for_each(|(a, &b)| *a += b);
                i += 1;
            }
            self.apply_row(r as usize, &agg, bias);
        }
        order.clear();
        self.order = order;
        self.agg = agg;
    }

    /// Asks the CPU to start loading row `r`'s weights and optimizer state (a hint: no effect on
    /// values). The rows a step touches are scattered over tables of up to millions of rows, so
    /// without it the update waits on memory for each (measured: the loads of the row state were
    /// ~40% of `Table::update`'s profile at 26 x 10k rows).
    #[inline(always)]
    fn prefetch_row(&self, r: usize) {
        for v in [&self.weights, &self.s1, &self.s2] {
            // Row-wise Adagrad keeps one value a row; SGD no state.
            let width = v.len() / self.rows.max(1);
            if width > 0 {
                prefetch_row_of(v, r, width);
            }
        }
    }

    /// Adam's step size and denominator epsilon at this step, `(lr·sqrt(bc2)/bc1, eps·sqrt(bc2))`,
    /// computed once per update rather than per row (the same values, so the same bits).
    fn bias_correction(&self) -> (f32, f32) {
        match self.opt {
            RowOptimizer::LazyAdam { lr, beta1, beta2, eps, .. } => {
                let t = self.step as i32;
                let bc1 = 1.0 - beta1.powi(t);
                let bc2 = 1.0 - beta2.powi(t);
                (lr * bc2.sqrt() / bc1, eps * bc2.sqrt())
            }
            _ => (0.0, 0.0),
        }
    }

    #[inline(always)]
    fn apply_row(&mut self, r: usize, g: &[f32], (step, eps_hat): (f32, f32)) {
        let d = self.dim;
        let w = &mut self.weights[r * d..(r + 1) * d];
        match self.opt {
            RowOptimizer::Sgd { lr } => w.iter_mut().zip(g).for_each(|(w, &g)| *w -= lr * g),
            RowOptimizer::Adagrad { lr, eps } => {
                let s = &mut self.s1[r * d..(r + 1) * d];
                for ((w, s), &g) in w.iter_mut().zip(s).zip(g) {
                    *s += g * g;
                    *w -= lr * g / (s.sqrt() + eps);
                }
            }
            RowOptimizer::RowWiseAdagrad { lr, eps } => {
                let s = &mut self.s1[r];
                *s += g.iter().map(|g| g * g).sum::<f32>() / d as f32;
                let scale = lr / (s.sqrt() + eps);
                w.iter_mut().zip(g).for_each(|(w, &g)| *w -= scale * g);
            }
            RowOptimizer::LazyAdam { lr, beta1, beta2, weight_decay, .. } => {
                if weight_decay > 0.0 {
                    let keep = 1.0 - lr * weight_decay;
                    w.iter_mut().for_each(|w| *w *= keep);
                }
                let m = &mut self.s1[r * d..(r + 1) * d];
                let v = &mut self.s2[r * d..(r + 1) * d];
                for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *w -= step * *m / (v.sqrt() + eps_hat);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense reference: build the full table-sized gradient, then update every row that has a
    /// non-zero gradient with the textbook formula.
    fn dense_reference(t: &Table, rows: &[u32], grads: &[f32]) -> Vec<f32> {
        let d = t.dim;
        let mut full = vec![0.0f32; t.rows * d];
        let mut touched = vec![false; t.rows];
        for (i, &r) in rows.iter().enumerate() {
            touched[r as usize] = true;
            for k in 0..d {
                full[r as usize * d + k] += grads[i * d + k];
            }
        }
        let mut w = t.weights.clone();
        for r in 0..t.rows {
            if !touched[r] {
                continue;
            }
            for k in 0..d {
                let g = full[r * d + k];
                match t.opt {
                    RowOptimizer::Sgd { lr } => w[r * d + k] -= lr * g,
                    RowOptimizer::Adagrad { lr, eps } => w[r * d + k] -= lr * g / ((g * g).sqrt() + eps),
                    RowOptimizer::RowWiseAdagrad { lr, eps } => {
                        let s: f32 = (0..d).map(|j| full[r * d + j].powi(2)).sum::<f32>() / d as f32;
                        w[r * d + k] -= lr * g / (s.sqrt() + eps)
                    }
                    RowOptimizer::LazyAdam { lr, beta1, beta2, eps, weight_decay } => {
                        let m = (1.0 - beta1) * g / (1.0 - beta1);
                        let v = (1.0 - beta2) * g * g / (1.0 - beta2);
                        w[r * d + k] *= 1.0 - lr * weight_decay;
                        w[r * d + k] -= lr * m / (v.sqrt() + eps);
                    }
                }
            }
        }
        w
    }

    /// `update` (AVX2 where the CPU has it) and the same loop compiled for the baseline give the
    /// same bits, for every optimizer, over several steps at dim 16 (two AVX2 vectors a row).
    #[test]
    fn avx2_update_gives_the_baseline_bits() {
        use rand::SeedableRng;
        let opts = [
            RowOptimizer::Sgd { lr: 0.1 },
            RowOptimizer::Adagrad { lr: 0.1, eps: 1e-8 },
            RowOptimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 },
            RowOptimizer::LazyAdam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 },
        ];
        for opt in opts {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
            let mut a = Table::new(50, 16, opt);
            a.init_uniform(0.5, &mut rng);
            let mut b = a.clone();
            for step in 0..4 {
                let rows: Vec<u32> = (0..40).map(|i| ((i * 7 + step * 3) % 50) as u32).collect();
                let grads: Vec<f32> = (0..rows.len() * 16).map(|i| ((i + step * 11) as f32 * 0.37).sin()).collect();
                a.update(&rows, &grads);
                b.update_rows(&rows, &grads);
            }
            let bits = |t: &Table| t.weights.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{opt:?}");
        }
    }

    #[test]
    fn sparse_update_matches_dense_reference_for_every_optimizer() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let opts = [
            RowOptimizer::Sgd { lr: 0.1 },
            RowOptimizer::Adagrad { lr: 0.1, eps: 1e-8 },
            RowOptimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 },
            RowOptimizer::LazyAdam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            RowOptimizer::LazyAdam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.5 },
        ];
        for opt in opts {
            let mut t = Table::new(20, 3, opt);
            t.init_uniform(1.0, &mut rng);
            let rows = [3u32, 7, 3, 19, 0, 7, 7];
            let grads: Vec<f32> = (0..rows.len() * 3).map(|i| (i as f32 * 0.37).sin()).collect();
            let want = dense_reference(&t, &rows, &grads);
            let before = t.weights.clone();
            t.update(&rows, &grads);
            for r in 0..20 {
                let touched = rows.contains(&(r as u32));
                for k in 0..3 {
                    let (a, b) = (t.weights[r * 3 + k], want[r * 3 + k]);
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{opt:?} row {r}: {a} vs {b}");
                    if !touched {
                        assert_eq!(a, before[r * 3 + k], "untouched row {r} changed");
                    }
                }
            }
        }
    }
}
