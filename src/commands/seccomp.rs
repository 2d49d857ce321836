//! `stockade seccomp` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Subcommand)]
pub enum SeccompCommand {
    Check { file: std::path::PathBuf },
}

pub async fn run(_args: SeccompCommand) -> Result<u8> {
    bail!("`stockade seccomp` is not available yet")
}
