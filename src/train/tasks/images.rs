//! Image classification with residual networks: Fashion-MNIST, MNIST, CIFAR-10 and the 8×8 digits.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::data::images::{
    Augment, ImageSet, Normalize, Split, batch, load_cifar10_dir, load_fashion_mnist, load_idx_dir,
};
use crate::io::TensorFile;
use crate::loss::cross_entropy;
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::{Error, Mode, Result, Rng};

use super::sequence::{VAL_SEED, base_metadata};
use super::{Metrics, RunFile, StepStats, TaskSpec, TrainTask};

/// The image datasets skipgate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageDataset {
    /// Fashion-MNIST (60k/10k 28×28 grey images of 10 kinds of clothing), read from a directory
    /// of IDX files, by default `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`).
    FashionMnist,
    /// MNIST digits (IDX files in `--data-dir`); without a directory, the embedded 10k test set
    /// split 8000 / 2000.
    Mnist,
    /// CIFAR-10 (50k/10k 32×32 colour images) from a directory of its binary batches.
    Cifar10,
    /// The embedded 8×8 digits (1797 images), split 1437 / 360.
    Digits,
}

impl ImageDataset {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            ImageDataset::FashionMnist => "fashion-mnist",
            ImageDataset::Mnist => "mnist",
            ImageDataset::Cifar10 => "cifar10",
            ImageDataset::Digits => "digits",
        }
    }

    /// The augmentation used when it is on: crop with padding 4 and flips for CIFAR-10, crop with
    /// padding 2 and flips for clothing, crop with padding 2 for digits (a mirrored digit is
    /// another shape), none for 8×8 digits (too small to crop).
    pub fn default_augment(self) -> Augment {
        match self {
            ImageDataset::Cifar10 => Augment::cifar10(),
            ImageDataset::FashionMnist => Augment {
                crop_padding: Some(2),
                hflip: true,
            },
            ImageDataset::Mnist => Augment::mnist(),
            ImageDataset::Digits => Augment::none(),
        }
    }

    /// Loads the training and test sets.
    ///
    /// # Errors
    /// Missing directories or files (the message names the expected files), malformed files.
    /// One split only, as [`ImageDataset::load`] gives it (for a directory, only that split's
    /// files are read: evaluating on the test set needs no training files).
    ///
    /// # Errors
    /// As [`ImageDataset::load`].
    pub fn load_split(self, data_dir: Option<&Path>, split: Split) -> Result<ImageSet> {
        match (self, data_dir) {
            (ImageDataset::FashionMnist, None) => load_fashion_mnist(split),
            (ImageDataset::FashionMnist | ImageDataset::Mnist, Some(dir)) => {
                load_idx_dir(dir, split)
            }
            (ImageDataset::Cifar10, Some(dir)) => load_cifar10_dir(dir, split),
            _ => {
                let (train, test) = self.load(data_dir)?;
                Ok(if split == Split::Train { train } else { test })
            }
        }
    }

    pub fn load(self, data_dir: Option<&Path>) -> Result<(ImageSet, ImageSet)> {
        match (self, data_dir) {
            (ImageDataset::FashionMnist, None) => {
                Ok((load_fashion_mnist(Split::Train)?, load_fashion_mnist(Split::Test)?))
            }
            (ImageDataset::FashionMnist | ImageDataset::Mnist, Some(dir)) => {
                Ok((load_idx_dir(dir, Split::Train)?, load_idx_dir(dir, Split::Test)?))
            }
            (ImageDataset::Mnist, None) => ImageSet::mnist_test_embedded().split(0.8, VAL_SEED),
            (ImageDataset::Cifar10, Some(dir)) => {
                Ok((load_cifar10_dir(dir, Split::Train)?, load_cifar10_dir(dir, Split::Test)?))
            }
            (ImageDataset::Cifar10, None) => Err(Error::Data {
                what: "cifar10".into(),
                msg: "needs --data-dir: a directory with data_batch_1.bin … data_batch_5.bin and test_batch.bin \
                      (the binary version of CIFAR-10)"
                    .into(),
            }),
            (ImageDataset::Digits, None) => ImageSet::digits_embedded().split(0.8, VAL_SEED),
            (ImageDataset::Digits, Some(_)) => Err(Error::invalid(
                "digits",
                "--data-dir",
                "the 8×8 digits are embedded; there is no directory to read",
            )),
        }
    }
}

