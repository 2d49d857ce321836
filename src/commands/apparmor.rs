//! `stockade apparmor` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Subcommand)]
pub enum AppArmorCommand {
    Render,
}

pub async fn run(_args: AppArmorCommand) -> Result<u8> {
    bail!("`stockade apparmor` is not available yet")
}
