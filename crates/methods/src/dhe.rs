//! DHE, deep hash embeddings (Kang et al., KDD 2021): no table at all. `k` hash functions give
//! an id a dense encoding `x(id)`, and an MLP with ReLU after each hidden layer computes the
//! embedding. Written in plain Rust (the methods crate stays free of burn).
//!
//! Two shapes (`shape`):
//! - `fixed_k` (default, ours): `k` hashes (32), `n_hidden` hidden layers (1) of width `hidden`
//!   (default: the largest the budget allows), so the MLP is `k -> h -> ... -> h -> dim`; the
//!   encoding is uniform in [-1, 1] (or, with `encoding: gaussian`, mapped to N(0, 1) by
//!   Box-Muller on pairs); He-uniform hidden weights, the output layer scaled so embeddings start
//!   near `init_scale`, zero biases.
//! - `square` (the CQR authors' library, `cce/dhe.py`): the encoding width ("rank", the number of
//!   hashes) is sized from the budget and every hidden layer is `rank x rank`
//!   (`rank -> rank -> ... -> dim`, `n_hidden` square layers); weights uniform in ±rank^-1/2,
//!   biases likewise (torch's default for a linear layer of fan-in `rank`); the encoding is
//!   scaled to [-1, 1) and divided by sqrt(rank). At a large budget ours grows one wide hidden
//!   layer over a fixed 32-wide encoding (e.g. 32 -> ~500 -> 32), theirs a wider encoding.
//!   Measured under their MovieLens protocol (RESULTS.md, `results/movielens-authors-100`):
//!   `square` with `n_hidden_root: 4` beats the default from 512 rows per table (+0.010 best
//!   validation AUC at 512, +0.096 at 1,024, where the default falls) and loses at 16-64 rows
//!   (−0.03 to −0.08); the default is kept so that stored records stay valid: choose `square`
//!   for large budgets.
//!
//! Budget: parameters are the MLP weights and biases; the free width is the largest that fits.
//! No index arrays; one hash function (24 bytes) per encoding value. The gradient is dense in the
//! weights: every step updates every weight (the row optimizer over all rows, i.e. dense Adam /
//! Adagrad / SGD). DHE is slow by design: each lookup is an MLP pass.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DheEncoding {
    #[default]
    Uniform,
    Gaussian,
}

/// How the MLP's widths follow the budget (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DheShape {
    #[default]
    FixedK,
    Square,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DheOptions {
    /// Hash functions (encoding width); `fixed_k` only.
    pub k: usize,
    /// Hidden width (default: the largest the budget allows); with `square` the rank.
    pub hidden: Option<usize>,
    /// Hidden layers.
    pub n_hidden: usize,
    /// With it, the hidden layers follow the width: `ceil(width^(1/root))` (the authors' library
    /// sizes DHE this way with root = its `n_chunks`, 4), overriding `n_hidden`.
    pub n_hidden_root: Option<u32>,
    pub encoding: DheEncoding,
    pub shape: DheShape,
}

impl Default for DheOptions {
    fn default() -> Self {
        DheOptions { k: 32, hidden: None, n_hidden: 1, n_hidden_root: None, encoding: DheEncoding::Uniform, shape: DheShape::FixedK }
    }
}

/// Range of each hash before scaling.
const BUCKETS: usize = 1 << 20;

/// One linear layer: `w` has one row per input (`in x out`), `b` one row of `out`.
struct Layer {
    w: Table,
    b: Table,
}

impl Layer {
    fn inputs(&self) -> usize {
        self.w.rows
    }
    fn outputs(&self) -> usize {
        self.b.dim
    }
    /// `out = b + x W`; zero inputs (inactive ReLUs) are skipped where `skip_zeros`.
    fn apply(&self, x: &[f32], out: &mut [f32], skip_zeros: bool) {
        out.copy_from_slice(self.b.row(0));
        for (i, &xi) in x.iter().enumerate() {
            if !skip_zeros || xi != 0.0 {
                out.iter_mut().zip(self.w.row(i)).for_each(|(a, &w)| *a += xi * w);
            }
        }
    }
}

/// Parameters of an MLP with these widths (`widths[0]` the encoding, the last the output).
fn mlp_params(widths: &[usize]) -> u64 {
    widths.windows(2).map(|w| (w[0] * w[1] + w[1]) as u64).sum()
}

