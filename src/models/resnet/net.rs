//! The network: stem, stages of blocks, global average pooling, linear head.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::check_shape;
use crate::layers::{
    BatchNorm2d, BatchNormConfig, Conv2dConfig, GlobalAvgPool, Linear, LinearConfig, MaxPool2d,
    scratch,
};
use crate::module::{BufferVisitor, ParamVisitor, visit_child_buffers, visit_child_params};
use crate::{Error, Mode, Module, Result, Rng, Scalar};

use super::block::{BasicBlock, Block, BlockKind, Bottleneck, PreActBlock};
use super::shortcut::ShortcutKind;

/// The layers before the first stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// CIFAR: 3×3 convolution to the first stage's width (16), stride 1, then BN and ReLU
    /// (pre-activation networks leave those to the first block).
    Cifar,
    /// ImageNet (torchvision): 7×7 convolution to the first stage's width (64), stride 2, BN,
    /// ReLU, 3×3 max pool with stride 2.
    ImageNet,
}

/// A residual network (or its plain twin), fully described.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub stem: Stem,
    pub block: BlockKind,
    /// Blocks in each stage, e.g. `[3, 3, 3]` (ResNet-20) or `[2, 2, 2, 2]` (ResNet-18).
    pub blocks_per_stage: Vec<usize>,
    /// Base width of each stage (a bottleneck stage outputs 4× this); the stem outputs the first.
    pub widths: Vec<usize>,
    /// How shapes change along the shortcut.
    pub shortcut: ShortcutKind,
    /// No shortcuts: the plain twin.
    pub plain: bool,
    /// Image channels (3 for RGB, 1 for MNIST-like data).
    pub in_channels: usize,
    /// Number of classes of the linear head.
    pub num_classes: usize,
}

/// torchvision's depths and their stages.
const TORCHVISION: [(usize, BlockKind, [usize; 4]); 5] = [
    (18, BlockKind::Basic, [2, 2, 2, 2]),
    (34, BlockKind::Basic, [3, 4, 6, 3]),
    (50, BlockKind::Bottleneck, [3, 4, 6, 3]),
    (101, BlockKind::Bottleneck, [3, 4, 23, 3]),
    (152, BlockKind::Bottleneck, [3, 8, 36, 3]),
];

impl ResNetConfig {
    /// CIFAR ResNet-`depth` (`depth = 6n + 2`) with option-A shortcuts, 3 input channels, 10 classes.
    pub fn cifar(depth: usize) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(Error::invalid(
                "ResNetConfig::cifar",
                "depth",
                format!("a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110, …), got {depth}"),
            ));
        }
        let n = (depth - 2) / 6;
        Ok(ResNetConfig {
            stem: Stem::Cifar,
            block: BlockKind::Basic,
            blocks_per_stage: vec![n; 3],
            widths: vec![16, 32, 64],
            shortcut: ShortcutKind::A,
            plain: false,
            in_channels: 3,
            num_classes: 10,
        })
    }

    /// torchvision's ResNet-`depth` (18, 34, 50, 101, 152): option-B shortcuts, 3 channels, 1000 classes.
    pub fn torchvision(depth: usize) -> Result<Self> {
        let (_, block, stages) = TORCHVISION
            .iter()
            .find(|(d, _, _)| *d == depth)
            .ok_or_else(|| {
                Error::invalid(
                    "ResNetConfig::torchvision",
                    "depth",
                    format!("torchvision's ResNets have depth 18, 34, 50, 101 or 152, got {depth}"),
                )
            })?;
        Ok(ResNetConfig {
            stem: Stem::ImageNet,
            block: *block,
            blocks_per_stage: stages.to_vec(),
            widths: vec![64, 128, 256, 512],
            shortcut: ShortcutKind::B,
            plain: false,
            in_channels: 3,
            num_classes: 1000,
        })
    }

    /// The same network without shortcuts.
    pub fn plain_twin(mut self) -> Self {
        self.plain = true;
        self
    }

    /// The pre-activation variant (basic blocks only).
    pub fn pre_activation(mut self) -> Result<Self> {
        if self.block == BlockKind::Bottleneck {
            return Err(Error::invalid(
                "ResNetConfig",
                "pre-activation",
                "is built for basic blocks only",
            ));
        }
        self.block = BlockKind::PreAct;
        Ok(self)
    }

    /// Sets the input channels and the number of classes.
    pub fn io(mut self, in_channels: usize, num_classes: usize) -> Self {
        self.in_channels = in_channels;
        self.num_classes = num_classes;
        self
    }

    /// Number of weighted layers: convolutions on the main path plus the head (the "20" of ResNet-20).
    pub fn depth(&self) -> usize {
        let per_block = if self.block == BlockKind::Bottleneck {
            3
        } else {
            2
        };
        2 + per_block * self.blocks_per_stage.iter().sum::<usize>()
    }

    /// Channels leaving the last stage.
    pub fn features(&self) -> usize {
        self.widths.last().copied().unwrap_or(0) * self.block.expansion()
    }
}

