//! 2-D convolution (PyTorch `nn.Conv2d`) as matrix products over the column matrix (im2col),
//! parallel over the batch.
//!
//! For one image `x: (C_in, H, W)` the *column matrix* (im2col) has one row per weight element of
//! a group and one column per output pixel:
//!
//! ```text
//! cols[(c·kh + i)·kw + j, oh·OW + ow] = x[c, oh·sh + i·dh − ph, ow·sw + j·dw − pw]   (0 outside x)
//! cols: (C_in·kh·kw, OH·OW)
//! ```
//!
//! and the convolution of group `g` is one matrix product,
//! `y_g (C_out/G, OH·OW) = W_g (C_out/G, C_in/G·kh·kw) · cols_g (C_in/G·kh·kw, OH·OW)`, where
//! `cols_g` are the rows of the channels of group `g` (contiguous, because the channel is the
//! slowest index of a row). The backward pass is the two transposed products:
//!
//! * `dcols_g = W_gᵀ · dy_g`, followed by col2im, the adjoint of im2col, which adds every column
//!   entry back onto the input pixel it was copied from: that is `∂x`;
//! * `∂W_g += dy_g · cols_gᵀ`. The GEMM packs its right operand fast only when it is row-major,
//!   so this product reads `cols_gᵀ` from its own gather, *im2row*, made from the input stored
//!   channels last `(H·W, C_in)`: there the values of one kernel tap (and, with one group and no
//!   dilation, of a whole kernel row) are contiguous. Its columns come out in `(i, j, c)` order
//!   and are put back in PyTorch's `(c, i, j)` order once, when the gradient is added to `W`.
//!   The forward pass stores the input channels last for this (instead of a plain copy); for a
//!   stride-1 convolution of one group with a multiple of 16 input channels it stores it
//!   zero-padded as well, and the product reads `cols_gᵀ` there in place, in blocks of 16
//!   channels of one tap (`gemm::gemm_column_blocks`), with no gather at all.
//!
//! How the products read `cols` (`Lowering`), fastest first:
//!
//! * a 1×1 convolution with stride 1 and no padding needs no im2col: `cols` is the image itself
//!   (and `cols_nᵀ` the channels-last image);
//! * with stride 1 and one group (every 3×3 convolution of a ResNet but the downsampling ones),
//!   no `cols` is written at all (`Shifted`): on a zero-padded copy of the image, and with the
//!   output computed on the padded width (the extra columns dropped afterwards), the row of
//!   `cols` for channel `c` and tap `(i, j)` is the padded image itself from one offset, and the
//!   GEMM reads those overlapping rows in place (`gemm::gemm_offset_rows`). `∂x` is then also a
//!   stride-1 convolution, of `dy` zero-padded by `d·(k − 1) − p` with the flipped kernel
//!   `Wf[c, o, i, j] = W[o, c, kh−1−i, kw−1−j]`, and is computed the same way instead of
//!   through `dcols` and col2im. The forward sums are the ones of the `cols` product, bit for
//!   bit; `∂x` sums the same terms in another order;
//! * otherwise the rows of `cols` are gathered one at a time straight into the GEMM's packed
//!   panels (`gemm::gemm_rows`), in strips of output rows whose panels stay in the core's
//!   second-level cache, and `∂x` goes through `dcols` and col2im. With stride 1 and an output as
//!   wide as the input, a row of `cols` is the input plane shifted by a constant offset, so the
//!   gather and col2im copy or add it as one block and then fix up the few padding entries.
//!
//! Threads: images are independent in the forward pass and in `∂x`, so they are spread over the
//! current rayon pool. `∂W` and `∂b` are sums over the batch: the batch is cut into a number of
//! contiguous chunks that depends only on the batch size and the weight size (never on the thread
//! count), each chunk sums its images in order into its own partial gradient, and the partials are
//! added in chunk order. The bits of every result are therefore the same for any thread count and
//! any scheduling. Memory stays bounded: the scratch buffers (padded image, `cols` strip or
//! `colsᵀ`) of one image per running task, never of the whole batch.
//!
//! Allocation: a training step would otherwise ask the allocator for fresh megabytes for every
//! scratch buffer, output and cached input, and pay a page fault per 4 KiB to get them. The
//! scratch buffers and the outputs come from the per-thread pool of `layers::scratch`, and the
//! channels-last copy of the input is written into the buffer the previous backward pass released.

use std::ops::Range;

use ndarray::{Array1, Array4, ArrayView2, ArrayView4, ArrayViewMut2, Ix1, Ix4};
use rayon::prelude::*;

use super::scratch::{self, Scratch};
use crate::error::{Error, Result, fmt_shape};
use crate::gemm::{
    COLUMN_BLOCK, ROW_SLACK, gemm, gemm_column_blocks, gemm_offset_rows, gemm_rows, transpose,
};
use crate::init;
use crate::module::{Module, ParamVisitor};
use crate::{Mode, Param, Rng, Scalar};

/// Hyper-parameters of a [`Conv2d`] layer, with PyTorch's meaning. Pairs are `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Channels of the input, `C_in`.
    pub in_channels: usize,
    /// Channels of the output, `C_out`.
    pub out_channels: usize,
    /// Kernel size `(kh, kw)`.
    pub kernel_size: (usize, usize),
    /// Step between neighbouring windows `(sh, sw)`.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input `(ph, pw)`.
    pub padding: (usize, usize),
    /// Spacing between kernel taps `(dh, dw)`; the dilated kernel spans `d·(k − 1) + 1` pixels.
    pub dilation: (usize, usize),
    /// Number of groups `G`: channels are split into `G` independent convolutions, each from
    /// `C_in/G` input to `C_out/G` output channels (`G = C_in = C_out` is a depthwise convolution).
    pub groups: usize,
    /// Whether the layer adds a learnable bias `b: (C_out)`.
    pub bias: bool,
}

