//! Fused DLRM kernels on the Flex CPU backend, as a burn backend extension (issue 20).
//!
//! burn-flex runs one kernel per graph op: a linear layer is a GEMM, a broadcast bias add and a
//! ReLU, each its own pass over `[batch, out]`, and DLRM's interaction is a transpose, a
//! concatenation, a batched `V·Vᵀ`, a reshape, a `select` of the lower triangle and another
//! concatenation, with a strided scatter and copies in its backward. [`FusedOps`] replaces them with
//! three ops, each one kernel forward and one backward, while the model stays a burn module trained
//! by burn's autodiff:
//!
//! - [`FusedOps::fused_linear`]: `x [b, i] · w [i, o] + bias [o]`, then ReLU when `relu`. Forward: the
//!   GEMM writes its own output buffer (same `gemm` call, threads and arithmetic as burn-flex's
//!   matmul, so forward values are bit-identical to `Linear::forward` + `relu`); bias and ReLU are
//!   one pass over it. Backward: the ReLU mask (from the saved output) and the bias gradient (column
//!   sums, fixed-order partial sums so it is deterministic) in one pass, then `dW = xᵀ·g` and
//!   `dX = g·wᵀ` as strided GEMMs (no transposed copies; `dX` only when `x` needs a gradient).
//!   With `bf16` ([`Precision::Bf16`]) the GEMMs' operands `x`, `w` and the masked `g` are
//!   rounded to bf16 first (f32 accumulation; the bias gradient sums `g` unrounded).
//! - [`FusedOps::fused_interaction`]: `x [b, d]` (bottom MLP output) and `emb [t, b, d]` ->
//!   `[b, d + f(f-1)/2]` with `f = t + 1`: `x`, then the dot products `<v_i, v_j>` for `i > j` in
//!   row-major order of the strict lower triangle (`v_0 = x`, `v_{k+1} = emb[k]`), written straight
//!   into the top MLP's input. Backward: `dv_i += g_ij v_j`, `dv_j += g_ij v_i`, written straight
//!   into `dx [b, d]` and `demb [t, b, d]` (the table layout, so the tables read it without a copy).
//! - [`FusedOps::fused_bce`]: mean BCE-with-logits of `z [b, 1]` against `y [b, 1]` -> `[1]`
//!   (`max(z, 0) - z y + ln(1 + e^{-|z|})`); backward `dz = g (σ(z) - y) / b`.
//!
//! Only Flex (and `Autodiff<Flex>`) implement it; [`fused_available`] says whether a device gets
//! it, and the model falls back to the plain burn graph elsewhere (wgpu) or when the environment
//! sets `CQR_KERNELS=burn` (the graph the records before this change were trained with). The unit
//! tests below compare every op's values and gradients with that burn graph.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, DispatchDevice};
use burn::tensor::{Device, Tensor, TensorData};

mod autodiff;
pub(crate) mod kernels;

