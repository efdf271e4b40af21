//! Charts (PNG and SVG) regenerated from the result tables alone.
//!
//! The layout follows the seed paper's figure: test BCE (or AUC) against parameters on a log
//! axis, one line per method (the mean over seeds) with a band for the 95% interval of that
//! mean (Student t over the seeds; no band with one seed), and the dense table as a dashed
//! horizontal line. A method keeps one colour in every chart (by its place in the registry);
//! variants of one method in one chart differ by marker. Ticks sit at the x values the grid ran
//! (the caps), when there are few of them. Log axes are drawn as log10 values.

//! Which charts a results directory gets; the drawing is `chart.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::chart::aggregate;
pub use crate::chart::{compact, render, Chart, Line};
use crate::frames::{f64s, read_parquet, strs};

/// Line label for a variant: the cell name without its budget and dataset parts, so each line
/// joins one method's cells over budgets (other grid values stay in the label).
pub fn line_key(variant: &str) -> String {
    crate::config::CellName::parse(variant).line()
}

/// A file-name-safe form of a label: lowercase ASCII alphanumerics, everything else `_`.
pub(crate) fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// The pairs `plot_results` draws by default: CQR against CE and against hashing.
pub fn default_pairs() -> Vec<(String, String)> {
    vec![("cqr".into(), "ce".into()), ("cqr".into(), "hashing".into())]
}

/// Paired-difference charts, the regime map: for each dataset and each pair (A, B) of methods,
/// A − B test BCE against the budget, one line per A line (its other grid values: teacher
/// groups, rows, ...), the band the 95% interval over seeds, and 0 dashed. Below 0, A is better.
fn plot_paired(results: &Path, charts: &Path, pairs: &[(String, String)]) -> Result<Vec<PathBuf>> {
    let obs = crate::paired::observations(results)?;
    let mut written = vec![];
    for (a, b) in pairs {
        let rows = crate::paired::paired(&obs, std::slice::from_ref(b));
        let mut datasets: Vec<&String> = rows.iter().map(|r| &r.dataset).collect();
        datasets.sort();
        datasets.dedup();
        for ds in datasets {
            let mut by: BTreeMap<String, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
            for r in rows.iter().filter(|r| {
                &r.dataset == ds
                    && r.a.split('-').next() == Some(a.as_str())
                    && r.b.split('-').next() == Some(b.as_str())
            }) {
                let label = format!("{a} {}", crate::paired::pair_label(&r.a, &r.b));
                by.entry(label).or_default().push((r.budget as f64, r.bce.mean, r.bce.lo, r.bce.hi));
            }
            if by.is_empty() {
                continue;
            }
            let chart = Chart {
                title: format!("{ds}: paired {a} − {b} test BCE, mean and 95% CI over seeds"),
                x_label: "parameter cap per table (log scale)".into(),
                y_label: format!("{a} − {b} test BCE (below 0: {a} better)"),
                log_x: true,
                log_y: false,
                lines: by.into_iter().map(|(label, points)| Line { label, points }).collect(),
                hlines: vec![("no difference".into(), 0.0)],
            };
            written.extend(render(&chart, charts, &format!("{}_paired_{}_minus_{}", slug(ds), slug(a), slug(b)))?);
        }
    }
    Ok(written)
}

