//! Parity with PyTorch for the feed-forward layers and the losses: every fixture of
//! `tests/fixtures/layers/` and `tests/fixtures/loss/` (made by `tools/torch_ref/layers.py` and
//! `loss.py`) is run through skipgate in f32 and compared output by output, gradient by gradient.
//!
//! Tolerances (see `common`): forward values `1e-6 + 1e-5·|torch|`, gradients
//! `1e-6 + 1e-4·|torch|`. `cargo test --test parity_layers -- --nocapture` prints the worst errors.

mod common;

use common::{Checker, FORWARD, Fixture, GRAD, cases_in};
use ndarray::{Ix1, Ix2};
use skipgate::Mode;
use skipgate::layers::{Embedding, Linear, Relu, Sigmoid, Tanh};
use skipgate::loss::{cross_entropy, mse_loss};

/// The ignore value skipgate gets for PyTorch's `ignore_index = -100` (any negative target).
const IGNORE: usize = usize::MAX;

type Runner = fn(&Fixture, &mut Checker);

/// Every fixture of the two groups and the function that checks it.
const CASES: &[(&str, &str, Runner)] = &[
    ("layers", "linear", linear),
    ("layers", "linear_nobias", linear),
    ("layers", "embedding", embedding),
    ("layers", "embedding_padding", embedding),
    ("layers", "tanh", activation),
    ("layers", "sigmoid", activation),
    ("layers", "relu", activation),
    ("loss", "mse", mse),
    ("loss", "cross_entropy", cross_entropy_case),
    ("loss", "cross_entropy_ignore", cross_entropy_case),
    ("loss", "cross_entropy_large", cross_entropy_case),
];

/// ```python
/// m = nn.Linear(4, 3, bias=…); y = m(x); (y * grad_output).sum().backward()
/// ```
fn linear(f: &Fixture, c: &mut Checker) {
    let n = &f.name;
    let has_bias = f.cfg_bool("bias");
    assert_eq!(f.has("bias"), has_bias, "{n}: config bias vs tensors");
    let weight = f.f32_nd::<Ix2>("weight");
    assert_eq!(
        weight.dim(),
        (f.cfg_usize("out_features"), f.cfg_usize("in_features")),
        "{n}: weight shape vs config"
    );
    let bias = has_bias.then(|| f.f32_nd::<Ix1>("bias"));
    let mut layer =
        Linear::<f32>::from_weights(weight, bias).unwrap_or_else(|e| panic!("{n}: {e}"));
    let x = f.f32_nd::<Ix2>("input");
    let y = layer
        .forward(x.view(), Mode::Train)
        .unwrap_or_else(|e| panic!("{n}: forward: {e}"));
    c.check(n, "output", y.view(), f.f32("output").view(), FORWARD);
    let dx = layer
        .backward(f.f32_nd::<Ix2>("grad_output").view())
        .unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(n, "grad.input", dx.view(), f.f32("grad.input").view(), GRAD);
    c.check(
        n,
        "grad.weight",
        layer.weight.grad.view(),
        f.f32("grad.weight").view(),
        GRAD,
    );
    match &layer.bias {
        Some(b) => c.check(
            n,
            "grad.bias",
            b.grad.view(),
            f.f32("grad.bias").view(),
            GRAD,
        ),
        None => assert!(
            !f.has("grad.bias"),
            "{n}: torch has grad.bias, we have no bias"
        ),
    }
}

