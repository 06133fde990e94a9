//! Parity with PyTorch for the recurrent layers: every fixture of `tests/fixtures/rnn/` (made by
//! `tools/torch_ref/rnn.py`) is run through skipgate in f32 and compared output by output,
//! gradient by gradient.
//!
//! Sequence layers (`nn.RNN` / `nn.LSTM` / `nn.GRU`), as the fixtures were made:
//! ```python
//! m = nn.LSTM(I, H, num_layers=L, bidirectional=…, batch_first=…)   # default init
//! out, (h_n, c_n) = m(x, (h0, c0))        # or through pack_padded_sequence for *_lengths
//! L = (out * grad_output).sum() + (h_n * grad_h_n).sum() + (c_n * grad_c_n).sum()
//! L.backward()                            # grad.input, grad.h0, grad.c0, grad.<param>
//! ```
//! The parameters are loaded with [`load_state_dict`] from a file holding only the fixture's
//! parameter tensors under their PyTorch names, so the PyTorch-name loading path is exercised too.
//! Cells (`nn.RNNCell` / `nn.LSTMCell` / `nn.GRUCell`): one step, `L = Σ h1 ⊙ grad_h1 (+ Σ c1 ⊙
//! grad_c1)`, parameters assigned by name through `visit_params`.
//!
//! Tolerances (see `common`): forward `1e-6 + 1e-5·|torch|`, gradients `1e-6 + 1e-4·|torch|`.
//! The 60-step `lstm_long` / `gru_long` use the same tolerances, no looser: rounding carried
//! through 60 steps stays small (worst relative errors 2.4e-5 forward, 4.0e-5 on gradients,
//! at most 14 % of the tolerance; `cargo test --test parity_rnn -- --nocapture` prints them).

mod common;

use std::collections::BTreeSet;

use common::{Checker, FORWARD, Fixture, GRAD, cases_in};
use ndarray::{Array3, Axis, Ix2, Ix3};
use skipgate::io::{TensorFile, load_state_dict};
use skipgate::rnn::{Cell, CellKind, Recurrent, RecurrentConfig, SeqInput};
use skipgate::{Mode, Module, Rng};

/// PyTorch's `mode` string → skipgate's cell kind.
fn kind_of(f: &Fixture) -> CellKind {
    match f.cfg_str("mode") {
        "RNN_TANH" => CellKind::Tanh,
        "RNN_RELU" => CellKind::Relu,
        "LSTM" => CellKind::Lstm,
        "GRU" => CellKind::Gru,
        other => panic!("{}: unknown mode {other:?}", f.name),
    }
}

/// Keys that are inputs with a gradient but not parameters.
const INPUT_KEYS: [&str; 5] = ["input", "h0", "c0", "hx", "cx"];

/// The fixture's parameter names: every `X` with a `grad.X` that is not an input.
fn param_names(f: &Fixture) -> Vec<String> {
    f.file
        .names()
        .iter()
        .filter_map(|k| k.strip_prefix("grad."))
        .filter(|k| !INPUT_KEYS.contains(k))
        .map(str::to_string)
        .collect()
}

/// Checks every `grad.<param>` of the fixture against the model's accumulated gradients, and that
/// the model has exactly the fixture's parameters.
fn check_param_grads(f: &Fixture, model: &mut dyn Module<f32>, c: &mut Checker) {
    let mut seen = BTreeSet::new();
    let mut grads = Vec::new();
    model.visit_params(&mut |name, p| {
        seen.insert(name.to_string());
        grads.push((name.to_string(), p.grad.to_owned()));
    });
    let want: BTreeSet<String> = param_names(f).into_iter().collect();
    if seen != want {
        c.fail(
            &f.name,
            format!("parameter names differ: ours {seen:?}, torch {want:?}"),
        );
    }
    for (name, g) in grads {
        let key = format!("grad.{name}");
        if f.has(&key) {
            c.check(&f.name, &key, g.view(), f.f32(&key).view(), GRAD);
        }
    }
}

