//! Shared checks every method's tests run: shapes, finite-difference gradients, sparse updates
//! equal to a dense reference update, and accounting consistent with the stored weights.

use rand::{Rng, SeedableRng};

use crate::{EmbeddingMethod, MethodParams, RowOptimizer};

/// L(theta) = <g, forward(ids)> in f64.
fn objective(m: &dyn EmbeddingMethod, ids: &[u32], g: &[f32]) -> f64 {
    let mut out = vec![0.0f32; ids.len() * m.dim()];
    m.forward(ids, &mut out);
    out.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Builds the method twice from `params` (with SGD, lr 0.5) and checks, over every parameter:
/// the update equals `theta - lr * numeric_gradient` (the dense reference update), and weights
/// with zero gradient are bit-for-bit unchanged.
pub fn check_gradients(build: &dyn Fn(&MethodParams) -> Box<dyn EmbeddingMethod>, params: &MethodParams, ids: &[u32]) {
    check_gradients_step(build, params, ids, 1e-2)
}

/// [`check_gradients`] with finite-difference step `h`: methods with several ReLU layers (deeper
/// DHE) are piecewise linear in a weight, and a step that crosses a kink is not exact, so they
/// use a smaller one.
pub fn check_gradients_step(
    build: &dyn Fn(&MethodParams) -> Box<dyn EmbeddingMethod>,
    params: &MethodParams,
    ids: &[u32],
    h: f32,
) {
    let lr = 0.5f32;
    let p = params.clone().with_optimizer(RowOptimizer::Sgd { lr });
    let mut m = build(&p);
    let d = m.dim();
    // Shapes and finiteness.
    let mut out = vec![f32::NAN; ids.len() * d];
    m.forward(ids, &mut out);
    assert!(out.iter().all(|v| v.is_finite()), "{}: forward wrote non-finite values", m.name());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let g: Vec<f32> = (0..ids.len() * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    // Numeric gradient by central differences (the methods are linear or bilinear in each single
    // weight, so the difference is exact up to rounding).
    let mut numeric: Vec<Vec<f64>> = vec![];
    let n_groups = m.parameters_mut().len();
    for gi in 0..n_groups {
        let len = m.parameters_mut()[gi].len();
        let mut grads = vec![0.0f64; len];
        for j in 0..len {
            let orig = m.parameters_mut()[gi][j];
            m.parameters_mut()[gi][j] = orig + h;
            let up = objective(m.as_ref(), ids, &g);
            m.parameters_mut()[gi][j] = orig - h;
            let down = objective(m.as_ref(), ids, &g);
            m.parameters_mut()[gi][j] = orig;
            grads[j] = (up - down) / (2.0 * h as f64);
        }
        numeric.push(grads);
    }
    let before: Vec<Vec<f32>> = m.parameters_mut().iter().map(|s| s.to_vec()).collect();
    m.backward(ids, &g);
    let after: Vec<Vec<f32>> = m.parameters_mut().iter().map(|s| s.to_vec()).collect();
    let mut touched = 0;
    for gi in 0..n_groups {
        for j in 0..before[gi].len() {
            let want = before[gi][j] as f64 - lr as f64 * numeric[gi][j];
            let got = after[gi][j] as f64;
            assert!(
                (want - got).abs() <= 2e-3 * (1.0 + want.abs()),
                "{}: group {gi} weight {j}: sparse update {got} vs dense reference {want}",
                m.name()
            );
            if numeric[gi][j] == 0.0 {
                assert_eq!(
                    after[gi][j].to_bits(),
                    before[gi][j].to_bits(),
                    "{}: weight {gi}/{j} has no gradient but changed",
                    m.name()
                );
            } else {
                touched += 1;
            }
        }
    }
    assert!(touched > 0, "{}: no weight received a gradient", m.name());
    // Accounting agrees with the weights actually stored.
    let stored: usize = m.parameters_mut().iter().map(|s| s.len()).sum();
    assert_eq!(m.accounting().trainable_params, stored as u64, "{}: accounting vs stored weights", m.name());
}

/// Trainable parameters equal the budget (within less than one row of `dim`) at several budgets.
pub fn check_budgets(
    build: &dyn Fn(&MethodParams) -> Box<dyn EmbeddingMethod>,
    vocab: usize,
    dim: usize,
    budgets: &[u64],
) {
    for &b in budgets {
        let m = build(&MethodParams::new(vocab, dim, b));
        let t = m.accounting().trainable_params;
        assert!(t <= b && b - t < dim as u64, "{}: budget {b}: {t} trainable params", m.name());
    }
}

/// `p` with Zipf-like training counts (id i seen ⌊vocab / (i + 1)⌋ times) when `name` needs
/// them (`registry::needs_counts`), unchanged otherwise.
pub fn with_counts(name: &str, mut p: MethodParams) -> MethodParams {
    if crate::registry::needs_counts(name) {
        let n = p.vocab as u32;
        p.id_counts = Some((0..n).map(|i| n / (i + 1)).collect::<Vec<_>>().into());
    }
    p
}

/// Every id's embedding, in id order (`vocab · dim` values).
pub fn all_rows(m: &dyn EmbeddingMethod) -> Vec<f32> {
    let ids: Vec<u32> = (0..m.vocab() as u32).collect();
    let mut out = vec![0.0; ids.len() * m.dim()];
    m.forward(&ids, &mut out);
    out
}