impl std::str::FromStr for ImageDataset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [
            ImageDataset::FashionMnist,
            ImageDataset::Mnist,
            ImageDataset::Cifar10,
            ImageDataset::Digits,
        ]
        .into_iter()
        .find(|d| d.name() == s)
        .ok_or_else(|| {
            Error::invalid(
                "dataset",
                s,
                "expected fashion-mnist, mnist, cifar10 or digits",
            )
        })
    }
}

/// Where an epoch stands: the shuffled order and the next batch's position in it.
struct EpochState {
    order: Vec<usize>,
    pos: usize,
}

/// Trains a [`ResNet`] on an image dataset: shuffled mini-batches (one epoch after another, the
/// incomplete last batch of an epoch dropped), per-channel normalisation from the training set,
/// optional augmentation; evaluated on the whole test set.
pub struct ImageTask {
    spec: TaskSpec,
    model: ResNetConfig,
    batch: usize,
    train: ImageSet,
    test: ImageSet,
    normalize: Normalize,
    augment: Option<Augment>,
    epoch: EpochState,
}

impl ImageTask {
    /// Loads the data of an `Images` spec; `model`'s input channels and classes are set from it.
    pub fn new(spec: TaskSpec, model: ResNetConfig, batch: usize) -> Result<Self> {
        let TaskSpec::Images {
            dataset,
            ref data_dir,
            augment,
            train_limit,
        } = spec
        else {
            return Err(Error::invalid(
                "ImageTask",
                "task",
                format!("{} is not an image task", spec.name()),
            ));
        };
        if batch < 2 {
            return Err(Error::invalid(
                "ImageTask",
                "batch",
                format!("BatchNorm needs at least 2 images per batch, got {batch}"),
            ));
        }
        let (mut train, test) = dataset.load(data_dir.as_deref())?;
        if let Some(limit) = train_limit {
            if limit < batch {
                return Err(Error::invalid(
                    "ImageTask",
                    "train_limit",
                    format!("{limit} images is fewer than one batch of {batch}"),
                ));
            }
            let mut order = Rng::seed(VAL_SEED).permutation(train.len());
            order.truncate(limit.min(train.len()));
            order.sort_unstable();
            train = train.subset(&order)?;
        }
        if train.len() < batch {
            return Err(Error::invalid(
                "ImageTask",
                "batch",
                format!("{batch} is larger than the {} training images", train.len()),
            ));
        }
        let normalize = Normalize::from_data(&train)?;
        let (c, _, _) = train.image_shape();
        let model = model.io(c, train.num_classes());
        Ok(ImageTask {
            augment: augment.then(|| dataset.default_augment()),
            spec,
            model,
            batch,
            train,
            test,
            normalize,
            epoch: EpochState {
                order: Vec::new(),
                pos: 0,
            },
        })
    }

    /// Optimisation steps in one pass over the training set.
    pub fn steps_per_epoch(&self) -> usize {
        self.train.len() / self.batch
    }

    /// The training and test sets.
    pub fn data(&self) -> (&ImageSet, &ImageSet) {
        (&self.train, &self.test)
    }

    /// The network trained (with the data's channels and classes).
    pub fn model_config(&self) -> &ResNetConfig {
        &self.model
    }

    /// Predicted classes and the summed cross-entropy of `set` (eval mode, batches of 256).
    pub fn predict(&self, model: &mut ResNet<f32>, set: &ImageSet) -> Result<(Vec<usize>, f64)> {
        predict_with(model, set, &self.normalize)
    }
}

/// The index of the largest logit of each row.
fn argmax_rows(logits: &Array2<f32>) -> Vec<usize> {
    logits
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        })
        .collect()
}

/// Predicted classes and summed cross-entropy over a whole set, in eval mode (batches of 256).
pub fn predict_with(
    model: &mut ResNet<f32>,
    set: &ImageSet,
    normalize: &Normalize,
) -> Result<(Vec<usize>, f64)> {
    let mut rng = Rng::seed(0); // not drawn from without augmentation
    let mut predictions = Vec::with_capacity(set.len());
    let mut loss = 0.0;
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(256) {
        let (x, y) = batch(set, chunk, normalize, None, &mut rng)?;
        let logits = model.forward(x.view(), Mode::Eval)?;
        let (l, _) = cross_entropy(logits.view(), &y, None)?;
        loss += l as f64 * chunk.len() as f64;
        predictions.extend(argmax_rows(&logits));
    }
    Ok((predictions, loss))
}

