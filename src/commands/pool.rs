//! `stockade pool`: keep sandboxes ready for one image and policy (`fill`, a small service
//! on a Unix socket that `stockade run` asks first), show the pools (`ls`), and remove
//! them (`drain`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use stockade::containerd::daemon::{connect_or_start, DaemonPaths};
use stockade::policy::{parse_duration, parse_size};
use stockade::pool::service::{self, DrainReply, Place, Request, StatusReply};
use stockade::pool::PoolStatus;
use stockade::pool::{socket_path, Pool, PoolConfig, DEFAULT_SOCKET_DIR};
use stockade::runner::handoff::{live_sockets, ServerStatus, DEFAULT_REMOVAL_DIR};
use stockade::runner::{CleanupMode, Runner, StoreImages, DEFAULT_FIFO_ROOT, DEFAULT_PROC_ROOT};

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Keep SIZE sandboxes ready for the image and policy; serve them to `stockade run`.
    Fill(Box<FillArgs>),
    /// Show every pool: size, ready sandboxes, their idle ages, memory they hold; the pool
    /// services' and those a running `stockade serve --pool-size` keeps.
    Ls(LsArgs),
    /// Remove every pooled sandbox and stop the pool services (a server's own pools go
    /// when the server stops).
    Drain(ServiceArgs),
}

#[derive(Debug, Args)]
pub struct FillArgs {
    #[command(flatten)]
    pub policy: crate::cli::PolicyArgs,
    /// Ready sandboxes to keep.
    #[arg(long, value_name = "K", default_value_t = 4)]
    pub size: usize,
    /// Remove ready sandboxes nobody took for this long (and stop refilling until the next
    /// take).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub idle_expiry: String,
    /// Sandboxes prepared at once while refilling.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub refill_concurrency: usize,
    /// Cap on the memory the ready sandboxes hold (their waiting pid 1s and shims, as
    /// `pool ls` shows), e.g. 64Mi; the pool stays below its size rather than exceed it
    /// [default: no cap].
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Return once the service listens, leaving it in the background.
    #[arg(long)]
    pub detach: bool,
    /// Directory of the pool sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    #[command(flatten)]
    pub runner: crate::cli::RunnerArgs,
    /// Parent of the per-run FIFO directories.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_FIFO_ROOT, hide = true)]
    pub fifo_root: PathBuf,
    /// Where sandbox disk images are made.
    #[arg(long, value_name = "DIR", default_value = stockade::disk::DEFAULT_DISK_ROOT, hide = true)]
    pub disk_root: PathBuf,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub services: ServiceArgs,
    /// Directory of the running servers' sockets, asked for the pools they keep.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_REMOVAL_DIR, hide = true)]
    pub removal_dir: PathBuf,
}

/// Where the pool services listen, and how to print what they answer.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Directory of the pool sockets.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SOCKET_DIR)]
    pub socket_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: PoolCommand) -> Result<u8> {
    match cmd {
        PoolCommand::Fill(a) => fill(*a).await,
        PoolCommand::Ls(a) => ls(a).await,
        PoolCommand::Drain(a) => drain(a).await,
    }
}

async fn fill(args: FillArgs) -> Result<u8> {
    let idle_expiry =
        parse_duration(&args.idle_expiry).map_err(|e| anyhow::anyhow!("--idle-expiry: {e}"))?;
    if args.size == 0 {
        bail!("--size: must be at least 1");
    }
    if args.refill_concurrency == 0 {
        bail!("--refill-concurrency: must be at least 1");
    }
    let max_memory = args
        .max_memory
        .as_deref()
        .map(|v| parse_size(v).map_err(|e| anyhow::anyhow!("--max-memory: {e}")))
        .transpose()?;
    let inputs = super::policy_inputs(&args.policy)?;
    inputs.check()?;
    let runtime = super::requested_runtime(args.runner.runc_binary.as_deref())?;
    let client = connect_or_start(
        args.runner.address.as_deref(),
        &args.runner.namespace,
        &DaemonPaths::system(),
    )
    .await?;
    // The image's ENV, WORKDIR and USER are part of the policy a run merges, so of the
    // hash it asks the pool by: merged here the same way.
    let (inputs, _) = inputs.with_image(&client, None).await?;
    let policy = inputs.validate()?;
    let path = socket_path(&args.socket_dir, &policy.hash());
    if args.detach {
        return detach(&path).await;
    }
    let host = super::doctor::host_facts_for_spec()?;
    let address = client.address().to_path_buf();
    let namespace = client.namespace().to_string();
    let mut builder = Runner::builder().client(client).host(host);
    if let Some(rb) = runtime {
        builder = builder.runtime_binary(rb);
    }
    let runner = builder
        .images(std::sync::Arc::new(StoreImages::default()))
        .fifo_root(&args.fifo_root)
        .disk_root(&args.disk_root)
        .cleanup(CleanupMode::Background)
        .build()?;
    super::report_runtime(&runner);
    let place = Place {
        address,
        namespace,
        fifo_root: args.fifo_root.clone(),
        runc_binary: super::pool_runtime_key(&runner),
    };
    let listener = service::bind(&path).await?;
    let config = PoolConfig {
        size: args.size,
        idle_expiry,
        refill_concurrency: args.refill_concurrency,
        max_memory,
        ..Default::default()
    };
    let pool = Pool::start(runner.clone(), policy, config)?;
    eprintln!(
        "stockade: pool for image {} (policy {}) of {} on {}",
        pool.policy().image,
        pool.policy_hash(),
        args.size,
        path.display()
    );
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    let removed = service::serve(pool, listener, path, place, stop).await;
    runner.wait_cleanups().await;
    eprintln!("stockade: pool drained ({removed} ready sandboxes removed)");
    Ok(0)
}

