//! CQR / CCE ("Clustering the Sketch", Tsang & Ahle, NeurIPS 2023).
//!
//! The vector is split into `n_chunks` columns. In column c the embedding of an id is
//! `T0_c[h0_c(id)] + T1_c[h1_c(id)]`: T0 is a codebook reached through stored pointers h0, T1 a
//! table reached through a hash function h1. Both start random. At the end of an epoch (while
//! `epoch < last_cluster`, 0-based, default floor(0.75 * epochs)) each column is re-clustered:
//!
//! 1. sample up to `sample_factor * rows0` ids (all ids if fewer) and compute their current
//!    sub-vectors;
//! 2. k-means them into `rows0` centroids;
//! 3. point every id at its nearest centroid (in batches, so memory stays bounded): new h0;
//! 4. T0 := centroids; draw a fresh hash h1; T1 := mean residual (vector - centroid) of the ids in
//!    each new h1 bucket, over every id; empty buckets get zeros.
//!
//! The optimizer state of both tables is reset after a cluster step (the old moments belong to
//! rows that no longer exist). Budget: rows = budget / dim rows in all per column pair, split as
//! rows0 = rows / 2 for T0 and rows1 = rows - rows0 for T1, so trainable parameters are
//! `rows * dim`, within one row of the budget.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::ce::{chunk_dim, gather_chunk};
use crate::hash::UniversalHash;
use crate::index::PackedIndex;
use crate::kmeans::{assign, KMeansConfig, KMeansInit};
use crate::{Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, Table, ID_BATCH};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqrOptions {
    pub n_chunks: usize,
    /// k-means sees at most `sample_factor * rows0` ids per column (faiss's default is 256).
    pub sample_factor: usize,
    pub kmeans_iter: usize,
    pub kmeans_init: KMeansInit,
    /// Cluster after epochs `0..last_cluster`; default floor(0.75 * epochs).
    pub last_cluster: Option<usize>,
}

impl Default for CqrOptions {
    fn default() -> Self {
        CqrOptions { n_chunks: 4, sample_factor: 256, kmeans_iter: 25, kmeans_init: KMeansInit::KMeansPlusPlus, last_cluster: None }
    }
}

struct Column {
    t0: Table,
    t1: Table,
    h0: PackedIndex,
    h1: UniversalHash,
}

