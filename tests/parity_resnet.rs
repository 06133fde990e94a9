//! Parity of whole residual networks with PyTorch (fixtures in `tests/fixtures/resnet/`, made by
//! `tools/torch_ref/resnet.py`), run in f32:
//!
//! * `resnet20_a`: CIFAR ResNet-20, option A, BatchNorm in train mode: logits, cross-entropy,
//!   every parameter gradient and ∂L/∂input, then five SGD steps (weights, running statistics,
//!   `num_batches_tracked`);
//! * `preact_resnet8_b`: a narrow pre-activation ResNet-8 with projection shortcuts: logits,
//!   loss, gradients and the updated running statistics;
//! * `torchvision_resnet18/50`: torchvision's models in eval mode, both sides filling the
//!   `state_dict` from the same closed-form formula ([`formula_value`]); logits, and torchvision's
//!   `state_dict` keys against ours;
//! * a torchvision ResNet-18 `state_dict` refused by ResNet-34 and ResNet-20 with the keys named.
//!
//! The fixtures' state_dicts are loaded with `load_state_dict` (strict), so the names are checked
//! key for key. `cargo test --release --test parity_resnet -- --nocapture` prints the worst
//! errors.

mod common;

use std::collections::BTreeSet;

use common::{Checker, FORWARD, Fixture, GRAD, Kind, Tol, cases_in};
use ndarray::{Array2, ArrayD, Ix2, Ix4};
use serde_json::Value;
use skipgate::io::{TensorFile, load_state_dict, state_dict};
use skipgate::loss::cross_entropy;
use skipgate::models::resnet::{ResNet, ResNetConfig};
use skipgate::module::BufferMut;
use skipgate::optim::{Optimizer, Sgd, SgdConfig};
use skipgate::{Mode, Module, Rng};

const GROUP: &str = "resnet";

/// Train-mode values (logits, losses, and the weights and running statistics after the SGD
/// steps): the shared forward tolerance, `1e-6 + 1e-5·|torch|`, not loosened. Train-mode
/// BatchNorm re-normalises every layer by statistics of the batch, and five SGD steps at lr 0.1
/// feed each step's rounding into the next (the loss falls from 3.3 to 0.015), yet the worst
/// element (the logits) uses 47 % of it. PyTorch's own float32 values differ from the
/// float64 re-computation of `check.py` by up to 35 % of the same tolerance, so both float32
/// implementations sit about equally close to the exact values.
const TRAIN_FORWARD: Tol = FORWARD;

/// Gradients through 19 train-mode BatchNorm layers: the shared gradient tolerance,
/// `1e-6 + 1e-4·|torch|`, not loosened. The worst element is in `grad.conv1.weight` (the layer
/// furthest from the loss; each entry sums 1024 products of mixed sign): 34 % of the tolerance
/// (the absolute part covers its small entries); PyTorch against float64 uses 30 % there.
const TRAIN_GRAD: Tol = GRAD;

/// Eval-mode logits of torchvision's ResNet-18/50 (21 and 54 weighted layers counting the
/// projections; convolutions summing up to 4608 products): relative `1e-4` and absolute `1e-5`.
/// The rounding is absolute on the scale of the logits (|logit| up to 10), so small logits carry
/// it too: the worst element uses 26 % of this tolerance (ResNet-50; max abs difference 9.5e-6),
/// and PyTorch's own float32 logits differ from float64 by up to 1.05e-5, so the forward
/// tolerance's absolute part (1e-6) would be below PyTorch's own error.
const EVAL_LOGITS: Tol = Tol {
    kind: Kind::Forward,
    atol: 1e-5,
    rtol: 1e-4,
};

#[test]
fn the_fixture_group_holds_the_cases_tested_here() {
    assert_eq!(
        cases_in(GROUP),
        [
            "preact_resnet8_b",
            "resnet20_a",
            "torchvision_resnet18",
            "torchvision_resnet50"
        ]
    );
}

