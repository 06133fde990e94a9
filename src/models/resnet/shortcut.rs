//! The path by which a residual block's input reaches its output beside the residual branch.

use ndarray::{Array4, ArrayView4, s};

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