impl Conv2dConfig {
    /// `nn.Conv2d(in_channels, out_channels, kernel_size)`: a square `k×k` kernel, stride 1,
    /// padding 0, dilation 1, one group, with bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: (kernel_size, kernel_size),
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }

    /// Kernel size `(kh, kw)`.
    pub fn kernel_size_hw(mut self, kernel_size: (usize, usize)) -> Self {
        self.kernel_size = kernel_size;
        self
    }

    /// The same stride `s` along height and width.
    pub fn stride(self, s: usize) -> Self {
        self.stride_hw((s, s))
    }

    /// Stride `(sh, sw)`.
    pub fn stride_hw(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }

    /// The same zero padding `p` on all four sides.
    pub fn padding(self, p: usize) -> Self {
        self.padding_hw((p, p))
    }

    /// Zero padding `(ph, pw)`: `ph` rows above and below, `pw` columns left and right.
    pub fn padding_hw(mut self, padding: (usize, usize)) -> Self {
        self.padding = padding;
        self
    }

    /// The same dilation `d` along height and width.
    pub fn dilation(self, d: usize) -> Self {
        self.dilation_hw((d, d))
    }

    /// Dilation `(dh, dw)`.
    pub fn dilation_hw(mut self, dilation: (usize, usize)) -> Self {
        self.dilation = dilation;
        self
    }

    /// Number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// With or without bias.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Checks that every size is positive and that both channel counts are divisible by `groups`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "Conv2dConfig";
        let positive = [
            ("in_channels", self.in_channels, self.in_channels),
            ("out_channels", self.out_channels, self.out_channels),
            ("kernel_size", self.kernel_size.0, self.kernel_size.1),
            ("stride", self.stride.0, self.stride.1),
            ("dilation", self.dilation.0, self.dilation.1),
            ("groups", self.groups, self.groups),
        ];
        for (what, a, b) in positive {
            if a == 0 || b == 0 {
                return Err(Error::invalid(
                    OP,
                    what,
                    format!("must be positive, got {}", pair(a, b)),
                ));
            }
        }
        for (what, channels) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ] {
            if channels % self.groups != 0 {
                return Err(Error::invalid(
                    OP,
                    "groups",
                    format!(
                        "{what} = {channels} is not divisible by groups = {}",
                        self.groups
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `fan_in = C_in/G · kh · kw`, the number of inputs of one output element.
    pub fn fan_in(&self) -> usize {
        self.in_channels / self.groups.max(1) * self.kernel_size.0 * self.kernel_size.1
    }

    /// The weight shape `(C_out, C_in/G, kh, kw)`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel_size.0,
            self.kernel_size.1,
        ]
    }

    /// The output size for an `H×W` input, as PyTorch:
    /// `OH = ⌊(H + 2·ph − dh·(kh − 1) − 1) / sh⌋ + 1` (and likewise `OW`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid configuration; [`Error::Shape`] if `H` or `W` is 0 or
    /// the padded input is smaller than the dilated kernel.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.validate()?;
        self.output_size_for("Conv2dConfig::output_size", &[0, self.in_channels, h, w])
    }

    /// [`Conv2dConfig::output_size`] for a validated config, with `op` and the full input shape
    /// in the error.
    fn output_size_for(&self, op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
        let (h, w) = (shape[2], shape[3]);
        let (kh, kw) = self.kernel_size;
        let (sh, sw) = self.stride;
        let (ph, pw) = self.padding;
        let (dh, dw) = self.dilation;
        let (ekh, ekw) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1); // dilated kernel
        if h == 0 || w == 0 || h + 2 * ph < ekh || w + 2 * pw < ekw {
            return Err(Error::shape(
                op,
                "input (N, C_in, H, W)",
                format!(
                    "H ≥ 1, W ≥ 1, H + 2·{ph} ≥ {ekh} and W + 2·{pw} ≥ {ekw} (kernel {kh}×{kw}, \
                     dilation {}, padding {}: the padded input must hold the dilated kernel)",
                    pair(dh, dw),
                    pair(ph, pw)
                ),
                shape,
            ));
        }
        Ok(((h + 2 * ph - ekh) / sh + 1, (w + 2 * pw - ekw) / sw + 1))
    }
}

/// `"3"` for a square pair, `"(3, 5)"` otherwise.
fn pair(a: usize, b: usize) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("({a}, {b})")
    }
}

/// 2-D convolution, PyTorch `nn.Conv2d` (cross-correlation, zero padding):
///
/// ```text
/// y[n, o, oh, ow] = b[o] + Σ_{c ∈ group(o), i, j} W[o, c − c₀(o), i, j] · x[n, c, oh·sh + i·dh − ph, ow·sw + j·dw − pw]
/// x: (N, C_in, H, W) → y: (N, C_out, OH, OW),  OH = ⌊(H + 2·ph − dh·(kh − 1) − 1) / sh⌋ + 1
/// ```
///
/// Parameters (PyTorch names, in visiting order): `weight: (C_out, C_in/G, kh, kw)`,
/// `bias: (C_out)` (absent without bias).
#[derive(Clone, Debug)]
pub struct Conv2d<F: Scalar> {
    cfg: Conv2dConfig,
    /// `W: (C_out, C_in/G, kh, kw)`.
    pub weight: Param<F, Ix4>,
    /// `b: (C_out)`, if the layer has a bias.
    pub bias: Option<Param<F, Ix1>>,
    /// The input of the last train-mode forward, channels last (what the weight gradient
    /// reads): `x.shape()` and `xt`, per image the layout of [`Geom::keep_input`].
    x: Option<([usize; 4], Vec<F>)>,
    /// The `xt` buffer released by the last backward pass, reused by the next train-mode
    /// forward (its contents are stale; dropped by an eval-mode forward).
    spare: Vec<F>,
}

impl<F: Scalar> Conv2d<F> {
    /// A layer with PyTorch's default initialisation: `kaiming_uniform_(a = √5)` for the weight,
    /// which is U(−1/√fan_in, 1/√fan_in), and the bias from the same distribution;
    /// `fan_in = C_in/G · kh · kw`. Drawn from `rng` in row-major order, weight first.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the configuration is invalid ([`Conv2dConfig::validate`]).
    pub fn new(cfg: Conv2dConfig, rng: &mut Rng) -> Result<Self> {
        cfg.validate()?;
        let bound = init::default_bound(cfg.fan_in());
        let weight = init::uniform(cfg.weight_shape(), bound, rng);
        let bias = cfg
            .bias
            .then(|| Param::new(init::uniform(cfg.out_channels, bound, rng)));
        Ok(Conv2d {
            cfg,
            weight: Param::new(weight),
            bias,
            x: None,
            spare: Vec::new(),
        })
    }

    /// A layer with the given weights: `weight: (C_out, C_in/G, kh, kw)` and `bias: (C_out)`
    /// (present exactly when `cfg.bias`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an invalid configuration or a bias that contradicts `cfg.bias`;
    /// [`Error::Shape`] if a shape does not match the configuration.
    pub fn from_weights(
        cfg: Conv2dConfig,
        weight: Array4<F>,
        bias: Option<Array1<F>>,
    ) -> Result<Self> {
        const OP: &str = "Conv2d::from_weights";
        cfg.validate()?;
        let want = cfg.weight_shape();
        if weight.shape() != want {
            return Err(Error::shape(
                OP,
                "weight (C_out, C_in/groups, kh, kw)",
                fmt_shape(&want),
                weight.shape(),
            ));
        }
        match (&bias, cfg.bias) {
            (Some(b), true) if b.len() != cfg.out_channels => {
                return Err(Error::shape(
                    OP,
                    "bias (C_out)",
                    format!("({})", cfg.out_channels),
                    b.shape(),
                ));
            }
            (Some(_), false) => {
                return Err(Error::invalid(
                    OP,
                    "bias",
                    "a bias was given but the config has bias = false",
                ));
            }
            (None, true) => {
                return Err(Error::invalid(
                    OP,
                    "bias",
                    "the config has bias = true but no bias was given",
                ));
            }
            _ => {}
        }
        Ok(Conv2d {
            cfg,
            weight: Param::new(weight.as_standard_layout().into_owned()),
            bias: bias.map(Param::new),
            x: None,
            spare: Vec::new(),
        })
    }