/// ```python
/// m = nn.Embedding(10, 5, padding_idx=…); y = m(ids); (y * grad_output).sum().backward()
/// ```
fn embedding(f: &Fixture, c: &mut Checker) {
    let n = &f.name;
    let padding_idx = f.cfg("padding_idx").as_u64().map(|p| p as usize);
    let weight = f.f32_nd::<Ix2>("weight");
    assert_eq!(
        weight.dim(),
        (f.cfg_usize("num_embeddings"), f.cfg_usize("embedding_dim")),
        "{n}: weight shape vs config"
    );
    let mut layer =
        Embedding::<f32>::from_weights(weight, padding_idx).unwrap_or_else(|e| panic!("{n}: {e}"));
    let ids = f.indices("ids", IGNORE);
    if let Some(p) = padding_idx {
        assert!(ids.contains(&p), "{n}: the ids should use the padding row");
    }
    let y = layer
        .forward(&ids, Mode::Train)
        .unwrap_or_else(|e| panic!("{n}: forward: {e}"));
    c.check(n, "output", y.view(), f.f32("output").view(), FORWARD);
    layer
        .backward(f.f32_nd::<Ix2>("grad_output").view())
        .unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(
        n,
        "grad.weight",
        layer.weight.grad.view(),
        f.f32("grad.weight").view(),
        GRAD,
    );
    if let Some(p) = padding_idx {
        // Exactly zero, not just within tolerance: the padding row receives nothing.
        assert!(
            layer.weight.grad.row(p).iter().all(|&g| g == 0.0),
            "{n}: gradient of padding row {p} is {}, expected exactly 0",
            layer.weight.grad.row(p)
        );
    }
}

/// ```python
/// y = torch.tanh(x)  # / torch.sigmoid / torch.relu
/// (y * grad_output).sum().backward()
/// ```
fn activation(f: &Fixture, c: &mut Checker) {
    let n = &f.name;
    let x = f.f32_nd::<Ix2>("input");
    let dy = f.f32_nd::<Ix2>("grad_output");
    let (y, dx) = match f.cfg_str("op") {
        "tanh" => {
            let mut a = Tanh::<f32>::new();
            (a.forward(x.view(), Mode::Train), a.backward(dy.view()))
        }
        "sigmoid" => {
            let mut a = Sigmoid::<f32>::new();
            (a.forward(x.view(), Mode::Train), a.backward(dy.view()))
        }
        "relu" => {
            let mut a = Relu::<f32>::new();
            (a.forward(x.view(), Mode::Train), a.backward(dy.view()))
        }
        other => panic!("{n}: unknown activation {other:?}"),
    };
    let dx = dx.unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(n, "output", y.view(), f.f32("output").view(), FORWARD);
    c.check(n, "grad.input", dx.view(), f.f32("grad.input").view(), GRAD);
}

/// ```python
/// loss = F.mse_loss(input, target); loss.backward()
/// ```
fn mse(f: &Fixture, c: &mut Checker) {
    let n = &f.name;
    let pred = f.f32_nd::<Ix2>("input");
    let target = f.f32_nd::<Ix2>("target");
    let (loss, grad) = mse_loss(pred.view(), target.view()).unwrap_or_else(|e| panic!("{n}: {e}"));
    c.check_scalar(n, "loss", loss, f.scalar("loss"), FORWARD);
    c.check(
        n,
        "grad.input",
        grad.view(),
        f.f32("grad.input").view(),
        GRAD,
    );
}

/// ```python
/// loss = F.cross_entropy(logits, targets[, ignore_index=-100]); loss.backward()
/// ```
fn cross_entropy_case(f: &Fixture, c: &mut Checker) {
    let n = &f.name;
    let logits = f.f32_nd::<Ix2>("logits");
    let targets = f.indices("targets", IGNORE);
    let ignore_index = match f.config.get("ignore_index") {
        Some(v) if !v.is_null() => {
            assert_eq!(v.as_i64(), Some(-100), "{n}: ignore_index");
            assert!(
                targets.contains(&IGNORE),
                "{n}: some targets should be ignored"
            );
            Some(IGNORE)
        }
        _ => {
            assert!(
                !targets.contains(&IGNORE),
                "{n}: negative target without ignore_index"
            );
            None
        }
    };
    let (loss, grad) =
        cross_entropy(logits.view(), &targets, ignore_index).unwrap_or_else(|e| panic!("{n}: {e}"));
    c.check_scalar(n, "loss", loss, f.scalar("loss"), FORWARD);
    c.check(
        n,
        "grad.logits",
        grad.view(),
        f.f32("grad.logits").view(),
        GRAD,
    );
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE {
            assert!(
                grad.row(row).iter().all(|&g| g == 0.0),
                "{n}: ignored row {row} has gradient {}, expected exactly 0",
                grad.row(row)
            );
        }
    }
}

