//! Exact nearest-centroid search for k-means, CQR, PQ and RQ.
//!
//! The value minimised for centroid j is `v_j = ||c_j||^2 + sum_t (-2 x_t) * c_jt`
//! (= `||x - c_j||^2 - ||x||^2`), computed in that order with separate multiplications and
//! additions (Rust never fuses them into FMA), so every code path below gives the same value for
//! the same pair and the search returns the first (lowest-index) centroid of minimal value: the
//! result of a scalar scan, on any CPU.
//!
//! Two layers:
//! - [`Blocked`]: centroids in blocks of 16 lanes (`[block][dim][lane]`), evaluated with
//!   AVX-512 / AVX2 when the CPU has them (runtime detection), a portable loop otherwise.
//! - [`NearestIndex`]: for many centroids, groups of up to 32 (the leaves of a kd-split, so each
//!   group is compact) with bounding boxes. The lower bounds of all groups are computed at once
//!   (vectorised over groups), the group of smallest bound is evaluated, then every group whose
//!   bound does not exceed the best value found by more than a rounding slack. The search stays
//!   exact while evaluating a few groups instead of all (sub-vectors are 1-8 wide, where
//!   bounding boxes prune well). Branch-light: a kd-tree walk was measured 4x slower per query.

/// Lanes of the blocked layout: one AVX-512 register of f32.
pub const LANES: usize = 16;

/// Centroids in blocks of [`LANES`]: `coords[(b * dim + t) * LANES + l]` is coordinate t of the
/// centroid in lane l of block b, `norms[b * LANES + l]` its squared norm, `ids` its index in the
/// caller's order. Padding lanes have norm +inf and are never chosen.
pub struct Blocked {
    dim: usize,
    coords: Vec<f32>,
    norms: Vec<f32>,
    ids: Vec<u32>,
}

impl Blocked {
    /// Blocks of the centroids (row-major `[k, dim]`) taken in the order `order`.
    fn from_order(centroids: &[f32], dim: usize, order: &[u32]) -> Self {
        let nb = order.len().div_ceil(LANES).max(1);
        let mut coords = vec![0.0f32; nb * dim * LANES];
        let mut norms = vec![f32::INFINITY; nb * LANES];
        let mut ids = vec![u32::MAX; nb * LANES];
        for (pos, &j) in order.iter().enumerate() {
            let (b, l) = (pos / LANES, pos % LANES);
            let c = &centroids[j as usize * dim..(j as usize + 1) * dim];
            for (t, &v) in c.iter().enumerate() {
                coords[(b * dim + t) * LANES + l] = v;
            }
            norms[pos] = sq_norm(c);
            ids[pos] = j;
        }
        Blocked { dim, coords, norms, ids }
    }

    #[cfg(test)]
    pub fn new(centroids: &[f32], dim: usize) -> Self {
        let order: Vec<u32> = (0..(centroids.len() / dim) as u32).collect();
        Self::from_order(centroids, dim, &order)
    }

    fn n_blocks(&self) -> usize {
        self.norms.len() / LANES
    }
}

fn sq_norm(c: &[f32]) -> f32 {
    c.iter().fold(0.0f32, |n, &a| n + a * a)
}

/// Best value and centroid per lane; merged into one answer at the end.
#[derive(Clone, Copy)]
struct Lanes {
    v: [f32; LANES],
    j: [u32; LANES],
}

/// Per-lane best values and centroids while blocks are evaluated.
trait LaneAcc {
    /// Evaluates block `b` for the point with multipliers `m = -2x` and keeps, per lane, the
    /// smaller value (ties: the lower centroid index).
    fn eval<const D: usize>(&mut self, c: &Blocked, b: usize, m: &[f32; D]);
    /// The smallest value held.
    fn min_value(&self) -> f32;
    /// The lowest index among the lanes holding the minimum; 0 when nothing was finite.
    fn best(&self) -> usize;

    /// A group of smallest lower bound for x.
    #[inline(always)]
    fn first_group<const D: usize>(idx: &NearestIndex, x: &[f32; D], xn: f32) -> usize {
        let (mut g0, mut b0) = (0usize, f32::INFINITY);
        for c in 0..idx.n_pad / LANES {
            for (l, &v) in chunk_bounds::<D>(idx, x, xn, c).iter().enumerate() {
                if v < b0 {
                    (g0, b0) = (c * LANES + l, v);
                }
            }
        }
        g0
    }

