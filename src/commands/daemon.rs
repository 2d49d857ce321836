//! `stockade daemon` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Subcommand)]
pub enum DaemonCommand {
    Stop,
}

pub async fn run(_args: DaemonCommand) -> Result<u8> {
    bail!("`stockade daemon` is not available yet")
}