/// Validation BCE during training, one chart per dataset and budget (dense in each): x is the
/// training done at each evaluation in epochs (its step over the steps of one epoch), so 1 is the
/// end of the first epoch (`best_epoch` 0 in the summary).
fn plot_epochs(ep: &polars::prelude::DataFrame, ds_names: &[String], charts: &Path) -> Result<Vec<PathBuf>> {
    let (ids, eds, em, ev) = (strs(ep, "cell_id")?, strs(ep, "dataset")?, strs(ep, "method")?, strs(ep, "cell_name")?);
    let (eb, epoch, step, vb) = (f64s(ep, "budget")?, f64s(ep, "epoch")?, f64s(ep, "step")?, f64s(ep, "val_bce")?);
    let seed = f64s(ep, "seed")?;
    // Steps of one epoch per cell: the step of its last evaluation in epoch 0 (the epoch end).
    let mut spe: BTreeMap<&str, f64> = BTreeMap::new();
    for i in (0..ep.height()).filter(|&i| epoch[i] == 0.0) {
        let e = spe.entry(ids[i].as_str()).or_insert(0.0);
        *e = e.max(step[i]);
    }
    let mut written = vec![];
    for ds in ds_names {
        let mut bs: Vec<f64> = (0..ep.height()).filter(|&i| &eds[i] == ds && em[i] != "dense").map(|i| eb[i]).collect();
        bs.sort_by(f64::total_cmp);
        bs.dedup();
        for b in bs {
            let rows: Vec<usize> = (0..ep.height())
                .filter(|&i| {
                    &eds[i] == ds
                        && (eb[i] == b || em[i] == "dense")
                        && spe.get(ids[i].as_str()).is_some_and(|&s| s > 0.0)
                })
                .collect();
            let k: Vec<String> = rows.iter().map(|&i| line_key(&crate::frames::variant(&ev[i]))).collect();
            let x: Vec<f64> = rows.iter().map(|&i| (step[i] / spe[ids[i].as_str()] * 100.0).round() / 100.0).collect();
            let y: Vec<f64> = rows.iter().map(|&i| vb[i]).collect();
            let n_seeds = rows.iter().map(|&i| seed[i].to_bits()).collect::<std::collections::BTreeSet<_>>().len();
            let over = if n_seeds > 1 { format!("mean and 95% CI over {n_seeds} seeds") } else { "1 seed".to_string() };
            let chart = Chart {
                title: format!("{ds}: validation BCE during training, budget {b} per table ({over})"),
                x_label: "epochs of training done (1 = end of the first epoch, best_epoch 0)".into(),
                y_label: "validation BCE".into(),
                log_x: false,
                log_y: false,
                lines: aggregate(&k, &x, &y),
                hlines: vec![],
            };
            if !chart.lines.is_empty() {
                written.extend(render(&chart, charts, &format!("{}_val_bce_per_epoch_b{b}", slug(ds)))?);
            }
        }
    }
    Ok(written)
}

/// The x axes of the accuracy charts: (summary column, name in the file stem, axis label).
const X_AXES: &[(&str, &str, &str)] = &[
    ("params", "params", "trainable embedding parameters (all tables, log scale)"),
    (
        "train_total_bytes",
        "train_bytes",
        "embedding memory during training, MB (weights, optimizer state, index arrays; log scale)",
    ),
    ("total_bytes", "final_bytes", "embedding memory at the end, MB (weights and index arrays; log scale)"),
];

/// Regenerates every chart of a results directory from its parquet tables.
pub fn plot_results(results: &Path) -> Result<Vec<PathBuf>> {
    plot_results_with(results, &default_pairs())
}

/// [`plot_results`] with the paired charts of `pairs` (A, B): A − B per cap.
pub fn plot_results_with(results: &Path, pairs: &[(String, String)]) -> Result<Vec<PathBuf>> {
    let mut written = vec![];
    let charts = results.join("charts");
    let summary = results.join("summary.parquet");
    if summary.exists() {
        let df = read_parquet(&summary)?;
        let mut ds_names = strs(&df, "dataset")?;
        ds_names.sort();
        ds_names.dedup();
        for ds in &ds_names {
            written.extend(plot_accuracy(&df, ds, &charts)?);
        }
        let epochs_path = results.join("epochs.parquet");
        if epochs_path.exists() {
            let ep = read_parquet(&epochs_path)?;
            written.extend(plot_epochs(&ep, &ds_names, &charts)?);
        }
        written.extend(plot_paired(results, &charts, pairs)?);
        written.extend(crate::serving_report::plot(results, &charts)?);
        written.extend(crate::daily_report::plot(results, &charts)?);
    }
    written.extend(crate::tune_report::plot_tuning(results, &charts)?);
    let ls = results.join("least_squares.parquet");
    if ls.exists() {
        written.extend(plot_least_squares(&read_parquet(&ls)?, &charts)?);
    }
    Ok(written)
}

