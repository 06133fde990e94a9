//! Line plots rendered as SVG text: axes with ticks and labels, a legend, one polyline per series.
//!
//! A [`Plot`] is data (axis labels, scales, series); [`Plot::layout`] decides the axis ranges,
//! the ticks and where the plot area sits, and [`Plot::to_svg`] draws it. Everything is computed
//! from the input alone and numbers are printed with fixed precision, so the same plot always
//! gives the same bytes.
//!
//! ```
//! use skipgate::report::{Plot, Scale, Series};
//!
//! let plot = Plot::new("training step", "loss (MSE)")
//!     .y_scale(Scale::Log)
//!     .series(Series::new("train", vec![(1.0, 0.5), (2.0, 0.05), (3.0, 0.004)]));
//! let svg = plot.to_svg();
//! assert!(svg.starts_with("<svg") && svg.contains("0.001") && svg.contains("train"));
//! ```

use std::fmt::Write;

use super::{csv_field, escape};

/// Width of every plot in pixels.
pub const WIDTH: f64 = 640.0;
/// Height of every plot in pixels.
pub const HEIGHT: f64 = 360.0;

/// Line colours, in the order series use them (Okabe–Ito, distinguishable with colour blindness).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999",
];

/// Series with at most this many drawable points get a marker on every point.
pub const MARKER_LIMIT: usize = 40;

const TICK_FONT: f64 = 12.0;
const LABEL_FONT: f64 = 13.0;
/// Width of a character as a fraction of the font size (a safe average for DejaVu Sans).
const CHAR_EM: f64 = 0.62;
const TICK_LEN: f64 = 5.0;
const LEGEND_ROW: f64 = 18.0;

/// How values map to positions along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Equal distances for equal differences.
    Linear,
    /// Equal distances for equal ratios (log₁₀); non-positive values are not drawn.
    Log,
}

impl Scale {
    /// [`Scale::Log`] when every finite value is positive and they span more than two decades
    /// (max / min > 100); [`Scale::Linear`] otherwise (also when a zero or negative value would
    /// vanish from a log axis).
    pub fn auto(values: impl IntoIterator<Item = f64>) -> Scale {
        let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            if v <= 0.0 {
                return Scale::Linear;
            }
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo.is_finite() && hi / lo > 100.0 {
            Scale::Log
        } else {
            Scale::Linear
        }
    }

    /// Whether `v` can be placed on an axis of this scale (finite, and positive on a log axis).
    pub fn drawable(self, v: f64) -> bool {
        v.is_finite() && (self == Scale::Linear || v > 0.0)
    }
}

/// One line of a plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry (and the `series` column of the CSV).
    pub name: String,
    /// `(x, y)` points in drawing order. Points with a non-finite coordinate, or a non-positive
    /// one on a log axis, are not drawn: the line breaks there.
    pub points: Vec<(f64, f64)>,
    /// Draw dashed (for reference lines such as a baseline or a threshold).
    pub dashed: bool,
}

impl Series {
    /// A solid line through `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            dashed: false,
        }
    }

    /// The same series drawn dashed.
    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }
}

/// A line plot: two labelled axes and any number of series.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// Text under the x axis, with the unit, e.g. `training step`.
    pub x_label: String,
    /// Text beside the y axis, with the unit, e.g. `loss (cross-entropy, nats)`. A log axis
    /// adds `, log scale` when drawn.
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

/// One tick of an axis: a value and its label (`None`: a minor tick, drawn shorter and unlabelled).
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    pub value: f64,
    pub label: Option<String>,
}

/// An axis as drawn: the value range, the ticks and the pixel positions of the range's ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub scale: Scale,
    /// Value at the start of the axis (left or bottom).
    pub lo: f64,
    /// Value at the end of the axis (right or top).
    pub hi: f64,
    pub ticks: Vec<Tick>,
    /// Pixel coordinate of `lo` (x: left edge; y: bottom edge of the plot area).
    pub px_lo: f64,
    /// Pixel coordinate of `hi`.
    pub px_hi: f64,
}

impl Axis {
    /// Pixel coordinate of `v`: linear interpolation between `px_lo` and `px_hi` of `v` (linear
    /// scale) or of log₁₀ `v` (log scale). `None` if `v` cannot be drawn on this axis.
    pub fn to_px(&self, v: f64) -> Option<f64> {
        if !self.scale.drawable(v) {
            return None;
        }
        let f = |t: f64| match self.scale {
            Scale::Linear => t,
            Scale::Log => t.log10(),
        };
        let frac = (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo));
        Some(self.px_lo + frac * (self.px_hi - self.px_lo))
    }
}