    /// The configuration of this layer.
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// Output size `(OH, OW)` for an `H×W` input (see [`Conv2dConfig::output_size`]).
    ///
    /// # Errors
    /// As [`Conv2dConfig::output_size`].
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.cfg.output_size(h, w)
    }

    /// Checks the input shape (and that the public parameters still have their shapes) and
    /// returns the geometry of this call.
    fn geometry(&self, op: &'static str, shape: &[usize]) -> Result<Geom> {
        let cfg = &self.cfg;
        if shape[1] != cfg.in_channels {
            return Err(Error::shape(
                op,
                "input (N, C_in, H, W)",
                format!("(_, {}, _, _)", cfg.in_channels),
                shape,
            ));
        }
        let (oh, ow) = cfg.output_size_for(op, shape)?;
        let want = cfg.weight_shape();
        if self.weight.value.shape() != want {
            return Err(Error::shape(
                op,
                "weight (C_out, C_in/groups, kh, kw)",
                fmt_shape(&want),
                self.weight.value.shape(),
            ));
        }
        if let Some(b) = &self.bias
            && b.value.len() != cfg.out_channels
        {
            return Err(Error::shape(
                op,
                "bias (C_out)",
                format!("({})", cfg.out_channels),
                b.value.shape(),
            ));
        }
        Ok(Geom::new(cfg, shape, oh, ow))
    }

    /// `y = conv(x, W) + b`; `x: (N, C_in, H, W) → y: (N, C_out, OH, OW)`.
    ///
    /// In [`Mode::Train`] a copy of `x` (stored channels last) is kept for [`Conv2d::backward`];
    /// in [`Mode::Eval`] (or on error) nothing is kept, and an earlier cache is dropped.
    ///
    /// # Errors
    /// [`Error::Shape`] if `x` does not have `C_in` channels, has an empty height or width, or is
    /// smaller than the dilated kernel after padding (also if the public `weight`/`bias` were
    /// replaced by arrays of another shape).
    pub fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        self.x = None;
        let g = self.geometry("Conv2d::forward", x.shape())?;
        let x = x.as_standard_layout(); // (N, C_in, H, W)
        let xs = x.as_slice().expect("standard layout");
        let w = self.weight.value.as_standard_layout(); // (C_out, C_in/G, kh, kw)
        let ws = w.as_slice().expect("standard layout");
        let bias = self.bias.as_ref().map(|b| b.value.to_vec()); // (C_out)
        // Stale values from the pool: every element is written by `forward_image` (the bias, if
        // any, then a GEMM with β = 1; otherwise a GEMM with β = 0, which does not read it).
        let y_shape = (g.n, g.oc, g.oh, g.ow);
        let mut y = scratch::array(y_shape); // (N, C_out, OH, OW)
        let (x_len, kept_len) = (g.c * g.h * g.w, g.kept_len());
        // The cache for backward, written by the same parallel loop.
        let mut xt = std::mem::take(&mut self.spare);
        xt.resize(if mode.is_train() { g.n * kept_len } else { 0 }, F::zero());
        if g.n > 0 {
            let lowering = g.forward_lowering();
            let bias = bias.as_deref();
            let ys = y.as_slice_mut().expect("fresh array");
            let ys = ys.par_chunks_mut(g.oc * g.l()).zip(xs.par_chunks(x_len));
            if mode.is_train() {
                ys.zip(xt.par_chunks_mut(kept_len))
                    .for_each(|((y_n, x_n), xt_n)| {
                        g.forward_image(&lowering, ws, bias, x_n, y_n);
                        g.keep_input(x_n, xt_n);
                    });
            } else {
                ys.for_each(|(y_n, x_n)| g.forward_image(&lowering, ws, bias, x_n, y_n));
            }
        }
        if mode.is_train() {
            self.x = Some((dims4(x.shape()), xt));
        }
        Ok(y)
    }

    /// Given `dy = ∂L/∂y: (N, C_out, OH, OW)`, accumulates `∂L/∂W += Σ_n dy_n · cols_nᵀ` and
    /// `∂L/∂b += Σ_{n, oh, ow} dy`, and returns `∂L/∂x: (N, C_in, H, W)` (col2im of `Wᵀ · dy_n`).
    ///
    /// Uses (and releases) the input kept by the last train-mode forward. The result does not
    /// depend on the number of threads (see the module documentation).
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// is not `(N, C_out, OH, OW)` for that forward.
    pub fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        const OP: &str = "Conv2d::backward";
        let (shape, _) = self.x.as_ref().ok_or(Error::NoForwardCache { op: OP })?;
        let g = self.geometry(OP, shape)?;
        let want = [g.n, g.oc, g.oh, g.ow];
        if dy.shape() != want {
            return Err(Error::shape(
                OP,
                "dy (N, C_out, OH, OW)",
                fmt_shape(&want),
                dy.shape(),
            ));
        }
        let (_, xt) = self.x.take().expect("checked above"); // see Geom::keep_input
        let result = self.backward_with(&g, &xt, dy);
        self.spare = xt;
        result
    }

    /// [`Conv2d::backward`] for checked `dy` and the kept input `xt` ([`Geom::keep_input`]).
    fn backward_with(&mut self, g: &Geom, xt: &[F], dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let dy = dy.as_standard_layout(); // (N, C_out, OH, OW)
        let dys = dy.as_slice().expect("standard layout");
        let w = self.weight.value.as_standard_layout(); // (C_out, C_in/G, kh, kw)
        let ws = w.as_slice().expect("standard layout");
        // Stale values from the pool: `input_grad_image` writes every element.
        let mut dx = scratch::array((g.n, g.c, g.h, g.w)); // (N, C_in, H, W)
        if g.n == 0 {
            return Ok(dx);
        }
        let (x_len, y_len) = (g.c * g.h * g.w, g.oc * g.l());

        // ∂x: image by image, in parallel.
        let lowering = g.input_grad_lowering(ws);
        dx.as_slice_mut()
            .expect("fresh array")
            .par_chunks_mut(x_len)
            .zip(dys.par_chunks(y_len))
            .for_each(|(dx_n, dy_n)| g.input_grad_image(&lowering, ws, dy_n, dx_n));

        // ∂W, ∂b: a fixed number of contiguous chunks of the batch, each with its own partial
        // sums; the partials come back in chunk order and are added in that order.
        let chunk = g.n.div_ceil(wgrad_chunks(g.n, ws.len()));
        let blocks = g.tap_blocks();
        let with_bias = self.bias.is_some();
        let partials: Vec<(Vec<F>, Vec<F>)> = xt
            .par_chunks(chunk * g.kept_len())
            .zip(dys.par_chunks(chunk * y_len))
            .map(|(xt_c, dy_c)| {
                let mut dw = vec![F::zero(); ws.len()]; // (C_out, kh·kw·C_in/G), see weight_grad_image
                let mut db = vec![F::zero(); if with_bias { g.oc } else { 0 }]; // (C_out)
                for (xt_n, dy_n) in xt_c.chunks(g.kept_len()).zip(dy_c.chunks(y_len)) {
                    g.weight_grad_image(blocks.as_deref(), xt_n, dy_n, &mut dw);
                    for (db_o, dy_o) in db.iter_mut().zip(dy_n.chunks(g.l())) {
                        *db_o += dy_o.iter().fold(F::zero(), |s, &v| s + v);
                    }
                }
                (dw, db)
            })
            .collect();
        let mut partials = partials.into_iter();
        let (mut dw, mut db) = partials.next().expect("n > 0 gives one chunk or more");
        for (pw, pb) in partials {
            add_into(&mut dw, &pw);
            add_into(&mut db, &pb);
        }
        // dw columns are (i, j, c) per group; the weight is (C_out, C_in/G, kh, kw).
        let (cg, taps) = (g.c / g.groups, g.kh * g.kw);
        for (mut gw_o, dw_o) in self
            .weight
            .grad
            .outer_iter_mut()
            .zip(dw.chunks_exact(cg * taps))
        {
            for (t, dw_t) in dw_o.chunks_exact(cg).enumerate() {
                let (i, j) = (t / g.kw, t % g.kw);
                for (c, &d) in dw_t.iter().enumerate() {
                    gw_o[[c, i, j]] += d;
                }
            }
        }
        if let Some(b) = &mut self.bias {
            for (gb, d) in b.grad.iter_mut().zip(&db) {
                *gb += *d;
            }
        }
        Ok(dx)
    }
}

impl<F: Scalar> Module<F> for Conv2d<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        f("weight", self.weight.as_mut());
        if let Some(b) = &mut self.bias {
            f("bias", b.as_mut());
        }
    }
}

/// The forward product takes `cols` in strips of output rows whose packed panels hold at most
/// this many bytes, so that they stay in the core's second-level cache while the kernel reads them.
const STRIP_BYTES: usize = 512 << 10;

/// At most this many partial weight gradients are summed in the backward pass.
const MAX_WGRAD_CHUNKS: usize = 32;
/// The partial weight gradients together hold at most this many elements (unless a single one
/// is larger): for big weights the batch is not split and the GEMM itself runs in parallel.
const WGRAD_PARTIALS_BUDGET: usize = 1 << 22;

