//! Tests on real data: the committed Terabyte sample, and the shared (non-redistributable) files
//! when they are present.

use cqr_data::inspect::inspect_tabular;
use cqr_data::movielens::load_movielens;
use cqr_data::{load_tabular, samples, BadRowPolicy, PreprocessOptions, TabularFormat, TabularSource};

#[test]
fn terabyte_sample_parses_with_known_counts() {
    let r = inspect_tabular(&samples::terabyte_sample(), TabularFormat::Criteo, BadRowPolicy::Fail).unwrap();
    assert_eq!(r.rows, 8324);
    assert!((r.label_rate() - 0.0332).abs() < 5e-5, "label rate {}", r.label_rate());
    assert_eq!(r.skipped.skipped, 0);
    assert_eq!(r.columns.len(), 39);
}

#[test]
fn terabyte_sample_preprocesses() {
    let src = TabularSource { format: TabularFormat::Criteo, train: vec![samples::terabyte_sample()], test: None };
    let ds = load_tabular(&src, &PreprocessOptions::default()).unwrap();
    ds.validate().unwrap();
    assert_eq!(ds.n_rows(), 8324);
    assert!(ds.dense.iter().all(|v| v.is_finite() && *v >= 0.0));
}

#[test]
fn kaggle_head_if_present() {
    let Some(p) = samples::shared("criteo/kaggle_dac_train_head10k.tsv") else { return };
    let r = inspect_tabular(&p, TabularFormat::Criteo, BadRowPolicy::Fail).unwrap();
    assert_eq!(r.rows, 10_000);
    assert!((r.label_rate() - 0.2182).abs() < 5e-5);
    // SOURCES.md: C3 has 5520 distinct non-empty values.
    assert_eq!(r.columns[13 + 2].cardinality, Some(5520));
}

#[test]
fn avazu_if_present() {
    let Some(a) = samples::shared("avazu/avazu_train_rows1-8999_with_header.csv") else { return };
    let r = inspect_tabular(&a, TabularFormat::Avazu, BadRowPolicy::Fail).unwrap();
    assert_eq!(r.rows, 8999);
    let site_id = r.columns.iter().find(|c| c.name == "site_id").unwrap();
    assert!(site_id.cardinality.unwrap() <= 381);
    let Some(b) = samples::shared("avazu/avazu_train_rows9000-9999_no_header.csv") else { return };
    let r2 = inspect_tabular(&b, TabularFormat::Avazu, BadRowPolicy::Fail).unwrap();
    assert_eq!(r2.rows, 1000);
    let ctr = (r.positives + r2.positives) as f64 / 9999.0;
    assert!((ctr - 0.1706).abs() < 5e-5, "{ctr}");
}

#[test]
fn movielens_100k_if_present() {
    let Some(p) = samples::shared("movielens/ml-100k/u.data") else { return };
    let (ds, neutral) = load_movielens(&p, None, BadRowPolicy::Fail).unwrap();
    ds.validate().unwrap();
    assert_eq!(ds.cardinalities[0], 943);
    assert_eq!(ds.splits.val.len(), 943 * 2);
    assert_eq!(ds.n_rows() as u64 + neutral, 100_000 - count_rating_between(&p));
}

/// Ratings strictly between 2 and 4 other than 3 (none in ml-100k, which has integer ratings).
fn count_rating_between(p: &std::path::Path) -> u64 {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| {
            let r: f32 = l.split('\t').nth(2).unwrap().parse().unwrap();
            r > 2.0 && r < 4.0 && r != 3.0
        })
        .count() as u64
}
