//! Optimizers, clipping and schedules against references computed in this file from the
//! textbook formulas (in f64, element by element), plus a few values worked out by hand.

use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2, array};
use skipgate::module::ParamVisitor;
use skipgate::optim::{
    Adam, AdamConfig, LrSchedule, Optimizer, OptimizerKind, OptimizerSpec, Schedule, Sgd,
    SgdConfig, build_optimizer, clip_grad_norm, grad_norm,
};
use skipgate::{Module, Param, Scalar};

// ---------------------------------------------------------------------------------------------
// A tiny two-parameter model: `layer.weight` (2, 2) and `bias` (2,).
//
// Its "loss" is L = Σ ½·c·p² + d·p per element, so the gradient is g = c·p + d: it depends on the
// current parameters, which makes multi-step runs exercise the whole update.

#[derive(Clone)]
struct Tiny<F: Scalar> {
    w: Param<F, Ix2>,
    b: Param<F, Ix1>,
}

const W0: [f64; 4] = [1.0, -0.5, 0.25, 2.0];
const B0: [f64; 2] = [0.3, -1.2];
// (c, d) of the loss for every element, weight then bias.
const C: [f64; 6] = [1.0, 2.0, 0.5, 1.5, 3.0, 0.8];
const D: [f64; 6] = [0.1, -0.3, 0.2, 0.0, -0.4, 0.05];

impl<F: Scalar> Tiny<F> {
    fn new() -> Self {
        let w = Array2::from_shape_vec((2, 2), W0.iter().map(|&v| F::of(v)).collect()).unwrap();
        let b = Array1::from_vec(B0.iter().map(|&v| F::of(v)).collect());
        Tiny {
            w: Param::new(w),
            b: Param::new(b),
        }
    }

    /// Sets grad = c·p + d (computed in f64, rounded to F).
    fn set_grads(&mut self) {
        let mut i = 0;
        self.visit_params(&mut |_, mut p| {
            for (g, v) in p.grad.iter_mut().zip(p.value.iter()) {
                *g = F::of(C[i] * v.f64() + D[i]);
                i += 1;
            }
        });
    }

    /// All parameter values, weight then bias, flattened and widened to f64.
    fn values(&mut self) -> Vec<f64> {
        let mut out = Vec::new();
        self.visit_params(&mut |_, p| out.extend(p.value.iter().map(|v| v.f64())));
        out
    }

    fn grads(&mut self) -> Vec<f64> {
        let mut out = Vec::new();
        self.visit_params(&mut |_, p| out.extend(p.grad.iter().map(|v| v.f64())));
        out
    }

    fn bits(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        self.visit_params(&mut |_, p| out.extend(p.value.iter().map(|v| v.f64().to_bits())));
        out
    }
}

impl<F: Scalar> Module<F> for Tiny<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        f("layer.weight", self.w.as_mut());
        f("bias", self.b.as_mut());
    }
}

/// A model whose single parameter can be renamed or reshaped between steps.
struct Morph {
    name: &'static str,
    p: Param<f64, ndarray::IxDyn>,
}

impl Module<f64> for Morph {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, f64>) {
        f(self.name, self.p.as_mut());
    }
}

fn initial() -> Vec<f64> {
    W0.iter().chain(B0.iter()).copied().collect()
}

