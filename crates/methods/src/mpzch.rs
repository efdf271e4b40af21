//! MPZCH, multi-probe zero-collision hashing (TorchRec's managed collision modules, 2026): a
//! table of `rows = budget / dim` slots, each owned by at most one id, so two ids never share a
//! row while they are resident; a full table evicts.
//!
//! - **Lookup** (`forward`): id `x` probes slots `h_1(x), ..., h_k(x)` (`probes`, default 4,
//!   seeded universal hashes) and reads the slot it owns. An id that owns none reads the first
//!   free probed slot, whose row holds fresh initial values (what the id gets if training claims
//!   it); with no free probed slot, a zero vector (an unknown id at serving time).
//! - **Claim** (`backward`, training only): an id that owns no probed slot takes the first free
//!   one; if all `k` are owned by others, it evicts the least recently used of them (LRU: the
//!   slot whose owner was last looked up in the oldest training step; slots used in this step are
//!   not evicted, and an id that finds none is dropped for this step). An evicted slot's row is
//!   re-initialised (uniform in ±`init_scale`, from the seed, the slot and the step) and its
//!   optimizer state reset; the gradient of that step, computed at the zero vector the lookup
//!   returned, is then applied to the fresh row. Two new ids of one batch that would read the
//!   same free slot: the first claims it, the second its next free probe.
//! - Per epoch the hook log reports ids resident, ids newly placed, evictions and dropped
//!   lookups (the collisions a zero-collision table still has when it is full).
//!
//! Memory, exactly: `rows · dim` trainable floats (≤ budget) and their optimizer state; index
//! bytes: the owner id (u32) and the last-used step (u32) of every slot; other: `k` hash
//! functions. Unlike hashing, MPZCH never mixes two ids' gradients in one row; unlike a
//! vocabulary, a new id reaches a row of its own as long as the table has room near its probes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, Table};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MpzchOptions {
    /// Slots each id probes (k ≥ 1).
    pub probes: usize,
}

impl Default for MpzchOptions {
    fn default() -> Self {
        MpzchOptions { probes: 4 }
    }
}

const FREE: u32 = u32::MAX;

pub struct Mpzch {
    vocab: usize,
    seed: u64,
    init_scale: f32,
    table: Table,
    probes: Vec<UniversalHash>,
    /// The id owning each slot (`FREE`: none).
    owner: Vec<u32>,
    /// The training step in which each slot's owner was last looked up.
    last: Vec<u32>,
    step: u32,
    /// Since the last report: ids placed, evictions, dropped lookups.
    placed: u64,
    evicted: u64,
    dropped: u64,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

impl Mpzch {
    pub const NAME: &'static str = "mpzch";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: MpzchOptions = p.options(Self::NAME)?;
        let rows = p.budget_rows(Self::NAME, 1)?;
        if o.probes == 0 || o.probes > 64 {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: format!("probes must be in 1..=64, got {}", o.probes) });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let probes = (0..o.probes).map(|_| UniversalHash::new(rows, &mut rng)).collect();
        let mut table = Table::new(rows, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut rng);
        Ok(Mpzch { vocab: p.vocab, seed: p.seed, init_scale: p.init_scale, table, probes, owner: vec![FREE; rows], last: vec![0; rows], step: 0, placed: 0, evicted: 0, dropped: 0, rows_buf: vec![], grad_buf: vec![] })
    }

    fn probe(&self, id: u32) -> impl Iterator<Item = usize> + '_ {
        self.probes.iter().map(move |h| h.hash(id) as usize)
    }

    /// The slot `id` owns, if any.
    pub fn slot_of(&self, id: u32) -> Option<usize> {
        self.probe(id).find(|&s| self.owner[s] == id)
    }

    /// The row a lookup of `id` reads (see the module docs).
    fn read_slot(&self, id: u32) -> Option<usize> {
        self.slot_of(id).or_else(|| self.probe(id).find(|&s| self.owner[s] == FREE))
    }

    /// A slot for `id` in this step: its own, a free probe, or the LRU probe (evicted).
    fn claim(&mut self, id: u32) -> Option<usize> {
        if let Some(s) = self.slot_of(id) {
            return Some(s);
        }
        let free = self.probe(id).find(|&s| self.owner[s] == FREE);
        if let Some(s) = free {
            self.owner[s] = id;
            self.placed += 1;
            return Some(s);
        }
        let lru = self.probe(id).filter(|&s| self.last[s] < self.step).min_by_key(|&s| (self.last[s], s));
        let s = lru?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((self.step as u64) << 40));
        let a = self.init_scale;
        self.table.row_mut(s).iter_mut().for_each(|w| *w = rng.random_range(-a..=a));
        self.table.reset_row_state(s);
        self.owner[s] = id;
        self.placed += 1;
        self.evicted += 1;
        Some(s)
    }

    /// Ids owning a slot now.
    pub fn resident(&self) -> usize {
        self.owner.iter().filter(|&&o| o != FREE).count()
    }
}

