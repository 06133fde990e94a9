//! The HTML page: a title, paragraphs, then figures, tables and text blocks in order.
//!
//! The page holds its CSS and every SVG inline and has no scripts and no external URLs. Each
//! figure's data is written beside the page as `<id>.csv` and linked from its caption.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::svg::Plot;
use super::{csv_field, escape};
use crate::io::write_atomic;
use crate::{Error, Result};

/// File name of the page [`Report::write`] writes.
pub const REPORT_FILE: &str = "report.html";

const STYLE: &str = "\
body{font-family:'DejaVu Sans',Verdana,sans-serif;color:#222;background:#fff;margin:0}
main{max-width:860px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:1.5em;margin:0.4em 0}
h2{font-size:1.15em;margin:1.4em 0 0.4em}
p{line-height:1.45}
nav ol{margin:0.3em 0;padding-left:1.6em}
figure{margin:1.6em 0;padding:0 0 6px;border-bottom:1px solid #ddd}
figure h2{margin-top:0}
svg{display:block;max-width:100%;height:auto}
figcaption{font-size:0.9em;line-height:1.4}
figcaption p{margin:0.4em 0}
.repro{color:#555}
code,pre{font-family:'DejaVu Sans Mono',monospace;font-size:0.9em}
code{overflow-wrap:anywhere}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}
table{border-collapse:collapse;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td{overflow-wrap:anywhere}
td:first-child{white-space:nowrap}
";

/// A plot with everything needed to read it and to make it again.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// HTML id and CSV file name (`<id>.csv`): letters, digits, `-` and `_`, unique in the report.
    pub id: String,
    /// Heading above the plot.
    pub title: String,
    /// What the figure shows (one or more sentences).
    pub caption: String,
    /// The command line that reproduces the data; empty: the caption says it was not recorded.
    pub command: String,
    /// Seed of the run that produced the data.
    pub seed: u64,
    pub plot: Plot,
    /// The CSV written as `<id>.csv`; `None`: [`Plot::to_csv`] of `plot`.
    pub csv: Option<String>,
}

impl Figure {
    /// A figure with an empty caption and command, seed 0 and the plot's own CSV.
    pub fn new(id: impl Into<String>, title: impl Into<String>, plot: Plot) -> Self {
        Figure {
            id: id.into(),
            title: title.into(),
            caption: String::new(),
            command: String::new(),
            seed: 0,
            plot,
            csv: None,
        }
    }

    pub fn caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = caption.into();
        self
    }

    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = command.into();
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Writes `csv` beside the page instead of the plot's series.
    pub fn csv(mut self, csv: impl Into<String>) -> Self {
        self.csv = Some(csv.into());
        self
    }

    /// The CSV file's content.
    pub fn csv_text(&self) -> String {
        self.csv.clone().unwrap_or_else(|| self.plot.to_csv())
    }

    /// `<figure id=…>`: the heading, the SVG, and a caption with the description, the command,
    /// the seed and a link to the CSV.
    fn to_html(&self) -> String {
        let command = if self.command.is_empty() {
            "not recorded (made through the library)".to_string()
        } else {
            format!("<code>{}</code>", escape(&self.command))
        };
        let id = escape(&self.id);
        format!(
            "<figure id=\"{id}\">\n<h2>{}</h2>\n{}<figcaption>\n<p>{}</p>\n\
             <p class=\"repro\">Command: {command}; seed {}. Data: <a href=\"{id}.csv\">{id}.csv</a></p>\n\
             </figcaption>\n</figure>\n",
            escape(&self.title),
            self.plot.to_svg(),
            escape(&self.caption),
            self.seed,
        )
    }
}

