//! Scalar nonlinearities shared by the layers and the recurrent cells.

use crate::Scalar;

/// σ(x) = 1 / (1 + e⁻ˣ), evaluated without overflow for large |x| (see [`Scalar::sigmoid_act`]).
#[inline(always)]
pub fn sigmoid<F: Scalar>(x: F) -> F {
    x.sigmoid_act()
}

/// tanh(x) (see [`Scalar::tanh_act`]).
#[inline(always)]
pub fn tanh<F: Scalar>(x: F) -> F {
    x.tanh_act()
}

/// max(x, 0).
#[inline]
pub fn relu<F: Scalar>(x: F) -> F {
    if x > F::zero() { x } else { F::zero() }
}

/// dσ/dx written in terms of the output s = σ(x): s(1 − s).
#[inline]
pub fn sigmoid_grad_from_output<F: Scalar>(s: F) -> F {
    s * (F::one() - s)
}

/// d tanh/dx written in terms of the output t = tanh(x): 1 − t².
#[inline]
pub fn tanh_grad_from_output<F: Scalar>(t: F) -> F {
    F::one() - t * t
}

/// d relu/dx written in terms of the output: 1 where the output is positive, else 0
/// (PyTorch's convention: the derivative at 0 is 0).
#[inline]
pub fn relu_grad_from_output<F: Scalar>(y: F) -> F {
    if y > F::zero() { F::one() } else { F::zero() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        assert_eq!(sigmoid(0.0f64), 0.5);
        assert_eq!(sigmoid(1e4f32), 1.0);
        assert_eq!(sigmoid(-1e4f32), 0.0);
        for x in [-3.0f64, -0.5, 0.25, 2.0] {
            assert!((sigmoid(x) + sigmoid(-x) - 1.0).abs() < 1e-15);
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-15);
        }
    }

    #[test]
    fn derivatives_from_outputs_match_finite_differences() {
        let h = 1e-6;
        for x in [-1.7f64, -0.3, 0.4, 2.2] {
            let fd = (sigmoid(x + h) - sigmoid(x - h)) / (2.0 * h);
            assert!((sigmoid_grad_from_output(sigmoid(x)) - fd).abs() < 1e-9);
            let fd = (tanh(x + h) - tanh(x - h)) / (2.0 * h);
            assert!((tanh_grad_from_output(tanh(x)) - fd).abs() < 1e-9);
            let fd = (relu(x + h) - relu(x - h)) / (2.0 * h);
            assert!((relu_grad_from_output(relu(x)) - fd).abs() < 1e-9);
        }
    }
}
