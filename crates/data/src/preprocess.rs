//! DLRM-style preprocessing of streamed click logs, with splits and categorical encoding.
//!
//! Three streaming passes over one or more files (Terabyte: a list of day files), so memory is
//! the vocabulary counts plus the output sink, never the size of the input: (1) count lines to
//! place split boundaries, (2) count categorical values over the training split to build
//! vocabularies, (3) encode every row into a [`RowSink`] (memory, or the cache's column files
//! for out-of-core data).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::RowSink;
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::records::{count_lines, RawRecord, RecordReader, TabularFormat, MISSING_KEY};
use crate::skip::{BadRowPolicy, SkipReport};

/// How raw categorical values become table rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CategoricalEncoding {
    /// Per-column vocabulary built on the training split. Values seen at least `min_freq` times get
    /// ids `1..`; rare and unseen values share id 0 (the column's OOV row). With `hash_range`,
    /// keys are first reduced modulo it (DLRM's `--max-ind-range` before its frequency threshold),
    /// which bounds the counting pass's memory to `hash_range` keys per column on any data size.
    Vocabulary {
        min_freq: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash_range: Option<u64>,
    },
    /// No vocabulary: id = raw value mod `range` (DLRM's `--max-ind-range`).
    Modulo { range: u64 },
}

impl Default for CategoricalEncoding {
    fn default() -> Self {
        CategoricalEncoding::Vocabulary { min_freq: 1, hash_range: None }
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
    /// DLRM's Terabyte split: every training file (days 0-22) trains; the test file (day 23) is
    /// halved into test (first half) and validation (second half). Needs `test_path`.
    Terabyte,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec::Fractions { train: 0.8, val: 0.1, test: 0.1 }
    }
}

impl SplitSpec {
    /// The fractions are each in [0, 1] and sum to 1 (within 1e-6). Found before any file is
    /// read: the runner checks it when it plans a sweep.
    pub fn validate(&self) -> Result<()> {
        if let SplitSpec::Fractions { train, val, test } = *self {
            for (name, f) in [("train", train), ("val", val), ("test", test)] {
                if !(0.0..=1.0).contains(&f) || !f.is_finite() {
                    return Err(DataError::Options(format!("split fraction {name} = {f} is not in [0, 1]")));
                }
            }
            let sum = train + val + test;
            if (sum - 1.0).abs() > 1e-6 {
                return Err(DataError::Options(format!(
                    "split fractions train {train} + val {val} + test {test} sum to {}, expected 1",
                    round4(sum)
                )));
            }
        }
        Ok(())
    }

