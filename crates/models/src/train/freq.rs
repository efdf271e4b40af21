//! Id frequencies: training counts per id, and test BCE by frequency bucket of the largest table.

use cqr_data::metrics::bce_term;
use cqr_data::Dataset;

use super::{FrequencyBce, FREQ_BOUNDS};

/// Row ranges of 2^16 rows covering `range`.
pub(crate) fn row_blocks(range: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
    (range.start..range.end).step_by(1 << 16).map(move |a| a..(a + (1 << 16)).min(range.end))
}

/// How often each id of each column in `cols` occurs in the training split (saturating at
/// u32::MAX). Out of core: one pass in blocks, each released once counted, so the pass does not
/// make the mapped arrays resident.
pub fn train_counts(ds: &Dataset, cols: &[usize]) -> Vec<Vec<u32>> {
    let mut counts: Vec<Vec<u32>> = cols.iter().map(|&c| vec![0u32; ds.cardinalities[c]]).collect();
    for block in row_blocks(ds.splits.train.clone()) {
        for r in block.clone() {
            let row = ds.cat_row(r);
            for (k, &c) in cols.iter().enumerate() {
                let id = row[c] as usize;
                counts[k][id] = counts[k][id].saturating_add(1);
            }
        }
        ds.release(block);
    }
    counts
}

/// The frequency bucket of each test row, by the training count of its id in the table with the
/// largest vocabulary (where compression bites hardest and clustering should help rare ids).
pub(crate) struct FrequencyBuckets {
    buckets: Vec<u8>,
}

impl FrequencyBuckets {
    /// `counts`: every column's training counts when the caller has them (methods that need
    /// counts), so the training split is not counted twice; empty otherwise.
    pub(crate) fn new(ds: &Dataset, counts: &[std::sync::Arc<[u32]>]) -> Self {
        let Some(col) = (0..ds.n_cat()).max_by_key(|&c| (ds.cardinalities[c], std::cmp::Reverse(c))) else {
            return FrequencyBuckets { buckets: vec![] };
        };
        let counted;
        let counts: &[u32] = match counts.get(col) {
            Some(c) => c,
            None => {
                counted = train_counts(ds, &[col]).pop().unwrap_or_default();
                &counted
            }
        };
        let bucket = |c: u32| {
            if c >= FREQ_BOUNDS[1] {
                0
            } else if c >= FREQ_BOUNDS[0] {
                1
            } else {
                2
            }
        };
        let mut buckets = Vec::with_capacity(ds.splits.test.len());
        for block in row_blocks(ds.splits.test.clone()) {
            buckets.extend(block.clone().map(|r| bucket(counts[ds.cat_row(r)[col] as usize])));
            ds.release(block);
        }
        FrequencyBuckets { buckets }
    }

    /// BCE per bucket of test-split logits, in one pass (each bucket's terms summed in row
    /// order, as `bce_with_logits` sums them).
    pub(crate) fn bce(&self, logits: &[f32], labels: &[f32]) -> FrequencyBce {
        let (mut sum, mut rows) = ([0.0f64; 3], [0u64; 3]);
        for ((&b, &z), &y) in self.buckets.iter().zip(logits).zip(labels) {
            sum[b as usize] += bce_term(z, y);
            rows[b as usize] += 1;
        }
        FrequencyBce { bce: std::array::from_fn(|k| (rows[k] > 0).then(|| sum[k] / rows[k] as f64)), rows }
    }
}
