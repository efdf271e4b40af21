//! Quotient-remainder compositional embeddings (Shi et al., KDD 2020): a quotient table indexed by
//! `id / m` (ceil(vocab / m) rows) and a remainder table indexed by `id mod m` (m rows), combined
//! by element-wise product (`mult`), sum (`add`) or concatenation (`concat`, each table dim/2).
//!
//! `m` is chosen from the budget: the smallest m with `ceil(vocab/m) + m <= budget_rows`, which
//! uses the most of the budget. QR cannot always spend the budget to within one row (the two
//! table sizes are tied to each other through m); the shortfall is reported exactly by
//! `accounting` and is at most `min over feasible m` rounding, typically a few rows.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};
use crate::export::{self, Export, Index};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combiner {
    #[default]
    Mult,
    Add,
    Concat,
}

/// How the modulus m is derived from the budget (all spend `m + ceil(vocab/m)` rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Modulus {
    /// The smallest m that fits (DLRM's `qr-collisions` form at large budgets: a tiny remainder
    /// table and a quotient table of ceil(vocab/m) rows).
    #[default]
    Smallest,
    /// The largest m that fits: a remainder table of about the budget's rows (like hashing by
    /// `id mod m`) and a small quotient table telling its colliding ids apart.
    Largest,
    /// m = ceil(sqrt(vocab)): two tables of about sqrt(vocab) rows; leaves the rest of the
    /// budget unused.
    Balanced,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QrOptions {
    #[serde(default)]
    combiner: Combiner,
    /// Fix the remainder modulus instead of deriving it from the budget.
    m: Option<usize>,
    /// Which m to derive when `m` is not given.
    #[serde(default)]
    modulus: Modulus,
}

pub struct Qr {
    vocab: usize,
    dim: usize,
    m: usize,
    combiner: Combiner,
    quotient: Table,
    remainder: Table,
    rows_q: Vec<u32>,
    rows_r: Vec<u32>,
    grad_q: Vec<f32>,
    grad_r: Vec<f32>,
}

/// Smallest m with ceil(v/m) + m <= rows, if any.
pub fn choose_m(vocab: usize, rows: usize) -> Option<usize> {
    // f(m) = m + ceil(v/m) is minimised near sqrt(v); scan up to there.
    let top = ((vocab as f64).sqrt().ceil() as usize + 1).min(vocab.max(1));
    (1..=top).find(|&m| m + vocab.div_ceil(m) <= rows)
}

/// The modulus of rule `rule`, if any m fits in `rows`.
pub fn choose_modulus(vocab: usize, rows: usize, rule: Modulus) -> Option<usize> {
    let fits = |m: usize| m >= 1 && m + vocab.div_ceil(m) <= rows;
    match rule {
        Modulus::Smallest => choose_m(vocab, rows),
        // Above sqrt(v) f(m) grows with m: scan down from the largest candidate.
        Modulus::Largest => {
            let low = (vocab as f64).sqrt().floor() as usize;
            (low.max(1)..=vocab.min(rows)).rev().find(|&m| fits(m))
        }
        Modulus::Balanced => Some((vocab as f64).sqrt().ceil() as usize).filter(|&m| fits(m)),
    }
}

impl Qr {
    pub const NAME: &'static str = "qr";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: QrOptions = p.options(Self::NAME)?;
        let table_dim = match o.combiner {
            Combiner::Concat => {
                if !p.dim.is_multiple_of(2) {
                    return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: format!("concat needs an even dim, got {}", p.dim) });
                }
                p.dim / 2
            }
            _ => p.dim,
        };
        let rows = (p.budget / table_dim as u64) as usize;
        let m = match o.m {
            Some(m) => {
                if m == 0 || m + p.vocab.div_ceil(m) > rows {
                    return Err(MethodError::Budget { method: Self::NAME.into(), budget: p.budget, reason: format!("m = {m} needs {} rows of dim {table_dim}", m.max(1) + p.vocab.div_ceil(m.max(1))) });
                }
                m
            }
            None => choose_modulus(p.vocab, rows, o.modulus).ok_or_else(|| MethodError::Budget {
                method: Self::NAME.into(),
                budget: p.budget,
                reason: format!("quotient + remainder tables need at least {} rows of dim {table_dim}", (1..=p.vocab).map(|m| m + p.vocab.div_ceil(m)).min().unwrap_or(2)),
            })?,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut quotient = Table::new(p.vocab.div_ceil(m), table_dim, p.optimizer);
        let mut remainder = Table::new(m, table_dim, p.optimizer);
        // Keep the combined vector's scale comparable to the other methods'.
        let a = match o.combiner {
            Combiner::Mult => p.init_scale.sqrt(),
            Combiner::Add => p.init_scale / std::f32::consts::SQRT_2,
            Combiner::Concat => p.init_scale,
        };
        quotient.init_uniform(a, &mut rng);
        remainder.init_uniform(a, &mut rng);
        Ok(Qr { vocab: p.vocab, dim: p.dim, m, combiner: o.combiner, quotient, remainder, rows_q: vec![], rows_r: vec![], grad_q: vec![], grad_r: vec![] })
    }

    #[cfg(test)]
    pub fn modulus(&self) -> usize {
        self.m
    }
}

