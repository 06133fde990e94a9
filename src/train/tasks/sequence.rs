//! The sequence tasks: the sum of a sequence, the adding problem, the copy task, character-level
//! language modelling.

use std::collections::BTreeMap;

use ndarray::{Array2, Array3};

use crate::data::tasks::{IGNORE, SeqRegression, SeqTokens, adding_problem, copy_task, sum_task};
use crate::data::text::{CharVocab, StreamBatches, TextCorpus, TokenBatch};
use crate::io::TensorFile;
use crate::loss::{cross_entropy, mse_loss};
use crate::models::{SeqRegressor, TokenRnn, TokenRnnConfig};
use crate::rnn::RnnState;
use crate::{Error, Mode, Result, Rng};

use super::{Metrics, ModelSpec, RunFile, StepStats, TaskSpec, TrainTask};

/// Metadata keys shared by every task.
pub(super) fn base_metadata(
    task: &TaskSpec,
    model: &impl serde::Serialize,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "skipgate.task".into(),
        serde_json::to_string(task).expect("serialisable"),
    );
    m.insert(
        "skipgate.model".into(),
        serde_json::to_string(model).expect("serialisable"),
    );
    m.insert("skipgate.version".into(), env!("CARGO_PKG_VERSION").into());
    m
}

/// Seeds of the held-out sets, fixed so every run and every model is evaluated on the same data.
pub(super) const VAL_SEED: u64 = 0x5EED_0F7E_57AB;

/// Mean squared error of predicting the training targets' mean on `data`.
fn mean_predictor_mse(train_y: &Array2<f32>, data: &SeqRegression<f32>) -> f64 {
    let mean = train_y.iter().map(|&v| v as f64).sum::<f64>() / train_y.len() as f64;
    data.y
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / data.y.len() as f64
}

/// Sequence-to-value regression: the sum task and the adding problem.
pub struct RegressionTask {
    spec: TaskSpec,
    model: ModelSpec,
    batch: usize,
    /// The fixed training set (sum task); `None` draws a fresh batch each step (adding problem).
    train: Option<SeqRegression<f32>>,
    val: SeqRegression<f32>,
    /// MSE of the best constant prediction on `val`.
    baseline: f64,
    input_size: usize,
}

impl RegressionTask {
    /// Builds the data of a `sum` or `adding` spec; `seed` draws the fixed training set.
    pub fn new(spec: TaskSpec, model: ModelSpec, batch: usize, seed: u64) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("train", "batch", "must be positive"));
        }
        let mut val_rng = Rng::seed(VAL_SEED);
        let (train, val, baseline, input_size) = match spec {
            TaskSpec::Sum {
                seq_len,
                train_size,
                test_size,
            } => {
                let train = sum_task::<f32>(train_size, seq_len, &mut Rng::seed(seed))?;
                let test = sum_task::<f32>(test_size, seq_len, &mut val_rng)?;
                let baseline = mean_predictor_mse(&train.y, &test);
                (Some(train), test, baseline, 1)
            }
            TaskSpec::Adding { seq_len, val_size } => {
                let val = adding_problem::<f32>(val_size, seq_len, &mut val_rng)?;
                // The best constant is E[y] = 1.
                let ones = Array2::from_elem((1, 1), 1.0f32);
                let baseline = mean_predictor_mse(&ones, &val);
                (None, val, baseline, 2)
            }
            _ => {
                return Err(Error::invalid(
                    "RegressionTask",
                    "task",
                    format!("{} is not a regression task", spec.name()),
                ));
            }
        };
        Ok(RegressionTask {
            spec,
            model,
            batch,
            train,
            val,
            baseline,
            input_size,
        })
    }

    /// MSE of the best constant prediction on the held-out set.
    pub fn baseline_mse(&self) -> f64 {
        self.baseline
    }

    /// The held-out set.
    pub fn held_out(&self) -> &SeqRegression<f32> {
        &self.val
    }
}

impl TrainTask for RegressionTask {
    type Model = SeqRegressor<f32>;

    fn build_model(&self, rng: &mut Rng) -> Result<Self::Model> {
        SeqRegressor::new(
            self.model.recurrent(self.input_size),
            &self.model.init,
            1,
            rng,
        )
    }

