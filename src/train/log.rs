//! The metrics log of a training run: one record per step (and per evaluation), as JSON lines or
//! CSV, appended as training goes so a crashed run keeps its history.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::io::write_atomic;
use crate::{Error, Result};

/// Format of the metrics log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (`metrics.jsonl`).
    Jsonl,
    /// Comma-separated values with a header (`metrics.csv`).
    Csv,
}

impl LogFormat {
    /// The log's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            LogFormat::Jsonl => "metrics.jsonl",
            LogFormat::Csv => "metrics.csv",
        }
    }
}

impl FromStr for LogFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "json" => Ok(LogFormat::Jsonl),
            "csv" => Ok(LogFormat::Csv),
            other => Err(Error::invalid("log format", other, "expected jsonl or csv")),
        }
    }
}

/// Columns of every record, in CSV order. Evaluation metrics follow in `eval_columns`.
const COLUMNS: [&str; 7] = [
    "step",
    "kind",
    "loss",
    "accuracy",
    "lr",
    "grad_norm",
    "items_per_s",
];

/// One line of the log.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// 1-based step count after which the record was taken.
    pub step: u64,
    /// `train` or `eval`.
    pub kind: &'static str,
    /// Training loss of the step (train records).
    pub loss: Option<f64>,
    /// Training accuracy of the step's batch (train records of classifiers).
    pub accuracy: Option<f64>,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
    pub items_per_s: Option<f64>,
    /// Evaluation metrics (eval records).
    pub metrics: Vec<(String, f64)>,
}

/// Appends [`Record`]s to `metrics.jsonl` or `metrics.csv`.
pub struct MetricsLog {
    file: File,
    path: PathBuf,
    format: LogFormat,
    eval_columns: Vec<String>,
}

impl MetricsLog {
    /// Opens the log in `dir`. A fresh run truncates it; a resumed run keeps the records up to
    /// `keep_through` (the checkpoint's step) and drops the rest, which a crash left behind.
    pub fn open(
        dir: &Path,
        format: LogFormat,
        eval_columns: &[String],
        keep_through: Option<u64>,
    ) -> Result<Self> {
        let path = dir.join(format.file_name());
        let mut kept = Vec::new();
        if let Some(limit) = keep_through
            && let Ok(f) = File::open(&path)
        {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| Error::io(&path, e))?;
                if record_step(&line, format).is_some_and(|s| s <= limit) {
                    kept.push(line);
                }
            }
        }
        let mut content = String::new();
        if format == LogFormat::Csv {
            let header: Vec<&str> = COLUMNS
                .iter()
                .copied()
                .chain(eval_columns.iter().map(String::as_str))
                .collect();
            content.push_str(&header.join(","));
            content.push('\n');
        }
        for line in kept {
            content.push_str(&line);
            content.push('\n');
        }
        write_atomic(&path, content.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(MetricsLog {
            file,
            path,
            format,
            eval_columns: eval_columns.to_vec(),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record.
    pub fn write(&mut self, r: &Record) -> Result<()> {
        let line = match self.format {
            LogFormat::Jsonl => {
                let mut obj = serde_json::Map::new();
                obj.insert("step".into(), r.step.into());
                obj.insert("kind".into(), r.kind.into());
                for (k, v) in [
                    ("loss", r.loss),
                    ("lr", r.lr),
                    ("grad_norm", r.grad_norm),
                    ("items_per_s", r.items_per_s),
                    ("accuracy", r.accuracy),
                ] {
                    if let Some(v) = v {
                        obj.insert(k.into(), json_number(v));
                    }
                }
                for (k, v) in &r.metrics {
                    obj.insert(k.clone(), json_number(*v));
                }
                serde_json::Value::Object(obj).to_string()
            }
            LogFormat::Csv => {
                let opt = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
                let mut cells = vec![
                    r.step.to_string(),
                    r.kind.to_string(),
                    opt(r.loss),
                    opt(r.accuracy),
                    opt(r.lr),
                    opt(r.grad_norm),
                    opt(r.items_per_s),
                ];
                for col in &self.eval_columns {
                    cells.push(opt(r
                        .metrics
                        .iter()
                        .find(|(k, _)| k == col)
                        .map(|(_, v)| *v)));
                }
                cells.join(",")
            }
        };
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))
    }
}

/// JSON has no NaN or infinity: those are written as strings, so the line stays valid JSON.
fn json_number(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or_else(
        || serde_json::Value::String(v.to_string()),
        serde_json::Value::Number,
    )
}

/// The step of a log line (`None` for the CSV header or an unreadable line).
fn record_step(line: &str, format: LogFormat) -> Option<u64> {
    match format {
        LogFormat::Jsonl => serde_json::from_str::<serde_json::Value>(line)
            .ok()?
            .get("step")?
            .as_u64(),
        LogFormat::Csv => line.split(',').next()?.parse().ok(),
    }
}

/// Reads back the log `dir/metrics.jsonl` or `dir/metrics.csv` (as [`MetricsLog`] writes it), in
/// file order. `NaN` and infinities (written as strings in JSON) come back as such. Lines that
/// cannot be read (e.g. a last line cut short by a crash) and records of unknown kinds are
/// skipped; evaluation metrics keep the order of the CSV columns (JSON: alphabetical).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read.
pub fn read_log(dir: &Path, format: LogFormat) -> Result<Vec<Record>> {
    let path = dir.join(format.file_name());
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let kind = |k: &str| match k {
        "train" => Some("train"),
        "eval" => Some("eval"),
        _ => None,
    };
    let mut records = Vec::new();
    match format {
        LogFormat::Jsonl => {
            for line in text.lines() {
                let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line) else {
                    continue;
                };
                let (Some(step), Some(k)) = (
                    obj.get("step").and_then(|s| s.as_u64()),
                    obj.get("kind").and_then(|k| k.as_str()).and_then(kind),
                ) else {
                    continue;
                };
                let num = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.parse::<f64>().ok(),
                    v => v.as_f64(),
                };
                let mut r = Record {
                    step,
                    kind: k,
                    ..Record::default()
                };
                for (key, v) in &obj {
                    let v = num(v);
                    match key.as_str() {
                        "step" | "kind" => {}
                        "loss" => r.loss = v,
                        "accuracy" => r.accuracy = v,
                        "lr" => r.lr = v,
                        "grad_norm" => r.grad_norm = v,
                        "items_per_s" => r.items_per_s = v,
                        other => r.metrics.extend(v.map(|v| (other.to_string(), v))),
                    }
                }
                records.push(r);
            }
        }
        LogFormat::Csv => {
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
            for line in lines {
                let cells: Vec<&str> = line.split(',').collect();
                if cells.len() != header.len() {
                    continue;
                }
                let (Ok(step), Some(k)) = (cells[0].parse::<u64>(), kind(cells[1])) else {
                    continue;
                };
                let mut r = Record {
                    step,
                    kind: k,
                    ..Record::default()
                };
                for (col, cell) in header.iter().zip(&cells).skip(2) {
                    let v = cell.parse::<f64>().ok();
                    match *col {
                        "loss" => r.loss = v,
                        "accuracy" => r.accuracy = v,
                        "lr" => r.lr = v,
                        "grad_norm" => r.grad_norm = v,
                        "items_per_s" => r.items_per_s = v,
                        other => r.metrics.extend(v.map(|v| (other.to_string(), v))),
                    }
                }
                records.push(r);
            }
        }
    }
    Ok(records)
}