    /// Bit l set when group `c * 16 + l` has a lower bound `<= thr`.
    #[inline(always)]
    fn group_mask<const D: usize>(idx: &NearestIndex, x: &[f32; D], xn: f32, c: usize, thr: f32) -> u32 {
        chunk_bounds::<D>(idx, x, xn, c).iter().enumerate().fold(0u32, |m, (l, &v)| m | (((v <= thr) as u32) << l))
    }
}

impl Lanes {
    const EMPTY: Lanes = Lanes { v: [f32::INFINITY; LANES], j: [u32::MAX; LANES] };
}

impl LaneAcc for Lanes {
    #[inline(always)]
    fn eval<const D: usize>(&mut self, c: &Blocked, b: usize, m: &[f32; D]) {
        let cb = &c.coords[b * D * LANES..(b + 1) * D * LANES];
        let mut acc = [0.0f32; LANES];
        acc.copy_from_slice(&c.norms[b * LANES..(b + 1) * LANES]);
        for t in 0..D {
            let row = &cb[t * LANES..(t + 1) * LANES];
            for l in 0..LANES {
                acc[l] += m[t] * row[l];
            }
        }
        let ids = &c.ids[b * LANES..(b + 1) * LANES];
        for l in 0..LANES {
            let better = acc[l] < self.v[l] || (acc[l] == self.v[l] && ids[l] < self.j[l]);
            self.v[l] = if better { acc[l] } else { self.v[l] };
            self.j[l] = if better { ids[l] } else { self.j[l] };
        }
    }

    #[inline(always)]
    fn min_value(&self) -> f32 {
        self.v.iter().fold(f32::INFINITY, |a, &b| a.min(b))
    }

    #[inline(always)]
    fn best(&self) -> usize {
        best_of(&self.v, &self.j)
    }
}

/// Lower bounds of groups `c * 16 .. c * 16 + 16` for x (+inf for padding groups).
#[inline(always)]
fn chunk_bounds<const D: usize>(idx: &NearestIndex, x: &[f32; D], xn: f32, c: usize) -> [f32; LANES] {
    let n = idx.n_pad;
    let mut out = [-xn; LANES];
    for t in 0..D {
        let lo = &idx.lo[t * n + c * LANES..t * n + (c + 1) * LANES];
        let hi = &idx.hi[t * n + c * LANES..t * n + (c + 1) * LANES];
        let xt = x[t];
        for l in 0..LANES {
            let e = (lo[l] - xt).max(xt - hi[l]).max(0.0);
            out[l] += e * e;
        }
    }
    out
}

/// The lowest index among the lanes holding the minimum; 0 when nothing was finite (as a scalar
/// scan that never improves on +inf).
#[inline(always)]
fn best_of(v: &[f32; LANES], j: &[u32; LANES]) -> usize {
    let (mut best, mut bv) = (u32::MAX, f32::INFINITY);
    for l in 0..LANES {
        if v[l] < bv || (v[l] == bv && j[l] < best) {
            bv = v[l];
            best = j[l];
        }
    }
    if best == u32::MAX {
        0
    } else {
        best as usize
    }
}

