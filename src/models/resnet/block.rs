//! Residual blocks. Each computes `y = F(x) + shortcut(x)` and, in its backward pass, writes the
//! identity path out literally: the gradient reaching `x` is the branch's input gradient plus the
//! shortcut's, `dx = dF(d_sum) + shortcut′(d_sum)`. A plain block (no shortcut) drops the second
//! term, and that is all that separates a ResNet from its plain twin.
//!
//! For speed the blocks work in place where the math allows it: a ReLU that follows a BatchNorm
//! is fused into it ([`BatchNorm2d::forward_in_place`] with `relu`, whose backward pass applies
//! the ReLU's derivative), the shortcut is added straight into the branch's output (and its
//! gradient straight into the branch's input gradient), and the ReLU after the sum keeps only a
//! mask. Intermediate arrays that die inside a block go back to the buffer pool of
//! [`crate::layers::scratch`] for the next layer.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use crate::error::{Error, fmt_shape};
use crate::layers::scratch;
use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig};
use crate::module::{BufferVisitor, ParamVisitor, visit_child_buffers, visit_child_params};
use crate::{Mode, Module, Result, Rng, Scalar, ops};

use super::ELEMENTWISE_CHUNK;
use super::shortcut::{Shortcut, ShortcutKind};

/// A residual unit as the network drives it: `(N, C_in, H, W) → (N, C_out, H/s, W/s)`.
pub trait Block<F: Scalar>: Module<F> + Send {
    /// `y = block(x)`; in [`Mode::Train`] keeps what backward needs.
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>>;
    /// ∂L/∂x from ∂L/∂y; accumulates parameter gradients.
    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>>;
}

/// Which block a network stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18/34 and the CIFAR ResNets); expansion 1.
    Basic,
    /// 1×1 reduce, 3×3 (carrying the stride, torchvision v1.5), 1×1 expand ×4 (ResNet-50).
    Bottleneck,
    /// Pre-activation basic block (He et al. 2016b): BN → ReLU → conv, twice, no ReLU after the sum.
    PreAct,
}

impl BlockKind {
    /// Output channels per unit of stage width.
    pub fn expansion(self) -> usize {
        if self == BlockKind::Bottleneck { 4 } else { 1 }
    }
}

fn bn<F: Scalar>(c: usize) -> Result<BatchNorm2d<F>> {
    BatchNorm2d::new(BatchNormConfig::new(c))
}

/// `y = relu(x)` in place, as the last step of a block; keeps `[y > 0]` in train mode, which is
/// all its derivative needs.
#[derive(Clone, Debug, Default)]
struct ReluInPlace {
    /// The mask of the last train-mode forward and its shape. // (N, C, H, W)
    mask: Option<([usize; 4], Vec<bool>)>,
    /// The mask buffer released by the last backward pass.
    spare: Vec<bool>,
}

impl ReluInPlace {
    /// `x ← max(x, 0)`.
    fn forward<F: Scalar>(&mut self, x: &mut Array4<F>, mode: Mode) {
        self.mask = None;
        if !mode.is_train() {
            self.spare = Vec::new();
            x.mapv_inplace(ops::relu);
            return;
        }
        let mut mask = std::mem::take(&mut self.spare);
        mask.resize(x.len(), false);
        if !x.is_standard_layout() {
            *x = x.as_standard_layout().into_owned();
        }
        let values = x.as_slice_mut().expect("standard layout");
        values
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(mask.par_chunks_mut(ELEMENTWISE_CHUNK))
            .for_each(|(values, mask)| {
                for (v, m) in values.iter_mut().zip(mask) {
                    *m = *v > F::zero();
                    *v = ops::relu(*v);
                }
            });
        let (n, c, h, w) = x.dim();
        self.mask = Some(([n, c, h, w], mask));
    }

