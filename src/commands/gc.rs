//! `stockade gc` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Args)]
pub struct GcArgs {}

pub async fn run(_args: GcArgs) -> Result<u8> {
    bail!("`stockade gc` is not available yet")
}
