//! Magnitude pruning: train the full table, keep the `budget` weights of largest magnitude,
//! and (optionally) retrain under that mask. The simplest rival of PEP: a lightweight-embedding
//! benchmark (Tran et al., TOIS 2025) found it ahead of many more complex methods.
//!
//! 1. Train the plain full table (`vocab x dim`, every weight trainable) for `prune_at` of the
//!    training steps.
//! 2. Prune: keep the `budget` weights with the largest `|V|` (ties: the lower index), so at most
//!    `budget` weights remain, exactly the cap.
//! 3. Retrain the kept weights under the fixed mask until the end, from the trained values
//!    (`rewind: false`, the default: fine-tuning) or from the initial ones (`rewind: true`, the
//!    lottery-ticket variant). `prune_at: 1` prunes after the last step, with no retraining.
//! 4. Served sparse (CSR): the kept values, one column index per value, `vocab + 1` row offsets.
//!
//! It is PEP's machinery without the learned thresholds (`pep.rs` builds it with none: the
//! forward is the plain table and the ranking is plain `|V|`), so both share the mask, the
//! retraining and the sparse storage, and their accounting: training memory is the full table
//! (labelled "trains the full table" in reports, as PEP, PQ and RQ), index bytes count the mask
//! while retraining and the CSR arrays once served. Only evaluations after the prune are the
//! method's (`within_budget`).

use serde::Deserialize;

use crate::pep::Pep;
use crate::{MethodError, MethodParams};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MagPruneOptions {
    /// Fraction of the training steps after which to prune, in (0, 1]; 1: at the end.
    pub prune_at: f64,
    /// Retrain from the initial weights (true) or from the trained ones (false).
    pub rewind: bool,
}

impl Default for MagPruneOptions {
    fn default() -> Self {
        MagPruneOptions { prune_at: 0.5, rewind: false }
    }
}

/// Builds the method: a [`Pep`] without thresholds, named `magprune`.
pub struct MagPrune;

impl MagPrune {
    pub const NAME: &'static str = "magprune";

    pub fn new(p: &MethodParams) -> Result<Pep, MethodError> {
        p.check_common(Self::NAME)?;
        let o: MagPruneOptions = p.options(Self::NAME)?;
        if !(o.prune_at > 0.0 && o.prune_at <= 1.0) {
            return Err(MethodError::BadOptions { method: Self::NAME.into(), reason: format!("prune_at must be in (0, 1], got {}", o.prune_at) });
        }
        Pep::build(p, Self::NAME, None, o.prune_at, o.rewind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{all_rows, check_budgets, check_gradients_step};
    use crate::EmbeddingMethod;
    use serde_json::json;

    fn params(budget: u64) -> MethodParams {
        let mut p = MethodParams::new(20, 4, budget);
        p.init_scale = 1.0;
        p
    }

    fn build(p: &MethodParams) -> Box<dyn EmbeddingMethod> {
        Box::new(MagPrune::new(p).unwrap())
    }

    const IDS: [u32; 5] = [1, 7, 1, 19, 3];

    #[test]
    fn gradients_before_and_after_the_prune() {
        check_gradients_step(&build, &params(30), &IDS, 1e-3);
        let pruned = |p: &MethodParams| {
            let mut m = MagPrune::new(p).unwrap();
            m.prune();
            Box::new(m) as Box<dyn EmbeddingMethod>
        };
        check_gradients_step(&pruned, &params(30), &IDS, 1e-3);
        let sparse = |p: &MethodParams| {
            let mut m = MagPrune::new(p).unwrap();
            m.on_train_end().unwrap();
            Box::new(m) as Box<dyn EmbeddingMethod>
        };
        check_gradients_step(&sparse, &params(30), &IDS, 1e-3);
    }

    #[test]
    fn the_full_table_trains_then_the_largest_magnitudes_stay() {
        let mut m = MagPrune::new(&params(25)).unwrap();
        assert_eq!(m.name(), "magprune");
        assert!(!m.within_budget(), "the full table is not the method's model");
        assert_eq!(m.accounting().trainable_params, 80, "no thresholds: the plain table");
        let before = all_rows(&m);
        let (keep, _) = m.prune();
        assert_eq!(keep, 25);
        let after = all_rows(&m);
        let kept: Vec<f32> = before.iter().zip(&after).filter(|(_, &a)| a != 0.0).map(|(&b, _)| b.abs()).collect();
        let dropped: Vec<f32> = before.iter().zip(&after).filter(|(_, &a)| a == 0.0).map(|(&b, _)| b.abs()).collect();
        assert_eq!(kept.len(), 25);
        let min_kept = kept.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(dropped.iter().all(|&d| d <= min_kept), "a dropped weight was larger than a kept one");
        assert!(before.iter().zip(&after).all(|(b, a)| *a == 0.0 || a == b), "rewind: false keeps the trained values");
        assert!(m.within_budget());
        m.on_train_end().unwrap();
        assert_eq!(all_rows(&m), after, "storing it sparse changes no embedding");
        let acc = m.accounting();
        assert_eq!(acc.trainable_params, 25);
        assert_eq!(acc.index_bytes, 4 * 21 + 25, "CSR: u32 offsets per row + 1, a u8 column per value");
    }

    #[test]
    fn budgets_and_options() {
        // The served (sparse) table is within every cap.
        check_budgets(&|p| {
            let mut m = MagPrune::new(p).unwrap();
            m.on_train_end().unwrap();
            Box::new(m) as Box<dyn EmbeddingMethod>
        }, 500, 8, &[8, 100, 1000, 4000]);
        for o in [json!({"prune_at": 0.0}), json!({"prune_at": 1.5}), json!({"threshold_init": -1.0})] {
            assert!(MagPrune::new(&params(30).with_options(o.clone())).is_err(), "{o}");
        }
        assert!(MagPrune::new(&params(30).with_options(json!({"prune_at": 1.0, "rewind": true}))).is_ok());
    }
}
