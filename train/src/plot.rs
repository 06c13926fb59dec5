//! Plots with axes, ticks, axis labels, a title and a legend, drawn with `plotters` and saved as
//! PNG.
//!
//! A [`Figure`] is a row of [`Panel`]s; a panel has an x and a y [`Axis`] (linear, log or named
//! categories) and the [`Mark`]s drawn in it: lines, bands, points and bars with error bars. One
//! renderer draws them all. The helpers build what the project plots:
//!
//! - [`smoothed_lines`]: series faint and their running means strong (loss curves, several runs
//!   on one log-scale panel);
//! - [`interval_line`]: a mean with its 95% interval as a band against a swept number (a study's
//!   sweep over seeds, see [`crate::eval::interval`]);
//! - [`Panel::grouped_bars`]: variants side by side per metric, each bar a mean with its 95%
//!   interval as an error bar;
//! - [`Mark::points`]: scatter panels (the toy demo).
//!
//! [`Figure::save`] writes the PNG atomically. Bad data never panics: points that are not finite
//! (or not positive on a log axis) are left out, lines are clipped to the axes' ranges.
//!
//! Text needs a TrueType font, read at run time (the repository ships none): the file named by
//! `$DIFFTUNE_FONT`, else DejaVu Sans where Debian's `fonts-dejavu-core` puts it (installed by
//! `scripts/setup.sh`). Without a usable font a plot is still drawn, with axes, ticks, grid and
//! marks but no text, and a note says so once on stderr: a missing font should not fail a run
//! whose picture is a by-product.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, RGBAColor};
use tensor::{Error, Result};

use crate::eval::interval::Interval;
use crate::files::write_atomic;

/// An RGB colour.
pub type Rgb = (u8, u8, u8);

/// The colours given to series in turn ([`colour`]).
pub const PALETTE: [Rgb; 8] = [
    (31, 90, 200),
    (210, 50, 40),
    (40, 150, 70),
    (140, 70, 170),
    (230, 130, 20),
    (20, 150, 160),
    (140, 90, 50),
    (100, 100, 100),
];

/// The `i`-th colour of [`PALETTE`], cycling.
pub fn colour(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

/// The environment variable naming the TrueType font for the plots' text.
pub const FONT_ENV: &str = "DIFFTUNE_FONT";

/// Where the font is looked for when `$DIFFTUNE_FONT` is not set: Debian and Ubuntu
/// (`fonts-dejavu-core`), Fedora, Arch.
pub const DEFAULT_FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// How an axis maps values to positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values.
    #[default]
    Linear,
    /// Evenly spaced powers of ten; values that are not positive are left out.
    Log,
}

/// One axis of a panel.
#[derive(Clone, Debug, Default)]
pub struct Axis {
    /// The axis label (name and unit).
    pub label: String,
    /// Linear or log.
    pub scale: Scale,
    /// The range shown; `None` fits the data (with a small margin; a bound at 0 stays at 0).
    pub range: Option<(f64, f64)>,
    /// If not empty, the axis is categorical: these names stand at positions 0, 1, 2, ...
    pub categories: Vec<String>,
}

impl Axis {
    /// A linear axis fitted to the data.
    pub fn new(label: &str) -> Axis {
        Axis {
            label: label.to_string(),
            ..Default::default()
        }
    }

    /// The same axis on a log scale.
    pub fn log(mut self) -> Axis {
        self.scale = Scale::Log;
        self
    }

    /// The same axis showing `lo..hi`; marks outside are clipped.
    pub fn with_range(mut self, lo: f64, hi: f64) -> Axis {
        self.range = Some((lo, hi));
        self
    }
}

/// Something drawn in a panel, with its legend entry.
#[derive(Clone, Debug)]
pub struct Mark {
    /// The legend entry; `None` leaves the mark out of the legend.
    pub label: Option<String>,
    /// Its colour.
    pub colour: Rgb,
    /// What is drawn.
    pub shape: Shape,
}

/// The kinds of [`Mark`].
#[derive(Clone, Debug)]
pub enum Shape {
    /// A line through the points in order; a point that cannot be drawn breaks it.
    Line {
        /// `(x, y)` in data units.
        points: Vec<(f64, f64)>,
        /// Stroke width in pixels.
        width: u32,
        /// 1 opaque, 0 invisible.
        opacity: f64,
    },
    /// The area between a lower and an upper curve, translucent (an interval band). Its legend
    /// entry shows the band with a line through it: the mean line drawn over it.
    Band {
        /// `(x, lower, upper)` in data units.
        points: Vec<(f64, f64, f64)>,
    },
    /// Filled circles.
    Points {
        /// `(x, y)` in data units.
        points: Vec<(f64, f64)>,
        /// Radius in pixels.
        radius: u32,
    },
    /// A bar from 0 (the bottom of a log axis) to `y` over `x.0..x.1`, with an optional error bar
    /// from `error.0` to `error.1` at its middle.
    Bar {
        /// Left and right edge.
        x: (f64, f64),
        /// The bar's height.
        y: f64,
        /// Lower and upper end of the error bar.
        error: Option<(f64, f64)>,
    },
}

impl Mark {
    /// A line of `width` pixels and `opacity` (0 to 1).
    pub fn line(colour: Rgb, points: Vec<(f64, f64)>, width: u32, opacity: f64) -> Mark {
        Mark {
            label: None,
            colour,
            shape: Shape::Line {
                points,
                width,
                opacity,
            },
        }
    }

    /// A translucent band between `(x, lower, upper)` points.
    pub fn band(colour: Rgb, points: Vec<(f64, f64, f64)>) -> Mark {
        Mark {
            label: None,
            colour,
            shape: Shape::Band { points },
        }
    }

