//! DLRM-style preprocessing of streamed click logs, with splits and categorical encoding.
//!
//! Three streaming passes, so memory is the size of the output arrays (plus vocabulary counts),
//! never the size of the file: (1) count lines to place split boundaries, (2) count categorical
//! values over the training split to build vocabularies, (3) encode every row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::records::{count_lines, RawRecord, RecordReader, TabularFormat};
use crate::skip::{BadRowPolicy, SkipReport};

/// How raw categorical values become table rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CategoricalEncoding {
    /// Per-column vocabulary built on the training split. Values seen at least `min_freq` times get
    /// ids `1..`; rare and unseen values share id 0 (the column's OOV row).
    Vocabulary { min_freq: u32 },
    /// No vocabulary: id = raw value mod `range` (DLRM's `--max-ind-range`).
    Modulo { range: u64 },
}

impl Default for CategoricalEncoding {
    fn default() -> Self {
        CategoricalEncoding::Vocabulary { min_freq: 1 }
    }
}

/// How rows (in file order, which is time order for Criteo) are divided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitSpec {
    /// Consecutive fractions of the lines: train first, then validation, then test.
    Fractions { train: f64, val: f64, test: f64 },
    /// DLRM's Kaggle split: 7 equal parts (days); the first 6 train, the 7th is halved into test
    /// (first half) and validation (second half).
    Kaggle,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec::Fractions { train: 0.8, val: 0.1, test: 0.1 }
    }
}

impl SplitSpec {
    /// Line boundaries `[train_end, second_end]` for `n` lines, and whether val comes before test.
    fn boundaries(&self, n: u64) -> Result<(u64, u64, bool)> {
        match *self {
            SplitSpec::Fractions { train, val, test } => {
                for (name, f) in [("train", train), ("val", val), ("test", test)] {
                    if !(0.0..=1.0).contains(&f) || !f.is_finite() {
                        return Err(DataError::Options(format!("split fraction {name} = {f} is not in [0, 1]")));
                    }
                }
                let sum = train + val + test;
                if (sum - 1.0).abs() > 1e-6 {
                    return Err(DataError::Options(format!("split fractions sum to {sum}, expected 1")));
                }
                let a = (train * n as f64).round() as u64;
                let b = ((train + val) * n as f64).round() as u64;
                Ok((a, b.max(a), true))
            }
            SplitSpec::Kaggle => {
                // DLRM: days of equal size; the last day is split in two halves.
                let day = n / 7;
                let train_end = day * 6;
                let rest = n - train_end;
                Ok((train_end, train_end + rest / 2, false))
            }
        }
    }
}

/// Everything that changes the preprocessed arrays (and so the cache key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessOptions {
    pub encoding: CategoricalEncoding,
    pub split: SplitSpec,
    pub bad_rows: BadRowPolicy,
    /// Read at most this many lines of each file (for quick runs on the full logs).
    pub max_rows: Option<u64>,
}

/// Files of one tabular dataset. With `test` set, the whole test file is the test split and the
/// train file's lines are divided into train and validation in the ratio of the split fractions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TabularSource {
    pub format: TabularFormat,
    pub train: PathBuf,
    pub test: Option<PathBuf>,
}

/// DLRM's integer transform: missing -> 0, negative -> 0, then ln(1 + x).
pub fn log_transform(v: Option<i64>) -> f32 {
    match v {
        Some(x) if x > 0 => (x as f64).ln_1p() as f32,
        _ => 0.0,
    }
}

/// Per-column vocabularies: raw key -> compact id (0 is OOV).
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub columns: Vec<HashMap<u64, u32>>,
}

impl Vocabulary {
    /// Keeps values with `count >= min_freq`, assigning ids in ascending key order so the result
    /// does not depend on hash-map iteration order.
    pub fn from_counts(counts: Vec<HashMap<u64, u32>>, min_freq: u32) -> Self {
        let columns = counts
            .into_iter()
            .map(|c| {
                let mut keys: Vec<u64> = c.into_iter().filter(|&(_, n)| n >= min_freq.max(1)).map(|(k, _)| k).collect();
                keys.sort_unstable();
                keys.into_iter().enumerate().map(|(i, k)| (k, i as u32 + 1)).collect()
            })
            .collect();
        Vocabulary { columns }
    }
    pub fn cardinality(&self, col: usize) -> usize {
        self.columns[col].len() + 1
    }
    pub fn encode(&self, col: usize, key: u64) -> u32 {
        self.columns[col].get(&key).copied().unwrap_or(0)
    }
}

