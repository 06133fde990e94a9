//! Parity with PyTorch for the optimizers and global-norm clipping: every fixture of
//! `tests/fixtures/optim/` (made by `tools/torch_ref/optim.py`) is replayed for its 10 steps in
//! f32, comparing the loss, the gradient norm and the parameters after every step.
//!
//! ```python
//! model = nn.Linear(4, 3)            # init.weight, init.bias
//! for k in range(1, 11):
//!     opt.zero_grad(); loss = F.mse_loss(model(x), y); loss.backward()
//!     total = clip_grad_norm_(model.parameters(), max_norm)   # step{k}.grad_norm, step{k}.loss
//!     opt.step()                                               # step{k}.weight, step{k}.bias
//! ```
//!
//! Tolerances (see `common`): loss and parameters `1e-6 + 1e-5·|torch|`, gradient norm
//! `1e-6 + 1e-4·|torch|`; `-- --nocapture` prints the worst errors.

mod common;

use std::collections::BTreeSet;

use common::{Checker, FORWARD, Fixture, GRAD, cases_in};
use ndarray::{Ix1, Ix2};
use skipgate::layers::Linear;
use skipgate::loss::mse_loss;
use skipgate::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig, clip_grad_norm};
use skipgate::{Mode, Module};

/// The optimizer the config describes.
fn optimizer(f: &Fixture) -> Box<dyn Optimizer<f32>> {
    let n = &f.name;
    // The fixtures use the plain single-tensor path, no maximize, no amsgrad.
    assert!(!f.cfg_bool("maximize"), "{n}: maximize");
    assert!(!f.cfg_bool("foreach"), "{n}: foreach");
    let lr = f.cfg_f64("lr");
    let weight_decay = f.cfg_f64("weight_decay");
    match f.cfg_str("optimizer") {
        "SGD" => Box::new(
            Sgd::new(SgdConfig {
                lr,
                momentum: f.cfg_f64("momentum"),
                dampening: f.cfg_f64("dampening"),
                weight_decay,
                nesterov: f.cfg_bool("nesterov"),
            })
            .unwrap_or_else(|e| panic!("{n}: {e}")),
        ),
        name @ ("Adam" | "AdamW") => {
            assert!(!f.cfg_bool("amsgrad"), "{n}: amsgrad");
            let betas = f.cfg("betas");
            let beta = |i: usize| {
                betas[i]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{n}: betas = {betas}"))
            };
            let cfg = AdamConfig {
                lr,
                betas: (beta(0), beta(1)),
                eps: f.cfg_f64("eps"),
                weight_decay,
            };
            let opt = if name == "Adam" {
                Adam::new(cfg)
            } else {
                Adam::adamw(cfg)
            };
            Box::new(opt.unwrap_or_else(|e| panic!("{n}: {e}")))
        }
        other => panic!("{n}: unknown optimizer {other:?}"),
    }
}

fn run(case: &str) -> Checker {
    let f = Fixture::load("optim", case);
    let n = f.name.as_str();
    let mut c = Checker::new(n);
    assert_eq!(f.cfg_f64("norm_type"), 2.0, "{n}: norm_type");
    assert_eq!(f.cfg_f64("clip_eps"), 1e-6, "{n}: clip_eps");
    let max_norm = f.cfg_f64("max_norm");
    let steps = f.cfg_usize("steps");

    let mut model = Linear::<f32>::from_weights(
        f.f32_nd::<Ix2>("init.weight"),
        Some(f.f32_nd::<Ix1>("init.bias")),
    )
    .unwrap_or_else(|e| panic!("{n}: {e}"));
    let mut opt = optimizer(&f);
    let x = f.f32_nd::<Ix2>("x");
    let y = f.f32_nd::<Ix2>("y");
    let mut clipped = BTreeSet::new();

    for k in 1..=steps {
        model.zero_grad();
        let pred = model
            .forward(x.view(), Mode::Train)
            .unwrap_or_else(|e| panic!("{n}: step {k}: forward: {e}"));
        let (loss, dpred) =
            mse_loss(pred.view(), y.view()).unwrap_or_else(|e| panic!("{n}: step {k}: {e}"));
        model
            .backward(dpred.view())
            .unwrap_or_else(|e| panic!("{n}: step {k}: backward: {e}"));
        let total = clip_grad_norm(&mut model, max_norm);
        if max_norm / (total + 1e-6) < 1.0 {
            clipped.insert(k as u64);
        }
        c.check_scalar(
            n,
            &format!("step{k}.loss"),
            loss,
            f.scalar(&format!("step{k}.loss")),
            FORWARD,
        );
        c.check_scalar(
            n,
            &format!("step{k}.grad_norm"),
            total as f32,
            f.scalar(&format!("step{k}.grad_norm")),
            GRAD,
        );
        opt.step(&mut model)
            .unwrap_or_else(|e| panic!("{n}: step {k}: optimizer: {e}"));
        for name in ["weight", "bias"] {
            let key = format!("step{k}.{name}");
            let want = f.f32(&key);
            let mut ours = None;
            model.visit_params(&mut |p, v| {
                if p == name {
                    ours = Some(v.value.to_owned());
                }
            });
            let ours = ours.unwrap_or_else(|| panic!("{n}: the model has no {name}"));
            c.check(n, &key, ours.view(), want.view(), FORWARD);
        }
    }

    // Clipping took effect on exactly the steps where it did in PyTorch (both branches of
    // clip_grad_norm are exercised by every case).
    let want: BTreeSet<u64> = f
        .cfg("clipped_steps")
        .as_array()
        .unwrap_or_else(|| panic!("{n}: clipped_steps"))
        .iter()
        .map(|v| v.as_u64().expect("step number"))
        .collect();
    if clipped != want {
        c.fail(
            n,
            format!("clipped steps: ours {clipped:?}, torch {want:?}"),
        );
    }
    assert!(
        !want.is_empty() && want.len() < steps,
        "{n}: clipping should be partial"
    );
    c
}

/// One named test per fixture, so a failure names its case.
macro_rules! parity_tests {
    ($($case:ident),* $(,)?) => {
        /// The cases with a named test (the summary test checks this is every file).
        const NAMED: &[&str] = &[$(stringify!($case)),*];
        mod optim {
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

parity_tests!(sgd_momentum, sgd_nesterov, adam, adamw);

/// Every `optim/*.safetensors` has a named test, and all cases pass together; prints the worst
/// errors per case and for the group (`-- --nocapture`).
#[test]
fn all_optim_fixtures_summary() {
    let files = cases_in("optim");
    assert_eq!(files, {
        let mut v: Vec<String> = NAMED.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    });
    let mut all = Checker::new("optim");
    for case in &files {
        all.absorb(run(case));
    }
    all.print_summary();
    all.finish();
}
