//! `skipgate gradients`: how much gradient reaches the early time steps of a recurrent network
//! and the early blocks of a residual or plain network, at initialisation and after training,
//! over several seeds. Printed as tables and written as CSV files with an HTML report.
//!
//! The measurements are made by [`skipgate::diag`]; this module chooses the models, data and
//! seeds, trains, and lays the numbers out. `skipgate lab` uses the same pieces.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use skipgate::diag::{
    DepthProfile, RecurrentSpectrum, TimeProfile, block_gradient_profile, recurrent_spectrum,
    step_gradient_profile, widen,
};
use skipgate::models::SeqRegressor;
use skipgate::models::resnet::{ResNet, ResNetConfig};
use skipgate::optim::{LrSchedule, OptimizerKind, OptimizerSpec, Schedule};
use skipgate::report::{Figure, Plot, Report, Scale, Section, Series, Table, csv_table};
use skipgate::rnn::{CellKind, RecurrentInit};
use skipgate::train::tasks::{ImageDataset, ImageTask, RegressionTask};
use skipgate::train::{ModelSpec, TaskSpec, TrainOptions, TrainTask, fmt_value, train};
use skipgate::{Error, Result, Rng};

/// The data the models are measured (and trained) on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GradTask {
    /// Recurrent models: the adding problem (two marked values of a long sequence).
    Adding,
    /// Recurrent models: the course's sum of a sequence of U(0,1) values.
    Sum,
    /// Image networks: the embedded 8×8 digits.
    Digits,
    /// Image networks: MNIST (--data-dir, or the embedded 10k test set).
    Mnist,
    /// Image networks: Fashion-MNIST (--data-dir, default /usr/share/datasets/fashion-mnist).
    FashionMnist,
    /// Image networks: CIFAR-10 binary batches (--data-dir).
    Cifar10,
}

impl GradTask {
    fn image_dataset(self) -> Option<ImageDataset> {
        match self {
            GradTask::Digits => Some(ImageDataset::Digits),
            GradTask::Mnist => Some(ImageDataset::Mnist),
            GradTask::FashionMnist => Some(ImageDataset::FashionMnist),
            GradTask::Cifar10 => Some(ImageDataset::Cifar10),
            GradTask::Adding | GradTask::Sum => None,
        }
    }
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct GradientsArgs {
    /// Models to measure, comma-separated: recurrent (rnn, rnn-relu, lstm, gru) or image
    /// networks ([preact-](resnet|plain)DEPTH[-a|-b], e.g. resnet20,plain20,resnet56,plain56);
    /// one family per call.
    #[arg(long, value_delimiter = ',', default_value = "rnn,lstm,gru")]
    pub model: Vec<String>,
    /// Data. [default: adding for recurrent models, digits for image networks]
    #[arg(long, value_enum)]
    pub task: Option<GradTask>,
    /// Recurrent models: sequence length T (the loss is taken at step T).
    #[arg(long, default_value_t = 100)]
    pub seq_len: usize,
    /// Recurrent models: hidden units.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// LSTM forget-gate bias at initialisation; PyTorch's default init when absent.
    #[arg(long)]
    pub forget_bias: Option<f64>,
    /// Orthogonal recurrent weights at initialisation.
    #[arg(long)]
    pub orthogonal: bool,
    /// Sequences or images per batch (the measured batch and the training batches).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Number of seeds: --seed, --seed + 1, …; medians are taken over them.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training steps before the second measurement (0: at initialisation only). Recurrent:
    /// Adam 1e-3 (adding, clip 1) or 1e-2 (sum); images: SGD 0.1 with momentum 0.9, wd 5e-4,
    /// 20 warm-up steps, cosine decay. [default: 300 recurrent, 100 images]
    #[arg(long)]
    pub train_steps: Option<u64>,
    /// Image tasks: the dataset's directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the CSV files and report.html go. [default: runs/gradients-rnn or runs/gradients-image]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads for large matrix products. [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// When a measurement was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Init,
    /// After this many training steps.
    Trained(u64),
}

impl Phase {
    /// `init` or `trained` (the CSV column).
    fn key(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::Trained(_) => "trained",
        }
    }

