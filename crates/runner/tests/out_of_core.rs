//! Out-of-core training at 5M rows: `cqr sweep` preprocesses a 5M-row Criteo TSV (written by the
//! test, ~1.4 GB) into the memory-mapped cache and trains one epoch of the `small` DLRM with
//! hashing, reading shuffled blocks. The child's peak RSS (getrusage, preprocessing included) must
//! stay under 400 MB, while the arrays alone hold 785 MB (5M x (13 x 4 + 26 x 4 + 1) bytes), which
//! an in-memory run would keep resident. Its own test binary, so no other child process shares the
//! rusage figure.

use std::path::Path;
use std::process::Command;

const ROWS: u64 = 5_000_000;
const RSS_BOUND_MB: f64 = 400.0;

fn children_peak_rss_mb() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a zeroed rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) }, 0);
    ru.ru_maxrss as f64 / 1024.0 // kB on Linux
}

#[test]
fn five_million_rows_train_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("day.tsv");
    let bytes = cqr_data::synthetic::write_criteo_tsv(&tsv, ROWS, 100_000, 3).unwrap();
    let exp = dir.path().join("ooc.yaml");
    std::fs::write(
        &exp,
        format!(
            r#"
name: ooc
dataset:
  kind: criteo
  path: {}
  preprocess:
    encoding: {{ vocabulary: {{ min_freq: 2 }} }}
model:
  kind: dlrm
  preset: small
training:
  lr: 0.001
  epochs: 1
  batch_size: 4096
  eval_batch_size: 16384
  shuffle: {{ blocks: {{ block_rows: 65536, window: 4 }} }}
methods:
  - name: hashing
budgets: [65536]
seeds: [0]
"#,
            tsv.display()
        ),
    )
    .unwrap();
    let results = dir.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_cqr"))
        .args(["sweep", exp.to_str().unwrap(), "--results", results.to_str().unwrap()])
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    let peak = children_peak_rss_mb();
    let rec: serde_json::Value = {
        let cells = results.join("cells");
        let cell = std::fs::read_dir(&cells).unwrap().next().unwrap().unwrap().path();
        serde_json::from_str(&std::fs::read_to_string(cell.join("record.json")).unwrap()).unwrap()
    };
    let test_auc = rec["output"]["reported"]["test_auc"].as_f64().unwrap();
    let cache_bytes: u64 = walk(&dir.path().join(".cache"));
    eprintln!("{ROWS} rows, {:.0} MB of TSV, cache {:.0} MB, peak RSS {peak:.0} MB (bound {RSS_BOUND_MB}), test AUC {test_auc:.4}", bytes as f64 / 1e6, cache_bytes as f64 / 1e6);
    assert!(cache_bytes > 780_000_000, "the arrays are on disk: {cache_bytes} bytes");
    assert!(peak < RSS_BOUND_MB, "peak RSS {peak:.0} MB exceeds {RSS_BOUND_MB} MB\n{log}");
    assert!(test_auc > 0.55, "the model learned the planted signal: AUC {test_auc}");
}

fn walk(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.path().is_dir() { walk(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
            .sum()
    })
}
