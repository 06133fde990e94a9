//! The IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//!
//! Every integer is a big-endian `u32`. An image file is the magic `0x00000803` (unsigned bytes,
//! 3 dimensions), the count `N`, the rows `H` and the columns `W`, then `N·H·W` pixel bytes, image
//! after image, each row-major. A label file is the magic `0x00000801` (unsigned bytes,
//! 1 dimension), the count `N`, then `N` label bytes.

use std::path::{Path, PathBuf};

use ndarray::Array4;

use super::{ImageSet, Split, gz_note, maybe_gunzip, read_file};
use crate::{Error, Result};

/// Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the Fashion-MNIST IDX files
/// (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
/// `t10k-labels-idx1-ubyte.gz`).
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The Fashion-MNIST class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGE_MAGIC: u32 = 0x0000_0803;
const LABEL_MAGIC: u32 = 0x0000_0801;
const IMAGE_HEADER: usize = 16;
const LABEL_HEADER: usize = 8;
/// MNIST-format datasets have 10 classes.
const NUM_CLASSES: usize = 10;

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn magic_msg(found: u32, expected: u32) -> String {
    let (want, other) = if expected == IMAGE_MAGIC {
        ("an IDX image file", "an IDX label file")
    } else {
        ("an IDX label file", "an IDX image file")
    };
    let mut msg = format!("wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({want})");
    if found == IMAGE_MAGIC || found == LABEL_MAGIC {
        msg.push_str(&format!("; 0x{found:08x} is {other}"));
    }
    msg
}

/// Parses IDX image bytes (gzip-compressed or not, detected by the gzip magic `1f 8b`) into
/// `(N, 1, H, W)` pixels. `source` names the bytes in errors (a path, or e.g. `"embedded …"`).
///
/// # Errors
/// [`Error::Format`] naming `source` for a corrupt gzip stream, a file shorter than the 16-byte
/// header, a magic number other than `0x00000803` (e.g. "wrong magic number 0x00000801, expected
/// 0x00000803 (an IDX image file)"), a zero count or dimension, or a pixel byte count that differs
/// from the header ("header says 10000 images of 28×28 = 7840000 bytes, file has 7839990 …").
pub fn parse_idx_images(bytes: &[u8], source: &str) -> Result<Array4<u8>> {
    const FORMAT: &str = "IDX image";
    let fail = |msg: String| Error::Format {
        path: source.to_string(),
        format: FORMAT,
        msg,
    };
    let gz = gz_note(bytes);
    let data = maybe_gunzip(bytes, source, FORMAT)?;
    // The magic first, so a file of the other IDX kind is named as such even if it is short.
    if data.len() >= 4 {
        let magic = be_u32(&data, 0);
        if magic != IMAGE_MAGIC {
            return Err(fail(magic_msg(magic, IMAGE_MAGIC)));
        }
    }
    if data.len() < IMAGE_HEADER {
        return Err(fail(format!(
            "the file has {} bytes{gz}, shorter than the {IMAGE_HEADER}-byte header (magic, count, rows, columns)",
            data.len()
        )));
    }
    let (n, rows, cols) = (be_u32(&data, 4), be_u32(&data, 8), be_u32(&data, 12));
    if n == 0 || rows == 0 || cols == 0 {
        return Err(fail(format!(
            "header says {n} images of {rows}×{cols}; the count and both dimensions must be at least 1"
        )));
    }
    let expected = u64::from(n) * u64::from(rows) * u64::from(cols);
    let found = (data.len() - IMAGE_HEADER) as u64;
    if expected != found {
        return Err(fail(format!(
            "header says {n} images of {rows}×{cols} = {expected} bytes, file has {found} (after the {IMAGE_HEADER}-byte header{gz})"
        )));
    }
    let (n, rows, cols) = (n as usize, rows as usize, cols as usize);
    let pixels = match data {
        std::borrow::Cow::Owned(mut v) => {
            v.drain(..IMAGE_HEADER);
            v
        }
        std::borrow::Cow::Borrowed(b) => b[IMAGE_HEADER..].to_vec(),
    };
    Ok(Array4::from_shape_vec((n, 1, rows, cols), pixels)
        .expect("the byte count was checked against the header"))
}

