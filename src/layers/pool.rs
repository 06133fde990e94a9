//! Pooling and reshaping layers for NCHW images: [`MaxPool2d`], [`AvgPool2d`], [`GlobalAvgPool`],
//! [`Flatten`].
//!
//! The window layers follow PyTorch (`ceil_mode = False`, dilation 1): an `H×W` input gives
//! `OH = ⌊(H + 2·ph − kh) / sh⌋ + 1` rows (likewise `OW`), window `(oh, ow)` covers input rows
//! `oh·sh − ph ..< oh·sh − ph + kh` and the matching columns, and the padding is at most half the
//! kernel (`p ≤ k/2`), so every window holds at least one real pixel.
//!
//! None of these layers has parameters, and none keeps element values: they are not generic over
//! the element type; their `forward`/`backward` are. Planes `(n, c)` are processed in parallel
//! (no reductions across planes, so the results do not depend on the thread count).

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use rayon::prelude::*;

use super::scratch;
use crate::error::{Error, Result, fmt_shape};
use crate::module::{Module, ParamVisitor};
use crate::{Mode, Scalar};

/// The window geometry of one pooling call.
#[derive(Clone, Copy, Debug)]
struct Window {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
}

impl Window {
    /// Validates the hyper-parameters and the input shape `(N, C, H, W)`.
    fn new(
        op: &'static str,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        shape: &[usize],
    ) -> Result<Self> {
        let ((kh, kw), (sh, sw), (ph, pw)) = (kernel, stride, padding);
        if kh == 0 || kw == 0 {
            return Err(Error::invalid(
                op,
                "kernel",
                format!("must be positive, got ({kh}, {kw})"),
            ));
        }
        if sh == 0 || sw == 0 {
            return Err(Error::invalid(
                op,
                "stride",
                format!("must be positive, got ({sh}, {sw})"),
            ));
        }
        if 2 * ph > kh || 2 * pw > kw {
            return Err(Error::invalid(
                op,
                "padding",
                format!(
                    "padding ({ph}, {pw}) must be at most half the kernel ({kh}, {kw}), \
                     so that every window holds a pixel of the input"
                ),
            ));
        }
        let (h, w) = (shape[2], shape[3]);
        if h == 0 || w == 0 || h + 2 * ph < kh || w + 2 * pw < kw {
            return Err(Error::shape(
                op,
                "input (N, C, H, W)",
                format!("H ≥ 1, W ≥ 1, H + 2·{ph} ≥ {kh} and W + 2·{pw} ≥ {kw}"),
                shape,
            ));
        }
        Ok(Window {
            h,
            w,
            oh: (h + 2 * ph - kh) / sh + 1,
            ow: (w + 2 * pw - kw) / sw + 1,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
        })
    }

    /// Input rows `lo..hi` of window row `oh`, clipped to the input (never empty).
    #[inline]
    fn rows(&self, oh: usize) -> (usize, usize) {
        clip(oh * self.sh, self.ph, self.kh, self.h)
    }

    /// Input columns `lo..hi` of window column `ow`, clipped to the input (never empty).
    #[inline]
    fn cols(&self, ow: usize) -> (usize, usize) {
        clip(ow * self.sw, self.pw, self.kw, self.w)
    }
}

/// The window `start − pad ..< start − pad + k`, clipped to `0..len`.
#[inline]
fn clip(start: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
    (start.saturating_sub(pad), (start + k - pad).min(len))
}

/// The shapes of a window layer's input `(N, C, H, W)` and output `(N, C, OH, OW)`, kept for
/// backward.
#[derive(Clone, Debug)]
struct Shapes {
    input: [usize; 4],
    output: [usize; 4],
}

fn check_dy(op: &'static str, want: &[usize; 4], dy: &[usize]) -> Result<()> {
    if dy != want {
        return Err(Error::shape(op, "dy (N, C, OH, OW)", fmt_shape(want), dy));
    }
    Ok(())
}

fn dims4(a: &[usize]) -> [usize; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Max pooling, PyTorch `nn.MaxPool2d(kernel, stride, padding)`:
/// `y[n, c, oh, ow] = max over the window of x` (padding counts as −∞);
/// `x: (N, C, H, W) → y: (N, C, OH, OW)`.
///
/// Backward sends each `dy` element to the position of its window's maximum; on ties that is the
/// first maximum in scan order (row by row), as PyTorch. A NaN in a window is its maximum.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    /// Window size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Step between windows `(sh, sw)`; [`MaxPool2d::new`] sets it to the kernel size.
    pub stride: (usize, usize),
    /// Implicit −∞ padding on each side `(ph, pw)`, at most half the kernel.
    pub padding: (usize, usize),
    /// The shapes and the argmax of the last train-mode forward: for every output element the
    /// flat index `ih·W + iw` of its maximum within its input plane. // (N, C, OH, OW)
    cache: Option<(Shapes, Vec<usize>)>,
}