    /// `∂L/∂x = dy ⊙ [y > 0]`, as a new array.
    fn backward<F: Scalar>(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        const OP: &str = "Relu::backward";
        let (shape, _) = self.mask.as_ref().ok_or(Error::NoForwardCache { op: OP })?;
        if dy.shape() != shape {
            return Err(Error::shape(
                OP,
                "dy (shape of the forward output)",
                fmt_shape(shape),
                dy.shape(),
            ));
        }
        let (_, mask) = self.mask.take().expect("checked above");
        let dy = dy.as_standard_layout();
        let mut dx = scratch::take(dy.len());
        let dys = dy.as_slice().expect("standard layout");
        dx.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(dys.par_chunks(ELEMENTWISE_CHUNK))
            .zip(mask.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|((dx, dy), mask)| {
                for ((d, &g), &m) in dx.iter_mut().zip(dy).zip(mask) {
                    *d = g * if m { F::one() } else { F::zero() };
                }
            });
        let dx = Array4::from_shape_vec(dy.raw_dim(), dx).expect("len matches");
        self.spare = mask;
        Ok(dx)
    }
}

/// `y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
///
/// Parameters: `conv1.weight (C_out, C_in, 3, 3)`, `bn1.*`, `conv2.weight (C_out, C_out, 3, 3)`,
/// `bn2.*`, and the shortcut's `downsample.*` (option B).
pub struct BasicBlock<F: Scalar> {
    pub conv1: Conv2d<F>,
    pub bn1: BatchNorm2d<F>,
    pub conv2: Conv2d<F>,
    pub bn2: BatchNorm2d<F>,
    pub shortcut: Shortcut<F>,
    /// The ReLU after the sum (the one after `bn1` is fused into it).
    relu_out: ReluInPlace,
}

impl<F: Scalar> BasicBlock<F> {
    /// `cin → cout` channels, the first convolution carrying `stride`.
    pub fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        shortcut: ShortcutKind,
        plain: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(BasicBlock {
            conv1: super::conv(
                Conv2dConfig::new(cin, cout, 3)
                    .stride(stride)
                    .padding(1)
                    .bias(false),
                rng,
            )?,
            bn1: bn(cout)?,
            conv2: super::conv(Conv2dConfig::new(cout, cout, 3).padding(1).bias(false), rng)?,
            bn2: bn(cout)?,
            shortcut: Shortcut::build(shortcut, plain, cin, cout, stride, true, rng)?,
            relu_out: ReluInPlace::default(),
        })
    }
}

impl<F: Scalar> Block<F> for BasicBlock<F> {
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        let mut a = self.conv1.forward(x, mode)?;
        self.bn1.forward_in_place(&mut a, mode, true)?; // relu(bn1(conv1(x)))
        let mut sum = self.conv2.forward(a.view(), mode)?;
        scratch::recycle(a);
        self.bn2.forward_in_place(&mut sum, mode, false)?; // the branch F(x)
        self.shortcut.add_forward(x, &mut sum, mode)?; // F(x) + shortcut(x)
        self.relu_out.forward(&mut sum, mode);
        Ok(sum)
    }

    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let d_sum = self.relu_out.backward(dy)?;
        let d = self.bn2.backward(d_sum.view())?;
        let mut d_a = self.conv2.backward(d.view())?;
        scratch::recycle(d);
        self.bn1.backward_in_place(&mut d_a)?; // through relu1 and bn1
        let mut dx = self.conv1.backward(d_a.view())?; // dF(d_sum)
        scratch::recycle(d_a);
        self.shortcut.add_backward(d_sum.view(), &mut dx)?; // + shortcut′(d_sum)
        scratch::recycle(d_sum);
        Ok(dx)
    }
}

impl<F: Scalar> Module<F> for BasicBlock<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        visit_child_params("conv1", &mut self.conv1, f);
        visit_child_params("bn1", &mut self.bn1, f);
        visit_child_params("conv2", &mut self.conv2, f);
        visit_child_params("bn2", &mut self.bn2, f);
        self.shortcut.visit_params(f);
    }

    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        visit_child_buffers("bn1", &mut self.bn1, f);
        visit_child_buffers("bn2", &mut self.bn2, f);
        self.shortcut.visit_buffers(f);
    }
}

