//! The networks: DLRM (Naumov et al., 2019) and GMF, as burn modules. Embedding tables are not
//! part of these modules: their output arrives as one `[tables, batch, dim]` tensor (see
//! `embeddings.rs` for why). On the Flex CPU backend the linear layers, DLRM's interaction and the loss
//! run as the fused ops of `fused/`; elsewhere (wgpu) and under `CQR_KERNELS=burn` as burn's
//! op graph, which stays here as the reference the fused ops are tested against.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use cqr_data::{invalid, Dataset, Invalid};

use crate::dcn::Dcn;
use crate::deepfm::DeepFm;
use crate::fused::{self, Precision};
use crate::train::{MlpOptimizer, ModelConfig, TrainError};
use crate::wdl::Wdl;

/// Layer sizes of DLRM. `bottom` starts with the number of dense features and ends with the
/// embedding dim; `top` lists the hidden sizes and ends with 1 (its input size is derived).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlrmConfig {
    pub dim: usize,
    pub bottom: Vec<usize>,
    pub top: Vec<usize>,
}

impl DlrmConfig {
    /// DLRM's Kaggle benchmark: dim 16, bottom 13-512-256-64-16, top 512-256-1.
    pub fn kaggle() -> Self {
        DlrmConfig { dim: 16, bottom: vec![13, 512, 256, 64, 16], top: vec![512, 256, 1] }
    }
    /// Small sizes for tests and quick sweeps.
    pub fn small() -> Self {
        DlrmConfig { dim: 16, bottom: vec![13, 64, 16], top: vec![64, 1] }
    }
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "kaggle" => Some(Self::kaggle()),
            "small" => Some(Self::small()),
            _ => None,
        }
    }

    /// Checks the sizes against the data: `n_dense` dense features, `n_tables` embeddings.
    pub fn validate(&self, n_dense: usize) -> Result<(), Invalid> {
        if self.dim == 0 {
            return invalid("dlrm.dim", "must be >= 1");
        }
        if self.top.last() != Some(&1) {
            return invalid("dlrm.top", format!("must end with 1 output, got {:?}", self.top));
        }
        if n_dense > 0 {
            if self.bottom.first() != Some(&n_dense) {
                return invalid(
                    "dlrm.bottom",
                    format!("must start with the {n_dense} dense features, got {:?}", self.bottom),
                );
            }
            if self.bottom.last() != Some(&self.dim) || self.bottom.len() < 2 {
                return invalid(
                    "dlrm.bottom",
                    format!("must end with the embedding dim {}, got {:?}", self.dim, self.bottom),
                );
            }
        }
        if self.top.iter().chain(&self.bottom).any(|&s| s == 0) {
            return invalid("dlrm", "layer sizes must be >= 1");
        }
        Ok(())
    }
}

/// A `[i] -> [o]` linear layer with DLRM's initialisation: W ~ N(0, sqrt(2 / (i + o))),
/// b ~ N(0, sqrt(1 / o)), drawn from a seeded stream so runs are reproducible.
pub fn linear(i: usize, o: usize, rng: &mut ChaCha8Rng, device: &Device) -> Linear {
    let wn = Normal::new(0.0f32, (2.0 / (i + o) as f32).sqrt()).unwrap();
    let bn = Normal::new(0.0f32, (1.0 / o as f32).sqrt()).unwrap();
    let weight: Vec<f32> = (0..i * o).map(|_| wn.sample(rng)).collect();
    let bias: Vec<f32> = (0..o).map(|_| bn.sample(rng)).collect();
    Linear {
        weight: Param::from_data(TensorData::new(weight, [i, o]), device),
        bias: Some(Param::from_data(TensorData::new(bias, [o]), device)),
    }
}