/// Where everything of a plot goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub x: Axis,
    pub y: Axis,
    /// Legend entries: series index and the position of the start of its swatch (the text's
    /// baseline is 4 px below).
    pub legend: Vec<(usize, f64, f64)>,
    /// Whether no point of any series can be drawn.
    pub empty: bool,
}

impl Plot {
    /// An empty plot with linear axes.
    pub fn new(x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Plot {
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            series: Vec::new(),
        }
    }

    pub fn x_scale(mut self, scale: Scale) -> Self {
        self.x_scale = scale;
        self
    }

    pub fn y_scale(mut self, scale: Scale) -> Self {
        self.y_scale = scale;
        self
    }

    /// Adds a series (it takes the next colour of [`PALETTE`]).
    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// The points that can be drawn, over all series.
    fn drawable_points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(x, y)| self.x_scale.drawable(x) && self.y_scale.drawable(y))
    }

    /// The axis ranges (data range widened to whole ticks), the ticks, the plot area (margins
    /// sized for the tick labels and the legend) and the legend positions.
    pub fn layout(&self) -> Layout {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (x, y) in self.drawable_points() {
            xs.push(x);
            ys.push(y);
        }
        let empty = xs.is_empty();
        let (xlo, xhi, xticks) = ticks(self.x_scale, &xs);
        let (ylo, yhi, yticks) = ticks(self.y_scale, &ys);

        let label_w = |t: &Tick| t.label.as_ref().map_or(0.0, |l| text_width(l, TICK_FONT));
        let y_tick_w = yticks.iter().map(label_w).fold(0.0, f64::max);
        let left = (26.0 + y_tick_w + 4.0 + TICK_LEN).round();
        let last_x = xticks.iter().rev().find(|t| t.label.is_some());
        let right = last_x
            .map_or(16.0, |t| (label_w(t) / 2.0 + 6.0).max(16.0))
            .round();

        // The legend runs in rows above the plot area, wrapping at its width.
        let mut legend = Vec::new();
        let (mut lx, mut row) = (left, 0usize);
        for (i, s) in self.series.iter().enumerate() {
            if s.name.is_empty() {
                continue;
            }
            let w = 28.0 + text_width(&s.name, TICK_FONT);
            if lx > left && lx + w > WIDTH - right {
                lx = left;
                row += 1;
            }
            legend.push((i, lx, 14.0 + row as f64 * LEGEND_ROW));
            lx += w + 18.0;
        }
        let top = if legend.is_empty() {
            14.0
        } else {
            14.0 + (row + 1) as f64 * LEGEND_ROW
        };
        let bottom = HEIGHT - 48.0;
        Layout {
            x: Axis {
                scale: self.x_scale,
                lo: xlo,
                hi: xhi,
                ticks: xticks,
                px_lo: left,
                px_hi: WIDTH - right,
            },
            y: Axis {
                scale: self.y_scale,
                lo: ylo,
                hi: yhi,
                ticks: yticks,
                px_lo: bottom,
                px_hi: top,
            },
            legend,
            empty,
        }
    }

    /// The plot as an SVG element of [`WIDTH`]×[`HEIGHT`]: white background, grid lines at the
    /// labelled ticks, a frame around the plot area, tick marks and labels, the axis labels (the
    /// y label rotated), one polyline per series (broken where a point cannot be drawn), circle
    /// markers on solid series of at most [`MARKER_LIMIT`] points and on isolated points, the
    /// legend above the plot area, and
    /// "no data" in the middle when nothing can be drawn.
    pub fn to_svg(&self) -> String {
        let l = self.layout();
        let (x0, x1, y0, y1) = (l.x.px_lo, l.x.px_hi, l.y.px_lo, l.y.px_hi);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"DejaVu Sans, Verdana, sans-serif\" \
             font-size=\"{TICK_FONT}\" role=\"img\" aria-label=\"{} against {}\">",
            escape(&self.y_label),
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
        );

        // Grid and ticks.
        let mut grid = String::new();
        let mut marks = String::new();
        let mut labels = String::new();
        for t in &l.x.ticks {
            let Some(px) = l.x.to_px(t.value) else {
                continue;
            };
            let len = if t.label.is_some() { TICK_LEN } else { 3.0 };
            if let Some(text) = &t.label {
                let _ = write!(grid, "M{px:.1} {y1:.1}V{y0:.1}");
                let _ = writeln!(
                    labels,
                    "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    y0 + TICK_LEN + 15.0,
                    escape(text)
                );
            }
            let _ = write!(marks, "M{px:.1} {y0:.1}v{len}");
        }
        for t in &l.y.ticks {
            let Some(py) = l.y.to_px(t.value) else {
                continue;
            };
            let len = if t.label.is_some() { TICK_LEN } else { 3.0 };
            if let Some(text) = &t.label {
                let _ = write!(grid, "M{x0:.1} {py:.1}H{x1:.1}");
                let _ = writeln!(
                    labels,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                    x0 - TICK_LEN - 4.0,
                    py + 4.0,
                    escape(text)
                );
            }
            let _ = write!(marks, "M{x0:.1} {py:.1}h-{len}");
        }
        let _ = writeln!(
            s,
            "<path d=\"{grid}\" stroke=\"#e3e3e3\" stroke-width=\"1\" fill=\"none\"/>"
        );
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#444444\"/>",
            x1 - x0,
            y0 - y1
        );
        let _ = writeln!(s, "<path d=\"{marks}\" stroke=\"#444444\" fill=\"none\"/>");
        let _ = write!(s, "<g fill=\"#222222\">\n{labels}</g>\n");

        // Axis labels: shrunk if longer than the side they label.
        let x_label = self.x_label.clone();
        let y_label = match self.y_scale {
            Scale::Log => format!("{}, log scale", self.y_label),
            Scale::Linear => self.y_label.clone(),
        };
        let x_label = match self.x_scale {
            Scale::Log => format!("{x_label}, log scale"),
            Scale::Linear => x_label,
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"{:.1}\">{}</text>",
            (x0 + x1) / 2.0,
            HEIGHT - 10.0,
            fit_font(&x_label, x1 - x0),
            escape(&x_label)
        );
        let ym = (y0 + y1) / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"18\" y=\"{ym:.1}\" transform=\"rotate(-90 18 {ym:.1})\" text-anchor=\"middle\" font-size=\"{:.1}\">{}</text>",
            fit_font(&y_label, y0 - y1),
            escape(&y_label)
        );

        // Series.
        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let dash = if series.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for &(x, y) in &series.points {
                match (l.x.to_px(x), l.y.to_px(y)) {
                    (Some(px), Some(py)) => segments.last_mut().expect("one").push((px, py)),
                    _ if segments.last().is_some_and(|seg| !seg.is_empty()) => {
                        segments.push(Vec::new())
                    }
                    _ => {}
                }
            }
            let n: usize = segments.iter().map(Vec::len).sum();
            let _ = writeln!(
                s,
                "<g class=\"series\" data-name=\"{}\">",
                escape(&series.name)
            );
            for seg in segments.iter().filter(|seg| seg.len() > 1) {
                let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"{dash}/>",
                    pts.join(" ")
                );
            }
            // A lone point would be invisible without a marker; reference lines get none.
            for seg in &segments {
                if (n <= MARKER_LIMIT && !series.dashed) || seg.len() == 1 {
                    for (x, y) in seg {
                        let _ = writeln!(
                            s,
                            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"/>"
                        );
                    }
                }
            }
            s.push_str("</g>\n");
        }

        // Legend.
        for &(i, lx, ly) in &l.legend {
            let series = &self.series[i];
            let colour = PALETTE[i % PALETTE.len()];
            let dash = if series.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>",
                lx + 22.0
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                lx + 28.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        if l.empty {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#888888\">no data</text>",
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// The series as CSV: a header `series,<x label>,<y label>` and one row `name,x,y` per point
    /// (every point, drawable or not), numbers in Rust's shortest round-trip form.
    pub fn to_csv(&self) -> String {
        let mut s = format!(
            "series,{},{}\n",
            csv_field(&self.x_label),
            csv_field(&self.y_label)
        );
        for series in &self.series {
            let name = csv_field(&series.name);
            for (x, y) in &series.points {
                let _ = writeln!(s, "{name},{x},{y}");
            }
        }
        s
    }
}

/// Estimated width of `text` in pixels at `size` px.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * CHAR_EM * size
}

