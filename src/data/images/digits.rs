//! scikit-learn's 8×8 handwritten digits as CSV: one image per line, 65 comma-separated numbers —
//! the 64 pixels row-major (integers 0..16, written `3` or `3.0`), then the class 0..9. No header.

use std::path::Path;

use ndarray::Array4;

use super::{ImageSet, maybe_gunzip, read_file};
use crate::{Error, Result};

const SIDE: usize = 8;
const PIXELS: usize = SIDE * SIDE; // 64
const COLUMNS: usize = PIXELS + 1; // 65
const PIXEL_MAX: u8 = 16;
const NUM_CLASSES: usize = 10;

/// Parses the digits CSV (gzip-compressed or not) into a set `(N, 1, 8, 8)`, 10 classes, pixel
/// max 16, named `"sklearn-digits"`. `source` names the bytes in errors. Blank lines are skipped.
///
/// # Errors
/// [`Error::Format`] naming `source` for a corrupt gzip stream, text that is not UTF-8, no rows,
/// a line without 65 columns, or a value that is not an integer in range (pixels 0..16, class
/// 0..9) — naming the line and column (both counted from 1).
pub fn parse_digits_csv(bytes: &[u8], source: &str) -> Result<ImageSet> {
    const FORMAT: &str = "digits CSV";
    let fail = |msg: String| Error::Format {
        path: source.to_string(),
        format: FORMAT,
        msg,
    };
    let data = maybe_gunzip(bytes, source, FORMAT)?;
    let text = std::str::from_utf8(&data).map_err(|e| {
        fail(format!(
            "not UTF-8 text: invalid byte sequence at byte offset {}",
            e.valid_up_to()
        ))
    })?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let line_no = ln + 1;
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != COLUMNS {
            return Err(fail(format!(
                "line {line_no} has {} columns, expected {COLUMNS} ({PIXELS} pixels of an 8×8 image, then the class)",
                fields.len()
            )));
        }
        for (col, field) in fields.iter().enumerate() {
            let is_class = col == PIXELS;
            let max = if is_class {
                NUM_CLASSES - 1
            } else {
                usize::from(PIXEL_MAX)
            };
            let what = if is_class { "class" } else { "pixel value" };
            let v: f64 = field.trim().parse().map_err(|_| {
                fail(format!(
                    "line {line_no}, column {}: {field:?} is not a number",
                    col + 1
                ))
            })?;
            if !(v.fract() == 0.0 && v >= 0.0 && v <= max as f64) {
                return Err(fail(format!(
                    "line {line_no}, column {}: {what} {v} is not an integer in 0..{max}",
                    col + 1
                )));
            }
            if is_class {
                labels.push(v as usize);
            } else {
                pixels.push(v as u8);
            }
        }
    }
    if labels.is_empty() {
        return Err(fail(format!(
            "no rows; expected lines of {COLUMNS} comma-separated numbers"
        )));
    }
    let images =
        Array4::from_shape_vec((labels.len(), 1, SIDE, SIDE), pixels).expect("64 pixels per row");
    ImageSet::new("sklearn-digits", images, labels, NUM_CLASSES, PIXEL_MAX)
}

/// Reads the digits CSV from a file (`digits.csv.gz` or an uncompressed copy).
///
/// # Errors
/// [`Error::Io`] with the path if it cannot be read; otherwise as [`parse_digits_csv`], naming
/// the path.
pub fn read_digits_csv(path: impl AsRef<Path>) -> Result<ImageSet> {
    let path = path.as_ref();
    parse_digits_csv(&read_file(path)?, &path.display().to_string())
}
