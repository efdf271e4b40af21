//! TT-Rec (Yin et al., MLSys 2021): the `vocab x dim` table as a tensor train of K cores.
//!
//! The vocabulary is factorised as `n_1 ··· n_K >= vocab` and the dimension as `d_1 ··· d_K`. An
//! id is the multi-index (i_1, ..., i_K) (i_1 the most significant digit) and its vector, viewed
//! as `[d_1, ..., d_K]`, is the contraction of one slice of each core over the TT rank r:
//! `e[a_1, ..., a_K] = sum_{s_1..s_{K-1}} G_1[i_1][a_1, s_1] · G_2[i_2][s_1, a_2, s_2] ··· G_K[i_K][s_{K-1}, a_K]`,
//! cores of `n_1 x (d_1 r)`, `n_k x (r d_k r)` and `n_K x (r d_K)`. Two splits (option `split`):
//!
//! - `exact` (default): K = 3, n_1 = n_2 = ⌈vocab^(1/3)⌉, n_3 = ⌈vocab / n_1²⌉, and the most
//!   balanced exact factors `d_1 d_2 d_3 = dim`.
//! - `crop` (the CQR authors' `cce/tt.py`): K = `cores` (default 4, the `n_chunks` of their
//!   MovieLens script), every n_k = ⌈vocab^(1/K)⌉ and every d_k = ⌈dim^(1/K)⌉; the contraction
//!   has `d_1^K >= dim` entries and the vector is its first `dim` (their crop). At small caps it
//!   spends the budget differently: ml-100k's 1,682 items at 512 parameters of dim 32 get rank 3
//!   over 4 cores of 7 slices (504 parameters) against rank 2 over 3 cores of 12 (336).
//!
//! Budget: the largest r whose cores fit the budget (option `rank` fixes it). Trainable
//! parameters: the cores; no index arrays. Each core is a table whose rows are its slices, so
//! updates are sparse: an id touches one slice of each core. Entries start uniform with the
//! spread that gives a vector the spread of the other methods' rows (`init: spread`), or with
//! the authors' bounds (`init: authors`).
//!
//! Against the authors' TT otherwise: they take digits least significant first (a relabelling),
//! order a middle core's slice `[d, r, r]` (ours `[r, d, r]`: the same parameters), and train by
//! dense AdamW over every core; ours updates the touched slices. Under their MovieLens protocol
//! our `exact` curve rises to 512 rows per table and falls at 1,024, where the user table is
//! stored in full beside a TT item table; fixing the rank there does not recover it (RESULTS.md,
//! `results/ttrec-rank`), nor does their start alone (`init: authors`: −0.004 best validation
//! AUC at 512 rows, within noise elsewhere). Their whole design (`split: crop, init: authors`)
//! is ahead of ours at 8-64 rows per table there (+0.010 to +0.037 best validation AUC, 11 of 12
//! seeds; RESULTS.md); `exact` stays the default only because the stored records use it.

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
    /// How the vocabulary and the dimension are split over the cores (default `exact`).
    pub split: TtSplit,
    /// Number of cores, `split: crop` only (default 4; at least 2). `exact` always uses 3.
    pub cores: Option<usize>,
}

/// The start of the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtInit {
    /// Every entry uniform with the spread that gives a vector the other methods' spread.
    #[default]
    Spread,
    /// The CQR authors' (`cce/tt.py`, split dimensions): the first core uniform in ±d_1^-½, the
    /// others in ±(d_k · r)^-½, independent of `init_scale`.
    Authors,
}

/// The factorisation of the vocabulary and the dimension (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TtSplit {
    /// Three cores, balanced vocabulary factors, exact dimension factors.
    #[default]
    Exact,
    /// `cores` equal factors of both, the contraction cropped to `dim` (the authors').
    Crop,
}