/// The label font size, reduced (down to 9 px) when the label would be longer than `space`.
fn fit_font(text: &str, space: f64) -> f64 {
    let w = text_width(text, LABEL_FONT);
    if w <= space {
        LABEL_FONT
    } else {
        (LABEL_FONT * space / w).max(9.0)
    }
}

/// `10^k`, correctly rounded.
fn pow10(k: i32) -> f64 {
    format!("1e{k}").parse().expect("a valid float literal")
}

/// `n · 10^e`, correctly rounded for the small integers `n` of tick positions.
fn scaled(n: f64, e: i32) -> f64 {
    if e >= 0 { n * pow10(e) } else { n / pow10(-e) }
}

/// Axis range and ticks for `values` on `scale` (the values must be drawable on it): see
/// [`linear_ticks`] and [`log_ticks`]. No values: 0..1 (linear) or 1..10 (log).
fn ticks(scale: Scale, values: &[f64]) -> (f64, f64, Vec<Tick>) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match (scale, values.is_empty()) {
        (Scale::Linear, true) => linear_ticks(0.0, 1.0),
        (Scale::Log, true) => log_ticks(1.0, 10.0),
        (Scale::Linear, false) => linear_ticks(lo, hi),
        (Scale::Log, false) => log_ticks(lo, hi),
    }
}

