//! The MLP's optimizer step (issue 34): burn's `ModuleOptimizer`, or one fused loop per parameter.
//!
//! burn's optimizers update a parameter as a chain of tensor ops, each its own pass over the
//! parameter with its own output buffer: Adam is about a dozen passes (two moment updates, the
//! square, the square root, the bias-corrected division, the scaled subtraction), Adagrad six, SGD
//! two. At DLRM's batch 128 the MLP has ~0.5M parameters and the step is a few milliseconds, so
//! those passes were ~10% of a step in the profile (docs/performance.md). [`MlpOptimizer::Fused`]
//! does the same arithmetic in one loop per parameter, reading the parameter, its gradient and its
//! moments once and writing them in place:
//!
//! - SGD: `p ← p − g·lr`.
//! - Adam (burn's defaults β₁ 0.9, β₂ 0.999, ε 1e-5): `m ← m·β₁ + g·(1−β₁)`,
//!   `v ← v·β₂ + (g·g)·(1−β₂)` (the first step `m = g·(1−β₁)`, `v = (g·g)·(1−β₂)`), then with
//!   `c₂ = √(1−β₂ᵗ)` and `c = c₂ / (1−β₁ᵗ)`: `p ← p − ((m·c) / (√v + ε·c₂))·lr`.
//! - Adagrad (ε 1e-5, no lr decay): `s ← s + g·g` (from `s = 0`: burn's first step `s = g·g`),
//!   `p ← p − (g / (√s + ε))·lr`.
//!
//! Each expression is evaluated in burn's order, in f32, one rounding per op and no fused
//! multiply-add, so the parameters are bit-identical to burn's step (tested below against
//! `ModuleOptimizer` over several steps). AdamW, and every device without the fused kernels (wgpu,
//! `CQR_KERNELS=burn`), keep burn's optimizer. The parameter and gradient buffers are taken out of
//! their tensors without a copy when nothing else holds them (the trainer hands the module over by
//! value); a parameter still shared (the best-model snapshot) is copied first, so the snapshot
//! keeps its values.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::{AdaGradConfig, AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Gradients, Tensor};

use super::{OptimizerKind, TrainConfig};

/// burn's default Adam and Adagrad ε (`AdamConfig`, `AdaGradConfig`), kept so both paths agree.
const EPS: f32 = 1e-5;
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;

/// The optimizer of the network's (MLP) parameters; the embedding tables have their own.
pub(crate) enum MlpOptimizer {
    Burn(ModuleOptimizer),
    Fused(FusedStep),
}

impl MlpOptimizer {
    /// The fused step where `device` runs the fused kernels and the rule has a fused form, else
    /// burn's optimizer with the same settings.
    pub(crate) fn new(cfg: &TrainConfig, device: &Device) -> MlpOptimizer {
        let rule = match cfg.optimizer {
            OptimizerKind::Sgd => Some(Rule::Sgd),
            OptimizerKind::Adam => Some(Rule::Adam),
            OptimizerKind::Adagrad => Some(Rule::Adagrad),
            OptimizerKind::Adamw => None,
        };
        match rule {
            Some(rule) if crate::fused::fused_available(device) => MlpOptimizer::Fused(FusedStep::new(rule)),
            _ => MlpOptimizer::Burn(burn_optimizer(cfg)),
        }
    }

    /// One step of `module` from the gradients of a backward pass.
    pub(crate) fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: Gradients) -> M {
        match self {
            MlpOptimizer::Burn(optim) => {
                let gp = GradientsParams::from_grads(grads, &module);
                optim.step(lr, module, gp)
            }
            MlpOptimizer::Fused(step) => {
                step.lr = lr as f32;
                module.map(&mut StepMapper { step, grads: &mut grads })
            }
        }
    }
}

