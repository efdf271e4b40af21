//! Any tabular dataset: CSV, TSV and Parquet files read with polars, and libsvm/libfm text files,
//! preprocessed the way Criteo is (vocabulary with `min_freq` and OOV, or modulo; `log1p` or raw
//! numerics; the same bad-row policy).
//!
//! Columns are named (files with a header, Parquet) or given by 0-based index (headerless files).
//! Categorical values of any type are keyed by the FNV-1a hash of their text; an empty or null
//! value is a value of its own ("missing"), as in Criteo. Numeric values parse as f64; missing is 0.
//! The label must be 0/1 (also `-1`/`+1`, `true`/`false`; -1 is the negative class).
//!
//! libsvm/libfm lines are `label index:value ...` (plain: the k-th pair of a line belongs to field
//! k, as in the NFM/AFM benchmark files such as Frappe and MovieLens-tag, so every line has the same
//! number of pairs) or `label field:index:value ...` (field-aware, libffm style: the field is
//! given; a field absent from a line is missing). Every field is one-hot categorical keyed by its
//! feature index; a value other than 1 is an error rather than silently dropped.
//!
//! Splits: `val_path` and `test_path` given: three files; only `test_path`: the train file gives
//! train and validation in the ratio of the split fractions; neither: the split fractions of one
//! file, in order. Tables are read into memory before encoding (one pass of polars), then encoded
//! into a [`RowSink`] like the streamed formats.

#[cfg(feature = "tables")]
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[cfg(feature = "tables")]
use polars::prelude::{CsvParseOptions, CsvReadOptions, DataType, ParquetReader, SerReader};
use serde::{Deserialize, Serialize};

use crate::cache::RowSink;
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::preprocess::{reduce, CategoricalEncoding, KeyMap, PreprocessOptions, SplitSpec, Vocabulary};
#[cfg(feature = "tables")]
use crate::records::fnv1a64;
use crate::records::MISSING_KEY;
use crate::skip::{BadRowPolicy, SkipReport};

#[cfg(feature = "tables")]
mod inspect;
mod svm;
#[cfg(feature = "tables")]
pub use inspect::inspect_table;
use svm::read_svm;

/// File formats of [`TableConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Csv,
    Tsv,
    Parquet,
    Libsvm,
    Libfm,
}

/// A column by header name or by 0-based position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    Index(usize),
    Name(String),
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnRef::Name(n) => write!(f, "`{n}`"),
            ColumnRef::Index(i) => write!(f, "at index {i}"),
        }
    }
}

/// Numeric feature transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumericTransform {
    /// DLRM's: negative -> 0, then ln(1 + x).
    #[default]
    Log1p,
    /// The value as written.
    None,
}

/// `dataset: { kind: table, ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub path: PathBuf,
    pub format: TableFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// CSV/TSV: whether the first line names the columns (default true).
    #[serde(default = "yes")]
    pub header: bool,
    /// The label column (CSV/TSV/Parquet; libsvm/libfm lines start with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<ColumnRef>,
    #[serde(default)]
    pub categorical: Vec<ColumnRef>,
    #[serde(default)]
    pub numeric: Vec<ColumnRef>,
    #[serde(default)]
    pub numeric_transform: NumericTransform,
    #[serde(default)]
    pub preprocess: PreprocessOptions,
}

fn yes() -> bool {
    true
}

/// The raw rows of one file: labels, numeric values and categorical keys, with line numbers.
#[derive(Default)]
struct Raw {
    labels: Vec<u8>,
    num: Vec<f64>,
    keys: Vec<u64>,
}

impl Raw {
    fn rows(&self) -> usize {
        self.labels.len()
    }
}

impl TableConfig {
    fn files(&self) -> Vec<&Path> {
        [Some(&self.path), self.val_path.as_ref(), self.test_path.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| p.as_path())
            .collect()
    }

