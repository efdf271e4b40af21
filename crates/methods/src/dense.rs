//! The full table: one row per id (the quality reference; ignores the budget).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};
use crate::export::{self, Export, Index};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DenseOptions {}

pub struct Dense {
    table: Table,
}

impl Dense {
    pub const NAME: &'static str = "dense";

    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let _: DenseOptions = p.options(Self::NAME)?;
        let mut table = Table::new(p.vocab, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut ChaCha8Rng::seed_from_u64(p.seed));
        Ok(Dense { table })
    }
}

impl EmbeddingMethod for Dense {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.table.rows
    }
    fn dim(&self) -> usize {
        self.table.dim
    }
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        self.table.gather(ids.iter().map(|&id| id as usize), out);
    }
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        self.table.update(ids, grad);
    }
    fn accounting(&self) -> Accounting {
        Accounting { trainable_params: self.table.param_count(), optimizer_state_bytes: self.table.state_bytes(), index_bytes: 0, other_bytes: 0, ..Accounting::default() }
    }
    fn export(&self) -> Option<Export> {
        let t = &self.table;
        let parts = vec![export::sum(t.dim, vec![export::term("table", Index::Identity)])];
        Some(Export { arrays: vec![("table".into(), export::table(t.rows, t.dim, &t.weights))], parts })
    }
    fn parameters_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.table.weights]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::check_gradients;

    #[test]
    fn gradients_and_sparse_update() {
        let build = |p: &MethodParams| Box::new(Dense::new(p).unwrap()) as Box<dyn EmbeddingMethod>;
        check_gradients(&build, &MethodParams::new(30, 4, 0), &[3, 5, 3, 29]);
    }

    #[test]
    fn rejects_empty_vocab_and_zero_dim() {
        assert!(Dense::new(&MethodParams::new(0, 4, 100)).is_err());
        assert!(Dense::new(&MethodParams::new(10, 0, 100)).is_err());
    }
}
