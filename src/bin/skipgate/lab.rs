//! `skipgate lab`: the main job.

use clap::Args;
use skipgate::Result;

#[derive(Args, Debug)]
pub struct LabArgs {}

pub fn run(_args: LabArgs) -> Result<()> {
    Ok(())
}
