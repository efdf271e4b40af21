//! Sweeps end to end on a tiny grid: resume, shards, tables, charts, report.

use std::collections::BTreeMap;
use std::path::Path;

use cqr_runner::config::parse_experiment;
use cqr_runner::frames::{f64s, read_parquet, strs, write_tables, SUMMARY_COLUMNS};
use cqr_runner::sweep::{load_records, sweep, SweepOptions};

const EXP: &str = r#"
name: tiny
dataset:
  kind: synthetic_gmf
  users: 60
  items: 60
  rows: 3000
model:
  kind: gmf
  dim: 4
training:
  lr: 0.01
  epochs: 2
  batch_size: 128
methods:
  - name: dense
  - name: hashing
  - name: cqr
    options: { n_chunks: 2 }
  - name: pq
    options: { n_chunks: 2 }
  - name: qr
budgets: [40, 80]
seeds: [0, 1]
"#;

fn opts(dir: &Path, shard: (usize, usize), max_cells: Option<usize>) -> SweepOptions {
    SweepOptions { results: dir.join("tiny"), cache: dir.join(".cache"), jobs: 1, shard, progress: false, max_cells }
}

/// Scores per cell id (timings and memory vary between runs; these must not).
fn scores(results: &Path) -> BTreeMap<String, (f64, f64, f64)> {
    let df = read_parquet(&results.join("summary.parquet")).unwrap();
    let ids = strs(&df, "cell_id").unwrap();
    let (b, a, p) = (f64s(&df, "test_bce").unwrap(), f64s(&df, "test_auc").unwrap(), f64s(&df, "params").unwrap());
    assert_eq!(ids.len(), ids.iter().collect::<std::collections::BTreeSet<_>>().len(), "duplicate rows");
    ids.into_iter().enumerate().map(|(i, id)| (id, (b[i], a[i], p[i]))).collect()
}