/// The flat input of the feature-concatenating backbones (DCN-v2, DeepFM, Wide & Deep):
/// `dense: [batch, n_dense]` (ignored when `n_dense == 0`) and `emb: [tables, batch, dim]` ->
/// `[batch, n_dense + tables * dim]`, the dense features first, then table 0's vector, ...
pub fn flat_input(dense: Tensor<2>, emb: Tensor<3>, n_dense: usize) -> Tensor<2> {
    let [t, b, d] = emb.dims();
    let e = emb.swap_dims(0, 1).reshape([b, t * d]);
    if n_dense == 0 {
        e
    } else {
        Tensor::cat(vec![dense, e], 1)
    }
}

/// Checks a list of hidden-layer sizes (`what` names it in the error).
pub fn check_sizes(what: &str, sizes: &[usize]) -> Result<(), Invalid> {
    if sizes.contains(&0) {
        return invalid(what, format!("layer sizes must be >= 1, got {sizes:?}"));
    }
    Ok(())
}

/// Sizes shared by DeepFM and Wide & Deep: embedding `dim` and the DNN's hidden sizes (input
/// derived, output 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepConfig {
    pub dim: usize,
    pub deep: Vec<usize>,
}

impl DeepConfig {
    /// `what` names the model in the error.
    pub fn validate(&self, what: &str) -> Result<(), Invalid> {
        if self.dim == 0 {
            return invalid(format!("{what}.dim"), "must be >= 1");
        }
        check_sizes(&format!("{what}.deep"), &self.deep)
    }
}

/// A linear logit plus a DNN logit over the flat input `[dense, e_1, ..., e_T]`: the whole of
/// Wide & Deep, and DeepFM's first-order and DNN parts.
#[derive(Module, Debug)]
pub struct LinearDeep {
    pub linear: Linear,
    pub deep: Mlp,
    #[module(skip)]
    n_dense: usize,
}

impl LinearDeep {
    pub fn new(cfg: &DeepConfig, n_dense: usize, n_tables: usize, seed: u64, device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = n_dense + n_tables * cfg.dim;
        let linear = linear(n, 1, &mut rng, device);
        let mut sizes = vec![n];
        sizes.extend(&cfg.deep);
        sizes.push(1);
        let deep = Mlp::new(&sizes, false, &mut rng, device);
        LinearDeep { linear, deep, n_dense }
    }

    /// The DNN at `precision` (the linear part stays f32).
    pub fn with_precision(self, precision: Precision) -> Self {
        LinearDeep { deep: self.deep.with_precision(precision), ..self }
    }

    /// The flat input `x0`: `[batch, n_dense + tables * dim]`.
    pub fn input(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        flat_input(dense, emb, self.n_dense)
    }

    /// `dense: [batch, n_dense]`, `emb: [tables, batch, dim]` -> `w·x0 + b + deep(x0)`, `[batch, 1]`.
    pub fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        let x0 = self.input(dense, emb); // [batch, n]
        self.linear.forward(x0.clone()) + self.deep.forward(x0)
    }
}

/// One linear layer's parameters on the host: `y = x W + b`, `W: [in, out]` row-major.
pub(crate) struct HostLinear {
    pub shape: [usize; 2],
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A stack of linear layers with ReLU between them (and after the last when `relu_last`).
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    #[module(skip)]
    relu_last: bool,
    /// The arithmetic of the layers' GEMMs (f32 unless set by [`Mlp::with_precision`]).
    #[module(skip)]
    precision: Precision,
}

impl Mlp {
    /// Layers `sizes[0] -> sizes[1] -> ...`, each initialised by [`linear`]; f32 arithmetic.
    pub fn new(sizes: &[usize], relu_last: bool, rng: &mut ChaCha8Rng, device: &Device) -> Self {
        let layers = sizes.windows(2).map(|w| linear(w[0], w[1], rng, device)).collect();
        Mlp { layers, relu_last, precision: Precision::F32 }
    }

    /// The same layers with the GEMM arithmetic `precision` (bf16 runs on the fused kernels only:
    /// see [`Precision`]).
    pub fn with_precision(self, precision: Precision) -> Self {
        Mlp { precision, ..self }
    }

