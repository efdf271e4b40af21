//! Result tables (polars): one row per cell and evaluation (`epochs`), one row per cell
//! (`summary`), and the least-squares traces (`least_squares`); each as parquet and CSV.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

use crate::sweep::{CellOutput, CellRecord};

fn col_s(name: &str, v: Vec<String>) -> Column {
    Column::new(name.into(), v)
}
fn col_f(name: &str, v: Vec<f64>) -> Column {
    Column::new(name.into(), v)
}
fn col_u(name: &str, v: Vec<u64>) -> Column {
    Column::new(name.into(), v)
}

/// Column names of `summary` (documented in the README).
pub const SUMMARY_COLUMNS: &[&str] = &[
    "cell_id",
    "cell_name",
    "variant",
    "line",
    "experiment",
    "dataset",
    "model",
    "method",
    "budget",
    "seed",
    "best_epoch",
    "best_step",
    "val_bce",
    "val_auc",
    "best_val_auc",
    "test_bce",
    "test_auc",
    "dense_test_bce",
    "dense_test_auc",
    "params",
    "train_params",
    "index_bytes",
    "optimizer_state_bytes",
    "total_bytes",
    "train_total_bytes",
    "mlp_params",
    "peak_rss_bytes",
    "train_s",
    "cluster_s",
    "compress_s",
    "eval_s",
    "samples_per_s",
    "skipped_rows",
    "teacher_test_bce",
    "teacher_test_auc",
    "train_click_rate",
    "normalized_entropy",
    "test_bce_head",
    "test_bce_torso",
    "test_bce_tail",
    "test_rows_head",
    "test_rows_torso",
    "test_rows_tail",
    "optimizer",
    "lr",
    "embedding_lr",
    "batch_size",
    "epochs",
    "method_options",
    "serve_samples_per_s",
    "serve_p50_b1_ms",
    "serve_p99_b1_ms",
    "serve_p50_b64_ms",
    "serve_p99_b64_ms",
    "days",
    "days_over_budget",
    "test_new_rows",
    "test_new_bce",
    "test_seen_bce",
    "test_any_new_rows",
    "test_any_new_bce",
    "test_all_seen_bce",
];

/// Normalized entropy (He et al. 2014, as the DLRM papers report it): the BCE divided by the
/// entropy of the training click rate `p`, i.e. the BCE of always predicting `p`. Below 1 the
/// model beats that constant. NaN when `p` is 0 or 1 (records from before the rate was stored).
pub fn normalized_entropy(bce: f64, p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return f64::NAN;
    }
    bce / -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())
}

/// The cell name without its seed: cells that differ only in the seed share a variant.
pub fn variant(name: &str) -> String {
    crate::config::CellName::parse(name).variant()
}

