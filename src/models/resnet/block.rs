//! Residual blocks. Each computes `y = F(x) + shortcut(x)` and, in its backward pass, writes the
//! identity path out literally: the gradient reaching `x` is the branch's input gradient plus the
//! shortcut's, `dx = dF(d_sum) + shortcut′(d_sum)`. A plain block (no shortcut) drops the second
//! term, and that is all that separates a ResNet from its plain twin.

use ndarray::{Array4, ArrayView4};

use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, Conv2dConfig, Relu};
use crate::module::{BufferVisitor, ParamVisitor, visit_child_buffers, visit_child_params};
use crate::{Mode, Module, Result, Rng, Scalar};

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

/// `sum = branch + shortcut` (in place on `branch`), or `branch` alone for a plain block.
fn add_shortcut<F: Scalar>(mut branch: Array4<F>, shortcut: Option<Array4<F>>) -> Array4<F> {
    if let Some(sc) = shortcut {
        branch += &sc;
    }
    branch
}

/// `dx = d_branch + d_shortcut` (the identity path), or `d_branch` for a plain block.
fn add_identity_path<F: Scalar>(
    mut d_branch: Array4<F>,
    d_shortcut: Option<Array4<F>>,
) -> Array4<F> {
    if let Some(ds) = d_shortcut {
        d_branch += &ds;
    }
    d_branch
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
    relu1: Relu<F>,
    relu_out: Relu<F>,
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
            relu1: Relu::new(),
            relu_out: Relu::new(),
        })
    }
}

impl<F: Scalar> Block<F> for BasicBlock<F> {
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        let a = self.conv1.forward(x, mode)?;
        let a = self.bn1.forward(a.view(), mode)?;
        let a = self.relu1.forward(a.view(), mode);
        let a = self.conv2.forward(a.view(), mode)?;
        let branch = self.bn2.forward(a.view(), mode)?;
        let sum = add_shortcut(branch, self.shortcut.forward(x, mode)?);
        Ok(self.relu_out.forward(sum.view(), mode))
    }

    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let d_sum = self.relu_out.backward(dy)?;
        let d = self.bn2.backward(d_sum.view())?;
        let d = self.conv2.backward(d.view())?;
        let d = self.relu1.backward(d.view())?;
        let d = self.bn1.backward(d.view())?;
        let d_branch = self.conv1.backward(d.view())?;
        Ok(add_identity_path(
            d_branch,
            self.shortcut.backward(d_sum.view())?,
        ))
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
    relu1: Relu<F>,
    relu2: Relu<F>,
    relu_out: Relu<F>,
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
            relu1: Relu::new(),
            relu2: Relu::new(),
            relu_out: Relu::new(),
        })
    }
}

impl<F: Scalar> Block<F> for Bottleneck<F> {
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        let a = self.conv1.forward(x, mode)?;
        let a = self.bn1.forward(a.view(), mode)?;
        let a = self.relu1.forward(a.view(), mode);
        let a = self.conv2.forward(a.view(), mode)?;
        let a = self.bn2.forward(a.view(), mode)?;
        let a = self.relu2.forward(a.view(), mode);
        let a = self.conv3.forward(a.view(), mode)?;
        let branch = self.bn3.forward(a.view(), mode)?;
        let sum = add_shortcut(branch, self.shortcut.forward(x, mode)?);
        Ok(self.relu_out.forward(sum.view(), mode))
    }

    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let d_sum = self.relu_out.backward(dy)?;
        let d = self.bn3.backward(d_sum.view())?;
        let d = self.conv3.backward(d.view())?;
        let d = self.relu2.backward(d.view())?;
        let d = self.bn2.backward(d.view())?;
        let d = self.conv2.backward(d.view())?;
        let d = self.relu1.backward(d.view())?;
        let d = self.bn1.backward(d.view())?;
        let d_branch = self.conv1.backward(d.view())?;
        Ok(add_identity_path(
            d_branch,
            self.shortcut.backward(d_sum.view())?,
        ))
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
    relu1: Relu<F>,
    relu2: Relu<F>,
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
            relu1: Relu::new(),
            relu2: Relu::new(),
        })
    }

    /// Whether the shortcut reads the pre-activated input (a projection does, He et al. 2016b).
    fn shortcut_reads_preactivation(&self) -> bool {
        matches!(self.shortcut, Shortcut::Projection { .. })
    }
}

impl<F: Scalar> Block<F> for PreActBlock<F> {
    fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array4<F>> {
        let p = self.bn1.forward(x, mode)?;
        let p = self.relu1.forward(p.view(), mode);
        let a = self.conv1.forward(p.view(), mode)?;
        let a = self.bn2.forward(a.view(), mode)?;
        let a = self.relu2.forward(a.view(), mode);
        let branch = self.conv2.forward(a.view(), mode)?;
        let source = if self.shortcut_reads_preactivation() {
            p.view()
        } else {
            x
        };
        Ok(add_shortcut(branch, self.shortcut.forward(source, mode)?))
    }

    fn backward(&mut self, dy: ArrayView4<'_, F>) -> Result<Array4<F>> {
        let d = self.conv2.backward(dy)?;
        let d = self.relu2.backward(d.view())?;
        let d = self.bn2.backward(d.view())?;
        let mut d_p = self.conv1.backward(d.view())?;
        let d_short = self.shortcut.backward(dy)?;
        if self.shortcut_reads_preactivation() {
            // The projection reads p: its gradient joins the branch's before BN1 and ReLU.
            d_p = add_identity_path(d_p, d_short);
            let d = self.relu1.backward(d_p.view())?;
            self.bn1.backward(d.view())
        } else {
            let d = self.relu1.backward(d_p.view())?;
            let d_branch = self.bn1.backward(d.view())?;
            Ok(add_identity_path(d_branch, d_short))
        }
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
