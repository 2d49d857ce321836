//! `stockade apparmor`: render, check and load the sandbox AppArmor profile.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::doctor::write_stdout;
use stockade::apparmor::{self, LoadContext, Loaded, Params, SystemParser};
use stockade::host::{self, HostPaths};
use stockade::policy::NetworkMode;

#[derive(Debug, Subcommand)]
pub enum AppArmorCommand {
    /// Print the profile rendered for a network mode.
    Render {
        /// Profile name [default: stockade-default, or stockade-default-loopback with
        /// --network loopback].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// none, loopback, egress, allowlist or group (egress, allowlist and group share one
        /// profile) [default: none].
        #[arg(long, value_name = "MODE", default_value = "none")]
        network: String,
    },
    /// Check that a profile file compiles (apparmor_parser -Q -K; no kernel support needed).
    /// Exit 0 when it does, 1 when the parser rejects it.
    Check {
        /// The profile file.
        file: PathBuf,
    },
    /// Render the profile and load it into the kernel (apparmor_parser -r), unless the
    /// same text is already loaded.
    Load {
        /// Profile name [default: as for render].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// none, loopback, egress, allowlist or group (egress, allowlist and group share one
        /// profile) [default: none].
        #[arg(long, value_name = "MODE", default_value = "none")]
        network: String,
        /// Where the hash of the loaded text is kept.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/stockade/apparmor")]
        state_dir: PathBuf,
    },
}

fn network_mode(flag: &str) -> Result<NetworkMode> {
    match NetworkMode::from_name(flag) {
        Some(m) => Ok(m),
        None => bail!("--network {flag:?}: use one of {}", NetworkMode::NAMES),
    }
}

fn params(name: Option<&str>, network: &str) -> Result<Params> {
    let network = network_mode(network)?;
    match name {
        Some(n) => Params::new(n, network).context("--name"),
        None => Ok(Params::default_for(network)),
    }
}

pub async fn run(cmd: AppArmorCommand) -> Result<u8> {
    match cmd {
        AppArmorCommand::Render { name, network } => {
            write_stdout(&apparmor::render(&params(name.as_deref(), &network)?))?;
            Ok(0)
        }
        AppArmorCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let parser = SystemParser::find();
            match apparmor::check(&parser, &text) {
                Ok(()) => {
                    write_stdout(&format!("{}: ok\n", file.display()))?;
                    Ok(0)
                }
                Err(e @ apparmor::AppArmorError::Rejected { .. }) => {
                    eprintln!("stockade: {}: {e}", file.display());
                    Ok(1)
                }
                Err(e) => Err(e.into()),
            }
        }
        AppArmorCommand::Load {
            name,
            network,
            state_dir,
        } => {
            let params = params(name.as_deref(), &network)?;
            let paths = HostPaths::system();
            let facts = host::probe(&paths).context("probing the host")?;
            if !facts.apparmor {
                bail!(
                    "cannot load {}: the kernel has no AppArmor ({} is missing or not Y, or {} is missing)",
                    params.name(),
                    paths.sys.join("module/apparmor/parameters/enabled").display(),
                    paths.sys.join("kernel/security/apparmor").display()
                );
            }
            let ctx = LoadContext {
                kernel_has_apparmor: facts.apparmor,
                profiles_file: PathBuf::from(apparmor::PROFILES_FILE),
                state_dir,
            };
            let text = apparmor::render(&params);
            let done = apparmor::ensure_loaded(&SystemParser::find(), &ctx, params.name(), &text)?;
            match done {
                Loaded::AlreadyLoaded => {
                    write_stdout(&format!("{}: already loaded\n", params.name()))?;
                }
                Loaded::Loaded => write_stdout(&format!("{}: loaded\n", params.name()))?,
            }
            Ok(0)
        }
    }
}
