//! The training loop behind `skipgate train` and `skipgate lab`.
//!
//! Each step: set the scheduled learning rate, zero the gradients, let the task run forward and
//! backward, stop on a non-finite loss or gradient, clip the global gradient norm, update.
//! Around it: a progress bar (loss, throughput, ETA), a metrics log, periodic evaluation and
//! atomic checkpoints from which a run resumes bit for bit.
//!
//! A run directory holds:
//! * `model.safetensors`: the weights under PyTorch names, with the task and model in the
//!   metadata: what `skipgate sample` and PyTorch's `load_state_dict` read;
//! * `checkpoint.safetensors`: the weights, the optimizer state (`optim.*`), the task's own state
//!   (`task.*`) and the step and RNG state in the metadata: what `--resume` reads;
//! * `metrics.jsonl` or `metrics.csv`, and `summary.json`;
//! * `report.html` with its `report-*.csv` files: the figures of the metrics log (loss,
//!   evaluations, learning rate, gradient norm), the final metrics and the settings
//!   ([`report::run_report`]), written at the end of the run and when training stops on a NaN.

pub mod log;
pub mod report;
pub mod tasks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::io::{TensorFile, load_state_dict, state_dict, write_atomic};
use crate::optim::{
    LrSchedule, Optimizer, OptimizerSpec, build_optimizer, clip_grad_norm, grad_norm,
};
use crate::{Error, Module, Result, Rng};

pub use log::{LogFormat, MetricsLog, Record, read_log};
pub use tasks::{Metrics, ModelSpec, StepStats, TaskSpec, TrainTask};

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Total optimisation steps (a resumed run continues up to this number).
    pub steps: u64,
    /// Optimizer and base learning rate.
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule applied to the base rate.
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this value (`torch.nn.utils.clip_grad_norm_`).
    pub clip: Option<f64>,
    /// Evaluate every this many steps (and always at the end); 0: only at the end.
    pub eval_every: u64,
    /// Write a checkpoint every this many steps (and always at the end); 0: only at the end.
    pub checkpoint_every: u64,
    /// Run directory; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    /// Metrics log format.
    pub log_format: LogFormat,
    /// Seed of the model initialisation and of every random draw of the run.
    pub seed: u64,
    /// Continue from `out_dir/checkpoint.safetensors`.
    pub resume: bool,
    /// Start from scratch even if `out_dir` already holds a run (its files are replaced). Without
    /// it (and without `resume`), a directory holding a checkpoint is refused, so a run is never
    /// overwritten by accident.
    pub overwrite: bool,
    /// Draw a progress bar on the terminal (and print evaluations on their own lines).
    pub progress: bool,
    /// Label shown before the progress bar (and in the report's title).
    pub label: String,
    /// The command line that reproduces the run, quoted in every caption of `report.html`
    /// (the CLI fills it in; empty: the report says it was not recorded).
    pub command: String,
}

impl TrainOptions {
    /// `, momentum 0.9, wd 0.0005, cosine` — the optimizer and schedule details worth showing.
    pub fn schedule_note(&self) -> String {
        let mut parts = Vec::new();
        if self.optimizer.momentum != 0.0 {
            parts.push(format!("momentum {}", self.optimizer.momentum));
        }
        if self.optimizer.weight_decay != 0.0 {
            parts.push(format!("wd {}", self.optimizer.weight_decay));
        }
        if self.schedule != LrSchedule::constant() {
            parts.push(self.schedule.schedule.to_string());
        }
        if self.schedule.warmup_steps > 0 {
            parts.push(format!("warm-up {}", self.schedule.warmup_steps));
        }
        parts.iter().map(|p| format!(", {p}")).collect()
    }

