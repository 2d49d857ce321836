//! `stockade network create|ls|rm`: group networks (see `stockade::network::group`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use stockade::network::{NetConfig, DEFAULT_GROUPS, DEFAULT_NET_CLAIMS};

/// Where group networks and address claims live.
#[derive(Debug, Clone, Args)]
pub struct NetPlace {
    /// Directory of the group networks.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_GROUPS, hide = true)]
    pub groups: PathBuf,
    /// Directory of the address claims.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_NET_CLAIMS, hide = true)]
    pub claims: PathBuf,
}

impl NetPlace {
    fn config(&self) -> NetConfig {
        NetConfig {
            groups: self.groups.clone(),
            claims: self.claims.clone(),
            ..NetConfig::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Make a group network: sandboxes run with `--network NAME` reach each other (by id
    /// or session name) and nothing else.
    Create {
        /// Lower-case letters, digits, `-` and `_`.
        name: String,
        #[command(flatten)]
        place: NetPlace,
    },
    /// List group networks and their live members.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        place: NetPlace,
    },
    /// Remove group networks; refused while one has live members.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        place: NetPlace,
    },
}

pub async fn run(cmd: NetworkCommand) -> Result<u8> {
    match cmd {
        NetworkCommand::Create { name, place } => {
            stockade::network::create_group(&place.config(), &name)?;
            println!("{name}");
        }
        NetworkCommand::Ls { json, place } => {
            let all = stockade::network::groups(&place.config());
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            println!("{:<24} {:>7}  MEMBERS", "NAME", "COUNT");
            for g in &all {
                let members: Vec<String> = g
                    .members
                    .iter()
                    .map(|m| format!("{} ({})", m.names.join("/"), m.address))
                    .collect();
                println!(
                    "{:<24} {:>7}  {}",
                    g.name,
                    g.members.len(),
                    if members.is_empty() {
                        "-".to_string()
                    } else {
                        members.join(", ")
                    }
                );
            }
        }
        NetworkCommand::Rm { names, place } => {
            let cfg = place.config();
            let mut failed = Vec::new();
            for name in &names {
                match stockade::network::remove_group(&cfg, name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("; "));
            }
        }
    }
    Ok(0)
}