pub struct Dhe {
    vocab: usize,
    dim: usize,
    hashes: Vec<UniversalHash>,
    encoding: DheEncoding,
    shape: DheShape,
    /// Hidden layers (ReLU after each), then the output layer.
    layers: Vec<Layer>,
    scratch: Vec<f32>,
}

impl Dhe {
    pub const NAME: &'static str = "dhe";

    /// The widths `[encoding, hidden.., dim]` for the options and budget.
    fn widths(o: &DheOptions, p: &MethodParams) -> Result<Vec<usize>, MethodError> {
        let layers = |free: usize| match o.n_hidden_root {
            Some(root) => ((free as f64).powf(1.0 / root as f64) - 1e-9).ceil().max(1.0) as usize,
            None => o.n_hidden,
        };
        let shape = |free: usize| -> Vec<usize> {
            let enc = if o.shape == DheShape::Square { free } else { o.k };
            std::iter::once(enc).chain(std::iter::repeat_n(free, layers(free))).chain(std::iter::once(p.dim)).collect()
        };
        // The largest free width that fits (parameters grow with it).
        let (mut lo, mut hi) = (0usize, 1usize);
        while mlp_params(&shape(hi)) <= p.budget && hi < 1 << 24 {
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if mlp_params(&shape(mid)) <= p.budget { lo = mid } else { hi = mid }
        }
        let free = o.hidden.unwrap_or(lo);
        if free == 0 || free > lo {
            let need = mlp_params(&shape(free.max(1)));
            return Err(MethodError::Budget { method: Self::NAME.into(), budget: p.budget, reason: format!("width {} needs {need} parameters; the budget allows a width <= {lo}", free.max(1)) });
        }
        Ok(shape(free))
    }

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: DheOptions = p.options(Self::NAME)?;
        let bad = |r: String| Err(MethodError::BadOptions { method: Self::NAME.into(), reason: r });
        if o.shape == DheShape::FixedK && (o.k == 0 || (o.encoding == DheEncoding::Gaussian && o.k % 2 == 1)) {
            return bad(format!("k must be >= 1 (even for the gaussian encoding), got {}", o.k));
        }
        if o.n_hidden == 0 || o.n_hidden_root == Some(0) {
            return bad("n_hidden and n_hidden_root must be >= 1".into());
        }
        if o.shape == DheShape::Square && o.encoding == DheEncoding::Gaussian {
            return bad("shape: square uses the authors' uniform encoding".into());
        }
        let widths = Self::widths(&o, p)?;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let hashes = (0..widths[0]).map(|_| UniversalHash::new(BUCKETS, &mut rng)).collect();
        let n = widths.len() - 1;
        let layers = (0..n)
            .map(|l| {
                let (inp, out) = (widths[l], widths[l + 1]);
                let (mut w, mut b) = (Table::new(inp, out, p.optimizer), Table::new(1, out, p.optimizer));
                match o.shape {
                    DheShape::Square => {
                        let a = (widths[0] as f32).powf(-0.5);
                        w.init_uniform(a, &mut rng);
                        b.init_uniform((inp as f32).powf(-0.5), &mut rng);
                    }
                    // He-style uniform; the output layer scaled so embeddings start near init_scale.
                    DheShape::FixedK if l + 1 == n => w.init_uniform(p.init_scale * (3.0 / inp as f32).sqrt(), &mut rng),
                    DheShape::FixedK => w.init_uniform((6.0 / inp as f32).sqrt(), &mut rng),
                }
                Layer { w, b }
            })
            .collect();
        Ok(Dhe { vocab: p.vocab, dim: p.dim, hashes, encoding: o.encoding, shape: o.shape, layers, scratch: vec![] })
    }

    /// The dense encoding of `id` into `x` (one value per hash).
    fn encode(&self, id: u32, x: &mut [f32]) {
        match self.shape {
            DheShape::FixedK => {
                for (v, h) in x.iter_mut().zip(&self.hashes) {
                    *v = 2.0 * h.hash(id) as f32 / (BUCKETS - 1) as f32 - 1.0;
                }
            }
            DheShape::Square => {
                let scale = (x.len() as f32).sqrt();
                for (v, h) in x.iter_mut().zip(&self.hashes) {
                    *v = (2.0 * h.hash(id) as f32 / BUCKETS as f32 - 1.0) / scale;
                }
            }
        }
        if self.encoding == DheEncoding::Gaussian {
            for pair in x.chunks_exact_mut(2) {
                // Box-Muller: (u1, u2) in (0, 1] x [0, 1) -> two N(0, 1).
                let u1 = ((pair[0] + 1.0) / 2.0).max(1e-7);
                let u2 = (pair[1] + 1.0) / 2.0;
                let r = (-2.0 * u1.ln()).sqrt();
                let t = 2.0 * std::f32::consts::PI * u2;
                pair[0] = r * t.cos();
                pair[1] = r * t.sin();
            }
        }
    }

    /// Every layer's input for `id` (`acts[0]` the encoding, `acts[l]` the ReLU output of hidden
    /// layer l - 1) and the embedding in `out`.
    fn run(&self, id: u32, acts: &mut [Vec<f32>], out: &mut [f32]) {
        self.encode(id, &mut acts[0]);
        let n = self.layers.len();
        for l in 0..n - 1 {
            let (a, b) = acts.split_at_mut(l + 1);
            self.layers[l].apply(&a[l], &mut b[0], l > 0);
            b[0].iter_mut().for_each(|v| *v = v.max(0.0));
        }
        self.layers[n - 1].apply(&acts[n - 1], out, n > 1);
    }

    fn act_buffers(&self) -> Vec<Vec<f32>> {
        self.layers.iter().map(|l| vec![0.0; l.inputs()]).collect()
    }
}

