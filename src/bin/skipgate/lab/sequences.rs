//! The lab's recurrent half: the course's sum task, the adding problem, the gradient through
//! time, and a character-level LSTM.

use skipgate::models::SeqRegressor;
use skipgate::optim::{OptimizerKind, OptimizerSpec};
use skipgate::report::{Figure, Plot, Scale, Section, Series};
use skipgate::rnn::{CellKind, RecurrentInit};
use skipgate::train::tasks::{CharLmTask, RegressionTask};
use skipgate::train::{ModelSpec, TaskSpec, TrainReport, TrainTask, fmt_value, train};
use skipgate::{Result, Rng};

use super::{Lab, Row, metric};
use crate::gradients::{self, GradTask, Phase, TimeRun, TimeSetup};

/// Seeds of the gradient probes at initialisation.
const PROBE_SEEDS: u64 = 5;

/// `(step, value)` of metric `name` at every evaluation of a run.
pub fn eval_series(r: &TrainReport, name: &str) -> Vec<(f64, f64)> {
    r.evals
        .iter()
        .filter_map(|e| {
            let v = e.metrics.iter().find(|(k, _)| k == name)?.1;
            Some((e.step as f64, v))
        })
        .collect()
}

/// The mean of the last `window` values at every step from the `window`-th on.
pub fn running_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut sum = 0.0;
    let mut out = Vec::new();
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        if i + 1 >= window {
            out.push((x, sum / window as f64));
        }
    }
    out
}

/// The training loss of every step of the run `name`.
fn train_loss(lab: &Lab, name: &str) -> Result<Vec<(f64, f64)>> {
    Ok(lab
        .train_records(name)?
        .iter()
        .filter_map(|r| Some((r.step as f64, r.loss?)))
        .collect())
}

/// A dashed horizontal line at `y` from step 0 to `steps`.
fn baseline(name: &str, y: f64, steps: u64) -> Series {
    Series::new(name, vec![(0.0, y), (steps as f64, y)]).dashed()
}

/// Section 1: the course's example.
pub fn course_sum(lab: &mut Lab) -> Result<()> {
    let steps = lab.level.sum_steps;
    crate::say!(
        "1. The course's example: a tanh RNN (input 1, hidden 10) learns y = Σ_t x_t for X ~ U(0,1) of shape (100, 5, 1)."
    );
    let spec = TaskSpec::Sum {
        seq_len: 5,
        train_size: 100,
        test_size: 1000,
    };
    let mut task =
        RegressionTask::new(spec, ModelSpec::new(CellKind::Tanh, 10), 100, lab.args.seed)?;
    let mut o = lab.options(
        "sum-rnn",
        steps,
        OptimizerSpec::new(OptimizerKind::Adam, 0.01),
    );
    o.eval_every = (steps / 20).max(1);
    let (_, r) = train(&mut task, &o)?;
    let mse = metric(&r, "test_mse");
    let base = task.baseline_mse();
    crate::say!(
        "   test MSE {} after {} full-batch Adam steps; predicting the mean scores {}.\n",
        fmt_value(mse),
        r.steps,
        fmt_value(base)
    );
    lab.heading("1. The course's example: the sum of a sequence");
    lab.paragraph(format!(
        "A tanh RNN (input 1, hidden 10) reads X ~ U(0,1) of shape (100, 5, 1) and a linear head \
         on its last hidden state predicts the sum of each sequence; full-batch Adam, lr 0.01. \
         After {} steps its MSE on 1000 new sequences is {}, against {} for predicting the mean.",
        r.steps,
        fmt_value(mse),
        fmt_value(base)
    ));
    let test = eval_series(&r, "test_mse");
    let train_loss = train_loss(lab, "sum-rnn")?;
    let plot = Plot::new("training step", "mean squared error")
        .y_scale(Scale::Log)
        .series(Series::new(
            "training batch (the 100 sequences)",
            train_loss,
        ))
        .series(Series::new("test set (1000 sequences)", test))
        .series(baseline("predicting the mean", base, r.steps));
    lab.figure(
        Figure::new("sum-mse", "The course's RNN learns the sum", plot).caption(
            "Mean squared error of the tanh RNN's prediction of Σ_t x_t, on its training batch at \
             every step and on the held-out test set at every evaluation; the dashed line is the \
             MSE of always predicting the training targets' mean.",
        ),
    );
    lab.rows.push(Row {
        experiment: "sum of a sequence (T=5)".into(),
        model: "rnn 10".into(),
        metric: "test MSE".into(),
        result: mse,
        baseline: Some(base),
        seconds: r.seconds,
    });
    Ok(())
}

