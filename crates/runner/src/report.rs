//! Summaries over seeds (printed after a sweep) and the Markdown report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::frames::{f64s, read_parquet, strs};
use crate::paired::{observations, paired, reach_dense, Interval, Obs};

/// Mean and sample standard deviation over seeds of one (dataset, method, budget) group.
#[derive(Debug, Clone)]
pub struct GroupRow {
    pub dataset: String,
    pub variant: String,
    pub method: String,
    pub budget: u64,
    pub n: usize,
    pub test_bce: (f64, f64),
    pub test_auc: (f64, f64),
    pub best_val_auc: (f64, f64),
    pub params: f64,
    pub total_bytes: f64,
    pub train_total_bytes: f64,
    pub peak_rss_mb: f64,
    pub samples_per_s: f64,
    pub skipped_rows: f64,
    /// Mean normalized entropy (NaN for tables written before it existed).
    pub normalized_entropy: f64,
    /// Mean test BCE of the head, torso and tail rows (by the training count of the id in the
    /// largest table), and the mean number of test rows in each.
    pub bce_by_frequency: [f64; 3],
    pub rows_by_frequency: [f64; 3],
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, s)
}

pub fn group_summary(results: &Path) -> Result<Vec<GroupRow>> {
    let df = read_parquet(&results.join("summary.parquet"))?;
    let ds = strs(&df, "dataset")?;
    let va = strs(&df, "variant")?;
    let me = strs(&df, "method")?;
    let bu = f64s(&df, "budget")?;
    let cols = [
        "test_bce",
        "test_auc",
        "params",
        "total_bytes",
        "train_total_bytes",
        "peak_rss_bytes",
        "samples_per_s",
        "skipped_rows",
        "best_val_auc",
        "normalized_entropy",
        "test_bce_head",
        "test_bce_torso",
        "test_bce_tail",
        "test_rows_head",
        "test_rows_torso",
        "test_rows_tail",
    ];
    // Tables written before a column existed lack it: NaN there.
    let vals: Vec<Vec<f64>> =
        cols.iter().map(|c| f64s(&df, c).unwrap_or_else(|_| vec![f64::NAN; df.height()])).collect();
    // Group by dataset, method, budget and the other grid values (the variant), over seeds.
    let mut groups: BTreeMap<(String, String, u64, String), Vec<usize>> = BTreeMap::new();
    for i in 0..df.height() {
        groups.entry((ds[i].clone(), me[i].clone(), bu[i] as u64, va[i].clone())).or_default().push(i);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    // Variants in natural order (rows=11460 before rows=45840 before rows=183360).
    groups.sort_by(|(a, _), (b, _)| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)).then_with(|| natural_cmp(&a.3, &b.3)));
    Ok(groups
        .into_iter()
        .map(|((dataset, method, budget, variant), rows)| {
            let g = |c: usize| rows.iter().map(|&i| vals[c][i]).collect::<Vec<f64>>();
            GroupRow {
                dataset,
                variant,
                method,
                budget,
                n: rows.len(),
                test_bce: mean_std(&g(0)),
                test_auc: mean_std(&g(1)),
                best_val_auc: mean_std(&g(8)),
                params: mean_std(&g(2)).0,
                total_bytes: mean_std(&g(3)).0,
                train_total_bytes: mean_std(&g(4)).0,
                peak_rss_mb: mean_std(&g(5)).0 / 1048576.0,
                samples_per_s: mean_std(&g(6)).0,
                skipped_rows: mean_std(&g(7)).0,
                normalized_entropy: mean_std(&g(9)).0,
                bce_by_frequency: [mean_std(&g(10)).0, mean_std(&g(11)).0, mean_std(&g(12)).0],
                rows_by_frequency: [mean_std(&g(13)).0, mean_std(&g(14)).0, mean_std(&g(15)).0],
            }
        })
        .collect())
}

