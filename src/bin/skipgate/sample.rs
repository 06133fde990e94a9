//! `skipgate sample`: generate text from a character language model.

use std::path::PathBuf;

use clap::Args;
use skipgate::train::tasks::load_char_lm;
use skipgate::{Error, Result, Rng};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct SampleArgs {
    /// A `model.safetensors` written by `skipgate train --task charlm` (or its run directory).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to start from (every character must be in the model's vocabulary).
    #[arg(long, default_value = "\n")]
    pub prime: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    pub len: usize,
    /// Softmax temperature: below 1 is more conservative, above 1 more varied.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: SampleArgs) -> Result<()> {
    let path = if args.checkpoint.is_dir() {
        args.checkpoint.join("model.safetensors")
    } else {
        args.checkpoint.clone()
    };
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return Err(Error::invalid(
            "sample",
            "--temperature",
            format!("must be a positive finite number, got {}", args.temperature),
        ));
    }
    let (mut model, vocab) = load_char_lm(&path)?;
    let prime = vocab.encode(&args.prime)?;
    if prime.is_empty() {
        return Err(Error::invalid(
            "sample",
            "--prime",
            "must have at least one character",
        ));
    }
    let ids = model.sample(
        &prime,
        args.len,
        args.temperature,
        &mut Rng::seed(args.seed),
    )?;
    crate::say!("{}{}", args.prime, vocab.decode(&ids)?);
    Ok(())
}