/// `y = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))`, torchvision's
/// v1.5 bottleneck: `conv1` 1×1 `C_in → W`, `conv2` 3×3 `W → W` with the stride, `conv3` 1×1
/// `W → 4W`.
pub struct Bottleneck<F: Scalar> {
    pub conv1: Conv2d<F>,
    pub bn1: BatchNorm2d<F>,
    pub conv2: Conv2d<F>,
    pub bn2: BatchNorm2d<F>,
    pub conv3: Conv2d<F>,
    pub bn3: BatchNorm2d<F>,
    pub shortcut: Shortcut<F>,
    /// The ReLU after the sum (those after `bn1` and `bn2` are fused into them).
    relu_out: ReluInPlace,
}

impl<F: Scalar> Bottleneck<F> {
    /// `cin → 4·width` channels, the 3×3 convolution carrying `stride`.
    pub fn new(
        cin: usize,
        width: usize,
        stride: usize,
        shortcut: ShortcutKind,
        plain: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let cout = width * BlockKind::Bottleneck.expansion();
        Ok(Bottleneck {
            conv1: super::conv(Conv2dConfig::new(cin, width, 1).bias(false), rng)?,
            bn1: bn(width)?,
            conv2: super::conv(
                Conv2dConfig::new(width, width, 3)
                    .stride(stride)
                    .padding(1)
                    .bias(false),
                rng,
            )?,
            bn2: bn(width)?,
            conv3: super::conv(Conv2dConfig::new(width, cout, 1).bias(false), rng)?,
            bn3: bn(cout)?,
            shortcut: Shortcut::build(shortcut, plain, cin, cout, stride, true, rng)?,
            relu_out: ReluInPlace::default(),
        })
    }
}

impl<F: Scalar> Block<F> for Bottleneck<F> {
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        let mut a = self.conv1.forward(x, mode)?;
        self.bn1.forward_in_place(&mut a, mode, true)?; // relu(bn1(conv1(x)))
        let mut b = self.conv2.forward(a.view(), mode)?;
        scratch::recycle(a);
        self.bn2.forward_in_place(&mut b, mode, true)?; // relu(bn2(conv2(·)))
        let mut sum = self.conv3.forward(b.view(), mode)?;
        scratch::recycle(b);
        self.bn3.forward_in_place(&mut sum, mode, false)?; // the branch F(x)
        self.shortcut.add_forward(x, &mut sum, mode)?; // F(x) + shortcut(x)
        self.relu_out.forward(&mut sum, mode);
        Ok(sum)
    }

    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let d_sum = self.relu_out.backward(dy)?;
        let d = self.bn3.backward(d_sum.view())?;
        let mut d_b = self.conv3.backward(d.view())?;
        scratch::recycle(d);
        self.bn2.backward_in_place(&mut d_b)?; // through relu2 and bn2
        let mut d_a = self.conv2.backward(d_b.view())?;
        scratch::recycle(d_b);
        self.bn1.backward_in_place(&mut d_a)?; // through relu1 and bn1
        let mut dx = self.conv1.backward(d_a.view())?; // dF(d_sum)
        scratch::recycle(d_a);
        self.shortcut.add_backward(d_sum.view(), &mut dx)?; // + shortcut′(d_sum)
        scratch::recycle(d_sum);
        Ok(dx)
    }
}

impl<F: Scalar> Module<F> for Bottleneck<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        visit_child_params("conv1", &mut self.conv1, f);
        visit_child_params("bn1", &mut self.bn1, f);
        visit_child_params("conv2", &mut self.conv2, f);
        visit_child_params("bn2", &mut self.bn2, f);
        visit_child_params("conv3", &mut self.conv3, f);
        visit_child_params("bn3", &mut self.bn3, f);
        self.shortcut.visit_params(f);
    }

    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        visit_child_buffers("bn1", &mut self.bn1, f);
        visit_child_buffers("bn2", &mut self.bn2, f);
        visit_child_buffers("bn3", &mut self.bn3, f);
        self.shortcut.visit_buffers(f);
    }
}

