//! CQR / CCE ("Clustering the Sketch", Tsang & Ahle, NeurIPS 2023).
//!
//! The vector is split into `n_chunks` columns. In column c the embedding of an id is
//! `T0_c[h0_c(id)] + T1_c[h1_c(id)]`: T0 is a codebook reached through stored pointers h0, T1 a
//! table reached through a hash function h1. Both start random. At each cluster point of the
//! schedule ([`ClusterSchedule`]) each column is re-clustered:
//!
//! 1. sample up to `sample_factor * rows0` ids (all if fewer) among the ids seen in training so
//!    far, and compute their current sub-vectors;
//! 2. k-means them into `rows0` centroids (exact Lloyd's, [`crate::nearest`]);
//! 3. point every seen id at its nearest centroid (in parallel batches): new h0;
//! 4. T0 := centroids; draw a fresh hash h1; T1 := mean residual (vector - centroid) of the seen
//!    ids in each new h1 bucket; empty buckets get zeros.
//!
//! Schedule: by default after epochs `0..last_cluster` (0-based, default floor(0.75 * epochs)),
//! the MovieLens protocol. The paper's click-data schedule clusters inside epochs: set
//! `cluster_every_steps: N` (or `cluster_at_evaluation: true` to cluster right after each of the
//! training loop's `eval_every_steps` evaluations) and the last cluster point as an epoch
//! (`last_cluster`: no cluster step after epoch `last_cluster` has begun) or as a fraction of all
//! training steps (`last_cluster_fraction`, default 0.75).
//!
//! Unseen ids (`skip_unseen`, default true): an id no training batch has touched still holds its
//! random initial vector; sampling it would put noise into the centroids and assigning it costs
//! time at Criteo scale (33.6M ids, most never seen in a 2M-row run). Such ids keep their stored
//! pointer (a valid row of the new codebook: for them it is as random as at the start) and get the
//! fresh h1 like every id; their first update trains from there. The seen-id bitset costs
//! `ceil(vocab / 64) * 8` bytes, counted in `other_bytes`. With `skip_unseen: false` every id is
//! sampled and assigned, the seed's behaviour. When no id has been seen yet, the step is skipped.
//!
//! Residual table (`residual`): `hashed` (the default, as above: T1 is `rows1` rows of width dc,
//! one row per id) or `robe` (the authors' CCE-ROBE variant: T1 is one circular array of
//! `rows1 * dc` floats and an id's sub-vector is the dc consecutive entries starting at offset
//! `h1(id)`, wrapping around: ROBE-Z with Z = dc, Desai et al. 2022). Same parameters; with `robe`,
//! ids share entries at any offset rather than whole rows. A cluster step sets each array entry to
//! the mean residual of the (id, coordinate) pairs that read it.
//!
//! The optimizer state of both tables is reset after a cluster step (the old moments belong to
//! rows that no longer exist); `reset_optimizer: false` keeps it, as the authors' library does.
//!
//! Design choices, as options (defaults first; issue 19's ablation grid measures them):
//! - `sample`: which ids k-means sees. `seen` (default): uniform over the ids seen so far;
//!   `vocabulary`: uniform over the whole vocabulary (the authors' library); `frequency`: ids drawn
//!   with replacement in proportion to their training count so far, so the centroids fit the ids
//!   that carry the loss (per-id counts: 4 bytes an id, counted in `other_bytes`).
//! - `residual_init`: T1 after a cluster step from the mean residuals (`mean`, the paper) or
//!   `zeros` (each id starts at its centroid).
//! - `kmeans_iter` (25; the authors use faiss with 100), the number of rounds (`last_cluster`,
//!   `cluster_every_steps`, `cluster_at_evaluation`), `reset_optimizer`.
//!
//! Budget: rows = budget / dim rows in all per column pair, split as rows0 = rows / 2 for T0 and
//! rows1 = rows - rows0 for T1, so trainable parameters are `rows * dim`, within one row of the
//! budget.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Deserialize;