fn burn_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    match cfg.optimizer {
        OptimizerKind::Adam => AdamConfig::new().with_epsilon(EPS).init(),
        // burn's default decay (1e-4) is replaced by ours, the same value the tables get.
        OptimizerKind::Adamw => AdamWConfig::new().with_weight_decay(cfg.effective_weight_decay() as f32).init(),
        OptimizerKind::Adagrad => AdaGradConfig::new().with_epsilon(EPS).init(),
        OptimizerKind::Sgd => SgdConfig::new().init(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Sgd,
    Adam,
    Adagrad,
}

/// A parameter's optimizer state: steps taken, first and second moments (Adagrad keeps its sum
/// of squares in `second`; SGD keeps nothing).
#[derive(Default)]
struct Moments {
    time: i32,
    first: Vec<f32>,
    second: Vec<f32>,
}

/// The fused update rule and each parameter's state.
pub(crate) struct FusedStep {
    rule: Rule,
    lr: f32,
    states: HashMap<ParamId, Moments>,
}

impl FusedStep {
    fn new(rule: Rule) -> Self {
        FusedStep { rule, lr: 0.0, states: HashMap::new() }
    }

    /// Updates `p` in place from its gradient `g` (the module docs give the arithmetic).
    fn update(&mut self, id: ParamId, p: &mut [f32], g: &[f32]) {
        assert_eq!(p.len(), g.len(), "a parameter and its gradient differ in size");
        let lr = self.lr;
        let s = self.states.entry(id).or_default();
        let first_step = s.time == 0;
        s.time += 1;
        match self.rule {
            Rule::Sgd => sgd_wide(p, g, lr),
            Rule::Adam => adam(s, p, g, lr, first_step),
            Rule::Adagrad => {
                if first_step {
                    s.second = vec![0.0; g.len()];
                }
                adagrad_wide(p, g, &mut s.second, lr);
            }
        }
    }
}

fn adam(s: &mut Moments, p: &mut [f32], g: &[f32], lr: f32, first_step: bool) {
    let c2 = (1.0 - BETA_2.powi(s.time)).sqrt();
    let c = c2 / (1.0 - BETA_1.powi(s.time));
    let factors = [c, EPS * c2, lr];
    if first_step {
        s.first = g.iter().map(|&g| g * (1.0 - BETA_1)).collect();
        s.second = g.iter().map(|&g| (g * g) * (1.0 - BETA_2)).collect();
        adam_apply_wide(p, &s.first, &s.second, factors);
    } else {
        adam_step_wide(p, g, &mut s.first, &mut s.second, factors);
    }
}

// The element loops run compiled for AVX2 where the CPU has it: add, multiply, divide and square
// root only, no FMA, so the same bits (cqr_methods::simd).
cqr_methods::avx2_fn!(fn sgd_wide => sgd, (p: &mut [f32], g: &[f32], lr: f32));
cqr_methods::avx2_fn!(fn adagrad_wide => adagrad, (p: &mut [f32], g: &[f32], sum: &mut [f32], lr: f32));
cqr_methods::avx2_fn!(fn adam_apply_wide => adam_apply, (p: &mut [f32], m: &[f32], v: &[f32], c_eps_lr: [f32; 3]));
cqr_methods::avx2_fn!(fn adam_step_wide => adam_step, (p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c_eps_lr: [f32; 3]));

#[inline(always)]
fn sgd(p: &mut [f32], g: &[f32], lr: f32) {
    p.iter_mut().zip(g).for_each(|(p, &g)| *p -= g * lr);
}

/// The sum of squares and the parameter in one pass (from a zero sum, `0 + g·g` is burn's
/// first-step `g·g` exactly).
#[inline(always)]
fn adagrad(p: &mut [f32], g: &[f32], sum: &mut [f32], lr: f32) {
    for ((p, &g), s) in p.iter_mut().zip(g).zip(sum.iter_mut()) {
        *s += g * g;
        *p -= (g / (s.sqrt() + EPS)) * lr;
    }
}

/// Both moments and the parameter in one pass.
#[inline(always)]
fn adam_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], [c, eps, lr]: [f32; 3]) {
    let (f1, f2) = (1.0 - BETA_1, 1.0 - BETA_2);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = *m * BETA_1 + g * f1;
        *v = *v * BETA_2 + (g * g) * f2;
        *p -= ((*m * c) / (v.sqrt() + eps)) * lr;
    }
}