impl fmt::Display for ResNetConfig {
    /// The name [`FromStr`] reads back: `resnet20`, `plain56`, `preact-resnet110`, `resnet18`,
    /// with `-a`/`-b` when the shortcut is not the family's default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pre = if self.block == BlockKind::PreAct {
            "preact-"
        } else {
            ""
        };
        let kind = if self.plain { "plain" } else { "resnet" };
        let default_shortcut = if self.stem == Stem::Cifar {
            ShortcutKind::A
        } else {
            ShortcutKind::B
        };
        let suffix = match (self.shortcut == default_shortcut, self.shortcut) {
            (true, _) => "",
            (false, ShortcutKind::A) => "-a",
            (false, ShortcutKind::B) => "-b",
        };
        write!(f, "{pre}{kind}{}{suffix}", self.depth())
    }
}

impl FromStr for ResNetConfig {
    type Err = Error;

    /// `resnet20`, `plain56`, `preact-resnet110`, `preact-plain20`, `resnet18`, `plain50`,
    /// `resnet20-b` … Depths 18, 34, 50, 101 and 152 are torchvision's networks (option B);
    /// any other 6n + 2 is a CIFAR network (option A). Input channels 3 and classes 10 (CIFAR) or
    /// 1000 (torchvision) until changed with [`ResNetConfig::io`].
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "ResNetConfig",
                format!("architecture {s:?}"),
                "expected [preact-](resnet|plain)DEPTH[-a|-b], e.g. resnet20, plain56, preact-resnet110, resnet18, resnet50",
            )
        };
        let lower = s.to_ascii_lowercase();
        let (pre, rest) = match lower.strip_prefix("preact-") {
            Some(r) => (true, r),
            None => (false, lower.as_str()),
        };
        let (plain, rest) = if let Some(r) = rest.strip_prefix("resnet") {
            (false, r)
        } else if let Some(r) = rest.strip_prefix("plain") {
            (true, r)
        } else {
            return Err(bad());
        };
        let (digits, shortcut) = match rest.split_once('-') {
            Some((d, "a")) => (d, Some(ShortcutKind::A)),
            Some((d, "b")) => (d, Some(ShortcutKind::B)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        let depth: usize = digits.parse().map_err(|_| bad())?;
        let mut cfg = if TORCHVISION.iter().any(|(d, _, _)| *d == depth) {
            ResNetConfig::torchvision(depth)?
        } else {
            ResNetConfig::cifar(depth)?
        };
        if let Some(k) = shortcut {
            if cfg.block == BlockKind::Bottleneck && k == ShortcutKind::A {
                return Err(Error::invalid(
                    "ResNetConfig",
                    s,
                    "bottleneck networks need option-B shortcuts",
                ));
            }
            cfg.shortcut = k;
        }
        if pre {
            cfg = cfg.pre_activation()?;
        }
        if plain {
            cfg = cfg.plain_twin();
        }
        Ok(cfg)
    }
}

/// Gradients returned by [`ResNet::backward`].
#[derive(Clone, Debug)]
pub struct NetGrads<F> {
    /// ∂L/∂input `(N, C, H, W)`.
    pub d_input: Array4<F>,
    /// ‖∂L/∂x‖ (Frobenius norm over the batch) at the input of every block, in network order
    /// (index 0: the first block), and as the last entry at the output of the last block: one
    /// more entry than there are blocks. In a plain network these shrink towards the input.
    pub block_grad_norms: Vec<f64>,
}

/// A ResNet or plain network `(N, C, H, W) → (N, classes)` logits.
pub struct ResNet<F: Scalar> {
    config: ResNetConfig,
    pub conv1: crate::layers::Conv2d<F>,
    /// Absent in pre-activation networks, whose first block normalises its own input.
    pub bn1: Option<BatchNorm2d<F>>,
    maxpool: Option<MaxPool2d>,
    /// `stages[s][b]` is torchvision's `layer{s+1}.{b}`.
    pub stages: Vec<Vec<Box<dyn Block<F>>>>,
    /// Pre-activation networks: the BN before the final ReLU and pooling.
    pub final_bn: Option<BatchNorm2d<F>>,
    pool: GlobalAvgPool,
    pub fc: Linear<F>,
}