pub struct TtRec {
    vocab: usize,
    dim: usize,
    n: Vec<usize>,
    d: Vec<usize>,
    r: usize,
    cores: Vec<Table>,
    rows_buf: Vec<Vec<u32>>,
    grad_buf: Vec<Vec<f32>>,
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

/// The smallest `h` with `h^k >= x`.
fn kth_root_ceil(x: usize, k: usize) -> usize {
    let mut h = ((x as f64).powf(1.0 / k as f64).round() as usize).max(1);
    let pow = |h: usize| (0..k).try_fold(1usize, |a, _| a.checked_mul(h)).unwrap_or(usize::MAX);
    while pow(h) < x {
        h += 1;
    }
    while h > 1 && pow(h - 1) >= x {
        h -= 1;
    }
    h
}

/// Widths of the cores' slices: `d_1 r`, `r d_k r`, ..., `r d_K`.
fn widths(d: &[usize], r: usize) -> Vec<usize> {
    let last = d.len() - 1;
    // An end core has one rank side (`d_1 x r`, `r x d_K`), a middle core two (`r x d_k x r`).
    d.iter().enumerate().map(|(k, &dk)| if k == 0 || k == last { dk * r } else { r * dk * r }).collect()
}

impl TtRec {
    pub const NAME: &'static str = "ttrec";

    fn params(n: &[usize], d: &[usize], r: usize) -> u64 {
        n.iter().zip(widths(d, r)).map(|(&nk, w)| (nk * w) as u64).sum()
    }

    /// The vocabulary and dimension factors of a split.
    fn split(p: &MethodParams, o: &TtRecOptions) -> Result<(Vec<usize>, Vec<usize>), MethodError> {
        let bad = |reason: String| MethodError::BadOptions { method: Self::NAME.into(), reason };
        match o.split {
            TtSplit::Exact => {
                if let Some(k) = o.cores.filter(|&k| k != 3) {
                    return Err(bad(format!("cores: {k} needs `split: crop` (`exact` uses 3 cores)")));
                }
                let side = (p.vocab as f64).cbrt().ceil() as usize;
                Ok((vec![side, side, p.vocab.div_ceil(side * side)], factor3(p.dim).to_vec()))
            }
            TtSplit::Crop => {
                let k = o.cores.unwrap_or(4);
                if !(2..=16).contains(&k) {
                    return Err(bad(format!("cores: {k} is outside 2..=16")));
                }
                Ok((vec![kth_root_ceil(p.vocab, k); k], vec![kth_root_ceil(p.dim, k); k]))
            }
        }
    }

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: TtRecOptions = p.options(Self::NAME)?;
        let (n, d) = Self::split(p, &o)?;
        let fit = (1..).take_while(|&r| Self::params(&n, &d, r) <= p.budget).last().unwrap_or(0);
        let r = o.rank.unwrap_or(fit);
        if r == 0 || r > fit {
            return Err(MethodError::Budget {
                method: Self::NAME.into(),
                budget: p.budget,
                reason: format!("rank {} needs {} parameters (cores {n:?} x dims {d:?}); the budget allows rank <= {fit}", r.max(1), Self::params(&n, &d, r.max(1))),
            });
        }
        let k = n.len();
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        // e is a sum of r^(K-1) products of K entries: entry std σ with r^(K-1) σ^(2K) = a²/3.
        let sigma = ((p.init_scale as f64).powi(2) / 3.0 / r.pow(k as u32 - 1) as f64).powf(1.0 / (2 * k) as f64);
        let spread = (sigma * 3f64.sqrt()) as f32;
        let bound = |j: usize| match o.init {
            TtInit::Spread => spread,
            TtInit::Authors if j == 0 => (d[0] as f32).powf(-0.5),
            TtInit::Authors => ((d[j] * r) as f32).powf(-0.5),
        };
        let cores = widths(&d, r)
            .into_iter()
            .enumerate()
            .map(|(j, w)| {
                let mut t = Table::new(n[j], w, p.optimizer);
                t.init_uniform(bound(j), &mut rng);
                t
            })
            .collect();
        Ok(TtRec { vocab: p.vocab, dim: p.dim, n, d, r, cores, rows_buf: vec![vec![]; k], grad_buf: vec![vec![]; k] })
    }

