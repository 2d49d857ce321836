//! `stockade spec`: print the exact OCI spec `stockade run` would use.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::PolicyArgs;
use stockade::spec::{self, SpecRequest};

#[derive(Debug, Args)]
pub struct SpecArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Write the spec to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Container id to put in the spec (names its cgroup) [default: spec].
    #[arg(long, default_value = "spec")]
    pub id: String,
    /// Allocate a terminal, as `run -t` would.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(args: SpecArgs) -> Result<u8> {
    let policy = super::load_policy(&args.policy)?;
    let host = super::doctor::host_facts_for_spec()?;
    let built = spec::build(
        &policy,
        &host,
        &SpecRequest {
            id: &args.id,
            args: &args.command,
            terminal: args.tty,
        },
    )?;
    let mut built = built;
    if stockade::network::needs_netns(policy.network) {
        // The namespace file a run with this id would join (made by the run).
        let cfg = stockade::network::NetConfig::default();
        stockade::network::join_netns(&mut built.spec, &cfg.netns_path(&args.id));
        // A group member's /etc/hosts is its group's hosts file.
        if let Some(g) = &policy.network_rules.group {
            let hosts = stockade::network::group::hosts_path(&cfg.groups, g);
            stockade::network::group::mount_hosts(&mut built.spec, &hosts);
        }
    }
    if policy.network == stockade::policy::NetworkMode::Allowlist {
        // The resolver file a run with this id would write in its run directory.
        let run_dir = std::path::Path::new(stockade::runner::DEFAULT_FIFO_ROOT).join(&args.id);
        stockade::network::mount_resolv_conf(&mut built.spec, &run_dir);
    }
    for n in &built.not_enforced {
        eprintln!(
            "stockade: not enforced on this host: {}: {}",
            n.protection, n.reason
        );
    }
    let json = spec::to_pretty_json(&built.spec) + "\n";
    match &args.output {
        Some(path) => std::fs::write(path, json)
            .with_context(|| format!("-o {}: cannot write", path.display()))?,
        None => print!("{json}"),
    }
    Ok(0)
}
