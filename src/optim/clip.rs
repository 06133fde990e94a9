//! Global-norm gradient clipping, as `torch.nn.utils.clip_grad_norm_` with `norm_type = 2`.
//!
//! Clipping is a separate step between `backward` and the optimizer step (the trainer calls it);
//! no layer clips inside its backward pass.

use crate::{Module, Scalar};

/// The global gradient norm `‖(‖g₁‖₂, ‖g₂‖₂, …)‖₂` over all parameters of `model`.
///
/// As in PyTorch, each parameter's norm is a value of type `F` (squares summed in `f64`, the
/// square root rounded to `F`), and the total is the norm of those, rounded to `F`; the result is
/// returned widened to `f64`. NaN or ±∞ in any gradient makes the result NaN or ∞.
pub fn grad_norm<F: Scalar>(model: &mut dyn Module<F>) -> f64 {
    let mut sum_sq = 0.0f64;
    model.visit_params(&mut |_, p| {
        let sq: f64 = p.grad.iter().map(|g| g.f64() * g.f64()).sum();
        let norm = F::of(sq.sqrt()).f64();
        sum_sq += norm * norm;
    });
    F::of(sum_sq.sqrt()).f64()
}

/// Scales all gradients of `model` together so that their global 2-norm is at most `max_norm`;
/// returns the global norm *before* clipping (see [`grad_norm`]).
///
/// ```text
/// total = ‖(‖g₁‖, ‖g₂‖, …)‖
/// coef  = max_norm / (total + 1e-6)         (in F, as (1 / (total + 1e-6))·max_norm)
/// gᵢ    = gᵢ·coef   for every i, if coef < 1
/// ```
///
/// If `total` is NaN or infinite the gradients are left untouched and `total` is returned, so the
/// caller decides what to do (the trainer stops). `max_norm` should be positive; a negative or NaN
/// `max_norm` leaves the gradients untouched (it never flips their sign), and `0` zeroes them.
pub fn clip_grad_norm<F: Scalar>(model: &mut dyn Module<F>, max_norm: f64) -> f64 {
    let total = grad_norm(model);
    if !total.is_finite() || max_norm.is_nan() || max_norm < 0.0 {
        return total;
    }
    // PyTorch: clip_coef = max_norm / (total_norm + 1e-6) on an F tensor, where a Python float
    // divided by a tensor is computed as tensor.reciprocal() * max_norm.
    let coef = F::one() / (F::of(total) + F::of(1e-6)) * F::of(max_norm);
    if coef < F::one() {
        model.visit_params(&mut |_, mut p| p.grad.mapv_inplace(|g| g * coef));
    }
    total
}