/// The fused ops (see the module docs for shapes and semantics).
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// `x [b, i]`, `w [i, o]`, `bias [o]` -> `act(x·w + bias)` `[b, o]`; with `bf16`, the GEMMs'
    /// operands rounded to bf16 (see [`Precision`]).
    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
        bf16: bool,
    ) -> FloatTensor<Self>;
    /// `x [b, d]`, `emb [t, b, d]` -> `[b, d + (t+1)t/2]`.
    fn fused_interaction(x: FloatTensor<Self>, emb: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `z [b, 1]`, `y [b, 1]` -> mean BCE-with-logits `[1]`.
    fn fused_bce(z: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Whether the fused ops run on `device`: Flex (with or without autodiff), unless the environment
/// says `CQR_KERNELS=burn` (or [`force_kernels`] says otherwise).
pub fn fused_available(device: &Device) -> bool {
    static BURN_ONLY: OnceLock<bool> = OnceLock::new();
    let burn_only = match FORCED.load(Ordering::Relaxed) {
        FORCE_FUSED => false,
        FORCE_BURN => true,
        _ => *BURN_ONLY.get_or_init(|| std::env::var("CQR_KERNELS").is_ok_and(|v| v == "burn")),
    };
    !burn_only && matches!(device.clone().without_autodiff().as_dispatch(), DispatchDevice::Flex(_))
}

static FORCED: AtomicU8 = AtomicU8::new(0);
const FORCE_FUSED: u8 = 1;
const FORCE_BURN: u8 = 2;

/// Overrides `CQR_KERNELS` for the whole process from now on: `Some(true)` the fused kernels,
/// `Some(false)` burn's graph, `None` the environment's choice again. For benchmarks that
/// alternate both in one process (`cqr bench --ab kernels`); training never calls it.
pub fn force_kernels(fused: Option<bool>) {
    FORCED.store(fused.map_or(0, |f| if f { FORCE_FUSED } else { FORCE_BURN }), Ordering::Relaxed);
}

/// The kernels this process trains with on the CPU: `fused`, or `burn` under `CQR_KERNELS=burn`.
pub fn kernels() -> &'static str {
    if fused_available(&Device::flex()) {
        "fused"
    } else {
        "burn"
    }
}

/// The arithmetic of the MLPs' matrix products (`precision` in a training config).
///
/// - `f32` (the default): f32 operands, f32 accumulation.
/// - `bf16`: the numerics of bf16 GEMMs with f32 accumulation and f32 master weights, as mixed
///   precision training uses them: each linear layer rounds its input `x` and weight `w` to bf16
///   (round to nearest, ties to even) for `x·w`; the backward pass rounds the upstream gradient
///   (after the ReLU mask; the bias gradient sums it unrounded) for `dW = xᵀ·g` and `dX = g·wᵀ`.
///   Products of bf16 values are exact in f32, so running them through the f32 GEMM gives what a
///   bf16 GEMM accumulating in f32 gives (up to summation order). Bias, ReLU, the optimizer state
///   and the weights themselves stay f32, as do the embedding tables, DLRM's interaction, DCN's
///   cross layers and the linear ("wide") parts. This build has no native bf16 kernel: the values
///   are rounded in f32 buffers and multiplied by the f32 GEMM, so bf16 costs a rounding pass per
///   operand and saves neither time nor memory; it answers what bf16 does to accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

/// [`FusedOps::fused_linear`] on tensors.
pub fn linear(x: Tensor<2>, w: Tensor<2>, bias: Tensor<1>, relu: bool, precision: Precision) -> Tensor<2> {
    let bf16 = precision == Precision::Bf16;
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(
        x.into_dispatch(),
        w.into_dispatch(),
        bias.into_dispatch(),
        relu,
        bf16,
    ))
}

/// `v` rounded to the nearest bf16 value (ties to even), as an f32: the low 16 bits cleared.
/// NaN stays NaN; values beyond bf16's largest finite value round to infinity.
#[inline(always)]
pub fn round_bf16(v: f32) -> f32 {
    let b = v.to_bits();
    let r = f32::from_bits(b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000);
    if v.is_nan() {
        v
    } else {
        r
    }
}

/// [`FusedOps::fused_interaction`] on tensors.
pub fn interaction(x: Tensor<2>, emb: Tensor<3>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_interaction(x.into_dispatch(), emb.into_dispatch()))
}