    /// Line boundaries `[train_end, second_end]` for `n` lines, and whether val comes before test.
    pub fn boundaries(&self, n: u64) -> Result<(u64, u64, bool)> {
        self.validate()?;
        match *self {
            SplitSpec::Fractions { train, val, .. } => {
                let a = (train * n as f64).round() as u64;
                let b = ((train + val) * n as f64).round() as u64;
                Ok((a, b.max(a), true))
            }
            SplitSpec::Terabyte => Err(DataError::Options("split: terabyte needs a test_path".into())),
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

/// `x` with at most 4 decimals, trailing zeros dropped (`1.1500000000000001` → `1.15`).
fn round4(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
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
    /// DLRM's negative sub-sampling of the training split (`--data-sub-sample-rate`): each negative
    /// training row is dropped with this probability (0.875 for Terabyte). Validation and test
    /// rows are kept. The draw is a fixed hash of (file index, line), so it is the same in every
    /// pass and run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_sample_negatives: Option<f64>,
}

/// Files of one tabular dataset: one or more training files read in order (Terabyte: day files),
/// and an optional test file. With `test` set, the test file gives the test split (or, with
/// [`SplitSpec::Terabyte`], test and validation halves) and the train files' lines are divided
/// into train and validation in the ratio of the split fractions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TabularSource {
    pub format: TabularFormat,
    pub train: Vec<PathBuf>,
    pub test: Option<PathBuf>,
}

/// DLRM's integer transform: missing -> 0, negative -> 0, then ln(1 + x).
pub fn log_transform(v: Option<i64>) -> f32 {
    match v {
        Some(x) if x > 0 => (x as f64).ln_1p() as f32,
        _ => 0.0,
    }
}

/// Hasher for categorical keys, which are already well-mixed (Criteo's 32-bit hashes, FNV-1a of
/// strings): one multiply-xorshift instead of SipHash, ~5x faster in the counting pass.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }
    fn write_u64(&mut self, k: u64) {
        let z = (k ^ (k >> 31)).wrapping_mul(0xbf58476d1ce4e5b9);
        self.0 = z ^ (z >> 29);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map from categorical keys.
pub type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Per-column vocabularies: raw key -> compact id (0 is OOV).
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub columns: Vec<KeyMap<u32>>,
}

impl Vocabulary {
    /// Keeps values with `count >= min_freq`, assigning ids in ascending key order so the result
    /// does not depend on hash-map iteration order.
    pub fn from_counts(counts: Vec<KeyMap<u32>>, min_freq: u32) -> Self {
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

/// Whether negative training row (`file`, `line`) survives sub-sampling at `rate`.
fn keep_negative(rate: f64, file: usize, line: u64) -> bool {
    let mut z = ((file as u64) << 40 ^ line).wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) >= rate
}

/// Bytes read per block; each block is cut at line ends into one piece per thread.
const BLOCK_BYTES: usize = 4 << 20;

/// Streams the good records of `files` in order, in parallel.
///
/// Each file is read in blocks of whole lines; a block is cut into one piece per thread, and
/// `work` parses a piece (it gets a [`RecordReader`] over the piece, the global line number of the
/// file's line 0, and the file index) into a `T`. Global line numbers run over all files, each
/// capped at `max_rows` lines. `merge` then receives the pieces of the block in file order and
/// returns whether to go on. Errors surface in file order; skipped rows are merged into `skips`
/// in file order. Nothing depends on the thread count.
fn stream<T: Send>(
    files: &[PathBuf],
    format: TabularFormat,
    opts: &PreprocessOptions,
    skips: Option<&mut SkipReport>,
    work: impl Fn(&mut RecordReader<&[u8]>, u64, usize) -> Result<T> + Sync,
    mut merge: impl FnMut(Vec<T>) -> Result<bool>,
) -> Result<()> {
    use rayon::prelude::*;
    let limit = opts.max_rows.unwrap_or(u64::MAX);
    let threads = rayon::current_num_threads().max(1);
    let mut all = SkipReport::default();
    let mut offset = 0u64;
    'files: for (fi, path) in files.iter().enumerate() {
        // Opened through the reader for its checks (a directory, a missing file).
        drop(RecordReader::open(path, format, opts.bad_rows)?);
        let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        // One buffer, zeroed once: `len` bytes of it are valid.
        let mut buf = vec![0u8; BLOCK_BYTES];
        let mut len = 0usize;
        let mut next_line = 1u64; // file line number of the block's first line
        let mut eof = false;
        while !eof && next_line <= limit {
            if len == buf.len() {
                buf.resize(2 * buf.len(), 0); // a line longer than a block
            }
            (len, eof) = fill(&mut file, &mut buf, len).map_err(|e| DataError::io(path, e))?;
            // Whole lines only; the tail waits for the next block (or is the last line).
            let end = if eof { len } else { memchr::memrchr(b'\n', &buf[..len]).map_or(0, |i| i + 1) };
            if end == 0 {
                continue;
            }
            let pieces = cut_lines(&buf[..end], threads, next_line);
            next_line = pieces.last().map_or(next_line, |p| p.3);
            let out: Vec<Result<(T, SkipReport)>> = pieces
                .par_iter()
                .map(|&(a, b, first, _)| {
                    let mut rd = RecordReader::over(path, &buf[a..b], first, format, opts.bad_rows);
                    let t = work(&mut rd, offset, fi)?;
                    Ok((t, rd.skips().clone()))
                })
                .collect();
            let mut ts = Vec::with_capacity(out.len());
            for r in out {
                let (t, sk) = r?;
                all.merge(&sk);
                ts.push(t);
            }
            buf.copy_within(end..len, 0);
            len -= end;
            if !merge(ts)? {
                break 'files;
            }
        }
        offset += (next_line - 1).min(limit);
    }
    if let Some(s) = skips {
        s.merge(&all);
    }
    Ok(())
}

/// Reads after the `len` valid bytes of `buf` until it is full or the file ends; returns the new
/// length and whether the file ended.
fn fill(f: &mut std::fs::File, buf: &mut [u8], mut len: usize) -> std::io::Result<(usize, bool)> {
    use std::io::Read;
    while len < buf.len() {
        let n = f.read(&mut buf[len..])?;
        if n == 0 {
            return Ok((len, true));
        }
        len += n;
    }
    Ok((len, false))
}

/// Cuts `bytes` (whole lines) into at most `n` pieces at line ends: (start, end, first line
/// number, line number after the piece).
fn cut_lines(bytes: &[u8], n: usize, first_line: u64) -> Vec<(usize, usize, u64, u64)> {
    let mut out = Vec::with_capacity(n);
    let (mut start, mut line) = (0usize, first_line);
    for k in 1..=n {
        let target = bytes.len() * k / n;
        let end = if k == n {
            bytes.len()
        } else {
            memchr::memchr(b'\n', &bytes[target.max(start)..]).map_or(bytes.len(), |i| target.max(start) + i + 1)
        };
        if end > start {
            let lines =
                memchr::memchr_iter(b'\n', &bytes[start..end]).count() as u64 + (bytes[end - 1] != b'\n') as u64;
            out.push((start, end, line, line + lines));
            line += lines;
            start = end;
        }
    }
    out
}

impl PreprocessOptions {
    fn check(&self) -> Result<()> {
        if let CategoricalEncoding::Modulo { range } = self.encoding {
            if range == 0 || range > u32::MAX as u64 {
                return Err(DataError::Options(format!("modulo range must be in 1..=2^32-1, got {range}")));
            }
        }
        if let Some(r) = self.sub_sample_negatives {
            if !(0.0..1.0).contains(&r) {
                return Err(DataError::Options(format!("sub_sample_negatives must be in [0, 1), got {r}")));
            }
        }
        Ok(())
    }
}

/// Loads and preprocesses a tabular source into memory (no cache; see [`crate::cache::load_cached`]).
pub fn load_tabular(src: &TabularSource, opts: &PreprocessOptions) -> Result<Dataset> {
    load_tabular_into(src, opts, RowSink::memory())
}

/// Preprocesses a tabular source, streaming the encoded rows into `sink`.
///
/// Passes: (1) count lines to place split boundaries, (2) count categorical values over the
/// training split (skipped with modulo encoding), (3) encode every row into the sink. Memory is
/// the vocabulary (one count per distinct value and column, bounded by `hash_range` when set)
/// plus the sink's (nothing for a file sink).
pub fn load_tabular_into(src: &TabularSource, opts: &PreprocessOptions, mut sink: RowSink) -> Result<Dataset> {
    let format = src.format;
    opts.check()?;
    let first = src.train.first().ok_or_else(|| DataError::Options("no training file given".into()))?;
    let lines = train_lines(src, opts, first)?;
    let (a, b, val_first) = boundaries(src, opts, lines)?;
    let sub = opts.sub_sample_negatives.unwrap_or(0.0);
    let kept =
        |g: u64, file: usize, rec: &RawRecord| sub == 0.0 || rec.label == 1 || g > a || keep_negative(sub, file, g);
    let encoder = match &opts.encoding {
        CategoricalEncoding::Vocabulary { min_freq, hash_range } => Encoder::Vocabulary {
            vocab: count_vocabulary(src, opts, a, *hash_range, *min_freq, &kept)?,
            hash_range: *hash_range,
        },
        CategoricalEncoding::Modulo { range } => Encoder::Modulo { range: *range },
    };
    let n_cat = format.n_cat();
    let name = first.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut ds = crate::cache::header(
        name,
        format.dense_names(),
        format.cat_names(),
        (0..n_cat).map(|c| encoder.cardinality(c)).collect(),
    );

    // Pass 3: encode. Pieces are parsed and encoded in parallel, then appended in order.
    let encode = |rec: &RawRecord, out: &mut Encoded| {
        out.labels.push(rec.label);
        out.dense.extend(rec.dense.iter().map(|&v| log_transform(v)));
        out.ids.extend(rec.cats.iter().enumerate().map(|(c, &k)| encoder.encode(c, k)));
    };
    let (nd, limit) = (format.n_dense(), opts.max_rows.unwrap_or(u64::MAX));
    let work = |filter: bool| {
        move |rd: &mut RecordReader<&[u8]>, offset: u64, file: usize| -> Result<Encoded> {
            let mut out = Encoded::default();
            let mut rec = RawRecord::default();
            while let Some(line) = rd.next_record(&mut rec)? {
                if line > limit {
                    break;
                }
                let g = offset + line;
                if !filter || kept(g, file, &rec) {
                    out.lines.push(g);
                    encode(&rec, &mut out);
                }
            }
            Ok(out)
        }
    };
    let mut cuts = [(a, None), (b, None)];
    stream(&src.train, format, opts, Some(&mut ds.skipped), work(true), |pieces| {
        append(&mut sink, pieces, nd, n_cat, &mut cuts)
    })?;
    let [(_, cut_a), (_, cut_b)] = cuts;
    let end_train_file = sink.rows();
    let ca = cut_a.unwrap_or(end_train_file);
    let cb = cut_b.unwrap_or(end_train_file).max(ca);
    if let Some(test) = &src.test {
        let half = if opts.split == SplitSpec::Terabyte {
            count_lines(test)?.min(opts.max_rows.unwrap_or(u64::MAX)) / 2
        } else {
            u64::MAX
        };
        let mut cuts = [(half, None)];
        stream(std::slice::from_ref(test), format, opts, Some(&mut ds.skipped), work(false), |pieces| {
            append(&mut sink, pieces, nd, n_cat, &mut cuts)
        })?;
        let [(_, mid)] = cuts;
        ds.splits = test_file_splits(&opts.split, ca, end_train_file, mid, sink.rows());
    } else if val_first {
        ds.splits = Splits { train: 0..ca, val: ca..cb, test: cb..sink.rows() };
    } else {
        ds.splits = Splits { train: 0..ca, test: ca..cb, val: cb..sink.rows() };
    }
    finish_with_training_rows(sink, ds, first)
}

/// Pass 1: the training files' lines (each capped at `max_rows`); none is an error.
fn train_lines(src: &TabularSource, opts: &PreprocessOptions, first: &Path) -> Result<u64> {
    let mut lines = 0u64;
    for f in &src.train {
        lines += count_lines(f)?.min(opts.max_rows.unwrap_or(u64::MAX));
    }
    if lines == 0 {
        return Err(DataError::Empty { path: first.into(), reason: "file is empty".into() });
    }
    Ok(lines)
}

/// Hands `ds` (splits set) to the sink, unless no row is left for training (an error naming `path`).
pub(crate) fn finish_with_training_rows(sink: RowSink, ds: Dataset, path: &Path) -> Result<Dataset> {
    if ds.splits.train.is_empty() {
        return Err(DataError::Empty {
            path: path.into(),
            reason: "no training rows after parsing and splitting".into(),
        });
    }
    sink.finish(ds)
}

/// How raw categorical values become ids: through the training split's vocabulary (values
/// reduced modulo `hash_range` first, when set) or modulo a range.
enum Encoder {
    Vocabulary { vocab: Vocabulary, hash_range: Option<u64> },
    Modulo { range: u64 },
}

impl Encoder {
    fn cardinality(&self, col: usize) -> usize {
        match self {
            Encoder::Vocabulary { vocab, .. } => vocab.cardinality(col),
            Encoder::Modulo { range } => *range as usize,
        }
    }
    fn encode(&self, col: usize, key: u64) -> u32 {
        match self {
            Encoder::Vocabulary { vocab, hash_range } => vocab.encode(col, reduce(key, *hash_range)),
            Encoder::Modulo { range } => (key % range) as u32,
        }
    }
}

/// Pass 2: the vocabularies over the training lines (up to global line `a`, the rows `kept`
/// keeps). Pieces are parsed in parallel; counting is parallel by column.
fn count_vocabulary(
    src: &TabularSource,
    opts: &PreprocessOptions,
    a: u64,
    hash_range: Option<u64>,
    min_freq: u32,
    kept: &(dyn Fn(u64, usize, &RawRecord) -> bool + Sync),
) -> Result<Vocabulary> {
    use rayon::prelude::*;
    let n_cat = src.format.n_cat();
    let mut counts: Vec<KeyMap<u32>> = vec![KeyMap::default(); n_cat];
    // Returns the piece's keys and whether it reached past the training lines.
    let work = |rd: &mut RecordReader<&[u8]>, offset: u64, file: usize| -> Result<(Vec<u64>, bool)> {
        let mut keys = Vec::new();
        let mut rec = RawRecord::default();
        while let Some(line) = rd.next_record(&mut rec)? {
            let g = offset + line;
            if g > a {
                return Ok((keys, true));
            }
            if line > opts.max_rows.unwrap_or(u64::MAX) {
                break;
            }
            if kept(g, file, &rec) {
                keys.extend(rec.cats.iter().map(|&k| reduce(k, hash_range)));
            }
        }
        Ok((keys, false))
    };
    stream(&src.train, src.format, opts, None, work, |pieces| {
        counts.par_iter_mut().enumerate().for_each(|(c, map)| {
            for (keys, _) in &pieces {
                for row in keys.chunks_exact(n_cat) {
                    *map.entry(row[c]).or_insert(0) += 1;
                }
            }
        });
        Ok(!pieces.iter().any(|p| p.1))
    })?;
    Ok(Vocabulary::from_counts(counts, min_freq))
}

/// The splits when a separate test file follows the training rows (`end_train` of them, the
/// training split ending at `train_end`): Terabyte (DLRM) takes the test day's first half as the
/// test split and its second half (from `mid`) as validation; otherwise the training file's tail
/// is validation and the test file the test split.
fn test_file_splits(split: &SplitSpec, train_end: usize, end_train: usize, mid: Option<usize>, end: usize) -> Splits {
    match mid {
        Some(m) if *split == SplitSpec::Terabyte => Splits { train: 0..train_end, test: end_train..m, val: m..end },
        _ if *split == SplitSpec::Terabyte => Splits { train: 0..train_end, test: end_train..end, val: end..end },
        _ => Splits { train: 0..train_end, val: train_end..end_train, test: end_train..end },
    }
}

/// Encoded rows of one piece, with their global line numbers.
#[derive(Default)]
struct Encoded {
    lines: Vec<u64>,
    labels: Vec<u8>,
    dense: Vec<f32>,
    ids: Vec<u32>,
}

/// Appends encoded pieces to the sink in order. Each `(line, at)` in `cuts` records in `at` the
/// sink row of the first appended row whose global line number exceeds `line` (split points).
fn append(
    sink: &mut RowSink,
    pieces: Vec<Encoded>,
    nd: usize,
    n_cat: usize,
    cuts: &mut [(u64, Option<usize>)],
) -> Result<bool> {
    for p in pieces {
        for (r, &g) in p.lines.iter().enumerate() {
            for (line, at) in cuts.iter_mut() {
                if g > *line && at.is_none() {
                    *at = Some(sink.rows());
                }
            }
            sink.push(p.labels[r], &p.dense[r * nd..(r + 1) * nd], &p.ids[r * n_cat..(r + 1) * n_cat])?;
        }
    }
    Ok(true)
}

/// DLRM's `max-ind-range` applied before counting: bounds a column's count table to `range` keys.
pub(crate) fn reduce(key: u64, range: Option<u64>) -> u64 {
    match range {
        Some(r) if key != MISSING_KEY => key % r,
        _ => key,
    }
}

/// Line boundaries `(a, b, val_first)` of the training files: lines `<= a` train, `<= b` the
/// second split.
fn boundaries(src: &TabularSource, opts: &PreprocessOptions, lines: u64) -> Result<(u64, u64, bool)> {
    if opts.split == SplitSpec::Terabyte {
        if src.test.is_none() {
            return Err(DataError::Options(
                "split: terabyte needs a test_path (the day split into test and validation halves)".into(),
            ));
        }
        return Ok((lines, lines, true));
    }
    if src.test.is_none() {
        return opts.split.boundaries(lines);
    }
    let (train, val) = match opts.split {
        SplitSpec::Fractions { train, val, .. } => (train, val),
        _ => (6.0, 0.5),
    };
    let tv = train + val;
    if tv <= 0.0 {
        return Err(DataError::Options("train + val fractions must be positive".into()));
    }
    let a = ((train / tv) * lines as f64).round() as u64;
    Ok((a, lines, true))
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
        let mut c = KeyMap::default();
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
        let src = TabularSource { format: TabularFormat::Criteo, train: vec![f.path().into()], test: None };
        let opts =
            PreprocessOptions { split: SplitSpec::Fractions { train: 0.8, val: 0.1, test: 0.1 }, ..Default::default() };
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
        let src = TabularSource { format: TabularFormat::Criteo, train: vec![f.path().into()], test: None };
        let opts = PreprocessOptions {
            split: SplitSpec::Fractions { train: 0.5, val: 0.25, test: 0.25 },
            ..Default::default()
        };
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
        let src = TabularSource {
            format: TabularFormat::Criteo,
            train: vec![tr.path().into()],
            test: Some(te.path().into()),
        };
        let opts =
            PreprocessOptions { split: SplitSpec::Fractions { train: 0.9, val: 0.1, test: 0.0 }, ..Default::default() };
        let ds = load_tabular(&src, &opts).unwrap();
        assert_eq!(ds.splits.train, 0..90);
        assert_eq!(ds.splits.val, 90..100);
        assert_eq!(ds.splits.test, 100..130);
    }

    /// The parallel block reader against a plain sequential pass, over several blocks.
    #[test]
    fn parallel_blocks_match_a_sequential_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.tsv");
        crate::synthetic::write_criteo_tsv(&path, 40_000, 50_000, 5).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > BLOCK_BYTES as u64, "spans blocks");
        let src = TabularSource { format: TabularFormat::Criteo, train: vec![path.clone()], test: None };
        let opts = PreprocessOptions {
            encoding: CategoricalEncoding::Vocabulary { min_freq: 2, hash_range: None },
            ..Default::default()
        };
        let ds = load_tabular(&src, &opts).unwrap();
        let mut counts: Vec<KeyMap<u32>> = vec![KeyMap::default(); 26];
        let mut rd = RecordReader::open(&path, TabularFormat::Criteo, BadRowPolicy::Fail).unwrap();
        let mut rec = RawRecord::default();
        let mut rows = vec![];
        while let Some(line) = rd.next_record(&mut rec).unwrap() {
            if line <= 32_000 {
                rec.cats.iter().enumerate().for_each(|(c, &k)| *counts[c].entry(k).or_insert(0) += 1);
            }
            rows.push(rec.clone());
        }
        let v = Vocabulary::from_counts(counts, 2);
        assert_eq!(ds.cardinalities, (0..26).map(|c| v.cardinality(c)).collect::<Vec<_>>());
        assert_eq!(ds.n_rows(), 40_000);
        for r in [0, 1, 20_000, 31_999, 32_000, 39_999] {
            let want: Vec<u32> = rows[r].cats.iter().enumerate().map(|(c, &k)| v.encode(c, k)).collect();
            assert_eq!(ds.cat_row(r), &want[..], "row {r}");
            assert_eq!(ds.labels[r], rows[r].label);
        }
        // A bad line deep in the file is reported with its own line number.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[35_000] = "1\tnot-a-row";
        std::fs::write(&path, lines.join("\n")).unwrap();
        let err = load_tabular(&src, &opts).unwrap_err().to_string();
        assert!(err.contains(":35001:"), "{err}");
    }

    #[test]
    fn bad_fractions_are_rejected() {
        let f = criteo_file(10);
        let src = TabularSource { format: TabularFormat::Criteo, train: vec![f.path().into()], test: None };
        let opts =
            PreprocessOptions { split: SplitSpec::Fractions { train: 0.8, val: 0.3, test: 0.1 }, ..Default::default() };
        let err = load_tabular(&src, &opts).unwrap_err().to_string();
        assert!(err.contains("sum to"), "{err}");
    }
}
