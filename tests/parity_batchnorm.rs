//! Parity with PyTorch's `nn.BatchNorm2d` (fixtures in `tests/fixtures/batchnorm/`, made by
//! `tools/torch_ref/batchnorm.py`), run in f32: one train step forward and backward, five train
//! steps of running statistics followed by an eval forward, and the `state_dict` in both
//! directions.
//!
//! Tolerances (see `common`): forward values and running statistics `1e-6 + 1e-5·|torch|`,
//! gradients `1e-6 + 1e-4·|torch|`. `cargo test --test parity_batchnorm -- --nocapture` prints the
//! worst errors.

mod common;

use common::{Checker, FORWARD, Fixture, GRAD, cases_in};
use ndarray::{Ix1, Ix4};
use skipgate::io::{TensorData, TensorFile, load_state_dict, state_dict};
use skipgate::layers::{BatchNorm2d, BatchNormConfig};
use skipgate::{Mode, Module};

const GROUP: &str = "batchnorm";
/// PyTorch's `BatchNorm2d.state_dict()` keys, in its order.
const STATE_KEYS: [&str; 5] = [
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "num_batches_tracked",
];

/// A fresh layer with the fixture's configuration and its `weight` / `bias`.
fn layer_for(f: &Fixture) -> BatchNorm2d<f32> {
    assert!(f.cfg_bool("affine") && f.cfg_bool("track_running_stats"));
    let cfg = BatchNormConfig::new(f.cfg_usize("num_features"))
        .with_eps(f.cfg_f64("eps"))
        .with_momentum(f.cfg_f64("momentum"));
    let mut bn = BatchNorm2d::new(cfg).unwrap_or_else(|e| panic!("{}: {e}", f.name));
    bn.weight.as_mut().unwrap().value = f.f32_nd::<Ix1>("weight");
    bn.bias.as_mut().unwrap().value = f.f32_nd::<Ix1>("bias");
    bn
}

fn count(f: &Fixture, key: &str) -> i64 {
    let a = f.i64(key);
    assert_eq!(a.ndim(), 0, "{}: {key} should be a 0-d int64", f.name);
    a[[]]
}

#[test]
fn the_fixture_group_holds_the_cases_tested_here() {
    assert_eq!(cases_in(GROUP), ["running_stats", "train_step"]);
}

/// ```python
/// m = nn.BatchNorm2d(3); m.weight, m.bias = random; m.train()
/// y = m(x)                                   # x: (4, 3, 5, 5), channel means 3, -2, 0.5
/// (y * grad_output).sum().backward()
/// ```
#[test]
fn train_step_matches_pytorch() {
    let f = Fixture::load(GROUP, "train_step");
    let n = &f.name;
    let mut c = Checker::new(GROUP);
    let mut bn = layer_for(&f);
    let y = bn
        .forward(f.f32_nd::<Ix4>("input").view(), Mode::Train)
        .unwrap_or_else(|e| panic!("{n}: forward: {e}"));
    c.check(n, "output", y.view(), f.f32("output").view(), FORWARD);
    c.check(
        n,
        "running_mean",
        bn.running_mean().view(),
        f.f32("running_mean").view(),
        FORWARD,
    );
    c.check(
        n,
        "running_var",
        bn.running_var().view(),
        f.f32("running_var").view(),
        FORWARD,
    );
    assert_eq!(bn.num_batches_tracked(), count(&f, "num_batches_tracked"));
    let dx = bn
        .backward(f.f32_nd::<Ix4>("grad_output").view())
        .unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(n, "grad.input", dx.view(), f.f32("grad.input").view(), GRAD);
    let (w, b) = (bn.weight.as_ref().unwrap(), bn.bias.as_ref().unwrap());
    c.check(
        n,
        "grad.weight",
        w.grad.view(),
        f.f32("grad.weight").view(),
        GRAD,
    );
    c.check(
        n,
        "grad.bias",
        b.grad.view(),
        f.f32("grad.bias").view(),
        GRAD,
    );
    c.print_summary();
    c.finish();
}

/// ```python
/// m = nn.BatchNorm2d(3, eps=1e-3, momentum=0.25); m.weight, m.bias = random; m.train()
/// for k, shape in enumerate([(4,3,5,5), (2,3,4,4), (3,3,2,2), (5,3,3,3), (2,3,1,1)], 1):
///     y = m(x_k)                             # step{k}.output, then the buffers after step k
/// m.eval(); m(eval_input)
/// ```
#[test]
fn running_stats_over_five_steps_and_eval_match_pytorch() {
    let f = Fixture::load(GROUP, "running_stats");
    let n = &f.name;
    let mut c = Checker::new(GROUP);
    let mut bn = layer_for(&f);
    let steps = f.cfg_usize("steps");
    assert_eq!(steps, 5, "{n}: steps");
    for k in 1..=steps {
        let x = f.f32_nd::<Ix4>(&format!("step{k}.input"));
        let y = bn
            .forward(x.view(), Mode::Train)
            .unwrap_or_else(|e| panic!("{n}: step {k}: {e}"));
        let key = |s: &str| format!("step{k}.{s}");
        c.check(
            n,
            &key("output"),
            y.view(),
            f.f32(&key("output")).view(),
            FORWARD,
        );
        c.check(
            n,
            &key("running_mean"),
            bn.running_mean().view(),
            f.f32(&key("running_mean")).view(),
            FORWARD,
        );
        c.check(
            n,
            &key("running_var"),
            bn.running_var().view(),
            f.f32(&key("running_var")).view(),
            FORWARD,
        );
        assert_eq!(
            bn.num_batches_tracked(),
            count(&f, &key("num_batches_tracked")),
            "{n}: step {k}"
        );
    }
    let y = bn
        .forward(f.f32_nd::<Ix4>("eval.input").view(), Mode::Eval)
        .unwrap_or_else(|e| panic!("{n}: eval: {e}"));
    c.check(
        n,
        "eval.output",
        y.view(),
        f.f32("eval.output").view(),
        FORWARD,
    );
    assert_eq!(bn.num_batches_tracked(), 5, "{n}: eval must not count");
    c.print_summary();
    c.finish();
}

