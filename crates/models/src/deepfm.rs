//! DeepFM (Guo et al., IJCAI 2017): a factorization machine and a DNN over the same embeddings,
//! their logits summed.
//!
//! With `x0 = [dense features, e_1, ..., e_T]` (`[batch, n_dense + T * dim]`):
//! `logit = w·x0 + b` (first order) `+ ½ Σ_k ((Σ_f e_fk)² − Σ_f e_fk²)` (the FM's pairwise
//! term, `Σ_{f<g} <e_f, e_g>` in O(T·dim)) `+ deep(x0)`.
//!
//! What the paper leaves open and what we chose: the paper's first-order term is a scalar
//! weight per id, which would be a second per-id table outside the compressed method; here it is
//! a learned linear map of each field's embedding (`<w_f, e_f>`), so every per-id parameter stays
//! in the method being measured and is counted by it (Hetu's DeepFM instead reserves the first
//! embedding coordinate). Dense features enter the first-order term and the DNN (the paper's
//! datasets had none; Hetu does the same). The `criteo` preset is the paper's Criteo network,
//! 400-400-400 with ReLU, at dim 16, without its dropout (no backbone here uses dropout).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use crate::net::DeepConfig as DeepFmConfig;
use crate::net::LinearDeep;

/// The paper's Criteo DNN, 400-400-400, at dim 16 (preset `criteo`, alias `kaggle`).
pub fn criteo() -> DeepFmConfig {
    DeepFmConfig { dim: 16, deep: vec![400, 400, 400] }
}

/// Presets: `criteo` (= `kaggle`), and `small` (deep 64) for tests and quick sweeps.
pub fn preset(name: &str) -> Option<DeepFmConfig> {
    match name {
        "kaggle" | "criteo" => Some(criteo()),
        "small" => Some(DeepFmConfig { dim: 16, deep: vec![64] }),
        _ => None,
    }
}

/// DeepFM as a burn module: the first-order and DNN parts, plus the FM term.
#[derive(Module, Debug)]
pub struct DeepFm {
    body: LinearDeep,
}

impl DeepFm {
    pub fn new(cfg: &DeepFmConfig, n_dense: usize, n_tables: usize, seed: u64, device: &Device) -> Self {
        DeepFm { body: LinearDeep::new(cfg, n_dense, n_tables, seed, device) }
    }

    /// The DNN at `precision` (see [`LinearDeep::with_precision`]).
    pub fn with_precision(self, precision: crate::fused::Precision) -> Self {
        DeepFm { body: self.body.with_precision(precision) }
    }

    /// `dense: [batch, n_dense]`, `emb: [tables, batch, dim]` -> logits `[batch, 1]`.
    pub fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        let x0 = self.body.input(dense, emb.clone()); // [batch, n]
                                                      // In this order (first order, FM, DNN): the stored records' float sums.
        self.body.linear.forward(x0.clone()) + fm_pairwise(emb) + self.body.deep.forward(x0)
    }
}

/// The FM's pairwise term `Σ_{f<g} <e_f, e_g>`: `emb: [tables, batch, dim]` -> `[batch, 1]`.
pub fn fm_pairwise(emb: Tensor<3>) -> Tensor<2> {
    let [_, b, d] = emb.dims();
    let sum = emb.clone().sum_dim(0).reshape([b, d]); // [batch, dim]
    let sum_sq = (emb.clone() * emb).sum_dim(0).reshape([b, d]); // [batch, dim]
    (sum.clone() * sum - sum_sq).sum_dim(1) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn the_pairwise_term_is_the_sum_of_dot_products_over_field_pairs() {
        let device = Device::flex();
        // 3 fields, 2 rows, dim 2.
        let v = vec![1.0f32, 2.0, 0.5, -1.0, 3.0, 0.0, 2.0, 2.0, -1.0, 1.0, 0.25, 4.0];
        let emb = Tensor::<3>::from_data(TensorData::new(v.clone(), [3, 2, 2]), &device);
        let got: Vec<f32> = fm_pairwise(emb).into_data().try_to_vec::<f32>().unwrap();
        for (r, g) in got.iter().enumerate() {
            let e = |f: usize, k: usize| v[f * 4 + r * 2 + k];
            let want: f32 = (0..3)
                .flat_map(|f| (0..f).map(move |h| (f, h)))
                .map(|(f, h)| (0..2).map(|k| e(f, k) * e(h, k)).sum::<f32>())
                .sum();
            assert!((g - want).abs() < 1e-5, "row {r}: {g} vs {want}");
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert!(criteo().validate("deepfm").is_ok());
        assert!(DeepFmConfig { dim: 0, ..preset("small").unwrap() }.validate("deepfm").is_err());
        assert_eq!(preset("kaggle"), Some(criteo()));
    }
}
