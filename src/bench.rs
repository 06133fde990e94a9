//! The benchmark workloads of the shared `bench/WORKLOADS.md` (outside this repository; listed in
//! `docs/performance.md`), built from the library's public pieces exactly as the PyTorch
//! reference (`bench/torch_baseline.py`) builds them, and a runner that times them and reports
//! one JSON line per workload.
//!
//! Behind `skipgate bench` and `cargo bench --bench workloads`.
//!
//! | workload | model | shapes | one step | items |
//! |---|---|---|---|---|
//! | `rnn_train` | tanh RNN (1 layer) + Linear(H→1) on the last step, MSE | B=64, T=100, I=32, H=256 | forward, backward, SGD (lr 0.01) | sequences |
//! | `lstm_train` | LSTM, otherwise as `rnn_train` | same | same | sequences |
//! | `gru_train` | GRU, otherwise as `rnn_train` | same | same | sequences |
//! | `lstm_infer` | LSTM forward in [`Mode::Eval`] (no caches kept) | B=64, T=100, I=32, H=256 | forward | sequences |
//! | `charlstm_train` | Embedding(65→64) → 2-layer LSTM H=512 → Linear(512→65), cross-entropy on every step | B=32, T=128 | forward, backward, Adam (lr 2e-3) | characters (B·T) |
//! | `seed_sum_train` | the course's sum task: tanh RNN I=1, H=10 + Linear(10→1), MSE | B=100, T=5 | 100 SGD steps (lr 0.01) | SGD steps |
//! | `resnet20_train` | CIFAR ResNet-20 (option-A shortcuts, BN train mode), cross-entropy | B=128, 3×32×32 | forward, backward, SGD momentum 0.9, wd 5e-4, lr 0.1 | images |
//! | `resnet20_infer` | the same network in [`Mode::Eval`] | B=128, 3×32×32 | forward | images |
//! | `resnet18_infer` | torchvision ResNet-18 (1000 classes) in [`Mode::Eval`] | B=8, 3×224×224 | forward | images |
//!
//! A training step is the shape of the training loop's ([`crate::train`]): zero the gradients,
//! forward in [`Mode::Train`], the loss and its gradient, backward, one optimizer step. Inputs
//! are random (the timing does not depend on the values), weights use the library's default
//! initialisation, everything is `f32`, and every workload draws from its own `Rng::seed(0)`.
//!
//! The runner ([`measure`]) performs [`WARMUP_STEPS`] untimed steps, then `iters` timed ones,
//! and reports the median and the minimum step time, `items / median` per second, and the peak
//! resident memory of the process while the workload was built and run (see [`peak_rss_mb`]).

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use ndarray::{Array2, Array3, Array4};
use serde::Serialize;

use crate::data::tasks::sum_task;
use crate::loss::{cross_entropy, mse_loss};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::{SeqRegressor, TokenRnn, TokenRnnConfig};
use crate::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use crate::rnn::{CellKind, Recurrent, RecurrentConfig, RecurrentInit, SeqInput};
use crate::{Error, Mode, Module, Result, Rng};

/// Untimed steps before the timed ones (as in the PyTorch reference).
pub const WARMUP_STEPS: usize = 3;

/// Timed steps when none are asked for (as in the PyTorch reference).
pub const DEFAULT_ITERS: usize = 10;

/// One workload of `bench/WORKLOADS.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    RnnTrain,
    LstmTrain,
    GruTrain,
    LstmInfer,
    CharLstmTrain,
    SeedSumTrain,
    Resnet20Train,
    Resnet20Infer,
    Resnet18Infer,
}

impl Workload {
    /// Every workload, in the reference's order.
    pub const ALL: [Workload; 9] = [
        Workload::RnnTrain,
        Workload::LstmTrain,
        Workload::GruTrain,
        Workload::LstmInfer,
        Workload::CharLstmTrain,
        Workload::SeedSumTrain,
        Workload::Resnet20Train,
        Workload::Resnet20Infer,
        Workload::Resnet18Infer,
    ];

