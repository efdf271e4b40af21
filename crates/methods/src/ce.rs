//! Compositional embeddings with n chunks (the CCE authors' `ce` baseline): the vector is the
//! concatenation of `n_chunks` sub-vectors, each looked up in its own table through its own hash.
//! rows = budget / dim, so the tables hold `rows x dim` parameters in all.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};
use crate::export::{self, Export};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ChunkOptions {
    pub n_chunks: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions { n_chunks: 4 }
    }
}

/// Checks `dim % n_chunks == 0` and returns the chunk width.
pub(crate) fn chunk_dim(method: &str, dim: usize, n_chunks: usize) -> Result<usize, MethodError> {
    if n_chunks == 0 || !dim.is_multiple_of(n_chunks) {
        return Err(MethodError::BadOptions { method: method.into(), reason: format!("dim {dim} is not divisible by n_chunks {n_chunks}") });
    }
    Ok(dim / n_chunks)
}

/// Copies chunk `c` (width `dc`) of every `dim`-wide gradient row into `out`.
pub(crate) fn gather_chunk(grad: &[f32], dim: usize, c: usize, dc: usize, out: &mut Vec<f32>) {
    out.clear();
    for g in grad.chunks_exact(dim) {
        out.extend_from_slice(&g[c * dc..(c + 1) * dc]);
    }
}

pub struct Ce {
    vocab: usize,
    dim: usize,
    tables: Vec<Table>,
    hashes: Vec<UniversalHash>,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

impl Ce {
    pub const NAME: &'static str = "ce";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: ChunkOptions = p.options(Self::NAME)?;
        let dc = chunk_dim(Self::NAME, p.dim, o.n_chunks)?;
        let rows = p.budget_rows(Self::NAME, 1)?;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut tables = vec![];
        let mut hashes = vec![];
        for _ in 0..o.n_chunks {
            hashes.push(UniversalHash::new(rows, &mut rng));
            let mut t = Table::new(rows, dc, p.optimizer);
            t.init_uniform(p.init_scale, &mut rng);
            tables.push(t);
        }
        Ok(Ce { vocab: p.vocab, dim: p.dim, tables, hashes, rows_buf: vec![], grad_buf: vec![] })
    }
}

impl EmbeddingMethod for Ce {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        for (o, &id) in out.chunks_exact_mut(self.dim).zip(ids) {
            for ((t, h), oc) in self.tables.iter().zip(&self.hashes).zip(o.chunks_exact_mut(self.tables[0].dim)) {
                oc.copy_from_slice(t.row(h.hash(id) as usize));
            }
        }
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let dc = self.tables[0].dim;
        for c in 0..self.tables.len() {
            gather_chunk(grad, self.dim, c, dc, &mut self.grad_buf);
            let h = &self.hashes[c];
            self.tables[c].update_mapped(ids, |id| h.hash(id), &self.grad_buf, &mut self.rows_buf);
        }
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.tables.iter().map(|t| t.param_count()).sum(),
            optimizer_state_bytes: self.tables.iter().map(|t| t.state_bytes()).sum(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * self.hashes.len() as u64,
            ..Accounting::default()
        }
    }
    fn export(&self) -> Option<Export> {
        let mut arrays = vec![];
        let mut parts = vec![];
        for (c, (t, h)) in self.tables.iter().zip(&self.hashes).enumerate() {
            let name = format!("chunk{c}");
            parts.push(export::sum(t.dim, vec![export::term(&name, h.index())]));
            arrays.push((name, export::table(t.rows, t.dim, &t.weights)));
        }
        Some(Export { arrays, parts })
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        self.tables.iter_mut().map(|t| t.weights.as_mut_slice()).collect()
    }
    fn row_widths(&mut self) -> Vec<usize> {
        self.tables.iter().map(|t| t.dim).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Ce::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_errors() {
        check_gradients(&build, &MethodParams::new(500, 4, 4 * 10).with_options(json!({"n_chunks": 2})), &[1, 2, 3, 1, 499]);
        check_budgets(&build, 10_000, 16, &[16, 100, 3200, 99_999]);
        let err = Ce::new(&MethodParams::new(100, 6, 600).with_options(json!({"n_chunks": 4}))).err().unwrap().to_string();
        assert!(err.contains("not divisible"), "{err}");
        let err = Ce::new(&MethodParams::new(100, 8, 600).with_options(json!({"chunks": 4}))).err().unwrap().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
