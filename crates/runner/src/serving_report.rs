//! The serving-cost section of `report.md` and its charts, from the summary's `serve_*` columns
//! (cells trained with `training.serving: true`; see `cqr_models::ServingCost`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::chart::{render, Chart, Line};
use crate::frames::{f64s, read_parquet, strs};

/// Per (dataset, variant): seeds, mean test BCE and the mean of each serving column.
struct Row {
    n: usize,
    line: String,
    test_bce: f64,
    /// samples/s at 2,048; p50 and p99 at batch 1; p50 and p99 at batch 64 (ms).
    cost: [f64; 5],
}

const COLS: [&str; 5] =
    ["serve_samples_per_s", "serve_p50_b1_ms", "serve_p99_b1_ms", "serve_p50_b64_ms", "serve_p99_b64_ms"];

fn rows(results: &Path) -> Result<BTreeMap<(String, String), Row>> {
    let df = read_parquet(&results.join("summary.parquet"))?;
    let mut out: BTreeMap<(String, String), Row> = BTreeMap::new();
    let Ok(first) = f64s(&df, COLS[0]) else { return Ok(out) };
    let (ds, va, bce) = (strs(&df, "dataset")?, strs(&df, "variant")?, f64s(&df, "test_bce")?);
    let cols: Vec<Vec<f64>> = COLS.iter().map(|c| f64s(&df, c)).collect::<Result<_>>()?;
    for i in (0..df.height()).filter(|&i| first[i].is_finite()) {
        let r = out.entry((ds[i].clone(), va[i].clone())).or_insert(Row {
            n: 0,
            line: crate::config::CellName::parse(&va[i]).line(),
            test_bce: 0.0,
            cost: [0.0; 5],
        });
        r.n += 1;
        r.test_bce += bce[i];
        for (k, c) in cols.iter().enumerate() {
            r.cost[k] += c[i];
        }
    }
    for r in out.values_mut() {
        r.test_bce /= r.n as f64;
        r.cost.iter_mut().for_each(|c| *c /= r.n as f64);
    }
    Ok(out)
}

/// The report section; empty when no cell measured its serving cost.
pub fn section(results: &Path) -> Result<String> {
    let rows = rows(results)?;
    let mut s = String::new();
    if rows.is_empty() {
        return Ok(s);
    }
    let _ = writeln!(s, "## Serving cost (the trained model as served, forward only; means over seeds)\n");
    let _ = writeln!(s, "Timed in the training process after training (`training.serving: true`), on the CPU each record names; compare cells of one sweep. Latency: one request (id gather, table lookups, MLP).\n");
    let _ = writeln!(s, "| dataset | cells (without seed) | seeds | test BCE | samples/s at batch 2,048 | p50 / p99 ms at batch 1 | p50 / p99 ms at batch 64 |\n|---|---|---:|---:|---:|---:|---:|");
    for ((ds, v), r) in &rows {
        let c = r.cost;
        let _ = writeln!(
            s,
            "| {ds} | {v} | {} | {:.5} | {:.0} | {:.3} / {:.3} | {:.3} / {:.3} |",
            r.n, r.test_bce, c[0], c[1], c[2], c[3], c[4]
        );
    }
    s.push('\n');
    Ok(s)
}

/// Per dataset: test BCE against the median batch-64 latency, one line per method variant over
/// its caps.
pub fn plot(results: &Path, charts: &Path) -> Result<Vec<PathBuf>> {
    if !results.join("summary.parquet").exists() {
        return Ok(vec![]);
    }
    let mut by_ds: BTreeMap<String, BTreeMap<String, Vec<(f64, f64, f64, f64)>>> = BTreeMap::new();
    for ((ds, _), r) in rows(results)? {
        by_ds.entry(ds).or_default().entry(r.line).or_default().push((r.cost[3], r.test_bce, r.test_bce, r.test_bce));
    }
    let mut written = vec![];
    for (ds, lines) in by_ds {
        let lines: Vec<Line> = lines
            .into_iter()
            .map(|(label, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Line { label, points }
            })
            .collect();
        let chart = Chart {
            title: format!("{ds}: test BCE against serving latency (batch 64, median; means over seeds)"),
            x_label: "median latency of a batch-64 request, ms (log scale)".into(),
            y_label: "test BCE (lower is better)".into(),
            log_x: true,
            log_y: false,
            lines,
            hlines: vec![],
        };
        let slug = crate::plot::slug(&ds);
        written.extend(render(&chart, charts, &format!("{slug}_test_bce_vs_serving_latency"))?);
    }
    Ok(written)
}
