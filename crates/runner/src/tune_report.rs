//! What a tuned results directory reports: the protocol, each group's pick with its stability
//! and edge flags, every full-run trial, and the tuning curves (validation metric against the
//! first numeric tuned key, per method, one chart per budget). Read from `picks.parquet`,
//! `tuning.parquet` and `tuning_protocol.txt` alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::frames::{f64s, read_parquet, strs};
use crate::plot::{render, Chart, Line};

/// The "Tuned comparison" section of `report.md`.
pub fn tuned_section(results: &Path) -> Result<String> {
    let picks = read_parquet(&results.join("picks.parquet"))?;
    let protocol = std::fs::read_to_string(results.join("tuning_protocol.txt")).unwrap_or_default();
    let (line, setting, select) = (strs(&picks, "line")?, strs(&picks, "setting")?, strs(&picks, "select")?);
    let (mean, sd, ru, ru_mean) =
        (f64s(&picks, "mean")?, f64s(&picks, "sd")?, strs(&picks, "runner_up")?, f64s(&picks, "runner_up_mean")?);
    let (agree, seeds, edge) = (f64s(&picks, "seeds_agreeing")?, f64s(&picks, "tuning_seeds")?, strs(&picks, "edge")?);
    let mut s = String::new();
    let _ = writeln!(s, "## Tuned comparison\n");
    let _ = writeln!(s, "Protocol: {}. Each pick then ran on the final seeds (disjoint from the tuning seeds); the summary and the paired comparisons below hold only those runs. No test metric takes part in a pick.\n", protocol.trim());
    let _ = writeln!(s, "| line | pick | {} (mean ± sd over tuning seeds) | runner-up | its mean | seeds agreeing | edge of the space |", select.first().map(String::as_str).unwrap_or("val"));
    let _ = writeln!(s, "|---|---|---:|---|---:|---:|---|");
    for i in 0..picks.height() {
        let flag = if edge[i].is_empty() { "-".to_string() } else { format!("**{}**", edge[i]) };
        let _ = writeln!(
            s,
            "| {} | {} | {:.5} ± {:.5} | {} | {:.5} | {:.0}/{:.0} | {flag} |",
            line[i], setting[i], mean[i], sd[i], ru[i], ru_mean[i], agree[i], seeds[i]
        );
    }
    let _ = writeln!(s, "\n*Seeds agreeing*: tuning seeds whose own best trial is the pick (a pick the seeds disagree on is not stable: more tuning seeds would settle it). *Edge*: the picked value is the smallest or largest tried, so the space may be too narrow.\n");
    s.push_str(&trial_table(results)?);
    Ok(s)
}

/// Mean validation metrics of every full-run trial: (line) → [(setting, val_bce, val_auc, runs)].
fn full_runs(results: &Path) -> Result<BTreeMap<String, Vec<(String, f64, f64, usize)>>> {
    let df = read_parquet(&results.join("tuning.parquet"))?;
    let (line, setting, frac) = (strs(&df, "line")?, strs(&df, "setting")?, f64s(&df, "fraction")?);
    let (vb, va) = (f64s(&df, "val_bce")?, f64s(&df, "val_auc")?);
    let mut acc: BTreeMap<(String, String), (f64, f64, usize)> = BTreeMap::new();
    for i in (0..df.height()).filter(|&i| frac[i] >= 1.0) {
        let e = acc.entry((line[i].clone(), setting[i].clone())).or_insert((0.0, 0.0, 0));
        (e.0, e.1, e.2) = (e.0 + vb[i], e.1 + va[i], e.2 + 1);
    }
    let mut out: BTreeMap<String, Vec<(String, f64, f64, usize)>> = BTreeMap::new();
    for ((l, st), (b, a, n)) in acc {
        out.entry(l).or_default().push((st, b / n as f64, a / n as f64, n));
    }
    Ok(out)
}

fn trial_table(results: &Path) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "### Every full-run trial (means over the tuning seeds; NaN: a run diverged)\n");
    let _ = writeln!(s, "| line | setting | val BCE | val AUC | runs |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for (line, trials) in full_runs(results)? {
        for (st, b, a, n) in trials {
            let _ = writeln!(s, "| {line} | {st} | {b:.5} | {a:.4} | {n} |");
        }
    }
    s.push('\n');
    Ok(s)
}

/// The first tuned key whose values are numbers (the x axis of the tuning curves).
fn numeric_key(df: &polars::prelude::DataFrame, skip: &[&str]) -> Option<String> {
    df.get_column_names()
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !skip.contains(&c.as_str()))
        .find(|c| strs(df, c).is_ok_and(|v| !v.is_empty() && v.iter().all(|x| x.parse::<f64>().is_ok())))
}

/// One row of `tuning.parquet` as the tuning chart reads it.
struct TrialPoint {
    budget: u64,
    /// The series: method line and the values of the other tuned keys.
    label: String,
    fraction: f64,
    /// The charted key's value.
    x: String,
    val: f64,
}

/// budget -> series label -> x -> validation values over the tuning seeds, of the rows run to
/// `fraction` of the steps (1: the full runs; a rung's fraction: every trial that reached it, as
/// halving saw them). A run that diverged (NaN) is left out.
type Series = BTreeMap<u64, BTreeMap<String, BTreeMap<String, Vec<f64>>>>;

