//! The chart renderer: a [`Chart`] (lines with 95% bands, reference lines, log axes, ticks at
//! the x values the grid ran) drawn to PNG and SVG with a bundled font. Which charts a results
//! directory gets is `plot.rs`'s business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // Text in PNGs is rendered from this bundled font (DejaVu Sans), so no system font
        // libraries are needed.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// The plot's size; the image adds the legend panel's width ([`image_width`]).
pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 600;

/// One line: points of (x, y, band low, band high).
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

const COLORS: [RGBColor; 22] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
    RGBColor(0, 0, 128),
    // Darker and lighter companions, so that every registered method (21) has its own colour.
    RGBColor(128, 0, 0),
    RGBColor(0, 100, 0),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(197, 176, 213),
    RGBColor(0, 128, 128),
    RGBColor(128, 128, 0),
    RGBColor(255, 152, 150),
    RGBColor(90, 90, 90),
    RGBColor(174, 199, 232),
    RGBColor(75, 0, 130),
];

/// A line's colour, fixed per method across every chart: the method (first word of the label,
/// up to `-` or a space) by its place in the registry; other labels by a hash of that word.
pub fn color_of(label: &str) -> RGBColor {
    let method = label.split(['-', ' ']).next().unwrap_or(label);
    let i = cqr_methods::method_names()
        .iter()
        .position(|m| *m == method)
        .unwrap_or_else(|| cqr_data::records::fnv1a64(method.as_bytes()) as usize);
    COLORS[i % COLORS.len()]
}

/// Where ticks go on an axis spanning `lo..hi` (transformed): at the data's distinct values when
/// there are at most 8, else at round values (integer powers of ten on a log axis).
fn key_points(values: &[f64], lo: f64, hi: f64, log: bool) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().cloned().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    if !v.is_empty() && v.len() <= 8 {
        // Values closer than 6% of the axis (a method whose parameter count sits just below a
        // cap) would print over each other: keep the first of each cluster.
        let gap = 0.06 * (hi - lo);
        let mut kept: Vec<f64> = vec![];
        for x in v {
            if kept.last().is_none_or(|k| x - k >= gap) {
                kept.push(x);
            }
        }
        return kept;
    }
    let span = hi - lo;
    let step = if log && span >= 2.0 { 1.0 } else { 10f64.powf((span / 6.0).log10().floor()) };
    let step = if span / step > 12.0 { step * 2.0 } else { step };
    let mut out = vec![];
    let mut x = (lo / step).ceil() * step;
    while x <= hi {
        out.push(x);
        x += step;
    }
    out
}

/// An x axis whose ticks are exactly `keys` (plotters' own `WithKeyPoints` loses the label
/// formatter of an f64 range).
struct KeyedAxis {
    range: std::ops::Range<f64>,
    keys: Vec<f64>,
}

impl Ranged for KeyedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.keys.clone()
    }
}

/// Draws one line's points with marker `k` (0: circle, 1: triangle, 2: square, 3: cross) and
/// the line itself; its legend entry is drawn beside the plot ([`draw_legend`]).
macro_rules! draw_line {
    ($chart:expr, $pts:expr, $color:expr, $k:expr, $e:expr) => {{
        let (pts, color) = ($pts, $color);
        $chart.draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2))).map_err($e)?;
        match $k % 4 {
            0 => {
                $chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled()))).map_err($e)?;
            }
            1 => {
                $chart
                    .draw_series(pts.iter().map(|p| TriangleMarker::new((p.0, p.1), 5, color.filled())))
                    .map_err($e)?;
            }
            2 => {
                $chart
                    .draw_series(
                        pts.iter()
                            .map(|p| EmptyElement::at((p.0, p.1)) + Rectangle::new([(-4, -4), (4, 4)], color.filled())),
                    )
                    .map_err($e)?;
            }
            _ => {
                $chart.draw_series(pts.iter().map(|p| Cross::new((p.0, p.1), 5, color.stroke_width(2)))).map_err($e)?;
            }
        }
    }};
}