fn grad_of(p: &[f64]) -> Vec<f64> {
    p.iter()
        .enumerate()
        .map(|(i, &v)| C[i] * v + D[i])
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs() / e.abs().max(1.0);
        assert!(
            err <= tol,
            "{what}[{i}]: got {a}, expected {e} (rel err {err:e})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// References from the formulas.

/// SGD as in the PyTorch documentation, element by element.
fn sgd_reference(cfg: SgdConfig, steps: usize) -> Vec<f64> {
    let mut p = initial();
    let mut buf: Option<Vec<f64>> = None;
    for _ in 0..steps {
        let g = grad_of(&p);
        let d: Vec<f64> = (0..p.len())
            .map(|i| g[i] + cfg.weight_decay * p[i])
            .collect();
        let dir: Vec<f64> = if cfg.momentum != 0.0 {
            let b: Vec<f64> = match &buf {
                None => d.clone(),
                Some(b) => (0..p.len())
                    .map(|i| cfg.momentum * b[i] + (1.0 - cfg.dampening) * d[i])
                    .collect(),
            };
            let dir = if cfg.nesterov {
                (0..p.len()).map(|i| d[i] + cfg.momentum * b[i]).collect()
            } else {
                b.clone()
            };
            buf = Some(b);
            dir
        } else {
            d
        };
        for i in 0..p.len() {
            p[i] -= cfg.lr * dir[i];
        }
    }
    p
}

/// Adam / AdamW from Kingma & Ba (bias-corrected moments m̂, v̂) and Loshchilov & Hutter.
fn adam_reference(cfg: AdamConfig, decoupled: bool, steps: usize) -> Vec<f64> {
    let (b1, b2) = cfg.betas;
    let mut p = initial();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for t in 1..=steps {
        let g0 = grad_of(&p);
        for i in 0..p.len() {
            let g = if decoupled {
                p[i] -= cfg.lr * cfg.weight_decay * p[i];
                g0[i]
            } else {
                g0[i] + cfg.weight_decay * p[i]
            };
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let m_hat = m[i] / (1.0 - b1.powi(t as i32));
            let v_hat = v[i] / (1.0 - b2.powi(t as i32));
            p[i] -= cfg.lr * m_hat / (v_hat.sqrt() + cfg.eps);
        }
    }
    p
}

fn run<F: Scalar>(opt: &mut dyn Optimizer<F>, model: &mut Tiny<F>, steps: usize) {
    for _ in 0..steps {
        model.set_grads();
        opt.step(model).unwrap();
    }
}

fn run_sgd(cfg: SgdConfig, steps: usize) -> Vec<f64> {
    let mut model = Tiny::<f64>::new();
    let mut opt = Sgd::new(cfg).unwrap();
    run(&mut opt, &mut model, steps);
    model.values()
}

// ---------------------------------------------------------------------------------------------
// SGD

#[test]
fn sgd_plain_matches_hand_values_and_reference() {
    let cfg = SgdConfig::with_lr(0.1);
    // By hand, element 0 (c = 1, d = 0.1): p = 1 − 0.1·1.1 = 0.89, then 0.89 − 0.1·0.99 = 0.791.
    let one = run_sgd(cfg, 1);
    assert!((one[0] - 0.89).abs() < 1e-15, "{}", one[0]);
    let two = run_sgd(cfg, 2);
    assert!((two[0] - 0.791).abs() < 1e-15, "{}", two[0]);
    assert_close(&run_sgd(cfg, 3), &sgd_reference(cfg, 3), 1e-14, "sgd");
}

#[test]
fn sgd_momentum_matches_hand_values_and_reference() {
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..SgdConfig::default()
    };
    // Element 3 (p = 2, c = 1.5, d = 0):
    //   g = 3,     b = 3,                 p = 2 − 0.3 = 1.7
    //   g = 2.55,  b = 2.7 + 2.55 = 5.25, p = 1.7 − 0.525 = 1.175
    //   g = 1.7625 b = 4.725 + 1.7625 = 6.4875, p = 1.175 − 0.64875 = 0.52625
    let p = run_sgd(cfg, 3);
    assert!((p[3] - 0.52625).abs() < 1e-14, "{}", p[3]);
    assert_close(&p, &sgd_reference(cfg, 3), 1e-14, "sgd momentum");
}

#[test]
fn sgd_dampening_matches_reference() {
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: 0.8,
        dampening: 0.3,
        ..SgdConfig::default()
    };
    // Element 3 (p = 2, g = 1.5·p): step 1 uses b = g (no dampening on the first step).
    //   g = 3, b = 3, p = 2 − 0.15 = 1.85
    //   g = 2.775, b = 2.4 + 0.7·2.775 = 4.3425, p = 1.85 − 0.217125 = 1.632875
    let p = run_sgd(cfg, 2);
    assert!((p[3] - 1.632875).abs() < 1e-14, "{}", p[3]);
    assert_close(
        &run_sgd(cfg, 3),
        &sgd_reference(cfg, 3),
        1e-14,
        "sgd dampening",
    );
}

#[test]
fn sgd_nesterov_matches_reference() {
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        ..SgdConfig::default()
    };
    // Element 3: g = 3, b = 3, d = 3 + 2.7 = 5.7, p = 2 − 0.57 = 1.43.
    let p = run_sgd(cfg, 1);
    assert!((p[3] - 1.43).abs() < 1e-14, "{}", p[3]);
    assert_close(
        &run_sgd(cfg, 3),
        &sgd_reference(cfg, 3),
        1e-14,
        "sgd nesterov",
    );
}

#[test]
fn sgd_weight_decay_matches_reference() {
    let cfg = SgdConfig {
        lr: 0.1,
        weight_decay: 0.5,
        momentum: 0.9,
        ..SgdConfig::default()
    };
    // Element 3: d = 3 + 0.5·2 = 4, b = 4, p = 2 − 0.4 = 1.6.
    let p = run_sgd(cfg, 1);
    assert!((p[3] - 1.6).abs() < 1e-14, "{}", p[3]);
    assert_close(
        &run_sgd(cfg, 3),
        &sgd_reference(cfg, 3),
        1e-14,
        "sgd weight decay",
    );
    let plain = SgdConfig {
        momentum: 0.0,
        ..cfg
    };
    assert_close(
        &run_sgd(plain, 3),
        &sgd_reference(plain, 3),
        1e-14,
        "sgd wd, no momentum",
    );
}

