//! Your own data end to end: CSV, TSV, Parquet and libsvm tables train through `cqr sweep`'s cell
//! runner; Terabyte-style day files with negative sub-sampling; and out-of-core training
//! (memory-mapped cache, block shuffle) gives exactly the in-memory results.

use std::fs::File;
use std::path::Path;

use cqr_runner::config::parse_experiment;
use cqr_runner::sweep::{load_dataset, run_cell, storage_for, CellOutput};

fn write_tables(dir: &Path) {
    let mut csv = String::from("click,hour,site,app,price\n");
    let mut svm = String::new();
    for i in 0..3000u64 {
        let (site, app) = ((i * 7919) % 41, (i * 104729) % 23);
        let y = (site < 14 || app < 5) as u8;
        csv.push_str(&format!("{y},{},s{site},a{app},{}\n", i % 24, (i % 100) as f64 / 10.0));
        svm.push_str(&format!("{} {}:1 {}:1 {}:1\n", if y == 1 { "1" } else { "-1" }, i % 24, 100 + site, 200 + app));
    }
    std::fs::write(dir.join("t.csv"), &csv).unwrap();
    std::fs::write(dir.join("t.tsv"), csv.replace(',', "\t")).unwrap();
    std::fs::write(dir.join("t.libfm"), svm).unwrap();
    // The same table as Parquet (written by polars).
    use polars::prelude::*;
    let mut df =
        CsvReadOptions::default().try_into_reader_with_file_path(Some(dir.join("t.csv"))).unwrap().finish().unwrap();
    ParquetWriter::new(File::create(dir.join("t.parquet")).unwrap()).finish(&mut df).unwrap();
}

fn table_experiment(dir: &Path, format: &str) -> String {
    let columns = if format == "libfm" {
        String::new()
    } else {
        "\n  label: click\n  categorical: [hour, site, app]\n  numeric: [price]".into()
    };
    format!(
        r#"
name: tables
dataset:
  kind: table
  path: {}/t.{format}
  format: {format}{columns}
model:
  kind: dlrm
  preset: small
  bottom: [1, 16]
training:
  lr: 0.01
  epochs: 2
  batch_size: 128
methods:
  - name: hashing
budgets: [160]
seeds: [0]
"#,
        dir.display()
    )
}

#[test]
fn csv_tsv_parquet_and_libfm_tables_train_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let cache = dir.path().join(".cache");
    let mut bces = vec![];
    for format in ["csv", "tsv", "parquet", "libfm"] {
        let exp = parse_experiment(&table_experiment(dir.path(), format), Path::new("t.yaml"))
            .unwrap_or_else(|e| panic!("{format}: {e:#}"));
        let rec = run_cell(&exp.cells[0], &cache, false).unwrap_or_else(|e| panic!("{format}: {e:#}"));
        let CellOutput::Train(r) = rec.output else { panic!("{format}: not trained") };
        let s = r.reported;
        assert!(s.test_bce.is_finite() && s.test_auc > 0.5, "{format}: {s:?}");
        bces.push(s.test_bce);
    }
    // CSV, TSV and Parquet hold the same table: bit-identical results.
    assert_eq!(bces[0], bces[1]);
    assert_eq!(bces[0], bces[2]);
}

const DAYS: &str = r#"
name: days
dataset:
  kind: criteo
  path: [DIR/day_0.tsv, DIR/day_1.tsv]
  test_path: DIR/day_2.tsv
  preprocess:
    split: terabyte
    sub_sample_negatives: 0.5
    encoding: { vocabulary: { min_freq: 2, hash_range: 5000 } }
model:
  kind: dlrm
  preset: small
training:
  lr: 0.003
  epochs: 2
  batch_size: 256
SHUFFLE
methods:
  - name: hashing
  - name: cqr
    options: { cluster_every_steps: 10 }
budgets: [1600]
seeds: [0]
"#;

