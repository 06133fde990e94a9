//! Small sequence models built from the layers, with the parameter names of the equivalent
//! PyTorch modules (`rnn.*`, `head.*`, `emb.*`):
//!
//! * [`SeqRegressor`]: recurrent layer + linear head on each sequence's last valid step
//!   (sum of a sequence, the adding problem).
//! * [`TokenRnn`]: embedding → recurrent layer → linear head on every step (character language
//!   model, copy task), with sampling.
//! * [`resnet`]: residual networks, their pre-activation variants and their plain twins.

mod regressor;
pub mod resnet;
mod token;

pub use regressor::SeqRegressor;
pub use token::{TokenOutput, TokenRnn, TokenRnnConfig};
