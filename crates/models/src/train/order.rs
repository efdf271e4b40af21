//! The batches of a run: their order (a seeded shuffle, whole or in blocks for out-of-core data)
//! and the host buffers they are gathered into.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use cqr_data::Dataset;

use super::Shuffle;

/// Reusable host buffers for one batch.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) dense: Vec<f32>,
    pub(crate) cats: Vec<u32>,
    pub(crate) labels: Vec<f32>,
    pub(crate) emb: Vec<f32>,
}

impl Batch {
    pub(crate) fn fill(&mut self, ds: &Dataset, rows: &[usize]) {
        self.dense.clear();
        self.cats.clear();
        self.labels.clear();
        for &r in rows {
            self.dense.extend_from_slice(ds.dense_row(r));
            self.cats.extend_from_slice(ds.cat_row(r));
            self.labels.push(ds.label(r));
        }
        if ds.n_dense() == 0 {
            // A placeholder column: models without dense features ignore it.
            self.dense.resize(rows.len(), 0.0);
        }
    }
}

/// The random source of the batch order of a run with this seed.
pub(crate) fn batch_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x5eed)
}

/// Yields the training batches of each epoch in the order of a [`Shuffle`].
pub(crate) struct EpochOrder<'a> {
    ds: &'a Dataset,
    shuffle: Shuffle,
    /// Full: the permutation, kept across epochs. Blocks: the rows of the windows loaded so far,
    /// from `pos` on not yet used.
    rows: Vec<usize>,
    pos: usize,
    /// Blocks: this epoch's block order, the next block to load, and the blocks of the current
    /// and the previous window (released two windows later).
    blocks: Vec<std::ops::Range<usize>>,
    next_block: usize,
    live: [Vec<std::ops::Range<usize>>; 2],
}

impl<'a> EpochOrder<'a> {
    pub(crate) fn new(ds: &'a Dataset, shuffle: Shuffle) -> Self {
        let rows = if shuffle.is_full() { ds.splits.train.clone().collect() } else { Vec::new() };
        EpochOrder { ds, shuffle, rows, pos: 0, blocks: vec![], next_block: 0, live: [vec![], vec![]] }
    }

    pub(crate) fn start_epoch(&mut self, rng: &mut ChaCha8Rng) {
        self.pos = 0;
        match self.shuffle {
            Shuffle::Full => shuffle(&mut self.rows, rng),
            Shuffle::Blocks { block_rows, .. } => {
                let t = self.ds.splits.train.clone();
                let mut starts: Vec<usize> = t.clone().step_by(block_rows).collect();
                shuffle(&mut starts, rng);
                self.blocks = starts.into_iter().map(|s| s..(s + block_rows).min(t.end)).collect();
                self.next_block = 0;
                self.rows.clear();
            }
        }
    }

    /// The next batch of at most `bs` rows; `None` at the end of the epoch.
    pub(crate) fn next_batch(&mut self, bs: usize, rng: &mut ChaCha8Rng) -> Option<&[usize]> {
        if let Shuffle::Blocks { window, .. } = self.shuffle {
            while self.rows.len() - self.pos < bs && self.next_block < self.blocks.len() {
                self.load_window(window, rng);
            }
            if self.pos == self.rows.len() {
                for w in std::mem::take(&mut self.live) {
                    w.into_iter().for_each(|b| self.ds.release(b));
                }
            }
        }
        let start = self.pos;
        self.pos = (start + bs).min(self.rows.len());
        (self.pos > start).then(|| &self.rows[start..self.pos])
    }

    /// Appends the next `window` blocks' rows, permuted, after the unused rows; gives back the
    /// pages of the window before the previous one.
    fn load_window(&mut self, window: usize, rng: &mut ChaCha8Rng) {
        self.rows.drain(..self.pos);
        self.pos = 0;
        let carry = self.rows.len();
        let end = (self.next_block + window).min(self.blocks.len());
        let new: Vec<_> = self.blocks[self.next_block..end].to_vec();
        self.next_block = end;
        for b in &new {
            self.rows.extend(b.clone());
        }
        shuffle(&mut self.rows[carry..], rng);
        let old = std::mem::take(&mut self.live);
        let [older, prev] = old;
        older.into_iter().for_each(|b| self.ds.release(b));
        self.live = [prev, new];
    }
}

pub(crate) fn shuffle(v: &mut [usize], rng: &mut ChaCha8Rng) {
    use rand::Rng;
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}
