//! The kernels on Flex tensors (f32). Outputs are new contiguous tensors. The element-wise
//! loops run compiled for AVX2 where the CPU has it; the products go through `gemm`.

use super::*;
use crate::threads::{for_chunks, map_chunks, spread};

/// A 2-D f32 operand: base pointer (start offset applied), row stride, column stride.
struct View {
    ptr: *const f32,
    rs: isize,
    cs: isize,
    rows: usize,
    cols: usize,
}

impl View {
    fn of(t: &FlexTensor) -> View {
        let l = t.layout();
        let shape = l.shape();
        assert_eq!(shape.num_dims(), 2, "fused op: expected a 2-D tensor, got {shape:?}");
        let s = l.strides();
        let data: &[f32] = t.storage();
        // SAFETY: the layout's start offset lies inside the storage.
        View { ptr: unsafe { data.as_ptr().add(l.start_offset()) }, rs: s[0], cs: s[1], rows: shape[0], cols: shape[1] }
    }
    fn t(self) -> View {
        View { ptr: self.ptr, rs: self.cs, cs: self.rs, rows: self.cols, cols: self.rows }
    }
}

/// `a [m, k] · b [k, n]` as a new row-major `[m, n]` buffer. gemm writes every element
/// without reading the destination (`read_dst = false`), so the buffer is not zeroed first
/// (a memset of up to 4 MB per product otherwise).
fn gemm_new(a: &View, b: &View) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "fused op: inner dimensions differ");
    let mut dst = Vec::<f32>::with_capacity(m * n);
    // SAFETY: the views describe valid strided matrices of the given sizes (from their
    // tensors' layouts); dst has room for m x n values, written (never read) through the raw
    // pointer, all of them, before the length is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            crate::threads::gemm_parallelism(m, n, k),
        );
        dst.set_len(m * n);
    }
    dst
}

fn contiguous(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous").to_vec()),
    }
}

fn tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

fn dims<const N: usize>(t: &FlexTensor) -> [usize; N] {
    let s = t.layout().shape();
    assert_eq!(s.num_dims(), N, "fused op: expected {N} dimensions, got {s:?}");
    std::array::from_fn(|i| s[i])
}

/// Rows per parallel chunk of the element-wise passes: fixed, so sums are in a fixed order.
const ROWS: usize = 64;

