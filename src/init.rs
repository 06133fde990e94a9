//! Weight initialisers, written to follow PyTorch's defaults in distribution.
//!
//! Values are drawn from skipgate's own [`Rng`] in row-major order, so the same seed gives the same
//! weights everywhere (they are not PyTorch's bits: PyTorch has its own generator).

use ndarray::{Array, Array2, Dimension, ShapeBuilder};

use crate::{Rng, Scalar};

/// U(−bound, bound) of the given shape.
pub fn uniform<F: Scalar, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    bound: f64,
    rng: &mut Rng,
) -> Array<F, D> {
    let mut a = Array::zeros(shape);
    fill_uniform(&mut a, bound, rng);
    a
}

/// Overwrites `a` (in logical row-major order) with U(−bound, bound).
pub fn fill_uniform<F: Scalar, D: Dimension>(a: &mut Array<F, D>, bound: f64, rng: &mut Rng) {
    for v in a.iter_mut() {
        *v = F::of(rng.uniform_in(-bound, bound));
    }
}

/// N(mean, std²) of the given shape.
pub fn normal<F: Scalar, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    mean: f64,
    std: f64,
    rng: &mut Rng,
) -> Array<F, D> {
    let mut a = Array::zeros(shape);
    for v in a.iter_mut() {
        *v = F::of(mean + std * rng.normal());
    }
    a
}

/// PyTorch's default bound for `nn.Linear` (weight and bias) and for the recurrent layers:
/// `1/√fan`, where `fan` is `in_features` for Linear and `hidden_size` for RNN/LSTM/GRU.
/// (Linear's `kaiming_uniform_(a=√5)` works out to exactly this bound.)
pub fn default_bound(fan: usize) -> f64 {
    if fan == 0 {
        0.0
    } else {
        1.0 / (fan as f64).sqrt()
    }
}

/// Kaiming (He) uniform with ReLU gain: U(−b, b), b = √2 · √(3 / fan).
pub fn kaiming_uniform<F: Scalar, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    fan: usize,
    rng: &mut Rng,
) -> Array<F, D> {
    uniform(
        shape,
        (2.0f64).sqrt() * (3.0 / fan.max(1) as f64).sqrt(),
        rng,
    )
}

/// Kaiming (He) normal with ReLU gain: N(0, 2 / fan). torchvision's ResNets use it with
/// `fan = fan_out = out_channels · kernel area`.
pub fn kaiming_normal<F: Scalar, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    fan: usize,
    rng: &mut Rng,
) -> Array<F, D> {
    normal(shape, 0.0, (2.0 / fan.max(1) as f64).sqrt(), rng)
}

/// Xavier (Glorot) uniform: U(−b, b), b = √(6 / (fan_in + fan_out)).
pub fn xavier_uniform<F: Scalar, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    fan_in: usize,
    fan_out: usize,
    rng: &mut Rng,
) -> Array<F, D> {
    uniform(shape, (6.0 / (fan_in + fan_out).max(1) as f64).sqrt(), rng)
}

/// A `(rows, cols)` matrix with orthonormal rows or columns (whichever are fewer), times `gain`.
///
/// As PyTorch's `orthogonal_`: the Q factor of the QR decomposition of a Gaussian matrix, with the
/// signs fixed so that R has a positive diagonal, which makes Q uniformly (Haar) distributed.
/// Computed by modified Gram–Schmidt in f64, which yields exactly that positive-diagonal Q.
pub fn orthogonal<F: Scalar>(rows: usize, cols: usize, gain: f64, rng: &mut Rng) -> Array2<F> {
    let tall = rows >= cols;
    let (n, k) = if tall { (rows, cols) } else { (cols, rows) };
    // Columns of g (n × k) are orthonormalised in place.
    let mut g: Array2<f64> = normal((n, k), 0.0, 1.0, rng);
    for j in 0..k {
        for i in 0..j {
            let dot = g.column(i).dot(&g.column(j));
            let qi = g.column(i).to_owned();
            g.column_mut(j).scaled_add(-dot, &qi);
        }
        let norm = g.column(j).dot(&g.column(j)).sqrt();
        g.column_mut(j).mapv_inplace(|v| v / norm);
    }
    let q = if tall { g } else { g.reversed_axes() };
    q.mapv(|v| F::of(gain * v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::matmul;

    #[test]
    fn orthogonal_has_orthonormal_columns_or_rows() {
        let mut rng = Rng::seed(0);
        let q: Array2<f64> = orthogonal(8, 5, 1.0, &mut rng);
        let qtq = matmul(q.t(), q.view());
        for ((i, j), v) in qtq.indexed_iter() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-12, "QᵀQ[{i},{j}] = {v}");
        }
        let w: Array2<f64> = orthogonal(3, 6, 2.0, &mut rng);
        let wwt = matmul(w.view(), w.t());
        for ((i, j), v) in wwt.indexed_iter() {
            let want = if i == j { 4.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-12, "WWᵀ[{i},{j}] = {v}");
        }
    }

    #[test]
    fn uniform_respects_bound_and_seed() {
        let a: Array2<f32> = uniform((50, 40), 0.1, &mut Rng::seed(1));
        let b: Array2<f32> = uniform((50, 40), 0.1, &mut Rng::seed(1));
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.abs() <= 0.1));
        let max = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            max > 0.095,
            "2000 draws should come close to the bound, max {max}"
        );
    }
}
