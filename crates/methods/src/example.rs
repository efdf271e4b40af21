//! The walkthrough's example method (compiled for tests only): id -> row = id mod rows,
//! rows = budget / dim. It is the smallest complete method, registered by one line of the
//! `methods!` list like every other (`#[cfg(test)] example::Example`), so the tests below prove
//! that the path docs/methods.md describes compiles, passes the checks every method passes and
//! trains. Copy it to start a method of your own.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Accounting, EmbeddingMethod, MethodError, MethodParams, Table};

/// The method's own options: none. `deny_unknown_fields` turns a typo into a config error.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleOptions {}

pub struct Example {
    vocab: usize,
    table: Table,
    /// The rows of a step's ids, kept by `backward` so that a step allocates nothing.
    rows_buf: Vec<u32>,
}

impl Example {
    pub const NAME: &'static str = "example";

    /// Checks everything once; `forward`/`backward` cannot fail afterwards.
    pub fn new(p: &MethodParams) -> Result<Self, MethodError> {
        p.check_common(Self::NAME)?;
        let _: ExampleOptions = p.options(Self::NAME)?;
        let rows = p.budget_rows(Self::NAME, 1)?;
        let mut table = Table::new(rows, p.dim, p.optimizer);
        table.init_uniform(p.init_scale, &mut ChaCha8Rng::seed_from_u64(p.seed));
        Ok(Example { vocab: p.vocab, table, rows_buf: vec![] })
    }

    fn row(&self, id: u32) -> u32 {
        id % self.table.rows as u32
    }
}

impl EmbeddingMethod for Example {
    fn name(&self) -> &'static str {
        Self::NAME
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn dim(&self) -> usize {
        self.table.dim
    }
    /// `ids`: [n]; `out`: [n, dim], row i the embedding of `ids[i]`.
    fn forward(&self, ids: &[u32], out: &mut [f32]) {
        self.table.gather(ids.iter().map(|&id| self.row(id) as usize), out);
    }
    /// `grad`: [n, dim], the loss gradient with respect to `forward`'s output.
    fn backward(&mut self, ids: &[u32], grad: &[f32]) {
        let rows = self.table.rows as u32;
        self.table.update_mapped(ids, |id| id % rows, grad, &mut self.rows_buf);
    }
    fn accounting(&self) -> Accounting {
        Accounting {
            trainable_params: self.table.param_count(),
            optimizer_state_bytes: self.table.state_bytes(),
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
    use crate::{build_method, method_names, registry, RowOptimizer};

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(Example::new(p).unwrap())
    }

    #[test]
    fn registered_by_its_line_with_no_facts() {
        assert!(method_names().contains(&"example"));
        assert_eq!(registry::facts("example"), registry::Facts::PLAIN);
        let err = build_method("example", &MethodParams::new(10, 4, 40).with_options(serde_json::json!({"rows": 3})));
        assert!(err.err().unwrap().to_string().contains("unknown field `rows`"));
    }

    #[test]
    fn passes_the_checks_every_method_passes() {
        check_gradients(&build, &MethodParams::new(100, 4, 40), &[3, 13, 3, 99, 0]);
        check_budgets(&build, 1000, 8, &[8, 100, 7999]);
    }

    /// Built by name, it fits targets by its own row updates: each id's target is the mean of
    /// the targets sharing its row, so the error falls to the collision floor.
    #[test]
    fn trains() {
        let (vocab, dim) = (64, 4);
        let p = MethodParams::new(vocab, dim, 48 * dim as u64).with_optimizer(RowOptimizer::Sgd { lr: 0.5 });
        let mut m = build_method("example", &p).unwrap();
        let ids: Vec<u32> = (0..vocab as u32).collect();
        let target: Vec<f32> = (0..vocab * dim).map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0).collect();
        let mse = |m: &dyn EmbeddingMethod| {
            let mut out = vec![0.0; vocab * dim];
            m.forward(&ids, &mut out);
            let grad: Vec<f32> = out.iter().zip(&target).map(|(o, t)| o - t).collect();
            (grad.iter().map(|g| g * g).sum::<f32>() / grad.len() as f32, grad)
        };
        let (first, _) = mse(m.as_ref());
        for _ in 0..50 {
            let (_, grad) = mse(m.as_ref());
            m.backward(&ids, &grad);
        }
        let (last, _) = mse(m.as_ref());
        assert!(last < 0.5 * first, "mse {first} -> {last}");
    }
}