pub fn summary_frame(records: &[CellRecord]) -> Result<DataFrame> {
    let rows: Vec<(&CellRecord, &cqr_models::RunResult)> = records
        .iter()
        .filter_map(|r| match &r.output {
            CellOutput::Train(t) => Some((r, t.as_ref())),
            _ => None,
        })
        .collect();
    let s = |f: &dyn Fn(&CellRecord, &cqr_models::RunResult) -> String| {
        rows.iter().map(|(r, t)| f(r, t)).collect::<Vec<_>>()
    };
    let f =
        |f: &dyn Fn(&CellRecord, &cqr_models::RunResult) -> f64| rows.iter().map(|(r, t)| f(r, t)).collect::<Vec<_>>();
    let u =
        |f: &dyn Fn(&CellRecord, &cqr_models::RunResult) -> u64| rows.iter().map(|(r, t)| f(r, t)).collect::<Vec<_>>();
    let cols = vec![
        col_s("cell_id", s(&|r, _| r.id.clone())),
        col_s("cell_name", s(&|r, _| r.name.clone())),
        col_s("variant", s(&|r, _| variant(&r.name))),
        col_s("line", s(&|r, _| crate::config::CellName::parse(&r.name).line())),
        col_s("experiment", s(&|r, _| r.config.experiment.clone())),
        col_s("dataset", s(&|r, _| r.dataset.clone())),
        col_s(
            "model",
            s(&|r, _| r.config.model.as_ref().map(|m| format!("{:?}", m.kind).to_lowercase()).unwrap_or_default()),
        ),
        col_s("method", s(&|r, _| r.config.method.as_ref().map(|m| m.name.clone()).unwrap_or_default())),
        col_u("budget", u(&|r, _| r.config.budget.unwrap_or(0))),
        col_u("seed", u(&|r, _| r.config.seed)),
        col_u("best_epoch", u(&|_, t| t.best.epoch as u64)),
        col_u("best_step", u(&|_, t| t.best.step as u64)),
        col_f("val_bce", f(&|_, t| t.reported.val_bce)),
        col_f("val_auc", f(&|_, t| t.reported.val_auc)),
        col_f("best_val_auc", f(&|_, t| t.best_val_auc())),
        col_f("test_bce", f(&|_, t| t.reported.test_bce)),
        col_f("test_auc", f(&|_, t| t.reported.test_auc)),
        col_f("dense_test_bce", f(&|_, t| t.best.scores.test_bce)),
        col_f("dense_test_auc", f(&|_, t| t.best.scores.test_auc)),
        col_u("params", u(&|_, t| t.total_final.trainable_params)),
        col_u("train_params", u(&|_, t| t.total_train.trainable_params)),
        col_u("index_bytes", u(&|_, t| t.total_final.index_bytes)),
        col_u("optimizer_state_bytes", u(&|_, t| t.total_train.optimizer_state_bytes)),
        col_u("total_bytes", u(&|_, t| t.total_final.total_bytes())),
        col_u("train_total_bytes", u(&|_, t| t.total_train.total_bytes())),
        col_u("mlp_params", u(&|_, t| t.mlp_params)),
        col_u("peak_rss_bytes", u(&|_, t| t.peak_rss_bytes)),
        col_f("train_s", f(&|_, t| t.timings.train_s)),
        col_f("cluster_s", f(&|_, t| t.timings.cluster_s)),
        col_f("compress_s", f(&|_, t| t.timings.compress_s)),
        col_f("eval_s", f(&|_, t| t.timings.eval_s)),
        col_f("samples_per_s", f(&|_, t| t.train_samples_per_s)),
        col_u("skipped_rows", u(&|_, t| t.skipped.skipped)),
        col_f("teacher_test_bce", f(&|_, t| t.teacher.map(|x| x.test_bce).unwrap_or(f64::NAN))),
        col_f("teacher_test_auc", f(&|_, t| t.teacher.map(|x| x.test_auc).unwrap_or(f64::NAN))),
        col_f("train_click_rate", f(&|_, t| t.train_click_rate)),
        col_f("normalized_entropy", f(&|_, t| normalized_entropy(t.reported.test_bce, t.train_click_rate))),
        col_f("test_bce_head", f(&|_, t| freq_bce(t, 0))),
        col_f("test_bce_torso", f(&|_, t| freq_bce(t, 1))),
        col_f("test_bce_tail", f(&|_, t| freq_bce(t, 2))),
        col_u("test_rows_head", u(&|_, t| freq_rows(t, 0))),
        col_u("test_rows_torso", u(&|_, t| freq_rows(t, 1))),
        col_u("test_rows_tail", u(&|_, t| freq_rows(t, 2))),
        // The training setting as columns (a tuned grid's picks differ per method): no reader
        // needs to parse it out of a cell name.
        col_s("optimizer", s(&|r, _| format!("{:?}", r.config.training.optimizer).to_lowercase())),
        col_f("lr", f(&|r, _| r.config.training.lr)),
        col_f("embedding_lr", f(&|r, _| r.config.training.embedding_lr.unwrap_or(r.config.training.lr))),
        col_u("batch_size", u(&|r, _| r.config.training.batch_size as u64)),
        col_u("epochs", u(&|r, _| r.config.training.epochs as u64)),
        col_s(
            "method_options",
            s(&|r, _| {
                r.config
                    .method
                    .as_ref()
                    .map(|m| if m.options.is_null() { String::new() } else { m.options.to_string() })
                    .unwrap_or_default()
            }),
        ),
        // The served model's cost (`training.serving: true`; NaN otherwise).
        col_f("serve_samples_per_s", f(&|_, t| t.serving.map_or(f64::NAN, |c| c.samples_per_s_b2048))),
        col_f("serve_p50_b1_ms", f(&|_, t| t.serving.map_or(f64::NAN, |c| c.latency_ms_b1[0]))),
        col_f("serve_p99_b1_ms", f(&|_, t| t.serving.map_or(f64::NAN, |c| c.latency_ms_b1[1]))),
        col_f("serve_p50_b64_ms", f(&|_, t| t.serving.map_or(f64::NAN, |c| c.latency_ms_b64[0]))),
        col_f("serve_p99_b64_ms", f(&|_, t| t.serving.map_or(f64::NAN, |c| c.latency_ms_b64[1]))),
    ];
    let mut cols = cols;
    // The day-by-day protocol's test-day scores by novelty (`training.days`; NaN otherwise).
    cols.extend(crate::daily_report::summary_columns(&rows));
    Ok(DataFrame::new(rows.len(), cols)?)
}

