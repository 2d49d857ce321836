//! Starting the contenders that hold something live between runs (warm pools, pool
//! services, sandboxes to exec into) and stopping them again. [`start`] records each thing
//! as soon as it exists, so [`stop`] removes all of it whether the setup finished or failed
//! half-way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{external, BenchConfig, BenchError, Contender, Contenders, Workload};
use crate::containerd::Client;
use crate::sandbox::{CreateRequest, Sandboxes};

/// What the setup reads.
pub(super) struct Context<'a> {
    pub client: &'a Client,
    pub workloads: &'a [Workload],
    pub config: &'a BenchConfig,
    /// `--runc-binary` for the child processes, when one is given.
    pub runtime_flags: &'a [String],
}

/// Child processes the setup started (pool services); killed when dropped.
#[derive(Default)]
pub(super) struct Started {
    services: Vec<tokio::process::Child>,
    /// Other daemons' PIDs (the HTTP API's server), stopped by their owner.
    daemons: Vec<u32>,
}

impl Started {
    /// The PIDs of the pool services and the HTTP API's server (daemons whose CPU is
    /// counted).
    pub fn pids(&self) -> Vec<u32> {
        self.services
            .iter()
            .filter_map(tokio::process::Child::id)
            .chain(self.daemons.iter().copied())
            .collect()
    }
}

/// Fills `contenders`' warm pools, pool services and exec sandboxes, for the contenders
/// `ctx.config` asks for. On error, what was made so far stays recorded for [`stop`].
pub(super) async fn start(
    contenders: &mut Contenders,
    started: &mut Started,
    sandboxes: &Sandboxes,
    ctx: &Context<'_>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), BenchError> {
    let config = ctx.config;
    let size = config.concurrency.iter().copied().max().unwrap_or(1);
    if config.contenders.contains(&Contender::StockadeWarm) {
        for w in ctx.workloads {
            if contenders.warm.contains_key(&w.image) {
                continue;
            }
            let mut p = contenders.policy.clone();
            p.image = w.image.clone();
            let cfg = crate::pool::PoolConfig {
                size,
                ..Default::default()
            };
            let pool = crate::pool::Pool::start(contenders.lib.clone(), p, cfg)
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            contenders.warm.insert(w.image.clone(), pool);
        }
        progress(&format!("filling the warm pools ({size} sandboxes each)"));
        for pool in contenders.warm.values() {
            pool.wait_ready(size, Duration::from_secs(60)).await;
        }
    }
    if config.contenders.contains(&Contender::StockadeWarmCli) {
        start_services(contenders, started, ctx, size, progress).await?;
    }
    let served = [
        Contender::StockadeServedCli,
        Contender::StockadeServedWarmCli,
    ];
    if served.iter().any(|c| config.contenders.contains(c)) && contenders.served.is_none() {
        start_served(contenders, started, ctx, size, progress).await?;
    }
    if config.contenders.contains(&Contender::StockadeHttp) && contenders.http.is_none() {
        progress("starting stockade serve --http");
        let server = super::api::HttpServer::start(
            &config.stockade_bin,
            ctx.client.address(),
            ctx.client.namespace(),
            ctx.runtime_flags,
            &config.work_dir,
            size.max(1) * 2,
        )
        .await?;
        if let Some(pid) = server.pid() {
            started.daemons.push(pid);
        }
        contenders.http = Some(server);
    }
    if config.contenders.contains(&Contender::StockadeDockerExec) && contenders.docker_api.is_none()
    {
        progress("starting stockade serve --docker-socket and its exec containers");
        let mut images: Vec<String> = ctx.workloads.iter().map(|w| w.image.clone()).collect();
        images.dedup();
        let server = super::docker_api::DockerApiServer::start(
            &config.stockade_bin,
            ctx.client.address(),
            ctx.client.namespace(),
            ctx.runtime_flags,
            &config.work_dir.join("docker-api"),
            &images,
        )
        .await?;
        if let Some(pid) = server.pid() {
            started.daemons.push(pid);
        }
        contenders.docker_api = Some(server);
    }
    if config.contenders.contains(&Contender::StockadeExec)
        || config.contenders.contains(&Contender::StockadeExecCli)
    {
        progress("creating the sandboxes to exec into");
        for w in ctx.workloads {
            if contenders.exec.contains_key(&w.image) {
                continue;
            }
            let mut p = contenders.policy.clone();
            p.image = w.image.clone();
            let made = sandboxes.create(CreateRequest::new(p)).await?;
            contenders.exec.insert(w.image.clone(), made);
        }
    }
    Ok(())
}

