//! PEP, "Plug-in Embedding Pruning" (Liu et al., "Learnable Embedding Sizes for Recommender
//! Systems", ICLR 2021): a full table trained with learnable soft thresholds, pruned to the
//! budget, then retrained with the pruning mask fixed. Training memory is the full table (as
//! PQ/RQ); only the served table is within the budget.
//!
//! 1. **Search.** The table `V` (vocab x dim) is read through a soft threshold,
//!    `Ṽ = sign(V) ⊙ max(|V| − g(s), 0)`, `g` the sigmoid and `s` learnable thresholds: one per
//!    dimension (`threshold: dimension`, default) or one for the table (`global`). Exact
//!    (sub)gradients, no straight-through estimate: `∂Ṽ/∂V = 1[|V| > g(s)]`,
//!    `∂Ṽ/∂s = −sign(V)·1[|V| > g(s)]·g'(s)`; `V` and `s` are updated by the table's optimizer.
//! 2. **Prune** after `prune_at` of the training steps: the mask keeps the `B` entries with the
//!    largest `|V| − g(s)` that are still positive (ties: the lower index), so at most `B`
//!    weights remain (the budget, exactly), fewer if the thresholds already zeroed more.
//! 3. **Retrain** (the lottery-ticket step of the paper): `V` is rewound to its initial values
//!    (re-drawn from the seed, `rewind: true`, default) or kept (`false`), entries outside the
//!    mask set to 0, optimizer state reset, and trained as `V ⊙ mask` until the end.
//! 4. At the end the table is stored sparse (CSR): the kept values (trainable, ≤ B), one column
//!    index per value at the narrowest width for `dim`, and `vocab + 1` u32 row offsets (index
//!    bytes). With fewer than two steps scheduled the prune happens at the end, with no retraining.
//!
//! Only evaluations after the prune are the method's ([`EmbeddingMethod::within_budget`]): the
//! training loop takes the best of those (its early stopping, as for every method), never one of
//! the full table's.
//!
//! Where we chose: the paper stops the search when the sparsity reached by the learned
//! thresholds meets the target and saves that mask; at this harness's run lengths the thresholds
//! move little, so the cut at `prune_at` ranks entries by the thresholded magnitude and the
//! budget decides how many stay (the hook log reports how many the thresholds had zeroed).
//! `threshold_init` is −15 (`g ≈ 3e-7`): the reference code's −150 underflows `g'` to 0 in f32,
//! and the thresholds could then never learn. Feature-wise thresholds (one per id) are not
//! offered: they would add a second full-size table. The paper's retraining starts the whole
//! model from its initialisation; a table method cannot rewind the MLPs, so `rewind: true`
//! rewinds the table only (the MLPs keep their trained weights).
//!
//! Memory, exactly: search, `vocab·dim + |s|` trainable floats and their optimizer state;
//! retrain, `vocab·dim` floats and the mask (one bit per weight, stored in u64 words, index
//! bytes); served, the CSR arrays above.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::index::PackedIndex;
use crate::{Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, RowOptimizer, Table};

/// How many thresholds the table learns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    Global,
    #[default]
    Dimension,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepOptions {
    pub threshold: Threshold,
    /// Initial value of every `s` (the threshold is `sigmoid(s)`).
    pub threshold_init: f32,
    /// Fraction of the training steps after which the table is pruned, in (0, 1).
    pub prune_at: f64,
    /// Retrain from the initial weights (true) or from the searched ones (false).
    pub rewind: bool,
}

impl Default for PepOptions {
    fn default() -> Self {
        PepOptions { threshold: Threshold::Dimension, threshold_init: -15.0, prune_at: 0.5, rewind: true }
    }
}

enum Stage {
    /// Soft-threshold training; `thr` is a 1 x |s| table (`None`: no thresholds, the plain
    /// table: magnitude pruning, `magprune.rs`).
    Search { thr: Option<Table> },
    /// Training `V ⊙ mask`; bit `i` of `mask` keeps weight `i` of `V` (row-major).
    Retrain { mask: Vec<u64> },
    /// Served: row `id`'s values are `values[offsets[id]..offsets[id + 1]]` at columns `cols`.
    Sparse { offsets: Vec<u32>, cols: PackedIndex, values: Table },
}

#[inline]
fn sigmoid(s: f32) -> f32 {
    1.0 / (1.0 + (-s).exp())
}

#[inline]
fn bit(mask: &[u64], i: usize) -> bool {
    mask[i / 64] >> (i % 64) & 1 == 1
}