pub fn markdown_table(rows: &[GroupRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| dataset | cells (without seed) | budget/table | seeds | test BCE (mean ± std) | test AUC (mean ± std) | best val AUC (mean ± std) | NE | emb. params | MB (final) | MB (training) | peak RSS MB | train samples/s | skipped rows |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // The dense table's parameters per dataset: a cap at or above every table's size leaves a
    // method with the full tables (under-cap tables stay dense), which the budget column says.
    let dense: std::collections::BTreeMap<&str, f64> =
        rows.iter().filter(|r| r.method == "dense").map(|r| (r.dataset.as_str(), r.params)).collect();
    for r in rows {
        // PQ, RQ and PEP train the full table: the training column says so.
        let full = if cqr_methods::registry::trains_full_table(&r.method) { " (full table)" } else { "" };
        let budget = match dense.get(r.dataset.as_str()) {
            Some(&d) if r.method != "dense" && r.params == d => format!("{} (full table: cap ≥ size)", r.budget),
            _ => r.budget.to_string(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.5} ± {:.5} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.4} | {:.0} | {:.3} | {:.3}{full} | {:.0} | {:.0} | {:.0} |",
            r.dataset, r.variant, budget, r.n, r.test_bce.0, r.test_bce.1, r.test_auc.0, r.test_auc.1, r.best_val_auc.0, r.best_val_auc.1, r.normalized_entropy, r.params,
            r.total_bytes / 1e6, r.train_total_bytes / 1e6, r.peak_rss_mb, r.samples_per_s, r.skipped_rows
        );
    }
    s
}

/// Test BCE by id frequency: one row per group (rows with the id of the largest table in the
/// head, torso or tail by training count).
pub fn frequency_table(rows: &[GroupRow]) -> String {
    let [lo, hi] = cqr_models::FREQ_BOUNDS;
    let mut s = String::new();
    let _ = writeln!(s, "| dataset | cells (without seed) | seeds | head BCE (≥ {hi} training rows) | torso BCE ({lo}-{}) | tail BCE (< {lo}, unseen included) | test rows head / torso / tail |", hi - 1);
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.rows_by_frequency.iter().any(|n| *n > 0.0)) {
        let [h, t, l] = r.bce_by_frequency;
        let [nh, nt, nl] = r.rows_by_frequency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {h:.5} | {t:.5} | {l:.5} | {nh:.0} / {nt:.0} / {nl:.0} |",
            r.dataset, r.variant, r.n
        );
    }
    s
}

/// A paired row's last four cells: seeds, Δ test BCE with its interval, its resolution, Δ best
/// validation AUC with its interval.
fn differences(r: &crate::paired::PairRow) -> String {
    format!("{} | {} | {} | {}", r.bce.n, fmt_interval(&r.bce, 5), resolution(&r.bce, 5), fmt_interval(&r.auc, 4))
}

/// `cqr compare A B`: the same lines in two results directories, paired by seed (A − B), as a
/// Markdown table. Typical use: a tuned grid against its shared-setting twin (the gain from
/// tuning), or one build's records against another's.
pub fn compare_dirs(a: &Path, b: &Path) -> Result<String> {
    let rows = crate::paired::across(&observations(a)?, &observations(b)?);
    let mut s = String::new();
    let _ = writeln!(s, "A = {}, B = {}: the same line (or its one compatible counterpart: `A vs B`), budget and seed in both, A − B (95% t interval over the paired seeds; `*`: excludes 0). Test BCE: negative means A is better.\n", a.display(), b.display());
    let _ = writeln!(s, "| dataset | line | budget/table | seeds | Δ test BCE [95% CI] | resolves | Δ best val AUC [95% CI] |\n|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let line = if r.a == r.b { r.a.clone() } else { format!("{} vs {}", r.a, r.b) };
        let _ = writeln!(s, "| {} | {line} | {} | {} |", r.dataset, r.budget, differences(r));
    }
    if rows.is_empty() {
        let _ = writeln!(s, "(no line, budget and two seeds in common)");
    }
    Ok(s)
}

fn fmt_interval(i: &Interval, digits: usize) -> String {
    let mark = if i.significant() { " *" } else { "" };
    format!("{:+.d$} [{:+.d$}, {:+.d$}]{mark}", i.mean, i.lo, i.hi, d = digits)
}

