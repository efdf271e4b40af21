//! Post-training product quantization. Trains as the dense table; at the end of training every
//! vector is split into `n_chunks` sub-vectors, each sub-space is k-means clustered into K
//! centroids (K = budget / dim, so the codebooks hold K * dim floats, within one row of the
//! budget), and each id stores one code per chunk. After compression the codebooks are the
//! trainable parameters and the codes count as index bytes.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::ce::{chunk_dim, gather_chunk};
use crate::index::PackedIndex;
use crate::kmeans::{assign, KMeansConfig, KMeansInit};
use crate::{Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, Table};
use crate::export::{self, Export, Index};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PqOptions {
    pub n_chunks: usize,
    pub kmeans_iter: usize,
    pub kmeans_init: KMeansInit,
    /// k-means sees at most `sample_factor * K` vectors (all if fewer); every id is then encoded.
    pub sample_factor: usize,
}

impl Default for PqOptions {
    fn default() -> Self {
        PqOptions { n_chunks: 4, kmeans_iter: 25, kmeans_init: KMeansInit::Auto, sample_factor: 256 }
    }
}

/// A post-training method's table: dense while training, codebooks + codes after compression.
pub(crate) enum Stage {
    Dense(Table),
    Compressed { codebooks: Vec<Table>, codes: PackedIndex },
}

/// What PQ and RQ share: before compression the dense table, after it the codebooks and codes.
impl Stage {
    pub(crate) fn accounting(&self) -> Accounting {
        match self {
            Stage::Dense(t) => Accounting { trainable_params: t.param_count(), optimizer_state_bytes: t.state_bytes(), ..Accounting::default() },
            Stage::Compressed { codebooks, codes } => Accounting {
                trainable_params: codebooks.iter().map(|t| t.param_count()).sum(),
                optimizer_state_bytes: codebooks.iter().map(|t| t.state_bytes()).sum(),
                index_bytes: codes.bytes(),
                ..Accounting::default()
            },
        }
    }
    /// The dense table before compression (identity lookup), else `None` (PQ and RQ read the
    /// codes differently).
    fn export_dense(&self) -> Option<Export> {
        match self {
            Stage::Dense(t) => Some(Export {
                arrays: vec![("table".into(), export::table(t.rows, t.dim, &t.weights))],
                parts: vec![export::sum(t.dim, vec![export::term("table", Index::Identity)])],
            }),
            Stage::Compressed { .. } => None,
        }
    }

    /// The export of a compressed stage: its codebooks (`codebook{k}`) and codes (`codes`,
    /// `[vocab, codebooks]`), with `parts` built from them.
    pub(crate) fn export(&self, vocab: usize, parts: impl Fn(&[Table]) -> Vec<export::Part>) -> Option<Export> {
        if let Some(e) = self.export_dense() {
            return Some(e);
        }
        let Stage::Compressed { codebooks, codes } = self else { return None };
        let mut arrays: Vec<(String, export::Array)> = codebooks
            .iter()
            .enumerate()
            .map(|(k, t)| (format!("codebook{k}"), export::table(t.rows, t.dim, &t.weights)))
            .collect();
        arrays.push(("codes".into(), export::pointers(vocab, codebooks.len(), codes)));
        Some(Export { arrays, parts: parts(codebooks) })
    }

    pub(crate) fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        match self {
            Stage::Dense(t) => vec![&mut t.weights],
            Stage::Compressed { codebooks, .. } => codebooks.iter_mut().map(|t| t.weights.as_mut_slice()).collect(),
        }
    }
    pub(crate) fn row_widths(&self) -> Vec<usize> {
        match self {
            Stage::Dense(t) => vec![t.dim],
            Stage::Compressed { codebooks, .. } => codebooks.iter().map(|t| t.dim).collect(),
        }
    }
}

pub struct Pq {
    vocab: usize,
    dim: usize,
    k: usize,
    opts: PqOptions,
    seed: u64,
    optimizer: crate::RowOptimizer,
    stage: Stage,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

/// Sub-vectors of `chunk` for all rows of `table`.
fn chunk_of(table: &Table, chunk: usize, dc: usize) -> Vec<f32> {
    table.weights.chunks_exact(table.dim).flat_map(|row| row[chunk * dc..(chunk + 1) * dc].iter().copied()).collect()
}

/// Row indices used to fit k-means: all rows, or a seeded sample of `cap`.
pub(crate) fn fit_sample(n: usize, cap: usize, rng: &mut ChaCha8Rng) -> Option<Vec<usize>> {
    if n <= cap {
        None
    } else {
        let mut s = rand::seq::index::sample(rng, n, cap).into_vec();
        s.sort_unstable();
        Some(s)
    }
}

pub(crate) fn gather<'a>(data: &'a [f32], d: usize, rows: &Option<Vec<usize>>) -> std::borrow::Cow<'a, [f32]> {
    match rows {
        None => std::borrow::Cow::Borrowed(data),
        Some(r) => std::borrow::Cow::Owned(r.iter().flat_map(|&i| data[i * d..(i + 1) * d].iter().copied()).collect()),
    }
}

