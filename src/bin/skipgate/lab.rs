//! `skipgate lab`: the main job. The course module's recurrent experiments on embedded data, in a
//! few minutes on two cores, ending with a summary table:
//!
//! 1. the course's own example: a tanh RNN (input 1, hidden 10) learns the sum of a sequence;
//! 2. the adding problem: a vanilla RNN against an LSTM and a GRU on long sequences;
//! 3. a character-level LSTM on tiny Shakespeare, and a sample of its text;
//! 4. the degradation problem: plain and residual networks of two depths on the 8×8 digits.

use std::path::PathBuf;

use clap::Args;
use skipgate::loss::mse_loss;
use skipgate::models::resnet::ResNetConfig;
use skipgate::optim::{LrSchedule, Schedule};
use skipgate::optim::{OptimizerKind, OptimizerSpec};
use skipgate::rnn::{CellKind, RecurrentInit};
use skipgate::train::TrainTask;
use skipgate::train::tasks::{CharLmTask, RegressionTask};
use skipgate::train::tasks::{ImageDataset, ImageTask};
use skipgate::train::{ModelSpec, TaskSpec, TrainOptions, TrainReport, fmt_value, train};
use skipgate::{Mode, Result, Rng};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct LabArgs {
    /// Directory for the runs' models, metrics and the summary.
    #[arg(long, default_value = "runs/lab")]
    pub out: PathBuf,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A smoke-test version: a few hundred steps per run (well under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Worker threads for large matrix products. [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// One line of the summary table.
struct Row {
    experiment: String,
    model: String,
    metric: String,
    result: f64,
    baseline: Option<f64>,
    seconds: f64,
}

/// Step counts of the three experiments: (sum, adding, charlm).
fn steps(quick: bool) -> (u64, u64, u64) {
    if quick {
        (500, 200, 60)
    } else {
        (2000, 2000, 800)
    }
}

pub fn run(args: LabArgs) -> Result<()> {
    crate::set_threads(args.threads)?;
    let (sum_steps, adding_steps, lm_steps) = steps(args.quick);
    let mut rows = Vec::new();
    let options = |name: &str, steps: u64, optimizer: OptimizerSpec| TrainOptions {
        eval_every: (steps / 4).max(1),
        out_dir: Some(args.out.join(name)),
        seed: args.seed,
        overwrite: true, // the lab's runs are its own: a new lab replaces them
        progress: !args.quiet,
        label: name.to_string(),
        ..TrainOptions::new(steps, optimizer)
    };

    crate::say!(
        "skipgate lab: the vanishing gradient, gates and skip connections, on embedded data (seed {})\n",
        args.seed
    );

    // 1. The course's example.
    crate::say!(
        "1. The course's example: a tanh RNN (input 1, hidden 10) learns y = Σ_t x_t for X ~ U(0,1) of shape (100, 5, 1)."
    );
    let spec = TaskSpec::Sum {
        seq_len: 5,
        train_size: 100,
        test_size: 1000,
    };
    let model = ModelSpec::new(CellKind::Tanh, 10);
    let mut task = RegressionTask::new(spec, model, 100, args.seed)?;
    let (_, r) = train(
        &mut task,
        &options(
            "sum-rnn",
            sum_steps,
            OptimizerSpec::new(OptimizerKind::Adam, 0.01),
        ),
    )?;
    let mse = metric(&r, "test_mse");
    crate::say!(
        "   test MSE {} after {} full-batch Adam steps; predicting the mean scores {}.\n",
        fmt_value(mse),
        r.steps,
        fmt_value(task.baseline_mse())
    );
    rows.push(Row {
        experiment: "sum of a sequence (T=5)".into(),
        model: "rnn 10".into(),
        metric: "test MSE".into(),
        result: mse,
        baseline: Some(task.baseline_mse()),
        seconds: r.seconds,
    });

    // 2. The adding problem.
    let (t_len, hidden) = (50, 64);
    crate::say!(
        "2. The adding problem (T = {t_len}, hidden {hidden}): the target is the sum of two values marked somewhere in\n   a sequence of {t_len}; predicting the constant 1 scores 1/6. The gradient must cross up to {t_len} steps."
    );
    let mut curves = Vec::new();
    for kind in [CellKind::Tanh, CellKind::Lstm, CellKind::Gru] {
        let mut model = ModelSpec::new(kind, hidden);
        if kind == CellKind::Lstm {
            model.init = RecurrentInit {
                forget_bias: Some(1.0),
                orthogonal_recurrent: false,
            };
        }
        let spec = TaskSpec::Adding {
            seq_len: t_len,
            val_size: 1000,
        };
        let mut task = RegressionTask::new(spec, model, 64, args.seed)?;
        let reach = gradient_reach_at_init(&task, args.seed)?;
        let mut o = options(
            &format!("adding-{kind}"),
            adding_steps,
            OptimizerSpec::new(OptimizerKind::Adam, 2e-3),
        );
        o.clip = Some(1.0);
        let (_, r) = train(&mut task, &o)?;
        let label = if kind == CellKind::Lstm {
            "lstm 64 (forget bias 1)".to_string()
        } else {
            format!("{kind} {hidden}")
        };
        rows.push(Row {
            experiment: format!("adding problem (T={t_len})"),
            model: label.clone(),
            metric: "val MSE".into(),
            result: metric(&r, "val_mse"),
            baseline: Some(task.baseline_mse()),
            seconds: r.seconds,
        });
        curves.push((label, r, reach));
    }
    crate::say!("   validation MSE during training:");
    let mut header = format!("   {:>6}", "step");
    for (label, _, _) in &curves {
        header.push_str(&format!("  {label:>24}"));
    }
    crate::say!("{header}");
    for i in 0..curves[0].1.evals.len() {
        let mut line = format!("   {:>6}", curves[0].1.evals[i].step);
        for (_, r, _) in &curves {
            line.push_str(&format!("  {:>24}", fmt_value(r.evals[i].metrics[0].1)));
        }
        crate::say!("{line}");
    }
    let verdicts: Vec<String> = curves
        .iter()
        .map(|(label, r, _)| {
            let (mse, base) = (metric(r, "val_mse"), metric(r, "baseline_mse"));
            let verdict = if mse < 0.1 * base {
                "learned it"
            } else if mse < 0.8 * base {
                "is learning"
            } else {
                "is still at the constant-prediction baseline"
            };
            format!("{label} {verdict}")
        })
        .collect();
    crate::say!("   After {} steps: {}.", adding_steps, verdicts.join("; "));
    let reaches: Vec<String> = curves
        .iter()
        .map(|(label, _, reach)| format!("{label} {}", fmt_value(*reach)))
        .collect();
    crate::say!(
        "   At initialisation, the gradient reaching the first step relative to the last,\n   ‖∂L/∂h_1‖ / ‖∂L/∂h_{t_len}‖, is {}.\n",
        reaches.join("; ")
    );

    // 3. Character-level LSTM.
    crate::say!(
        "3. A character-level LSTM (embedding 32, hidden 128) on tiny Shakespeare (90/10 split)."
    );
    let spec = TaskSpec::CharLm {
        seq_len: 64,
        train_fraction: 0.9,
        tbptt: false,
        text: None,
        val_batches: Some(30),
    };
    let mut model = ModelSpec::new(CellKind::Lstm, 128);
    model.embedding = 32;
    let mut task = CharLmTask::new(spec, model, 32)?;
    let mut o = options(
        "charlm-lstm",
        lm_steps,
        OptimizerSpec::new(OptimizerKind::Adam, 3e-3),
    );
    o.clip = Some(5.0);
    let (mut lm, r) = train(&mut task, &o)?;
    let val = metric(&r, "val_loss");
    let uniform = (task.vocab().len() as f64).ln();
    crate::say!(
        "   validation loss {} nats/char after {} steps (a uniform guess: ln {} = {}).",
        fmt_value(val),
        r.steps,
        task.vocab().len(),
        fmt_value(uniform)
    );
    let prime = "ROMEO:";
    let ids = lm.sample(
        &task.vocab().encode(prime)?,
        300,
        0.8,
        &mut Rng::seed(args.seed),
    )?;
    crate::say!("   sample (temperature 0.8):\n");
    for line in format!("{prime}{}", task.vocab().decode(&ids)?).lines() {
        crate::say!("     | {line}");
    }
    crate::say!();
    rows.push(Row {
        experiment: "char LM, tiny Shakespeare".into(),
        model: "lstm 128".into(),
        metric: "val nats/char".into(),
        result: val,
        baseline: Some(uniform),
        seconds: r.seconds,
    });

    degradation(&args, &mut rows)?;

    print_table(&rows);
    crate::say!(
        "\nRuns (models, metrics.jsonl, summary.json) are in {}.",
        args.out.display()
    );
    Ok(())
}

/// ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ for a freshly initialised model on one held-out batch of 64, the loss
/// taken at the last step: how much of the gradient survives the trip back through time.
fn gradient_reach_at_init(task: &RegressionTask, seed: u64) -> Result<f64> {
    let mut rng = Rng::seed(seed);
    let mut model = task.build_model(&mut rng)?;
    let batch = task.held_out().batch(&(0..64).collect::<Vec<_>>())?;
    let pred = model.forward(batch.x.view(), None, Mode::Train, &mut rng)?;
    let (_, d_pred) = mse_loss(pred.view(), batch.y.view())?;
    let grads = model.backward(d_pred.view())?;
    let norms = grads.step_grad_norms.row(0);
    Ok(norms[0] / norms[norms.len() - 1])
}

/// Plain and residual networks at two depths on the embedded 8×8 digits: the deeper plain
/// network trains worse than the shallower one (the degradation problem); the residual one does not.
fn degradation(args: &LabArgs, rows: &mut Vec<Row>) -> Result<()> {
    let (shallow, deep, epochs) = if args.quick { (8, 14, 1) } else { (20, 56, 6) };
    crate::say!(
        "4. The degradation problem: plain and residual networks of {shallow} and {deep} layers on the 8×8 digits\n   \
         (1437 training images, {epochs} epoch{} of SGD with momentum, 20 warm-up steps, cosine decay).",
        if epochs == 1 { "" } else { "s" }
    );
    let mut results = Vec::new();
    for name in [
        format!("plain{shallow}"),
        format!("plain{deep}"),
        format!("resnet{shallow}"),
        format!("resnet{deep}"),
    ] {
        let config: ResNetConfig = name.parse()?;
        let spec = TaskSpec::Images {
            dataset: ImageDataset::Digits,
            data_dir: None,
            augment: false,
            train_limit: None,
        };
        let mut task = ImageTask::new(spec, config, 64)?;
        let steps = epochs * task.steps_per_epoch() as u64;
        let mut optimizer = OptimizerSpec::new(OptimizerKind::Sgd, 0.1);
        optimizer.momentum = 0.9;
        optimizer.weight_decay = 5e-4;
        let o = TrainOptions {
            schedule: LrSchedule::new(
                Schedule::Cosine {
                    total_steps: steps,
                    min_lr: 0.0,
                },
                20,
            ),
            eval_every: 0,
            out_dir: Some(args.out.join(format!("digits-{name}"))),
            seed: args.seed,
            overwrite: true,
            progress: !args.quiet,
            label: format!("digits-{name}"),
            ..TrainOptions::new(steps, optimizer)
        };
        let reach = block_gradient_reach_at_init(&task, args.seed)?;
        let (mut net, r) = train(&mut task, &o)?;
        let (train_set, _) = task.data();
        let (predictions, loss_sum) = task.predict(&mut net, train_set)?;
        let train_loss = loss_sum / train_set.len() as f64;
        let train_acc = predictions
            .iter()
            .zip(train_set.labels())
            .filter(|(p, t)| p == t)
            .count() as f64
            / train_set.len() as f64;
        crate::say!(
            "   {name:>9}: training loss {} (training accuracy {:.1}%), test accuracy {:.1}%; at initialisation \
             ‖∂L/∂x‖ at the first block / at the last: {}",
            fmt_value(train_loss),
            100.0 * train_acc,
            100.0 * metric(&r, "test_accuracy"),
            fmt_value(reach)
        );
        rows.push(Row {
            experiment: "degradation, 8×8 digits".into(),
            model: name.clone(),
            metric: "training loss".into(),
            result: train_loss,
            baseline: Some(10f64.ln()),
            seconds: r.seconds,
        });
        results.push(train_loss);
    }
    let verdict = |family: &str, a: f64, b: f64| {
        if b > a * 1.5 + 0.05 {
            format!(
                "the {deep}-layer {family} network trains worse than the {shallow}-layer one ({} vs {})",
                fmt_value(b),
                fmt_value(a)
            )
        } else {
            format!(
                "the {deep}-layer {family} network trains as well as the {shallow}-layer one or better ({} vs {})",
                fmt_value(b),
                fmt_value(a)
            )
        }
    };
    crate::say!(
        "   Plain: {}.\n   Residual: {}.\n",
        verdict("plain", results[0], results[1]),
        verdict("residual", results[2], results[3])
    );
    Ok(())
}

/// ‖∂L/∂x‖ at the first block over that at the last block's output, for a freshly initialised
/// network on one batch of 64 training images (train-mode BatchNorm).
fn block_gradient_reach_at_init(task: &ImageTask, seed: u64) -> Result<f64> {
    let mut rng = Rng::seed(seed);
    let mut net = task.build_model(&mut rng)?;
    let (train_set, _) = task.data();
    let normalize = skipgate::data::images::Normalize::from_data(train_set)?;
    let (x, y) = skipgate::data::images::batch(
        train_set,
        &(0..64).collect::<Vec<_>>(),
        &normalize,
        None,
        &mut rng,
    )?;
    let logits = net.forward(x.view(), Mode::Train)?;
    let (_, d) = skipgate::loss::cross_entropy(logits.view(), &y, None)?;
    let norms = net.backward(d.view())?.block_grad_norms;
    Ok(norms[0] / norms[norms.len() - 1])
}

fn metric(r: &TrainReport, name: &str) -> f64 {
    r.final_metric(name).unwrap_or(f64::NAN)
}

fn print_table(rows: &[Row]) {
    crate::say!("Summary");
    crate::say!(
        "| {:<26} | {:<24} | {:<14} | {:>9} | {:>9} | {:>7} |",
        "experiment",
        "model",
        "metric",
        "result",
        "baseline",
        "time"
    );
    crate::say!(
        "|{:-<28}|{:-<26}|{:-<16}|{:->11}|{:->11}|{:->9}|",
        "",
        "",
        "",
        "",
        "",
        ""
    );
    for r in rows {
        crate::say!(
            "| {:<26} | {:<24} | {:<14} | {:>9} | {:>9} | {:>6.1}s |",
            r.experiment,
            r.model,
            r.metric,
            fmt_value(r.result),
            r.baseline.map(fmt_value).unwrap_or_default(),
            r.seconds
        );
    }
}
