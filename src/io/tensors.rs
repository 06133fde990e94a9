//! Named tensors in the safetensors format, the format PyTorch's `safetensors.torch.save_file`
//! writes and `load_file` reads.
//!
//! ## The format
//! ```text
//! [ n: u64, little-endian ][ n bytes: JSON header ][ tensor data ]
//! header = { "<name>": { "dtype": "F32", "shape": [4, 3], "data_offsets": [begin, end] }, …,
//!            "__metadata__": { "<key>": "<value>", … } }        // optional, strings only
//! ```
//! Offsets are byte ranges into the data section; the ranges tile it without gaps or overlap.
//! Values are little-endian and row-major (C order).
//!
//! skipgate keeps `F32`, `F64` and `I64` tensors. `F16` and `BF16` are read and widened to `F32`
//! (exactly: every half value is an f32 value). Any other dtype is reported as unsupported.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, ArrayView, Dimension, IxDyn};
use safetensors::Dtype;
use serde_json::Value;

use crate::error::fmt_shape;
use crate::io::atomic::write_atomic;
use crate::{Error, Result, Scalar};

/// The name of the header entry that holds string metadata instead of a tensor.
pub const METADATA_KEY: &str = "__metadata__";

/// Longest header we accept, as the reference implementation does (100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The values of a [`Tensor`], flattened in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// 32-bit floats (also what `F16` / `BF16` tensors are widened to on reading).
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 64-bit signed integers, e.g. BatchNorm's `num_batches_tracked`.
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// `true` if there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The safetensors dtype these values are stored as.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::F64(_) => Dtype::F64,
            TensorData::I64(_) => Dtype::I64,
        }
    }
}

