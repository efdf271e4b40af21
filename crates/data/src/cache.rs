//! On-disk cache of preprocessed datasets: fixed-width binary columns, keyed by the input files'
//! identity and the options, read into memory or memory-mapped for out-of-core training.
//!
//! A sweep of many runs preprocesses each dataset once. The key hashes (FNV-1a 64) the cache
//! format version, each input file's canonical path, size and modification time, and the options
//! serialised as JSON: touching the file or changing any option gives a new key.
//!
//! Layout: one directory per key, `<key>.cqrds/`, holding
//! - `dense.f32`: `[rows, n_dense]` numeric features, row-major, little-endian f32;
//! - `cats.u32`: `[rows, n_cat]` categorical ids, little-endian u32;
//! - `labels.u8`: one byte per row, 0 or 1;
//! - `header.json`: everything else (names, cardinalities, the row count, split ranges, skipped
//!   rows, teacher scores), written last.
//!
//! Rows are stored in split order (train, then validation and test as the source orders them),
//! so each split is one contiguous row range of the same files, named in the header; a reader of
//! one split touches only its pages. Preprocessing streams rows into the files as it encodes them
//! ([`RowSink`]): its memory does not grow with the data. The directory is built under a temporary
//! name and renamed into place, so a crash never leaves a cache that looks complete. On open, every
//! file's length is checked against the header; a cache that fails any check is rebuilt, never
//! trusted. A cache read into memory is also fully validated (ids below their cardinalities); a
//! mapped one is not scanned (that would read the whole data at every open).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::column::Column;
use crate::dataset::{Dataset, Splits};
use crate::error::{DataError, Result};
use crate::records::fnv1a64;

const FORMAT_VERSION: &str = "cqr-dataset-cache-v2";
const HEADER: &str = "header.json";
const DENSE: &str = "dense.f32";
const CATS: &str = "cats.u32";
const LABELS: &str = "labels.u8";

/// Whether a load was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

/// Where a cached dataset's arrays live while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// Read into memory (the default: fastest when the data fits).
    #[default]
    Memory,
    /// Memory-mapped from the cache files: resident memory is what the training loop touches.
    Mapped,
}

/// Hex key for a list of identity strings (file identities, options JSON).
pub fn cache_key(parts: &[String]) -> String {
    let mut joined = FORMAT_VERSION.to_string();
    for p in parts {
        joined.push('\u{1f}');
        joined.push_str(p);
    }
    format!("{:016x}", fnv1a64(joined.as_bytes()))
}

pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.cqrds"))
}

/// One lock per cache path, shared by the threads of this process: cells of a parallel sweep that
/// need the same dataset wait for the one building it, then open what it built.
fn path_lock(path: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(path.to_path_buf()).or_default().clone()
}