    /// Filled circles of `radius` pixels.
    pub fn points(colour: Rgb, points: Vec<(f64, f64)>, radius: u32) -> Mark {
        Mark {
            label: None,
            colour,
            shape: Shape::Points { points, radius },
        }
    }

    /// A bar over `x` up to `y`, with an error bar over `error` if given.
    pub fn bar(colour: Rgb, x: (f64, f64), y: f64, error: Option<(f64, f64)>) -> Mark {
        Mark {
            label: None,
            colour,
            shape: Shape::Bar { x, y, error },
        }
    }

    /// The same mark with a legend entry.
    pub fn labelled(mut self, label: &str) -> Mark {
        self.label = Some(label.to_string());
        self
    }
}

/// Several labelled series, each in its colour of [`PALETTE`]: as given, thin and faint (a
/// light tint, so a dense noisy series reads as a pale band and does not add up to a dark one),
/// and as its trailing running mean over `window(len)` points, strong on top of all the faint
/// ones. The legend names the strong lines (`label (mean of 50)`). What loss curves are drawn
/// with, several runs on one plot.
pub fn smoothed_lines(
    series: &[(&str, Vec<(f64, f64)>)],
    window: impl Fn(usize) -> usize,
) -> Vec<Mark> {
    let tint = |c: u8| c + ((255 - c) as f64 * 0.65) as u8;
    let mut faint = Vec::new();
    let mut strong = Vec::new();
    for (i, (label, points)) in series.iter().enumerate() {
        let c = colour(i);
        faint.push(Mark::line(
            (tint(c.0), tint(c.1), tint(c.2)),
            points.clone(),
            1,
            1.0,
        ));
        let window = window(points.len()).clamp(1, points.len().max(1));
        // The mean of the last `window` points, or of all so far near the start.
        let mut sums = vec![0.0];
        for p in points {
            sums.push(sums[sums.len() - 1] + p.1);
        }
        let smooth = (0..points.len())
            .map(|j| {
                let from = (j + 1).saturating_sub(window);
                (
                    points[j].0,
                    (sums[j + 1] - sums[from]) / (j + 1 - from) as f64,
                )
            })
            .collect();
        let name = match window {
            1 => label.to_string(),
            w => format!("{label} (mean of {w})"),
        };
        strong.push(Mark::line(c, smooth, 2, 1.0).labelled(&name));
    }
    faint.extend(strong);
    faint
}

/// The means of `points` (`(x, interval)`, x in increasing order) as a line with dots, and their
/// 95% intervals as a band labelled `label`. Points without an interval (one seed) break the
/// band; a lone interval between them is drawn as an error bar.
pub fn interval_line(label: &str, colour: Rgb, points: &[(f64, Interval)]) -> Vec<Mark> {
    let means: Vec<(f64, f64)> = points.iter().map(|(x, i)| (*x, i.mean)).collect();
    let mut marks = Vec::new();
    let mut run: Vec<(f64, f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(f64, f64, f64)>, marks: &mut Vec<Mark>| {
        match run.len() {
            0 => {}
            1 => marks.push(Mark::line(
                colour,
                vec![(run[0].0, run[0].1), (run[0].0, run[0].2)],
                2,
                0.5,
            )),
            _ => marks.push(Mark::band(colour, std::mem::take(run))),
        }
        run.clear();
    };
    for (x, i) in points {
        match (i.lo(), i.hi()) {
            (Some(lo), Some(hi)) => run.push((*x, lo, hi)),
            _ => flush(&mut run, &mut marks),
        }
    }
    flush(&mut run, &mut marks);
    marks.push(Mark::line(colour, means.clone(), 2, 1.0));
    marks.push(Mark::points(colour, means, 3));
    // One legend entry: the band's glyph (a band with a line through it).
    let band = Mark::band(colour, vec![]).labelled(&format!("{label} (mean, 95% CI)"));
    marks.push(band);
    marks
}

/// Where the legend sits in a panel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Legend {
    /// The corner where the marks leave the most room.
    #[default]
    Best,
    /// Top right corner.
    UpperRight,
    /// Top left corner.
    UpperLeft,
    /// Bottom left corner.
    LowerLeft,
    /// Bottom right corner.
    LowerRight,
}

/// One plot: a title, two axes, the marks and where the legend goes.
#[derive(Clone, Debug)]
pub struct Panel {
    /// The title above the plot.
    pub title: String,
    /// The horizontal axis.
    pub x: Axis,
    /// The vertical axis.
    pub y: Axis,
    /// What is drawn, in order (later marks on top).
    pub marks: Vec<Mark>,
    /// The legend's corner (drawn when a mark has a label).
    pub legend: Legend,
}

impl Panel {
    /// An empty panel.
    pub fn new(title: &str, x: Axis, y: Axis) -> Panel {
        Panel {
            title: title.to_string(),
            x,
            y,
            marks: Vec::new(),
            legend: Legend::default(),
        }
    }

    /// The same panel with `marks` added.
    pub fn with(mut self, marks: impl IntoIterator<Item = Mark>) -> Panel {
        self.marks.extend(marks);
        self
    }

