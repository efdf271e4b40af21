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
//! - [`NearestIndex`]: for many centroids, a kd-tree whose leaves are those blocks. A subtree is
//!   skipped when the squared distance from x to its bounding box, minus ||x||^2, exceeds the
//!   best value found by more than a rounding slack, so the search stays exact while evaluating
//!   a few leaves instead of all of them (sub-vectors are 1-8 wide, where kd-trees work well).

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

impl Lanes {
    const EMPTY: Lanes = Lanes { v: [f32::INFINITY; LANES], j: [u32::MAX; LANES] };

    /// Evaluates block `b` for the point with multipliers `m = -2x` and keeps, per lane, the
    /// smaller value (ties: the lower centroid index).
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

    /// The lowest index among the lanes holding the minimum; 0 when nothing was finite (as a
    /// scalar scan that never improves on +inf).
    #[inline(always)]
    fn best(&self) -> usize {
        let (mut best, mut v) = (u32::MAX, f32::INFINITY);
        for l in 0..LANES {
            if self.v[l] < v || (self.v[l] == v && self.j[l] < best) {
                v = self.v[l];
                best = self.j[l];
            }
        }
        if best == u32::MAX {
            0
        } else {
            best as usize
        }
    }
}

/// A node of the kd-tree: a bounding box and either two children or one leaf block.
#[derive(Clone, Copy)]
struct Node {
    /// Children `left, left + 1`; or, for a leaf, `u32::MAX`.
    left: u32,
    /// Leaf block index.
    block: u32,
}

/// Exact nearest-centroid search over a fixed set of centroids.
pub struct NearestIndex {
    blocked: Blocked,
    nodes: Vec<Node>,
    /// Per node, `dim` lows then `dim` highs.
    boxes: Vec<f32>,
    /// Largest squared centroid norm (scales the rounding slack).
    max_norm: f32,
    kernel: Kernel,
    use_tree: bool,
}

/// Below this many centroids a plain scan of every block is as fast as the tree.
const TREE_MIN_CENTROIDS: usize = 256;

impl NearestIndex {
    /// Builds the index for row-major `[k, dim]` centroids (finite values).
    pub fn new(centroids: &[f32], dim: usize) -> Self {
        let k = centroids.len() / dim;
        let max_norm = centroids.chunks_exact(dim).map(sq_norm).fold(0.0f32, f32::max);
        let use_tree = k >= TREE_MIN_CENTROIDS && matches!(dim, 1 | 2 | 3 | 4 | 8);
        let mut order: Vec<u32> = (0..k as u32).collect();
        let mut nodes = vec![];
        let mut boxes = vec![];
        if use_tree {
            nodes.push(Node { left: u32::MAX, block: 0 });
            boxes.resize(2 * dim, 0.0);
            build(centroids, dim, &mut order, 0, 0, &mut nodes, &mut boxes);
        }
        NearestIndex { blocked: Blocked::from_order(centroids, dim, &order), nodes, boxes, max_norm, kernel: Kernel::detect(), use_tree }
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
        self.nearest_dispatch(x)
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
        let mut m = [0.0f32; D];
        for t in 0..D {
            m[t] = -2.0 * x[t];
        }
        let mut lanes = Lanes::EMPTY;
        if !self.use_tree {
            for b in 0..self.blocked.n_blocks() {
                lanes.eval::<D>(&self.blocked, b, &m);
            }
            return lanes.best();
        }
        let xn = sq_norm(x);
        // Rounding slack of the expanded form: a few f32 ulps of the magnitudes involved.
        let slack = 1e-4 * (xn + self.max_norm) + f32::MIN_POSITIVE;
        let mut best = f32::INFINITY;
        let mut stack = [(0u32, 0.0f32); 64];
        let mut top = 1;
        while top > 0 {
            top -= 1;
            let (n, bound) = stack[top];
            if bound > best + slack {
                continue;
            }
            let node = self.nodes[n as usize];
            if node.left == u32::MAX {
                lanes.eval::<D>(&self.blocked, node.block as usize, &m);
                best = lanes.min_value();
                continue;
            }
            let (l, r) = (node.left, node.left + 1);
            let bl = self.box_dist::<D>(l as usize, x) - xn;
            let br = self.box_dist::<D>(r as usize, x) - xn;
            // Nearer child on top of the stack: visited first.
            let (near, far) = if bl <= br { ((l, bl), (r, br)) } else { ((r, br), (l, bl)) };
            stack[top] = far;
            stack[top + 1] = near;
            top += 2;
        }
        lanes.best()
    }

