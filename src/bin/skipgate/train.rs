//! `skipgate train`: one training run of a task, with checkpoints, metrics and a summary.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use skipgate::models::resnet::ResNetConfig;
use skipgate::optim::{LrSchedule, OptimizerKind, OptimizerSpec, Schedule, build_optimizer};
use skipgate::rnn::{CellKind, RecurrentInit};
use skipgate::train::tasks::{CharLmTask, CopyTask, ImageDataset, ImageTask, RegressionTask};
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
    /// Fashion-MNIST (default directory /usr/share/datasets/fashion-mnist).
    FashionMnist,
    /// MNIST (IDX files in --data-dir; without it, the embedded 10k test set split 8000/2000).
    Mnist,
    /// CIFAR-10 (binary batches in --data-dir).
    Cifar10,
    /// The embedded 8×8 digits (1797 images, split 1437/360).
    Digits,
}

impl TaskName {
    fn image_dataset(self) -> Option<ImageDataset> {
        match self {
            TaskName::FashionMnist => Some(ImageDataset::FashionMnist),
            TaskName::Mnist => Some(ImageDataset::Mnist),
            TaskName::Cifar10 => Some(ImageDataset::Cifar10),
            TaskName::Digits => Some(ImageDataset::Digits),
            _ => None,
        }
    }
}

/// The settings a task uses unless told otherwise.
struct Defaults {
    model: &'static str,
    hidden: usize,
    batch: usize,
    seq_len: usize,
    optimizer: &'static str,
    lr: f64,
    momentum: f64,
    weight_decay: Option<f64>,
    clip: Option<f64>,
    schedule: &'static str,
    steps: u64,
    epochs: Option<u64>,
}

