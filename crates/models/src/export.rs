//! A trained model as served, for other tools: `model.safetensors` (every table, codebook,
//! pointer array and MLP weight), `test.safetensors` (the test split as the model reads it:
//! dense features after preprocessing, encoded ids, labels) and `manifest.json` (the backbone,
//! each table's lookup program from [`cqr_methods::export`], the scores to reproduce).
//!
//! Names: table `i`'s arrays are `emb{i}.{name}` (the program's names with that prefix); MLP
//! layers are `bottom.{k}.weight` (`[in, out]`: `y = x W + b`), `bottom.{k}.bias`, `top.{k}...`.
//! Safetensors is written here (8-byte little-endian header length, the JSON header padded with
//! spaces to 8 bytes, then the little-endian data), so `safetensors.numpy.load_file` and
//! `tools/load_export.py` read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use cqr_data::Dataset;
use cqr_methods::export::{Array, Index, Part};
use serde_json::{json, Value};

use crate::net::{HostLinear, Mlp, Net};
use crate::train::TrainedModel;

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export: {0}")]
    Unsupported(String),
    #[error("export: cannot write {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

/// One array of a safetensors file.
enum Data<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
    U8(&'a [u8]),
}

impl Data<'_> {
    fn dtype(&self) -> &'static str {
        match self {
            Data::F32(_) => "F32",
            Data::U32(_) => "U32",
            Data::U8(_) => "U8",
        }
    }
    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U8(v) => v.to_vec(),
        }
    }
}

/// Writes `arrays` (name, shape, data) as safetensors; returns the bytes written.
fn write_safetensors(path: &Path, arrays: &[(String, Vec<usize>, Data)]) -> Result<u64, ExportError> {
    let io = |error| ExportError::Io { path: path.into(), error };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt", "writer": "cqr export" }));
    let (mut offset, mut blobs) = (0usize, vec![]);
    for (name, shape, data) in arrays {
        let b = data.bytes();
        header.insert(
            name.clone(),
            json!({ "dtype": data.dtype(), "shape": shape, "data_offsets": [offset, offset + b.len()] }),
        );
        offset += b.len();
        blobs.push(b);
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("json");
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&h).map_err(io)?;
    for b in &blobs {
        f.write_all(b).map_err(io)?;
    }
    f.flush().map_err(io)?;
    Ok((8 + h.len() + offset) as u64)
}

/// The program's array names with `prefix`.
fn prefixed(parts: &[Part], prefix: &str) -> Vec<Part> {
    let mut parts = parts.to_vec();
    for t in parts.iter_mut().flat_map(|p| p.terms.iter_mut()) {
        t.array = format!("{prefix}{}", t.array);
        if let Index::Pointer { array, .. } = &mut t.index {
            *array = format!("{prefix}{array}");
        }
    }
    parts
}

/// An MLP's layers as arrays named `{name}.{k}.weight|bias`, and its manifest entry.
fn mlp_arrays(name: &str, mlp: &Mlp, out: &mut Vec<(String, Array)>) -> Result<Value, ExportError> {
    let layers = mlp.host_layers().ok_or_else(|| ExportError::Unsupported(format!("{name} MLP is bf16")))?;
    let mut names = vec![];
    for (k, HostLinear { shape, weight, bias }) in layers.into_iter().enumerate() {
        let n = format!("{name}.{k}");
        out.push((format!("{n}.weight"), Array::F32 { shape: shape.to_vec(), data: weight }));
        out.push((format!("{n}.bias"), Array::F32 { shape: vec![shape[1]], data: bias }));
        names.push(n);
    }
    Ok(json!({ "layers": names, "relu_last": mlp.relu_last() }))
}

/// The backbone's arrays and manifest entry (DLRM and GMF; the others are refused by name).
fn backbone(net: &Net, out: &mut Vec<(String, Array)>) -> Result<Value, ExportError> {
    match net {
        Net::Dlrm(d) => {
            let (bottom, top) = d.mlps();
            let bottom = bottom.map(|b| mlp_arrays("bottom", b, out)).transpose()?;
            Ok(json!({
                "kind": "dlrm",
                "bottom": bottom,
                "top": mlp_arrays("top", top, out)?,
                "interaction": "dot products of [bottom output, table 0, ..., table T-1], strict lower triangle row by row (i > j), after the bottom output",
            }))
        }
        Net::Gmf => Ok(json!({ "kind": "gmf", "logit": "dot product of table 0 (user) and table 1 (item)" })),
        _ => Err(ExportError::Unsupported("only dlrm and gmf backbones are exported".into())),
    }
}