use crate::ce::{chunk_dim, gather_chunk};
use crate::hash::UniversalHash;
use crate::index::PackedIndex;
use crate::kmeans::{assign_indexed, KMeansConfig, KMeansInit};
use crate::nearest::NearestIndex;
use crate::{Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, Table, ID_BATCH};
use crate::export::{self, Export, Index};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqrOptions {
    pub n_chunks: usize,
    /// k-means sees at most `sample_factor * rows0` ids per column (faiss's default is 256).
    pub sample_factor: usize,
    pub kmeans_iter: usize,
    pub kmeans_init: KMeansInit,
    /// Last cluster point as an epoch: cluster after epochs `0..last_cluster` (epoch schedule) or
    /// during them (step schedule). Default: floor(0.75 * epochs) / `last_cluster_fraction`.
    pub last_cluster: Option<usize>,
    /// Last cluster point as a fraction of all training steps (step schedule; the paper's 0.75)
    /// or of the epochs (epoch schedule).
    pub last_cluster_fraction: Option<f64>,
    /// Step schedule: cluster after every this many optimizer steps.
    pub cluster_every_steps: Option<usize>,
    /// Step schedule: cluster after each of the training loop's `eval_every_steps` evaluations.
    pub cluster_at_evaluation: bool,
    /// Sample and assign only ids seen in training (see the module docs).
    pub skip_unseen: bool,
    /// The second table: a hashed table (default) or a ROBE array (see the module docs).
    pub residual: ResidualKind,
    /// Reset both tables' optimizer state at a cluster step (default) or keep it (the authors).
    pub reset_optimizer: bool,
    /// Which ids k-means sees (see the module docs).
    pub sample: SampleKind,
    /// T1 after a cluster step: mean residuals (default) or zeros.
    pub residual_init: ResidualInit,
}

/// The ids k-means is fitted to at a cluster step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// Uniform over the ids seen in training so far (all ids with `skip_unseen: false`).
    #[default]
    Seen,
    /// Uniform over the whole vocabulary, seen or not (the authors' library).
    Vocabulary,
    /// With replacement, in proportion to each id's training count so far.
    Frequency,
}

/// How T1 restarts after a cluster step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualInit {
    /// The mean residual (vector − centroid) of the ids in each new bucket.
    #[default]
    Mean,
    /// Zeros: every id starts at its centroid.
    Zeros,
}

/// Layout of CQR's second (hashed) table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidualKind {
    #[default]
    Hashed,
    Robe,
}

impl Default for CqrOptions {
    fn default() -> Self {
        CqrOptions {
            n_chunks: 4,
            sample_factor: 256,
            kmeans_iter: 25,
            kmeans_init: KMeansInit::Auto,
            last_cluster: None,
            last_cluster_fraction: None,
            cluster_every_steps: None,
            cluster_at_evaluation: false,
            skip_unseen: true,
            residual: ResidualKind::Hashed,
            reset_optimizer: true,
            sample: SampleKind::Seen,
            residual_init: ResidualInit::Mean,
        }
    }
}

/// When CQR clusters, resolved once from the options and the training schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterSchedule {
    /// After each epoch `e < last` (0-based).
    Epochs { last: usize },
    /// After each step `s` (1-based count of steps done) with `s % every == 0` and `s <= until`.
    Steps { every: usize, until: usize },
}

impl ClusterSchedule {
    pub fn new(o: &CqrOptions, p: &MethodParams) -> Result<Self, MethodError> {
        let bad = |r: String| Err(MethodError::BadOptions { method: Cqr::NAME.into(), reason: r });
        if let Some(f) = o.last_cluster_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return bad(format!("last_cluster_fraction must be in (0, 1], got {f}"));
            }
            if o.last_cluster.is_some() {
                return bad("give last_cluster (an epoch) or last_cluster_fraction, not both".into());
            }
        }
        let every = match (o.cluster_every_steps, o.cluster_at_evaluation) {
            (None, false) => {
                let last = o.last_cluster.unwrap_or_else(|| (o.last_cluster_fraction.unwrap_or(0.75) * p.epochs as f64).floor() as usize);
                return Ok(ClusterSchedule::Epochs { last });
            }
            (Some(_), true) => return bad("give cluster_every_steps or cluster_at_evaluation, not both".into()),
            (Some(0), _) => return bad("cluster_every_steps must be >= 1".into()),
            (Some(n), false) => n,
            (None, true) => match p.eval_every_steps {
                Some(n) if n > 0 => n,
                _ => return bad("cluster_at_evaluation needs the training loop's eval_every_steps".into()),
            },
        };
        if p.steps_per_epoch == 0 {
            return bad("a step schedule needs the number of steps per epoch (set by the training loop)".into());
        }
        let total = p.epochs * p.steps_per_epoch;
        let until = match o.last_cluster {
            Some(e) => e * p.steps_per_epoch,
            None => (o.last_cluster_fraction.unwrap_or(0.75) * total as f64).floor() as usize,
        };
        Ok(ClusterSchedule::Steps { every, until })
    }

    pub fn at_epoch_end(&self, epoch: usize) -> bool {
        matches!(*self, ClusterSchedule::Epochs { last } if epoch < last)
    }

    pub fn at_step(&self, step: usize) -> bool {
        matches!(*self, ClusterSchedule::Steps { every, until } if step.is_multiple_of(every) && step <= until)
    }
}

/// Ids touched by training, one bit each.
struct SeenSet {
    bits: Vec<u64>,
    count: usize,
}

