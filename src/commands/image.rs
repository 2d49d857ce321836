//! `stockade image` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    Ls,
}

pub async fn run(_args: ImageCommand) -> Result<u8> {
    bail!("`stockade image` is not available yet")
}