/// The number of batch chunks for `∂W`: a function of the batch size and the weight size only.
fn wgrad_chunks(n: usize, weight_len: usize) -> usize {
    let by_memory = (WGRAD_PARTIALS_BUDGET / weight_len.max(1)).max(1);
    n.clamp(1, MAX_WGRAD_CHUNKS.min(by_memory))
}

fn dims4(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

fn add_into<F: Scalar>(acc: &mut [F], v: &[F]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a += *b;
    }
}

/// A `(rows, cols)` row-major matrix at the start of `s`.
fn mat<F>(s: &[F], rows: usize, cols: usize) -> ArrayView2<'_, F> {
    ArrayView2::from_shape((rows, cols), &s[..rows * cols]).expect("slice holds the matrix")
}

/// A mutable `(rows, cols)` row-major matrix at the start of `s`.
fn mat_mut<F>(s: &mut [F], rows: usize, cols: usize) -> ArrayViewMut2<'_, F> {
    ArrayViewMut2::from_shape((rows, cols), &mut s[..rows * cols]).expect("slice holds the matrix")
}

/// The sizes of one forward/backward call. Buffers named in the comments:
/// `x_n: (C, H, W)`, `y_n: (OC, OH, OW)`, `cols: (C·kh·kw, OH·OW)`, `W: (OC, C/G·kh·kw)`.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
    groups: usize,
}

impl Geom {
    fn new(cfg: &Conv2dConfig, shape: &[usize], oh: usize, ow: usize) -> Self {
        Geom {
            n: shape[0],
            c: shape[1],
            h: shape[2],
            w: shape[3],
            oc: cfg.out_channels,
            oh,
            ow,
            kh: cfg.kernel_size.0,
            kw: cfg.kernel_size.1,
            sh: cfg.stride.0,
            sw: cfg.stride.1,
            ph: cfg.padding.0,
            pw: cfg.padding.1,
            dh: cfg.dilation.0,
            dw: cfg.dilation.1,
            groups: cfg.groups,
        }
    }

    /// Output pixels per channel, `L = OH·OW`.
    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Rows of `cols`, `K = C·kh·kw`.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Rows of `cols` per group (= columns of `W`), `C/G·kh·kw`.
    fn kg(&self) -> usize {
        self.k() / self.groups
    }

    /// Output channels per group.
    fn ocg(&self) -> usize {
        self.oc / self.groups
    }

    /// 1×1 kernel, stride 1, no padding: `cols` would equal `x_n` (as `(C, H·W)`).
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    /// For each kernel column `j`: the range `lo..hi` of output columns `ow` whose input column
    /// `ow·sw + j·dw − pw` lies inside `0..W` (outside it, `cols` holds padding zeros).
    fn col_spans(&self) -> Vec<(usize, usize)> {
        let (sw, w, pw) = (self.sw as isize, self.w as isize, self.pw as isize);
        let ceil = |num: isize| if num <= 0 { 0 } else { (num + sw - 1) / sw };
        (0..self.kw)
            .map(|j| {
                let off = (j * self.dw) as isize - pw; // input column of ow = 0
                let lo = (ceil(-off) as usize).min(self.ow);
                let hi = (ceil(w - off) as usize).clamp(lo, self.ow);
                (lo, hi)
            })
            .collect()
    }

    /// The input row of output row `oh` and kernel row `i`, if it lies inside `0..H`.
    #[inline]
    fn in_row(&self, oh: usize, i: usize) -> Option<usize> {
        (oh * self.sh + i * self.dh)
            .checked_sub(self.ph)
            .filter(|&ih| ih < self.h)
    }

    /// With stride 1 and an output as wide as the input (`OW = W`: "same" padding, as in the 3×3
    /// convolutions of a ResNet), the entries of a `cols` row that lie inside the input are the
    /// input plane shifted by one constant offset. For kernel tap `(i, j)` and the output rows
    /// `strip` (the columns `strip.start·OW .. strip.end·OW` of `cols`) this returns `(a, b,
    /// src)`: the range `a..b` of the strip's part of the row, counted from the strip's start,
    /// from its first to its last entry inside the input, and the plane position `src` of entry
    /// `a`. Inside `a..b` only the entries of the columns `ow ∉ lo..hi` (the left and right
    /// padding) do not read the input. `None` when the shape does not allow this;
    /// `Some((0, 0, 0))` when no entry of the strip's row reads the input.
    fn shifted_block(
        &self,
        i: usize,
        j: usize,
        (lo, hi): (usize, usize),
        strip: Range<usize>,
    ) -> Option<(usize, usize, usize)> {
        if self.sh != 1 || self.sw != 1 || self.ow != self.w {
            return None;
        }
        // Output rows oh of the strip with 0 ≤ oh + i·dh − ph < H.
        let top = (i * self.dh) as isize - self.ph as isize; // input row of oh = 0
        let (first, end) = (strip.start as isize, strip.end as isize);
        let oh_lo = (-top).clamp(first, end);
        let oh_hi = (self.h as isize - top).clamp(oh_lo, end);
        if oh_lo == oh_hi || lo == hi {
            return Some((0, 0, 0));
        }
        let (oh_lo, oh_hi) = (oh_lo as usize - strip.start, oh_hi as usize - strip.start);
        let (a, b) = (oh_lo * self.ow + lo, (oh_hi - 1) * self.ow + hi);
        let left = (j * self.dw) as isize - self.pw as isize; // input column of ow = 0
        let src = ((oh_lo + strip.start) as isize + top) * self.w as isize + lo as isize + left;
        Some((a, b, src as usize))
    }

    /// One row of the column matrix over a strip of output rows: `out ← cols[r, strip.start·OW
    /// .. strip.end·OW]` for row `r = (c·kh + i)·kw + j` of `cols = im2col(x_n)`, every entry
    /// written. `x_n: (C, H, W)`, `out: (strip.len()·OW)`.
    fn im2col_row<F: Scalar>(
        &self,
        spans: &[(usize, usize)],
        x_n: &[F],
        r: usize,
        strip: Range<usize>,
        out: &mut [F],
    ) {
        let (c, i, j) = (r / (self.kh * self.kw), r / self.kw % self.kh, r % self.kw);
        let (lo, hi) = spans[j];
        let ow = self.ow;
        let plane = &x_n[c * self.h * self.w..(c + 1) * self.h * self.w]; // (H, W)
        if let Some((a, b, src)) = self.shifted_block(i, j, (lo, hi), strip.clone()) {
            // One block copy, then zeros over the padding.
            out[..a].fill(F::zero());
            out[b..].fill(F::zero());
            out[a..b].copy_from_slice(&plane[src..src + (b - a)]);
            zero_gaps(&mut out[a..b], ow, hi - lo);
            return;
        }
        // Zeros everywhere (one fill, not a few values per output row), then the entries
        // inside the input, output row by output row.
        out.fill(F::zero());
        if lo == hi {
            return;
        }
        for (oh, seg) in strip.zip(out.chunks_exact_mut(ow)) {
            let Some(ih) = self.in_row(oh, i) else {
                continue;
            };
            let start = ih * self.w + lo * self.sw + j * self.dw - self.pw;
            let src = &plane[start..]; // from input column lo·sw + j·dw − pw
            if self.sw == 1 {
                copy(&mut seg[lo..hi], src);
            } else {
                for (t, d) in seg[lo..hi].iter_mut().enumerate() {
                    *d = src[t * self.sw];
                }
            }
        }
    }

    /// The output rows per strip of the forward product: the panels of one strip's `cols`
    /// (`C/G·kh·kw` rows) stay within [`STRIP_BYTES`], and strips are of equal height.
    fn strip_rows<F: Scalar>(&self) -> usize {
        let per_row = self.kg() * self.ow * F::BYTES; // bytes of cols per output row
        let strips = (per_row * self.oh)
            .div_ceil(STRIP_BYTES)
            .clamp(1, self.oh.max(1));
        self.oh.div_ceil(strips).max(1)
    }