impl MaxPool2d {
    /// `nn.MaxPool2d(k)`: a `k×k` window, stride `k`, no padding.
    pub fn new(kernel: usize) -> Self {
        Self::new_hw((kernel, kernel))
    }

    /// A `(kh, kw)` window with stride `(kh, kw)`, no padding.
    pub fn new_hw(kernel: (usize, usize)) -> Self {
        MaxPool2d {
            kernel,
            stride: kernel,
            padding: (0, 0),
            cache: None,
        }
    }

    /// The same stride `s` along height and width.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }

    /// Stride `(sh, sw)`.
    pub fn stride_hw(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }

    /// The same padding `p` on all sides.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }

    /// Padding `(ph, pw)`.
    pub fn padding_hw(mut self, padding: (usize, usize)) -> Self {
        self.padding = padding;
        self
    }

    /// `y = max over each window`; `x: (N, C, H, W) → y: (N, C, OH, OW)`.
    ///
    /// Keeps the argmax positions in [`Mode::Train`]; nothing in [`Mode::Eval`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a zero kernel or stride or a padding above half the kernel;
    /// [`Error::Shape`] if `H` or `W` is 0 or the padded input is smaller than the kernel.
    pub fn forward<F: Scalar>(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        self.cache = None;
        let win = Window::new(
            "MaxPool2d::forward",
            self.kernel,
            self.stride,
            self.padding,
            x.shape(),
        )?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let x = x.as_standard_layout(); // (N, C, H, W)
        let xs = x.as_slice().expect("standard layout");
        let l = win.oh * win.ow;
        // Stale values from the buffer pool: `max_plane` writes every element.
        let mut y = scratch::array((n, c, win.oh, win.ow)); // (N, C, OH, OW)
        if !mode.is_train() {
            // Eval: the maxima only (no positions to keep for a backward pass).
            if l > 0 {
                y.as_slice_mut()
                    .expect("fresh array")
                    .par_chunks_mut(l)
                    .zip(xs.par_chunks(win.h * win.w))
                    .for_each(|(y_p, x_p)| max_plane_values(&win, x_p, y_p));
            }
            return Ok(y);
        }
        let mut argmax = vec![0usize; n * c * l]; // (N, C, OH, OW)
        if !argmax.is_empty() {
            y.as_slice_mut()
                .expect("fresh array")
                .par_chunks_mut(l)
                .zip(argmax.par_chunks_mut(l))
                .zip(xs.par_chunks(win.h * win.w))
                .for_each(|((y_p, arg_p), x_p)| max_plane(&win, x_p, y_p, arg_p));
        }
        let shapes = Shapes {
            input: dims4(x.shape()),
            output: [n, c, win.oh, win.ow],
        };
        self.cache = Some((shapes, argmax));
        Ok(y)
    }

    /// Given `dy: (N, C, OH, OW)`, returns `dx: (N, C, H, W)` with `dx[argmax] += dy` (every other
    /// input element gets 0). Uses (and releases) the argmax of the last train-mode forward.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// does not have that forward's output shape.
    pub fn backward<F: Scalar>(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        const OP: &str = "MaxPool2d::backward";
        let (shapes, _) = self
            .cache
            .as_ref()
            .ok_or(Error::NoForwardCache { op: OP })?;
        check_dy(OP, &shapes.output, dy.shape())?;
        let (shapes, argmax) = self.cache.take().expect("checked above");
        let dy = dy.as_standard_layout();
        let dys = dy.as_slice().expect("standard layout");
        let [_, _, h, w] = shapes.input;
        let l = shapes.output[2] * shapes.output[3];
        let mut dx = scratch::array(shapes.input); // (N, C, H, W)
        if !argmax.is_empty() {
            dx.as_slice_mut()
                .expect("fresh array")
                .par_chunks_mut(h * w)
                .zip(dys.par_chunks(l).zip(argmax.par_chunks(l)))
                .for_each(|(dx_p, (dy_p, arg_p))| {
                    dx_p.fill(F::zero()); // stale values from the buffer pool
                    for (&g, &i) in dy_p.iter().zip(arg_p) {
                        dx_p[i] += g;
                    }
                });
        }
        Ok(dx)
    }
}

