//! safetensors checkpoints with PyTorch names, atomic writes and resume state.