    /// Grouped bars: one group per name of `groups` (e.g. metrics) along x (labelled `x_label`),
    /// in each one bar per
    /// variant `(name, intervals)` (one interval per group): the mean, with the 95% interval as an
    /// error bar where it is defined. The groups share the y axis, so give them comparable scales
    /// (or one panel per metric). An error if a variant has not one interval per group.
    pub fn grouped_bars(
        title: &str,
        x_label: &str,
        y_label: &str,
        groups: &[&str],
        variants: &[(&str, &[Interval])],
    ) -> Result<Panel> {
        let slot = 0.8 / variants.len().max(1) as f64;
        let mut marks = Vec::new();
        for (v, (name, intervals)) in variants.iter().enumerate() {
            if intervals.len() != groups.len() {
                return Err(Error::msg(format!(
                    "plot `{title}`: variant `{name}` has {} values for {} groups",
                    intervals.len(),
                    groups.len()
                )));
            }
            for (g, i) in intervals.iter().enumerate() {
                let left = g as f64 - 0.4 + v as f64 * slot;
                let error = i.lo().zip(i.hi());
                let bar = Mark::bar(
                    colour(v),
                    (left + 0.05 * slot, left + 0.95 * slot),
                    i.mean,
                    error,
                );
                marks.push(if g == 0 { bar.labelled(name) } else { bar });
            }
        }
        let x = Axis {
            label: x_label.to_string(),
            categories: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        Ok(Panel::new(title, x, Axis::new(y_label)).with(marks))
    }
}

/// Panels side by side, each `panel_size` pixels, saved as one PNG.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The panels, left to right.
    pub panels: Vec<Panel>,
    /// Width and height of each panel in pixels.
    pub panel_size: (u32, u32),
}

impl Figure {
    /// The panels at 640 × 440 pixels each.
    pub fn new(panels: Vec<Panel>) -> Figure {
        Figure {
            panels,
            panel_size: (640, 440),
        }
    }

    /// The same figure with panels of `width` × `height` pixels.
    pub fn size(mut self, width: u32, height: u32) -> Figure {
        self.panel_size = (width, height);
        self
    }

    /// Renders the figure (with text if a font is found, see the module's doc) and writes it to
    /// `path` as PNG, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let png = self.render(text_available()).and_then(|image| image.png());
        let png = png.map_err(|msg| Error::Format {
            path: path.to_path_buf(),
            msg,
        })?;
        write_atomic(path, &png)
    }

    fn render(&self, text: bool) -> std::result::Result<Image, String> {
        let (w, h) = self.panel_size;
        let n = self.panels.len() as u32;
        if n == 0 {
            return Err("a figure without panels".into());
        }
        if !(160..=4000).contains(&w) || !(120..=4000).contains(&h) || n > 16 {
            return Err(format!(
                "{n} panels of {w} × {h} pixels: at most 16 panels of 160 to 4000 × 120 to 4000"
            ));
        }
        let mut image = Image {
            width: w * n,
            height: h,
            rgb: vec![255; (w * n * h * 3) as usize],
        };
        {
            let root = BitMapBackend::with_buffer(&mut image.rgb, (w * n, h)).into_drawing_area();
            let areas = root.split_evenly((1, self.panels.len()));
            for (panel, area) in self.panels.iter().zip(&areas) {
                draw_panel(panel, area, text)?;
            }
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(image)
    }
}

/// An RGB image, 3 bytes a pixel, row by row.
#[derive(Debug)]
struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    fn png(&self) -> std::result::Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .and_then(|mut w| w.write_image_data(&self.rgb))
            .map_err(|e| format!("PNG encoding: {e}"))?;
        Ok(bytes)
    }
}

/// Whether the plots can draw text: the font is loaded and registered on first use; if that
/// fails, a note on stderr says why, once.
fn text_available() -> bool {
    static TEXT: OnceLock<bool> = OnceLock::new();
    *TEXT.get_or_init(|| {
        let font = match std::env::var_os(FONT_ENV) {
            Some(path) => register_font(Path::new(&path)),
            None => DEFAULT_FONTS
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .map_or_else(
                    || {
                        Err(Error::msg(format!(
                            "no font found (looked for {})",
                            DEFAULT_FONTS.join(", ")
                        )))
                    },
                    register_font,
                ),
        };
        font.map_err(|e| {
            eprintln!(
                "note: plots are drawn without text: {e}. Install a TrueType font \
                 (Debian: fonts-dejavu-core, see scripts/setup.sh) or set {FONT_ENV} to one."
            )
        })
        .is_ok()
    })
}

/// Reads a TrueType/OpenType font and registers it as plotters' sans-serif. Its bytes are kept
/// for the rest of the process (plotters holds on to them).
fn register_font(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Vec::leak(bytes)).map_err(
        |_| Error::Format {
            path: PathBuf::from(path),
            msg: "not a TrueType or OpenType font".into(),
        },
    )
}

/// An axis as drawn: the range in plot units (log10 of the value on a log axis), the ticks and
/// their labels, and the fainter grid lines between them.
#[derive(Clone)]
struct Ticks {
    range: (f64, f64),
    bold: Vec<f64>,
    light: Vec<f64>,
    labels: Vec<String>,
}

impl Ticks {
    fn label(&self, v: f64) -> String {
        self.bold
            .iter()
            .position(|&b| b == v)
            .map(|i| self.labels[i].clone())
            .unwrap_or_default()
    }
}

/// plotters' view of the axis: linear in plot units, with our ticks as its key points.
impl Ranged for Ticks {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.0..self.range.1).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.0..self.range.1
    }
}

/// A value in plot units: log10 on a log axis; `None` if it cannot be drawn.
fn to_plot(scale: Scale, v: f64) -> Option<f64> {
    let p = match scale {
        Scale::Linear => v,
        Scale::Log => v.log10(),
    };
    p.is_finite().then_some(p)
}

