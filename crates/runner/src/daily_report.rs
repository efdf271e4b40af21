//! The day-by-day protocol's tables, report section and charts (cells trained with
//! `training.days`; see `cqr_models::train::daily`).
//!
//! - `days.parquet` / `.csv`: one row per cell and scored day: progressive BCE and AUC of all the
//!   day's rows, and BCE split by novelty (rows whose largest-table id is new that day against the
//!   others; rows with a new id in any table against rows with all ids seen).
//! - The summary's `test_new_bce`, ... columns: the same split over the pooled test days.
//! - `report.md`: per line and cap, the pooled test scores split by novelty, and each line
//!   against the reference (hashing; also each `--against` method) paired by seed: the
//!   difference with its 95% interval, on all test rows, the rows with a new id and the others.
//! - Charts per dataset and cap: method − reference progressive BCE per day, paired by seed
//!   (mean and 95% interval), for all rows and for the rows with a new id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::*;

use crate::chart::{render, Chart, Line};
use crate::config::CellName;
use crate::frames::{f64s, read_parquet, strs};
use crate::paired::t_interval;
use crate::sweep::{CellOutput, CellRecord};

/// The reference every method is paired against: the production default.
pub const REFERENCE: &str = "hashing";

/// The summary's day-by-day columns, over the pooled test days (NaN / 0 for other cells).
pub const SUMMARY_COLUMNS: [&str; 8] = [
    "days",
    "days_over_budget",
    "test_new_rows",
    "test_new_bce",
    "test_seen_bce",
    "test_any_new_rows",
    "test_any_new_bce",
    "test_all_seen_bce",
];

/// The summary's day-by-day columns for `rows` (in the summary's row order).
pub fn summary_columns(rows: &[(&CellRecord, &cqr_models::RunResult)]) -> Vec<Column> {
    let f = |g: &dyn Fn(&cqr_models::NoveltyScores) -> Option<f64>| -> Vec<f64> {
        rows.iter().map(|(_, t)| t.daily.as_ref().and_then(|d| g(&d.test)).unwrap_or(f64::NAN)).collect()
    };
    let u = |g: &dyn Fn(&cqr_models::NoveltyScores) -> u64| -> Vec<u64> {
        rows.iter().map(|(_, t)| t.daily.as_ref().map_or(0, |d| g(&d.test))).collect()
    };
    let days: Vec<u64> = rows.iter().map(|(r, _)| r.config.training.days.unwrap_or(0) as u64).collect();
    let over: Vec<u64> =
        rows.iter().map(|(_, t)| t.daily.as_ref().map_or(0, |d| d.over_budget_days.len() as u64)).collect();
    vec![
        Column::new(SUMMARY_COLUMNS[0].into(), days),
        Column::new(SUMMARY_COLUMNS[1].into(), over),
        Column::new(SUMMARY_COLUMNS[2].into(), u(&|s| s.new_rows)),
        Column::new(SUMMARY_COLUMNS[3].into(), f(&|s| s.new_bce)),
        Column::new(SUMMARY_COLUMNS[4].into(), f(&|s| s.seen_bce)),
        Column::new(SUMMARY_COLUMNS[5].into(), u(&|s| s.any_new_rows)),
        Column::new(SUMMARY_COLUMNS[6].into(), f(&|s| s.any_new_bce)),
        Column::new(SUMMARY_COLUMNS[7].into(), f(&|s| s.all_seen_bce)),
    ]
}

/// `days.*`: one row per cell and scored day; `None` when no record ran day by day.
pub fn days_frame(records: &[CellRecord]) -> Result<Option<DataFrame>> {
    let mut c = DayCols::default();
    for r in records {
        let CellOutput::Train(t) = &r.output else { continue };
        let Some(daily) = &t.daily else { continue };
        for d in &daily.days {
            c.push(r, d);
        }
    }
    if c.day.is_empty() {
        return Ok(None);
    }
    Ok(Some(c.frame()?))
}

#[derive(Default)]
struct DayCols {
    text: [Vec<String>; 5],
    budget: Vec<u64>,
    seed: Vec<u64>,
    day: Vec<u64>,
    rows: [Vec<u64>; 3],
    scores: [Vec<f64>; 7],
}