    /// `init` or `300 steps` (a table cell).
    fn short(self) -> String {
        match self {
            Phase::Init => "init".into(),
            Phase::Trained(n) => format!("{n} steps"),
        }
    }

    /// `at initialisation` or `after 300 training steps`.
    fn describe(self) -> String {
        match self {
            Phase::Init => "at initialisation".into(),
            Phase::Trained(n) => format!("after {n} training steps"),
        }
    }
}

/// One recurrent measurement.
pub struct TimeRun {
    pub model: String,
    pub seed: u64,
    pub phase: Phase,
    pub profile: TimeProfile,
    pub spectrum: RecurrentSpectrum,
}

/// One image-network measurement.
pub struct DepthRun {
    pub model: String,
    pub seed: u64,
    pub phase: Phase,
    pub profile: DepthProfile,
}

/// What the recurrent measurements run on.
pub struct TimeSetup {
    pub kinds: Vec<CellKind>,
    pub task: GradTask,
    pub seq_len: usize,
    pub hidden: usize,
    pub init: RecurrentInit,
    pub batch: usize,
    pub seeds: Vec<u64>,
    pub train_steps: u64,
    pub progress: bool,
}

/// What the image measurements run on.
pub struct DepthSetup {
    pub models: Vec<ResNetConfig>,
    pub task: TaskSpec,
    pub batch: usize,
    pub seeds: Vec<u64>,
    pub train_steps: u64,
    pub progress: bool,
}

/// The SGD settings image networks train with here and in the lab: momentum 0.9, weight decay
/// 5e-4, 20 warm-up steps (fewer for short runs), cosine decay of `lr` over `steps`.
pub fn image_sgd(lr: f64, steps: u64) -> (OptimizerSpec, LrSchedule) {
    let mut optimizer = OptimizerSpec::new(OptimizerKind::Sgd, lr);
    optimizer.momentum = 0.9;
    optimizer.weight_decay = 5e-4;
    let schedule = LrSchedule::new(
        Schedule::Cosine {
            total_steps: steps,
            min_lr: 0.0,
        },
        20.min(steps / 2),
    );
    (optimizer, schedule)
}

/// ‖∂L/∂h_t‖ of `model` on the first `batch` held-out sequences of `task`, measured in f64 (a
/// vanishing gradient soon falls below what f32 can hold), and the singular values of its
/// first layer's recurrent weights.
pub fn time_run(
    model: &mut SeqRegressor<f32>,
    task: &RegressionTask,
    batch: usize,
    name: &str,
    seed: u64,
    phase: Phase,
) -> Result<TimeRun> {
    let held_out = task.held_out();
    let probe = held_out.batch(&(0..batch.min(held_out.len())).collect::<Vec<_>>())?;
    let (x, y) = (probe.x.mapv(f64::from), probe.y.mapv(f64::from));
    let mut wide = widen(model)?;
    let profile = step_gradient_profile(&mut wide, x.view(), y.view(), &mut Rng::seed(seed))?;
    Ok(TimeRun {
        model: name.to_string(),
        seed,
        phase,
        profile,
        spectrum: recurrent_spectrum(&model.rnn, 0)?,
    })
}

