//! File I/O: atomic writes, the safetensors reader/writer (checked against hand-built bytes and a
//! hand-written reader, not only against itself), strict state-dict loading and its errors.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayD, IxDyn, arr0, array};
use serde_json::Value;
use skipgate::io::{
    Tensor, TensorData, TensorFile, load_model, load_state_dict, save_model, state_dict,
    write_atomic,
};
use skipgate::module::{BufferMut, BufferVisitor, Param, ParamVisitor};
use skipgate::{Error, Module, Scalar};

// ---------------------------------------------------------------------------------------------
// A small model with PyTorch-style nested names: two parameters, a float buffer and a counter.

struct TestNet<F: Scalar> {
    w: Param<F, ndarray::Ix2>, // (hidden, input)
    b: Param<F, ndarray::Ix1>, // (hidden)
    running_mean: Array1<F>,   // (input)
    count: i64,
}

impl<F: Scalar> TestNet<F> {
    /// hidden × input weights filled with distinct values that depend on `seed`.
    fn new(hidden: usize, input: usize, seed: f64) -> Self {
        let w = Array2::from_shape_fn((hidden, input), |(i, j)| {
            F::of(seed + 0.25 * i as f64 - 0.125 * j as f64)
        });
        let b = Array1::from_shape_fn(hidden, |i| F::of(-seed + 0.5 * i as f64));
        let running_mean = Array1::from_shape_fn(input, |j| F::of(seed * 2.0 + j as f64));
        TestNet {
            w: Param::new(w),
            b: Param::new(b),
            running_mean,
            count: (seed * 10.0) as i64,
        }
    }
}

impl<F: Scalar> Module<F> for TestNet<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        f("rnn.weight_ih_l0", self.w.as_mut());
        f("rnn.bias_ih_l0", self.b.as_mut());
    }
    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        f(
            "bn.running_mean",
            BufferMut::Values(self.running_mean.view_mut().into_dyn()),
        );
        f("bn.num_batches_tracked", BufferMut::Count(&mut self.count));
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers that build and read the format by hand.

/// `[len: u64 LE][header][data]`.
fn st_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One tensor as a minimal independent reader sees it: dtype string, shape, raw bytes.
type RawEntry = (String, Vec<usize>, Vec<u8>);

/// A minimal safetensors reader written from the format description, independent of the library.
/// Also checks the invariants: offsets tile the data section, the file ends where the data ends.
fn minimal_read(bytes: &[u8]) -> (BTreeMap<String, RawEntry>, BTreeMap<String, String>, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut tensors = BTreeMap::new();
    let mut meta = BTreeMap::new();
    let mut ranges = Vec::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            for (mk, mv) in v.as_object().unwrap() {
                meta.insert(mk.clone(), mv.as_str().unwrap().to_string());
            }
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap().to_string();
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let begin = v["data_offsets"][0].as_u64().unwrap() as usize;
        let end = v["data_offsets"][1].as_u64().unwrap() as usize;
        ranges.push((begin, end));
        tensors.insert(k.clone(), (dtype, shape, data[begin..end].to_vec()));
    }
    ranges.sort();
    let mut at = 0;
    for (b, e) in ranges {
        assert_eq!(b, at, "offsets must tile the data section");
        at = e;
    }
    assert_eq!(at, data.len(), "the file must end where the data ends");
    (tensors, meta, n)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn format_err(bytes: &[u8]) -> String {
    let err = TensorFile::from_bytes(bytes, "fixture.safetensors").unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("fixture.safetensors"), "{msg}");
    assert!(msg.contains("not a valid safetensors file"), "{msg}");
    msg
}

// ---------------------------------------------------------------------------------------------
// Round trips.

