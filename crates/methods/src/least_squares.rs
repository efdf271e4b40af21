//! The CQR iteration for least squares, min_T ||X T - Y||_F, and its convergence bound.
//!
//! Iteration (the seed's analysis of CQR with a dense sketch): H = [T | N] with N a fresh
//! Gaussian `d1 x k` matrix, M = argmin_M ||X H M - Y||_F, T := H M. Starting from T_0 = 0,
//!   ||X T_i - Y||^2 <= (1 - rho)^(i k) ||X T*||^2 + ||X T* - Y||^2,  rho = sigma_min(X)^2 / ||X||_F^2.
//! Small dense linear algebra in f64 lives here (Householder QR least squares, Jacobi
//! eigenvalues); the problems are small.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::MethodError;

/// Row-major dense matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Mat { rows, cols, data: vec![0.0; rows * cols] }
    }
    pub fn gaussian(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Self {
        Mat { rows, cols, data: (0..rows * cols).map(|_| StandardNormal.sample(rng)).collect() }
    }
    #[inline]
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }
    pub fn matmul(&self, o: &Mat) -> Mat {
        assert_eq!(self.cols, o.rows);
        let mut out = Mat::zeros(self.rows, o.cols);
        for i in 0..self.rows {
            for k in 0..self.cols {
                let a = self.at(i, k);
                if a == 0.0 {
                    continue;
                }
                for j in 0..o.cols {
                    out.data[i * o.cols + j] += a * o.at(k, j);
                }
            }
        }
        out
    }
    pub fn transpose(&self) -> Mat {
        let mut t = Mat::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                t.data[j * self.rows + i] = self.at(i, j);
            }
        }
        t
    }
    pub fn hcat(&self, o: &Mat) -> Mat {
        assert_eq!(self.rows, o.rows);
        let mut out = Mat::zeros(self.rows, self.cols + o.cols);
        for i in 0..self.rows {
            out.data[i * out.cols..i * out.cols + self.cols]
                .copy_from_slice(&self.data[i * self.cols..(i + 1) * self.cols]);
            out.data[i * out.cols + self.cols..(i + 1) * out.cols]
                .copy_from_slice(&o.data[i * o.cols..(i + 1) * o.cols]);
        }
        out
    }
    pub fn sub(&self, o: &Mat) -> Mat {
        Mat { rows: self.rows, cols: self.cols, data: self.data.iter().zip(&o.data).map(|(a, b)| a - b).collect() }
    }
    pub fn frob2(&self) -> f64 {
        self.data.iter().map(|v| v * v).sum()
    }
}

/// Least squares argmin_M ||A M - B||_F by Householder QR with column pivoting; columns whose
/// pivot falls below `1e-12 * largest` are treated as dependent and get zero rows in M (so a
/// rank-deficient A, such as [0 | N] at the first iteration, is handled).
pub fn lstsq(a: &Mat, b: &Mat) -> Mat {
    let (m, n) = (a.rows, a.cols);
    let mut r = a.clone();
    let mut qtb = b.clone();
    let mut perm: Vec<usize> = (0..n).collect();
    let mut norms: Vec<f64> = (0..n).map(|j| (0..m).map(|i| r.at(i, j).powi(2)).sum()).collect();
    let max_norm = norms.iter().cloned().fold(0.0, f64::max).sqrt();
    let mut rank = 0;
    for k in 0..n.min(m) {
        // Pivot: the remaining column of largest norm.
        let p = (k..n).max_by(|&x, &y| norms[x].total_cmp(&norms[y])).unwrap();
        if norms[p].sqrt() <= 1e-12 * max_norm.max(f64::MIN_POSITIVE) {
            break;
        }
        if p != k {
            for i in 0..m {
                r.data.swap(i * n + k, i * n + p);
            }
            norms.swap(k, p);
            perm.swap(k, p);
        }
        let alpha = -(k..m).map(|i| r.at(i, k).powi(2)).sum::<f64>().sqrt().copysign(r.at(k, k));
        let mut v: Vec<f64> = (k..m).map(|i| r.at(i, k)).collect();
        v[0] -= alpha;
        let vn: f64 = v.iter().map(|x| x * x).sum();
        if vn > 0.0 {
            for j in k..n {
                let dot: f64 = (k..m).map(|i| v[i - k] * r.at(i, j)).sum::<f64>() * 2.0 / vn;
                for i in k..m {
                    r.data[i * n + j] -= dot * v[i - k];
                }
            }
            for j in 0..b.cols {
                let dot: f64 = (k..m).map(|i| v[i - k] * qtb.at(i, j)).sum::<f64>() * 2.0 / vn;
                for i in k..m {
                    qtb.data[i * b.cols + j] -= dot * v[i - k];
                }
            }
        }
        for j in k + 1..n {
            norms[j] = (k + 1..m).map(|i| r.at(i, j).powi(2)).sum();
        }
        rank = k + 1;
    }
    // Back substitution on the leading rank x rank block.
    let mut x = Mat::zeros(n, b.cols);
    for j in 0..b.cols {
        for i in (0..rank).rev() {
            let s: f64 = (i + 1..rank).map(|t| r.at(i, t) * x.at(perm[t], j)).sum();
            x.data[perm[i] * b.cols + j] = (qtb.at(i, j) - s) / r.at(i, i);
        }
    }
    x
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations.
pub fn symmetric_eigenvalues(s: &Mat) -> Vec<f64> {
    let n = s.rows;
    let mut a = s.clone();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a.at(i, j).powi(2))
            .sum();
        if off < 1e-22 * a.frob2().max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a.at(p, q);
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a.at(q, q) - a.at(p, p)) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * c;
                for k in 0..n {
                    let akp = a.at(k, p);
                    let akq = a.at(k, q);
                    a.data[k * n + p] = c * akp - sn * akq;
                    a.data[k * n + q] = sn * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a.at(p, k);
                    let aqk = a.at(q, k);
                    a.data[p * n + k] = c * apk - sn * aqk;
                    a.data[q * n + k] = sn * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a.at(i, i)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeastSquaresConfig {
    /// Rows of X (samples).
    pub n: usize,
    /// Columns of X = rows of the table T (the vocabulary).
    pub d1: usize,
    /// Columns of Y = embedding dim.
    pub d2: usize,
    /// Fresh random columns per iteration (the sketch width).
    pub k: usize,
    pub iterations: usize,
    /// Standard deviation of the noise in Y = X T_true + noise.
    pub noise: f64,
    pub seed: u64,
}

impl Default for LeastSquaresConfig {
    fn default() -> Self {
        LeastSquaresConfig { n: 200, d1: 20, d2: 3, k: 2, iterations: 150, noise: 0.5, seed: 0 }
    }
}

/// Per-iteration losses of the CQR iteration, its bound and the optimum (index 0 is T_0 = 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeastSquaresTrace {
    pub loss: Vec<f64>,
    pub bound: Vec<f64>,
    /// ||X T* - Y||^2.
    pub optimum: f64,
    pub rho: f64,
}