/// Whether a fixture key is one of the network's `state_dict` (not an input, output, gradient or
/// later step).
fn is_state_key(key: &str) -> bool {
    !(matches!(key, "input" | "targets" | "logits" | "loss")
        || key.starts_with("grad.")
        || key.starts_with("step"))
}

/// The fixture's `state_dict` (its keys that are not inputs, outputs, gradients or later steps).
fn fixture_state_dict(f: &Fixture) -> TensorFile {
    let mut sd = TensorFile::new();
    for (name, t) in &f.file.tensors {
        if is_state_key(name) {
            sd.insert(name.clone(), t.clone());
        }
    }
    sd
}

/// The network the config describes: `blocks_per_stage`, `widths`, shortcut, classes.
fn network(f: &Fixture, arch: &str) -> ResNet<f32> {
    let n = &f.name;
    let mut cfg: ResNetConfig = arch.parse().unwrap_or_else(|e| panic!("{n}: {e}"));
    let list = |key: &str| -> Vec<usize> {
        f.cfg(key)
            .as_array()
            .unwrap_or_else(|| panic!("{n}: {key} is not a list"))
            .iter()
            .map(|v| v.as_u64().expect("an integer") as usize)
            .collect()
    };
    cfg.blocks_per_stage = list("blocks_per_stage");
    cfg.widths = list("widths");
    let cfg = cfg.io(f.cfg_usize("in_channels"), f.cfg_usize("num_classes"));
    ResNet::new(cfg, &mut Rng::seed(0)).unwrap_or_else(|e| panic!("{n}: {e}"))
}

/// Named tensors in visiting order.
type Named = Vec<(String, ArrayD<f32>)>;

/// Every parameter's gradient, by name.
fn param_grads(net: &mut ResNet<f32>) -> Named {
    let mut out = Vec::new();
    net.visit_params(&mut |name, p| out.push((name.to_string(), p.grad.to_owned())));
    out
}

/// Every parameter value and float buffer, by name, and the counters.
fn state_values(net: &mut ResNet<f32>) -> (Named, Vec<(String, i64)>) {
    let (mut floats, mut counts) = (Vec::new(), Vec::new());
    net.visit_params(&mut |name, p| floats.push((name.to_string(), p.value.to_owned())));
    net.visit_buffers(&mut |name, b| match b {
        BufferMut::Values(v) => floats.push((name.to_string(), v.to_owned())),
        BufferMut::Count(c) => counts.push((name.to_string(), *c)),
    });
    (floats, counts)
}

/// One train-mode forward and backward of the mean cross-entropy; compares logits, loss, every
/// `grad.<param>` and `grad.input`. Returns our loss.
fn train_step_checked(f: &Fixture, net: &mut ResNet<f32>, c: &mut Checker) -> f32 {
    let n = &f.name;
    let x = f.f32_nd::<Ix4>("input");
    let targets = f.indices("targets", usize::MAX);
    let logits = net
        .forward(x.view(), Mode::Train)
        .unwrap_or_else(|e| panic!("{n}: forward: {e}"));
    c.check(
        n,
        "logits",
        logits.view(),
        f.f32("logits").view(),
        TRAIN_FORWARD,
    );
    let (loss, d_logits) =
        cross_entropy(logits.view(), &targets, None).unwrap_or_else(|e| panic!("{n}: {e}"));
    c.check_scalar(n, "loss", loss, f.scalar("loss"), TRAIN_FORWARD);
    net.zero_grad();
    let grads = net
        .backward(d_logits.view())
        .unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(
        n,
        "grad.input",
        grads.d_input.view(),
        f.f32("grad.input").view(),
        TRAIN_GRAD,
    );
    let ours = param_grads(net);
    // Every parameter has a stored gradient and nothing else is stored as one.
    let stored: BTreeSet<&str> = f
        .file
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("grad."))
        .filter(|k| *k != "input")
        .collect();
    let names: BTreeSet<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(stored, names, "{n}: grad.<param> keys");
    for (name, g) in &ours {
        let key = format!("grad.{name}");
        c.check(n, &key, g.view(), f.f32(&key).view(), TRAIN_GRAD);
    }
    loss
}