    /// The name in the JSON lines and in `--only`: `rnn_train`, `lstm_infer`, ….
    pub fn name(self) -> &'static str {
        match self {
            Workload::RnnTrain => "rnn_train",
            Workload::LstmTrain => "lstm_train",
            Workload::GruTrain => "gru_train",
            Workload::LstmInfer => "lstm_infer",
            Workload::CharLstmTrain => "charlstm_train",
            Workload::SeedSumTrain => "seed_sum_train",
            Workload::Resnet20Train => "resnet20_train",
            Workload::Resnet20Infer => "resnet20_infer",
            Workload::Resnet18Infer => "resnet18_infer",
        }
    }

    /// One line: the model, the shapes, what a step does and what an item is.
    pub fn description(self) -> &'static str {
        match self {
            Workload::RnnTrain => {
                "tanh RNN (I=32, H=256) + Linear(256→1) on the last step, MSE; B=64, T=100; forward, backward, SGD lr 0.01; items: sequences"
            }
            Workload::LstmTrain => "as rnn_train with an LSTM",
            Workload::GruTrain => "as rnn_train with a GRU",
            Workload::LstmInfer => {
                "LSTM (I=32, H=256) forward in eval mode, no caches kept; B=64, T=100; items: sequences"
            }
            Workload::CharLstmTrain => {
                "Embedding(65→64) → 2-layer LSTM H=512 → Linear(512→65), cross-entropy on every step; B=32, T=128; forward, backward, Adam lr 2e-3; items: characters (B·T)"
            }
            Workload::SeedSumTrain => {
                "the course's sum task: tanh RNN (I=1, H=10) + Linear(10→1), MSE; B=100, T=5; one step = 100 SGD steps (lr 0.01); items: SGD steps"
            }
            Workload::Resnet20Train => {
                "CIFAR ResNet-20 (option-A shortcuts, BN in train mode), cross-entropy; B=128, 3×32×32; forward, backward, SGD lr 0.1, momentum 0.9, wd 5e-4; items: images"
            }
            Workload::Resnet20Infer => {
                "the same ResNet-20 forward in eval mode; B=128, 3×32×32; items: images"
            }
            Workload::Resnet18Infer => {
                "torchvision ResNet-18 (1000 classes) forward in eval mode; B=8, 3×224×224; items: images"
            }
        }
    }

    /// Builds the model, data and optimizer of this workload at `size`.
    ///
    /// # Errors
    /// Only if the library rejects its own configuration (a bug).
    pub fn prepare(self, size: Size) -> Result<Prepared> {
        let full = size == Size::Full;
        let seq = if full {
            SeqShape::WORKLOAD
        } else {
            SeqShape::SMOKE
        };
        match self {
            Workload::RnnTrain => seq_train(CellKind::Tanh, seq),
            Workload::LstmTrain => seq_train(CellKind::Lstm, seq),
            Workload::GruTrain => seq_train(CellKind::Gru, seq),
            Workload::LstmInfer => lstm_infer(seq),
            Workload::CharLstmTrain => charlstm_train(if full {
                CharLstmShape::WORKLOAD
            } else {
                CharLstmShape::SMOKE
            }),
            Workload::SeedSumTrain => seed_sum_train(100, 5, if full { 100 } else { 2 }),
            Workload::Resnet20Train => {
                resnet_train(ResNetConfig::cifar(20)?, if full { 128 } else { 2 }, 32)
            }
            Workload::Resnet20Infer => {
                resnet_infer(ResNetConfig::cifar(20)?, if full { 128 } else { 2 }, 32)
            }
            Workload::Resnet18Infer => resnet_infer(
                ResNetConfig::torchvision(18)?,
                if full { 8 } else { 1 },
                if full { 224 } else { 32 },
            ),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of every workload, comma-separated, for messages.
pub fn workload_names() -> String {
    Workload::ALL.map(Workload::name).join(", ")
}

impl FromStr for Workload {
    type Err = Error;

    /// Parses a workload name (`lstm_train`, …), trimmed.
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim();
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| {
                Error::invalid(
                    "bench",
                    format!("workload '{s}'"),
                    format!("expected one of {}", workload_names()),
                )
            })
    }
}

/// The sizes a workload is built at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The sizes of `bench/WORKLOADS.md`: what is measured.
    Full,
    /// Tiny sizes of the same models, for tests that every step runs.
    Smoke,
}

/// A built workload: one call of `step` is one step of the workload, processing `items` items.
pub struct Prepared {
    /// One step (for the training workloads: zero grads, forward, loss, backward, update).
    pub step: Box<dyn FnMut() -> Result<()>>,
    /// Items per step (sequences, characters, images, SGD steps).
    pub items: usize,
}

/// Shapes of the sequence-regression workloads: inputs `(B, T, I)`, hidden size `H`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqShape {
    pub batch: usize,
    pub seq_len: usize,
    pub input: usize,
    pub hidden: usize,
}

