//! A `tune:` section end to end on a tiny grid: picks made on validation with an equal trial
//! budget, final cells only in the summary, resumption to identical picks and tables, halving
//! agreeing with the full grid, and the report's tuned section.

use std::collections::BTreeMap;
use std::path::Path;

use cqr_runner::config::parse_experiment;
use cqr_runner::frames::{f64s, read_parquet, strs, write_tables};
use cqr_runner::sweep::{load_records, sweep, SweepOptions};

const EXP: &str = r#"
name: tuned
dataset:
  kind: synthetic_gmf
  users: 60
  items: 60
  rows: 3000
model:
  kind: gmf
  dim: 4
training:
  optimizer: adam
  lr: 0.01
  epochs: 2
  batch_size: 128
  evals_per_epoch: 2
methods:
  - name: hashing
  - name: cqr
    options: { n_chunks: 2 }
budgets: [40]
seeds: [0, 1]
tune:
  space:
    training.lr: [0.05, 0.0001, 0.000001]
  tuning_seeds: [100, 101]
"#;

fn opts(dir: &Path, max_cells: Option<usize>) -> SweepOptions {
    SweepOptions {
        results: dir.join("tuned"),
        cache: dir.join(".cache"),
        jobs: 1,
        shard: (0, 1),
        progress: false,
        max_cells,
    }
}

/// Runs the sweep (resumable) and writes the tables as the CLI does.
fn run(text: &str, dir: &Path, max_cells: Option<usize>) -> cqr_runner::sweep::SweepReport {
    let exp = parse_experiment(text, Path::new("tuned.yaml")).unwrap();
    let o = opts(dir, max_cells);
    let rep = sweep(&exp, &o).unwrap();
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    write_tables(&o.results, &load_records(&o.results).unwrap()).unwrap();
    rep
}

fn table(results: &Path, name: &str) -> String {
    std::fs::read_to_string(results.join(name)).unwrap()
}

