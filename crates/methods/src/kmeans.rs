//! k-means (Lloyd's algorithm) for PQ, RQ and CQR: seeded, k-means++ or random init, early stop.
//!
//! The assignment step is an exact nearest-centroid search ([`crate::nearest`]: a kd-tree over
//! blocks of 16 centroids evaluated with SIMD, ||c||^2 - 2 x.c); points are processed in parallel
//! chunks (rayon). Results do not depend on the thread count: assignments
//! are per point and centroid sums are accumulated sequentially in point order, in f64.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::nearest::NearestIndex;
use crate::MethodError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KMeansInit {
    #[default]
    KMeansPlusPlus,
    Random,
    /// k-means++ while `n * k < 2^28` (its k passes over the data stay cheap), else random
    /// points as faiss does: k-means++ at 1M points x 4,096 centroids costs more than Lloyd's.
    Auto,
}

impl KMeansInit {
    /// The concrete rule for `n` points and `k` centroids.
    pub fn resolve(self, n: usize, k: usize) -> KMeansInit {
        match self {
            KMeansInit::Auto if (n as u128) * (k as u128) < 1u128 << 28 => KMeansInit::KMeansPlusPlus,
            KMeansInit::Auto => KMeansInit::Random,
            other => other,
        }
    }
}

/// Unchecked parameters; [`KMeansConfig::fit`] validates them before running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KMeansConfig {
    pub k: usize,
    pub max_iter: usize,
    /// Stop when the inertia improves by less than this fraction.
    pub tol: f64,
    pub init: KMeansInit,
    pub seed: u64,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        KMeansConfig { k: 8, max_iter: 25, tol: 1e-4, init: KMeansInit::KMeansPlusPlus, seed: 0 }
    }
}

#[derive(Debug, Clone)]
pub struct KMeansFit {
    /// Row-major `[k, dim]`.
    pub centroids: Vec<f32>,
    pub assignments: Vec<u32>,
    /// Sum of squared distances to the assigned centroid.
    pub inertia: f64,
    pub iterations: usize,
}

const CHUNK: usize = 1024;

impl KMeansConfig {
    pub fn fit(&self, data: &[f32], dim: usize) -> Result<KMeansFit, MethodError> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(MethodError::Invalid(format!(
                "k-means: data length {} is not a multiple of dim {dim}",
                data.len()
            )));
        }
        let n = data.len() / dim;
        if self.k == 0 || n == 0 {
            return Err(MethodError::Invalid(format!(
                "k-means needs k >= 1 and at least one point (k = {}, n = {n})",
                self.k
            )));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(MethodError::Invalid("k-means: input holds a non-finite value".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut centroids = match self.init.resolve(n, self.k) {
            KMeansInit::KMeansPlusPlus | KMeansInit::Auto => plus_plus(data, dim, self.k, &mut rng),
            KMeansInit::Random => (0..self.k)
                .flat_map(|_| {
                    let i = rng.random_range(0..n);
                    data[i * dim..(i + 1) * dim].to_vec()
                })
                .collect(),
        };
        let mut assignments = vec![0u32; n];
        let mut inertia = f64::INFINITY;
        let mut iterations = 0;
        for it in 0..self.max_iter.max(1) {
            iterations = it + 1;
            let new_inertia = assign_into(data, dim, &centroids, &mut assignments);
            // Update: f64 sums in point order; empty clusters keep their centroid.
            let mut sums = vec![0.0f64; self.k * dim];
            let mut counts = vec![0u64; self.k];
            for (i, &a) in assignments.iter().enumerate() {
                counts[a as usize] += 1;
                let s = &mut sums[a as usize * dim..(a as usize + 1) * dim];
                s.iter_mut().zip(&data[i * dim..(i + 1) * dim]).for_each(|(s, &x)| *s += x as f64);
            }
            for j in 0..self.k {
                if counts[j] > 0 {
                    for t in 0..dim {
                        centroids[j * dim + t] = (sums[j * dim + t] / counts[j] as f64) as f32;
                    }
                }
            }
            let improved = inertia - new_inertia;
            inertia = new_inertia;
            if improved.is_finite() && improved <= self.tol * new_inertia.max(f64::MIN_POSITIVE) {
                break;
            }
        }
        let inertia = assign_into(data, dim, &centroids, &mut assignments);
        Ok(KMeansFit { centroids, assignments, inertia, iterations })
    }
}

/// Nearest centroid of every point; returns the inertia.
pub fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, f64) {
    let mut a = vec![0u32; data.len() / dim];
    let inertia = assign_into(data, dim, centroids, &mut a);
    (a, inertia)
}

fn assign_into(data: &[f32], dim: usize, centroids: &[f32], out: &mut [u32]) -> f64 {
    assign_with(&NearestIndex::new(centroids, dim), data, dim, centroids, out)
}

/// [`assign`] with an index built once by the caller (for many batches against the same
/// centroids); `index` must have been built from `centroids`.
pub fn assign_indexed(index: &NearestIndex, data: &[f32], dim: usize, centroids: &[f32]) -> Vec<u32> {
    let mut a = vec![0u32; data.len() / dim];
    assign_with(index, data, dim, centroids, &mut a);
    a
}

