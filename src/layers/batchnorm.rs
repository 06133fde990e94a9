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
//! All per-channel sums are accumulated in `f64` (also for `f32` tensors), and the channels are
//! processed in parallel with rayon when the tensor is large; every channel is summed in the same
//! order either way, so the result does not depend on the number of threads.

use ndarray::{Array1, Array4, ArrayD, ArrayView4, ArrayViewD, Axis, Ix1, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result, fmt_shape};
use crate::module::{BufferMut, BufferVisitor, Module, ParamVisitor};
use crate::{Mode, Param, Scalar};

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
    /// The normalised input `x̂ = (x − μ)·s`. // (N, C, H, W)
    x_hat: Array4<F>,
    /// `s = 1/√(σ² + eps)` per channel, in f64. // (C)
    inv_std: Vec<f64>,
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
        const OP: &str = "BatchNorm2d::forward";
        self.cache = None;
        let (bn, c, h, w) = x.dim();
        if c != self.num_features() {
            return Err(Error::shape(
                OP,
                "input",
                format!("(N, {}, H, W)", self.num_features()),
                x.shape(),
            ));
        }
        let n = bn * h * w;
        let mut y = Array4::<F>::zeros((bn, c, h, w)); // (N, C, H, W)
        let parallel = x.len() >= PARALLEL_MIN_LEN;
        let affine: Vec<(f64, f64)> = (0..c).map(|k| (self.gamma(k), self.beta(k))).collect();

        if !mode.is_train() {
            let stats: Vec<(f64, f64)> = (0..c)
                .map(|k| {
                    let s = 1.0 / (self.running_var[k].f64() + self.eps).sqrt();
                    (self.running_mean[k].f64(), s)
                })
                .collect();
            let items: Vec<_> = x.axis_iter(Axis(1)).zip(y.axis_iter_mut(Axis(1))).collect();
            per_channel(items, parallel, |k, (xc, mut yc)| {
                let (mean, s) = stats[k];
                let (g, b) = affine[k];
                yc.zip_mut_with(&xc, |yv, &xv| *yv = F::of((xv.f64() - mean) * s * g + b));
            });
            return Ok(y);
        }

        if n <= 1 {
            return Err(Error::invalid(
                OP,
                "input",
                format!(
                    "expected more than 1 value per channel when training, got input {} \
                     (N·H·W = {n})",
                    fmt_shape(x.shape())
                ),
            ));
        }
        let mut x_hat = Array4::<F>::zeros((bn, c, h, w)); // (N, C, H, W)
        let (nf, eps) = (n as f64, self.eps);
        let items: Vec<_> = x
            .axis_iter(Axis(1))
            .zip(x_hat.axis_iter_mut(Axis(1)))
            .zip(y.axis_iter_mut(Axis(1)))
            .collect();
        // Per channel: (μ, Σ(x − μ)², s), writing x̂ and y.
        let stats = per_channel(items, parallel, |k, ((xc, mut xhc), mut yc)| {
            let mean = xc.iter().map(|v| v.f64()).sum::<f64>() / nf;
            let sq: f64 = xc
                .iter()
                .map(|v| {
                    let d = v.f64() - mean;
                    d * d
                })
                .sum();
            let s = 1.0 / (sq / nf + eps).sqrt();
            let (g, b) = affine[k];
            Zip::from(&mut xhc)
                .and(&mut yc)
                .and(&xc)
                .for_each(|xh, yv, &xv| {
                    let v = (xv.f64() - mean) * s;
                    *xh = F::of(v);
                    *yv = F::of(v * g + b);
                });
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
            x_hat,
            inv_std: stats.iter().map(|s| s.2).collect(),
        });
        Ok(y)
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
        const OP: &str = "BatchNorm2d::backward";
        let cache = self
            .cache
            .as_ref()
            .ok_or(Error::NoForwardCache { op: OP })?;
        if dy.shape() != cache.x_hat.shape() {
            return Err(Error::shape(
                OP,
                "dy (N, C, H, W)",
                fmt_shape(cache.x_hat.shape()),
                dy.shape(),
            ));
        }
        let cache = self.cache.take().expect("checked above");
        let (bn, c, h, w) = dy.dim();
        let nf = (bn * h * w) as f64;
        let parallel = dy.len() >= PARALLEL_MIN_LEN;
        let gammas: Vec<f64> = (0..c).map(|k| self.gamma(k)).collect();
        let mut dx = Array4::<F>::zeros((bn, c, h, w)); // (N, C, H, W)

        let items: Vec<_> = dy
            .axis_iter(Axis(1))
            .zip(cache.x_hat.axis_iter(Axis(1)))
            .zip(dx.axis_iter_mut(Axis(1)))
            .collect();
        // Per channel: (Σ dy, Σ dy·x̂), writing dx.
        let sums = per_channel(items, parallel, |k, ((dyc, xhc), mut dxc)| {
            let (mut s_dy, mut s_dyxh) = (0.0f64, 0.0f64);
            Zip::from(&dyc).and(&xhc).for_each(|&d, &xh| {
                s_dy += d.f64();
                s_dyxh += d.f64() * xh.f64();
            });
            let scale = gammas[k] * cache.inv_std[k] / nf;
            Zip::from(&mut dxc)
                .and(&dyc)
                .and(&xhc)
                .for_each(|dxv, &d, &xh| {
                    *dxv = F::of(scale * (nf * d.f64() - s_dy - xh.f64() * s_dyxh));
                });
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
        Ok(dx)
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