/// The AVX-512 accumulator: one register of values, one of centroid indices; the same
/// arithmetic as [`Lanes`] (multiply, then add; never fused).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{best_of, Blocked, LaneAcc, NearestIndex, LANES};
    use std::arch::x86_64::*;

    pub struct Lanes512 {
        v: __m512,
        j: __m512i,
    }

    impl Lanes512 {
        #[inline(always)]
        pub fn empty() -> Self {
            // SAFETY: only reached from `nearest_avx512`, after run-time detection of AVX-512F.
            unsafe { Lanes512 { v: _mm512_set1_ps(f32::INFINITY), j: _mm512_set1_epi32(-1) } }
        }
    }

    /// Lower bounds of 16 groups (see [`super::chunk_bounds`]); boxes are finite or empty
    /// (+inf lows), so `max` needs no NaN handling.
    #[inline(always)]
    unsafe fn bounds512<const D: usize>(idx: &NearestIndex, x: &[f32; D], xn: f32, c: usize) -> __m512 {
        let n = idx.n_pad;
        let mut out = _mm512_set1_ps(-xn);
        for t in 0..D {
            let lo = _mm512_loadu_ps(idx.lo.as_ptr().add(t * n + c * LANES));
            let hi = _mm512_loadu_ps(idx.hi.as_ptr().add(t * n + c * LANES));
            let xt = _mm512_set1_ps(x[t]);
            let e = _mm512_max_ps(_mm512_max_ps(_mm512_sub_ps(lo, xt), _mm512_sub_ps(xt, hi)), _mm512_setzero_ps());
            out = _mm512_add_ps(out, _mm512_mul_ps(e, e));
        }
        out
    }

    impl LaneAcc for Lanes512 {
        #[inline(always)]
        fn first_group<const D: usize>(idx: &NearestIndex, x: &[f32; D], xn: f32) -> usize {
            // SAFETY: AVX-512F detected at run time; `lo`/`hi` hold `n_pad` (a multiple of 16)
            // groups per coordinate.
            unsafe {
                let (mut vmin, mut vc) = (_mm512_set1_ps(f32::INFINITY), _mm512_setzero_si512());
                for c in 0..idx.n_pad / LANES {
                    let b = bounds512::<D>(idx, x, xn, c);
                    let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(b, vmin);
                    vmin = _mm512_mask_mov_ps(vmin, lt, b);
                    vc = _mm512_mask_mov_epi32(vc, lt, _mm512_set1_epi32(c as i32));
                }
                let m = _mm512_reduce_min_ps(vmin);
                let at = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(vmin, _mm512_set1_ps(m));
                let (mut cs, lane) = ([0u32; LANES], if at == 0 { 0 } else { at.trailing_zeros() as usize });
                _mm512_storeu_si512(cs.as_mut_ptr() as *mut _, vc);
                cs[lane] as usize * LANES + lane
            }
        }

        #[inline(always)]
        fn group_mask<const D: usize>(idx: &NearestIndex, x: &[f32; D], xn: f32, c: usize, thr: f32) -> u32 {
            // SAFETY: as above.
            unsafe { _mm512_cmp_ps_mask::<_CMP_LE_OQ>(bounds512::<D>(idx, x, xn, c), _mm512_set1_ps(thr)) as u32 }
        }

        #[inline(always)]
        fn eval<const D: usize>(&mut self, c: &Blocked, b: usize, m: &[f32; D]) {
            let cb = &c.coords[b * D * LANES..(b + 1) * D * LANES];
            let norms = &c.norms[b * LANES..(b + 1) * LANES];
            let ids = &c.ids[b * LANES..(b + 1) * LANES];
            // SAFETY: AVX-512F was detected at run time; the slices above hold 16 lanes each
            // (unaligned loads).
            unsafe {
                let mut acc = _mm512_loadu_ps(norms.as_ptr());
                for t in 0..D {
                    let row = _mm512_loadu_ps(cb.as_ptr().add(t * LANES));
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(m[t]), row));
                }
                let idv = _mm512_loadu_si512(ids.as_ptr() as *const _);
                let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(acc, self.v);
                let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(acc, self.v);
                let better = lt | (eq & _mm512_cmplt_epu32_mask(idv, self.j));
                self.v = _mm512_mask_mov_ps(self.v, better, acc);
                self.j = _mm512_mask_mov_epi32(self.j, better, idv);
            }
        }

        #[inline(always)]
        fn min_value(&self) -> f32 {
            // SAFETY: as above.
            unsafe { _mm512_reduce_min_ps(self.v) }
        }

        #[inline(always)]
        fn best(&self) -> usize {
            let (mut v, mut j) = ([0.0f32; LANES], [0u32; LANES]);
            // SAFETY: as above; the arrays hold 16 lanes.
            unsafe {
                _mm512_storeu_ps(v.as_mut_ptr(), self.v);
                _mm512_storeu_si512(j.as_mut_ptr() as *mut _, self.j);
            }
            best_of(&v, &j)
        }
    }
}