/// Parses IDX label bytes (gzip-compressed or not) into `N` labels, each checked to be a class
/// `0..9`.
///
/// # Errors
/// [`Error::Format`] naming `source` for a corrupt gzip stream, a file shorter than the 8-byte
/// header, a magic number other than `0x00000801`, a zero count, a label byte count that differs
/// from the header, or a label `≥ 10` (naming the first one, its index and the largest label).
pub fn parse_idx_labels(bytes: &[u8], source: &str) -> Result<Vec<usize>> {
    const FORMAT: &str = "IDX label";
    let fail = |msg: String| Error::Format {
        path: source.to_string(),
        format: FORMAT,
        msg,
    };
    let gz = gz_note(bytes);
    let data = maybe_gunzip(bytes, source, FORMAT)?;
    // The magic first, so a file of the other IDX kind is named as such even if it is short.
    if data.len() >= 4 {
        let magic = be_u32(&data, 0);
        if magic != LABEL_MAGIC {
            return Err(fail(magic_msg(magic, LABEL_MAGIC)));
        }
    }
    if data.len() < LABEL_HEADER {
        return Err(fail(format!(
            "the file has {} bytes{gz}, shorter than the {LABEL_HEADER}-byte header (magic, count)",
            data.len()
        )));
    }
    let n = be_u32(&data, 4);
    if n == 0 {
        return Err(fail(
            "header says 0 labels; the count must be at least 1".into(),
        ));
    }
    let found = (data.len() - LABEL_HEADER) as u64;
    if u64::from(n) != found {
        return Err(fail(format!(
            "header says {n} labels = {n} bytes, file has {found} (after the {LABEL_HEADER}-byte header{gz})"
        )));
    }
    let labels = &data[LABEL_HEADER..];
    if let Some(i) = labels.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
        let max = labels.iter().copied().max().unwrap_or(0);
        return Err(fail(format!(
            "label {} at index {i} is not a class 0..{}; the largest label in the file is {max}",
            labels[i],
            NUM_CLASSES - 1
        )));
    }
    Ok(labels.iter().map(|&l| usize::from(l)).collect())
}

/// Reads an IDX image file (`*-images-idx3-ubyte`, optionally `.gz`) into `(N, 1, H, W)` pixels.
///
/// # Errors
/// [`Error::Io`] with the path if it cannot be read; otherwise as [`parse_idx_images`], naming
/// the path.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Array4<u8>> {
    let path = path.as_ref();
    parse_idx_images(&read_file(path)?, &path.display().to_string())
}

/// Reads an IDX label file (`*-labels-idx1-ubyte`, optionally `.gz`) into `N` labels `0..9`.
///
/// # Errors
/// [`Error::Io`] with the path if it cannot be read; otherwise as [`parse_idx_labels`], naming
/// the path.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    parse_idx_labels(&read_file(path)?, &path.display().to_string())
}

/// The standard file stems of a split: `(images, labels)`.
fn stems(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

fn expected_files(split: Split) -> String {
    let (img, lab) = stems(split);
    format!("{img}[.gz] and {lab}[.gz] for the {} split", split.as_str())
}

const FASHION_HINT: &str = "for Fashion-MNIST on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist/";

/// `dir/stem` if it exists, else `dir/stem.gz` if that exists.
fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Reads one split of an MNIST-format dataset from `dir`, using the standard file names:
/// `train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]` for [`Split::Train`],
/// `t10k-images-idx3-ubyte[.gz]` + `t10k-labels-idx1-ubyte[.gz]` for [`Split::Test`] (the
/// uncompressed file is used when both exist). The set is `(N, 1, H, W)`, 10 classes, pixel max
/// 255, named `"<directory name>-<split>"`, e.g. `"fashion-mnist-train"`.
///
/// # Errors
/// [`Error::Data`] naming the directory and the expected file names if the directory or a file
/// is missing (with the `apt-get install dataset-fashion-mnist` hint), or if the label count
/// differs from the image count; the errors of [`read_idx_images`] and [`read_idx_labels`].
pub fn load_idx_dir(dir: impl AsRef<Path>, split: Split) -> Result<ImageSet> {
    let dir = dir.as_ref();
    let what = dir.display().to_string();
    if !dir.is_dir() {
        return Err(Error::Data {
            what,
            msg: format!(
                "directory not found; expected a directory holding {} ({FASHION_HINT})",
                expected_files(split)
            ),
        });
    }
    let (img_stem, lab_stem) = stems(split);
    let find = |stem: &str| {
        find_file(dir, stem).ok_or_else(|| Error::Data {
            what: what.clone(),
            msg: format!(
                "no file {stem} or {stem}.gz in this directory; expected {} ({FASHION_HINT})",
                expected_files(split)
            ),
        })
    };
    let img_path = find(img_stem)?;
    let lab_path = find(lab_stem)?;
    let images = read_idx_images(&img_path)?;
    let labels = read_idx_labels(&lab_path)?;
    if labels.len() != images.dim().0 {
        return Err(Error::Data {
            what,
            msg: format!(
                "{} has {} labels but {} has {} images; expected one label per image",
                lab_path.display(),
                labels.len(),
                img_path.display(),
                images.dim().0
            ),
        });
    }
    let base = dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "idx".into());
    ImageSet::new(
        format!("{base}-{}", split.as_str()),
        images,
        labels,
        NUM_CLASSES,
        255,
    )
}

/// One split of Fashion-MNIST from [`FASHION_MNIST_DIR`] (60,000 training or 10,000 test images,
/// `(N, 1, 28, 28)`, classes [`FASHION_MNIST_CLASSES`]).
///
/// # Errors
/// As [`load_idx_dir`]; if the package is not installed the message says how to install it.
pub fn load_fashion_mnist(split: Split) -> Result<ImageSet> {
    load_idx_dir(FASHION_MNIST_DIR, split)
}