/// The smallest |mean difference| these seeds resolve at 95% (the interval's half-width,
/// t(n − 1) · sd / √n); with two seeds (t = 12.7 on one degree of freedom) nothing is resolved.
pub fn resolution(i: &Interval, digits: usize) -> String {
    if i.n < 3 {
        return format!("unresolved (n = {})", i.n);
    }
    format!("{:.d$}", (i.hi - i.lo) / 2.0, d = digits)
}

/// Whether the results directory holds a tuning search's picks.
pub fn is_tuned(results: &Path) -> bool {
    results.join("picks.parquet").exists()
}

/// The paired section: `A − B` per budget with 95% intervals, then "parameters to reach dense".
/// `tuned`: every method ran at its own setting picked on validation (else: one shared setting).
pub fn paired_section(obs: &[Obs], against: &[String], tuned: bool) -> String {
    let rows = paired(obs, against);
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    let setting = if tuned {
        "tuned: each method × budget at its own setting, picked on validation"
    } else {
        "shared setting: every method at the grid's one setting, untuned"
    };
    let _ = writeln!(s, "## Paired comparisons (A − B over seeds that share data and batch order; {setting})\n");
    let _ = writeln!(
        s,
        "Mean of the per-seed differences and its 95% confidence interval (Student t with n − 1 degrees of freedom over the n paired seeds); `*`: the interval excludes 0. Test BCE: negative means A is better. Best validation AUC: positive means A is better. *Resolves*: the smallest |Δ test BCE| these seeds resolve at 95% (the interval's half-width); with 2 seeds nothing is resolved.\n"
    );
    let _ = writeln!(s, "| dataset | A | B | budget/table | A's params | seeds | Δ test BCE [95% CI] | resolves | Δ best val AUC [95% CI] |");
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {} |",
            r.dataset,
            r.a,
            r.b,
            r.budget,
            r.a_params,
            differences(r)
        );
    }
    s.push('\n');
    s.push_str(&crate::runaway::section(&rows));
    let dense: BTreeSet<String> = obs
        .iter()
        .filter(|o| o.method == "dense" && !crate::paired::is_quantized(&o.line))
        .map(|o| o.line.clone())
        .collect();
    let reach = reach_dense(&rows, &dense);
    if reach.is_empty() && rows.iter().any(|r| dense.contains(&r.b)) {
        let _ = writeln!(s, "\n### Parameters to reach dense\n\nNo comparison against dense has 3 or more paired seeds: with 2, any difference is \"not significant\", so none is said to reach dense.");
    }
    if !reach.is_empty() {
        let _ = writeln!(s, "\n### Parameters to reach dense\n");
        let _ = writeln!(s, "The smallest budget at which the paired test-BCE difference against dense is not significantly positive (interval's lower bound ≤ 0), and the smallest at which it is at most 0 with 95% confidence (upper bound ≤ 0); `-`: no budget of the grid. Only comparisons with at least 3 paired seeds count (with 2, any difference is \"not significant\").\n");
        let _ = writeln!(
            s,
            "| dataset | line | reaches dense (lo ≤ 0): budget, params | at least dense (hi ≤ 0): budget, params |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|");
        let f = |x: Option<(u64, f64)>| x.map(|(b, p)| format!("{b}, {p:.0}")).unwrap_or_else(|| "-".into());
        for r in reach {
            let _ = writeln!(s, "| {} | {} | {} | {} |", r.dataset, r.line, f(r.reaches), f(r.surely));
        }
    }
    s.push('\n');
    s
}

