//! The binary version of CIFAR-10.
//!
//! A batch file is a sequence of 3073-byte records: one label byte (0..9), then the 32×32 image as
//! 3072 bytes in channel-major order — 1024 red bytes, 1024 green, 1024 blue, each plane row-major.
//! That is already the `(C, H, W)` layout, so a record's pixels are copied as they are. The
//! distributed files hold 10,000 records each: `data_batch_1.bin` … `data_batch_5.bin` (training)
//! and `test_batch.bin`.

use std::path::{Path, PathBuf};

use ndarray::Array4;

use super::{ImageSet, Split, gz_note, maybe_gunzip, read_file};
use crate::{Error, Result};

/// The CIFAR-10 class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE; // 3072
const RECORD: usize = 1 + PIXELS; // 3073
const NUM_CLASSES: usize = 10;

/// Parses CIFAR-10 binary records (any whole number of them; a gzip-compressed file is
/// decompressed first) into a set `(N, 3, 32, 32)`, 10 classes, pixel max 255, named `source`.
///
/// # Errors
/// [`Error::Format`] naming `source` if the data is empty, its length is not a whole number of
/// 3073-byte records ("30730000 bytes expected for 10000 records, found 30729000 …"), or a label
/// is `≥ 10` (naming the record).
pub fn parse_cifar_batch(bytes: &[u8], source: &str) -> Result<ImageSet> {
    const FORMAT: &str = "CIFAR-10 binary batch";
    let fail = |msg: String| Error::Format {
        path: source.to_string(),
        format: FORMAT,
        msg,
    };
    let gz = gz_note(bytes);
    let data = maybe_gunzip(bytes, source, FORMAT)?;
    if data.is_empty() {
        return Err(fail(format!(
            "the file is empty{gz}; expected records of {RECORD} bytes (1 label byte + {PIXELS} pixel bytes)"
        )));
    }
    if data.len() % RECORD != 0 {
        let records = data.len().div_ceil(RECORD);
        return Err(fail(format!(
            "{} bytes expected for {records} records, found {}{gz}: not a whole number of {RECORD}-byte records (1 label byte + {PIXELS} pixel bytes); the file is truncated or not a CIFAR-10 binary batch",
            records * RECORD,
            data.len()
        )));
    }
    let n = data.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in data.chunks_exact(RECORD).enumerate() {
        let label = usize::from(rec[0]);
        if label >= NUM_CLASSES {
            return Err(fail(format!(
                "record {i} (byte offset {}) has label {label}; CIFAR-10 labels are 0..9",
                i * RECORD
            )));
        }
        labels.push(label);
        pixels.extend_from_slice(&rec[1..]);
    }
    let images =
        Array4::from_shape_vec((n, 3, SIDE, SIDE), pixels).expect("n records give n·3072 pixels");
    ImageSet::new(source, images, labels, NUM_CLASSES, 255)
}

/// Reads one CIFAR-10 binary batch file, e.g. `data_batch_1.bin`: `(N, 3, 32, 32)`, named by
/// its path.
///
/// # Errors
/// [`Error::Io`] with the path if it cannot be read; otherwise as [`parse_cifar_batch`].
pub fn read_cifar_batch(path: impl AsRef<Path>) -> Result<ImageSet> {
    let path = path.as_ref();
    parse_cifar_batch(&read_file(path)?, &path.display().to_string())
}

fn file_names(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|k| format!("data_batch_{k}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

const CIFAR_HINT: &str = "these are the files of the binary version of CIFAR-10, cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, once extracted";

/// Reads one split of CIFAR-10 from `dir`: `data_batch_1.bin` … `data_batch_5.bin` (in that
/// order) for [`Split::Train`], `test_batch.bin` for [`Split::Test`]. If `dir` does not hold them
/// but has a `cifar-10-batches-bin` subdirectory (the folder the archive extracts to), that is
/// read instead. The set is `(N, 3, 32, 32)`, 10 classes ([`CIFAR10_CLASSES`]), pixel max 255,
/// named `"cifar-10-train"` or `"cifar-10-test"`.
///
/// # Errors
/// [`Error::Data`] naming the directory and the expected file names if it or a file is missing;
/// the errors of [`read_cifar_batch`].
pub fn load_cifar10_dir(dir: impl AsRef<Path>, split: Split) -> Result<ImageSet> {
    let mut dir: PathBuf = dir.as_ref().to_path_buf();
    let names = file_names(split);
    let expected = format!("{} for the {} split", names.join(", "), split.as_str());
    if !dir.is_dir() {
        return Err(Error::Data {
            what: dir.display().to_string(),
            msg: format!(
                "directory not found; expected a directory holding {expected} ({CIFAR_HINT})"
            ),
        });
    }
    let nested = dir.join("cifar-10-batches-bin");
    if !dir.join(&names[0]).is_file() && nested.is_dir() {
        dir = nested;
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in &names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::Data {
                what: dir.display().to_string(),
                msg: format!(
                    "no file {name} in this directory; expected {expected} ({CIFAR_HINT})"
                ),
            });
        }
        let (images, l) = read_cifar_batch(&path)?.into_parts();
        pixels.extend(images.iter().copied());
        labels.extend(l);
    }
    let images = Array4::from_shape_vec((labels.len(), 3, SIDE, SIDE), pixels)
        .expect("every batch is (n, 3, 32, 32)");
    ImageSet::new(
        format!("cifar-10-{}", split.as_str()),
        images,
        labels,
        NUM_CLASSES,
        255,
    )
}
