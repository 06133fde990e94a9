//! `report.html` of a training run: the figures of its metrics log, read back from disk (so a
//! resumed run's page covers the whole history), the final metrics and the settings.
//!
//! Figures (each with its data beside the page as `report-*.csv`):
//! * `report-loss`: the training loss of every step and its mean over the last 50 steps;
//! * `report-eval-<kind>`: the evaluation metrics, one figure per kind of metric (the part of the
//!   name after the last `_`: `mse`, `loss`, `accuracy` (in %), …) with one line per metric;
//! * `report-lr`: the learning rate of every step;
//! * `report-grad-norm`: the global gradient norm of every step, with the clipping threshold.
//!
//! A y axis is logarithmic when its values span more than two decades ([`Scale::auto`]), except
//! the learning rate's, which is linear so schedules keep their familiar shape (a cosine decay
//! ends at zero, which a log axis cannot show).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::log::{Record, read_log};
use super::{TrainOptions, fmt_value, schedule_name};
use crate::report::{Figure, Plot, Report, Scale, Section, Series, Table};
use crate::{Error, Result};

/// Every CSV of a run report starts with this (the run directory's overwrite protection removes
/// `report-*.csv` with the other run files).
pub const REPORT_CSV_PREFIX: &str = "report-";

/// Steps of the running mean drawn over the training loss.
const MEAN_WINDOW: usize = 50;