fn freq_bce(t: &cqr_models::RunResult, k: usize) -> f64 {
    t.test_bce_by_frequency.and_then(|f| f.bce[k]).unwrap_or(f64::NAN)
}

fn freq_rows(t: &cqr_models::RunResult, k: usize) -> u64 {
    t.test_bce_by_frequency.map(|f| f.rows[k]).unwrap_or(0)
}

pub fn epochs_frame(records: &[CellRecord]) -> Result<DataFrame> {
    let (mut id, mut name, mut dataset, mut method, mut budget, mut seed, mut epoch, mut step) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut tl, mut vb, mut va, mut tb, mut ta) = (vec![], vec![], vec![], vec![], vec![]);
    for r in records {
        let CellOutput::Train(t) = &r.output else { continue };
        for e in &t.evals {
            id.push(r.id.clone());
            name.push(r.name.clone());
            dataset.push(r.dataset.clone());
            method.push(r.config.method.as_ref().map(|m| m.name.clone()).unwrap_or_default());
            budget.push(r.config.budget.unwrap_or(0));
            seed.push(r.config.seed);
            epoch.push(e.epoch as u64);
            step.push(e.step as u64);
            tl.push(e.train_loss);
            vb.push(e.scores.val_bce);
            va.push(e.scores.val_auc);
            tb.push(e.scores.test_bce);
            ta.push(e.scores.test_auc);
        }
    }
    let n = id.len();
    Ok(DataFrame::new(
        n,
        vec![
            col_s("cell_id", id),
            col_s("cell_name", name),
            col_s("dataset", dataset),
            col_s("method", method),
            col_u("budget", budget),
            col_u("seed", seed),
            col_u("epoch", epoch),
            col_u("step", step),
            col_f("train_loss", tl),
            col_f("val_bce", vb),
            col_f("val_auc", va),
            col_f("test_bce", tb),
            col_f("test_auc", ta),
        ],
    )?)
}