impl DayCols {
    fn push(&mut self, r: &CellRecord, d: &cqr_models::DayScores) {
        let method = r.config.method.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let variant = crate::frames::variant(&r.name);
        let line = CellName::parse(&variant).line();
        for (v, s) in self.text.iter_mut().zip([r.id.clone(), r.dataset.clone(), method, variant, line]) {
            v.push(s);
        }
        self.budget.push(r.config.budget.unwrap_or(0));
        self.seed.push(r.config.seed);
        self.day.push(d.day as u64);
        let s = &d.scores;
        for (v, x) in self.rows.iter_mut().zip([s.rows, s.new_rows, s.any_new_rows]) {
            v.push(x);
        }
        let nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
        let values =
            [s.bce, s.auc, nan(s.new_bce), nan(s.seen_bce), nan(s.any_new_bce), nan(s.all_seen_bce), d.train_loss];
        for (v, x) in self.scores.iter_mut().zip(values) {
            v.push(x);
        }
    }

    fn frame(self) -> Result<DataFrame> {
        let n = self.day.len();
        let mut cols: Vec<Column> = ["cell_id", "dataset", "method", "variant", "line"]
            .iter()
            .zip(self.text)
            .map(|(name, v)| Column::new((*name).into(), v))
            .collect();
        cols.push(Column::new("budget".into(), self.budget));
        cols.push(Column::new("seed".into(), self.seed));
        cols.push(Column::new("day".into(), self.day));
        for (name, v) in ["rows", "new_rows", "any_new_rows"].iter().zip(self.rows) {
            cols.push(Column::new((*name).into(), v));
        }
        let names = ["bce", "auc", "new_bce", "seen_bce", "any_new_bce", "all_seen_bce", "train_loss"];
        for (name, v) in names.iter().zip(self.scores) {
            cols.push(Column::new((*name).into(), v));
        }
        Ok(DataFrame::new(n, cols)?)
    }
}

/// Per (dataset, budget, line): seed -> (test BCE, new-id rows' BCE, seen rows' BCE, days scored
/// over budget), from the summary.
type Cells = BTreeMap<(String, u64, String), BTreeMap<u64, [f64; 4]>>;

fn cells(results: &Path) -> Result<Cells> {
    let mut out = Cells::new();
    let path = results.join("summary.parquet");
    if !path.exists() {
        return Ok(out);
    }
    let df = read_parquet(&path)?;
    let Ok(days) = f64s(&df, "days") else { return Ok(out) };
    let (ds, va) = (strs(&df, "dataset")?, strs(&df, "variant")?);
    let (budget, seed) = (f64s(&df, "budget")?, f64s(&df, "seed")?);
    let cols: Vec<Vec<f64>> = ["test_bce", "test_new_bce", "test_seen_bce", "days_over_budget"]
        .iter()
        .map(|c| f64s(&df, c))
        .collect::<Result<_>>()?;
    for i in (0..df.height()).filter(|&i| days[i] > 0.0) {
        let line = CellName::parse(&va[i]).line();
        let key = (ds[i].clone(), budget[i] as u64, line);
        out.entry(key).or_default().insert(seed[i] as u64, std::array::from_fn(|k| cols[k][i]));
    }
    Ok(out)
}

/// The report section; empty when no cell ran day by day. Every line is paired against
/// [`REFERENCE`] and against each of `against` that ran day by day.
pub fn section(results: &Path, against: &[String]) -> Result<String> {
    let cells = cells(results)?;
    let mut s = String::new();
    if cells.is_empty() {
        return Ok(s);
    }
    let _ = writeln!(s, "## Day by day (progressive scores of the test days; means over seeds)\n");
    let _ = writeln!(s, "Each day is scored by the model trained on the days before it. *New*: rows whose id in the largest table no earlier day trained on; *seen*: the others.\n");
    let _ = writeln!(s, "| dataset | cap | line | seeds | test BCE | new-id rows BCE | seen rows BCE |\n|---|---:|---|---:|---:|---:|---:|");
    for ((ds, budget, line), seeds) in &cells {
        let mean = |k: usize| seeds.values().map(|v| v[k]).sum::<f64>() / seeds.len() as f64;
        // A line scored over its cap on some day (pruning before its prune) is marked.
        let over = if seeds.values().any(|v| v[3] > 0.0) { " (over its cap on some days)" } else { "" };
        let n = seeds.len();
        let _ =
            writeln!(s, "| {ds} | {budget} | {line}{over} | {n} | {:.5} | {:.5} | {:.5} |", mean(0), mean(1), mean(2));
    }
    let mut refs = vec![REFERENCE.to_string()];
    refs.extend(against.iter().filter(|a| a.as_str() != REFERENCE).cloned());
    for r in refs.iter().filter(|r| cells.keys().any(|k| &k.2 == *r)) {
        s.push_str(&paired_table(&cells, r));
    }
    s.push('\n');
    Ok(s)
}