    fn check(&self) -> Result<()> {
        let svm = matches!(self.format, TableFormat::Libsvm | TableFormat::Libfm);
        if svm && (self.label.is_some() || !self.categorical.is_empty() || !self.numeric.is_empty()) {
            return Err(DataError::Options(
                "libsvm/libfm files name no columns: drop label, categorical and numeric".into(),
            ));
        }
        if !svm && self.label.is_none() {
            return Err(DataError::Options("a table needs `label:` (a column name or 0-based index)".into()));
        }
        if !svm && self.categorical.is_empty() && self.numeric.is_empty() {
            return Err(DataError::Options("a table needs at least one `categorical` or `numeric` column".into()));
        }
        if self.val_path.is_some() && self.test_path.is_none() {
            return Err(DataError::Options("val_path needs test_path too".into()));
        }
        if self.format == TableFormat::Parquet && self.preprocess.max_rows.is_some() {
            return Err(DataError::Options("max_rows applies to text formats only".into()));
        }
        Ok(())
    }
}

impl TableConfig {
    /// What can be checked without reading the data: the options, every file readable, the
    /// split, and (CSV/TSV with a header) every named column present in the header. The runner
    /// calls it once when it plans a sweep, so a typo fails before the first cell, not in each.
    pub fn precheck(&self) -> Result<()> {
        self.check()?;
        if self.test_path.is_none() {
            self.preprocess.split.validate()?;
        }
        for p in self.files() {
            File::open(p).map_err(|e| DataError::io(p, e))?;
        }
        if !matches!(self.format, TableFormat::Csv | TableFormat::Tsv) || !self.header {
            return Ok(());
        }
        let sep = if self.format == TableFormat::Tsv { '\t' } else { ',' };
        for p in self.files() {
            let mut first = String::new();
            BufReader::new(File::open(p).map_err(|e| DataError::io(p, e))?)
                .read_line(&mut first)
                .map_err(|e| DataError::io(p, e))?;
            let cols: Vec<&str> =
                first.trim_end_matches(['\n', '\r']).split(sep).map(|c| c.trim_matches('"')).collect();
            let roles = self
                .label
                .iter()
                .map(|c| ("label", c))
                .chain(self.numeric.iter().map(|c| ("numeric", c)))
                .chain(self.categorical.iter().map(|c| ("categorical", c)));
            for (role, c) in roles {
                let found = match c {
                    ColumnRef::Name(n) => cols.contains(&n.as_str()),
                    ColumnRef::Index(i) => *i < cols.len(),
                };
                if !found {
                    return Err(DataError::Options(format!(
                        "{}: {role} column {c} not found (columns: {})",
                        p.display(),
                        cols.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Loads and preprocesses a table dataset into `sink`.
pub fn load_table(cfg: &TableConfig, sink: RowSink) -> Result<Dataset> {
    cfg.check()?;
    let mut skipped = SkipReport::default();
    let (parts, names) = read_parts(cfg, &mut skipped)?;
    let (dense_names, cat_names) = names;
    let n_cat = cat_names.len();
    let (train_rows, splits) = table_splits(cfg, &parts)?;
    let encoding = &cfg.preprocess.encoding;
    let vocab = table_vocabulary(&parts[0], train_rows, n_cat, encoding)?;
    let cardinalities =
        (0..n_cat).map(|c| vocab.as_ref().map_or_else(|| modulo(encoding) as usize, |v| v.cardinality(c))).collect();
    let name = cfg.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut ds = crate::cache::header(name, dense_names.clone(), cat_names, cardinalities);
    let (mut dense, mut ids) = (Vec::new(), Vec::new());
    let mut sink = sink;
    for part in &parts {
        let nd = dense_names.len();
        for r in 0..part.rows() {
            dense.clear();
            dense.extend(part.num[r * nd..(r + 1) * nd].iter().map(|&x| transform(x, cfg.numeric_transform)));
            ids.clear();
            ids.extend(part.keys[r * n_cat..(r + 1) * n_cat].iter().enumerate().map(|(c, &k)| {
                match (&vocab, encoding) {
                    (Some(v), CategoricalEncoding::Vocabulary { hash_range, .. }) => {
                        v.encode(c, reduce(k, *hash_range))
                    }
                    _ => (k % modulo(encoding)) as u32,
                }
            }));
            sink.push(part.labels[r], &dense, &ids)?;
        }
    }
    debug_assert_eq!(sink.rows(), parts.iter().map(Raw::rows).sum::<usize>());
    ds.splits = splits;
    ds.skipped = skipped;
    crate::preprocess::finish_with_training_rows(sink, ds, &cfg.path)
}

/// Every file of the table as raw rows, with the column names (the same in every file).
fn read_parts(cfg: &TableConfig, skipped: &mut SkipReport) -> Result<(Vec<Raw>, Names)> {
    let mut parts = Vec::new();
    let mut names: Option<Names> = None;
    for path in cfg.files() {
        let (raw, n) = match cfg.format {
            TableFormat::Libsvm | TableFormat::Libfm => read_svm(path, &cfg.preprocess, skipped)?,
            _ => read_frame(cfg, path, skipped)?,
        };
        // Every file of one dataset has the same columns (libsvm: the same number of fields;
        // field-aware files are padded to the widest, as a file may lack the last fields).
        let (raw, n) = match (&names, cfg.format) {
            (Some((_, prev)), TableFormat::Libsvm | TableFormat::Libfm) if prev.len() != n.1.len() => {
                widen(raw, n.1.len(), prev.len(), &mut parts, &mut names)
            }
            _ => (raw, n),
        };
        match &names {
            None => names = Some(n),
            Some(prev) if *prev != n => {
                return Err(DataError::Empty {
                    path: path.into(),
                    reason: format!("its columns {:?} differ from the train file's {:?}", n.1, prev.1),
                });
            }
            _ => {}
        }
        parts.push(raw);
    }
    Ok((parts, names.expect("at least the train file")))
}

/// The vocabulary over the first `train_rows` rows of `train` (`None` with modulo encoding).
fn table_vocabulary(
    train: &Raw,
    train_rows: usize,
    n_cat: usize,
    encoding: &CategoricalEncoding,
) -> Result<Option<Vocabulary>> {
    Ok(match encoding {
        CategoricalEncoding::Vocabulary { min_freq, hash_range } => {
            let mut counts: Vec<KeyMap<u32>> = vec![KeyMap::default(); n_cat];
            for r in 0..train_rows {
                for (c, &k) in train.keys[r * n_cat..(r + 1) * n_cat].iter().enumerate() {
                    *counts[c].entry(reduce(k, *hash_range)).or_insert(0) += 1;
                }
            }
            Some(Vocabulary::from_counts(counts, *min_freq))
        }
        CategoricalEncoding::Modulo { range } => {
            if *range == 0 || *range > u32::MAX as u64 {
                return Err(DataError::Options(format!("modulo range must be in 1..=2^32-1, got {range}")));
            }
            None
        }
    })
}

/// Pads libsvm rows of width `w` and the earlier parts (width `prev`) to the larger width.
fn widen(mut raw: Raw, w: usize, prev: usize, parts: &mut [Raw], names: &mut Option<Names>) -> (Raw, Names) {
    let to = w.max(prev);
    let pad = |r: &mut Raw, from: usize| {
        if from < to {
            let rows = r.rows();
            let mut keys = Vec::with_capacity(rows * to);
            for i in 0..rows {
                keys.extend_from_slice(&r.keys[i * from..(i + 1) * from]);
                keys.resize((i + 1) * to, MISSING_KEY);
            }
            r.keys = keys;
        }
    };
    pad(&mut raw, w);
    for p in parts.iter_mut() {
        pad(p, prev);
    }
    let n: Names = (vec![], (0..to).map(|f| format!("field{f}")).collect());
    *names = Some(n.clone());
    (raw, n)
}

fn modulo(e: &CategoricalEncoding) -> u64 {
    match e {
        CategoricalEncoding::Modulo { range } => *range,
        _ => u64::MAX,
    }
}

fn transform(x: f64, t: NumericTransform) -> f32 {
    match t {
        NumericTransform::None => x as f32,
        NumericTransform::Log1p => x.max(0.0).ln_1p() as f32,
    }
}

/// Row ranges of the splits (rows are stored file after file) and the train row count.
fn table_splits(cfg: &TableConfig, parts: &[Raw]) -> Result<(usize, Splits)> {
    let n0 = parts[0].rows();
    let (train, val) = match cfg.preprocess.split {
        SplitSpec::Fractions { train, val, .. } => (train, val),
        SplitSpec::Kaggle => (6.0, 0.5),
        SplitSpec::Terabyte => return Err(DataError::Options("split: terabyte is for Criteo day files".into())),
    };
    Ok(match parts.len() {
        3 => (
            n0,
            Splits {
                train: 0..n0,
                val: n0..n0 + parts[1].rows(),
                test: n0 + parts[1].rows()..n0 + parts[1].rows() + parts[2].rows(),
            },
        ),
        2 => {
            let a = ((train / (train + val).max(f64::MIN_POSITIVE)) * n0 as f64).round() as usize;
            (a, Splits { train: 0..a, val: a..n0, test: n0..n0 + parts[1].rows() })
        }
        _ => {
            let (a, b, val_first) = cfg.preprocess.split.boundaries(n0 as u64)?;
            let (a, b) = (a as usize, b as usize);
            let s = if val_first {
                Splits { train: 0..a, val: a..b, test: b..n0 }
            } else {
                Splits { train: 0..a, test: a..b, val: b..n0 }
            };
            (a, s)
        }
    })
}

type Names = (Vec<String>, Vec<String>);

/// Without the `tables` feature (no polars): CSV, TSV and Parquet cannot be read.
#[cfg(not(feature = "tables"))]
fn read_frame(cfg: &TableConfig, path: &Path, _skipped: &mut SkipReport) -> Result<(Raw, Names)> {
    let reason = format!(
        "reading {:?} tables needs cqr-data's `tables` feature (on by default, and in the cqr binary)",
        cfg.format
    );
    Err(DataError::Empty { path: path.into(), reason })
}

/// Reads one CSV/TSV/Parquet file with polars; returns its rows and the (numeric, categorical)
/// column names.
#[cfg(feature = "tables")]
fn read_frame(cfg: &TableConfig, path: &Path, skipped: &mut SkipReport) -> Result<(Raw, Names)> {
    let polars_err = |e| polars_error(path, e);
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let text = cfg.format != TableFormat::Parquet;
    // Text: `lines` maps each data row to its line in the file.
    let (df, lines) = if text {
        drop(file);
        read_text_frame(cfg, path, skipped)?
    } else {
        (ParquetReader::new(file).finish().map_err(polars_err)?, vec![])
    };
    let cols: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let resolve = |c: &ColumnRef, role: &str| -> Result<String> {
        match c {
            ColumnRef::Name(n) if cols.contains(n) => Ok(n.clone()),
            ColumnRef::Index(i) if *i < cols.len() => Ok(cols[*i].clone()),
            _ => Err(DataError::Options(format!(
                "{}: {role} column {c} not found (columns: {})",
                path.display(),
                cols.join(", ")
            ))),
        }
    };
    let label = resolve(cfg.label.as_ref().expect("checked"), "label")?;
    let numeric = cfg.numeric.iter().map(|c| resolve(c, "numeric")).collect::<Result<Vec<_>>>()?;
    let categorical = cfg.categorical.iter().map(|c| resolve(c, "categorical")).collect::<Result<Vec<_>>>()?;
    let strings = |name: &str| -> Result<Vec<Option<String>>> {
        let s = df.column(name).and_then(|c| c.cast(&DataType::String)).map_err(polars_err)?;
        let ca = s.str().map_err(polars_err)?;
        Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
    };
    let label_v = strings(&label)?;
    let num_v = numeric.iter().map(|n| strings(n)).collect::<Result<Vec<_>>>()?;
    let cat_v = categorical.iter().map(|n| strings(n)).collect::<Result<Vec<_>>>()?;
    // The line of row r; Parquet has no lines, so row numbers (1-based) instead.
    let line = |r: usize| lines.get(r).copied().unwrap_or(r as u64 + 1);
    let mut raw = Raw::default();
    let (mut num, mut keys) = (Vec::new(), Vec::new());
    for r in 0..df.height() {
        num.clear();
        keys.clear();
        let parsed = (|| -> std::result::Result<u8, (String, String)> {
            let y = parse_label(label_v[r].as_deref()).map_err(|e| (label.clone(), e))?;
            for (j, col) in num_v.iter().enumerate() {
                num.push(match col[r].as_deref().map(str::trim) {
                    None | Some("") => 0.0,
                    Some(s) => s
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| (numeric[j].clone(), format!("not a finite number: {s:?}")))?,
                });
            }
            keys.extend(cat_v.iter().map(|col| match col[r].as_deref() {
                None | Some("") => MISSING_KEY,
                Some(s) => fnv1a64(s.as_bytes()),
            }));
            Ok(y)
        })();
        match parsed {
            Ok(y) => {
                raw.labels.push(y);
                raw.num.extend_from_slice(&num);
                raw.keys.extend_from_slice(&keys);
            }
            Err((field, reason)) => bad_row(
                cfg.preprocess.bad_rows,
                skipped,
                DataError::BadRow { path: path.into(), line: line(r), field, reason },
            )?,
        }
    }
    Ok((raw, (numeric, categorical)))
}

/// A CSV/TSV file as a frame of text columns, with each data row's line in the file. Every
/// record's field count is checked first (polars fills a short row with nulls, which would turn
/// a missing value into a category of its own); a bad row is an error or (skip) counted.
#[cfg(feature = "tables")]
fn read_text_frame(
    cfg: &TableConfig,
    path: &Path,
    skipped: &mut SkipReport,
) -> Result<(polars::prelude::DataFrame, Vec<u64>)> {
    let sep = if cfg.format == TableFormat::Tsv { b'\t' } else { b',' };
    let scan = scan_records(path, sep, cfg.header)?;
    let mut bad_lines = HashSet::new();
    for &(line, found) in &scan.bad {
        let reason = format!(
            "expected {} fields (as on {}), found {found}",
            scan.width,
            if cfg.header { "the header" } else { "line 1" }
        );
        bad_row(
            cfg.preprocess.bad_rows,
            skipped,
            DataError::BadRow { path: path.into(), line, field: "(row)".into(), reason },
        )?;
        bad_lines.insert(line);
    }
    // Every column as text: values are parsed below, where a bad one can be named.
    let opts = CsvReadOptions::default()
        .with_has_header(cfg.header)
        .with_infer_schema_length(Some(0))
        .with_n_rows(cfg.preprocess.max_rows.map(|m| m as usize))
        .with_parse_options(CsvParseOptions::default().with_separator(sep));
    let df = if bad_lines.is_empty() {
        opts.try_into_reader_with_file_path(Some(path.into())).and_then(|r| r.finish())
    } else {
        // Skipped rows: polars reads the file without them.
        let kept = without_lines(path, &scan, &bad_lines)?;
        opts.into_reader_with_file_handle(std::io::Cursor::new(kept)).finish()
    }
    .map_err(|e| polars_error(path, e))?;
    let lines: Vec<u64> = scan.rows.into_iter().filter(|l| !bad_lines.contains(l)).collect();
    Ok((df, lines))
}

#[cfg(feature = "tables")]
fn polars_error(path: &Path, e: polars::error::PolarsError) -> DataError {
    DataError::Empty { path: path.into(), reason: format!("polars could not read it: {e}") }
}

fn parse_label(v: Option<&str>) -> std::result::Result<u8, String> {
    match v.map(str::trim) {
        Some("1" | "+1" | "1.0" | "true" | "True") => Ok(1),
        Some("0" | "-1" | "0.0" | "-1.0" | "false" | "False") => Ok(0),
        Some(s) => Err(format!("label must be 0/1 (or -1/+1, true/false), found {s:?}")),
        None => Err("label is missing".into()),
    }
}

fn bad_row(policy: BadRowPolicy, skipped: &mut SkipReport, err: DataError) -> Result<()> {
    match (policy, &err) {
        (BadRowPolicy::Skip, DataError::BadRow { line, .. }) => {
            skipped.record(*line, &err.to_string());
            Ok(())
        }
        _ => Err(err),
    }
}

/// The records of a CSV/TSV file, found with a quote-aware field count.
#[cfg(feature = "tables")]
struct RecordScan {
    /// Fields of the header (or of the first record without one).
    width: usize,
    /// The first line of each data record, in order, blank lines left out.
    rows: Vec<u64>,
    /// (line, fields found) of each data record whose field count is not `width`.
    bad: Vec<(u64, usize)>,
    /// Byte range of each record (header included) by its first line, for [`without_lines`].
    spans: Vec<(u64, std::ops::Range<usize>)>,
}

/// Counts the fields of every record: separators outside double quotes, a record ending at a
/// newline outside quotes (so a quoted field may hold either). Blank lines are not records.
#[cfg(feature = "tables")]
fn scan_records(path: &Path, sep: u8, header: bool) -> Result<RecordScan> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let mut scan = RecordScan { width: 0, rows: vec![], bad: vec![], spans: vec![] };
    let (mut line, mut start_line, mut start) = (1u64, 1u64, 0usize);
    let (mut fields, mut quoted, mut first) = (1usize, false, true);
    for i in 0..=bytes.len() {
        let b = bytes.get(i).copied();
        match b {
            Some(b'"') => quoted = !quoted,
            Some(c) if c == sep && !quoted => fields += 1,
            Some(b'\n') if quoted => line += 1,
            Some(b'\n') | None => {
                let end = if b.is_some() { i + 1 } else { i };
                let body = &bytes[start..i];
                let blank = body.iter().all(|&c| c == b'\r');
                if !blank {
                    if first {
                        scan.width = fields;
                        if !header {
                            scan.rows.push(start_line);
                        }
                        first = false;
                    } else {
                        scan.rows.push(start_line);
                        if fields != scan.width {
                            scan.bad.push((start_line, fields));
                        }
                    }
                    scan.spans.push((start_line, start..end));
                }
                line += 1;
                (start_line, start, fields) = (line, end, 1);
            }
            _ => {}
        }
    }
    Ok(scan)
}

/// The file's bytes without the records that start on `drop`.
#[cfg(feature = "tables")]
fn without_lines(path: &Path, scan: &RecordScan, drop: &HashSet<u64>) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::with_capacity(bytes.len());
    for (line, span) in &scan.spans {
        if !drop.contains(line) {
            out.extend_from_slice(&bytes[span.clone()]);
            if !out.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "tables")]
    use polars::prelude::{Column as PlColumn, DataFrame, ParquetWriter};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[cfg(feature = "tables")]
    fn csv_text(sep: &str, rows: usize) -> String {
        let mut s = format!("y{sep}age{sep}city{sep}device\n");
        for i in 0..rows {
            s.push_str(&format!(
                "{}{sep}{}{sep}c{}{sep}{}\n",
                (i % 3 == 0) as u8,
                i % 50,
                i % 7,
                if i % 5 == 0 { "" } else { "phone" }
            ));
        }
        s
    }

    fn table(path: PathBuf, format: TableFormat) -> TableConfig {
        TableConfig {
            path,
            format,
            val_path: None,
            test_path: None,
            header: true,
            label: Some(ColumnRef::Name("y".into())),
            categorical: vec![ColumnRef::Name("city".into()), ColumnRef::Index(3)],
            numeric: vec![ColumnRef::Name("age".into())],
            numeric_transform: NumericTransform::Log1p,
            preprocess: PreprocessOptions::default(),
        }
    }

    #[test]
    #[cfg(feature = "tables")]
    fn csv_tsv_and_parquet_give_the_same_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let csv =
            load_table(&table(write(dir.path(), "a.csv", &csv_text(",", 100)), TableFormat::Csv), RowSink::memory())
                .unwrap();
        let tsv =
            load_table(&table(write(dir.path(), "a.tsv", &csv_text("\t", 100)), TableFormat::Tsv), RowSink::memory())
                .unwrap();
        assert_eq!((csv.n_rows(), csv.n_dense(), csv.n_cat()), (100, 1, 2));
        assert_eq!(csv.cat_names, vec!["city", "device"]);
        assert_eq!(csv.cardinalities, vec![8, 3], "7 cities + OOV; phone, missing + OOV");
        assert_eq!((csv.splits.train.len(), csv.splits.val.len(), csv.splits.test.len()), (80, 10, 10));
        assert!((csv.dense_row(1)[0] - 2f32.ln()).abs() < 1e-6);
        assert_eq!(csv.labels[..3], [1, 0, 0]);
        assert_eq!((&csv.cats[..], &csv.dense[..], &csv.labels[..]), (&tsv.cats[..], &tsv.dense[..], &tsv.labels[..]));
        // The same table as Parquet, with typed columns.
        let n = 100;
        let mut df = DataFrame::new(
            n,
            vec![
                PlColumn::new("y".into(), (0..n).map(|i| (i % 3 == 0) as i64).collect::<Vec<_>>()),
                PlColumn::new("age".into(), (0..n).map(|i| (i % 50) as f64).collect::<Vec<_>>()),
                PlColumn::new("city".into(), (0..n).map(|i| format!("c{}", i % 7)).collect::<Vec<_>>()),
                PlColumn::new(
                    "device".into(),
                    (0..n).map(|i| if i % 5 == 0 { None } else { Some("phone") }).collect::<Vec<_>>(),
                ),
            ],
        )
        .unwrap();
        let pq = dir.path().join("a.parquet");
        ParquetWriter::new(File::create(&pq).unwrap()).finish(&mut df).unwrap();
        let p = load_table(&table(pq, TableFormat::Parquet), RowSink::memory()).unwrap();
        assert_eq!((&p.cats[..], &p.dense[..], &p.labels[..]), (&csv.cats[..], &csv.dense[..], &csv.labels[..]));
    }

    #[test]
    #[cfg(feature = "tables")]
    fn headerless_files_take_indices_and_separate_files_give_splits() {
        let dir = tempfile::tempdir().unwrap();
        let body = |n: usize| csv_text(",", n).lines().skip(1).map(|l| format!("{l}\n")).collect::<String>();
        let mut cfg = table(write(dir.path(), "tr.csv", &body(60)), TableFormat::Csv);
        cfg.header = false;
        cfg.label = Some(ColumnRef::Index(0));
        cfg.categorical = vec![ColumnRef::Index(2), ColumnRef::Index(3)];
        cfg.numeric = vec![ColumnRef::Index(1)];
        cfg.val_path = Some(write(dir.path(), "va.csv", &body(10)));
        cfg.test_path = Some(write(dir.path(), "te.csv", &body(20)));
        let ds = load_table(&cfg, RowSink::memory()).unwrap();
        assert_eq!(ds.splits, Splits { train: 0..60, val: 60..70, test: 70..90 });
        ds.validate().unwrap();
    }

    #[test]
    #[cfg(feature = "tables")]
    fn bad_values_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = csv_text(",", 20);
        text = text.replacen("\n1,6,", "\n1,six,", 1);
        let p = write(dir.path(), "bad.csv", &text);
        let err = load_table(&table(p.clone(), TableFormat::Csv), RowSink::memory()).unwrap_err().to_string();
        assert!(err.contains("bad.csv:8:") && err.contains("`age`") && err.contains("six"), "{err}");
        let mut cfg = table(p, TableFormat::Csv);
        cfg.preprocess.bad_rows = BadRowPolicy::Skip;
        let ds = load_table(&cfg, RowSink::memory()).unwrap();
        assert_eq!((ds.n_rows(), ds.skipped.skipped, ds.skipped.first_lines.clone()), (19, 1, vec![8]));
        // A ragged line: polars fails, the error still names the line.
        let p = write(
            dir.path(),
            "ragged.csv",
            &csv_text(",", 20).replacen("\n0,2,c2,phone\n", "\n0,2,c2,phone,extra\n", 1),
        );
        let err = load_table(&table(p, TableFormat::Csv), RowSink::memory()).unwrap_err().to_string();
        assert!(err.contains("ragged.csv:4:") && err.contains("expected 4 fields"), "{err}");
        // A short line: an error naming it, or (skip) counted and left out; never a null value.
        let p = write(dir.path(), "short.csv", &csv_text(",", 20).replacen("\n0,2,c2,phone\n", "\n0,2,c2\n", 1));
        let err = load_table(&table(p.clone(), TableFormat::Csv), RowSink::memory()).unwrap_err().to_string();
        assert!(err.contains("short.csv:4:") && err.contains("expected 4 fields") && err.contains("found 3"), "{err}");
        let mut cfg = table(p, TableFormat::Csv);
        cfg.preprocess.bad_rows = BadRowPolicy::Skip;
        let ds = load_table(&cfg, RowSink::memory()).unwrap();
        assert_eq!((ds.n_rows(), ds.skipped.skipped, ds.skipped.first_lines.clone()), (19, 1, vec![4]));
        // Later lines keep their own numbers after a skipped one.
        let p = write(
            dir.path(),
            "both.csv",
            &csv_text(",", 20).replacen("\n0,2,c2,phone\n", "\n0,2,c2\n", 1).replacen("\n1,6,", "\n1,six,", 1),
        );
        let mut cfg = table(p, TableFormat::Csv);
        cfg.preprocess.bad_rows = BadRowPolicy::Skip;
        let ds = load_table(&cfg, RowSink::memory()).unwrap();
        assert_eq!((ds.n_rows(), ds.skipped.first_lines.clone()), (18, vec![4, 8]));
        // `cqr data inspect --format table` sees the same rows.
        let p = write(dir.path(), "inspect.csv", &csv_text(",", 20).replacen("\n0,2,c2,phone\n", "\n0,2,c2\n", 1));
        let err = inspect_table(&p, BadRowPolicy::Fail).unwrap_err().to_string();
        assert!(err.contains("inspect.csv:4:") && err.contains("found 3"), "{err}");
        let rep = inspect_table(&p, BadRowPolicy::Skip).unwrap();
        assert!(
            rep.contains("rows: 19") && rep.contains("| city | 7 |") && rep.contains("| device | 1 | 0.2105 |"),
            "{rep}"
        );
        // A quoted separator is part of its field, not a field of its own.
        let p = write(
            dir.path(),
            "quoted.csv",
            &csv_text(",", 20).replacen("\n0,2,c2,phone\n", "\n0,2,\"c,2\",phone\n", 1),
        );
        assert_eq!(load_table(&table(p, TableFormat::Csv), RowSink::memory()).unwrap().n_rows(), 20);
        let err = load_table(
            &TableConfig {
                label: Some(ColumnRef::Name("nope".into())),
                ..table(write(dir.path(), "x.csv", &csv_text(",", 5)), TableFormat::Csv)
            },
            RowSink::memory(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("label column") && err.contains("nope"), "{err}");
    }

    #[test]
    fn libsvm_plain_and_field_aware() {
        let dir = tempfile::tempdir().unwrap();
        let mut plain = String::new();
        let mut aware = String::new();
        for i in 0..50 {
            let y = if i % 4 == 0 { "1" } else { "-1" };
            plain.push_str(&format!("{y} {}:1 {}:1 {}:1\n", i % 5, 100 + i % 9, 200 + i % 2));
            let third = if i % 10 == 0 { String::new() } else { format!(" 2:{}:1", 200 + i % 2) };
            aware.push_str(&format!("{y} 0:{}:1 1:{}:1{third}\n", i % 5, 100 + i % 9));
        }
        let cfg = |p: PathBuf| TableConfig {
            label: None,
            categorical: vec![],
            numeric: vec![],
            ..table(p, TableFormat::Libsvm)
        };
        let a = load_table(&cfg(write(dir.path(), "p.libfm", &plain)), RowSink::memory()).unwrap();
        assert_eq!((a.n_cat(), a.n_dense(), a.n_rows()), (3, 0, 50));
        assert_eq!(a.labels[..4], [1, 0, 0, 0]);
        let b = load_table(&cfg(write(dir.path(), "f.libffm", &aware)), RowSink::memory()).unwrap();
        assert_eq!(b.n_cat(), 3);
        assert_eq!(b.cat_row(1)[..2], a.cat_row(1)[..2]);
        // Row 0 has no field 2: it is the column's "missing" value, not field 2's value of row 1.
        assert_ne!(b.cat_row(0)[2], b.cat_row(1)[2]);
        let err = load_table(&cfg(write(dir.path(), "bad.libfm", "1 3:1 4:1\n0 3:1\n")), RowSink::memory())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.libfm:2:") && err.contains("1 index:value pairs"), "{err}");
        let err =
            load_table(&cfg(write(dir.path(), "v.libfm", "1 3:1 4:0.5\n")), RowSink::memory()).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("`pair 2`") && err.contains("one-hot"), "{err}");
    }
}