/// The server the served contenders are clients of; with the warm one, one served run per
/// image first (untimed), which makes the server's pool for it, then filled.
async fn start_served(
    contenders: &mut Contenders,
    started: &mut Started,
    ctx: &Context<'_>,
    size: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), BenchError> {
    progress("starting stockade serve for the served runs");
    let server = super::served::ServedServer::start(
        &contenders.cli,
        ctx.runtime_flags,
        &ctx.config.work_dir.join("served"),
        size,
    )
    .await?;
    if let Some(pid) = server.pid() {
        started.daemons.push(pid);
    }
    let server = contenders.served.insert(server);
    server.pooled = ctx
        .config
        .contenders
        .contains(&Contender::StockadeServedWarmCli);
    if ctx
        .config
        .contenders
        .contains(&Contender::StockadeServedWarmCli)
    {
        progress(&format!(
            "filling the server's pools ({size} sandboxes each)"
        ));
        for w in ctx.workloads {
            server.warm.run(w).await?;
            server
                .pool_ready(&w.image, size, Duration::from_secs(60))
                .await;
        }
    }
    Ok(())
}

/// One `stockade pool fill` service per image, and the CLI contender that uses them.
async fn start_services(
    contenders: &mut Contenders,
    started: &mut Started,
    ctx: &Context<'_>,
    size: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), BenchError> {
    let config = ctx.config;
    let dir = config.work_dir.join("pool");
    let cli = external::StockadeCli {
        binary: config.stockade_bin.clone(),
        address: ctx.client.address().to_path_buf(),
        namespace: ctx.client.namespace().to_string(),
        flags: [
            vec![
                "--standalone".into(),
                "--pool-dir".into(),
                dir.to_string_lossy().into_owned(),
            ],
            ctx.runtime_flags.to_vec(),
        ]
        .concat(),
    };
    let policy = contenders.policy.clone();
    let sockets = &mut contenders.warm_cli.get_or_insert((cli, BTreeMap::new())).1;
    for w in ctx.workloads {
        if sockets.contains_key(&w.image) {
            continue;
        }
        let mut p = policy.clone();
        p.image = w.image.clone();
        let sock = crate::pool::socket_path(&dir, &p.hash());
        let child = tokio::process::Command::new(&config.stockade_bin)
            .arg("pool")
            .arg("fill")
            .arg("--image")
            .arg(&w.image)
            .arg("--size")
            .arg(size.to_string())
            .arg("--socket-dir")
            .arg(&dir)
            .arg("--address")
            .arg(ctx.client.address())
            .arg("--namespace")
            .arg(ctx.client.namespace())
            .args(ctx.runtime_flags)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn {
                what: "stockade pool fill".into(),
                message: e.to_string(),
            })?;
        started.services.push(child);
        sockets.insert(w.image.clone(), sock);
    }
    progress(&format!(
        "starting the pool services ({size} sandboxes each)"
    ));
    for sock in sockets.values() {
        service_ready(sock, size, Duration::from_secs(60)).await;
    }
    Ok(())
}

/// Removes the exec sandboxes, drains the warm pools and the pool services (noting how
/// often each served a run), stops the HTTP API's server (SIGTERM by PID: it removes what
/// it made), waits for the services to exit and for the library's background removals.
pub(super) async fn stop(
    contenders: &Contenders,
    started: Started,
    sandboxes: &Sandboxes,
    notes: &mut Vec<String>,
) {
    for s in contenders.exec.values() {
        let removed = match sandboxes.get(s.id()).await {
            Ok(handle) => handle.remove(true).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            notes.push(format!("exec sandbox {}: not removed: {e}", s.id()));
        }
    }
    for (image, pool) in &contenders.warm {
        let st = pool.status();
        notes.push(format!(
            "warm pool {image}: {} runs took a prepared sandbox, {} found the pool empty and ran cold",
            st.taken, st.misses
        ));
        pool.drain().await;
    }
    if let Some((_, sockets)) = &contenders.warm_cli {
        use crate::pool::service::{request, DrainReply, Request, StatusReply};
        for (image, sock) in sockets {
            if let Ok(r) =
                request::<StatusReply>(sock, &Request::Status, Duration::from_secs(2)).await
            {
                notes.push(format!(
                    "pool service {image}: {} runs took a prepared sandbox, {} found the pool empty and ran cold",
                    r.status.taken, r.status.misses
                ));
            }
            let _ = request::<DrainReply>(sock, &Request::Drain, Duration::from_secs(60)).await;
        }
    }
    if let Some(h) = &contenders.http {
        h.stop().await;
    }
    if let Some(s) = &contenders.served {
        notes.extend(s.notes().await);
        s.stop().await;
    }
    if let Some(d) = &contenders.docker_api {
        notes.extend(d.stop().await);
    }
    for mut child in started.services {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    contenders.lib.wait_cleanups().await;
}

pub(super) async fn service_ready(sock: &std::path::Path, n: usize, timeout: Duration) {
    use crate::pool::service::{request, Request, StatusReply};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(r) = request::<StatusReply>(sock, &Request::Status, Duration::from_secs(1)).await
        {
            if r.status.ready >= n {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