    /// `steps` steps of `optimizer`, no clipping, evaluation and checkpoint only at the end,
    /// nothing written, seed 0, no progress bar, no command recorded.
    pub fn new(steps: u64, optimizer: OptimizerSpec) -> Self {
        TrainOptions {
            steps,
            optimizer,
            schedule: LrSchedule::constant(),
            clip: None,
            eval_every: 0,
            checkpoint_every: 0,
            out_dir: None,
            log_format: LogFormat::Jsonl,
            seed: 0,
            resume: false,
            overwrite: false,
            progress: false,
            label: String::new(),
            command: String::new(),
        }
    }
}

/// One evaluation during training.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub metrics: Vec<(String, f64)>,
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    /// Steps completed (including those before a resume).
    pub steps: u64,
    /// Step the run started from (0 unless resumed).
    pub start_step: u64,
    /// Mean training loss over the last (up to) 50 steps of this run.
    pub final_train_loss: f64,
    /// Every evaluation of this run, the last one at the final step.
    pub evals: Vec<EvalPoint>,
    /// Wall-clock seconds of this run (evaluation included).
    pub seconds: f64,
    /// Training items per second (sequences or characters), evaluation excluded.
    pub items_per_s: f64,
    /// What an item is.
    pub item_name: String,
    /// Where the final model was written.
    pub model_path: Option<PathBuf>,
    /// Things the user should know about the run (e.g. a schedule that changed on resume).
    pub notes: Vec<String>,
}

