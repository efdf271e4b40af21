//! AdaEmbed (Lai et al., "AdaEmbed: Adaptive Embedding for Large-Scale Recommendation Models",
//! OSDI 2023): rows are given to the ids with the highest importance, re-decided during training.
//!
//! The algorithm, per table of `R = ⌊B / d⌋` rows:
//! - Row 0 is shared by every id without a row of its own ("cold" ids); rows 1..R are given to
//!   at most R − 1 "hot" ids.
//! - Each id has an importance score: at every step each lookup adds the L2 norm of its
//!   gradient over the batch's mean norm (1 per lookup when every norm is 0).
//! - Every `check_every` steps (and after the first step), the R − 1 ids of highest score are
//!   found; if more than 5% of them hold no row, rows are reassigned: ids that left the top give
//!   their rows to those that entered, and a newly given row starts at zero (optimizer state
//!   cleared).
//! - Every `decay_every` steps every score is multiplied by 0.8.
//!
//! Memory: the trainable rows (⌊B/d⌋ · d, the budget), and per id a row pointer (4 B, index
//! bytes) and a score (4 B, other bytes): AdaEmbed keeps per-id state for the whole vocabulary,
//! during training and after (the pointers).
//!
//! What the paper specifies and where we chose: the importance (normalised gradient norm), the
//! shared cold row, the 5% trigger, the zero start of a new row and the 0.8 decay follow the
//! CAFE authors' AdaEmbed baseline (`ada_embedding_bag.py` and its driver), which checks every
//! 4,096 and decays every 16,384 steps of a Criteo epoch of ~300k steps; here the defaults scale
//! with the run, `check_every` = ⌈steps per epoch / 20⌉ and `decay_every` = 4 · `check_every`
//! (4,096 / 16,384 when the epoch length is unknown). The top set is computed exactly (theirs
//! decides from a sample of 1M ids whether to rebuild); ties go to the smaller id.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaEmbedOptions {
    /// Steps between checks of the top set (default: ⌈steps per epoch / 20⌉).
    pub check_every: Option<usize>,
    /// Steps between score decays (default: 4 · check_every).
    pub decay_every: Option<usize>,
}

const DECAY: f32 = 0.8;
const REBUILD_SHARE: f64 = 0.05;

pub struct AdaEmbed {
    table: Table,
    /// Row of each id (0: the shared cold row).
    row_of: Vec<u32>,
    /// Id holding each row (u32::MAX: free; row 0 is never assigned).
    id_of: Vec<u32>,
    score: Vec<f32>,
    check_every: usize,
    decay_every: usize,
    steps: usize,
    rebuilds: u64,
    rows_buf: Vec<u32>,
    importance_buf: Vec<f32>,
}

impl AdaEmbed {
    pub const NAME: &'static str = "adaembed";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: AdaEmbedOptions = p.options(Self::NAME)?;
        let rows = p.budget_rows(Self::NAME, 2)?;
        let default_check = if p.steps_per_epoch > 0 { p.steps_per_epoch.div_ceil(20) } else { 4096 };
        let check_every = o.check_every.unwrap_or(default_check);
        let decay_every = o.decay_every.unwrap_or(4 * check_every);
        if check_every == 0 || decay_every == 0 {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: "check_every and decay_every must be >= 1".into() });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut table = Table::new(rows, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut rng);
        let mut id_of = vec![u32::MAX; rows];
        id_of[0] = u32::MAX - 1; // the shared row, never given away
        Ok(AdaEmbed { table, row_of: vec![0; p.vocab], id_of, score: vec![0.0; p.vocab], check_every, decay_every, steps: 0, rebuilds: 0, rows_buf: vec![], importance_buf: vec![] })
    }

    fn capacity(&self) -> usize {
        self.table.rows - 1
    }

    /// Ids with a row of their own.
    pub fn hot_ids(&self) -> usize {
        self.row_of.iter().filter(|&&r| r != 0).count()
    }

    /// The `capacity` ids of highest score among those with a positive score (ties: smaller id).
    fn top(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.score.len() as u32).filter(|&i| self.score[i as usize] > 0.0).collect();
        let k = self.capacity().min(ids.len());
        let by = |a: &u32, b: &u32| self.score[*b as usize].total_cmp(&self.score[*a as usize]).then(a.cmp(b));
        if k < ids.len() {
            ids.select_nth_unstable_by(k, by);
            ids.truncate(k);
        }
        ids.sort_unstable();
        ids
    }

    /// Reassigns rows when more than 5% of the top set holds none.
    fn maybe_rebuild(&mut self) {
        let top = self.top();
        let admit: Vec<u32> = top.iter().copied().filter(|&id| self.row_of[id as usize] == 0).collect();
        if (admit.len() as f64) <= REBUILD_SHARE * self.capacity() as f64 && self.steps > 1 {
            return;
        }
        if admit.is_empty() {
            return;
        }
        let mut in_top = vec![false; self.score.len()];
        top.iter().for_each(|&id| in_top[id as usize] = true);
        for r in 1..self.table.rows {
            let id = self.id_of[r];
            if id != u32::MAX && !in_top[id as usize] {
                self.row_of[id as usize] = 0;
                self.id_of[r] = u32::MAX;
            }
        }
        let free: Vec<usize> = (1..self.table.rows).filter(|&r| self.id_of[r] == u32::MAX).collect();
        let mut free = free.into_iter();
        for id in admit {
            let r = free.next().expect("evictions leave a row for every admitted id");
            self.row_of[id as usize] = r as u32;
            self.id_of[r] = id;
            self.table.row_mut(r).iter_mut().for_each(|w| *w = 0.0);
            self.table.reset_row_state(r);
        }
        self.rebuilds += 1;
    }
}