/// Builds the report of the run in `dir` from its metrics log.
///
/// `start_step` is where this invocation started (non-zero after a resume), `notes` are shown
/// under the title, and `stopped` is the error that ended training early (a non-finite loss).
///
/// # Errors
/// [`Error::Io`] if the metrics log cannot be read.
pub fn run_report(
    dir: &Path,
    opts: &TrainOptions,
    metadata: &BTreeMap<String, String>,
    start_step: u64,
    notes: &[String],
    stopped: Option<&Error>,
) -> Result<Report> {
    let records = read_log(dir, opts.log_format)?;
    let train: Vec<&Record> = records.iter().filter(|r| r.kind == "train").collect();
    let evals: Vec<&Record> = records.iter().filter(|r| r.kind == "eval").collect();
    let metric_names = first_seen(evals.iter().flat_map(|r| r.metrics.iter().map(|m| &m.0)));
    let classifier = metric_names.iter().any(|n| n.contains("accuracy"));
    let regression = metric_names.iter().any(|n| n.ends_with("mse"));
    let last_step = train.last().map_or(0, |r| r.step);

    let title = if opts.label.trim().is_empty() {
        "Training run".to_string()
    } else {
        format!("Training run: {}", opts.label.trim())
    };
    let mut report = Report::new(title).intro(format!(
        "The metrics log of this run directory ({}): {last_step} training steps{} and {} \
         evaluations. Every figure's data is in the CSV file linked under it; the command and \
         seed in its caption reproduce it (the same seed, data and thread count give the same numbers).",
        opts.log_format.file_name(),
        if last_step < opts.steps {
            format!(" of the {} asked for", opts.steps)
        } else {
            String::new()
        },
        evals.len()
    ));
    if start_step > 0 {
        report = report.intro(format!(
            "This invocation resumed the run at step {start_step}: the records up to it come from \
             the earlier invocation(s) in this directory."
        ));
    }
    if let Some(e) = stopped {
        report = report.intro(format!(
            "Training stopped early: {e}. The figures show the steps logged before it."
        ));
    }
    for n in notes {
        report = report.intro(format!("Note: {n}"));
    }
    let figure = |id: &str, title: &str, caption: String, plot: Plot| {
        Figure::new(id, title, plot)
            .caption(caption)
            .command(opts.command.clone())
            .seed(opts.seed)
    };
    let step_label = "training step";

    // Training loss.
    let loss: Vec<(f64, f64)> = train
        .iter()
        .filter_map(|r| Some((r.step as f64, r.loss?)))
        .collect();
    let mean: Vec<(f64, f64)> = (0..loss.len())
        .map(|i| {
            let window = &loss[i.saturating_sub(MEAN_WINDOW - 1)..=i];
            let sum: f64 = window.iter().map(|p| p.1).sum();
            (loss[i].0, sum / window.len() as f64)
        })
        .collect();
    let loss_label = if regression {
        "training loss (MSE)"
    } else if classifier {
        "training loss (cross-entropy, nats)"
    } else {
        "training loss"
    };
    let scale = Scale::auto(loss.iter().map(|p| p.1));
    let plot = Plot::new(step_label, loss_label)
        .y_scale(scale)
        .series(Series::new("loss of the step's batch", loss))
        .series(Series::new(
            format!("mean of the last {MEAN_WINDOW} steps"),
            mean,
        ));
    report = report.section(Section::Figure(figure(
        "report-loss",
        "Training loss",
        format!(
            "The training loss of every step (averaged over the step's batch) and its running mean \
             over the last {MEAN_WINDOW} steps, against the training step.{}",
            log_note(scale)
        ),
        plot,
    )));

    // Evaluation metrics, one figure per kind.
    let mut groups: Vec<(String, Vec<&String>)> = Vec::new();
    for name in &metric_names {
        let kind = name.rsplit('_').next().unwrap_or(name).to_string();
        match groups.iter_mut().find(|g| g.0 == kind) {
            Some(g) => g.1.push(name),
            None => groups.push((kind, vec![name])),
        }
    }
    // Errors first, then accuracies, then anything else (JSON logs list metrics alphabetically).
    groups.sort_by_key(|g| match g.0.as_str() {
        "mse" | "loss" => 0,
        "accuracy" => 1,
        _ => 2,
    });
    for (kind, names) in &groups {
        let percent = kind == "accuracy";
        let series: Vec<Series> = names
            .iter()
            .map(|name| {
                let points = evals
                    .iter()
                    .filter_map(|r| {
                        let v = r.metrics.iter().find(|m| &m.0 == *name)?.1;
                        Some((r.step as f64, if percent { 100.0 * v } else { v }))
                    })
                    .collect();
                let s = Series::new(name.as_str(), points);
                if name.starts_with("baseline") {
                    s.dashed()
                } else {
                    s
                }
            })
            .collect();
        let (title, y_label) = match kind.as_str() {
            "mse" => ("Held-out mean squared error", "mean squared error"),
            "loss" if classifier => ("Held-out loss", "loss (cross-entropy, nats)"),
            "loss" => ("Held-out loss", "loss"),
            "accuracy" => ("Held-out accuracy", "accuracy (%)"),
            other => (other, other),
        };
        let scale = if percent {
            Scale::Linear
        } else {
            Scale::auto(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))
        };
        let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let caption = format!(
            "Held-out {} against the training step, evaluated {}.{}{}{}",
            names.join(", "),
            if opts.eval_every > 0 {
                format!("every {} steps and at the end", opts.eval_every)
            } else {
                "at the end".to_string()
            },
            if percent { " In percent." } else { "" },
            if names.iter().any(|n| n.starts_with("baseline")) {
                " Dashed: a reference that does not depend on the model."
            } else {
                ""
            },
            log_note(scale)
        );
        let plot = Plot {
            series,
            ..Plot::new(step_label, y_label).y_scale(scale)
        };
        let id: String = kind
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        report = report.section(Section::Figure(figure(
            &format!("report-eval-{id}"),
            title,
            caption,
            plot,
        )));
    }

    // Learning rate.
    let lr: Vec<(f64, f64)> = train
        .iter()
        .filter_map(|r| Some((r.step as f64, r.lr?)))
        .collect();
    report = report.section(Section::Figure(figure(
        "report-lr",
        "Learning rate",
        format!(
            "The learning rate of every step: base rate {}, schedule {}. Linear axis.",
            fmt_value(opts.optimizer.lr),
            schedule_name(&opts.schedule)
        ),
        Plot::new(step_label, "learning rate").series(Series::new("learning rate", lr)),
    )));

    // Gradient norm.
    let norm: Vec<(f64, f64)> = train
        .iter()
        .filter_map(|r| Some((r.step as f64, r.grad_norm?)))
        .collect();
    // The threshold is drawn when the norms come near it; far above them it would only squash
    // the curve, and the caption says where it is instead.
    let max_norm = norm
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let threshold = opts.clip.filter(|&c| max_norm >= 0.5 * c);
    let mut values: Vec<f64> = norm.iter().map(|p| p.1).collect();
    values.extend(threshold);
    let scale = Scale::auto(values);
    let mut plot = Plot::new(step_label, "gradient norm ‖g‖₂")
        .y_scale(scale)
        .series(Series::new("global gradient norm", norm.clone()));
    if let (Some(c), Some(first), Some(last)) = (threshold, norm.first(), norm.last()) {
        plot = plot
            .series(Series::new("clipping threshold", vec![(first.0, c), (last.0, c)]).dashed());
    }
    report = report.section(Section::Figure(figure(
        "report-grad-norm",
        "Gradient norm",
        format!(
            "The L2 norm of all parameter gradients together at every step, before clipping.{}{}",
            match (opts.clip, threshold) {
                (Some(c), Some(_)) => format!(
                    " Dashed: the clipping threshold {c}; gradients above it were scaled down to norm {c}."
                ),
                (Some(c), None) => format!(
                    " Gradients were clipped to norm {c}, more than twice the largest norm shown \
                     ({}): clipping never acted.",
                    fmt_value(max_norm)
                ),
                (None, _) => " No clipping.".to_string(),
            },
            log_note(scale)
        ),
        plot,
    )));

    // Final metrics and settings.
    let mut finals = Table::new("Final metrics", &["metric", "value"]);
    finals = finals.row(["last training step".to_string(), last_step.to_string()]);
    if !train.is_empty() {
        let tail = &train[train.len().saturating_sub(MEAN_WINDOW)..];
        let losses: Vec<f64> = tail.iter().filter_map(|r| r.loss).collect();
        if !losses.is_empty() {
            finals = finals.row([
                format!("training loss, mean of the last {} steps", losses.len()),
                fmt_value(losses.iter().sum::<f64>() / losses.len() as f64),
            ]);
        }
    }
    if let Some(last) = evals.last() {
        for (name, v) in &last.metrics {
            let value = if name.contains("accuracy") {
                format!("{:.2} %", 100.0 * v)
            } else {
                fmt_value(*v)
            };
            finals = finals.row([format!("{name} (step {})", last.step), value]);
        }
    }
    let o = &opts.optimizer;
    let meta = |key: &str| metadata.get(key).cloned().unwrap_or_default();
    let settings = Table::new("Settings", &["setting", "value"])
        .row([
            "command",
            if opts.command.is_empty() {
                "not recorded (made through the library)"
            } else {
                opts.command.as_str()
            },
        ])
        .row(["seed".to_string(), opts.seed.to_string()])
        .row(["task".to_string(), meta("skipgate.task")])
        .row(["model".to_string(), meta("skipgate.model")])
        .row(["steps".to_string(), opts.steps.to_string()])
        .row([
            "optimizer".to_string(),
            format!(
                "{} lr {}, momentum {}{}, weight decay {}",
                o.kind,
                fmt_value(o.lr),
                o.momentum,
                if o.nesterov { " (Nesterov)" } else { "" },
                o.weight_decay
            ),
        ])
        .row(["schedule".to_string(), schedule_name(&opts.schedule)])
        .row([
            "gradient clipping".to_string(),
            opts.clip
                .map_or("none".to_string(), |c| format!("global norm {c}")),
        ])
        .row(["evaluate every".to_string(), steps_or_end(opts.eval_every)])
        .row([
            "checkpoint every".to_string(),
            steps_or_end(opts.checkpoint_every),
        ]);
    Ok(report
        .section(Section::Table(finals))
        .section(Section::Table(settings)))
}

/// Builds the run's report ([`run_report`]) and writes `dir/report.html` and its CSVs.
pub fn write_run_report(
    dir: &Path,
    opts: &TrainOptions,
    metadata: &BTreeMap<String, String>,
    start_step: u64,
    notes: &[String],
    stopped: Option<&Error>,
) -> Result<PathBuf> {
    run_report(dir, opts, metadata, start_step, notes, stopped)?.write(dir)
}

/// The distinct items in order of first appearance.
fn first_seen<'a>(items: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

fn log_note(scale: Scale) -> &'static str {
    match scale {
        Scale::Log => " Log y axis: the values span more than two decades.",
        Scale::Linear => "",
    }
}

fn steps_or_end(every: u64) -> String {
    if every == 0 {
        "only at the end".to_string()
    } else {
        format!("{every} steps and at the end")
    }
}
