//! TT-Rec (Yin et al., MLSys 2021): the `vocab x dim` table as a tensor train of three cores.
//!
//! The vocabulary is factorised as `n1 · n2 · n3 >= vocab` (n1 = n2 = ⌈vocab^(1/3)⌉) and the
//! dimension as `d1 · d2 · d3 = dim` (the most balanced factors). An id is the multi-index
//! (i1, i2, i3) and its vector, viewed as `[d1, d2, d3]`, is
//! `e[a, b, c] = sum_{s, t} G1[i1][a, s] · G2[i2][s, b, t] · G3[i3][t, c]`
//! with TT rank r: cores of `n1 x (d1 r)`, `n2 x (r d2 r)`, `n3 x (r d3)`.
//!
//! Budget: the largest r with `n1 d1 r + n2 r² d2 + n3 r d3 <= budget` (option `rank` fixes it).
//! Trainable parameters: the cores; no index arrays. Each core is a table whose rows are its
//! slices, so updates are sparse: an id touches one slice of each core. Entries start uniform
//! with the spread that gives a vector the spread of the other methods' rows.
//!
//! Against the CQR authors' TT (thomasahle/cce `cce/tt.py`): theirs splits the vocabulary into
//! `n_chunks` equal factors ⌈vocab^(1/n_chunks)⌉ and the dimension into ⌈dim^(1/n_chunks)⌉ each
//! (cropping the surplus), takes the rank as an argument, starts its cores uniform so that
//! output vectors have unit norm, and is trained by dense AdamW over every core; ours uses three
//! cores, exact dimension factors (no crop), the largest rank the budget allows, the harness's
//! `init_scale` spread, and sparse updates of the touched core slices. Under their MovieLens
//! protocol our curve rises to 512 rows per table and falls at 1,024, where the user table is
//! stored in full beside a TT item table; fixing the rank there does not recover it (RESULTS.md,
//! `results/ttrec-rank`), nor does their start (`init: authors`: −0.004 best validation AUC at
//! 512 rows, within noise elsewhere), so ours stays the default.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtRecOptions {
    /// TT rank (default: the largest the budget allows).
    pub rank: Option<usize>,
    /// How the cores start (default `spread`).
    pub init: TtInit,
}

/// The start of the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtInit {
    /// Every entry uniform with the spread that gives a vector the other methods' spread.
    #[default]
    Spread,
    /// The CQR authors' (`cce/tt.py`, split dimensions): the first core uniform in ±d1^-½, the
    /// others in ±(d_k · r)^-½, independent of `init_scale`.
    Authors,
}

pub struct TtRec {
    vocab: usize,
    dim: usize,
    n: [usize; 3],
    d: [usize; 3],
    r: usize,
    cores: [Table; 3],
    rows_buf: [Vec<u32>; 3],
    grad_buf: [Vec<f32>; 3],
}

/// The most balanced `d1 · d2 · d3 = dim`: smallest largest factor, then largest smallest.
fn factor3(dim: usize) -> [usize; 3] {
    let mut best = [1, 1, dim];
    for a in 1..=dim {
        for b in 1..=dim / a {
            if dim.is_multiple_of(a * b) {
                let c = dim / (a * b);
                let key = |f: &[usize; 3]| (*f.iter().max().unwrap(), usize::MAX - *f.iter().min().unwrap());
                let cand = [a, b, c];
                if key(&cand) < key(&best) {
                    best = cand;
                }
            }
        }
    }
    best
}

impl TtRec {
    pub const NAME: &'static str = "ttrec";

