//! BatchNorm2d: finite-difference gradient checks (f64, train mode), values against hand
//! computation and independent formulas, running statistics, eval mode, and error messages.
//!
//! Gradients are checked with the scalar `L = Σ y ⊙ g` for a random upstream gradient `g`.

mod common;

use ndarray::{Array1, Array4, ArrayD, Axis, Ix4, array};
use skipgate::gradcheck::{EPS, assert_close, check_params, numeric_grad};
use skipgate::layers::{BatchNorm2d, BatchNormConfig};
use skipgate::{Error, Mode, Module, Rng, init};

const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-8;

/// U(−1, 1) noise plus a per-channel offset `3·(c + 1)·(−1)^c`, so batch means are far from 0.
fn input(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f64> {
    let mut x: Array4<f64> = init::uniform(shape, 1.0, &mut Rng::seed(seed));
    for (c, mut xc) in x.axis_iter_mut(Axis(1)).enumerate() {
        let off = 3.0 * (c as f64 + 1.0) * if c % 2 == 0 { 1.0 } else { -1.0 };
        xc += off;
    }
    x
}

fn dot(a: &Array4<f64>, b: &Array4<f64>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// A layer with non-trivial γ (one negative) and β.
fn layer(c: usize, seed: u64) -> BatchNorm2d<f64> {
    layer_cfg(BatchNormConfig::new(c), seed)
}

fn layer_cfg(cfg: BatchNormConfig, seed: u64) -> BatchNorm2d<f64> {
    let mut bn = BatchNorm2d::new(cfg).unwrap();
    let mut rng = Rng::seed(seed);
    let w = bn.weight.as_mut().unwrap();
    for (k, v) in w.value.iter_mut().enumerate() {
        *v = (0.5 + rng.uniform()) * if k == 1 { -1.0 } else { 1.0 };
    }
    for v in bn.bias.as_mut().unwrap().value.iter_mut() {
        *v = rng.uniform() - 0.5;
    }
    bn
}

/// Per-channel (mean, biased variance) over (N, H, W), by plain loops.
fn batch_stats(x: &Array4<f64>) -> Vec<(f64, f64)> {
    let (n, c, h, w) = x.dim();
    let count = (n * h * w) as f64;
    (0..c)
        .map(|k| {
            let mut s = 0.0;
            for i in 0..n {
                for a in 0..h {
                    for b in 0..w {
                        s += x[[i, k, a, b]];
                    }
                }
            }
            let mean = s / count;
            let mut q = 0.0;
            for i in 0..n {
                for a in 0..h {
                    for b in 0..w {
                        q += (x[[i, k, a, b]] - mean).powi(2);
                    }
                }
            }
            (mean, q / count)
        })
        .collect()
}

// ---------------------------------------------------------------- finite differences

fn check_gradients(shape: (usize, usize, usize, usize), affine: bool) {
    let c = shape.1;
    let mut bn = if affine {
        layer(c, 11)
    } else {
        BatchNorm2d::new(BatchNormConfig::new(c).with_affine(false)).unwrap()
    };
    let x = input(shape, 12);
    let g: Array4<f64> = init::uniform(shape, 1.0, &mut Rng::seed(13));

    let y = bn.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(y.dim(), shape);
    let dx = bn.backward(g.view()).unwrap();
    let num = numeric_grad(&x.clone().into_dyn(), EPS, |xp| {
        let xp = xp.view().into_dimensionality::<Ix4>().unwrap();
        dot(&bn.forward(xp, Mode::Train).unwrap(), &g)
    });
    assert_close("∂L/∂x", dx.view().into_dyn(), num.view(), RTOL, ATOL);

    if affine {
        check_params(&mut bn, RTOL, ATOL, |m| {
            m.zero_grad();
            let y = m.forward(x.view(), Mode::Train).unwrap();
            m.backward(g.view()).unwrap();
            dot(&y, &g)
        });
    } else {
        assert_eq!(bn.num_params(), 0);
    }
}

#[test]
fn gradients_match_finite_differences_n3_c2_3x3() {
    check_gradients((3, 2, 3, 3), true);
}

#[test]
fn gradients_match_finite_differences_n4_c2_1x1() {
    // n = N·H·W = 4 values per channel: the mean and variance terms of ∂L/∂x are large.
    check_gradients((4, 2, 1, 1), true);
}

#[test]
fn gradients_match_finite_differences_n2_c3_1x1() {
    // The smallest batch allowed in train mode: 2 values per channel.
    check_gradients((2, 3, 1, 1), true);
}

#[test]
fn gradients_match_finite_differences_without_affine() {
    check_gradients((3, 2, 2, 3), false);
}

#[test]
fn backward_accumulates_parameter_gradients_and_releases_the_cache() {
    let mut bn = layer(2, 3);
    let x = input((3, 2, 2, 2), 4);
    let g: Array4<f64> = init::uniform((3, 2, 2, 2), 1.0, &mut Rng::seed(5));
    bn.forward(x.view(), Mode::Train).unwrap();
    let dx1 = bn.backward(g.view()).unwrap();
    let gw1 = bn.weight.as_ref().unwrap().grad.clone();
    let gb1 = bn.bias.as_ref().unwrap().grad.clone();
    // Σ dy per channel, computed here.
    for (k, &v) in gb1.iter().enumerate() {
        assert!((v - g.index_axis(Axis(1), k).sum()).abs() < 1e-12);
    }
    let err = bn.backward(g.view()).unwrap_err();
    assert!(matches!(err, Error::NoForwardCache { .. }), "{err}");
    bn.forward(x.view(), Mode::Train).unwrap();
    let dx2 = bn.backward(g.view()).unwrap();
    assert_eq!(dx1, dx2);
    let gw2 = &bn.weight.as_ref().unwrap().grad;
    let gb2 = &bn.bias.as_ref().unwrap().grad;
    for k in 0..2 {
        assert!((gw2[k] - 2.0 * gw1[k]).abs() < 1e-12);
        assert!((gb2[k] - 2.0 * gb1[k]).abs() < 1e-12);
    }
}

// ---------------------------------------------------------------- values

#[test]
fn hand_computed_example() {
    // One channel, values [1, 2, 3, 6]: μ = 3, σ² = (4 + 1 + 0 + 9)/4 = 3.5; with eps = 0.5,
    // √(σ² + eps) = 2 and x̂ = [−1, −0.5, 0, 1.5]. γ = 2, β = 1: y = 2·x̂ + 1 = [−1, 0, 1, 4].
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(1).with_eps(0.5)).unwrap();
    bn.weight.as_mut().unwrap().value.fill(2.0);
    bn.bias.as_mut().unwrap().value.fill(1.0);
    let x = array![[[[1.0, 2.0]]], [[[3.0, 6.0]]]]; // (2, 1, 1, 2)
    let y = bn.forward(x.view(), Mode::Train).unwrap();
    let want = array![[[[-1.0, 0.0]]], [[[1.0, 4.0]]]];
    assert!((&y - &want).iter().all(|d| d.abs() < 1e-12), "y = {y}");
    // running_mean = 0.9·0 + 0.1·3; running_var = 0.9·1 + 0.1·(14/3) (unbiased: 14 / (4 − 1)).
    assert!((bn.running_mean()[0] - 0.3).abs() < 1e-12);
    assert!((bn.running_var()[0] - (0.9 + 1.4 / 3.0)).abs() < 1e-12);
    assert_eq!(bn.num_batches_tracked(), 1);
    // dy = [1, 0, 0, 0]: Σdy = 1, Σdy·x̂ = −1; dx = (γ·s/n)·(n·dy − 1 + x̂) with γ·s/n = 2·0.5/4:
    // 0.25·[4 − 1 − 1, −1 − 0.5, −1 + 0, −1 + 1.5] = [0.5, −0.375, −0.25, 0.125].
    let dy = array![[[[1.0, 0.0]]], [[[0.0, 0.0]]]];
    let dx = bn.backward(dy.view()).unwrap();
    let want = array![[[[0.5, -0.375]]], [[[-0.25, 0.125]]]];
    assert!((&dx - &want).iter().all(|d| d.abs() < 1e-12), "dx = {dx}");
    assert!((bn.weight.as_ref().unwrap().grad[0] + 1.0).abs() < 1e-12);
    assert!((bn.bias.as_ref().unwrap().grad[0] - 1.0).abs() < 1e-12);
}

#[test]
fn train_output_has_mean_beta_and_variance_gamma2_sigma2_over_sigma2_plus_eps() {
    // eps = 0.1 so that the factor σ²/(σ² + eps) is visibly below 1.
    let mut bn = layer_cfg(BatchNormConfig::new(3).with_eps(0.1), 21);
    let x = input((4, 3, 3, 2), 22);
    let stats = batch_stats(&x);
    let y = bn.forward(x.view(), Mode::Train).unwrap();
    let y_stats = batch_stats(&y);
    for k in 0..3 {
        let gamma = bn.weight.as_ref().unwrap().value[k];
        let beta = bn.bias.as_ref().unwrap().value[k];
        let var = stats[k].1;
        let want_var = gamma * gamma * var / (var + 0.1);
        assert!(
            (y_stats[k].0 - beta).abs() < 1e-12,
            "channel {k}: mean {} vs β {beta}",
            y_stats[k].0
        );
        assert!(
            (y_stats[k].1 - want_var).abs() < 1e-12 * want_var.max(1.0),
            "channel {k}: variance {} vs {want_var}",
            y_stats[k].1
        );
        assert!(want_var < 0.99 * gamma * gamma);
    }
}

#[test]
fn running_stats_after_one_step_come_from_the_batch() {
    let mut bn = layer(2, 31);
    let x = input((3, 2, 2, 3), 32);
    let n = 3.0 * 2.0 * 3.0;
    bn.forward(x.view(), Mode::Train).unwrap();
    for (k, (mean, var)) in batch_stats(&x).into_iter().enumerate() {
        let rm = 0.1 * mean; // 0.9·0 + 0.1·μ
        let rv = 0.9 + 0.1 * var * n / (n - 1.0); // 0.9·1 + 0.1·σ²_unbiased
        assert!((bn.running_mean()[k] - rm).abs() < 1e-12, "channel {k}");
        assert!((bn.running_var()[k] - rv).abs() < 1e-12, "channel {k}");
    }
    assert_eq!(bn.num_batches_tracked(), 1);
}

#[test]
fn momentum_update_over_three_steps_matches_the_closed_form() {
    // r₃ = (1 − m)³·r₀ + m·((1 − m)²·s₁ + (1 − m)·s₂ + s₃) with m = 0.3.
    let m = 0.3;
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(2).with_momentum(m)).unwrap();
    let shapes = [(2, 2, 3, 3), (4, 2, 1, 2), (3, 2, 2, 2)];
    let (mut want_m, mut want_v) = ([0.0; 2], [(1.0 - m).powi(3); 2]);
    for (step, &shape) in shapes.iter().enumerate() {
        let x = input(shape, 40 + step as u64);
        bn.forward(x.view(), Mode::Train).unwrap();
        let n = (shape.0 * shape.2 * shape.3) as f64;
        let w = m * (1.0 - m).powi(2 - step as i32);
        for (k, (mean, var)) in batch_stats(&x).into_iter().enumerate() {
            want_m[k] += w * mean;
            want_v[k] += w * var * n / (n - 1.0);
        }
    }
    for k in 0..2 {
        assert!((bn.running_mean()[k] - want_m[k]).abs() < 1e-12, "mean {k}");
        assert!((bn.running_var()[k] - want_v[k]).abs() < 1e-12, "var {k}");
    }
    assert_eq!(bn.num_batches_tracked(), 3);
}

