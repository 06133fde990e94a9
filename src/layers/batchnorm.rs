//! Batch normalisation over the channels of NCHW images (PyTorch `nn.BatchNorm2d`).
//!
//! For every channel `c`, over the `n = N·H·W` values `x[·, c, ·, ·]`:
//!
//! ```text
//! train:  μ = mean(x),  σ² = mean((x − μ)²)          (biased, as in the normalisation)
//!         x̂ = (x − μ) / √(σ² + eps),   y = γ·x̂ + β
//!         running_mean ← (1 − m)·running_mean + m·μ
//!         running_var  ← (1 − m)·running_var  + m·σ²·n/(n − 1)   (unbiased)
//!         num_batches_tracked ← num_batches_tracked + 1
//! eval:   y = γ·(x − running_mean) / √(running_var + eps) + β
//! ```
//!
//! Backward (train mode), with `s = 1/√(σ² + eps)` and sums over the `n` values of a channel:
//!
//! ```text
//! ∂L/∂γ += Σ dy·x̂,   ∂L/∂β += Σ dy,   ∂L/∂x = (γ·s/n)·(n·dy − Σ dy − x̂·Σ(dy·x̂))
//! ```
//!
//! All per-channel sums are accumulated in `f64` (also for `f32` tensors), in a fixed number of
//! interleaved partial sums (so that the loops vectorise), and the elementwise maps are evaluated
//! in `f64` too. In the NCHW layout every `(n, c)` plane is contiguous: a channel is `N` slices of
//! `H·W` values, and every pass runs over those slices. The channels are processed in parallel
//! with rayon when the tensor is large; every channel is summed in the same order either way, so
//! the result does not depend on the number of threads.
//!
//! Inside the crate, the residual blocks call `BatchNorm2d::forward_in_place` and
//! `BatchNorm2d::backward_in_place`, which overwrite their argument instead of allocating, and
//! can fuse the ReLU that follows the normalisation: the output is `relu(γ·x̂ + β)`, and the
//! backward pass recomputes `γ·x̂ + β` from the kept `x̂` (with the γ, β of the forward pass) to
//! know where the ReLU let the gradient through.

use ndarray::{Array1, Array4, ArrayD, ArrayView4, ArrayViewD, Ix1};
use rayon::prelude::*;

use super::scratch;
use crate::error::{Error, Result, fmt_shape};
use crate::module::{BufferMut, BufferVisitor, Module, ParamVisitor};
use crate::{Mode, Param, Scalar, ops};

/// Tensors with at least this many elements are processed with one rayon task per channel.
const PARALLEL_MIN_LEN: usize = 1 << 15;

/// Hyper-parameters of a [`BatchNorm2d`] layer (PyTorch's defaults from [`BatchNormConfig::new`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Number of channels `C` of the `(N, C, H, W)` input (`num_features`).
    pub num_features: usize,
    /// Added to the variance before the square root (default `1e-5`); `≥ 0`.
    pub eps: f64,
    /// Weight `m` of the newest batch in the running statistics (default `0.1`); `0 ≤ m ≤ 1`.
    pub momentum: f64,
    /// Whether the layer has the learnable per-channel scale `γ` (`weight`) and shift `β`
    /// (`bias`) (default `true`). Without them `y = x̂`.
    pub affine: bool,
}

impl BatchNormConfig {
    /// `C` channels, `eps = 1e-5`, `momentum = 0.1`, affine, as `nn.BatchNorm2d(C)`.
    pub fn new(num_features: usize) -> Self {
        BatchNormConfig {
            num_features,
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        }
    }

    /// The same configuration with another `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The same configuration with another `momentum`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// The same configuration with or without `weight` and `bias`.
    pub fn with_affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }
}