impl SeqShape {
    /// B=64, T=100, I=32, H=256.
    pub const WORKLOAD: SeqShape = SeqShape {
        batch: 64,
        seq_len: 100,
        input: 32,
        hidden: 256,
    };
    /// B=2, T=3, I=4, H=5.
    pub const SMOKE: SeqShape = SeqShape {
        batch: 2,
        seq_len: 3,
        input: 4,
        hidden: 5,
    };
}

/// Shapes of the character language model: ids `(B, T)` over `vocab` tokens, embedding `E`,
/// `layers` LSTM layers of `H` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharLstmShape {
    pub batch: usize,
    pub seq_len: usize,
    pub vocab: usize,
    pub embedding: usize,
    pub hidden: usize,
    pub layers: usize,
}

impl CharLstmShape {
    /// B=32, T=128, V=65, E=64, H=512, 2 layers.
    pub const WORKLOAD: CharLstmShape = CharLstmShape {
        batch: 32,
        seq_len: 128,
        vocab: 65,
        embedding: 64,
        hidden: 512,
        layers: 2,
    };
    /// B=2, T=3, V=7, E=4, H=5, 2 layers.
    pub const SMOKE: CharLstmShape = CharLstmShape {
        batch: 2,
        seq_len: 3,
        vocab: 7,
        embedding: 4,
        hidden: 5,
        layers: 2,
    };
}

/// An array of N(0, 1) values (`torch.randn`).
fn randn<D: ndarray::Dimension>(shape: D, rng: &mut Rng) -> ndarray::Array<f32, D> {
    let mut a = ndarray::Array::zeros(shape);
    rng.fill_normal(a.as_slice_mut().expect("fresh array"), 0.0, 1.0);
    a
}

/// `SeqRegressor(kind, I, H)` (head on the last step) trained with MSE against random targets
/// `(B, 1)` on random inputs `(B, T, I)`, plain SGD lr 0.01. Items: sequences (B).
///
/// # Errors
/// A zero size.
pub fn seq_train(kind: CellKind, s: SeqShape) -> Result<Prepared> {
    let mut rng = Rng::seed(0);
    let config = RecurrentConfig::new(kind, s.input, s.hidden);
    let mut model = SeqRegressor::<f32>::new(config, &RecurrentInit::default(), 1, &mut rng)?;
    let mut opt = Sgd::new(SgdConfig::with_lr(0.01))?;
    let x = randn(ndarray::Ix3(s.batch, s.seq_len, s.input), &mut rng); // (B, T, I)
    let y = randn(ndarray::Ix2(s.batch, 1), &mut rng); // (B, 1)
    let step = move || -> Result<()> {
        model.zero_grad();
        let pred = model.forward(x.view(), None, Mode::Train, &mut rng)?; // (B, 1)
        let (_, d_pred) = mse_loss(pred.view(), y.view())?;
        model.backward(d_pred.view())?;
        opt.step(&mut model)
    };
    Ok(Prepared {
        step: Box::new(step),
        items: s.batch,
    })
}

/// An LSTM layer `(B, T, I) → (B, T, H)` (batch first, as `nn.LSTM(I, H, batch_first=True)`),
/// forward in [`Mode::Eval`]. Items: sequences (B).
///
/// # Errors
/// A zero size.
pub fn lstm_infer(s: SeqShape) -> Result<Prepared> {
    let mut rng = Rng::seed(0);
    let config = RecurrentConfig::new(CellKind::Lstm, s.input, s.hidden).batch_first(true);
    let mut lstm = Recurrent::<f32>::new(config, &mut rng)?;
    let x: Array3<f32> = randn(ndarray::Ix3(s.batch, s.seq_len, s.input), &mut rng); // (B, T, I)
    let step = move || -> Result<()> {
        let out = lstm.forward(SeqInput::new(x.view()), Mode::Eval, &mut rng)?; // (B, T, H)
        std::hint::black_box(&out);
        Ok(())
    };
    Ok(Prepared {
        step: Box::new(step),
        items: s.batch,
    })
}