#[test]
fn save_load_round_trip_keeps_values_shapes_dtypes_and_metadata() {
    let dir = tmp();
    let path = dir.path().join("model.safetensors");
    let mut a = TestNet::<f32>::new(4, 3, 1.5);
    let meta = BTreeMap::from([
        ("arch".to_string(), "test".to_string()),
        ("step".to_string(), "7".to_string()),
    ]);
    save_model(&path, &mut a, &meta).unwrap();

    let mut b = TestNet::<f32>::new(4, 3, -3.0);
    let meta_back = load_model(&path, &mut b).unwrap();
    assert_eq!(meta_back, meta);
    assert_eq!(b.w.value, a.w.value);
    assert_eq!(b.b.value, a.b.value);
    assert_eq!(b.running_mean, a.running_mean);
    assert_eq!(b.count, 15);

    let file = TensorFile::read(&path).unwrap();
    assert_eq!(
        file.names(),
        [
            "bn.num_batches_tracked",
            "bn.running_mean",
            "rnn.bias_ih_l0",
            "rnn.weight_ih_l0"
        ]
    );
    let w = file.get("rnn.weight_ih_l0").unwrap();
    assert_eq!(w.shape(), [4, 3]);
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    let count = file.get("bn.num_batches_tracked").unwrap();
    assert_eq!(count.shape(), [] as [usize; 0]);
    assert_eq!(count.data(), &TensorData::I64(vec![15]));
    assert_eq!(
        file.get_i64("bn.num_batches_tracked").unwrap(),
        arr0(15).into_dyn()
    );
    // w[i, j] = 1.5 + 0.25 i − 0.125 j (all exact in f32).
    assert_eq!(
        file.get_array::<f32>("rnn.weight_ih_l0").unwrap()[[3, 2]],
        1.5 + 0.75 - 0.25
    );
    assert_eq!(file.metadata, meta);
}

#[test]
fn float_dtypes_convert_between_file_and_model() {
    // f32 file into an f64 model.
    let mut a = TestNet::<f32>::new(2, 3, 0.1);
    let file = state_dict(&mut a);
    let mut b = TestNet::<f64>::new(2, 3, 9.0);
    load_state_dict(&mut b, &file, "a.safetensors").unwrap();
    assert_eq!(b.w.value, a.w.value.mapv(|x| x as f64));
    assert_eq!(b.running_mean, a.running_mean.mapv(|x| x as f64));
    assert_eq!(b.count, 1);

    // An f64 model is stored as F64, and loads into an f32 model rounded to nearest.
    let mut c = TestNet::<f64>::new(2, 3, 0.1);
    let file = state_dict(&mut c);
    assert_eq!(
        file.get("rnn.bias_ih_l0").unwrap().dtype(),
        safetensors::Dtype::F64
    );
    let mut d = TestNet::<f32>::new(2, 3, 9.0);
    load_state_dict(&mut d, &file, "c.safetensors").unwrap();
    assert_eq!(d.w.value, c.w.value.mapv(|x| x as f32));
}

#[test]
fn insert_and_get_arrays_of_any_layout() {
    let mut f = TensorFile::new();
    let a = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
    f.insert_array("t", a.t()); // transposed view: stored in logical order
    f.insert_i64("i", array![7i64, -8].view());
    assert_eq!(f.len(), 2);
    assert!(f.contains("t"));
    let back = f.get_array::<f64>("t").unwrap();
    assert_eq!(back, a.t().to_owned().into_dyn());
    assert_eq!(f.get_array::<f32>("t").unwrap()[[2, 1]], 6.0f32);
    assert_eq!(f.get_i64("i").unwrap(), array![7i64, -8].into_dyn());

    let bytes = f.to_bytes().unwrap();
    let g = TensorFile::from_bytes(&bytes, "mem").unwrap();
    assert_eq!(g.tensors, f.tensors);
    assert_eq!(g.source, "mem");
}

// ---------------------------------------------------------------------------------------------
// Checked against the format, not only against ourselves.

