//! Post-training residual quantization. Trains as the dense table; at the end, stage s runs
//! k-means on the residuals left by stages < s (full-dimensional codewords). The stages' codebook
//! sizes K_s split rows = budget / dim as evenly as possible, so the codebooks hold `rows * dim`
//! floats, within one row of the budget. Encoding is greedy by default; `beam > 1` encodes with a
//! beam search over the stages (codebooks are still learned greedily).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::index::PackedIndex;
use crate::kmeans::{assign, KMeansConfig, KMeansInit};
use crate::pq::{fit_sample, gather, Stage};
use crate::{Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, Table, ID_BATCH};
use crate::export::{self, Export, Index};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RqOptions {
    pub n_stages: usize,
    pub kmeans_iter: usize,
    pub kmeans_init: KMeansInit,
    pub sample_factor: usize,
    /// Beam width for encoding (1 = greedy).
    pub beam: usize,
}

impl Default for RqOptions {
    fn default() -> Self {
        RqOptions { n_stages: 2, kmeans_iter: 25, kmeans_init: KMeansInit::Auto, sample_factor: 256, beam: 1 }
    }
}

pub struct Rq {
    vocab: usize,
    dim: usize,
    ks: Vec<usize>,
    opts: RqOptions,
    seed: u64,
    optimizer: crate::RowOptimizer,
    stage: Stage,
    rows_buf: Vec<u32>,
}

impl Rq {
    pub const NAME: &'static str = "rq";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let opts: RqOptions = p.options(Self::NAME)?;
        if opts.n_stages == 0 || opts.beam == 0 {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: "n_stages and beam must be >= 1".into() });
        }
        let rows = p.budget_rows(Self::NAME, opts.n_stages as u64)?;
        let s = opts.n_stages;
        let ks = (0..s).map(|i| rows / s + usize::from(i < rows % s)).collect();
        let mut table = Table::new(p.vocab, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut ChaCha8Rng::seed_from_u64(p.seed));
        Ok(Rq { vocab: p.vocab, dim: p.dim, ks, opts, seed: p.seed, optimizer: p.optimizer, stage: Stage::Dense(table), rows_buf: vec![] })
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self.stage, Stage::Compressed { .. })
    }

    /// Learns the codebooks and encodes every id; returns the mean squared error per id.
    pub fn compress(&mut self) -> Result<f64, MethodError> {
        let Stage::Dense(table) = &self.stage else { return Ok(0.0) };
        let d = self.dim;
        let n_st = self.ks.len();
        let max_k = *self.ks.iter().max().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        let sample = fit_sample(self.vocab, self.opts.sample_factor.saturating_mul(max_k), &mut rng);
        // Learn codebooks greedily on the residuals of the (sampled) vectors.
        let mut residual = gather(&table.weights, d, &sample).into_owned();
        let mut codebooks = vec![];
        for &k in &self.ks {
            let km = KMeansConfig { k, max_iter: self.opts.kmeans_iter, tol: 1e-4, init: self.opts.kmeans_init, seed: rand::Rng::random(&mut rng) };
            let fit = km.fit(&residual, d)?;
            for (r, &a) in residual.chunks_exact_mut(d).zip(&fit.assignments) {
                r.iter_mut().zip(&fit.centroids[a as usize * d..(a as usize + 1) * d]).for_each(|(r, c)| *r -= c);
            }
            let mut cb = Table::new(k, d, self.optimizer);
            cb.weights.copy_from_slice(&fit.centroids);
            codebooks.push(cb);
        }
        // Encode every id, in batches.
        let mut codes = PackedIndex::zeros(self.vocab * n_st, max_k);
        let mut err = 0.0;
        for start in (0..self.vocab).step_by(ID_BATCH) {
            let end = (start + ID_BATCH).min(self.vocab);
            let x = &table.weights[start * d..end * d];
            let (c, e) = if self.opts.beam <= 1 { encode_greedy(x, d, &codebooks) } else { encode_beam(x, d, &codebooks, self.opts.beam) };
            for (i, code) in c.iter().enumerate() {
                codes.set(start * n_st + i, *code);
            }
            err += e;
        }
        self.stage = Stage::Compressed { codebooks, codes };
        Ok(err / self.vocab as f64)
    }
}

/// Greedy: at each stage pick the nearest codeword to the current residual.
fn encode_greedy(x: &[f32], d: usize, codebooks: &[Table]) -> (Vec<u32>, f64) {
    let n = x.len() / d;
    let s = codebooks.len();
    let mut residual = x.to_vec();
    let mut codes = vec![0u32; n * s];
    let mut err = 0.0;
    for (si, cb) in codebooks.iter().enumerate() {
        let (a, inertia) = assign(&residual, d, &cb.weights);
        for (i, r) in residual.chunks_exact_mut(d).enumerate() {
            codes[i * s + si] = a[i];
            r.iter_mut().zip(cb.row(a[i] as usize)).for_each(|(r, c)| *r -= c);
        }
        err = inertia;
    }
    (codes, err)
}