/// What a train-mode forward keeps for the backward pass.
#[derive(Clone, Debug)]
struct Cache<F> {
    /// The input shape `(N, C, H, W)`.
    shape: [usize; 4],
    /// The normalised input `x̂ = (x − μ)·s`, standard layout. // (N, C, H, W)
    x_hat: Vec<F>,
    /// `s = 1/√(σ² + eps)` per channel, in f64. // (C)
    inv_std: Vec<f64>,
    /// `(γ, β)` per channel as the forward pass used them, if it fused a ReLU: the backward pass
    /// lets the gradient through where `γ·x̂ + β > 0`. // (C)
    relu: Option<Vec<(f64, f64)>>,
}

/// Batch normalisation of NCHW tensors per channel; `x: (N, C, H, W) → y: (N, C, H, W)`.
///
/// Train mode normalises with the batch statistics and updates the running statistics; eval mode
/// normalises with the running statistics (see the [module docs](self) for the formulas).
///
/// Parameters (PyTorch names, in visiting order), present when `affine`: `weight: (C)` = γ,
/// initialised to 1, and `bias: (C)` = β, initialised to 0. Buffers, in PyTorch's `state_dict`
/// order: `running_mean: (C)` (initially 0), `running_var: (C)` (initially 1) and
/// `num_batches_tracked` (a 0-d int64 counter, initially 0).
#[derive(Clone, Debug)]
pub struct BatchNorm2d<F: Scalar> {
    /// γ: `(C)`, if the layer is affine.
    pub weight: Option<Param<F, Ix1>>,
    /// β: `(C)`, if the layer is affine.
    pub bias: Option<Param<F, Ix1>>,
    running_mean: Array1<F>, // (C)
    running_var: Array1<F>,  // (C)
    num_batches_tracked: i64,
    eps: f64,
    momentum: f64,
    cache: Option<Cache<F>>,
    /// The `x̂` buffer released by the last backward pass, reused by the next train-mode forward
    /// (stale contents; dropped by an eval-mode forward).
    spare: Vec<F>,
}

impl<F: Scalar> BatchNorm2d<F> {
    /// A fresh layer as PyTorch creates it: γ = 1, β = 0, running mean 0, running variance 1,
    /// no batches tracked.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `num_features` is 0, `eps` is negative or not finite, or `momentum`
    /// is not in `[0, 1]`.
    pub fn new(cfg: BatchNormConfig) -> Result<Self> {
        const OP: &str = "BatchNorm2d::new";
        if cfg.num_features == 0 {
            return Err(Error::invalid(
                OP,
                "num_features",
                "expected at least 1 channel, got 0",
            ));
        }
        if !(cfg.eps.is_finite() && cfg.eps >= 0.0) {
            return Err(Error::invalid(
                OP,
                "eps",
                format!("expected a finite eps ≥ 0, got {}", cfg.eps),
            ));
        }
        if !(0.0..=1.0).contains(&cfg.momentum) {
            return Err(Error::invalid(
                OP,
                "momentum",
                format!("expected 0 ≤ momentum ≤ 1, got {}", cfg.momentum),
            ));
        }
        let c = cfg.num_features;
        Ok(BatchNorm2d {
            weight: cfg.affine.then(|| Param::new(Array1::ones(c))),
            bias: cfg.affine.then(|| Param::new(Array1::zeros(c))),
            running_mean: Array1::zeros(c),
            running_var: Array1::ones(c),
            num_batches_tracked: 0,
            eps: cfg.eps,
            momentum: cfg.momentum,
            cache: None,
            spare: Vec::new(),
        })
    }

    /// The configuration of this layer.
    pub fn config(&self) -> BatchNormConfig {
        BatchNormConfig {
            num_features: self.num_features(),
            eps: self.eps,
            momentum: self.momentum,
            affine: self.weight.is_some(),
        }
    }

    /// `C`, the number of channels.
    pub fn num_features(&self) -> usize {
        self.running_mean.len()
    }

    /// The running mean: `(C)`.
    pub fn running_mean(&self) -> &Array1<F> {
        &self.running_mean
    }

    /// The running (unbiased) variance: `(C)`.
    pub fn running_var(&self) -> &Array1<F> {
        &self.running_var
    }

