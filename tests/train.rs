//! The training loop: learning the course's task, bit-exact resume, stopping on NaN with the last
//! good checkpoint kept, the metrics log, and checkpoints that refuse a different run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skipgate::io::TensorFile;
use skipgate::optim::{LrSchedule, OptimizerKind, OptimizerSpec, Schedule};
use skipgate::rnn::CellKind;
use skipgate::train::tasks::{CharLmTask, RegressionTask};
use skipgate::train::{
    LogFormat, Metrics, ModelSpec, StepStats, TaskSpec, TrainOptions, TrainTask, train,
};
use skipgate::{Error, Result, Rng};

fn sum_spec() -> TaskSpec {
    TaskSpec::Sum {
        seq_len: 5,
        train_size: 100,
        test_size: 1000,
    }
}

/// The course's example with the course's model size learns the sum: test MSE below 1e-3, where
/// predicting the mean scores about T/12 ≈ 0.42.
#[test]
fn course_sum_task_reaches_test_mse_below_1e_3() {
    let mut task =
        RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 0).unwrap();
    let opts = TrainOptions::new(2000, OptimizerSpec::new(OptimizerKind::Adam, 0.01));
    let (_, report) = train(&mut task, &opts).unwrap();
    let mse = report.final_metric("test_mse").unwrap();
    let baseline = report.final_metric("baseline_mse").unwrap();
    assert!(mse < 1e-3, "test MSE {mse}");
    assert!((baseline - 5.0 / 12.0).abs() < 0.05, "baseline {baseline}");
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let f = TensorFile::read(path).unwrap();
    f.names()
        .into_iter()
        .filter(|n| !n.starts_with("task.stream"))
        .map(|n| {
            (
                n.to_string(),
                f.get_array::<f32>(n).unwrap().iter().copied().collect(),
            )
        })
        .collect()
}

/// 200 steps straight and 100 + resume + 100 give bit-identical weights and optimizer state.
fn assert_resume_is_bit_exact<T: TrainTask>(make: impl Fn() -> T, opts: TrainOptions) {
    let dir = tempfile::tempdir().unwrap();
    let straight = TrainOptions {
        out_dir: Some(dir.path().join("straight")),
        ..opts.clone()
    };
    train(&mut make(), &straight).unwrap();

    let split = dir.path().join("split");
    let first = TrainOptions {
        steps: opts.steps / 2,
        out_dir: Some(split.clone()),
        ..opts.clone()
    };
    train(&mut make(), &first).unwrap();
    let second = TrainOptions {
        out_dir: Some(split.clone()),
        resume: true,
        ..opts.clone()
    };
    let (_, report) = train(&mut make(), &second).unwrap();
    assert_eq!(report.start_step, opts.steps / 2);

    for file in ["model.safetensors", "checkpoint.safetensors"] {
        let a = tensors(&dir.path().join("straight").join(file));
        let b = tensors(&split.join(file));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{file}"
        );
        for (name, va) in &a {
            assert!(va == &b[name], "{file}: {name} differs after resume");
        }
    }
    // The log of the resumed run has every step exactly once.
    let log = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("\"train\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=opts.steps).collect::<Vec<_>>());
}

#[test]
fn resume_is_bit_exact_for_sgd_momentum_with_schedule_and_minibatches() {
    let mut optimizer = OptimizerSpec::new(OptimizerKind::Sgd, 0.05);
    optimizer.momentum = 0.9;
    optimizer.nesterov = true;
    let opts = TrainOptions {
        schedule: LrSchedule::new(
            Schedule::Cosine {
                total_steps: 200,
                min_lr: 0.0,
            },
            20,
        ),
        clip: Some(1.0),
        eval_every: 50,
        checkpoint_every: 30,
        seed: 7,
        ..TrainOptions::new(200, optimizer)
    };
    let mut model = ModelSpec::new(CellKind::Gru, 8);
    model.layers = 2;
    model.dropout = 0.2;
    assert_resume_is_bit_exact(
        || RegressionTask::new(sum_spec(), model.clone(), 32, 7).unwrap(),
        opts,
    );
}