#[test]
fn hand_built_file_parses_to_expected_tensors() {
    // "b" comes first in the data section although it sorts after "a": offsets, not order, decide.
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},"b":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}"#;
    let mut data = 42i64.to_le_bytes().to_vec();
    data.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]));
    let f = TensorFile::from_bytes(&st_bytes(header, &data), "hand").unwrap();
    assert_eq!(f.names(), ["a", "b"]);
    assert_eq!(
        f.get_array::<f32>("a").unwrap(),
        array![[1.0f32, 2.0, 3.0], [4.0, 5.0, -6.5]].into_dyn()
    );
    assert_eq!(
        f.get_array::<f64>("a").unwrap(),
        array![[1.0f64, 2.0, 3.0], [4.0, 5.0, -6.5]].into_dyn()
    );
    assert_eq!(f.get_i64("b").unwrap(), ArrayD::from_elem(IxDyn(&[]), 42));
    assert_eq!(f.metadata["format"], "pt");

    // Header padded with spaces (as writers align it to 8 bytes) and an empty file of tensors.
    let f = TensorFile::from_bytes(&st_bytes("{}      ", &[]), "empty").unwrap();
    assert!(f.is_empty());
}

#[test]
fn f16_and_bf16_are_widened_to_f32_exactly() {
    // F16: 1.0, −2.0, 0.5, 2⁻²⁴ (smallest subnormal), 65504 (largest normal), +inf.
    let halfs: [u16; 6] = [0x3C00, 0xC000, 0x3800, 0x0001, 0x7BFF, 0x7C00];
    // BF16: the upper 16 bits of the f32 values 1.0 and −3.5.
    let bf: [u16; 2] = [0x3F80, 0xC060];
    let mut data: Vec<u8> = halfs.iter().flat_map(|h| h.to_le_bytes()).collect();
    data.extend(bf.iter().flat_map(|h| h.to_le_bytes()));
    let header = r#"{"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},"g":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]}}"#;
    let f = TensorFile::from_bytes(&st_bytes(header, &data), "half").unwrap();
    let h = f.get_array::<f32>("h").unwrap();
    assert_eq!(
        h.as_slice().unwrap(),
        [1.0, -2.0, 0.5, 2f32.powi(-24), 65504.0, f32::INFINITY]
    );
    assert_eq!(f.get("h").unwrap().dtype(), safetensors::Dtype::F32);
    assert_eq!(
        f.get_array::<f32>("g").unwrap().as_slice().unwrap(),
        [1.0, -3.5]
    );
}

