//! Mixed dimension by frequency (Ginart et al., "Mixed Dimension Embeddings with Application to
//! Memory-Efficient Recommendation Systems", ISIT 2021): within one table, popular ids get wider
//! rows and rare ids narrower ones, each width followed by its own learned projection to `dim`.
//!
//! Before training, the ids are sorted by their count in the training split (most frequent
//! first, ties to the smaller id) and cut into `blocks` blocks holding equal shares of the
//! training lookups, so the head block is small and the tail block (never-seen ids included)
//! large. Block b, with `n_b` ids and mean popularity `p_b` (its share of lookups over `n_b`),
//! gets width `d_b = clamp(round(λ · p_b^α), 1, dim)` (the paper's power-law rule), with λ the
//! largest value (bisection) such that `Σ_b (n_b · d_b + [d_b < dim] · d_b · dim) <= budget`.
//! A block of full width stores its rows as they are (no projection); narrower ones store
//! `n_b x d_b` rows and a `d_b x dim` projection: `e(id) = P_b^T t_b[row(id)]`. α = 0 gives
//! every block one width (low-dim with one projection per block); a budget that holds the
//! full table gives every block width `dim` (the dense table).
//!
//! What the paper specifies and where we chose: the power-law rule and the projections are the
//! paper's; the partition into blocks of equal lookup share, `blocks: 4` and `α = 0.3` (the
//! paper reports α in 0.1-0.4 working best) are our defaults. The counts come from the training
//! split only (`MethodParams::id_counts`; the harness counts them in one pass before training).
//!
//! Memory, during training and after: the blocks' rows and projections (trainable), and one
//! index per id (4 bytes: block in the top 4 bits, row in the other 28). The table's gradient
//! is sparse; each projection's is dense over its block's lookups, applied once per step.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::lowdim::ProjectedTable;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MdFreqOptions {
    /// Number of frequency blocks, 1..=16 (default 4).
    pub blocks: usize,
    /// Temperature α of the power-law rule (default 0.3).
    pub alpha: f64,
}

impl Default for MdFreqOptions {
    fn default() -> Self {
        MdFreqOptions { blocks: 4, alpha: 0.3 }
    }
}

const ROW_BITS: u32 = 28;
const ROW_MASK: u32 = (1 << ROW_BITS) - 1;

/// The partition: ids in frequency order cut into blocks of equal lookup share. Returns each
/// block's ids (in frequency order) and its lookup count. Every block holds at least one id.
pub fn frequency_blocks(counts: &[u32], blocks: usize) -> Vec<(Vec<u32>, u64)> {
    let n = counts.len();
    let k = blocks.min(n).max(1);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(counts[i as usize]), i));
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    let mut out = Vec::with_capacity(k);
    let (mut start, mut cum) = (0usize, 0u64);
    for b in 0..k {
        let last = b + 1 == k;
        let target = (total as u128 * (b as u128 + 1)).div_ceil(k as u128) as u64;
        // Leave at least one id for each later block.
        let max_end = n - (k - 1 - b);
        let mut end = start + 1;
        let mut mass = counts[order[start] as usize] as u64;
        while end < max_end && (last || cum + mass < target) {
            mass += counts[order[end] as usize] as u64;
            end += 1;
        }
        if total == 0 && !last {
            // No counts: equal sizes.
            end = (start + 1).max(n * (b + 1) / k).min(max_end);
            mass = 0;
        }
        cum += mass;
        out.push((order[start..end].to_vec(), mass));
        start = end;
    }
    out
}

