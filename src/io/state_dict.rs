//! PyTorch-style `state_dict`s: every parameter and buffer of a [`Module`] under its PyTorch name.
//!
//! [`state_dict()`] collects them into a [`TensorFile`]; [`load_state_dict`] copies a file back into
//! a model with PyTorch's `strict=True` rules: the keys must match exactly and every shape must
//! match. All problems are collected and reported together, and the model is left untouched
//! unless everything matches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ndarray::{ArrayViewMutD, arr0};
use safetensors::Dtype;

use crate::error::fmt_shape;
use crate::io::tensors::{Tensor, TensorData, TensorFile};
use crate::module::BufferMut;
use crate::{Error, Module, Result, Scalar};

/// At most this many keys are listed per "missing keys" / "unexpected keys" line.
const LIST_KEYS: usize = 30;

/// All parameters (in visiting order), then all buffers, under their PyTorch names.
///
/// Parameters and [`BufferMut::Values`] buffers are stored in `F`'s dtype (`F32` for an `f32`
/// model); [`BufferMut::Count`] buffers as 0-d `I64` tensors, as PyTorch stores
/// `num_batches_tracked`. Gradients are not saved.
pub fn state_dict<F: Scalar>(model: &mut dyn Module<F>) -> TensorFile {
    let mut file = TensorFile::new();
    model.visit_params(&mut |name, p| file.insert_array(name, p.value.view()));
    model.visit_buffers(&mut |name, b| match b {
        BufferMut::Values(v) => file.insert_array(name, v.view()),
        BufferMut::Count(c) => file.insert_i64(name, arr0(*c).view()),
    });
    file
}

/// What the model holds under one key.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A parameter or a float buffer.
    Float,
    /// An integer counter, a 0-d `I64` in the file.
    Count,
}

