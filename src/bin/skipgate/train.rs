//! `skipgate train`: one training run of a task, with checkpoints, metrics and a summary.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use skipgate::optim::{LrSchedule, OptimizerKind, OptimizerSpec, Schedule};
use skipgate::rnn::{CellKind, RecurrentInit};
use skipgate::train::tasks::{CharLmTask, CopyTask, RegressionTask};
use skipgate::train::{
    LogFormat, ModelSpec, TaskSpec, TrainOptions, TrainReport, TrainTask, fmt_metrics, human, train,
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
    /// Embedding width (copy, charlm).
    #[arg(long, default_value_t = 64)]
    pub embedding: usize,
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
    /// Training-set size of the sum task (the course uses 100).
    #[arg(long, default_value_t = 100)]
    pub train_size: usize,
    /// Size of the held-out set (sum, adding, copy).
    #[arg(long, default_value_t = 1000)]
    pub val_size: usize,
    /// Copy task: alphabet size K.
    #[arg(long, default_value_t = 8)]
    pub symbols: usize,
    /// Copy task: symbols to remember S.
    #[arg(long, default_value_t = 10)]
    pub copy_len: usize,
    /// Copy task: blank steps between the symbols and the delimiter.
    #[arg(long, default_value_t = 10)]
    pub delay: usize,
    /// Charlm: the text file to model (UTF-8). [default: embedded tiny Shakespeare]
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Charlm: carry the state across consecutive windows (truncated BPTT).
    #[arg(long)]
    pub tbptt: bool,
    /// Charlm: evaluate on at most this many validation batches. [default: all]
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
    /// Learning-rate schedule: constant, step:SIZE:GAMMA, cosine, cosine:MIN_LR.
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
    /// Evaluate every N steps (and at the end). [default: steps/10]
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps (and at the end). [default: the evaluation interval]
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
    /// Continue from <out>/checkpoint.safetensors up to --steps.
    #[arg(long)]
    pub resume: bool,
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
    /// Resolves defaults and validates the combination.
    pub fn plan(&self) -> Result<Plan> {
        let t = self.task;
        let kind: CellKind = match &self.model {
            Some(m) => m.parse()?,
            None if t == TaskName::Sum => CellKind::Tanh,
            None => CellKind::Lstm,
        };
        let hidden = self.hidden.unwrap_or(pick(t, 10, 128, 128, 256));
        let batch = self.batch.unwrap_or(pick(t, 100, 64, 64, 32));
        let seq_len = self.seq_len.unwrap_or(pick(t, 5, 100, 0, 64));
        if self.seq_len.is_some() && t == TaskName::Copy {
            return Err(Error::invalid(
                "--seq-len",
                "copy",
                "the copy task's length is set by --copy-len and --delay",
            ));
        }
        let task = match t {
            TaskName::Sum => TaskSpec::Sum {
                seq_len,
                train_size: self.train_size,
                test_size: self.val_size,
            },
            TaskName::Adding => TaskSpec::Adding {
                seq_len,
                val_size: self.val_size,
            },
            TaskName::Copy => TaskSpec::Copy {
                symbols: self.symbols,
                len: self.copy_len,
                delay: self.delay,
                val_size: self.val_size,
            },
            TaskName::Charlm => TaskSpec::CharLm {
                seq_len,
                train_fraction: 0.9,
                tbptt: self.tbptt,
                text: self.text.clone(),
                val_batches: self.val_batches,
            },
        };
        if t != TaskName::Charlm
            && (self.text.is_some() || self.tbptt || self.val_batches.is_some())
        {
            return Err(Error::invalid(
                "train",
                "--text/--tbptt/--val-batches",
                "apply to --task charlm only",
            ));
        }
        let model = ModelSpec {
            kind,
            hidden,
            layers: self.layers,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
            embedding: self.embedding,
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
        let steps = match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * self.steps_per_epoch(&task, batch)?,
            (None, None) => pick(t, 2000, 5000, 3000, 3000),
        };
        if steps == 0 {
            return Err(Error::invalid("train", "--steps", "must be at least 1"));
        }
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
    let plan = args.plan()?;
    let out = plan.opts.out_dir.clone().expect("set by plan");
    eprintln!(
        "training {} on {} for {} steps (batch {}, {} lr {}{}), seed {}, writing to {}",
        describe(&plan.model),
        plan.task.name(),
        plan.opts.steps,
        plan.batch,
        plan.opts.optimizer.kind,
        plan.opts.optimizer.lr,
        plan.opts
            .clip
            .map(|c| format!(", clip {c}"))
            .unwrap_or_default(),
        plan.opts.seed,
        out.display()
    );
    let report = match &plan.task {
        TaskSpec::Sum { .. } | TaskSpec::Adding { .. } => {
            let mut task = RegressionTask::new(
                plan.task.clone(),
                plan.model.clone(),
                plan.batch,
                plan.opts.seed,
            )?;
            run_task(&mut task, &plan.opts)?
        }
        TaskSpec::Copy { .. } => {
            let mut task = CopyTask::new(plan.task.clone(), plan.model.clone(), plan.batch)?;
            run_task(&mut task, &plan.opts)?
        }
        TaskSpec::CharLm { .. } => {
            let mut task = CharLmTask::new(plan.task.clone(), plan.model.clone(), plan.batch)?;
            run_task(&mut task, &plan.opts)?
        }
    };
    print_summary(&report, &out);
    Ok(())
}

fn run_task<T: TrainTask>(task: &mut T, opts: &TrainOptions) -> Result<TrainReport> {
    let (mut model, report) = train(task, opts)?;
    let params = skipgate::Module::num_params(&mut model);
    eprintln!("model: {params} parameters");
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
    println!("steps            {} (from {})", r.steps, r.start_step);
    println!(
        "final train loss {}",
        skipgate::train::fmt_value(r.final_train_loss)
    );
    if let Some(last) = r.evals.last() {
        println!("evaluation       {}", fmt_metrics(&last.metrics));
    }
    println!(
        "throughput       {} {}/s",
        human(r.items_per_s),
        r.item_name
    );
    println!("time             {:.1} s", r.seconds);
    println!("written          {}", out.display());
}
