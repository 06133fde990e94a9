//! Recurrent layers: vanilla RNN (tanh, ReLU), LSTM and GRU, with backpropagation through time.
//!
//! * [`Recurrent`]: multi-layer, bidirectional, variable-length sequences, PyTorch names and
//!   semantics (`nn.RNN`, `nn.LSTM`, `nn.GRU`), per-step gradient norms from the backward pass.
//! * [`Cell`]: one time step (`nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`) for hand-written loops.
//! * [`math`]: the gate equations, forward and backward, shared by both.
//!
//! Truncated BPTT over a long stream: feed chunk `k+1` with `h0`/`c0` set to chunk `k`'s
//! `h_n`/`c_n` (a plain copy: no gradient flows back into chunk `k`) and drop `d_h0` from its
//! backward pass.

mod cell;
mod direction;
mod infer;
mod kind;
mod layer;
pub mod math;

pub use cell::{Cell, CellGrads, CellOutput};
pub use direction::{DirectionCache, DirectionParams};
pub use infer::config_from_state_dict;
pub use kind::CellKind;
pub use layer::{
    Recurrent, RecurrentConfig, RecurrentInit, RnnState, SeqGrads, SeqInput, SeqOutput,
};