pub fn least_squares_frame(records: &[CellRecord]) -> Result<DataFrame> {
    let (mut id, mut seed, mut k, mut it, mut loss, mut bound, mut opt) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in records {
        let CellOutput::LeastSquares(t) = &r.output else { continue };
        let kk = match &r.config.dataset {
            crate::config::DatasetConfig::LeastSquares(c) => c.k as u64,
            _ => 0,
        };
        for (i, (l, b)) in t.loss.iter().zip(&t.bound).enumerate() {
            id.push(r.id.clone());
            seed.push(r.config.seed);
            k.push(kk);
            it.push(i as u64);
            loss.push(*l);
            bound.push(*b);
            opt.push(t.optimum);
        }
    }
    let n = id.len();
    Ok(DataFrame::new(
        n,
        vec![
            col_s("cell_id", id),
            col_u("seed", seed),
            col_u("k", k),
            col_u("iteration", it),
            col_f("loss", loss),
            col_f("bound", bound),
            col_f("optimum", opt),
        ],
    )?)
}

fn write_both(df: &mut DataFrame, dir: &Path, stem: &str) -> Result<()> {
    let pq = dir.join(format!("{stem}.parquet"));
    let tmp = dir.join(format!(".{stem}.parquet.tmp"));
    anyhow::Context::with_context(ParquetWriter::new(File::create(&tmp)?).finish(df), || {
        format!("writing {}", pq.display())
    })?;
    std::fs::rename(&tmp, &pq)?;
    let csv = dir.join(format!("{stem}.csv"));
    let tmp = dir.join(format!(".{stem}.csv.tmp"));
    anyhow::Context::with_context(CsvWriter::new(File::create(&tmp)?).finish(df), || {
        format!("writing {}", csv.display())
    })?;
    std::fs::rename(&tmp, &csv)?;
    Ok(())
}

/// Writes every table for the records present (partial sweeps and shards merge naturally).
/// The tables of `records`; a tuning search's trial runs are left out (they are in
/// `tuning.*`, written by [`crate::tune`]): the summary holds only the cells it compares.
pub fn write_tables(results: &Path, records: &[CellRecord]) -> Result<()> {
    std::fs::create_dir_all(results)?;
    let finals: Vec<CellRecord> = records.iter().filter(|r| r.config.tuning.is_none()).cloned().collect();
    let records = &finals[..];
    let mut s = summary_frame(records)?;
    if s.height() > 0 {
        write_both(&mut s, results, "summary")?;
        write_both(&mut epochs_frame(records)?, results, "epochs")?;
    }
    if let Some(mut days) = crate::daily_report::days_frame(records)? {
        write_both(&mut days, results, "days")?;
    }
    let inf: Vec<(&CellRecord, &String)> = records
        .iter()
        .filter_map(|r| match &r.output {
            CellOutput::Infeasible { reason } => Some((r, reason)),
            _ => None,
        })
        .collect();
    if !inf.is_empty() {
        let n = inf.len();
        let mut df = DataFrame::new(
            n,
            vec![
                col_s("cell_id", inf.iter().map(|(r, _)| r.id.clone()).collect()),
                col_s("cell_name", inf.iter().map(|(r, _)| r.name.clone()).collect()),
                col_s("dataset", inf.iter().map(|(r, _)| r.dataset.clone()).collect()),
                col_s(
                    "method",
                    inf.iter()
                        .map(|(r, _)| r.config.method.as_ref().map(|m| m.name.clone()).unwrap_or_default())
                        .collect(),
                ),
                col_u("budget", inf.iter().map(|(r, _)| r.config.budget.unwrap_or(0)).collect()),
                col_s("reason", inf.iter().map(|(_, why)| (*why).clone()).collect()),
            ],
        )?;
        write_both(&mut df, results, "infeasible")?;
    }
    let mut ls = least_squares_frame(records)?;
    if ls.height() > 0 {
        write_both(&mut ls, results, "least_squares")?;
    }
    Ok(())
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).with_context(|| format!("{}: cannot open (run a sweep first?)", path.display()))?;
    Ok(ParquetReader::new(f).finish()?)
}

pub fn f64s(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    let ca = c.f64()?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
}

pub fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let ca = df.column(name)?.str()?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or("").to_string()).collect())
}