impl TrainTask for ImageTask {
    type Model = ResNet<f32>;

    fn build_model(&self, rng: &mut Rng) -> Result<Self::Model> {
        ResNet::new(self.model.clone(), rng)
    }

    fn step(&mut self, model: &mut Self::Model, rng: &mut Rng) -> Result<StepStats> {
        if self.epoch.pos + self.batch > self.epoch.order.len() {
            self.epoch = EpochState {
                order: rng.permutation(self.train.len()),
                pos: 0,
            };
        }
        let indices = &self.epoch.order[self.epoch.pos..self.epoch.pos + self.batch];
        self.epoch.pos += self.batch;
        let (x, y) = batch(
            &self.train,
            indices,
            &self.normalize,
            self.augment.as_ref(),
            rng,
        )?;
        let logits = model.forward(x.view(), Mode::Train)?;
        let (loss, d) = cross_entropy(logits.view(), &y, None)?;
        model.backward(d.view())?;
        let correct = argmax_rows(&logits)
            .iter()
            .zip(&y)
            .filter(|(p, t)| p == t)
            .count();
        Ok(StepStats {
            loss: loss as f64,
            items: y.len(),
            correct: Some(correct),
        })
    }

    fn evaluate(&mut self, model: &mut Self::Model) -> Result<Metrics> {
        let (predictions, loss) = predict_with(model, &self.test, &self.normalize)?;
        let correct = predictions
            .iter()
            .zip(self.test.labels())
            .filter(|(p, t)| p == t)
            .count();
        let n = self.test.len() as f64;
        Ok(vec![
            ("test_accuracy".into(), correct as f64 / n),
            ("test_loss".into(), loss / n),
        ])
    }

    fn item_name(&self) -> &'static str {
        "img"
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = base_metadata(&self.spec, &self.model);
        m.insert(
            "skipgate.normalize.mean".into(),
            serde_json::to_string(&self.normalize.mean).expect("serialisable"),
        );
        m.insert(
            "skipgate.normalize.std".into(),
            serde_json::to_string(&self.normalize.std).expect("serialisable"),
        );
        m
    }

    fn save_state(&self, file: &mut TensorFile) {
        let order: Array1<i64> = self.epoch.order.iter().map(|&i| i as i64).collect();
        file.insert_i64("task.epoch_order", order.view());
        file.insert_i64(
            "task.epoch_position",
            ndarray::arr0(self.epoch.pos as i64).view(),
        );
    }

    fn load_state(&mut self, file: &TensorFile) -> Result<()> {
        let order = file.get_i64("task.epoch_order")?;
        let pos = file.get_i64("task.epoch_position")?;
        let n = self.train.len() as i64;
        if order.iter().any(|&i| i < 0 || i >= n) {
            return Err(Error::Checkpoint {
                path: file.source.clone(),
                msg: format!(
                    "task.epoch_order holds indices outside the {n} training images: a different dataset"
                ),
            });
        }
        self.epoch = EpochState {
            order: order.iter().map(|&i| i as usize).collect(),
            pos: pos.iter().next().copied().unwrap_or(0).max(0) as usize,
        };
        Ok(())
    }
}

/// Rebuilds a trained network, its dataset and its normalisation from the `model.safetensors`
/// (or `checkpoint.safetensors`) of an image run.
///
/// # Errors
/// The file cannot be read, was not written by an image run, or its tensors do not fit the
/// architecture its metadata describes.
pub fn load_image_model(path: &Path) -> Result<(ResNet<f32>, TaskSpec, Normalize)> {
    const EXPECTED: &str = "an image run of `skipgate train`";
    let run = RunFile::read(path, EXPECTED)?;
    if !matches!(run.task, TaskSpec::Images { .. }) {
        return Err(run.error(format!(
            "holds a model trained on the {} task, not an image classifier",
            run.task.name()
        )));
    }
    let config: ResNetConfig = run.json("skipgate.model", EXPECTED)?;
    let mean: Vec<f32> = run.json("skipgate.normalize.mean", EXPECTED)?;
    let std: Vec<f32> = run.json("skipgate.normalize.std", EXPECTED)?;
    let mut model = ResNet::new(config, &mut Rng::seed(0))?;
    run.load_weights(&mut model)?;
    Ok((model, run.task, Normalize::new(mean, std)?))
}
