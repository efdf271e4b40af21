//! DHE, deep hash embeddings (Kang et al., KDD 2021): no table at all. `k` hash functions give
//! an id a dense encoding `x(id)` in [-1, 1]^k (uniform; or, with `encoding: gaussian`, mapped
//! to N(0, 1) by Box-Muller on pairs), and an MLP `k -> hidden -> dim` (ReLU after the hidden
//! layer) computes the embedding. Written in plain Rust (the methods crate stays free of burn).
//!
//! Budget: parameters are the MLP weights and biases, `k·h + h + h·dim + dim`; `hidden` is the
//! largest h that fits unless given. No index arrays; k hash functions (24 bytes each). The
//! gradient is dense in the weights: every step updates every weight (the row optimizer over
//! all rows, i.e. dense Adam / Adagrad / SGD). DHE is slow by design: each lookup is an MLP pass.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DheEncoding {
    #[default]
    Uniform,
    Gaussian,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DheOptions {
    /// Hash functions (encoding width).
    pub k: usize,
    /// Hidden width (default: the largest the budget allows).
    pub hidden: Option<usize>,
    pub encoding: DheEncoding,
}

impl Default for DheOptions {
    fn default() -> Self {
        DheOptions { k: 32, hidden: None, encoding: DheEncoding::Uniform }
    }
}

/// Range of each hash before scaling to [-1, 1].
const BUCKETS: usize = 1 << 20;

pub struct Dhe {
    vocab: usize,
    dim: usize,
    hashes: Vec<UniversalHash>,
    encoding: DheEncoding,
    /// `w1`: k rows of h; `b1`: 1 row of h; `w2`: h rows of dim; `b2`: 1 row of dim.
    w1: Table,
    b1: Table,
    w2: Table,
    b2: Table,
    scratch: Vec<f32>,
}

impl Dhe {
    pub const NAME: &'static str = "dhe";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: DheOptions = p.options(Self::NAME)?;
        if o.k == 0 || (o.encoding == DheEncoding::Gaussian && o.k % 2 == 1) {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: format!("k must be >= 1 (even for the gaussian encoding), got {}", o.k) });
        }
        let per_h = (o.k + 1 + p.dim) as u64;
        let fit = (p.budget.saturating_sub(p.dim as u64) / per_h) as usize;
        let h = o.hidden.unwrap_or(fit);
        if h == 0 || h > fit {
            return Err(MethodError::Budget { method: Self::NAME.into(), budget: p.budget, reason: format!("hidden width {} needs {} parameters; the budget allows <= {fit}", h.max(1), h.max(1) as u64 * per_h + p.dim as u64) });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let hashes = (0..o.k).map(|_| UniversalHash::new(BUCKETS, &mut rng)).collect();
        // He-style uniform init; the output layer scaled so embeddings start near init_scale.
        let layer = |rows: usize, cols: usize, a: f32, rng: &mut ChaCha8Rng| {
            let mut t = Table::new(rows, cols, p.optimizer);
            t.init_uniform(a, rng);
            t
        };
        let w1 = layer(o.k, h, (6.0 / o.k as f32).sqrt(), &mut rng);
        let w2 = layer(h, p.dim, p.init_scale * (3.0 / h as f32).sqrt(), &mut rng);
        let (b1, b2) = (Table::new(1, h, p.optimizer), Table::new(1, p.dim, p.optimizer));
        Ok(Dhe { vocab: p.vocab, dim: p.dim, hashes, encoding: o.encoding, w1, b1, w2, b2, scratch: vec![] })
    }

    /// The dense encoding of `id` into `x` (k values).
    fn encode(&self, id: u32, x: &mut [f32]) {
        for (v, h) in x.iter_mut().zip(&self.hashes) {
            *v = 2.0 * h.hash(id) as f32 / (BUCKETS - 1) as f32 - 1.0;
        }
        if self.encoding == DheEncoding::Gaussian {
            for pair in x.chunks_exact_mut(2) {
                // Box-Muller: (u1, u2) in (0, 1] x [0, 1) -> two N(0, 1).
                let u1 = ((pair[0] + 1.0) / 2.0).max(1e-7);
                let u2 = (pair[1] + 1.0) / 2.0;
                let r = (-2.0 * u1.ln()).sqrt();
                let t = 2.0 * std::f32::consts::PI * u2;
                pair[0] = r * t.cos();
                pair[1] = r * t.sin();
            }
        }
    }

    /// Hidden activations (after ReLU) of `x` into `hid`.
    fn hidden(&self, x: &[f32], hid: &mut [f32]) {
        hid.copy_from_slice(self.b1.row(0));
        for (i, &xi) in x.iter().enumerate() {
            hid.iter_mut().zip(self.w1.row(i)).for_each(|(a, &w)| *a += xi * w);
        }
        hid.iter_mut().for_each(|a| *a = a.max(0.0));
    }
}

