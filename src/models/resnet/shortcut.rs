//! The path by which a residual block's input reaches its output beside the residual branch.

use ndarray::{Array4, ArrayView4, s};
use rayon::prelude::*;

use super::ELEMENTWISE_CHUNK;

use crate::error::check_shape;
use crate::layers::scratch;
use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig};
use crate::module::{BufferVisitor, ParamVisitor, visit_child_buffers, visit_child_params};
use crate::{Error, Mode, Module, Result, Rng, Scalar};

/// How a block adds its input to its output: `y = F(x) + shortcut(x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ShortcutKind {
    /// Option A (He et al. 2016, CIFAR experiments): identity where shapes agree, otherwise the
    /// input subsampled by the stride with its extra channels zero-filled. No parameters.
    A,
    /// Option B: identity where shapes agree, otherwise a 1×1 convolution with the stride,
    /// followed by BatchNorm (torchvision's `downsample.0`, `downsample.1`).
    B,
}

/// A block's shortcut, as built for its shapes.
#[derive(Clone, Debug)]
pub enum Shortcut<F: Scalar> {
    /// `x` itself.
    Identity,
    /// Option A: `x[:, :, ::stride, ::stride]` with `before` zero channels in front and `after`
    /// behind (the extra channels split as evenly as possible, the odd one behind).
    PadChannels {
        stride: usize,
        before: usize,
        after: usize,
        /// The input shape of the last train-mode forward.
        input_shape: Option<[usize; 4]>,
    },
    /// Option B: `BN(conv1×1(x))` (post-activation blocks), or `conv1×1(x)` alone in
    /// pre-activation blocks, where the next block's BatchNorm normalises the sum.
    Projection {
        conv: Box<Conv2d<F>>,
        bn: Option<Box<BatchNorm2d<F>>>,
    },
    /// No shortcut at all: the block of a plain network.
    None,
}

impl<F: Scalar> Shortcut<F> {
    /// The shortcut of a block mapping `cin` channels to `cout` with `stride`; `plain` gives
    /// [`Shortcut::None`]; `normalize` puts a BatchNorm after an option-B projection. Draws the
    /// projection's weights from `rng` (Kaiming normal, fan-out).
    pub fn build(
        kind: ShortcutKind,
        plain: bool,
        cin: usize,
        cout: usize,
        stride: usize,
        normalize: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        if plain {
            return Ok(Shortcut::None);
        }
        if cin == cout && stride == 1 {
            return Ok(Shortcut::Identity);
        }
        Ok(match kind {
            ShortcutKind::A => {
                if cout < cin {
                    return Err(Error::invalid(
                        "Shortcut",
                        "option A",
                        format!("cannot map {cin} channels to fewer ({cout}) without parameters"),
                    ));
                }
                let pad = cout - cin;
                Shortcut::PadChannels {
                    stride,
                    before: pad / 2,
                    after: pad - pad / 2,
                    input_shape: None,
                }
            }
            ShortcutKind::B => Shortcut::Projection {
                conv: Box::new(super::conv(
                    Conv2dConfig::new(cin, cout, 1).stride(stride).bias(false),
                    rng,
                )?),
                bn: if normalize {
                    Some(Box::new(BatchNorm2d::new(BatchNormConfig::new(cout))?))
                } else {
                    None
                },
            },
        })
    }

    /// `shortcut(x)`, or `None` for a plain block.
    pub fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Option<Array4<F>>> {
        match self {
            Shortcut::Identity => Ok(Some(x.to_owned())),
            Shortcut::PadChannels {
                stride,
                before,
                after,
                input_shape,
            } => {
                let sub = x.slice(s![.., .., ..;*stride, ..;*stride]);
                let (n, c, h, w) = sub.dim();
                let mut out = Array4::zeros((n, *before + c + *after, h, w));
                out.slice_mut(s![.., *before..*before + c, .., ..])
                    .assign(&sub);
                *input_shape = mode.is_train().then(|| {
                    let d = x.dim();
                    [d.0, d.1, d.2, d.3]
                });
                Ok(Some(out))
            }
            Shortcut::Projection { conv, bn } => {
                let a = conv.forward(x, mode)?;
                match bn {
                    Some(bn) => Ok(Some(bn.forward(a.view(), mode)?)),
                    None => Ok(Some(a)),
                }
            }
            Shortcut::None => Ok(None),
        }
    }

    /// The shortcut's share of ∂L/∂x given ∂L/∂(block sum), or `None` for a plain block.
    pub fn backward(&mut self, d_sum: ArrayView4<'_, F>) -> Result<Option<Array4<F>>> {
        match self {
            Shortcut::Identity => Ok(Some(d_sum.to_owned())),
            Shortcut::PadChannels {
                stride,
                before,
                after,
                input_shape,
            } => {
                let shape = input_shape.take().ok_or(Error::NoForwardCache {
                    op: "Shortcut::backward",
                })?;
                let c = d_sum.dim().1 - *before - *after;
                let mut dx = Array4::zeros(shape);
                dx.slice_mut(s![.., .., ..;*stride, ..;*stride])
                    .assign(&d_sum.slice(s![.., *before..*before + c, .., ..]));
                Ok(Some(dx))
            }
            Shortcut::Projection { conv, bn } => match bn {
                Some(bn) => {
                    let da = bn.backward(d_sum)?;
                    Ok(Some(conv.backward(da.view())?))
                }
                None => Ok(Some(conv.backward(d_sum)?)),
            },
            Shortcut::None => Ok(None),
        }
    }
}