impl EmbeddingMethod for AdaEmbed {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.row_of.len()
    }
    fn dim(&self) -> usize {
        self.table.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let d = self.table.dim;
        for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
            o.copy_from_slice(self.table.row(self.row_of[id as usize] as usize));
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let d = self.table.dim;
        let row_of = &self.row_of;
        self.table.update_mapped(ids, |id| row_of[id as usize], grad, &mut self.rows_buf);
        let mut v = std::mem::take(&mut self.importance_buf);
        crate::normalised_grad_norms(grad, d, &mut v);
        for (&id, &vi) in ids.iter().zip(&v) {
            self.score[id as usize] += vi;
        }
        self.importance_buf = v;
        self.steps += 1;
        if self.steps == 1 || self.steps.is_multiple_of(self.check_every) {
            self.maybe_rebuild();
        }
        if self.steps.is_multiple_of(self.decay_every) {
            self.score.iter_mut().for_each(|s| *s *= DECAY);
        }
    }
    fn accounting(&self) -> Accounting {
        let vocab = self.row_of.len() as u64;
        Accounting {
            trainable_params: self.table.param_count(),
            optimizer_state_bytes: self.table.state_bytes(),
            index_bytes: 4 * vocab,
            other_bytes: 4 * vocab,
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights]
    }
    fn on_train_end(&mut self) -> Result<crate::HookReport, MethodError> {
        Ok(crate::HookReport { changed: false, detail: format!("adaembed: {} hot ids of {} rows, {} rebuilds", self.hot_ids(), self.capacity(), self.rebuilds) })
    }
    fn layout_snapshot(&self) -> Option<crate::Layout> {
        Some(Box::new((self.row_of.clone(), self.id_of.clone())))
    }
    fn restore_layout(&mut self, layout: &crate::Layout) {
        let (row_of, id_of) = layout.downcast_ref::<(Vec<u32>, Vec<u32>)>().expect("an AdaEmbed layout");
        self.row_of.clone_from(row_of);
        self.id_of.clone_from(id_of);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};
    use crate::RowOptimizer;

    fn params(vocab: usize, dim: usize, budget: u64, options: serde_json::Value) -> MethodParams {
        MethodParams::new(vocab, dim, budget).with_options(options)
    }

    /// One zero-gradient step over ids 3 and 5 gives them rows (the first step rebuilds).
    fn warmed(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        let mut m = AdaEmbed::new(p).unwrap();
        m.backward(&[3, 5], &vec![0.0; 2 * p.dim]);
        assert!(m.row_of[3] != 0 && m.row_of[5] != 0);
        Box::new(m)
    }

    #[test]
    fn gradients_through_own_and_shared_rows_and_budgets() {
        let p = params(1000, 4, 4 * 20, serde_json::json!({"check_every": 1000}));
        check_gradients(&warmed, &p, &[3, 5, 3, 999, 17, 250]);
        check_budgets(&|p| Box::new(AdaEmbed::new(p).unwrap()), 10_000, 16, &[32, 100, 3200, 99_999]);
        let err = AdaEmbed::new(&params(100, 4, 4, serde_json::Value::Null)).err().unwrap().to_string();
        assert!(err.contains("at least 2 rows"), "{err}");
    }

    #[test]
    fn rows_follow_the_top_scores_and_new_rows_start_at_zero() {
        // 3 rows: the shared one and 2 to give away; check every 2 steps.
        let p = params(100, 2, 6, serde_json::json!({"check_every": 2, "decay_every": 1000})).with_optimizer(RowOptimizer::Sgd { lr: 0.1 });
        let mut m = AdaEmbed::new(&p).unwrap();
        let g = |n: usize| vec![1.0f32; 2 * n];
        m.backward(&[1, 2], &g(2)); // step 1: ids 1 and 2 get rows
        assert!(m.row_of[1] != 0 && m.row_of[2] != 0 && m.row_of[7] == 0);
        assert_eq!(m.table.row(m.row_of[1] as usize), &[0.0, 0.0]);
        // Id 7 is looked up far more often: at the next check it takes the row of id 1 or 2.
        m.backward(&[7, 7, 7, 7, 7, 7], &g(6));
        assert!(m.row_of[7] != 0, "the top id gets a row");
        assert_eq!(m.hot_ids(), 2);
        let mut out = vec![1.0; 2];
        m.forward(&[7], &mut out);
        assert_eq!(out, vec![0.0, 0.0], "a new row starts at zero");
        // Cold ids share row 0.
        let (mut a, mut b) = (vec![0.0; 2], vec![0.0; 2]);
        m.forward(&[50], &mut a);
        m.forward(&[60], &mut b);
        assert_eq!(a, b);
        let acc = m.accounting();
        assert_eq!((acc.trainable_params, acc.index_bytes, acc.other_bytes), (6, 400, 400));
        // A snapshot restores the assignment.
        let snap = m.layout_snapshot().unwrap();
        let before = m.row_of.clone();
        m.row_of.iter_mut().for_each(|r| *r = 0);
        m.restore_layout(&snap);
        assert_eq!(m.row_of, before);
    }
}