impl TrainReport {
    /// The final value of metric `name`.
    pub fn final_metric(&self, name: &str) -> Option<f64> {
        self.evals
            .last()?
            .metrics
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// The trainer's own part of a checkpoint (stored as JSON in its metadata).
#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    rng: [u64; 4],
    optimizer: String,
    /// The learning-rate schedule, e.g. `cosine:0:2000 warmup 0`.
    schedule: String,
}

fn schedule_name(s: &LrSchedule) -> String {
    format!("{} warmup {}", s.schedule, s.warmup_steps)
}

/// The files a run directory holds (besides the other `report-*.csv` figure data).
const RUN_FILES: [&str; 9] = [
    MODEL,
    CHECKPOINT,
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    crate::report::REPORT_FILE,
    "report-loss.csv",
    "report-lr.csv",
    "report-grad-norm.csv",
];

/// The weights of a checkpoint or model file: every tensor but the optimizer's (`optim.*`) and the
/// task's (`task.*`).
pub fn model_tensors(file: &TensorFile) -> TensorFile {
    let mut weights = TensorFile::new();
    weights.source = file.source.clone();
    weights.metadata = file.metadata.clone();
    for (name, tensor) in &file.tensors {
        if !name.starts_with("optim.") && !name.starts_with("task.") {
            weights.insert(name.clone(), tensor.clone());
        }
    }
    weights
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const MODEL: &str = "model.safetensors";

/// Trains a fresh model (or resumes one) on `task`; returns the model and the report.
///
/// # Errors
/// Invalid options, I/O errors, a checkpoint that does not match the task (on resume), and a
/// non-finite loss or gradient norm ([`Error::NonFinite`]): training stops there, and the last
/// checkpoint written before stays as it was.
pub fn train<T: TrainTask>(task: &mut T, opts: &TrainOptions) -> Result<(T::Model, TrainReport)> {
    let mut rng = Rng::seed(opts.seed);
    let mut model = task.build_model(&mut rng)?;
    let mut optimizer: Box<dyn Optimizer<f32>> = build_optimizer(&opts.optimizer)?;
    let mut start = 0;
    let mut notes = Vec::new();
    if let Some(dir) = &opts.out_dir
        && dir.exists()
        && !dir.is_dir()
    {
        return Err(Error::invalid(
            "train",
            "output directory",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    if opts.resume {
        let dir = opts.out_dir.as_deref().ok_or_else(|| {
            Error::invalid(
                "train",
                "resume",
                "needs an output directory to resume from",
            )
        })?;
        let (step, schedule) = resume(dir, task, &mut model, optimizer.as_mut(), &mut rng)?;
        start = step;
        let now = schedule_name(&opts.schedule);
        if schedule != now {
            notes.push(format!(
                "the learning-rate schedule changed on resume (checkpoint: {schedule}; now: {now}): \
                 the steps after {start} follow the new schedule"
            ));
        }
    } else if let Some(dir) = &opts.out_dir {
        prepare_fresh_run(dir, opts.overwrite)?;
    }
    if start > opts.steps {
        return Err(Error::invalid(
            "train",
            "steps",
            format!(
                "the checkpoint is at step {start}, beyond the {} steps asked for",
                opts.steps
            ),
        ));
    }

    let metadata = task.metadata();
    let mut log = match &opts.out_dir {
        Some(dir) => {
            let probe = task.evaluate(&mut model)?;
            let cols: Vec<String> = probe.into_iter().map(|(k, _)| k).collect();
            Some(MetricsLog::open(
                dir,
                opts.log_format,
                &cols,
                opts.resume.then_some(start),
            )?)
        }
        None => None,
    };
    let bar = progress_bar(opts, start);
    for note in &notes {
        say(&bar, opts.progress, &format!("note: {note}"));
    }
    let t0 = Instant::now();
    let mut train_seconds = 0.0;
    let mut items = 0usize;
    let mut recent: Vec<f64> = Vec::new();
    let mut recent_correct: Vec<(usize, usize)> = Vec::new();
    let mut evals = Vec::new();
    let mut last_eval = None;

    for step in start..opts.steps {
        let done = step + 1; // steps completed after this one
        let lr = opts.schedule.lr_at(opts.optimizer.lr, step);
        optimizer.set_lr(lr);
        let ts = Instant::now();
        model.zero_grad();
        let stats = task.step(&mut model, &mut rng)?;
        if !stats.loss.is_finite() {
            bar.abandon();
            return Err(stopped(
                opts,
                &metadata,
                start,
                &notes,
                Error::NonFinite {
                    step: done,
                    what: "the training loss",
                    value: stats.loss,
                },
            ));
        }
        let norm = match opts.clip {
            Some(max) => clip_grad_norm(&mut model, max),
            None => grad_norm(&mut model),
        };
        if !norm.is_finite() {
            bar.abandon();
            return Err(stopped(
                opts,
                &metadata,
                start,
                &notes,
                Error::NonFinite {
                    step: done,
                    what: "the gradient norm",
                    value: norm,
                },
            ));
        }
        optimizer.step(&mut model)?;
        let dt = ts.elapsed().as_secs_f64();
        train_seconds += dt;
        items += stats.items;
        recent.push(stats.loss);
        if recent.len() > 50 {
            recent.remove(0);
        }
        if let Some(c) = stats.correct {
            recent_correct.push((c, stats.items));
            if recent_correct.len() > 50 {
                recent_correct.remove(0);
            }
        }
        let rate = stats.items as f64 / dt.max(1e-12);
        if let Some(log) = &mut log {
            log.write(&Record {
                step: done,
                kind: "train",
                loss: Some(stats.loss),
                accuracy: stats.correct.map(|c| c as f64 / stats.items.max(1) as f64),
                lr: Some(lr),
                grad_norm: Some(norm),
                items_per_s: Some(rate),
                metrics: Vec::new(),
            })?;
        }
        bar.set_position(done);
        if done % 10 == 0 || done == opts.steps {
            let avg = recent.iter().sum::<f64>() / recent.len() as f64;
            let tput = items as f64 / train_seconds.max(1e-12);
            let accuracy = if recent_correct.is_empty() {
                String::new()
            } else {
                let (c, n) = recent_correct
                    .iter()
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                format!(" | acc {:.1}%", 100.0 * c as f64 / n.max(1) as f64)
            };
            bar.set_message(format!(
                "loss {avg:.4}{accuracy} | {} {}/s",
                human(tput),
                task.item_name()
            ));
        }

        let eval_due = (opts.eval_every > 0 && done % opts.eval_every == 0) || done == opts.steps;
        if eval_due {
            let metrics = task.evaluate(&mut model)?;
            if let Some(log) = &mut log {
                log.write(&Record {
                    step: done,
                    kind: "eval",
                    metrics: metrics.clone(),
                    ..Record::default()
                })?;
            }
            let line = format!("{} step {done}: {}", opts.label, fmt_metrics(&metrics));
            say(&bar, opts.progress, line.trim());
            last_eval = Some(metrics.clone());
            evals.push(EvalPoint {
                step: done,
                metrics,
            });
        }
        let ckpt_due =
            (opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0) || done == opts.steps;
        if ckpt_due && let Some(dir) = &opts.out_dir {
            save_checkpoint(
                dir,
                task,
                &mut model,
                optimizer.as_ref(),
                &opts.schedule,
                &rng,
                done,
                &metadata,
            )?;
        }
    }
    bar.finish_and_clear();
    if evals.is_empty() {
        // Nothing left to train (resumed at the final step): still report where the model stands.
        let metrics = match last_eval {
            Some(m) => m,
            None => task.evaluate(&mut model)?,
        };
        evals.push(EvalPoint {
            step: start,
            metrics,
        });
    }
    let report = TrainReport {
        steps: opts.steps,
        start_step: start,
        final_train_loss: if recent.is_empty() {
            f64::NAN
        } else {
            recent.iter().sum::<f64>() / recent.len() as f64
        },
        evals,
        seconds: t0.elapsed().as_secs_f64(),
        items_per_s: items as f64 / train_seconds.max(1e-12),
        item_name: task.item_name().to_string(),
        model_path: opts.out_dir.as_ref().map(|d| d.join(MODEL)),
        notes,
    };
    if let Some(dir) = &opts.out_dir {
        let summary = serde_json::json!({
            "report": &report,
            "settings": {
                "task": metadata.get("skipgate.task").and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()),
                "model": metadata.get("skipgate.model").and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()),
                "optimizer": {
                    "kind": opts.optimizer.kind.to_string(),
                    "lr": opts.optimizer.lr,
                    "momentum": opts.optimizer.momentum,
                    "nesterov": opts.optimizer.nesterov,
                    "weight_decay": opts.optimizer.weight_decay,
                    "betas": [opts.optimizer.betas.0, opts.optimizer.betas.1],
                    "eps": opts.optimizer.eps,
                },
                "schedule": schedule_name(&opts.schedule),
                "clip": opts.clip,
                "seed": opts.seed,
            },
        });
        let json = serde_json::to_string_pretty(&summary).expect("serialisable");
        write_atomic(&dir.join("summary.json"), json.as_bytes())?;
        report::write_run_report(dir, opts, &metadata, start, &report.notes, None)?;
    }
    Ok((model, report))
}

/// Writes the report of a run that training stopped early (best effort: the stop is the error
/// worth reporting, not a failure to write the page) and returns `err`.
fn stopped(
    opts: &TrainOptions,
    metadata: &BTreeMap<String, String>,
    start: u64,
    notes: &[String],
    err: Error,
) -> Error {
    if let Some(dir) = &opts.out_dir {
        let _ = report::write_run_report(dir, opts, metadata, start, notes, Some(&err));
    }
    err
}

/// Writes `model.safetensors` and `checkpoint.safetensors`, each atomically.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint<T: TrainTask>(
    dir: &Path,
    task: &T,
    model: &mut T::Model,
    optimizer: &dyn Optimizer<f32>,
    schedule: &LrSchedule,
    rng: &Rng,
    step: u64,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut weights = state_dict(model);
    weights.metadata = metadata.clone();
    weights
        .metadata
        .insert("skipgate.step".into(), step.to_string());
    weights.write(dir.join(MODEL))?;

    let mut ckpt = weights;
    for (name, value) in optimizer.state_tensors() {
        ckpt.insert_array(format!("optim.{name}"), value.view());
    }
    task.save_state(&mut ckpt);
    let state = TrainerState {
        step,
        rng: rng.state(),
        optimizer: optimizer.name().to_string(),
        schedule: schedule_name(schedule),
    };
    ckpt.metadata.insert(
        "skipgate.trainer".into(),
        serde_json::to_string(&state).expect("serialisable"),
    );
    ckpt.write(dir.join(CHECKPOINT))
}

/// Loads a checkpoint into `model`, `optimizer`, `task` and `rng`; returns its step and the
/// schedule it was trained with.
fn resume<T: TrainTask>(
    dir: &Path,
    task: &mut T,
    model: &mut T::Model,
    optimizer: &mut dyn Optimizer<f32>,
    rng: &mut Rng,
) -> Result<(u64, String)> {
    let path = dir.join(CHECKPOINT);
    let source = path.display().to_string();
    if !path.exists() {
        return Err(Error::invalid(
            "resume",
            "output directory",
            format!(
                "nothing to resume: {} holds no {CHECKPOINT} (start a new run without --resume)",
                dir.display()
            ),
        ));
    }
    let file = TensorFile::read(&path)?;
    let bad = |msg: String| Error::Checkpoint {
        path: source.clone(),
        msg,
    };
    // The run must be the same problem and architecture.
    for (key, want) in task.metadata() {
        match file.metadata.get(&key) {
            Some(have) if *have == want || key == "skipgate.version" => {}
            Some(have) => {
                return Err(bad(format!(
                    "was written for a different run: {key} is {}, this run has {}",
                    visible(have),
                    visible(&want)
                )));
            }
            None => {
                return Err(bad(format!(
                    "has no {key} metadata: not a skipgate training checkpoint"
                )));
            }
        }
    }
    let state: TrainerState = file
        .metadata
        .get("skipgate.trainer")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            bad("has no readable skipgate.trainer metadata: not a training checkpoint".into())
        })?;
    if state.optimizer != optimizer.name() {
        return Err(bad(format!(
            "was trained with {}, this run asks for {}",
            state.optimizer,
            optimizer.name()
        )));
    }
    let mut optim = Vec::new();
    for name in file.names() {
        if let Some(rest) = name.strip_prefix("optim.") {
            optim.push((rest.to_string(), file.get_array::<f32>(name)?));
        }
    }
    load_state_dict(model, &model_tensors(&file), &source)?;
    optimizer.load_state_tensors(optim)?;
    task.load_state(&file)?;
    *rng = Rng::from_state(state.rng);
    Ok((state.step, state.schedule))
}