/// One sequence case: build from the config, load the parameters by PyTorch name, forward in
/// train mode, backward, compare everything the fixture has.
fn sequence_case(f: &Fixture, c: &mut Checker) {
    let n = f.name.as_str();
    let kind = kind_of(f);
    let cfg = RecurrentConfig::new(kind, f.cfg_usize("input_size"), f.cfg_usize("hidden_size"))
        .layers(f.cfg_usize("num_layers"))
        .bidirectional(f.cfg_bool("bidirectional"))
        .batch_first(f.cfg_bool("batch_first"));
    let mut rng = Rng::seed(0);
    let mut model = Recurrent::<f32>::new(cfg, &mut rng).unwrap_or_else(|e| panic!("{n}: {e}"));

    let mut params = TensorFile::new();
    for name in param_names(f) {
        params.insert(name.as_str(), f.file.get(&name).unwrap().clone());
    }
    load_state_dict(&mut model, &params, n).unwrap_or_else(|e| panic!("{e}"));
    // The loaded values are the fixture's, bit for bit.
    model.visit_params(&mut |name, p| {
        assert_eq!(
            p.value,
            f.f32(name).view(),
            "{n}: {name} after load_state_dict"
        );
    });

    let x = f.f32_nd::<Ix3>("input");
    let has_h0 = f.cfg_bool("has_h0");
    assert_eq!(f.has("h0"), has_h0, "{n}: has_h0 vs tensors");
    let h0 = has_h0.then(|| f.f32_nd::<Ix3>("h0"));
    let c0 = (has_h0 && kind == CellKind::Lstm).then(|| f.f32_nd::<Ix3>("c0"));
    let lengths: Option<Vec<usize>> = f
        .cfg_bool("has_lengths")
        .then(|| f.indices("lengths", usize::MAX));

    let mut inp = SeqInput::new(x.view());
    if let Some(h0) = &h0 {
        inp = inp.h0(h0.view());
    }
    if let Some(c0) = &c0 {
        inp = inp.c0(c0.view());
    }
    if let Some(l) = &lengths {
        inp = inp.lengths(l);
    }
    let out = model
        .forward(inp, Mode::Train, &mut rng)
        .unwrap_or_else(|e| panic!("{n}: forward: {e}"));
    c.check(
        n,
        "output",
        out.output.view(),
        f.f32("output").view(),
        FORWARD,
    );
    c.check(n, "h_n", out.h_n.view(), f.f32("h_n").view(), FORWARD);
    match (&out.c_n, f.has("c_n")) {
        (Some(c_n), true) => c.check(n, "c_n", c_n.view(), f.f32("c_n").view(), FORWARD),
        (None, false) => {}
        (ours, theirs) => c.fail(
            n,
            format!(
                "c_n: ours present {}, torch present {theirs}",
                ours.is_some()
            ),
        ),
    }

    let grad_output = f.f32_nd::<Ix3>("grad_output");
    let grad_h_n = f.f32_nd::<Ix3>("grad_h_n");
    let grad_c_n = f.has("grad_c_n").then(|| f.f32_nd::<Ix3>("grad_c_n"));
    let grads = model
        .backward(
            grad_output.view(),
            Some(grad_h_n.view()),
            grad_c_n.as_ref().map(|g| g.view()),
        )
        .unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(
        n,
        "grad.input",
        grads.d_input.view(),
        f.f32("grad.input").view(),
        GRAD,
    );
    if has_h0 {
        c.check(
            n,
            "grad.h0",
            grads.d_h0.view(),
            f.f32("grad.h0").view(),
            GRAD,
        );
    }
    match (&grads.d_c0, f.has("grad.c0")) {
        (Some(d), true) => c.check(n, "grad.c0", d.view(), f.f32("grad.c0").view(), GRAD),
        (_, false) => {}
        (None, true) => c.fail(n, "grad.c0: torch has one, we returned none"),
    }
    check_param_grads(f, &mut model, c);

    if let Some(lengths) = &lengths {
        check_padding_exactly_zero(f, &lengths[..], &out.output, &grads.d_input);
    }
}