impl<F: Scalar> ResNet<F> {
    /// Builds the network, drawing every weight from `rng`: convolutions Kaiming normal
    /// (fan-out), BatchNorm γ = 1, β = 0, the head PyTorch's default.
    pub fn new(config: ResNetConfig, rng: &mut Rng) -> Result<Self> {
        if config.blocks_per_stage.len() != config.widths.len() || config.widths.is_empty() {
            return Err(Error::invalid(
                "ResNet::new",
                "stages",
                format!(
                    "{} stage sizes for {} widths",
                    config.blocks_per_stage.len(),
                    config.widths.len()
                ),
            ));
        }
        let preact = config.block == BlockKind::PreAct;
        let stem_out = config.widths[0];
        let (conv1, maxpool) = match config.stem {
            Stem::Cifar => (
                super::conv(
                    Conv2dConfig::new(config.in_channels, stem_out, 3)
                        .padding(1)
                        .bias(false),
                    rng,
                )?,
                None,
            ),
            Stem::ImageNet => (
                super::conv(
                    Conv2dConfig::new(config.in_channels, stem_out, 7)
                        .stride(2)
                        .padding(3)
                        .bias(false),
                    rng,
                )?,
                Some(MaxPool2d::new(3).stride(2).padding(1)),
            ),
        };
        let bn1 = if preact {
            None
        } else {
            Some(BatchNorm2d::new(BatchNormConfig::new(stem_out))?)
        };
        let mut stages = Vec::new();
        let mut cin = stem_out;
        for (s, (&n, &width)) in config
            .blocks_per_stage
            .iter()
            .zip(&config.widths)
            .enumerate()
        {
            let mut blocks: Vec<Box<dyn Block<F>>> = Vec::new();
            for b in 0..n {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let (sc, plain) = (config.shortcut, config.plain);
                let block: Box<dyn Block<F>> = match config.block {
                    BlockKind::Basic => {
                        Box::new(BasicBlock::new(cin, width, stride, sc, plain, rng)?)
                    }
                    BlockKind::Bottleneck => {
                        Box::new(Bottleneck::new(cin, width, stride, sc, plain, rng)?)
                    }
                    BlockKind::PreAct => {
                        Box::new(PreActBlock::new(cin, width, stride, sc, plain, rng)?)
                    }
                };
                blocks.push(block);
                cin = width * config.block.expansion();
            }
            stages.push(blocks);
        }
        let final_bn = if preact {
            Some(BatchNorm2d::new(BatchNormConfig::new(cin))?)
        } else {
            None
        };
        let fc = Linear::new(LinearConfig::new(cin, config.num_classes), rng);
        Ok(ResNet {
            config,
            conv1,
            bn1,
            maxpool,
            stages,
            final_bn,
            pool: GlobalAvgPool::new(),
            fc,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.stages.iter().map(Vec::len).sum()
    }

    /// Logits `(N, classes)` for images `(N, C, H, W)`.
    ///
    /// # Errors
    /// An input whose channel count differs from the network's, or too small for the strides.
    pub fn forward(&mut self, x: ArrayView4<'_, F>, mode: Mode) -> Result<Array2<F>> {
        let c = self.config.in_channels;
        let shape = x.shape();
        if shape[1] != c {
            return Err(Error::shape(
                "ResNet::forward",
                format!("images (N, C, H, W) for {}", self.config),
                format!("(N, {c}, H, W)"),
                shape,
            ));
        }
        let mut a = self.conv1.forward(x, mode)?;
        if let Some(bn) = &mut self.bn1 {
            bn.forward_in_place(&mut a, mode, true)?; // relu(bn1(conv1(x)))
        }
        if let Some(mp) = &mut self.maxpool {
            let pooled = mp.forward(a.view(), mode)?;
            scratch::recycle(std::mem::replace(&mut a, pooled));
        }
        for block in self.stages.iter_mut().flatten() {
            let next = block.forward(a.view(), mode)?;
            scratch::recycle(std::mem::replace(&mut a, next));
        }
        if let Some(bn) = &mut self.final_bn {
            bn.forward_in_place(&mut a, mode, true)?; // relu(final_bn(·))
        }
        let pooled = self.pool.forward(a.view(), mode)?;
        scratch::recycle(a);
        self.fc.forward(pooled.view(), mode)
    }

    /// Backward from ∂L/∂logits `(N, classes)`, recording the gradient norm reaching each block.
    pub fn backward(&mut self, d_logits: ArrayView2<'_, F>) -> Result<NetGrads<F>> {
        check_shape(
            "ResNet::backward",
            "d_logits (N, classes)",
            &[d_logits.nrows(), self.config.num_classes],
            d_logits.shape(),
        )?;
        let d = self.fc.backward(d_logits)?;
        let mut d = self.pool.backward(d.view())?;
        let mut norms = vec![frobenius(&d)];
        if let Some(bn) = &mut self.final_bn {
            bn.backward_in_place(&mut d)?; // through final_relu and final_bn
        }
        for block in self.stages.iter_mut().flatten().rev() {
            let next = block.backward(d.view())?;
            scratch::recycle(std::mem::replace(&mut d, next));
            norms.push(frobenius(&d));
        }
        norms.reverse();
        if let Some(mp) = &mut self.maxpool {
            let next = mp.backward(d.view())?;
            scratch::recycle(std::mem::replace(&mut d, next));
        }
        if let Some(bn) = &mut self.bn1 {
            bn.backward_in_place(&mut d)?; // through relu1 and bn1
        }
        let d_input = self.conv1.backward(d.view())?;
        scratch::recycle(d);
        Ok(NetGrads {
            d_input,
            block_grad_norms: norms,
        })
    }
}

/// ‖a‖ (Frobenius), summed in f64: in chunks of fixed size (in parallel), each in eight
/// interleaved partial sums (a vectorisable loop), the chunk sums added in order, so the result
/// does not depend on the number of threads.
fn frobenius<F: Scalar>(a: &Array4<F>) -> f64 {
    let a = a.as_standard_layout();
    let values = a.as_slice().expect("standard layout");
    let chunk_sums: Vec<f64> = values
        .par_chunks(super::ELEMENTWISE_CHUNK)
        .map(|chunk| {
            let mut acc = [0.0f64; 8];
            let mut octets = chunk.chunks_exact(8);
            for octet in &mut octets {
                for i in 0..8 {
                    acc[i] += octet[i].f64() * octet[i].f64();
                }
            }
            for (s, v) in acc.iter_mut().zip(octets.remainder()) {
                *s += v.f64() * v.f64();
            }
            acc.iter().sum::<f64>()
        })
        .collect();
    chunk_sums.iter().sum::<f64>().sqrt()
}

impl<F: Scalar> Module<F> for ResNet<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        visit_child_params("conv1", &mut self.conv1, f);
        if let Some(bn) = &mut self.bn1 {
            visit_child_params("bn1", bn, f);
        }
        for (s, stage) in self.stages.iter_mut().enumerate() {
            for (b, block) in stage.iter_mut().enumerate() {
                visit_child_params(&format!("layer{}.{b}", s + 1), block.as_mut(), f);
            }
        }
        if let Some(bn) = &mut self.final_bn {
            visit_child_params("final_bn", bn, f);
        }
        visit_child_params("fc", &mut self.fc, f);
    }