impl SeenSet {
    fn new(vocab: usize) -> Self {
        SeenSet { bits: vec![0; vocab.div_ceil(64)], count: 0 }
    }
    fn insert(&mut self, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if self.bits[w] >> b & 1 == 0 {
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
    }
    /// Seen ids in increasing order.
    fn ids(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.count);
        for (w, &word) in self.bits.iter().enumerate() {
            let mut x = word;
            while x != 0 {
                out.push((w * 64) as u32 + x.trailing_zeros());
                x &= x - 1;
            }
        }
        out
    }
    fn bytes(&self) -> u64 {
        8 * self.bits.len() as u64
    }
}

struct Column {
    t0: Table,
    /// Hashed: `rows1` rows of width dc. ROBE: `rows1 * dc` rows of width 1 (a circular array).
    t1: Table,
    h0: PackedIndex,
    /// Hashed: the row. ROBE: the offset of the first of dc consecutive entries.
    h1: UniversalHash,
}

impl Column {
    /// Rows of T1 an id reads, one per `t1.dim`-wide piece of its sub-vector, in order.
    #[inline]
    fn t1_rows(&self, id: u32, dc: usize) -> impl Iterator<Item = usize> + '_ {
        let (start, n, len) = (self.h1.hash(id) as usize, dc / self.t1.dim, self.t1.rows);
        // start < len and k < dc <= len: one conditional subtraction wraps around.
        (0..n).map(move |k| if start + k >= len { start + k - len } else { start + k })
    }

    /// The id's sub-vector: T0 row plus the T1 piece(s).
    #[inline]
    fn sub_vector(&self, id: u32, dc: usize, out: &mut [f32]) {
        let a = self.t0.row(self.h0.get(id as usize) as usize);
        let w = self.t1.dim;
        for (k, r) in self.t1_rows(id, dc).enumerate() {
            let b = self.t1.row(r);
            out[k * w..(k + 1) * w].iter_mut().zip(&a[k * w..(k + 1) * w]).zip(b).for_each(|((o, x), y)| *o = x + y);
        }
    }
}