/// CQR − CE and CQR − hashing at a glance: one row per dataset and grid point (the grid
/// values the paired lines share), one column per cap; empty without such pairs.
pub fn cqr_map_section(obs: &[Obs]) -> String {
    let mut s = String::new();
    for b in ["ce", "hashing"] {
        let rows: Vec<_> = paired(obs, &[b.to_string()])
            .into_iter()
            .filter(|r| r.a.split('-').next() == Some("cqr") && r.b.split('-').next() == Some(b))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let budgets: BTreeSet<u64> = rows.iter().map(|r| r.budget).collect();
        let mut grid: BTreeMap<(String, String), BTreeMap<u64, String>> = BTreeMap::new();
        for r in &rows {
            grid.entry((r.dataset.clone(), crate::paired::pair_label(&r.a, &r.b)))
                .or_default()
                .insert(r.budget, fmt_interval(&r.bce, 4));
        }
        let _ = writeln!(
            s,
            "### CQR − {b} test BCE by grid point and cap (negative: CQR better; 95% CI; `*`: excludes 0)
"
        );
        let caps: Vec<String> = budgets.iter().map(|b| b.to_string()).collect();
        let _ = writeln!(s, "| dataset | grid point | {} |", caps.join(" | "));
        let _ = writeln!(s, "|---|---|{}", "---:|".repeat(caps.len()));
        // Grid points in natural order (rows=11460 before rows=45840 before rows=183360).
        let mut points: Vec<_> = grid.iter().collect();
        points.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then_with(|| natural_cmp(&a.0 .1, &b.0 .1)));
        for ((ds, point), cells) in points {
            let vals: Vec<String> =
                budgets.iter().map(|b| cells.get(b).cloned().unwrap_or_else(|| "-".into())).collect();
            let _ = writeln!(s, "| {ds} | {point} | {} |", vals.join(" | "));
        }
        s.push('\n');
    }
    s
}

