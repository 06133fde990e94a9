//! # skipgate
//!
//! Residual networks and gated recurrent networks from scratch, on the CPU, with hand-written
//! backward passes that match PyTorch number for number and load PyTorch weights.
//!
//! ## The math in one page
//! * **Vanilla RNN** (`tanh` or `relu`): `h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)`.
//!   Backpropagation through time multiplies the gradient by `W_hhᵀ · diag(1 − h_t²)` at every
//!   step, so ‖∂L/∂h_t‖ shrinks (or explodes) geometrically with the distance to the loss.
//! * **LSTM** (gates in PyTorch's order i, f, g, o):
//!   `i, f, o = σ(·)`, `g = tanh(·)`, `c_t = f ⊙ c_{t−1} + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`.
//!   The cell path `c_{t−1} → c_t` is multiplied only by `f`, which the network can hold near 1.
//! * **GRU** (r, z, n): `r, z = σ(·)`, `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`,
//!   `h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}`.
//!
//! ## Conventions
//! * Every layer has an explicit `forward(…, Mode)` that keeps only what its backward needs (and
//!   nothing in [`Mode::Eval`]), and a `backward` that *accumulates* parameter gradients (`+=`) and
//!   returns the input gradient. There is no tape and no autograd.
//! * Parameters carry PyTorch's names ([`Module::visit_params`]), so a `state_dict` saved with
//!   safetensors loads without renaming.
//! * Kernels are generic over [`Scalar`] (`f32` for training, `f64` for gradient checks).
//! * Bad input returns an [`Error`] naming the operation, what was expected and what came.
//!
//! ## Modules
//! | module | contents |
//! |---|---|
//! | [`gemm`] | the one place that multiplies matrices (and `PackedRhs`, weights packed once for a time loop) |
//! | [`fastmath`] | vectorisable `f32` exp, tanh and sigmoid; loops compiled for AVX-512/AVX2 at run time |
//! | [`alloc`] | keeping freed memory for reuse (glibc), as the `skipgate` binary does |
//! | [`layers`] | Linear, Embedding, activations, Dropout, BatchNorm2d |
//! | [`loss`] | MSE, softmax cross-entropy |
//! | [`rnn`] | RNN/LSTM/GRU cells and multi-layer, bidirectional, variable-length layers with BPTT |
//! | [`models`] | small sequence models built from the layers |
//! | [`optim`] | SGD, Adam, AdamW, gradient clipping, learning-rate schedules |
//! | [`io`] | safetensors checkpoints with PyTorch names, atomic writes, resume state |
//! | [`data`] | synthetic sequence tasks, character-level text, image datasets |
//! | [`diag`] | gradient-flow probes: ‖∂L/∂h_t‖ through time, ‖∂L/∂x‖ through depth, singular values |
//! | [`report`] | SVG line plots and self-contained HTML reports (figures with their CSV data) |
//! | [`train`] | the training loop behind `skipgate train` and `skipgate lab` |
//! | [`bench`](mod@bench) | the benchmark workloads and their runner, behind `skipgate bench` |

pub mod alloc;
pub mod bench;
pub mod data;
pub mod diag;
pub mod error;
pub mod fastmath;
pub mod gemm;
pub mod gradcheck;
pub mod init;
pub mod io;
pub mod layers;
pub mod loss;
pub mod models;
pub mod module;
pub mod ops;
pub mod optim;
pub mod report;
pub mod rng;
pub mod rnn;
pub mod scalar;
pub mod train;

pub use error::{Error, Result};
pub use module::{Mode, Module, Param};
pub use rng::Rng;
pub use scalar::Scalar;

/// `f` run inside a fresh rayon pool of `threads` threads: how the unit tests check that a
/// result does not depend on the thread count.
#[cfg(test)]
pub(crate) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}
