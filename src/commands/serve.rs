//! `stockade serve`: the Docker Engine API on a Unix socket and, with `--http`, the native
//! HTTP API (see `stockade::serve`), in one process over one front door. Stopped by
//! SIGTERM or SIGINT, which remove every container and sandbox it made and its sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use stockade::images::registry::RegistryOptions;
use stockade::policy::{parse_size, HostPolicyEnv, PolicyOverrides};
use stockade::runner::{reclaim_crashed, ReconcileOptions};
use stockade::sandbox::Sandboxes;
use stockade::serve::docker::create::ServerPolicy;
use stockade::serve::docker::images::ImageOptions;
use stockade::serve::docker::Docker;
use stockade::serve::http_api::quota::Quotas;
use stockade::serve::http_api::{auth::Tokens, HttpApi, HttpConfig};
use stockade::serve::listen::{Address, Listener};
use stockade::serve::DEFAULT_DOCKER_SOCKET;
use tokio_rustls::TlsAcceptor;

use super::sandbox::Place;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Unix socket Docker clients connect to (`DOCKER_HOST=unix://PATH`) [default:
    /// /run/stockade/docker.sock, served unless `--http` is given alone].
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// Serve the native HTTP API at `unix:PATH`, `127.0.0.1:PORT` or `[::1]:PORT`; any
    /// other `IP:PORT` only with `--tls-cert` and `--tls-key` [default: not served].
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub http: Option<String>,
    /// The HTTP API's TLS certificate chain (PEM, the server's certificate first); with
    /// `--tls-key`, `--http` is served over TLS only [default: no TLS].
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "http"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1) [default: no TLS].
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "http"])]
    pub tls_key: Option<PathBuf>,
    /// The HTTP API's bearer tokens, one `TOKEN [NAME]` a line; must be mode 600 or
    /// stricter. Required with `--http`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Sandboxes and runs each token may have alive at once [default: 16].
    #[arg(long, value_name = "N", default_value_t = stockade::serve::http_api::quota::DEFAULT_MAX_SANDBOXES)]
    pub http_max_sandboxes: usize,
    /// The memory limits of each token's live sandboxes and runs, added up [default: 8Gi].
    #[arg(long, value_name = "SIZE", default_value = "8Gi")]
    pub http_max_memory: String,
    /// The largest upload (a file or a tar archive) the HTTP API takes [default: 64Mi].
    #[arg(long, value_name = "SIZE", default_value = "64Mi")]
    pub http_max_body: String,
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
    /// Keep N sandboxes ready for each policy `stockade run` has been served with (a pool
    /// per policy, made on its first run, at most 8 policies; a pool nobody takes from for
    /// 10 minutes empties) [default: 0, no pools].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub pool_size: usize,
    /// Directory of the socket on which this server takes finished `stockade run`s'
    /// removals (`<pid>.sock`).
    #[arg(long, value_name = "DIR", default_value = stockade::runner::handoff::DEFAULT_REMOVAL_DIR, hide = true)]
    pub removal_dir: PathBuf,
    #[command(flatten)]
    pub place: Place,
}

/// The most policies `--pool-size` keeps a pool for.
const MAX_RUN_POOLS: usize = 8;

fn group_id(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid.as_raw()),
        _ => bail!("--socket-group: no group `{g}`"),
    }
}

/// The Docker socket served: the one given, else the default unless `--http` is given alone.
fn docker_socket(args: &ServeArgs) -> Option<PathBuf> {
    match (&args.docker_socket, &args.http) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from(DEFAULT_DOCKER_SOCKET)),
        (None, Some(_)) => None,
    }
}

/// The HTTP API's address, configuration and TLS, checked before anything starts.
struct HttpServing {
    addr: Address,
    config: HttpConfig,
    tls: Option<TlsAcceptor>,
}

fn http_config(args: &ServeArgs) -> Result<Option<HttpServing>> {
    let Some(addr) = &args.http else {
        return Ok(None);
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(stockade::serve::tls::acceptor(cert, key)?),
        _ => None,
    };
    let addr = Address::parse(addr, tls.is_some())?;
    let Some(file) = &args.token_file else {
        bail!("--http needs --token-file: with no token nobody could use the server");
    };
    let tokens = Tokens::read(file)?;
    let size = |flag: &str, v: &str| parse_size(v).with_context(|| format!("{flag} {v}"));
    let quotas = Quotas {
        max_sandboxes: args.http_max_sandboxes,
        max_memory: size("--http-max-memory", &args.http_max_memory)?,
    };
    let max_body = size("--http-max-body", &args.http_max_body)?;
    Ok(Some(HttpServing {
        addr,
        config: HttpConfig {
            tokens,
            quotas,
            max_body,
        },
        tls,
    }))
}

/// A server's policy: `--policy` (or the built-in defaults) as the default, validated as
/// the ceiling of every request, and the roots binds may be granted beneath. Its
/// validation's warnings are in `ceiling.warnings`, for the caller to show.
pub(super) fn server_policy(file: Option<&Path>, allow_bind: Vec<PathBuf>) -> Result<ServerPolicy> {
    let (policy, name) = super::read_policy(file)?;
    let ceiling =
        policy
            .clone()
            .validate(name.as_deref(), &PolicyOverrides::default(), &HostPolicyEnv)?;
    Ok(ServerPolicy {
        policy,
        ceiling,
        allow_bind,
    })
}