#[test]
fn day_files_subsample_and_out_of_core_training_matches_memory() {
    let dir = tempfile::tempdir().unwrap();
    for d in 0..3 {
        cqr_data::synthetic::write_criteo_tsv(&dir.path().join(format!("day_{d}.tsv")), 3000, 20_000, d).unwrap();
    }
    let text = DAYS.replace("DIR", &dir.path().display().to_string());
    let exp = parse_experiment(
        &text.replace("SHUFFLE", "  shuffle: { blocks: { block_rows: 500, window: 3 } }"),
        Path::new("d.yaml"),
    )
    .unwrap();
    let cache = dir.path().join(".cache");
    let c = &exp.cells[0];
    let mapped = load_dataset(&c.config.dataset, &cache, storage_for(&c.config.training)).unwrap();
    assert!(mapped.is_mapped());
    // Day 2 halves: test first, then validation; days 0-1 train, negatives halved.
    assert_eq!(mapped.splits.test.len(), 1500);
    assert_eq!(mapped.splits.val.len(), 1500);
    let train = mapped.splits.train.len();
    let pos = (mapped.label_rate(mapped.splits.train.clone()) * train as f64).round() as usize;
    let neg = train - pos;
    assert!(
        train < 6000 && (neg as f64) < 0.62 * (6000 - pos) as f64 && (neg as f64) > 0.38 * (6000 - pos) as f64,
        "train {train}, positives {pos}"
    );
    // Out of core (mapped, block shuffle) and in memory (same block shuffle) give identical runs.
    for cell in &exp.cells {
        let a = run_cell(cell, &cache, false).unwrap();
        let mut in_memory = cell.clone();
        let ds = load_dataset(&cell.config.dataset, &cache, cqr_data::Storage::Memory).unwrap();
        assert!(!ds.is_mapped());
        assert_eq!(ds, mapped);
        let b = {
            // run_cell picks the storage from the shuffle; train the in-memory copy directly.
            let cfg = &mut in_memory.config;
            let model = cfg.model.as_ref().unwrap().resolve_for(ds.n_dense()).unwrap();
            let m = cfg.method.as_ref().unwrap();
            let spec = cqr_models::EmbeddingSpec {
                method: m.name.clone(),
                budget: cfg.budget.unwrap(),
                options: m.options.clone(),
                init_scale: m.init_scale,
                quantize: m.quantize,
                dense_under_cap: m.dense_under_cap,
            };
            cqr_models::train(&ds, &model, &spec, &cqr_models::TrainConfig { seed: cfg.seed, ..cfg.training.clone() })
                .unwrap()
        };
        let CellOutput::Train(a) = a.output else { panic!("not trained") };
        assert_eq!(
            a.evals.iter().map(|e| e.scores).collect::<Vec<_>>(),
            b.evals.iter().map(|e| e.scores).collect::<Vec<_>>(),
            "{}",
            cell.name
        );
        assert!(a.reported.test_bce.is_finite());
    }
    // A full shuffle of the same data differs (a different order), but also trains.
    let full = parse_experiment(&text.replace("SHUFFLE", ""), Path::new("d.yaml")).unwrap();
    let r = run_cell(&full.cells[0], &cache, false).unwrap();
    assert!(matches!(r.output, CellOutput::Train(_)));
}

/// A DLRM preset fits any numeric width: two numeric columns, or none (`numeric: []` is a value,
/// not an empty grid axis), both train with `preset: small` and no explicit `bottom`.
#[test]
fn a_preset_fits_the_tables_numeric_columns() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path());
    let cache = dir.path().join(".cache");
    for (numeric, categorical) in [("[hour, price]", "[site, app]"), ("[]", "[hour, site, app]")] {
        let text = table_experiment(dir.path(), "csv")
            .replace("  bottom: [1, 16]\n", "")
            .replace("categorical: [hour, site, app]", &format!("categorical: {categorical}"))
            .replace("numeric: [price]", &format!("numeric: {numeric}"));
        let exp = parse_experiment(&text, Path::new("p.yaml")).unwrap();
        assert_eq!(exp.cells.len(), 1, "{numeric}");
        let r = run_cell(&exp.cells[0], &cache, false).unwrap_or_else(|e| panic!("numeric {numeric}: {e:#}"));
        let CellOutput::Train(t) = r.output else { panic!("not trained") };
        assert!(t.reported.test_bce.is_finite());
    }
}