    fn params(n: [usize; 3], d: [usize; 3], r: usize) -> u64 {
        (n[0] * d[0] * r + n[1] * r * d[1] * r + n[2] * r * d[2]) as u64
    }

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: TtRecOptions = p.options(Self::NAME)?;
        let side = (p.vocab as f64).cbrt().ceil() as usize;
        let n = [side, side, p.vocab.div_ceil(side * side)];
        let d = factor3(p.dim);
        let fit = (1..).take_while(|&r| Self::params(n, d, r) <= p.budget).last().unwrap_or(0);
        let r = o.rank.unwrap_or(fit);
        if r == 0 || r > fit {
            return Err(MethodError::Budget {
                method: Self::NAME.into(),
                budget: p.budget,
                reason: format!("rank {} needs {} parameters (cores {n:?} x dims {d:?}); the budget allows rank <= {fit}", r.max(1), Self::params(n, d, r.max(1))),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        // e is a sum of r² products of three entries: entry std σ with r² σ⁶ = (a²/3).
        let sigma = ((p.init_scale as f64).powi(2) / 3.0 / (r * r) as f64).powf(1.0 / 6.0);
        let spread = (sigma * 3f64.sqrt()) as f32;
        let bounds = match o.init {
            TtInit::Spread => [spread; 3],
            TtInit::Authors => [(d[0] as f32).powf(-0.5), ((d[1] * r) as f32).powf(-0.5), ((d[2] * r) as f32).powf(-0.5)],
        };
        let widths = [d[0] * r, r * d[1] * r, r * d[2]];
        let cores = [0, 1, 2].map(|k| {
            let mut t = Table::new(n[k], widths[k], p.optimizer);
            t.init_uniform(bounds[k], &mut rng);
            t
        });
        Ok(TtRec { vocab: p.vocab, dim: p.dim, n, d, r, cores, rows_buf: Default::default(), grad_buf: Default::default() })
    }

    fn index(&self, id: u32) -> [usize; 3] {
        let id = id as usize;
        [id / (self.n[1] * self.n[2]), (id / self.n[2]) % self.n[1], id % self.n[2]]
    }

    /// T[a, b, t] = sum_s G1[a, s] G2[s, b, t] for the id's slices (`d1 x d2 x r`).
    fn left(&self, g1: &[f32], g2: &[f32], out: &mut Vec<f32>) {
        let ([d1, d2, _], r) = (self.d, self.r);
        out.clear();
        out.resize(d1 * d2 * r, 0.0);
        for a in 0..d1 {
            for s in 0..r {
                let x = g1[a * r + s];
                let src = &g2[s * d2 * r..(s + 1) * d2 * r];
                out[a * d2 * r..(a + 1) * d2 * r].iter_mut().zip(src).for_each(|(o, &v)| *o += x * v);
            }
        }
    }
}

impl EmbeddingMethod for TtRec {
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
        let ([d1, d2, d3], r) = (self.d, self.r);
        let mut t = vec![];
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            let [i1, i2, i3] = self.index(id);
            self.left(self.cores[0].row(i1), self.cores[1].row(i2), &mut t);
            let g3 = self.cores[2].row(i3);
            o.fill(0.0);
            for ab in 0..d1 * d2 {
                for s in 0..r {
                    let x = t[ab * r + s];
                    o[ab * d3..(ab + 1) * d3].iter_mut().zip(&g3[s * d3..(s + 1) * d3]).for_each(|(o, &v)| *o += x * v);
                }
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let ([d1, d2, d3], r) = (self.d, self.r);
        let widths = [d1 * r, r * d2 * r, r * d3];
        for k in 0..3 {
            self.rows_buf[k].clear();
            self.grad_buf[k].clear();
        }
        let (mut t, mut dt) = (vec![], vec![0.0f32; d1 * d2 * r]);
        for (g, &id) in grad.chunks_exact(self.dim).zip(ids) {
            let idx = self.index(id);
            let (g1, g2, g3) = (self.cores[0].row(idx[0]), self.cores[1].row(idx[1]), self.cores[2].row(idx[2]));
            self.left(g1, g2, &mut t);
            // dG3[s, c] = sum_ab T[ab, s] g[ab, c]; dT[ab, s] = sum_c g[ab, c] G3[s, c].
            let base: [usize; 3] = [0, 1, 2].map(|k| self.grad_buf[k].len());
            for (k, w) in widths.iter().enumerate() {
                self.rows_buf[k].push(idx[k] as u32);
                self.grad_buf[k].resize(base[k] + w, 0.0);
            }
            for ab in 0..d1 * d2 {
                let gab = &g[ab * d3..(ab + 1) * d3];
                for s in 0..r {
                    let x = t[ab * r + s];
                    let row3 = &g3[s * d3..(s + 1) * d3];
                    dt[ab * r + s] = gab.iter().zip(row3).map(|(a, b)| a * b).sum();
                    self.grad_buf[2][base[2] + s * d3..base[2] + (s + 1) * d3].iter_mut().zip(gab).for_each(|(o, &v)| *o += x * v);
                }
            }
            // dG1[a, s] = sum_{b,t} dT[a, b, t] G2[s, b, t]; dG2[s, b, t] = sum_a G1[a, s] dT[a, b, t].
            for a in 0..d1 {
                let dta = &dt[a * d2 * r..(a + 1) * d2 * r];
                for s in 0..r {
                    let row2 = &g2[s * d2 * r..(s + 1) * d2 * r];
                    self.grad_buf[0][base[0] + a * r + s] = dta.iter().zip(row2).map(|(a, b)| a * b).sum();
                    let x = g1[a * r + s];
                    self.grad_buf[1][base[1] + s * d2 * r..base[1] + (s + 1) * d2 * r].iter_mut().zip(dta).for_each(|(o, &v)| *o += x * v);
                }
            }
        }
        for k in 0..3 {
            self.cores[k].update(&self.rows_buf[k], &self.grad_buf[k]);
        }
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.cores.iter().map(Table::param_count).sum(),
            optimizer_state_bytes: self.cores.iter().map(Table::state_bytes).sum(),
            index_bytes: 0,
            other_bytes: 0,
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.cores.iter_mut().map(|c| c.weights.as_mut_slice()).collect()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.cores.iter().map(|c| c.dim).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(TtRec::new(p).unwrap())
    }

    #[test]
    fn the_authors_init_bounds_each_core_by_its_own_width() {
        let m = TtRec::new(&MethodParams::new(1000, 16, 3200).with_options(json!({"init": "authors"}))).unwrap();
        let ([d1, d2, d3], r) = (m.d, m.r);
        let bounds = [(d1 as f32).powf(-0.5), ((d2 * r) as f32).powf(-0.5), ((d3 * r) as f32).powf(-0.5)];
        for (core, b) in m.cores.iter().zip(bounds) {
            let max = core.weights.iter().fold(0.0f32, |a, w| a.max(w.abs()));
            assert!(max <= b && max > 0.8 * b, "max {max} vs bound {b}");
        }
        // The default start does not depend on the option's existence.
        let a = TtRec::new(&MethodParams::new(1000, 16, 3200)).unwrap();
        let b = TtRec::new(&MethodParams::new(1000, 16, 3200).with_options(json!({"init": "spread"}))).unwrap();
        assert_eq!(a.cores[1].weights, b.cores[1].weights);
    }

    #[test]
    fn gradients_factors_and_budget() {
        assert_eq!(factor3(16), [2, 2, 4]);
        assert_eq!(factor3(12), [2, 2, 3]);
        assert_eq!(factor3(7), [1, 1, 7]);
        check_gradients(&build, &MethodParams::new(60, 8, 200).with_options(json!({"rank": 2})), &[3, 5, 3, 59, 17, 25]);
        check_gradients(&build, &MethodParams::new(30, 4, 500), &[0, 29, 29, 7]);
        // 1M ids, dim 16: n = [100, 100, 100], d = [2, 2, 4]: 200 r + 200 r² + 400 r <= 3200 -> r = 2.
        let m = TtRec::new(&MethodParams::new(1_000_000, 16, 3200)).unwrap();
        assert_eq!((m.n, m.d, m.r), ([100, 100, 100], [2, 2, 4], 2));
        assert_eq!(m.accounting().trainable_params, 400 + 800 + 800);
        assert!(TtRec::new(&MethodParams::new(1_000_000, 16, 500)).is_err());
        // Distinct ids get distinct vectors (the multi-index is a bijection on 0..vocab).
        let ids: Vec<u32> = (0..60).collect();
        let mut out = vec![0.0; 60 * 8];
        TtRec::new(&MethodParams::new(60, 8, 400)).unwrap().forward(&ids, &mut out);
        let mut rows: Vec<Vec<u32>> = out.chunks(8).map(|c| c.iter().map(|v| v.to_bits()).collect()).collect();
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), 60);
    }
}