/// The pre-activation block (He et al. 2016b, "Identity mappings in deep residual networks"):
/// `p = relu(bn1(x))`, `y = conv2(relu(bn2(conv1(p)))) + shortcut`, where the shortcut is `x`
/// itself, or (option A) `x` subsampled and padded, or (option B) a 1×1 convolution of `p`
/// (without BatchNorm). Nothing follows the sum, so the identity path runs unobstructed from
/// block to block.
pub struct PreActBlock<F: Scalar> {
    pub bn1: BatchNorm2d<F>,
    pub conv1: Conv2d<F>,
    pub bn2: BatchNorm2d<F>,
    pub conv2: Conv2d<F>,
    pub shortcut: Shortcut<F>,
}

impl<F: Scalar> PreActBlock<F> {
    /// `cin → cout` channels, the first convolution carrying `stride`.
    pub fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        shortcut: ShortcutKind,
        plain: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(PreActBlock {
            bn1: bn(cin)?,
            conv1: super::conv(
                Conv2dConfig::new(cin, cout, 3)
                    .stride(stride)
                    .padding(1)
                    .bias(false),
                rng,
            )?,
            bn2: bn(cout)?,
            conv2: super::conv(Conv2dConfig::new(cout, cout, 3).padding(1).bias(false), rng)?,
            shortcut: Shortcut::build(shortcut, plain, cin, cout, stride, false, rng)?,
        })
    }

    /// Whether the shortcut reads the pre-activated input (a projection does, He et al. 2016b).
    fn shortcut_reads_preactivation(&self) -> bool {
        matches!(self.shortcut, Shortcut::Projection { .. })
    }
}

impl<F: Scalar> Block<F> for PreActBlock<F> {
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        let p = self.bn1.forward_fused(x, mode, true)?; // p = relu(bn1(x))
        let mut a = self.conv1.forward(p.view(), mode)?;
        self.bn2.forward_in_place(&mut a, mode, true)?; // relu(bn2(conv1(p)))
        let mut sum = self.conv2.forward(a.view(), mode)?; // the branch
        scratch::recycle(a);
        let source = if self.shortcut_reads_preactivation() {
            p.view()
        } else {
            x
        };
        self.shortcut.add_forward(source, &mut sum, mode)?; // branch + shortcut
        scratch::recycle(p);
        Ok(sum)
    }

    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let mut d = self.conv2.backward(dy)?;
        self.bn2.backward_in_place(&mut d)?; // through relu2 and bn2
        let mut d_p = self.conv1.backward(d.view())?;
        scratch::recycle(d);
        if self.shortcut_reads_preactivation() {
            // The projection reads p: its gradient joins the branch's before BN1 and ReLU.
            self.shortcut.add_backward(dy, &mut d_p)?;
            self.bn1.backward_in_place(&mut d_p)?; // through relu1 and bn1
        } else {
            self.bn1.backward_in_place(&mut d_p)?; // through relu1 and bn1
            self.shortcut.add_backward(dy, &mut d_p)?; // + shortcut′(dy)
        }
        Ok(d_p)
    }
}

impl<F: Scalar> Module<F> for PreActBlock<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        visit_child_params("bn1", &mut self.bn1, f);
        visit_child_params("conv1", &mut self.conv1, f);
        visit_child_params("bn2", &mut self.bn2, f);
        visit_child_params("conv2", &mut self.conv2, f);
        self.shortcut.visit_params(f);
    }

    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        visit_child_buffers("bn1", &mut self.bn1, f);
        visit_child_buffers("bn2", &mut self.bn2, f);
        self.shortcut.visit_buffers(f);
    }
}