#[inline(always)]
fn adam_apply(p: &mut [f32], m: &[f32], v: &[f32], [c, eps, lr]: [f32; 3]) {
    for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
        *p -= ((m * c) / (v.sqrt() + eps)) * lr;
    }
}

/// Visits every float parameter: takes its gradient out of `grads` and updates it.
struct StepMapper<'a> {
    step: &'a mut FusedStep,
    grads: &'a mut Gradients,
}

impl ModuleMapper for StepMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = tensor.grad_remove(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let (device, require_grad) = (tensor.device(), tensor.is_require_grad());
        let mut values = tensor.inner().into_data();
        let grad = grad.into_data();
        let p = values.as_mut_slice::<f32>().expect("the MLP's parameters are f32");
        self.step.update(id, p, grad.as_slice::<f32>().expect("the MLP's gradients are f32"));
        let mut updated = Tensor::from_data(values, &device);
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Dlrm, DlrmConfig};
    use burn::tensor::TensorData;

    fn params(m: &Dlrm) -> Vec<Vec<f32>> {
        struct Collect(Vec<Vec<f32>>);
        impl burn::module::ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push(p.val().into_data().try_to_vec::<f32>().unwrap());
            }
        }
        let mut c = Collect(vec![]);
        m.visit(&mut c);
        c.0
    }

    /// A DLRM step's gradients on fixed inputs (seeded by `step`).
    fn grads_of(m: &Dlrm, step: usize, device: &Device) -> Gradients {
        let (b, t, dim) = (8, 3, DlrmConfig::small().dim);
        let v = |n: usize, k: usize| (0..n).map(|i| (((i * 7 + k * 13 + step * 5) % 17) as f32 - 8.0) / 9.0).collect();
        let dense = Tensor::<2>::from_data(TensorData::new::<f32, _>(v(b * 13, 1), [b, 13]), device);
        let emb = Tensor::<3>::from_data(TensorData::new::<f32, _>(v(t * b * dim, 2), [t, b, dim]), device);
        let labels: Vec<f32> = (0..b).map(|i| ((i + step) % 2) as f32).collect();
        let labels = Tensor::<2>::from_data(TensorData::new(labels, [b, 1]), device);
        crate::net::loss(m.forward(dense, emb), labels).backward()
    }

    /// The fused step gives burn's optimizer's parameters bit for bit, for each rule, over steps
    /// that exercise the first-step branch, the moments and the bias correction; and a snapshot
    /// taken before a step keeps its values (the buffers are not shared with it).
    #[test]
    fn the_fused_step_is_burns_step_bit_for_bit() {
        let device = Device::flex().autodiff();
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Adagrad] {
            let cfg = TrainConfig { optimizer: kind, ..TrainConfig::default() };
            let mut fused = MlpOptimizer::Fused(FusedStep::new(match kind {
                OptimizerKind::Sgd => Rule::Sgd,
                OptimizerKind::Adam => Rule::Adam,
                _ => Rule::Adagrad,
            }));
            let mut burn = MlpOptimizer::Burn(burn_optimizer(&cfg));
            let mut a = Dlrm::new(&DlrmConfig::small(), 13, 3, 7, &device);
            let mut b = a.clone();
            let before = params(&a);
            let snapshot = a.clone();
            for step in 0..4 {
                let ga = grads_of(&a, step, &device);
                a = fused.step(0.05, a, ga);
                let gb = grads_of(&b, step, &device);
                b = burn.step(0.05, b, gb);
                assert_eq!(params(&a), params(&b), "{kind:?} step {step}");
            }
            assert_ne!(params(&a), before, "{kind:?}: the step changed nothing");
            assert_eq!(params(&snapshot), before, "{kind:?}: the snapshot moved with the model");
        }
    }
}
