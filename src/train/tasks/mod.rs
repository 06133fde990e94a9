//! The training problems behind `skipgate train` and `skipgate lab`, each a [`TrainTask`].
//!
//! | task | input → target | model | metric |
//! |---|---|---|---|
//! | `sum` | X ~ U(0,1) `(N, T, 1)` → Σ_t x_t | [`SeqRegressor`] | test MSE (predicting the mean: ≈ T/12) |
//! | `adding` | values and two markers `(B, T, 2)` → the marked sum | [`SeqRegressor`] | validation MSE (predicting 1: 1/6) |
//! | `copy` | S symbols, D blanks, a delimiter → the S symbols | [`TokenRnn`] | validation cross-entropy, symbol accuracy |
//! | `charlm` | text → next character | [`TokenRnn`] | validation loss in nats per character |
//! | `fashion-mnist`, `mnist`, `cifar10`, `digits` | image → class | [`ResNet`] | test accuracy |

mod images;
mod sequence;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::io::TensorFile;
#[cfg(doc)]
use crate::models::{SeqRegressor, TokenRnn, resnet::ResNet};
use crate::rnn::{CellKind, RecurrentConfig, RecurrentInit};
use crate::{Module, Result, Rng};

pub use images::{ImageDataset, ImageTask, load_image_model, predict_with};
pub use sequence::{CharLmTask, CopyTask, RegressionTask, load_char_lm};

/// The recurrent architecture a task trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Cell type.
    pub kind: CellKind,
    /// Hidden units per direction.
    pub hidden: usize,
    /// Stacked recurrent layers.
    pub layers: usize,
    /// Two directions.
    pub bidirectional: bool,
    /// Dropout between recurrent layers (training only).
    pub dropout: f64,
    /// Embedding width for token tasks (ignored by regression tasks).
    pub embedding: usize,
    /// Initialisation options.
    pub init: RecurrentInit,
}

impl ModelSpec {
    /// One unidirectional layer of `hidden` units, no dropout, embedding 64, default init.
    pub fn new(kind: CellKind, hidden: usize) -> Self {
        ModelSpec {
            kind,
            hidden,
            layers: 1,
            bidirectional: false,
            dropout: 0.0,
            embedding: 64,
            init: RecurrentInit::default(),
        }
    }

    pub(crate) fn recurrent(&self, input_size: usize) -> RecurrentConfig {
        RecurrentConfig::new(self.kind, input_size, self.hidden)
            .layers(self.layers)
            .bidirectional(self.bidirectional)
            .dropout(self.dropout)
            .batch_first(true)
    }
}

/// Which problem to train on, with its sizes. Stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum TaskSpec {
    /// The course's sum-of-sequence regression: a fixed training set of `train_size` sequences.
    Sum {
        seq_len: usize,
        train_size: usize,
        test_size: usize,
    },
    /// The adding problem, a fresh batch every step.
    Adding { seq_len: usize, val_size: usize },
    /// The copy task, a fresh batch every step.
    Copy {
        symbols: usize,
        len: usize,
        delay: usize,
        val_size: usize,
    },
    /// Image classification.
    Images {
        /// Which dataset.
        dataset: ImageDataset,
        /// Where its files are (`None`: the dataset's default place, or the embedded copy).
        data_dir: Option<PathBuf>,
        /// Random crop and flip during training (as [`ImageDataset::default_augment`] chooses).
        augment: bool,
        /// Train on the first this many images of the (shuffled) training set only.
        train_limit: Option<usize>,
    },
    /// Character-level language modelling.
    CharLm {
        /// Characters per training window.
        seq_len: usize,
        /// Fraction of the text used for training (the rest, at the end, for validation).
        train_fraction: f64,
        /// Carry the state across consecutive windows of `batch` parallel streams (truncated
        /// BPTT) instead of drawing independent random windows.
        tbptt: bool,
        /// The text file; `None` is the embedded tiny Shakespeare.
        text: Option<PathBuf>,
        /// Evaluate on at most this many validation batches (`None`: the whole split).
        val_batches: Option<usize>,
    },
}

