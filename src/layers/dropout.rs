//! Inverted dropout (PyTorch `nn.Dropout`).

use ndarray::{Array, ArrayD, ArrayView, Dimension, IxDyn, Zip};

use crate::error::{Error, Result, fmt_shape};
use crate::{Mode, Rng, Scalar};

/// A dropout mask of the given shape: each element is `0` with probability `p` and `1/(1 − p)`
/// otherwise, so `E[mask] = 1`.
///
/// One `rng.uniform()` is drawn per element in row-major order and the element is dropped when the
/// draw is `< p`. `p ≤ 0` gives all ones and `p ≥ 1` all zeros, without drawing. `p` is meant to be
/// validated by the caller (as [`Dropout::new`] does); a NaN `p` is treated as 0.
///
/// The recurrent layers reuse this for the dropout between stacked layers.
pub fn dropout_mask<F: Scalar>(shape: &[usize], p: f64, rng: &mut Rng) -> ArrayD<F> {
    let shape = IxDyn(shape);
    if p.is_nan() || p <= 0.0 {
        return ArrayD::ones(shape);
    }
    if p >= 1.0 {
        return ArrayD::zeros(shape);
    }
    let scale = F::of(1.0 / (1.0 - p));
    let mut mask = ArrayD::zeros(shape);
    for m in mask.iter_mut() {
        if rng.uniform() >= p {
            *m = scale;
        }
    }
    mask
}

/// Inverted dropout: in [`Mode::Train`], `y = x ⊙ m` with `m` from [`dropout_mask`] (each element
/// zeroed with probability `p`, the others scaled by `1/(1 − p)`); in [`Mode::Eval`], `y = x`.
/// Any shape in, the same shape out.
#[derive(Clone, Debug)]
pub struct Dropout<F: Scalar> {
    p: f64,
    /// The mask of the last train-mode forward. // shape of x
    mask: Option<ArrayD<F>>,
}

impl<F: Scalar> Dropout<F> {
    /// Dropout with drop probability `p`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `p` unless `0 ≤ p ≤ 1`.
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "Dropout::new",
                "p",
                format!("p = {p} is a drop probability: expected 0 ≤ p ≤ 1"),
            ));
        }
        Ok(Dropout { p, mask: None })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Train: `y = x ⊙ m`, the mask `m` drawn from `rng` (see [`dropout_mask`]) and kept for
    /// backward. Eval: `y = x`, nothing drawn, nothing kept. `x: (any shape) → y: (same shape)`.
    pub fn forward<D: Dimension>(
        &mut self,
        x: ArrayView<'_, F, D>,
        mode: Mode,
        rng: &mut Rng,
    ) -> Array<F, D> {
        match mode {
            Mode::Eval => {
                self.mask = None;
                x.to_owned()
            }
            Mode::Train => {
                let mask = dropout_mask::<F>(x.shape(), self.p, rng);
                let y = Zip::from(&x)
                    .and(&mask.view().into_dimensionality::<D>().expect("same shape"))
                    .map_collect(|&x, &m| x * m);
                self.mask = Some(mask);
                y
            }
        }
    }

    /// Given `dy = ∂L/∂y`, returns `∂L/∂x = dy ⊙ m` with the mask of the last train-mode forward
    /// (which this call releases).
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// does not have the shape of that forward's input.
    pub fn backward<D: Dimension>(&mut self, dy: ArrayView<'_, F, D>) -> Result<Array<F, D>> {
        let mask = self.mask.as_ref().ok_or(Error::NoForwardCache {
            op: "Dropout::backward",
        })?;
        if mask.shape() != dy.shape() {
            return Err(Error::shape(
                "Dropout::backward",
                "dy (shape of the forward input)",
                fmt_shape(mask.shape()),
                dy.shape(),
            ));
        }
        let mask = self.mask.take().expect("checked above");
        let mask = mask
            .into_dimensionality::<D>()
            .expect("same shape implies same dimension");
        Ok(Zip::from(&dy).and(&mask).map_collect(|&g, &m| g * m))
    }
}