    /// The id's slice of each core into `idx` (mixed radix, the first core's digit most
    /// significant).
    fn index(&self, id: u32, idx: &mut [usize]) {
        let mut rest = id as usize;
        for (i, &nk) in idx.iter_mut().zip(&self.n).rev() {
            *i = rest % nk;
            rest /= nk;
        }
    }

    /// The prefixes of the contraction for the id's slices: `ts[0]` = G_1's slice (`d_1 x r`),
    /// `ts[j][P, b, t] = sum_s ts[j-1][P, s] G_{j+1}[s, b, t]` (`d_1···d_{j+1} x r`; the last
    /// core has no trailing rank, so `ts[K-1]` is the whole `d_1···d_K` contraction).
    fn prefixes(&self, idx: &[usize], ts: &mut [Vec<f32>]) {
        let r = self.r;
        ts[0].clear();
        ts[0].extend_from_slice(self.cores[0].row(idx[0]));
        let last = self.n.len() - 1;
        for j in 1..=last {
            let (done, rest) = ts.split_at_mut(j);
            let (prev, out, g) = (&done[j - 1], &mut rest[0], self.cores[j].row(idx[j]));
            let w = if j == last { self.d[j] } else { self.d[j] * r };
            out.clear();
            out.resize(prev.len() * self.d[j], 0.0);
            for p in 0..prev.len() / r {
                for s in 0..r {
                    let x = prev[p * r + s];
                    out[p * w..(p + 1) * w].iter_mut().zip(&g[s * w..(s + 1) * w]).for_each(|(o, &v)| *o += x * v);
                }
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
        let k = self.n.len();
        let (mut ts, mut idx) = (vec![vec![]; k], vec![0; k]);
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            self.index(id, &mut idx);
            self.prefixes(&idx, &mut ts);
            o.copy_from_slice(&ts[k - 1][..self.dim]);
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let k = self.n.len();
        let widths = widths(&self.d, self.r);
        for j in 0..k {
            self.rows_buf[j].clear();
            self.grad_buf[j].clear();
        }
        let (mut ts, mut idx) = (vec![vec![]; k], vec![0; k]);
        let (mut base, mut dt, mut dprev, full) = (vec![0; k], vec![], vec![], self.d.iter().product());
        for (g, &id) in grad.chunks_exact(self.dim).zip(ids) {
            self.index(id, &mut idx);
            self.prefixes(&idx, &mut ts);
            dt.clear();
            dt.resize(full, 0.0);
            dt[..self.dim].copy_from_slice(g);
            for (j, w) in widths.iter().enumerate() {
                base[j] = self.grad_buf[j].len();
                self.rows_buf[j].push(idx[j] as u32);
                self.grad_buf[j].resize(base[j] + w, 0.0);
            }
            self.backward_one(&idx, &ts, &base, (&mut dt, &mut dprev));
            self.grad_buf[0][base[0]..].copy_from_slice(&dt);
        }
        for j in 0..k {
            self.cores[j].update(&self.rows_buf[j], &self.grad_buf[j]);
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

impl TtRec {
    /// One id's gradients: `dt` holds the vector's gradient zero-padded to `d_1···d_K`; adds
    /// dG_K, ..., dG_2 into `grad_buf` at `base` and leaves dG_1 (the gradient of the first
    /// prefix) in `dt`; `dprev` is scratch. Per core j (the last has no trailing rank):
    /// `dG_j[s, b, t] = sum_P T'[P, s] dT[P, b, t]`, `dT'[P, s] = sum_{b,t} dT[P, b, t] G_j[s, b, t]`.
    fn backward_one(&mut self, idx: &[usize], ts: &[Vec<f32>], base: &[usize], (dt, dprev): (&mut Vec<f32>, &mut Vec<f32>)) {
        let (last, r) = (self.n.len() - 1, self.r);
        for j in (1..=last).rev() {
            let (prev, gj) = (&ts[j - 1], self.cores[j].row(idx[j]));
            let w = if j == last { self.d[j] } else { self.d[j] * r };
            dprev.clear();
            dprev.resize(prev.len(), 0.0);
            let acc = &mut self.grad_buf[j][base[j]..];
            for p in 0..prev.len() / r {
                let dtp = &dt[p * w..(p + 1) * w];
                for s in 0..r {
                    let row = &gj[s * w..(s + 1) * w];
                    dprev[p * r + s] = dtp.iter().zip(row).map(|(a, b)| a * b).sum();
                    let x = prev[p * r + s];
                    acc[s * w..(s + 1) * w].iter_mut().zip(dtp).for_each(|(o, &v)| *o += x * v);
                }
            }
            std::mem::swap(dt, dprev);
        }
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
        let (d, r) = (&m.d, m.r);
        let bounds = [(d[0] as f32).powf(-0.5), ((d[1] * r) as f32).powf(-0.5), ((d[2] * r) as f32).powf(-0.5)];
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
        assert_eq!((&m.n[..], &m.d[..], m.r), (&[100, 100, 100][..], &[2, 2, 4][..], 2));
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

    #[test]
    fn the_authors_split_crops_equal_factors_and_spends_the_budget_their_way() {
        assert_eq!([kth_root_ceil(1682, 4), kth_root_ceil(943, 4), kth_root_ceil(32, 4), kth_root_ceil(81, 4)], [7, 6, 3, 3]);
        assert_eq!([kth_root_ceil(1, 3), kth_root_ceil(8, 3), kth_root_ceil(9, 3), kth_root_ceil(1_000_000, 3)], [1, 2, 3, 100]);
        // ml-100k's items at 16 rows of 32: the authors' 4 cores of 7 slices, dims 3 (81 cropped
        // to 32), rank 3 (42 r + 42 r² = 504 <= 512); ours 3 cores of 12, dims [2, 4, 4], rank 2.
        let crop = TtRec::new(&MethodParams::new(1682, 32, 512).with_options(json!({"split": "crop"}))).unwrap();
        assert_eq!((&crop.n[..], &crop.d[..], crop.r), (&[7; 4][..], &[3; 4][..], 3));
        assert_eq!(crop.accounting().trainable_params, 504);
        let exact = TtRec::new(&MethodParams::new(1682, 32, 512)).unwrap();
        assert_eq!((&exact.n[..], &exact.d[..], exact.r), (&[12; 3][..], &[2, 4, 4][..], 2));
        assert_eq!(exact.accounting().trainable_params, 336);
        // Gradients through 2, 3 and 4 cores, cropped (dim 8 from 3², 2³ exact, 2⁴ = 16) or not.
        for (cores, dim) in [(2, 8), (3, 8), (4, 8), (2, 9)] {
            let p = MethodParams::new(50, dim, 400).with_options(json!({"split": "crop", "cores": cores, "rank": 2}));
            check_gradients(&build, &p, &[0, 49, 17, 17, 3]);
            let ids: Vec<u32> = (0..50).collect();
            let mut out = vec![0.0; 50 * dim];
            TtRec::new(&p).unwrap().forward(&ids, &mut out);
            let mut rows: Vec<Vec<u32>> = out.chunks(dim).map(|c| c.iter().map(|v| v.to_bits()).collect()).collect();
            rows.sort();
            rows.dedup();
            assert_eq!(rows.len(), 50, "{cores} cores, dim {dim}");
        }
        // Bad combinations are errors that say why.
        for (opts, needle) in [(json!({"cores": 4}), "split: crop"), (json!({"split": "crop", "cores": 1}), "outside 2..=16")] {
            let err = TtRec::new(&MethodParams::new(1000, 16, 3200).with_options(opts)).err().unwrap().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