/// Exact nearest-centroid search over a fixed set of centroids.
pub struct NearestIndex {
    blocked: Blocked,
    /// Groups of centroids (kd-tree leaves): blocks `group_blocks[g].0..group_blocks[g].1`.
    group_blocks: Vec<(u32, u32)>,
    /// Group bounding boxes, coordinate-major and padded to a multiple of [`LANES`] groups:
    /// `lo[t * n_pad + g]`, `hi[t * n_pad + g]`; padding groups have an empty box (+inf bound).
    lo: Vec<f32>,
    hi: Vec<f32>,
    n_pad: usize,
    /// Largest squared centroid norm (scales the rounding slack).
    max_norm: f32,
    kernel: Kernel,
    use_groups: bool,
}

#[cfg(test)]
static EVALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Below this many centroids a plain scan of every block is as fast as the groups.
const GROUPS_MIN_CENTROIDS: usize = 256;
/// Blocks per group at most: groups of up to 32 centroids.
const GROUP_BLOCKS: usize = 2;

impl NearestIndex {
    /// Builds the index for row-major `[k, dim]` centroids (finite values).
    pub fn new(centroids: &[f32], dim: usize) -> Self {
        let k = centroids.len() / dim;
        let max_norm = centroids.chunks_exact(dim).map(sq_norm).fold(0.0f32, f32::max);
        let use_groups = k >= GROUPS_MIN_CENTROIDS && matches!(dim, 1 | 2 | 3 | 4 | 8);
        let mut order: Vec<u32> = (0..k as u32).collect();
        let mut groups = vec![];
        if use_groups {
            split(centroids, dim, &mut order, 0, &mut groups);
        }
        let n_pad = groups.len().div_ceil(LANES) * LANES;
        let (mut lo, mut hi) = (vec![f32::INFINITY; dim * n_pad], vec![f32::NEG_INFINITY; dim * n_pad]);
        let mut group_blocks = Vec::with_capacity(groups.len());
        for (g, &(start, end)) in groups.iter().enumerate() {
            for &j in &order[start..end] {
                for t in 0..dim {
                    let c = centroids[j as usize * dim + t];
                    lo[t * n_pad + g] = lo[t * n_pad + g].min(c);
                    hi[t * n_pad + g] = hi[t * n_pad + g].max(c);
                }
            }
            group_blocks.push(((start / LANES) as u32, end.div_ceil(LANES) as u32));
        }
        NearestIndex {
            blocked: Blocked::from_order(centroids, dim, &order),
            group_blocks,
            lo,
            hi,
            n_pad,
            max_norm,
            kernel: Kernel::detect(),
            use_groups,
        }
    }
    /// Index of the nearest centroid to `x` (ties: the lowest index).
    #[inline]
    pub fn nearest(&self, x: &[f32]) -> usize {
        match self.kernel {
            Kernel::Portable => self.nearest_dispatch(x),
            // SAFETY: these variants exist only after run-time detection of the feature.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { self.nearest_avx2(x) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { self.nearest_avx512(x) },
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn nearest_avx2(&self, x: &[f32]) -> usize {
        self.nearest_dispatch(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn nearest_avx512(&self, x: &[f32]) -> usize {
        let acc = avx512::Lanes512::empty();
        match self.blocked.dim {
            1 => self.search::<1, _>(x, acc),
            2 => self.search::<2, _>(x, acc),
            3 => self.search::<3, _>(x, acc),
            4 => self.search::<4, _>(x, acc),
            8 => self.search::<8, _>(x, acc),
            _ => scan_any(&self.blocked, x),
        }
    }

    #[inline(always)]
    fn nearest_dispatch(&self, x: &[f32]) -> usize {
        match self.blocked.dim {
            1 => self.nearest_fixed::<1>(x),
            2 => self.nearest_fixed::<2>(x),
            3 => self.nearest_fixed::<3>(x),
            4 => self.nearest_fixed::<4>(x),
            8 => self.nearest_fixed::<8>(x),
            _ => scan_any(&self.blocked, x),
        }
    }

    #[inline(always)]
    fn nearest_fixed<const D: usize>(&self, x: &[f32]) -> usize {
        self.search::<D, Lanes>(x, Lanes::EMPTY)
    }

    /// The search with lane accumulator `lanes`: without groups, every block; with groups, the
    /// group of smallest bound first, then every group whose bound does not exceed the best
    /// value found (plus the rounding slack). The bound of a group is the squared distance from
    /// x to its box minus ||x||^2, below the value of any centroid in it.
    #[inline(always)]
    fn search<const D: usize, A: LaneAcc>(&self, x: &[f32], mut lanes: A) -> usize {
        let mut m = [0.0f32; D];
        for t in 0..D {
            m[t] = -2.0 * x[t];
        }
        if !self.use_groups {
            for b in 0..self.blocked.n_blocks() {
                lanes.eval::<D>(&self.blocked, b, &m);
            }
            return lanes.best();
        }
        let xn = sq_norm(x);
        // Rounding slack of the expanded form: a few f32 ulps of the magnitudes involved.
        let slack = 1e-4 * (xn + self.max_norm) + f32::MIN_POSITIVE;
        // Two passes over the group bounds, 16 groups at a time (recomputing is cheaper than
        // storing them): the group of smallest bound, then every group that can still win.
        let mut xa = [0.0f32; D];
        xa.copy_from_slice(&x[..D]);
        let g0 = A::first_group::<D>(self, &xa, xn);
        self.eval_group::<D, A>(&mut lanes, g0, &m);
        let mut best = lanes.min_value();
        let n_groups = self.group_blocks.len();
        for c in 0..self.n_pad / LANES {
            let mut mask = A::group_mask::<D>(self, &xa, xn, c, best + slack);
            while mask != 0 {
                let g = c * LANES + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if g != g0 && g < n_groups {
                    self.eval_group::<D, A>(&mut lanes, g, &m);
                    best = lanes.min_value();
                }
            }
        }
        lanes.best()
    }

    /// Evaluates every block of group `g` (a method, not a closure: closures are not inlined
    /// into the AVX-512 caller, and its intrinsics would become calls).
    #[inline(always)]
    fn eval_group<const D: usize, A: LaneAcc>(&self, lanes: &mut A, g: usize, m: &[f32; D]) {
        #[cfg(test)]
        EVALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (s, e) = self.group_blocks[g];
        for b in s..e {
            lanes.eval::<D>(&self.blocked, b as usize, m);
        }
    }
}

/// Splits `order[..]` (centroid indices, in place; `start` is its offset in the whole order)
/// like a kd-tree: at a block boundary near the median of the widest coordinate, until a part
/// holds at most [`GROUP_BLOCKS`] blocks; the parts, as `(start, end)` ranges, are the groups.
/// Every group but the last starts and ends on a block boundary.
fn split(centroids: &[f32], dim: usize, order: &mut [u32], start: usize, groups: &mut Vec<(usize, usize)>) {
    let blocks = order.len().div_ceil(LANES);
    if blocks <= GROUP_BLOCKS {
        groups.push((start, start + order.len()));
        return;
    }
    let coord = |j: u32, t: usize| centroids[j as usize * dim + t];
    let (mut lo, mut hi) = (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]);
    for &j in order.iter() {
        for t in 0..dim {
            lo[t] = lo[t].min(coord(j, t));
            hi[t] = hi[t].max(coord(j, t));
        }
    }
    let t = (0..dim).max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b]))).unwrap_or(0);
    let mid = (blocks / 2) * LANES;
    // Ties in the coordinate are broken by index, so the split does not depend on the sort.
    order.select_nth_unstable_by(mid, |&a, &b| coord(a, t).total_cmp(&coord(b, t)).then(a.cmp(&b)));
    let (a, b) = order.split_at_mut(mid);
    split(centroids, dim, a, start, groups);
    split(centroids, dim, b, start + mid, groups);
}