/// Variable lengths: `output` and `grad.input` are exactly 0 at padded steps (`t ≥ lengths[b]`),
/// although `grad_output` is random there.
fn check_padding_exactly_zero(
    f: &Fixture,
    lengths: &[usize],
    output: &Array3<f32>,
    dx: &Array3<f32>,
) {
    let t_axis = if f.cfg_bool("batch_first") { 1 } else { 0 };
    let t_len = output.len_of(Axis(t_axis));
    let mut padded = 0;
    for (b, &len) in lengths.iter().enumerate() {
        for t in len..t_len {
            for (what, a) in [("output", output), ("grad.input", dx)] {
                // Without the time axis, the batch axis is first in either layout.
                let row = a.index_axis(Axis(t_axis), t).index_axis_move(Axis(0), b);
                assert!(
                    row.iter().all(|&v| v == 0.0),
                    "{}: {what} at padded step t={t}, b={b} (length {len}) is {row}, expected exactly 0",
                    f.name
                );
            }
            padded += 1;
        }
    }
    assert!(padded > 0, "{}: lengths {lengths:?} pad nothing", f.name);
}

/// One cell case: a single step through [`Cell`], parameters set by name with `visit_params`.
fn cell_case(f: &Fixture, c: &mut Checker) {
    let n = f.name.as_str();
    let kind = kind_of(f);
    let mut cell = Cell::<f32>::new(
        kind,
        f.cfg_usize("input_size"),
        f.cfg_usize("hidden_size"),
        &mut Rng::seed(0),
    )
    .unwrap_or_else(|e| panic!("{n}: {e}"));
    let mut assigned = Vec::new();
    cell.visit_params(&mut |name, mut p| {
        let v = f.f32(name);
        assert_eq!(p.value.shape(), v.shape(), "{n}: shape of {name}");
        p.value.assign(&v);
        assigned.push(name.to_string());
    });
    let mut want = param_names(f);
    want.sort();
    assigned.sort();
    assert_eq!(assigned, want, "{n}: cell parameter names vs fixture");

    let x = f.f32_nd::<Ix2>("input");
    let hx = f.f32_nd::<Ix2>("hx");
    let cx = f.has("cx").then(|| f.f32_nd::<Ix2>("cx"));
    let out = cell
        .forward(
            x.view(),
            hx.view(),
            cx.as_ref().map(|c| c.view()),
            Mode::Train,
        )
        .unwrap_or_else(|e| panic!("{n}: forward: {e}"));
    c.check(n, "h1", out.h.view(), f.f32("h1").view(), FORWARD);
    match (&out.c, f.has("c1")) {
        (Some(c1), true) => c.check(n, "c1", c1.view(), f.f32("c1").view(), FORWARD),
        (None, false) => {}
        (ours, theirs) => c.fail(
            n,
            format!(
                "c1: ours present {}, torch present {theirs}",
                ours.is_some()
            ),
        ),
    }

    let grad_h1 = f.f32_nd::<Ix2>("grad_h1");
    let grad_c1 = f.has("grad_c1").then(|| f.f32_nd::<Ix2>("grad_c1"));
    let g = cell
        .backward(grad_h1.view(), grad_c1.as_ref().map(|g| g.view()))
        .unwrap_or_else(|e| panic!("{n}: backward: {e}"));
    c.check(
        n,
        "grad.input",
        g.d_x.view(),
        f.f32("grad.input").view(),
        GRAD,
    );
    c.check(n, "grad.hx", g.d_h.view(), f.f32("grad.hx").view(), GRAD);
    match (&g.d_c, f.has("grad.cx")) {
        (Some(d), true) => c.check(n, "grad.cx", d.view(), f.f32("grad.cx").view(), GRAD),
        (None, false) => {}
        (ours, theirs) => c.fail(
            n,
            format!(
                "grad.cx: ours present {}, torch present {theirs}",
                ours.is_some()
            ),
        ),
    }
    check_param_grads(f, &mut cell, c);
}

fn run(case: &str) -> Checker {
    let f = Fixture::load("rnn", case);
    let mut c = Checker::new(&f.name);
    if f.config.get("cell").and_then(|v| v.as_bool()) == Some(true) {
        cell_case(&f, &mut c);
    } else {
        sequence_case(&f, &mut c);
    }
    c
}

/// One named test per fixture, so a failure names its case.
macro_rules! parity_tests {
    ($($case:ident),* $(,)?) => {
        /// The cases with a named test (the summary test checks this is every file).
        const NAMED: &[&str] = &[$(stringify!($case)),*];
        mod rnn {
            $(
                #[test]
                fn $case() {
                    let c = super::run(stringify!($case));
                    c.print_summary();
                    c.finish();
                }
            )*
        }
    };
}

