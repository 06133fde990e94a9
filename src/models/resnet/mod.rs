//! Residual networks and their plain twins (He et al. 2016, "Deep residual learning for image
//! recognition"; He et al. 2016b, "Identity mappings in deep residual networks").
//!
//! * CIFAR-style ResNet-(6n+2): a 3×3 stem of 16 channels, three stages of `n` blocks at 16, 32
//!   and 64 channels (stride 2 at the start of the last two), global average pooling, a linear
//!   head. ResNet-20/32/44/56/110 are n = 3/5/7/9/18. Option-A shortcuts by default.
//! * torchvision ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks), with torchvision's
//!   parameter names, so its `state_dict` saved as safetensors loads as it is.
//! * Pre-activation variants, and for every network a plain twin: the same layers without the
//!   shortcuts, the network of the degradation experiment.
//!
//! Parameter names follow torchvision: `conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `fc.weight`, …

mod block;
mod net;
mod shortcut;

pub use block::{BasicBlock, Block, BlockKind, Bottleneck, PreActBlock};
pub use net::{NetGrads, ResNet, ResNetConfig, Stem};
pub use shortcut::{Shortcut, ShortcutKind};

use crate::layers::{Conv2d, Conv2dConfig};
use crate::{Result, Rng, Scalar, init};

/// Elements per rayon task in the elementwise passes of the blocks (the ReLU after the sum, the
/// identity shortcut). Elementwise results do not depend on how the work is split.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// A convolution initialised as torchvision's ResNets do: Kaiming normal with fan-out,
/// N(0, 2 / (C_out · kh · kw)).
fn conv<F: Scalar>(cfg: Conv2dConfig, rng: &mut Rng) -> Result<Conv2d<F>> {
    cfg.validate()?;
    let [o, _, kh, kw] = cfg.weight_shape();
    let weight = init::kaiming_normal(cfg.weight_shape(), o * kh * kw, rng);
    Conv2d::from_weights(cfg, weight, None)
}
