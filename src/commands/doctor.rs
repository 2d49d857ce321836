//! `stockade doctor`: what this host supports, what is missing, and what stockade cannot
//! enforce here. Exit 0 when sandboxes can run, 1 when something required is missing.

use anyhow::{Context, Result};
use clap::Args;

use stockade::host::doctor::{self, SystemEffects};
use stockade::host::{self, HostFacts, HostPaths};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON (for tools) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// containerd socket to check [default: $CONTAINERD_ADDRESS, else
    /// /run/containerd/containerd.sock].
    #[arg(long, value_name = "SOCKET")]
    pub address: Option<String>,
}

/// The host facts `stockade spec` and `stockade run` build against: the cheap probe of the
/// real host.
pub fn host_facts_for_spec() -> Result<HostFacts> {
    host::probe(&HostPaths::system()).context("probing the host")
}

pub async fn run(args: DoctorArgs) -> Result<u8> {
    let facts = host_facts_for_spec()?;
    let env = std::env::var("CONTAINERD_ADDRESS").ok();
    let socket = doctor::containerd_socket(args.address.as_deref(), env.as_deref());
    let report = tokio::task::spawn_blocking(move || {
        let disk_root = std::path::Path::new(stockade::disk::DEFAULT_DISK_ROOT);
        let disk = stockade::disk::probe(
            std::path::Path::new("/proc"),
            std::path::Path::new("/dev"),
            disk_root,
        );
        let net = stockade::network::doctor::probe(
            std::path::Path::new("/proc"),
            &stockade::network::DEFAULT_RANGE,
        );
        let crun = crun_facts(facts.cgroup);
        doctor::report(facts, &SystemEffects, &socket)
            .with_crun(&crun)
            .with_disk(&disk, disk_root)
            .with_network(&net)
    })
    .await
    .context("running the host checks")?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_text()
    };
    write_stdout(&text)?;
    Ok(u8::from(!report.usable))
}

/// What decides the `crun` line: crun's version (through `SystemEffects`), the hybrid
/// layout's v2 controllers and `STOCKADE_RUNC_BINARY`.
fn crun_facts(cgroup: stockade::host::CgroupMode) -> doctor::CrunFacts {
    use doctor::DoctorEffects;
    let version = SystemEffects
        .run("crun", &["--version"])
        .ok()
        .and_then(|out| out.lines().next().map(str::to_string));
    let unified_controllers = match cgroup {
        stockade::host::CgroupMode::Hybrid => {
            std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
                .map(|t| doctor::controllers(&t))
                .unwrap_or_default()
        }
        stockade::host::CgroupMode::V1 | stockade::host::CgroupMode::V2 => Vec::new(),
    };
    doctor::CrunFacts {
        version,
        cgroup,
        unified_controllers,
        selected: std::env::var("STOCKADE_RUNC_BINARY").ok(),
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
