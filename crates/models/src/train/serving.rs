//! Serving cost: the trained model as served (its tables as they end training: compressed,
//! pruned or quantized where the method does so; the MLPs without the autodiff graph), forward
//! only, timed in the training process right after training (`training.serving: true`).
//!
//! - throughput: samples/s at batch 2,048 over the test rows (at least 0.3 s and 5 batches);
//! - latency: wall time of one request (gather the rows' ids, the tables' lookups, the MLP) at
//!   batch 1 (300 requests) and 64 (100 requests), median and 99th percentile, each request on
//!   the next test rows. One thread per product as in a `--jobs N` sweep, or as the process runs.
//!
//! The numbers are the CPU's (the record names it) and the load's: compare cells of one sweep.

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::order::Batch;
use super::Trainer;
use crate::net::Net;

/// Forward-only cost of the served model (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServingCost {
    pub samples_per_s_b2048: f64,
    /// Latency of one batch-1 request, milliseconds: median and 99th percentile.
    pub latency_ms_b1: [f64; 2],
    /// Latency of one batch-64 request, milliseconds: median and 99th percentile.
    pub latency_ms_b64: [f64; 2],
}

/// The q-quantile (0..=1) of `v` by the nearest rank on the sorted values.
pub(crate) fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

impl Trainer<'_> {
    /// Logits of `rows` through the served model (one request).
    fn serve(&mut self, net: &Net, rows: &[usize], b: &mut Batch) -> Vec<f32> {
        let (n, t_count) = (rows.len(), self.ds.n_cat());
        b.fill(self.ds, rows);
        self.tables.forward(&b.cats, &mut b.emb);
        let dense = Tensor::<2>::from_data(TensorData::new(b.dense.clone(), [n, self.dense_w]), &self.base);
        let emb =
            Tensor::<3>::from_data(TensorData::new(std::mem::take(&mut b.emb), [t_count, n, self.dim]), &self.base);
        net.forward(dense, emb).into_data().try_into_vec::<f32>().expect("f32 logits")
    }

    /// Rows `[i·n, (i+1)·n)` of the test split, wrapping around.
    fn test_rows(&self, i: usize, n: usize) -> Vec<usize> {
        let t = self.ds.splits.test.clone();
        (0..n).map(|k| t.start + (i * n + k) % t.len().max(1)).collect()
    }

    fn latencies(&mut self, net: &Net, batch: usize, requests: usize) -> [f64; 2] {
        let mut b = Batch::default();
        let mut ms: Vec<f64> = (0..requests)
            .map(|i| {
                let rows = self.test_rows(i, batch);
                let t0 = Instant::now();
                std::hint::black_box(self.serve(net, &rows, &mut b));
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        [quantile(&mut ms, 0.5), quantile(&mut ms, 0.99)]
    }

    /// Measures [`ServingCost`] (a warm-up request first).
    pub(super) fn serving_cost(&mut self) -> Option<ServingCost> {
        if self.ds.splits.test.is_empty() {
            return None;
        }
        // The MLPs as served: without the autodiff graph, built once.
        let net = self.net.valid();
        let mut b = Batch::default();
        self.serve(&net, &self.test_rows(0, 64), &mut b);
        let t0 = Instant::now();
        let mut samples = 0usize;
        let mut i = 0;
        while i < 5 || t0.elapsed().as_secs_f64() < 0.3 {
            let rows = self.test_rows(i, 2048);
            std::hint::black_box(self.serve(&net, &rows, &mut b));
            samples += rows.len();
            i += 1;
        }
        let samples_per_s_b2048 = samples as f64 / t0.elapsed().as_secs_f64();
        Some(ServingCost {
            samples_per_s_b2048,
            latency_ms_b1: self.latencies(&net, 1, 300),
            latency_ms_b64: self.latencies(&net, 64, 100),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut [3.0], 0.99), 3.0);
    }
}