fn tuning_series(points: &[TrialPoint], fraction: f64) -> Series {
    let mut by: Series = BTreeMap::new();
    for p in points.iter().filter(|p| p.val.is_finite() && (p.fraction - fraction).abs() < 1e-9) {
        by.entry(p.budget).or_default().entry(p.label.clone()).or_default().entry(p.x.clone()).or_default().push(p.val);
    }
    by
}

/// One chart per budget: the validation metric of each full-run trial against the first numeric
/// tuned key (log axis), a line per method and value of the other tuned keys; the band is the
/// min-max over tuning seeds. With halving, a second chart per budget draws every trial at the
/// first rung, where halving compared them (a trial it cut has no full run, so it is only there).
pub fn plot_tuning(results: &Path, charts: &Path) -> Result<Vec<PathBuf>> {
    let path = results.join("tuning.parquet");
    if !path.exists() {
        return Ok(vec![]);
    }
    let df = read_parquet(&path)?;
    const FIXED: [&str; 12] = [
        "dataset",
        "line",
        "method",
        "budget",
        "trial",
        "setting",
        "fraction",
        "tuning_seed",
        "val_bce",
        "val_auc",
        "status",
        "rung",
    ];
    let Some(x_key) = numeric_key(&df, &FIXED) else { return Ok(vec![]) };
    let others: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !FIXED.contains(&c.as_str()) && *c != x_key)
        .collect();
    let (line, budget, frac, xs, vb) =
        (strs(&df, "line")?, f64s(&df, "budget")?, f64s(&df, "fraction")?, strs(&df, &x_key)?, f64s(&df, "val_bce")?);
    let other_vals: Vec<Vec<String>> = others.iter().map(|c| strs(&df, c)).collect::<Result<_>>()?;
    let points: Vec<TrialPoint> = (0..df.height())
        .map(|i| {
            // The line without its cap: a method's design variants (robe block=8) get lines of their own.
            let mut label = vec![crate::config::CellName::parse(&line[i]).line()];
            label.extend(others.iter().zip(&other_vals).map(|(k, v)| format!("{k}={}", v[i])));
            TrialPoint {
                budget: budget[i] as u64,
                label: label.join(" "),
                fraction: frac[i],
                x: xs[i].clone(),
                val: vb[i],
            }
        })
        .collect();
    let mut out = vec![];
    out.extend(tuning_charts(&tuning_series(&points, 1.0), &x_key, None, charts)?);
    let first_rung = frac.iter().cloned().filter(|f| *f < 1.0).fold(f64::INFINITY, f64::min);
    if first_rung.is_finite() {
        out.extend(tuning_charts(&tuning_series(&points, first_rung), &x_key, Some(first_rung), charts)?);
    }
    Ok(out)
}

/// The charts of [`plot_tuning`]: full runs (`rung` None) or every trial at the rung.
fn tuning_charts(by: &Series, x_key: &str, rung: Option<f64>, charts: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for (&b, series) in by {
        let lines = series
            .iter()
            .map(|(label, pts)| {
                let label = label.clone();
                let mut points: Vec<(f64, f64, f64, f64)> = pts
                    .iter()
                    .map(|(x, v)| {
                        (
                            x.parse().unwrap_or(f64::NAN),
                            v.iter().sum::<f64>() / v.len() as f64,
                            v.iter().cloned().fold(f64::INFINITY, f64::min),
                            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        )
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Line { label, points }
            })
            .collect();
        let what = if b == 0 { "the full table".to_string() } else { format!("budget {b} parameters per table") };
        let (title, stem) = match rung {
            None => (format!("Tuning curves at {what}: validation BCE against {x_key}"), "tuning"),
            Some(f) => (format!("Halving's rung ({f:.2} of the steps) at {what}: every trial"), "tuning_rung"),
        };
        let chart = Chart {
            title,
            x_label: format!("{x_key} (log scale)"),
            y_label: "validation BCE, mean over tuning seeds (band: min-max)".into(),
            log_x: true,
            log_y: false,
            lines,
            hlines: vec![],
        };
        out.extend(render(&chart, charts, &format!("{stem}_val_bce_vs_{x_key}_b{b}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(label: &str, fraction: f64, x: &str, val: f64) -> TrialPoint {
        TrialPoint { budget: 40, label: label.into(), fraction, x: x.into(), val }
    }

    #[test]
    fn full_runs_and_the_rung_are_separate_series() {
        let points = vec![
            pt("cqr optimizer=sgd", 0.33, "0.1", 0.60),
            pt("cqr optimizer=sgd", 1.0, "0.1", 0.50),
            pt("cqr optimizer=sgd", 1.0, "0.1", 0.52),
            // Cut at the rung: no full run.
            pt("cqr optimizer=sgd", 0.33, "0.01", 0.70),
            // A full run that diverged is left out; its rung value stays.
            pt("cqr optimizer=sgd", 0.33, "0.001", 0.65),
            pt("cqr optimizer=sgd", 1.0, "0.001", f64::NAN),
        ];
        let full = &tuning_series(&points, 1.0)[&40]["cqr optimizer=sgd"];
        assert_eq!(full.len(), 1);
        assert_eq!(full["0.1"], vec![0.50, 0.52]);
        let rung = &tuning_series(&points, 0.33)[&40]["cqr optimizer=sgd"];
        assert_eq!(rung.keys().collect::<Vec<_>>(), ["0.001", "0.01", "0.1"]);
        assert_eq!(rung["0.01"], vec![0.70]);
    }
}