/// The power-law widths of blocks with `sizes` ids and `mass` lookups each, under `budget`
/// (see the module docs); `Err` with the smallest cost when width 1 everywhere does not fit.
pub fn block_dims(sizes: &[usize], mass: &[u64], dim: usize, budget: u64, alpha: f64) -> Result<Vec<usize>, u64> {
    let total: f64 = mass.iter().sum::<u64>().max(1) as f64;
    // Mean popularity per id; blocks of never-seen ids get the smallest positive one.
    let pop: Vec<f64> = sizes.iter().zip(mass).map(|(&n, &m)| (m as f64).max(0.5) / total / n as f64).collect();
    let dims_at = |lambda: f64| -> Vec<usize> { pop.iter().map(|&p| ((lambda * p.powf(alpha)).round() as usize).clamp(1, dim)).collect() };
    let cost = |d: &[usize]| -> u64 { d.iter().zip(sizes).map(|(&d, &n)| (n * d + if d < dim { d * dim } else { 0 }) as u64).sum() };
    let least = cost(&dims_at(0.0));
    if least > budget {
        return Err(least);
    }
    let full = vec![dim; sizes.len()];
    if cost(&full) <= budget {
        return Ok(full);
    }
    let (mut lo, mut hi) = (-80.0f64, 80.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cost(&dims_at(mid.exp())) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(dims_at(lo.exp()))
}

pub struct MdFreq {
    vocab: usize,
    dim: usize,
    blocks: Vec<ProjectedTable>,
    /// Per id: block << 28 | row within the block.
    slot: Vec<u32>,
    rows_buf: Vec<Vec<u32>>,
    grad_buf: Vec<Vec<f32>>,
}

impl MdFreq {
    pub const NAME: &'static str = "mdfreq";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: MdFreqOptions = p.options(Self::NAME)?;
        let bad = |r: String| MethodError::BadOptions { method: Self::NAME.into(), reason: r };
        if !(1..=16).contains(&o.blocks) {
            return Err(bad(format!("blocks must be in 1..=16, got {}", o.blocks)));
        }
        if !(o.alpha.is_finite() && o.alpha >= 0.0) {
            return Err(bad(format!("alpha must be >= 0, got {}", o.alpha)));
        }
        if p.vocab > ROW_MASK as usize {
            return Err(bad(format!("vocabulary {} exceeds 2^28 ids", p.vocab)));
        }
        let counts = p.id_counts.as_deref().ok_or_else(|| bad("needs the training count of every id (the harness provides it; none was given)".into()))?;
        if counts.len() != p.vocab {
            return Err(bad(format!("{} id counts for a vocabulary of {}", counts.len(), p.vocab)));
        }
        let parts = frequency_blocks(counts, o.blocks);
        let sizes: Vec<usize> = parts.iter().map(|(ids, _)| ids.len()).collect();
        let mass: Vec<u64> = parts.iter().map(|(_, m)| *m).collect();
        let dims = block_dims(&sizes, &mass, p.dim, p.budget, o.alpha).map_err(|least| MethodError::Budget {
            method: Self::NAME.into(),
            budget: p.budget,
            reason: format!("width 1 in each of {} blocks needs {least} parameters", sizes.len()),
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut slot = vec![0u32; p.vocab];
        let mut blocks = Vec::with_capacity(parts.len());
        for (b, ((ids, _), &d)) in parts.iter().zip(&dims).enumerate() {
            for (r, &id) in ids.iter().enumerate() {
                slot[id as usize] = (b as u32) << ROW_BITS | r as u32;
            }
            blocks.push(ProjectedTable::new(ids.len(), d, p.dim, false, p.optimizer, p.init_scale, &mut rng));
        }
        let k = blocks.len();
        Ok(MdFreq { vocab: p.vocab, dim: p.dim, blocks, slot, rows_buf: vec![vec![]; k], grad_buf: vec![vec![]; k] })
    }

    /// Each block's (ids, width), head first.
    #[cfg(test)]
    pub fn block_shapes(&self) -> Vec<(usize, usize)> {
        self.blocks.iter().map(|b| (b.table.rows, b.table.dim)).collect()
    }
}

impl EmbeddingMethod for MdFreq {
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
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            let s = self.slot[id as usize];
            self.blocks[(s >> ROW_BITS) as usize].forward_row((s & ROW_MASK) as usize, o);
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let d = self.dim;
        self.rows_buf.iter_mut().for_each(Vec::clear);
        self.grad_buf.iter_mut().for_each(Vec::clear);
        for (g, &id) in grad.chunks_exact(d).zip(ids) {
            let s = self.slot[id as usize];
            let b = (s >> ROW_BITS) as usize;
            self.rows_buf[b].push(s & ROW_MASK);
            self.grad_buf[b].extend_from_slice(g);
        }
        for ((block, rows), g) in self.blocks.iter_mut().zip(&self.rows_buf).zip(&self.grad_buf) {
            if !rows.is_empty() {
                block.backward(rows, g);
            }
        }
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.blocks.iter().map(|b| b.param_count()).sum(),
            optimizer_state_bytes: self.blocks.iter().map(|b| b.state_bytes()).sum(),
            index_bytes: 4 * self.vocab as u64,
            other_bytes: 0,
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.blocks.iter_mut().flat_map(|b| b.parameters_mut()).collect()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.blocks.iter().flat_map(|b| b.row_widths()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;
    use serde_json::json;

    /// Zipf-like counts: id i occurs ⌊1000 / (i + 1)⌋ times (ids past 1,000 never).
    fn zipf(vocab: usize) -> std::sync::Arc<[u32]> {
        (0..vocab).map(|i| (1000 / (i + 1)) as u32).collect::<Vec<_>>().into()
    }
    fn params(vocab: usize, dim: usize, budget: u64, options: serde_json::Value) -> MethodParams {
        MethodParams { id_counts: Some(zipf(vocab)), ..MethodParams::new(vocab, dim, budget) }.with_options(options)
    }
    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(MdFreq::new(p).unwrap())
    }

    #[test]
    fn blocks_hold_equal_lookup_shares_in_frequency_order() {
        let counts = zipf(2000);
        let parts = frequency_blocks(&counts, 4);
        assert_eq!(parts.len(), 4);
        let total: u64 = counts.iter().map(|&c| c as u64).sum();
        assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), total);
        assert_eq!(parts.iter().map(|p| p.0.len()).sum::<usize>(), 2000);
        assert!(parts[0].0.len() < parts[1].0.len() && parts[2].0.len() < parts[3].0.len(), "head small, tail large");
        assert_eq!(parts[0].0[0], 0, "the most frequent id first");
        for p in &parts[..3] {
            assert!((p.1 as f64 - total as f64 / 4.0).abs() < 0.1 * total as f64, "{} of {total}", p.1);
        }
        assert!(parts[3].0.contains(&1999), "never-seen ids are in the tail");
        // One id with most of the mass still leaves every block an id; no counts: equal sizes.
        let skewed: Vec<u32> = (0..10).map(|i| if i == 3 { 1000 } else { 1 }).collect();
        let parts = frequency_blocks(&skewed, 4);
        assert!(parts.iter().all(|p| !p.0.is_empty()) && parts[0].0 == [3]);
        let sizes: Vec<usize> = frequency_blocks(&[0; 8], 4).iter().map(|p| p.0.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 2]);
    }

    #[test]
    fn widths_follow_popularity_under_the_budget() {
        let p = params(10_000, 16, 40_000, json!({}));
        let m = MdFreq::new(&p).unwrap();
        let shapes = m.block_shapes();
        assert!(shapes.windows(2).all(|w| w[0].1 >= w[1].1), "{shapes:?}");
        assert!(shapes[0].1 > shapes[3].1, "{shapes:?}");
        let a = m.accounting();
        assert!(a.trainable_params <= 40_000, "{a:?}");
        assert_eq!(a.index_bytes, 40_000);
        // α = 0: one width; a budget of the full table: every block full, no projections.
        let flat = MdFreq::new(&params(10_000, 16, 40_000, json!({"alpha": 0.0}))).unwrap().block_shapes();
        assert!(flat.iter().all(|s| s.1 == flat[0].1), "{flat:?}");
        let mut full = MdFreq::new(&params(1000, 8, 8000, json!({}))).unwrap();
        assert!(full.block_shapes().iter().all(|s| s.1 == 8));
        assert_eq!(full.accounting().trainable_params, 8000);
        assert_eq!(full.parameters_mut().len(), 4, "no projections");
        assert!(MdFreq::new(&params(10_000, 16, 9_000, json!({}))).is_err(), "width 1 needs 10,064");
        for bad in [json!({"blocks": 0}), json!({"blocks": 17}), json!({"alpha": -1.0}), json!({"block": 4})] {
            assert!(MdFreq::new(&params(100, 4, 200, bad.clone())).is_err(), "{bad}");
        }
        let no_counts = MdFreq::new(&MethodParams::new(100, 4, 200)).err().unwrap().to_string();
        assert!(no_counts.contains("training count"), "{no_counts}");
    }

    #[test]
    fn gradients_through_projected_and_full_blocks() {
        // 60 ids, dim 4, budget 150: narrow blocks with projections.
        let ids = [0u32, 1, 0, 59, 17, 30, 2];
        check_gradients(&build, &params(60, 4, 150, json!({"blocks": 3})), &ids);
        // A budget where the head block is full width and the tail is projected.
        let p = params(60, 4, 180, json!({"blocks": 3, "alpha": 1.0}));
        let shapes = MdFreq::new(&p).unwrap().block_shapes();
        assert!(shapes[0].1 == 4 && shapes[2].1 < 4, "{shapes:?}");
        check_gradients(&build, &p, &ids);
    }
}
