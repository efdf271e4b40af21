//! Hash embeddings (Svenstrup, Hansen & Winther, NeurIPS 2017): an id's vector is a weighted sum
//! of `k` component vectors drawn by `k` hash functions from a shared pool,
//! `e(id) = sum_i p_i(id) * pool[h_i(id)]`, where the importance weights `p(id)` (k per id) are
//! themselves a row of a second, hashed table: `p(id) = weights[h_w(id)]`.
//!
//! Budget B: the weights table takes `weight_fraction` of it (default 0.25): K = ⌊f·B / k⌋ rows of
//! k, at least 1; the pool takes the rest: ⌊(B - K·k) / dim⌋ rows of dim. Trainable parameters
//! K·k + pool rows · dim (within one pool row of B). State: k + 1 hash functions (24 bytes each).
//! Weights start at 1/√k (so at the start a vector is a scaled sum of k pool rows, as Bloom).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashEmbeddingOptions {
    /// Components per id.
    pub k: usize,
    /// Share of the budget for the importance weights.
    pub weight_fraction: f64,
}

impl Default for HashEmbeddingOptions {
    fn default() -> Self {
        HashEmbeddingOptions { k: 2, weight_fraction: 0.25 }
    }
}

pub struct HashEmbedding {
    vocab: usize,
    pool: Table,
    weights: Table,
    hashes: Vec<UniversalHash>,
    h_w: UniversalHash,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

impl HashEmbedding {
    pub const NAME: &'static str = "hash_embedding";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: HashEmbeddingOptions = p.options(Self::NAME)?;
        let bad = |r: String| MethodError::BadOptions { method: Self::NAME.into(), reason: r };
        if !(1..=16).contains(&o.k) {
            return Err(bad(format!("k must be in 1..=16, got {}", o.k)));
        }
        if !(o.weight_fraction > 0.0 && o.weight_fraction < 1.0) {
            return Err(bad(format!("weight_fraction must be in (0, 1), got {}", o.weight_fraction)));
        }
        let k_rows = (((o.weight_fraction * p.budget as f64) as u64) / o.k as u64).max(1);
        let pool_rows = p.budget.saturating_sub(k_rows * o.k as u64) / p.dim as u64;
        if pool_rows == 0 {
            return Err(MethodError::Budget { method: Self::NAME.into(), budget: p.budget, reason: format!("needs at least one pool row of {} plus {} importance weights", p.dim, o.k) });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let hashes = (0..o.k).map(|_| UniversalHash::new(pool_rows as usize, &mut rng)).collect();
        let h_w = UniversalHash::new(k_rows as usize, &mut rng);
        let mut pool = Table::new(pool_rows as usize, p.dim, p.optimizer);
        pool.init_uniform(p.init_scale, &mut rng);
        let mut weights = Table::new(k_rows as usize, o.k, p.optimizer);
        weights.weights.fill(1.0 / (o.k as f32).sqrt());
        Ok(HashEmbedding { vocab: p.vocab, pool, weights, hashes, h_w, rows_buf: vec![], grad_buf: vec![] })
    }
}

impl EmbeddingMethod for HashEmbedding {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.pool.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        for (o, &id) in out.chunks_exact_mut(self.pool.dim).zip(ids) {
            o.fill(0.0);
            let w = self.weights.row(self.h_w.hash(id) as usize);
            for (h, &wi) in self.hashes.iter().zip(w) {
                o.iter_mut().zip(self.pool.row(h.hash(id) as usize)).for_each(|(o, &v)| *o += wi * v);
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let (d, k) = (self.pool.dim, self.hashes.len());
        // Importance weights: d e / d p_i = pool[h_i(id)], so their gradient is <pool row, g>.
        self.rows_buf.clear();
        self.grad_buf.clear();
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            self.rows_buf.push(self.h_w.hash(id));
            for h in &self.hashes {
                self.grad_buf.push(self.pool.row(h.hash(id) as usize).iter().zip(g).map(|(a, b)| a * b).sum());
            }
        }
        let (w_rows, w_grads) = (std::mem::take(&mut self.rows_buf), std::mem::take(&mut self.grad_buf));
        // Pool rows (with the weights before this step): d e / d pool[h_i(id)] = p_i(id).
        let mut rows = Vec::with_capacity(ids.len() * k);
        let mut grads = Vec::with_capacity(ids.len() * k * d);
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            let w = self.weights.row(self.h_w.hash(id) as usize);
            for (h, &wi) in self.hashes.iter().zip(w) {
                rows.push(h.hash(id));
                grads.extend(g.iter().map(|&x| wi * x));
            }
        }
        self.weights.update(&w_rows, &w_grads);
        self.pool.update(&rows, &grads);
        self.rows_buf = w_rows;
        self.grad_buf = w_grads;
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.pool.param_count() + self.weights.param_count(),
            optimizer_state_bytes: self.pool.state_bytes() + self.weights.state_bytes(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * (self.hashes.len() as u64 + 1),
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.pool.weights, &mut self.weights.weights]
    }
    fn row_widths(&mut self) -> Vec<usize> {
        vec![self.pool.dim, self.weights.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(HashEmbedding::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_errors() {
        for k in [1, 2, 3] {
            check_gradients(&build, &MethodParams::new(1000, 4, 60).with_options(json!({ "k": k })), &[3, 5, 3, 999, 17, 250]);
        }
        check_budgets(&build, 10_000, 16, &[64, 100, 3200, 99_999]);
        let m = HashEmbedding::new(&MethodParams::new(10_000, 16, 3200)).unwrap();
        // 800 / 2 = 400 weight rows of 2, (3200 - 800) / 16 = 150 pool rows.
        assert_eq!((m.weights.rows, m.pool.rows), (400, 150));
        assert!(HashEmbedding::new(&MethodParams::new(100, 16, 16)).is_err());
        assert!(HashEmbedding::new(&MethodParams::new(100, 4, 40).with_options(json!({"weight_fraction": 1.0}))).is_err());
    }
}
