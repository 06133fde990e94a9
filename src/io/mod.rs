//! safetensors checkpoints with PyTorch names, atomic writes and resume state.
//!
//! * [`write_atomic`]: temp file in the same directory, `fsync`, rename over the target, so a crash
//!   never leaves a half-written file.
//! * [`TensorFile`]: the named tensors and string metadata of one safetensors file, read and
//!   written in the format `safetensors.torch.save_file` / `load_file` use.
//! * [`state_dict()`] / [`load_state_dict`]: a [`Module`](crate::Module)'s parameters and buffers
//!   under their PyTorch names, loaded with PyTorch's `strict=True` rules;
//!   [`save_model`] / [`load_model`] do the same through a file.
//!
//! ```no_run
//! # fn demo(model: &mut dyn skipgate::Module<f32>) -> skipgate::Result<()> {
//! use std::collections::BTreeMap;
//! use skipgate::io::{load_model, save_model};
//!
//! let meta = BTreeMap::from([("arch".to_string(), "lstm".to_string())]);
//! save_model("run/model.safetensors", model, &meta)?;
//! let meta_back = load_model("run/model.safetensors", model)?;
//! assert_eq!(meta_back, meta);
//! # Ok(()) }
//! ```

pub mod atomic;
pub mod state_dict;
pub mod tensors;

pub use atomic::write_atomic;
pub use state_dict::{load_model, load_state_dict, save_model, state_dict};
pub use tensors::{METADATA_KEY, Tensor, TensorData, TensorFile};