/// A table with a header row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Heading above the table.
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table without rows.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Table {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(mut self, cells: impl IntoIterator<Item = S>) -> Self {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    fn to_html(&self) -> String {
        let mut s = format!("<section>\n<h2>{}</h2>\n<table>\n<tr>", escape(&self.title));
        for h in &self.header {
            let _ = write!(s, "<th>{}</th>", escape(h));
        }
        s.push_str("</tr>\n");
        for row in &self.rows {
            s.push_str("<tr>");
            for cell in row {
                let _ = write!(s, "<td>{}</td>", escape(cell));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n</section>\n");
        s
    }
}

/// One part of a report, in page order.
#[derive(Clone, Debug, PartialEq)]
pub enum Section {
    /// A second-level heading.
    Heading(String),
    /// A paragraph of text.
    Paragraph(String),
    Figure(Figure),
    Table(Table),
    /// Preformatted text under a heading (e.g. a text sample), kept as it is.
    Text {
        title: String,
        text: String,
    },
}

/// A page of figures, tables and text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Page title and first heading.
    pub title: String,
    /// Paragraphs under the title.
    pub intro: Vec<String>,
    pub sections: Vec<Section>,
}

impl Report {
    /// An empty report.
    pub fn new(title: impl Into<String>) -> Self {
        Report {
            title: title.into(),
            ..Report::default()
        }
    }

    /// Adds a paragraph under the title.
    pub fn intro(mut self, paragraph: impl Into<String>) -> Self {
        self.intro.push(paragraph.into());
        self
    }

    /// Adds a section at the end.
    pub fn section(mut self, section: Section) -> Self {
        self.sections.push(section);
        self
    }

    /// The figures, in page order.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.sections.iter().filter_map(|s| match s {
            Section::Figure(f) => Some(f),
            _ => None,
        })
    }

    /// The page: inline CSS, the title, the intro, a list of links to the figures (when there
    /// are two or more), then every section. All text is escaped.
    pub fn to_html(&self) -> String {
        let title = escape(&self.title);
        let mut s = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n"
        );
        for p in &self.intro {
            let _ = writeln!(s, "<p>{}</p>", escape(p));
        }
        if self.figures().count() > 1 {
            s.push_str("<nav>\n<p>Figures:</p>\n<ol>\n");
            for f in self.figures() {
                let _ = writeln!(
                    s,
                    "<li><a href=\"#{}\">{}</a></li>",
                    escape(&f.id),
                    escape(&f.title)
                );
            }
            s.push_str("</ol>\n</nav>\n");
        }
        for section in &self.sections {
            match section {
                Section::Heading(h) => {
                    let _ = writeln!(s, "<h2>{}</h2>", escape(h));
                }
                Section::Paragraph(p) => {
                    let _ = writeln!(s, "<p>{}</p>", escape(p));
                }
                Section::Figure(f) => s.push_str(&f.to_html()),
                Section::Table(t) => s.push_str(&t.to_html()),
                Section::Text { title, text } => {
                    let _ = write!(
                        s,
                        "<section>\n<h2>{}</h2>\n<pre>{}</pre>\n</section>\n",
                        escape(title),
                        escape(text)
                    );
                }
            }
        }
        s.push_str("</main>\n</body>\n</html>\n");
        s
    }

    /// Writes every figure's CSV (`dir/<id>.csv`) and then `dir/report.html`, each atomically,
    /// creating `dir` if needed; returns the page's path.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a figure id that is empty, holds characters other than ASCII
    /// letters, digits, `-` and `_`, or appears twice (nothing is written then); [`Error::Io`]
    /// if a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let mut seen = BTreeSet::new();
        for f in self.figures() {
            let ok = !f.id.is_empty()
                && f.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(Error::invalid(
                    "Report::write",
                    format!("figure id {:?}", f.id),
                    "expected ASCII letters, digits, '-' and '_' only (it names the CSV file)",
                ));
            }
            if !seen.insert(f.id.as_str()) {
                return Err(Error::invalid(
                    "Report::write",
                    format!("figure id {:?}", f.id),
                    "used by two figures: ids must be unique",
                ));
            }
        }
        for f in self.figures() {
            write_atomic(&dir.join(format!("{}.csv", f.id)), f.csv_text().as_bytes())?;
        }
        let page = dir.join(REPORT_FILE);
        write_atomic(&page, self.to_html().as_bytes())?;
        Ok(page)
    }
}

/// Rows of cells as CSV text with a header row (fields quoted where needed).
pub fn csv_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let line = |cells: Vec<String>| cells.join(",") + "\n";
    s.push_str(&line(header.iter().map(|h| csv_field(h)).collect()));
    for row in rows {
        s.push_str(&line(row.iter().map(|c| csv_field(c)).collect()));
    }
    s
}
