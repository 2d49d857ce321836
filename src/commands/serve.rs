//! `stockade serve`: the Docker Engine API on a Unix socket (see `stockade::serve`).
//! Stopped by SIGTERM or SIGINT, which remove every container it made and its socket.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use stockade::images::registry::RegistryOptions;
use stockade::policy::{HostPolicyEnv, PolicyOverrides};
use stockade::runner::{reclaim_crashed, ReconcileOptions};
use stockade::serve::docker::create::ServerPolicy;
use stockade::serve::docker::images::ImageOptions;
use stockade::serve::docker::Docker;
use stockade::serve::DEFAULT_DOCKER_SOCKET;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Unix socket Docker clients connect to (`DOCKER_HOST=unix://PATH`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DOCKER_SOCKET)]
    pub docker_socket: PathBuf,
    /// Group (name or number) that may open the socket besides root [default: root's].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// The server's policy (TOML): the default and the ceiling of every container
    /// [default: the built-in defaults].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A host directory beneath which binds could be granted (repeatable) [default: none].
    #[arg(long = "allow-bind", value_name = "DIR")]
    pub allow_bind: Vec<PathBuf>,
    /// Pull from this registry over plain HTTP (repeatable; e.g. `127.0.0.1:5000`)
    /// [default: none, HTTPS everywhere].
    #[arg(long, value_name = "REGISTRY")]
    pub plain_http: Vec<String>,
    /// Accept any TLS certificate from this registry (repeatable) [default: none].
    #[arg(long, value_name = "REGISTRY")]
    pub insecure: Vec<String>,
    /// Docker client config whose registry credentials pulls use when the client sends
    /// none [default: none; the server's own ~/.docker/config.json is never read].
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Start the server in the background and print its pid once it answers.
    #[arg(long)]
    pub detach: bool,
    /// OCI runtime binary the runc shim drives instead of runc [default: runc].
    #[arg(long, value_name = "BIN", env = "STOCKADE_RUNC_BINARY")]
    pub runc_binary: Option<String>,
    #[command(flatten)]
    pub place: super::sandbox::Place,
}

fn group_id(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid.as_raw()),
        _ => bail!("--socket-group: no group `{g}`"),
    }
}

pub async fn run(args: ServeArgs) -> Result<u8> {
    let group = args.socket_group.as_deref().map(group_id).transpose()?;
    if args.detach {
        return detach(&args);
    }
    let (policy, file) = super::read_policy(args.policy.as_deref())?;
    let ceiling =
        policy
            .clone()
            .validate(file.as_deref(), &PolicyOverrides::default(), &HostPolicyEnv)?;
    for w in &ceiling.warnings {
        eprintln!("stockade: warning: {w}");
    }
    let requested = args.runc_binary.clone();
    let (host, runtime) = tokio::task::spawn_blocking(move || {
        let runtime = super::requested_runtime(requested.as_deref())?;
        let host = super::doctor::host_facts_for_spec()?;
        anyhow::Ok((host, runtime))
    })
    .await
    .context("probing the host")??;
    let sandboxes = super::sandbox::sandboxes(&args.place, Some(host), runtime).await?;
    super::report_runtime(sandboxes.runner());
    let target = sandboxes.runner().cleanup_target();
    let reclaimed = reclaim_crashed(&target, &ReconcileOptions::default()).await;
    for (id, why) in &reclaimed.failed {
        tracing::warn!("reclaiming crashed run {id}: {why}");
    }
    let docker = Arc::new(
        Docker::new(
            sandboxes,
            ServerPolicy {
                policy,
                ceiling,
                allow_bind: args.allow_bind.clone(),
            },
        )
        .with_images(ImageOptions {
            registry: RegistryOptions {
                plain_http: args.plain_http.clone(),
                insecure: args.insecure.clone(),
                docker_config: args.docker_config.clone(),
                ..RegistryOptions::default()
            },
            ..ImageOptions::default()
        }),
    );
    for id in docker.reclaim_leftovers().await {
        tracing::info!("removed {id}, left by an earlier server");
    }
    let listener = stockade::serve::bind(&args.docker_socket, group)?;
    tracing::info!("serving the Docker API on {}", args.docker_socket.display());
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    stockade::serve::serve(docker, listener, &args.docker_socket, shutdown).await;
    Ok(0)
}

/// Starts this command again without `--detach`, in its own process group with no stdio,
/// waits (at most 60 s) until its socket answers, and prints its pid.
fn detach(args: &ServeArgs) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let rest: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let mut child = std::process::Command::new("/proc/self/exe")
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the server")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the server exited at once ({status}); run it without --detach to see why");
        }
        if std::os::unix::net::UnixStream::connect(&args.docker_socket).is_ok() {
            println!("{}", child.id());
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!(
        "{}: the server did not answer within 60 s (pid {})",
        args.docker_socket.display(),
        child.id()
    )
}
