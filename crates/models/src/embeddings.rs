//! The embedding tables of a model, one method per categorical column, outside burn's autodiff.
//!
//! burn's `Embedding` backward builds a dense `[rows, dim]` gradient and the optimizer then
//! sweeps every row (measured on this machine: 265 samples/s at 26 x 1M x 16 with Adam, 6.6 GB).
//! Here the methods gather rows in plain Rust into one `[tables, batch, dim]` buffer that becomes
//! a burn leaf tensor; after `backward` its gradient is handed back to each method's sparse,
//! fused row update. Tables run in parallel (rayon), one table per task, unless the run is
//! single-threaded (`crate::threads`).

use serde::{Deserialize, Serialize};

use crate::threads::{for_chunks, for_each_item, threaded};

use cqr_methods::{
    build_method, Accounting, EmbeddingMethod, HookReport, MethodError, MethodParams, Quantize, Quantized, RowOptimizer,
};

/// Which method and budget the tables use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    pub method: String,
    /// Per-table cap on trainable parameters. A table whose full size fits stays dense (the
    /// seed's budget policy).
    pub budget: u64,
    pub options: serde_json::Value,
    pub init_scale: f32,
    /// Quantize every table row-wise after training (`cqr_methods::quantize`), the tables that
    /// stay dense under the cap included; scored and counted as quantized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<Quantize>,
    /// `false`: a table whose full size fits the cap gets the method too, instead of a dense
    /// table (the default rule). For methods that store every table their way (ALPT's int8
    /// rows) and for isolating what a full small table does to a method's curve. Not
    /// serialised when true, so earlier cell ids stay the same.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub dense_under_cap: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// Accounting of one table, recorded per run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    pub column: String,
    pub vocab: usize,
    pub method: String,
    pub accounting: Accounting,
}

/// The tables at one point of training: every method's weights and layout state.
pub struct TablesSnapshot {
    weights: Vec<Vec<Vec<f32>>>,
    layouts: Vec<Option<cqr_methods::Layout>>,
}

pub struct EmbeddingTables {
    pub methods: Vec<Box<dyn EmbeddingMethod>>,
    pub dim: usize,
    columns: Vec<String>,
    ids_buf: Vec<Vec<u32>>,
}

impl EmbeddingTables {
    /// Builds one method per column. Columns with `vocab * dim <= budget` stay dense unless
    /// `spec.dense_under_cap` is false. `id_counts`: each table's training count per id, for the
    /// methods that need them (`cqr_methods::registry::needs_counts`; empty otherwise).
    pub fn new(
        spec: &EmbeddingSpec,
        columns: &[String],
        cardinalities: &[usize],
        dim: usize,
        optimizer: RowOptimizer,
        epochs: usize,
        steps: (usize, Option<usize>),
        seed: u64,
        id_counts: &[std::sync::Arc<[u32]>],
    ) -> Result<Self, MethodError> {
        let mut methods = Vec::with_capacity(cardinalities.len());
        for (c, &vocab) in cardinalities.iter().enumerate() {
            let name = if spec.dense_under_cap && (vocab as u64) * (dim as u64) <= spec.budget {
                "dense"
            } else {
                spec.method.as_str()
            };
            let options = if name == spec.method { spec.options.clone() } else { serde_json::Value::Null };
            let p = MethodParams {
                vocab,
                dim,
                budget: spec.budget,
                optimizer,
                // Every table gets its own stream; the same seed gives the same tables.
                seed: seed.wrapping_mul(1_000_003).wrapping_add(c as u64),
                epochs,
                steps_per_epoch: steps.0,
                eval_every_steps: steps.1,
                init_scale: spec.init_scale,
                options,
                table_vocabs: cardinalities.to_vec(),
                id_counts: id_counts.get(c).cloned(),
            };
            let m = build_method(name, &p).map_err(|e| match e {
                // Keep the kind: an impossible budget is a property of the cell, not a bug.
                MethodError::Budget { method, budget, reason } => MethodError::Budget {
                    method,
                    budget,
                    reason: format!("table {} (vocab {vocab}): {reason}", columns[c]),
                },
                other => MethodError::Invalid(format!("table {} (vocab {vocab}): {other}", columns[c])),
            })?;
            methods.push(match spec.quantize {
                Some(q) => Box::new(Quantized::new(m, q)),
                None => m,
            });
        }
        Ok(EmbeddingTables { methods, dim, columns: columns.to_vec(), ids_buf: vec![vec![]; cardinalities.len()] })
    }

    pub fn n_tables(&self) -> usize {
        self.methods.len()
    }

    /// Splits row-major `cats [batch, tables]` into one id list per table.
    fn split_ids(&mut self, cats: &[u32]) {
        let t = self.n_tables();
        for (c, buf) in self.ids_buf.iter_mut().enumerate() {
            buf.clear();
            buf.extend(cats.iter().skip(c).step_by(t));
        }
    }