pub struct Cqr {
    vocab: usize,
    dim: usize,
    dc: usize,
    columns: Vec<Column>,
    opts: CqrOptions,
    schedule: ClusterSchedule,
    /// Present with `skip_unseen`.
    seen: Option<SeenSet>,
    /// Training count per id so far (`sample: frequency` only).
    counts: Option<Vec<u32>>,
    rng: ChaCha8Rng,
    clusters_done: usize,
    rows0_buf: Vec<u32>,
    rows1_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

impl Cqr {
    pub const NAME: &'static str = "cqr";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let opts: CqrOptions = p.options(Self::NAME)?;
        let dc = chunk_dim(Self::NAME, p.dim, opts.n_chunks)?;
        if opts.sample_factor == 0 || opts.kmeans_iter == 0 {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: "sample_factor and kmeans_iter must be >= 1".into() });
        }
        let rows = p.budget_rows(Self::NAME, 2)?;
        let rows0 = rows / 2;
        let rows1 = rows - rows0;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let a = p.init_scale / std::f32::consts::SQRT_2;
        let (t1_rows, t1_dim) = match opts.residual {
            ResidualKind::Hashed => (rows1, dc),
            ResidualKind::Robe => (rows1 * dc, 1),
        };
        let columns = (0..opts.n_chunks)
            .map(|_| {
                let mut t0 = Table::new(rows0, dc, p.optimizer);
                let mut t1 = Table::new(t1_rows, t1_dim, p.optimizer);
                t0.init_uniform(a, &mut rng);
                t1.init_uniform(a, &mut rng);
                // Initial pointers are random, exactly like a hash, but stored: clustering replaces
                // them, so the array is part of CQR's memory from the start.
                let start = UniversalHash::new(rows0, &mut rng);
                let ptrs: Vec<u32> = (0..p.vocab as u32).map(|id| start.hash(id)).collect();
                let h0 = PackedIndex::from_values(&ptrs, rows0);
                let h1 = UniversalHash::new(t1_rows, &mut rng);
                Column { t0, t1, h0, h1 }
            })
            .collect();
        let schedule = ClusterSchedule::new(&opts, p)?;
        let seen = opts.skip_unseen.then(|| SeenSet::new(p.vocab));
        let counts = (opts.sample == SampleKind::Frequency).then(|| vec![0u32; p.vocab]);
        Ok(Cqr { vocab: p.vocab, dim: p.dim, dc, columns, opts, schedule, seen, counts, rng, clusters_done: 0, rows0_buf: vec![], rows1_buf: vec![], grad_buf: vec![] })
    }

    #[cfg(test)]
    pub fn clusters_done(&self) -> usize {
        self.clusters_done
    }

    /// Sub-vectors of column `c` for `ids`, written to `out` (`ids.len() * dc`).
    fn column_vectors(col: &Column, dc: usize, ids: &[u32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(ids.len() * dc, 0.0);
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(dc)) {
            col.sub_vector(id, dc, o);
        }
    }

    /// One cluster step on every column (steps 1-4 of the module docs).
    pub fn cluster(&mut self) -> Result<HookReport, MethodError> {
        let dc = self.dc;
        // The ids that take part: seen ones, or all.
        let ids: Vec<u32> = match &self.seen {
            Some(s) if s.count == 0 => return Ok(HookReport { changed: false, detail: "cqr: no id seen yet, cluster step skipped".into() }),
            Some(s) => s.ids(),
            None => (0..self.vocab as u32).collect(),
        };
        // Random draws first, column by column in a fixed order, so the parallel work below
        // cannot change them.
        let plans: Vec<(Vec<u32>, u64, UniversalHash)> = self
            .columns
            .iter()
            .map(|col| {
                let want = self.opts.sample_factor.saturating_mul(col.t0.rows);
                let mut sample = Self::draw_sample(self.opts.sample, &ids, self.vocab, self.counts.as_deref(), want, &mut self.rng);
                sample.sort_unstable();
                let seed = rand::Rng::random(&mut self.rng);
                (sample, seed, UniversalHash::new(col.t1.rows, &mut self.rng))
            })
            .collect();
        let (iter, init, o) = (self.opts.kmeans_iter, self.opts.kmeans_init, &self.opts);
        let inertias: Vec<f64> = self
            .columns
            .par_iter_mut()
            .zip(plans)
            .map(|(col, (sample, seed, new_h1))| Self::cluster_column(col, dc, &ids, &sample, KMeansConfig { k: col.t0.rows, max_iter: iter, tol: 1e-4, init, seed }, new_h1, o))
            .collect::<Result<_, _>>()?;
        self.clusters_done += 1;
        Ok(HookReport { changed: true, detail: format!("cqr cluster #{} over {} ids: k-means inertia per point by column {:?}", self.clusters_done, ids.len(), inertias.iter().map(|v| format!("{v:.3e}")).collect::<Vec<_>>()) })
    }

    /// Step 1's sample: up to `want` ids (all of `ids` if fewer and uniform over them), as
    /// `kind` says; `ids` are the ids that will be assigned.
    fn draw_sample(kind: SampleKind, ids: &[u32], vocab: usize, counts: Option<&[u32]>, want: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
        match (kind, counts) {
            (SampleKind::Frequency, Some(counts)) => {
                // Cumulative training counts over the ids; a uniform draw in [0, total) picks
                // the id whose interval holds it. Ids never counted are never drawn.
                let mut cum = Vec::with_capacity(ids.len());
                let mut total = 0u64;
                for &id in ids {
                    total += counts[id as usize] as u64;
                    cum.push(total);
                }
                if total == 0 {
                    return ids.to_vec();
                }
                let n = want.min(ids.len());
                (0..n)
                    .map(|_| {
                        let r = rand::Rng::random_range(&mut *rng, 0..total);
                        ids[cum.partition_point(|&c| c <= r)]
                    })
                    .collect()
            }
            (SampleKind::Vocabulary, _) if want < vocab => rand::seq::index::sample(rng, vocab, want).into_iter().map(|i| i as u32).collect(),
            (SampleKind::Vocabulary, _) => (0..vocab as u32).collect(),
            _ if want >= ids.len() => ids.to_vec(),
            _ => rand::seq::index::sample(rng, ids.len(), want).into_iter().map(|i| ids[i]).collect(),
        }
    }

    /// Steps 1-4 for one column; returns the k-means inertia per sampled point.
    fn cluster_column(col: &mut Column, dc: usize, ids: &[u32], sample: &[u32], km: KMeansConfig, new_h1: UniversalHash, o: &CqrOptions) -> Result<f64, MethodError> {
        let (rows0, rows1, w) = (col.t0.rows, col.t1.rows, col.t1.dim);
        let mut vecs = Vec::with_capacity(sample.len() * dc);
        Self::column_vectors(col, dc, sample, &mut vecs);
        let fit = km.fit(&vecs, dc)?;
        drop(vecs);
        let mut new_h0 = col.h0.clone();
        let mut sums = vec![0.0f64; rows1 * w];
        let mut counts = vec![0u64; rows1];
        let mut batch_vecs = Vec::with_capacity(ID_BATCH * dc);
        // One index for every batch (building it per batch would repeat the kd-split).
        let index = NearestIndex::new(&fit.centroids, dc);
        for batch in ids.chunks(ID_BATCH) {
            Self::column_vectors(col, dc, batch, &mut batch_vecs);
            let nearest = assign_indexed(&index, &batch_vecs, dc, &fit.centroids);
            // Residual sums in id order, in f64: the same bits for any thread count.
            for (i, &id) in batch.iter().enumerate() {
                let k = nearest[i] as usize;
                new_h0.set(id as usize, k as u32);
                let v = &batch_vecs[i * dc..(i + 1) * dc];
                let cen = &fit.centroids[k * dc..(k + 1) * dc];
                let start = new_h1.hash(id) as usize;
                // Hashed: one row of width dc. ROBE: dc entries of width 1 from the offset on.
                for piece in 0..dc / w {
                    let b = if start + piece >= rows1 { start + piece - rows1 } else { start + piece };
                    counts[b] += 1;
                    for t in 0..w {
                        sums[b * w + t] += (v[piece * w + t] - cen[piece * w + t]) as f64;
                    }
                }
            }
        }
        debug_assert!(rows0 == fit.centroids.len() / dc);
        col.t0.weights.copy_from_slice(&fit.centroids);
        for b in 0..rows1 {
            for t in 0..w {
                let mean = counts[b] > 0 && o.residual_init == ResidualInit::Mean;
                col.t1.weights[b * w + t] = if mean { (sums[b * w + t] / counts[b] as f64) as f32 } else { 0.0 };
            }
        }
        if o.reset_optimizer {
            col.t0.reset_state();
            col.t1.reset_state();
        }
        col.h0 = new_h0;
        col.h1 = new_h1;
        Ok(fit.inertia / sample.len().max(1) as f64)
    }

    #[cfg(test)]
    pub(crate) fn zero_t1(&mut self) {
        for col in &mut self.columns {
            col.t1.weights.iter_mut().for_each(|w| *w = 0.0);
        }
    }
}

