//! `cqr data inspect`: streaming statistics of a raw file (rows, label rate, missing rates,
//! per-column cardinality). Memory grows with the number of distinct values, not with rows.

use std::collections::HashSet;
use std::path::Path;

use crate::error::Result;
use crate::records::{RawRecord, RecordReader, TabularFormat, MISSING_KEY};
use crate::skip::{BadRowPolicy, SkipReport};

#[derive(Debug, Clone)]
pub struct ColumnStats {
    pub name: String,
    pub missing: u64,
    /// Distinct non-missing values (categorical columns only).
    pub cardinality: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct InspectReport {
    pub rows: u64,
    pub positives: u64,
    pub columns: Vec<ColumnStats>,
    pub skipped: SkipReport,
}

impl InspectReport {
    pub fn label_rate(&self) -> f64 {
        self.positives as f64 / self.rows.max(1) as f64
    }
}

pub fn inspect_tabular(path: &Path, format: TabularFormat, policy: BadRowPolicy) -> Result<InspectReport> {
    let mut rd = RecordReader::open(path, format, policy)?;
    let mut rec = RawRecord::default();
    let nd = format.n_dense();
    let mut missing = vec![0u64; nd + format.n_cat()];
    let mut distinct: Vec<HashSet<u64>> = vec![HashSet::new(); format.n_cat()];
    let (mut rows, mut pos) = (0u64, 0u64);
    while rd.next_record(&mut rec)?.is_some() {
        rows += 1;
        pos += rec.label as u64;
        for (i, v) in rec.dense.iter().enumerate() {
            missing[i] += v.is_none() as u64;
        }
        for (c, &k) in rec.cats.iter().enumerate() {
            if k == MISSING_KEY {
                missing[nd + c] += 1;
            } else {
                distinct[c].insert(k);
            }
        }
    }
    let mut columns: Vec<ColumnStats> = format
        .dense_names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| ColumnStats { name, missing: missing[i], cardinality: None })
        .collect();
    columns.extend(format.cat_names().into_iter().enumerate().map(|(c, name)| ColumnStats {
        name,
        missing: missing[nd + c],
        cardinality: Some(distinct[c].len()),
    }));
    Ok(InspectReport { rows, positives: pos, columns, skipped: rd.skips().clone() })
}

impl std::fmt::Display for InspectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "rows: {}", self.rows)?;
        writeln!(f, "label rate: {:.4}", self.label_rate())?;
        writeln!(f, "skipped: {}", self.skipped)?;
        writeln!(f, "{:<16} {:>9} {:>12}", "column", "missing", "cardinality")?;
        for c in &self.columns {
            let card = c.cardinality.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            writeln!(f, "{:<16} {:>8.2}% {:>12}", c.name, 100.0 * c.missing as f64 / self.rows.max(1) as f64, card)?;
        }
        Ok(())
    }
}