pub struct Pep {
    /// `pep`, or `magprune` when built without thresholds.
    name: &'static str,
    vocab: usize,
    dim: usize,
    budget: u64,
    seed: u64,
    init_scale: f32,
    optimizer: RowOptimizer,
    rewind: bool,
    /// The step after which to prune (`None`: at the end of training).
    prune_step: Option<usize>,
    /// Full table (emptied once sparse).
    table: Table,
    stage: Stage,
    grad_buf: Vec<f32>,
    rows_buf: Vec<u32>,
}

impl Pep {
    pub const NAME: &'static str = "pep";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: PepOptions = p.options(Self::NAME)?;
        let bad = |r: String| MethodError::BadOptions { method: Self::NAME.into(), reason: r };
        if !(o.prune_at > 0.0 && o.prune_at < 1.0) {
            return Err(bad(format!("prune_at must be in (0, 1), got {}", o.prune_at)));
        }
        if !o.threshold_init.is_finite() {
            return Err(bad(format!("threshold_init must be finite, got {}", o.threshold_init)));
        }
        let n_thr = match o.threshold {
            Threshold::Global => 1,
            Threshold::Dimension => p.dim,
        };
        // No decay of the thresholds: decay would pull s to 0, a threshold of 1/2.
        let mut thr = Table::new(1, n_thr, p.optimizer.with_lr_without_decay(p.optimizer.lr()));
        thr.weights.fill(o.threshold_init);
        Self::build(p, Self::NAME, Some(thr), o.prune_at, o.rewind)
    }

    /// The full table, pruned to the budget by `|V| − g(s)` (plain `|V|` without thresholds)
    /// after `prune_at` of the steps (1: at the end, no retraining), then retrained under the
    /// mask from the initial (`rewind`) or the trained weights.
    pub(crate) fn build(p: &MethodParams, name: &'static str, thr: Option<Table>, prune_at: f64, rewind: bool) -> Result<Self, MethodError> {
        if (p.vocab as u64) * (p.dim as u64) > u32::MAX as u64 {
            let reason = format!("the full table of {} x {} weights exceeds 2^32 - 1 ({name} trains the full table)", p.vocab, p.dim);
            return Err(MethodError::BadOptions { method: name.into(), reason });
        }
        p.budget_rows(name, 1)?;
        let total = p.epochs * p.steps_per_epoch;
        let at = (prune_at * total as f64).round() as usize;
        let prune_step = (at >= 1 && at < total).then_some(at);
        let mut m = Pep { name, vocab: p.vocab, dim: p.dim, budget: p.budget, seed: p.seed, init_scale: p.init_scale, optimizer: p.optimizer, rewind, prune_step, table: Table::new(p.vocab, p.dim, p.optimizer), stage: Stage::Search { thr }, grad_buf: vec![], rows_buf: vec![] };
        m.init_weights();
        Ok(m)
    }

    /// The initial table, drawn from the seed (the constructor and the rewind both call it).
    fn init_weights(&mut self) {
        self.table.init_uniform(self.init_scale, &mut ChaCha8Rng::seed_from_u64(self.seed));
    }

    /// `g(s)` for each dimension (a global threshold repeated).
    fn thresholds(thr: &Option<Table>, dim: usize) -> Vec<f32> {
        match thr {
            Some(thr) => (0..dim).map(|j| sigmoid(thr.weights[j % thr.weights.len()])).collect(),
            None => vec![0.0; dim],
        }
    }

    /// Whether the table is stored sparse (after training).
    #[cfg(test)]
    pub fn is_sparse(&self) -> bool {
        matches!(self.stage, Stage::Sparse { .. })
    }

    /// Step 2 of the module docs: fixes the mask, rewinds, and starts the retraining. Returns
    /// (weights kept, weights the thresholds had left non-zero).
    pub fn prune(&mut self) -> (u64, u64) {
        let Stage::Search { thr } = &self.stage else { return (0, 0) };
        let t = Self::thresholds(thr, self.dim);
        let scores: Vec<f32> = self.table.weights.iter().enumerate().map(|(i, v)| v.abs() - t[i % self.dim]).collect();
        let alive = scores.iter().filter(|&&s| s > 0.0).count() as u64;
        let keep = alive.min(self.budget);
        let mut mask = vec![0u64; scores.len().div_ceil(64)];
        if keep > 0 {
            // The keep-th largest score; entries above it stay, then ties in index order.
            let mut sorted = scores.clone();
            let (_, cut, _) = sorted.select_nth_unstable_by(keep as usize - 1, |a, b| b.total_cmp(a));
            let cut = *cut;
            let mut left = keep - scores.iter().filter(|&&s| s > cut).count() as u64;
            for (i, &s) in scores.iter().enumerate() {
                let take = s > cut || (s == cut && left > 0 && { left -= 1; true });
                if take {
                    mask[i / 64] |= 1 << (i % 64);
                }
            }
        }
        if self.rewind {
            self.init_weights();
        }
        for (i, w) in self.table.weights.iter_mut().enumerate() {
            if !bit(&mask, i) {
                *w = 0.0;
            }
        }
        self.table.reset_state();
        self.stage = Stage::Retrain { mask };
        (keep, alive)
    }

    /// Step 4: the CSR table of the kept weights.
    fn to_sparse(&mut self) {
        let Stage::Retrain { mask } = &self.stage else { return };
        let d = self.dim;
        let mut offsets = Vec::with_capacity(self.vocab + 1);
        let (mut cols, mut values) = (vec![], vec![]);
        offsets.push(0u32);
        for (r, row) in self.table.weights.chunks_exact(d).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if bit(mask, r * d + j) {
                    cols.push(j as u32);
                    values.push(v);
                }
            }
            offsets.push(values.len() as u32);
        }
        let mut vt = Table::new(values.len(), 1, self.optimizer);
        vt.weights.copy_from_slice(&values);
        self.stage = Stage::Sparse { offsets, cols: PackedIndex::from_values(&cols, d), values: vt };
        self.table = Table::new(0, d, self.optimizer);
    }
}