    /// The number of train-mode forward passes since creation (or since the value was set).
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked
    }

    /// Replaces the running statistics: `mean: (C)`, `var: (C)`, and the batch counter.
    ///
    /// # Errors
    /// [`Error::Shape`] if `mean` or `var` does not have `C` elements; the layer is unchanged.
    pub fn set_running_stats(
        &mut self,
        mean: Array1<F>,
        var: Array1<F>,
        num_batches_tracked: i64,
    ) -> Result<()> {
        let c = self.num_features();
        for (what, a) in [("running_mean (C)", &mean), ("running_var (C)", &var)] {
            if a.len() != c {
                return Err(Error::shape(
                    "BatchNorm2d::set_running_stats",
                    what,
                    format!("({c})"),
                    a.shape(),
                ));
            }
        }
        self.running_mean = mean;
        self.running_var = var;
        self.num_batches_tracked = num_batches_tracked;
        Ok(())
    }

    /// Running mean 0, running variance 1, no batches tracked (`reset_running_stats`).
    pub fn reset_running_stats(&mut self) {
        self.running_mean.fill(F::zero());
        self.running_var.fill(F::one());
        self.num_batches_tracked = 0;
    }

    /// γ of channel `c` (1 without affine).
    fn gamma(&self, c: usize) -> f64 {
        self.weight.as_ref().map_or(1.0, |w| w.value[c].f64())
    }

    /// β of channel `c` (0 without affine).
    fn beta(&self, c: usize) -> f64 {
        self.bias.as_ref().map_or(0.0, |b| b.value[c].f64())
    }

    /// `y = γ·x̂ + β` per channel, `x: (N, C, H, W) → y: (N, C, H, W)`, with the batch statistics
    /// in [`Mode::Train`] and the running statistics in [`Mode::Eval`].
    ///
    /// [`Mode::Train`] also updates the running statistics and `num_batches_tracked` and keeps
    /// `x̂` and `1/√(σ² + eps)` for [`BatchNorm2d::backward`]. [`Mode::Eval`] (or an error) keeps
    /// nothing and drops an earlier cache.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not have `C` channels; [`Error::Invalid`] in train mode if a
    /// channel has at most one value (`N·H·W ≤ 1`: its variance is undefined).
    pub fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        self.forward_fused(x, mode, false)
    }

    /// [`BatchNorm2d::forward`], followed by a ReLU if `relu` (see
    /// `BatchNorm2d::forward_in_place`).
    pub(crate) fn forward_fused(
        &mut self,
        x: ArrayView4<'_, F>,
        mode: Mode,
        relu: bool,
    ) -> Result<Array4<F>> {
        self.cache = None;
        self.check_input(x.shape(), mode)?;
        let x = x.as_standard_layout(); // (N, C, H, W)
        // Stale values from the pool: the pass below writes every element.
        let mut y = scratch::array(x.raw_dim());
        let ys = y.as_slice_mut().expect("standard layout"); // (N, C, H, W)
        let xs = x.as_slice().expect("standard layout");
        self.forward_into(xs, ys, x.dim(), mode, relu);
        Ok(y)
    }

    /// The errors of [`BatchNorm2d::forward`] for an input of this shape.
    fn check_input(&self, shape: &[usize], mode: Mode) -> Result<()> {
        const OP: &str = "BatchNorm2d::forward";
        if shape[1] != self.num_features() {
            return Err(Error::shape(
                OP,
                "input",
                format!("(N, {}, H, W)", self.num_features()),
                shape,
            ));
        }
        let n = shape[0] * shape[2] * shape[3];
        if mode.is_train() && n <= 1 {
            return Err(Error::invalid(
                OP,
                "input",
                format!(
                    "expected more than 1 value per channel when training, got input {} \
                     (N·H·W = {n})",
                    fmt_shape(shape)
                ),
            ));
        }
        Ok(())
    }

    /// [`BatchNorm2d::forward`] overwriting its input, `x ← γ·x̂ + β`, or with `relu`
    /// `x ← max(γ·x̂ + β, 0)` (the ReLU that follows the normalisation in a residual block, whose
    /// derivative the next `BatchNorm2d::backward_in_place` then applies).
    ///
    /// # Errors
    /// Those of [`BatchNorm2d::forward`]; `x` is unchanged then.
    pub(crate) fn forward_in_place(
        &mut self,
        x: &mut Array4<F>,
        mode: Mode,
        relu: bool,
    ) -> Result<()> {
        // Into a pooled buffer that then takes the input's place (reading and writing one
        // buffer would need a copy of every plane first).
        let y = self.forward_fused(x.view(), mode, relu)?;
        scratch::recycle(std::mem::replace(x, y));
        Ok(())
    }

    /// The forward pass on checked standard-layout buffers of shape `(N, C, H, W)`: `y ← bn(x)`
    /// (then ReLU if `relu`).
    fn forward_into(
        &mut self,
        x: &[F],
        y: &mut [F],
        (bn, c, h, w): (usize, usize, usize, usize),
        mode: Mode,
        relu: bool,
    ) {
        let (nf, eps, hw) = ((bn * h * w) as f64, self.eps, h * w);
        let parallel = y.len() >= PARALLEL_MIN_LEN;
        let affine: Vec<(f64, f64)> = (0..c).map(|k| (self.gamma(k), self.beta(k))).collect();
        let x_planes = channel_planes(x, c, hw);

        if !mode.is_train() {
            self.spare = Vec::new();
            let stats: Vec<(f64, f64)> = (0..c)
                .map(|k| {
                    let s = 1.0 / (self.running_var[k].f64() + eps).sqrt();
                    (self.running_mean[k].f64(), s)
                })
                .collect();
            per_channel(channel_planes(y, c, hw), parallel, |k, y_planes| {
                let (mean, s) = stats[k];
                let (g, b) = affine[k];
                for (x, y) in x_planes[k].iter().zip(y_planes) {
                    if relu {
                        eval_plane::<F, true>(x, y, mean, s, g, b);
                    } else {
                        eval_plane::<F, false>(x, y, mean, s, g, b);
                    }
                }
            });
            return;
        }

        let mut x_hat = std::mem::take(&mut self.spare); // (N, C, H, W)
        x_hat.resize(y.len(), F::zero());
        let items: Vec<_> = channel_planes(y, c, hw)
            .into_iter()
            .zip(channel_planes(&mut x_hat[..], c, hw))
            .collect();
        // Per channel: (μ, Σ(x − μ)², s), writing x̂ and y = γ·x̂ + β.
        let stats = per_channel(items, parallel, |k, (y_planes, xh_planes)| {
            let (mean, sq) = {
                let inputs = &x_planes[k];
                let mut acc = Lanes::default();
                for plane in inputs {
                    acc.add(plane, |v| v);
                }
                let mean = acc.total() / nf;
                let mut acc = Lanes::default();
                for plane in inputs {
                    acc.add(plane, |v| (v - mean) * (v - mean));
                }
                (mean, acc.total())
            };
            let s = 1.0 / (sq / nf + eps).sqrt();
            let (g, b) = affine[k];
            let planes = x_planes[k].iter().zip(xh_planes).zip(y_planes);
            for ((x, xh), y) in planes {
                if relu {
                    train_plane::<F, true>(x, xh, y, mean, s, g, b);
                } else {
                    train_plane::<F, false>(x, xh, y, mean, s, g, b);
                }
            }
            (mean, sq, s)
        });

        let m = self.momentum;
        for (k, &(mean, sq, _)) in stats.iter().enumerate() {
            let rm = &mut self.running_mean[k];
            *rm = F::of((1.0 - m) * rm.f64() + m * mean);
            let rv = &mut self.running_var[k];
            *rv = F::of((1.0 - m) * rv.f64() + m * sq / (nf - 1.0));
        }
        self.num_batches_tracked += 1;
        self.cache = Some(Cache {
            shape: [bn, c, h, w],
            x_hat,
            inv_std: stats.iter().map(|s| s.2).collect(),
            relu: relu.then_some(affine),
        });
    }

    /// [`BatchNorm2d::forward`] for an input of unchecked rank, e.g. one read from a file.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` is not 4-dimensional; otherwise those of
    /// [`BatchNorm2d::forward`].
    pub fn forward_dyn(&mut self, x: ArrayViewD<'_, F>, mode: Mode) -> Result<ArrayD<F>> {
        let shape = x.shape().to_vec();
        let Ok(x4) = x.into_dimensionality() else {
            self.cache = None;
            return Err(Error::shape(
                "BatchNorm2d::forward",
                "input",
                format!("(N, {}, H, W)", self.num_features()),
                &shape,
            ));
        };
        Ok(self.forward(x4, mode)?.into_dyn())
    }

    /// Given `dy = ∂L/∂y: (N, C, H, W)`, accumulates `∂L/∂γ += Σ dy·x̂` and `∂L/∂β += Σ dy` (sums
    /// over N, H, W per channel) and returns
    /// `∂L/∂x = (γ·s/n)·(n·dy − Σ dy − x̂·Σ(dy·x̂)): (N, C, H, W)`, `s = 1/√(σ² + eps)`,
    /// `n = N·H·W`.
    ///
    /// Uses (and releases) what the last train-mode forward kept.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// does not have the shape of that forward's input.
    pub fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        self.check_grad(dy.shape())?;
        let dy = dy.as_standard_layout(); // (N, C, H, W)
        // Stale values from the pool: the pass below writes every element.
        let mut dx = scratch::array(dy.raw_dim());
        let dys = dy.as_slice().expect("standard layout");
        self.backward_into(dys, dx.as_slice_mut().expect("standard layout"));
        Ok(dx)
    }

    /// The errors of [`BatchNorm2d::backward`] for a gradient of this shape.
    fn check_grad(&self, shape: &[usize]) -> Result<()> {
        const OP: &str = "BatchNorm2d::backward";
        let cache = self
            .cache
            .as_ref()
            .ok_or(Error::NoForwardCache { op: OP })?;
        if shape != cache.shape {
            return Err(Error::shape(
                OP,
                "dy (N, C, H, W)",
                fmt_shape(&cache.shape),
                shape,
            ));
        }
        Ok(())
    }

    /// [`BatchNorm2d::backward`] overwriting its argument: `d ← ∂L/∂x` from `d = ∂L/∂y`, where
    /// `y` is the output of the last train-mode forward (after its ReLU, if it fused one: then
    /// `∂L/∂y` is first zeroed where `γ·x̂ + β ≤ 0`).
    ///
    /// # Errors
    /// Those of [`BatchNorm2d::backward`]; `d` is unchanged then.
    pub(crate) fn backward_in_place(&mut self, d: &mut Array4<F>) -> Result<()> {
        // Into a pooled buffer that then takes the gradient's place (see forward_in_place).
        let dx = self.backward(d.view())?;
        scratch::recycle(std::mem::replace(d, dx));
        Ok(())
    }

    /// The backward pass on checked standard-layout buffers of the cached shape: `dx ← bn′(dy)`.
    fn backward_into(&mut self, dy: &[F], dx: &mut [F]) {
        let cache = self.cache.take().expect("checked by the caller");
        let [bn, c, h, w] = cache.shape;
        let (nf, hw) = ((bn * h * w) as f64, h * w);
        let parallel = dx.len() >= PARALLEL_MIN_LEN;
        let gammas: Vec<f64> = (0..c).map(|k| self.gamma(k)).collect();
        let dy_planes = channel_planes(dy, c, hw);
        let items: Vec<_> = channel_planes(dx, c, hw)
            .into_iter()
            .zip(channel_planes(&cache.x_hat[..], c, hw))
            .collect();
        let relu = cache.relu.as_deref();
        // Per channel: (Σ dy, Σ dy·x̂), writing dx.
        let sums = per_channel(items, parallel, |k, (dx_planes, xh_planes)| {
            let (g, b) = relu.map_or((1.0, 0.0), |affine| affine[k]);
            let (mut acc_dy, mut acc_dyxh) = (Lanes::default(), Lanes::default());
            {
                for (dy, xh) in dy_planes[k].iter().zip(&xh_planes) {
                    if relu.is_some() {
                        grad_sums::<F, true>(&mut acc_dy, &mut acc_dyxh, dy, xh, g, b);
                    } else {
                        grad_sums::<F, false>(&mut acc_dy, &mut acc_dyxh, dy, xh, g, b);
                    }
                }
            }
            let (s_dy, s_dyxh) = (acc_dy.total(), acc_dyxh.total());
            let scale = gammas[k] * cache.inv_std[k] / nf;
            let coef = (scale * nf, scale * s_dy, scale * s_dyxh);
            for ((dy, xh), dx) in dy_planes[k].iter().zip(xh_planes).zip(dx_planes) {
                if relu.is_some() {
                    grad_plane::<F, true>(dy, xh, dx, coef, g, b);
                } else {
                    grad_plane::<F, false>(dy, xh, dx, coef, g, b);
                }
            }
            (s_dy, s_dyxh)
        });
        if let Some(wt) = &mut self.weight {
            for (g, s) in wt.grad.iter_mut().zip(&sums) {
                *g += F::of(s.1);
            }
        }
        if let Some(b) = &mut self.bias {
            for (g, s) in b.grad.iter_mut().zip(&sums) {
                *g += F::of(s.0);
            }
        }
        self.spare = cache.x_hat;
    }
}