#[test]
fn resume_is_bit_exact_for_adam_on_text_streams_with_carried_state() {
    let text = skipgate::data::text::SHAKESPEARE[..20_000].to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.txt");
    std::fs::write(&path, text).unwrap();
    let spec = TaskSpec::CharLm {
        seq_len: 16,
        train_fraction: 0.9,
        tbptt: true,
        text: Some(path),
        val_batches: Some(2),
    };
    let mut model = ModelSpec::new(CellKind::Lstm, 12);
    model.embedding = 8;
    model.layers = 2;
    model.dropout = 0.1;
    let opts = TrainOptions {
        clip: Some(5.0),
        eval_every: 40,
        checkpoint_every: 40,
        seed: 3,
        ..TrainOptions::new(200, OptimizerSpec::new(OptimizerKind::Adam, 3e-3))
    };
    assert_resume_is_bit_exact(
        || CharLmTask::new(spec.clone(), model.clone(), 4).unwrap(),
        opts,
    );
}

/// A task that behaves like the sum task but reports a NaN loss at a chosen step.
struct NanAt {
    inner: RegressionTask,
    step: u64,
    at: u64,
}

impl TrainTask for NanAt {
    type Model = <RegressionTask as TrainTask>::Model;
    fn build_model(&self, rng: &mut Rng) -> Result<Self::Model> {
        self.inner.build_model(rng)
    }
    fn step(&mut self, model: &mut Self::Model, rng: &mut Rng) -> Result<StepStats> {
        self.step += 1;
        let s = self.inner.step(model, rng)?;
        Ok(if self.step == self.at {
            StepStats {
                loss: f64::NAN,
                ..s
            }
        } else {
            s
        })
    }
    fn evaluate(&mut self, model: &mut Self::Model) -> Result<Metrics> {
        self.inner.evaluate(model)
    }
    fn item_name(&self) -> &'static str {
        "seq"
    }
    fn metadata(&self) -> BTreeMap<String, String> {
        self.inner.metadata()
    }
}

#[test]
fn nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = NanAt {
        inner: RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 0).unwrap(),
        step: 0,
        at: 27,
    };
    let opts = TrainOptions {
        checkpoint_every: 10,
        out_dir: Some(dir.path().to_path_buf()),
        ..TrainOptions::new(100, OptimizerSpec::new(OptimizerKind::Adam, 0.01))
    };
    let err = train(&mut task, &opts)
        .err()
        .expect("NaN must stop training");
    assert!(matches!(err, Error::NonFinite { step: 27, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("step 27") && msg.contains("NaN") && msg.contains("last good checkpoint"),
        "{msg}"
    );
    let ckpt = TensorFile::read(dir.path().join("checkpoint.safetensors")).unwrap();
    assert!(
        ckpt.metadata["skipgate.trainer"].contains("\"step\":20"),
        "{:?}",
        ckpt.metadata
    );
    let model = TensorFile::read(dir.path().join("model.safetensors")).unwrap();
    assert_eq!(model.metadata["skipgate.step"], "20");
    // The report is written anyway, says why training stopped and shows the 26 good steps.
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("Training stopped early: training stopped at step 27"),
        "{html}"
    );
    let loss = report_csv(&dir.path().join("report-loss.csv"));
    assert_eq!(series(&loss, PER_STEP).len(), 26);
}