impl Axis {
    /// The range and ticks of this axis for data `values` (plot units).
    fn ticks(
        &self,
        values: impl Iterator<Item = f64>,
        name: &str,
    ) -> std::result::Result<Ticks, String> {
        if !self.categories.is_empty() {
            let n = self.categories.len();
            return Ok(Ticks {
                range: (-0.5, n as f64 - 0.5),
                bold: (0..n).map(|i| i as f64).collect(),
                light: vec![],
                labels: self.categories.clone(),
            });
        }
        let range = match self.range {
            Some((lo, hi)) => match (to_plot(self.scale, lo), to_plot(self.scale, hi)) {
                (Some(a), Some(b)) if a < b => (a, b),
                _ => {
                    return Err(format!(
                        "{name} axis `{}`: range {lo}..{hi} is not an increasing range{}",
                        self.label,
                        if self.scale == Scale::Log {
                            " of positive numbers"
                        } else {
                            ""
                        }
                    ))
                }
            },
            None => fitted_range(values, self.scale),
        };
        if !(range.1 - range.0).is_finite() {
            return Err(format!(
                "{name} axis `{}`: values too large to plot",
                self.label
            ));
        }
        Ok(match self.scale {
            Scale::Linear => linear_ticks(range),
            Scale::Log => log_ticks(range),
        })
    }
}

/// The data's range padded by 4% on each side (a bound at exactly 0 is kept, so bars and
/// counts stand on the axis); a single value gets a range around it, no data `0..1`.
fn fitted_range(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if lo > hi {
        return (0.0, 1.0);
    }
    if lo == hi {
        let half = match scale {
            Scale::Log => 0.5,
            Scale::Linear => (0.1 * lo.abs()).max(0.5),
        };
        return (lo - half, hi + half);
    }
    let pad = 0.04 * (hi - lo);
    let keep = |v: f64| scale == Scale::Linear && v == 0.0;
    (
        if keep(lo) { lo } else { lo - pad },
        if keep(hi) { hi } else { hi + pad },
    )
}

/// Five to eight ticks at multiples of 1, 2 or 5 × 10^k, labelled with the decimals the step needs.
fn linear_ticks((lo, hi): (f64, f64)) -> Ticks {
    let step = nice_step((hi - lo) / 7.0);
    let bold = multiples(lo, hi, step);
    let light = multiples(lo, hi, step / 2.0);
    let big = bold.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let digits = -step.log10().floor();
    let labels = bold
        .iter()
        .map(|&v| {
            if !(1e-2..1e5).contains(&big) {
                if v == 0.0 {
                    return "0".to_string();
                }
                let d = (big.log10().floor() + digits).max(0.0) as usize;
                trim_zeros(&format!("{v:.d$e}"))
            } else {
                format!("{v:.*}", digits.max(0.0) as usize)
            }
        })
        .collect();
    Ticks {
        range: (lo, hi),
        bold,
        light,
        labels,
    }
}

/// The smallest of 1, 2, 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// The multiples of `step` in `lo..=hi` (at most 200).
fn multiples(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil();
    (0..200)
        .map(|i| (first + i as f64) * step + 0.0) // + 0.0 turns -0 into 0
        .take_while(|&v| v <= hi + 1e-9 * step)
        .collect()
}

/// Ticks of a log axis (plot units are log10): the powers of ten over four decades or more,
/// else 1, 2, 5 × 10^k when that gives three ticks, with 2..9 × 10^k as grid lines; over less
/// than that, linear ticks of the values, so a loss between 0.03 and 0.08 still has labelled
/// ticks.
fn log_ticks((lo, hi): (f64, f64)) -> Ticks {
    let in_range = |v: &f64| *v >= lo - 1e-9 && *v <= hi + 1e-9;
    let (first, last) = (lo.floor() as i64, hi.ceil() as i64);
    let times = |m: &'static [f64]| {
        (first..=last)
            .flat_map(move |k| m.iter().map(move |m| k as f64 + m.log10()))
            .filter(in_range)
            .collect::<Vec<f64>>()
    };
    let decades = times(&[1.0]);
    let minor = times(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let one_two_five = times(&[1.0, 2.0, 5.0]);
    let (bold, light) = if decades.len() >= 4 {
        let every = decades.len().div_ceil(8);
        let light = if every == 1 { minor } else { vec![] };
        (decades.into_iter().step_by(every).collect(), light)
    } else if one_two_five.len() >= 3 {
        (one_two_five, minor)
    } else {
        let values = linear_ticks((10f64.powf(lo), 10f64.powf(hi)));
        let logs = |v: &[f64]| v.iter().filter(|&&v| v > 0.0).map(|v| v.log10()).collect();
        (logs(&values.bold), logs(&values.light))
    };
    let labels = bold.iter().map(|&v| number(10f64.powf(v))).collect();
    Ticks {
        range: (lo, hi),
        bold,
        light,
        labels,
    }
}

/// A tick label of a log axis: up to four significant digits, in decimal notation from 0.001 to
/// 99,999, else as `1e-5`.
fn number(v: f64) -> String {
    let rounded: f64 = format!("{v:.3e}").parse().unwrap_or(v);
    if rounded == 0.0 || (1e-3..1e5).contains(&rounded.abs()) {
        let decimals = (3.0 - rounded.abs().log10().floor()).clamp(0.0, 6.0) as usize;
        trim_zeros(&format!("{rounded:.decimals$}"))
    } else {
        trim_zeros(&format!("{rounded:e}"))
    }
}

/// `1.50` as `1.5`, `2.0e-3` as `2e-3`: without the trailing zeros of the decimals.
fn trim_zeros(text: &str) -> String {
    let (digits, exponent) = match text.split_once('e') {
        Some((d, e)) => (d, format!("e{e}")),
        None => (text, String::new()),
    };
    let digits = match digits.contains('.') {
        true => digits.trim_end_matches('0').trim_end_matches('.'),
        false => digits,
    };
    format!("{digits}{exponent}")
}