/// Compares strings with their digit runs read as numbers: `rows=45840` < `rows=183360`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = vec![];
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, xa), (db, xb)) in ca.iter().zip(&cb) {
        let o = if *da && *db {
            // Numbers: shorter (after leading zeros) is smaller; equal lengths compare as text.
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Methods every other method is compared against in the paired section by default.
pub fn default_against() -> Vec<String> {
    vec!["cqr".into(), "dense".into()]
}

/// Writes `report.md` with the grouped summary and links to every chart; returns its path.
pub fn write_report(results: &Path) -> Result<PathBuf> {
    write_report_against(results, &default_against())
}

/// [`write_report`] with the paired section against the methods `against` (in this order).
pub fn write_report_against(results: &Path, against: &[String]) -> Result<PathBuf> {
    let mut md = String::new();
    let name = results.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let _ = writeln!(md, "# Results: {name}\n");
    let _ = writeln!(md, "Generated by `cqr report {}` from the tables in this directory.\n", results.display());
    if results.join("summary.parquet").exists() {
        let rows = group_summary(results)?;
        let _ = writeln!(md, "## Summary (reported test scores: best validation epoch; PQ/RQ: after compression)\n");
        md.push_str(&markdown_table(&rows));
        md.push('\n');
        let obs = observations(results)?;
        if is_tuned(results) {
            md.push_str(&crate::tune_report::tuned_section(results)?);
        }
        md.push_str(&paired_section(&obs, against, is_tuned(results)));
        md.push_str(&cqr_map_section(&obs));
        md.push_str(&crate::serving_report::section(results)?);
        md.push_str(&crate::daily_report::section(results, against)?);
        let freq = frequency_table(&rows);
        if freq.lines().count() > 2 {
            let _ = writeln!(md, "## Test BCE by id frequency (id of the largest table, by training count)\n");
            md.push_str(&freq);
            md.push('\n');
        }
    }
    let inf = results.join("infeasible.parquet");
    if inf.exists() {
        let df = read_parquet(&inf)?;
        let (names, reasons) = (strs(&df, "cell_name")?, strs(&df, "reason")?);
        let _ = writeln!(md, "## Infeasible cells (the method cannot meet the budget)\n");
        for (n, r) in names.iter().zip(&reasons) {
            let _ = writeln!(md, "- `{n}`: {r}");
        }
        md.push('\n');
    }
    let charts = results.join("charts");
    if let Ok(rd) = std::fs::read_dir(&charts) {
        let mut pngs: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".png"))
            .collect();
        pngs.sort();
        if !pngs.is_empty() {
            let _ = writeln!(md, "## Charts\n");
            for p in pngs {
                let _ = writeln!(md, "![{p}](charts/{p})\n");
            }
        }
    }
    let path = results.join("report.md");
    std::fs::write(&path, md)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(line: &str, method: &str, budget: u64, seed: u64, bce: f64) -> Obs {
        crate::paired::tests::obs(line, method, budget, seed, bce, 0.5)
    }

    /// One row per grid point, one column per cap, the known paired difference in each cell.
    #[test]
    fn the_map_section_lays_out_cqr_minus_ce_by_grid_point_and_cap() {
        let mut o = vec![];
        for seed in 0..3u64 {
            let noise = [0.01, -0.02, 0.0][seed as usize];
            for rows in ["100", "400"] {
                for b in [800u64, 3200] {
                    let lead = if rows == "400" { 0.002 } else { 0.0 } + 0.0001 * seed as f64;
                    o.push(obs(&format!("cqr-rows={rows}"), "cqr", b, seed, 0.45 + noise - lead));
                    o.push(obs(&format!("ce-rows={rows}"), "ce", b, seed, 0.45 + noise));
                }
            }
        }
        let s = cqr_map_section(&o);
        assert!(s.contains("### CQR − ce test BCE") && !s.contains("hashing"), "{s}");
        assert!(s.contains("| dataset | grid point | 800 | 3200 |"), "{s}");
        let want = fmt_interval(&crate::paired::t_interval(&[-0.002, -0.0021, -0.0022]), 4);
        assert!(s.contains(&format!("| d | rows=400 | {want} | {want} |")), "{s}");
        assert!(cqr_map_section(&o[..0]).is_empty());
    }

    #[test]
    fn the_training_column_labels_methods_that_train_the_full_table() {
        let row = |method: &str| GroupRow {
            dataset: "d".into(),
            variant: method.into(),
            method: method.into(),
            budget: 8,
            n: 1,
            test_bce: (0.5, 0.0),
            test_auc: (0.5, 0.0),
            best_val_auc: (0.5, 0.0),
            params: 8.0,
            total_bytes: 32.0,
            train_total_bytes: 4e6,
            peak_rss_mb: 1.0,
            samples_per_s: 1.0,
            skipped_rows: 0.0,
            normalized_entropy: 1.0,
            bce_by_frequency: [0.0; 3],
            rows_by_frequency: [0.0; 3],
        };
        let t = markdown_table(&[row("pep"), row("pq"), row("cqr")]);
        let lines: Vec<&str> = t.lines().skip(2).collect();
        assert!(lines[0].contains("| 4.000 (full table) |") && lines[1].contains("(full table)"), "{t}");
        assert!(!lines[2].contains("full table"), "{t}");
    }

    /// A cap at or above every table's size gives the dense parameter count: said, not hidden.
    #[test]
    fn a_cap_above_the_tables_is_labelled_full_table() {
        let row = |method: &str, budget: u64, params: f64| GroupRow {
            dataset: "d".into(),
            variant: format!("{method}-b{budget}"),
            method: method.into(),
            budget,
            n: 1,
            test_bce: (0.5, 0.0),
            test_auc: (0.5, 0.0),
            best_val_auc: (0.5, 0.0),
            params,
            total_bytes: 32.0,
            train_total_bytes: 32.0,
            peak_rss_mb: 1.0,
            samples_per_s: 1.0,
            skipped_rows: 0.0,
            normalized_entropy: 1.0,
            bce_by_frequency: [0.0; 3],
            rows_by_frequency: [0.0; 3],
        };
        let t = markdown_table(&[row("dense", 0, 5000.0), row("hashing", 64, 900.0), row("hashing", 100000, 5000.0)]);
        let lines: Vec<&str> = t.lines().skip(2).collect();
        assert!(
            lines[2].contains("| 100000 (full table: cap ≥ size) |")
                && !lines[1].contains("full table")
                && !lines[0].contains("cap ≥"),
            "{t}"
        );
    }

    #[test]
    fn grid_points_sort_by_their_numbers() {
        let mut v = vec![
            "rows=183360-groups=100",
            "rows=11460-groups=3000",
            "rows=45840-groups=100",
            "rows=11460-groups=100",
            "rows=11460-groups=null",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "rows=11460-groups=100",
                "rows=11460-groups=3000",
                "rows=11460-groups=null",
                "rows=45840-groups=100",
                "rows=183360-groups=100"
            ]
        );
        assert!(
            natural_cmp("a2", "a10").is_lt() && natural_cmp("a10", "a10").is_eq() && natural_cmp("a", "a1").is_lt()
        );
    }
}