/// `s` with newlines and tabs written as `\n` and `\t`, for one-line messages.
fn visible(s: &str) -> String {
    s.replace('\n', "\\n").replace('\t', "\\t")
}

/// Refuses to start over in a directory that holds a run, unless `overwrite`, in which case the
/// run's files are removed first (so no stale log of another format stays behind).
fn prepare_fresh_run(dir: &Path, overwrite: bool) -> Result<()> {
    let ckpt = dir.join(CHECKPOINT);
    if ckpt.exists() && !overwrite {
        return Err(Error::invalid(
            "train",
            "output directory",
            format!(
                "{} already holds a training run: continue it with --resume, start it over with --overwrite, or choose another --out",
                dir.display()
            ),
        ));
    }
    if overwrite {
        let mut files: Vec<PathBuf> = RUN_FILES.iter().map(|f| dir.join(f)).collect();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(report::REPORT_CSV_PREFIX) && name.ends_with(".csv") {
                    files.push(entry.path());
                }
            }
        }
        for path in files {
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Prints a line above the progress bar, or on stderr when there is no bar (a closed stderr is
/// ignored: training goes on).
fn say(bar: &ProgressBar, progress: bool, line: &str) {
    if !bar.is_hidden() {
        bar.println(line);
    } else if progress {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

fn progress_bar(opts: &TrainOptions, start: u64) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(opts.steps), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:28}] {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(opts.label.clone());
    bar.set_position(start);
    bar
}

/// `12.3k`, `4.56M`.
pub fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// `val_mse 0.0123, baseline_mse 0.167`.
pub fn fmt_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {}", fmt_value(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Four significant digits, scientific notation for small values.
pub fn fmt_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}
