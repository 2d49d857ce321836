//! `stockade audit` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Args)]
pub struct AuditArgs {}

pub async fn run(_args: AuditArgs) -> Result<u8> {
    bail!("`stockade audit` is not available yet")
}
