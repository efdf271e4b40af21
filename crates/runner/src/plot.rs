//! Charts (PNG and SVG) regenerated from the result tables alone.
//!
//! The layout follows the seed paper's figure: test BCE (or AUC) against parameters on a log
//! axis, one line per method with a band for the min-max over seeds, and the dense table as a
//! dashed horizontal line. Log axes are drawn as log10 values with 10^x labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::tables::{f64s, read_parquet, strs};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // Text in PNGs is rendered from this bundled font (DejaVu Sans), so no system font
        // libraries are needed.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 600;

/// One line: points of (x, mean, min, max).
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64, f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub lines: Vec<Line>,
    /// Dashed horizontal reference lines.
    pub hlines: Vec<(String, f64)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40),
    RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(23, 190, 207),
];

fn tr(v: f64, log: bool) -> f64 {
    if log { v.max(f64::MIN_POSITIVE).log10() } else { v }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing chart `{}`: {e:?}", c.title);
    root.fill(&WHITE).map_err(e)?;
    let xs: Vec<f64> = c.lines.iter().flat_map(|l| l.points.iter().map(|p| tr(p.0, c.log_x))).filter(|v| v.is_finite()).collect();
    let ys: Vec<f64> = c
        .lines
        .iter()
        .flat_map(|l| l.points.iter().flat_map(|p| [p.2, p.3]))
        .chain(c.hlines.iter().map(|h| h.1))
        .map(|v| tr(v, c.log_y))
        .filter(|v| v.is_finite())
        .collect();
    if xs.is_empty() || ys.is_empty() {
        return Err(anyhow!("chart `{}` has no finite data", c.title));
    }
    let (mut x0, mut x1) = (xs.iter().cloned().fold(f64::INFINITY, f64::min), xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let (mut y0, mut y1) = (ys.iter().cloned().fold(f64::INFINITY, f64::min), ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let px = ((x1 - x0) * 0.05).max(1e-9);
    let py = ((y1 - y0) * 0.08).max(1e-9);
    x0 -= px;
    x1 += px;
    y0 -= py;
    y1 += py;
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let (log_x, log_y) = (c.log_x, c.log_y);
    let fmt = |v: f64, log: bool| if log { compact(10f64.powf(v)) } else { trim(format!("{v:.4}")) };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_label_formatter(&|v| fmt(*v, log_x))
        .y_label_formatter(&|v| fmt(*v, log_y))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, l) in c.lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64, f64, f64)> = l.points.iter().map(|p| (tr(p.0, log_x), tr(p.1, log_y), tr(p.2, log_y), tr(p.3, log_y))).filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.iter().any(|p| p.3 > p.2) {
            let band: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).chain(pts.iter().rev().map(|p| (p.0, p.3))).collect();
            chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.18)))).map_err(e)?;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(e)?
            .label(&l.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled()))).map_err(e)?;
    }
    for (label, y) in &c.hlines {
        let y = tr(*y, log_y);
        chart
            .draw_series(DashedLineSeries::new(vec![(x0, y), (x1, y)], 8, 5, BLACK.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

fn trim(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Three significant digits with a k/M/G suffix (tick labels of log axes).
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 { (v / 1e9, "G") } else if a >= 1e6 { (v / 1e6, "M") } else if a >= 1e3 { (v / 1e3, "k") } else { (v, "") };
    let digits = if x.abs() >= 100.0 { 0 } else if x.abs() >= 10.0 { 1 } else if x.abs() >= 1.0 { 2 } else { 3 };
    format!("{}{suffix}", trim(format!("{x:.digits$}")))
}

/// Writes `stem.png` and `stem.svg` under `dir`.
pub fn render(c: &Chart, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir)?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    draw(BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area(), c)?;
    draw(SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area(), c)?;
    Ok(vec![png, svg])
}

/// Groups (key, x, y) rows into lines of (x, mean, min, max) per key, x rounded to group seeds.
fn aggregate(keys: &[String], xs: &[f64], ys: &[f64]) -> Vec<Line> {
    let mut m: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for ((k, &x), &y) in keys.iter().zip(xs).zip(ys) {
        if y.is_finite() {
            m.entry(k.clone()).or_default().entry(x.to_bits()).or_default().push(y);
        }
    }
    m.into_iter()
        .map(|(label, pts)| Line {
            label,
            points: pts
                .into_iter()
                .map(|(x, v)| {
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    (f64::from_bits(x), mean, v.iter().cloned().fold(f64::INFINITY, f64::min), v.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
                })
                .collect(),
        })
        .collect()
}

/// Line label for a variant: the cell name without its budget and dataset parts, so each line
/// joins one method's cells over budgets (other grid values stay in the label).
pub fn line_key(variant: &str) -> String {
    variant
        .split('-')
        .filter(|p| !(p.starts_with('b') && p.len() > 1 && p[1..].chars().all(|c| c.is_ascii_digit())) && !p.starts_with("dataset="))
        .collect::<Vec<_>>()
        .join("-")
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// Paired-difference charts, the regime map: for each dataset and each reference method B among
/// CE and hashing, CQR − B test BCE against the budget, one line per CQR line (its other grid
/// values: teacher groups, rows, ...), the band the 95% interval over seeds, and 0 dashed.
/// Below 0, CQR is better.
fn plot_paired(results: &Path, charts: &Path) -> Result<Vec<PathBuf>> {
    let obs = crate::report::observations(results)?;
    let rows = crate::paired::paired(&obs, &["ce".to_string(), "hashing".to_string()]);
    let mut written = vec![];
    let mut datasets: Vec<&String> = rows.iter().map(|r| &r.dataset).collect();
    datasets.sort();
    datasets.dedup();
    for ds in datasets {
        for b in ["ce", "hashing"] {
            let mut by: BTreeMap<String, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
            for r in rows.iter().filter(|r| &r.dataset == ds && r.a.split('-').next() == Some("cqr") && r.b.split('-').next() == Some(b)) {
                let label = crate::paired::pair_label(&r.a, &r.b);
                by.entry(label).or_default().push((r.budget as f64, r.bce.mean, r.bce.lo, r.bce.hi));
            }
            if by.is_empty() {
                continue;
            }
            let chart = Chart {
                title: format!("{ds}: paired CQR − {b} test BCE (95% CI over seeds)"),
                x_label: "parameter cap per table (log scale)".into(),
                y_label: format!("CQR − {b} test BCE (below 0: CQR better)"),
                log_x: true,
                log_y: false,
                lines: by.into_iter().map(|(label, points)| Line { label, points }).collect(),
                hlines: vec![("no difference".into(), 0.0)],
            };
            written.extend(render(&chart, charts, &format!("{}_paired_cqr_minus_{b}", slug(ds)))?);
        }
    }
    Ok(written)
}

/// The x axes of the accuracy charts: (summary column, name in the file stem, axis label).
const X_AXES: &[(&str, &str, &str)] = &[
    ("params", "params", "trainable embedding parameters (all tables, log scale)"),
    ("train_total_bytes", "train_bytes", "embedding memory during training, MB (weights, optimizer state, index arrays; log scale)"),
    ("total_bytes", "final_bytes", "embedding memory at the end, MB (weights and index arrays; log scale)"),
];

/// Regenerates every chart of a results directory from its parquet tables.
pub fn plot_results(results: &Path) -> Result<Vec<PathBuf>> {
    let mut written = vec![];
    let charts = results.join("charts");
    let summary = results.join("summary.parquet");
    if summary.exists() {
        let df = read_parquet(&summary)?;
        let datasets = strs(&df, "dataset")?;
        let methods = strs(&df, "method")?;
        let variants = strs(&df, "variant")?;
        // x: exact trainable embedding parameters of the cell, or its embedding bytes during
        // training (`train_total_bytes`: PQ/RQ train the full table) or at the end
        // (`total_bytes`: pointer arrays included, which dominate CQR's bytes at Criteo scale).
        // The dense tables are drawn as the reference line.
        let mut ds_names: Vec<String> = datasets.clone();
        ds_names.sort();
        ds_names.dedup();
        for ds in &ds_names {
            let rows: Vec<usize> = (0..df.height()).filter(|&i| &datasets[i] == ds).collect();
            for (xcol, xname, xlabel) in X_AXES {
                let xs = f64s(&df, xcol)?;
                for (metric, label) in [("test_bce", "test BCE (lower is better)"), ("test_auc", "test AUC (higher is better)")] {
                    let ys = f64s(&df, metric)?;
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
                    let hlines = if dense.is_empty() { vec![] } else { vec![("dense (full tables)".to_string(), dense.iter().sum::<f64>() / dense.len() as f64)] };
                    let chart = Chart {
                        title: format!("{ds}: {metric} vs {xname}"),
                        x_label: (*xlabel).into(),
                        y_label: label.into(),
                        log_x: true,
                        log_y: false,
                        lines: aggregate(&k, &x, &y),
                        hlines,
                    };
                    if !chart.lines.is_empty() {
                        written.extend(render(&chart, &charts, &format!("{}_{metric}_vs_{}", slug(ds), slug(xname)))?);
                    }
                }
            }
        }
        let epochs_path = results.join("epochs.parquet");
        if epochs_path.exists() {
            let ep = read_parquet(&epochs_path)?;
            let eds = strs(&ep, "dataset")?;
            let em = strs(&ep, "method")?;
            let eb = f64s(&ep, "budget")?;
            let epoch = f64s(&ep, "epoch")?;
            let vb = f64s(&ep, "val_bce")?;
            for ds in &ds_names {
                // The median budget of this dataset, so one chart shows every method.
                let mut bs: Vec<f64> = (0..ep.height()).filter(|&i| &eds[i] == ds && em[i] != "dense").map(|i| eb[i]).collect();
                bs.sort_by(f64::total_cmp);
                bs.dedup();
                let Some(&mid) = bs.get(bs.len() / 2) else { continue };
                let rows: Vec<usize> = (0..ep.height()).filter(|&i| &eds[i] == ds && (eb[i] == mid || em[i] == "dense")).collect();
                let k: Vec<String> = rows.iter().map(|&i| em[i].clone()).collect();
                let x: Vec<f64> = rows.iter().map(|&i| epoch[i] + 1.0).collect();
                let y: Vec<f64> = rows.iter().map(|&i| vb[i]).collect();
                let chart = Chart {
                    title: format!("{ds}: validation BCE per epoch (budget {mid} per table)"),
                    x_label: "epoch".into(),
                    y_label: "validation BCE".into(),
                    log_x: false,
                    log_y: false,
                    lines: aggregate(&k, &x, &y),
                    hlines: vec![],
                };
                if !chart.lines.is_empty() {
                    written.extend(render(&chart, &charts, &format!("{}_val_bce_per_epoch", slug(ds)))?);
                }
            }
        }
    }
    if summary.exists() {
        written.extend(plot_paired(results, &charts)?);
    }
    let ls = results.join("least_squares.parquet");
    if ls.exists() {
        let df = read_parquet(&ls)?;
        let k = f64s(&df, "k")?;
        let it = f64s(&df, "iteration")?;
        let loss = f64s(&df, "loss")?;
        let bound = f64s(&df, "bound")?;
        let opt = f64s(&df, "optimum")?;
        let mut ks: Vec<f64> = k.clone();
        ks.sort_by(f64::total_cmp);
        ks.dedup();
        for kk in ks {
            let rows: Vec<usize> = (0..df.height()).filter(|&i| k[i] == kk).collect();
            let x: Vec<f64> = rows.iter().map(|&i| it[i]).collect();
            let mut lines = aggregate(&vec!["CQR iteration: ||XT_i - Y||^2".to_string(); rows.len()], &x, &rows.iter().map(|&i| loss[i]).collect::<Vec<_>>());
            lines.extend(aggregate(&vec!["bound (1-rho)^(ik)||XT*||^2 + ||XT*-Y||^2".to_string(); rows.len()], &x, &rows.iter().map(|&i| bound[i]).collect::<Vec<_>>()));
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
            written.extend(render(&chart, &charts, &format!("least_squares_k{kk}"))?);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_labels() {
        assert_eq!(compact(5011.723), "5.01k");
        assert_eq!(compact(158489.3), "158k");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(compact(0.5), "0.5");
    }

    #[test]
    fn paired_lines_are_named_by_their_shared_grid_values() {
        use crate::paired::pair_label;
        assert_eq!(pair_label("cqr-rows=11460-groups=100", "ce-rows=11460-groups=100"), "groups=100 rows=11460");
        assert_eq!(pair_label("cqr", "ce"), "cqr vs ce");
        assert_eq!(pair_label("cqr-sample=frequency-groups=1", "ce-groups=1"), "cqr-sample=frequency-groups=1 vs ce-groups=1");
    }

    #[test]
    fn renders_png_and_svg_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let chart = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            log_y: false,
            lines: vec![Line { label: "a".into(), points: vec![(100.0, 0.5, 0.45, 0.55), (1000.0, 0.4, 0.39, 0.42)] }],
            hlines: vec![("dense".into(), 0.38)],
        };
        let files = render(&chart, dir.path(), "c").unwrap();
        let png = std::fs::read(&files[0]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // IHDR: width and height as big-endian u32 at bytes 16..24.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), WIDTH);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), HEIGHT);
        assert!(png.len() > 5_000);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains(&format!("width=\"{WIDTH}\"")) && svg.contains("<text"), "svg lacks size or text");
    }
}