/// A temporary directory name no other builder uses: this process's id and a per-process
/// counter, so two threads (one process) and two processes (`--shard`) never share one.
fn unique_tmp(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    path.with_extension(format!("tmp{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Returns the cached dataset for `key_parts`, or builds, stores and returns it.
///
/// `build` receives the sink to stream its rows into (files under the cache directory, or memory
/// when `dir` is `None`) and returns [`RowSink::finish`]'s dataset.
///
/// Concurrency: within one process, callers for the same key are serialised, so the dataset is
/// built once and the others get a [`CacheOutcome::Hit`]. Across processes each builder writes
/// its own temporary directory and the first complete one to be renamed into place wins; the
/// others discard theirs (the work is repeated, never corrupted).
pub fn load_cached(
    dir: Option<&Path>,
    key_parts: &[String],
    storage: Storage,
    build: impl FnOnce(RowSink) -> Result<Dataset>,
) -> Result<(Dataset, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((build(RowSink::memory())?, CacheOutcome::Disabled));
    };
    let path = cache_path(dir, &cache_key(key_parts));
    let lock = path_lock(&path);
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_dir() {
        // An unreadable cache (truncated by a crash, older format) is rebuilt, not fatal.
        if let Ok(ds) = open(&path, storage) {
            return Ok((ds, CacheOutcome::Hit));
        }
        fs::remove_dir_all(&path).map_err(|e| DataError::write(&path, e))?;
    } else if path.exists() {
        fs::remove_file(&path).map_err(|e| DataError::write(&path, e))?;
    }
    fs::create_dir_all(dir).map_err(|e| DataError::write(dir, e))?;
    let tmp = unique_tmp(&path);
    let built = build(RowSink::files(&tmp)?);
    let ds = match built {
        Ok(ds) => ds,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    drop(ds);
    if let Err(e) = fs::rename(&tmp, &path) {
        // Another process built the same cache at the same time: use whichever landed.
        let _ = fs::remove_dir_all(&tmp);
        if !path.is_dir() {
            return Err(DataError::write(&path, e));
        }
    }
    Ok((open(&path, storage)?, CacheOutcome::Miss))
}

/// The header: the dataset without its arrays, plus the row count.
#[derive(Serialize, Deserialize)]
struct Header {
    rows: usize,
    dataset: Dataset,
}

/// Opens a cache directory written by [`RowSink::files`].
pub fn open(dir: &Path, storage: Storage) -> Result<Dataset> {
    let hp = dir.join(HEADER);
    let bad = |reason: String| DataError::Cache { path: hp.clone(), reason };
    let text = fs::read(&hp).map_err(|e| DataError::io(&hp, e))?;
    let Header { rows, dataset: mut ds } = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let (nd, nc) = (ds.n_dense(), ds.n_cat());
    match storage {
        Storage::Memory => {
            ds.dense = Column::read(&dir.join(DENSE), rows * nd)?;
            ds.cats = Column::read(&dir.join(CATS), rows * nc)?;
            ds.labels = Column::read(&dir.join(LABELS), rows)?;
            ds.validate().map_err(|e| bad(e.to_string()))?;
        }
        Storage::Mapped => {
            ds.dense = Column::map(&dir.join(DENSE), rows * nd)?;
            ds.cats = Column::map(&dir.join(CATS), rows * nc)?;
            ds.labels = Column::map(&dir.join(LABELS), rows)?;
            ds.validate_shape().map_err(|e| bad(e.to_string()))?;
        }
    }
    Ok(ds)
}

/// Writes any dataset as a cache directory (used for data generated in memory).
pub fn write(dir: &Path, ds: &Dataset) -> Result<()> {
    RowSink::files(dir)?.absorb(ds.clone()).map(drop)
}

/// Where preprocessing puts encoded rows: growing vectors, or the cache's column files.
pub struct RowSink {
    rows: usize,
    widths: Option<(usize, usize)>,
    out: SinkOut,
}

enum SinkOut {
    Memory { dense: Vec<f32>, cats: Vec<u32>, labels: Vec<u8> },
    Files { dir: PathBuf, dense: BufWriter<File>, cats: BufWriter<File>, labels: BufWriter<File> },
}

impl RowSink {
    pub fn memory() -> Self {
        RowSink { rows: 0, widths: None, out: SinkOut::Memory { dense: vec![], cats: vec![], labels: vec![] } }
    }

    /// Streams into a new directory `dir` (created; must not exist yet).
    pub fn files(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| DataError::write(dir, e))?;
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = dir.join(name);
            Ok(BufWriter::with_capacity(1 << 20, File::create(&p).map_err(|e| DataError::write(&p, e))?))
        };
        Ok(RowSink {
            rows: 0,
            widths: None,
            out: SinkOut::Files { dir: dir.into(), dense: open(DENSE)?, cats: open(CATS)?, labels: open(LABELS)? },
        })
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one encoded row. Every row must have the widths of the first.
    pub fn push(&mut self, label: u8, dense: &[f32], cats: &[u32]) -> Result<()> {
        let w = *self.widths.get_or_insert((dense.len(), cats.len()));
        assert_eq!(w, (dense.len(), cats.len()), "rows of one dataset have one width");
        self.rows += 1;
        match &mut self.out {
            SinkOut::Memory { dense: d, cats: c, labels: l } => {
                d.extend_from_slice(dense);
                c.extend_from_slice(cats);
                l.push(label);
                Ok(())
            }
            SinkOut::Files { dir, dense: d, cats: c, labels: l } => {
                let dir: &Path = dir;
                let io = |name: &'static str| move |e| DataError::write(dir.join(name), e);
                d.write_all(le_bytes(dense)).map_err(io(DENSE))?;
                c.write_all(le_bytes(cats)).map_err(io(CATS))?;
                l.write_all(&[label]).map_err(io(LABELS))
            }
        }
    }

    /// Pushes every row of an in-memory dataset and finishes with its header.
    pub fn absorb(mut self, ds: Dataset) -> Result<Dataset> {
        for r in 0..ds.n_rows() {
            self.push(ds.labels[r], ds.dense_row(r), ds.cat_row(r))?;
        }
        let header = Dataset { dense: Column::default(), cats: Column::default(), labels: Column::default(), ..ds };
        self.finish(header)
    }

    /// Completes the dataset: `header` carries everything but the arrays (which it must leave
    /// empty). Files are flushed and the header written; the returned dataset maps them.
    pub fn finish(self, mut header: Dataset) -> Result<Dataset> {
        let rows = self.rows;
        match self.out {
            SinkOut::Memory { dense, cats, labels } => {
                header.dense = dense.into();
                header.cats = cats.into();
                header.labels = labels.into();
                header.validate().map_err(|e| DataError::Options(e.to_string()))?;
                Ok(header)
            }
            SinkOut::Files { dir, dense, cats, labels } => {
                for (name, w) in [(DENSE, dense), (CATS, cats), (LABELS, labels)] {
                    let f = w.into_inner().map_err(|e| DataError::write(dir.join(name), e.into_error()))?;
                    f.sync_all().map_err(|e| DataError::write(dir.join(name), e))?;
                }
                let json = serde_json::to_vec(&Header { rows, dataset: header })
                    .map_err(|e| DataError::Cache { path: dir.join(HEADER), reason: e.to_string() })?;
                let hp = dir.join(HEADER);
                fs::write(&hp, json).map_err(|e| DataError::write(&hp, e))?;
                open(&dir, Storage::Mapped)
            }
        }
    }
}

/// The little-endian bytes of plain values (the crate builds for little-endian targets only).
fn le_bytes<T: crate::column::Plain>(vals: &[T]) -> &[u8] {
    // SAFETY: Plain types have no padding and every byte of them is initialised.
    unsafe { std::slice::from_raw_parts(vals.as_ptr().cast::<u8>(), std::mem::size_of_val(vals)) }
}

/// An empty dataset header (no rows yet) with the given schema; the loaders fill in the rest.
pub fn header(name: String, dense_names: Vec<String>, cat_names: Vec<String>, cardinalities: Vec<usize>) -> Dataset {
    Dataset {
        name,
        dense_names,
        cat_names,
        dense: Column::default(),
        cats: Column::default(),
        labels: Column::default(),
        cardinalities,
        splits: Splits { train: 0..0, val: 0..0, test: 0..0 },
        skipped: Default::default(),
        teacher: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{generate_gmf, GmfSynthConfig};

    #[test]
    fn hit_after_miss_and_invalidation_on_changed_option() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GmfSynthConfig { rows: 200, users: 10, items: 10, ..Default::default() };
        let key = |c: &GmfSynthConfig| vec![serde_json::to_string(c).unwrap()];
        let mut builds = 0;
        let (a, o1) = load_cached(Some(dir.path()), &key(&cfg), Storage::Memory, |s| {
            builds += 1;
            s.absorb(generate_gmf(&cfg)?)
        })
        .unwrap();
        let (b, o2) = load_cached(Some(dir.path()), &key(&cfg), Storage::Mapped, |s| {
            builds += 1;
            s.absorb(generate_gmf(&cfg)?)
        })
        .unwrap();
        assert_eq!((o1, o2, builds), (CacheOutcome::Miss, CacheOutcome::Hit, 1));
        assert!(!a.cats.is_mapped() && b.cats.is_mapped());
        assert_eq!(a, b, "mapped and in-memory loads hold the same dataset");
        assert_eq!(a, generate_gmf(&cfg).unwrap());
        let cfg2 = GmfSynthConfig { seed: 9, ..cfg.clone() };
        let (_, o3) =
            load_cached(Some(dir.path()), &key(&cfg2), Storage::Memory, |s| s.absorb(generate_gmf(&cfg2)?)).unwrap();
        assert_eq!(o3, CacheOutcome::Miss);
        // A truncated column or a corrupt header is rebuilt.
        let p = cache_path(dir.path(), &cache_key(&key(&cfg)));
        let cats = p.join(CATS);
        let len = fs::metadata(&cats).unwrap().len();
        fs::OpenOptions::new().write(true).open(&cats).unwrap().set_len(len - 3).unwrap();
        let err = open(&p, Storage::Mapped).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let (c, o4) =
            load_cached(Some(dir.path()), &key(&cfg), Storage::Mapped, |s| s.absorb(generate_gmf(&cfg)?)).unwrap();
        assert_eq!((o4, &c), (CacheOutcome::Miss, &a));
        fs::write(p.join(HEADER), b"{garbage").unwrap();
        let (d, o5) =
            load_cached(Some(dir.path()), &key(&cfg), Storage::Memory, |s| s.absorb(generate_gmf(&cfg)?)).unwrap();
        assert_eq!((o5, &d), (CacheOutcome::Miss, &a));
    }

    #[test]
    fn threads_asking_for_one_key_build_it_once() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let cfg = GmfSynthConfig { rows: 5000, users: 40, items: 40, ..Default::default() };
        let key = vec![serde_json::to_string(&cfg).unwrap()];
        let builds = AtomicUsize::new(0);
        let outcomes: Vec<(Dataset, CacheOutcome)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        load_cached(Some(dir.path()), &key, Storage::Memory, |sink| {
                            builds.fetch_add(1, Ordering::SeqCst);
                            sink.absorb(generate_gmf(&cfg)?)
                        })
                        .unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(outcomes.iter().filter(|(_, o)| *o == CacheOutcome::Miss).count(), 1);
        let want = generate_gmf(&cfg).unwrap();
        assert!(outcomes.iter().all(|(d, _)| *d == want));
        // No temporary directory is left behind.
        let names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Distinct builders never share a temporary name.
        let p = cache_path(dir.path(), "k");
        assert_ne!(unique_tmp(&p), unique_tmp(&p));
    }

    #[test]
    fn an_id_out_of_range_is_not_trusted_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = GmfSynthConfig { rows: 200, users: 10, items: 10, ..Default::default() };
        let p = dir.path().join("x.cqrds");
        write(&p, &generate_gmf(&cfg).unwrap()).unwrap();
        let mut bytes = fs::read(p.join(CATS)).unwrap();
        bytes[0..4].copy_from_slice(&99u32.to_le_bytes());
        fs::write(p.join(CATS), bytes).unwrap();
        let err = open(&p, Storage::Memory).unwrap_err().to_string();
        assert!(err.contains(">= cardinality"), "{err}");
    }
}