impl Pq {
    pub const NAME: &'static str = "pq";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let opts: PqOptions = p.options(Self::NAME)?;
        chunk_dim(Self::NAME, p.dim, opts.n_chunks)?;
        let k = p.budget_rows(Self::NAME, 1)?.min(p.vocab);
        let mut table = Table::new(p.vocab, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut ChaCha8Rng::seed_from_u64(p.seed));
        Ok(Pq { vocab: p.vocab, dim: p.dim, k, opts, seed: p.seed, optimizer: p.optimizer, stage: Stage::Dense(table), rows_buf: vec![], grad_buf: vec![] })
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self.stage, Stage::Compressed { .. })
    }

    /// Quantizes the dense table; returns the mean squared reconstruction error per id.
    pub fn compress(&mut self) -> Result<f64, MethodError> {
        let Stage::Dense(table) = &self.stage else { return Ok(0.0) };
        let nc = self.opts.n_chunks;
        let dc = self.dim / nc;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x9e37_79b9_7f4a_7c15);
        let sample = fit_sample(self.vocab, self.opts.sample_factor.saturating_mul(self.k), &mut rng);
        let mut codes = PackedIndex::zeros(self.vocab * nc, self.k);
        let mut codebooks = vec![];
        let mut err = 0.0;
        for c in 0..nc {
            let sub = chunk_of(table, c, dc);
            let km = KMeansConfig { k: self.k, max_iter: self.opts.kmeans_iter, tol: 1e-4, init: self.opts.kmeans_init, seed: rand::Rng::random(&mut rng) };
            let fit = km.fit(&gather(&sub, dc, &sample), dc)?;
            let (assignment, inertia) = assign(&sub, dc, &fit.centroids);
            err += inertia;
            for (id, &a) in assignment.iter().enumerate() {
                codes.set(id * nc + c, a);
            }
            let mut cb = Table::new(self.k, dc, self.optimizer);
            cb.weights.copy_from_slice(&fit.centroids);
            codebooks.push(cb);
        }
        self.stage = Stage::Compressed { codebooks, codes };
        Ok(err / self.vocab as f64)
    }
}

impl EmbeddingMethod for Pq {
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
                let nc = codebooks.len();
                for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
                    for (c, (cb, oc)) in codebooks.iter().zip(o.chunks_exact_mut(self.dim / nc)).enumerate() {
                        oc.copy_from_slice(cb.row(codes.get(id as usize * nc + c) as usize));
                    }
                }
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        match &mut self.stage {
            Stage::Dense(t) => t.update(ids, grad),
            Stage::Compressed { codebooks, codes } => {
                let nc = codebooks.len();
                let dc = self.dim / nc;
                for (c, cb) in codebooks.iter_mut().enumerate() {
                    gather_chunk(grad, self.dim, c, dc, &mut self.grad_buf);
                    cb.update_mapped(ids, |id| codes.get(id as usize * nc + c), &self.grad_buf, &mut self.rows_buf);
                }
            }
        }
    }
    fn accounting(&self) -> Accounting {
        self.stage.accounting()
    }
    fn export(&self) -> Option<Export> {
        // Chunk c of the vector: row codes[id, c] of codebook c.
        self.stage.export(self.vocab, |cbs| {
            let pointer = |c: usize| Index::Pointer { array: "codes".into(), column: c };
            cbs.iter().enumerate().map(|(c, t)| export::sum(t.dim, vec![export::term(&format!("codebook{c}"), pointer(c))])).collect()
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
        Ok(HookReport { changed: true, detail: format!("pq: K = {}, reconstruction MSE per id {mse:.4e}", self.k) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use rand::Rng;
    use serde_json::json;

    /// Vectors that are sums a_i + b_j of two random codebooks (a large, b small): "clustered".
    pub fn two_level_clusters(n: usize, dim: usize, ka: usize, kb: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f32> = (0..ka * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..kb * dim).map(|_| rng.random_range(-0.3..0.3)).collect();
        (0..n).flat_map(|_| {
            let i = rng.random_range(0..ka);
            let j = rng.random_range(0..kb);
            (0..dim).map(|t| a[i * dim + t] + b[j * dim + t] + rng.random_range(-0.01..0.01)).collect::<Vec<_>>()
        }).collect()
    }

    pub fn mse_after_compress(m: &mut dyn EmbeddingMethod, table: &[f32]) -> f64 {
        m.parameters_mut()[0].copy_from_slice(table);
        m.on_train_end().unwrap();
        let ids: Vec<u32> = (0..m.vocab() as u32).collect();
        let mut out = vec![0.0; table.len()];
        m.forward(&ids, &mut out);
        out.iter().zip(table).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / m.vocab() as f64
    }

    #[test]
    fn gradients_before_and_after_compression() {
        let build = |p: &MethodParams| Box::new(Pq::new(p).unwrap()) as Box<dyn EmbeddingMethod>;
        let p = MethodParams::new(40, 4, 4 * 6).with_options(json!({"n_chunks": 2}));
        check_gradients(&build, &p, &[1, 5, 1, 39]);
        let compressed = |p: &MethodParams| {
            let mut m = Pq::new(p).unwrap();
            m.compress().unwrap();
            Box::new(m) as Box<dyn EmbeddingMethod>
        };
        check_gradients(&compressed, &p, &[1, 5, 1, 39]);
    }

    #[test]
    fn error_falls_as_k_grows_and_accounting_is_exact() {
        let table = two_level_clusters(2000, 8, 16, 16, 1);
        let mut last = f64::INFINITY;
        for k in [2u64, 8, 32, 128] {
            let mut m = Pq::new(&MethodParams::new(2000, 8, 8 * k).with_options(json!({"n_chunks": 2}))).unwrap();
            let mse = mse_after_compress(&mut m, &table);
            assert!(mse < last, "K = {k}: {mse} !< {last}");
            last = mse;
            let a = m.accounting();
            assert_eq!(a.trainable_params, 8 * k);
            assert_eq!(a.index_bytes, 2000 * 2, "K <= 256 codes are stored as one byte");
        }
    }
}
