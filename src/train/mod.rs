//! The training loop behind `skipgate train` and `skipgate lab`.

pub mod log;
pub mod tasks;