/// Starts this command again without `--detach`, in its own process group with no stdio,
/// and waits until its socket answers.
async fn detach(path: &std::path::Path) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let child = std::process::Command::new("/proc/self/exe")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the pool service")?;
    for _ in 0..300 {
        if let Ok(r) =
            service::request::<StatusReply>(path, &Request::Status, Duration::from_millis(500))
                .await
        {
            if r.pid == child.id() {
                println!("{}", child.id());
                return Ok(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "pool service {} did not answer on {} within 30 s",
        child.id(),
        path.display()
    )
}

/// Each socket in `sockets` with its answer to a status request (or why there is none).
async fn statuses<T: for<'de> serde::Deserialize<'de>>(
    sockets: Vec<PathBuf>,
) -> Vec<(PathBuf, Result<T, String>)> {
    let mut out = Vec::new();
    for s in sockets {
        let r = service::request::<T>(&s, &Request::Status, Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string());
        out.push((s, r));
    }
    out
}

async fn ls(args: LsArgs) -> Result<u8> {
    let services: Vec<(PathBuf, Result<StatusReply, String>)> =
        statuses(service::sockets(&args.services.socket_dir)).await;
    let servers: Vec<(PathBuf, Result<ServerStatus, String>)> = statuses(live_sockets(
        &args.removal_dir,
        std::path::Path::new(DEFAULT_PROC_ROOT),
    ))
    .await;
    if args.services.json {
        let mut v: Vec<_> = services.iter().map(|a| listed("pool", a)).collect();
        v.extend(servers.iter().map(|a| listed("server", a)));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<8} {:<24} {:<14} {:>4} {:>5} {:>5} {:>8} {:>6} {:>6} {:>9} {:<}",
        "PID",
        "IMAGE",
        "POLICY",
        "SIZE",
        "READY",
        "PREP",
        "MEM",
        "TAKEN",
        "MISSES",
        "EXPIRY",
        "IDLE AGES"
    );
    for (s, r) in &services {
        match r {
            Ok(x) => print_pool(x.pid, &x.status, ""),
            Err(e) => println!("{}: {e}", s.display()),
        }
    }
    for (s, r) in &servers {
        match r {
            Ok(x) => {
                for st in &x.pools {
                    print_pool(x.pid, st, " (stockade serve)");
                }
            }
            Err(e) => println!("{}: {e}", s.display()),
        }
    }
    Ok(0)
}

/// One `pool ls --json` entry: the socket and its answer under `key`, or why there is none.
fn listed<T: serde::Serialize>(
    key: &str,
    (socket, answer): &(PathBuf, Result<T, String>),
) -> serde_json::Value {
    match answer {
        Ok(a) => serde_json::json!({ "socket": socket, key: a }),
        Err(e) => serde_json::json!({ "socket": socket, "error": e }),
    }
}

/// One `pool ls` row for a pool held by process `pid`, and its notes below it.
fn print_pool(pid: u32, st: &PoolStatus, holder: &str) {
    let ages: Vec<String> = st
        .idle_ages_ms
        .iter()
        .map(|ms| format!("{:.1}s", *ms as f64 / 1000.0))
        .collect();
    println!(
        "{:<8} {:<24} {:<14} {:>4} {:>5} {:>5} {:>7}M {:>6} {:>6} {:>8}s {}{}{holder}",
        pid,
        st.image,
        &st.policy_hash[..st.policy_hash.len().min(14)],
        st.size,
        st.ready,
        st.preparing,
        st.memory_bytes >> 20,
        st.taken,
        st.misses,
        st.idle_expiry_ms / 1000,
        ages.join(" "),
        if st.idle {
            " (idle: not refilling)"
        } else {
            ""
        }
    );
    if let Some(cap) = st.max_memory_bytes {
        println!(
            "         memory cap {}M{}",
            cap >> 20,
            if st.memory_limited {
                ": holding the pool below its size"
            } else {
                ""
            }
        );
    }
    if let Some(e) = &st.last_error {
        println!("         last error: {e}");
    }
}

async fn drain(args: ServiceArgs) -> Result<u8> {
    let mut total = 0;
    let mut failed = false;
    for s in service::sockets(&args.socket_dir) {
        match service::request::<DrainReply>(&s, &Request::Drain, Duration::from_secs(60)).await {
            Ok(r) => {
                total += r.removed;
                if !args.json {
                    println!("{}: {} removed", s.display(), r.removed);
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("stockade: {e}");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::json!({ "removed": total }));
    }
    Ok(if failed { 125 } else { 0 })
}