/// Max pooling of one plane: `x_p: (H, W)`, `y_p: (OH, OW)`, `arg_p: (OH, OW)` flat indices into
/// `x_p`. Scan order row by row; a later element replaces the maximum only if it is larger (or
/// NaN), so ties keep the first; an all-−∞ window reports its first pixel.
fn max_plane<F: Scalar>(win: &Window, x_p: &[F], y_p: &mut [F], arg_p: &mut [usize]) {
    for oh in 0..win.oh {
        let (r0, r1) = win.rows(oh);
        for ow in 0..win.ow {
            let (c0, c1) = win.cols(ow);
            let mut best = F::neg_infinity();
            let mut at = r0 * win.w + c0;
            for ih in r0..r1 {
                for (iw, &v) in x_p[ih * win.w + c0..ih * win.w + c1].iter().enumerate() {
                    if v > best || v.is_nan() {
                        best = v;
                        at = ih * win.w + c0 + iw;
                    }
                }
            }
            y_p[oh * win.ow + ow] = best;
            arg_p[oh * win.ow + ow] = at;
        }
    }
}

/// [`max_plane`] without the positions (eval mode): the same maxima, NaN propagating, as a
/// branch-free select the compiler can vectorise.
fn max_plane_values<F: Scalar>(win: &Window, x_p: &[F], y_p: &mut [F]) {
    for oh in 0..win.oh {
        let (r0, r1) = win.rows(oh);
        for ow in 0..win.ow {
            let (c0, c1) = win.cols(ow);
            let mut best = F::neg_infinity();
            for ih in r0..r1 {
                for &v in &x_p[ih * win.w + c0..ih * win.w + c1] {
                    best = if v > best || v.is_nan() { v } else { best };
                }
            }
            y_p[oh * win.ow + ow] = best;
        }
    }
}

/// Average pooling, PyTorch `nn.AvgPool2d(kernel, stride, padding)` with its defaults
/// `count_include_pad = True`, `ceil_mode = False`: padding counts as zeros and every window is
/// divided by the full kernel area,
/// `y[n, c, oh, ow] = (Σ over the window of x) / (kh·kw)`; `x: (N, C, H, W) → y: (N, C, OH, OW)`.
#[derive(Clone, Debug)]
pub struct AvgPool2d {
    /// Window size `(kh, kw)`.
    pub kernel: (usize, usize),
    /// Step between windows `(sh, sw)`; [`AvgPool2d::new`] sets it to the kernel size.
    pub stride: (usize, usize),
    /// Zero padding on each side `(ph, pw)`, at most half the kernel.
    pub padding: (usize, usize),
    /// The shapes of the last train-mode forward.
    cache: Option<Shapes>,
}

impl AvgPool2d {
    /// `nn.AvgPool2d(k)`: a `k×k` window, stride `k`, no padding.
    pub fn new(kernel: usize) -> Self {
        Self::new_hw((kernel, kernel))
    }

    /// A `(kh, kw)` window with stride `(kh, kw)`, no padding.
    pub fn new_hw(kernel: (usize, usize)) -> Self {
        AvgPool2d {
            kernel,
            stride: kernel,
            padding: (0, 0),
            cache: None,
        }
    }

    /// The same stride `s` along height and width.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }

    /// Stride `(sh, sw)`.
    pub fn stride_hw(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }

    /// The same padding `p` on all sides.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }

    /// Padding `(ph, pw)`.
    pub fn padding_hw(mut self, padding: (usize, usize)) -> Self {
        self.padding = padding;
        self
    }

    /// `y = window sum / (kh·kw)`; `x: (N, C, H, W) → y: (N, C, OH, OW)`.
    ///
    /// Keeps the shapes in [`Mode::Train`]; nothing in [`Mode::Eval`].
    ///
    /// # Errors
    /// As [`MaxPool2d::forward`].
    pub fn forward<F: Scalar>(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        self.cache = None;
        let win = Window::new(
            "AvgPool2d::forward",
            self.kernel,
            self.stride,
            self.padding,
            x.shape(),
        )?;
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let x = x.as_standard_layout(); // (N, C, H, W)
        let xs = x.as_slice().expect("standard layout");
        let area = F::of((win.kh * win.kw) as f64);
        let mut y = Array4::zeros((n, c, win.oh, win.ow)); // (N, C, OH, OW)
        if n * c > 0 {
            y.as_slice_mut()
                .expect("fresh array")
                .par_chunks_mut(win.oh * win.ow)
                .zip(xs.par_chunks(win.h * win.w))
                .for_each(|(y_p, x_p)| {
                    for oh in 0..win.oh {
                        let (r0, r1) = win.rows(oh);
                        for ow in 0..win.ow {
                            let (c0, c1) = win.cols(ow);
                            let mut sum = F::zero();
                            for ih in r0..r1 {
                                for &v in &x_p[ih * win.w + c0..ih * win.w + c1] {
                                    sum += v;
                                }
                            }
                            y_p[oh * win.ow + ow] = sum / area;
                        }
                    }
                });
        }
        if mode.is_train() {
            self.cache = Some(Shapes {
                input: dims4(x.shape()),
                output: [n, c, win.oh, win.ow],
            });
        }
        Ok(y)
    }