// The per-plane loops: straight-line bodies (the ReLU is a select, chosen at compile time) so
// that they vectorise. `x̂` is rounded to `F` before `y = γ·x̂ + β` is formed, so that the
// backward pass, which sees only the rounded `x̂`, finds the same sign of `γ·x̂ + β`.

/// `y = γ·x̂ + β` (then `max(y, 0)` if `RELU`) for `x̂ = (x − μ)·s`, over `x` in place.
#[inline(always)]
fn affine<F: Scalar, const RELU: bool>(xh: F, g: f64, b: f64) -> F {
    let y = F::of(xh.f64() * g + b);
    if RELU { ops::relu(y) } else { y }
}

/// Train mode, one plane: `x̂ ← (x − μ)·s`, `y ← γ·x̂ + β` (then ReLU if `RELU`).
fn train_plane<F: Scalar, const RELU: bool>(
    x: &[F],
    x_hat: &mut [F],
    y: &mut [F],
    mean: f64,
    s: f64,
    g: f64,
    b: f64,
) {
    crate::fastmath::vectorised(
        #[inline(always)]
        || {
            for ((&v, xh), y) in x.iter().zip(x_hat.iter_mut()).zip(y.iter_mut()) {
                *xh = F::of((v.f64() - mean) * s);
                *y = affine::<F, RELU>(*xh, g, b);
            }
        },
    )
}