/// The front door a server drives at `place`: the host probed and the runtime
/// (`--runc-binary`) found off the async threads, the runtime reported, and the runs a
/// crashed process left reclaimed.
pub(super) async fn server_sandboxes(
    place: &Place,
    runc_binary: Option<String>,
) -> Result<Sandboxes> {
    let (host, runtime) = tokio::task::spawn_blocking(move || {
        let runtime = super::requested_runtime(runc_binary.as_deref())?;
        let host = super::doctor::host_facts_for_spec()?;
        anyhow::Ok((host, runtime))
    })
    .await
    .context("probing the host")??;
    let sandboxes = super::sandbox::sandboxes(place, Some(host), runtime).await?;
    super::report_runtime(sandboxes.runner());
    let target = sandboxes.runner().cleanup_target();
    let reclaimed = reclaim_crashed(&target, &ReconcileOptions::default()).await;
    for (id, why) in &reclaimed.failed {
        tracing::warn!("reclaiming crashed run {id}: {why}");
    }
    Ok(sandboxes)
}

pub async fn run(args: ServeArgs) -> Result<u8> {
    let group = args.socket_group.as_deref().map(group_id).transpose()?;
    let http = http_config(&args)?;
    let docker_socket = docker_socket(&args);
    if args.detach {
        return detach(
            &args,
            docker_socket.as_deref(),
            http.as_ref().map(|h| &h.addr),
        );
    }
    let server = server_policy(args.policy.as_deref(), args.allow_bind.clone())?;
    for w in &server.ceiling.warnings {
        eprintln!("stockade: warning: {w}");
    }
    let sandboxes = server_sandboxes(&args.place, args.runc_binary.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    let pools = (args.pool_size > 0).then(|| {
        let config = stockade::pool::PoolConfig {
            size: args.pool_size,
            ..Default::default()
        };
        Arc::new(stockade::pool::Pools::new(
            sandboxes.runner().clone(),
            config,
            MAX_RUN_POOLS,
        ))
    });
    // Bound before the API sockets, so it is up when `--detach` sees them answer.
    // `stockade run` hands its finished runs' removal here instead of starting a helper.
    match stockade::runner::handoff::bind_removals(&args.removal_dir).await {
        Ok((listener, path)) => {
            // … and its runs, when it can run them as they would run themselves.
            let (runner, shutdown) = (sandboxes.runner().clone(), stopped());
            let serves = stockade::runner::handoff::Serves {
                runs: Some(super::run_served::handler(runner.clone(), pools.clone())),
                pools: pools.clone(),
            };
            servers.spawn(stockade::runner::handoff::serve_removals(
                runner, listener, path, serves, shutdown,
            ));
        }
        Err(e) => tracing::warn!("{e}; `stockade run` removes its runs itself"),
    }
    if let Some(HttpServing { addr, config, tls }) = http {
        let api = Arc::new(HttpApi::new(sandboxes.clone(), server.clone(), config));
        for id in api.reclaim_leftovers().await {
            tracing::info!("removed {id}, left by an earlier server");
        }
        let listener = Listener::bind(&addr, group).await?;
        let scheme = if tls.is_some() { "TLS" } else { "plain HTTP" };
        tracing::info!("serving the HTTP API on {} ({scheme})", listener.local());
        let shutdown = stopped();
        servers.spawn(async move {
            let a = api.clone();
            let handler = move |req| a.clone().route(req);
            stockade::serve::listen::accept_loop(listener, tls, handler, shutdown).await;
            api.remove_all().await;
        });
    }
    if let Some(socket) = docker_socket {
        let docker = Arc::new(
            Docker::new(sandboxes.clone(), server).with_images(ImageOptions {
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
        let listener = stockade::serve::bind(&socket, group)?;
        tracing::info!("serving the Docker API on {}", socket.display());
        let shutdown = stopped();
        servers.spawn(async move {
            stockade::serve::serve(docker, listener, &socket, shutdown).await;
        });
    }
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    stop_tx.send_replace(true);
    while servers.join_next().await.is_some() {}
    if let Some(p) = &pools {
        p.drain().await;
    }
    sandboxes.runner().wait_cleanups().await;
    Ok(0)
}

/// Starts this command again without `--detach`, in its own process group with no stdio,
/// waits (at most 60 s) until its sockets answer, and prints its pid.
fn detach(
    args: &ServeArgs,
    docker: Option<&std::path::Path>,
    http: Option<&Address>,
) -> Result<u8> {
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
        let answers = |a: &Address| match a {
            Address::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            Address::Tcp(t) => std::net::TcpStream::connect(t).is_ok(),
        };
        let docker_up = docker.is_none_or(|p| std::os::unix::net::UnixStream::connect(p).is_ok());
        if docker_up && http.is_none_or(answers) {
            println!("{}", child.id());
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = args;
    bail!("the server did not answer within 60 s (pid {})", child.id())
}