    /// `dx_n += col2im(dcols)`, the adjoint of [`Geom::im2col`]: `dcols: (C·kh·kw, OH·OW)`,
    /// `dx_n: (C, H, W)`. The entries of `dcols` that belong to the padding are overwritten with
    /// zeros on the way.
    fn col2im<F: Scalar>(&self, spans: &[(usize, usize)], dcols: &mut [F], dx_n: &mut [F]) {
        let (l, ow) = (self.l(), self.ow);
        let mut rows = dcols.chunks_exact_mut(l);
        for c in 0..self.c {
            let plane = &mut dx_n[c * self.h * self.w..(c + 1) * self.h * self.w]; // (H, W)
            for i in 0..self.kh {
                for (j, &(lo, hi)) in spans.iter().enumerate() {
                    let row = rows.next().expect("C·kh·kw rows"); // (OH·OW)
                    if lo >= hi {
                        continue;
                    }
                    if let Some((a, b, src)) = self.shifted_block(i, j, (lo, hi), 0..self.oh) {
                        // Zeros over the padding inside a..b, then one block addition.
                        zero_gaps(&mut row[a..b], ow, hi - lo);
                        for (d, s) in plane[src..src + (b - a)].iter_mut().zip(&row[a..b]) {
                            *d += *s;
                        }
                        continue;
                    }
                    for (oh, seg) in row.chunks_exact(ow).enumerate() {
                        let Some(ih) = self.in_row(oh, i) else {
                            continue;
                        };
                        let start = ih * self.w + lo * self.sw + j * self.dw - self.pw;
                        let dst = &mut plane[start..]; // from input column lo·sw + j·dw − pw
                        if self.sw == 1 {
                            for (d, s) in dst[..hi - lo].iter_mut().zip(&seg[lo..hi]) {
                                *d += *s;
                            }
                        } else {
                            for (t, s) in seg[lo..hi].iter().enumerate() {
                                dst[t * self.sw] += *s;
                            }
                        }
                    }
                }
            }
        }
    }

    /// How the forward product reads the image (see [`Lowering`]).
    fn forward_lowering<F: Scalar>(&self) -> Lowering<F> {
        if self.pointwise() {
            Lowering::Pointwise
        } else if self.groups == 1 && self.sh == 1 && self.sw == 1 {
            Lowering::Shifted {
                planes: Shifted::new(self.c, (self.h, self.w), (self.ph, self.pw), self),
                weight: None,
            }
        } else {
            Lowering::Columns(self.col_spans())
        }
    }

    /// How the input gradient reads `dy`. With stride 1 and one group, `∂x` is itself a
    /// stride-1 convolution: the correlation of `dy`, zero-padded by `(dh·(kh − 1) − ph,
    /// dw·(kw − 1) − pw)`, with the flipped kernel `Wf[c, o, i, j] = W[o, c, kh−1−i, kw−1−j]`
    /// (built here from `w`), so it reads `dy` in place as the forward pass reads `x` (when the
    /// padding is at most the dilated kernel's reach, as for every "same" convolution).
    fn input_grad_lowering<F: Scalar>(&self, w: &[F]) -> Lowering<F> {
        let (kh, kw) = (self.kh, self.kw);
        let (reach_h, reach_w) = (self.dh * (kh - 1), self.dw * (kw - 1));
        if self.pointwise() {
            return Lowering::Pointwise;
        }
        if self.groups != 1
            || self.sh != 1
            || self.sw != 1
            || self.ph > reach_h
            || self.pw > reach_w
        {
            return Lowering::Columns(self.col_spans());
        }
        let (c, oc, taps) = (self.c, self.oc, kh * kw);
        let mut flipped = vec![F::zero(); w.len()]; // Wf: (C, OC·kh·kw)
        for (o, w_o) in w.chunks_exact(c * taps).enumerate() {
            for (ci, w_oc) in w_o.chunks_exact(taps).enumerate() {
                for (t, &v) in w_oc.iter().enumerate() {
                    flipped[ci * oc * taps + o * taps + (taps - 1 - t)] = v;
                }
            }
        }
        let pad = (reach_h - self.ph, reach_w - self.pw);
        Lowering::Shifted {
            planes: Shifted::new(oc, (self.oh, self.ow), pad, self),
            weight: Some(flipped),
        }
    }

    /// `y_n = W ⊛ x_n + b` for one image: per group `y_g (OC/G, L) = W_g (OC/G, Kg) · cols_g (Kg, L)`.
    /// `x_n: (C, H, W)`, `y_n: (OC, OH·OW)`, every entry written.
    ///
    /// With [`Lowering::Columns`], one strip of output rows at a time (see
    /// [`Geom::strip_rows`]), the rows of `cols` written straight into the GEMM's packed panels
    /// by [`gemm_rows`].
    fn forward_image<F: Scalar>(
        &self,
        lowering: &Lowering<F>,
        w: &[F],
        bias: Option<&[F]>,
        x_n: &[F],
        y_n: &mut [F],
    ) {
        let (l, kg, ocg, ow) = (self.l(), self.kg(), self.ocg(), self.ow);
        let spans = match lowering {
            Lowering::Shifted { planes, .. } => {
                let w = mat(w, self.oc, self.k());
                return planes.correlate(w, x_n, (self.oh, ow), bias, y_n);
            }
            Lowering::Pointwise => None,
            Lowering::Columns(spans) => Some(spans),
        };
        let beta = match bias {
            Some(b) => {
                for (row, &b_o) in y_n.chunks_exact_mut(l).zip(b) {
                    row.fill(b_o);
                }
                F::one()
            }
            None => F::zero(),
        };
        let strip_rows = self.strip_rows::<F>();
        for grp in 0..self.groups {
            let w_g = mat(&w[grp * ocg * kg..], ocg, kg);
            let mut y_g = mat_mut(&mut y_n[grp * ocg * l..], ocg, l);
            let Some(spans) = spans else {
                // Pointwise: cols_g is the image's channels of group g, as they are: (C/G, H·W).
                gemm(F::one(), w_g, mat(&x_n[grp * kg * l..], kg, l), beta, y_g);
                continue;
            };
            for first in (0..self.oh).step_by(strip_rows) {
                let strip = first..(first + strip_rows).min(self.oh);
                let cols = strip.start * ow..strip.end * ow;
                gemm_rows(
                    w_g,
                    (kg, cols.len()),
                    beta,
                    y_g.slice_mut(ndarray::s![.., cols]),
                    |r, out| self.im2col_row(spans, x_n, grp * kg + r, strip.clone(), out),
                );
            }
        }
    }

    /// `dx_n = col2im(Wᵀ · dy_n)` for one image (per group `dcols_g = W_gᵀ · dy_g`), or with
    /// [`Lowering::Shifted`] the correlation of the padded `dy_n` with the flipped kernel;
    /// `dy_n: (OC, L)`, `dx_n: (C, H, W)` (every entry written).
    fn input_grad_image<F: Scalar>(
        &self,
        lowering: &Lowering<F>,
        w: &[F],
        dy_n: &[F],
        dx_n: &mut [F],
    ) {
        let (l, kg, ocg) = (self.l(), self.kg(), self.ocg());
        let spans = match lowering {
            Lowering::Shifted { planes, weight } => {
                let flipped = weight.as_deref().expect("the input gradient's lowering");
                let wf = mat(flipped, self.c, self.oc * self.kh * self.kw);
                return planes.correlate(wf, dy_n, (self.h, self.w), None, dx_n);
            }
            Lowering::Pointwise => None,
            Lowering::Columns(spans) => Some(spans),
        };
        let mut dcols = Scratch::take(if spans.is_some() { self.k() * l } else { 0 });
        {
            let dst: &mut [F] = if spans.is_some() { &mut dcols } else { dx_n }; // (K, L)
            for grp in 0..self.groups {
                gemm(
                    F::one(),
                    mat(&w[grp * ocg * kg..], ocg, kg).t(),
                    mat(&dy_n[grp * ocg * l..], ocg, l),
                    F::zero(),
                    mat_mut(&mut dst[grp * kg * l..], kg, l),
                );
            }
        }
        if let Some(spans) = spans {
            dx_n.fill(F::zero());
            self.col2im(spans, &mut dcols, dx_n);
        }
    }