fn defaults(task: TaskName) -> Defaults {
    let sequence = Defaults {
        model: "lstm",
        hidden: 128,
        batch: 64,
        seq_len: 100,
        optimizer: "adam",
        lr: 1e-3,
        momentum: 0.0,
        weight_decay: None,
        clip: Some(1.0),
        schedule: "constant",
        steps: 3000,
        epochs: None,
    };
    let images = Defaults {
        model: "resnet20",
        batch: 128,
        optimizer: "sgd",
        lr: 0.1,
        momentum: 0.9,
        weight_decay: Some(5e-4),
        clip: None,
        schedule: "cosine",
        ..sequence
    };
    match task {
        TaskName::Sum => Defaults {
            model: "rnn",
            hidden: 10,
            batch: 100,
            seq_len: 5,
            lr: 0.01,
            clip: None,
            steps: 2000,
            ..sequence
        },
        TaskName::Adding => Defaults {
            steps: 5000,
            ..sequence
        },
        TaskName::Copy => sequence,
        TaskName::Charlm => Defaults {
            hidden: 256,
            batch: 32,
            seq_len: 64,
            lr: 2e-3,
            clip: Some(5.0),
            ..sequence
        },
        TaskName::FashionMnist => Defaults {
            epochs: Some(15),
            ..images
        },
        TaskName::Mnist => Defaults {
            epochs: Some(10),
            ..images
        },
        TaskName::Cifar10 => Defaults {
            epochs: Some(30),
            ..images
        },
        TaskName::Digits => Defaults {
            batch: 64,
            epochs: Some(30),
            ..images
        },
    }
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Task to train on.
    #[arg(long, value_enum)]
    pub task: TaskName,
    /// Sequence tasks: rnn (tanh), rnn-relu, lstm, gru [default: rnn for sum, lstm otherwise].
    /// Image tasks: [preact-](resnet|plain)DEPTH[-a|-b], e.g. resnet20, plain56, preact-resnet110,
    /// resnet18 [default: resnet20].
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
    /// Sequences or images per batch. [default: sum 100, adding 64, copy 64, charlm 32, images
    /// 128, digits 64]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Image tasks: the dataset's directory. [default: fashion-mnist /usr/share/datasets/fashion-mnist,
    /// mnist the embedded test set]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image tasks: no random crops and flips during training.
    #[arg(long)]
    pub no_augment: bool,
    /// Image tasks: train on this many images of the training set only.
    #[arg(long)]
    pub train_limit: Option<usize>,
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
    /// Optimizer: sgd, adam, adamw. [default: adam for sequences, sgd for images]
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning rate. [default: sum 0.01, adding 1e-3, copy 1e-3, charlm 2e-3, images 0.1]
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum. [default: 0, images 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// SGD Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (L2 for sgd/adam, decoupled for adamw). [default: 0, adamw 0.01, images 5e-4]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this value. [default: none for sum and images, 1
    /// adding/copy, 5 charlm]
    #[arg(long)]
    pub clip: Option<f64>,
    /// Disable gradient clipping.
    #[arg(long, conflicts_with = "clip")]
    pub no_clip: bool,
    /// Learning-rate schedule: constant, step:SIZE:GAMMA, or cosine[:MIN_LR[:TOTAL]] (TOTAL
    /// defaults to --steps; keep it fixed to extend a cosine run with --resume). [default:
    /// constant for sequences, cosine for images]
    #[arg(long)]
    pub schedule: Option<String>,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Optimisation steps. [default: sum 2000, adding 5000, copy 3000, charlm 3000]
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the training data (sum, charlm, images) instead of --steps. [default:
    /// fashion-mnist 15, mnist 10, cifar10 30, digits 30]
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Evaluate every N steps and at the end (0: only at the end). [default: steps/10, images
    /// every epoch]
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
    /// Run directory (model, checkpoint, metrics, summary, report.html with its figures).
    /// [default: runs/<task>-<model>]
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
    pub model: PlannedModel,
    pub batch: usize,
    pub opts: TrainOptions,
}

/// The network a plan trains.
pub enum PlannedModel {
    Recurrent(ModelSpec),
    Residual(ResNetConfig),
}

impl TrainArgs {
    /// Resolves defaults and validates the combination; `notes` receives warnings about options
    /// that have no effect.
    pub fn plan(&self, notes: &mut Vec<String>) -> Result<Plan> {
        let t = self.task;
        let d = defaults(t);
        self.check_task_options()?;
        let mut batch = positive("--batch", self.batch.unwrap_or(d.batch))?;
        let (task, model, model_name) = match t.image_dataset() {
            Some(dataset) => {
                let name = self.model.as_deref().unwrap_or(d.model);
                let cfg: ResNetConfig = name.parse().map_err(|e| {
                    if name.parse::<CellKind>().is_ok() {
                        wrong_family(t, "an image network (resnet20, plain56, resnet18, …)", name)
                    } else {
                        e
                    }
                })?;
                let task = TaskSpec::Images {
                    dataset,
                    data_dir: self.data_dir.clone(),
                    augment: !self.no_augment,
                    train_limit: self
                        .train_limit
                        .map(|n| positive("--train-limit", n))
                        .transpose()?,
                };
                (task, PlannedModel::Residual(cfg.clone()), cfg.to_string())
            }
            None => {
                let (task, spec) = self.sequence_task(&d, &mut batch, notes)?;
                let name = spec.kind.to_string();
                (task, PlannedModel::Recurrent(spec), name)
            }
        };

        let kind_o: OptimizerKind = self.optimizer.as_deref().unwrap_or(d.optimizer).parse()?;
        let mut optimizer = OptimizerSpec::new(kind_o, self.lr.unwrap_or(d.lr));
        optimizer.momentum = self.momentum.unwrap_or(if kind_o == OptimizerKind::Sgd {
            d.momentum
        } else {
            0.0
        });
        optimizer.nesterov = self.nesterov;
        if let Some(wd) = self.weight_decay.or(d.weight_decay) {
            optimizer.weight_decay = wd;
        }
        build_optimizer::<f32>(&optimizer)?; // reject bad settings before any data is prepared
        let steps = match (self.steps, self.epochs.or(d.epochs)) {
            (Some(s), _) => positive("--steps", s)?,
            (None, Some(e)) => positive("--epochs", e)? * self.steps_per_epoch(&task, batch)?,
            (None, None) => d.steps,
        };
        let clip = if self.no_clip {
            None
        } else {
            self.clip.or(d.clip)
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
        let schedule = Schedule::parse(self.schedule.as_deref().unwrap_or(d.schedule), steps)?;
        let default_eval = match t.image_dataset() {
            Some(_) => self.steps_per_epoch(&task, batch)?,
            None => (steps / 10).max(1),
        };
        let eval_every = self.eval_every.unwrap_or(default_eval);
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", task.name(), model_name)));
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
            label: format!("{} {}", task.name(), model_name),
            command: crate::command_line(),
        };
        Ok(Plan {
            task,
            model,
            batch,
            opts,
        })
    }

    /// The task and recurrent model of a sequence task.
    fn sequence_task(
        &self,
        d: &Defaults,
        batch: &mut usize,
        notes: &mut Vec<String>,
    ) -> Result<(TaskSpec, ModelSpec)> {
        let t = self.task;
        let name = self.model.as_deref().unwrap_or(d.model);
        let kind: CellKind = name.parse().map_err(|e| {
            if name.parse::<ResNetConfig>().is_ok() {
                wrong_family(t, "a recurrent model (rnn, rnn-relu, lstm, gru)", name)
            } else {
                e
            }
        })?;
        let seq_len = self.seq_len.unwrap_or(d.seq_len);
        let train_size = positive("--train-size", self.train_size.unwrap_or(100))?;
        let val_size = positive("--val-size", self.val_size.unwrap_or(1000))?;
        if t == TaskName::Sum && *batch > train_size {
            notes.push(format!(
                "--batch {batch} is larger than the training set: using all {train_size} sequences per step"
            ));
            *batch = train_size;
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
            _ => TaskSpec::CharLm {
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
            hidden: self.hidden.unwrap_or(d.hidden),
            layers: self.layers,
            bidirectional: self.bidirectional,
            dropout: self.dropout,
            embedding: self.embedding.unwrap_or(64),
            init: RecurrentInit {
                forget_bias: self.forget_bias,
                orthogonal_recurrent: self.orthogonal,
            },
        };
        Ok((task, model))
    }

    /// Options that belong to some tasks are refused for the others.
    fn check_task_options(&self) -> Result<()> {
        let t = self.task;
        let given = |name: &'static str, set: bool, allowed: &[TaskName]| -> Result<()> {
            if set && !allowed.contains(&t) {
                let names: Vec<String> = allowed
                    .iter()
                    .map(|a| a.to_possible_value().expect("named").get_name().to_string())
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
        const IMAGES: [TaskName; 4] = [FashionMnist, Mnist, Cifar10, Digits];
        const SEQUENCES: [TaskName; 4] = [Sum, Adding, Copy, Charlm];
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
        given("--hidden", self.hidden.is_some(), &SEQUENCES)?;
        given("--layers", self.layers != 1, &SEQUENCES)?;
        given("--bidirectional", self.bidirectional, &SEQUENCES)?;
        given("--dropout", self.dropout != 0.0, &SEQUENCES)?;
        given("--forget-bias", self.forget_bias.is_some(), &SEQUENCES)?;
        given("--orthogonal", self.orthogonal, &SEQUENCES)?;
        given("--data-dir", self.data_dir.is_some(), &IMAGES)?;
        given("--no-augment", self.no_augment, &IMAGES)?;
        given("--train-limit", self.train_limit.is_some(), &IMAGES)?;
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
            TaskSpec::Images {
                dataset,
                data_dir,
                train_limit,
                ..
            } => {
                let n = image_train_size(*dataset, data_dir.as_deref())?;
                let n = train_limit.map_or(n, |l| l.min(n));
                Ok((n / batch.max(1)).max(1) as u64)
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

/// Training images of a dataset, read from the label file's header (cheap) where there is one.
fn image_train_size(dataset: ImageDataset, data_dir: Option<&std::path::Path>) -> Result<usize> {
    Ok(match dataset {
        ImageDataset::Digits => 1437,
        ImageDataset::Mnist if data_dir.is_none() => 8000,
        ImageDataset::Cifar10 => 50_000,
        _ => dataset.load(data_dir)?.0.len(),
    })
}

/// `value` unless it is zero.
fn positive<T: PartialEq + Default + std::fmt::Display>(flag: &'static str, value: T) -> Result<T> {
    if value == T::default() {
        Err(Error::invalid("train", flag, "must be at least 1"))
    } else {
        Ok(value)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    crate::set_threads(args.threads)?;
    let mut notes = Vec::new();
    let plan = args.plan(&mut notes)?;
    let out = plan.opts.out_dir.clone().expect("set by plan");
    let report = match (&plan.task, &plan.model) {
        (TaskSpec::Sum { .. } | TaskSpec::Adding { .. }, PlannedModel::Recurrent(m)) => {
            let task =
                RegressionTask::new(plan.task.clone(), m.clone(), plan.batch, plan.opts.seed)?;
            run_task(task, &plan, &notes)?
        }
        (TaskSpec::Copy { .. }, PlannedModel::Recurrent(m)) => run_task(
            CopyTask::new(plan.task.clone(), m.clone(), plan.batch)?,
            &plan,
            &notes,
        )?,
        (TaskSpec::CharLm { .. }, PlannedModel::Recurrent(m)) => run_task(
            CharLmTask::new(plan.task.clone(), m.clone(), plan.batch)?,
            &plan,
            &notes,
        )?,
        (TaskSpec::Images { .. }, PlannedModel::Residual(m)) => run_task(
            ImageTask::new(plan.task.clone(), m.clone(), plan.batch)?,
            &plan,
            &notes,
        )?,
        _ => unreachable!("plan pairs image tasks with residual networks"),
    };
    print_summary(&report, &out);
    Ok(())
}

/// Announces the run (once its data is ready), trains, and reports the parameter count.
fn run_task<T: TrainTask>(mut task: T, plan: &Plan, notes: &[String]) -> Result<TrainReport> {
    let o = &plan.opts;
    crate::note!(
        "training {} on {} for {} steps (batch {}, {} lr {}{}{}), seed {}, writing to {}",
        describe(&plan.model),
        plan.task.name(),
        o.steps,
        plan.batch,
        o.optimizer.kind,
        fmt_value(o.optimizer.lr),
        o.schedule_note(),
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

/// `lstm 1×256`, `gru 2×128 bidirectional`, `resnet20`.
pub fn describe(m: &PlannedModel) -> String {
    match m {
        PlannedModel::Recurrent(m) => format!(
            "{} {}×{}{}",
            m.kind,
            m.layers,
            m.hidden,
            if m.bidirectional {
                " bidirectional"
            } else {
                ""
            }
        ),
        PlannedModel::Residual(c) => c.to_string(),
    }
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

/// The error for a `--model` that the task cannot train.
fn wrong_family(task: TaskName, expected: &str, got: &str) -> skipgate::Error {
    skipgate::Error::invalid(
        "train",
        "--model",
        format!(
            "task {} trains {expected}; got {got:?}",
            task.to_possible_value()
                .expect("no skipped variants")
                .get_name()
        ),
    )
}
