//! `skipgate lab`: the main job. The course module's experiments on embedded data, ending with a
//! summary table and a self-contained HTML report:
//!
//! 1. the course's own example: a tanh RNN (input 1, hidden 10) learns the sum of a sequence;
//! 2. the adding problem: a vanilla RNN against an LSTM and a GRU on long sequences, with their
//!    learning curves;
//! 3. the vanishing gradient through time: ‖∂L/∂h_t‖ against t for the three cells, at
//!    initialisation (over five seeds) and after the adding-problem training;
//! 4. a character-level LSTM on tiny Shakespeare, and a sample of its text;
//! 5. the degradation problem: plain and residual networks of two or three depths on the 8×8
//!    digits, their training-loss curves and the gradient reaching each block.
//!
//! `--quick` is a smoke test (seconds), the default about a minute on two cores, `--full` the longer
//! settings of the published experiments.

mod images;
mod sequences;

use std::path::PathBuf;

use clap::Args;
use skipgate::Result;
use skipgate::report::{Figure, Report, Section, Table};
use skipgate::train::{Record, TrainReport, fmt_value};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct LabArgs {
    /// Directory for the runs' models, metrics, the lab's report.html and its CSV files.
    #[arg(long, default_value = "runs/lab")]
    pub out: PathBuf,
    /// Seed of every run (the gradient probes at initialisation use this seed and the next four).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A smoke test of the same experiments: a few hundred steps each, a few seconds.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The longer settings of the published experiments (adding problem at T = 100 for 5000
    /// steps, a 256-unit char-LSTM for 3000 steps, networks of 20, 56 and 110 layers): about
    /// twenty minutes on two cores.
    #[arg(long)]
    pub full: bool,
    /// Worker threads for large matrix products. [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The sizes of one lab level (`--quick`, default, `--full`).
pub struct Level {
    pub name: &'static str,
    /// Full-batch Adam steps of the course's sum task.
    pub sum_steps: u64,
    /// Adding problem: sequence length, hidden units, steps.
    pub adding: (usize, usize, u64),
    /// Gradient probe at initialisation: sequence length and hidden units.
    pub probe: (usize, usize),
    /// Char-LSTM: embedding, hidden units, steps, validation batches (`None`: all).
    pub charlm: (usize, usize, u64, Option<usize>),
    /// Degradation: network depths (plain and residual at each) and epochs on the digits.
    pub depths: Vec<usize>,
    pub epochs: u64,
}

impl Level {
    fn of(args: &LabArgs) -> Level {
        if args.quick {
            Level {
                name: "quick",
                sum_steps: 500,
                adding: (50, 64, 200),
                probe: (100, 32),
                charlm: (32, 128, 60, Some(10)),
                depths: vec![8, 14],
                epochs: 1,
            }
        } else if args.full {
            Level {
                name: "full",
                sum_steps: 2000,
                adding: (100, 128, 5000),
                probe: (100, 128),
                charlm: (64, 256, 3000, None),
                depths: vec![20, 56, 110],
                epochs: 30,
            }
        } else {
            Level {
                name: "default",
                sum_steps: 2000,
                adding: (50, 64, 2000),
                probe: (100, 128),
                charlm: (32, 128, 800, Some(30)),
                depths: vec![20, 56],
                epochs: 10,
            }
        }
    }
}

/// One line of the summary table.
pub struct Row {
    pub experiment: String,
    pub model: String,
    pub metric: String,
    pub result: f64,
    pub baseline: Option<f64>,
    pub seconds: f64,
}

/// What the experiments add up to: the summary rows and the report's sections.
pub struct Lab {
    pub args: LabArgs,
    pub level: Level,
    /// The command line, quoted in every figure's caption.
    pub command: String,
    pub rows: Vec<Row>,
    pub sections: Vec<Section>,
}

impl Lab {
    pub fn figure(&mut self, figure: Figure) {
        let figure = figure.command(self.command.clone()).seed(self.args.seed);
        self.sections.push(Section::Figure(figure));
    }

    pub fn heading(&mut self, text: impl Into<String>) {
        self.sections.push(Section::Heading(text.into()));
    }

    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.sections.push(Section::Paragraph(text.into()));
    }

    /// Options shared by the lab's runs: written under `--out/<name>`, replacing an earlier lab's.
    pub fn options(
        &self,
        name: &str,
        steps: u64,
        optimizer: skipgate::optim::OptimizerSpec,
    ) -> skipgate::train::TrainOptions {
        skipgate::train::TrainOptions {
            out_dir: Some(self.args.out.join(name)),
            seed: self.args.seed,
            overwrite: true, // the lab's runs are its own: a new lab replaces them
            progress: !self.args.quiet,
            label: name.to_string(),
            command: self.command.clone(),
            ..skipgate::train::TrainOptions::new(steps, optimizer)
        }
    }

    /// The training records of the run `name` (from its metrics log).
    pub fn train_records(&self, name: &str) -> Result<Vec<Record>> {
        let records = skipgate::train::read_log(
            &self.args.out.join(name),
            skipgate::train::LogFormat::Jsonl,
        )?;
        Ok(records.into_iter().filter(|r| r.kind == "train").collect())
    }
}

pub fn run(args: LabArgs) -> Result<()> {
    crate::set_threads(args.threads)?;
    let level = Level::of(&args);
    let mut lab = Lab {
        command: crate::command_line(),
        level,
        args,
        rows: Vec::new(),
        sections: Vec::new(),
    };
    crate::say!(
        "skipgate lab ({} settings): the vanishing gradient, gates and skip connections, on embedded data (seed {})\n",
        lab.level.name,
        lab.args.seed
    );
    sequences::course_sum(&mut lab)?;
    let trained = sequences::adding(&mut lab)?;
    sequences::gradient_through_time(&mut lab, trained)?;
    sequences::char_lm(&mut lab)?;
    images::degradation(&mut lab)?;

    crate::gradients::print_table(&summary_table(&lab.rows));
    let page = write_report(lab.args.out.clone(), &lab)?;
    crate::say!(
        "\nReport: {} (figures with their CSV data beside it). Runs (models, metrics.jsonl, summary.json) are in {}.",
        page.display(),
        lab.args.out.display()
    );
    Ok(())
}

/// `final_metric(name)`, NaN when the run has no such metric.
pub fn metric(r: &TrainReport, name: &str) -> f64 {
    r.final_metric(name).unwrap_or(f64::NAN)
}

/// The summary as a report table.
fn summary_table(rows: &[Row]) -> Table {
    let mut t = Table::new(
        "Summary",
        &[
            "experiment",
            "model",
            "metric",
            "result",
            "baseline",
            "time",
        ],
    );
    for r in rows {
        t = t.row([
            r.experiment.clone(),
            r.model.clone(),
            r.metric.clone(),
            fmt_value(r.result),
            r.baseline.map(fmt_value).unwrap_or_default(),
            format!("{:.1} s", r.seconds),
        ]);
    }
    t
}

fn write_report(out: PathBuf, lab: &Lab) -> Result<PathBuf> {
    let mut report = Report::new("skipgate lab: vanishing gradients, gates and skip connections")
        .intro(format!(
            "The course module's experiments, run by `{}` ({} settings, seed {}) on data that \
             ships with skipgate. Each figure says what it shows and how it was made; its data \
             is in the CSV file linked under it, and every training run's own directory beside \
             this page holds its model, metrics log and report.",
            lab.command, lab.level.name, lab.args.seed
        ))
        .section(Section::Table(summary_table(&lab.rows)));
    for s in &lab.sections {
        report = report.section(s.clone());
    }
    report.write(&out)
}