/// ‖∂L/∂h_t‖ of every model and seed on the first `batch` held-out sequences, at initialisation
/// and (if `train_steps > 0`) after training.
pub fn measure_time(setup: &TimeSetup) -> Result<Vec<TimeRun>> {
    let mut runs = Vec::new();
    for &kind in &setup.kinds {
        for &seed in &setup.seeds {
            let mut model_spec = ModelSpec::new(kind, setup.hidden);
            model_spec.init = setup.init.clone();
            if kind != CellKind::Lstm {
                model_spec.init.forget_bias = None; // only the LSTM has a forget gate
            }
            let (spec, lr, clip) = match setup.task {
                GradTask::Sum => (
                    TaskSpec::Sum {
                        seq_len: setup.seq_len,
                        train_size: 100,
                        test_size: setup.batch.max(100),
                    },
                    1e-2,
                    None,
                ),
                _ => (
                    TaskSpec::Adding {
                        seq_len: setup.seq_len,
                        val_size: setup.batch,
                    },
                    1e-3,
                    Some(1.0),
                ),
            };
            let mut task = RegressionTask::new(spec, model_spec, setup.batch, seed)?;
            let name = kind.name();
            // The same model `train` starts from: built from Rng::seed(seed).
            let mut model = task.build_model(&mut Rng::seed(seed))?;
            runs.push(time_run(
                &mut model,
                &task,
                setup.batch,
                name,
                seed,
                Phase::Init,
            )?);
            if setup.train_steps > 0 {
                let mut o = TrainOptions::new(
                    setup.train_steps,
                    OptimizerSpec::new(OptimizerKind::Adam, lr),
                );
                o.clip = clip;
                o.seed = seed;
                o.progress = setup.progress;
                o.label = format!("{kind} seed {seed}");
                let (mut trained, _) = train(&mut task, &o)?;
                let phase = Phase::Trained(setup.train_steps);
                runs.push(time_run(
                    &mut trained,
                    &task,
                    setup.batch,
                    name,
                    seed,
                    phase,
                )?);
            }
        }
    }
    Ok(runs)
}

/// The batch image networks are measured on: the first `batch` training images, normalised as
/// in training, without augmentation.
pub struct DepthProbe {
    x: ndarray::Array4<f32>,
    labels: Vec<usize>,
}

impl DepthProbe {
    pub fn new(task: &ImageTask, batch: usize) -> Result<Self> {
        let (train_set, _) = task.data();
        let normalize = skipgate::data::images::Normalize::from_data(train_set)?;
        let (x, labels) = skipgate::data::images::batch(
            train_set,
            &(0..batch.min(train_set.len())).collect::<Vec<_>>(),
            &normalize,
            None,
            &mut Rng::seed(0),
        )?;
        Ok(DepthProbe { x, labels })
    }

    /// ‖∂L/∂x‖ at every block of `net` on the probe batch.
    pub fn run(
        &self,
        net: &mut ResNet<f32>,
        name: &str,
        seed: u64,
        phase: Phase,
    ) -> Result<DepthRun> {
        Ok(DepthRun {
            model: name.to_string(),
            seed,
            phase,
            profile: block_gradient_profile(net, self.x.view(), &self.labels)?,
        })
    }
}

/// ‖∂L/∂x‖ at every block of every network and seed on the first `batch` training images, at
/// initialisation and (if `train_steps > 0`) after training.
pub fn measure_depth(setup: &DepthSetup) -> Result<Vec<DepthRun>> {
    let mut runs = Vec::new();
    for config in &setup.models {
        let mut task = ImageTask::new(setup.task.clone(), config.clone(), setup.batch)?;
        let probe = DepthProbe::new(&task, setup.batch)?;
        let name = config.to_string();
        for &seed in &setup.seeds {
            let mut net = task.build_model(&mut Rng::seed(seed))?;
            runs.push(probe.run(&mut net, &name, seed, Phase::Init)?);
            if setup.train_steps > 0 {
                let (optimizer, schedule) = image_sgd(0.1, setup.train_steps);
                let o = TrainOptions {
                    schedule,
                    seed,
                    progress: setup.progress,
                    label: format!("{config} seed {seed}"),
                    ..TrainOptions::new(setup.train_steps, optimizer)
                };
                let (mut trained, _) = train(&mut task, &o)?;
                let phase = Phase::Trained(setup.train_steps);
                runs.push(probe.run(&mut trained, &name, seed, phase)?);
            }
        }
    }
    Ok(runs)
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Models in first-seen order and the phases measured, so tables and figures keep that order.
fn groups<'a>(runs: impl Iterator<Item = (&'a str, Phase)>) -> (Vec<String>, Vec<Phase>) {
    let (mut models, mut phases) = (Vec::<String>::new(), Vec::<Phase>::new());
    for (m, p) in runs {
        if !models.iter().any(|x| x == m) {
            models.push(m.to_string());
        }
        if !phases.contains(&p) {
            phases.push(p);
        }
    }
    (models, phases)
}