    #[inline(always)]
    fn box_dist<const D: usize>(&self, n: usize, x: &[f32]) -> f32 {
        let b = &self.boxes[n * 2 * D..(n + 1) * 2 * D];
        let mut d = 0.0f32;
        for t in 0..D {
            let e = (b[t] - x[t]).max(x[t] - b[D + t]).max(0.0);
            d += e * e;
        }
        d
    }
}

/// Splits `order` (centroid indices, in place) into a balanced kd-tree: each node's box is the
/// tight box of its centroids; a node with more than one block of centroids splits at a block
/// boundary near the median of its widest coordinate, so every leaf but one is a full block.
fn build(centroids: &[f32], dim: usize, order: &mut [u32], start: usize, node: usize, nodes: &mut Vec<Node>, boxes: &mut Vec<f32>) {
    let coord = |j: u32, t: usize| centroids[j as usize * dim + t];
    let (mut lo, mut hi) = (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]);
    for &j in order.iter() {
        for t in 0..dim {
            lo[t] = lo[t].min(coord(j, t));
            hi[t] = hi[t].max(coord(j, t));
        }
    }
    boxes[node * 2 * dim..node * 2 * dim + dim].copy_from_slice(&lo);
    boxes[node * 2 * dim + dim..(node + 1) * 2 * dim].copy_from_slice(&hi);
    let blocks = order.len().div_ceil(LANES);
    if blocks <= 1 {
        nodes[node] = Node { left: u32::MAX, block: (start / LANES) as u32 };
        return;
    }
    let t = (0..dim).max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b]))).unwrap_or(0);
    let mid = (blocks / 2) * LANES;
    // Ties in the coordinate are broken by index, so the tree does not depend on the sort.
    order.select_nth_unstable_by(mid, |&a, &b| coord(a, t).total_cmp(&coord(b, t)).then(a.cmp(&b)));
    let left = nodes.len();
    nodes[node] = Node { left: left as u32, block: u32::MAX };
    nodes.push(Node { left: u32::MAX, block: 0 });
    nodes.push(Node { left: u32::MAX, block: 0 });
    boxes.resize(nodes.len() * 2 * dim, 0.0);
    let (a, b) = order.split_at_mut(mid);
    build(centroids, dim, a, start, left, nodes, boxes);
    build(centroids, dim, b, start + mid, left + 1, nodes, boxes);
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
        for &(dim, k) in &[(1, 5), (2, 17), (3, 33), (4, 1000), (5, 40), (8, 16), (4, 1), (1, 700), (2, 300), (8, 500), (4, 4099)] {
            for quantised in [true, false] {
                // Quantised values make exact ties common, so the tie rule is exercised too.
                let draw = |rng: &mut ChaCha8Rng| if quantised { rng.random_range(-4i32..4) as f32 * 0.5 } else { rng.random_range(-1.0f32..1.0) };
                let cents: Vec<f32> = (0..k * dim).map(|_| draw(&mut rng)).collect();
                for kern in kernels() {
                    let mut idx = NearestIndex::new(&cents, dim);
                    idx.kernel = kern;
                    for _ in 0..200 {
                        // Points inside and well outside the centroids' range.
                        let s = if rng.random_bool(0.2) { 5.0 } else { 1.0 };
                        let x: Vec<f32> = (0..dim).map(|_| draw(&mut rng) * s).collect();
                        assert_eq!(idx.nearest(&x), nearest_scalar(&x, &cents, dim), "dim {dim}, k {k}, {kern:?}, x {x:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn duplicate_centroids_resolve_to_the_lowest_index() {
        let cents = vec![1.0f32, 1.0, 0.0, 0.0, 1.0, 1.0].repeat(100);
        let idx = NearestIndex::new(&cents, 2);
        assert_eq!(idx.nearest(&[0.9, 1.1]), 0);
        assert_eq!(idx.nearest(&[0.0, 0.1]), 1);
    }
}