/// [`TokenRnn`]: Embedding(V→E) → `layers`-layer LSTM H → Linear(H→V) on every step, trained
/// with cross-entropy against random targets `(B·T)` on random ids `(B, T)`, Adam lr 2e-3.
/// Items: characters (B·T).
///
/// # Errors
/// A zero size.
pub fn charlstm_train(s: CharLstmShape) -> Result<Prepared> {
    let mut rng = Rng::seed(0);
    let mut config = TokenRnnConfig::language_model(CellKind::Lstm, s.vocab, s.embedding, s.hidden);
    config.rnn = config.rnn.layers(s.layers);
    let mut model = TokenRnn::<f32>::new(config, &mut rng)?;
    let mut opt = Adam::new(AdamConfig {
        lr: 2e-3,
        ..AdamConfig::default()
    })?;
    let ids = Array2::from_shape_fn((s.batch, s.seq_len), |_| rng.below(s.vocab)); // (B, T)
    let targets: Vec<usize> = (0..s.batch * s.seq_len)
        .map(|_| rng.below(s.vocab))
        .collect(); // (B·T)
    let step = move || -> Result<()> {
        model.zero_grad();
        let out = model.forward(ids.view(), None, Mode::Train, &mut rng)?; // logits (B·T, V)
        let (_, d_logits) = cross_entropy(out.logits.view(), &targets, None)?;
        model.backward(d_logits.view())?;
        opt.step(&mut model)
    };
    Ok(Prepared {
        step: Box::new(step),
        items: s.batch * s.seq_len,
    })
}

/// The course's example: `SeqRegressor(tanh RNN, I=1, H=10)` on a fixed sum-task batch
/// X ~ U(0,1) `(B, T, 1)`, y = Σ_t x_t `(B, 1)`; one workload step is `sgd_steps` SGD steps
/// (lr 0.01), each a full training step. Items: SGD steps.
///
/// # Errors
/// A zero size.
pub fn seed_sum_train(batch: usize, seq_len: usize, sgd_steps: usize) -> Result<Prepared> {
    let mut rng = Rng::seed(0);
    let config = RecurrentConfig::new(CellKind::Tanh, 1, 10);
    let mut model = SeqRegressor::<f32>::new(config, &RecurrentInit::default(), 1, &mut rng)?;
    let mut opt = Sgd::new(SgdConfig::with_lr(0.01))?;
    let data = sum_task::<f32>(batch, seq_len, &mut rng)?; // x (B, T, 1), y (B, 1)
    let step = move || -> Result<()> {
        for _ in 0..sgd_steps {
            model.zero_grad();
            let pred = model.forward(data.x.view(), None, Mode::Train, &mut rng)?; // (B, 1)
            let (_, d_pred) = mse_loss(pred.view(), data.y.view())?;
            model.backward(d_pred.view())?;
            opt.step(&mut model)?;
        }
        Ok(())
    };
    Ok(Prepared {
        step: Box::new(step),
        items: sgd_steps,
    })
}

/// A [`ResNet`] trained with cross-entropy on random images `(B, C, S, S)` and random labels,
/// SGD lr 0.1, momentum 0.9, weight decay 5e-4. Items: images (B).
///
/// # Errors
/// A configuration the network rejects, or images too small for its strides.
pub fn resnet_train(config: ResNetConfig, batch: usize, image: usize) -> Result<Prepared> {
    let mut rng = Rng::seed(0);
    let (channels, classes) = (config.in_channels, config.num_classes);
    let mut model = ResNet::<f32>::new(config, &mut rng)?;
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        ..SgdConfig::default()
    })?;
    let x: Array4<f32> = randn(ndarray::Ix4(batch, channels, image, image), &mut rng); // (B, C, S, S)
    let y: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect(); // (B)
    let step = move || -> Result<()> {
        model.zero_grad();
        let logits = model.forward(x.view(), Mode::Train)?; // (B, classes)
        let (_, d_logits) = cross_entropy(logits.view(), &y, None)?;
        model.backward(d_logits.view())?;
        opt.step(&mut model)
    };
    Ok(Prepared {
        step: Box::new(step),
        items: batch,
    })
}

/// A [`ResNet`] forward in [`Mode::Eval`] (BatchNorm with its running statistics) on random
/// images `(B, C, S, S)`. Items: images (B).
///
/// # Errors
/// A configuration the network rejects, or images too small for its strides.
pub fn resnet_infer(config: ResNetConfig, batch: usize, image: usize) -> Result<Prepared> {
    let mut rng = Rng::seed(0);
    let channels = config.in_channels;
    let mut model = ResNet::<f32>::new(config, &mut rng)?;
    let x: Array4<f32> = randn(ndarray::Ix4(batch, channels, image, image), &mut rng); // (B, C, S, S)
    let step = move || -> Result<()> {
        let logits = model.forward(x.view(), Mode::Eval)?; // (B, classes)
        std::hint::black_box(&logits);
        Ok(())
    };
    Ok(Prepared {
        step: Box::new(step),
        items: batch,
    })
}

