//! Fully connected layer `y = x·Wᵀ + b` (PyTorch `nn.Linear`).

use ndarray::{Array1, Array2, ArrayView2, Axis, Ix1, Ix2};

use crate::error::{Error, Result, fmt_shape};
use crate::gemm::{gemm, matmul};
use crate::init;
use crate::module::{Module, ParamVisitor};
use crate::{Mode, Param, Rng, Scalar};

/// Sizes of a [`Linear`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearConfig {
    /// Features per input row (`in_features`, the width of `x`).
    pub in_features: usize,
    /// Features per output row (`out_features`, the width of `y`).
    pub out_features: usize,
    /// Whether the layer adds a learnable bias `b` of shape `(out_features)`.
    pub bias: bool,
}

impl LinearConfig {
    /// `in_features → out_features` with a bias, as `nn.Linear(in, out)`.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// The same sizes with or without a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// `y = x·Wᵀ + b`; `x: (N, in_features) → y: (N, out_features)`.
///
/// Parameters (PyTorch names, in visiting order): `weight: (out_features, in_features)`,
/// `bias: (out_features)` (absent when the layer has no bias).
#[derive(Clone, Debug)]
pub struct Linear<F: Scalar> {
    /// `W: (out_features, in_features)`.
    pub weight: Param<F, Ix2>,
    /// `b: (out_features)`, if the layer has a bias.
    pub bias: Option<Param<F, Ix1>>,
    /// The input of the last train-mode forward, kept for `∂L/∂W`. // (N, in)
    x: Option<Array2<F>>,
}

impl<F: Scalar> Linear<F> {
    /// A layer with PyTorch's default initialisation: `W` and `b` ~ U(−1/√in, 1/√in), drawn from
    /// `rng` in row-major order, weight first.
    pub fn new(cfg: LinearConfig, rng: &mut Rng) -> Self {
        let bound = init::default_bound(cfg.in_features);
        let weight = init::uniform((cfg.out_features, cfg.in_features), bound, rng);
        let bias = cfg
            .bias
            .then(|| Param::new(init::uniform(cfg.out_features, bound, rng)));
        Linear {
            weight: Param::new(weight),
            bias,
            x: None,
        }
    }

    /// A layer with the given weights: `weight: (out_features, in_features)`,
    /// `bias: (out_features)` or `None` for a layer without bias.
    ///
    /// # Errors
    /// [`Error::Shape`] if the bias length is not `out_features`.
    pub fn from_weights(weight: Array2<F>, bias: Option<Array1<F>>) -> Result<Self> {
        let out = weight.nrows();
        if let Some(b) = &bias
            && b.len() != out
        {
            return Err(Error::shape(
                "Linear::from_weights",
                "bias (out_features)",
                format!("({out}) to match weight {}", fmt_shape(weight.shape())),
                b.shape(),
            ));
        }
        Ok(Linear {
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            x: None,
        })
    }

    /// `in_features`, the width of the input.
    pub fn in_features(&self) -> usize {
        self.weight.value.ncols()
    }

    /// `out_features`, the width of the output.
    pub fn out_features(&self) -> usize {
        self.weight.value.nrows()
    }

    /// The sizes of this layer.
    pub fn config(&self) -> LinearConfig {
        LinearConfig {
            in_features: self.in_features(),
            out_features: self.out_features(),
            bias: self.bias.is_some(),
        }
    }

    /// `y = x·Wᵀ + b`; `x: (N, in_features) → y: (N, out_features)`.
    ///
    /// In [`Mode::Train`] a copy of `x` is kept for [`Linear::backward`]; in [`Mode::Eval`] (or on
    /// error) nothing is kept, and an earlier cache is dropped.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not have `in_features` columns.
    pub fn forward(&mut self, x: ArrayView2<'_, F>, mode: Mode) -> Result<Array2<F>> {
        self.x = None;
        let (n, k) = x.dim();
        if k != self.in_features() {
            return Err(Error::shape(
                "Linear::forward",
                "input (N, in_features)",
                format!("(_, {})", self.in_features()),
                x.shape(),
            ));
        }
        let mut y = Array2::zeros((n, self.out_features())); // (N, out)
        let beta = match &self.bias {
            Some(b) => {
                y.assign(
                    &b.value
                        .broadcast((n, self.out_features()))
                        .expect("(out) → (N, out)"),
                );
                F::one()
            }
            None => F::zero(),
        };
        gemm(F::one(), x, self.weight.value.t(), beta, y.view_mut());
        self.x = mode.is_train().then(|| x.to_owned());
        Ok(y)
    }

    /// Given `dy = ∂L/∂y: (N, out_features)`, accumulates `∂L/∂W += dyᵀ·x` and
    /// `∂L/∂b += Σ_rows dy`, and returns `∂L/∂x = dy·W: (N, in_features)`.
    ///
    /// Uses (and releases) the input kept by the last train-mode forward.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// is not `(N, out_features)` for the `N` of that forward.
    pub fn backward(&mut self, dy: ArrayView2<'_, F>) -> Result<Array2<F>> {
        let x = self.x.as_ref().ok_or(Error::NoForwardCache {
            op: "Linear::backward",
        })?;
        let want = [x.nrows(), self.out_features()];
        if dy.shape() != want {
            return Err(Error::shape(
                "Linear::backward",
                "dy (N, out_features)",
                fmt_shape(&want),
                dy.shape(),
            ));
        }
        let x = self.x.take().expect("checked above");
        gemm(
            F::one(),
            dy.t(),
            x.view(),
            F::one(),
            self.weight.grad.view_mut(),
        );
        if let Some(b) = &mut self.bias {
            b.grad += &dy.sum_axis(Axis(0));
        }
        Ok(matmul(dy, self.weight.value.view()))
    }
}

impl<F: Scalar> Module<F> for Linear<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        f("weight", self.weight.as_mut());
        if let Some(b) = &mut self.bias {
            f("bias", b.as_mut());
        }
    }
}
