//! `stockade create | ls | inspect | stop | rm`: long-lived sandboxes, each driven by any
//! later invocation (their state lives in containerd and their run directories; see
//! `stockade::sandbox`). `create` starts a detached keeper (`stockade sandbox-keeper ID`,
//! hidden) when the sandbox has a lifetime, an idle timeout or a network service (the
//! `allowlist` DNS forwarder); the keeper is recorded as
//! the run directory's owner and removes the sandbox when a deadline passes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use stockade::containerd::daemon::{connect_or_start, DaemonPaths};
use stockade::containerd::DEFAULT_NAMESPACE;
use stockade::policy::parse_duration;
use stockade::runner::{
    reclaim_crashed, write_owner, ReconcileOptions, Runner, StoreImages, DEFAULT_FIFO_ROOT,
};
use stockade::sandbox::{CreateRequest, SandboxError, SandboxInfo, Sandboxes};

/// Where sandboxes live: the containerd, its namespace, the run directories.
#[derive(Debug, Clone, Args)]
pub struct Place {
    /// containerd socket [default: $CONTAINERD_ADDRESS, else
    /// /run/containerd/containerd.sock, else stockade's private containerd].
    #[arg(long, value_name = "SOCK")]
    pub address: Option<PathBuf>,
    /// containerd namespace sandboxes live in.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Parent of the per-run directories.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_FIFO_ROOT, hide = true)]
    pub fifo_root: PathBuf,
    /// Directory the sandbox init is installed in.
    #[arg(long, value_name = "DIR", default_value = stockade::init::DEFAULT_DIR, hide = true)]
    pub init_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub policy: crate::cli::PolicyArgs,
    /// A name to find the sandbox by (letters, digits, `_`, `.`, `-`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Remove the sandbox this long after creation, e.g. 1h [default: none].
    #[arg(long, value_name = "DURATION")]
    pub lifetime: Option<String>,
    /// Remove the sandbox after no exec for this long, e.g. 10m [default: none].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Let `exec -t` have a terminal: a devpts of the sandbox's own with at most 4 ptys
    /// [default: no terminal devices].
    #[arg(short = 't', long)]
    pub tty: bool,
    /// OCI runtime binary the runc shim drives instead of runc [default: runc].
    #[arg(long, value_name = "BIN", env = "STOCKADE_RUNC_BINARY")]
    pub runc_binary: Option<String>,
    #[command(flatten)]
    pub place: Place,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// One JSON array of sandboxes, as `inspect` shows each.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub place: Place,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Sandbox id or name.
    #[arg(value_name = "ID|NAME")]
    pub sandbox: String,
    #[command(flatten)]
    pub place: Place,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Grace period between SIGTERM and SIGKILL.
    #[arg(long, short = 't', value_name = "DURATION", default_value = "10s")]
    pub time: String,
    /// Sandbox id or name.
    #[arg(value_name = "ID|NAME")]
    pub sandbox: String,
    #[command(flatten)]
    pub place: Place,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running sandboxes too (killing them).
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Sandbox ids or names.
    #[arg(value_name = "ID|NAME", required = true)]
    pub sandboxes: Vec<String>,
    #[command(flatten)]
    pub place: Place,
}

#[derive(Debug, Args)]
pub struct KeeperArgs {
    /// The sandbox whose deadlines to enforce.
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub place: Place,
}

/// The front door at `place`, over a runner with the host probed; with `host`, those facts.
pub async fn sandboxes(
    place: &Place,
    host: Option<stockade::host::HostFacts>,
    runtime: Option<stockade::runner::RuntimeBinary>,
) -> Result<Sandboxes> {
    let host = match host {
        Some(h) => h,
        None => tokio::task::spawn_blocking(super::doctor::host_facts_for_spec)
            .await
            .context("probing the host")??,
    };
    let client = connect_or_start(
        place.address.as_deref(),
        &place.namespace,
        &DaemonPaths::system(),
    )
    .await?;
    let mut builder = Runner::builder().client(client).host(host);
    if let Some(rb) = runtime {
        builder = builder.runtime_binary(rb);
    }
    let runner = builder
        .images(std::sync::Arc::new(StoreImages::default()))
        .fifo_root(&place.fifo_root)
        .build()?;
    Ok(Sandboxes::new(runner).init_dir(&place.init_dir))
}

