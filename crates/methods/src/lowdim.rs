//! Low-dimension tables with a learned projection (Ginart et al., "Mixed dimension embeddings",
//! ISIT 2021; DLRM's `md` option): a full table of dimension d' < dim, one row per id, followed
//! by a learned `d' x dim` projection: `e(id) = P^T t[id]`.
//!
//! d' is the option `low_dim`, or by default the largest d' with `vocab·d' + d'·dim <= budget`.
//! Under a per-table cap this is the mixed-dimension rule by cardinality: a table with more ids
//! gets a smaller d' (DLRM's power-law rule with temperature α sets the dims of all tables
//! jointly; with per-table caps, the cap sets them). Trainable parameters: vocab·d' + d'·dim, no
//! index arrays. The table's gradient is sparse (rows of the batch); the projection's is dense,
//! summed over the batch and applied once per step to its d' rows.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowDimOptions {
    /// The table's dimension d' (default: the largest the budget allows).
    pub low_dim: Option<usize>,
}

pub struct LowDim {
    table: Table,
    proj: Table,
    dim: usize,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
    proj_grad: Vec<f32>,
}

impl LowDim {
    pub const NAME: &'static str = "lowdim";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: LowDimOptions = p.options(Self::NAME)?;
        let per_dim = (p.vocab + p.dim) as u64;
        let fit = (p.budget / per_dim) as usize;
        let low = o.low_dim.unwrap_or(fit.min(p.dim));
        if low == 0 || low > fit {
            return Err(MethodError::Budget {
                method: Self::NAME.into(),
                budget: p.budget,
                reason: format!("d' = {} needs {} parameters (vocab·d' + d'·dim); the budget allows d' <= {fit}", low.max(1), low.max(1) as u64 * per_dim),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut table = Table::new(p.vocab, low, p.optimizer);
        table.init_uniform(p.init_scale, &mut rng);
        // Projection entries U(-√(3/d'), √(3/d')): unit variance per output coordinate's weights
        // sum, so e(id) starts with the spread of the table rows.
        let mut proj = Table::new(low, p.dim, p.optimizer);
        proj.init_uniform((3.0 / low as f32).sqrt(), &mut rng);
        Ok(LowDim { table, proj, dim: p.dim, rows_buf: vec![], grad_buf: vec![], proj_grad: vec![] })
    }
}

impl EmbeddingMethod for LowDim {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.table.rows
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            o.fill(0.0);
            for (a, &t) in self.table.row(id as usize).iter().enumerate() {
                o.iter_mut().zip(self.proj.row(a)).for_each(|(o, &p)| *o += t * p);
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let (d, low) = (self.dim, self.table.dim);
        // dP[a][j] = sum over the batch of t[id][a] g[j]; dt[id][a] = sum_j P[a][j] g[j].
        self.proj_grad.clear();
        self.proj_grad.resize(low * d, 0.0);
        self.grad_buf.clear();
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            let t = self.table.row(id as usize);
            for a in 0..low {
                let pa = self.proj.row(a);
                self.grad_buf.push(pa.iter().zip(g).map(|(p, g)| p * g).sum());
                self.proj_grad[a * d..(a + 1) * d].iter_mut().zip(g).for_each(|(s, &gj)| *s += t[a] * gj);
            }
        }
        self.rows_buf.clear();
        self.rows_buf.extend_from_slice(ids);
        self.table.update(&self.rows_buf, &self.grad_buf);
        self.rows_buf.clear();
        self.rows_buf.extend(0..low as u32);
        self.proj.update(&self.rows_buf, &self.proj_grad);
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.table.param_count() + self.proj.param_count(),
            optimizer_state_bytes: self.table.state_bytes() + self.proj.state_bytes(),
            index_bytes: 0,
            other_bytes: 0,
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights, &mut self.proj.weights]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(LowDim::new(p).unwrap())
    }

    #[test]
    fn gradients_dims_and_budget() {
        check_gradients(&build, &MethodParams::new(30, 4, 2 * 34), &[3, 5, 3, 29, 17, 25]);
        check_gradients(&build, &MethodParams::new(30, 4, 1000).with_options(json!({"low_dim": 1})), &[3, 5, 3, 29]);
        // 10,000 ids, dim 16: d' = ⌊50,000 / 10,016⌋ = 4, 40,064 parameters.
        let m = LowDim::new(&MethodParams::new(10_000, 16, 50_000)).unwrap();
        assert_eq!((m.table.dim, m.accounting().trainable_params), (4, 40_064));
        assert!(LowDim::new(&MethodParams::new(10_000, 16, 10_000)).is_err(), "not even d' = 1 fits");
        assert!(LowDim::new(&MethodParams::new(10_000, 16, 50_000).with_options(json!({"low_dim": 5}))).is_err());
    }
}