    /// One row of *im2row*, the transposed column matrix with its columns in channels-last
    /// order, for output pixel `p = oh·OW + ow` and group `grp`: `xt: (H·W, C)` (the image,
    /// channels last), `out: (kh·kw·C/G)`, every entry written,
    ///
    /// ```text
    /// out[(i·kw + j)·C/G + c] = x[grp·C/G + c, oh·sh + i·dh − ph, ow·sw + j·dw − pw]   (0 outside x)
    /// ```
    ///
    /// With channels last, the values of one kernel tap are contiguous in both `xt` and `out`
    /// (and with one group and dilation 1 a whole kernel row is), so the gather is a few block
    /// copies. The weight gradient multiplies by this layout because the GEMM packs row-major
    /// rows much faster than the columns of `cols`.
    fn im2row_row<F: Scalar>(&self, xt: &[F], p: usize, grp: usize, out: &mut [F]) {
        let (c, kw, dw) = (self.c, self.kw, self.dw);
        let cg = c / self.groups;
        let (oh, ow) = (p / self.ow, p % self.ow);
        let iw0 = (ow * self.sw) as isize - self.pw as isize; // input column of j = 0
        let inside = iw0 >= 0 && iw0 as usize + (kw - 1) * dw < self.w;
        let whole_rows = self.groups == 1 && dw == 1 && inside; // kernel row = kw·C values
        for (i, block) in out.chunks_exact_mut(kw * cg).enumerate() {
            let Some(ih) = self.in_row(oh, i) else {
                block.fill(F::zero());
                continue;
            };
            let line = &xt[ih * self.w * c..(ih + 1) * self.w * c]; // (W, C)
            if whole_rows {
                let start = iw0 as usize * c;
                copy(block, &line[start..start + kw * c]);
                continue;
            }
            for (j, seg) in block.chunks_exact_mut(cg).enumerate() {
                let iw = iw0 + (j * dw) as isize;
                if iw >= 0 && (iw as usize) < self.w {
                    let start = iw as usize * c + grp * cg;
                    copy(seg, &line[start..start + cg]);
                } else {
                    seg.fill(F::zero());
                }
            }
        }
    }

    /// Whether the weight gradient reads the kept image in place ([`Geom::tap_blocks`]): stride
    /// 1, one group, a multiple of 16 input channels, a kernel larger than 1×1.
    fn wgrad_in_place(&self) -> bool {
        self.groups == 1
            && self.sh == 1
            && self.sw == 1
            && self.c.is_multiple_of(COLUMN_BLOCK)
            && !self.pointwise()
    }

    /// Values kept per image for the weight gradient (see [`Geom::keep_input`]).
    fn kept_len(&self) -> usize {
        if self.wgrad_in_place() {
            let (hp, wp) = (self.h + 2 * self.ph, self.w + 2 * self.pw);
            (hp * wp + (self.kw - 1) * self.dw) * self.c
        } else {
            self.c * self.h * self.w
        }
    }

    /// Keeps `x_n: (C, H, W)` for the weight gradient as `kept: (H·W, C)`, channels last, or
    /// with [`Geom::wgrad_in_place`] zero-padded as well, `(H + 2·ph, W + 2·pw, C)`, followed by
    /// `(kw − 1)·dw` pixels of zeros that the padded-width product reads past the last row.
    fn keep_input<F: Scalar>(&self, x_n: &[F], kept: &mut [F]) {
        let (c, h, w) = (self.c, self.h, self.w);
        if !self.wgrad_in_place() {
            return transpose(x_n, c, h * w, kept);
        }
        let (ph, pw, wp) = (self.ph, self.pw, w + 2 * self.pw);
        // Zeros in the padding rows above and below and the pixels past the last row; the
        // padding columns are written with each row.
        let (top, rest) = kept.split_at_mut(ph * wp * c);
        let (rows, bottom) = rest.split_at_mut(h * wp * c);
        top.fill(F::zero());
        bottom.fill(F::zero());
        for (r, row) in rows.chunks_exact_mut(wp * c).enumerate() {
            row[..pw * c].fill(F::zero());
            row[(pw + w) * c..].fill(F::zero());
            // Pixel by pixel, the C channels gathered from their planes.
            for (col, pixel) in row[pw * c..(pw + w) * c].chunks_exact_mut(c).enumerate() {
                for (ci, v) in pixel.iter_mut().enumerate() {
                    *v = x_n[(ci * h + r) * w + col];
                }
            }
        }
    }

    /// With [`Geom::wgrad_in_place`], where the transposed column matrix finds its columns in
    /// the kept image: on the padded grid (output pixel `p = oh·Wp + ow`, `Wp = W + 2·pw`), the
    /// entry of `colsᵀ` for pixel `p`, tap `(i, j)` and channel `c` is `kept[(p + i·dh·Wp +
    /// j·dw)·C + c]`, so its columns in `(i, j, c)` order come in blocks of 16 channels of one
    /// tap, each contiguous, at the offsets returned here (for [`gemm_column_blocks`]).
    fn tap_blocks(&self) -> Option<Vec<usize>> {
        if !self.wgrad_in_place() {
            return None;
        }
        let (c, wp) = (self.c, self.w + 2 * self.pw);
        let blocks = (0..self.k() / COLUMN_BLOCK).map(|b| {
            let (tap, c0) = (b * COLUMN_BLOCK / c, b * COLUMN_BLOCK % c);
            let (i, j) = (tap / self.kw, tap % self.kw);
            (i * self.dh * wp + j * self.dw) * c + c0
        });
        Some(blocks.collect())
    }

    /// `dw += dy_n · cols_nᵀ` for one image, with the columns of `dw` in the channels-last order
    /// of [`Geom::im2row_row`]: per group `dW_g (OC/G, kh·kw·C/G) += dy_g (OC/G, L) · rows_g (L,
    /// Kg)`. `kept_n`: the image as [`Geom::keep_input`] keeps it, `dy_n: (OC, L)`,
    /// `dw: (OC, kh·kw·C/G)`.
    ///
    /// With `blocks` ([`Geom::tap_blocks`]), `rows` is read in place from the kept image and the
    /// product runs on the padded grid, `dy_n` widened with zeros in the `Wp − OW` columns past
    /// each output row (those pixels add exact zeros); otherwise the rows are gathered straight
    /// into the GEMM's packed panels ([`gemm_rows`]), or for a pointwise layer are `kept_n`
    /// itself.
    fn weight_grad_image<F: Scalar>(
        &self,
        blocks: Option<&[usize]>,
        kept_n: &[F],
        dy_n: &[F],
        dw: &mut [F],
    ) {
        let (l, kg, ocg) = (self.l(), self.kg(), self.ocg());
        if let Some(blocks) = blocks {
            let (ow, wp) = (self.ow, self.w + 2 * self.pw);
            let mut wide = Scratch::take(self.oc * self.oh * wp); // (OC, OH·Wp)
            for (wide_o, dy_o) in wide
                .chunks_exact_mut(self.oh * wp)
                .zip(dy_n.chunks_exact(l))
            {
                for (dst, src) in wide_o.chunks_exact_mut(wp).zip(dy_o.chunks_exact(ow)) {
                    copy(&mut dst[..ow], src);
                    dst[ow..].fill(F::zero());
                }
            }
            return gemm_column_blocks(
                mat(&wide, self.oc, self.oh * wp),
                (kept_n, self.c),
                blocks,
                kg,
                F::one(),
                mat_mut(dw, self.oc, kg),
            );
        }
        for grp in 0..self.groups {
            let dy_g = mat(&dy_n[grp * ocg * l..], ocg, l);
            let dw_g = mat_mut(&mut dw[grp * ocg * kg..], ocg, kg);
            if self.pointwise() {
                let xt_g =
                    mat(kept_n, l, self.c).slice_move(ndarray::s![.., grp * kg..(grp + 1) * kg]);
                gemm(F::one(), dy_g, xt_g, F::one(), dw_g);
            } else {
                gemm_rows(dy_g, (l, kg), F::one(), dw_g, |p, out| {
                    self.im2row_row(kept_n, p, grp, out)
                });
            }
        }
    }
}