#[test]
fn resume_shards_tables_charts_and_report() {
    let exp = parse_experiment(EXP, Path::new("tiny.yaml")).unwrap();
    // dense: 2 seeds; 4 methods x 2 budgets x 2 seeds.
    assert_eq!(exp.cells.len(), 2 + 16);

    // Uninterrupted.
    let a = tempfile::tempdir().unwrap();
    let rep = sweep(&exp, &opts(a.path(), (0, 1), None)).unwrap();
    // QR needs 2 sqrt(60) ~ 16 rows: budget 40 (10 rows of 4) is infeasible, recorded as such.
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    let ra = a.path().join("tiny");
    let recs = load_records(&ra).unwrap();
    assert_eq!(recs.len(), exp.cells.len());
    write_tables(&ra, &recs).unwrap();
    let full = scores(&ra);
    assert_eq!(full.len(), exp.cells.len() - 2, "every feasible cell has one summary row");
    assert!(ra.join("infeasible.csv").exists());

    // Stopped half-way, then restarted: same summary, nothing recomputed twice.
    let b = tempfile::tempdir().unwrap();
    let first = sweep(&exp, &opts(b.path(), (0, 1), Some(7))).unwrap();
    assert_eq!(first.ran.len(), 7);
    let second = sweep(&exp, &opts(b.path(), (0, 1), None)).unwrap();
    assert_eq!(second.already_done, 7);
    assert_eq!(second.ran.len(), exp.cells.len() - 7);
    let rb = b.path().join("tiny");
    write_tables(&rb, &load_records(&rb).unwrap()).unwrap();
    assert_eq!(scores(&rb), full);

    // Three shards into one directory: every cell exactly once.
    let c = tempfile::tempdir().unwrap();
    let mut ran = vec![];
    for i in 0..3 {
        ran.extend(sweep(&exp, &opts(c.path(), (i, 3), None)).unwrap().ran);
    }
    ran.sort();
    let mut all: Vec<String> = exp.cells.iter().map(|c| c.name.clone()).collect();
    all.sort();
    assert_eq!(ran, all);
    let rc = c.path().join("tiny");
    write_tables(&rc, &load_records(&rc).unwrap()).unwrap();
    assert_eq!(scores(&rc), full);

    // Schema.
    let df = read_parquet(&ra.join("summary.parquet")).unwrap();
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    assert_eq!(names, SUMMARY_COLUMNS);
    let ep = read_parquet(&ra.join("epochs.parquet")).unwrap();
    assert_eq!(ep.height(), (exp.cells.len() - 2) * 2, "one row per cell and epoch");
    assert!(ra.join("summary.csv").exists() && ra.join("epochs.csv").exists());

    // Charts from the tables alone, and the report.
    let charts = cqr_runner::plot::plot_results(&ra).unwrap();
    assert!(charts.iter().any(|p| p.to_string_lossy().ends_with("test_bce_vs_params.png")), "{charts:?}");
    for p in &charts {
        assert!(std::fs::metadata(p).unwrap().len() > 1000, "{} is empty", p.display());
    }
    let report = std::fs::read_to_string(cqr_runner::report::write_report(&ra).unwrap()).unwrap();
    assert!(report.contains("| synthetic-gmf | cqr-b80 |") && report.contains("charts/"), "{report}");
    assert!(report.contains("Infeasible cells"));
    for stem in ["test_bce_vs_train_bytes.png", "test_auc_vs_final_bytes.png", "paired_cqr_minus_hashing.png"] {
        assert!(charts.iter().any(|p| p.to_string_lossy().ends_with(stem)), "{stem} missing: {charts:?}");
    }

    // The paired section: hashing − CQR at budget 80, from the per-seed test BCEs in the table.
    assert!(report.contains("## Paired comparisons") && report.contains("### Parameters to reach dense"), "{report}");
    let df = read_parquet(&ra.join("summary.parquet")).unwrap();
    let (names, bce) = (strs(&df, "cell_name").unwrap(), f64s(&df, "test_bce").unwrap());
    let of = |n: &str| bce[names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n}"))];
    let diffs: Vec<f64> = (0..2).map(|s| of(&format!("hashing-b80-s{s}")) - of(&format!("cqr-b80-s{s}"))).collect();
    let want = cqr_runner::paired::t_interval(&diffs);
    let line = report
        .lines()
        .find(|l| l.starts_with("| synthetic-gmf | hashing | cqr | 80 |"))
        .unwrap_or_else(|| panic!("no hashing-cqr row:\n{report}"));
    assert!(line.contains(&format!("{:+.5} [{:+.5}, {:+.5}]", want.mean, want.lo, want.hi)), "{line} vs {want:?}");
    assert!(report.contains("| synthetic-gmf | cqr | dense | 80 |"), "{report}");
    // Normalized entropy: BCE over the entropy of the training click rate.
    let (ne, rate) = (f64s(&df, "normalized_entropy").unwrap(), f64s(&df, "train_click_rate").unwrap());
    let h = -(rate[0] * rate[0].ln() + (1.0 - rate[0]) * (1.0 - rate[0]).ln());
    assert!((ne[0] - bce[0] / h).abs() < 1e-12 && rate[0] > 0.0 && rate[0] < 1.0);
    // Frequency buckets partition the test rows.
    let rows: Vec<f64> =
        ["test_rows_head", "test_rows_torso", "test_rows_tail"].iter().map(|c| f64s(&df, c).unwrap()[0]).collect();
    assert_eq!(rows.iter().sum::<f64>(), 300.0, "{rows:?}");
}

/// A cold cache under `--jobs 4`: every cell succeeds, and the dataset is built once (the sweep
/// counts the cells whose load was a cache miss; the others waited for that build and read it).
#[test]
fn parallel_cells_on_a_cold_cache_build_the_dataset_once() {
    let exp = parse_experiment(EXP, Path::new("tiny.yaml")).unwrap();
    assert!(exp.cells.len() >= 8);
    let d = tempfile::tempdir().unwrap();
    let o = SweepOptions { jobs: 4, ..opts(d.path(), (0, 1), None) };
    let rep = sweep(&exp, &o).unwrap();
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    assert_eq!(rep.ran.len(), exp.cells.len());
    assert_eq!(rep.cache_builds, 1, "one cell built the cache, the rest read it");
    let entries: Vec<String> = std::fs::read_dir(d.path().join(".cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 1, "one cache directory, no temporary left: {entries:?}");
    assert!(entries[0].ends_with(".cqrds"));
    // Same numbers as one job at a time.
    let s = tempfile::tempdir().unwrap();
    sweep(&exp, &opts(s.path(), (0, 1), None)).unwrap();
    let (rp, rs) = (d.path().join("tiny"), s.path().join("tiny"));
    write_tables(&rp, &load_records(&rp).unwrap()).unwrap();
    write_tables(&rs, &load_records(&rs).unwrap()).unwrap();
    assert_eq!(scores(&rp), scores(&rs));
}