fn run(group: &str, case: &str) -> Checker {
    let (_, _, runner) = CASES
        .iter()
        .find(|(g, k, _)| *g == group && *k == case)
        .unwrap_or_else(|| panic!("no runner for {group}/{case}"));
    let f = Fixture::load(group, case);
    let mut c = Checker::new(&f.name);
    runner(&f, &mut c);
    c
}

/// One named test per fixture, `<group>::<case>`, so a failure names its case.
macro_rules! parity_tests {
    ($($group:ident { $($case:ident),* $(,)? })*) => {$(
        mod $group {
            $(
                #[test]
                fn $case() {
                    let c = super::run(stringify!($group), stringify!($case));
                    c.print_summary();
                    c.finish();
                }
            )*
        }
    )*};
}

parity_tests! {
    layers {
        linear,
        linear_nobias,
        embedding,
        embedding_padding,
        tanh,
        sigmoid,
        relu,
    }
    loss {
        mse,
        cross_entropy,
        cross_entropy_ignore,
        cross_entropy_large,
    }
}

/// Every file in `layers/` and `loss/` has a runner (a new fixture cannot go unchecked), and all
/// of them pass together; prints the worst errors of each group.
#[test]
fn all_layer_and_loss_fixtures_summary() {
    let mut all = Checker::new("layers+loss");
    for group in ["layers", "loss"] {
        let mut g = Checker::new(group);
        for case in cases_in(group) {
            g.absorb(run(group, &case));
        }
        g.print_summary();
        all.absorb(g);
    }
    assert_eq!(
        all.results
            .iter()
            .map(|r| r.0.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        CASES.len(),
        "every case in CASES should have a fixture file and vice versa"
    );
    all.finish();
}

/// The comparison itself: it finds the element that uses most of its tolerance (not merely the
/// largest absolute error), reports its index and both values, fails on NaN and on shape
/// mismatches.
#[test]
fn comparison_reports_the_worst_element() {
    use common::diff;
    use ndarray::array;
    let torch = array![[100.0f32, 1e-3], [2.0, -3.0]];
    // Errors 5e-4 (usage 5e-4 / 1.001e-3 ≈ 0.5), 2e-6 (usage 2e-6 / 1.01e-6 ≈ 2.0), 0, 0.
    let ours = array![[100.0005f32, 1e-3 + 2e-6], [2.0, -3.0]];
    let d = diff(ours.view().into_dyn(), torch.view().into_dyn(), FORWARD).unwrap();
    assert_eq!(d.worst_index, vec![0, 1]);
    assert_eq!((d.worst_ours, d.worst_torch), (1e-3 + 2e-6, 1e-3));
    assert!((d.usage - 2e-6 / 1.01e-6).abs() < 0.01, "usage {}", d.usage);
    assert!((d.max_abs - 5e-4).abs() < 1e-5, "max_abs {}", d.max_abs);

    let mut c = Checker::new("self-test");
    c.check("case", "t", ours.view(), torch.view(), FORWARD);
    assert_eq!(c.failures.len(), 1);
    assert!(
        c.failures[0].starts_with("case: t: worst element [0, 1]: ours 1.0020001e-3, torch 1e-3, |diff| 2.000e-6 > atol 1e-6"),
        "{}",
        c.failures[0]
    );

    let nan = array![[f32::NAN, 1e-3], [2.0, -3.0]];
    let d = diff(nan.view().into_dyn(), torch.view().into_dyn(), GRAD).unwrap();
    assert_eq!(
        (d.worst_index.as_slice(), d.usage),
        (&[0, 0][..], f64::INFINITY)
    );

    let err = diff(torch.t().into_dyn(), ours.row(0).into_dyn(), GRAD).unwrap_err();
    assert_eq!(err, "shape mismatch: ours [2, 2], torch [2]");
}
