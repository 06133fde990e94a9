//! Layers with explicit forward and hand-written backward.
//!
//! | layer | forward | parameters |
//! |---|---|---|
//! | [`Linear`] | `y = x·Wᵀ + b`, `(N, in) → (N, out)` | `weight (out, in)`, `bias (out)` |
//! | [`Embedding`] | `y[i] = W[ids[i]]`, `(L) → (L, D)` | `weight (V, D)` |
//! | [`Tanh`], [`Sigmoid`], [`Relu`] | elementwise, any shape | — |
//! | [`Dropout`] | `y = x ⊙ mask` (train), `y = x` (eval), any shape | — |
//! | [`Conv2d`] | 2-D cross-correlation (stride, padding, dilation, groups), `(N, C, H, W) → (N, O, H′, W′)` | `weight (O, C/groups, kh, kw)`, `bias (O)` |
//! | [`MaxPool2d`], [`AvgPool2d`] | windowed max / mean, `(N, C, H, W) → (N, C, H′, W′)` | — |
//! | [`GlobalAvgPool`], [`Flatten`] | `(N, C, H, W) → (N, C)` / `(N, C·H·W)` | — |
//! | [`BatchNorm2d`] | `y = γ (x − μ)/√(σ² + ε) + β` per channel, `(N, C, H, W)` | `weight (C)`, `bias (C)`; buffers `running_mean`, `running_var`, `num_batches_tracked` |

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod linear;
pub mod pool;
pub(crate) mod scratch;

pub use activation::{Relu, Sigmoid, Tanh};
pub use batchnorm::{BatchNorm2d, BatchNormConfig};
pub use conv::{Conv2d, Conv2dConfig};
pub use dropout::{Dropout, dropout_mask};
pub use embedding::Embedding;
pub use linear::{Linear, LinearConfig};
pub use pool::{AvgPool2d, Flatten, GlobalAvgPool, MaxPool2d};
