//! Singular values of a small dense matrix, by one-sided (Hestenes) Jacobi rotations in f64.
//!
//! For `A (m, n)`, rotations of column pairs `(p, q)` by the angle that makes them orthogonal are
//! applied until every pair is orthogonal to working precision; the singular values are then the
//! column norms. It is exact to about 1e-14 relative, needs no workspace beyond a copy of `A`,
//! and costs `O(m·n²)` per sweep with typically 6–10 sweeps: a 1024 × 256 LSTM `weight_hh`
//! takes well under a second.

use ndarray::{Array2, ArrayView2};

use crate::{Error, Result, Scalar};

/// Sweeps after which the iteration gives up (it converges quadratically, in about ten).
const MAX_SWEEPS: usize = 60;

/// The singular values of `a (m, n)`, largest first: `min(m, n)` of them.
///
/// # Errors
/// [`Error::Invalid`] for an empty matrix or one holding a non-finite value.
pub fn singular_values<F: Scalar>(a: ArrayView2<'_, F>) -> Result<Vec<f64>> {
    let (m, n) = a.dim();
    if m == 0 || n == 0 {
        return Err(Error::invalid(
            "singular_values",
            format!("matrix of shape ({m}, {n})"),
            "expected at least one row and one column",
        ));
    }
    if a.iter().any(|v| !v.f64().is_finite()) {
        return Err(Error::invalid(
            "singular_values",
            "matrix",
            "holds a NaN or infinite value",
        ));
    }
    // Work on the orientation with fewer columns: the same singular values, fewer pairs.
    let cols: Array2<f64> = if n <= m {
        a.mapv(|v| v.f64())
    } else {
        a.t().mapv(|v| v.f64())
    };
    // Column-major copy: column j is the contiguous slice c[j].
    let mut c: Vec<Vec<f64>> = cols.columns().into_iter().map(|col| col.to_vec()).collect();
    let k = c.len();
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..k {
            for q in p + 1..k {
                let (alpha, beta, gamma) = dots(&c[p], &c[q]);
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                // The rotation that zeroes the (p, q) entry of the 2×2 Gram matrix.
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let cs = 1.0 / (1.0 + t * t).sqrt();
                let sn = cs * t;
                let (left, right) = c.split_at_mut(q);
                for (x, y) in left[p].iter_mut().zip(right[0].iter_mut()) {
                    let (xp, yq) = (*x, *y);
                    *x = cs * xp - sn * yq;
                    *y = sn * xp + cs * yq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut s: Vec<f64> = c
        .iter()
        .map(|col| col.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    Ok(s)
}

/// The largest singular value (spectral norm) `σ_max(A) = max_‖v‖=1 ‖A v‖`.
///
/// # Errors
/// As [`singular_values`].
pub fn largest_singular_value<F: Scalar>(a: ArrayView2<'_, F>) -> Result<f64> {
    Ok(singular_values(a)?[0])
}

/// `(‖x‖², ‖y‖², x·y)`.
fn dots(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        xx += a * a;
        yy += b * b;
        xy += a * b;
    }
    (xx, yy, xy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::gemm::matmul;
    use crate::init::orthogonal;

    /// `U diag(s) Vᵀ` with random orthogonal `U (m, k)` and `V (n, k)`: known singular values.
    fn with_singular_values(m: usize, n: usize, s: &[f64], rng: &mut Rng) -> Array2<f64> {
        let k = s.len();
        let u: Array2<f64> = orthogonal(m, k, 1.0, rng);
        let v: Array2<f64> = orthogonal(n, k, 1.0, rng);
        let us = Array2::from_shape_fn((m, k), |(i, j)| u[[i, j]] * s[j]);
        matmul(us.view(), v.t())
    }

    #[test]
    fn recovers_known_singular_values_of_tall_wide_and_square_matrices() {
        let mut rng = Rng::seed(3);
        let s = [3.5, 2.0, 1.999, 0.7, 1e-3];
        for (m, n) in [(9, 5), (5, 12), (5, 5)] {
            let a = with_singular_values(m, n, &s, &mut rng);
            let got = singular_values(a.view()).unwrap();
            assert_eq!(got.len(), 5, "({m}, {n})");
            for (g, w) in got.iter().zip(&s) {
                assert!(
                    (g - w).abs() < 1e-12 * 3.5,
                    "({m}, {n}): got {got:?}, want {s:?}"
                );
            }
        }
    }

    #[test]
    fn rank_deficient_matrix_has_zero_singular_values_and_f32_works() {
        let mut rng = Rng::seed(4);
        let a = with_singular_values(6, 6, &[2.0, 1.0], &mut rng); // rank 2, 6 × 6
        let got = singular_values(a.mapv(|v| v as f32).view()).unwrap();
        assert_eq!(got.len(), 6);
        assert!(
            (got[0] - 2.0).abs() < 1e-6 && (got[1] - 1.0).abs() < 1e-6,
            "{got:?}"
        );
        assert!(got[2..].iter().all(|v| v.abs() < 1e-6), "{got:?}");
        assert!((largest_singular_value(a.view()).unwrap() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn empty_or_non_finite_matrices_are_refused() {
        let e = singular_values(Array2::<f64>::zeros((0, 3)).view()).unwrap_err();
        assert!(e.to_string().contains("(0, 3)"), "{e}");
        let mut a = Array2::<f64>::eye(3);
        a[[1, 2]] = f64::NAN;
        let e = singular_values(a.view()).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
    }
}