#[test]
fn eval_uses_the_running_stats_and_changes_nothing() {
    let mut bn = layer(2, 51);
    bn.forward(input((3, 2, 2, 2), 52).view(), Mode::Train)
        .unwrap();
    bn.forward(input((2, 2, 3, 3), 53).view(), Mode::Train)
        .unwrap();
    let (rm, rv) = (bn.running_mean().clone(), bn.running_var().clone());
    let x = input((2, 2, 2, 3), 54);
    let y = bn.forward(x.view(), Mode::Eval).unwrap();
    for ((i, k, a, b), &v) in y.indexed_iter() {
        let gamma = bn.weight.as_ref().unwrap().value[k];
        let beta = bn.bias.as_ref().unwrap().value[k];
        let want = gamma * (x[[i, k, a, b]] - rm[k]) / (rv[k] + 1e-5).sqrt() + beta;
        assert!(
            (v - want).abs() < 1e-12,
            "y[{i},{k},{a},{b}] = {v}, want {want}"
        );
    }
    assert_eq!(bn.running_mean(), &rm);
    assert_eq!(bn.running_var(), &rv);
    assert_eq!(bn.num_batches_tracked(), 2);
    // Eval keeps nothing for backward.
    let err = bn.backward(y.view()).unwrap_err();
    assert!(matches!(err, Error::NoForwardCache { .. }), "{err}");
    // One value per channel is fine in eval mode.
    let y1 = bn
        .forward(Array4::from_elem((1, 2, 1, 1), 1.0).view(), Mode::Eval)
        .unwrap();
    assert_eq!(y1.dim(), (1, 2, 1, 1));
}

