//! Self-contained HTML reports with inline SVG line plots.
//!
//! * [`Plot`] / [`Series`] / [`Scale`] ([`svg`]): a line plot rendered as SVG text, with ticks,
//!   axis labels, a legend and linear or log axes.
//! * [`Report`] / [`Section`] / [`Figure`] / [`Table`] ([`html`]): a page of figures (each with
//!   its caption, the command and seed that produced it, and its data as a CSV file beside the
//!   page), tables and text blocks. The page has its CSS and SVG inline and no scripts or
//!   external links, so it opens anywhere without a network.
//!
//! Output is deterministic: the same report gives the same bytes.
//!
//! ```no_run
//! use skipgate::report::{Figure, Plot, Report, Scale, Section, Series};
//!
//! let loss = vec![(1.0, 0.9), (2.0, 0.3), (3.0, 0.05)];
//! let plot = Plot::new("training step", "loss (MSE)")
//!     .y_scale(Scale::auto(loss.iter().map(|p| p.1)))
//!     .series(Series::new("train", loss));
//! let figure = Figure::new("loss", "Training loss", plot)
//!     .caption("Mean squared error of each training batch.")
//!     .command("skipgate train --task sum --steps 3")
//!     .seed(0);
//! let report = Report::new("A run").section(Section::Figure(figure));
//! let page = report.write("runs/demo".as_ref())?; // runs/demo/report.html and runs/demo/loss.csv
//! # Ok::<(), skipgate::Error>(())
//! ```

pub mod html;
pub mod svg;

pub use html::{Figure, REPORT_FILE, Report, Section, Table, csv_table};
pub use svg::{Axis, Layout, Plot, Scale, Series, Tick};

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, safe inside HTML
/// or SVG text and attribute values.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

/// One CSV field: as it is, or in double quotes (inner quotes doubled) if it holds a comma,
/// a quote or a line break.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