#[test]
fn sgd_does_not_touch_grads() {
    let mut model = Tiny::<f64>::new();
    model.set_grads();
    let before = model.grads();
    let mut opt = Sgd::new(SgdConfig::with_lr(0.1)).unwrap();
    opt.step(&mut model).unwrap();
    assert_eq!(model.grads(), before);
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW

fn run_adam(cfg: AdamConfig, decoupled: bool, steps: usize) -> Vec<f64> {
    let mut model = Tiny::<f64>::new();
    let mut opt = if decoupled {
        Adam::adamw(cfg).unwrap()
    } else {
        Adam::new(cfg).unwrap()
    };
    run(&mut opt, &mut model, steps);
    model.values()
}

#[test]
fn adam_first_step_moves_each_param_by_lr_times_sign() {
    // At t = 1, m̂ = g and v̂ = g², so the step is lr·g/(|g| + ε).
    let cfg = AdamConfig {
        lr: 0.01,
        ..AdamConfig::default()
    };
    let p = run_adam(cfg, false, 1);
    let g = grad_of(&initial());
    let expected: Vec<f64> = initial()
        .iter()
        .zip(&g)
        .map(|(p, g)| p - 0.01 * g / (g.abs() + 1e-8))
        .collect();
    assert_close(&p, &expected, 1e-14, "adam step 1");
    // Element 0 by hand: g = 1.1 > 0, so p ≈ 1 − 0.01.
    assert!((p[0] - 0.99).abs() < 1e-9, "{}", p[0]);
}

#[test]
fn adam_matches_reference() {
    let cfg = AdamConfig {
        lr: 0.05,
        betas: (0.8, 0.9),
        eps: 1e-3,
        weight_decay: 0.0,
    };
    assert_close(
        &run_adam(cfg, false, 3),
        &adam_reference(cfg, false, 3),
        1e-13,
        "adam",
    );
    // β₁ < 0.5 takes lerp's other branch (weight 1 − β₁ ≥ 0.5).
    let low_beta = AdamConfig {
        betas: (0.3, 0.6),
        ..cfg
    };
    assert_close(
        &run_adam(low_beta, false, 3),
        &adam_reference(low_beta, false, 3),
        1e-13,
        "adam low beta1",
    );
    assert_close(
        &run_adam(AdamConfig::default(), false, 3),
        &adam_reference(AdamConfig::default(), false, 3),
        1e-13,
        "adam defaults",
    );
}

#[test]
fn adam_l2_weight_decay_matches_reference() {
    let cfg = AdamConfig {
        lr: 0.05,
        betas: (0.8, 0.9),
        eps: 1e-3,
        weight_decay: 0.3,
    };
    let p = run_adam(cfg, false, 3);
    assert_close(&p, &adam_reference(cfg, false, 3), 1e-13, "adam l2");
    // L2 changes the result (it is not silently ignored).
    let no_wd = adam_reference(
        AdamConfig {
            weight_decay: 0.0,
            ..cfg
        },
        false,
        3,
    );
    assert!(max_diff(&p, &no_wd) > 1e-4, "{}", max_diff(&p, &no_wd));
}

#[test]
fn adamw_matches_reference() {
    let cfg = AdamConfig {
        lr: 0.05,
        betas: (0.8, 0.9),
        eps: 1e-3,
        weight_decay: 0.3,
    };
    let p = run_adam(cfg, true, 3);
    assert_close(&p, &adam_reference(cfg, true, 3), 1e-13, "adamw");
    // Decoupled and L2 decay differ.
    let l2 = adam_reference(cfg, false, 3);
    assert!(max_diff(&p, &l2) > 1e-4, "{}", max_diff(&p, &l2));
    // AdamW with λ = 0 is Adam.
    let cfg0 = AdamConfig {
        weight_decay: 0.0,
        ..cfg
    };
    assert_eq!(run_adam(cfg0, true, 3), run_adam(cfg0, false, 3));
}

#[test]
fn adam_f32_agrees_with_f64_reference() {
    let cfg = AdamConfig {
        lr: 0.05,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    for decoupled in [false, true] {
        let mut model = Tiny::<f32>::new();
        let mut opt = if decoupled {
            Adam::<f32>::adamw(cfg).unwrap()
        } else {
            Adam::<f32>::new(cfg).unwrap()
        };
        run(&mut opt, &mut model, 3);
        assert_close(
            &model.values(),
            &adam_reference(cfg, decoupled, 3),
            2e-6,
            "adam f32",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Learning rate

#[test]
fn set_lr_changes_the_next_step() {
    let mut model = Tiny::<f64>::new();
    let mut opt = Sgd::new(SgdConfig::with_lr(0.1)).unwrap();
    assert_eq!(opt.lr(), 0.1);
    opt.set_lr(0.5);
    assert_eq!(opt.lr(), 0.5);
    model.set_grads();
    opt.step(&mut model).unwrap();
    // Element 0: 1 − 0.5·1.1 = 0.45.
    assert!((model.values()[0] - 0.45).abs() < 1e-15);
}

// ---------------------------------------------------------------------------------------------
// State round trip

fn round_trip<F: Scalar>(make: impl Fn() -> Box<dyn Optimizer<F>>) -> Vec<String> {
    let mut a = Tiny::<F>::new();
    let mut opt_a = make();
    run(opt_a.as_mut(), &mut a, 3);
    let saved = opt_a.state_tensors();
    let names: Vec<String> = saved.iter().map(|(n, _)| n.clone()).collect();

    let mut b = a.clone();
    let mut opt_b = make();
    opt_b.load_state_tensors(saved).unwrap();
    run(opt_a.as_mut(), &mut a, 3);
    run(opt_b.as_mut(), &mut b, 3);
    assert_eq!(a.bits(), b.bits(), "{}: resumed run differs", opt_a.name());
    // The state itself also agrees after the resumed steps.
    let (sa, sb) = (opt_a.state_tensors(), opt_b.state_tensors());
    assert_eq!(sa.len(), sb.len());
    for ((na, ta), (nb, tb)) in sa.iter().zip(&sb) {
        assert_eq!(na, nb);
        assert_eq!(ta, tb, "{na}");
    }
    names
}

#[test]
fn sgd_state_round_trip_is_bit_exact() {
    let names = round_trip::<f32>(|| {
        Box::new(
            Sgd::new(SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.01,
                ..SgdConfig::default()
            })
            .unwrap(),
        )
    });
    assert_eq!(
        names,
        ["momentum_buffer.bias", "momentum_buffer.layer.weight"]
    );
    // Without momentum there is no state at all.
    let names = round_trip::<f32>(|| Box::new(Sgd::new(SgdConfig::with_lr(0.1)).unwrap()));
    assert!(names.is_empty());
}

#[test]
fn adam_state_round_trip_is_bit_exact() {
    let cfg = AdamConfig {
        lr: 0.05,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    let expected = [
        "exp_avg.bias",
        "exp_avg.layer.weight",
        "exp_avg_sq.bias",
        "exp_avg_sq.layer.weight",
        "step.bias",
        "step.layer.weight",
    ];
    assert_eq!(
        round_trip::<f32>(|| Box::new(Adam::new(cfg).unwrap())),
        expected
    );
    assert_eq!(
        round_trip::<f32>(|| Box::new(Adam::adamw(cfg).unwrap())),
        expected
    );
    assert_eq!(
        round_trip::<f64>(|| Box::new(Adam::adamw(cfg).unwrap())),
        expected
    );
}

#[test]
fn adam_state_tensors_hold_step_and_moments() {
    let cfg = AdamConfig {
        lr: 0.05,
        betas: (0.8, 0.9),
        ..AdamConfig::default()
    };
    let mut model = Tiny::<f64>::new();
    let mut opt = Adam::new(cfg).unwrap();
    run(&mut opt, &mut model, 2);
    let state = opt.state_tensors();
    let get = |n: &str| state.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(get("step.bias"), ArrayD::from_elem(vec![], 2.0));
    assert_eq!(get("exp_avg.layer.weight").shape(), &[2, 2]);
    // bias element 0 (p = 0.3, c = 3, d = −0.4): g₁ = 0.5, m₁ = 0.2·0.5 = 0.1.
    let p1 = run_adam(cfg, false, 1)[4];
    let g2 = 3.0 * p1 - 0.4;
    let m2 = 0.8 * 0.1 + 0.2 * g2;
    let v2 = 0.9 * (0.1 * 0.25) + 0.1 * g2 * g2;
    assert!((get("exp_avg.bias")[[0]] - m2).abs() < 1e-15);
    assert!((get("exp_avg_sq.bias")[[0]] - v2).abs() < 1e-15);
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn invalid_sgd_configs_are_rejected() {
    let err = |cfg: SgdConfig| Sgd::<f32>::new(cfg).unwrap_err().to_string();
    let e = err(SgdConfig::with_lr(-0.1));
    assert!(
        e.contains("Sgd::new: invalid lr: -0.1 is outside [0, ∞)"),
        "{e}"
    );
    let e = err(SgdConfig {
        nesterov: true,
        ..SgdConfig::with_lr(0.1)
    });
    assert!(
        e.contains("invalid nesterov") && e.contains("momentum > 0"),
        "{e}"
    );
    let e = err(SgdConfig {
        nesterov: true,
        momentum: 0.9,
        dampening: 0.1,
        ..SgdConfig::with_lr(0.1)
    });
    assert!(
        e.contains("dampening = 0") && e.contains("dampening 0.1"),
        "{e}"
    );
    let e = err(SgdConfig {
        momentum: -0.5,
        ..SgdConfig::with_lr(0.1)
    });
    assert!(e.contains("invalid momentum"), "{e}");
    let e = err(SgdConfig {
        weight_decay: f64::NAN,
        ..SgdConfig::with_lr(0.1)
    });
    assert!(e.contains("invalid weight_decay"), "{e}");
}

#[test]
fn invalid_adam_configs_are_rejected() {
    let err = |cfg: AdamConfig| Adam::<f32>::new(cfg).unwrap_err().to_string();
    let e = err(AdamConfig {
        betas: (1.0, 0.999),
        ..AdamConfig::default()
    });
    assert!(
        e.contains("Adam::new: invalid beta1: 1 is outside [0, 1)"),
        "{e}"
    );
    let e = err(AdamConfig {
        betas: (0.9, -0.1),
        ..AdamConfig::default()
    });
    assert!(e.contains("invalid beta2"), "{e}");
    let e = err(AdamConfig {
        eps: -1e-8,
        ..AdamConfig::default()
    });
    assert!(e.contains("invalid eps"), "{e}");
    let e = Adam::<f32>::adamw(AdamConfig {
        lr: -1.0,
        ..AdamConfig::adamw_default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("AdamW::new: invalid lr"), "{e}");
}

#[test]
fn state_with_unknown_prefix_is_rejected() {
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let e = opt
        .load_state_tensors(vec![(
            "momentum_buffer.bias".into(),
            ArrayD::zeros(vec![2]),
        )])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown prefix 'momentum_buffer'"), "{e}");
    assert!(e.contains("exp_avg.<param>"), "{e}");

    let mut sgd = Sgd::<f64>::new(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::with_lr(0.1)
    })
    .unwrap();
    let e = sgd
        .load_state_tensors(vec![("exp_avg.bias".into(), ArrayD::zeros(vec![2]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown prefix 'exp_avg'"), "{e}");
    let e = sgd
        .load_state_tensors(vec![("bias".into(), ArrayD::zeros(vec![2]))])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("state tensor 'bias'") && e.contains("momentum_buffer.<param>"),
        "{e}"
    );

    // A momentum-free SGD keeps no buffers and refuses them.
    let mut plain = Sgd::<f64>::new(SgdConfig::with_lr(0.1)).unwrap();
    let e = plain
        .load_state_tensors(vec![(
            "momentum_buffer.bias".into(),
            ArrayD::zeros(vec![2]),
        )])
        .unwrap_err()
        .to_string();
    assert!(e.contains("momentum 0"), "{e}");
}

#[test]
fn incomplete_or_malformed_adam_state_is_rejected() {
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let z = |s: &[usize]| ArrayD::<f64>::zeros(s.to_vec());
    let e = opt
        .load_state_tensors(vec![
            ("exp_avg.bias".into(), z(&[2])),
            ("step.bias".into(), ArrayD::from_elem(vec![], 1.0)),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("state tensor 'exp_avg_sq.bias': is missing"),
        "{e}"
    );
    let e = opt
        .load_state_tensors(vec![
            ("exp_avg.bias".into(), z(&[2])),
            ("exp_avg_sq.bias".into(), z(&[3])),
            ("step.bias".into(), ArrayD::from_elem(vec![], 1.0)),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exp_avg_sq.bias") && e.contains("expected (2), got (3)"),
        "{e}"
    );
    let e = opt
        .load_state_tensors(vec![("step.bias".into(), ArrayD::from_elem(vec![1], 1.0))])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'step.bias'") && e.contains("expected (), got (1)"),
        "{e}"
    );
    let e = opt
        .load_state_tensors(vec![("step.bias".into(), ArrayD::from_elem(vec![], 2.5))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-negative integer, got 2.5"), "{e}");
    let e = opt
        .load_state_tensors(vec![
            ("exp_avg.bias".into(), z(&[2])),
            ("exp_avg.bias".into(), z(&[2])),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'exp_avg.bias'") && e.contains("appears twice"),
        "{e}"
    );
}

#[test]
fn loaded_state_with_wrong_shape_or_names_fails_at_step() {
    let cfg = AdamConfig::default();
    let full = |bias_len: usize, bias_name: &str| {
        vec![
            (
                "exp_avg.layer.weight".to_string(),
                ArrayD::zeros(vec![2, 2]),
            ),
            (
                "exp_avg_sq.layer.weight".to_string(),
                ArrayD::zeros(vec![2, 2]),
            ),
            (
                "step.layer.weight".to_string(),
                ArrayD::from_elem(vec![], 1.0),
            ),
            (
                format!("exp_avg.{bias_name}"),
                ArrayD::zeros(vec![bias_len]),
            ),
            (
                format!("exp_avg_sq.{bias_name}"),
                ArrayD::zeros(vec![bias_len]),
            ),
            (format!("step.{bias_name}"), ArrayD::from_elem(vec![], 1.0)),
        ]
    };
    let mut model = Tiny::<f64>::new();
    model.set_grads();
    let before = model.values();

    let mut opt = Adam::<f64>::new(cfg).unwrap();
    opt.load_state_tensors(full(3, "bias")).unwrap();
    let e = opt.step(&mut model).unwrap_err().to_string();
    assert!(
        e.contains("Adam::step: parameter 'bias'") && e.contains("expected (3), got (2)"),
        "{e}"
    );
    // Nothing was updated, not even the parameter visited before the bad one.
    assert_eq!(model.values(), before);

    opt.load_state_tensors(full(2, "head.bias")).unwrap();
    let e = opt.step(&mut model).unwrap_err().to_string();
    assert!(
        e.contains("parameter 'bias'") && e.contains("has no optimizer state"),
        "{e}"
    );
    assert_eq!(model.values(), before);

    // State for a parameter the model does not have.
    let mut extra = full(2, "bias");
    extra.push(("exp_avg.head.bias".into(), ArrayD::zeros(vec![1])));
    extra.push(("exp_avg_sq.head.bias".into(), ArrayD::zeros(vec![1])));
    extra.push(("step.head.bias".into(), ArrayD::from_elem(vec![], 1.0)));
    opt.load_state_tensors(extra).unwrap();
    let e = opt.step(&mut model).unwrap_err().to_string();
    assert!(
        e.contains("optimizer state for 'head.bias'") && e.contains("no parameter"),
        "{e}"
    );

    // The correct state works.
    opt.load_state_tensors(full(2, "bias")).unwrap();
    opt.step(&mut model).unwrap();
}

#[test]
fn parameter_shape_or_name_change_between_steps_is_an_error() {
    let make = || Morph {
        name: "w",
        p: Param::new(ArrayD::from_elem(vec![2], 1.0)),
    };
    let mut optimizers: Vec<Box<dyn Optimizer<f64>>> = vec![
        Box::new(Sgd::new(SgdConfig::with_lr(0.1)).unwrap()),
        Box::new(
            Sgd::new(SgdConfig {
                momentum: 0.9,
                ..SgdConfig::with_lr(0.1)
            })
            .unwrap(),
        ),
        Box::new(Adam::new(AdamConfig::default()).unwrap()),
        Box::new(Adam::adamw(AdamConfig::adamw_default()).unwrap()),
    ];
    for opt in optimizers.iter_mut() {
        let mut m = make();
        m.p.grad.fill(0.5);
        opt.step(&mut m).unwrap();
        m.p = Param::new(ArrayD::from_elem(vec![3], 1.0));
        let e = opt.step(&mut m).unwrap_err().to_string();
        assert!(e.contains("::step: parameter 'w'"), "{}: {e}", opt.name());
        assert!(e.contains("expected (2), got (3)"), "{}: {e}", opt.name());
        assert!(m.p.value.iter().all(|&v| v == 1.0));

        m.p = Param::new(ArrayD::from_elem(vec![2], 1.0));
        m.name = "v";
        let e = opt.step(&mut m).unwrap_err().to_string();
        assert!(
            e.contains("parameter 'v'") && e.contains("has no optimizer state"),
            "{e}"
        );
    }
}

#[test]
fn grad_shape_mismatch_is_an_error() {
    let mut m = Morph {
        name: "w",
        p: Param::new(ArrayD::from_elem(vec![2], 1.0)),
    };
    m.p.grad = ArrayD::zeros(vec![4]);
    let mut opt = Adam::<f64>::new(AdamConfig::default()).unwrap();
    let e = opt.step(&mut m).unwrap_err().to_string();
    assert!(
        e.contains("grad of parameter 'w' expected (2), got (4)"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Clipping

fn clip_model<F: Scalar>() -> Tiny<F> {
    // weight grad [[3, 0], [0, 4]] (norm 5), bias grad [12, 0] (norm 12): total √(25 + 144) = 13.
    let mut m = Tiny::<F>::new();
    m.w.grad = array![[3.0, 0.0], [0.0, 4.0]].mapv(F::of);
    m.b.grad = array![12.0, 0.0].mapv(F::of);
    m
}

#[test]
fn clip_scales_all_grads_by_the_global_coefficient() {
    let mut m = clip_model::<f64>();
    assert_eq!(grad_norm(&mut m), 13.0);
    assert_eq!(m.grads(), [3.0, 0.0, 0.0, 4.0, 12.0, 0.0]);

    let total = clip_grad_norm(&mut m, 6.5);
    assert_eq!(total, 13.0);
    let coef = 6.5 / (13.0 + 1e-6);
    let expected: Vec<f64> = [3.0, 0.0, 0.0, 4.0, 12.0, 0.0]
        .iter()
        .map(|g| g * coef)
        .collect();
    assert_close(&m.grads(), &expected, 1e-15, "clipped grads");
    // The clipped norm is max_norm (up to the 1e-6 guard).
    assert!((grad_norm(&mut m) - 6.5).abs() < 1e-6);
}

#[test]
fn clip_is_a_no_op_under_the_limit() {
    let mut m = clip_model::<f32>();
    let total = clip_grad_norm(&mut m, 13.5);
    assert_eq!(total, 13.0);
    assert_eq!(m.grads(), [3.0, 0.0, 0.0, 4.0, 12.0, 0.0]);
    // A negative or NaN max_norm never flips or poisons the grads; 0 zeroes them.
    assert_eq!(clip_grad_norm(&mut m, -1.0), 13.0);
    assert_eq!(clip_grad_norm(&mut m, f64::NAN), 13.0);
    assert_eq!(m.grads(), [3.0, 0.0, 0.0, 4.0, 12.0, 0.0]);
    clip_grad_norm(&mut m, 0.0);
    assert_eq!(m.grads(), [0.0; 6]);
}

#[test]
fn clip_f32_matches_f64() {
    let mut m = clip_model::<f32>();
    assert_eq!(clip_grad_norm(&mut m, 1.0), 13.0);
    let expected: Vec<f64> = [3.0, 0.0, 0.0, 4.0, 12.0, 0.0]
        .iter()
        .map(|g| g / 13.0)
        .collect();
    assert_close(&m.grads(), &expected, 1e-6, "f32 clip");
}

#[test]
fn clip_leaves_non_finite_grads_untouched() {
    let mut m = clip_model::<f64>();
    m.b.grad[[1]] = f64::NAN;
    let total = clip_grad_norm(&mut m, 1.0);
    assert!(total.is_nan(), "{total}");
    assert_eq!(&m.grads()[..5], [3.0, 0.0, 0.0, 4.0, 12.0]);

    let mut m = clip_model::<f64>();
    m.w.grad[[0, 1]] = f64::INFINITY;
    assert_eq!(clip_grad_norm(&mut m, 1.0), f64::INFINITY);
    assert_eq!(m.grads()[0], 3.0);
}

// ---------------------------------------------------------------------------------------------
// Schedules

#[test]
fn constant_and_step_schedules() {
    assert_eq!(Schedule::Constant.lr_at(0.1, 12345), 0.1);
    let s = Schedule::Step {
        step_size: 1000,
        gamma: 0.5,
    };
    assert_eq!(s.lr_at(0.1, 0), 0.1);
    assert_eq!(s.lr_at(0.1, 999), 0.1);
    assert_eq!(s.lr_at(0.1, 1000), 0.05);
    assert_eq!(s.lr_at(0.1, 2500), 0.025);
}

#[test]
fn cosine_schedule() {
    let s = Schedule::Cosine {
        total_steps: 100,
        min_lr: 0.1,
    };
    assert_eq!(s.lr_at(1.0, 0), 1.0);
    assert!((s.lr_at(1.0, 50) - 0.55).abs() < 1e-15);
    let quarter = 0.1 + 0.9 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
    assert!((s.lr_at(1.0, 25) - quarter).abs() < 1e-15);
    assert_eq!(s.lr_at(1.0, 100), 0.1);
    assert_eq!(s.lr_at(1.0, 150), 0.1);
}

#[test]
fn warmup_multiplies_the_schedule() {
    let w = LrSchedule::new(Schedule::Constant, 4);
    assert_eq!(w.lr_at(0.8, 0), 0.2);
    assert_eq!(w.lr_at(0.8, 1), 0.4);
    assert_eq!(w.lr_at(0.8, 3), 0.8);
    assert_eq!(w.lr_at(0.8, 4), 0.8);
    assert_eq!(w.lr_at(0.8, 100), 0.8);

    // The cosine counts from step 0, warm-up or not.
    let c = LrSchedule::new(
        Schedule::Cosine {
            total_steps: 10,
            min_lr: 0.0,
        },
        2,
    );
    let cos = |t: f64| (1.0 + (std::f64::consts::PI * t / 10.0).cos()) / 2.0;
    assert_eq!(c.lr_at(1.0, 0), 0.5);
    assert!((c.lr_at(1.0, 1) - cos(1.0)).abs() < 1e-15);
    assert!((c.lr_at(1.0, 5) - 0.5).abs() < 1e-15);
    assert_eq!(c.lr_at(1.0, 10), 0.0);
    assert_eq!(LrSchedule::constant().lr_at(0.3, 0), 0.3);
    assert_eq!(LrSchedule::from(Schedule::Constant).warmup_steps, 0);
}

#[test]
fn schedule_parsing() {
    assert_eq!(Schedule::parse("constant", 10).unwrap(), Schedule::Constant);
    assert_eq!(
        Schedule::parse("step:1000:0.5", 10).unwrap(),
        Schedule::Step {
            step_size: 1000,
            gamma: 0.5
        }
    );
    assert_eq!(
        Schedule::parse("cosine", 500).unwrap(),
        Schedule::Cosine {
            total_steps: 500,
            min_lr: 0.0
        }
    );
    assert_eq!(
        Schedule::parse("cosine:1e-5", 500).unwrap(),
        Schedule::Cosine {
            total_steps: 500,
            min_lr: 1e-5
        }
    );
    let explicit = Schedule::parse("cosine:0.001:200", 500).unwrap();
    assert_eq!(
        explicit,
        Schedule::Cosine {
            total_steps: 200,
            min_lr: 0.001
        }
    );
    for s in [
        explicit,
        Schedule::parse("step:7:0.25", 1).unwrap(),
        Schedule::Constant,
    ] {
        assert_eq!(Schedule::parse(&s.to_string(), 1).unwrap(), s);
    }

    let err = |s: &str, total: u64| Schedule::parse(s, total).unwrap_err().to_string();
    let e = err("linear", 10);
    assert!(
        e.contains("unknown schedule 'linear'") && e.contains("step:<step_size>:<gamma>"),
        "{e}"
    );
    let e = err("step:10", 10);
    assert!(
        e.contains("schedule 'step:10'") && e.contains("wrong number of ':' fields"),
        "{e}"
    );
    let e = err("step:0:0.5", 10);
    assert!(e.contains("step_size") && e.contains("> 0"), "{e}");
    let e = err("step:10:abc", 10);
    assert!(e.contains("gamma 'abc' is not a number"), "{e}");
    let e = err("step:10:-1", 10);
    assert!(e.contains("gamma") && e.contains("got -1"), "{e}");
    let e = err("cosine", 0);
    assert!(e.contains("total_steps") && e.contains("> 0"), "{e}");
    let e = err("cosine:-0.1", 10);
    assert!(e.contains("min_lr") && e.contains("got -0.1"), "{e}");
    let e = err("", 10);
    assert!(e.contains("unknown schedule ''"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Building from a spec

#[test]
fn optimizer_kind_parsing() {
    assert_eq!("sgd".parse::<OptimizerKind>().unwrap(), OptimizerKind::Sgd);
    assert_eq!(
        "Adam".parse::<OptimizerKind>().unwrap(),
        OptimizerKind::Adam
    );
    assert_eq!(
        "adamw".parse::<OptimizerKind>().unwrap(),
        OptimizerKind::AdamW
    );
    assert_eq!(OptimizerKind::AdamW.to_string(), "adamw");
    let e = "rmsprop".parse::<OptimizerKind>().unwrap_err().to_string();
    assert!(
        e.contains("name 'rmsprop'") && e.contains("sgd, adam, adamw"),
        "{e}"
    );
}

#[test]
fn build_optimizer_matches_direct_construction() {
    let spec = OptimizerSpec {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
        ..OptimizerSpec::new(OptimizerKind::Sgd, 0.1)
    };
    let mut built = build_optimizer::<f64>(&spec).unwrap();
    assert_eq!(built.name(), "sgd");
    assert_eq!(built.lr(), 0.1);
    let mut direct = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
        dampening: 0.0,
    })
    .unwrap();
    let (mut a, mut b) = (Tiny::<f64>::new(), Tiny::<f64>::new());
    run(built.as_mut(), &mut a, 3);
    run(&mut direct, &mut b, 3);
    assert_eq!(a.bits(), b.bits());

    let adamw = OptimizerSpec::new(OptimizerKind::AdamW, 0.05);
    assert_eq!(adamw.weight_decay, 0.01);
    let mut built = build_optimizer::<f64>(&adamw).unwrap();
    assert_eq!(built.name(), "adamw");
    let mut direct = Adam::adamw(AdamConfig {
        lr: 0.05,
        ..AdamConfig::adamw_default()
    })
    .unwrap();
    let (mut a, mut b) = (Tiny::<f64>::new(), Tiny::<f64>::new());
    run(built.as_mut(), &mut a, 3);
    run(&mut direct, &mut b, 3);
    assert_eq!(a.bits(), b.bits());

    let adam = OptimizerSpec::new(OptimizerKind::Adam, 1e-3);
    assert_eq!(adam.weight_decay, 0.0);
    assert_eq!(build_optimizer::<f32>(&adam).unwrap().name(), "adam");
}

#[test]
fn build_optimizer_rejects_bad_specs() {
    let e = build_optimizer::<f32>(&OptimizerSpec {
        momentum: 0.9,
        ..OptimizerSpec::new(OptimizerKind::Adam, 1e-3)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("apply to sgd only, not to adam"), "{e}");
    let e = build_optimizer::<f32>(&OptimizerSpec {
        nesterov: true,
        ..OptimizerSpec::new(OptimizerKind::Sgd, 0.1)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("Sgd::new: invalid nesterov"), "{e}");
    let e = build_optimizer::<f32>(&OptimizerSpec::new(OptimizerKind::AdamW, -1.0))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("AdamW::new: invalid lr"), "{e}");
}