#[test]
fn resume_refuses_a_checkpoint_of_another_architecture_or_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        out_dir: Some(dir.path().to_path_buf()),
        ..TrainOptions::new(5, OptimizerSpec::new(OptimizerKind::Adam, 0.01))
    };
    train(
        &mut RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 0).unwrap(),
        &opts,
    )
    .unwrap();
    let resume = TrainOptions {
        resume: true,
        steps: 10,
        ..opts.clone()
    };
    let mut other =
        RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 12), 100, 0).unwrap();
    let e = train(&mut other, &resume).err().unwrap().to_string();
    assert!(
        e.contains("skipgate.model") && e.contains("\"hidden\":10") && e.contains("\"hidden\":12"),
        "{e}"
    );

    let sgd = TrainOptions {
        optimizer: OptimizerSpec::new(OptimizerKind::Sgd, 0.01),
        ..resume.clone()
    };
    let mut same =
        RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 0).unwrap();
    let e = train(&mut same, &sgd).err().unwrap().to_string();
    assert!(
        e.contains("trained with adam") && e.contains("asks for sgd"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let missing = TrainOptions {
        out_dir: Some(empty.path().to_path_buf()),
        ..resume
    };
    let e = train(&mut same, &missing).err().unwrap().to_string();
    assert!(
        e.contains("nothing to resume") && e.contains("holds no checkpoint.safetensors"),
        "{e}"
    );
}

#[test]
fn csv_log_has_a_header_and_one_row_per_step_and_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        out_dir: Some(dir.path().to_path_buf()),
        log_format: LogFormat::Csv,
        eval_every: 4,
        ..TrainOptions::new(10, OptimizerSpec::new(OptimizerKind::Adam, 0.01))
    };
    train(
        &mut RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 0).unwrap(),
        &opts,
    )
    .unwrap();
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "step,kind,loss,accuracy,lr,grad_norm,items_per_s,test_mse,baseline_mse"
    );
    assert_eq!(lines.iter().filter(|l| l.contains(",train,")).count(), 10);
    let evals: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains(",eval,"))
        .copied()
        .collect();
    assert_eq!(evals.len(), 3, "steps 4, 8 and the last");
    assert!(evals[2].starts_with("10,eval,,,,,,"), "{}", evals[2]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["report"]["steps"], 10);
    assert_eq!(summary["settings"]["task"]["task"], "sum");
    assert_eq!(summary["settings"]["model"]["hidden"], 10);
}

/// Rows `(series, x, y)` of a figure's CSV (none of the run report's series names needs quoting).
fn report_csv(path: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            assert_eq!(c.len(), 3, "{l}");
            (
                c[0].to_string(),
                c[1].parse().unwrap(),
                c[2].parse().unwrap(),
            )
        })
        .collect()
}

/// The `(x, y)` points of one series of a figure's CSV.
fn series(rows: &[(String, f64, f64)], name: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|r| r.0 == name)
        .map(|r| (r.1, r.2))
        .collect()
}

const PER_STEP: &str = "loss of the step's batch";

/// `(step, value)` of `key` in the records of `kind` of `metrics.jsonl`, read independently of
/// the library.
fn logged(dir: &Path, kind: &str, key: &str) -> Vec<(f64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .map(|v| (v["step"].as_f64().unwrap(), v[key].as_f64().unwrap()))
        .collect()
}

fn report_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name == "report.html" || (name.starts_with("report-") && name.ends_with(".csv"))
        })
        .collect();
    files.sort();
    files
}

fn sum_run(dir: &Path, steps: u64) -> TrainOptions {
    TrainOptions {
        out_dir: Some(dir.to_path_buf()),
        eval_every: 10,
        clip: Some(1.0),
        seed: 5,
        label: "sum rnn".into(),
        command: "skipgate train --task sum --steps 30 --seed 5 --label '<&>'".into(),
        ..TrainOptions::new(steps, OptimizerSpec::new(OptimizerKind::Adam, 0.01))
    }
}