    /// Each layer's weight (`[in, out]`, row-major) and bias, on the host; `None` for a bf16 MLP
    /// (its products round inside, so f32 weights alone do not reproduce it).
    pub(crate) fn host_layers(&self) -> Option<Vec<HostLinear>> {
        if !self.precision.is_f32() {
            return None;
        }
        let host = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().expect("f32 parameter");
        let layers = self.layers.iter().map(|l| {
            let [i, o] = l.weight.val().dims();
            let weight = host(l.weight.val().reshape([i * o]));
            let bias = l.bias.as_ref().map(|b| host(b.val())).unwrap_or_else(|| vec![0.0; o]);
            HostLinear { shape: [i, o], weight, bias }
        });
        Some(layers.collect())
    }

    /// Whether a ReLU follows the last layer too.
    pub(crate) fn relu_last(&self) -> bool {
        self.relu_last
    }

    /// `[batch, in] -> [batch, out]`, with the fused kernels where the device has them.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let fused = fused::fused_available(&x.device());
        self.forward_with(x, fused)
    }

    /// [`Mlp::forward`] through the fused linear+bias+ReLU op (`fused`) or burn's graph (f32
    /// only: a bf16 MLP panics there; training configs refuse that pairing up front).
    pub fn forward_with(&self, mut x: Tensor<2>, fused: bool) -> Tensor<2> {
        assert!(fused || self.precision.is_f32(), "bf16 MLPs run on the fused CPU kernels only");
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let act = i + 1 < n || self.relu_last;
            x = match (&l.bias, fused) {
                (Some(b), true) => fused::linear(x, l.weight.val(), b.val(), act, self.precision),
                _ => {
                    let y = l.forward(x);
                    if act {
                        relu(y)
                    } else {
                        y
                    }
                }
            };
        }
        x
    }
}

/// DLRM: bottom MLP over dense features, pairwise dot products of all vectors (strict lower
/// triangle) concatenated with the bottom output, top MLP to a logit.
#[derive(Module, Debug)]
pub struct Dlrm {
    bottom: Option<Mlp>,
    top: Mlp,
    #[module(skip)]
    dim: usize,
    #[module(skip)]
    pairs: Vec<i64>,
}

impl Dlrm {
    pub fn new(cfg: &DlrmConfig, n_dense: usize, n_tables: usize, seed: u64, device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bottom = (n_dense > 0).then(|| Mlp::new(&cfg.bottom, true, &mut rng, device));
        let f = n_tables + usize::from(n_dense > 0);
        // Flattened indices (i * f + j) of the strict lower triangle of the f x f Gram matrix.
        let pairs: Vec<i64> = (0..f).flat_map(|i| (0..i).map(move |j| (i * f + j) as i64)).collect();
        let top_in = pairs.len() + if n_dense > 0 { cfg.dim } else { 0 };
        let mut sizes = vec![top_in];
        sizes.extend(&cfg.top);
        let top = Mlp::new(&sizes, false, &mut rng, device);
        Dlrm { bottom, top, dim: cfg.dim, pairs }
    }

    /// The bottom MLP (absent without dense features) and the top MLP.
    pub(crate) fn mlps(&self) -> (Option<&Mlp>, &Mlp) {
        (self.bottom.as_ref(), &self.top)
    }

    /// Both MLPs at `precision` (the interaction stays f32).
    pub fn with_precision(self, precision: Precision) -> Self {
        Dlrm {
            bottom: self.bottom.map(|m| m.with_precision(precision)),
            top: self.top.with_precision(precision),
            ..self
        }
    }

