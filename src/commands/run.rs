//! `stockade run` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: crate::cli::PolicyArgs,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub async fn run(_args: RunArgs) -> Result<u8> {
    bail!("`stockade run` is not available yet")
}
