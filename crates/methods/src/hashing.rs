//! The hashing trick: id -> row = h(id) mod rows, rows = budget / dim.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::hash::UniversalHash;
use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};
use crate::export::{self, Export};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HashingOptions {}

pub struct Hashing {
    vocab: usize,
    table: Table,
    hash: UniversalHash,
    rows_buf: Vec<u32>,
}

impl Hashing {
    pub const NAME: &'static str = "hashing";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let _: HashingOptions = p.options(Self::NAME)?;
        let rows = p.budget_rows(Self::NAME, 1)?;
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let hash = UniversalHash::new(rows, &mut rng);
        let mut table = Table::new(rows, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut rng);
        Ok(Hashing { vocab: p.vocab, table, hash, rows_buf: Default::default() })
    }
}

impl EmbeddingMethod for Hashing {
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
        self.table.gather(ids.iter().map(|&id| self.hash.hash(id) as usize), out);
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let hash = &self.hash;
        self.table.update_mapped(ids, |id| hash.hash(id), grad, &mut self.rows_buf);
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.table.param_count(),
            optimizer_state_bytes: self.table.state_bytes(),
            index_bytes: 0,
            other_bytes: UniversalHash::BYTES,
            ..Accounting::default()
        }
    }
    fn export(&self) -> Option<Export> {
        let t = &self.table;
        let parts = vec![export::sum(t.dim, vec![export::term("table", self.hash.index())])];
        Some(Export { arrays: vec![("table".into(), export::table(t.rows, t.dim, &t.weights))], parts })
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_budgets, check_gradients};

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Hashing::new(p).unwrap())
    }

    #[test]
    fn gradients_budget_and_errors() {
        check_gradients(&build, &MethodParams::new(1000, 4, 40), &[3, 5, 3, 999, 17, 250]);
        check_budgets(&build, 10_000, 16, &[16, 100, 3200, 99_999]);
        let err = Hashing::new(&MethodParams::new(100, 16, 15)).err().unwrap().to_string();
        assert!(err.contains("budget of 15") && err.contains("at least 1 rows"), "{err}");
    }
}