    /// `dense: [batch, n_dense]`, `emb: [tables, batch, dim]` -> logits `[batch, 1]`.
    pub fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        let fused = fused::fused_available(&emb.device());
        self.forward_with(dense, emb, fused)
    }

    /// [`Dlrm::forward`] through the fused ops (`fused`: MLP layers, and the interaction when
    /// there is a bottom MLP) or burn's graph.
    pub fn forward_with(&self, dense: Tensor<2>, emb: Tensor<3>, fused: bool) -> Tensor<2> {
        match (&self.bottom, fused) {
            (Some(bottom), true) => {
                let x = bottom.forward_with(dense, true); // [batch, dim]
                self.top.forward_with(fused::interaction(x, emb), true) // [batch, dim + pairs]
            }
            _ => self.forward_graph(dense, emb, fused),
        }
    }

    /// The interaction as burn graph ops (`fused` still applies to the MLP layers).
    fn forward_graph(&self, dense: Tensor<2>, emb: Tensor<3>, fused: bool) -> Tensor<2> {
        let [t, b, d] = emb.dims();
        let e = emb.swap_dims(0, 1); // [batch, tables, dim]
        let (vectors, x) = match &self.bottom {
            Some(bottom) => {
                let x = bottom.forward_with(dense, fused); // [batch, dim]
                (Tensor::cat(vec![x.clone().reshape([b, 1, d]), e], 1), Some(x))
            }
            None => (e, None),
        };
        let f = t + usize::from(x.is_some());
        let gram = vectors.clone().matmul(vectors.swap_dims(1, 2)); // [batch, f, f]
        let idx = Tensor::<1, Int>::from_data(TensorData::new(self.pairs.clone(), [self.pairs.len()]), &gram.device());
        let inter = gram.reshape([b, f * f]).select(1, idx); // [batch, pairs]
        let top_in = match x {
            Some(x) => Tensor::cat(vec![x, inter], 1),
            None => inter,
        };
        debug_assert_eq!(d, self.dim);
        self.top.forward_with(top_in, fused)
    }
}

/// The training loss: mean BCE-with-logits, through the fused op where the device has it.
pub fn loss(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    if fused::fused_available(&logits.device()) {
        fused::bce(logits, labels)
    } else {
        graph_bce_with_logits(logits, labels)
    }
}

/// Numerically stable mean binary cross-entropy of logits `[batch, 1]` against labels `[batch, 1]`:
/// `max(z, 0) - z y + ln(1 + e^{-|z|})`.
pub fn graph_bce_with_logits(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    let loss = logits.clone().clamp_min(0.0) - logits.clone() * labels + logits.abs().neg().exp().log1p();
    loss.mean()
}

/// GMF: logit = <user, item>. No dense parameters: everything is in the embedding tables.
pub fn gmf_forward(emb: Tensor<3>) -> Tensor<2> {
    let [t, b, d] = emb.dims();
    assert_eq!(t, 2, "gmf needs exactly two tables (user, item)");
    let u = emb.clone().slice([0..1, 0..b, 0..d]).reshape([b, d]);
    let v = emb.slice([1..2, 0..b, 0..d]).reshape([b, d]);
    (u * v).sum_dim(1)
}

/// The backbone a run trains, as one type: the training loop's dispatch over the models.
#[derive(Clone)]
pub(crate) enum Net {
    Dlrm(Dlrm),
    Gmf,
    Dcn(Dcn),
    DeepFm(DeepFm),
    Wdl(Wdl),
}