/// One dataset's accuracy charts: test BCE and AUC against each of [`X_AXES`], one line per
/// method variant over the caps, the f32 dense table as the reference line.
fn plot_accuracy(df: &polars::prelude::DataFrame, ds: &str, charts: &Path) -> Result<Vec<PathBuf>> {
    let mut written = vec![];
    let (datasets, methods, variants) = (strs(df, "dataset")?, strs(df, "method")?, strs(df, "variant")?);
    let rows: Vec<usize> = (0..df.height()).filter(|&i| datasets[i] == ds).collect();
    let seeds = f64s(df, "seed")?;
    let n_seeds = rows.iter().map(|&i| seeds[i].to_bits()).collect::<std::collections::BTreeSet<_>>().len();
    let over = if n_seeds > 1 { format!("mean and 95% CI over {n_seeds} seeds") } else { "1 seed".to_string() };
    for (xcol, xname, xlabel) in X_AXES {
        let xs = f64s(df, xcol)?;
        for (metric, label) in [("test_bce", "test BCE (lower is better)"), ("test_auc", "test AUC (higher is better)")]
        {
            let ys = f64s(df, metric)?;
            let (mut k, mut x, mut y) = (vec![], vec![], vec![]);
            let mut dense = vec![];
            for &i in &rows {
                // The reference line is the f32 dense table; quantized dense cells are points.
                if methods[i] == "dense" && !crate::paired::is_quantized(&variants[i]) {
                    dense.push(ys[i]);
                } else {
                    k.push(line_key(&variants[i]));
                    x.push(if *xcol == "params" { xs[i] } else { xs[i] / 1e6 });
                    y.push(ys[i]);
                }
            }
            let hlines = if dense.is_empty() {
                vec![]
            } else {
                vec![("dense (full tables)".to_string(), dense.iter().sum::<f64>() / dense.len() as f64)]
            };
            let what = match *xname {
                "params" => "trainable embedding parameters",
                "train_bytes" => "embedding memory during training",
                _ => "embedding memory at the end",
            };
            let chart = Chart {
                title: format!(
                    "{ds}: {} against {what} ({over})",
                    if metric.starts_with("test_bce") { "test BCE" } else { "test AUC" }
                ),
                x_label: (*xlabel).into(),
                y_label: label.into(),
                log_x: true,
                log_y: false,
                lines: aggregate(&k, &x, &y),
                hlines,
            };
            if !chart.lines.is_empty() {
                written.extend(render(&chart, charts, &format!("{}_{metric}_vs_{}", slug(ds), slug(xname)))?);
            }
        }
    }
    Ok(written)
}

/// Claim 4's charts: the CQR iteration's loss against its proven bound, one chart per k.
fn plot_least_squares(df: &polars::prelude::DataFrame, charts: &Path) -> Result<Vec<PathBuf>> {
    let mut written = vec![];
    let (k, it, loss, bound, opt) =
        (f64s(df, "k")?, f64s(df, "iteration")?, f64s(df, "loss")?, f64s(df, "bound")?, f64s(df, "optimum")?);
    let mut ks: Vec<f64> = k.clone();
    ks.sort_by(f64::total_cmp);
    ks.dedup();
    for kk in ks {
        let rows: Vec<usize> = (0..df.height()).filter(|&i| k[i] == kk).collect();
        let x: Vec<f64> = rows.iter().map(|&i| it[i]).collect();
        let mut lines = aggregate(
            &vec!["CQR iteration: ||XT_i - Y||^2".to_string(); rows.len()],
            &x,
            &rows.iter().map(|&i| loss[i]).collect::<Vec<_>>(),
        );
        lines.extend(aggregate(
            &vec!["bound (1-rho)^(ik)||XT*||^2 + ||XT*-Y||^2".to_string(); rows.len()],
            &x,
            &rows.iter().map(|&i| bound[i]).collect::<Vec<_>>(),
        ));
        let o = rows.iter().map(|&i| opt[i]).sum::<f64>() / rows.len().max(1) as f64;
        let chart = Chart {
            title: format!("Least squares: CQR iteration vs its bound (k = {kk})"),
            x_label: "iteration i".into(),
            y_label: "squared loss (log scale)".into(),
            log_x: false,
            log_y: true,
            lines,
            hlines: vec![("optimum ||XT*-Y||^2 (mean over seeds)".into(), o)],
        };
        written.extend(render(&chart, charts, &format!("least_squares_k{kk}"))?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn paired_lines_are_named_by_their_shared_grid_values() {
        use crate::paired::pair_label;
        assert_eq!(pair_label("cqr-rows=11460-groups=100", "ce-rows=11460-groups=100"), "groups=100 rows=11460");
        assert_eq!(pair_label("cqr", "ce"), "cqr vs ce");
        assert_eq!(
            pair_label("cqr-sample=frequency-groups=1", "ce-groups=1"),
            "cqr-sample=frequency-groups=1 vs ce-groups=1"
        );
    }
}