/// One legend entry: a line (its colour and marker) or a dashed reference line (`marker` None).
struct Entry {
    label: String,
    color: RGBColor,
    marker: Option<usize>,
}

/// The legend's entries in drawing order. Lines of one colour (one method) take the markers in
/// turn, so two settings of a method stay apart.
fn entries(c: &Chart) -> Vec<Entry> {
    let mut seen: BTreeMap<(u8, u8, u8), usize> = BTreeMap::new();
    let lines = c.lines.iter().map(|l| {
        let color = color_of(&l.label);
        let k = seen.entry((color.0, color.1, color.2)).or_insert(0);
        *k += 1;
        Entry { label: l.label.clone(), color, marker: Some(*k - 1) }
    });
    let lines: Vec<Entry> = lines.collect();
    lines.into_iter().chain(c.hlines.iter().map(|h| Entry { label: h.0.clone(), color: BLACK, marker: None })).collect()
}

const LEGEND_FONT: u32 = 14;
const LEGEND_ROW: i32 = 20;
/// The legend's first row sits level with the plot area's top (below the caption).
const LEGEND_TOP: i32 = 50;
/// Sample (20 px), gap, label; padding either side.
const LEGEND_SAMPLE: i32 = 28;
const LEGEND_PAD: i32 = 12;

/// Rows per legend column, and the columns the entries need.
fn legend_grid(n: usize) -> (usize, usize) {
    let rows = ((HEIGHT as i32 - LEGEND_TOP - 20) / LEGEND_ROW).max(1) as usize;
    (rows, n.div_ceil(rows).max(1))
}

/// The legend panel's width in pixels: the widest label (in the bundled font) plus its sample,
/// per column. The plot keeps [`WIDTH`]; the image is this much wider, so no entry covers data.
fn legend_width(entries: &[Entry]) -> u32 {
    register_font();
    let font = ("sans-serif", LEGEND_FONT).into_font();
    let widest = entries
        .iter()
        // 5% over the font's estimate: the bitmap's glyph spacing runs slightly wider.
        .map(|e| font.box_size(&e.label).map(|(w, _)| w as i32 * 21 / 20).unwrap_or(8 * e.label.len() as i32))
        .max()
        .unwrap_or(0);
    let (_, cols) = legend_grid(entries.len());
    (cols as i32 * (LEGEND_SAMPLE + widest + LEGEND_PAD) + LEGEND_PAD) as u32
}

/// Draws the entries down the panel `area`, column by column, each with its line sample and
/// marker (a dashed black sample for a reference line).
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[Entry],
    col_w: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (rows, _) = legend_grid(entries.len());
    let style = ("sans-serif", LEGEND_FONT).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().enumerate() {
        let (x, y) = (LEGEND_PAD + (i / rows) as i32 * col_w, LEGEND_TOP + (i % rows) as i32 * LEGEND_ROW);
        let line = |a: i32, b: i32| PathElement::new(vec![(x + a, y), (x + b, y)], e.color.stroke_width(2));
        match e.marker {
            None => {
                area.draw(&line(0, 8))?;
                area.draw(&line(12, 20))?;
            }
            Some(k) => {
                area.draw(&line(0, 20))?;
                match k % 4 {
                    0 => area.draw(&Circle::new((x + 10, y), 4, e.color.filled()))?,
                    1 => area.draw(&TriangleMarker::new((x + 10, y), 5, e.color.filled()))?,
                    2 => area.draw(&Rectangle::new([(x + 6, y - 4), (x + 14, y + 4)], e.color.filled()))?,
                    _ => area.draw(&Cross::new((x + 10, y), 5, e.color.stroke_width(2)))?,
                }
            }
        }
        area.draw_text(&e.label, &style, (x + LEGEND_SAMPLE, y))?;
    }
    Ok(())
}