/// ```python
/// model = CifarResNetA(n=3)        # skipgate's names; BN γ, β, running stats perturbed
/// model.train(); opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
/// for k in 1..=5:
///     opt.zero_grad(); loss = cross_entropy(model(x), targets); loss.backward()
///     # k = 1: logits, loss, grad.<param>, grad.input
///     opt.step()
/// # step5.<key>: the state_dict after the 5 steps (all but the stage-3 convolution weights)
/// ```
#[test]
fn resnet20_option_a_train_step_and_five_sgd_steps_match_pytorch() {
    let f = Fixture::load(GROUP, "resnet20_a");
    let n = &f.name;
    assert_eq!(f.cfg_str("shortcut"), "A");
    let mut net = ResNet::<f32>::new(
        "resnet20"
            .parse::<ResNetConfig>()
            .unwrap()
            .io(f.cfg_usize("in_channels"), f.cfg_usize("num_classes")),
        &mut Rng::seed(0),
    )
    .unwrap();
    // 3×3 stem 432 + 18 convolutions 267 264 + 19 BatchNorms 1 376 + head 650.
    assert_eq!(net.num_params(), 269_722, "ResNet-20 (10 classes)");
    load_state_dict(&mut net, &fixture_state_dict(&f), n).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Checker::new(GROUP);
    let loss = train_step_checked(&f, &mut net, &mut c);

    assert_eq!(f.cfg_str("optimizer"), "SGD");
    let mut opt = Sgd::new(SgdConfig {
        lr: f.cfg_f64("lr"),
        momentum: f.cfg_f64("momentum"),
        dampening: f.cfg_f64("dampening"),
        weight_decay: f.cfg_f64("weight_decay"),
        nesterov: f.cfg_bool("nesterov"),
    })
    .unwrap();
    let steps = f.cfg_usize("steps");
    assert_eq!(steps, 5);
    let x = f.f32_nd::<Ix4>("input");
    let targets = f.indices("targets", usize::MAX);
    c.check_scalar(n, "step1.loss", loss, f.scalar("step1.loss"), TRAIN_FORWARD);
    opt.step(&mut net).unwrap();
    for k in 2..=steps {
        net.zero_grad();
        let logits = net.forward(x.view(), Mode::Train).unwrap();
        let (loss, d) = cross_entropy(logits.view(), &targets, None).unwrap();
        let key = format!("step{k}.loss");
        c.check_scalar(n, &key, loss, f.scalar(&key), TRAIN_FORWARD);
        net.backward(d.view()).unwrap();
        opt.step(&mut net).unwrap();
    }
    let kept: Vec<String> = f
        .cfg("step_keys")
        .as_array()
        .expect("step_keys is a list")
        .iter()
        .map(|v| v.as_str().expect("a key").to_string())
        .collect();
    let (floats, counts) = state_values(&mut net);
    let mut compared = 0;
    for (name, v) in &floats {
        let key = format!("step{steps}.{name}");
        if kept.contains(name) {
            c.check(n, &key, v.view(), f.f32(&key).view(), TRAIN_FORWARD);
            compared += 1;
        } else {
            assert!(!f.has(&key), "{n}: {key} is stored but not in step_keys");
        }
    }
    for (name, count) in &counts {
        let key = format!("step{steps}.{name}");
        let want = f.i64(&key)[[]];
        assert_eq!(*count, want, "{n}: {key}");
        assert_eq!(
            want,
            3 + steps as i64,
            "{n}: {key} (loaded 3, then 5 train forwards)"
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        kept.len(),
        "{n}: every step_keys entry is a key of ours"
    );
    c.print_summary();
    c.finish();
}

/// ```python
/// model = PreActResNetB(n=1, widths=[8, 16, 32], classes=5)   # skipgate's names
/// model.train(); loss = cross_entropy(model(x), targets); loss.backward()
/// # step1.<running stats>: the buffers after the forward
/// ```
#[test]
fn preact_resnet8_option_b_train_step_matches_pytorch() {
    let f = Fixture::load(GROUP, "preact_resnet8_b");
    let n = &f.name;
    assert_eq!(f.cfg_str("shortcut"), "B");
    let mut net = network(&f, "preact-resnet8-b");
    assert_eq!(net.config().to_string(), "preact-resnet8-b");
    load_state_dict(&mut net, &fixture_state_dict(&f), n).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Checker::new(GROUP);
    train_step_checked(&f, &mut net, &mut c);
    let (floats, counts) = state_values(&mut net);
    let running: Vec<_> = floats
        .iter()
        .filter(|(k, _)| k.contains(".running_"))
        .collect();
    for (name, v) in &running {
        let key = format!("step1.{name}");
        c.check(n, &key, v.view(), f.f32(&key).view(), TRAIN_FORWARD);
    }
    // 7 BatchNorms (3 blocks × 2 and final_bn; the pre-activation projections have none),
    // 3 buffers each: all stored.
    assert_eq!((running.len(), counts.len()), (14, 7), "{n}: buffers");
    let stored = f.file.tensors.keys().filter(|k| k.starts_with("step1."));
    assert_eq!(stored.count(), 21, "{n}: step1.* keys");
    for (name, count) in &counts {
        assert_eq!(*count, f.i64(&format!("step1.{name}"))[[]], "{n}: {name}");
        assert_eq!(*count, 4, "{n}: {name} (loaded 3, then one train forward)");
    }
    c.print_summary();
    c.finish();
}

// ---------------------------------------------------------------- closed-form state_dict

/// The closed-form `state_dict` value shared with `tools/torch_ref/resnet.py`
/// (`formula_state_dict`), documented identically there:
///
/// Tensor k (k = 0, 1, …) in state_dict order — every parameter in named_parameters() order, then
/// every buffer in named_buffers() order (skipgate: visit_params, then visit_buffers) — with n
/// elements in row-major order gets, for i = 0 … n−1 and s(i) = sin(0.1·i + k), computed in float64
/// and rounded to float32 once:
///
/// ```text
///     conv weight (4-d), fan_in = C_in·kh·kw       √(2 / fan_in)·s(i)
///     linear weight (2-d), fan_in = in_features    √(1 / fan_in)·s(i)
///     BatchNorm weight (1-d)                       1 + 0.2·s(i)
///     bias (BatchNorm, linear)                     0.1·s(i)
///     running_mean                                 0.1·s(i)
///     running_var                                  1 + 0.5·|cos(0.3·i + k)|
///     num_batches_tracked                          0
/// ```
///
/// The fixture's config.formula holds the constants: {"phase_step": 0.1, "conv_weight": 2,
/// "linear_weight": 1, "bn_weight": [1, 0.2], "bias": 0.1, "running_mean": 0.1,
/// "running_var": [1, 0.5, 0.3]}.
fn formula_value(formula: &Value, name: &str, shape: &[usize], k: usize, i: usize) -> f64 {
    let num = |key: &str, j: Option<usize>| {
        let v = j.map_or(&formula[key], |j| &formula[key][j]);
        v.as_f64()
            .unwrap_or_else(|| panic!("formula.{key} = {}", formula[key]))
    };
    let (i, k) = (i as f64, k as f64);
    let s = (num("phase_step", None) * i + k).sin();
    let leaf = name.rsplit('.').next().unwrap_or(name);
    match (leaf, shape.len()) {
        ("running_var", _) => {
            let (a, b, f) = (
                num("running_var", Some(0)),
                num("running_var", Some(1)),
                num("running_var", Some(2)),
            );
            a + b * (f * i + k).cos().abs()
        }
        ("running_mean", _) => num("running_mean", None) * s,
        ("bias", _) => num("bias", None) * s,
        ("weight", 4) => {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            (num("conv_weight", None) / fan_in).sqrt() * s
        }
        ("weight", 2) => (num("linear_weight", None) / shape[1] as f64).sqrt() * s,
        ("weight", 1) => num("bn_weight", Some(0)) + num("bn_weight", Some(1)) * s,
        _ => panic!("no formula for {name} {shape:?}"),
    }
}

/// Fills every parameter, then every buffer of `net` from [`formula_value`], k counting across
/// both in visiting order; counters to 0. Returns the number of tensors filled.
fn fill_from_formula(net: &mut ResNet<f32>, formula: &Value) -> usize {
    let mut k = 0;
    net.visit_params(&mut |name, mut p| {
        let shape = p.value.shape().to_vec();
        for (i, v) in p.value.iter_mut().enumerate() {
            *v = formula_value(formula, name, &shape, k, i) as f32;
        }
        k += 1;
    });
    net.visit_buffers(&mut |name, b| {
        match b {
            BufferMut::Values(mut v) => {
                let shape = v.shape().to_vec();
                for (i, x) in v.iter_mut().enumerate() {
                    *x = formula_value(formula, name, &shape, k, i) as f32;
                }
            }
            BufferMut::Count(c) => *c = 0,
        }
        k += 1;
    });
    k
}

fn string_list(f: &Fixture, key: &str) -> Vec<String> {
    f.cfg(key)
        .as_array()
        .unwrap_or_else(|| panic!("{}: {key} is not a list", f.name))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// torchvision's `resnet{18,50}()` in eval mode with the closed-form state_dict: its keys are
/// ours (parameters and buffers each in the same order) and its logits are ours.
fn torchvision_eval(case: &str, arch: &str) {
    let f = Fixture::load(GROUP, case);
    let n = &f.name;
    assert_eq!(f.cfg_str("model"), arch);
    let mut net = ResNet::<f32>::new(arch.parse().unwrap(), &mut Rng::seed(0)).unwrap();

    // Names: torchvision's parameters and buffers, each in order, are ours; its state_dict (which
    // interleaves them module by module) holds exactly the same keys.
    let (mut params, mut buffers) = (Vec::new(), Vec::new());
    net.visit_params(&mut |name, _| params.push(name.to_string()));
    net.visit_buffers(&mut |name, _| buffers.push(name.to_string()));
    assert_eq!(params, string_list(&f, "parameter_keys"), "{n}: parameters");
    assert_eq!(buffers, string_list(&f, "buffer_keys"), "{n}: buffers");
    let theirs = string_list(&f, "state_dict_keys");
    let ours: Vec<String> = state_dict(&mut net).tensors.into_keys().collect();
    let mut sorted = theirs.clone();
    sorted.sort();
    assert_eq!(sorted, ours, "{n}: state_dict keys");
    assert_eq!(
        theirs.len(),
        params.len() + buffers.len(),
        "{n}: no duplicates"
    );
    // Taken in torchvision's state_dict order, its parameters are in our order, and so are its
    // buffers.
    let in_order = |ours: &[String]| -> Vec<String> {
        theirs
            .iter()
            .filter(|k| ours.contains(k))
            .cloned()
            .collect()
    };
    assert_eq!(in_order(&params), params, "{n}: parameter order");
    assert_eq!(in_order(&buffers), buffers, "{n}: buffer order");

    let filled = fill_from_formula(&mut net, f.cfg("formula"));
    assert_eq!(filled, theirs.len());
    let logits: Array2<f32> = net
        .forward(f.f32_nd::<Ix4>("input").view(), Mode::Eval)
        .unwrap_or_else(|e| panic!("{n}: {e}"));
    let mut c = Checker::new(GROUP);
    c.check(
        n,
        "logits",
        logits.view(),
        f.f32_nd::<Ix2>("logits").view(),
        EVAL_LOGITS,
    );
    c.print_summary();
    c.finish();
}

#[test]
fn torchvision_resnet18_eval_logits_and_names_match() {
    torchvision_eval("torchvision_resnet18", "resnet18");
}

#[test]
fn torchvision_resnet50_eval_logits_and_names_match() {
    torchvision_eval("torchvision_resnet50", "resnet50");
}

// ---------------------------------------------------------------- wrong state_dicts

/// A ResNet-18 `state_dict` (torchvision's names and shapes) loads into a fresh ResNet-18, but
/// not into a ResNet-34 (8 more blocks: 48 parameters and 48 buffers missing, nothing
/// unexpected) nor a ResNet-20 (different stages and shapes); the model is left unchanged.
#[test]
fn a_resnet18_state_dict_is_refused_by_resnet34_and_resnet20_with_the_keys_named() {
    let mut rng = Rng::seed(7);
    let mut r18 = ResNet::<f32>::new("resnet18".parse().unwrap(), &mut rng).unwrap();
    let file = state_dict(&mut r18);
    assert_eq!(
        file.len(),
        122,
        "torchvision's resnet18 has 122 state_dict entries"
    );
    let mut other18 = ResNet::<f32>::new("resnet18".parse().unwrap(), &mut rng).unwrap();
    load_state_dict(&mut other18, &file, "r18.safetensors").unwrap();
    assert_eq!(
        other18.conv1.weight.value, r18.conv1.weight.value,
        "loaded into a ResNet-18"
    );

    let mut r34 = ResNet::<f32>::new("resnet34".parse().unwrap(), &mut rng).unwrap();
    let before = r34.conv1.weight.value.clone();
    let msg = load_state_dict(&mut r34, &file, "r18.safetensors")
        .unwrap_err()
        .to_string();
    // Parameters come first in the list, block by block; 30 keys are shown.
    for want in [
        "r18.safetensors: state dict does not match the model (1 problem):",
        "missing keys: [\"layer1.2.conv1.weight\", \"layer1.2.bn1.weight\", \"layer1.2.bn1.bias\", \"layer1.2.conv2.weight\"",
        "\"layer2.3.conv1.weight\"",
        "\"layer3.3.bn2.bias\", … and 66 more]",
    ] {
        assert!(msg.contains(want), "expected {want:?} in:\n{msg}");
    }
    assert!(
        !msg.contains("unexpected") && !msg.contains("size mismatch"),
        "{msg}"
    );
    assert_eq!(r34.conv1.weight.value, before, "the model is unchanged");

    let mut r20 = ResNet::<f32>::new("resnet20".parse().unwrap(), &mut rng).unwrap();
    let before = r20.fc.weight.value.clone();
    let msg = load_state_dict(&mut r20, &file, "r18.safetensors")
        .unwrap_err()
        .to_string();
    // 36 missing keys (3 blocks × 12, parameters first, 30 shown), 42 unexpected (layer4: 30,
    // two downsamples: 12; listed sorted, 30 shown), and a size mismatch for conv1, bn1 (4),
    // 6 shared blocks (10 each) and fc (2): 67.
    for want in [
        "(69 problems)",
        "missing keys: [\"layer1.2.conv1.weight\"",
        "\"layer3.2.bn2.bias\", \"layer1.2.bn1.running_mean\"",
        "\"layer2.2.bn2.num_batches_tracked\", … and 6 more]",
        "unexpected keys: [\"layer2.0.downsample.0.weight\"",
        "\"layer4.0.downsample.1.weight\", … and 12 more]",
        "size mismatch for conv1.weight: the file has (64, 3, 7, 7), the model expects (16, 3, 3, 3)",
        "size mismatch for layer3.1.bn2.running_var: the file has (256), the model expects (64)",
        "size mismatch for fc.weight: the file has (1000, 512), the model expects (10, 64)",
    ] {
        assert!(msg.contains(want), "expected {want:?} in:\n{msg}");
    }
    assert_eq!(msg.matches("size mismatch").count(), 67, "{msg}");
    assert_eq!(r20.fc.weight.value, before, "the model is unchanged");
}
