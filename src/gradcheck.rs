//! Finite-difference gradient checking.
//!
//! Every layer in skipgate is generic over `f32`/`f64`; its tests run it in `f64` and compare the
//! hand-written backward pass against central differences
//! `(L(θ + ε) − L(θ − ε)) / 2ε`, whose error is O(ε²) plus rounding, about 1e-9 relative at ε = 1e-6.
//! The functions are public so that users writing their own layers can check them the same way.

use ndarray::{ArrayD, ArrayViewD};

use crate::module::Module;

/// Default step for central differences in f64.
pub const EPS: f64 = 1e-6;

/// ∂L/∂x by central differences: perturbs each element of `x` in turn.
pub fn numeric_grad(
    x: &ArrayD<f64>,
    eps: f64,
    mut loss: impl FnMut(&ArrayD<f64>) -> f64,
) -> ArrayD<f64> {
    let mut xp = x.clone();
    let mut g = ArrayD::zeros(x.raw_dim());
    for i in 0..x.len() {
        let orig = xp.as_slice_mut().expect("standard layout")[i];
        xp.as_slice_mut().unwrap()[i] = orig + eps;
        let up = loss(&xp);
        xp.as_slice_mut().unwrap()[i] = orig - eps;
        let down = loss(&xp);
        xp.as_slice_mut().unwrap()[i] = orig;
        g.as_slice_mut().unwrap()[i] = (up - down) / (2.0 * eps);
    }
    g
}

/// ∂L/∂θ by central differences for every parameter of `model`, in visiting order, by name.
///
/// `loss` must run a full forward pass on the model as it is and return the scalar loss; it may
/// also run backward (the accumulated gradients are not touched by this function).
pub fn numeric_param_grads<M: Module<f64>>(
    model: &mut M,
    eps: f64,
    mut loss: impl FnMut(&mut M) -> f64,
) -> Vec<(String, ArrayD<f64>)> {
    let shapes = model.param_shapes();
    let mut out = Vec::with_capacity(shapes.len());
    for (which, (name, shape)) in shapes.iter().enumerate() {
        let mut g = ArrayD::zeros(shape.as_slice());
        for i in 0..g.len() {
            nudge(model, which, i, eps);
            let up = loss(model);
            nudge(model, which, i, -2.0 * eps);
            let down = loss(model);
            nudge(model, which, i, eps);
            g.as_slice_mut().unwrap()[i] = (up - down) / (2.0 * eps);
        }
        out.push((name.clone(), g));
    }
    out
}

/// The accumulated `.grad` of every parameter, in visiting order, by name.
pub fn param_grads<M: Module<f64>>(model: &mut M) -> Vec<(String, ArrayD<f64>)> {
    let mut out = Vec::new();
    model.visit_params(&mut |name, p| out.push((name.to_string(), p.grad.to_owned())));
    out
}

/// Adds `delta` to element `index` (row-major) of the `which`-th parameter.
fn nudge<M: Module<f64>>(model: &mut M, which: usize, index: usize, delta: f64) {
    let mut k = 0;
    model.visit_params(&mut |_, mut p| {
        if k == which {
            let v = p.value.iter_mut().nth(index).expect("index in range");
            *v += delta;
        }
        k += 1;
    });
}

/// Largest `|a − n| / (atol + rtol·|n|)` over the elements; at most 1 means the check passes.
pub fn worst_error(
    analytic: ArrayViewD<'_, f64>,
    numeric: ArrayViewD<'_, f64>,
    rtol: f64,
    atol: f64,
) -> f64 {
    analytic
        .iter()
        .zip(numeric.iter())
        .map(|(a, n)| (a - n).abs() / (atol + rtol * n.abs()))
        .fold(0.0, f64::max)
}

/// Panics with the worst element and both values unless `analytic ≈ numeric`
/// (`|a − n| ≤ atol + rtol·|n|` everywhere and the shapes agree).
pub fn assert_close(
    what: &str,
    analytic: ArrayViewD<'_, f64>,
    numeric: ArrayViewD<'_, f64>,
    rtol: f64,
    atol: f64,
) {
    assert_eq!(analytic.shape(), numeric.shape(), "{what}: shapes differ");
    let mut worst = (0.0f64, 0usize);
    // NaN counts as the worst possible error, so a NaN gradient can never pass.
    for (i, (a, n)) in analytic.iter().zip(numeric.iter()).enumerate() {
        let e = (a - n).abs() / (atol + rtol * n.abs());
        if e.is_nan() || e > worst.0 {
            worst = (e, i);
        }
    }
    if worst.0.is_nan() || worst.0 > 1.0 {
        let a = analytic.iter().nth(worst.1).unwrap();
        let n = numeric.iter().nth(worst.1).unwrap();
        panic!(
            "{what}: element {} differs: analytic {a:e}, numeric {n:e} (|diff| {:e} > atol {atol:e} + rtol {rtol:e}·|numeric|)",
            worst.1,
            (a - n).abs()
        );
    }
}

/// Checks every parameter gradient of `model` against central differences: `run` must zero the
/// gradients, run forward and backward and return the loss.
pub fn check_params<M: Module<f64>>(
    model: &mut M,
    rtol: f64,
    atol: f64,
    mut run: impl FnMut(&mut M) -> f64,
) {
    run(model);
    let analytic = param_grads(model);
    let numeric = numeric_param_grads(model, EPS, |m| run(m));
    for ((name, a), (_, n)) in analytic.iter().zip(numeric.iter()) {
        assert_close(&format!("∂L/∂{name}"), a.view(), n.view(), rtol, atol);
    }
}