fn tr(v: f64, log: bool) -> f64 {
    if log {
        v.max(f64::MIN_POSITIVE).log10()
    } else {
        v
    }
}

/// The chart's x values (transformed) and its padded x and y ranges; an error when no value is finite.
fn padded_ranges(c: &Chart) -> Result<(Vec<f64>, (f64, f64), (f64, f64))> {
    let xs: Vec<f64> =
        c.lines.iter().flat_map(|l| l.points.iter().map(|p| tr(p.0, c.log_x))).filter(|v| v.is_finite()).collect();
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
    let (mut x0, mut x1) =
        (xs.iter().cloned().fold(f64::INFINITY, f64::min), xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let (mut y0, mut y1) =
        (ys.iter().cloned().fold(f64::INFINITY, f64::min), ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
    let px = ((x1 - x0) * 0.05).max(1e-9);
    let py = ((y1 - y0) * 0.08).max(1e-9);
    x0 -= px;
    x1 += px;
    y0 -= py;
    y1 += py;
    // One x value (a single cap): widen the range so the one tick is readable.
    if x1 - x0 < 1e-6 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    Ok((xs, (x0, x1), (y0, y1)))
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing chart `{}`: {e:?}", c.title);
    root.fill(&WHITE).map_err(e)?;
    let legend = entries(c);
    let (plot, panel) = root.split_horizontally(WIDTH);
    let (_, cols) = legend_grid(legend.len());
    let col_w = (legend_width(&legend) as i32 - LEGEND_PAD) / cols as i32;
    draw_legend(&panel, &legend, col_w).map_err(e)?;
    let root = plot;
    let (xs, (x0, x1), (y0, y1)) = padded_ranges(c)?;
    let x_keys = key_points(&xs, x0, x1, c.log_x);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(KeyedAxis { range: x0..x1, keys: x_keys }, y0..y1)
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
    for (l, entry) in c.lines.iter().zip(&legend) {
        let color = entry.color;
        let mut pts: Vec<(f64, f64, f64, f64)> = l
            .points
            .iter()
            .map(|p| (tr(p.0, log_x), tr(p.1, log_y), tr(p.2, log_y), tr(p.3, log_y)))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.iter().any(|p| p.3 > p.2) {
            let band: Vec<(f64, f64)> =
                pts.iter().map(|p| (p.0, p.2)).chain(pts.iter().rev().map(|p| (p.0, p.3))).collect();
            chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15)))).map_err(e)?;
        }
        draw_line!(chart, &pts, color, entry.marker.unwrap_or(0), e);
    }
    for (_, y) in &c.hlines {
        let y = tr(*y, log_y);
        chart.draw_series(DashedLineSeries::new(vec![(x0, y), (x1, y)], 8, 5, BLACK.stroke_width(2))).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Three significant digits with a k/M/G suffix (tick labels of log axes).
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    // Three significant digits, also below 1 (0.0003, not 0).
    let digits = if x == 0.0 { 0 } else { (2 - x.abs().log10().floor() as i32).max(0) as usize };
    format!("{}{suffix}", trim(format!("{x:.digits$}")))
}

/// The image's width: the plot's [`WIDTH`] and the legend panel right of it.
pub fn image_width(c: &Chart) -> u32 {
    WIDTH + legend_width(&entries(c))
}

/// Writes `stem.png` and `stem.svg` under `dir`.
pub fn render(c: &Chart, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir)?;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let size = (image_width(c), HEIGHT);
    draw(BitMapBackend::new(&png, size).into_drawing_area(), c)?;
    draw(SVGBackend::new(&svg, size).into_drawing_area(), c)?;
    Ok(vec![png, svg])
}

