//! Image classification data: a set of `u8` images in NCHW layout with integer labels, readers for
//! the IDX (MNIST / Fashion-MNIST), CIFAR-10 binary and scikit-learn digits formats, the embedded
//! MNIST test set and 8×8 digits, and the preprocessing that turns images into `f32` batches.
//!
//! | source | reader | shape `(C, H, W)` | pixel max |
//! |---|---|---|---|
//! | IDX files (`train-images-idx3-ubyte[.gz]`, …) | [`read_idx_images`], [`read_idx_labels`], [`load_idx_dir`] | `(1, 28, 28)` | 255 |
//! | CIFAR-10 binary (`data_batch_1.bin`, …, `test_batch.bin`) | [`read_cifar_batch`], [`load_cifar10_dir`] | `(3, 32, 32)` | 255 |
//! | scikit-learn digits CSV | [`read_digits_csv`], [`parse_digits_csv`] | `(1, 8, 8)` | 16 |
//! | embedded MNIST test set (10,000) | [`ImageSet::mnist_test_embedded`] | `(1, 28, 28)` | 255 |
//! | embedded digits (1,797) | [`ImageSet::digits_embedded`] | `(1, 8, 8)` | 16 |
//!
//! Pixels stay raw bytes until a batch is built (60,000 Fashion-MNIST images take 47 MB): a batch
//! scales every pixel to `[0, 1]` by the set's [`ImageSet::max_value`], optionally crops and flips
//! it ([`Augment`]), and normalises each channel with [`Normalize`]:
//! `x[b, c, y, x] = (p / max_value − mean_c) / std_c`.
//!
//! Every random choice (shuffling, splits, augmentation) takes an explicit seed or [`Rng`]: the
//! same seed gives the same batches.

mod batch;
mod cifar;
mod digits;
mod idx;

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use ndarray::{Array4, ArrayView3, Axis};

use crate::{Error, Result, Rng};

pub use batch::{Augment, AugmentDraw, EpochBatches, Normalize, batch};
pub use cifar::{CIFAR10_CLASSES, load_cifar10_dir, parse_cifar_batch, read_cifar_batch};
pub use digits::{parse_digits_csv, read_digits_csv};
pub use idx::{
    FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist, load_idx_dir, parse_idx_images,
    parse_idx_labels, read_idx_images, read_idx_labels,
};

/// The MNIST test images, `t10k-images-idx3-ubyte.gz` (gzip IDX, 10,000 × 28 × 28), embedded in
/// the binary. Origin, licence and hashes: `data/PROVENANCE.md`.
pub const MNIST_TEST_IMAGES_GZ: &[u8] =
    include_bytes!("../../data/mnist/t10k-images-idx3-ubyte.gz");

/// The MNIST test labels, `t10k-labels-idx1-ubyte.gz` (gzip IDX, 10,000 labels 0..9), embedded.
pub const MNIST_TEST_LABELS_GZ: &[u8] =
    include_bytes!("../../data/mnist/t10k-labels-idx1-ubyte.gz");

/// scikit-learn's 8×8 digits, `digits.csv.gz` (1,797 rows of 64 pixels 0..16 and the class),
/// embedded. Origin, licence and hashes: `data/PROVENANCE.md`.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/sklearn-digits/digits.csv.gz");

/// Which part of a dataset to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training images (`train-*` IDX files, CIFAR-10 `data_batch_1..5.bin`).
    Train,
    /// The test images (`t10k-*` IDX files, CIFAR-10 `test_batch.bin`).
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Labelled images stored as raw bytes.
///
/// Invariants (checked by [`ImageSet::new`]): `images` is `(N, C, H, W)` with `C, H, W ≥ 1`,
/// `labels.len() == N`, every label is `< num_classes`, every pixel is `≤ max_value`, and
/// `max_value ≥ 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    images: Array4<u8>, // (N, C, H, W), standard layout
    labels: Vec<usize>, // (N,)
    num_classes: usize,
    max_value: u8,
    name: String,
}

