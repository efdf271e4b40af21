//! DCN-v2 (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021), parallel structure,
//! full-rank cross layers.
//!
//! Input `x0 = [dense features, e_1, ..., e_T]` (`[batch, n_dense + T * dim]`, the embeddings
//! flattened as they come from the tables). The cross network applies
//! `x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l` with a full `n × n` matrix `W_l` (the v2 cross; DCN v1
//! had a vector), the deep network is an MLP over `x0`, and the logit is a linear layer over
//! `[x_L, deep(x0)]`.
//!
//! What the paper leaves to the user and what we chose: it reports stacked and parallel
//! structures and tunes depths and widths per dataset; the `criteo` preset is the parallel
//! structure with 3 cross layers and a 256-256-256 deep network at dim 16 (the sizes of the Hetu
//! benchmark's DCN on Criteo, the study issue 21 compares against), no dropout, no
//! low-rank mixture. Dense features enter `x0` as they are (already log-transformed by the
//! reader), as in Hetu's DCN.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use cqr_data::{invalid, Invalid};

use crate::net::{check_sizes, flat_input, linear, Mlp};

/// Sizes of DCN-v2: embedding `dim`, the number of cross layers and the deep network's hidden
/// sizes (its input size is derived; its last layer keeps its ReLU and feeds the final linear).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcnConfig {
    pub dim: usize,
    pub cross_layers: usize,
    pub deep: Vec<usize>,
}

impl DcnConfig {
    /// 3 full-rank cross layers, deep 256-256-256, dim 16 (see the module docs).
    pub fn criteo() -> Self {
        DcnConfig { dim: 16, cross_layers: 3, deep: vec![256, 256, 256] }
    }
    /// Small sizes for tests and quick sweeps.
    pub fn small() -> Self {
        DcnConfig { dim: 16, cross_layers: 2, deep: vec![64] }
    }
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "kaggle" | "criteo" => Some(Self::criteo()),
            "small" => Some(Self::small()),
            _ => None,
        }
    }
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.dim == 0 || self.cross_layers == 0 || self.deep.is_empty() {
            return invalid("dcn", format!("dim, cross_layers and the deep network must be non-empty, got {self:?}"));
        }
        check_sizes("dcn.deep", &self.deep)
    }
}

/// DCN-v2 as a burn module.
#[derive(Module, Debug)]
pub struct Dcn {
    cross: Vec<Linear>,
    deep: Mlp,
    out: Linear,
    #[module(skip)]
    n_dense: usize,
}

impl Dcn {
    pub fn new(cfg: &DcnConfig, n_dense: usize, n_tables: usize, seed: u64, device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = n_dense + n_tables * cfg.dim;
        let cross = (0..cfg.cross_layers).map(|_| linear(n, n, &mut rng, device)).collect();
        let mut sizes = vec![n];
        sizes.extend(&cfg.deep);
        let deep = Mlp::new(&sizes, true, &mut rng, device);
        let out = linear(n + cfg.deep.last().copied().unwrap_or(0), 1, &mut rng, device);
        Dcn { cross, deep, out, n_dense }
    }

    /// The deep network at `precision` (cross layers and output stay f32).
    pub fn with_precision(self, precision: crate::fused::Precision) -> Self {
        Dcn { deep: self.deep.with_precision(precision), ..self }
    }

    /// `dense: [batch, n_dense]`, `emb: [tables, batch, dim]` -> logits `[batch, 1]`.
    pub fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        let x0 = flat_input(dense, emb, self.n_dense); // [batch, n]
        let mut x = x0.clone();
        for w in &self.cross {
            x = x0.clone() * w.forward(x.clone()) + x; // [batch, n]
        }
        let h = self.deep.forward(x0); // [batch, deep.last]
        self.out.forward(Tensor::cat(vec![x, h], 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn one_cross_layer_is_x0_times_w_x0_plus_b_plus_x0() {
        let device = Device::flex();
        let cfg = DcnConfig { dim: 2, cross_layers: 1, deep: vec![3] };
        let m = Dcn::new(&cfg, 1, 2, 7, &device);
        let dense = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.0], [2, 1]), &device);
        let emb = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, -1.0, 0.0, 0.25, 1.0], [2, 2, 2]),
            &device,
        );
        // By hand for row 0: x0 = [0.5, table0 row0 (1, 2), table1 row0 (-1, 0)].
        let x0 = [0.5f32, 1.0, 2.0, -1.0, 0.0];
        let w: Vec<f32> = m.cross[0].weight.val().into_data().try_to_vec::<f32>().unwrap(); // [in, out]
        let b: Vec<f32> = m.cross[0].bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        let x1: Vec<f32> =
            (0..5).map(|j| x0[j] * ((0..5).map(|i| x0[i] * w[i * 5 + j]).sum::<f32>() + b[j]) + x0[j]).collect();
        let h: Vec<f32> = m
            .deep
            .forward(Tensor::<2>::from_data(TensorData::new(x0.to_vec(), [1, 5]), &device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let wo: Vec<f32> = m.out.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let bo: f32 = m.out.bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap()[0];
        let want = x1.iter().chain(&h).zip(&wo).map(|(a, w)| a * w).sum::<f32>() + bo;
        let got: Vec<f32> = m.forward(dense, emb).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got.len(), 2);
        assert!((got[0] - want).abs() < 1e-4 * want.abs().max(1.0), "{} vs {want}", got[0]);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(DcnConfig::criteo().validate().is_ok());
        assert!(DcnConfig { cross_layers: 0, ..DcnConfig::small() }.validate().is_err());
        assert!(DcnConfig { deep: vec![8, 0], ..DcnConfig::small() }.validate().is_err());
    }
}
