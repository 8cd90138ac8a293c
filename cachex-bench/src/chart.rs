//! Hit-ratio charts with `plotters`: bars (one group of bars per capacity,
//! one bar per contender) and curves (hit ratio against capacity, one line
//! per contender), with a legend at the side.
//!
//! Text is rendered with `ab_glyph` from a TrueType font found on the system
//! (DejaVu Sans or Liberation Sans, or the file named by
//! `CACHEX_BENCH_FONT`), so building needs no C font libraries.

use std::path::Path;
use std::sync::OnceLock;

use clap::ValueEnum;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 560;
const LEGEND_WIDTH: u32 = 150;
const FONT: &str = "sans-serif";

/// Image format of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChartFormat {
    /// A PNG bitmap.
    Png,
    /// An SVG drawing.
    Svg,
}

impl ChartFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ChartFormat::Png => "png",
            ChartFormat::Svg => "svg",
        }
    }
}

/// Font files tried, in order, after `CACHEX_BENCH_FONT`.
const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font for [`FONT`] once.
fn ensure_font() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let env = std::env::var("CACHEX_BENCH_FONT").ok();
            let candidates = env.iter().map(String::as_str).chain(FONT_CANDIDATES);
            for path in candidates {
                if let Ok(bytes) = std::fs::read(path) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                        return Ok(());
                    }
                }
            }
            Err("no TrueType font found (set CACHEX_BENCH_FONT to a .ttf file)".to_string())
        })
        .clone()
}

/// Loads the font and creates `path`'s directory.
fn prepare(path: &Path) -> Result<(), String> {
    ensure_font()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Runs `$draw` with `$root` bound to a drawing area of `$path` in
/// `$format` (a macro: the two backends are different types).
macro_rules! on_backend {
    ($path:expr, $format:expr, |$root:ident| $draw:expr) => {
        match $format {
            ChartFormat::Png => {
                let $root = BitMapBackend::new($path, (WIDTH, HEIGHT)).into_drawing_area();
                $draw
            }
            ChartFormat::Svg => {
                let $root = SVGBackend::new($path, (WIDTH, HEIGHT)).into_drawing_area();
                $draw
            }
        }
    };
}

/// Colour of a contender's bars: cachex stands out, references are grey.
fn colour(name: &str, index: usize) -> RGBColor {
    match name {
        "cachex" => RGBColor(214, 69, 65),
        "moka" => RGBColor(52, 114, 186),
        "quick_cache" => RGBColor(72, 160, 90),
        "lru" => RGBColor(160, 160, 160),
        "belady" => RGBColor(60, 60, 60),
        "ideal" => RGBColor(140, 95, 180),
        _ => {
            let c = Palette99::pick(index).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// Draws a grouped bar chart of percentages to `path`: `groups` label the
/// x-axis groups, each series gives one value per group (NaN: no bar).
pub fn bars(
    path: &Path,
    format: ChartFormat,
    title: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), String> {
    prepare(path)?;
    on_backend!(path, format, |root| draw(&root, title, groups, series))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    // Headroom for the value labels, in steps of 10, at most 100.
    let y_max = ((top + 8.0) / 10.0).ceil().clamp(1.0, 10.0) * 10.0;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(52)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("hit ratio %")
        .y_label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;

    let k = series.len().max(1) as f64;
    let slot = 0.84 / k;
    let value_style =
        TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (j, (name, values)) in series.iter().enumerate() {
        let fill = colour(name, j).filled();
        let bars = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| {
                let x0 = i as f64 + 0.08 + j as f64 * slot;
                Rectangle::new([(x0, 0.0), (x0 + slot * 0.88, v)], fill)
            });
        chart.draw_series(bars).map_err(err)?;
        let labels = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| {
                let x = i as f64 + 0.08 + (j as f64 + 0.44) * slot;
                Text::new(format!("{v:.1}"), (x, v), value_style.clone())
            });
        chart.draw_series(labels).map_err(err)?;
    }

    let group_style =
        TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, g) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        plot_area
            .draw(&Text::new(g.clone(), (x, y + 8), group_style.clone()))
            .map_err(err)?;
    }
    let (x_mid, y_axis) = chart.backend_coord(&(n / 2.0, 0.0));
    plot_area
        .draw(&Text::new(
            "cache capacity in entries (share of the trace's distinct keys)",
            (x_mid, y_axis + 30),
            TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
    let (_, y_top) = chart.backend_coord(&(0.0, y_max));
    let names = series.iter().map(|(name, _)| name.as_str());
    legend(&legend_area, y_top, names, (0, 16)).map_err(err)?;
    root.present().map_err(err)
}

/// Draws hit-ratio curves to `path`: for each series, points of (capacity
/// in entries, hit ratio in percent), on a logarithmic capacity axis.
pub fn curves(
    path: &Path,
    format: ChartFormat,
    title: &str,
    series: &[(String, Vec<(u64, f64)>)],
) -> Result<(), String> {
    prepare(path)?;
    on_backend!(path, format, |root| draw_curves(&root, title, series))
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[(String, Vec<(u64, f64)>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let x_min = points().map(|&(x, _)| x).min().unwrap_or(1).max(1);
    let x_max = points().map(|&(x, _)| x).max().unwrap_or(10).max(x_min + 1);
    let top = points()
        .map(|&(_, y)| y)
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    let y_max = ((top + 5.0) / 10.0).ceil().clamp(1.0, 10.0) * 10.0;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(52)
        .y_label_area_size(50)
        .build_cartesian_2d((x_min as f64..x_max as f64).log_scale(), 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("cache capacity in entries")
        .y_desc("hit ratio %")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;
    for (j, (name, values)) in series.iter().enumerate() {
        let style = colour(name, j).stroke_width(2);
        let line = values
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| (x as f64, y));
        chart
            .draw_series(LineSeries::new(line.clone(), style))
            .map_err(err)?;
        chart
            .draw_series(line.map(|p| Circle::new(p, 3, colour(name, j).filled())))
            .map_err(err)?;
    }
    let (_, y_top) = chart.backend_coord(&(x_min as f64, y_max));
    let names = series.iter().map(|(name, _)| name.as_str());
    legend(&legend_area, y_top, names, (6, 10)).map_err(err)?;
    root.present().map_err(err)
}

/// One legend line per series from `y_top` down: a swatch spanning
/// `swatch` (top and bottom offsets: a box for bars, a stroke for curves)
/// in the series' colour, then its name.
fn legend<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    y_top: i32,
    names: impl Iterator<Item = &'a str>,
    swatch: (i32, i32),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (j, name) in names.enumerate() {
        let y = y_top + 6 + 26 * j as i32;
        area.draw(&Rectangle::new(
            [(8, y + swatch.0), (26, y + swatch.1)],
            colour(name, j).filled(),
        ))?;
        area.draw(&Text::new(name.to_string(), (34, y + 1), (FONT, 16)))?;
    }
    Ok(())
}