impl Net {
    pub(crate) fn new(
        model: &ModelConfig,
        ds: &Dataset,
        seed: u64,
        precision: Precision,
        device: &Device,
    ) -> Result<Net, TrainError> {
        model.check_precision(precision)?;
        if !precision.is_f32() && !crate::fused::fused_available(device) {
            let why = if crate::fused::fused_available(&Device::flex()) {
                "a backend other than flex"
            } else {
                "burn's op graph (CQR_KERNELS=burn)"
            };
            return Err(TrainError::Config(format!("precision: bf16 runs on the fused CPU kernels only (backend flex without CQR_KERNELS=burn); this run uses {why}")));
        }
        let (n_dense, n_cat) = (ds.n_dense(), ds.n_cat());
        Ok(match model {
            ModelConfig::Dlrm(c) => {
                c.validate(n_dense)?;
                Net::Dlrm(Dlrm::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
            ModelConfig::Gmf { dim } => {
                if n_cat != 2 || *dim == 0 {
                    return Err(TrainError::Config(format!(
                        "gmf needs a (user, item) dataset and dim >= 1; {} has {} columns",
                        ds.name, n_cat
                    )));
                }
                Net::Gmf
            }
            ModelConfig::Dcn(c) => {
                c.validate()?;
                Net::Dcn(Dcn::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
            ModelConfig::Deepfm(c) => {
                c.validate("deepfm")?;
                Net::DeepFm(DeepFm::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
            ModelConfig::Wdl(c) => {
                c.validate("wdl")?;
                Net::Wdl(Wdl::new(c, n_dense, n_cat, seed, device).with_precision(precision))
            }
        })
    }
    /// `dense: [batch, max(n_dense, 1)]`, `emb: [tables, batch, dim]` -> logits `[batch, 1]`.
    pub(crate) fn forward(&self, dense: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
        match self {
            Net::Dlrm(m) => m.forward(dense, emb),
            Net::Gmf => gmf_forward(emb),
            Net::Dcn(m) => m.forward(dense, emb),
            Net::DeepFm(m) => m.forward(dense, emb),
            Net::Wdl(m) => m.forward(dense, emb),
        }
    }
    pub(crate) fn valid(&self) -> Net {
        match self {
            Net::Dlrm(m) => Net::Dlrm(m.valid()),
            Net::Gmf => Net::Gmf,
            Net::Dcn(m) => Net::Dcn(m.valid()),
            Net::DeepFm(m) => Net::DeepFm(m.valid()),
            Net::Wdl(m) => Net::Wdl(m.valid()),
        }
    }
    pub(crate) fn num_params(&self) -> u64 {
        (match self {
            Net::Dlrm(m) => m.num_params(),
            Net::Gmf => 0,
            Net::Dcn(m) => m.num_params(),
            Net::DeepFm(m) => m.num_params(),
            Net::Wdl(m) => m.num_params(),
        }) as u64
    }
    /// The MLP optimizer step (none for GMF, which has no dense parameters).
    /// One optimizer step of the network from the gradients of a backward pass. Takes the
    /// network by value so that the step can update parameters nothing else holds in place.
    pub(crate) fn step(self, optim: &mut MlpOptimizer, lr: f64, grads: burn::tensor::Gradients) -> Net {
        match self {
            Net::Dlrm(m) => Net::Dlrm(optim.step(lr, m, grads)),
            Net::Gmf => Net::Gmf,
            Net::Dcn(m) => Net::Dcn(optim.step(lr, m, grads)),
            Net::DeepFm(m) => Net::DeepFm(optim.step(lr, m, grads)),
            Net::Wdl(m) => Net::Wdl(optim.step(lr, m, grads)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precision is module configuration, not a parameter: it must survive the copies the
    /// trainer makes (`valid()` for evaluation, clones for the best-model snapshot), or a bf16
    /// model would be evaluated in f32.
    #[test]
    fn precision_survives_valid_and_clone() {
        let device = Device::flex().autodiff();
        let m = Dlrm::new(&DlrmConfig::small(), 13, 3, 1, &device).with_precision(Precision::Bf16);
        let precisions = |m: &Dlrm| [m.bottom.as_ref().unwrap().precision, m.top.precision];
        assert_eq!(precisions(&m), [Precision::Bf16; 2]);
        assert_eq!(precisions(&m.clone()), [Precision::Bf16; 2]);
        assert_eq!(precisions(&m.valid()), [Precision::Bf16; 2]);
        let f32_model = Dlrm::new(&DlrmConfig::small(), 13, 3, 1, &device);
        assert_eq!(precisions(&f32_model.valid()), [Precision::F32; 2]);
    }
}