/// How a product of a convolution reads its right operand, the column matrix `cols` of an image.
enum Lowering<F> {
    /// A 1×1 kernel with stride 1 and no padding: `cols` is the image itself.
    Pointwise,
    /// Stride 1, one group: the rows of `cols` read in place from a zero-padded copy of the
    /// image; `weight` is the left operand when it is not the layer's weight (the flipped kernel
    /// of the input gradient).
    Shifted {
        planes: Shifted,
        weight: Option<Vec<F>>,
    },
    /// Otherwise: the rows of `cols` gathered by [`Geom::im2col_row`] (the forward pass) or
    /// scattered back by [`Geom::col2im`] (the input gradient); the column spans of the kernel.
    Columns(Vec<(usize, usize)>),
}

/// A stride-1 correlation of a stack of planes with a kernel, computed without a column matrix.
///
/// On a copy of the planes zero-padded to `Hp × Wp`, the output computed on the padded width
/// (`OH × Wp` columns, the last `Wp − OW` of every row discarded) has a column matrix whose
/// row for plane `c` and kernel tap `(i, j)` is the padded planes themselves from offset
/// `c·Hp·Wp + i·dh·Wp + j·dw`: [`gemm_offset_rows`] reads those rows in place. The copies are
/// one padding of the input and one trimming of the output instead of a `kh·kw` times larger
/// `cols`; each output entry is the same sum in the same order as with `cols`.
struct Shifted {
    /// Planes of the operand.
    planes: usize,
    /// Size of a plane before padding.
    hw: (usize, usize),
    /// Zeros added on each side.
    pad: (usize, usize),
    /// Row `(c·kh + i)·kw + j` of `cols`: its offset in the padded planes.
    offsets: Vec<usize>,
}

impl Shifted {
    /// For `planes` planes of `hw`, padded by `pad`, and the kernel of `g` (size and dilation).
    fn new(planes: usize, hw: (usize, usize), pad: (usize, usize), g: &Geom) -> Self {
        let (hp, wp) = (hw.0 + 2 * pad.0, hw.1 + 2 * pad.1);
        let mut offsets = Vec::with_capacity(planes * g.kh * g.kw);
        for c in 0..planes {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    offsets.push(c * hp * wp + i * g.dh * wp + j * g.dw);
                }
            }
        }
        Shifted {
            planes,
            hw,
            pad,
            offsets,
        }
    }

    /// `out (M, OH·OW) ← a (M, planes·kh·kw) · cols(src) (+ bias per row)` for `src: (planes,
    /// H, W)`, every entry of `out` written; `(OH, OW)` is the output size.
    fn correlate<F: Scalar>(
        &self,
        a: ArrayView2<'_, F>,
        src: &[F],
        (oh, ow): (usize, usize),
        bias: Option<&[F]>,
        out: &mut [F],
    ) {
        let ((h, w), (ph, pw)) = (self.hw, self.pad);
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let last = self.offsets.last().copied().unwrap_or(0);
        let mut padded = Scratch::take(last + oh * wp + ROW_SLACK);
        // Zero-padded planes (H + 2·ph, W + 2·pw), then zeros up to the end of the buffer.
        let (body, tail) = padded.split_at_mut(self.planes * hp * wp);
        for (plane, src) in body.chunks_exact_mut(hp * wp).zip(src.chunks_exact(h * w)) {
            plane[..ph * wp].fill(F::zero());
            plane[(ph + h) * wp..].fill(F::zero());
            let rows = plane[ph * wp..(ph + h) * wp].chunks_exact_mut(wp);
            for (row, src) in rows.zip(src.chunks_exact(w)) {
                row[..pw].fill(F::zero());
                row[pw + w..].fill(F::zero());
                copy(&mut row[pw..pw + w], src);
            }
        }
        tail.fill(F::zero());
        let m = a.nrows();
        let mut wide = Scratch::take(m * oh * wp); // (M, OH·Wp)
        gemm_offset_rows(
            a,
            &padded,
            &self.offsets,
            oh * wp,
            F::zero(),
            mat_mut(&mut wide, m, oh * wp),
        );
        for (r, (out_r, wide_r)) in out
            .chunks_exact_mut(oh * ow)
            .zip(wide.chunks_exact(oh * wp))
            .enumerate()
        {
            let b = bias.map_or(F::zero(), |b| b[r]);
            for (dst, src) in out_r.chunks_exact_mut(ow).zip(wide_r.chunks_exact(wp)) {
                if bias.is_some() {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = b + v;
                    }
                } else {
                    copy(dst, src);
                }
            }
        }
    }
}

/// Zeros at the positions `p ≥ valid` of every `stride`-long piece of `block` (the padding
/// columns between the output rows of a [`Geom::shifted_block`]), written with strided stores
/// (a `fill` per piece would be a library call for one or two values).
fn zero_gaps<F: Scalar>(block: &mut [F], stride: usize, valid: usize) {
    for offset in valid..stride {
        for v in block.iter_mut().skip(offset).step_by(stride) {
            *v = F::zero();
        }
    }
}

