//! Low-dimension tables with a learned projection (Ginart et al., "Mixed dimension embeddings",
//! ISIT 2021; DLRM's `md` option): a full table of dimension d' < dim, one row per id, followed
//! by a learned `d' x dim` projection: `e(id) = P^T t[id]`.
//!
//! d' is the option `low_dim`, or by default the largest d' with `vocab·d' + d'·dim <= budget`.
//! Under a per-table cap this is the mixed-dimension rule by cardinality: a table with more ids
//! gets a smaller d'.
//!
//! With `alpha: α`, the dims of all compressed tables (those with `vocab·dim > budget`) are set
//! jointly by DLRM's power-law rule (`md_solver` with a total budget B): `d_t = λ n_t^(-α)`,
//! rounded and clamped to `1..=dim`, where λ is the largest value (found by bisection) with
//! `Σ_t (n_t + dim)·d_t <= B` and B = (number of compressed tables)·budget. α = 0 gives every
//! table the same d'; α = 1 gives every table about the same parameter count. The budget then
//! holds for the compressed tables together, not per table: a large table may take more than
//! its cap, a small one less. Mixed dimension by frequency (Ginart et al.'s other variant) needs
//! id counts before training and is not implemented. Trainable parameters: vocab·d' + d'·dim, no
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
    /// DLRM's mixed-dimension temperature α: set every compressed table's d' jointly.
    pub alpha: Option<f64>,
}

