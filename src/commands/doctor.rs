//! `stockade doctor` (being written).

use anyhow::{bail, Result};
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// The host facts `stockade spec` builds against (placeholder until the probe lands).
pub fn host_facts_for_spec() -> stockade::host::HostFacts {
    stockade::host::HostFacts::hybrid_no_apparmor()
}

pub async fn run(_args: DoctorArgs) -> Result<u8> {
    bail!("`stockade doctor` is not available yet")
}