/// Copies `file` into `model` with PyTorch's `load_state_dict(strict=True)` rules.
///
/// Checks, for every key of the model: it is in the file, its shape is the same, its dtype fits
/// (a float tensor for a parameter or float buffer, of either float dtype: an `F32` file loads
/// into an `f64` model and vice versa; a 0-d `I64` for a counter). The file must have no other
/// keys. The model is modified only if every check passes. Gradients are left as they are.
///
/// # Errors
/// One [`Error::Checkpoint`] with path `source` listing every problem, e.g.
/// ```text
/// state dict does not match the model (3 problems):
///   missing keys: ["rnn.bias_hh_l0"]
///   unexpected keys: ["rnn.bias_hh_l1"]
///   size mismatch for rnn.weight_ih_l0: the file has (1024, 32), the model expects (1024, 16)
/// ```
pub fn load_state_dict<F: Scalar>(
    model: &mut dyn Module<F>,
    file: &TensorFile,
    source: &str,
) -> Result<()> {
    // What the model expects, in visiting order.
    let mut expected: Vec<(String, Kind, Vec<usize>)> = Vec::new();
    model.visit_params(&mut |name, p| {
        expected.push((name.to_string(), Kind::Float, p.value.shape().to_vec()));
    });
    model.visit_buffers(&mut |name, b| {
        let (kind, shape) = match b {
            BufferMut::Values(v) => (Kind::Float, v.shape().to_vec()),
            BufferMut::Count(_) => (Kind::Count, Vec::new()),
        };
        expected.push((name.to_string(), kind, shape));
    });

    let mut problems: Vec<String> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut duplicates: Vec<&str> = Vec::new();
    let mut details: Vec<String> = Vec::new();
    for (name, kind, shape) in &expected {
        if !seen.insert(name) {
            duplicates.push(name);
            continue;
        }
        let Some(t) = file.tensors.get(name) else {
            missing.push(name);
            continue;
        };
        match (kind, t.is_float()) {
            (Kind::Float, false) => details.push(format!(
                "dtype mismatch for {name}: the file has {}, the model expects a float tensor ({})",
                t.dtype(),
                F::DTYPE
            )),
            (Kind::Count, true) => details.push(format!(
                "dtype mismatch for {name}: the file has {}, the model expects {} (a counter)",
                t.dtype(),
                Dtype::I64
            )),
            _ => {}
        }
        if t.shape() != shape.as_slice() {
            details.push(format!(
                "size mismatch for {name}: the file has {}, the model expects {}",
                fmt_shape(t.shape()),
                fmt_shape(shape)
            ));
        }
    }
    let unexpected: Vec<&str> = file
        .tensors
        .keys()
        .map(String::as_str)
        .filter(|k| !seen.contains(k))
        .collect();

    if !duplicates.is_empty() {
        problems.push(format!(
            "the model names more than one tensor {} (a bug in its visit_params/visit_buffers)",
            key_list(&duplicates)
        ));
    }
    if !missing.is_empty() {
        problems.push(format!("missing keys: {}", key_list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected keys: {}", key_list(&unexpected)));
    }
    problems.extend(details);
    if !problems.is_empty() {
        let n = problems.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        return Err(Error::Checkpoint {
            path: source.to_string(),
            msg: format!(
                "state dict does not match the model ({n} {noun}):\n  {}",
                problems.join("\n  ")
            ),
        });
    }

    // Everything matches: copy.
    model.visit_params(&mut |name, mut p| {
        if let Some(t) = file.tensors.get(name) {
            copy_floats(&mut p.value, t);
        }
    });
    model.visit_buffers(&mut |name, b| {
        let Some(t) = file.tensors.get(name) else {
            return;
        };
        match b {
            BufferMut::Values(mut v) => copy_floats(&mut v, t),
            BufferMut::Count(c) => {
                if let TensorData::I64(v) = t.data()
                    && let Some(&x) = v.first()
                {
                    *c = x;
                }
            }
        }
    });
    Ok(())
}

/// `["a", "b", …]`, at most [`LIST_KEYS`] names, then "… and N more".
fn key_list(keys: &[&str]) -> String {
    let shown: Vec<String> = keys
        .iter()
        .take(LIST_KEYS)
        .map(|k| format!("\"{k}\""))
        .collect();
    let more = if keys.len() > LIST_KEYS {
        format!(", … and {} more", keys.len() - LIST_KEYS)
    } else {
        String::new()
    };
    format!("[{}{more}]", shown.join(", "))
}

/// Copies a float tensor of the same shape into `dst` (element by element, row-major), converting
/// to `F`.
fn copy_floats<F: Scalar>(dst: &mut ArrayViewMutD<'_, F>, t: &Tensor) {
    match t.data() {
        TensorData::F32(v) => dst
            .iter_mut()
            .zip(v)
            .for_each(|(d, &s)| *d = F::of(s as f64)),
        TensorData::F64(v) => dst.iter_mut().zip(v).for_each(|(d, &s)| *d = F::of(s)),
        TensorData::I64(_) => {}
    }
}

/// Saves `model`'s [`state_dict`] with `metadata` to `path`, atomically.
///
/// The file loads in PyTorch with `safetensors.torch.load_file` and
/// `model.load_state_dict(sd, strict=True)` when the architectures match.
///
/// # Errors
/// [`Error::Io`] with the path if writing fails.
pub fn save_model<F: Scalar>(
    path: impl AsRef<Path>,
    model: &mut dyn Module<F>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut file = state_dict(model);
    file.metadata = metadata.clone();
    file.write(path)
}

/// Loads the safetensors file at `path` into `model` ([`load_state_dict`], strict) and returns
/// the file's metadata.
///
/// # Errors
/// Those of [`TensorFile::read`] and [`load_state_dict`]; on error the model is unchanged.
pub fn load_model<F: Scalar>(
    path: impl AsRef<Path>,
    model: &mut dyn Module<F>,
) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let file = TensorFile::read(path)?;
    load_state_dict(model, &file, &path.display().to_string())?;
    Ok(file.metadata)
}