/// Eval mode, one plane: `y ← γ·(x − mean)·s + β` (then ReLU if `RELU`), running statistics.
fn eval_plane<F: Scalar, const RELU: bool>(
    x: &[F],
    y: &mut [F],
    mean: f64,
    s: f64,
    g: f64,
    b: f64,
) {
    crate::fastmath::vectorised(
        #[inline(always)]
        || {
            for (&v, y) in x.iter().zip(y.iter_mut()) {
                let t = F::of((v.f64() - mean) * s * g + b);
                *y = if RELU { ops::relu(t) } else { t };
            }
        },
    )
}

/// `dy`, or with a fused ReLU `dy·[γ·x̂ + β > 0]` (its derivative from the output).
#[inline(always)]
fn gate<F: Scalar, const RELU: bool>(dy: F, xh: F, g: f64, b: f64) -> f64 {
    if RELU {
        (dy * ops::relu_grad_from_output(affine::<F, false>(xh, g, b))).f64()
    } else {
        dy.f64()
    }
}

/// Adds `Σ dy` and `Σ dy·x̂` of one plane (`dy` gated by the ReLU if `RELU`).
fn grad_sums<F: Scalar, const RELU: bool>(
    acc_dy: &mut Lanes,
    acc_dyxh: &mut Lanes,
    dy: &[F],
    x_hat: &[F],
    g: f64,
    b: f64,
) {
    crate::fastmath::vectorised(
        #[inline(always)]
        || {
            let (mut s1, mut s2) = (acc_dy.0, acc_dyxh.0);
            let (mut dc, mut xc) = (dy.chunks_exact(LANES), x_hat.chunks_exact(LANES));
            for (d, x) in (&mut dc).zip(&mut xc) {
                for i in 0..LANES {
                    let d = gate::<F, RELU>(d[i], x[i], g, b);
                    s1[i] += d;
                    s2[i] += d * x[i].f64();
                }
            }
            for (i, (&d, &x)) in dc.remainder().iter().zip(xc.remainder()).enumerate() {
                let d = gate::<F, RELU>(d, x, g, b);
                s1[i] += d;
                s2[i] += d * x.f64();
            }
            (acc_dy.0, acc_dyxh.0) = (s1, s2);
        },
    )
}