/// A shape and the values that fill it (`shape.iter().product() == data.len()`; a 0-d tensor has
/// shape `[]` and one value).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// A tensor of `shape` holding `data` in row-major order.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the number of values is not the product of `shape`.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(Error::invalid(
                "Tensor::new",
                "data",
                format!(
                    "shape {} needs {} values, got {}",
                    fmt_shape(&shape),
                    numel.map_or("too many".to_string(), |n| n.to_string()),
                    data.len()
                ),
            ));
        }
        Ok(Tensor { shape, data })
    }

    /// Copies a float array of any layout, stored in `F`'s dtype (`F32` or `F64`).
    pub fn from_array<F: Scalar, D: Dimension>(a: ArrayView<'_, F, D>) -> Self {
        let shape = a.shape().to_vec();
        // `iter` walks in logical row-major order whatever the memory layout.
        let data = match F::DTYPE {
            Dtype::F32 => TensorData::F32(a.iter().map(|x| x.f64() as f32).collect()),
            _ => TensorData::F64(a.iter().map(|x| x.f64()).collect()),
        };
        Tensor { shape, data }
    }

    /// Copies an integer array of any layout, stored as `I64`.
    pub fn from_i64<D: Dimension>(a: ArrayView<'_, i64, D>) -> Self {
        Tensor {
            shape: a.shape().to_vec(),
            data: TensorData::I64(a.iter().copied().collect()),
        }
    }

    /// The shape, e.g. `[1024, 16]`; `[]` for a 0-d tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values in row-major order.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The dtype the tensor is stored as (`F32`, `F64` or `I64`).
    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    /// `true` for `F32` / `F64`.
    pub fn is_float(&self) -> bool {
        !matches!(self.data, TensorData::I64(_))
    }

    /// Number of values (product of the shape).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// `true` if the shape has a zero dimension.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values converted to `F` (f64 → f32 rounds to nearest), or `None` for an integer tensor.
    pub fn to_array<F: Scalar>(&self) -> Option<ArrayD<F>> {
        let values: Vec<F> = match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| F::of(x as f64)).collect(),
            TensorData::F64(v) => v.iter().map(|&x| F::of(x)).collect(),
            TensorData::I64(_) => return None,
        };
        Some(
            ArrayD::from_shape_vec(IxDyn(&self.shape), values)
                .expect("shape checked on construction"),
        )
    }

    /// The values as an `i64` array, or `None` for a float tensor.
    pub fn to_i64(&self) -> Option<ArrayD<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(
                ArrayD::from_shape_vec(IxDyn(&self.shape), v.clone())
                    .expect("shape checked on construction"),
            ),
            _ => None,
        }
    }

    /// Little-endian bytes of the values, as the data section stores them.
    fn le_bytes(&self) -> Vec<u8> {
        match &self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// The contents of one safetensors file: named tensors and string metadata.
///
/// Names are PyTorch `state_dict` keys (`rnn.weight_ih_l0`, `bn1.running_mean`, …). `source`
/// names where the file came from and prefixes every error message about its contents.
#[derive(Clone, Debug)]
pub struct TensorFile {
    /// Tensors by name (sorted).
    pub tensors: BTreeMap<String, Tensor>,
    /// The header's `__metadata__` (string keys and values only, as the format requires).
    pub metadata: BTreeMap<String, String>,
    /// Where the tensors came from (a path, or `<in memory>`), used in error messages.
    pub source: String,
}

impl Default for TensorFile {
    fn default() -> Self {
        Self::new()
    }
}

impl TensorFile {
    /// An empty file with source `<in memory>`.
    pub fn new() -> Self {
        TensorFile {
            tensors: BTreeMap::new(),
            metadata: BTreeMap::new(),
            source: "<in memory>".to_string(),
        }
    }

    /// Reads and parses the safetensors file at `path`.
    ///
    /// # Errors
    /// * [`Error::Io`] with the path if the file cannot be read (missing, no permission).
    /// * [`Error::Format`] (format `safetensors`) if it is not a valid safetensors file: shorter
    ///   than 8 bytes, a header length beyond the file, a header that is not a JSON object of
    ///   tensor entries, data shorter or longer than the header says, bad offsets.
    /// * [`Error::Checkpoint`] for a tensor of a dtype skipgate does not read (e.g. `BOOL`).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a safetensors file; `source` names them in error messages.
    ///
    /// # Errors
    /// As [`TensorFile::read`], without the I/O errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let bad = |msg: String| Error::Format {
            path: source.to_string(),
            format: "safetensors",
            msg,
        };

        // 1. Header length prefix.
        if bytes.len() < 8 {
            return Err(bad(if bytes.is_empty() {
                "the file is empty; expected at least 8 bytes (the header length)".to_string()
            } else {
                format!(
                    "the file is {} bytes long; expected at least 8 bytes (the header length)",
                    bytes.len()
                )
            }));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let rest = (bytes.len() - 8) as u64;
        if n > rest {
            return Err(bad(format!(
                "the header length says {n} bytes, but only {rest} bytes follow the 8-byte length"
            )));
        }
        if n > MAX_HEADER {
            return Err(bad(format!(
                "the header length {n} is above the {MAX_HEADER}-byte limit"
            )));
        }
        let n = n as usize;
        let header = &bytes[8..8 + n];
        let data = &bytes[8 + n..];

        // 2. The header: a JSON object of tensor entries and optional metadata.
        let header = std::str::from_utf8(header)
            .map_err(|e| bad(format!("the header is not UTF-8 text ({e})")))?;
        let header: Value = serde_json::from_str(header).map_err(|e| {
            bad(format!(
                "the header is not JSON ({e}); expected {{\"name\": {{\"dtype\", \"shape\", \"data_offsets\"}}, …}}"
            ))
        })?;
        let Value::Object(entries) = header else {
            return Err(bad(format!(
                "the header is valid JSON but {}, expected an object of tensor entries",
                json_kind(&header)
            )));
        };

        let mut metadata = BTreeMap::new();
        let mut infos: Vec<Info> = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            if name == METADATA_KEY {
                let Value::Object(m) = entry else {
                    return Err(bad(format!(
                        "\"{METADATA_KEY}\" is {}, expected an object of strings",
                        json_kind(&entry)
                    )));
                };
                for (k, v) in m {
                    let Value::String(v) = v else {
                        return Err(bad(format!(
                            "\"{METADATA_KEY}\".\"{k}\" is {}, expected a string",
                            json_kind(&v)
                        )));
                    };
                    metadata.insert(k, v);
                }
                continue;
            }
            infos.push(Info::parse(name, entry).map_err(bad)?);
        }

        // 3. The data section must be exactly as long as the header says, tiled without gaps.
        let needed = infos.iter().map(|i| i.end).max().unwrap_or(0);
        if (data.len() as u64) < needed {
            return Err(bad(format!(
                "truncated: header says {needed} bytes of tensor data, file has {}",
                data.len()
            )));
        }
        if data.len() as u64 > needed {
            return Err(bad(format!(
                "header says {needed} bytes of tensor data, file has {} ({} bytes left over at the end)",
                data.len(),
                data.len() as u64 - needed
            )));
        }
        infos.sort_by_key(|i| (i.begin, i.end));
        let mut at = 0u64;
        for i in &infos {
            if i.begin != at {
                return Err(bad(format!(
                    "tensor \"{}\": data_offsets [{}, {}] should begin at byte {at} (the end of the previous tensor)",
                    i.name, i.begin, i.end
                )));
            }
            at = i.end;
        }

        // 4. Decode each tensor.
        let mut tensors = BTreeMap::new();
        for i in infos {
            let (bytes_per, decode): (u64, fn(&[u8]) -> TensorData) = match i.dtype.as_str() {
                "F32" => (4, decode_f32),
                "F64" => (8, decode_f64),
                "I64" => (8, decode_i64),
                "F16" => (2, decode_f16),
                "BF16" => (2, decode_bf16),
                other => {
                    return Err(Error::Checkpoint {
                        path: source.to_string(),
                        msg: format!(
                            "tensor \"{}\" has unsupported dtype {other} (skipgate reads F32, F64, I64, F16 and BF16)",
                            i.name
                        ),
                    });
                }
            };
            let numel = i
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let size = numel.and_then(|n| n.checked_mul(bytes_per));
            if size != Some(i.end - i.begin) {
                return Err(bad(format!(
                    "tensor \"{}\": shape {} of {} needs {} bytes, but data_offsets [{}, {}] span {}",
                    i.name,
                    fmt_shape(&i.shape),
                    i.dtype,
                    size.map_or("too many".to_string(), |s| s.to_string()),
                    i.begin,
                    i.end,
                    i.end - i.begin
                )));
            }
            let values = decode(&data[i.begin as usize..i.end as usize]);
            let t = Tensor::new(i.shape, values)?;
            tensors.insert(i.name, t);
        }

        Ok(TensorFile {
            tensors,
            metadata,
            source: source.to_string(),
        })
    }

    /// The file's bytes: the 8-byte header length, the JSON header (keys sorted, `__metadata__`
    /// first, padded with spaces to a multiple of 8 bytes), then the tensors' data in name order.
    /// The same contents always give the same bytes.
    ///
    /// # Errors
    /// [`Error::Invalid`] if a tensor is named `__metadata__`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.tensors.contains_key(METADATA_KEY) {
            return Err(Error::invalid(
                "TensorFile::to_bytes",
                "tensor name",
                format!("\"{METADATA_KEY}\" is reserved for the metadata"),
            ));
        }
        let mut header = serde_json::Map::new();
        if !self.metadata.is_empty() {
            let meta: serde_json::Map<String, Value> = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            header.insert(METADATA_KEY.to_string(), Value::Object(meta));
        }
        let mut data = Vec::new();
        for (name, t) in &self.tensors {
            let start = data.len();
            data.extend_from_slice(&t.le_bytes());
            let entry = serde_json::json!({
                "dtype": dtype_name(t.dtype()),
                "shape": t.shape(),
                "data_offsets": [start, data.len()],
            });
            header.insert(name.clone(), entry);
        }
        let mut json = serde_json::to_vec(&Value::Object(header)).expect("a JSON map serialises");
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut bytes = Vec::with_capacity(8 + json.len() + data.len());
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&data);
        Ok(bytes)
    }

    /// Writes the file atomically (temp file + rename, see [`write_atomic`]).
    ///
    /// # Errors
    /// [`Error::Io`] with the path if writing fails; the errors of [`TensorFile::to_bytes`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    /// The tensor called `name`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the key and listing the keys the file has (the first few if
    /// there are many).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Checkpoint {
            path: self.source.clone(),
            msg: format!(
                "no tensor named \"{name}\" ({})",
                describe_keys(self.tensors.keys().map(String::as_str))
            ),
        })
    }

    /// The float tensor `name` as an `F` array of its shape (`F32`/`F64` convert to `F`; f64 → f32
    /// rounds to nearest).
    ///
    /// # Errors
    /// [`Error::Checkpoint`] if the key is missing (listing the keys there are) or the tensor is
    /// an integer tensor.
    pub fn get_array<F: Scalar>(&self, name: &str) -> Result<ArrayD<F>> {
        let t = self.get(name)?;
        t.to_array().ok_or_else(|| Error::Checkpoint {
            path: self.source.clone(),
            msg: format!(
                "tensor \"{name}\" has dtype {}, expected a float tensor ({})",
                t.dtype(),
                F::DTYPE
            ),
        })
    }

    /// The `I64` tensor `name` as an array of its shape.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] if the key is missing or the tensor is not `I64`.
    pub fn get_i64(&self, name: &str) -> Result<ArrayD<i64>> {
        let t = self.get(name)?;
        t.to_i64().ok_or_else(|| Error::Checkpoint {
            path: self.source.clone(),
            msg: format!("tensor \"{name}\" has dtype {}, expected I64", t.dtype()),
        })
    }

    /// Stores a copy of `a` under `name` in `F`'s dtype, replacing any tensor of that name.
    pub fn insert_array<F: Scalar, D: Dimension>(
        &mut self,
        name: impl Into<String>,
        a: ArrayView<'_, F, D>,
    ) {
        self.tensors.insert(name.into(), Tensor::from_array(a));
    }

    /// Stores a copy of `a` under `name` as `I64`, replacing any tensor of that name.
    pub fn insert_i64<D: Dimension>(&mut self, name: impl Into<String>, a: ArrayView<'_, i64, D>) {
        self.tensors.insert(name.into(), Tensor::from_i64(a));
    }

    /// Stores `t` under `name`, replacing any tensor of that name.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }

    /// `true` if there is a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// `true` if there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// "the file has 3 tensors: a, b, c" — at most 10 names, then "… and N more".
