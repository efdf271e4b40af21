//! Bloom / multi-hash embeddings (Serrà & Karatzoglou, RecSys 2017): an id's vector is the sum of
//! `k` rows of one shared table, chosen by `k` independent hash functions.
//!
//! rows = ⌊budget / dim⌋; trainable parameters rows · dim; k hash functions (24 bytes each), no
//! index arrays. Rows start at U(-a/√k, a/√k) so the sum of k rows has the spread of one row of
//! the other methods. The gradient of each of the k rows is the output gradient (a row hit twice
//! by one id, or by several ids of a batch, sums them before the optimizer step).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};
use crate::export::{self, Export};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BloomOptions {
    /// Hash functions (rows summed per id).
    pub k: usize,
}

impl Default for BloomOptions {
    fn default() -> Self {
        BloomOptions { k: 2 }
    }
}

pub struct Bloom {
    vocab: usize,
    table: Table,
    hashes: Vec<UniversalHash>,
    rows_buf: Vec<u32>,
    grad_buf: Vec<f32>,
}

impl Bloom {
    pub const NAME: &'static str = "bloom";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let o: BloomOptions = p.options(Self::NAME)?;
        if !(1..=16).contains(&o.k) {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: format!("k must be in 1..=16, got {}", o.k) });
        }
        let rows = p.budget_rows(Self::NAME, 1)?;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let hashes = (0..o.k).map(|_| UniversalHash::new(rows, &mut rng)).collect();
        let mut table = Table::new(rows, p.dim, p.optimizer);
        table.init_uniform(p.init_scale / (o.k as f32).sqrt(), &mut rng);
        Ok(Bloom { vocab: p.vocab, table, hashes, rows_buf: vec![], grad_buf: vec![] })
    }
}

impl EmbeddingMethod for Bloom {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.table.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        let d = self.table.dim;
        for (o, &id) in out.chunks_exact_mut(d).zip(ids) {
            o.fill(0.0);
            for h in &self.hashes {
                o.iter_mut().zip(self.table.row(h.hash(id) as usize)).for_each(|(o, &w)| *o += w);
            }
        }
    }
    /// One part: the sum of the rows `h_1(id) ... h_k(id)` of the one table.
    fn export(&self) -> Option<Export> {
        let t = &self.table;
        let terms = self.hashes.iter().map(|h| export::term("table", h.index())).collect();
        Some(Export { arrays: vec![("table".into(), export::table(t.rows, t.dim, &t.weights))], parts: vec![export::sum(t.dim, terms)] })
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        self.rows_buf.clear();
        self.grad_buf.clear();
        for h in &self.hashes {
            self.rows_buf.extend(ids.iter().map(|&id| h.hash(id)));
            self.grad_buf.extend_from_slice(grad);
        }
        self.table.update(&self.rows_buf, &self.grad_buf);
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.table.param_count(),
            optimizer_state_bytes: self.table.state_bytes(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES * self.hashes.len() as u64,
            ..Accounting::default()
        }
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};
    use serde_json::json;

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Bloom::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_errors() {
        for k in [1, 2, 3] {
            check_gradients(&build, &MethodParams::new(1000, 4, 4 * 7).with_options(json!({ "k": k })), &[3, 5, 3, 999, 17, 250]);
        }
        check_budgets(&build, 10_000, 16, &[16, 100, 3200, 99_999]);
        assert_eq!(Bloom::new(&MethodParams::new(100, 4, 40).with_options(json!({"k": 3}))).unwrap().accounting().other_bytes, 72);
        assert!(Bloom::new(&MethodParams::new(100, 4, 40).with_options(json!({"k": 0}))).is_err());
        assert!(Bloom::new(&MethodParams::new(100, 4, 40).with_options(json!({"kk": 2}))).is_err());
    }
}