impl EmbeddingMethod for Dhe {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let (k, h) = (self.hashes.len(), self.b1.dim);
        let (mut x, mut hid) = (vec![0.0; k], vec![0.0; h]);
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            self.encode(id, &mut x);
            self.hidden(&x, &mut hid);
            o.copy_from_slice(self.b2.row(0));
            for (j, &a) in hid.iter().enumerate() {
                if a != 0.0 {
                    o.iter_mut().zip(self.w2.row(j)).for_each(|(o, &w)| *o += a * w);
                }
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let (k, h, d) = (self.hashes.len(), self.b1.dim, self.dim);
        // Gradients of every weight, summed over the batch: [w1 | b1 | w2 | b2].
        let mut gs = std::mem::take(&mut self.scratch);
        gs.clear();
        gs.resize(k * h + h + h * d + d, 0.0);
        let (g_w1, rest) = gs.split_at_mut(k * h);
        let (g_b1, rest) = rest.split_at_mut(h);
        let (g_w2, g_b2) = rest.split_at_mut(h * d);
        let (mut x, mut hid, mut dh) = (vec![0.0; k], vec![0.0; h], vec![0.0; h]);
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            self.encode(id, &mut x);
            self.hidden(&x, &mut hid);
            g_b2.iter_mut().zip(g).for_each(|(s, &v)| *s += v);
            for j in 0..h {
                let w2j = self.w2.row(j);
                g_w2[j * d..(j + 1) * d].iter_mut().zip(g).for_each(|(s, &v)| *s += hid[j] * v);
                // ReLU: no gradient through inactive units.
                dh[j] = if hid[j] > 0.0 { w2j.iter().zip(g).map(|(w, v)| w * v).sum() } else { 0.0 };
            }
            g_b1.iter_mut().zip(&dh).for_each(|(s, &v)| *s += v);
            for (i, &xi) in x.iter().enumerate() {
                g_w1[i * h..(i + 1) * h].iter_mut().zip(&dh).for_each(|(s, &v)| *s += xi * v);
            }
        }
        let all = |n: usize| (0..n as u32).collect::<Vec<u32>>();
        self.w1.update(&all(k), g_w1);
        self.b1.update(&[0], g_b1);
        self.w2.update(&all(h), g_w2);
        self.b2.update(&[0], g_b2);
        self.scratch = gs;
    }
    fn accounting(&self) -> Accounting {
        let t = [&self.w1, &self.b1, &self.w2, &self.b2];
        Accounting {
            trainable_params: t.iter().map(|t| t.param_count()).sum(),
            optimizer_state_bytes: t.iter().map(|t| t.state_bytes()).sum(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * self.hashes.len() as u64,
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.w1.weights, &mut self.b1.weights, &mut self.w2.weights, &mut self.b2.weights]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Dhe::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_encodings() {
        for enc in ["uniform", "gaussian"] {
            check_gradients(&build, &MethodParams::new(1000, 4, 200).with_options(json!({"k": 4, "encoding": enc})), &[3, 5, 3, 999, 17, 250]);
        }
        // dim 16, k 32: h = (3200 - 16) / 49 = 64, 64 * 49 + 16 = 3152 parameters.
        let m = Dhe::new(&MethodParams::new(1_000_000, 16, 3200)).unwrap();
        assert_eq!((m.b1.dim, m.accounting().trainable_params), (64, 3152));
        assert!(Dhe::new(&MethodParams::new(100, 16, 40)).is_err());
        assert!(Dhe::new(&MethodParams::new(100, 4, 400).with_options(json!({"k": 3, "encoding": "gaussian"}))).is_err());
        // Distinct ids, distinct vectors.
        let mut out = vec![0.0; 2 * 16];
        m.forward(&[1, 2], &mut out);
        assert_ne!(out[..16], out[16..]);
    }
}