/// One plane of `∂L/∂x = (γ·s/n)·(n·dy − Σ dy − x̂·Σ(dy·x̂))` into `dx`, with
/// `coef = (γ·s, γ·s·Σ dy / n, γ·s·Σ(dy·x̂) / n)`.
fn grad_plane<F: Scalar, const RELU: bool>(
    dy: &[F],
    x_hat: &[F],
    dx: &mut [F],
    coef: (f64, f64, f64),
    g: f64,
    b: f64,
) {
    crate::fastmath::vectorised(
        #[inline(always)]
        || {
            let (a, c0, c1) = coef;
            for ((&d, &xh), dx) in dy.iter().zip(x_hat).zip(dx.iter_mut()) {
                *dx = F::of(a * gate::<F, RELU>(d, xh, g, b) - c0 - xh.f64() * c1);
            }
        },
    )
}

/// The `(n, c)` planes of a standard-layout `(N, C, H, W)` buffer (each `H·W` contiguous values),
/// grouped by channel: `result[c][n]`.
fn channel_planes<S: SplitPlanes>(data: S, c: usize, hw: usize) -> Vec<Vec<S>> {
    let mut by_channel: Vec<Vec<S>> = (0..c).map(|_| Vec::new()).collect();
    if hw > 0 {
        for (p, plane) in data.planes(hw).into_iter().enumerate() {
            by_channel[p % c].push(plane);
        }
    }
    by_channel
}

