//! `cqr export`: the files alone reproduce the cell's test BCE. This test reads them as an
//! outside tool would (safetensors parsed here, the manifest's lookup programs and DLRM run in
//! plain loops), as `tools/load_export.py` does with numpy in CI.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cqr(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cqr")).args(args).output().unwrap();
    assert!(out.status.success(), "cqr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// name -> (shape, values as f64) of a safetensors file.
fn read(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut out = HashMap::new();
    for (k, v) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
        let o: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
        let bytes = &b[8 + n + o[0]..8 + n + o[1]];
        let vals: Vec<f64> = match v["dtype"].as_str().unwrap() {
            "F32" => bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            "U32" => bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            "U8" => bytes.iter().map(|&x| x as f64).collect(),
            d => panic!("dtype {d}"),
        };
        out.insert(k, (serde_json::from_value(v["shape"].clone()).unwrap(), vals));
    }
    out
}

type Arrays = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// One id's vector by the table's program.
fn embed(table: &Value, id: u64, a: &Arrays) -> Vec<f64> {
    let mut v = vec![];
    for part in table["parts"].as_array().unwrap() {
        let w = part["width"].as_u64().unwrap() as usize;
        let mut acc: Option<Vec<f64>> = None;
        for t in part["terms"].as_array().unwrap() {
            let ix = &t["index"];
            let u = |k: &str| ix[k].as_u64().unwrap();
            let row = match ix["kind"].as_str().unwrap() {
                "identity" => id,
                "hash" => ((u("a") as u128 * id as u128 + u("b") as u128) % ((1u128 << 61) - 1)) as u64 % u("m"),
                "quotient" => id / u("m"),
                "remainder" => id % u("m"),
                "pointer" => {
                    let (shape, p) = &a[ix["array"].as_str().unwrap()];
                    p[id as usize * shape[1] + u("column") as usize] as u64
                }
                k => panic!("index {k}"),
            } as usize;
            let r = &a[t["array"].as_str().unwrap()].1[row * w..(row + 1) * w];
            acc = Some(match (acc, part["combine"].as_str().unwrap()) {
                (None, _) => r.to_vec(),
                (Some(x), "sum") => x.iter().zip(r).map(|(x, r)| x + r).collect(),
                (Some(x), _) => x.iter().zip(r).map(|(x, r)| x * r).collect(),
            });
        }
        v.extend(acc.unwrap());
    }
    v
}

fn mlp(mut x: Vec<f64>, spec: &Value, a: &Arrays) -> Vec<f64> {
    let layers = spec["layers"].as_array().unwrap();
    for (k, name) in layers.iter().enumerate() {
        let (shape, w) = &a[&format!("{}.weight", name.as_str().unwrap())];
        let b = &a[&format!("{}.bias", name.as_str().unwrap())].1;
        let mut y = b.clone();
        for (i, xi) in x.iter().enumerate() {
            (0..shape[1]).for_each(|o| y[o] += xi * w[i * shape[1] + o]);
        }
        if k + 1 < layers.len() || spec["relu_last"].as_bool().unwrap() {
            y.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        x = y;
    }
    x
}

/// DLRM's logit of one row.
fn dlrm(model: &Value, dense: &[f64], embs: Vec<Vec<f64>>, a: &Arrays) -> f64 {
    let x = mlp(dense.to_vec(), &model["bottom"], a);
    let vs: Vec<Vec<f64>> = std::iter::once(x.clone()).chain(embs).collect();
    let mut top_in = x;
    for i in 0..vs.len() {
        for j in 0..i {
            top_in.push(vs[i].iter().zip(&vs[j]).map(|(p, q)| p * q).sum());
        }
    }
    mlp(top_in, &model["top"], a)[0]
}

fn test_bce(dir: &Path) -> (f64, f64) {
    let m: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let a = read(&dir.join("model.safetensors"));
    let t = read(&dir.join("test.safetensors"));
    let tables = m["tables"].as_array().unwrap();
    let ((cshape, cats), (dshape, dense), labels) = (&t["cats"], &t["dense"], &t["labels"].1);
    let mut sum = 0.0;
    for r in 0..labels.len() {
        let embs = (0..cshape[1]).map(|c| embed(&tables[c], cats[r * cshape[1] + c] as u64, &a)).collect();
        let z = dlrm(&m["model"], &dense[r * dshape[1]..(r + 1) * dshape[1]], embs, &a);
        sum += z.max(0.0) - z * labels[r] + (-z.abs()).exp().ln_1p();
    }
    (sum / labels.len() as f64, m["expected"]["test_bce"].as_f64().unwrap())
}

#[test]
fn exported_files_reproduce_the_test_bce() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("e.yaml");
    std::fs::write(
        &exp,
        "name: export-test\ndataset: { kind: synthetic_criteo, rows: 6000, cardinality_scale: 0.001, max_cardinality: 2000, seed: 0 }\n\
         model: { kind: dlrm, preset: small }\ntraining: { optimizer: adam, lr: 0.01, batch_size: 256, epochs: 2 }\n\
         methods:\n  - name: cqr\n    options: { n_chunks: 4 }\n  - name: pq\n    options: { n_chunks: 4 }\n  - name: qr\n    options: { combiner: mult }\n\
         budgets: [1600]\n",
    )
    .unwrap();
    let results = dir.path().join("r");
    cqr(&["sweep", exp.to_str().unwrap(), "--results", results.to_str().unwrap(), "--jobs", "1"]);
    let cells: Vec<_> = std::fs::read_dir(results.join("cells")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cells.len(), 3);
    for cell in cells {
        let out = dir.path().join("x").join(cell.file_name().unwrap());
        let said = cqr(&["export", cell.to_str().unwrap(), out.to_str().unwrap()]);
        assert!(said.contains("identical to the stored record"), "{said}");
        let (got, want) = test_bce(&out);
        assert!((got - want).abs() < 1e-5, "{}: {got} vs {want}", cell.display());
    }
    // A method without a program is refused by name, before any training.
    let robe = dir.path().join("robe.yaml");
    let text = std::fs::read_to_string(&exp).unwrap();
    let (head, _) = text.split_once("methods:").unwrap();
    std::fs::write(&robe, format!("{head}methods:\n  - name: robe\nbudgets: [1600]\n")).unwrap();
    let rr = dir.path().join("rr");
    cqr(&["sweep", robe.to_str().unwrap(), "--results", rr.to_str().unwrap(), "--jobs", "1"]);
    let cell = std::fs::read_dir(rr.join("cells")).unwrap().next().unwrap().unwrap().path();
    let out = Command::new(env!("CARGO_BIN_EXE_cqr"))
        .args(["export", cell.to_str().unwrap(), dir.path().join("y").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("method `robe` has no export program"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