/// Per-element median over the runs' curves (all of the same length).
fn median_curve(curves: &[Vec<f64>]) -> Vec<f64> {
    (0..curves[0].len())
        .map(|i| median(&curves.iter().map(|c| c[i]).collect::<Vec<_>>()))
        .collect()
}

/// `median [min, max]` of the values, or just the value for one.
fn spread(values: &[f64]) -> String {
    if values.len() == 1 {
        return fmt_value(values[0]);
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{} [{}, {}]",
        fmt_value(median(values)),
        fmt_value(lo),
        fmt_value(hi)
    )
}

fn seeds_note(seeds: &[u64]) -> String {
    match seeds {
        [s] => format!("seed {s}"),
        [first, .., last] => format!("median over {} seeds ({first}–{last})", seeds.len()),
        [] => "no seeds".into(),
    }
}

/// The steps shown in the terminal table: 1, T/4, T/2, 3T/4 (distinct, in order).
fn table_steps(t_len: usize) -> Vec<usize> {
    let mut steps = vec![1, t_len / 4, t_len / 2, 3 * t_len / 4];
    steps.retain(|&t| t >= 1 && t < t_len);
    steps.dedup();
    steps
}

/// The recurrent results: the terminal table, a report table, and one figure per phase.
pub struct TimeResults {
    pub table: Table,
    pub figures: Vec<Figure>,
    /// Every measurement, one row per model, seed, phase and step.
    pub csv: String,
    /// One row per model, seed and phase: reach and singular values.
    pub summary_csv: String,
}