/// Shared or mutable slices cut into planes of `hw` values, for [`channel_planes`].
trait SplitPlanes: Sized {
    fn planes(self, hw: usize) -> Vec<Self>;
}

impl<F> SplitPlanes for &[F] {
    fn planes(self, hw: usize) -> Vec<Self> {
        self.chunks_exact(hw).collect()
    }
}

impl<F> SplitPlanes for &mut [F] {
    fn planes(self, hw: usize) -> Vec<Self> {
        self.chunks_exact_mut(hw).collect()
    }
}

/// Number of interleaved partial sums in [`Lanes`].
const LANES: usize = 8;

/// A sum in `f64` kept as [`LANES`] partial sums: element `i` of a slice goes to partial sum
/// `i mod LANES` (each slice starts again at 0), so the additions are independent and vectorise,
/// and their order depends only on the slice lengths.
#[derive(Default)]
struct Lanes([f64; LANES]);

impl Lanes {
    /// Adds `f(v)` for every `v` in `xs`.
    #[inline(always)]
    fn add<F: Scalar>(&mut self, xs: &[F], f: impl Fn(f64) -> f64) {
        crate::fastmath::vectorised(
            #[inline(always)]
            || {
                let mut acc = self.0;
                let mut chunks = xs.chunks_exact(LANES);
                for chunk in &mut chunks {
                    for i in 0..LANES {
                        acc[i] += f(chunk[i].f64());
                    }
                }
                for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
                    *a += f(v.f64());
                }
                self.0 = acc;
            },
        )
    }

    /// The sum of the partial sums, in lane order.
    fn total(&self) -> f64 {
        self.0.iter().sum()
    }
}