#[test]
fn state_dict_has_pytorch_names_order_and_dtypes() {
    let f = Fixture::load(GROUP, "train_step");
    let mut bn = layer_for(&f);
    bn.forward(f.f32_nd::<Ix4>("input").view(), Mode::Train)
        .unwrap();

    // Visiting order = PyTorch's state_dict order: parameters, then buffers.
    let mut order = Vec::new();
    bn.visit_params(&mut |name, _| order.push(name.to_string()));
    bn.visit_buffers(&mut |name, _| order.push(name.to_string()));
    assert_eq!(order, STATE_KEYS);

    let sd = state_dict(&mut bn);
    let mut names = sd.names();
    names.sort_unstable();
    let mut want = STATE_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    for key in ["weight", "bias", "running_mean", "running_var"] {
        let t = sd.get(key).unwrap();
        assert_eq!(t.shape(), [3], "{key}");
        assert!(
            matches!(t.data(), TensorData::F32(_)),
            "{key}: {:?}",
            t.dtype()
        );
    }
    let nbt = sd.get("num_batches_tracked").unwrap();
    assert_eq!(nbt.shape(), [] as [usize; 0]);
    assert_eq!(nbt.data(), &TensorData::I64(vec![1]));
    // Same dtypes, shapes and (within f32 rounding) values as the state_dict PyTorch made.
    for key in STATE_KEYS {
        let (ours, torch) = (sd.get(key).unwrap(), f.file.get(key).unwrap());
        assert_eq!(ours.dtype(), torch.dtype(), "{key}");
        assert_eq!(ours.shape(), torch.shape(), "{key}");
    }

    // Without affine: only the buffers.
    let mut plain = BatchNorm2d::<f32>::new(BatchNormConfig::new(3).with_affine(false)).unwrap();
    let mut names = state_dict(&mut plain).names().join(",");
    names.push(',');
    assert_eq!(names, "num_batches_tracked,running_mean,running_var,");
}

#[test]
fn pytorch_state_dict_loads() {
    let f = Fixture::load(GROUP, "train_step");
    // The five state_dict tensors of the fixture, as PyTorch wrote them (f32 + 0-d int64).
    let mut sd = TensorFile::new();
    for key in STATE_KEYS {
        sd.insert(key, f.file.get(key).unwrap().clone());
    }
    let mut bn = BatchNorm2d::<f32>::new(BatchNormConfig::new(3)).unwrap();
    load_state_dict(&mut bn, &sd, "train_step").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bn.weight.as_ref().unwrap().value, f.f32_nd::<Ix1>("weight"));
    assert_eq!(bn.bias.as_ref().unwrap().value, f.f32_nd::<Ix1>("bias"));
    assert_eq!(bn.running_mean(), &f.f32_nd::<Ix1>("running_mean"));
    assert_eq!(bn.running_var(), &f.f32_nd::<Ix1>("running_var"));
    assert_eq!(bn.num_batches_tracked(), 1);

    // And back: our state_dict of the loaded layer is the same file.
    let back = state_dict(&mut bn);
    for key in STATE_KEYS {
        assert_eq!(back.get(key).unwrap(), sd.get(key).unwrap(), "{key}");
    }

    // Strict rules: a layer without affine does not take weight and bias.
    let mut plain = BatchNorm2d::<f32>::new(BatchNormConfig::new(3).with_affine(false)).unwrap();
    let err = load_state_dict(&mut plain, &sd, "train_step").unwrap_err();
    assert!(
        err.to_string()
            .contains("unexpected keys: [\"bias\", \"weight\"]"),
        "{err}"
    );
    // A model with 4 channels rejects the 3-channel tensors.
    let mut wide = BatchNorm2d::<f32>::new(BatchNormConfig::new(4)).unwrap();
    let err = load_state_dict(&mut wide, &sd, "train_step").unwrap_err();
    assert!(
        err.to_string()
            .contains("size mismatch for running_var: the file has (3), the model expects (4)"),
        "{err}"
    );
    assert_eq!(
        wide.num_batches_tracked(),
        0,
        "a failed load changes nothing"
    );
}