/// DLRM's α rule: d' of each table in `vocabs` that `vocab·dim > budget` compresses (`None` for
/// the rest), under the joint budget described in the module docs. `Err` with the smallest joint
/// cost when not even d' = 1 everywhere fits.
pub fn alpha_dims(vocabs: &[usize], dim: usize, budget: u64, alpha: f64) -> Result<Vec<Option<usize>>, f64> {
    let compressed: Vec<bool> = vocabs.iter().map(|&n| n as u64 * dim as u64 > budget).collect();
    let total = budget as f64 * compressed.iter().filter(|&&c| c).count() as f64;
    let dims_at = |lambda: f64| -> Vec<Option<usize>> {
        vocabs.iter().zip(&compressed).map(|(&n, &c)| c.then(|| ((lambda * (n as f64).powf(-alpha)).round() as usize).clamp(1, dim))).collect()
    };
    let cost = |d: &[Option<usize>]| -> f64 { d.iter().zip(vocabs).map(|(d, &n)| d.map_or(0.0, |d| ((n + dim) * d) as f64)).sum() };
    let least = cost(&dims_at(0.0));
    if least > total {
        return Err(least);
    }
    // Bisection on log λ: cost is non-decreasing in λ.
    let (mut lo, mut hi) = (-60.0f64, 60.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cost(&dims_at(mid.exp())) <= total {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(dims_at(lo.exp()))
}

pub struct LowDim {
    t: ProjectedTable,
    rows_buf: Vec<u32>,
}

/// A table of width d' with an optional learned `d' x dim` projection (`None`: d' = dim, the
/// rows are the vectors): `e(r) = P^T t[r]`. Shared by low-dim and the frequency blocks of
/// mixed dimension.
pub(crate) struct ProjectedTable {
    pub table: Table,
    pub proj: Option<Table>,
    pub dim: usize,
    grad_buf: Vec<f32>,
    proj_grad: Vec<f32>,
    proj_rows: Vec<u32>,
}

impl ProjectedTable {
    /// `rows x low` entries U(-init, init); the projection, when `low < dim` or `always_project`,
    /// U(-√(3/d'), √(3/d')): unit variance of each output coordinate's weight sum, so e(r)
    /// starts with the spread of the table rows.
    pub fn new(rows: usize, low: usize, dim: usize, always_project: bool, opt: crate::RowOptimizer, init: f32, rng: &mut impl rand::Rng) -> Self {
        let mut table = Table::new(rows, low, opt);
        table.init_uniform(init, rng);
        let proj = (always_project || low < dim).then(|| {
            let mut p = Table::new(low, dim, opt);
            p.init_uniform((3.0 / low as f32).sqrt(), rng);
            p
        });
        ProjectedTable { table, proj, dim, grad_buf: vec![], proj_grad: vec![], proj_rows: vec![] }
    }

    pub fn forward_row(&self, r: usize, o: &mut [f32]) {
        match &self.proj {
            None => o.copy_from_slice(self.table.row(r)),
            Some(proj) => {
                o.fill(0.0);
                for (a, &t) in self.table.row(r).iter().enumerate() {
                    o.iter_mut().zip(proj.row(a)).for_each(|(o, &p)| *o += t * p);
                }
            }
        }
    }

    /// One optimizer step: `rows[i]` received output gradient `grad[i*dim..]`.
    pub fn backward(&mut self, rows: &[u32], grad: &[f32]) {
        let Some(proj) = &mut self.proj else { return self.table.update(rows, grad) };
        let (d, low) = (self.dim, self.table.dim);
        // dP[a][j] = sum over the batch of t[r][a] g[j]; dt[r][a] = sum_j P[a][j] g[j].
        self.proj_grad.clear();
        self.proj_grad.resize(low * d, 0.0);
        self.grad_buf.clear();
        for (g, &r) in grad.chunks_exact(d).zip(rows) {
            let t = self.table.row(r as usize);
            for a in 0..low {
                let pa = proj.row(a);
                self.grad_buf.push(pa.iter().zip(g).map(|(p, g)| p * g).sum());
                self.proj_grad[a * d..(a + 1) * d].iter_mut().zip(g).for_each(|(s, &gj)| *s += t[a] * gj);
            }
        }
        self.table.update(rows, &self.grad_buf);
        self.proj_rows.clear();
        self.proj_rows.extend(0..low as u32);
        proj.update(&self.proj_rows, &self.proj_grad);
    }

    pub fn param_count(&self) -> u64 {
        self.table.param_count() + self.proj.as_ref().map_or(0, |p| p.param_count())
    }
    pub fn state_bytes(&self) -> u64 {
        self.table.state_bytes() + self.proj.as_ref().map_or(0, |p| p.state_bytes())
    }
    /// The weights (table, then projection) and their row widths.
    pub fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        let mut v = vec![&mut self.table.weights[..]];
        if let Some(p) = &mut self.proj {
            v.push(&mut p.weights[..]);
        }
        v
    }
    pub fn row_widths(&self) -> Vec<usize> {
        let mut v = vec![self.table.dim];
        if let Some(p) = &self.proj {
            v.push(p.dim);
        }
        v
    }
}

impl LowDim {
    pub const NAME: &'static str = "lowdim";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: LowDimOptions = p.options(Self::NAME)?;
        let per_dim = (p.vocab + p.dim) as u64;
        let mut fit = (p.budget / per_dim) as usize;
        let low = match (o.alpha, o.low_dim) {
            (Some(_), Some(_)) => return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: "give low_dim or alpha, not both".into() }),
            (Some(a), None) => {
                if !(a.is_finite() && a >= 0.0) {
                    return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: format!("alpha must be >= 0, got {a}") });
                }
                let vocabs = if p.table_vocabs.is_empty() { vec![p.vocab] } else { p.table_vocabs.clone() };
                let me = vocabs.iter().position(|&v| v == p.vocab).unwrap_or(0);
                // The joint rule may give this table more than its own cap (see the module docs).
                let dims = alpha_dims(&vocabs, p.dim, p.budget, a).map_err(|least| MethodError::Budget {
                    method: Self::NAME.into(),
                    budget: p.budget,
                    reason: format!("the α rule's joint budget cannot hold d' = 1 in every compressed table ({least} parameters)"),
                })?;
                let d = dims[me].unwrap_or(p.dim);
                fit = fit.max(d);
                d
            }
            (None, l) => l.unwrap_or(fit.min(p.dim)),
        };
        if low == 0 || low > fit {
            return Err(MethodError::Budget {
                method: Self::NAME.into(),
                budget: p.budget,
                reason: format!("d' = {} needs {} parameters (vocab·d' + d'·dim); the budget allows d' <= {fit}", low.max(1), low.max(1) as u64 * per_dim),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let t = ProjectedTable::new(p.vocab, low, p.dim, true, p.optimizer, p.init_scale, &mut rng);
        Ok(LowDim { t, rows_buf: vec![] })
    }
}

impl EmbeddingMethod for LowDim {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.t.table.rows
    }
    fn dim(&self) -> usize {
        self.t.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        for (o, &id) in out.chunks_exact_mut(self.t.dim).zip(ids) {
            self.t.forward_row(id as usize, o);
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        self.rows_buf.clear();
        self.rows_buf.extend_from_slice(ids);
        self.t.backward(&self.rows_buf, grad);
    }
    fn accounting(&self) -> Accounting {
        Accounting { trainable_params: self.t.param_count(), optimizer_state_bytes: self.t.state_bytes(), index_bytes: 0, other_bytes: 0, ..Accounting::default() }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.t.parameters_mut()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.t.row_widths()
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
        assert_eq!((m.t.table.dim, m.accounting().trainable_params), (4, 40_064));
        assert!(LowDim::new(&MethodParams::new(10_000, 16, 10_000)).is_err(), "not even d' = 1 fits");
        assert!(LowDim::new(&MethodParams::new(10_000, 16, 50_000).with_options(json!({"low_dim": 5}))).is_err());
    }

    #[test]
    fn alpha_rule_shares_one_budget_across_tables() {
        let vocabs = [100, 10_000, 200_000, 40];
        let (dim, budget) = (16, 150_000u64);
        assert!(alpha_dims(&vocabs, dim, 100_000, 0.5).is_err(), "d' = 1 needs 210,032 > 2 x 100,000");
        for alpha in [0.0, 0.3, 1.0] {
            let d = alpha_dims(&vocabs, dim, budget, alpha).unwrap();
            assert_eq!(d[3], None, "40 x 16 fits the cap: dense");
            assert_eq!(d[0], None);
            let cost: usize = d.iter().zip(&vocabs).map(|(d, &n)| d.map_or(0, |d| (n + dim) * d)).sum();
            assert!(cost as u64 <= 2 * budget, "alpha {alpha}: {cost} over the joint budget");
            assert!(d[1].unwrap() >= d[2].unwrap(), "more ids, no larger dim");
        }
        // α = 0: one d' for all; α = 1: the larger table gets a much smaller d'.
        let d0 = alpha_dims(&vocabs, dim, budget, 0.0).unwrap();
        assert_eq!(d0[1], d0[2]);
        let d1 = alpha_dims(&vocabs, 64, 500_000, 1.0).unwrap();
        assert!(d1[1].unwrap() > 5 * d1[2].unwrap(), "{d1:?}");
        // Built through the method: the table's d' is the rule's; gradients check out.
        let p = MethodParams { table_vocabs: vec![30, 300, 3000], ..MethodParams::new(300, 8, 2000) }.with_options(json!({"alpha": 0.5}));
        let want = alpha_dims(&[30, 300, 3000], 8, 2000, 0.5).unwrap()[1].unwrap();
        assert_eq!(want, 3);
        assert_eq!(LowDim::new(&p).unwrap().t.table.dim, want);
        check_gradients(&build, &p, &[3, 5, 3, 299]);
        assert!(LowDim::new(&p.clone().with_options(json!({"alpha": 0.5, "low_dim": 2}))).is_err());
    }
}