/// Loads and preprocesses a tabular source (no cache; see [`crate::cache::load_cached`]).
pub fn load_tabular(src: &TabularSource, opts: &PreprocessOptions) -> Result<Dataset> {
    let format = src.format;
    if let CategoricalEncoding::Modulo { range } = opts.encoding {
        if range == 0 || range > u32::MAX as u64 {
            return Err(DataError::Options(format!("modulo range must be in 1..=2^32-1, got {range}")));
        }
    }
    let mut lines = count_lines(&src.train)?;
    if let Some(m) = opts.max_rows {
        lines = lines.min(m);
    }
    if lines == 0 {
        return Err(DataError::Empty { path: src.train.clone(), reason: "file is empty".into() });
    }
    // Line boundaries (1-based line numbers `<= a` are the first split, etc.).
    let (a, b, val_first) = if src.test.is_some() {
        let (train, val) = match opts.split {
            SplitSpec::Fractions { train, val, .. } => (train, val),
            SplitSpec::Kaggle => (6.0, 0.5),
        };
        let tv = train + val;
        if tv <= 0.0 {
            return Err(DataError::Options("train + val fractions must be positive".into()));
        }
        let a = ((train / tv) * lines as f64).round() as u64;
        (a, lines, true)
    } else {
        opts.split.boundaries(lines)?
    };

    // Pass 2: vocabularies over the training lines.
    let vocab = match opts.encoding {
        CategoricalEncoding::Vocabulary { min_freq } => {
            let mut counts: Vec<HashMap<u64, u32>> = vec![HashMap::new(); format.n_cat()];
            let mut rd = RecordReader::open(&src.train, format, opts.bad_rows)?;
            let mut rec = RawRecord::default();
            while let Some(line) = rd.next_record(&mut rec)? {
                if line > a {
                    break;
                }
                for (c, &k) in rec.cats.iter().enumerate() {
                    *counts[c].entry(k).or_insert(0) += 1;
                }
            }
            Some(Vocabulary::from_counts(counts, min_freq))
        }
        CategoricalEncoding::Modulo { .. } => None,
    };

    // Pass 3: encode.
    let n_dense = format.n_dense();
    let n_cat = format.n_cat();
    let mut ds = Dataset {
        name: src.train.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        dense_names: format.dense_names(),
        cat_names: format.cat_names(),
        dense: Vec::with_capacity(lines as usize * n_dense),
        cats: Vec::with_capacity(lines as usize * n_cat),
        labels: Vec::with_capacity(lines as usize),
        cardinalities: (0..n_cat)
            .map(|c| match (&vocab, &opts.encoding) {
                (Some(v), _) => v.cardinality(c),
                (None, CategoricalEncoding::Modulo { range }) => *range as usize,
                _ => unreachable!("vocabulary exists unless encoding is modulo"),
            })
            .collect(),
        splits: Splits { train: 0..0, val: 0..0, test: 0..0 },
        skipped: SkipReport::default(),
        teacher: None,
    };
    let encode = |ds: &mut Dataset, rec: &RawRecord| {
        ds.labels.push(rec.label as f32);
        ds.dense.extend(rec.dense.iter().map(|&v| log_transform(v)));
        for (c, &k) in rec.cats.iter().enumerate() {
            let id = match (&vocab, &opts.encoding) {
                (Some(v), _) => v.encode(c, k),
                (None, CategoricalEncoding::Modulo { range }) => (k % range) as u32,
                _ => unreachable!(),
            };
            ds.cats.push(id);
        }
    };
    let mut rd = RecordReader::open(&src.train, format, opts.bad_rows)?;
    let mut rec = RawRecord::default();
    let mut cut_a = None;
    let mut cut_b = None;
    while let Some(line) = rd.next_record(&mut rec)? {
        if line > lines {
            break;
        }
        if line > a && cut_a.is_none() {
            cut_a = Some(ds.n_rows());
        }
        if line > b && cut_b.is_none() {
            cut_b = Some(ds.n_rows());
        }
        encode(&mut ds, &rec);
    }
    ds.skipped.merge(rd.skips());
    let end_train_file = ds.n_rows();
    let ca = cut_a.unwrap_or(end_train_file);
    let cb = cut_b.unwrap_or(end_train_file).max(ca);
    if let Some(test) = &src.test {
        let mut rd = RecordReader::open(test, format, opts.bad_rows)?;
        let limit = opts.max_rows.unwrap_or(u64::MAX);
        while let Some(line) = rd.next_record(&mut rec)? {
            if line > limit {
                break;
            }
            encode(&mut ds, &rec);
        }
        ds.skipped.merge(rd.skips());
        ds.splits = Splits { train: 0..ca, val: ca..end_train_file, test: end_train_file..ds.n_rows() };
    } else if val_first {
        ds.splits = Splits { train: 0..ca, val: ca..cb, test: cb..ds.n_rows() };
    } else {
        ds.splits = Splits { train: 0..ca, test: ca..cb, val: cb..ds.n_rows() };
    }
    if ds.splits.train.is_empty() {
        return Err(DataError::Empty { path: src.train.clone(), reason: "no training rows after parsing and splitting".into() });
    }
    Ok(ds)
}