/// One JSON line of the bench output, in the reference's field order plus `peak_rss_mb`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// The workload's name.
    pub workload: String,
    /// `skipgate-<version>`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Threads of the rayon pool the workload ran on.
    pub threads: usize,
    /// Median of the timed steps, milliseconds (rounded to 3 decimals).
    pub median_ms: f64,
    /// Fastest timed step, milliseconds (rounded to 3 decimals).
    pub min_ms: f64,
    /// Items per step divided by the median step time (rounded to 1 decimal).
    pub items_per_s: f64,
    /// Peak resident memory in MiB (2²⁰ bytes; rounded to 1 decimal), see [`peak_rss_mb`];
    /// `null` where the system does not tell.
    pub peak_rss_mb: Option<f64>,
}

impl Measurement {
    /// The compact JSON object, one line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers and strings serialise")
    }
}

/// Median as Python's `statistics.median`: the middle value, or the mean of the two middle ones.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Builds `workload` at `size`, runs [`WARMUP_STEPS`] untimed steps and `iters` timed ones on the
/// current rayon pool, and measures them.
///
/// The peak resident memory is reset (where [`reset_peak_rss`] can) before the workload is built,
/// so it covers building and running this workload; memory the allocator kept from earlier
/// workloads of the same process still counts. One process per workload gives clean figures.
///
/// # Errors
/// `iters == 0`, or an error from a step.
pub fn measure(workload: Workload, size: Size, iters: usize) -> Result<Measurement> {
    if iters == 0 {
        return Err(Error::invalid(
            "bench",
            "iters",
            "must be at least 1, got 0",
        ));
    }
    reset_peak_rss();
    let Prepared { mut step, items } = workload.prepare(size)?;
    for _ in 0..WARMUP_STEPS {
        step()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    drop(step);
    times.sort_by(f64::total_cmp);
    let med = median(&times);
    Ok(Measurement {
        workload: workload.name().to_string(),
        implementation: format!("skipgate-{}", env!("CARGO_PKG_VERSION")),
        threads: rayon::current_num_threads(),
        median_ms: round_to(med, 3),
        min_ms: round_to(times[0], 3),
        items_per_s: round_to(items as f64 / (med / 1e3), 1),
        peak_rss_mb: peak_rss_mb().map(|mb| round_to(mb, 1)),
    })
}

/// Resets the process's peak resident set size (`VmHWM`) to its current size by writing `5` to
/// `/proc/self/clear_refs` (Linux 4.0 and later). Returns whether that worked; where it does not,
/// [`peak_rss_mb`] is the peak since the process started.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident set size in MiB: `VmHWM` of `/proc/self/status` (the same figure
/// as `getrusage(RUSAGE_SELF).ru_maxrss` until [`reset_peak_rss`] resets it); `None` where that
/// file does not exist (not Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_a_step_at_smoke_size() {
        for w in Workload::ALL {
            let mut p = w.prepare(Size::Smoke).unwrap();
            (p.step)().unwrap_or_else(|e| panic!("{w}: {e}"));
            (p.step)().unwrap_or_else(|e| panic!("{w}: {e}"));
            assert!(p.items > 0, "{w}");
        }
    }

    #[test]
    fn names_parse_back_and_unknown_names_list_the_workloads() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>().unwrap(), w);
        }
        let e = "nope".parse::<Workload>().unwrap_err().to_string();
        assert!(e.contains("'nope'"), "{e}");
        for w in Workload::ALL {
            assert!(e.contains(w.name()), "{e}");
        }
    }

    #[test]
    fn median_is_pythons() {
        assert_eq!(median(&[1.0, 2.0, 7.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 7.0]), 3.0);
        assert_eq!(median(&[5.0]), 5.0);
    }

    #[test]
    fn a_measurement_is_one_json_line_with_the_reference_fields() {
        let m = measure(Workload::SeedSumTrain, Size::Smoke, 2).unwrap();
        let line = m.json();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["workload"], "seed_sum_train");
        assert_eq!(
            v["impl"],
            format!("skipgate-{}", env!("CARGO_PKG_VERSION")).as_str()
        );
        assert!(v["median_ms"].as_f64().unwrap() >= v["min_ms"].as_f64().unwrap());
        assert_eq!(
            v["threads"].as_u64().unwrap() as usize,
            rayon::current_num_threads()
        );
        assert!(measure(Workload::SeedSumTrain, Size::Smoke, 0).is_err());
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = peak_rss_mb().expect("VmHWM on Linux");
            assert!(mb > 0.0);
        }
    }
}