impl EmbeddingMethod for Dhe {
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
        let mut acts = self.act_buffers();
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            self.run(id, &mut acts, o);
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let d = self.dim;
        // Gradients of every weight, summed over the batch, layer by layer: [w | b].
        let sizes: Vec<(usize, usize)> = self.layers.iter().map(|l| (l.inputs() * l.outputs(), l.outputs())).collect();
        let mut gs = std::mem::take(&mut self.scratch);
        gs.clear();
        gs.resize(sizes.iter().map(|(w, b)| w + b).sum(), 0.0);
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for (w, b) in &sizes {
            offsets.push(at);
            at += w + b;
        }
        let mut acts = self.act_buffers();
        let mut out = vec![0.0; d];
        let n = self.layers.len();
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            self.run(id, &mut acts, &mut out);
            let mut delta: Vec<f32> = g.to_vec();
            for l in (0..n).rev() {
                let layer = &self.layers[l];
                let (inp, outw) = (layer.inputs(), layer.outputs());
                let (g_w, g_b) = gs[offsets[l]..offsets[l] + inp * outw + outw].split_at_mut(inp * outw);
                g_b.iter_mut().zip(&delta).for_each(|(s, &v)| *s += v);
                let x = &acts[l];
                let mut prev = vec![0.0; if l > 0 { inp } else { 0 }];
                for j in 0..inp {
                    g_w[j * outw..(j + 1) * outw].iter_mut().zip(&delta).for_each(|(s, &v)| *s += x[j] * v);
                    // ReLU below (hidden inputs): no gradient through inactive units.
                    if l > 0 {
                        prev[j] = if x[j] > 0.0 { layer.w.row(j).iter().zip(&delta).map(|(w, v)| w * v).sum() } else { 0.0 };
                    }
                }
                delta = prev;
            }
        }
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let (inp, outw) = (layer.inputs(), layer.outputs());
            let (g_w, g_b) = gs[offsets[l]..offsets[l] + inp * outw + outw].split_at(inp * outw);
            layer.w.update(&(0..inp as u32).collect::<Vec<u32>>(), g_w);
            layer.b.update(&[0], g_b);
        }
        self.scratch = gs;
    }
    fn accounting(&self) -> Accounting {
        let t: Vec<&Table> = self.layers.iter().flat_map(|l| [&l.w, &l.b]).collect();
        Accounting {
            trainable_params: t.iter().map(|t| t.param_count()).sum(),
            optimizer_state_bytes: t.iter().map(|t| t.state_bytes()).sum(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * self.hashes.len() as u64,
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.layers.iter_mut().flat_map(|l| [l.w.weights.as_mut_slice(), l.b.weights.as_mut_slice()]).collect()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.layers.iter().flat_map(|l| [l.w.dim, l.b.dim]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradients, check_gradients_step};
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Dhe::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_encodings() {
        for enc in ["uniform", "gaussian"] {
            check_gradients(&build, &MethodParams::new(1000, 4, 200).with_options(json!({"k": 4, "encoding": enc})), &[3, 5, 3, 999, 17, 250]);
        }
        // dim 16, k 32: h = (3200 - 16) / 49 = 64, 64 * 49 + 16 = 3152 parameters.
        let m = Dhe::new(&MethodParams::new(1_000_000, 16, 3200)).unwrap();
        assert_eq!((m.layers[0].outputs(), m.accounting().trainable_params), (64, 3152));
        assert!(Dhe::new(&MethodParams::new(100, 16, 40)).is_err());
        assert!(Dhe::new(&MethodParams::new(100, 4, 400).with_options(json!({"k": 3, "encoding": "gaussian"}))).is_err());
        // Distinct ids, distinct vectors.
        let mut out = vec![0.0; 2 * 16];
        m.forward(&[1, 2], &mut out);
        assert_ne!(out[..16], out[16..]);
    }

    #[test]
    fn deeper_and_square_shapes_have_gradients_and_fit_the_budget() {
        // Two hidden layers of ours; the authors' square shape with one and two hidden layers.
        check_gradients_step(&build, &MethodParams::new(1000, 4, 400).with_options(json!({"k": 4, "n_hidden": 2})), &[3, 5, 3, 999, 17, 250], 1e-3);
        for n_hidden in [1, 2] {
            check_gradients_step(&build, &MethodParams::new(1000, 4, 300).with_options(json!({"shape": "square", "n_hidden": n_hidden})), &[3, 5, 3, 999, 17, 250], 1e-3);
        }
        // Square, dim 16, budget 3200, one hidden layer: r^2 + r + 16 r + 16 <= 3200 -> r = 48
        // (48^2 + 48 + 768 + 16 = 3136; r = 49 needs 3250).
        let m = Dhe::new(&MethodParams::new(1_000_000, 16, 3200).with_options(json!({"shape": "square"}))).unwrap();
        assert_eq!((m.hashes.len(), m.layers[0].outputs(), m.accounting().trainable_params), (48, 48, 3136));
        // Ours with two hidden layers: 32 h + h + h^2 + h + 16 h + 16 <= 3200 -> h = 36.
        let m = Dhe::new(&MethodParams::new(1_000_000, 16, 3200).with_options(json!({"n_hidden": 2}))).unwrap();
        assert_eq!(m.accounting().trainable_params, 32 * 36 + 36 + 36 * 36 + 36 + 36 * 16 + 16);
        // Budgets: every shape stays within the cap and uses it (the next width would not fit).
        for o in [json!({}), json!({"shape": "square"}), json!({"shape": "square", "n_hidden": 3}), json!({"n_hidden": 3})] {
            for b in [800u64, 3200, 16_384, 131_072] {
                let m = Dhe::new(&MethodParams::new(10_000, 16, b).with_options(o.clone())).unwrap();
                let used = m.accounting().trainable_params;
                assert!(used <= b, "{o} at {b}: {used}");
                let opts: DheOptions = serde_json::from_value(o.clone()).unwrap();
                let w = Dhe::widths(&DheOptions { hidden: Some(m.layers[0].outputs() + 1), ..opts }, &MethodParams::new(10_000, 16, b));
                assert!(w.is_err(), "{o} at {b}: a wider MLP fits too");
            }
        }
        // The authors' encoding lies in [-1, 1) / sqrt(rank).
        let m = Dhe::new(&MethodParams::new(100, 4, 300).with_options(json!({"shape": "square"}))).unwrap();
        let r = m.hashes.len();
        let mut x = vec![0.0; r];
        m.encode(7, &mut x);
        assert!(x.iter().all(|v| v.abs() <= 1.0 / (r as f32).sqrt()));
        assert!(Dhe::new(&MethodParams::new(100, 4, 300).with_options(json!({"n_hidden": 0}))).is_err());
        // The authors' rule: ceil(rank^(1/4)) square layers. Dim 16, budget 3200: rank 26 gives
        // 3 layers (26^0.25 = 2.26): 3 (26^2 + 26) + 26 * 16 + 16 = 2538; rank 27 needs
        // 3 (27^2 + 27) + 27 * 16 + 16 = 2716; ... the largest rank that fits is 30:
        // 3 (900 + 30) + 480 + 16 = 3286 > 3200, so 29: 3 (841 + 29) + 464 + 16 = 3090.
        let m = Dhe::new(&MethodParams::new(1_000_000, 16, 3200).with_options(json!({"shape": "square", "n_hidden_root": 4}))).unwrap();
        assert_eq!((m.hashes.len(), m.layers.len(), m.accounting().trainable_params), (29, 4, 3090));
    }
}