impl<F: Scalar> Shortcut<F> {
    /// `sum += shortcut(x)` in place (nothing for a plain block): what [`Shortcut::forward`]
    /// computes, without a separate output array. `sum` is the residual branch's output.
    ///
    /// # Errors
    /// Those of the projection's layers; [`Error::Shape`] if `sum` does not have the shape of
    /// `shortcut(x)`.
    pub(crate) fn add_forward(
        &mut self,
        x: ArrayView4<'_, F>,
        sum: &mut Array4<F>,
        mode: Mode,
    ) -> Result<()> {
        match self {
            Shortcut::Identity => add_checked(sum, x),
            Shortcut::PadChannels {
                stride,
                before,
                after,
                input_shape,
            } => {
                *input_shape = None;
                let sub = x.slice(s![.., .., ..;*stride, ..;*stride]);
                let (n, c, h, w) = sub.dim();
                check_sum_shape(sum.shape(), &[n, *before + c + *after, h, w])?;
                let mut middle = sum.slice_mut(s![.., *before..*before + c, .., ..]);
                middle += &sub;
                *input_shape = mode.is_train().then(|| {
                    let d = x.dim();
                    [d.0, d.1, d.2, d.3]
                });
                Ok(())
            }
            Shortcut::Projection { conv, bn } => {
                let mut a = conv.forward(x, mode)?;
                if let Some(bn) = bn {
                    bn.forward_in_place(&mut a, mode, false)?;
                }
                let added = add_checked(sum, a.view());
                scratch::recycle(a);
                added
            }
            Shortcut::None => Ok(()),
        }
    }

    /// `dx += shortcut′(d_sum)` in place (nothing for a plain block): the shortcut's share of
    /// ∂L/∂x, added to the residual branch's. `dx` has the shape of the block's input.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward; [`Error::Shape`] if `dx` does not
    /// have the shape of that forward's input.
    pub(crate) fn add_backward(
        &mut self,
        d_sum: ArrayView4<'_, F>,
        dx: &mut Array4<F>,
    ) -> Result<()> {
        match self {
            Shortcut::Identity => add_checked(dx, d_sum),
            Shortcut::PadChannels {
                stride,
                before,
                after,
                input_shape,
            } => {
                let shape = input_shape.take().ok_or(Error::NoForwardCache {
                    op: "Shortcut::backward",
                })?;
                check_sum_shape(dx.shape(), &shape)?;
                let c = d_sum.dim().1 - *before - *after;
                let mut sub = dx.slice_mut(s![.., .., ..;*stride, ..;*stride]);
                sub += &d_sum.slice(s![.., *before..*before + c, .., ..]);
                Ok(())
            }
            Shortcut::Projection { conv, bn } => {
                let d = match bn {
                    Some(bn) => {
                        let da = bn.backward(d_sum)?;
                        let d = conv.backward(da.view());
                        scratch::recycle(da);
                        d?
                    }
                    None => conv.backward(d_sum)?,
                };
                let added = add_checked(dx, d.view());
                scratch::recycle(d);
                added
            }
            Shortcut::None => Ok(()),
        }
    }
}

/// `acc += v` for arrays of the same shape (the branch's output or input gradient and the
/// shortcut's).
fn add_checked<F: Scalar>(acc: &mut Array4<F>, v: ArrayView4<'_, F>) -> Result<()> {
    check_sum_shape(acc.shape(), v.shape())?;
    if !(acc.is_standard_layout() && v.is_standard_layout()) {
        *acc += &v;
        return Ok(());
    }
    let (acc, v) = (acc.as_slice_mut(), v.as_slice());
    let (acc, v) = (acc.expect("standard layout"), v.expect("standard layout"));
    acc.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(v.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(acc, v)| {
            for (a, &b) in acc.iter_mut().zip(v) {
                *a += b;
            }
        });
    Ok(())
}

/// The residual branch's array (`have`) must have the shape of the shortcut's (`want`).
fn check_sum_shape(have: &[usize], want: &[usize]) -> Result<()> {
    check_shape(
        "Shortcut",
        "residual branch (N, C, H, W), to add the shortcut to",
        want,
        have,
    )
}

impl<F: Scalar> Module<F> for Shortcut<F> {
    /// Option B's parameters as torchvision names them: `downsample.0.weight` (the convolution)
    /// and `downsample.1.weight`, `downsample.1.bias` (the BatchNorm).
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        if let Shortcut::Projection { conv, bn } = self {
            visit_child_params("downsample.0", conv.as_mut(), f);
            if let Some(bn) = bn {
                visit_child_params("downsample.1", bn.as_mut(), f);
            }
        }
    }

    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        if let Shortcut::Projection { bn: Some(bn), .. } = self {
            visit_child_buffers("downsample.1", bn.as_mut(), f);
        }
    }
}