impl TaskSpec {
    /// The CLI name of the task.
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::Sum { .. } => "sum",
            TaskSpec::Adding { .. } => "adding",
            TaskSpec::Copy { .. } => "copy",
            TaskSpec::CharLm { .. } => "charlm",
            TaskSpec::Images { dataset, .. } => dataset.name(),
        }
    }
}

/// One optimisation step's numbers.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The training loss of the batch.
    pub loss: f64,
    /// Items processed (sequences, characters for language models, images).
    pub items: usize,
    /// Correct predictions among the items, for classifiers.
    pub correct: Option<usize>,
}

/// Named evaluation results; the first one is the headline metric.
pub type Metrics = Vec<(String, f64)>;

/// What the training loop needs from a problem.
pub trait TrainTask {
    /// The model trained.
    type Model: Module<f32>;

    /// A freshly initialised model (draws from `rng`).
    fn build_model(&self, rng: &mut Rng) -> Result<Self::Model>;

    /// Draws a batch (from `rng`), runs forward, the loss and backward; gradients accumulate in
    /// the model (the loop zeroes them before, clips and steps after).
    fn step(&mut self, model: &mut Self::Model, rng: &mut Rng) -> Result<StepStats>;

    /// Evaluates on held-out data; deterministic.
    fn evaluate(&mut self, model: &mut Self::Model) -> Result<Metrics>;

    /// What an item is, for throughput ("seq", "char").
    fn item_name(&self) -> &'static str;

    /// Metadata stored with the model: enough to rebuild it (`skipgate.task`, `skipgate.model`, …).
    fn metadata(&self) -> BTreeMap<String, String>;

    /// Adds the task's own resumable state (e.g. stream positions) to a checkpoint.
    fn save_state(&self, _file: &mut TensorFile) {}

    /// Restores what [`TrainTask::save_state`] wrote.
    fn load_state(&mut self, _file: &TensorFile) -> Result<()> {
        Ok(())
    }
}

/// The `model.safetensors` (or `checkpoint.safetensors`) of a `train` run, with the metadata that
/// says what it holds; what `sample`, `eval` and the loaders read.
pub(crate) struct RunFile {
    pub file: TensorFile,
    pub task: TaskSpec,
}

impl RunFile {
    /// Reads the file and its task; `expected` describes the run wanted, for messages.
    pub fn read(path: &std::path::Path, expected: &str) -> Result<Self> {
        let file = TensorFile::read(path)?;
        let task: TaskSpec = json_meta(&file, "skipgate.task", expected)?;
        Ok(RunFile { file, task })
    }

    /// The metadata entry `key`, parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str, expected: &str) -> Result<T> {
        json_meta(&self.file, key, expected)
    }

    /// The raw metadata entry `key`.
    pub fn text(&self, key: &str, expected: &str) -> Result<&str> {
        self.file
            .metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| {
                self.error(format!(
                    "has no {key} metadata: expected the model.safetensors of {expected}"
                ))
            })
    }

    /// An error about this file.
    pub fn error(&self, msg: String) -> crate::Error {
        crate::Error::Checkpoint {
            path: self.file.source.clone(),
            msg,
        }
    }

    /// Loads the weights into `model` (a training checkpoint's optimizer and task state are skipped).
    pub fn load_weights<F: crate::Scalar>(&self, model: &mut dyn Module<F>) -> Result<()> {
        crate::io::load_state_dict(model, &super::model_tensors(&self.file), &self.file.source)
    }
}

fn json_meta<T: serde::de::DeserializeOwned>(
    file: &TensorFile,
    key: &str,
    expected: &str,
) -> Result<T> {
    let err = |msg: String| crate::Error::Checkpoint {
        path: file.source.clone(),
        msg,
    };
    let text = file.metadata.get(key).ok_or_else(|| {
        err(format!(
            "has no {key} metadata: expected the model.safetensors of {expected}"
        ))
    })?;
    serde_json::from_str(text).map_err(|e| err(format!("{key}: {e}")))
}