/// Scan of every block for widths without a fixed-width body.
fn scan_any(c: &Blocked, x: &[f32]) -> usize {
    let d = c.dim;
    let m: Vec<f32> = x.iter().map(|&v| -2.0 * v).collect();
    let mut lanes = Lanes::EMPTY;
    for b in 0..c.n_blocks() {
        let cb = &c.coords[b * d * LANES..(b + 1) * d * LANES];
        let mut acc = [0.0f32; LANES];
        acc.copy_from_slice(&c.norms[b * LANES..(b + 1) * LANES]);
        for (t, &mt) in m.iter().enumerate() {
            for l in 0..LANES {
                acc[l] += mt * cb[t * LANES + l];
            }
        }
        let ids = &c.ids[b * LANES..(b + 1) * LANES];
        for l in 0..LANES {
            if acc[l] < lanes.v[l] || (acc[l] == lanes.v[l] && ids[l] < lanes.j[l]) {
                lanes.v[l] = acc[l];
                lanes.j[l] = ids[l];
            }
        }
    }
    lanes.best()
}

/// The instruction set the search runs with, detected at run time.
#[derive(Clone, Copy, Debug)]
pub enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The scalar scan every path must reproduce exactly (same arithmetic order).
    fn nearest_scalar(x: &[f32], centroids: &[f32], dim: usize) -> usize {
        let (mut best, mut bv) = (0usize, f32::INFINITY);
        for (j, c) in centroids.chunks_exact(dim).enumerate() {
            let mut v = sq_norm(c);
            for t in 0..dim {
                v += (-2.0 * x[t]) * c[t];
            }
            if v < bv {
                bv = v;
                best = j;
            }
        }
        best
    }

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                k.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                k.push(Kernel::Avx512);
            }
        }
        k
    }

    #[test]
    fn every_path_matches_the_scalar_scan() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for &(dim, k) in
            &[(1, 5), (2, 17), (3, 33), (4, 1000), (5, 40), (8, 16), (4, 1), (1, 700), (2, 300), (8, 500), (4, 4099)]
        {
            for quantised in [true, false] {
                // Quantised values make exact ties common, so the tie rule is exercised too.
                let draw = |rng: &mut ChaCha8Rng| {
                    if quantised {
                        rng.random_range(-4i32..4) as f32 * 0.5
                    } else {
                        rng.random_range(-1.0f32..1.0)
                    }
                };
                let cents: Vec<f32> = (0..k * dim).map(|_| draw(&mut rng)).collect();
                for kern in kernels() {
                    let mut idx = NearestIndex::new(&cents, dim);
                    idx.kernel = kern;
                    for _ in 0..200 {
                        // Points inside and well outside the centroids' range.
                        let s = if rng.random_bool(0.2) { 5.0 } else { 1.0 };
                        let x: Vec<f32> = (0..dim).map(|_| draw(&mut rng) * s).collect();
                        assert_eq!(
                            idx.nearest(&x),
                            nearest_scalar(&x, &cents, dim),
                            "dim {dim}, k {k}, {kern:?}, x {x:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn duplicate_centroids_resolve_to_the_lowest_index() {
        let cents = [1.0f32, 1.0, 0.0, 0.0, 1.0, 1.0].repeat(100);
        let idx = NearestIndex::new(&cents, 2);
        assert_eq!(idx.nearest(&[0.9, 1.1]), 0);
        assert_eq!(idx.nearest(&[0.0, 0.1]), 1);
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `cargo test --release -p cqr-methods nearest::speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_query_speed() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 500_000;
        let data: Vec<f32> = (0..n * 4).map(|_| rng.random_range(-0.05f32..0.05)).collect();
        for k in [1024usize, 4096, 16384] {
            let cents: Vec<f32> = data[..k * 4].to_vec();
            let idx = NearestIndex::new(&cents, 4);
            let t0 = std::time::Instant::now();
            let mut s = 0usize;
            for x in data.chunks_exact(4) {
                s += idx.nearest(x);
            }
            let tree = t0.elapsed().as_secs_f64();
            let mut flat = NearestIndex::new(&cents, 4);
            flat.use_groups = false;
            flat.blocked = Blocked::new(&cents, 4);
            let t0 = std::time::Instant::now();
            for x in data.chunks_exact(4).take(50_000) {
                s += flat.nearest(x);
            }
            let scan = t0.elapsed().as_secs_f64() * 10.0;
            println!(
                "groups evaluated per query {}",
                EVALS.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / n as f64
            );
            println!(
                "k {k}: tree {:.0} ns/query, scan {:.0} ns/query ({s})",
                tree / n as f64 * 1e9,
                scan / n as f64 * 1e9
            );
        }
    }
}