#[test]
fn picks_follow_validation_and_only_final_cells_are_summarised() {
    let exp = parse_experiment(EXP, Path::new("tuned.yaml")).unwrap();
    let plan = exp.tune.as_ref().unwrap();
    assert_eq!((plan.groups.len(), plan.trials_per_group), (2, 3), "hashing and CQR at one budget, 3 trials each");
    let d = tempfile::tempdir().unwrap();
    run(EXP, d.path(), None);
    let r = d.path().join("tuned");
    // 2 groups x 3 trials x 2 tuning seeds, then 2 picks x 2 final seeds.
    let tuning = read_parquet(&r.join("tuning.parquet")).unwrap();
    assert_eq!(tuning.height(), 12);
    assert!(!tuning.get_column_names().iter().any(|c| c.starts_with("test")), "no test metric in the tuning table");
    let summary = read_parquet(&r.join("summary.parquet")).unwrap();
    let seeds = f64s(&summary, "seed").unwrap();
    assert_eq!(summary.height(), 4);
    assert!(seeds.iter().all(|&s| s < 2.0), "only final seeds in the summary: {seeds:?}");
    // The pick is the best mean validation BCE over the tuning seeds.
    let (line, setting, vb) =
        (strs(&tuning, "line").unwrap(), strs(&tuning, "setting").unwrap(), f64s(&tuning, "val_bce").unwrap());
    let mut means: BTreeMap<(String, String), f64> = BTreeMap::new();
    for i in 0..tuning.height() {
        *means.entry((line[i].clone(), setting[i].clone())).or_default() += vb[i] / 2.0;
    }
    let picks = read_parquet(&r.join("picks.parquet")).unwrap();
    let (pl, ps) = (strs(&picks, "line").unwrap(), strs(&picks, "setting").unwrap());
    assert_eq!(pl, ["hashing-b40", "cqr-b40"]);
    for (l, s) in pl.iter().zip(&ps) {
        let best = means.iter().filter(|((ll, _), _)| ll == l).min_by(|a, b| a.1.total_cmp(b.1)).unwrap();
        assert_eq!(&best.0 .1, s, "{l}: {means:?}");
        assert_eq!(s, "lr=0.05", "the only rate that learns in 2 epochs");
    }
    // The final cells ran at the pick; lr is a summary column.
    assert!(f64s(&summary, "lr").unwrap().iter().all(|&x| x == 0.05));
    // The picked value is the largest tried: flagged.
    assert!(strs(&picks, "edge").unwrap().iter().all(|e| e.contains("largest tried")));
    // The report says what the comparison is.
    let report = cqr_runner::report::write_report(&r).unwrap();
    let md = std::fs::read_to_string(report).unwrap();
    assert!(
        md.contains("## Tuned comparison")
            && md.contains("3 trials per method × budget")
            && md.contains("tuned: each method × budget at its own setting"),
        "{md}"
    );
    assert!(md.contains("unresolved (n = 2)"), "{md}");
    let charts = cqr_runner::plot::plot_results(&r).unwrap();
    assert!(charts.iter().any(|p| p.to_string_lossy().contains("tuning_val_bce_vs_lr_b40")), "{charts:?}");

    // Tampering with the tuning runs' *test* metrics changes no pick: selection reads validation.
    for rec in load_records(&r).unwrap().into_iter().filter(|x| x.config.tuning.is_some()) {
        let p = r.join("cells").join(&rec.id).join("record.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let lr = rec.config.training.lr;
        v["output"]["reported"]["test_bce"] = serde_json::json!(if lr < 0.01 { 0.01 } else { 5.0 });
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    }
    let before = table(&r, "picks.csv");
    run(EXP, d.path(), Some(0));
    assert_eq!(table(&r, "picks.csv"), before);
}

#[test]
fn a_killed_search_resumes_to_the_same_picks_and_tables() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(EXP, a.path(), None);
    let mut steps = 0;
    loop {
        let rep = run(EXP, b.path(), Some(5));
        steps += 1;
        if rep.ran.is_empty() {
            break;
        }
        assert!(steps < 10);
    }
    assert!(steps >= 3, "the search was cut {steps} times");
    for t in ["picks.csv", "tuning.csv"] {
        assert_eq!(table(&a.path().join("tuned"), t), table(&b.path().join("tuned"), t), "{t}");
    }
    let scores = |d: &Path| -> Vec<(String, f64)> {
        let df = read_parquet(&d.join("tuned/summary.parquet")).unwrap();
        let mut v: Vec<(String, f64)> =
            strs(&df, "cell_id").unwrap().into_iter().zip(f64s(&df, "test_bce").unwrap()).collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(scores(a.path()), scores(b.path()));
}

#[test]
fn halving_picks_what_the_full_grid_picks_with_fewer_runs() {
    let halved = EXP.replace(
        "  tuning_seeds: [100, 101]\n",
        "  tuning_seeds: [100, 101]\n  halving: { eta: 3, min_fraction: 0.5 }\n",
    );
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(EXP, a.path(), None);
    run(&halved, b.path(), None);
    let picks = |d: &Path| strs(&read_parquet(&d.join("tuned/picks.parquet")).unwrap(), "setting").unwrap();
    assert_eq!(picks(a.path()), picks(b.path()));
    let tuning = read_parquet(&b.path().join("tuned/tuning.parquet")).unwrap();
    let frac = f64s(&tuning, "fraction").unwrap();
    // Rung at 0.5: 3 trials x 2 seeds per group; then ⌈3/3⌉ = 1 trial in full.
    assert_eq!(frac.iter().filter(|&&f| f < 1.0).count(), 12);
    assert_eq!(frac.iter().filter(|&&f| f >= 1.0).count(), 4);
    let full_runs = f64s(&read_parquet(&b.path().join("tuned/picks.parquet")).unwrap(), "full_runs").unwrap();
    assert!(full_runs.iter().all(|&n| n == 1.0));
    // The rung gets a chart of its own (every trial, as halving compared them); without
    // halving there is none.
    let rung_chart = |d: &Path| {
        let charts = cqr_runner::plot::plot_results(&d.join("tuned")).unwrap();
        charts.iter().any(|p| p.to_string_lossy().contains("tuning_rung_val_bce_vs_lr_b40"))
    };
    assert!(rung_chart(b.path()) && !rung_chart(a.path()));
}

#[test]
fn tuned_files_are_checked_when_parsed() {
    let bad = |from: &str, to: &str, want: &str| {
        let e = format!("{:#}", parse_experiment(&EXP.replace(from, to), Path::new("tuned.yaml")).unwrap_err());
        assert!(e.contains(want) && e.contains("tuned.yaml"), "{e}");
    };
    bad("  tuning_seeds: [100, 101]\n", "  tuning_seeds: [1]\n", "also a final seed");
    bad("  tuning_seeds: [100, 101]\n", "  select: test_auc\n", "test metric");
    bad("  space:\n", "  methods:\n    cqr: { method.options.n_chunks: [2, 4] }\n  space:\n", "same trial budget");
    // Without `seeds`, a tuned file re-runs its picks on 5 seeds.
    let e = parse_experiment(&EXP.replace("seeds: [0, 1]\n", ""), Path::new("tuned.yaml")).unwrap();
    assert_eq!(e.tune.unwrap().groups[0].trials[0].finals.len(), 5);
}

/// A group moves on by itself: with hashing's search finished (run from a file listing hashing
/// alone: the cells keep their ids) and CQR's not started, the tables hold hashing's pick, the
/// same pick the whole search makes.
#[test]
fn a_finished_group_is_picked_while_another_still_runs() {
    let halved = EXP.replace(
        "  tuning_seeds: [100, 101]\n",
        "  tuning_seeds: [100, 101]\n  halving: { eta: 3, min_fraction: 0.5 }\n",
    );
    let hashing_only = halved.replace("  - name: cqr\n    options: { n_chunks: 2 }\n", "");
    assert_ne!(hashing_only, halved);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&hashing_only, b.path(), None);
    let rep = run(&halved, b.path(), Some(0));
    assert!(rep.ran.is_empty());
    let picks = |d: &Path| {
        let df = read_parquet(&d.join("tuned/picks.parquet")).unwrap();
        strs(&df, "line").unwrap().into_iter().zip(strs(&df, "setting").unwrap()).collect::<Vec<_>>()
    };
    let partial = picks(b.path());
    assert_eq!(partial.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["hashing-b40"], "{partial:?}");
    run(&halved, a.path(), None);
    assert!(picks(a.path()).contains(&partial[0]), "{:?} vs {partial:?}", picks(a.path()));
}