fn assign_with(index: &NearestIndex, data: &[f32], dim: usize, centroids: &[f32], out: &mut [u32]) -> f64 {
    let partial: Vec<f64> = data
        .par_chunks(CHUNK * dim)
        .zip(out.par_chunks_mut(CHUNK))
        .map(|(pts, out)| {
            let mut inertia = 0.0f64;
            for (x, o) in pts.chunks_exact(dim).zip(out.iter_mut()) {
                let best = index.nearest(x);
                *o = best as u32;
                // Exact distance for the chosen centroid (the expanded form can cancel badly).
                let c = &centroids[best * dim..(best + 1) * dim];
                inertia += x.iter().zip(c).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>();
            }
            inertia
        })
        .collect();
    partial.iter().sum()
}

/// k-means++ seeding (Arthur & Vassilvitskii 2007): each new centroid is drawn with probability
/// proportional to the squared distance to the nearest centroid chosen so far.
fn plus_plus(data: &[f32], dim: usize, k: usize, rng: &mut impl Rng) -> Vec<f32> {
    let n = data.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut d2 = vec![f32::INFINITY; n];
    for c in 1..=k {
        let last = &centroids[(c - 1) * dim..c * dim].to_vec();
        d2.par_chunks_mut(CHUNK).zip(data.par_chunks(CHUNK * dim)).for_each(|(d, pts)| {
            for (d, x) in d.iter_mut().zip(pts.chunks_exact(dim)) {
                let v: f32 = x.iter().zip(last).map(|(a, b)| (a - b) * (a - b)).sum();
                if v < *d {
                    *d = v;
                }
            }
        });
        if c == k {
            break;
        }
        let total: f64 = d2.iter().map(|&v| v as f64).sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            let mut idx = n - 1;
            for (i, &v) in d2.iter().enumerate() {
                u -= v as f64;
                if u < 0.0 {
                    idx = i;
                    break;
                }
            }
            idx
        } else {
            // Fewer distinct points than k: every point is already a centroid.
            rng.random_range(0..n)
        };
        centroids.extend_from_slice(&data[pick * dim..(pick + 1) * dim]);
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::prelude::*;

    fn blobs(n: usize, k: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centers: Vec<f32> = (0..k * dim).map(|_| rng.random_range(-10.0..10.0)).collect();
        (0..n)
            .flat_map(|i| {
                let c = i % k;
                (0..dim).map(|t| centers[c * dim + t] + rng.random_range(-0.5..0.5)).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn recovers_separated_blobs_and_is_deterministic() {
        let data = blobs(2000, 10, 3, 1);
        let cfg = KMeansConfig { k: 10, max_iter: 50, seed: 4, ..Default::default() };
        let a = cfg.fit(&data, 3).unwrap();
        let b = cfg.fit(&data, 3).unwrap();
        assert_eq!(a.assignments, b.assignments);
        assert_eq!(a.centroids, b.centroids);
        // Within-blob spread is U(-0.5, 0.5) per coordinate: inertia per point ~ 3/12.
        assert!(a.inertia / 2000.0 < 0.3, "inertia per point {}", a.inertia / 2000.0);
    }

    #[test]
    fn matches_linfa_on_the_same_start() {
        // Reference: linfa-clustering from the same initial centroids gives the same inertia.
        let data = blobs(1500, 6, 2, 2);
        let ours = KMeansConfig { k: 6, max_iter: 100, tol: 0.0, seed: 9, init: KMeansInit::KMeansPlusPlus }
            .fit(&data, 2)
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let init = plus_plus(&data, 2, 6, &mut rng);
        let x = ndarray::Array2::from_shape_vec((1500, 2), data.iter().map(|&v| v as f64).collect()).unwrap();
        let c0 = ndarray::Array2::from_shape_vec((6, 2), init.iter().map(|&v| v as f64).collect()).unwrap();
        let ds = linfa::DatasetBase::from(x.clone());
        let model = linfa_clustering::KMeans::params(6)
            .init_method(linfa_clustering::KMeansInit::Precomputed(c0))
            .n_runs(1)
            .max_n_iterations(100)
            .tolerance(1e-12)
            .fit(&ds)
            .unwrap();
        let labels = model.predict(&x);
        let mut inertia = 0.0;
        for (i, &l) in labels.iter().enumerate() {
            let c = model.centroids().row(l);
            inertia += (0..2).map(|t| (x[[i, t]] - c[t]).powi(2)).sum::<f64>();
        }
        assert!((inertia - ours.inertia).abs() <= 1e-3 * inertia, "linfa {inertia} vs ours {}", ours.inertia);
    }

    #[test]
    fn fewer_distinct_points_than_k() {
        let data = vec![1.0f32, 1.0, 1.0, 1.0, 5.0, 5.0];
        let fit = KMeansConfig { k: 4, ..Default::default() }.fit(&data, 2).unwrap();
        assert_eq!(fit.inertia, 0.0);
        assert!(fit.centroids.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(KMeansConfig { k: 0, ..Default::default() }.fit(&[1.0, 2.0], 2).is_err());
        assert!(KMeansConfig::default().fit(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(KMeansConfig::default().fit(&[f32::NAN, 2.0], 2).is_err());
    }
}