/// ReLU as burn-flex computes it (a select, so the loops vectorise).
#[inline(always)]
fn relu1(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

pub fn linear_forward(x: &FlexTensor, w: &FlexTensor, bias: &FlexTensor, relu: bool) -> FlexTensor {
    let (xv, wv) = (View::of(x), View::of(w));
    let (b, o) = (xv.rows, wv.cols);
    let bias = contiguous(bias);
    assert_eq!(bias.len(), o, "fused linear: bias has {} values for {o} outputs", bias.len());
    let mut out = gemm_new(&xv, &wv);
    for_chunks(&mut out, ROWS * o, spread(b * o), |_, chunk| bias_act_wide(chunk, &bias, relu));
    tensor(out, vec![b, o])
}

// The per-chunk loops below run compiled for AVX2 where the CPU has it (same bits, see
// cqr_methods::simd).
cqr_methods::avx2_fn!(fn bias_act_wide => bias_act, (chunk: &mut [f32], bias: &[f32], relu: bool));
cqr_methods::avx2_fn!(fn mask_colsum_wide => mask_colsum, (g: &mut [f32], y: &[f32], o: usize, act: Act) -> Vec<f32>);
cqr_methods::avx2_fn!(fn round_bf16_all_wide => round_bf16_all, (chunk: &mut [f32]));
cqr_methods::avx2_fn!(fn gram_rows_wide => gram_rows, (chunk: &mut [f32], s0: usize, x: &[f32], emb: &[f32], shape: Shape3));
cqr_methods::avx2_fn!(fn gram_rows_backward_wide => gram_rows_backward, (dxc: &mut [f32], de: Shared, s0: usize, x: &[f32], emb: &[f32], g: &[f32], shape: Shape3));

/// The GEMM operands of a linear layer: `x` and `w` as they are, or (`bf16`) new contiguous
/// copies rounded to bf16.
pub fn operands(x: FlexTensor, w: FlexTensor, bf16: bool) -> (FlexTensor, FlexTensor) {
    if !bf16 {
        return (x, w);
    }
    let round = |t: FlexTensor| {
        let shape = dims::<2>(&t).to_vec();
        let mut v = contiguous(&t).into_owned();
        let n = v.len();
        for_chunks(&mut v, ROWS * shape[1], spread(n), |_, chunk| round_bf16_all_wide(chunk));
        tensor(v, shape)
    };
    (round(x), round(w))
}

#[inline(always)]
fn round_bf16_all(chunk: &mut [f32]) {
    chunk.iter_mut().for_each(|v| *v = round_bf16(*v));
}

/// What a linear layer's backward pass applies to the upstream gradient: the ReLU mask
/// (`relu`), then rounding to bf16 (`bf16`) after the bias gradient has summed it.
#[derive(Debug, Clone, Copy)]
pub struct Act {
    pub relu: bool,
    pub bf16: bool,
}

/// `row += bias`, then ReLU when `relu`, for each row of `chunk`.
#[inline(always)]
fn bias_act(chunk: &mut [f32], bias: &[f32], relu: bool) {
    for row in chunk.chunks_exact_mut(bias.len()) {
        if relu {
            row.iter_mut().zip(bias).for_each(|(v, &c)| *v = relu1(*v + c));
        } else {
            row.iter_mut().zip(bias).for_each(|(v, &c)| *v += c);
        }
    }
}

/// `(dx, dw, db)`; `dx` only when `want_dx`, `dw` only when `want_dw`. `x` and `w` are the
/// operands the forward GEMM used. The upstream gradient `g` is masked (and rounded) in place
/// when its buffer is not shared.
pub fn linear_backward(
    x: &FlexTensor,
    w: &FlexTensor,
    y: &FlexTensor,
    g: FlexTensor,
    act: Act,
    want_dx: bool,
    want_dw: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>, FlexTensor) {
    let [b, o] = dims::<2>(&g);
    let mut g = if g.is_contiguous() && g.layout().start_offset() == 0 { g } else { g.to_contiguous() };
    let gm: &mut [f32] = &mut g.storage_mut::<f32>()[..b * o];
    let y = contiguous(y);
    // One pass: mask by the output (ReLU) and column sums per chunk of rows.
    let partial: Vec<Vec<f32>> = map_chunks(gm, ROWS * o, spread(b * o), |c, gc| {
        let y0 = c * ROWS * o;
        mask_colsum_wide(gc, &y[y0..y0 + gc.len()], o, act)
    });
    let mut db = vec![0.0f32; o];
    for p in &partial {
        db.iter_mut().zip(p).for_each(|(d, v)| *d += v);
    }
    let gv = View { ptr: gm.as_ptr(), rs: o as isize, cs: 1, rows: b, cols: o };
    let (xv, wv) = (View::of(x), View::of(w));
    let dw = want_dw.then(|| tensor(gemm_new(&View::of(x).t(), &gv), vec![xv.cols, o]));
    let dx = want_dx.then(|| tensor(gemm_new(&gv, &View::of(w).t()), vec![b, wv.rows]));
    (dx, dw, tensor(db, vec![o]))
}

/// Zeroes `g` where the output `y` is not positive (when `act.relu`), returns its column
/// sums, then rounds it to bf16 (when `act.bf16`).
#[inline(always)]
fn mask_colsum(g: &mut [f32], y: &[f32], o: usize, act: Act) -> Vec<f32> {
    let mut sum = vec![0.0f32; o];
    for (gr, yr) in g.chunks_exact_mut(o).zip(y.chunks_exact(o)) {
        if act.relu {
            gr.iter_mut().zip(yr).for_each(|(gv, &yv)| *gv = if yv > 0.0 { *gv } else { 0.0 });
        }
        sum.iter_mut().zip(gr.iter()).for_each(|(s, &gv)| *s += gv);
        if act.bf16 {
            round_bf16_all(gr);
        }
    }
    sum
}

/// The number of pairs of `f` vectors.
fn n_pairs(f: usize) -> usize {
    f * (f - 1) / 2
}

/// Copies sample `s`'s `f` vectors (`x[s]`, then `emb[k, s]`) into the first `f` rows of `v`,
/// `stride` values apart (`stride >= d`; padding and further rows untouched).
#[inline(always)]
fn gather(v: &mut [f32], stride: usize, x: &[f32], emb: &[f32], s: usize, b: usize, d: usize) {
    v[..d].iter_mut().zip(&x[s * d..(s + 1) * d]).for_each(|(o, &a)| *o = a);
    for (k, vk) in v[stride..].chunks_exact_mut(stride).take(emb.len() / (b * d)).enumerate() {
        let at = (k * b + s) * d;
        vk[..d].iter_mut().zip(&emb[at..at + d]).for_each(|(o, &a)| *o = a);
    }
}

/// Lanes of the register blocks below (one AVX2 vector of f32).
const L: usize = 8;

fn round_up(n: usize) -> usize {
    n.div_ceil(L) * L
}

/// Rows of the register blocks below.
const R: usize = 4;

/// `acc[r][j] = Σ_k a[r][k] · m[k · stride + j0 + j]` for `r < R`, `j < L`, summed in order
/// of `k` from 0 (multiply, then add): an `R × L` block of the interaction's small products
/// (rows of `f` vectors of `d` values), `R` independent vector accumulators sharing each load
/// of `m`'s row. `m` is padded so that `L` lanes can always be read; the rows `a[r]` are
/// equally long.
#[inline(always)]
fn block(a: [&[f32]; R], m: &[f32], stride: usize, j0: usize) -> [[f32; L]; R] {
    let kk = a[0].len();
    let a: [&[f32]; R] = std::array::from_fn(|r| &a[r][..kk]);
    let mut acc = [[0.0f32; L]; R];
    for k in 0..kk {
        let src: &[f32; L] = m[k * stride + j0..k * stride + j0 + L].try_into().expect("padded");
        for (acc_r, a_r) in acc.iter_mut().zip(a) {
            let ak = a_r[k];
            acc_r.iter_mut().zip(src).for_each(|(c, &x)| *c += ak * x);
        }
    }
    acc
}

/// `[tables, batch, dim]`.
#[derive(Clone, Copy)]
struct Shape3 {
    t: usize,
    b: usize,
    d: usize,
}

/// The interaction's output rows `chunk` of the samples from `s0` on.
#[inline(always)]
fn gram_rows(chunk: &mut [f32], s0: usize, x: &[f32], emb: &[f32], Shape3 { t, b, d }: Shape3) {
    let f = t + 1;
    let (width, fp) = (d + n_pairs(f), round_up(f));
    // v [f, d] (plus zero rows up to a whole block of R from row 1) and its transpose
    // vt [d, fp] (zero padding), so row i of the Gram matrix is vt's rows weighted by v_i.
    let (mut v, mut vt) = (vec![0.0f32; (1 + (f - 1).div_ceil(R) * R) * d], vec![0.0f32; d * fp]);
    for (r, row) in chunk.chunks_exact_mut(width).enumerate() {
        gather(&mut v, d, x, emb, s0 + r, b, d);
        for (e, vt_e) in vt.chunks_exact_mut(fp).enumerate() {
            vt_e.iter_mut().zip(v.chunks_exact(d).take(f)).for_each(|(o, vi)| *o = vi[e]);
        }
        row[..d].copy_from_slice(&v[..d]);
        row[d..].fill(0.0);
        // Rows i0..i0+R of the strict lower triangle (row i holds j < i, from d + i(i-1)/2).
        for i0 in (1..f).step_by(R) {
            let a: [&[f32]; R] = std::array::from_fn(|q| &v[(i0 + q) * d..(i0 + q + 1) * d]);
            let last = (i0 + R).min(f) - 1;
            for j0 in (0..last).step_by(L) {
                let acc = block(a, &vt, fp, j0);
                for (i, acc_i) in (i0..=last).zip(&acc) {
                    let (p, hi) = (d + n_pairs(i), i.min(j0 + L));
                    if hi > j0 {
                        row[p + j0..p + hi].iter_mut().zip(acc_i).for_each(|(o, c)| *o += c);
                    }
                }
            }
        }
    }
}

pub fn interaction_forward(x: &FlexTensor, emb: &FlexTensor) -> FlexTensor {
    let [t, b, d] = dims::<3>(emb);
    assert_eq!(dims::<2>(x), [b, d], "fused interaction: x must be [batch, dim]");
    let (x, emb) = (contiguous(x), contiguous(emb));
    let f = t + 1;
    let width = d + n_pairs(f);
    let mut out = vec![0.0f32; b * width];
    let shape = Shape3 { t, b, d };
    for_chunks(&mut out, ROWS * width, spread(b * (width - d) * d), |c, chunk| {
        gram_rows_wide(chunk, c * ROWS, &x, &emb, shape)
    });
    tensor(out, vec![b, width])
}

/// A pointer that chunks of a parallel loop write through at disjoint offsets.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every use writes disjoint elements (one sample's rows per iteration).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// The gradients of the samples from `s0` on: `dxc` (their rows of dx) and their rows of demb
/// (through `de`), from the upstream gradient `g`.
#[inline(always)]
fn gram_rows_backward(
    dxc: &mut [f32],
    de: Shared,
    s0: usize,
    x: &[f32],
    emb: &[f32],
    g: &[f32],
    Shape3 { t, b, d }: Shape3,
) {
    let f = t + 1;
    let (width, dp) = (d + n_pairs(f), round_up(d));
    // v [f, dp] (zero padding), sym [f, f] (plus zero rows up to a whole block of R), dv [f, d].
    let mut v = vec![0.0f32; f * dp];
    let (mut sym, mut dv) = (vec![0.0f32; f.div_ceil(R) * R * f], vec![0.0f32; f * d]);
    for (r, dxr) in dxc.chunks_exact_mut(d).enumerate() {
        let s = s0 + r;
        gather(&mut v, dp, x, emb, s, b, d);
        let gr = &g[s * width..(s + 1) * width];
        // dV = S V with S symmetric, S_ij = S_ji = g_ij (i > j), zero diagonal.
        let mut p = d;
        for i in 1..f {
            let gi = &gr[p..p + i];
            sym[i * f..i * f + i].copy_from_slice(gi);
            sym[i..].iter_mut().step_by(f).zip(gi).for_each(|(o, &g)| *o = g);
            p += i;
        }
        dv.fill(0.0);
        for i0 in (0..f).step_by(R) {
            let a: [&[f32]; R] = std::array::from_fn(|q| &sym[(i0 + q) * f..(i0 + q + 1) * f]);
            for e0 in (0..d).step_by(L) {
                let acc = block(a, &v, dp, e0);
                for (i, acc_i) in (i0..(i0 + R).min(f)).zip(&acc) {
                    dv[i * d + e0..i * d + d.min(e0 + L)].iter_mut().zip(acc_i).for_each(|(o, c)| *o += c);
                }
            }
        }
        dv[..d].iter_mut().zip(&gr[..d]).for_each(|(a, &b)| *a += b);
        dxr.copy_from_slice(&dv[..d]);
        for k in 0..t {
            // SAFETY: row (k, s) of demb belongs to sample s alone; the buffer outlives the loop.
            let dst = unsafe { std::slice::from_raw_parts_mut(de.0.add((k * b + s) * d), d) };
            dst.iter_mut().zip(&dv[(k + 1) * d..(k + 2) * d]).for_each(|(o, &a)| *o = a);
        }
    }
}

/// `(dx [b, d], demb [t, b, d])`.
pub fn interaction_backward(x: &FlexTensor, emb: &FlexTensor, g: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let [t, b, d] = dims::<3>(emb);
    let f = t + 1;
    let width = d + n_pairs(f);
    assert_eq!(dims::<2>(g), [b, width], "fused interaction: gradient shape");
    let (x, emb, g) = (contiguous(x), contiguous(emb), contiguous(g));
    let mut dx = vec![0.0f32; b * d];
    let mut demb = vec![0.0f32; t * b * d];
    let de = Shared(demb.as_mut_ptr());
    let shape = Shape3 { t, b, d };
    for_chunks(&mut dx, ROWS * d, spread(b * (width - d) * d), |c, dxc| {
        gram_rows_backward_wide(dxc, de, c * ROWS, &x, &emb, &g, shape)
    });
    (tensor(dx, vec![b, d]), tensor(demb, vec![t, b, d]))
}

fn bce_term_f32(z: f32, y: f32) -> f32 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

pub fn bce_forward(z: &FlexTensor, y: &FlexTensor) -> FlexTensor {
    let (z, y) = (contiguous(z), contiguous(y));
    assert_eq!(z.len(), y.len(), "fused bce: logits and labels differ in length");
    let sum: f64 = z.iter().zip(y.iter()).map(|(&z, &y)| bce_term_f32(z, y) as f64).sum();
    tensor(vec![(sum / z.len() as f64) as f32], vec![1])
}

pub fn bce_backward(z: &FlexTensor, y: &FlexTensor, g: &FlexTensor) -> FlexTensor {
    let (zs, ys, g) = (contiguous(z), contiguous(y), contiguous(g));
    let scale = g[0] / zs.len() as f32;
    let dz: Vec<f32> = zs.iter().zip(ys.iter()).map(|(&z, &y)| (1.0 / (1.0 + (-z).exp()) - y) * scale).collect();
    tensor(dz, z.layout().shape().to_vec())
}