/// `dst ← src` (`src` at least as long), as a loop the compiler vectorises (no call for short
/// runs).
#[inline(always)]
fn copy<F: Copy>(dst: &mut [F], src: &[F]) {
    debug_assert!(src.len() >= dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col by its definition, index by index.
    fn naive_cols(g: &Geom, x: &[f64]) -> Vec<f64> {
        let mut cols = vec![0.0; g.k() * g.l()];
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let r = (c * g.kh + i) * g.kw + j;
                    for oh in 0..g.oh {
                        for ow in 0..g.ow {
                            let ih = (oh * g.sh + i * g.dh) as isize - g.ph as isize;
                            let iw = (ow * g.sw + j * g.dw) as isize - g.pw as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w {
                                cols[r * g.l() + oh * g.ow + ow] =
                                    x[(c * g.h + ih as usize) * g.w + iw as usize];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    #[test]
    fn im2col_matches_definition_and_col2im_is_its_adjoint() {
        let cases = [
            Conv2dConfig::new(2, 2, 3).padding(1),
            Conv2dConfig::new(2, 2, 3).stride(2).padding(1),
            Conv2dConfig::new(1, 1, 3).dilation(2).padding(3),
            Conv2dConfig::new(1, 1, 5).padding(2).stride_hw((1, 3)),
            Conv2dConfig::new(3, 3, 1).stride(2),
            Conv2dConfig::new(1, 1, 2)
                .kernel_size_hw((2, 4))
                .padding_hw((0, 3)),
            // Output as wide as the input: the block-copy path of im2col/col2im.
            Conv2dConfig::new(2, 2, 3).dilation(2).padding(2),
            Conv2dConfig::new(2, 1, 3)
                .kernel_size_hw((3, 5))
                .padding_hw((0, 2)),
            Conv2dConfig::new(1, 1, 9).padding(4), // the outer taps miss the input entirely
            Conv2dConfig::new(4, 2, 3).groups(2).padding(1),
            Conv2dConfig::new(4, 4, 3).groups(4).dilation(2).padding(1),
        ];
        for cfg in cases {
            let (h, w) = (5, 4);
            let (oh, ow) = cfg.output_size(h, w).unwrap();
            let g = Geom::new(&cfg, &[1, cfg.in_channels, h, w], oh, ow);
            let spans = g.col_spans();
            let x: Vec<f64> = (0..g.c * h * w).map(|v| v as f64 + 1.0).collect();
            // im2col row by row, over the whole image and over strips of one and two output rows.
            let cols = naive_cols(&g, &x);
            for strip_rows in [g.oh, 1, 2] {
                for r in 0..g.k() {
                    for first in (0..g.oh).step_by(strip_rows) {
                        let strip = first..(first + strip_rows).min(g.oh);
                        let mut out = vec![f64::NAN; strip.len() * g.ow];
                        g.im2col_row(&spans, &x, r, strip.clone(), &mut out);
                        let want = &cols[r * g.l() + strip.start * g.ow..][..out.len()];
                        assert_eq!(out, want, "{cfg:?} row {r} strip {strip:?}");
                    }
                }
            }
            // im2row: the transpose of cols with the columns in (group, i, j, channel) order.
            let mut xt = vec![0.0; x.len()];
            transpose(&x, g.c, h * w, &mut xt);
            let cg = g.c / g.groups;
            for r in 0..g.l() {
                for grp in 0..g.groups {
                    let mut row = vec![f64::NAN; g.kg()];
                    g.im2row_row(&xt, r, grp, &mut row);
                    for (q, v) in row.iter().enumerate() {
                        let (i, j, cl) = (q / (g.kw * cg), q / cg % g.kw, q % cg);
                        let cr = ((grp * cg + cl) * g.kh + i) * g.kw + j;
                        assert_eq!(
                            *v,
                            cols[cr * g.l() + r],
                            "{cfg:?}: im2row = im2colᵀ, permuted"
                        );
                    }
                }
            }
            // ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for c = e_r: col2im(e_r) puts a 1 where im2col read.
            let dc: Vec<f64> = (0..g.k() * g.l()).map(|v| ((v * 7) % 11) as f64).collect();
            let mut dx = vec![0.0; x.len()];
            g.col2im(&spans, &mut dc.clone(), &mut dx);
            let lhs: f64 = cols.iter().zip(&dc).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{cfg:?}");
        }
    }

    /// Stride-1 products that read shifted planes in place agree with the column matrix: the
    /// forward pass bit for bit (the same sums in the same order), the input gradient (the
    /// correlation with the flipped kernel against col2im) to f32 rounding.
    #[test]
    fn shifted_planes_agree_with_the_column_matrix() {
        let cases = [
            Conv2dConfig::new(3, 4, 3).padding(1),
            Conv2dConfig::new(2, 3, 3),
            Conv2dConfig::new(2, 2, 3).dilation(2).padding(2),
            Conv2dConfig::new(2, 5, 3)
                .kernel_size_hw((3, 5))
                .padding_hw((0, 2)),
            Conv2dConfig::new(1, 2, 2).padding(1), // output larger than the input
            Conv2dConfig::new(1, 2, 2).padding(2), // padding beyond the kernel: col2im for ∂x
            Conv2dConfig::new(3, 2, 5).padding(1),
        ];
        for cfg in cases {
            let (h, w) = (7, 6);
            let (oh, ow) = cfg.output_size(h, w).unwrap();
            let g = Geom::new(&cfg, &[1, cfg.in_channels, h, w], oh, ow);
            let value = |i: usize, m: usize| ((i * 37 + m) % 23) as f32 / 11.0 - 1.0;
            let x: Vec<f32> = (0..g.c * h * w).map(|i| value(i, 1)).collect();
            let wt: Vec<f32> = (0..g.oc * g.k()).map(|i| value(i, 5)).collect();
            let bias: Vec<f32> = (0..g.oc).map(|i| value(i, 9)).collect();
            let columns = Lowering::Columns(g.col_spans());

            let lowering = g.forward_lowering::<f32>();
            assert!(matches!(lowering, Lowering::Shifted { .. }), "{cfg:?}");
            let mut want = vec![f32::NAN; g.oc * g.l()];
            g.forward_image(&columns, &wt, Some(&bias), &x, &mut want);
            let mut got = vec![f32::NAN; g.oc * g.l()];
            g.forward_image(&lowering, &wt, Some(&bias), &x, &mut got);
            assert_eq!(got, want, "{cfg:?}");

            let dy: Vec<f32> = (0..g.oc * g.l()).map(|i| value(i, 3)).collect();
            let lowering = g.input_grad_lowering(&wt);
            let shifted = matches!(lowering, Lowering::Shifted { .. });
            let within = (0..2).all(|d| {
                let (k, p, dil) = [
                    (cfg.kernel_size.0, cfg.padding.0, cfg.dilation.0),
                    (cfg.kernel_size.1, cfg.padding.1, cfg.dilation.1),
                ][d];
                p <= dil * (k - 1)
            });
            assert_eq!(shifted, within, "{cfg:?}");
            let mut want = vec![f32::NAN; g.c * h * w];
            g.input_grad_image(&columns, &wt, &dy, &mut want);
            let mut got = vec![f32::NAN; g.c * h * w];
            g.input_grad_image(&lowering, &wt, &dy, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{cfg:?}: {a} vs {b}"
                );
            }
        }
    }

    /// The weight gradient read in place from the padded channels-last image (16 and 32
    /// channels: blocks of one tap each, and two blocks per tap) gives the sums of the gathered
    /// rows: the same terms in the same order, plus exact zeros from the padded grid.
    #[test]
    fn weight_gradient_read_in_place_agrees_with_gathered_rows() {
        let cases = [
            Conv2dConfig::new(16, 3, 3).padding(1),
            Conv2dConfig::new(32, 2, 3).dilation(2).padding(1),
            Conv2dConfig::new(16, 2, 3)
                .kernel_size_hw((3, 2))
                .padding_hw((0, 1)),
        ];
        for cfg in cases {
            let (h, w) = (6, 5);
            let (oh, ow) = cfg.output_size(h, w).unwrap();
            let g = Geom::new(&cfg, &[1, cfg.in_channels, h, w], oh, ow);
            assert!(g.wgrad_in_place(), "{cfg:?}");
            let value = |i: usize, m: usize| ((i * 37 + m) % 23) as f32 / 11.0 - 1.0;
            let x: Vec<f32> = (0..g.c * h * w).map(|i| value(i, 1)).collect();
            let dy: Vec<f32> = (0..g.oc * g.l()).map(|i| value(i, 3)).collect();
            let mut kept = vec![f32::NAN; g.kept_len()];
            g.keep_input(&x, &mut kept);
            let mut got = vec![0.5f32; g.oc * g.k()];
            g.weight_grad_image(g.tap_blocks().as_deref(), &kept, &dy, &mut got);
            let mut xt = vec![0.0; x.len()];
            transpose(&x, g.c, h * w, &mut xt);
            let mut want = vec![0.5f32; g.oc * g.k()];
            g.weight_grad_image(None, &xt, &dy, &mut want);
            assert_eq!(got, want, "{cfg:?}");
        }
    }

    #[test]
    fn wgrad_chunking_depends_on_batch_and_weight_size_only() {
        assert_eq!(wgrad_chunks(1, 10), 1);
        assert_eq!(wgrad_chunks(128, 2304), 32);
        assert_eq!(wgrad_chunks(10, 2304), 10);
        // 512·512·3·3 weights: one partial, the GEMM parallelises instead.
        assert_eq!(wgrad_chunks(128, 512 * 512 * 9), 1);
        assert_eq!(wgrad_chunks(128, 256 * 256 * 9), 7);
    }
}