/// Beam search: keep the `beam` best partial encodings (by residual norm) through the stages.
fn encode_beam(x: &[f32], d: usize, codebooks: &[Table], beam: usize) -> (Vec<u32>, f64) {
    let n = x.len() / d;
    let s = codebooks.len();
    let mut codes = vec![0u32; n * s];
    let mut total = 0.0;
    for i in 0..n {
        // (error, residual, codes)
        let mut cands: Vec<(f64, Vec<f32>, Vec<u32>)> = vec![(0.0, x[i * d..(i + 1) * d].to_vec(), vec![])];
        for cb in codebooks {
            let mut next = Vec::with_capacity(cands.len() * cb.rows);
            for (_, r, c) in &cands {
                for k in 0..cb.rows {
                    let row = cb.row(k);
                    let e: f64 = r.iter().zip(row).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
                    next.push((e, k, r, c));
                }
            }
            next.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            cands = next
                .into_iter()
                .take(beam)
                .map(|(e, k, r, c)| {
                    let row = cb.row(k);
                    let mut c2 = c.clone();
                    c2.push(k as u32);
                    (e, r.iter().zip(row).map(|(a, b)| a - b).collect(), c2)
                })
                .collect();
        }
        let best = &cands[0];
        codes[i * s..(i + 1) * s].copy_from_slice(&best.2);
        total += best.0;
    }
    (codes, total)
}

impl EmbeddingMethod for Rq {
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
        match &self.stage {
            Stage::Dense(t) => {
                for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
                    o.copy_from_slice(t.row(id as usize));
                }
            }
            Stage::Compressed { codebooks, codes } => {
                let s = codebooks.len();
                for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
                    o.iter_mut().for_each(|v| *v = 0.0);
                    for (si, cb) in codebooks.iter().enumerate() {
                        let row = cb.row(codes.get(id as usize * s + si) as usize);
                        o.iter_mut().zip(row).for_each(|(o, r)| *o += r);
                    }
                }
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        match &mut self.stage {
            Stage::Dense(t) => t.update(ids, grad),
            Stage::Compressed { codebooks, codes } => {
                let s = codebooks.len();
                for (si, cb) in codebooks.iter_mut().enumerate() {
                    cb.update_mapped(ids, |id| codes.get(id as usize * s + si), grad, &mut self.rows_buf);
                }
            }
        }
    }
    fn accounting(&self) -> Accounting {
        self.stage.accounting()
    }
    fn export(&self) -> Option<Export> {
        // One part: the sum over stages s of row codes[id, s] of codebook s.
        self.stage.export(self.vocab, |cbs| {
            let pointer = |s: usize| Index::Pointer { array: "codes".into(), column: s };
            let terms = (0..cbs.len()).map(|s| export::term(&format!("codebook{s}"), pointer(s))).collect();
            vec![export::sum(self.dim, terms)]
        })
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.stage.parameters_mut()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.stage.row_widths()
    }
    fn on_train_end(&mut self) -> Result<HookReport, MethodError> {
        if self.is_compressed() {
            return Ok(HookReport::default());
        }
        let mse = self.compress()?;
        Ok(HookReport { changed: true, detail: format!("rq: K per stage {:?}, reconstruction MSE per id {mse:.4e}", self.ks) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pq::tests::{mse_after_compress, two_level_clusters};
    use crate::pq::Pq;
    use crate::testing::check_gradients;
    use serde_json::json;

    #[test]
    fn gradients_before_and_after_compression() {
        let build = |p: &MethodParams| Box::new(Rq::new(p).unwrap()) as Box<dyn EmbeddingMethod>;
        let p = MethodParams::new(40, 4, 4 * 6);
        check_gradients(&build, &p, &[1, 5, 1, 39]);
        let compressed = |p: &MethodParams| {
            let mut m = Rq::new(p).unwrap();
            m.compress().unwrap();
            Box::new(m) as Box<dyn EmbeddingMethod>
        };
        check_gradients(&compressed, &p, &[1, 5, 1, 39]);
    }

    #[test]
    fn error_falls_with_k_and_beats_pq_on_clustered_data() {
        let table = two_level_clusters(3000, 8, 8, 8, 2);
        let mut last = f64::INFINITY;
        for rows in [4u64, 16, 64] {
            let mut m = Rq::new(&MethodParams::new(3000, 8, 8 * rows)).unwrap();
            let mse = mse_after_compress(&mut m, &table);
            assert!(mse < last, "rows {rows}: {mse} !< {last}");
            last = mse;
            assert_eq!(m.accounting().trainable_params, 8 * rows);
            assert_eq!(m.accounting().index_bytes, 3000 * 2);
        }
        // Equal codebook floats (16 rows of dim 8): RQ 2 stages x 8, PQ 2 chunks x 16 of dim 4.
        let mut rq = Rq::new(&MethodParams::new(3000, 8, 8 * 16)).unwrap();
        let mut pq = Pq::new(&MethodParams::new(3000, 8, 8 * 16).with_options(json!({"n_chunks": 2}))).unwrap();
        let (e_rq, e_pq) = (mse_after_compress(&mut rq, &table), mse_after_compress(&mut pq, &table));
        assert!(e_rq <= e_pq, "rq {e_rq} > pq {e_pq}");
        // Beam search never encodes worse than greedy with the same codebooks.
        let mut beam = Rq::new(&MethodParams::new(3000, 8, 8 * 16).with_options(json!({"beam": 4}))).unwrap();
        let e_beam = mse_after_compress(&mut beam, &table);
        assert!(e_beam <= e_rq + 1e-9, "beam {e_beam} > greedy {e_rq}");
    }

    #[test]
    fn budget_smaller_than_stages_is_an_error() {
        let err = Rq::new(&MethodParams::new(100, 8, 8 * 2).with_options(json!({"n_stages": 3}))).err().unwrap().to_string();
        assert!(err.contains("at least 3 rows"), "{err}");
    }
}