impl EmbeddingMethod for Mpzch {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.table.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let d = self.table.dim;
        for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
            match self.read_slot(id) {
                Some(s) => o.copy_from_slice(self.table.row(s)),
                None => o.fill(0.0),
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        self.step += 1;
        let d = self.table.dim;
        let (mut rows, mut grads) = (std::mem::take(&mut self.rows_buf), std::mem::take(&mut self.grad_buf));
        rows.clear();
        grads.clear();
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            match self.claim(id) {
                Some(s) => {
                    self.last[s] = self.step;
                    rows.push(s as u32);
                    grads.extend_from_slice(g);
                }
                None => self.dropped += 1,
            }
        }
        self.table.update(&rows, &grads);
        (self.rows_buf, self.grad_buf) = (rows, grads);
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.table.param_count(),
            optimizer_state_bytes: self.table.state_bytes(),
            index_bytes: 8 * self.owner.len() as u64,
            other_bytes: self.probes.len() as u64 * UniversalHash::BYTES,
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights]
    }
    fn on_epoch_end(&mut self, epoch: usize) -> Result<HookReport, MethodError> {
        let detail = format!("mpzch: epoch {epoch}: {} of {} slots owned, {} ids placed, {} evictions, {} lookups dropped", self.resident(), self.owner.len(), self.placed, self.evicted, self.dropped);
        // `changed`: the slots changed owners this epoch (the training loop logs such reports).
        let changed = self.placed + self.evicted + self.dropped > 0;
        (self.placed, self.evicted, self.dropped) = (0, 0, 0);
        Ok(HookReport { changed, detail })
    }
    /// Which id owns which slot is part of the model: a best-model snapshot keeps it.
    fn layout_snapshot(&self) -> Option<crate::Layout> {
        Some(Box::new((self.owner.clone(), self.last.clone(), self.step)))
    }
    fn restore_layout(&mut self, layout: &crate::Layout) {
        if let Some((owner, last, step)) = layout.downcast_ref::<(Vec<u32>, Vec<u32>, u32)>() {
            (self.owner, self.last, self.step) = (owner.clone(), last.clone(), *step);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Mpzch::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_options() {
        // 100 slots for a handful of ids: every new id finds a free probe.
        check_gradients(&build, &MethodParams::new(1000, 4, 400), &[3, 5, 3, 999, 17, 250]);
        check_budgets(&build, 1000, 8, &[8, 80, 800, 8000]);
        assert!(Mpzch::new(&MethodParams::new(100, 4, 40).with_options(json!({"probes": 0}))).is_err());
        assert!(Mpzch::new(&MethodParams::new(100, 4, 40).with_options(json!({"probes": 65}))).is_err());
        assert!(Mpzch::new(&MethodParams::new(100, 4, 40).with_options(json!({"probe": 2}))).is_err());
    }

    #[test]
    fn resident_ids_never_share_a_row_and_a_full_table_evicts_the_least_recent() {
        let p = MethodParams::new(10_000, 2, 2 * 16).with_options(json!({"probes": 2}));
        let mut m = Mpzch::new(&p).unwrap();
        let g = vec![0.0f32; 2];
        for id in 0..200u32 {
            m.backward(&[id], &g);
            let slots: Vec<usize> = (0..=id).filter_map(|x| m.slot_of(x)).collect();
            let unique: std::collections::BTreeSet<_> = slots.iter().collect();
            assert_eq!(unique.len(), slots.len(), "two resident ids share a slot");
            assert!(m.slot_of(id).is_some(), "the id just trained owns a slot");
        }
        assert_eq!(m.resident(), 16, "a full table");
        assert!(m.evicted > 0);
        // LRU: the most recently used slot is not the one a new id evicts.
        let warm = (0..200u32).rev().find(|&x| m.slot_of(x).is_some()).unwrap();
        let s = m.slot_of(warm).unwrap();
        m.backward(&[warm], &g);
        let newer: Vec<u32> = (10_000 - 20..10_000).collect();
        for &x in newer.iter().take(1) {
            m.backward(&[x], &g);
        }
        assert_eq!(m.owner[s], warm, "the most recently used slot was evicted");
        let r = m.on_epoch_end(0).unwrap();
        assert!(r.detail.contains("16 of 16 slots owned") && r.detail.contains("evictions"), "{}", r.detail);
        let a = m.accounting();
        assert_eq!((a.trainable_params, a.index_bytes, a.other_bytes), (32, 8 * 16, 2 * 24));
    }

    #[test]
    fn an_evicted_row_starts_fresh() {
        let p = MethodParams::new(100, 2, 2).with_options(json!({"probes": 1}));
        let mut m = Mpzch::new(&p).unwrap();
        m.backward(&[1], &[5.0, 5.0]);
        let trained = m.table.row(0).to_vec();
        m.backward(&[2], &[0.0, 0.0]); // one slot: id 2 evicts id 1
        assert_eq!(m.slot_of(1), None);
        assert_eq!(m.slot_of(2), Some(0));
        assert!(m.table.row(0).iter().zip(&trained).all(|(a, b)| a != b) && m.table.row(0).iter().all(|v| v.abs() <= 0.05));
        let mut out = vec![1.0; 2];
        m.forward(&[1], &mut out);
        assert_eq!(out, [0.0, 0.0], "an evicted id with no free probe reads zeros");
    }
}