pub(crate) fn describe_keys<'a>(keys: impl ExactSizeIterator<Item = &'a str>) -> String {
    const SHOW: usize = 10;
    let n = keys.len();
    if n == 0 {
        return "the file has no tensors".to_string();
    }
    let shown: Vec<&str> = keys.take(SHOW).collect();
    let more = if n > SHOW {
        format!(", … and {} more", n - SHOW)
    } else {
        String::new()
    };
    let noun = if n == 1 { "tensor" } else { "tensors" };
    format!("the file has {n} {noun}: {}{more}", shown.join(", "))
}

/// One tensor entry of the header, before its data is read.
struct Info {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    begin: u64,
    end: u64,
}

impl Info {
    fn parse(name: String, entry: Value) -> std::result::Result<Info, String> {
        let expected =
            "expected {\"dtype\": \"F32\", \"shape\": [..], \"data_offsets\": [begin, end]}";
        let Value::Object(mut e) = entry else {
            return Err(format!(
                "tensor \"{name}\" is {}, {expected}",
                json_kind(&entry)
            ));
        };
        let dtype = match e.remove("dtype") {
            Some(Value::String(s)) => s,
            other => {
                return Err(format!(
                    "tensor \"{name}\": \"dtype\" is {}, expected a string such as \"F32\"",
                    other.as_ref().map_or("missing", json_kind)
                ));
            }
        };
        let shape = match e.remove("shape") {
            Some(Value::Array(dims)) => dims
                .iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| {
                    format!("tensor \"{name}\": \"shape\" must be a list of non-negative integers")
                })?,
            other => {
                return Err(format!(
                    "tensor \"{name}\": \"shape\" is {}, expected a list of integers",
                    other.as_ref().map_or("missing", json_kind)
                ));
            }
        };
        let offsets = match e.remove("data_offsets") {
            Some(Value::Array(o)) if o.len() == 2 => {
                o.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>()
            }
            _ => None,
        };
        let Some([begin, end]) = offsets.as_deref().map(|o| [o[0], o[1]]) else {
            return Err(format!(
                "tensor \"{name}\": \"data_offsets\" must be [begin, end] with non-negative integers"
            ));
        };
        if end < begin {
            return Err(format!(
                "tensor \"{name}\": data_offsets [{begin}, {end}] end before they begin"
            ));
        }
        Ok(Info {
            name,
            dtype,
            shape,
            begin,
            end,
        })
    }
}

