//! Gradient-flow diagnostics: the numbers behind the course's central claim.
//!
//! * [`time`]: ‖∂L/∂h_t‖ against `t` for a recurrent model whose loss is taken at the last step
//!   ([`step_gradient_profile`]), and the largest singular values of its recurrent weights
//!   ([`recurrent_spectrum`]): the gradient vanishes through time in a tanh RNN and survives in
//!   an LSTM or GRU.
//! * [`depth`]: ‖∂L/∂x‖ at every block of a ResNet or its plain twin ([`block_gradient_profile`]):
//!   the identity shortcut carries the gradient to the first block, a deep plain network loses it.
//! * [`svd`]: singular values of a dense matrix (one-sided Jacobi, f64).
//!
//! The probes are built on the gradient norms the layers' own backward passes report
//! ([`crate::rnn::SeqGrads::step_grad_norms`], [`crate::models::resnet::NetGrads::block_grad_norms`]),
//! not on special copies of the models, and leave the model as they found it.

pub mod depth;
pub mod svd;
pub mod time;

pub use depth::{DepthProfile, block_gradient_profile};
pub use svd::{largest_singular_value, singular_values};
pub use time::{
    RecurrentSpectrum, TimeProfile, gate_names, recurrent_spectrum, step_gradient_profile, widen,
};