impl EmbeddingMethod for Qr {
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
        let m = self.m as u32;
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            let q = self.quotient.row((id / m) as usize);
            let r = self.remainder.row((id % m) as usize);
            match self.combiner {
                Combiner::Mult => o.iter_mut().zip(q.iter().zip(r)).for_each(|(o, (a, b))| *o = a * b),
                Combiner::Add => o.iter_mut().zip(q.iter().zip(r)).for_each(|(o, (a, b))| *o = a + b),
                Combiner::Concat => {
                    let h = self.dim / 2;
                    o[..h].copy_from_slice(q);
                    o[h..].copy_from_slice(r);
                }
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let m = self.m as u32;
        let td = self.quotient.dim;
        self.rows_q.clear();
        self.rows_r.clear();
        self.rows_q.extend(ids.iter().map(|&id| id / m));
        self.rows_r.extend(ids.iter().map(|&id| id % m));
        self.grad_q.clear();
        self.grad_r.clear();
        for (i, g) in grad.chunks_exact(self.dim).enumerate() {
            match self.combiner {
                Combiner::Mult => {
                    let q = self.quotient.row(self.rows_q[i] as usize);
                    let r = self.remainder.row(self.rows_r[i] as usize);
                    self.grad_q.extend(g.iter().zip(r).map(|(g, r)| g * r));
                    self.grad_r.extend(g.iter().zip(q).map(|(g, q)| g * q));
                }
                Combiner::Add => {
                    self.grad_q.extend_from_slice(g);
                    self.grad_r.extend_from_slice(g);
                }
                Combiner::Concat => {
                    self.grad_q.extend_from_slice(&g[..td]);
                    self.grad_r.extend_from_slice(&g[td..]);
                }
            }
        }
        self.quotient.update(&self.rows_q, &self.grad_q);
        self.remainder.update(&self.rows_r, &self.grad_r);
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.quotient.param_count() + self.remainder.param_count(),
            optimizer_state_bytes: self.quotient.state_bytes() + self.remainder.state_bytes(),
            index_bytes: 0,
            other_bytes: 0,
            ..Accounting::default()
        }
    }
    fn export(&self) -> Option<Export> {
        let (q, r, m) = (&self.quotient, &self.remainder, self.m as u64);
        let arrays = vec![
            ("quotient".into(), export::table(q.rows, q.dim, &q.weights)),
            ("remainder".into(), export::table(r.rows, r.dim, &r.weights)),
        ];
        let (tq, tr) = (export::term("quotient", Index::Quotient { m }), export::term("remainder", Index::Remainder { m }));
        let parts = match self.combiner {
            Combiner::Mult => vec![export::Part { width: q.dim, combine: export::Combine::Product, terms: vec![tq, tr] }],
            Combiner::Add => vec![export::sum(q.dim, vec![tq, tr])],
            Combiner::Concat => vec![export::sum(q.dim, vec![tq]), export::sum(r.dim, vec![tr])],
        };
        Some(Export { arrays, parts })
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.quotient.weights, &mut self.remainder.weights]
    }
    fn row_widths(&mut self) -> Vec<usize> {
        vec![self.quotient.dim, self.remainder.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Qr::new(p).unwrap())
    }

    #[test]
    fn gradients_for_every_combiner() {
        for c in ["mult", "add", "concat"] {
            let p = MethodParams::new(50, 4, 4 * 20).with_options(json!({ "combiner": c }));
            check_gradients(&build, &p, &[3, 5, 3, 49, 10, 13]);
        }
    }

    #[test]
    fn ids_sharing_a_remainder_differ_under_mult() {
        let q = Qr::new(&MethodParams::new(100, 8, 8 * 25)).unwrap();
        let m = q.modulus() as u32;
        let mut out = vec![0.0; 16];
        q.forward(&[3, 3 + m], &mut out);
        assert_ne!(&out[..8], &out[8..]);
    }

    #[test]
    fn modulus_rules() {
        // 10,000 ids, 300 rows: smallest m = 39 (39 + 257), largest 261 (261 + 39), balanced 100.
        assert_eq!(choose_modulus(10_000, 300, Modulus::Smallest), Some(39));
        assert_eq!(choose_modulus(10_000, 300, Modulus::Largest), Some(261));
        assert_eq!(choose_modulus(10_000, 300, Modulus::Balanced), Some(100));
        for rule in [Modulus::Smallest, Modulus::Largest, Modulus::Balanced] {
            assert_eq!(choose_modulus(10_000, 199, rule), None, "{rule:?}");
            let m = choose_modulus(10_000, 300, rule).unwrap();
            assert!(m + 10_000usize.div_ceil(m) <= 300);
        }
        let q = Qr::new(&MethodParams::new(10_000, 16, 16 * 300).with_options(json!({"modulus": "largest"}))).unwrap();
        assert_eq!(q.modulus(), 261);
    }

    #[test]
    fn budget_within_documented_rounding() {
        for (v, d, b) in [(10_000usize, 16usize, 3200u64), (10_000, 16, 16_000), (1000, 4, 400), (5000, 8, 8 * 150)] {
            let q = Qr::new(&MethodParams::new(v, d, b)).unwrap();
            let t = q.accounting().trainable_params;
            let rows = b as usize / d;
            // Exactly the rows of m and ceil(v/m) ...
            assert_eq!(t as usize, (q.modulus() + v.div_ceil(q.modulus())) * d);
            assert!(t <= b);
            // ... and no smaller m fits (so no larger use of the budget is possible).
            assert!((1..q.modulus()).all(|m| m + v.div_ceil(m) > rows));
        }
        let err = Qr::new(&MethodParams::new(10_000, 16, 16 * 150)).err().unwrap().to_string();
        assert!(err.contains("at least 200 rows"), "{err}");
        let err = Qr::new(&MethodParams::new(100, 5, 1000).with_options(json!({"combiner": "concat"}))).err().unwrap().to_string();
        assert!(err.contains("even dim"), "{err}");
        let err = Qr::new(&MethodParams::new(100, 4, 1000).with_options(json!({"combiner": "max"}))).err().unwrap().to_string();
        assert!(err.contains("bad options"), "{err}");
    }
}