/// A point in plot units, or `None` if either coordinate cannot be drawn.
fn point(panel: &Panel, (x, y): (f64, f64)) -> Option<(f64, f64)> {
    Some((to_plot(panel.x.scale, x)?, to_plot(panel.y.scale, y)?))
}

/// Where the marks are, in plot units: every point, band end, bar corner (with the bar's base
/// at 0 on a linear axis) and error-bar end, and `between` points along each line segment.
fn footprint(panel: &Panel, between: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut add = |p: (f64, f64)| out.extend(point(panel, p));
    for mark in &panel.marks {
        match &mark.shape {
            Shape::Line { points, .. } => {
                for w in points.windows(2) {
                    for k in 0..=between {
                        let f = k as f64 / (between + 1) as f64;
                        add((
                            w[0].0 + f * (w[1].0 - w[0].0),
                            w[0].1 + f * (w[1].1 - w[0].1),
                        ));
                    }
                }
                points.last().into_iter().for_each(|&p| add(p));
            }
            Shape::Points { points, .. } => points.iter().for_each(|&p| add(p)),
            Shape::Band { points } => points.iter().for_each(|&(x, lo, hi)| {
                add((x, lo));
                add((x, hi));
            }),
            Shape::Bar { x, y, error } => {
                for x in [x.0, x.1] {
                    add((x, *y));
                    if panel.y.scale == Scale::Linear {
                        add((x, 0.0));
                    }
                    if let Some((lo, hi)) = error {
                        add((x, *lo));
                        add((x, *hi));
                    }
                }
            }
        }
    }
    out
}

/// The corner of the legend: the one given, or for [`Legend::Best`] the first of upper right,
/// upper left, lower right, lower left that covers the fewest marks.
fn legend_corner(panel: &Panel, x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let index = match panel.legend {
        Legend::UpperRight => 0,
        Legend::UpperLeft => 1,
        Legend::LowerRight => 2,
        Legend::LowerLeft => 3,
        Legend::Best => {
            // The legend's box: about 45% of the width, a line of 7% of the height per entry.
            let entries = panel.marks.iter().filter(|m| m.label.is_some()).count();
            let (w, h) = (
                0.45 * (x.1 - x.0),
                (0.06 + 0.07 * entries as f64).min(0.9) * (y.1 - y.0),
            );
            let marks = footprint(panel, 16);
            let covered = |&(_, right, top): &(SeriesLabelPosition, bool, bool)| {
                let inside = |(px, py): &&(f64, f64)| {
                    (if right {
                        *px >= x.1 - w
                    } else {
                        *px <= x.0 + w
                    }) && (if top { *py >= y.1 - h } else { *py <= y.0 + h })
                };
                marks.iter().filter(inside).count()
            };
            (0..4).min_by_key(|&i| covered(&corners[i])).unwrap_or(0)
        }
    };
    corners[index].0.clone()
}

/// The pieces of a polyline (plot units) inside the rectangle `x` × `y` (Liang–Barsky clipping);
/// a point that cannot be drawn ends a piece.
fn clip_line(
    points: impl Iterator<Item = Option<(f64, f64)>>,
    x: (f64, f64),
    y: (f64, f64),
) -> Vec<Vec<(f64, f64)>> {
    fn flush(pieces: &mut Vec<Vec<(f64, f64)>>, current: &mut Vec<(f64, f64)>) {
        if current.len() > 1 {
            pieces.push(std::mem::take(current));
        }
        current.clear();
    }
    let (mut pieces, mut current, mut previous) = (Vec::new(), Vec::new(), None);
    for p in points {
        match previous.zip(p).and_then(|(a, b)| clip_segment(a, b, x, y)) {
            Some((start, end)) => {
                if current.last() != Some(&start) {
                    flush(&mut pieces, &mut current);
                    current.push(start);
                }
                current.push(end);
            }
            None => flush(&mut pieces, &mut current),
        }
        previous = p;
    }
    flush(&mut pieces, &mut current);
    pieces
}