impl EmbeddingMethod for Cqr {
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
        let dc = self.dc;
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            for (col, oc) in self.columns.iter().zip(o.chunks_exact_mut(dc)) {
                col.sub_vector(id, dc, oc);
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let dc = self.dc;
        if let Some(seen) = &mut self.seen {
            ids.iter().for_each(|&id| seen.insert(id));
        }
        if let Some(counts) = &mut self.counts {
            ids.iter().for_each(|&id| counts[id as usize] = counts[id as usize].saturating_add(1));
        }
        for c in 0..self.columns.len() {
            let col = &mut self.columns[c];
            self.rows0_buf.clear();
            self.rows1_buf.clear();
            self.rows0_buf.extend(ids.iter().map(|&id| col.h0.get(id as usize)));
            // ROBE: dc rows of width 1 per id, in the order of the id's dc gradient values.
            self.rows1_buf.extend(ids.iter().flat_map(|&id| col.t1_rows(id, dc).map(|r| r as u32)));
            gather_chunk(grad, self.dim, c, dc, &mut self.grad_buf);
            col.t0.update(&self.rows0_buf, &self.grad_buf);
            col.t1.update(&self.rows1_buf, &self.grad_buf);
        }
    }
    fn accounting(&self) -> Accounting {
        let mut a = Accounting::default();
        for col in &self.columns {
            a.trainable_params += col.t0.param_count() + col.t1.param_count();
            a.optimizer_state_bytes += col.t0.state_bytes() + col.t1.state_bytes();
            a.index_bytes += col.h0.bytes();
            a.other_bytes += UniversalHash::BYTES;
        }
        a.other_bytes += self.seen.as_ref().map_or(0, SeenSet::bytes);
        a.other_bytes += self.counts.as_ref().map_or(0, |c| 4 * c.len() as u64);
        a
    }
    fn layout_snapshot(&self) -> Option<crate::Layout> {
        Some(Box::new(self.columns.iter().map(|c| (c.h0.clone(), c.h1)).collect::<Vec<_>>()))
    }
    fn restore_layout(&mut self, layout: &crate::Layout) {
        let saved = layout.downcast_ref::<Vec<(PackedIndex, UniversalHash)>>().expect("a CQR layout");
        for (c, (h0, h1)) in self.columns.iter_mut().zip(saved) {
            c.h0 = h0.clone();
            c.h1 = *h1;
        }
    }
    /// Chunk c: row `pointers{c}[id]` of `t0_{c}` plus row `h1(id)` of `t1_{c}` (the hashed
    /// second table; the ROBE-style circular array has no export).
    fn export(&self) -> Option<Export> {
        let (mut arrays, mut parts) = (vec![], vec![]);
        for (c, col) in self.columns.iter().enumerate() {
            if col.t1.dim != self.dc {
                return None;
            }
            let (t0, t1, ptr) = (format!("t0_{c}"), format!("t1_{c}"), format!("pointers{c}"));
            let pointer = Index::Pointer { array: ptr.clone(), column: 0 };
            parts.push(export::sum(self.dc, vec![export::term(&t0, pointer), export::term(&t1, col.h1.index())]));
            arrays.push((t0, export::table(col.t0.rows, col.t0.dim, &col.t0.weights)));
            arrays.push((t1, export::table(col.t1.rows, col.t1.dim, &col.t1.weights)));
            arrays.push((ptr, export::pointers(self.vocab, 1, &col.h0)));
        }
        Some(Export { arrays, parts })
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.columns.iter_mut().flat_map(|c| [c.t0.weights.as_mut_slice(), c.t1.weights.as_mut_slice()]).collect()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.columns.iter().flat_map(|c| [c.t0.dim, c.t1.dim]).collect()
    }
    fn on_epoch_end(&mut self, epoch: usize) -> Result<HookReport, MethodError> {
        if self.schedule.at_epoch_end(epoch) {
            self.cluster()
        } else {
            Ok(HookReport::default())
        }
    }
    fn uses_step_hook(&self) -> bool {
        matches!(self.schedule, ClusterSchedule::Steps { .. })
    }
    fn on_step(&mut self, step: usize) -> Result<HookReport, MethodError> {
        if self.schedule.at_step(step) {
            self.cluster()
        } else {
            Ok(HookReport::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Cqr::new(p).unwrap())
    }

    #[test]
    fn sample_kinds_draw_what_they_say() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ids: Vec<u32> = vec![3, 5, 7, 9];
        // Seen: all of them when fewer than wanted; a subset of them otherwise.
        assert_eq!(Cqr::draw_sample(SampleKind::Seen, &ids, 100, None, 10, &mut rng), ids);
        let s = Cqr::draw_sample(SampleKind::Seen, &ids, 100, None, 2, &mut rng);
        assert!(s.len() == 2 && s.iter().all(|i| ids.contains(i)));
        // Vocabulary: any id of the vocabulary, seen or not.
        let v = Cqr::draw_sample(SampleKind::Vocabulary, &ids, 100, None, 50, &mut rng);
        assert_eq!(v.len(), 50);
        assert!(v.iter().filter(|i| !ids.contains(i)).count() > 40);
        // Frequency: in proportion to the counts; an id never counted is never drawn.
        let mut counts = vec![0u32; 100];
        counts[3] = 1;
        counts[5] = 9;
        let f = Cqr::draw_sample(SampleKind::Frequency, &ids, 100, Some(&counts), 4, &mut rng);
        assert_eq!(f.len(), 4);
        assert!(f.iter().all(|&i| i == 3 || i == 5));
        let many = Cqr::draw_sample(SampleKind::Frequency, &(0..100).collect::<Vec<u32>>(), 100, Some(&counts), 100, &mut rng);
        let fives = many.iter().filter(|&&i| i == 5).count();
        assert!((75..=100).contains(&fives), "id 5 holds 90% of the counts: drawn {fives} of 100");
    }