/// A stable description of a file for cache keys: canonical path, size and modification time.
pub fn file_identity(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    let canon = std::fs::canonicalize(path).map_err(|e| DataError::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}|{}|{}", canon.display(), meta.len(), mtime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn log_transform_matches_dlrm() {
        assert_eq!(log_transform(None), 0.0);
        assert_eq!(log_transform(Some(-5)), 0.0);
        assert_eq!(log_transform(Some(0)), 0.0);
        assert!((log_transform(Some(1)) - 2f32.ln()).abs() < 1e-7);
        assert!((log_transform(Some(1000)) - 1001f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn vocabulary_threshold_and_oov() {
        let mut c = HashMap::new();
        c.insert(10u64, 3u32);
        c.insert(5u64, 1u32);
        c.insert(7u64, 2u32);
        let v = Vocabulary::from_counts(vec![c], 2);
        assert_eq!(v.cardinality(0), 3); // OOV + {7, 10}
        assert_eq!(v.encode(0, 7), 1);
        assert_eq!(v.encode(0, 10), 2);
        assert_eq!(v.encode(0, 5), 0, "rare value maps to OOV");
        assert_eq!(v.encode(0, 99), 0, "unseen value maps to OOV");
    }

    fn criteo_file(n: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..n {
            let mut fields = vec![format!("{}", i % 2)];
            fields.extend((0..13).map(|j| format!("{}", (i + j) % 5)));
            fields.extend((0..26).map(|j| format!("{:08x}", (i % (j + 2)) as u32)));
            writeln!(f, "{}", fields.join("\t")).unwrap();
        }
        f
    }

    #[test]
    fn split_sizes_for_both_kinds() {
        let f = criteo_file(700);
        let src = TabularSource { format: TabularFormat::Criteo, train: f.path().into(), test: None };
        let opts = PreprocessOptions { split: SplitSpec::Fractions { train: 0.8, val: 0.1, test: 0.1 }, ..Default::default() };
        let ds = load_tabular(&src, &opts).unwrap();
        assert_eq!((ds.splits.train.len(), ds.splits.val.len(), ds.splits.test.len()), (560, 70, 70));
        ds.validate().unwrap();
        let opts = PreprocessOptions { split: SplitSpec::Kaggle, ..Default::default() };
        let ds = load_tabular(&src, &opts).unwrap();
        assert_eq!(ds.splits.train, 0..600);
        assert_eq!(ds.splits.test, 600..650);
        assert_eq!(ds.splits.val, 650..700);
    }

    #[test]
    fn vocabulary_built_on_train_only() {
        let f = criteo_file(100);
        let src = TabularSource { format: TabularFormat::Criteo, train: f.path().into(), test: None };
        let opts = PreprocessOptions { split: SplitSpec::Fractions { train: 0.5, val: 0.25, test: 0.25 }, ..Default::default() };
        let ds = load_tabular(&src, &opts).unwrap();
        // Column C26 holds i % 27: only 0..=26 appear in the 50 train rows, so all are known.
        assert_eq!(ds.cardinalities[25], 28);
        let opts = PreprocessOptions { encoding: CategoricalEncoding::Modulo { range: 3 }, ..opts };
        let ds = load_tabular(&src, &opts).unwrap();
        assert!(ds.cats.iter().all(|&c| c < 3));
        assert_eq!(ds.cardinalities, vec![3; 26]);
    }

    #[test]
    fn separate_test_file() {
        let tr = criteo_file(100);
        let te = criteo_file(30);
        let src = TabularSource { format: TabularFormat::Criteo, train: tr.path().into(), test: Some(te.path().into()) };
        let opts = PreprocessOptions { split: SplitSpec::Fractions { train: 0.9, val: 0.1, test: 0.0 }, ..Default::default() };
        let ds = load_tabular(&src, &opts).unwrap();
        assert_eq!(ds.splits.train, 0..90);
        assert_eq!(ds.splits.val, 90..100);
        assert_eq!(ds.splits.test, 100..130);
    }

    #[test]
    fn bad_fractions_are_rejected() {
        let f = criteo_file(10);
        let src = TabularSource { format: TabularFormat::Criteo, train: f.path().into(), test: None };
        let opts = PreprocessOptions { split: SplitSpec::Fractions { train: 0.8, val: 0.3, test: 0.1 }, ..Default::default() };
        let err = load_tabular(&src, &opts).unwrap_err().to_string();
        assert!(err.contains("sum to"), "{err}");
    }
}