impl ImageSet {
    /// A set from its parts. `max_value` is the pixel value that means full intensity (255 for
    /// 8-bit images, 16 for the scikit-learn digits); batches divide by it.
    ///
    /// # Errors
    /// [`Error::Data`] naming the set if a dimension `C, H, W` is 0, the label count is not `N`,
    /// `num_classes` or `max_value` is 0, a label is `≥ num_classes` or a pixel exceeds
    /// `max_value` (naming the first offending image).
    pub fn new(
        name: impl Into<String>,
        images: Array4<u8>,
        labels: Vec<usize>,
        num_classes: usize,
        max_value: u8,
    ) -> Result<Self> {
        let name = name.into();
        let bad = |msg: String| Error::Data {
            what: format!("ImageSet {name}"),
            msg,
        };
        let (n, c, h, w) = images.dim();
        if c == 0 || h == 0 || w == 0 {
            return Err(bad(format!(
                "images (N, C, H, W) must have C, H, W ≥ 1, got ({n}, {c}, {h}, {w})"
            )));
        }
        if labels.len() != n {
            return Err(bad(format!(
                "{} labels for {n} images; expected one label per image",
                labels.len()
            )));
        }
        if num_classes == 0 {
            return Err(bad("num_classes must be at least 1, got 0".into()));
        }
        if max_value == 0 {
            return Err(bad("max_value must be at least 1, got 0".into()));
        }
        if let Some(i) = labels.iter().position(|&l| l >= num_classes) {
            return Err(bad(format!(
                "label {} of image {i} is not below num_classes {num_classes}",
                labels[i]
            )));
        }
        if max_value < u8::MAX {
            let over = images
                .outer_iter()
                .position(|img| img.iter().any(|&p| p > max_value));
            if let Some(i) = over {
                let p = images
                    .index_axis(Axis(0), i)
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(0);
                return Err(bad(format!(
                    "image {i} has pixel value {p}, above max_value {max_value}"
                )));
            }
        }
        let images = if images.is_standard_layout() {
            images
        } else {
            images.as_standard_layout().into_owned()
        };
        Ok(ImageSet {
            images,
            labels,
            num_classes,
            max_value,
            name,
        })
    }

    /// Number of images `N`.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` if the set holds no image (e.g. an empty [`ImageSet::subset`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(N, C, H, W)`.
    pub fn shape(&self) -> (usize, usize, usize, usize) {
        self.images.dim()
    }

