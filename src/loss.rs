//! Loss functions: each returns the scalar loss and its gradient with respect to the prediction.

use ndarray::{Array, Array1, Array2, ArrayView, ArrayView1, ArrayView2, Axis, Dimension, Zip};

use crate::Scalar;
use crate::error::{Error, Result, fmt_shape};

/// Mean squared error `L = (1/n) Σ (pred − target)²` over all `n` elements (PyTorch
/// `F.mse_loss`, reduction mean). Returns `(L, ∂L/∂pred = 2(pred − target)/n)`, the gradient with
/// the shape of `pred`. The sum is accumulated in `f64`.
///
/// # Errors
/// [`Error::Shape`] naming both shapes if they differ; [`Error::Invalid`] if they are empty.
pub fn mse_loss<F: Scalar, D: Dimension>(
    pred: ArrayView<'_, F, D>,
    target: ArrayView<'_, F, D>,
) -> Result<(F, Array<F, D>)> {
    if pred.shape() != target.shape() {
        return Err(Error::shape(
            "mse_loss",
            "target",
            format!("{} (the shape of pred)", fmt_shape(pred.shape())),
            target.shape(),
        ));
    }
    let n = pred.len();
    if n == 0 {
        return Err(Error::invalid(
            "mse_loss",
            "input",
            format!(
                "pred and target have shape {} with no elements: the mean is undefined",
                fmt_shape(pred.shape())
            ),
        ));
    }
    let diff = Zip::from(&pred).and(&target).map_collect(|&p, &t| p - t);
    let sum: f64 = diff.iter().map(|d| d.f64() * d.f64()).sum();
    let scale = F::of(2.0 / n as f64);
    let grad = diff.mapv(|d| d * scale);
    Ok((F::of(sum / n as f64), grad))
}

/// Softmax cross-entropy over the classes of each row, averaged over the counted rows (PyTorch
/// `F.cross_entropy(logits, targets, ignore_index=…)`, reduction mean).
///
/// `logits: (N, C)`, `targets: (N)` class indices. For a counted row `i`,
/// `ℓᵢ = logsumexp(logitsᵢ) − logitsᵢ[targetᵢ]`, computed as `m + ln Σⱼ exp(logitsᵢⱼ − m)` with
/// `m = maxⱼ logitsᵢⱼ`, so large logits do not overflow. Rows whose target equals `ignore_index`
/// are not counted. Returns `(L = Σ ℓᵢ / count, ∂L/∂logits: (N, C))`, the gradient being
/// `(softmax(logitsᵢ) − onehot(targetᵢ)) / count` on counted rows and zero on ignored rows.
///
/// # Errors
/// * [`Error::Invalid`] if `N = 0`, if a counted target is `≥ C` (naming the row, the value and
///   `C`), or if every row is ignored;
/// * [`Error::Shape`] if `targets.len() ≠ N`.
pub fn cross_entropy<F: Scalar>(
    logits: ArrayView2<'_, F>,
    targets: &[usize],
    ignore_index: Option<usize>,
) -> Result<(F, Array2<F>)> {
    const OP: &str = "cross_entropy";
    let (n, c) = logits.dim();
    if n == 0 {
        return Err(Error::invalid(
            OP,
            "logits",
            format!(
                "empty batch: logits have shape {}, expected at least one row",
                fmt_shape(logits.shape())
            ),
        ));
    }
    if targets.len() != n {
        return Err(Error::shape(
            OP,
            "targets (N)",
            format!("({n}) for logits {}", fmt_shape(logits.shape())),
            &[targets.len()],
        ));
    }
    let counted = |t: usize| Some(t) != ignore_index;
    if let Some((row, &t)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| counted(t) && t >= c)
    {
        return Err(Error::invalid(
            OP,
            "target",
            format!("targets[{row}] = {t} is not a class index: expected < C = {c}"),
        ));
    }
    let count = targets.iter().filter(|&&t| counted(t)).count();
    if count == 0 {
        return Err(Error::invalid(
            OP,
            "targets",
            format!(
                "all {n} rows have target ignore_index = {}: the mean over no rows is undefined",
                ignore_index.expect("count 0 with N > 0 implies an ignore_index")
            ),
        ));
    }
    let inv_count = F::of(1.0 / count as f64);
    let mut grad = Array2::zeros((n, c)); // (N, C)
    let mut total = 0.0f64;
    for ((row, mut g), &t) in logits.rows().into_iter().zip(grad.rows_mut()).zip(targets) {
        if !counted(t) {
            continue;
        }
        // log_softmax(z) = (z − m) − ln s: subtracting the max first keeps the digits of the small
        // differences that a rounded `m + ln s` near ±1e4 would lose.
        let (m, ln_s) = max_and_log_sum_exp(row);
        total -= ((row[t] - m) - ln_s).f64();
        Zip::from(&mut g)
            .and(&row)
            .for_each(|g, &z| *g = ((z - m) - ln_s).exp() * inv_count);
        g[t] -= inv_count;
    }
    Ok((F::of(total / count as f64), grad))
}

/// `(m, ln Σⱼ exp(zⱼ − m))` with `m = max z`, so that `ln Σⱼ exp(zⱼ) = m + ln s` without overflow.
/// A row without a finite maximum gives `(m, 0)`.
fn max_and_log_sum_exp<F: Scalar>(z: ArrayView1<'_, F>) -> (F, F) {
    let m = z.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    if !m.is_finite() {
        return (m, F::zero());
    }
    let s: F = z.iter().map(|&v| (v - m).exp()).sum();
    (m, s.ln())
}

/// `softmax(z / temperature)`: `pⱼ = exp(zⱼ/τ − m) / Σₖ exp(zₖ/τ − m)` with `m = maxⱼ zⱼ/τ`;
/// `z: (C) → p: (C)`. Lower temperatures sharpen the distribution (for sampling).
///
/// # Errors
/// [`Error::Invalid`] if `temperature` is not a finite positive number or `logits` is empty.
pub fn softmax<F: Scalar>(logits: ArrayView1<'_, F>, temperature: F) -> Result<Array1<F>> {
    if !(temperature.is_finite() && temperature > F::zero()) {
        return Err(Error::invalid(
            "softmax",
            "temperature",
            format!("temperature = {temperature}: expected a finite number > 0"),
        ));
    }
    if logits.is_empty() {
        return Err(Error::invalid(
            "softmax",
            "logits",
            "no logits: expected at least one class",
        ));
    }
    let scaled = logits.mapv(|z| z / temperature);
    let m = scaled.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
    let mut p = scaled.mapv(|v| (v - m).exp());
    let s: F = p.iter().copied().sum();
    p.mapv_inplace(|v| v / s);
    Ok(p)
}

/// Row-wise softmax `pᵢⱼ = exp(zᵢⱼ − mᵢ) / Σₖ exp(zᵢₖ − mᵢ)`, `mᵢ = maxⱼ zᵢⱼ`;
/// `logits: (N, C) → p: (N, C)`.
pub fn softmax_rows<F: Scalar>(logits: ArrayView2<'_, F>) -> Array2<F> {
    let mut p = logits.to_owned();
    for mut row in p.axis_iter_mut(Axis(0)) {
        let m = row.iter().fold(F::neg_infinity(), |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let s: F = row.iter().copied().sum();
        row.mapv_inplace(|v| v / s);
    }
    p
}