#[test]
fn set_and_reset_running_stats() {
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(2).with_affine(false)).unwrap();
    bn.set_running_stats(array![1.0, -2.0], array![4.0, 0.25], 7)
        .unwrap();
    let x = array![[[[3.0]], [[-1.0]]]]; // (1, 2, 1, 1)
    let y = bn.forward(x.view(), Mode::Eval).unwrap();
    // (3 − 1)/√(4 + 1e-5), (−1 + 2)/√(0.25 + 1e-5).
    assert!((y[[0, 0, 0, 0]] - 2.0 / (4.0f64 + 1e-5).sqrt()).abs() < 1e-12);
    assert!((y[[0, 1, 0, 0]] - 1.0 / (0.25f64 + 1e-5).sqrt()).abs() < 1e-12);
    assert_eq!(bn.num_batches_tracked(), 7);
    bn.reset_running_stats();
    assert_eq!(bn.running_mean(), &Array1::<f64>::zeros(2));
    assert_eq!(bn.running_var(), &Array1::<f64>::ones(2));
    assert_eq!(bn.num_batches_tracked(), 0);
    let err = bn
        .set_running_stats(array![0.0, 0.0, 0.0], array![1.0, 1.0], 0)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "BatchNorm2d::set_running_stats: running_mean (C) expected (2), got (3)"
    );
}