    fn step(&mut self, model: &mut Self::Model, rng: &mut Rng) -> Result<StepStats> {
        let batch = match (&self.train, &self.spec) {
            (Some(train), _) if self.batch >= train.len() => None,
            (Some(train), _) => {
                let mut idx = rng.permutation(train.len());
                idx.truncate(self.batch);
                Some(train.batch(&idx)?)
            }
            (None, TaskSpec::Adding { seq_len, .. }) => {
                Some(adding_problem(self.batch, *seq_len, rng)?)
            }
            (None, _) => unreachable!("only the adding problem draws fresh batches"),
        };
        let data = batch.as_ref().or(self.train.as_ref()).expect("a batch");
        let pred = model.forward(data.x.view(), None, Mode::Train, rng)?;
        let (loss, d_pred) = mse_loss(pred.view(), data.y.view())?;
        model.backward(d_pred.view())?;
        Ok(StepStats {
            loss: loss as f64,
            items: data.len(),
            correct: None,
        })
    }

    fn evaluate(&mut self, model: &mut Self::Model) -> Result<Metrics> {
        let mut rng = Rng::seed(0); // unused in eval mode
        let mut sq = 0.0;
        for start in (0..self.val.len()).step_by(1000) {
            let idx: Vec<usize> = (start..(start + 1000).min(self.val.len())).collect();
            let part = self.val.batch(&idx)?;
            let pred = model.forward(part.x.view(), None, Mode::Eval, &mut rng)?;
            sq += pred
                .iter()
                .zip(part.y.iter())
                .map(|(p, y)| (*p as f64 - *y as f64).powi(2))
                .sum::<f64>();
        }
        let name = if matches!(self.spec, TaskSpec::Sum { .. }) {
            "test_mse"
        } else {
            "val_mse"
        };
        Ok(vec![
            (name.into(), sq / self.val.len() as f64),
            ("baseline_mse".into(), self.baseline),
        ])
    }

    fn item_name(&self) -> &'static str {
        "seq"
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        base_metadata(&self.spec, &self.model)
    }
}

/// Sums the cross-entropy and counts the correct argmax predictions over the scored targets.
fn score_tokens(logits: &Array2<f32>, targets: &[usize]) -> Result<(f64, usize, usize)> {
    let (loss, _) = cross_entropy(logits.view(), targets, Some(IGNORE))?;
    let mut counted = 0;
    let mut correct = 0;
    for (row, &t) in logits.rows().into_iter().zip(targets) {
        if t == IGNORE {
            continue;
        }
        counted += 1;
        let best =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            );
        correct += usize::from(best.0 == t);
    }
    Ok((loss as f64 * counted as f64, counted, correct))
}

/// The copy task: remember S symbols over a delay and reproduce them.
pub struct CopyTask {
    spec: TaskSpec,
    model: ModelSpec,
    batch: usize,
    val: SeqTokens,
}

impl CopyTask {
    /// Builds the validation set of a `copy` spec.
    pub fn new(spec: TaskSpec, model: ModelSpec, batch: usize) -> Result<Self> {
        let TaskSpec::Copy {
            symbols,
            len,
            delay,
            val_size,
        } = spec
        else {
            return Err(Error::invalid(
                "CopyTask",
                "task",
                format!("{} is not the copy task", spec.name()),
            ));
        };
        let val = copy_task(val_size, symbols, len, delay, &mut Rng::seed(VAL_SEED))?;
        Ok(CopyTask {
            spec,
            model,
            batch,
            val,
        })
    }

    fn draw(&self, rng: &mut Rng) -> Result<SeqTokens> {
        let TaskSpec::Copy {
            symbols,
            len,
            delay,
            ..
        } = self.spec
        else {
            unreachable!("checked in new")
        };
        copy_task(self.batch, symbols, len, delay, rng)
    }
}

impl TrainTask for CopyTask {
    type Model = TokenRnn<f32>;

    fn build_model(&self, rng: &mut Rng) -> Result<Self::Model> {
        token_model(&self.model, self.val.vocab_size, self.val.num_classes, rng)
    }

