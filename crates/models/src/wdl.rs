//! Wide & Deep (Cheng et al., DLRS 2016): a linear ("wide") model and an MLP ("deep") over the
//! same input, their logits summed.
//!
//! With `x0 = [dense features, e_1, ..., e_T]` (`[batch, n_dense + T * dim]`):
//! `logit = w·x0 + deep(x0)`.
//!
//! What the paper leaves open and what we chose: its wide part takes hand-made cross-product
//! features, which Criteo does not name; here, as in the Hetu benchmark's WDL, the wide part is
//! linear in the dense features and the embeddings (so every per-id parameter stays in the
//! embedding method being measured). The paper has no Criteo run; the `criteo` preset is the
//! Hetu benchmark's deep network, 256-256, at dim 16.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use crate::net::DeepConfig as WdlConfig;
use crate::net::LinearDeep;

/// Deep 256-256 at dim 16 (preset `criteo`, alias `kaggle`; see the module docs).
pub fn criteo() -> WdlConfig {
    WdlConfig { dim: 16, deep: vec![256, 256] }
}

/// Presets: `criteo` (= `kaggle`), and `small` (deep 64) for tests and quick sweeps.
pub fn preset(name: &str) -> Option<WdlConfig> {
    match name {
        "kaggle" | "criteo" => Some(criteo()),
        "small" => Some(WdlConfig { dim: 16, deep: vec![64] }),
        _ => None,
    }
}

/// Wide & Deep as a burn module: `logit = w·x0 + b + deep(x0)`.
#[derive(Module, Debug)]
pub struct Wdl {
    body: LinearDeep,
}

impl Wdl {
    pub fn new(cfg: &WdlConfig, n_dense: usize, n_tables: usize, seed: u64, device: &Device) -> Self {
        Wdl { body: LinearDeep::new(cfg, n_dense, n_tables, seed, device) }
    }

    /// The DNN at `precision` (see [`LinearDeep::with_precision`]).
    pub fn with_precision(self, precision: crate::fused::Precision) -> Self {
        Wdl { body: self.body.with_precision(precision) }
    }

    /// `dense: [batch, n_dense]`, `emb: [tables, batch, dim]` -> logits `[batch, 1]`.
    pub fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        self.body.forward(dense, emb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn the_logit_is_the_wide_plus_the_deep_part_of_dense_then_embeddings() {
        let device = Device::flex();
        let m = Wdl::new(&WdlConfig { dim: 2, deep: vec![4] }, 1, 2, 3, &device);
        let dense = Tensor::<2>::from_data(TensorData::new(vec![0.5f32], [1, 1]), &device);
        let emb = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, -1.0, 0.5], [2, 1, 2]), &device);
        let x0 = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 1.0, 2.0, -1.0, 0.5], [1, 5]), &device);
        let want: f32 = (m.body.linear.forward(x0.clone()) + m.body.deep.forward(x0)).into_scalar();
        let got: f32 = m.forward(dense, emb).into_scalar();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Without dense features the input is the embeddings alone.
        let m0 = Wdl::new(&WdlConfig { dim: 2, deep: vec![4] }, 0, 2, 3, &device);
        let e = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 2.0, -1.0, 0.5], [2, 1, 2]), &device);
        let dummy = Tensor::<2>::zeros([1, 1], &device);
        assert_eq!(m0.forward(dummy, e).dims(), [1, 1]);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(criteo().validate("wdl").is_ok());
        assert!(WdlConfig { deep: vec![0], ..preset("small").unwrap() }.validate("wdl").is_err());
    }
}