/// Lays out recurrent measurements; `what` describes the setup for titles and captions.
///
/// Figure ids are `<id_prefix>-init` and `<id_prefix>-trained`.
pub fn time_results(
    runs: &[TimeRun],
    what: &str,
    command: &str,
    seeds: &[u64],
    id_prefix: &str,
) -> TimeResults {
    let (models, phases) = groups(runs.iter().map(|r| (r.model.as_str(), r.phase)));
    let t_len = runs.first().map_or(0, |r| r.profile.len());
    let steps = table_steps(t_len);
    let mut header: Vec<String> = vec!["model".into(), "trained".into()];
    header.extend(steps.iter().map(|t| format!("t={t}")));
    header.push(format!("‖∂L/∂h_1‖/‖∂L/∂h_{t_len}‖"));
    header.push("σ_max(W_hh) per gate".into());
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "‖∂L/∂h_t‖ / ‖∂L/∂h_{t_len}‖, {} ({what})",
            seeds_note(seeds)
        ),
        &header_refs,
    );
    let mut figures = Vec::new();
    for &phase in &phases {
        let mut plot = Plot::new(
            "time step t (the loss is taken at the last step)",
            format!("‖∂L/∂h_t‖ / ‖∂L/∂h_{t_len}‖"),
        )
        .y_scale(Scale::Log);
        for model in &models {
            let of: Vec<&TimeRun> = runs
                .iter()
                .filter(|r| &r.model == model && r.phase == phase)
                .collect();
            if of.is_empty() {
                continue;
            }
            let curves: Vec<Vec<f64>> = of.iter().map(|r| r.profile.relative()).collect();
            let mid = median_curve(&curves);
            let mut row = vec![model.clone(), phase.short()];
            row.extend(steps.iter().map(|&t| fmt_value(mid[t - 1])));
            row.push(spread(
                &of.iter().map(|r| r.profile.reach()).collect::<Vec<_>>(),
            ));
            row.push(
                of[0]
                    .spectrum
                    .gates
                    .iter()
                    .enumerate()
                    .map(|(g, (name, _))| {
                        let values: Vec<f64> = of.iter().map(|r| r.spectrum.gates[g].1).collect();
                        format!("{name} {:.3}", median(&values))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            table = table.row(row);
            let points = mid
                .iter()
                .enumerate()
                .map(|(i, &v)| ((i + 1) as f64, v))
                .collect();
            plot = plot.series(Series::new(model.clone(), points));
        }
        figures.push(
            Figure::new(
                format!("{id_prefix}-{}", phase.key()),
                format!("Gradient reaching each time step, {}", phase.describe()),
                plot,
            )
            .caption(format!(
                "The norm of ∂L/∂h_t (over the batch) for every step t, relative to its value at the \
                 last step T = {t_len}, where the loss is taken; {}; {what}. A line that falls to the \
                 left is a gradient that vanishes on its way back through time: the early steps \
                 receive almost no learning signal.",
                seeds_note(seeds)
            ))
            .command(command)
            .seed(seeds.first().copied().unwrap_or(0)),
        );
    }
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for r in runs {
        for (i, (&n, rel)) in r.profile.norms.iter().zip(r.profile.relative()).enumerate() {
            rows.push(vec![
                r.model.clone(),
                r.seed.to_string(),
                r.phase.key().into(),
                (i + 1).to_string(),
                format!("{n:e}"),
                format!("{rel:e}"),
            ]);
        }
        let mut s = vec![
            r.model.clone(),
            r.seed.to_string(),
            r.phase.key().into(),
            format!("{:e}", r.profile.reach()),
            format!("{}", r.spectrum.whole),
        ];
        s.push(
            r.spectrum
                .gates
                .iter()
                .map(|(g, v)| format!("{g}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        summary.push(s);
    }
    TimeResults {
        table,
        figures,
        csv: csv_table(
            &[
                "model",
                "seed",
                "phase",
                "t",
                "grad_norm",
                "relative_to_last",
            ],
            &rows,
        ),
        summary_csv: csv_table(
            &[
                "model",
                "seed",
                "phase",
                "reach_first_over_last",
                "sigma_max_w_hh",
                "sigma_max_per_gate",
            ],
            &summary,
        ),
    }
}

/// The image-network results: a table, one figure per phase, and the CSV data.
pub struct DepthResults {
    pub table: Table,
    pub figures: Vec<Figure>,
    pub csv: String,
}

/// Lays out image-network measurements.
///
/// Figure ids are `<id_prefix>-init` and `<id_prefix>-trained`.
pub fn depth_results(
    runs: &[DepthRun],
    what: &str,
    command: &str,
    seeds: &[u64],
    id_prefix: &str,
) -> DepthResults {
    let (models, phases) = groups(runs.iter().map(|r| (r.model.as_str(), r.phase)));
    let mut table = Table::new(
        format!(
            "‖∂L/∂x‖ at the first block / at the last block's output, {} ({what})",
            seeds_note(seeds)
        ),
        &[
            "model",
            "blocks",
            "trained",
            "first block / output",
            "middle block / output",
        ],
    );
    let mut figures = Vec::new();
    for &phase in &phases {
        let mut plot = Plot::new(
            "block (1 = the first; the last point is the output of the last block)",
            "‖∂L/∂x‖ at the block's input / at the output",
        )
        .y_scale(Scale::Log);
        for model in &models {
            let of: Vec<&DepthRun> = runs
                .iter()
                .filter(|r| &r.model == model && r.phase == phase)
                .collect();
            if of.is_empty() {
                continue;
            }
            let curves: Vec<Vec<f64>> = of
                .iter()
                .map(|r| {
                    let last = r.profile.norms[r.profile.norms.len() - 1];
                    r.profile.norms.iter().map(|n| n / last).collect()
                })
                .collect();
            let mid = median_curve(&curves);
            let blocks = mid.len() - 1;
            table = table.row([
                model.clone(),
                blocks.to_string(),
                phase.short(),
                spread(&curves.iter().map(|c| c[0]).collect::<Vec<_>>()),
                spread(&curves.iter().map(|c| c[blocks / 2]).collect::<Vec<_>>()),
            ]);
            let points = mid
                .iter()
                .enumerate()
                .map(|(i, &v)| ((i + 1) as f64, v))
                .collect();
            plot = plot.series(Series::new(model.clone(), points));
        }
        figures.push(
            Figure::new(
                format!("{id_prefix}-{}", phase.key()),
                format!("Gradient reaching each block, {}", phase.describe()),
                plot,
            )
            .caption(format!(
                "The norm of ∂L/∂x at the input of every block (over the batch, train-mode \
                 BatchNorm), relative to its value at the output of the last block; {}; {what}. \
                 A residual network's identity shortcuts carry the gradient back to the first \
                 block; its plain twin has only the blocks' own Jacobians.",
                seeds_note(seeds)
            ))
            .command(command)
            .seed(seeds.first().copied().unwrap_or(0)),
        );
    }
    let mut rows = Vec::new();
    for r in runs {
        let last = r.profile.norms[r.profile.norms.len() - 1];
        for (b, &n) in r.profile.norms.iter().enumerate() {
            rows.push(vec![
                r.model.clone(),
                r.seed.to_string(),
                r.phase.key().into(),
                (b + 1).to_string(),
                format!("{n:e}"),
                format!("{:e}", n / last),
            ]);
        }
    }
    DepthResults {
        table,
        figures,
        csv: csv_table(
            &[
                "model",
                "seed",
                "phase",
                "block",
                "grad_norm",
                "relative_to_output",
            ],
            &rows,
        ),
    }
}

/// A [`Table`] as aligned plain text for the terminal.
pub fn print_table(t: &Table) {
    let mut widths: Vec<usize> = t.header.iter().map(|h| h.chars().count()).collect();
    for row in &t.rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
    };
    crate::say!("{}", t.title);
    crate::say!("  {}", line(&t.header));
    for row in &t.rows {
        crate::say!("  {}", line(row));
    }
}

/// Recurrent or image models, parsed from `--model`.
enum Family {
    Recurrent(Vec<CellKind>),
    Image(Vec<ResNetConfig>),
}

fn family(names: &[String]) -> Result<Family> {
    if names.is_empty() {
        return Err(Error::invalid(
            "gradients",
            "--model",
            "expected at least one model",
        ));
    }
    let cells: Vec<Option<CellKind>> = names.iter().map(|n| n.parse().ok()).collect();
    if cells.iter().all(Option::is_some) {
        return Ok(Family::Recurrent(cells.into_iter().flatten().collect()));
    }
    let mut configs = Vec::new();
    for (name, cell) in names.iter().zip(&cells) {
        if cell.is_some() {
            return Err(Error::invalid(
                "gradients",
                "--model",
                format!(
                    "{name:?} is a recurrent model and {:?} an image network: measure one family per call",
                    names
                        .iter()
                        .zip(&cells)
                        .find(|(_, c)| c.is_none())
                        .map(|(n, _)| n)
                        .expect("mixed")
                ),
            ));
        }
        configs.push(name.parse::<ResNetConfig>().map_err(|e| {
            Error::invalid(
                "gradients",
                format!("--model {name:?}"),
                format!("expected rnn, rnn-relu, lstm, gru or an image network such as resnet20 or plain56 ({e})"),
            )
        })?);
    }
    Ok(Family::Image(configs))
}

/// A training run's directory is not written into (its report.html would be replaced).
fn refuse_training_run(out: &Path) -> Result<()> {
    if out.join("checkpoint.safetensors").exists() || out.join("model.safetensors").exists() {
        return Err(Error::invalid(
            "gradients",
            "--out",
            format!(
                "{} holds a training run, whose report.html this would replace; choose another directory",
                out.display()
            ),
        ));
    }
    Ok(())
}

/// Writes the files and the report; returns the page's path.
fn write_outputs(out: &Path, report: Report, files: &[(&str, &str)]) -> Result<PathBuf> {
    for (name, text) in files {
        skipgate::io::write_atomic(&out.join(name), text.as_bytes())?;
    }
    report.write(out)
}

pub fn run(args: GradientsArgs) -> Result<()> {
    crate::set_threads(args.threads)?;
    if args.seeds == 0 {
        return Err(Error::invalid("gradients", "--seeds", "must be at least 1"));
    }
    if args.batch < 2 {
        return Err(Error::invalid(
            "gradients",
            "--batch",
            format!("expected at least 2, got {}", args.batch),
        ));
    }
    let seeds: Vec<u64> = (args.seed..args.seed + args.seeds).collect();
    let command = crate::command_line();
    match family(&args.model)? {
        Family::Recurrent(kinds) => {
            let task = args.task.unwrap_or(GradTask::Adding);
            if task.image_dataset().is_some() || args.data_dir.is_some() {
                return Err(Error::invalid(
                    "gradients",
                    "--task / --data-dir",
                    "recurrent models are measured on adding or sum",
                ));
            }
            if args.seq_len < 2 || args.hidden == 0 {
                return Err(Error::invalid(
                    "gradients",
                    "--seq-len / --hidden",
                    format!(
                        "expected T ≥ 2 and hidden ≥ 1, got T = {} and hidden = {}",
                        args.seq_len, args.hidden
                    ),
                ));
            }
            let setup = TimeSetup {
                kinds,
                task,
                seq_len: args.seq_len,
                hidden: args.hidden,
                init: RecurrentInit {
                    forget_bias: args.forget_bias,
                    orthogonal_recurrent: args.orthogonal,
                },
                batch: args.batch,
                seeds: seeds.clone(),
                train_steps: args.train_steps.unwrap_or(300),
                progress: !args.quiet,
            };
            let what = format!(
                "{} task, T = {}, hidden {}, batch {}{}{}",
                if task == GradTask::Sum {
                    "sum"
                } else {
                    "adding"
                },
                setup.seq_len,
                setup.hidden,
                setup.batch,
                args.forget_bias
                    .map(|b| format!(", LSTM forget bias {b}"))
                    .unwrap_or_default(),
                if args.orthogonal {
                    ", orthogonal W_hh"
                } else {
                    ""
                }
            );
            let out = args.out.unwrap_or_else(|| "runs/gradients-rnn".into());
            refuse_training_run(&out)?;
            let runs = measure_time(&setup)?;
            let results = time_results(&runs, &what, &command, &seeds, "gradient-time");
            print_table(&results.table);
            let mut report = Report::new("Gradient flow through time").intro(format!(
                "How much of the gradient of a loss taken at the last step reaches each earlier \
                 hidden state, for {} ({what}). Every figure's data is in the CSV linked under it; \
                 gradients-time.csv holds every seed's values and gradients-summary.csv the \
                 largest singular values of the recurrent weights.",
                setup
                    .kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            report = report.section(Section::Table(results.table));
            for f in results.figures {
                report = report.section(Section::Figure(f));
            }
            let page = write_outputs(
                &out,
                report,
                &[
                    ("gradients-time.csv", &results.csv),
                    ("gradients-summary.csv", &results.summary_csv),
                ],
            )?;
            crate::say!("\nwritten          {}", page.display());
        }
        Family::Image(models) => {
            let task = args.task.unwrap_or(GradTask::Digits);
            let Some(dataset) = task.image_dataset() else {
                return Err(Error::invalid(
                    "gradients",
                    "--task",
                    "image networks are measured on digits, mnist, fashion-mnist or cifar10",
                ));
            };
            let setup = DepthSetup {
                models,
                task: TaskSpec::Images {
                    dataset,
                    data_dir: args.data_dir.clone(),
                    augment: false,
                    train_limit: None,
                },
                batch: args.batch,
                seeds: seeds.clone(),
                train_steps: args.train_steps.unwrap_or(100),
                progress: !args.quiet,
            };
            let what = format!("{}, batch {}", dataset.name(), setup.batch);
            let out = args.out.unwrap_or_else(|| "runs/gradients-image".into());
            refuse_training_run(&out)?;
            let runs = measure_depth(&setup)?;
            let results = depth_results(&runs, &what, &command, &seeds, "gradient-depth");
            print_table(&results.table);
            let mut report = Report::new("Gradient flow through depth").intro(format!(
                "How much of the gradient at a network's last block reaches each earlier block, \
                 for residual networks and their plain twins ({what}). Every figure's data is in \
                 the CSV linked under it; gradients-depth.csv holds every seed's values."
            ));
            report = report.section(Section::Table(results.table));
            for f in results.figures {
                report = report.section(Section::Figure(f));
            }
            let page = write_outputs(&out, report, &[("gradients-depth.csv", &results.csv)])?;
            crate::say!("\nwritten          {}", page.display());
        }
    }
    Ok(())
}
