//! Every shipped experiment file parses (a broken grid is found here, not hours into a sweep),
//! and the planted regime benchmark keeps what it says it keeps.

use std::path::Path;

use cqr_runner::config::{load_experiment, DatasetConfig};

fn experiments() -> std::path::PathBuf {
    // Run-time, not compile-time: a target dir shared between checkouts reuses this build.
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run under cargo test")).join("../../experiments")
}

#[test]
fn every_shipped_experiment_parses() {
    let mut n = 0;
    for e in std::fs::read_dir(experiments()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let exp = load_experiment(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            assert!(!exp.every_cell().is_empty(), "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 10, "found {n} experiment files");
}

/// criteo-regime.yaml: rows and every cardinality scaled by one factor, so ids are looked up as
/// often per id as in the 45,840,617-row Kaggle file; caps within the paper's range.
#[test]
fn the_regime_benchmark_keeps_kaggles_lookups_per_id() {
    let exp = load_experiment(&experiments().join("criteo-regime.yaml")).unwrap();
    let DatasetConfig::SyntheticCriteo(c) = &exp.cells[0].config.dataset else { panic!("planted Criteo data") };
    let f = c.rows as f64 / 45_840_617.0;
    for (i, (&full, &scaled)) in cqr_data::synthetic::KAGGLE_CARDINALITIES.iter().zip(&c.cardinalities()).enumerate() {
        if full as f64 * f >= 100.0 {
            let (kaggle, here) = (45_840_617.0 / full as f64, c.rows as f64 / scaled as f64);
            assert!(
                (here / kaggle - 1.0).abs() < 0.01,
                "C{}: {here:.2} rows per id here, {kaggle:.2} in Kaggle",
                i + 1
            );
        }
    }
    let caps: Vec<u64> = exp.cells.iter().filter_map(|c| c.config.budget).collect();
    assert!(caps.iter().all(|&b| (1_600..=800_000).contains(&b)), "{caps:?}");
    let seeds: std::collections::BTreeSet<u64> = exp.cells.iter().map(|c| c.config.seed).collect();
    assert!(seeds.len() >= 3);
}