    /// Given `dy: (N, C, OH, OW)`, returns `dx: (N, C, H, W)`: every input pixel of window
    /// `(oh, ow)` receives `dy[oh, ow] / (kh·kw)` (summed over the windows that contain it).
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// does not have that forward's output shape.
    pub fn backward<F: Scalar>(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        const OP: &str = "AvgPool2d::backward";
        let shapes = self
            .cache
            .as_ref()
            .ok_or(Error::NoForwardCache { op: OP })?;
        check_dy(OP, &shapes.output, dy.shape())?;
        let shapes = self.cache.take().expect("checked above");
        let win = Window::new(OP, self.kernel, self.stride, self.padding, &shapes.input)?;
        let dy = dy.as_standard_layout();
        let dys = dy.as_slice().expect("standard layout");
        let area = F::of((win.kh * win.kw) as f64);
        let mut dx = Array4::zeros(shapes.input); // (N, C, H, W)
        if !dx.is_empty() {
            dx.as_slice_mut()
                .expect("fresh array")
                .par_chunks_mut(win.h * win.w)
                .zip(dys.par_chunks(win.oh * win.ow))
                .for_each(|(dx_p, dy_p)| {
                    for oh in 0..win.oh {
                        let (r0, r1) = win.rows(oh);
                        for ow in 0..win.ow {
                            let (c0, c1) = win.cols(ow);
                            let g = dy_p[oh * win.ow + ow] / area;
                            for ih in r0..r1 {
                                for d in &mut dx_p[ih * win.w + c0..ih * win.w + c1] {
                                    *d += g;
                                }
                            }
                        }
                    }
                });
        }
        Ok(dx)
    }
}

/// Global average pooling (PyTorch `nn.AdaptiveAvgPool2d(1)` followed by `flatten(1)`):
/// `y[n, c] = (Σ_{h, w} x[n, c, h, w]) / (H·W)`; `x: (N, C, H, W) → y: (N, C)`.
#[derive(Clone, Debug, Default)]
pub struct GlobalAvgPool {
    /// The input shape of the last train-mode forward. // (N, C, H, W)
    input: Option<[usize; 4]>,
}

impl GlobalAvgPool {
    /// A layer with nothing kept.
    pub fn new() -> Self {
        GlobalAvgPool { input: None }
    }

    /// `y[n, c] = mean of x[n, c, :, :]`; `x: (N, C, H, W) → y: (N, C)`.
    ///
    /// Keeps the input shape in [`Mode::Train`]; nothing in [`Mode::Eval`].
    ///
    /// # Errors
    /// [`Error::Shape`] if `H` or `W` is 0 (the mean of nothing).
    pub fn forward<F: Scalar>(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array2<F>> {
        self.input = None;
        let [n, c, h, w] = dims4(x.shape());
        if h == 0 || w == 0 {
            return Err(Error::shape(
                "GlobalAvgPool::forward",
                "input (N, C, H, W)",
                "H ≥ 1 and W ≥ 1",
                x.shape(),
            ));
        }
        let count = F::of((h * w) as f64);
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let mut y = Array2::zeros((n, c)); // (N, C)
        for (y_p, x_p) in y.iter_mut().zip(xs.chunks(h * w)) {
            *y_p = x_p.iter().fold(F::zero(), |s, &v| s + v) / count;
        }
        self.input = mode.is_train().then_some([n, c, h, w]);
        Ok(y)
    }

    /// Given `dy: (N, C)`, returns `dx: (N, C, H, W)` with `dx[n, c, h, w] = dy[n, c] / (H·W)`.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// is not `(N, C)` of that forward.
    pub fn backward<F: Scalar>(&mut self, dy: ArrayView2<'_, F>) -> Result<Array4<F>> {
        const OP: &str = "GlobalAvgPool::backward";
        let [n, c, h, w] = self.input.ok_or(Error::NoForwardCache { op: OP })?;
        if dy.dim() != (n, c) {
            return Err(Error::shape(
                OP,
                "dy (N, C)",
                fmt_shape(&[n, c]),
                dy.shape(),
            ));
        }
        self.input = None;
        let count = F::of((h * w) as f64);
        // Stale values from the buffer pool: every plane is filled below.
        let mut dx = scratch::array((n, c, h, w)); // (N, C, H, W)
        for (dx_p, &g) in dx
            .as_slice_mut()
            .expect("fresh array")
            .chunks_mut(h * w)
            .zip(dy.iter())
        {
            dx_p.fill(g / count);
        }
        Ok(dx)
    }
}

/// `(N, C, H, W) → (N, C·H·W)` in row-major order (PyTorch `nn.Flatten()` / `x.flatten(1)`), and
/// back in backward.
#[derive(Clone, Debug, Default)]
pub struct Flatten {
    /// The input shape of the last train-mode forward. // (N, C, H, W)
    input: Option<[usize; 4]>,
}

impl Flatten {
    /// A layer with nothing kept.
    pub fn new() -> Self {
        Flatten { input: None }
    }

