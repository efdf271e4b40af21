//! One flat array of trainable weights that element-wise methods (HashedNets, ROBE) read with
//! their own index functions: coordinate j of id's vector is `sign(id, j) * w[index(id, j)]`.
//! The array is a `Table` of one-float rows, so updates are the same fused sparse row updates as
//! every other method's (repeated entries summed, then one optimizer step per touched weight).

use rand::Rng;

use crate::{RowOptimizer, Table};

pub struct SharedArray {
    pub table: Table,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

impl SharedArray {
    pub fn new(size: usize, opt: RowOptimizer, init_scale: f32, rng: &mut impl Rng) -> Self {
        let mut table = Table::new(size, 1, opt);
        table.init_uniform(init_scale, rng);
        SharedArray { table, rows_buf: vec![], grad_buf: vec![] }
    }

    pub fn len(&self) -> usize {
        self.table.rows
    }

    pub fn is_empty(&self) -> bool {
        self.table.rows == 0
    }

    /// `out[i * dim + j] = sign * w[index]` for `(index, sign) = at(ids[i], j)`.
    #[inline]
    pub fn forward(&self, ids: &[u32], dim: usize, out: &mut [f32], at: impl Fn(u32, usize) -> (u32, f32)) {
        let w = &self.table.weights;
        for (o, &id) in out.chunks_exact_mut(dim).zip(ids) {
            for (j, o) in o.iter_mut().enumerate() {
                let (k, s) = at(id, j);
                *o = s * w[k as usize];
            }
        }
    }

    /// One optimizer step for `grad = dLoss/d out` of the same ids: weight `index` receives
    /// `sign * grad` of every coordinate that reads it.
    pub fn backward(&mut self, ids: &[u32], dim: usize, grad: &[f32], at: impl Fn(u32, usize) -> (u32, f32)) {
        self.rows_buf.clear();
        self.grad_buf.clear();
        for (g, &id) in grad.chunks_exact(dim).zip(ids) {
            for (j, &gj) in g.iter().enumerate() {
                let (k, s) = at(id, j);
                self.rows_buf.push(k);
                self.grad_buf.push(s * gj);
            }
        }
        self.table.update(&self.rows_buf, &self.grad_buf);
    }
}
