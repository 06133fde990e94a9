//! `skipgate train`: one training run of a task, with checkpoints, metrics and a summary.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use skipgate::optim::{LrSchedule, OptimizerKind, OptimizerSpec, Schedule, build_optimizer};
use skipgate::rnn::{CellKind, RecurrentInit};
use skipgate::train::tasks::{CharLmTask, CopyTask, RegressionTask};
use skipgate::train::{
    LogFormat, ModelSpec, TaskSpec, TrainOptions, TrainReport, TrainTask, fmt_metrics, fmt_value,
    human, train,
};
use skipgate::{Error, Result};

/// Which problem to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskName {
    /// The course's example: predict the sum of X ~ U(0,1), shape (N, T, 1).
    Sum,
    /// The adding problem: sum the two marked values of a long sequence.
    Adding,
    /// The copy task: reproduce S symbols after a delay.
    Copy,
    /// Character-level language model on a text (default: embedded tiny Shakespeare).
    Charlm,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Task to train on.
    #[arg(long, value_enum)]
    pub task: TaskName,
    /// Cell type: rnn (tanh), rnn-relu, lstm, gru. [default: rnn for sum, lstm otherwise]
    #[arg(long)]
    pub model: Option<String>,
    /// Hidden units per direction. [default: sum 10, adding 128, copy 128, charlm 256]
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked recurrent layers.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Run a second, reversed direction.
    #[arg(long)]
    pub bidirectional: bool,
    /// Dropout between recurrent layers.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Embedding width (copy, charlm). [default: 64]
    #[arg(long)]
    pub embedding: Option<usize>,
    /// LSTM forget-gate bias at initialisation (e.g. 1.0); PyTorch's default init when absent.
    #[arg(long)]
    pub forget_bias: Option<f64>,
    /// Orthogonal recurrent weights at initialisation.
    #[arg(long)]
    pub orthogonal: bool,
    /// Sequence length T. [default: sum 5, adding 100, charlm 64]
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Sequences per batch. [default: sum 100, adding 64, copy 64, charlm 32]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Sum task: training-set size (the course uses 100). [default: 100]
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Size of the held-out set (sum, adding, copy). [default: 1000]
    #[arg(long)]
    pub val_size: Option<usize>,
    /// Copy task: alphabet size K. [default: 8]
    #[arg(long)]
    pub symbols: Option<usize>,
    /// Copy task: symbols to remember S. [default: 10]
    #[arg(long)]
    pub copy_len: Option<usize>,
    /// Copy task: blank steps between the symbols and the delimiter. [default: 10]
    #[arg(long)]
    pub delay: Option<usize>,
    /// Charlm: the text file to model (UTF-8). [default: embedded tiny Shakespeare]
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Charlm: carry the state across consecutive windows (truncated BPTT).
    #[arg(long)]
    pub tbptt: bool,
    /// Charlm: evaluate on the first N validation batches only. [default: all]
    #[arg(long)]
    pub val_batches: Option<usize>,
    /// Optimizer: sgd, adam, adamw.
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Learning rate. [default: sum 0.01, adding 1e-3, copy 1e-3, charlm 2e-3]
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw). [default: 0, adamw 0.01]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this value. [default: none for sum, 1 adding/copy, 5 charlm]
    #[arg(long)]
    pub clip: Option<f64>,
    /// Disable gradient clipping.
    #[arg(long, conflicts_with = "clip")]
    pub no_clip: bool,
    /// Learning-rate schedule: constant, step:SIZE:GAMMA, or cosine[:MIN_LR[:TOTAL]] (TOTAL
    /// defaults to --steps; keep it fixed to extend a cosine run with --resume).
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Optimisation steps. [default: sum 2000, adding 5000, copy 3000, charlm 3000]
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the training data (sum, charlm) instead of --steps.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Evaluate every N steps and at the end (0: only at the end). [default: steps/10]
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps and at the end (0: only at the end). [default: the evaluation interval]
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Seed of the initialisation and every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads for large matrix products. [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run directory (model, checkpoint, metrics, summary). [default: runs/<task>-<model>]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from <out>/checkpoint.safetensors up to --steps (same options as the first run).
    #[arg(long)]
    pub resume: bool,
    /// Start over in an --out directory that already holds a run, replacing its files.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Metrics log format: jsonl or csv.
    #[arg(long, default_value = "jsonl")]
    pub log_format: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Everything a run needs, with the per-task defaults filled in.
pub struct Plan {
    pub task: TaskSpec,
    pub model: ModelSpec,
    pub batch: usize,
    pub opts: TrainOptions,
}

impl TrainArgs {
    /// Resolves defaults and validates the combination; `notes` receives warnings about options
    /// that have no effect.
    pub fn plan(&self, notes: &mut Vec<String>) -> Result<Plan> {
        let t = self.task;
        self.check_task_options()?;
        let kind: CellKind = match &self.model {
            Some(m) => m.parse()?,
            None if t == TaskName::Sum => CellKind::Tanh,
            None => CellKind::Lstm,
        };
        let hidden = self.hidden.unwrap_or(pick(t, 10, 128, 128, 256));
        let mut batch = self.batch.unwrap_or(pick(t, 100, 64, 64, 32));
        let seq_len = self.seq_len.unwrap_or(pick(t, 5, 100, 0, 64));
        let train_size = positive("--train-size", self.train_size.unwrap_or(100))?;
        let val_size = positive("--val-size", self.val_size.unwrap_or(1000))?;
        positive("--batch", batch)?;
        if t == TaskName::Sum && batch > train_size {
            notes.push(format!(
                "--batch {batch} is larger than the training set: using all {train_size} sequences per step"
            ));
            batch = train_size;
        }
        let task = match t {
            TaskName::Sum => TaskSpec::Sum {
                seq_len,
                train_size,
                test_size: val_size,
            },
            TaskName::Adding => TaskSpec::Adding { seq_len, val_size },
            TaskName::Copy => TaskSpec::Copy {
                symbols: self.symbols.unwrap_or(8),
                len: self.copy_len.unwrap_or(10),
                delay: self.delay.unwrap_or(10),
                val_size,
            },
            TaskName::Charlm => TaskSpec::CharLm {
                seq_len,
                train_fraction: 0.9,
                tbptt: self.tbptt,
                text: match &self.text {
                    // The absolute path, so `./a.txt` and `a.txt` resume the same run.
                    Some(p) => Some(std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?),
                    None => None,
                },
                val_batches: self
                    .val_batches
                    .map(|n| positive("--val-batches", n))
                    .transpose()?,
            },
        };
        if self.dropout > 0.0 && self.layers == 1 {
            notes.push(
                "--dropout acts between stacked recurrent layers: with --layers 1 it has no effect"
                    .into(),
            );
        }
        let model = ModelSpec {
            kind,
            hidden,
            layers: self.layers,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
            embedding: self.embedding.unwrap_or(64),
            init: RecurrentInit {
                forget_bias: self.forget_bias,
                orthogonal_recurrent: self.orthogonal,
            },
        };

        let kind_o: OptimizerKind = self.optimizer.parse()?;
        let mut optimizer =
            OptimizerSpec::new(kind_o, self.lr.unwrap_or(pick(t, 0.01, 1e-3, 1e-3, 2e-3)));
        optimizer.momentum = self.momentum;
        optimizer.nesterov = self.nesterov;
        if let Some(wd) = self.weight_decay {
            optimizer.weight_decay = wd;
        }
        build_optimizer::<f32>(&optimizer)?; // reject bad settings before any data is prepared
        let steps = match (self.steps, self.epochs) {
            (Some(s), _) => positive("--steps", s)?,
            (None, Some(e)) => positive("--epochs", e)? * self.steps_per_epoch(&task, batch)?,
            (None, None) => pick(t, 2000, 5000, 3000, 3000),
        };
        let clip = if self.no_clip {
            None
        } else {
            self.clip.or(pick(t, None, Some(1.0), Some(1.0), Some(5.0)))
        };
        if let Some(c) = clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::invalid(
                "train",
                "--clip",
                format!("must be a positive number, got {c}"),
            ));
        }
        let schedule = Schedule::parse(&self.schedule, steps)?;
        let eval_every = self.eval_every.unwrap_or((steps / 10).max(1));
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", task.name(), kind)));
        let opts = TrainOptions {
            steps,
            optimizer,
            schedule: LrSchedule::new(schedule, self.warmup),
            clip,
            eval_every,
            checkpoint_every: self.checkpoint_every.unwrap_or(eval_every),
            out_dir: Some(out),
            log_format: self.log_format.parse::<LogFormat>()?,
            seed: self.seed,
            resume: self.resume,
            overwrite: self.overwrite,
            progress: !self.quiet,
            label: format!("{} {}", task.name(), kind),
        };
        Ok(Plan {
            task,
            model,
            batch,
            opts,
        })
    }

    /// Options that belong to one task are refused for the others.
    fn check_task_options(&self) -> Result<()> {
        let t = self.task;
        let given = |name: &'static str, set: bool, allowed: &[TaskName]| -> Result<()> {
            if set && !allowed.contains(&t) {
                let names: Vec<String> = allowed
                    .iter()
                    .map(|a| format!("{a:?}").to_lowercase())
                    .collect();
                return Err(Error::invalid(
                    "train",
                    name,
                    format!("applies to --task {} only", names.join(" or ")),
                ));
            }
            Ok(())
        };
        use TaskName::*;
        given("--train-size", self.train_size.is_some(), &[Sum])?;
        given("--val-size", self.val_size.is_some(), &[Sum, Adding, Copy])?;
        given("--symbols", self.symbols.is_some(), &[Copy])?;
        given("--copy-len", self.copy_len.is_some(), &[Copy])?;
        given("--delay", self.delay.is_some(), &[Copy])?;
        given("--seq-len", self.seq_len.is_some(), &[Sum, Adding, Charlm])?;
        given("--embedding", self.embedding.is_some(), &[Copy, Charlm])?;
        given("--text", self.text.is_some(), &[Charlm])?;
        given("--tbptt", self.tbptt, &[Charlm])?;
        given("--val-batches", self.val_batches.is_some(), &[Charlm])?;
        if t == Charlm && self.bidirectional {
            return Err(Error::invalid(
                "train",
                "--bidirectional",
                "a language model predicts each character from the ones before it; \
                 a reversed direction would read the very character it has to predict",
            ));
        }
        Ok(())
    }

    fn steps_per_epoch(&self, task: &TaskSpec, batch: usize) -> Result<u64> {
        match task {
            TaskSpec::Sum { train_size, .. } => Ok(train_size.div_ceil(batch.max(1)) as u64),
            TaskSpec::CharLm { seq_len, text, .. } => {
                let chars = match text {
                    Some(p) => skipgate::data::text::TextCorpus::from_file(p)?.len(),
                    None => skipgate::data::text::TextCorpus::shakespeare().len(),
                };
                Ok(((chars as f64 * 0.9) as usize / (batch * seq_len).max(1)).max(1) as u64)
            }
            _ => Err(Error::invalid(
                "train",
                "--epochs",
                format!(
                    "the {} task draws fresh data every step: use --steps",
                    task.name()
                ),
            )),
        }
    }
}