/// The large-tensor (rayon) path against the formulas evaluated here, and thread-count
/// independence of the f32 results (bit for bit).
#[test]
fn large_input_matches_formulas_and_does_not_depend_on_threads() {
    let shape = (8, 3, 40, 40); // 38 400 elements: above the parallel threshold
    let x = input(shape, 61);
    let g: Array4<f64> = init::uniform(shape, 1.0, &mut Rng::seed(62));
    let mut bn = layer(3, 63);
    let y = bn.forward(x.view(), Mode::Train).unwrap();
    let dx = bn.backward(g.view()).unwrap();
    let n = (8 * 40 * 40) as f64;
    for (k, (mean, var)) in batch_stats(&x).into_iter().enumerate() {
        let s = 1.0 / (var + 1e-5).sqrt();
        let gamma = bn.weight.as_ref().unwrap().value[k];
        let beta = bn.bias.as_ref().unwrap().value[k];
        let xh = x.index_axis(Axis(1), k).mapv(|v| (v - mean) * s);
        let gk = g.index_axis(Axis(1), k);
        let (s1, s2) = (gk.sum(), (&gk * &xh).sum());
        let want_y = xh.mapv(|v| gamma * v + beta);
        let want_dx = (&gk * n - s1 - &xh * s2) * (gamma * s / n);
        let ey = (&y.index_axis(Axis(1), k) - &want_y).mapv(f64::abs);
        let edx = (&dx.index_axis(Axis(1), k) - &want_dx).mapv(f64::abs);
        assert!(ey.iter().all(|&e| e < 1e-12), "y channel {k}");
        assert!(edx.iter().all(|&e| e < 1e-12), "dx channel {k}");
        assert!((bn.weight.as_ref().unwrap().grad[k] - s2).abs() < 1e-9);
        assert!((bn.bias.as_ref().unwrap().grad[k] - s1).abs() < 1e-9);
    }

    let x32 = x.mapv(|v| v as f32);
    let g32 = g.mapv(|v| v as f32);
    let run = |threads: usize| {
        common::on_threads(threads, || {
            let mut bn = BatchNorm2d::<f32>::new(BatchNormConfig::new(3)).unwrap();
            let y = bn.forward(x32.view(), Mode::Train).unwrap();
            let dx = bn.backward(g32.view()).unwrap();
            (y, dx, bn.running_var().clone())
        })
    };
    let (a, b) = (run(1), run(2));
    assert!(
        a.0.iter()
            .zip(&b.0)
            .all(|(p, q)| p.to_bits() == q.to_bits())
    );
    assert!(
        a.1.iter()
            .zip(&b.1)
            .all(|(p, q)| p.to_bits() == q.to_bits())
    );
    assert_eq!(a.2, b.2);
}

// ---------------------------------------------------------------- errors

#[test]
fn wrong_channel_count_is_an_error_naming_the_expected_shape() {
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(3)).unwrap();
    for mode in [Mode::Train, Mode::Eval] {
        let err = bn
            .forward(Array4::zeros((4, 2, 5, 5)).view(), mode)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "BatchNorm2d::forward: input expected (N, 3, H, W), got (4, 2, 5, 5)"
        );
    }
}