    fn visit_buffers(&mut self, f: &mut BufferVisitor<'_, F>) {
        if let Some(bn) = &mut self.bn1 {
            visit_child_buffers("bn1", bn, f);
        }
        for (s, stage) in self.stages.iter_mut().enumerate() {
            for (b, block) in stage.iter_mut().enumerate() {
                visit_child_buffers(&format!("layer{}.{b}", s + 1), block.as_mut(), f);
            }
        }
        if let Some(bn) = &mut self.final_bn {
            visit_child_buffers("final_bn", bn, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;
    use crate::module::Module;

    /// Everything a training step computes, as bits: logits, ∂L/∂input, the block gradient
    /// norms, every parameter gradient and every buffer.
    fn step_bits(threads: usize, config: &ResNetConfig) -> Vec<u64> {
        crate::on_threads(threads, || {
            let mut rng = Rng::seed(11);
            let mut net = ResNet::<f32>::new(config.clone(), &mut rng).unwrap();
            // 8 × 16 × 16 × 16 values per stage-1 activation: above the parallel thresholds.
            let x: Array4<f32> = init::normal((8, 3, 16, 16), 0.0, 1.0, &mut rng);
            let d_logits: Array2<f32> = init::normal((8, 10), 0.0, 1.0, &mut rng);
            let mut bits = Vec::new();
            for _ in 0..2 {
                let logits = net.forward(x.view(), Mode::Train).unwrap();
                let grads = net.backward(d_logits.view()).unwrap();
                bits.extend(logits.iter().map(|v| u64::from(v.to_bits())));
                bits.extend(grads.d_input.iter().map(|v| u64::from(v.to_bits())));
                bits.extend(grads.block_grad_norms.iter().map(|v| v.to_bits()));
            }
            net.visit_params(&mut |_, p| {
                bits.extend(p.grad.iter().map(|v| u64::from(v.to_bits())))
            });
            net.visit_buffers(&mut |_, b| {
                if let crate::module::BufferMut::Values(v) = b {
                    bits.extend(v.iter().map(|v| u64::from(v.to_bits())));
                }
            });
            bits
        })
    }

    #[test]
    fn a_training_step_is_bitwise_the_same_for_1_2_and_3_threads() {
        for name in ["resnet8", "preact-resnet8-b"] {
            let config: ResNetConfig = name.parse().unwrap();
            let one = step_bits(1, &config);
            assert!(one.len() > 10_000, "{name}: {} values", one.len());
            for threads in [2, 3] {
                assert!(
                    one == step_bits(threads, &config),
                    "{name}: {threads} threads"
                );
            }
        }
    }
}
