//! Elementwise activations as layers: [`Tanh`], [`Sigmoid`], [`Relu`].
//!
//! Each works on arrays of any dimension and keeps its *output* `y` in [`Mode::Train`]: all three
//! derivatives are functions of the output (`1 − y²`, `y(1 − y)`, `[y > 0]`), see [`crate::ops`].

use ndarray::{Array, ArrayD, ArrayView, Dimension, Zip};

use crate::error::{Error, Result, fmt_shape};
use crate::{Mode, Scalar, ops};

/// The output of the last train-mode forward, shared by the three activations.
#[derive(Clone, Debug, Default)]
struct OutputCache<F> {
    y: Option<ArrayD<F>>, // same shape as x
}

impl<F: Scalar> OutputCache<F> {
    fn forward<D: Dimension>(
        &mut self,
        x: ArrayView<'_, F, D>,
        mode: Mode,
        f: fn(F) -> F,
    ) -> Array<F, D> {
        let y = x.mapv(f);
        self.y = mode.is_train().then(|| y.clone().into_dyn());
        y
    }

    fn backward<D: Dimension>(
        &mut self,
        op: &'static str,
        dy: ArrayView<'_, F, D>,
        grad_from_output: fn(F) -> F,
    ) -> Result<Array<F, D>> {
        let y = self.y.as_ref().ok_or(Error::NoForwardCache { op })?;
        if y.shape() != dy.shape() {
            return Err(Error::shape(
                op,
                "dy (shape of the forward output)",
                fmt_shape(y.shape()),
                dy.shape(),
            ));
        }
        let y = self.y.take().expect("checked above");
        let y = y
            .into_dimensionality::<D>()
            .expect("same shape implies same dimension");
        Ok(Zip::from(&dy)
            .and(&y)
            .map_collect(|&g, &y| g * grad_from_output(y)))
    }
}

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, $op:literal, $f:path, $grad:path, $math:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $name<F: Scalar> {
            cache: OutputCache<F>,
        }

        impl<F: Scalar> $name<F> {
            /// A layer with nothing kept.
            pub fn new() -> Self {
                $name {
                    cache: OutputCache { y: None },
                }
            }

            #[doc = concat!("`", $math, "` elementwise; `x: (any shape) → y: (same shape)`.")]
            ///
            /// Keeps `y` in [`Mode::Train`]; keeps nothing (and drops an earlier cache) in
            /// [`Mode::Eval`].
            pub fn forward<D: Dimension>(
                &mut self,
                x: ArrayView<'_, F, D>,
                mode: Mode,
            ) -> Array<F, D> {
                self.cache.forward(x, mode, $f)
            }

            /// Given `dy = ∂L/∂y` (shape of the forward output), returns
            /// `∂L/∂x = dy ⊙ y′` with the derivative computed from the kept output, which this
            /// call releases.
            ///
            /// # Errors
            /// [`Error::NoForwardCache`] without a train-mode forward before it;
            /// [`Error::Shape`] if `dy` does not have the shape of that forward's output.
            pub fn backward<D: Dimension>(
                &mut self,
                dy: ArrayView<'_, F, D>,
            ) -> Result<Array<F, D>> {
                self.cache.backward($op, dy, $grad)
            }
        }
    };
}

activation!(
    /// `y = tanh(x)`, `∂y/∂x = 1 − y²`.
    Tanh,
    "Tanh::backward",
    ops::tanh,
    ops::tanh_grad_from_output,
    "y = tanh(x)"
);

activation!(
    /// `y = σ(x) = 1 / (1 + e⁻ˣ)`, `∂y/∂x = y(1 − y)`.
    Sigmoid,
    "Sigmoid::backward",
    ops::sigmoid,
    ops::sigmoid_grad_from_output,
    "y = σ(x)"
);

activation!(
    /// `y = max(x, 0)`, `∂y/∂x = 1` where `y > 0`, else `0` (also at `x = 0`, as PyTorch).
    Relu,
    "Relu::backward",
    ops::relu,
    ops::relu_grad_from_output,
    "y = max(x, 0)"
);