/// `f(k, items[k])` for every channel `k`, on the rayon pool if `parallel`, results in channel
/// order. Each call does the same work either way, so the results do not depend on the threads.
fn per_channel<T: Send, R: Send>(
    items: Vec<T>,
    parallel: bool,
    f: impl Fn(usize, T) -> R + Sync + Send,
) -> Vec<R> {
    if parallel {
        items
            .into_par_iter()
            .enumerate()
            .map(|(k, t)| f(k, t))
            .collect()
    } else {
        items
            .into_iter()
            .enumerate()
            .map(|(k, t)| f(k, t))
            .collect()
    }
}

impl<F: Scalar> Module<F> for BatchNorm2d<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        if let Some(w) = &mut self.weight {
            f("weight", w.as_mut());
        }
        if let Some(b) = &mut self.bias {
            f("bias", b.as_mut());
        }
    }

    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        f(
            "running_mean",
            BufferMut::Values(self.running_mean.view_mut().into_dyn()),
        );
        f(
            "running_var",
            BufferMut::Values(self.running_var.view_mut().into_dyn()),
        );
        f(
            "num_batches_tracked",
            BufferMut::Count(&mut self.num_batches_tracked),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rng, init};

    /// The crate-internal in-place passes are the public ones bit for bit, and the fused ReLU is
    /// `relu(bn(x))` forward and `bn′(dy ⊙ [y > 0])` backward, also bit for bit.
    #[test]
    fn in_place_and_fused_relu_passes_equal_the_public_ones() {
        let mut rng = Rng::seed(3);
        let x: Array4<f32> = init::normal((3, 2, 4, 5), 0.5, 1.0, &mut rng);
        let dy: Array4<f32> = init::normal((3, 2, 4, 5), 0.0, 1.0, &mut rng);
        let mut layer = BatchNorm2d::<f32>::new(BatchNormConfig::new(2)).unwrap();
        layer.weight.as_mut().unwrap().value = Array1::from(vec![1.5, -0.7]);
        layer.bias.as_mut().unwrap().value = Array1::from(vec![0.2, 0.1]);
        let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for mode in [Mode::Train, Mode::Eval] {
            let mut public = layer.clone();
            let y = public.forward(x.view(), mode).unwrap();
            let y_relu = y.mapv(ops::relu);
            let mut in_place = layer.clone();
            let mut y2 = x.clone();
            in_place.forward_in_place(&mut y2, mode, false).unwrap();
            assert_eq!(bits(&y), bits(&y2), "{mode:?}");
            let mut fused = layer.clone();
            let mut y3 = x.clone();
            fused.forward_in_place(&mut y3, mode, true).unwrap();
            assert_eq!(bits(&y_relu), bits(&y3), "{mode:?}");
            assert!(y3.iter().any(|&v| v == 0.0) && y3.iter().any(|&v| v > 0.0));
            let y4 = layer.clone().forward_fused(x.view(), mode, true).unwrap();
            assert_eq!(bits(&y_relu), bits(&y4), "{mode:?}");
            if !mode.is_train() {
                continue;
            }
            let dx = public.backward(dy.view()).unwrap();
            let mut dx2 = dy.clone();
            in_place.backward_in_place(&mut dx2).unwrap();
            assert_eq!(bits(&dx), bits(&dx2));
            // Fused: the gradient through the ReLU first, then the unfused backward pass.
            let mut unfused = layer.clone();
            unfused.forward(x.view(), mode).unwrap();
            let gated = &dy * &y.mapv(ops::relu_grad_from_output);
            let want = unfused.backward(gated.view()).unwrap();
            let mut dx3 = dy.clone();
            fused.backward_in_place(&mut dx3).unwrap();
            assert_eq!(bits(&want), bits(&dx3));
            let (gw, gb) = (
                &fused.weight.as_ref().unwrap().grad,
                &unfused.weight.as_ref().unwrap().grad,
            );
            assert_eq!(gw, gb);
            assert_eq!(
                fused.bias.as_ref().unwrap().grad,
                unfused.bias.as_ref().unwrap().grad
            );
        }
    }
}