/// Groups (key, x, y) rows into lines of (x, mean, 95% interval of the mean) per key: Student t
/// over the seeds at that x; with one seed the band is the point itself.
pub(crate) fn aggregate(keys: &[String], xs: &[f64], ys: &[f64]) -> Vec<Line> {
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
                    let i = crate::paired::t_interval(&v);
                    let (lo, hi) = if v.len() < 2 { (i.mean, i.mean) } else { (i.lo, i.hi) };
                    (f64::from_bits(x), i.mean, lo, hi)
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_method_has_its_own_colour() {
        let colours: std::collections::BTreeSet<(u8, u8, u8)> =
            cqr_methods::method_names().iter().map(|m| color_of(m)).map(|c| (c.0, c.1, c.2)).collect();
        assert_eq!(colours.len(), cqr_methods::method_names().len());
    }

    #[test]
    fn compact_labels() {
        assert_eq!(compact(5011.723), "5.01k");
        assert_eq!(compact(158489.3), "158k");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(compact(0.5), "0.5");
        assert_eq!(compact(0.0003), "0.0003", "a learning rate tick is not 0");
        assert_eq!(compact(0.00123456), "0.00123");
        assert_eq!(compact(0.0), "0");
    }

    fn log_x_chart(lines: Vec<Line>, hlines: Vec<(String, f64)>) -> Chart {
        Chart { title: "t".into(), x_label: "x".into(), y_label: "y".into(), log_x: true, log_y: false, lines, hlines }
    }

    #[test]
    fn renders_png_and_svg_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let chart = log_x_chart(
            vec![Line { label: "a".into(), points: vec![(100.0, 0.5, 0.45, 0.55), (1000.0, 0.4, 0.39, 0.42)] }],
            vec![("dense".into(), 0.38)],
        );
        let files = render(&chart, dir.path(), "c").unwrap();
        let png = std::fs::read(&files[0]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // IHDR: width and height as big-endian u32 at bytes 16..24.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), image_width(&chart));
        assert!(image_width(&chart) > WIDTH, "the legend panel adds width");
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), HEIGHT);
        assert!(png.len() > 5_000);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        let w = image_width(&chart);
        assert!(svg.contains(&format!("width=\"{w}\"")) && svg.contains("<text"), "svg lacks size or text");
    }

    #[test]
    fn the_legend_sits_beside_the_plot_not_over_it() {
        // Two long labels and a reference line; the old legend box (black border, black text)
        // sat in the plot's upper right.
        let flat = |y: f64| vec![(100.0, y, y, y), (1000.0, y, y, y)];
        let chart = log_x_chart(
            vec![
                Line { label: "hashing-a-rather-long-label".into(), points: flat(0.40) },
                Line { label: "cqr-another-long-label".into(), points: flat(0.41) },
            ],
            vec![("dense".into(), 0.39)],
        );
        let w = image_width(&chart);
        let mut buf = vec![0u8; (w * HEIGHT * 3) as usize];
        draw(BitMapBackend::with_buffer(&mut buf, (w, HEIGHT)).into_drawing_area(), &chart).unwrap();
        let px = |x: u32, y: u32| -> [u8; 3] { buf[((y * w + x) * 3) as usize..][..3].try_into().unwrap() };
        for label in ["hashing", "cqr"] {
            let c = color_of(label);
            let in_panel = (WIDTH..w).any(|x| (0..HEIGHT).any(|y| px(x, y) == [c.0, c.1, c.2]));
            assert!(in_panel, "{label}'s legend sample is not in the panel right of the plot");
        }
        let dark = (WIDTH..w)
            .flat_map(|x| (0..HEIGHT).map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y).iter().all(|&v| v < 60));
        assert!(dark.count() > 100, "no label text in the panel");
        // The plot's upper right holds only the mesh: no black border or text.
        let dark_in_plot = (600..WIDTH - 20)
            .flat_map(|x| (60..220).map(move |y| (x, y)))
            .filter(|&(x, y)| px(x, y).iter().all(|&v| v < 60));
        assert_eq!(dark_in_plot.count(), 0, "something dark (a legend) is drawn over the plot's upper right");
    }
}
