//! The day-by-day protocol end to end on a tiny drifting grid: per-day table, summary columns,
//! report section and paired charts.

use std::path::Path;

use cqr_runner::config::parse_experiment;
use cqr_runner::frames::{f64s, read_parquet, strs, write_tables};
use cqr_runner::sweep::{load_records, sweep, SweepOptions};

const EXP: &str = r#"
name: tiny-daily
dataset:
  kind: synthetic_criteo
  rows: 4000
  cardinality_scale: 0.001
  groups: 20
  drift: { days: 4, new_ids: 0.2, retire: 0.1 }
model:
  kind: dlrm
  preset: small
training:
  batch_size: 128
  epochs: 1
  days: 4
methods:
  - name: hashing
  - name: cqr
    options: { n_chunks: 2, last_cluster: 3 }
budgets: [256]
seeds: [0, 1]
"#;

/// Runs every cell of `exp` into `results` (cache under `dir`); no cell may fail.
fn run(exp: &cqr_runner::config::Experiment, results: &Path, dir: &Path) {
    let opts = SweepOptions {
        results: results.to_path_buf(),
        cache: dir.join(".cache"),
        jobs: 1,
        shard: (0, 1),
        progress: false,
        max_cells: None,
    };
    let rep = sweep(exp, &opts).unwrap();
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
}

#[test]
fn a_daily_grid_writes_its_days_report_and_charts() {
    let exp = parse_experiment(EXP, Path::new("tiny-daily.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("tiny-daily");
    run(&exp, &results, dir.path());
    write_tables(&results, &load_records(&results).unwrap()).unwrap();

    // Days 1-3 of each of the 4 cells.
    let days = read_parquet(&results.join("days.parquet")).unwrap();
    assert_eq!(days.height(), 4 * 3);
    assert!(f64s(&days, "new_rows").unwrap().iter().all(|&n| n > 0.0), "drifting data brings new ids daily");
    let summary = read_parquet(&results.join("summary.parquet")).unwrap();
    assert!(f64s(&summary, "test_new_bce").unwrap().iter().all(|x| x.is_finite()));
    assert!(f64s(&summary, "days").unwrap().iter().all(|&d| d == 4.0));
    assert!(strs(&summary, "dataset").unwrap().iter().all(|d| d == "synthetic-criteo-grouped-drift"));
    // CQR clustered after days 0-2, on the ids seen so far.
    let recs = load_records(&results).unwrap();
    let cqr = recs.iter().find(|r| r.name.starts_with("cqr")).unwrap();
    let cqr_runner::sweep::CellOutput::Train(t) = &cqr.output else { panic!("trained") };
    assert!(t.hook_log.iter().filter(|l| l.starts_with("day ")).count() >= 3, "{:?}", t.hook_log);

    let md = std::fs::read_to_string(cqr_runner::report::write_report(&results).unwrap()).unwrap();
    assert!(md.contains("## Day by day"), "{md}");
    assert!(md.lines().any(|l| l.contains("| cqr |") && l.contains('[')), "cqr paired against hashing: {md}");
    let charts = cqr_runner::plot::plot_results(&results).unwrap();
    let daily: Vec<_> = charts.iter().filter(|p| p.to_string_lossy().contains("_daily_")).collect();
    assert_eq!(daily.len(), 2 * 2, "all rows and new-id rows, png and svg: {charts:?}");
}

/// Real rows in file order (the committed Terabyte sample, ids taken modulo a range so that a new
/// id reaches the method): the runner cuts the days and drops a teacher score from other splits.
#[test]
fn real_rows_in_file_order_run_day_by_day() {
    let sample = cqr_data::samples::terabyte_sample();
    let exp = format!(
        r#"
name: terabyte-daily
dataset:
  kind: criteo
  path: {}
  preprocess:
    encoding: {{ modulo: {{ range: 100000 }} }}
model:
  kind: dlrm
  preset: small
training:
  batch_size: 128
  epochs: 1
  days: 4
methods:
  - name: hashing
budgets: [256]
seeds: [0]
"#,
        sample.display()
    );
    let exp = parse_experiment(&exp, Path::new("terabyte-daily.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("terabyte-daily");
    run(&exp, &results, dir.path());
    let recs = load_records(&results).unwrap();
    let cqr_runner::sweep::CellOutput::Train(t) = &recs[0].output else { panic!("trained") };
    let daily = t.daily.as_ref().expect("daily scores");
    // 8,324 rows in 4 days of 2,081: day 1 validates, days 2-3 test.
    assert_eq!(daily.days.len(), 3);
    assert_eq!((daily.val.rows, daily.test.rows), (2081, 4162));
    assert!(daily.days.iter().all(|d| d.scores.new_rows > 0), "real logs bring new ids every day");
    assert!(t.teacher.is_none());
}