#[test]
fn written_bytes_follow_the_format() {
    let mut f = TensorFile::new();
    f.insert_array(
        "layer.weight",
        array![[1.0f32, -2.0, 3.5], [0.25, 5.0, 6.0]].view(),
    );
    f.insert_array("layer.bias", array![0.1f64, -0.2].view());
    f.insert_i64("bn.num_batches_tracked", arr0(3i64).view());
    f.metadata.insert("epoch".into(), "2".into());
    let bytes = f.to_bytes().unwrap();

    let (tensors, meta, header_len) = minimal_read(&bytes);
    assert_eq!(
        header_len % 8,
        0,
        "header padded to 8 bytes so the data is aligned"
    );
    assert_eq!(
        meta,
        BTreeMap::from([("epoch".to_string(), "2".to_string())])
    );
    assert_eq!(tensors.len(), 3);

    let (dtype, shape, raw) = &tensors["layer.weight"];
    assert_eq!(
        (dtype.as_str(), shape.as_slice()),
        ("F32", [2, 3].as_slice())
    );
    assert_eq!(raw, &f32_bytes(&[1.0, -2.0, 3.5, 0.25, 5.0, 6.0]));

    let (dtype, shape, raw) = &tensors["layer.bias"];
    assert_eq!((dtype.as_str(), shape.as_slice()), ("F64", [2].as_slice()));
    let expected: Vec<u8> = [0.1f64, -0.2]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(raw, &expected);

    let (dtype, shape, raw) = &tensors["bn.num_batches_tracked"];
    assert_eq!((dtype.as_str(), shape.len()), ("I64", 0));
    assert_eq!(raw, &3i64.to_le_bytes());

    // The reference implementation (what `safetensors.torch.load_file` runs) accepts them too.
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = reference.tensor("layer.weight").unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F32);
    assert_eq!(w.shape(), [2, 3]);
    assert_eq!(
        w.data(),
        f32_bytes(&[1.0, -2.0, 3.5, 0.25, 5.0, 6.0]).as_slice()
    );
    let n = reference.tensor("bn.num_batches_tracked").unwrap();
    assert_eq!((n.dtype(), n.shape().len()), (safetensors::Dtype::I64, 0));

    // `write` puts exactly these bytes on disk.
    let dir = tmp();
    let path = dir.path().join("w.safetensors");
    f.write(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_tensor_named_like_the_metadata_cannot_be_written() {
    let mut f = TensorFile::new();
    f.insert_array("__metadata__", array![1.0f32].view());
    let err = f.to_bytes().unwrap_err().to_string();
    assert!(err.contains("\"__metadata__\" is reserved"), "{err}");
}

#[test]
fn tensor_new_checks_the_number_of_values() {
    let t = Tensor::new(vec![2, 2], TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
    assert_eq!(t.len(), 4);
    let err = Tensor::new(vec![2, 3], TensorData::F32(vec![1.0; 5])).unwrap_err();
    assert!(
        err.to_string()
            .contains("shape (2, 3) needs 6 values, got 5"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Atomic writes.

#[test]
fn write_atomic_creates_dirs_replaces_content_and_leaves_no_temp_files() {
    let dir = tmp();
    let sub = dir.path().join("a/b");
    let path = sub.join("out.bin");
    write_atomic(&path, b"old content, longer than the new one").unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"old content, longer than the new one"
    );
    write_atomic(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(files_in(&sub), ["out.bin"]);
}

#[test]
fn write_atomic_failure_names_the_path_and_cleans_up() {
    let dir = tmp();
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap(); // a directory where the file should go
    std::fs::write(target.join("inside"), b"x").unwrap();
    let err = write_atomic(&target, b"data").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("taken"), "{err}");
    assert_eq!(files_in(dir.path()), ["taken"], "temp file removed");
}

// ---------------------------------------------------------------------------------------------
// Errors reading files.

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let dir = tmp();
    let path = dir.path().join("nope.safetensors");
    let err = TensorFile::read(&path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
    let mut net = TestNet::<f32>::new(2, 2, 0.0);
    let err = load_model(&path, &mut net).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn empty_and_short_files_are_rejected() {
    let dir = tmp();
    let path = dir.path().join("empty.safetensors");
    write_file(&path, &[]);
    let err = TensorFile::read(&path).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("empty.safetensors") && msg.contains("safetensors file"),
        "{msg}"
    );
    assert!(
        msg.contains("empty") && msg.contains("at least 8 bytes"),
        "{msg}"
    );

    let msg = format_err(&[1, 2, 3, 4, 5]);
    assert!(
        msg.contains("5 bytes long; expected at least 8 bytes"),
        "{msg}"
    );
}

#[test]
fn header_length_beyond_the_file_is_rejected() {
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}        ");
    let msg = format_err(&bytes);
    assert!(
        msg.contains("header length says 1000 bytes, but only 10 bytes follow"),
        "{msg}"
    );
}

#[test]
fn header_that_is_not_json_or_not_an_object_is_rejected() {
    let msg = format_err(&st_bytes("{not json", &[]));
    assert!(msg.contains("header is not JSON"), "{msg}");
    assert!(msg.contains("expected {\"name\""), "{msg}");

    let msg = format_err(&st_bytes("[1, 2]", &[]));
    assert!(
        msg.contains("header is valid JSON but an array, expected an object"),
        "{msg}"
    );

    let msg = format_err(&st_bytes(r#"{"x":{"dtype":"F32","shape":[1]}}"#, &[]));
    assert!(
        msg.contains("tensor \"x\": \"data_offsets\" must be [begin, end]"),
        "{msg}"
    );

    let msg = format_err(&st_bytes(r#"{"__metadata__":{"k":3}}"#, &[]));
    assert!(
        msg.contains("\"__metadata__\".\"k\" is a number, expected a string"),
        "{msg}"
    );
}

#[test]
fn truncated_or_overlong_data_is_rejected() {
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
    let msg = format_err(&st_bytes(header, &[0u8; 20]));
    assert!(
        msg.contains("truncated: header says 24 bytes of tensor data, file has 20"),
        "{msg}"
    );
    let msg = format_err(&st_bytes(header, &[0u8; 30]));
    assert!(
        msg.contains("header says 24 bytes of tensor data, file has 30 (6 bytes left over"),
        "{msg}"
    );
}

#[test]
fn offsets_that_disagree_with_the_shape_or_leave_gaps_are_rejected() {
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    let msg = format_err(&st_bytes(header, &[0u8; 20]));
    assert!(
        msg.contains(
            "tensor \"w\": shape (2, 3) of F32 needs 24 bytes, but data_offsets [0, 20] span 20"
        ),
        "{msg}"
    );
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let msg = format_err(&st_bytes(header, &[0u8; 8]));
    assert!(
        msg.contains("tensor \"w\": data_offsets [4, 8] should begin at byte 0"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtype_names_the_key_and_dtype() {
    let header = r#"{"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#;
    let err = TensorFile::from_bytes(&st_bytes(header, &[1, 0]), "m.safetensors").unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("m.safetensors"), "{msg}");
    assert!(
        msg.contains("tensor \"mask\" has unsupported dtype BOOL"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors looking up tensors.

#[test]
fn missing_key_lists_the_keys_there_are() {
    let mut f = TensorFile::new();
    f.insert_array("a", array![1.0f32].view());
    f.insert_array("b", array![2.0f32].view());
    f.source = "w.safetensors".into();
    let err = f.get_array::<f32>("rnn.weight_ih_l0").unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "w.safetensors: no tensor named \"rnn.weight_ih_l0\" (the file has 2 tensors: a, b)"
    );

    // Many keys: the first ten, then a count.
    for i in 0..13 {
        f.insert_array(format!("k{i:02}"), array![0.0f32].view());
    }
    let msg = f.get_i64("zzz").unwrap_err().to_string();
    assert!(
        msg.contains(
            "the file has 15 tensors: a, b, k00, k01, k02, k03, k04, k05, k06, k07, … and 5 more"
        ),
        "{msg}"
    );
}

#[test]
fn wrong_kind_of_tensor_is_reported() {
    let mut f = TensorFile::new();
    f.insert_i64("n", arr0(1i64).view());
    f.insert_array("x", array![1.0f32].view());
    let msg = f.get_array::<f64>("n").unwrap_err().to_string();
    assert!(
        msg.contains("tensor \"n\" has dtype I64, expected a float tensor (F64)"),
        "{msg}"
    );
    let msg = f.get_i64("x").unwrap_err().to_string();
    assert!(
        msg.contains("tensor \"x\" has dtype F32, expected I64"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Strict state-dict loading.

/// Loads `file` into a fresh 4×3 net, expects an error, checks the net was not modified and
/// returns the message.
fn load_err(file: &TensorFile) -> String {
    let mut net = TestNet::<f32>::new(4, 3, 2.0);
    let before = (
        net.w.value.clone(),
        net.b.value.clone(),
        net.running_mean.clone(),
        net.count,
    );
    let err = load_state_dict(&mut net, file, "ckpt.safetensors").unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    assert_eq!(
        (
            net.w.value.clone(),
            net.b.value.clone(),
            net.running_mean.clone(),
            net.count
        ),
        before,
        "a failed load must not modify the model"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("ckpt.safetensors: state dict does not match the model"),
        "{msg}"
    );
    msg
}

#[test]
fn strict_load_reports_missing_keys() {
    let mut file = state_dict(&mut TestNet::<f32>::new(4, 3, 1.0));
    file.tensors.remove("rnn.bias_ih_l0");
    file.tensors.remove("bn.num_batches_tracked");
    let msg = load_err(&file);
    assert!(
        msg.contains("missing keys: [\"rnn.bias_ih_l0\", \"bn.num_batches_tracked\"]"),
        "{msg}"
    );
}

#[test]
fn strict_load_reports_unexpected_keys() {
    let mut file = state_dict(&mut TestNet::<f32>::new(4, 3, 1.0));
    file.insert_array("rnn.weight_hh_l0", Array2::<f32>::zeros((4, 4)).view());
    let msg = load_err(&file);
    assert!(msg.contains("(1 problem)"), "{msg}");
    assert!(
        msg.contains("unexpected keys: [\"rnn.weight_hh_l0\"]"),
        "{msg}"
    );
}

#[test]
fn strict_load_reports_size_mismatch_with_both_shapes() {
    // Saved from a model with input size 5; the model has input size 3.
    let file = state_dict(&mut TestNet::<f32>::new(4, 5, 1.0));
    let msg = load_err(&file);
    assert!(
        msg.contains(
            "size mismatch for rnn.weight_ih_l0: the file has (4, 5), the model expects (4, 3)"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("size mismatch for bn.running_mean: the file has (5), the model expects (3)"),
        "{msg}"
    );
    assert!(!msg.contains("rnn.bias_ih_l0"), "the bias matches: {msg}");
}

#[test]
fn strict_load_reports_every_problem_at_once() {
    let mut file = state_dict(&mut TestNet::<f32>::new(4, 5, 1.0));
    file.tensors.remove("rnn.bias_ih_l0");
    file.insert_array("head.weight", Array2::<f32>::zeros((1, 4)).view());
    let msg = load_err(&file);
    assert!(msg.contains("(4 problems)"), "{msg}");
    assert!(msg.contains("missing keys: [\"rnn.bias_ih_l0\"]"), "{msg}");
    assert!(msg.contains("unexpected keys: [\"head.weight\"]"), "{msg}");
    assert!(msg.contains("size mismatch for rnn.weight_ih_l0"), "{msg}");
    assert!(msg.contains("size mismatch for bn.running_mean"), "{msg}");
}

#[test]
fn strict_load_reports_dtype_mismatches() {
    let mut file = state_dict(&mut TestNet::<f32>::new(4, 3, 1.0));
    file.insert_array("bn.num_batches_tracked", arr0(1.0f32).view());
    file.insert_i64("rnn.bias_ih_l0", Array1::<i64>::zeros(4).view());
    let msg = load_err(&file);
    assert!(
        msg.contains(
            "dtype mismatch for bn.num_batches_tracked: the file has F32, the model expects I64"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("dtype mismatch for rnn.bias_ih_l0: the file has I64, the model expects a float tensor (F32)"),
        "{msg}"
    );
}

#[test]
fn strict_load_of_a_counter_needs_a_0d_tensor() {
    let mut file = state_dict(&mut TestNet::<f32>::new(4, 3, 1.0));
    file.insert_i64("bn.num_batches_tracked", array![5i64].view());
    let msg = load_err(&file);
    assert!(
        msg.contains(
            "size mismatch for bn.num_batches_tracked: the file has (1), the model expects ()"
        ),
        "{msg}"
    );
}

/// The same contents give the same bytes: metadata and tensors are written in sorted order, so
/// two identical training runs produce identical files.
#[test]
fn identical_contents_give_identical_bytes() {
    let make = |order: &[usize]| {
        let mut f = TensorFile::new();
        for &i in order {
            f.metadata.insert(format!("key{i}"), format!("value {i}"));
            f.insert_array(
                format!("t{i}"),
                ndarray::Array1::<f32>::from_elem(i + 1, i as f32).view(),
            );
        }
        f.to_bytes().unwrap()
    };
    let a = make(&[0, 1, 2, 3, 4, 5, 6, 7]);
    for _ in 0..5 {
        assert_eq!(a, make(&[7, 3, 5, 1, 0, 6, 2, 4]));
    }
    let header_len = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
    assert_eq!(header_len % 8, 0);
    let header = std::str::from_utf8(&a[8..8 + header_len]).unwrap();
    assert!(
        header.starts_with("{\"__metadata__\":{\"key0\":\"value 0\",\"key1\""),
        "{header}"
    );
}