    /// `(C, H, W)` of one image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        let (_, c, h, w) = self.images.dim();
        (c, h, w)
    }

    /// Number of channels `C`.
    pub fn channels(&self) -> usize {
        self.images.dim().1
    }

    /// All pixels, `(N, C, H, W)`.
    pub fn images(&self) -> &Array4<u8> {
        &self.images
    }

    /// Image `i`, `(C, H, W)`, or `None` if `i ≥ N`.
    pub fn image(&self, i: usize) -> Option<ArrayView3<'_, u8>> {
        (i < self.len()).then(|| self.images.index_axis(Axis(0), i))
    }

    /// The class of every image, `(N,)`.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Number of classes `K` (labels are `0..K`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The pixel value of full intensity (255, or 16 for the digits).
    pub fn max_value(&self) -> u8 {
        self.max_value
    }

    /// A short name, e.g. `"mnist-test"`, used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The set under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The images and labels as owned parts `(images (N, C, H, W), labels (N,))`.
    pub fn into_parts(self) -> (Array4<u8>, Vec<usize>) {
        (self.images, self.labels)
    }

    /// `counts[k]` = number of images of class `k`, for `k` in `0..num_classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// The images `indices` (in that order, repeats allowed) as a new set with the same classes,
    /// scale and name.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first index `≥ N`.
    pub fn subset(&self, indices: &[usize]) -> Result<ImageSet> {
        check_indices("ImageSet::subset", indices, self.len())?;
        Ok(ImageSet {
            images: self.images.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
            max_value: self.max_value,
            name: self.name.clone(),
        })
    }

    /// Same as [`split`]: a random `(⌊N·fraction⌋, rest)` partition.
    ///
    /// # Errors
    /// As [`split`].
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
        split(self, fraction, seed)
    }

    /// The 10,000 MNIST test digits embedded in the binary ([`MNIST_TEST_IMAGES_GZ`],
    /// [`MNIST_TEST_LABELS_GZ`]): `(10000, 1, 28, 28)`, 10 classes, pixel max 255, named
    /// `"mnist-test"`.
    pub fn mnist_test_embedded() -> ImageSet {
        let images = parse_idx_images(
            MNIST_TEST_IMAGES_GZ,
            "embedded mnist/t10k-images-idx3-ubyte.gz",
        )
        .expect("the embedded MNIST test images are a valid IDX file");
        let labels = parse_idx_labels(
            MNIST_TEST_LABELS_GZ,
            "embedded mnist/t10k-labels-idx1-ubyte.gz",
        )
        .expect("the embedded MNIST test labels are a valid IDX file");
        ImageSet::new("mnist-test", images, labels, 10, 255)
            .expect("the embedded MNIST images and labels agree")
    }

    /// scikit-learn's 1,797 8×8 digits embedded in the binary ([`DIGITS_CSV_GZ`]):
    /// `(1797, 1, 8, 8)`, 10 classes, pixel max 16, named `"sklearn-digits"`.
    pub fn digits_embedded() -> ImageSet {
        parse_digits_csv(DIGITS_CSV_GZ, "embedded sklearn-digits/digits.csv.gz")
            .expect("the embedded digits CSV is valid")
    }
}

/// A random partition of `set` into `(first, rest)`: `first` holds `⌊N·fraction⌋` images chosen
/// by a permutation drawn from `Rng::seed(seed)`, `rest` the others. Within each part the images
/// keep their original order. The same seed gives the same partition.
///
/// # Errors
/// [`Error::Invalid`] unless `0 < fraction < 1` and both parts are non-empty.
pub fn split(set: &ImageSet, fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
    const OP: &str = "images::split";
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(
            OP,
            "fraction",
            format!("must be strictly between 0 and 1, got {fraction}"),
        ));
    }
    let n = set.len();
    let n_first = (n as f64 * fraction).floor() as usize;
    if n_first == 0 || n_first >= n {
        return Err(Error::invalid(
            OP,
            "fraction",
            format!(
                "{fraction} of {n} images leaves {n_first} in the first part and {} in the second; both must be non-empty",
                n - n_first.min(n)
            ),
        ));
    }
    let perm = Rng::seed(seed).permutation(n);
    let mut first = perm[..n_first].to_vec();
    let mut rest = perm[n_first..].to_vec();
    first.sort_unstable();
    rest.sort_unstable();
    Ok((set.subset(&first)?, set.subset(&rest)?))
}

/// `Err` naming the first index `≥ n`.
fn check_indices(op: &'static str, indices: &[usize], n: usize) -> Result<()> {
    if let Some(p) = indices.iter().position(|&i| i >= n) {
        return Err(Error::invalid(
            op,
            "indices",
            format!(
                "index {} at position {p} is out of range for a set of {n} images",
                indices[p]
            ),
        ));
    }
    Ok(())
}

/// `true` if `bytes` start with the gzip magic `1f 8b`.
fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// The decompressed bytes if `bytes` is gzip, else the bytes themselves.
fn maybe_gunzip<'a>(bytes: &'a [u8], source: &str, format: &'static str) -> Result<Cow<'a, [u8]>> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::Format {
            path: source.to_string(),
            format,
            msg: format!(
                "the gzip stream cannot be decompressed ({e}); the file is truncated or corrupt"
            ),
        })?;
    Ok(Cow::Owned(out))
}

/// `", decompressed"` for gzip input, else `""`: appended to byte counts in messages.
fn gz_note(bytes: &[u8]) -> &'static str {
    if is_gzip(bytes) { ", decompressed" } else { "" }
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
