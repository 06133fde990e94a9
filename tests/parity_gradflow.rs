//! Parity with PyTorch for the gradient-flow probe: ‖∂L/∂h_t‖ at every step of a sequence
//! regressor whose MSE loss is taken at the last step (`tests/fixtures/gradflow/`, made by
//! `tools/torch_ref/gradflow.py`):
//! ```python
//! rnn, head = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 1)      # default init
//! # the same weights run step by step in nn.LSTMCell, every h_t.retain_grad()
//! F.mse_loss(head(h_T), y).backward()
//! step_grad_norm = torch.stack([h_t.grad.norm() for h_t in hs])    # (T,), T = 40
//! ```
//! The norms span up to 18 decades (the tanh RNN), so they are compared relatively only:
//! `|ours − torch| ≤ 1e-4·|torch|`, in f32 as PyTorch computed them and in f64 through
//! [`skipgate::diag::widen`] (which is then closer to PyTorch's f32 values than their rounding).

mod common;

use common::{Checker, FORWARD, Fixture, Kind, Tol, cases_in};
use ndarray::{Ix2, Ix3};
use skipgate::diag::{step_gradient_profile, widen};
use skipgate::io::{TensorFile, load_state_dict};
use skipgate::models::SeqRegressor;
use skipgate::rnn::{CellKind, RecurrentConfig, RecurrentInit};
use skipgate::{Mode, Rng};

/// Relative only: the values span many decades, an absolute floor would hide the small ones.
const NORMS: Tol = Tol {
    kind: Kind::Grad,
    atol: 0.0,
    rtol: 1e-4,
};

const CASES: [(&str, CellKind); 3] = [
    ("rnn_tanh", CellKind::Tanh),
    ("lstm", CellKind::Lstm),
    ("gru", CellKind::Gru),
];

fn model(f: &Fixture, kind: CellKind) -> SeqRegressor<f32> {
    let config = RecurrentConfig::new(kind, f.cfg_usize("input_size"), f.cfg_usize("hidden_size"));
    let mut m = SeqRegressor::new(config, &RecurrentInit::default(), 1, &mut Rng::seed(9)).unwrap();
    let mut weights = TensorFile::new();
    for name in f.file.names() {
        if name.starts_with("rnn.") || name.starts_with("head.") {
            weights.insert(name, f.file.get(name).unwrap().clone());
        }
    }
    load_state_dict(&mut m, &weights, &f.name).unwrap();
    m
}

#[test]
fn step_gradient_norms_match_pytorch_for_every_cell() {
    let mut names: Vec<&str> = CASES.iter().map(|(c, _)| *c).collect();
    names.sort_unstable();
    assert_eq!(
        cases_in("gradflow"),
        names,
        "a fixture without a test, or the reverse"
    );
    let mut c = Checker::new("gradflow");
    for (case, kind) in CASES {
        let f = Fixture::load("gradflow", case);
        let (x, y) = (f.f32_nd::<Ix3>("x"), f.f32_nd::<Ix2>("y"));
        let torch = f.f32("step_grad_norm");
        assert_eq!(torch.len(), f.cfg_usize("T"));

        let mut narrow = model(&f, kind);
        let mut rng = Rng::seed(0);
        let out = narrow
            .rnn
            .forward(skipgate::rnn::SeqInput::new(x.view()), Mode::Eval, &mut rng);
        c.check(
            case,
            "output",
            out.unwrap().output.view(),
            f.f32("output").view(),
            FORWARD,
        );
        let p32 = step_gradient_profile(&mut narrow, x.view(), y.view(), &mut rng).unwrap();
        let ours = ndarray::Array1::from(p32.norms.iter().map(|&v| v as f32).collect::<Vec<_>>());
        c.check(
            case,
            "step_grad_norm (f32)",
            ours.view(),
            torch.view(),
            NORMS,
        );

        let mut wide = widen(&mut narrow).unwrap();
        let (x64, y64) = (x.mapv(f64::from), y.mapv(f64::from));
        let p64 = step_gradient_profile(&mut wide, x64.view(), y64.view(), &mut rng).unwrap();
        let ours = ndarray::Array1::from(p64.norms.iter().map(|&v| v as f32).collect::<Vec<_>>());
        c.check(
            case,
            "step_grad_norm (f64)",
            ours.view(),
            torch.view(),
            NORMS,
        );
    }
    c.print_summary();
    c.finish();
}