    /// `y[n, (c·H + h)·W + w] = x[n, c, h, w]`; `x: (N, C, H, W) → y: (N, C·H·W)`.
    ///
    /// Keeps the input shape in [`Mode::Train`]; nothing in [`Mode::Eval`]. Never fails for a
    /// 4-d input; the `Result` keeps the layer signatures uniform.
    pub fn forward<F: Scalar>(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array2<F>> {
        let [n, c, h, w] = dims4(x.shape());
        let y = x
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((n, c * h * w))
            .expect("standard layout reshapes");
        self.input = mode.is_train().then_some([n, c, h, w]);
        Ok(y)
    }

    /// Given `dy: (N, C·H·W)`, returns it reshaped to the forward input's `(N, C, H, W)`.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// is not `(N, C·H·W)` of that forward.
    pub fn backward<F: Scalar>(&mut self, dy: ArrayView2<'_, F>) -> Result<Array4<F>> {
        const OP: &str = "Flatten::backward";
        let [n, c, h, w] = self.input.ok_or(Error::NoForwardCache { op: OP })?;
        if dy.dim() != (n, c * h * w) {
            return Err(Error::shape(
                OP,
                "dy (N, C·H·W)",
                fmt_shape(&[n, c * h * w]),
                dy.shape(),
            ));
        }
        self.input = None;
        Ok(dy
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((n, c, h, w))
            .expect("standard layout reshapes"))
    }
}

macro_rules! no_params {
    ($($t:ty),*) => {$(
        /// No learnable parameters.
        impl<F: Scalar> Module<F> for $t {
            fn visit_params(&mut self, _f: &mut ParamVisitor<'_, F>) {}
        }
    )*};
}
no_params!(MaxPool2d, AvgPool2d, GlobalAvgPool, Flatten);

#[cfg(test)]
mod tests {
    use super::*;

    /// Eval mode's max-only path equals train mode's, NaN included (a window holding a NaN
    /// gives NaN, as in PyTorch), with padding.
    #[test]
    fn eval_max_pool_equals_train_and_propagates_nan() {
        let mut x = ndarray::Array4::from_shape_fn((2, 3, 7, 6), |(n, c, h, w)| {
            ((n * 31 + c * 17 + h * 7 + w * 3) % 23) as f32 - 11.0
        });
        x[[1, 2, 3, 3]] = f32::NAN;
        let mut pool = MaxPool2d::new(3).stride(2).padding(1);
        let eval = pool.forward(x.view(), Mode::Eval).unwrap();
        let train = pool.forward(x.view(), Mode::Train).unwrap();
        assert_eq!(eval.shape(), train.shape());
        for (a, b) in eval.iter().zip(train.iter()) {
            assert!(a == b || (a.is_nan() && b.is_nan()), "{a} vs {b}");
        }
        assert!(eval[[1, 2, 1, 1]].is_nan() && eval[[1, 2, 2, 2]].is_nan());
        assert!(eval[[1, 1, 1, 1]].is_finite());
    }

    #[test]
    fn window_clipping_matches_padding_semantics() {
        // k = 3, s = 2, p = 1 on H = 5: windows -1..2, 1..4, 3..6 → clipped 0..2, 1..4, 3..5.
        let win = Window::new("t", (3, 3), (2, 2), (1, 1), &[1, 1, 5, 5]).unwrap();
        assert_eq!((win.oh, win.ow), (3, 3));
        assert_eq!(win.rows(0), (0, 2));
        assert_eq!(win.rows(1), (1, 4));
        assert_eq!(win.rows(2), (3, 5));
    }
}