/// `value` unless it is zero.
fn positive<T: PartialEq + Default + std::fmt::Display>(flag: &'static str, value: T) -> Result<T> {
    if value == T::default() {
        Err(Error::invalid("train", flag, "must be at least 1"))
    } else {
        Ok(value)
    }
}

/// The per-task default: `pick(task, sum, adding, copy, charlm)`.
fn pick<T>(task: TaskName, sum: T, adding: T, copy: T, charlm: T) -> T {
    match task {
        TaskName::Sum => sum,
        TaskName::Adding => adding,
        TaskName::Copy => copy,
        TaskName::Charlm => charlm,
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    crate::set_threads(args.threads)?;
    let mut notes = Vec::new();
    let plan = args.plan(&mut notes)?;
    let out = plan.opts.out_dir.clone().expect("set by plan");
    let report = match &plan.task {
        TaskSpec::Sum { .. } | TaskSpec::Adding { .. } => {
            let task = RegressionTask::new(
                plan.task.clone(),
                plan.model.clone(),
                plan.batch,
                plan.opts.seed,
            )?;
            run_task(task, &plan, &notes)?
        }
        TaskSpec::Copy { .. } => {
            let task = CopyTask::new(plan.task.clone(), plan.model.clone(), plan.batch)?;
            run_task(task, &plan, &notes)?
        }
        TaskSpec::CharLm { .. } => {
            let task = CharLmTask::new(plan.task.clone(), plan.model.clone(), plan.batch)?;
            run_task(task, &plan, &notes)?
        }
    };
    print_summary(&report, &out);
    Ok(())
}

/// Announces the run (once its data is ready), trains, and reports the parameter count.
fn run_task<T: TrainTask>(mut task: T, plan: &Plan, notes: &[String]) -> Result<TrainReport> {
    let o = &plan.opts;
    crate::note!(
        "training {} on {} for {} steps (batch {}, {} lr {}{}), seed {}, writing to {}",
        describe(&plan.model),
        plan.task.name(),
        o.steps,
        plan.batch,
        o.optimizer.kind,
        fmt_value(o.optimizer.lr),
        o.clip.map(|c| format!(", clip {c}")).unwrap_or_default(),
        o.seed,
        o.out_dir.as_ref().expect("set by plan").display()
    );
    for n in notes {
        crate::note!("note: {n}");
    }
    let (mut model, report) = train(&mut task, o)?;
    for n in &report.notes {
        crate::note!("note: {n}");
    }
    crate::note!(
        "model: {} parameters",
        skipgate::Module::num_params(&mut model)
    );
    Ok(report)
}

/// `lstm 1×256`, `gru 2×128 bidirectional`.
pub fn describe(m: &ModelSpec) -> String {
    format!(
        "{} {}×{}{}",
        m.kind,
        m.layers,
        m.hidden,
        if m.bidirectional {
            " bidirectional"
        } else {
            ""
        }
    )
}

fn print_summary(r: &TrainReport, out: &std::path::Path) {
    if r.start_step == r.steps {
        crate::say!(
            "steps            {} (nothing to train: the checkpoint is already there)",
            r.steps
        );
    } else {
        crate::say!("steps            {} (from {})", r.steps, r.start_step);
        crate::say!("final train loss {}", fmt_value(r.final_train_loss));
    }
    if let Some(last) = r.evals.last() {
        crate::say!("evaluation       {}", fmt_metrics(&last.metrics));
    }
    if r.start_step < r.steps {
        crate::say!(
            "throughput       {} {}/s",
            human(r.items_per_s),
            r.item_name
        );
    }
    crate::say!("time             {:.1} s", r.seconds);
    crate::say!("written          {}", out.display());
}
