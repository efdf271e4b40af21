//! On-disk cache of preprocessed datasets, keyed by the input files' identity and the options.
//!
//! A sweep of many runs preprocesses each dataset once. The key hashes (FNV-1a 64) the cache
//! format version, each input file's canonical path, size and modification time, and the options
//! serialised as JSON: touching the file or changing any option gives a new key.
//! Layout: 8-byte magic, u64 header length, JSON header (the dataset without its arrays), then the
//! dense f32, categorical u32 and label f32 arrays, little-endian. Writes are atomic (rename).

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::records::fnv1a64;

const MAGIC: &[u8; 8] = b"CQRDS\x00\x01\x00";
const FORMAT_VERSION: &str = "cqr-dataset-cache-v1";

/// Whether a load was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
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

/// Returns the cached dataset for `key_parts`, or builds, stores and returns it.
pub fn load_cached(
    dir: Option<&Path>,
    key_parts: &[String],
    build: impl FnOnce() -> Result<Dataset>,
) -> Result<(Dataset, CacheOutcome)> {
    let Some(dir) = dir else {
        return Ok((build()?, CacheOutcome::Disabled));
    };
    let path = cache_path(dir, &cache_key(key_parts));
    if path.exists() {
        // An unreadable cache (truncated by a crash, older format) is rebuilt, not fatal.
        if let Ok(ds) = read(&path) {
            return Ok((ds, CacheOutcome::Hit));
        }
    }
    let ds = build()?;
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    write(&path, &ds)?;
    Ok((ds, CacheOutcome::Miss))
}

pub fn write(path: &Path, ds: &Dataset) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let header = Dataset { dense: vec![], cats: vec![], labels: vec![], ..ds.clone() };
    let json = serde_json::to_vec(&(header, ds.dense.len(), ds.cats.len(), ds.labels.len()))
        .map_err(|e| DataError::Cache { path: path.into(), reason: e.to_string() })?;
    let io = |e| DataError::io(&tmp, e);
    let mut w = BufWriter::new(fs::File::create(&tmp).map_err(io)?);
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&json).map_err(io)?;
    for v in &ds.dense {
        w.write_all(&v.to_le_bytes()).map_err(io)?;
    }
    for v in &ds.cats {
        w.write_all(&v.to_le_bytes()).map_err(io)?;
    }
    for v in &ds.labels {
        w.write_all(&v.to_le_bytes()).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
}

pub fn read(path: &Path) -> Result<Dataset> {
    let bad = |reason: &str| DataError::Cache { path: path.into(), reason: reason.into() };
    let mut bytes = Vec::new();
    fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| DataError::io(path, e))?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a cqr dataset cache (bad magic)"));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let body = bytes.get(16..16 + hlen).ok_or_else(|| bad("truncated header"))?;
    let (mut ds, nd, nc, nl): (Dataset, usize, usize, usize) = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    let data = &bytes[16 + hlen..];
    if data.len() != 4 * (nd + nc + nl) {
        return Err(bad("truncated arrays"));
    }
    let word = |i: usize| <[u8; 4]>::try_from(&data[4 * i..4 * i + 4]).unwrap();
    ds.dense = (0..nd).map(|i| f32::from_le_bytes(word(i))).collect();
    ds.cats = (nd..nd + nc).map(|i| u32::from_le_bytes(word(i))).collect();
    ds.labels = (nd + nc..nd + nc + nl).map(|i| f32::from_le_bytes(word(i))).collect();
    ds.validate().map_err(|e| bad(&e))?;
    Ok(ds)
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
        let (a, o1) = load_cached(Some(dir.path()), &key(&cfg), || { builds += 1; generate_gmf(&cfg) }).unwrap();
        let (b, o2) = load_cached(Some(dir.path()), &key(&cfg), || { builds += 1; generate_gmf(&cfg) }).unwrap();
        assert_eq!((o1, o2, builds), (CacheOutcome::Miss, CacheOutcome::Hit, 1));
        assert_eq!(a, b);
        let cfg2 = GmfSynthConfig { seed: 9, ..cfg.clone() };
        let (_, o3) = load_cached(Some(dir.path()), &key(&cfg2), || generate_gmf(&cfg2)).unwrap();
        assert_eq!(o3, CacheOutcome::Miss);
        // A corrupted cache file is rebuilt.
        let p = cache_path(dir.path(), &cache_key(&key(&cfg)));
        fs::write(&p, b"garbage").unwrap();
        let (c, o4) = load_cached(Some(dir.path()), &key(&cfg), || generate_gmf(&cfg)).unwrap();
        assert_eq!((o4, c), (CacheOutcome::Miss, a));
    }
}