parity_tests!(
    rnn_tanh_basic,
    rnn_tanh_deep_bidir_h0,
    rnn_tanh_lengths,
    rnn_tanh_batch_first,
    rnn_relu_basic,
    rnn_relu_deep_bidir_h0,
    rnn_relu_lengths,
    rnn_relu_batch_first,
    lstm_basic,
    lstm_deep_bidir_h0,
    lstm_lengths,
    lstm_batch_first,
    gru_basic,
    gru_deep_bidir_h0,
    gru_lengths,
    gru_batch_first,
    rnn_cell_tanh,
    lstm_cell,
    gru_cell,
    lstm_long,
    gru_long,
);

/// Every `rnn/*.safetensors` has a named test, and all cases pass together; prints the worst
/// errors per case and for the group (`-- --nocapture`).
#[test]
fn all_rnn_fixtures_summary() {
    let files = cases_in("rnn");
    let named: BTreeSet<String> = NAMED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        files.iter().cloned().collect::<BTreeSet<_>>(),
        named,
        "fixture files vs named tests"
    );
    let mut all = Checker::new("rnn");
    for case in &files {
        all.absorb(run(case));
    }
    all.print_summary();
    all.finish();
}

/// The PyTorch-name loading path rejects a state dict of another architecture, naming the keys
/// and shapes, and leaves the model untouched.
#[test]
fn fixture_state_dict_rejected_by_wrong_architecture() {
    let f = Fixture::load("rnn", "lstm_deep_bidir_h0");
    let mut params = TensorFile::new();
    for name in param_names(&f) {
        params.insert(name.as_str(), f.file.get(&name).unwrap().clone());
    }
    assert_eq!(params.len(), 16, "2 layers × 2 directions × 4 tensors");
    let mut rng = Rng::seed(5);

    // One layer instead of two: the 8 layer-1 tensors are unexpected, nothing is missing.
    let mut one_layer = Recurrent::<f32>::new(
        RecurrentConfig::new(CellKind::Lstm, 4, 6).bidirectional(true),
        &mut rng,
    )
    .unwrap();
    let before: Vec<_> = snapshot(&mut one_layer);
    let err = load_state_dict(&mut one_layer, &params, "lstm_deep_bidir_h0")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("lstm_deep_bidir_h0"), "{err}");
    assert!(err.contains("(1 problem)"), "{err}");
    assert!(!err.contains("missing keys"), "{err}");
    let unexpected = "unexpected keys: [\"bias_hh_l1\", \"bias_hh_l1_reverse\", \"bias_ih_l1\", \
        \"bias_ih_l1_reverse\", \"weight_hh_l1\", \"weight_hh_l1_reverse\", \"weight_ih_l1\", \
        \"weight_ih_l1_reverse\"]";
    assert!(err.contains(unexpected), "{err}");
    assert_eq!(
        snapshot(&mut one_layer),
        before,
        "model changed by a failed load"
    );

    // GRU of the same layout: same keys, 3 gates instead of 4 → 16 size mismatches.
    let mut gru = Recurrent::<f32>::new(
        RecurrentConfig::new(CellKind::Gru, 4, 6)
            .layers(2)
            .bidirectional(true),
        &mut rng,
    )
    .unwrap();
    let before = snapshot(&mut gru);
    let err = load_state_dict(&mut gru, &params, "lstm_deep_bidir_h0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("(16 problems)"), "{err}");
    assert_eq!(err.matches("size mismatch for ").count(), 16, "{err}");
    for line in [
        "size mismatch for weight_ih_l0: the file has (24, 4), the model expects (18, 4)",
        "size mismatch for weight_hh_l0_reverse: the file has (24, 6), the model expects (18, 6)",
        "size mismatch for weight_ih_l1: the file has (24, 12), the model expects (18, 12)",
        "size mismatch for bias_hh_l1_reverse: the file has (24), the model expects (18)",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(
        !err.contains("missing keys") && !err.contains("unexpected keys"),
        "{err}"
    );
    assert_eq!(snapshot(&mut gru), before, "model changed by a failed load");
}

fn snapshot(m: &mut dyn Module<f32>) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    m.visit_params(&mut |name, p| out.push((name.to_string(), p.value.iter().copied().collect())));
    out
}