/// Each line minus `reference` at the same cap and seed: all rows, new-id rows, seen rows.
fn paired_table(cells: &Cells, reference: &str) -> String {
    let mut s = format!("\nPaired against `{reference}` (line − {reference}, mean [95% interval]; `*`: the interval excludes 0):\n\n| dataset | cap | line | pairs | all rows | new-id rows | seen rows |\n|---|---:|---|---:|---:|---:|---:|\n");
    for ((ds, budget, line), seeds) in cells.iter().filter(|(k, _)| k.2 != reference) {
        let Some(r) = cells.get(&(ds.clone(), *budget, reference.to_string())) else { continue };
        let cell = |k: usize| -> (usize, String) {
            let diffs: Vec<f64> =
                seeds.iter().filter_map(|(sd, v)| r.get(sd).map(|w| v[k] - w[k])).filter(|x| x.is_finite()).collect();
            let i = t_interval(&diffs);
            let star = if i.significant() { "*" } else { "" };
            (i.n, format!("{:+.4} [{:+.4}, {:+.4}]{star}", i.mean, i.lo, i.hi))
        };
        let (n, all) = cell(0);
        let _ = writeln!(s, "| {ds} | {budget} | {line} | {n} | {all} | {} | {} |", cell(1).1, cell(2).1);
    }
    s
}

/// Per dataset and cap: each line minus the reference, per day, paired by seed.
pub fn plot(results: &Path, charts: &Path) -> Result<Vec<PathBuf>> {
    let path = results.join("days.parquet");
    if !path.exists() {
        return Ok(vec![]);
    }
    let df = read_parquet(&path)?;
    let (ds, line) = (strs(&df, "dataset")?, strs(&df, "line")?);
    let (budget, seed, day) = (f64s(&df, "budget")?, f64s(&df, "seed")?, f64s(&df, "day")?);
    let mut written = vec![];
    for (metric, what) in [("bce", "all rows"), ("new_bce", "rows with a new id")] {
        let y = f64s(&df, metric)?;
        // (dataset, budget) -> line -> day -> seed -> value
        let mut by: BTreeMap<(String, u64), BTreeMap<String, BTreeMap<u64, BTreeMap<u64, f64>>>> = BTreeMap::new();
        for i in 0..df.height() {
            let slot = by.entry((ds[i].clone(), budget[i] as u64)).or_default().entry(line[i].clone()).or_default();
            slot.entry(day[i] as u64).or_default().insert(seed[i] as u64, y[i]);
        }
        for ((name, cap), lines) in by {
            let Some(reference) = lines.get(REFERENCE) else { continue };
            let chart = Chart {
                title: format!("{name}, cap {cap}: progressive BCE minus {REFERENCE}'s per day, {what}"),
                x_label: "day (scored before training on it)".into(),
                y_label: format!("BCE − {REFERENCE} (below 0: better)"),
                log_x: false,
                log_y: false,
                lines: paired_lines(&lines, reference),
                hlines: vec![("no difference".into(), 0.0)],
            };
            let slug = crate::plot::slug(&name);
            written.extend(render(&chart, charts, &format!("{slug}_b{cap}_daily_{metric}_minus_{REFERENCE}"))?);
        }
    }
    Ok(written)
}

type PerDay = BTreeMap<u64, BTreeMap<u64, f64>>;

/// Each non-reference line's per-day paired difference (mean, 95% interval), days with a
/// finite value for at least one seed pair.
fn paired_lines(lines: &BTreeMap<String, PerDay>, reference: &PerDay) -> Vec<Line> {
    lines
        .iter()
        .filter(|(l, _)| l.as_str() != REFERENCE)
        .map(|(label, days)| {
            let points = days
                .iter()
                .filter_map(|(d, seeds)| {
                    let r = reference.get(d)?;
                    let diffs: Vec<f64> =
                        seeds.iter().filter_map(|(s, v)| Some(v - r.get(s)?)).filter(|x| x.is_finite()).collect();
                    if diffs.is_empty() {
                        return None;
                    }
                    let i = t_interval(&diffs);
                    let (lo, hi) = if i.n > 1 { (i.lo, i.hi) } else { (i.mean, i.mean) };
                    Some((*d as f64, i.mean, lo, hi))
                })
                .collect();
            Line { label: label.clone(), points }
        })
        .collect()
}