    #[test]
    fn design_options_change_what_a_cluster_step_does() {
        let vocab = 400;
        let build = |o: serde_json::Value| {
            let p = MethodParams::new(vocab, 4, 4 * 40).with_options(o).with_optimizer(crate::RowOptimizer::LazyAdam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
            Cqr::new(&p).unwrap()
        };
        let ids: Vec<u32> = (0..vocab as u32).collect();
        let grad = vec![0.1f32; vocab * 4];
        let run = |m: &mut Cqr| {
            m.backward(&ids, &grad);
            m.cluster().unwrap();
        };
        // Zeros: T1 is all zeros after the step; mean residuals: not.
        let mut z = build(json!({"n_chunks": 2, "residual_init": "zeros"}));
        run(&mut z);
        assert!(z.columns.iter().all(|c| c.t1.weights.iter().all(|&w| w == 0.0)));
        let mut m = build(json!({"n_chunks": 2}));
        run(&mut m);
        assert!(m.columns.iter().any(|c| c.t1.weights.iter().any(|&w| w != 0.0)));
        // Kept optimizer state: the moments survive the step; reset: they are zero.
        let mut k = build(json!({"n_chunks": 2, "reset_optimizer": false}));
        run(&mut k);
        assert!(k.columns[0].t0.state_bytes() > 0 && k.accounting().optimizer_state_bytes == m.accounting().optimizer_state_bytes);
        assert!(k.columns.iter().any(|c| c.t0.has_state()) && !m.columns.iter().any(|c| c.t0.has_state()));
        // Frequency: the counts are part of the method's bytes.
        let f = build(json!({"n_chunks": 2, "sample": "frequency"}));
        assert_eq!(f.accounting().other_bytes, m.accounting().other_bytes + 4 * vocab as u64);
        assert!(Cqr::new(&MethodParams::new(vocab, 4, 160).with_options(json!({"sample": "often"}))).is_err());
    }

    #[test]
    fn gradients_budget_and_index_bytes() {
        let p = MethodParams::new(300, 4, 4 * 12).with_options(json!({"n_chunks": 2}));
        check_gradients(&build, &p, &[1, 2, 3, 1, 299, 150]);
        check_budgets(&build, 10_000, 16, &[32, 100, 3200, 99_999]);
        // 10,000 ids x 4 columns of pointers into 100 rows: one byte each.
        let m = Cqr::new(&MethodParams::new(10_000, 16, 3200)).unwrap();
        assert_eq!(m.accounting().index_bytes, 40_000);
        let m = Cqr::new(&MethodParams::new(10_000, 16, 16 * 1000)).unwrap();
        assert_eq!(m.accounting().index_bytes, 80_000, "500 rows need u16 pointers");
        assert!(Cqr::new(&MethodParams::new(100, 16, 16)).is_err(), "one row cannot hold T0 and T1");
    }

    #[test]
    fn robe_residual_gradients_budget_and_cluster_step() {
        let o = json!({"n_chunks": 2, "residual": "robe"});
        let p = MethodParams::new(300, 4, 4 * 12).with_options(o.clone());
        check_gradients(&build, &p, &[1, 2, 3, 1, 299, 150]);
        for budget in [32u64, 100, 3200, 99_999] {
            let h = Cqr::new(&MethodParams::new(10_000, 16, budget).with_options(json!({"residual": "hashed"})));
            let r = Cqr::new(&MethodParams::new(10_000, 16, budget).with_options(json!({"residual": "robe"})));
            match (h, r) {
                (Ok(h), Ok(r)) => assert_eq!(h.accounting(), r.accounting(), "same parameters and bytes at budget {budget}"),
                (Err(_), Err(_)) => {}
                _ => panic!("robe and hashed disagree on feasibility at {budget}"),
            }
        }
        // An id's sub-vector reads dc consecutive entries of the array, wrapping at the end.
        let mut m = Cqr::new(&MethodParams::new(50, 4, 4 * 6).with_options(o)).unwrap();
        let col = &m.columns[0];
        assert_eq!((col.t1.rows, col.t1.dim), (3 * 2, 1));
        let rows: Vec<usize> = col.t1_rows(7, 2).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], (rows[0] + 1) % 6);
        // The cluster step keeps the embeddings close (centroid + mean residual) and stays finite.
        let ids: Vec<u32> = (0..50).collect();
        let mut before = vec![0.0; 50 * 4];
        m.forward(&ids, &mut before);
        m.backward(&ids, &vec![0.0; 50 * 4]);
        m.cluster().unwrap();
        let mut after = vec![0.0; 50 * 4];
        m.forward(&ids, &mut after);
        assert!(after.iter().all(|v| v.is_finite()));
        let err: f32 = before.iter().zip(&after).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f32 = before.iter().map(|a| a * a).sum();
        assert!(err < norm, "cluster step error {err} vs norm {norm}");
    }

    #[test]
    fn cluster_step_reproduces_a_table_with_few_distinct_vectors() {
        // With T1 = 0 every column holds at most rows0 distinct vectors (the T0 rows), so k-means
        // finds them exactly and the cluster step must reproduce every embedding.
        let mut m = Cqr::new(&MethodParams::new(2000, 8, 8 * 40).with_options(json!({"n_chunks": 2, "kmeans_iter": 50, "skip_unseen": false}))).unwrap();
        m.zero_t1();
        let ids: Vec<u32> = (0..2000).collect();
        let mut before = vec![0.0; 2000 * 8];
        m.forward(&ids, &mut before);
        m.cluster().unwrap();
        let mut after = vec![0.0; 2000 * 8];
        m.forward(&ids, &mut after);
        assert_eq!(before, after);
    }

    #[test]
    fn empty_buckets_give_zeros_not_nan() {
        // 5 ids, 100 T1 rows: most buckets are empty.
        let mut m = Cqr::new(&MethodParams::new(5, 4, 4 * 200).with_options(json!({"n_chunks": 1, "skip_unseen": false}))).unwrap();
        m.cluster().unwrap();
        let t1 = &m.columns[0].t1.weights;
        assert!(t1.iter().all(|v| v.is_finite()));
        assert!(t1.iter().filter(|&&v| v == 0.0).count() >= (100 - 5) * 4);
        let mut out = vec![0.0; 20];
        m.forward(&[0, 1, 2, 3, 4], &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn cluster_step_approximates_the_embeddings() {
        // On a random table the step replaces vectors by centroid + mean residual: the error must
        // be well below the table's own variance.
        let mut m = Cqr::new(&MethodParams::new(5000, 8, 8 * 400).with_options(json!({"n_chunks": 4, "skip_unseen": false}))).unwrap();
        let ids: Vec<u32> = (0..5000).collect();
        let mut before = vec![0.0; 5000 * 8];
        m.forward(&ids, &mut before);
        m.cluster().unwrap();
        let mut after = vec![0.0; 5000 * 8];
        m.forward(&ids, &mut after);
        let err: f64 = before.iter().zip(&after).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let var: f64 = before.iter().map(|a| (*a as f64).powi(2)).sum();
        assert!(err < 0.5 * var, "error {err} vs energy {var}");
    }

    #[test]
    fn schedule_defaults_to_three_quarters() {
        let mut m = Cqr::new(&MethodParams::new(100, 4, 80).with_epochs(4)).unwrap();
        m.backward(&[1, 2, 3], &[0.1; 12]);
        for e in 0..4 {
            m.on_epoch_end(e).unwrap();
            m.on_step(e + 1).unwrap();
        }
        assert_eq!(m.clusters_done(), 3);
    }

    fn schedule(o: serde_json::Value, epochs: usize, steps: usize, eval: Option<usize>) -> Result<ClusterSchedule, MethodError> {
        let p = MethodParams::new(100, 4, 80).with_epochs(epochs).with_steps(steps, eval).with_options(o.clone());
        ClusterSchedule::new(&p.options::<CqrOptions>("cqr").unwrap(), &p)
    }

    fn cluster_steps(s: ClusterSchedule, total: usize) -> Vec<usize> {
        (1..=total).filter(|&t| s.at_step(t)).collect()
    }

    #[test]
    fn step_schedules_cluster_where_the_options_say() {
        // 2 epochs x 100 steps, every 30 steps, until 0.75 * 200 = 150.
        let s = schedule(json!({"cluster_every_steps": 30}), 2, 100, None).unwrap();
        assert_eq!(s, ClusterSchedule::Steps { every: 30, until: 150 });
        assert_eq!(cluster_steps(s, 200), vec![30, 60, 90, 120, 150]);
        assert!(!s.at_epoch_end(0), "a step schedule never clusters at epoch ends");
        // At evaluations (every 40 steps), until epoch 1 begins.
        let s = schedule(json!({"cluster_at_evaluation": true, "last_cluster": 1}), 2, 100, Some(40)).unwrap();
        assert_eq!(cluster_steps(s, 200), vec![40, 80]);
        // A fraction of the steps.
        let s = schedule(json!({"cluster_every_steps": 10, "last_cluster_fraction": 0.1}), 3, 100, None).unwrap();
        assert_eq!(cluster_steps(s, 300), vec![10, 20, 30]);
        // Epoch schedule: default 0.75 of the epochs, or a fraction of them.
        let s = schedule(json!({}), 4, 100, None).unwrap();
        assert_eq!(((0..4).filter(|&e| s.at_epoch_end(e)).count(), cluster_steps(s, 400).len()), (3, 0));
        let s = schedule(json!({"last_cluster_fraction": 0.5}), 4, 0, None).unwrap();
        assert_eq!((0..4).filter(|&e| s.at_epoch_end(e)).collect::<Vec<_>>(), vec![0, 1]);
        // Errors: no evaluation interval, no steps per epoch, both forms, bad fraction.
        assert!(schedule(json!({"cluster_at_evaluation": true}), 2, 100, None).is_err());
        assert!(schedule(json!({"cluster_every_steps": 5}), 2, 0, None).is_err());
        assert!(schedule(json!({"cluster_every_steps": 5, "cluster_at_evaluation": true}), 2, 100, Some(5)).is_err());
        assert!(schedule(json!({"last_cluster": 1, "last_cluster_fraction": 0.5}), 2, 100, None).is_err());
        assert!(schedule(json!({"cluster_every_steps": 5, "last_cluster_fraction": 1.5}), 2, 100, None).is_err());
        assert!(schedule(json!({"cluster_every_steps": 0}), 2, 100, None).is_err());
    }

    #[test]
    fn unseen_ids_are_neither_sampled_nor_reassigned() {
        let mut m = Cqr::new(&MethodParams::new(1000, 8, 8 * 40).with_options(json!({"n_chunks": 2}))).unwrap();
        assert!(!m.cluster().unwrap().changed, "nothing seen yet: no cluster step");
        let seen: Vec<u32> = (0..1000).step_by(3).collect();
        m.backward(&seen, &vec![0.01; seen.len() * 8]);
        let unseen: Vec<usize> = (0..1000).filter(|i| i % 3 != 0).collect();
        let before: Vec<u32> = unseen.iter().map(|&i| m.columns[0].h0.get(i)).collect();
        let r = m.cluster().unwrap();
        assert!(r.changed && r.detail.contains("over 334 ids"), "{}", r.detail);
        let after: Vec<u32> = unseen.iter().map(|&i| m.columns[0].h0.get(i)).collect();
        assert_eq!(before, after, "unseen ids keep their pointers");
        // The bitset is counted: 16 words of 8 bytes, plus the hash coefficients.
        let other = m.accounting().other_bytes;
        let all = Cqr::new(&MethodParams::new(1000, 8, 8 * 40).with_options(json!({"n_chunks": 2, "skip_unseen": false}))).unwrap();
        assert_eq!(other - all.accounting().other_bytes, 16 * 8);
    }
}