impl LeastSquaresTrace {
    /// (loss - optimum) / optimum at the last iteration.
    pub fn final_relative_excess(&self) -> f64 {
        (self.loss.last().unwrap() - self.optimum) / self.optimum
    }
}

impl LeastSquaresConfig {
    pub fn run(&self) -> Result<LeastSquaresTrace, MethodError> {
        if self.n < self.d1 || self.d1 == 0 || self.d2 == 0 || self.k == 0 {
            return Err(MethodError::Invalid(format!(
                "least squares needs n >= d1 >= 1, d2 >= 1, k >= 1 (got n={}, d1={}, d2={}, k={})",
                self.n, self.d1, self.d2, self.k
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let x = Mat::gaussian(self.n, self.d1, &mut rng);
        let t_true = Mat::gaussian(self.d1, self.d2, &mut rng);
        let mut noise = Mat::gaussian(self.n, self.d2, &mut rng);
        noise.data.iter_mut().for_each(|v| *v *= self.noise);
        let y = x.matmul(&t_true).data.iter().zip(&noise.data).map(|(a, b)| a + b).collect();
        let y = Mat { rows: self.n, cols: self.d2, data: y };
        let t_star = lstsq(&x, &y);
        let xt_star = x.matmul(&t_star);
        let optimum = xt_star.sub(&y).frob2();
        let xtx = x.transpose().matmul(&x);
        let sigma_min2 = symmetric_eigenvalues(&xtx).into_iter().fold(f64::INFINITY, f64::min).max(0.0);
        let rho = sigma_min2 / x.frob2();
        let head = xt_star.frob2();
        let mut t = Mat::zeros(self.d1, self.d2);
        let mut loss = vec![x.matmul(&t).sub(&y).frob2()];
        let mut bound = vec![head + optimum];
        for i in 1..=self.iterations {
            let h = t.hcat(&Mat::gaussian(self.d1, self.k, &mut rng));
            let xh = x.matmul(&h);
            let m = lstsq(&xh, &y);
            t = h.matmul(&m);
            loss.push(x.matmul(&t).sub(&y).frob2());
            bound.push((1.0 - rho).powf((i * self.k) as f64) * head + optimum);
        }
        Ok(LeastSquaresTrace { loss, bound, optimum, rho })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lstsq_solves_a_known_system_and_rank_deficiency() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = Mat::gaussian(30, 4, &mut rng);
        let x = Mat::gaussian(4, 2, &mut rng);
        let b = a.matmul(&x);
        let got = lstsq(&a, &b);
        assert!(got.sub(&x).frob2() < 1e-20);
        // A zero column gets a zero coefficient, and the fit is still exact.
        let a0 = Mat::zeros(30, 1).hcat(&a);
        let got = lstsq(&a0, &b);
        assert!(a0.matmul(&got).sub(&b).frob2() < 1e-18);
        assert_eq!(got.data[0], 0.0);
    }

    #[test]
    fn jacobi_eigenvalues() {
        let s = Mat { rows: 2, cols: 2, data: vec![2.0, 1.0, 1.0, 2.0] };
        let mut e = symmetric_eigenvalues(&s);
        e.sort_by(f64::total_cmp);
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12);
    }

    #[test]
    fn iteration_stays_under_the_bound_and_converges() {
        let trace = LeastSquaresConfig::default().run().unwrap();
        for (i, (l, b)) in trace.loss.iter().zip(&trace.bound).enumerate() {
            assert!(*l <= b * (1.0 + 1e-9), "iteration {i}: loss {l} above bound {b}");
            assert!(*l >= trace.optimum * (1.0 - 1e-9), "iteration {i}: loss {l} below the optimum");
        }
        let excess = trace.final_relative_excess();
        assert!(excess < 1e-3, "relative excess {excess}");
        assert!(trace.rho > 0.0 && trace.rho < 1.0);
    }
}
