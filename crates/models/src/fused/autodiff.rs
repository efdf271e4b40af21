//! The fused ops as burn backend operations: the forward on Flex, and on `Autodiff<Flex>` the
//! hand-written backward passes burn's autodiff calls.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};

use super::kernels;
use super::FusedOps;

impl FusedOps for Flex {
    fn fused_linear(x: FlexTensor, w: FlexTensor, bias: FlexTensor, relu: bool, bf16: bool) -> FlexTensor {
        let (x, w) = kernels::operands(x, w, bf16);
        kernels::linear_forward(&x, &w, &bias, relu)
    }
    fn fused_interaction(x: FlexTensor, emb: FlexTensor) -> FlexTensor {
        kernels::interaction_forward(&x, &emb)
    }
    fn fused_bce(z: FlexTensor, y: FlexTensor) -> FlexTensor {
        kernels::bce_forward(&z, &y)
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    /// x, w (both rounded when bf16), the output (for the ReLU mask), relu, bf16.
    type State = (FlexTensor, FlexTensor, FlexTensor, bool, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, y, relu, bf16) = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let [px, pw, pb] = ops.parents;
        let act = kernels::Act { relu, bf16 };
        let (dx, dw, db) = kernels::linear_backward(&x, &w, &y, g, act, px.is_some(), pw.is_some());
        if let (Some(p), Some(d)) = (px, dx) {
            grads.register::<Flex>(p.id, d);
        }
        if let (Some(p), Some(d)) = (pw, dw) {
            grads.register::<Flex>(p.id, d);
        }
        if let Some(p) = pb {
            grads.register::<Flex>(p.id, db);
        }
    }
}

#[derive(Debug)]
struct InteractionBackward;

impl Backward<Flex, 2> for InteractionBackward {
    /// x, emb.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, emb) = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let [px, pe] = ops.parents;
        let (dx, demb) = kernels::interaction_backward(&x, &emb, &g);
        if let Some(p) = px {
            grads.register::<Flex>(p.id, dx);
        }
        if let Some(p) = pe {
            grads.register::<Flex>(p.id, demb);
        }
    }
}

#[derive(Debug)]
struct BceBackward;

impl Backward<Flex, 2> for BceBackward {
    /// z, y.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (z, y) = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let [pz, _] = ops.parents;
        if let Some(p) = pz {
            grads.register::<Flex>(p.id, kernels::bce_backward(&z, &y, &g));
        }
    }
}

type Ad<C> = Autodiff<Flex, C>;

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        relu: bool,
        bf16: bool,
    ) -> FloatTensor<Self> {
        let prep = LinearBackward.prepare::<C>([x.node(), w.node(), bias.node()]).compute_bound().stateful();
        let (x, w) = kernels::operands(Ad::<C>::inner(x), Ad::<C>::inner(w), bf16);
        let bias = Ad::<C>::inner(bias);
        let y = kernels::linear_forward(&x, &w, &bias, relu);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, w, y.clone(), relu, bf16), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_interaction(x: FloatTensor<Self>, emb: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = InteractionBackward.prepare::<C>([x.node(), emb.node()]).compute_bound().stateful();
        let (x, emb) = (Ad::<C>::inner(x), Ad::<C>::inner(emb));
        let out = kernels::interaction_forward(&x, &emb);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, emb), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn fused_bce(z: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = BceBackward.prepare::<C>([z.node(), y.node()]).compute_bound().stateful();
        let (z, y) = (Ad::<C>::inner(z), Ad::<C>::inner(y));
        let loss = kernels::bce_forward(&z, &y);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((z, y), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
    }
}