/// [`FusedOps::fused_bce`] on tensors.
pub fn bce(z: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_bce(z.into_dispatch(), y.into_dispatch()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::graph_bce_with_logits;
    use burn::tensor::activation::relu;
    use burn::tensor::Int;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rand_tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    fn vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: fused {x} vs burn {y}");
        }
    }

    /// Values and gradients (x, w, bias) of the fused linear against `Linear`'s burn graph; the
    /// forward is bit-identical by construction (same GEMM call).
    #[test]
    fn linear_matches_burn_graph() {
        let device = Device::flex().autodiff();
        for (relu_on, (b, i, o), tracked_x) in
            [(true, (300, 13, 64), false), (false, (257, 64, 1), true), (true, (130, 40, 512), true)]
        {
            let x = rand_tensor([b, i], 1, &device);
            let x = if tracked_x { x.require_grad() } else { x };
            let w = rand_tensor([i, o], 2, &device).require_grad();
            let bias = rand_tensor([o], 3, &device).require_grad();
            let up = rand_tensor([b, o], 4, &device); // a random upstream gradient via <y, up>
            let ours = linear(x.clone(), w.clone(), bias.clone(), relu_on, Precision::F32);
            let plain = x.clone().matmul(w.clone()) + bias.clone().unsqueeze::<2>();
            let plain = if relu_on { relu(plain) } else { plain };
            assert_eq!(vec(ours.clone()), vec(plain.clone()), "forward must be bit-identical");
            let g1 = (ours * up.clone()).sum().backward();
            let g2 = (plain * up).sum().backward();
            assert_close("dw", &vec(w.grad(&g1).unwrap()), &vec(w.grad(&g2).unwrap()), 1e-5);
            assert_close("dbias", &vec(bias.grad(&g1).unwrap()), &vec(bias.grad(&g2).unwrap()), 1e-5);
            assert_eq!(x.grad(&g1).is_some(), tracked_x);
            if tracked_x {
                assert_close("dx", &vec(x.grad(&g1).unwrap()), &vec(x.grad(&g2).unwrap()), 1e-5);
            }
        }
    }

    /// `set_cell_threads(1)` changes who computes, not what: a layer large enough for every loop
    /// to be threaded (256 x 512 x 256 > 192³; bias, mask and column sums over 65,536 values) gives
    /// the same bits, forward and backward.
    #[test]
    fn one_thread_products_give_the_same_bits() {
        let _lock = crate::threads::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let device = Device::flex().autodiff();
        let run = |threads: usize| {
            crate::threads::set_cell_threads(threads);
            let x = rand_tensor([256, 512], 11, &device).require_grad();
            let w = rand_tensor([512, 256], 12, &device).require_grad();
            let bias = rand_tensor([256], 13, &device).require_grad();
            let y = linear(x.clone(), w.clone(), bias, true, Precision::F32);
            let g = (y.clone() * rand_tensor([256, 256], 14, &device)).sum().backward();
            (vec(y), vec(w.grad(&g).unwrap()), vec(x.grad(&g).unwrap()))
        };
        let threaded = run(0);
        let single = run(1);
        crate::threads::set_cell_threads(0);
        assert!(threaded == single, "one thread per product changed the values");
    }

    /// The interaction against DLRM's burn graph (cat, batched Gram, select of the lower triangle),
    /// at a dim below one register block (padding) and at the Kaggle shape (26 tables, dim 16).
    #[test]
    fn interaction_matches_burn_graph() {
        let device = Device::flex().autodiff();
        for (t, b, d) in [(5, 133, 4), (26, 70, 16), (2, 65, 9)] {
            let x = rand_tensor([b, d], 5, &device).require_grad();
            let emb = rand_tensor([t, b, d], 6, &device).require_grad();
            let f = t + 1;
            let pairs: Vec<i64> = (0..f).flat_map(|i| (0..i).map(move |j| (i * f + j) as i64)).collect();
            let up = rand_tensor([b, d + pairs.len()], 7, &device);
            let ours = interaction(x.clone(), emb.clone());
            let v = Tensor::cat(vec![x.clone().reshape([b, 1, d]), emb.clone().swap_dims(0, 1)], 1);
            let gram = v.clone().matmul(v.swap_dims(1, 2)).reshape([b, f * f]);
            let idx = Tensor::<1, Int>::from_data(TensorData::new(pairs.clone(), [pairs.len()]), &device);
            let plain = Tensor::cat(vec![x.clone(), gram.select(1, idx)], 1);
            assert_close("forward", &vec(ours.clone()), &vec(plain.clone()), 1e-5);
            let g1 = (ours * up.clone()).sum().backward();
            let g2 = (plain * up).sum().backward();
            assert_close("dx", &vec(x.grad(&g1).unwrap()), &vec(x.grad(&g2).unwrap()), 1e-5);
            assert_close("demb", &vec(emb.grad(&g1).unwrap()), &vec(emb.grad(&g2).unwrap()), 1e-5);
        }
    }

    /// BCE value and gradient against the burn graph, with large logits in both directions.
    #[test]
    fn bce_matches_burn_graph() {
        let device = Device::flex().autodiff();
        let z = (rand_tensor([200, 1], 8, &device) * 30.0).require_grad();
        let z = z.detach().require_grad();
        let y = rand_tensor([200, 1], 9, &device).greater_elem(0.0).float();
        let ours = bce(z.clone(), y.clone());
        let plain = graph_bce_with_logits(z.clone(), y);
        assert_close("loss", &vec(ours.clone()), &vec(plain.clone()), 1e-6);
        let g1 = (ours * 3.0).backward();
        let g2 = (plain * 3.0).backward();
        assert_close("dz", &vec(z.grad(&g1).unwrap()), &vec(z.grad(&g2).unwrap()), 1e-6);
    }

    /// A whole DLRM step (bottom MLP, interaction, top MLP, loss) through the fused ops against
    /// the same module through burn's graph: logits, loss and the embeddings' gradient (which
    /// flows back through every layer of the top MLP and the interaction).
    #[test]
    fn dlrm_step_matches_burn_graph() {
        use crate::net::{Dlrm, DlrmConfig};
        let device = Device::flex().autodiff();
        let (t, b) = (6, 300);
        let model = Dlrm::new(&DlrmConfig::small(), 13, t, 3, &device);
        let dense = rand_tensor([b, 13], 14, &device);
        let labels = rand_tensor([b, 1], 15, &device).greater_elem(0.0).float();
        let run = |fused: bool| {
            let emb = rand_tensor([t, b, 16], 16, &device).require_grad();
            let logits = model.forward_with(dense.clone(), emb.clone(), fused);
            let loss = if fused {
                bce(logits.clone(), labels.clone())
            } else {
                graph_bce_with_logits(logits.clone(), labels.clone())
            };
            let grads = loss.clone().backward();
            (vec(logits), vec(loss), vec(emb.grad(&grads).unwrap()))
        };
        let ((l1, loss1, g1), (l2, loss2, g2)) = (run(true), run(false));
        assert_close("logits", &l1, &l2, 1e-5);
        assert_close("loss", &loss1, &loss2, 1e-6);
        // Against the largest gradient: entries are ~1e-3 (a mean over 300 samples).
        let scale = g2.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = g1.iter().zip(&g2).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.0 && worst <= 1e-4 * scale, "d emb: worst difference {worst} at scale {scale}");
    }

    /// Without autodiff (evaluation) the ops run on Flex directly and give the same values.
    #[test]
    fn inference_path_matches_autodiff_path() {
        let (ad, plain) = (Device::flex().autodiff(), Device::flex());
        assert!(fused_available(&ad) && fused_available(&plain));
        let run = |device: &Device| {
            let x = rand_tensor([70, 8], 10, device);
            let e = rand_tensor([3, 70, 8], 11, device);
            let h = linear(x, rand_tensor([8, 8], 12, device), rand_tensor([8], 13, device), true, Precision::Bf16);
            let h = linear(h, rand_tensor([8, 8], 17, device), rand_tensor([8], 18, device), true, Precision::F32);
            vec(interaction(h, e))
        };
        assert_eq!(run(&ad), run(&plain));
    }

    /// `round_bf16` against a search: the nearest of the two bf16 neighbours (low 16 bits zero)
    /// in exact f64 distance, the even one (bit 16 clear) on a tie; specials and overflow.
    #[test]
    fn round_bf16_is_round_to_nearest_even() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let mut cases: Vec<u32> = (0..200_000).map(|_| rng.random::<u32>()).collect();
        // Exact ties, one below and above them, around both parities of bit 16.
        for base in [0x3F80_0000u32, 0x3F81_0000, 0xBF80_0000, 0xC2F1_0000, 0x0001_0000] {
            cases.extend([base + 0x8000, base + 0x7FFF, base + 0x8001, base]);
        }
        for bits in cases {
            let v = f32::from_bits(bits);
            if !v.is_finite() {
                continue;
            }
            let lo = bits & 0xFFFF_0000;
            let hi = lo.wrapping_add(0x1_0000);
            // Past the largest finite value the upper neighbour is infinity, at 2^128 for rounding.
            let upper = |h: u32| {
                if f32::from_bits(h).is_infinite() {
                    2f64.powi(128).copysign(v as f64)
                } else {
                    f32::from_bits(h) as f64
                }
            };
            let (dl, dh) = ((v as f64 - f32::from_bits(lo) as f64).abs(), (upper(hi) - v as f64).abs());
            let want = if dl < dh || (dl == dh && lo & 0x1_0000 == 0) { lo } else { hi };
            assert_eq!(round_bf16(v).to_bits(), want, "{v:e} ({bits:#010x})");
        }
        assert!(round_bf16(f32::NAN).is_nan() && round_bf16(f32::from_bits(0x7F80_0001)).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY, "above bf16's largest finite value");
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    /// The bf16 linear against a reference built by hand on rounded operands: the forward equals
    /// burn's matmul of the rounded `x` and `w` bit for bit; the bias gradient sums the masked
    /// upstream gradient unrounded; `dW` and `dX` multiply its rounded copy. The f32 path's
    /// gradients differ from these (so the rounding is really applied).
    #[test]
    fn linear_bf16_is_the_f32_op_on_rounded_operands() {
        let (device, plain_dev) = (Device::flex().autodiff(), Device::flex());
        let rounded = |t: Tensor<2>| {
            let shape = t.dims();
            Tensor::<2>::from_data(
                TensorData::new(vec(t).into_iter().map(round_bf16).collect::<Vec<f32>>(), shape),
                &plain_dev,
            )
        };
        for (relu_on, (b, i, o)) in [(true, (300, 13, 64)), (false, (130, 40, 3))] {
            let x = (rand_tensor([b, i], 1, &device) * 3.0).require_grad();
            let w = rand_tensor([i, o], 2, &device).require_grad();
            let bias = rand_tensor([o], 3, &device).require_grad();
            let up = rand_tensor([b, o], 4, &device);
            let ours = linear(x.clone(), w.clone(), bias.clone(), relu_on, Precision::Bf16);
            let (xr, wr) = (rounded(x.clone().inner()), rounded(w.clone().inner()));
            let pre = xr.clone().matmul(wr.clone()) + bias.clone().inner().unsqueeze::<2>();
            let want = if relu_on { relu(pre) } else { pre };
            assert_eq!(vec(ours.clone()), vec(want.clone()), "forward: the f32 GEMM of rounded operands");
            let grads = (ours * up.clone()).sum().backward();
            let gm = if relu_on { up.clone().inner() * want.greater_elem(0.0).float() } else { up.clone().inner() };
            assert_close("dbias", &vec(bias.grad(&grads).unwrap()), &vec(gm.clone().sum_dim(0).reshape([o])), 1e-5);
            let gr = rounded(gm);
            let (dw, dx) = (vec(w.grad(&grads).unwrap()), vec(x.grad(&grads).unwrap()));
            let (dw_want, dx_want) = (vec(xr.transpose().matmul(gr.clone())), vec(gr.matmul(wr.transpose())));
            assert_close("dw", &dw, &dw_want, 1e-5);
            assert_close("dx", &dx, &dx_want, 1e-5);
            let f32_grads = (linear(x.clone(), w.clone(), bias.clone(), relu_on, Precision::F32) * up).sum().backward();
            let moved = vec(w.grad(&f32_grads).unwrap()).iter().zip(&dw).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(moved > 1e-3, "bf16 and f32 gradients should differ, largest difference {moved}");
        }
    }
}