    fn step(&mut self, model: &mut Self::Model, rng: &mut Rng) -> Result<StepStats> {
        let data = self.draw(rng)?;
        let targets: Vec<usize> = data.targets.iter().copied().collect();
        let out = model.forward(data.inputs.view(), None, Mode::Train, rng)?;
        let (loss, d) = cross_entropy(out.logits.view(), &targets, Some(IGNORE))?;
        model.backward(d.view())?;
        Ok(StepStats {
            loss: loss as f64,
            items: data.len(),
            correct: None,
        })
    }

    fn evaluate(&mut self, model: &mut Self::Model) -> Result<Metrics> {
        let mut rng = Rng::seed(0);
        let out = model.forward(self.val.inputs.view(), None, Mode::Eval, &mut rng)?;
        let targets: Vec<usize> = self.val.targets.iter().copied().collect();
        let (loss_sum, counted, correct) = score_tokens(&out.logits, &targets)?;
        Ok(vec![
            ("val_loss".into(), loss_sum / counted as f64),
            ("val_accuracy".into(), correct as f64 / counted as f64),
        ])
    }

    fn item_name(&self) -> &'static str {
        "seq"
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        base_metadata(&self.spec, &self.model)
    }
}

fn token_model(
    spec: &ModelSpec,
    vocab: usize,
    classes: usize,
    rng: &mut Rng,
) -> Result<TokenRnn<f32>> {
    TokenRnn::new(
        TokenRnnConfig {
            vocab_size: vocab,
            embedding_dim: spec.embedding,
            rnn: spec.recurrent(spec.embedding),
            init: spec.init.clone(),
            num_classes: classes,
        },
        rng,
    )
}

/// Character-level language modelling on a text.
pub struct CharLmTask {
    spec: TaskSpec,
    model: ModelSpec,
    batch: usize,
    seq_len: usize,
    vocab: CharVocab,
    train: Vec<usize>,
    val: Vec<TokenBatch>,
    /// Truncated BPTT: the streams and the state carried between their chunks.
    streams: Option<(StreamBatches, Option<RnnState<f32>>)>,
}

impl CharLmTask {
    /// Reads (or takes the embedded) text and splits it.
    pub fn new(spec: TaskSpec, model: ModelSpec, batch: usize) -> Result<Self> {
        let TaskSpec::CharLm {
            seq_len,
            train_fraction,
            tbptt,
            ref text,
            val_batches,
        } = spec
        else {
            return Err(Error::invalid(
                "CharLmTask",
                "task",
                format!("{} is not charlm", spec.name()),
            ));
        };
        let corpus = match text {
            Some(path) => TextCorpus::from_file(path)?,
            None => TextCorpus::shakespeare(),
        };
        if model.bidirectional {
            return Err(Error::invalid(
                "CharLmTask",
                "model",
                "a language model predicts each character from the ones before it; \
                 a reversed direction would read the very character it has to predict",
            ));
        }
        let (train, val_ids) = corpus.split(train_fraction)?;
        let mut val =
            TextCorpus::eval_batches(&val_ids, batch, seq_len).map_err(|e| Error::Data {
                what: "validation split".into(),
                msg: format!(
                    "the last {:.0}% of the text ({} characters) is held out for validation: {e}",
                    (1.0 - train_fraction) * 100.0,
                    val_ids.len()
                ),
            })?;
        if let Some(n) = val_batches {
            val.truncate(n.max(1));
        }
        let streams = if tbptt {
            Some((StreamBatches::new(&train, batch)?, None))
        } else {
            None
        };
        Ok(CharLmTask {
            vocab: corpus.vocab,
            spec,
            model,
            batch,
            seq_len,
            train,
            val,
            streams,
        })
    }

    /// The character vocabulary.
    pub fn vocab(&self) -> &CharVocab {
        &self.vocab
    }
}

impl TrainTask for CharLmTask {
    type Model = TokenRnn<f32>;

    fn build_model(&self, rng: &mut Rng) -> Result<Self::Model> {
        token_model(&self.model, self.vocab.len(), self.vocab.len(), rng)
    }

