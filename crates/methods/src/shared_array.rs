//! One flat array of trainable weights that element-wise methods (HashedNets, ROBE) read with
//! their own index functions: coordinate j of id's vector is `sign(id, j) * w[index(id, j)]`.
//! The array is a `Table` of one-float rows, so updates are the same fused sparse row updates as
//! every other method's (repeated entries summed, then one optimizer step per touched weight).

use rand::Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, RowOptimizer, Table};

/// Where coordinate j of an id lives in the array, and its sign.
pub trait EntryMap: Copy + Send + Sync {
    fn at(&self, id: u32, j: usize) -> (u32, f32);
    /// Hash functions it stores (24 bytes each).
    fn n_hashes(&self) -> u64;
}

/// An embedding method made of one shared array and an entry map (HashedNets, ROBE).
pub struct ArrayMethod<M: EntryMap> {
    name: &'static str,
    vocab: usize,
    dim: usize,
    array: SharedArray,
    pub(crate) map: M,
}

impl<M: EntryMap> ArrayMethod<M> {
    pub fn new(name: &'static str, vocab: usize, dim: usize, array: SharedArray, map: M) -> Self {
        ArrayMethod { name, vocab, dim, array, map }
    }
}

impl<M: EntryMap> EmbeddingMethod for ArrayMethod<M> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let m = self.map;
        self.array.forward(ids, self.dim, out, |id, j| m.at(id, j));
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let m = self.map;
        self.array.backward(ids, self.dim, grad, |id, j| m.at(id, j));
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.array.table.param_count(),
            optimizer_state_bytes: self.array.table.state_bytes(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * self.map.n_hashes(),
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.array.table.weights]
    }
}

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