    /// `cats: [batch, tables]` row-major -> `out: [tables, batch, dim]`.
    pub fn forward(&mut self, cats: &[u32], out: &mut Vec<f32>) {
        self.split_ids(cats);
        let b = cats.len() / self.n_tables().max(1);
        out.resize(self.n_tables() * b * self.dim, 0.0);
        let (ids, methods) = (&self.ids_buf, &self.methods);
        for_chunks(out, b * self.dim, threaded(), |c, o| methods[c].forward(&ids[c], o));
    }

    /// `grad: [tables, batch, dim]` for the ids of the last `forward`.
    pub fn backward(&mut self, grad: &[f32]) {
        let b = self.ids_buf.first().map(|v| v.len()).unwrap_or(0);
        let (ids, size) = (&self.ids_buf, b * self.dim);
        for_each_item(&mut self.methods, |c, m| m.backward(&ids[c], &grad[c * size..(c + 1) * size]));
    }

    /// Runs a lifecycle hook on every table in parallel; returns the reports of tables that changed.
    pub fn hook(
        &mut self,
        f: impl Fn(&mut dyn EmbeddingMethod) -> Result<HookReport, MethodError> + Sync,
    ) -> Result<Vec<String>, MethodError> {
        let reports: Vec<Result<HookReport, MethodError>> = for_each_item(&mut self.methods, |_, m| f(m.as_mut()));
        let mut out = vec![];
        for (c, r) in reports.into_iter().enumerate() {
            let r = r?;
            if r.changed {
                out.push(format!("{}: {}", self.columns[c], r.detail));
            }
        }
        Ok(out)
    }

    /// Copies of every table's trainable weights and layout state (CQR's pointers).
    pub fn snapshot(&mut self) -> TablesSnapshot {
        TablesSnapshot {
            weights: self.methods.iter_mut().map(|m| m.parameters_mut().iter().map(|s| s.to_vec()).collect()).collect(),
            layouts: self.methods.iter().map(|m| m.layout_snapshot()).collect(),
        }
    }

    /// Writes back what [`snapshot`](Self::snapshot) took (optimizer state is kept).
    pub fn restore(&mut self, s: &TablesSnapshot) {
        for ((m, w), l) in self.methods.iter_mut().zip(&s.weights).zip(&s.layouts) {
            for (dst, src) in m.parameters_mut().into_iter().zip(w) {
                dst.copy_from_slice(src);
            }
            if let Some(l) = l {
                m.restore_layout(l);
            }
        }
    }

    pub fn records(&self) -> Vec<TableRecord> {
        self.methods
            .iter()
            .zip(&self.columns)
            .map(|(m, c)| TableRecord {
                column: c.clone(),
                vocab: m.vocab(),
                method: m.name().to_string(),
                accounting: m.accounting(),
            })
            .collect()
    }

    /// Whether every table is within its budget now ([`EmbeddingMethod::within_budget`]).
    pub fn within_budget(&self) -> bool {
        self.methods.iter().all(|m| m.within_budget())
    }

    pub fn total(&self) -> Accounting {
        let mut a = Accounting::default();
        for m in &self.methods {
            a.add(&m.accounting());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot taken before a CQR cluster step restores the model of that point: weights,
    /// pointers and T1 hash together (the weights alone would be read through new pointers).
    #[test]
    fn a_snapshot_restores_cqr_across_a_cluster_step() {
        let spec = EmbeddingSpec {
            method: "cqr".into(),
            budget: 16 * 8,
            options: serde_json::json!({ "n_chunks": 2 }),
            init_scale: 0.05,
            quantize: None,
            dense_under_cap: true,
        };
        let cols = vec!["a".to_string()];
        let mut t =
            EmbeddingTables::new(&spec, &cols, &[300], 8, RowOptimizer::default(), 3, (10, None), 1, &[]).unwrap();
        let ids: Vec<u32> = (0..300).collect();
        let grad: Vec<f32> = (0..300 * 8).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.01).collect();
        let mut before = vec![];
        t.forward(&ids, &mut before);
        t.backward(&grad);
        t.forward(&ids, &mut before);
        let snap = t.snapshot();
        let log = t.hook(|m| m.on_epoch_end(0)).unwrap();
        assert!(!log.is_empty(), "cqr clustered");
        let mut after = vec![];
        t.forward(&ids, &mut after);
        assert_ne!(after, before);
        t.restore(&snap);
        t.forward(&ids, &mut after);
        assert_eq!(after, before);
    }

    /// A table that fits the cap is dense by default and gets the method with
    /// `dense_under_cap: false`; a table over the cap gets the method either way.
    #[test]
    fn dense_under_cap_decides_small_tables() {
        let cols = vec!["small".to_string(), "large".to_string()];
        let names = |under: bool| {
            let spec = EmbeddingSpec {
                method: "hashing".into(),
                budget: 64 * 8,
                options: serde_json::Value::Null,
                init_scale: 0.05,
                quantize: None,
                dense_under_cap: under,
            };
            let t = EmbeddingTables::new(&spec, &cols, &[50, 1000], 8, RowOptimizer::default(), 1, (10, None), 1, &[])
                .unwrap();
            t.methods.iter().map(|m| m.name()).collect::<Vec<_>>()
        };
        assert_eq!(names(true), ["dense", "hashing"]);
        assert_eq!(names(false), ["hashing", "hashing"]);
    }
}