/// A run writes report.html with a figure per quantity (loss, held-out MSE, learning rate,
/// gradient norm), each captioned with the command and seed, and CSVs equal to the metrics log.
#[test]
fn train_writes_a_report_whose_figures_match_the_metrics_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut task =
        RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 5).unwrap();
    train(&mut task, &sum_run(d, 30)).unwrap();

    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    for (id, title) in [
        ("report-loss", "Training loss"),
        ("report-eval-mse", "Held-out mean squared error"),
        ("report-lr", "Learning rate"),
        ("report-grad-norm", "Gradient norm"),
    ] {
        assert!(
            html.contains(&format!("<figure id=\"{id}\">\n<h2>{title}</h2>")),
            "{id}"
        );
        assert!(html.contains(&format!("<a href=\"{id}.csv\">")), "{id}");
        assert!(d.join(format!("{id}.csv")).exists(), "{id}");
    }
    let caption = "Command: <code>skipgate train --task sum --steps 30 --seed 5 --label \
                   &#39;&lt;&amp;&gt;&#39;</code>; seed 5.";
    assert_eq!(html.matches(caption).count(), 4, "{html}");
    assert!(html.contains("<title>Training run: sum rnn</title>"));
    assert!(html.contains("<td>test_mse (step 30)</td>"));

    // The CSVs hold the logged numbers exactly.
    let loss = report_csv(&d.join("report-loss.csv"));
    let logged_loss = logged(d, "train", "loss");
    assert_eq!(logged_loss.len(), 30);
    assert_eq!(series(&loss, PER_STEP), logged_loss);
    let mean = series(&loss, "mean of the last 50 steps");
    for (i, (step, m)) in mean.iter().enumerate() {
        let want = logged_loss[..=i].iter().map(|p| p.1).sum::<f64>() / (i + 1) as f64;
        assert_eq!(*step, logged_loss[i].0);
        assert!(
            (m - want).abs() <= 1e-12 * want,
            "step {step}: {m} vs {want}"
        );
    }
    assert!(
        std::fs::read_to_string(d.join("report-loss.csv"))
            .unwrap()
            .starts_with("series,training step,training loss (MSE)\n")
    );
    let mse = report_csv(&d.join("report-eval-mse.csv"));
    assert_eq!(series(&mse, "test_mse"), logged(d, "eval", "test_mse"));
    assert_eq!(
        series(&mse, "baseline_mse"),
        logged(d, "eval", "baseline_mse")
    );
    assert_eq!(
        series(&mse, "test_mse")
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        [10.0, 20.0, 30.0]
    );
    let lr = report_csv(&d.join("report-lr.csv"));
    assert_eq!(series(&lr, "learning rate"), logged(d, "train", "lr"));
    assert!(lr.iter().all(|r| r.2 == 0.01));
    let norm = report_csv(&d.join("report-grad-norm.csv"));
    assert_eq!(
        series(&norm, "global gradient norm"),
        logged(d, "train", "grad_norm")
    );
    assert_eq!(
        series(&norm, "clipping threshold"),
        [(1.0, 1.0), (30.0, 1.0)]
    );
}

/// The same run twice (same seed, same command) writes byte-identical report files.
#[test]
fn the_same_run_twice_gives_identical_report_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        let mut task =
            RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Gru, 6), 32, 5).unwrap();
        train(&mut task, &sum_run(d, 30)).unwrap();
    }
    let (fa, fb) = (report_files(&a), report_files(&b));
    assert_eq!(fa.len(), 5, "{fa:?}");
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.file_name(), y.file_name());
        assert!(
            std::fs::read(x).unwrap() == std::fs::read(y).unwrap(),
            "{} differs",
            x.display()
        );
    }
}

/// A resumed run's report covers the whole history (here from a CSV log), and overwriting a
/// run removes every report file of the old run.
#[test]
fn resumed_run_report_covers_the_whole_history_and_overwrite_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let make =
        || RegressionTask::new(sum_spec(), ModelSpec::new(CellKind::Tanh, 10), 100, 5).unwrap();
    let first = TrainOptions {
        log_format: LogFormat::Csv,
        ..sum_run(d, 20)
    };
    train(&mut make(), &first).unwrap();
    let resumed = TrainOptions {
        steps: 40,
        resume: true,
        ..first.clone()
    };
    train(&mut make(), &resumed).unwrap();
    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert!(html.contains("resumed the run at step 20"), "{html}");
    assert!(html.contains("(metrics.csv): 40 training steps and 4 evaluations"));
    let loss = report_csv(&d.join("report-loss.csv"));
    let steps: Vec<f64> = series(&loss, PER_STEP).iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=40).map(|s| s as f64).collect::<Vec<_>>());
    let mse = report_csv(&d.join("report-eval-mse.csv"));
    assert_eq!(series(&mse, "test_mse").len(), 4);

    std::fs::write(d.join("report-eval-old.csv"), "stale").unwrap();
    let again = TrainOptions {
        overwrite: true,
        steps: 3,
        eval_every: 0,
        clip: Some(1e6),
        ..first
    };
    train(&mut make(), &again).unwrap();
    assert!(!d.join("report-eval-old.csv").exists());
    let loss = report_csv(&d.join("report-loss.csv"));
    assert_eq!(series(&loss, PER_STEP).len(), 3);
    // A threshold far above every norm is named in the caption, not drawn.
    let norm = report_csv(&d.join("report-grad-norm.csv"));
    assert!(series(&norm, "clipping threshold").is_empty());
    let html = std::fs::read_to_string(d.join("report.html")).unwrap();
    assert!(html.contains("clipped to norm 1000000") && html.contains("never acted"));
}