#[test]
fn wrong_rank_is_an_error_naming_the_expected_shape() {
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(3)).unwrap();
    let err = bn
        .forward_dyn(ArrayD::zeros(vec![4, 3, 5]).view(), Mode::Train)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "BatchNorm2d::forward: input expected (N, 3, H, W), got (4, 3, 5)"
    );
    // The 4-d path of forward_dyn is forward itself.
    let x = input((2, 3, 2, 2), 70);
    let y = bn.forward_dyn(x.view().into_dyn(), Mode::Train).unwrap();
    let mut bn2 = BatchNorm2d::<f64>::new(BatchNormConfig::new(3)).unwrap();
    assert_eq!(y, bn2.forward(x.view(), Mode::Train).unwrap().into_dyn());
}

#[test]
fn one_value_per_channel_in_train_mode_is_an_error() {
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(2)).unwrap();
    let err = bn
        .forward(Array4::zeros((1, 2, 1, 1)).view(), Mode::Train)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "BatchNorm2d::forward: invalid input: expected more than 1 value per channel when \
         training, got input (1, 2, 1, 1) (N·H·W = 1)"
    );
    // Nothing was updated.
    assert_eq!(bn.num_batches_tracked(), 0);
    assert_eq!(bn.running_var(), &Array1::<f64>::ones(2));
    let err = bn
        .forward(Array4::zeros((0, 2, 3, 3)).view(), Mode::Train)
        .unwrap_err();
    assert!(err.to_string().contains("(N·H·W = 0)"), "{err}");
}

#[test]
fn backward_errors() {
    let mut bn = BatchNorm2d::<f64>::new(BatchNormConfig::new(2)).unwrap();
    let err = bn.backward(Array4::zeros((2, 2, 1, 1)).view()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "BatchNorm2d::backward: backward called without a train-mode forward before it"
    );
    bn.forward(input((2, 2, 3, 3), 80).view(), Mode::Train)
        .unwrap();
    let err = bn.backward(Array4::zeros((2, 2, 3, 2)).view()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "BatchNorm2d::backward: dy (N, C, H, W) expected (2, 2, 3, 3), got (2, 2, 3, 2)"
    );
    // A failed forward drops an earlier cache.
    let _ = bn.forward(Array4::zeros((2, 3, 3, 3)).view(), Mode::Train);
    let err = bn.backward(Array4::zeros((2, 2, 3, 3)).view()).unwrap_err();
    assert!(matches!(err, Error::NoForwardCache { .. }), "{err}");
}

#[test]
fn invalid_configurations_are_errors() {
    let cases = [
        (
            BatchNormConfig::new(0),
            "BatchNorm2d::new: invalid num_features: expected at least 1 channel, got 0",
        ),
        (
            BatchNormConfig::new(2).with_eps(-1e-5),
            "BatchNorm2d::new: invalid eps: expected a finite eps ≥ 0, got -0.00001",
        ),
        (
            BatchNormConfig::new(2).with_momentum(1.5),
            "BatchNorm2d::new: invalid momentum: expected 0 ≤ momentum ≤ 1, got 1.5",
        ),
        (
            BatchNormConfig::new(2).with_momentum(f64::NAN),
            "BatchNorm2d::new: invalid momentum: expected 0 ≤ momentum ≤ 1, got NaN",
        ),
    ];
    for (cfg, msg) in cases {
        let err = BatchNorm2d::<f32>::new(cfg).unwrap_err();
        assert_eq!(err.to_string(), msg);
    }
}

#[test]
fn defaults_match_pytorch() {
    let cfg = BatchNormConfig::new(4);
    assert_eq!((cfg.eps, cfg.momentum, cfg.affine), (1e-5, 0.1, true));
    let mut bn = BatchNorm2d::<f32>::new(cfg).unwrap();
    assert_eq!(bn.config(), cfg);
    assert_eq!(bn.weight.as_ref().unwrap().value, Array1::<f32>::ones(4));
    assert_eq!(bn.bias.as_ref().unwrap().value, Array1::<f32>::zeros(4));
    assert_eq!(bn.running_mean(), &Array1::<f32>::zeros(4));
    assert_eq!(bn.running_var(), &Array1::<f32>::ones(4));
    assert_eq!(bn.num_batches_tracked(), 0);
    assert_eq!(
        bn.param_shapes(),
        vec![
            ("weight".to_string(), vec![4]),
            ("bias".to_string(), vec![4])
        ]
    );
}
