//! The in-memory, preprocessed dataset every model trains on.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::column::Column;
use crate::invalid::{invalid, Invalid};
use crate::skip::SkipReport;

/// Contiguous row ranges of the three splits. Rows are stored in file (time) order, so each split
/// is one range; together they cover every row exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splits {
    pub train: Range<usize>,
    pub val: Range<usize>,
    pub test: Range<usize>,
}

/// Scores of the generating model on a planted dataset: the best a learner can hope for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TeacherScore {
    pub val_bce: f64,
    pub val_auc: f64,
    pub test_bce: f64,
    pub test_auc: f64,
}

/// Preprocessed features: dense floats, compact categorical ids, labels in {0, 1}.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub dense_names: Vec<String>,
    pub cat_names: Vec<String>,
    /// Row-major `[rows, n_dense]`.
    pub dense: Column<f32>,
    /// Row-major `[rows, n_cat]`; column `c` holds ids in `0..cardinalities[c]`.
    pub cats: Column<u32>,
    /// 0 or 1 per row.
    pub labels: Column<u8>,
    pub cardinalities: Vec<usize>,
    pub splits: Splits,
    pub skipped: SkipReport,
    pub teacher: Option<TeacherScore>,
}

impl Dataset {
    pub fn n_rows(&self) -> usize {
        self.labels.len()
    }
    pub fn n_dense(&self) -> usize {
        self.dense_names.len()
    }
    pub fn n_cat(&self) -> usize {
        self.cat_names.len()
    }
    pub fn dense_row(&self, r: usize) -> &[f32] {
        let d = self.n_dense();
        &self.dense[r * d..(r + 1) * d]
    }
    pub fn cat_row(&self, r: usize) -> &[u32] {
        let c = self.n_cat();
        &self.cats[r * c..(r + 1) * c]
    }
    pub fn label(&self, r: usize) -> f32 {
        self.labels[r] as f32
    }
    /// Fraction of positive labels over the given rows.
    pub fn label_rate(&self, rows: Range<usize>) -> f64 {
        let n = rows.len().max(1) as f64;
        self.labels[rows].iter().map(|&y| y as f64).sum::<f64>() / n
    }
    /// Whether the arrays are memory-mapped (out of core) rather than held in memory.
    pub fn is_mapped(&self) -> bool {
        self.cats.is_mapped() || self.labels.is_mapped()
    }
    /// Bytes of the three arrays.
    pub fn array_bytes(&self) -> usize {
        self.dense.bytes() + self.cats.bytes() + self.labels.bytes()
    }

    /// Gives the pages of rows `rows` back to the kernel when the arrays are mapped (a no-op in
    /// memory); the rows stay readable.
    pub fn release(&self, rows: Range<usize>) {
        let (d, c) = (self.n_dense(), self.n_cat());
        self.dense.release(rows.start * d..rows.end * d);
        self.cats.release(rows.start * c..rows.end * c);
        self.labels.release(rows);
    }

    /// Checks the invariants the models rely on; a violated one is a bug in a loader.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_shape()?;
        for (i, &id) in self.cats.iter().enumerate() {
            let c = i % self.n_cat();
            if id as usize >= self.cardinalities[c] {
                return invalid(
                    format!("row {} column {}", i / self.n_cat(), self.cat_names[c]),
                    format!("id {id} >= cardinality {}", self.cardinalities[c]),
                );
            }
        }
        if let Some(r) = self.labels.iter().position(|&y| y > 1) {
            return invalid(format!("row {r} label"), format!("{} is not 0 or 1", self.labels[r]));
        }
        Ok(())
    }

    /// [`Dataset::validate`] without the scan over every value: array lengths and splits.
    pub fn validate_shape(&self) -> Result<(), Invalid> {
        let n = self.n_rows();
        if self.dense.len() != n * self.n_dense() {
            return invalid("dense", format!("{} values, expected {}", self.dense.len(), n * self.n_dense()));
        }
        if self.cats.len() != n * self.n_cat() {
            return invalid("cats", format!("{} values, expected {}", self.cats.len(), n * self.n_cat()));
        }
        if self.cardinalities.len() != self.n_cat() {
            return invalid("cardinalities", "one per categorical column expected");
        }
        let s = &self.splits;
        // Splits lie within the rows and do not overlap, except that (MovieLens) one held-out set
        // may serve as both validation and test. Rows outside every split are allowed (a run on a
        // prefix of a large dataset).
        let inside = [&s.train, &s.val, &s.test].iter().all(|r| r.start <= r.end && r.end <= n);
        let apart =
            |a: &Range<usize>, b: &Range<usize>| a.is_empty() || b.is_empty() || a.end <= b.start || b.end <= a.start;
        if !inside
            || !apart(&s.train, &s.val)
            || !apart(&s.train, &s.test)
            || (s.val != s.test && !apart(&s.val, &s.test))
        {
            return invalid("splits", format!("{s:?} are not disjoint ranges within the {n} rows"));
        }
        Ok(())
    }
}