pub struct Cqr {
    vocab: usize,
    dim: usize,
    dc: usize,
    columns: Vec<Column>,
    opts: CqrOptions,
    last_cluster: usize,
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
        let columns = (0..opts.n_chunks)
            .map(|_| {
                let mut t0 = Table::new(rows0, dc, p.optimizer);
                let mut t1 = Table::new(rows1, dc, p.optimizer);
                t0.init_uniform(a, &mut rng);
                t1.init_uniform(a, &mut rng);
                // Initial pointers are random, exactly like a hash, but stored: clustering replaces
                // them, so the array is part of CQR's memory from the start.
                let start = UniversalHash::new(rows0, &mut rng);
                let ptrs: Vec<u32> = (0..p.vocab as u32).map(|id| start.hash(id)).collect();
                let h0 = PackedIndex::from_values(&ptrs, rows0);
                let h1 = UniversalHash::new(rows1, &mut rng);
                Column { t0, t1, h0, h1 }
            })
            .collect();
        let last_cluster = opts.last_cluster.unwrap_or(p.epochs * 3 / 4);
        Ok(Cqr { vocab: p.vocab, dim: p.dim, dc, columns, opts, last_cluster, rng, clusters_done: 0, rows0_buf: vec![], rows1_buf: vec![], grad_buf: vec![] })
    }

    pub fn clusters_done(&self) -> usize {
        self.clusters_done
    }

    /// Sub-vectors of column `c` for `ids`, written to `out` (`ids.len() * dc`).
    fn column_vectors(col: &Column, _dc: usize, ids: &[u32], out: &mut Vec<f32>) {
        out.clear();
        for &id in ids {
            let a = col.t0.row(col.h0.get(id as usize) as usize);
            let b = col.t1.row(col.h1.hash(id) as usize);
            out.extend(a.iter().zip(b).map(|(x, y)| x + y));
        }
    }

    /// One cluster step on every column (steps 1-4 of the module docs).
    pub fn cluster(&mut self) -> Result<HookReport, MethodError> {
        let dc = self.dc;
        let vocab = self.vocab;
        let mut inertias = vec![];
        for c in 0..self.columns.len() {
            let col = &self.columns[c];
            let rows0 = col.t0.rows;
            let rows1 = col.t1.rows;
            // 1. Sample ids.
            let n_sample = (self.opts.sample_factor.saturating_mul(rows0)).min(vocab);
            let mut sample: Vec<u32> = if n_sample == vocab {
                (0..vocab as u32).collect()
            } else {
                rand::seq::index::sample(&mut self.rng, vocab, n_sample).into_iter().map(|i| i as u32).collect()
            };
            sample.sort_unstable();
            let mut vecs = Vec::with_capacity(sample.len() * dc);
            Self::column_vectors(col, dc, &sample, &mut vecs);
            // 2. k-means.
            let km = KMeansConfig { k: rows0, max_iter: self.opts.kmeans_iter, tol: 1e-4, init: self.opts.kmeans_init, seed: rand::Rng::random(&mut self.rng) };
            let fit = km.fit(&vecs, dc)?;
            inertias.push(fit.inertia / sample.len().max(1) as f64);
            // 3 + 4. New pointers for every id, and residual sums in the fresh h1's buckets.
            let new_h1 = UniversalHash::new(rows1, &mut self.rng);
            let mut new_h0 = PackedIndex::zeros(vocab, rows0);
            let mut sums = vec![0.0f64; rows1 * dc];
            let mut counts = vec![0u64; rows1];
            let mut batch_vecs = Vec::with_capacity(ID_BATCH * dc);
            let mut ids: Vec<u32> = Vec::with_capacity(ID_BATCH);
            for start in (0..vocab).step_by(ID_BATCH) {
                ids.clear();
                ids.extend(start as u32..(start + ID_BATCH).min(vocab) as u32);
                Self::column_vectors(col, dc, &ids, &mut batch_vecs);
                let (nearest, _) = assign(&batch_vecs, dc, &fit.centroids);
                for (i, &id) in ids.iter().enumerate() {
                    let k = nearest[i] as usize;
                    new_h0.set(id as usize, k as u32);
                    let b = new_h1.hash(id) as usize;
                    counts[b] += 1;
                    let v = &batch_vecs[i * dc..(i + 1) * dc];
                    let cen = &fit.centroids[k * dc..(k + 1) * dc];
                    for t in 0..dc {
                        sums[b * dc + t] += (v[t] - cen[t]) as f64;
                    }
                }
            }
            let col = &mut self.columns[c];
            col.t0.weights.copy_from_slice(&fit.centroids);
            for b in 0..rows1 {
                for t in 0..dc {
                    col.t1.weights[b * dc + t] = if counts[b] > 0 { (sums[b * dc + t] / counts[b] as f64) as f32 } else { 0.0 };
                }
            }
            col.t0.reset_state();
            col.t1.reset_state();
            col.h0 = new_h0;
            col.h1 = new_h1;
        }
        self.clusters_done += 1;
        Ok(HookReport { changed: true, detail: format!("cqr cluster #{}: k-means inertia per point by column {:?}", self.clusters_done, inertias.iter().map(|v| format!("{v:.3e}")).collect::<Vec<_>>()) })
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
                let a = col.t0.row(col.h0.get(id as usize) as usize);
                let b = col.t1.row(col.h1.hash(id) as usize);
                oc.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (x, y))| *o = x + y);
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let dc = self.dc;
        for c in 0..self.columns.len() {
            let col = &mut self.columns[c];
            self.rows0_buf.clear();
            self.rows1_buf.clear();
            self.rows0_buf.extend(ids.iter().map(|&id| col.h0.get(id as usize)));
            self.rows1_buf.extend(ids.iter().map(|&id| col.h1.hash(id)));
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
        a
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.columns.iter_mut().flat_map(|c| [c.t0.weights.as_mut_slice(), c.t1.weights.as_mut_slice()]).collect()
    }
    fn on_epoch_end(&mut self, epoch: usize) -> Result<HookReport, MethodError> {
        if epoch < self.last_cluster {
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
    fn cluster_step_reproduces_a_table_with_few_distinct_vectors() {
        // With T1 = 0 every column holds at most rows0 distinct vectors (the T0 rows), so k-means
        // finds them exactly and the cluster step must reproduce every embedding.
        let mut m = Cqr::new(&MethodParams::new(2000, 8, 8 * 40).with_options(json!({"n_chunks": 2, "kmeans_iter": 50}))).unwrap();
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
        let mut m = Cqr::new(&MethodParams::new(5, 4, 4 * 200).with_options(json!({"n_chunks": 1}))).unwrap();
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
        let mut m = Cqr::new(&MethodParams::new(5000, 8, 8 * 400).with_options(json!({"n_chunks": 4}))).unwrap();
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
        for e in 0..4 {
            m.on_epoch_end(e).unwrap();
        }
        assert_eq!(m.clusters_done(), 3);
    }
}