impl EmbeddingMethod for Pep {
    fn name(&self) -> &'static str {
        self.name
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let d = self.dim;
        match &self.stage {
            Stage::Search { thr } => {
                let t = Self::thresholds(thr, d);
                for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
                    for ((o, &v), &t) in o.iter_mut().zip(self.table.row(id as usize)).zip(&t) {
                        *o = v.signum() * (v.abs() - t).max(0.0);
                    }
                }
            }
            Stage::Retrain { mask } => {
                for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
                    let base = id as usize * d;
                    for (j, (o, &v)) in o.iter_mut().zip(self.table.row(id as usize)).enumerate() {
                        *o = if bit(mask, base + j) { v } else { 0.0 };
                    }
                }
            }
            Stage::Sparse { offsets, cols, values } => {
                for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
                    o.fill(0.0);
                    for k in offsets[id as usize] as usize..offsets[id as usize + 1] as usize {
                        o[cols.get(k) as usize] = values.weights[k];
                    }
                }
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let d = self.dim;
        self.grad_buf.clear();
        match &mut self.stage {
            Stage::Search { thr } => {
                let Some(thr) = thr else {
                    // No thresholds: the plain table.
                    self.table.update(ids, grad);
                    return;
                };
                let t: Vec<f32> = (0..d).map(|j| sigmoid(thr.weights[j % thr.weights.len()])).collect();
                let mut gs = vec![0.0f32; thr.weights.len()];
                let n = gs.len();
                for (g, &id) in grad.chunks_exact(d).zip(ids) {
                    for (j, (&g, &v)) in g.iter().zip(self.table.row(id as usize)).enumerate() {
                        let live = v.abs() > t[j];
                        self.grad_buf.push(if live { g } else { 0.0 });
                        if live {
                            gs[j % n] -= g * v.signum() * t[j] * (1.0 - t[j]);
                        }
                    }
                }
                thr.update(&[0], &gs);
                self.table.update(ids, &self.grad_buf);
            }
            Stage::Retrain { mask } => {
                for (g, &id) in grad.chunks_exact(d).zip(ids) {
                    let base = id as usize * d;
                    self.grad_buf.extend(g.iter().enumerate().map(|(j, &g)| if bit(mask, base + j) { g } else { 0.0 }));
                }
                self.table.update(ids, &self.grad_buf);
            }
            Stage::Sparse { offsets, cols, values } => {
                self.rows_buf.clear();
                for (g, &id) in grad.chunks_exact(d).zip(ids) {
                    for k in offsets[id as usize]..offsets[id as usize + 1] {
                        self.rows_buf.push(k);
                        self.grad_buf.push(g[cols.get(k as usize) as usize]);
                    }
                }
                values.update(&self.rows_buf, &self.grad_buf);
            }
        }
    }
    fn accounting(&self) -> Accounting {
        let full = Accounting { trainable_params: self.table.param_count(), optimizer_state_bytes: self.table.state_bytes(), ..Default::default() };
        match &self.stage {
            Stage::Search { thr: Some(thr) } => Accounting { trainable_params: full.trainable_params + thr.param_count(), optimizer_state_bytes: full.optimizer_state_bytes + thr.state_bytes(), ..full },
            Stage::Search { thr: None } => full,
            Stage::Retrain { mask } => Accounting { index_bytes: 8 * mask.len() as u64, ..full },
            Stage::Sparse { offsets, cols, values } => Accounting { trainable_params: values.param_count(), optimizer_state_bytes: values.state_bytes(), index_bytes: 4 * offsets.len() as u64 + cols.bytes(), ..Default::default() },
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        match &mut self.stage {
            Stage::Search { thr: Some(thr) } => vec![&mut self.table.weights, &mut thr.weights],
            Stage::Search { thr: None } => vec![&mut self.table.weights],
            Stage::Retrain { .. } => vec![&mut self.table.weights],
            Stage::Sparse { values, .. } => vec![&mut values.weights],
        }
    }
    fn row_widths(&mut self) -> Vec<usize> {
        match &self.stage {
            Stage::Search { thr: Some(thr) } => vec![self.dim, thr.weights.len()],
            _ => vec![self.dim],
        }
    }
    fn uses_step_hook(&self) -> bool {
        self.prune_step.is_some()
    }
    fn on_step(&mut self, step: usize) -> Result<HookReport, MethodError> {
        if Some(step) != self.prune_step || !matches!(self.stage, Stage::Search { .. }) {
            return Ok(HookReport::default());
        }
        let (keep, alive) = self.prune();
        Ok(HookReport { changed: true, detail: format!("{}: pruned at step {step}: {keep} of {} weights kept ({alive} left non-zero by the thresholds), rewind {}", self.name, self.vocab * self.dim, self.rewind) })
    }
    fn within_budget(&self) -> bool {
        !matches!(self.stage, Stage::Search { .. })
    }
    /// Prunes here if the schedule had no step for it (the model changes: `changed`), then
    /// stores the table sparse, which changes no embedding (tested), so evaluations after the
    /// prune stay the method's.
    fn on_train_end(&mut self) -> Result<HookReport, MethodError> {
        let mut report = HookReport::default();
        if matches!(self.stage, Stage::Search { .. }) {
            let (keep, alive) = self.prune();
            report = HookReport { changed: true, detail: format!("{}: pruned at the end (no retraining): {keep} kept ({alive} non-zero)", self.name) };
        }
        self.to_sparse();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{all_rows, check_budgets, check_gradients_step};
    use serde_json::json;

    fn params(budget: u64) -> MethodParams {
        let mut p = MethodParams::new(20, 4, budget).with_options(json!({"threshold_init": -1.0}));
        p.init_scale = 1.0;
        p
    }

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Pep::new(p).unwrap())
    }

    const IDS: [u32; 5] = [1, 7, 1, 19, 3];

    #[test]
    fn gradients_in_every_stage() {
        for threshold in ["dimension", "global"] {
            let mut p = params(30);
            p.options = json!({"threshold_init": -1.0, "threshold": threshold});
            check_gradients_step(&build, &p, &IDS, 1e-3);
        }
        let pruned = |p: &MethodParams| {
            let mut m = Pep::new(p).unwrap();
            m.prune();
            Box::new(m) as Box<dyn EmbeddingMethod>
        };
        check_gradients_step(&pruned, &params(30), &IDS, 1e-3);
        let sparse = |p: &MethodParams| {
            let mut m = Pep::new(p).unwrap();
            m.on_train_end().unwrap();
            Box::new(m) as Box<dyn EmbeddingMethod>
        };
        check_gradients_step(&sparse, &params(30), &IDS, 1e-3);
    }

    #[test]
    fn prune_keeps_the_largest_thresholded_weights_and_rewinds() {
        let mut m = Pep::new(&params(25).with_options(json!({"threshold_init": -1.0, "rewind": false}))).unwrap();
        let t = sigmoid(-1.0);
        let before = m.table.weights.clone();
        let (keep, alive) = m.prune();
        let score = |v: f32| v.abs() - t;
        assert_eq!(alive as usize, before.iter().filter(|v| score(**v) > 0.0).count());
        assert_eq!(keep, 25.min(alive));
        let kept: Vec<f32> = before.iter().zip(&m.table.weights).filter(|(_, &w)| w != 0.0).map(|(&v, _)| score(v)).collect();
        let dropped: Vec<f32> = before.iter().zip(&m.table.weights).filter(|(_, &w)| w == 0.0).map(|(&v, _)| score(v)).collect();
        assert_eq!(kept.len() as u64, keep);
        let min_kept = kept.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(dropped.iter().all(|&s| s <= min_kept), "a dropped weight outscored a kept one");
        // Without rewind the kept weights are the searched ones; with it, the initial ones.
        assert!(before.iter().zip(&m.table.weights).all(|(&b, &w)| w == 0.0 || w == b));
        let mut r = Pep::new(&params(25)).unwrap();
        let init = r.table.weights.clone();
        r.backward(&IDS, &[1.0; 20]);
        r.prune();
        assert!(init.iter().zip(&r.table.weights).all(|(&i, &w)| w == 0.0 || w == i), "rewind restores the initial weights");
    }

    #[test]
    fn sparse_storage_is_lossless_and_within_budget() {
        for b in [4u64, 25, 61, 79] {
            let mut m = Pep::new(&params(b).with_options(json!({"threshold_init": -30.0}))).unwrap();
            m.prune();
            let masked = all_rows(&m);
            m.on_train_end().unwrap();
            assert!(m.is_sparse());
            assert_eq!(all_rows(&m), masked, "budget {b}");
            let a = m.accounting();
            assert_eq!(a.trainable_params, b, "every weight is alive at g(s) ~ 1e-13, so the budget binds");
            assert_eq!(a.index_bytes, 4 * 21 + b, "u32 offsets per row + 1, u8 column per value");
        }
        check_budgets(&|p| {
            let mut m = Pep::new(p).unwrap();
            m.on_train_end().unwrap();
            Box::new(m) as Box<dyn EmbeddingMethod>
        }, 300, 8, &[8, 100, 801, 2399]);
    }

    #[test]
    fn training_memory_is_the_full_table() {
        let mut m = Pep::new(&params(30).with_optimizer(RowOptimizer::Adagrad { lr: 0.1, eps: 1e-8 })).unwrap();
        let a = m.accounting();
        assert_eq!(a.trainable_params, 20 * 4 + 4);
        assert_eq!(a.optimizer_state_bytes, 4 * (20 * 4 + 4));
        m.prune();
        let a = m.accounting();
        assert_eq!((a.trainable_params, a.index_bytes), (80, 8 * 2), "80 mask bits in two u64 words");
    }

    #[test]
    fn thresholds_take_no_weight_decay() {
        let adamw = RowOptimizer::LazyAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
        let m = Pep::new(&params(30).with_optimizer(adamw)).unwrap();
        let Stage::Search { thr: Some(thr) } = &m.stage else { panic!() };
        assert!(matches!(thr.optimizer(), RowOptimizer::LazyAdam { weight_decay: 0.0, lr: 1e-3, .. }));
        assert_eq!(m.table.optimizer(), adamw, "the table keeps its decay");
    }

    #[test]
    fn thresholds_rise_when_the_loss_favours_smaller_weights() {
        // L = sum |out|: every live weight's gradient pushes its threshold up.
        let mut m = Pep::new(&params(30).with_optimizer(RowOptimizer::Sgd { lr: 0.5 })).unwrap();
        let ids: Vec<u32> = (0..20).collect();
        let start = all_rows(&m).iter().filter(|&&v| v != 0.0).count();
        for _ in 0..20 {
            let g: Vec<f32> = all_rows(&m).iter().map(|v| v.signum()).collect();
            m.backward(&ids, &g);
        }
        let Stage::Search { thr: Some(thr) } = &m.stage else { panic!() };
        assert!(thr.weights.iter().all(|&s| s > -1.0), "{:?}", thr.weights);
        assert!(all_rows(&m).iter().filter(|&&v| v != 0.0).count() < start);
    }

    #[test]
    fn prunes_at_the_scheduled_step() {
        let mut p = params(30).with_epochs(2).with_steps(10, None);
        p.options = json!({"prune_at": 0.25});
        let mut m = Pep::new(&p).unwrap();
        assert!(m.uses_step_hook());
        assert!(!m.on_step(4).unwrap().changed);
        assert!(m.on_step(5).unwrap().changed);
        assert!(matches!(m.stage, Stage::Retrain { .. }));
        assert!(!m.on_step(5).unwrap().changed, "prunes once");
        assert!(m.within_budget());
        assert!(!m.on_train_end().unwrap().changed, "storing sparse changes no embedding");
        assert!(m.is_sparse());
        let mut late = Pep::new(&params(30)).unwrap();
        assert!(!late.within_budget() && !late.uses_step_hook(), "no steps known: prunes at the end");
        assert!(late.on_train_end().unwrap().changed);
        assert!(Pep::new(&params(30).with_options(json!({"prune_at": 1.0}))).is_err());
        assert!(Pep::new(&params(30).with_options(json!({"prun_at": 0.5}))).is_err());
        assert!(Pep::new(&params(3)).is_err(), "less than one row of budget");
    }
}
