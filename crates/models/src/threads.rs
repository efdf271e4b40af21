//! How many threads one training run's CPU work uses (issue 34).
//!
//! Two rules, both about who computes, never what: every parallel loop below splits its work into
//! the same chunks whichever way it runs, and sums partial results in a fixed order, so the values
//! are the same bits threaded or not (tested in `fused`).
//!
//! - **One cell, one thread** under `cqr sweep --jobs N` with N > 1 ([`set_cell_threads`]`(1)`):
//!   N cells already keep N cores busy, and a loop handed to the sweep's pool waits on the other
//!   cells' work. Then the matrix products, the element-wise kernels and the tables' lookups and
//!   updates all run on the cell's own thread.
//! - **Small loops stay on the calling thread** otherwise: waking the rayon pool and joining it
//!   costs microseconds, as long as an element-wise pass over ~[`SPREAD_MIN`] values, and at
//!   DLRM's batch 128 most of a step's loops are that small. A product is threaded by burn-flex's
//!   rule (`m·n·k ≥ 192³`), kept so the fused linear layer's forward matches burn's bit for bit.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

static CELL_THREADS: AtomicUsize = AtomicUsize::new(0);

/// The work (values touched, or multiply-adds) below which a loop is not handed to the pool.
pub const SPREAD_MIN: usize = 1 << 16;

/// Held by tests that change [`set_cell_threads`] (a process-wide setting) while they run.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Caps the threads of a training run's CPU loops for the whole process: `1` runs every loop on
/// the calling thread, `0` (the default) threads a loop by its size over the current rayon pool.
/// `cqr sweep --jobs N` with N > 1 sets 1 (module docs).
pub fn set_cell_threads(n: usize) {
    CELL_THREADS.store(n, Ordering::Relaxed);
}

/// Whether a run's loops may use the pool at all.
pub fn threaded() -> bool {
    CELL_THREADS.load(Ordering::Relaxed) != 1
}

/// Whether a loop of `work` goes to the pool.
pub fn spread(work: usize) -> bool {
    threaded() && work >= SPREAD_MIN
}

/// The GEMM threading of an `m × k` by `k × n` product.
pub(crate) fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if threaded() && m.saturating_mul(n).saturating_mul(k) >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// `f(i, chunk)` for each `size`-long chunk of `v`, on the pool when `on_pool` (`spread(work)`
/// or `threaded()`).
pub(crate) fn for_chunks<T: Send>(v: &mut [T], size: usize, on_pool: bool, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if on_pool {
        v.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        v.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `f(i, chunk)` for each `size`-long chunk of `v`, collected in order, on the pool when
/// `on_pool`.
pub(crate) fn map_chunks<T: Send, R: Send>(
    v: &mut [T],
    size: usize,
    on_pool: bool,
    f: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    if on_pool {
        v.par_chunks_mut(size).enumerate().map(|(i, c)| f(i, c)).collect()
    } else {
        v.chunks_mut(size).enumerate().map(|(i, c)| f(i, c)).collect()
    }
}

/// `f(i, item)` for each item of `v` (one per table), on the pool unless the run is
/// single-threaded: a table's work varies too much by method (a gather, or DHE's MLP) for a size
/// rule.
pub(crate) fn for_each_item<T: Send, R: Send>(v: &mut [T], f: impl Fn(usize, &mut T) -> R + Sync + Send) -> Vec<R> {
    if threaded() {
        v.par_iter_mut().enumerate().map(|(i, x)| f(i, x)).collect()
    } else {
        v.iter_mut().enumerate().map(|(i, x)| f(i, x)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule: nothing goes to the pool in a single-threaded run, small loops never do, large
    /// ones do otherwise; and both ways visit the same chunks with the same indices, in order.
    #[test]
    fn the_rule_and_the_chunks() {
        let _lock = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!spread(SPREAD_MIN - 1));
        let visit = |on_pool: bool| {
            let mut v: Vec<usize> = (0..1000).collect();
            for_chunks(&mut v, 64, on_pool, |i, c| c.iter_mut().for_each(|x| *x += i * 10_000));
            let sums = map_chunks(&mut v, 64, on_pool, |i, c| (i, c.len(), c.iter().sum::<usize>()));
            let items = for_each_item(&mut v[..5], |i, x| *x + i);
            (v, sums, items)
        };
        assert_eq!(visit(true), visit(false));
        set_cell_threads(1);
        let single = (threaded(), spread(usize::MAX), gemm_parallelism(1024, 1024, 1024));
        set_cell_threads(0);
        assert!(matches!(single, (false, false, gemm::Parallelism::None)));
        assert!(spread(SPREAD_MIN));
        assert!(matches!(gemm_parallelism(192, 192, 192), gemm::Parallelism::Rayon(0)));
    }
}