/// What [`write_export`] wrote.
#[derive(Debug)]
pub struct ExportFiles {
    pub manifest: PathBuf,
    pub model_bytes: u64,
    pub test_bytes: u64,
}

/// Writes `model` (trained on `ds`) to `dir`; `extra` (the cell, its scores) joins the manifest.
pub fn write_export(model: &TrainedModel, ds: &Dataset, dir: &Path, extra: Value) -> Result<ExportFiles, ExportError> {
    std::fs::create_dir_all(dir).map_err(|error| ExportError::Io { path: dir.into(), error })?;
    let mut arrays: Vec<(String, Array)> = vec![];
    let net = backbone(&model.net, &mut arrays)?;
    let mut tables = vec![];
    for (i, m) in model.tables.methods.iter().enumerate() {
        let e = m.export().ok_or_else(|| {
            ExportError::Unsupported(format!(
                "table {i} ({}): method `{}` has no export yet",
                ds.cat_names[i],
                m.name()
            ))
        })?;
        let prefix = format!("emb{i}.");
        tables.push(json!({
            "column": ds.cat_names[i], "method": m.name(), "vocab": m.vocab(), "dim": m.dim(),
            "parts": prefixed(&e.parts, &prefix),
        }));
        arrays.extend(e.arrays.into_iter().map(|(n, a)| (format!("{prefix}{n}"), a)));
    }
    let named: Vec<(String, Vec<usize>, Data)> = arrays
        .iter()
        .map(|(n, a)| match a {
            Array::F32 { shape, data } => (n.clone(), shape.clone(), Data::F32(data)),
            Array::U32 { shape, data } => (n.clone(), shape.clone(), Data::U32(data)),
        })
        .collect();
    let model_bytes = write_safetensors(&dir.join("model.safetensors"), &named)?;
    let test_bytes = write_test_split(ds, &dir.join("test.safetensors"))?;
    let mut manifest = json!({
        "format": "cqr-export/1",
        "arrays": "model.safetensors",
        "test": "test.safetensors",
        "model": net,
        "tables": tables,
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut manifest, extra) {
        m.extend(x);
    }
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).expect("json");
    std::fs::write(&path, text).map_err(|error| ExportError::Io { path: path.clone(), error })?;
    Ok(ExportFiles { manifest: path, model_bytes, test_bytes })
}

/// The test split as the model reads it: `dense` `[n, n_dense]`, `cats` `[n, tables]`, `labels` `[n]`.
fn write_test_split(ds: &Dataset, path: &Path) -> Result<u64, ExportError> {
    let r = ds.splits.test.clone();
    let (nd, nc) = (ds.n_dense(), ds.n_cat());
    let mut arrays = vec![
        ("cats".to_string(), vec![r.len(), nc], Data::U32(&ds.cats[r.start * nc..r.end * nc])),
        ("labels".to_string(), vec![r.len()], Data::U8(&ds.labels[r.clone()])),
    ];
    if nd > 0 {
        arrays.push(("dense".to_string(), vec![r.len(), nd], Data::F32(&ds.dense[r.start * nd..r.end * nd])));
    }
    write_safetensors(path, &arrays)
}

/// Reads a safetensors file's header and arrays back (tests; the format check of this module).
#[cfg(test)]
fn read_safetensors(path: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
        let o: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
        let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
        out.insert(k, (v["dtype"].as_str().unwrap().to_string(), shape, b[8 + n + o[0]..8 + n + o[1]].to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip() {
        let dir = std::env::temp_dir().join(format!("cqr-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.safetensors");
        let f = [1.5f32, -2.0, 3.25];
        let u = [7u32, 1 << 31];
        let arrays = vec![
            ("f".to_string(), vec![3], Data::F32(&f)),
            ("u".to_string(), vec![1, 2], Data::U32(&u)),
            ("b".to_string(), vec![2], Data::U8(&[0, 1])),
        ];
        let bytes = write_safetensors(&p, &arrays).unwrap();
        assert_eq!(bytes, std::fs::metadata(&p).unwrap().len());
        let back = read_safetensors(&p);
        assert_eq!(back["f"].0, "F32");
        assert_eq!(back["f"].2, f.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
        assert_eq!(
            (back["u"].1.clone(), back["u"].2[4..8].to_vec()),
            (vec![1, 2], (1u32 << 31).to_le_bytes().to_vec())
        );
        assert_eq!(back["b"].2, vec![0, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