/// The part of the segment `a`–`b` inside `x` × `y`, if any.
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    x: (f64, f64),
    y: (f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    // Each side: den · t ≤ num keeps the point inside.
    for (den, num) in [
        (-dx, a.0 - x.0),
        (dx, x.1 - a.0),
        (-dy, a.1 - y.0),
        (dy, y.1 - a.1),
    ] {
        if den == 0.0 {
            if num < 0.0 {
                return None;
            }
        } else if den < 0.0 {
            t0 = t0.max(num / den);
        } else {
            t1 = t1.min(num / den);
        }
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    (t0 <= t1).then(|| (at(t0), at(t1)))
}

type DrawResult = std::result::Result<(), String>;

/// Draws `panel` into `area`: title, axes with ticks and labels, the marks, the legend. Without
/// `text`, the text is drawn transparent (plotters then skips it without asking for a font) and
/// the legend is left out; the rest stays where it would be.
fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: bool,
) -> DrawResult {
    let err = |e: &dyn std::fmt::Display| format!("plot `{}`: {e}", panel.title);
    let (xs, ys): (Vec<f64>, Vec<f64>) = footprint(panel, 0).into_iter().unzip();
    let x = panel.x.ticks(xs.into_iter(), "x").map_err(|e| err(&e))?;
    let y = panel.y.ticks(ys.into_iter(), "y").map_err(|e| err(&e))?;
    let ink: RGBAColor = if text { BLACK.to_rgba() } else { TRANSPARENT };
    let font = |size: f64| TextStyle::from(("sans-serif", size).into_font()).color(&ink);

    // The title in a band of its own at the top (drawn by hand, not as plotters' caption, so the
    // axes stand in the same place with or without text).
    let title = font(20.0).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text(&panel.title, &title, (area.dim_in_pixel().0 as i32 / 2, 8))
        .map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_top(40)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x.clone(), y.clone())
        .map_err(|e| err(&e))?;
    let (fx, fy) = (|v: &f64| x.label(*v), |v: &f64| y.label(*v));
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style(font(14.0))
        .axis_desc_style(font(16.0))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(238, 238, 238))
        .axis_style(BLACK);
    if !panel.x.categories.is_empty() {
        mesh.disable_x_mesh();
    }
    mesh.draw().map_err(|e| err(&e))?;

    let (xr, yr) = (x.range, y.range);
    for mark in &panel.marks {
        let c = RGBColor(mark.colour.0, mark.colour.1, mark.colour.2);
        let drawn = match &mark.shape {
            Shape::Line {
                points,
                width,
                opacity,
            } => {
                let style = c.mix(*opacity).stroke_width(*width);
                let pieces = clip_line(points.iter().map(|&p| point(panel, p)), xr, yr);
                chart.draw_series(pieces.into_iter().map(|p| PathElement::new(p, style)))
            }
            Shape::Band { points } => {
                let clamp = |p: Option<(f64, f64)>| {
                    p.map(|(px, py)| (px.clamp(xr.0, xr.1), py.clamp(yr.0, yr.1)))
                };
                let upper = points
                    .iter()
                    .map(|&(px, _, hi)| clamp(point(panel, (px, hi))));
                let lower = points
                    .iter()
                    .rev()
                    .map(|&(px, lo, _)| clamp(point(panel, (px, lo))));
                let outline: Option<Vec<(f64, f64)>> = upper.chain(lower).collect();
                let polygon = outline.filter(|o| o.len() >= 3);
                chart.draw_series(polygon.map(|o| Polygon::new(o, c.mix(0.22).filled())))
            }
            Shape::Points { points, radius } => {
                let inside = |&(px, py): &(f64, f64)| {
                    (xr.0..=xr.1).contains(&px) && (yr.0..=yr.1).contains(&py)
                };
                let style = c.mix(0.8).filled();
                let centres = points
                    .iter()
                    .filter_map(|&p| point(panel, p))
                    .filter(inside);
                chart.draw_series(centres.map(|p| Circle::new(p, *radius, style)))
            }
            Shape::Bar {
                x: span,
                y: top,
                error,
            } => {
                let base = match panel.y.scale {
                    Scale::Linear => 0.0,
                    Scale::Log => 10f64.powf(yr.0),
                };
                let corners = point(panel, (span.0, base)).zip(point(panel, (span.1, *top)));
                let clamp = |(px, py): (f64, f64)| (px.clamp(xr.0, xr.1), py.clamp(yr.0, yr.1));
                let bar = corners
                    .map(|(a, b)| Rectangle::new([clamp(a), clamp(b)], c.mix(0.85).filled()));
                chart.draw_series(bar).map_err(|e| err(&e))?;
                // The error bar: a whisker with caps, in black over the bar. Its series carries
                // the bar's legend entry.
                let (mid, cap) = (0.5 * (span.0 + span.1), 0.25 * (span.1 - span.0));
                let whiskers = error.iter().flat_map(|&(lo, hi)| {
                    [
                        [(mid, lo), (mid, hi)],
                        [(mid - cap, lo), (mid + cap, lo)],
                        [(mid - cap, hi), (mid + cap, hi)],
                    ]
                });
                let pieces =
                    whiskers.flat_map(|w| clip_line(w.iter().map(|&p| point(panel, p)), xr, yr));
                let style = BLACK.stroke_width(2);
                chart.draw_series(pieces.map(|p| PathElement::new(p, style)))
            }
        }
        .map_err(|e| err(&e))?;
        if let (Some(label), true) = (&mark.label, text) {
            let solid = c.stroke_width(2);
            let anno = drawn.label(label.as_str());
            match mark.shape {
                Shape::Line { .. } => anno
                    .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], solid)),
                Shape::Band { .. } => anno.legend(move |(lx, ly)| {
                    EmptyElement::at((lx, ly))
                        + Rectangle::new([(0, -6), (20, 6)], c.mix(0.22).filled())
                        + PathElement::new(vec![(0, 0), (20, 0)], solid)
                }),
                Shape::Points { .. } => anno.legend(move |p| Circle::new(p, 4, c.filled())),
                Shape::Bar { .. } => anno.legend(move |(lx, ly)| {
                    Rectangle::new([(lx, ly - 6), (lx + 16, ly + 6)], c.mix(0.85).filled())
                }),
            };
        }
    }
    if text && panel.marks.iter().any(|m| m.label.is_some()) {
        let position = legend_corner(panel, x.range, y.range);
        chart
            .configure_series_labels()
            .position(position)
            .label_font(font(14.0))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(values: &[f64]) -> Interval {
        Interval::of(values).unwrap()
    }

    /// Pixels of `image` in the rectangle `x` × `y` close to `c`.
    fn count(image: &Image, x: std::ops::Range<u32>, y: std::ops::Range<u32>, c: Rgb) -> usize {
        let near = |a: u8, b: u8| a.abs_diff(b) <= 40;
        y.flat_map(|py| x.clone().map(move |px| (px, py)))
            .filter(|&(px, py)| {
                let i = 3 * (py * image.width + px) as usize;
                let p = &image.rgb[i..i + 3];
                near(p[0], c.0) && near(p[1], c.1) && near(p[2], c.2)
            })
            .count()
    }

    /// A figure of every kind of mark, fed values that cannot be drawn: NaN, infinities, zero and
    /// negative values on log axes, empty and one-point series, one-seed intervals, points and
    /// lines outside a fixed range.
    fn awkward_figure() -> Figure {
        let loss = vec![
            (0.0, 1.0),
            (1.0, f64::NAN),
            (2.0, 0.5),
            (3.0, 0.0),
            (4.0, -1.0),
        ];
        let noisy: Vec<(f64, f64)> = (0..500)
            .map(|i| (i as f64, 1.0 / (1.0 + i as f64) + 0.01 * (i % 7) as f64))
            .collect();
        let curves =
            Panel::new("loss", Axis::new("step"), Axis::new("loss").log()).with(smoothed_lines(
                &[
                    ("nan", loss),
                    ("noisy", noisy),
                    ("empty", vec![]),
                    ("one", vec![(2.0, f64::INFINITY)]),
                ],
                |n| n / 20,
            ));
        let sweep = [
            (0.1, interval(&[3.0, 4.0, 5.0])),
            (0.3, interval(&[2.0])),
            (1.0, interval(&[1.0, 1.5, 2.5])),
            (3.0, interval(&[0.5, 0.7])),
        ];
        let band = Panel::new("sweep", Axis::new("τ").log(), Axis::new("FD")).with(interval_line(
            "a",
            colour(0),
            &sweep,
        ));
        let bars = Panel::grouped_bars(
            "bars",
            "metric",
            "value",
            &["p", "r"],
            &[
                ("x", &[interval(&[0.5, 0.6]), interval(&[-0.2, 0.1])]),
                ("y", &[interval(&[0.7]), interval(&[0.3, 0.31, 0.29])]),
            ],
        )
        .unwrap();
        let fixed = Panel::new(
            "fixed range",
            Axis::new("x").with_range(-1.0, 1.0),
            Axis::new("y").with_range(-1.0, 1.0),
        )
        .with([
            Mark::points(colour(1), vec![(0.0, 0.0), (5.0, 0.0), (f64::NAN, 0.0)], 3),
            Mark::line(
                colour(2),
                vec![(-5.0, -5.0), (5.0, 5.0), (5.0, -5.0)],
                2,
                1.0,
            ),
            Mark::band(colour(3), vec![(-5.0, -5.0, 5.0), (0.0, 0.0, 0.5)]),
        ]);
        let empty = Panel::new("nothing", Axis::new("x"), Axis::new("y").log());
        Figure::new(vec![curves, band, bars, fixed, empty]).size(320, 240)
    }

    #[test]
    fn every_kind_of_mark_renders_from_awkward_values() {
        let dir = std::env::temp_dir().join(format!("difftune-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("awkward.png");
        awkward_figure().save(&path).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (5 * 320, 240));
        for text in [false, text_available()] {
            let image = awkward_figure().render(text).unwrap();
            // Each panel shows its marks' colours inside its plotting area.
            for (panel, c) in [
                (0, colour(1)),
                (1, colour(0)),
                (2, colour(1)),
                (3, colour(2)),
            ] {
                let left = 320 * panel;
                assert!(
                    count(&image, left + 90..left + 300, 40..180, c) > 20,
                    "panel {panel}"
                );
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_a_font_axes_ticks_and_marks_are_drawn_but_no_text() {
        let panel = Panel::new("A title", Axis::new("step"), Axis::new("loss")).with([Mark::line(
            colour(0),
            vec![(0.0, 1.0), (10.0, 2.0)],
            2,
            1.0,
        )
        .labelled("a")]);
        let figure = Figure::new(vec![panel]);
        let black = (0, 0, 0);
        let plain = figure.render(false).unwrap();
        // The y axis (a black column) with tick marks left of it, and the line.
        let axis = (0..640).find(|&x| count(&plain, x..x + 1, 100..300, black) > 150);
        let axis = axis.expect("a y axis");
        assert!(
            count(&plain, axis - 6..axis, 40..400, black) >= 5,
            "tick marks"
        );
        assert!(
            count(&plain, axis..640, 40..400, colour(0)) > 300,
            "the line"
        );
        // No title, no tick labels.
        assert_eq!(count(&plain, 0..640, 0..35, black), 0);
        assert_eq!(count(&plain, 0..axis - 6, 0..440, black), 0);
        if !text_available() {
            println!("skipped the part with text: no font (see plot's module doc)");
            return;
        }
        let text = figure.render(true).unwrap();
        assert!(count(&text, 0..640, 0..35, black) > 50, "the title");
        assert!(
            count(&text, 0..axis - 6, 0..440, black) > 50,
            "tick and axis labels"
        );
    }

    #[test]
    fn a_font_file_that_is_missing_or_not_a_font_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("difftune-font-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.ttf");
        let e = register_font(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.ttf"), "{e}");
        let bad = dir.join("bad.ttf");
        std::fs::write(&bad, b"not a font at all").unwrap();
        let e = register_font(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.ttf") && e.contains("not a TrueType"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_figures_and_ranges_are_errors() {
        let panel = |y: Axis| Panel::new("p", Axis::new("x"), y);
        let e = Figure::new(vec![]).render(false).unwrap_err();
        assert!(e.contains("without panels"), "{e}");
        let e = Figure::new(vec![panel(Axis::new("y"))])
            .size(10, 10)
            .render(false);
        assert!(e.unwrap_err().contains("10 × 10"));
        let e = Figure::new(vec![panel(Axis::new("y").log().with_range(0.0, 1.0))])
            .render(false)
            .unwrap_err();
        assert!(
            e.contains("y axis `y`: range 0..1") && e.contains("positive"),
            "{e}"
        );
        let huge = panel(Axis::new("y")).with([Mark::points(
            colour(0),
            vec![(0.0, -1e308), (1.0, 1e308)],
            1,
        )]);
        let e = Figure::new(vec![huge]).render(false).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = Panel::grouped_bars("b", "m", "v", &["p", "r"], &[("x", &[interval(&[1.0])])]);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("variant `x` has 1 values for 2 groups"));
        // The smallest figure allowed still draws.
        Figure::new(vec![awkward_figure().panels[0].clone()])
            .size(160, 120)
            .render(text_available())
            .unwrap();
    }

    #[test]
    fn ticks_are_round_numbers_on_linear_and_log_axes() {
        let labels = |t: Ticks| t.labels;
        assert_eq!(
            labels(linear_ticks((-1.6, 1.6))),
            ["-1.5", "-1.0", "-0.5", "0.0", "0.5", "1.0", "1.5"]
        );
        assert_eq!(
            labels(linear_ticks((0.0, 3000.0))),
            ["0", "500", "1000", "1500", "2000", "2500", "3000"]
        );
        assert_eq!(
            labels(linear_ticks((0.0, 0.003))),
            ["0", "5e-4", "1e-3", "1.5e-3", "2e-3", "2.5e-3", "3e-3"]
        );
        assert_eq!(
            labels(log_ticks((-4.2, 0.1))),
            ["1e-4", "0.001", "0.01", "0.1", "1"]
        );
        assert_eq!(
            labels(log_ticks((-1.5, 0.1))),
            ["0.05", "0.1", "0.2", "0.5", "1"]
        );
        // Less than a decade: ticks of the values themselves.
        let narrow = log_ticks((0.03f64.log10(), 0.08f64.log10()));
        assert_eq!(
            labels(narrow),
            ["0.03", "0.04", "0.05", "0.06", "0.07", "0.08"]
        );
    }

    #[test]
    fn fitted_ranges_pad_the_data_but_keep_zero() {
        assert_eq!(
            fitted_range([0.0, 10.0].into_iter(), Scale::Linear),
            (0.0, 10.4)
        );
        assert_eq!(
            fitted_range([2.0, 4.0].into_iter(), Scale::Linear),
            (1.92, 4.08)
        );
        assert_eq!(fitted_range([3.0].into_iter(), Scale::Linear), (2.5, 3.5));
        assert_eq!(fitted_range([-1.0].into_iter(), Scale::Log), (-1.5, -0.5));
        assert_eq!(fitted_range(std::iter::empty(), Scale::Linear), (0.0, 1.0));
    }

    #[test]
    fn lines_are_clipped_to_the_axes_and_broken_at_undrawable_points() {
        let (x, y) = ((0.0, 1.0), (0.0, 1.0));
        let pieces = clip_line(
            [
                Some((-1.0, 0.5)),
                Some((0.5, 0.5)),
                Some((0.5, 2.0)),
                None,
                Some((0.2, 0.2)),
                Some((0.4, 0.4)),
            ]
            .into_iter(),
            x,
            y,
        );
        assert_eq!(
            pieces,
            [
                vec![(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)],
                vec![(0.2, 0.2), (0.4, 0.4)]
            ]
        );
        assert_eq!(clip_segment((2.0, 0.0), (3.0, 1.0), x, y), None);
    }

    #[test]
    fn smoothed_lines_draw_all_faint_lines_under_the_running_means() {
        let marks = smoothed_lines(
            &[
                ("a", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]),
                ("b", vec![(0.0, 1.0)]),
            ],
            |_| 2,
        );
        let labels: Vec<_> = marks.iter().map(|m| m.label.as_deref()).collect();
        assert_eq!(labels, [None, None, Some("a (mean of 2)"), Some("b")]);
        let Shape::Line { points, .. } = &marks[2].shape else {
            panic!("a line")
        };
        assert_eq!(points, &[(0.0, 1.0), (1.0, 1.5), (2.0, 2.5), (3.0, 3.5)]);
    }

    #[test]
    fn intervals_without_a_width_break_the_band() {
        let sweep = [
            (1.0, interval(&[1.0, 2.0])),
            (2.0, interval(&[1.0])),
            (3.0, interval(&[1.0, 2.0])),
            (4.0, interval(&[2.0, 3.0])),
        ];
        let kinds: Vec<&str> = interval_line("a", colour(0), &sweep)
            .iter()
            .map(|m| match &m.shape {
                Shape::Line { points, .. } if points.len() == 2 => "whisker",
                Shape::Line { .. } => "line",
                Shape::Band { points } if points.is_empty() => "legend",
                Shape::Band { points } => {
                    assert_eq!(points.len(), 2);
                    "band"
                }
                Shape::Points { .. } => "points",
                Shape::Bar { .. } => "bar",
            })
            .collect();
        assert_eq!(kinds, ["whisker", "band", "line", "points", "legend"]);
    }

    #[test]
    fn the_legend_goes_where_the_marks_leave_room() {
        let panel = |points: Vec<(f64, f64)>| {
            Panel::new("p", Axis::new("x"), Axis::new("y")).with([Mark::line(
                colour(0),
                points,
                1,
                1.0,
            )
            .labelled("a")])
        };
        let falling = panel(vec![(0.0, 1.0), (1.0, 0.0)]);
        let rising = panel(vec![(0.0, 0.0), (1.0, 1.0)]);
        let at = |p: &Panel| legend_corner(p, (0.0, 1.0), (0.0, 1.0));
        assert_eq!(at(&falling), SeriesLabelPosition::UpperRight);
        assert_eq!(at(&rising), SeriesLabelPosition::UpperLeft);
        let fixed = Panel {
            legend: Legend::LowerLeft,
            ..rising
        };
        assert_eq!(at(&fixed), SeriesLabelPosition::LowerLeft);
    }
}