/// "an array", "a number", … for error messages.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn decode_f32(b: &[u8]) -> TensorData {
    TensorData::F32(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    )
}

fn decode_f64(b: &[u8]) -> TensorData {
    TensorData::F64(
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}

fn decode_i64(b: &[u8]) -> TensorData {
    TensorData::I64(
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    )
}

fn decode_f16(b: &[u8]) -> TensorData {
    TensorData::F32(
        b.chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    )
}

fn decode_bf16(b: &[u8]) -> TensorData {
    // bfloat16 is the upper half of an f32.
    TensorData::F32(
        b.chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
    )
}

/// IEEE half (1 sign, 5 exponent bits with bias 15, 10 mantissa bits) → f32, exactly.
fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let magnitude = match exp {
        // Zero and subnormals: man · 2⁻²⁴ (exact in f32).
        0 => man as f32 * (1.0 / 16_777_216.0),
        // Infinity and NaN (the payload is kept).
        31 => f32::from_bits(0x7f80_0000 | (man << 13)),
        // Normal: rebias the exponent 15 → 127 and widen the mantissa 10 → 23 bits.
        _ => f32::from_bits(((exp + 112) << 23) | (man << 13)),
    };
    if negative { -magnitude } else { magnitude }
}

/// The dtype's name in a safetensors header.
fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I64 => "I64",
        other => unreachable!("skipgate stores F32, F64 and I64 only, not {other:?}"),
    }
}