    fn step(&mut self, model: &mut Self::Model, rng: &mut Rng) -> Result<StepStats> {
        let (inputs, targets, state) = match &mut self.streams {
            None => {
                let (x, y) = TextCorpus::random_batch(&self.train, self.batch, self.seq_len, rng)?;
                (x, y, None)
            }
            Some((streams, state)) => match streams.next_chunk(self.seq_len)? {
                Some((x, y)) => (x, y, state.take()),
                None => {
                    streams.reset();
                    let (x, y) = streams
                        .next_chunk(self.seq_len)?
                        .expect("a fresh pass has chunks");
                    (x, y, None)
                }
            },
        };
        let targets: Vec<usize> = targets.iter().copied().collect();
        let out = model.forward(inputs.view(), state.as_ref(), Mode::Train, rng)?;
        let (loss, d) = cross_entropy(out.logits.view(), &targets, None)?;
        model.backward(d.view())?;
        if let Some((_, carried)) = &mut self.streams {
            *carried = Some(out.state);
        }
        Ok(StepStats {
            loss: loss as f64,
            items: targets.len(),
            correct: None,
        })
    }

    fn evaluate(&mut self, model: &mut Self::Model) -> Result<Metrics> {
        let mut rng = Rng::seed(0);
        let (mut loss_sum, mut counted, mut correct) = (0.0, 0, 0);
        for (x, y) in &self.val {
            let out = model.forward(x.view(), None, Mode::Eval, &mut rng)?;
            let targets: Vec<usize> = y.iter().copied().collect();
            let (l, n, c) = score_tokens(&out.logits, &targets)?;
            loss_sum += l;
            counted += n;
            correct += c;
        }
        Ok(vec![
            ("val_loss".into(), loss_sum / counted as f64),
            ("val_accuracy".into(), correct as f64 / counted as f64),
        ])
    }

    fn item_name(&self) -> &'static str {
        "char"
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = base_metadata(&self.spec, &self.model);
        m.insert("skipgate.vocab".into(), self.vocab.chars());
        m
    }

    fn save_state(&self, file: &mut TensorFile) {
        if let Some((streams, state)) = &self.streams {
            let pos = ndarray::arr0(streams.position() as i64);
            file.insert_i64("task.stream_position", pos.view());
            if let Some(s) = state {
                file.insert_array("task.h", s.h.view());
                if let Some(c) = &s.c {
                    file.insert_array("task.c", c.view());
                }
            }
        }
    }

    fn load_state(&mut self, file: &TensorFile) -> Result<()> {
        if let Some((streams, state)) = &mut self.streams {
            let pos = file.get_i64("task.stream_position")?;
            let pos = pos.iter().next().copied().unwrap_or(0).max(0) as usize;
            streams.reset();
            while streams.position() < pos {
                if streams.next_chunk(self.seq_len)?.is_none() {
                    break;
                }
            }
            *state = if file.contains("task.h") {
                let h: Array3<f32> = to3(file.get_array("task.h")?)?;
                let c = if file.contains("task.c") {
                    Some(to3(file.get_array("task.c")?)?)
                } else {
                    None
                };
                Some(RnnState { h, c })
            } else {
                None
            };
        }
        Ok(())
    }
}

fn to3(a: ndarray::ArrayD<f32>) -> Result<Array3<f32>> {
    let shape = a.shape().to_vec();
    a.into_dimensionality().map_err(|_| {
        Error::shape(
            "CharLmTask::load_state",
            "carried state",
            "(L·D, B, H)",
            &shape,
        )
    })
}

/// Rebuilds a character language model from the `model.safetensors` (or `checkpoint.safetensors`)
/// of a `charlm` run.
///
/// # Errors
/// The file cannot be read, was not written by a `charlm` run (no `skipgate.task`,
/// `skipgate.model` and `skipgate.vocab` metadata), or its tensors do not fit the architecture
/// its metadata describes.
pub fn load_char_lm(path: &std::path::Path) -> Result<(TokenRnn<f32>, CharVocab)> {
    const EXPECTED: &str = "a `skipgate train --task charlm` run";
    let run = RunFile::read(path, EXPECTED)?;
    if !matches!(run.task, TaskSpec::CharLm { .. }) {
        return Err(run.error(format!(
            "holds a model trained on the {} task, not a character language model (charlm)",
            run.task.name()
        )));
    }
    let spec: ModelSpec = run.json("skipgate.model", EXPECTED)?;
    let vocab = CharVocab::from_chars(run.text("skipgate.vocab", EXPECTED)?.to_string())?;
    let mut model = token_model(&spec, vocab.len(), vocab.len(), &mut Rng::seed(0))?;
    run.load_weights(&mut model)?;
    Ok((model, vocab))
}