/// "Nice" linear ticks covering `lo..=hi`: the step is the smallest of 1, 2, 5 × 10^k that is at
/// least a fifth of the range, and the range is widened to whole steps. Returns the widened
/// range and the ticks, labelled with as many decimals as the step needs (`0.0, 0.2, …, 1.0`),
/// or in exponent form (`0`, `2.5e-4`, …) when every value is below 0.001, some value is 10⁵
/// or more, or the step needs more than 6 decimals. An empty
/// range (`lo == hi`) is widened by 10 % of the value (±1 around zero) first.
pub fn linear_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<Tick>) {
    let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / 5.0;
    if !raw.is_finite() || raw <= 0.0 {
        // Beyond what f64 can subdivide: just the two ends.
        let tick = |v: f64| Tick {
            value: v,
            label: Some(format!("{v:.1e}")),
        };
        return (lo, hi, vec![tick(lo), tick(hi)]);
    }
    let mut e = raw.log10().floor() as i32;
    let f = raw / pow10(e);
    let mult = if f <= 1.0 + 1e-9 {
        1.0
    } else if f <= 2.0 + 1e-9 {
        2.0
    } else if f <= 5.0 + 1e-9 {
        5.0
    } else {
        e += 1;
        1.0
    };
    let step = scaled(mult, e);
    let k0 = (lo / step + 1e-9).floor();
    let k1 = (hi / step - 1e-9).ceil();
    let values: Vec<f64> = (0..=((k1 - k0) as usize).min(100))
        .map(|i| {
            let v = scaled((k0 + i as f64) * mult, e);
            if v == 0.0 { 0.0 } else { v } // no "-0"
        })
        .collect();
    let max_abs = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let ticks = values
        .iter()
        .map(|&v| {
            let label = if !(1e-3..1e5).contains(&max_abs) || e < -6 {
                let digits = (max_abs.log10().floor() as i32 - e).clamp(0, 4) as usize;
                if v == 0.0 {
                    "0".to_string()
                } else {
                    format!("{v:.digits$e}")
                }
            } else {
                let decimals = (-e).max(0) as usize;
                format!("{v:.decimals$}")
            };
            Tick {
                value: v,
                label: Some(label),
            }
        })
        .collect();
    (values[0], values[values.len() - 1], ticks)
}

/// Log ticks covering `lo..=hi` (both positive): the range is widened to whole decades (at least
/// one; a value that is itself a power of ten gets a decade on each side), every decade is a
/// tick, labelled `0.001` … `10000` or `1e-5`, `1e5` beyond; over more than 8 decades only every
/// n-th decade is labelled (the others are minor ticks); over at most 3 decades, 2·10^k … 9·10^k
/// are minor ticks too.
pub fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<Tick>) {
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let mut k0 = lo.log10().floor() as i32;
    let mut k1 = hi.log10().ceil() as i32;
    // log10 may miss an exact power of ten by one ulp.
    if pow10(k0 + 1) <= lo {
        k0 += 1;
    }
    if pow10(k1 - 1) >= hi {
        k1 -= 1;
    }
    if k1 <= k0 {
        k0 -= 1;
        k1 += 1;
    }
    let decades = k1 - k0;
    let every = (decades + 7) / 8;
    let mut ticks = Vec::new();
    for k in k0..=k1 {
        let labelled = k.rem_euclid(every) == 0;
        ticks.push(Tick {
            value: pow10(k),
            label: labelled.then(|| decade_label(k)),
        });
        if decades <= 3 && k < k1 {
            for m in 2..=9 {
                ticks.push(Tick {
                    value: scaled(m as f64, k),
                    label: None,
                });
            }
        }
    }
    (pow10(k0), pow10(k1), ticks)
}

/// `10^k` as `0.001` … `10000`, or `1e-5`, `1e5` beyond.
fn decade_label(k: i32) -> String {
    match k {
        -3..=-1 => format!("0.{}1", "0".repeat((-k - 1) as usize)),
        0..=4 => format!("1{}", "0".repeat(k as usize)),
        _ => format!("1e{k}"),
    }
}