fn duration(flag: &str, v: Option<&str>) -> Result<Option<Duration>> {
    v.map(|s| parse_duration(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .transpose()
}

pub async fn create(args: CreateArgs) -> Result<u8> {
    let lifetime = duration("lifetime", args.lifetime.as_deref())?;
    let idle_timeout = duration("idle-timeout", args.idle_timeout.as_deref())?;
    let policy_args = args.policy.clone();
    let requested = args.runc_binary.clone();
    let (inputs, host, runtime) = tokio::task::spawn_blocking(move || {
        let runtime = super::requested_runtime(requested.as_deref())?;
        let inputs = super::policy_inputs(&policy_args)?;
        inputs.check()?;
        let host = super::doctor::host_facts_for_spec()?;
        anyhow::Ok((inputs, host, runtime))
    })
    .await
    .context("reading the policy")??;
    let sandboxes = sandboxes(&args.place, Some(host), runtime).await?;
    // The image's ENV, WORKDIR and USER hold for every exec; its command is not run.
    let client = sandboxes.runner().containerd().client().cloned();
    let client = client.context("the image store needs a connection to containerd")?;
    let (inputs, _) = inputs.with_image(&client, None).await?;
    let policy = tokio::task::spawn_blocking(move || inputs.validate())
        .await
        .context("validating the policy")??;
    super::report_runtime(sandboxes.runner());
    let target = sandboxes.runner().cleanup_target();
    let reclaim =
        tokio::spawn(async move { reclaim_crashed(&target, &ReconcileOptions::default()).await });
    let publishes = !policy.network_rules.publish.is_empty();
    let mut req = CreateRequest::new(policy);
    req.name = args.name.clone();
    req.lifetime = lifetime;
    req.idle_timeout = idle_timeout;
    req.tty = args.tty;
    let sb = sandboxes.create(req).await.map_err(one_line)?;
    // Published ports and a DNS forwarder outlive this process: the keeper takes them over.
    let run_dir = args.place.fifo_root.join(sb.id());
    if publishes {
        stockade::network::publish::stop(&run_dir);
    }
    let services = stockade::network::has_service(&run_dir);
    if lifetime.is_some() || idle_timeout.is_some() || publishes || services {
        start_keeper(&sandboxes, sb.id(), &args.place);
    }
    if publishes {
        let me = Some(std::process::id());
        let limit = std::time::Duration::from_secs(10);
        let ports = stockade::network::publish::wait_published(&run_dir, me, limit).await;
        if ports.is_empty() {
            eprintln!(
                "stockade: warning: the keeper of {} did not take its published ports over",
                sb.id()
            );
        }
        for p in ports {
            eprintln!("stockade: published {p}");
        }
    }
    for n in &sb.record().not_enforced {
        tracing::info!("not enforced on this host: {}: {}", n.protection, n.reason);
    }
    println!("{}", sb.id());
    if let Ok(r) = reclaim.await {
        for (id, why) in &r.failed {
            tracing::warn!("reclaiming crashed run {id}: {why}");
        }
    }
    Ok(0)
}

/// Starts `stockade sandbox-keeper ID` detached (own process group, no stdio) and records
/// it as the run directory's owner. If it cannot start, crash reclaim and `gc` still
/// remove the sandbox once a deadline has passed.
fn start_keeper(sandboxes: &Sandboxes, id: &str, place: &Place) {
    let args: [&std::ffi::OsStr; 4] = [
        "sandbox-keeper".as_ref(),
        id.as_ref(),
        "--init-dir".as_ref(),
        place.init_dir.as_os_str(),
    ];
    let c = sandboxes.runner().containerd();
    if let Err(e) = super::spawn_run_owner(&args, c.as_ref(), &place.fifo_root, id) {
        tracing::warn!("starting the keeper of {id}: {e}");
    }
}

/// The hidden `sandbox-keeper ID`: enforce the sandbox's deadlines until it is gone.
pub async fn keeper(args: KeeperArgs) -> Result<u8> {
    let dir = args.place.fifo_root.join(&args.id);
    if dir.is_dir() {
        let _ = write_owner(&dir, std::process::id());
    }
    let sandboxes = sandboxes(&args.place, None, None).await?;
    sandboxes.keep(&args.id).await.map_err(one_line)?;
    Ok(0)
}

pub async fn ls(args: LsArgs) -> Result<u8> {
    let sandboxes = sandboxes(&args.place, None, None).await?;
    let all = sandboxes.list().await.map_err(one_line)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let now = stockade::runner::session::now_ms();
    println!(
        "{:<22} {:<16} {:<10} {:<8} {:>7} {:>7} {:>9}  PORTS",
        "ID", "NAME", "IMAGE", "STATE", "AGE", "IDLE", "MEMORY"
    );
    for s in &all {
        println!("{}", ls_line(s, now));
    }
    Ok(0)
}

fn ls_line(s: &SandboxInfo, now: u64) -> String {
    let idle = s
        .last_activity_unix_ms
        .unwrap_or(s.created_unix_ms)
        .max(s.created_unix_ms);
    let mem = s
        .usage
        .peak_memory_bytes
        .map(|b| format!("{:.1}M", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "-".into());
    let ports: Vec<String> = s
        .network
        .iter()
        .flat_map(|n| n.published.iter().map(ToString::to_string))
        .collect();
    format!(
        "{:<22} {:<16} {:<10} {:<8} {:>7} {:>7} {:>9}  {}",
        s.id,
        s.name.as_deref().unwrap_or("-"),
        s.image,
        format!("{:?}", s.state).to_lowercase(),
        age(now.saturating_sub(s.created_unix_ms)),
        age(now.saturating_sub(idle)),
        mem,
        if ports.is_empty() {
            "-".to_string()
        } else {
            ports.join(", ")
        }
    )
}

/// `45s`, `12m`, `3h`, `2d`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub async fn inspect(args: InspectArgs) -> Result<u8> {
    let sandboxes = sandboxes(&args.place, None, None).await?;
    let sb = sandboxes.get(&args.sandbox).await.map_err(one_line)?;
    let info = sb.inspect().await.map_err(one_line)?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(0)
}

pub async fn stop(args: StopArgs) -> Result<u8> {
    let grace = parse_duration(&args.time).map_err(|e| anyhow::anyhow!("--time: {e}"))?;
    let sandboxes = sandboxes(&args.place, None, None).await?;
    let sb = sandboxes.get(&args.sandbox).await.map_err(one_line)?;
    sb.stop(grace).await.map_err(one_line)?;
    println!("{}", sb.id());
    Ok(0)
}

pub async fn rm(args: RmArgs) -> Result<u8> {
    let sandboxes = sandboxes(&args.place, None, None).await?;
    let mut failed = Vec::new();
    for name in &args.sandboxes {
        let r = async {
            let sb = sandboxes.get(name).await?;
            let id = sb.id().to_string();
            sb.remove(args.force).await.map(|()| id)
        }
        .await;
        match r {
            Ok(id) => println!("{id}"),
            Err(e) => failed.push(e.to_string()),
        }
    }
    match failed.len() {
        0 => Ok(0),
        _ => bail!("{}", failed.join("; ")),
    }
}

/// A sandbox error as the CLI's one line.
pub fn one_line(e: SandboxError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