/// A model trained on the adding problem, kept for the gradient probe.
pub struct TrainedAdding {
    pub label: String,
    pub task: RegressionTask,
    pub init: TimeRun,
    pub model: SeqRegressor<f32>,
}

/// Section 2: the adding problem, RNN vs LSTM vs GRU.
pub fn adding(lab: &mut Lab) -> Result<Vec<TrainedAdding>> {
    let (t_len, hidden, steps) = lab.level.adding;
    let seed = lab.args.seed;
    crate::say!(
        "2. The adding problem (T = {t_len}, hidden {hidden}): the target is the sum of two values marked somewhere in\n   a sequence of {t_len}; predicting the constant 1 scores 1/6. The gradient must cross up to {t_len} steps."
    );
    let mut trained = Vec::new();
    let mut reports = Vec::new();
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
        let mut task = RegressionTask::new(spec, model, 64, seed)?;
        let label = if kind == CellKind::Lstm {
            format!("lstm {hidden} (forget bias 1)")
        } else {
            format!("{kind} {hidden}")
        };
        let mut at_init = task.build_model(&mut Rng::seed(seed))?; // what `train` starts from
        let init = gradients::time_run(&mut at_init, &task, 64, &label, seed, Phase::Init)?;
        let mut o = lab.options(
            &format!("adding-{kind}"),
            steps,
            OptimizerSpec::new(OptimizerKind::Adam, 2e-3),
        );
        o.clip = Some(1.0);
        o.eval_every = (steps / 20).max(1);
        let (model, r) = train(&mut task, &o)?;
        lab.rows.push(Row {
            experiment: format!("adding problem (T={t_len})"),
            model: label.clone(),
            metric: "val MSE".into(),
            result: metric(&r, "val_mse"),
            baseline: Some(task.baseline_mse()),
            seconds: r.seconds,
        });
        reports.push((label.clone(), r));
        trained.push(TrainedAdding {
            label,
            task,
            init,
            model,
        });
    }
    let base = metric(&reports[0].1, "baseline_mse");
    crate::say!("   validation MSE during training:");
    let mut header = format!("   {:>6}", "step");
    for (label, _) in &reports {
        header.push_str(&format!("  {label:>24}"));
    }
    crate::say!("{header}");
    let rows = reports[0].1.evals.len();
    for i in (0..rows).filter(|i| (i + 1) % (rows / 4).max(1) == 0 || i + 1 == rows) {
        let mut line = format!("   {:>6}", reports[0].1.evals[i].step);
        for (_, r) in &reports {
            line.push_str(&format!("  {:>24}", fmt_value(r.evals[i].metrics[0].1)));
        }
        crate::say!("{line}");
    }
    let verdicts: Vec<String> = reports
        .iter()
        .map(|(label, r)| {
            let mse = metric(r, "val_mse");
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
    crate::say!("   After {steps} steps: {}.\n", verdicts.join("; "));

    lab.heading(format!("2. The adding problem (T = {t_len})"));
    lab.paragraph(format!(
        "Each sequence has {t_len} steps of (value, marker) pairs, values U(0,1), two of them \
         marked; the target is the sum of the two marked values, so the model must carry them \
         across up to {t_len} steps. One recurrent layer of {hidden} units and a linear head on \
         the last step; Adam, lr 2e-3, batch 64 (fresh sequences every step), gradient norm \
         clipped at 1. After {steps} steps: {}.",
        verdicts.join("; ")
    ));
    let mut plot =
        Plot::new("training step", "validation MSE (1000 sequences)").y_scale(Scale::Log);
    for (label, r) in &reports {
        plot = plot.series(Series::new(label.clone(), eval_series(r, "val_mse")));
    }
    plot = plot.series(baseline("predicting the constant 1", base, steps));
    lab.figure(
        Figure::new(
            "adding-val-mse",
            "Learning curves on the adding problem",
            plot,
        )
        .caption(format!(
            "Validation MSE of the tanh RNN, the LSTM (forget-gate bias 1) and the GRU on the \
                 adding problem with T = {t_len}, evaluated {} times during training. The dashed \
                 line is the best constant prediction: a model on it has learned nothing about \
                 the marked values.",
            reports[0].1.evals.len()
        )),
    );
    Ok(trained)
}

/// Section 3: ‖∂L/∂h_t‖ against t. At initialisation over five seeds (T = 100, PyTorch's default
/// initialisation, and the LSTM with forget-gate bias 1), and for the adding-problem models before
/// and after their training.
pub fn gradient_through_time(lab: &mut Lab, trained: Vec<TrainedAdding>) -> Result<()> {
    let seed = lab.args.seed;
    let seeds: Vec<u64> = (seed..seed + PROBE_SEEDS).collect();
    let (t_len, hidden) = lab.level.probe;
    crate::say!(
        "3. The gradient through time: ‖∂L/∂h_t‖ for a loss taken at the last step, relative to its value there."
    );
    let setup = |kinds: Vec<CellKind>, forget_bias| TimeSetup {
        kinds,
        task: GradTask::Adding,
        seq_len: t_len,
        hidden,
        init: RecurrentInit {
            forget_bias,
            orthogonal_recurrent: false,
        },
        batch: 64,
        seeds: seeds.clone(),
        train_steps: 0,
        progress: false,
    };
    // One probe per cell (and the LSTM again with forget-gate bias 1), timed for the summary.
    let mut runs = Vec::new();
    let mut probe_seconds = Vec::new();
    for (kind, forget_bias, name) in [
        (CellKind::Tanh, None, "rnn"),
        (CellKind::Lstm, None, "lstm"),
        (CellKind::Lstm, Some(1.0), "lstm, forget bias 1"),
        (CellKind::Gru, None, "gru"),
    ] {
        let start = std::time::Instant::now();
        for mut r in gradients::measure_time(&setup(vec![kind], forget_bias))? {
            r.model = name.into();
            runs.push(r);
        }
        probe_seconds.push((name, start.elapsed().as_secs_f64()));
    }
    let what = format!(
        "adding-problem sequences, T = {t_len}, hidden {hidden}, batch 64, PyTorch's default initialisation"
    );
    let at_init = gradients::time_results(&runs, &what, &lab.command, &seeds, "gradient-time");
    crate::gradients::print_table(&at_init.table);
    let reach = |model: &str| {
        gradients::median(
            &runs
                .iter()
                .filter(|r| r.model == model)
                .map(|r| r.profile.reach())
                .collect::<Vec<_>>(),
        )
    };
    let (rnn, lstm, lstm_fb, gru) = (
        reach("rnn"),
        reach("lstm"),
        reach("lstm, forget bias 1"),
        reach("gru"),
    );
    crate::say!(
        "   At initialisation (T = {t_len}, median of {} seeds), ‖∂L/∂h_1‖/‖∂L/∂h_{t_len}‖ is {} for the tanh RNN,\n   {} for the LSTM ({:.0}× the RNN's), {} with forget-gate bias 1 and {} for the GRU.",
        seeds.len(),
        fmt_value(rnn),
        fmt_value(lstm),
        lstm / rnn,
        fmt_value(lstm_fb),
        fmt_value(gru)
    );

    let mut after = Vec::new();
    let steps = lab.level.adding.2;
    for mut t in trained {
        after.push(t.init);
        after.push(gradients::time_run(
            &mut t.model,
            &t.task,
            64,
            &t.label,
            seed,
            Phase::Trained(steps),
        )?);
    }
    let (adding_t, adding_h, _) = lab.level.adding;
    let what_trained = format!(
        "the adding-problem models of section 2, T = {adding_t}, hidden {adding_h}, 64 validation sequences"
    );
    let trained = gradients::time_results(
        &after,
        &what_trained,
        &lab.command,
        &[seed],
        "gradient-time-adding",
    );
    crate::gradients::print_table(&trained.table);
    crate::say!();

    lab.heading("3. The vanishing gradient through time");
    lab.paragraph(format!(
        "For a loss taken at the last step, the norm of ∂L/∂h_t at every earlier step relative to \
         its value at the last one: how much learning signal reaches step t. At initialisation \
         with T = {t_len}, the median over {} seeds of ‖∂L/∂h_1‖/‖∂L/∂h_{t_len}‖ is {} for the tanh \
         RNN, {} for the LSTM and {} for the GRU; a forget-gate bias of 1 raises the LSTM's to {}. \
         The tanh RNN's recurrent Jacobian diag(1 − h²)·W_hh shrinks the gradient at every step; \
         the LSTM's cell state is multiplied only by its forget gate, which training (or the bias) \
         can hold near 1.",
        seeds.len(),
        fmt_value(rnn),
        fmt_value(lstm),
        fmt_value(gru),
        fmt_value(lstm_fb)
    ));
    lab.sections.push(Section::Table(at_init.table));
    for f in at_init.figures {
        lab.sections.push(Section::Figure(f));
    }
    lab.sections.push(Section::Table(trained.table));
    for f in trained
        .figures
        .into_iter()
        .filter(|f| f.id.ends_with("trained"))
    {
        lab.sections.push(Section::Figure(f));
    }
    for (name, seconds) in probe_seconds {
        lab.rows.push(Row {
            experiment: format!("gradient reach, T={t_len}, init"),
            model: name.into(),
            metric: "‖∂L/∂h_1‖/‖∂L/∂h_T‖".into(),
            result: reach(name),
            baseline: None,
            seconds,
        });
    }
    Ok(())
}

/// Section 4: a character-level LSTM on tiny Shakespeare, and a sample.
pub fn char_lm(lab: &mut Lab) -> Result<()> {
    let (embedding, hidden, steps, val_batches) = lab.level.charlm;
    crate::say!(
        "4. A character-level LSTM (embedding {embedding}, hidden {hidden}) on tiny Shakespeare (90/10 split)."
    );
    let spec = TaskSpec::CharLm {
        seq_len: 64,
        train_fraction: 0.9,
        tbptt: false,
        text: None,
        val_batches,
    };
    let mut model = ModelSpec::new(CellKind::Lstm, hidden);
    model.embedding = embedding;
    let mut task = CharLmTask::new(spec, model, 32)?;
    let lr = if hidden > 128 { 2e-3 } else { 3e-3 };
    let mut o = lab.options(
        "charlm-lstm",
        steps,
        OptimizerSpec::new(OptimizerKind::Adam, lr),
    );
    o.clip = Some(5.0);
    o.eval_every = (steps / 8).max(1);
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
        &mut Rng::seed(lab.args.seed),
    )?;
    let sample = format!("{prime}{}", task.vocab().decode(&ids)?);
    crate::say!("   sample (temperature 0.8):\n");
    for line in sample.lines() {
        crate::say!("     | {line}");
    }
    crate::say!();

    lab.heading("4. A character-level LSTM on tiny Shakespeare");
    lab.paragraph(format!(
        "Embedding {embedding} → LSTM {hidden} → linear over the 65 characters, trained on the \
         first 90% of tiny Shakespeare in random windows of 64 characters (batch 32, Adam {lr}, \
         gradient norm clipped at 5), validated on the last 10%{}.",
        val_batches
            .map(|n| format!(" ({n} batches of 32 windows)"))
            .unwrap_or_default()
    ));
    let train_loss = running_mean(&train_loss(lab, "charlm-lstm")?, 20);
    let plot = Plot::new("training step", "cross-entropy (nats per character)")
        .series(Series::new(
            "training batches (mean of 20 steps)",
            train_loss,
        ))
        .series(Series::new("validation", eval_series(&r, "val_loss")))
        .series(baseline("uniform guess, ln 65", uniform, r.steps));
    lab.figure(
        Figure::new("charlm-loss", "Character-level LSTM: loss", plot).caption(
            "Mean cross-entropy per character on the training batches (a running mean over 20 \
             steps) and on the validation text at every evaluation; the dashed line is a uniform \
             guess over the vocabulary.",
        ),
    );
    lab.sections.push(Section::Text {
        title: format!(
            "A sample after {} steps (prime \"{prime}\", temperature 0.8)",
            r.steps
        ),
        text: sample,
    });
    lab.rows.push(Row {
        experiment: "char LM, tiny Shakespeare".into(),
        model: format!("lstm {hidden}"),
        metric: "val nats/char".into(),
        result: val,
        baseline: Some(uniform),
        seconds: r.seconds,
    });
    Ok(())
}
