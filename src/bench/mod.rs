//! The start-latency benchmark: in one run, interleaved, the same commands through stockade
//! (library and CLI), `ctr run --rm` on the same image and bare `runc run` on a bundle with
//! the same root filesystem, at several concurrencies. Reports min/p50/p95/p99 end to end
//! and per phase, ratios against `ctr` and `runc`, runs per second, JSON and an SVG CDF.
//!
//! Used by `stockade bench` and by `benches/start_latency.rs` (`cargo bench`).

mod api;
mod bundle;
pub mod cpu;
mod docker_api;
mod engines;
mod external;
pub mod meter;
mod model;
mod report;
mod served;
mod setup;
pub mod stats;
mod sustained;
pub mod svg;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::containerd::Client;
use crate::host::HostFacts;
use crate::policy::ValidatedPolicy;
use crate::runner::{Output, RunRequest, Runner};
pub use model::*;
pub use report::{render_svg, render_table};
pub use stats::{summarize, Summary};
pub use sustained::{sustained, Sustained};

/// Longest wait, before a burst, for pools to refill and earlier runs to be removed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Contenders {
    lib: Runner,
    /// One pool per image, for the warm contender.
    warm: BTreeMap<String, crate::pool::Pool>,
    /// The CLI with pool services, and each image's service socket.
    warm_cli: Option<(external::StockadeCli, BTreeMap<String, PathBuf>)>,
    /// The server `stockade run` is a thin client of, for the served contenders.
    served: Option<served::ServedServer>,
    policy: ValidatedPolicy,
    cli: external::StockadeCli,
    ctr: Option<external::Ctr>,
    runc: Option<external::Runc>,
    /// One long-lived sandbox per image, for the exec contender.
    exec: BTreeMap<String, crate::sandbox::Sandbox>,
    /// The front door the session contender creates its sandboxes through.
    sessions: Option<crate::sandbox::Sandboxes>,
    /// The CLI's create + exec + rm.
    session_cli: api::SessionCli,
    /// The HTTP API's server, for `stockade-http`.
    http: Option<api::HttpServer>,
    /// `stockade serve --docker-socket` and its exec containers, for
    /// `stockade-docker-exec`.
    docker_api: Option<docker_api::DockerApiServer>,
    /// The private dockerd, for `docker-run` and `docker-exec`.
    docker: Option<engines::Docker>,
    /// podman with private storage, for `podman-run`.
    podman: Option<engines::Podman>,
}

impl Contenders {
    /// Before each measured burst, untimed: the warm pools (library, service and server)
    /// for the workload's image hold `level` ready sandboxes (their full size), and nothing of an earlier burst is
    /// still being removed (the library's background removals, and the detached helper of
    /// each `stockade run`: no stockade container but pooled ones is left). Each burst so
    /// measures start latency on a settled host rather than against the previous
    /// contender's removal or refill; `--sustained` measures with all of that included.
    async fn settle(&self, w: &Workload, level: usize) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        if let Some(pool) = self.warm.get(&w.image) {
            pool.wait_ready(level, SETTLE_TIMEOUT).await;
        }
        if let Some(sock) = self.warm_cli.as_ref().and_then(|(_, s)| s.get(&w.image)) {
            setup::service_ready(sock, level, SETTLE_TIMEOUT).await;
        }
        if let Some(s) = self.served.as_ref().filter(|s| s.pooled) {
            s.pool_ready(&w.image, level, SETTLE_TIMEOUT).await;
        }
        self.lib.wait_cleanups().await;
        let c = self.lib.containerd();
        let managed = format!("labels.\"{}\"==true", crate::containerd::LABEL_MANAGED);
        while Instant::now() < deadline {
            let listed = c.list_containers(vec![managed.clone()]).await;
            let busy = match listed {
                Ok(containers) => containers.iter().any(|ct| {
                    !ct.labels.contains_key(crate::pool::LABEL_POOL)
                        && !ct.labels.contains_key(crate::sandbox::LABEL_SESSION)
                }),
                Err(_) => false,
            };
            if !busy {
                return;
            }
            // Not shorter: each poll costs CPU in containerd, counted into the burst's CPU.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run_once(&self, c: Contender, w: &Workload, seq: usize) -> Result<Sample, BenchError> {
        match c {
            Contender::StockadeLib | Contender::StockadeWarm => {
                let mut p = self.policy.clone();
                p.image = w.image.clone();
                let req = RunRequest::new(p, w.args.clone()).output(Output::Capture);
                let r = match (c, self.warm.get(&w.image)) {
                    (Contender::StockadeWarm, Some(pool)) => pool.run(req).await?,
                    (Contender::StockadeWarm, None) => {
                        return Err(BenchError::Setup(format!("no pool for {}", w.image)))
                    }
                    _ => self.lib.run(req).await?,
                };
                if r.exit_code != 0 {
                    return Err(BenchError::Failed {
                        what: "stockade run (library)".into(),
                        status: Some(i32::from(r.exit_code)),
                        stderr: r.stderr.lines().last().unwrap_or_default().to_string(),
                    });
                }
                external::check_output(w, r.stdout.as_bytes(), "stockade run (library)")?;
                let mut phases = BTreeMap::new();
                if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&r.phases) {
                    for (k, v) in m {
                        if let Some(x) = v.as_f64() {
                            phases.insert(k.trim_end_matches("_ms").to_string(), x);
                        }
                    }
                }
                Ok(Sample {
                    total_ms: r.duration_ms,
                    phases,
                })
            }
            Contender::StockadeCli => self.cli.run(w).await,
            Contender::StockadeWarmCli => match &self.warm_cli {
                Some((cli, _)) => cli.run(w).await,
                None => Err(BenchError::Setup("no pool service".into())),
            },
            Contender::StockadeServedCli | Contender::StockadeServedWarmCli => match &self.served {
                Some(s) if c == Contender::StockadeServedCli => s.cold.run(w).await,
                Some(s) => s.warm.run(w).await,
                None => Err(BenchError::Setup("no stockade serve".into())),
            },
            Contender::Ctr => match &self.ctr {
                Some(ctr) => {
                    ctr.run(w, &format!("bench-ctr-{}-{seq}", std::process::id()))
                        .await
                }
                None => Err(BenchError::Setup("ctr is not installed".into())),
            },
            Contender::StockadeExec => {
                let sandbox = self.exec.get(&w.image).ok_or_else(|| {
                    BenchError::Setup(format!("no sandbox to exec into for {}", w.image))
                })?;
                let r = sandbox
                    .exec(crate::sandbox::ExecRequest::new(w.args.clone()))
                    .await?;
                if r.exit_code != 0 {
                    return Err(BenchError::Failed {
                        what: "stockade exec (library)".into(),
                        status: Some(i32::from(r.exit_code)),
                        stderr: r.stderr.lines().last().unwrap_or_default().to_string(),
                    });
                }
                external::check_output(w, r.stdout.as_bytes(), "stockade exec (library)")?;
                Ok(Sample {
                    total_ms: r.duration_ms,
                    phases: BTreeMap::new(),
                })
            }
            Contender::StockadeExecCli => {
                let sandbox = self.exec.get(&w.image).ok_or_else(|| {
                    BenchError::Setup(format!("no sandbox to exec into for {}", w.image))
                })?;
                self.session_cli.exec(sandbox.id(), w).await
            }
            Contender::StockadeSession => {
                let sandboxes = self
                    .sessions
                    .as_ref()
                    .ok_or_else(|| BenchError::Setup("no front door for sessions".into()))?;
                let mut p = self.policy.clone();
                p.image = w.image.clone();
                let start = Instant::now();
                let sandbox = sandboxes
                    .create(crate::sandbox::CreateRequest::new(p))
                    .await?;
                let r = sandbox
                    .exec(crate::sandbox::ExecRequest::new(w.args.clone()))
                    .await;
                // Up to the result, as `stockade-lib`'s figure (whose removal runs after).
                let total_ms = start.elapsed().as_secs_f64() * 1000.0;
                let removed = sandbox.remove(true).await;
                let r = r?;
                removed?;
                if r.exit_code != 0 {
                    return Err(BenchError::Failed {
                        what: "stockade create+exec+rm (library)".into(),
                        status: Some(i32::from(r.exit_code)),
                        stderr: r.stderr.lines().last().unwrap_or_default().to_string(),
                    });
                }
                external::check_output(w, r.stdout.as_bytes(), "stockade create+exec+rm")?;
                Ok(Sample {
                    total_ms,
                    phases: BTreeMap::new(),
                })
            }
            Contender::StockadeSessionCli => self.session_cli.run(w).await,
            Contender::StockadeHttp => match &self.http {
                Some(h) => h.run(w).await,
                None => Err(BenchError::Setup("no HTTP API server".into())),
            },
            Contender::DockerRun | Contender::DockerExec => match &self.docker {
                Some(d) if c == Contender::DockerRun => d.run(w).await,
                Some(d) => d.exec(w).await,
                None => Err(BenchError::Setup("no private dockerd".into())),
            },
            Contender::StockadeDockerExec => match &self.docker_api {
                Some(d) => d.exec(w).await,
                None => Err(BenchError::Setup(
                    "no stockade serve --docker-socket".into(),
                )),
            },
            Contender::PodmanRun => match &self.podman {
                Some(p) => p.run(w).await,
                None => Err(BenchError::Setup("podman not prepared".into())),
            },
            Contender::Runc => match &self.runc {
                Some(runc) => {
                    runc.run(w, &format!("bench-runc-{}-{seq}", std::process::id()))
                        .await
                }
                None => Err(BenchError::Setup("runc bundle not prepared".into())),
            },
        }
    }
}

#[derive(Default)]
struct Acc {
    samples: Vec<Sample>,
    failures: usize,
    first_error: Option<String>,
    wall: Duration,
    runs: usize,
    cpu: cpu::Cpu,
}

/// Runs the benchmark against `client` (and the containerd at its address), with the base
/// policy `policy` (its image is replaced per workload). `progress` is told about each step.
pub async fn run(
    client: Client,
    host: HostFacts,
    policy: ValidatedPolicy,
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, BenchError> {
    let workloads = Workload::standard(&config.workloads)?;
    let mut notes = Vec::new();
    let mut config = config.clone();
    let meter = meter::Meter::start();
    cpu_notes(&meter, &client, &mut notes);
    let lib = Runner::builder()
        .client(client.clone())
        .host(host.clone())
        .runc_binary(config.runc_binary.clone())
        .images(Arc::new(crate::runner::StoreImages::default()))
        .build()?;
    let runtime_flags: Vec<String> = match &config.runc_binary {
        Some(b) => vec!["--runc-binary".into(), b.clone()],
        None => Vec::new(),
    };

    // The same image, resolved once; workloads whose image is missing are dropped, saying so.
    let mut usable = Vec::new();
    let mut image_refs = BTreeMap::new();
    for w in workloads {
        match crate::images::resolve(&client, &w.image).await {
            Ok(img) => {
                image_refs.insert(w.image.clone(), img);
                usable.push(w);
            }
            Err(e) => notes.push(format!("workload {} skipped: {e}", w.name)),
        }
    }
    if usable.is_empty() {
        return Err(BenchError::Setup(
            "no workload has its image (build one with `stockade image build busybox`)".into(),
        ));
    }

    let cli = external::StockadeCli {
        binary: config.stockade_bin.clone(),
        address: client.address().to_path_buf(),
        namespace: client.namespace().to_string(),
        // The CLI on its own, never served by a `stockade serve` that happens to run (the
        // served contenders measure that).
        flags: [vec!["--standalone".to_string()], runtime_flags.clone()].concat(),
    };
    let ctr = if external::have("ctr") {
        Some(external::Ctr {
            address: client.address().to_path_buf(),
            namespace: client.namespace().to_string(),
            image_refs: image_refs
                .iter()
                .map(|(image, r)| (image.clone(), r.name.clone()))
                .collect(),
        })
    } else {
        notes.push("ctr not found: ctr-run not measured".into());
        None
    };
    let bundles = if config.contenders.contains(&Contender::Runc) && external::have("runc") {
        progress("preparing runc bundles");
        Some(
            bundle::Bundles::prepare(
                &client,
                &host,
                &policy,
                &usable,
                &image_refs,
                &config.work_dir,
            )
            .await?,
        )
    } else {
        None
    };
    let runc = bundles.as_ref().map(|b| external::Runc {
        root: b.state_dir(),
        bundles: b.list(),
    });
    let (docker, podman) = engines::start_all(
        &client,
        &image_refs,
        &mut config,
        &meter,
        &mut notes,
        progress,
    )
    .await;
    let config = &config;
    let mut contenders = Contenders {
        exec: BTreeMap::new(),
        sessions: None,
        session_cli: api::SessionCli {
            binary: config.stockade_bin.clone(),
            address: client.address().to_path_buf(),
            namespace: client.namespace().to_string(),
            runtime_flags: runtime_flags.clone(),
        },
        http: None,
        docker_api: None,
        docker,
        podman,
        lib,
        warm: BTreeMap::new(),
        warm_cli: None,
        served: None,
        policy,
        cli,
        ctr,
        runc,
    };
    // Whatever the setup started is stopped on every path, an error half-way included.
    let sandboxes = crate::sandbox::Sandboxes::new(contenders.lib.clone());
    contenders.sessions = Some(sandboxes.clone());
    let mut started = setup::Started::default();
    let ready = setup::start(
        &mut contenders,
        &mut started,
        &sandboxes,
        &setup::Context {
            client: &client,
            workloads: &usable,
            config,
            runtime_flags: &runtime_flags,
        },
        progress,
    )
    .await;
    for pid in started.pids() {
        meter.add_daemon(pid);
    }
    let contenders = Arc::new(contenders);
    let outcome = match ready {
        Ok(()) => measure(&contenders, &usable, config, &meter, progress).await,
        Err(e) => Err(e),
    };
    setup::stop(&contenders, started, &sandboxes, &mut notes).await;
    if let Some(d) = &contenders.docker {
        notes.extend(d.stop().await);
    }
    if let Some(p) = &contenders.podman {
        notes.extend(p.stop().await);
    }
    meter.stop();
    if let Some(b) = bundles {
        b.remove().await;
    }
    let mut cells = outcome?;
    cells.sort_by(|a, b| {
        (a.workload.as_str(), a.concurrency, a.contender).cmp(&(
            b.workload.as_str(),
            b.concurrency,
            b.contender,
        ))
    });
    let ratios = ratios(&cells);
    Ok(Report {
        host: host_info(&client, &host).await,
        config: ConfigEcho {
            iterations: config.iterations,
            warmup: config.warmup,
            concurrency: config.concurrency.clone(),
            rounds: config.rounds,
            workloads: usable.iter().map(|w| w.name.clone()).collect(),
            runc_binary: config.runc_binary.clone(),
        },
        cells,
        ratios,
        notes,
    })
}

async fn measure(
    contenders: &Arc<Contenders>,
    workloads: &[Workload],
    config: &BenchConfig,
    meter: &meter::Meter,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Cell>, BenchError> {
    let mut acc: BTreeMap<(String, Contender, usize), Acc> = BTreeMap::new();
    let mut seq = 0usize;

    // Warm-up: not recorded.
    for w in workloads {
        for &c in &config.contenders {
            for _ in 0..config.warmup {
                seq += 1;
                let _ = contenders.run_once(c, w, seq).await;
            }
        }
    }

    // Every pool is as large as the highest concurrency; a burst starts with each full
    // again, so that no contender's run overlaps the refill of one that ran before it.
    let full = config.concurrency.iter().copied().max().unwrap_or(1);
    for &level in &config.concurrency {
        let rounds = if level == 1 {
            config.iterations
        } else {
            config.rounds
        };
        for round in 0..rounds {
            for w in workloads {
                // Rotate the order every round so no contender always goes first.
                let mut order = config.contenders.clone();
                let len = order.len().max(1);
                order.rotate_left(round % len);
                for c in order {
                    contenders.settle(w, full).await;
                    let adopted = meter.adopted_alive();
                    let cpu0 = meter.read();
                    let t0 = Instant::now();
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..level {
                        seq += 1;
                        let cs = Arc::clone(contenders);
                        let wl = w.clone();
                        let s = seq;
                        set.spawn(async move { cs.run_once(c, &wl, s).await });
                    }
                    let a = acc.entry((w.name.clone(), c, level)).or_default();
                    while let Some(res) = set.join_next().await {
                        match res {
                            Ok(Ok(sample)) => a.samples.push(sample),
                            Ok(Err(e)) => {
                                a.failures += 1;
                                a.first_error.get_or_insert_with(|| e.to_string());
                            }
                            Err(e) => {
                                a.failures += 1;
                                a.first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    a.wall += t0.elapsed();
                    a.runs += level;
                    // Untimed: the burst's removals, refills and reparented processes
                    // (shims, removal helpers) finish, so that all its CPU is counted here.
                    contenders.settle(w, full).await;
                    meter.wait_adopted(adopted, SETTLE_TIMEOUT).await;
                    a.cpu
                        .add(cpu::Cpu::between(&cpu0, &meter.read(), c.in_process()));
                }
            }
            if round % 10 == 9 || round + 1 == rounds {
                progress(&format!(
                    "concurrency {level}: round {}/{rounds}",
                    round + 1
                ));
            }
        }
        // Let background cleanups of this level finish before the next one starts.
        contenders.lib.wait_cleanups().await;
    }

    Ok(acc
        .into_iter()
        .map(|((workload, contender, concurrency), a)| {
            let totals: Vec<f64> = a.samples.iter().map(|s| s.total_ms).collect();
            let mut phase_samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for s in &a.samples {
                for (k, v) in &s.phases {
                    phase_samples.entry(k.clone()).or_default().push(*v);
                }
            }
            let completed = a.runs - a.failures;
            Cell {
                workload,
                contender,
                concurrency,
                summary: summarize(&totals),
                phases: phase_samples
                    .into_iter()
                    .filter_map(|(k, v)| summarize(&v).map(|s| (k, s)))
                    .collect(),
                runs_per_sec: if a.wall.is_zero() {
                    0.0
                } else {
                    completed as f64 / a.wall.as_secs_f64()
                },
                failures: a.failures,
                first_error: a.first_error,
                samples_ms: totals,
                cpu_per_run: (completed > 0).then(|| a.cpu.per_run(completed)),
            }
        })
        .collect())
}

/// Waits until the pool service at `sock` has `n` sandboxes ready (or `timeout` passes).
async fn host_info(client: &Client, host: &HostFacts) -> HostInfo {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let runc = tokio::process::Command::new("runc")
        .arg("--version")
        .output()
        .await
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    HostInfo {
        kernel,
        cpus: std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(0),
        containerd: client.server_version().await.unwrap_or_default(),
        runc,
        cgroup: format!("{:?}", host.cgroup).to_lowercase(),
    }
}

/// Says in the report what the CPU column can and cannot see on this host.
fn cpu_notes(meter: &meter::Meter, client: &Client, notes: &mut Vec<String>) {
    if !meter.subreaper {
        notes.push(
            "cpu: could not become a child subreaper; processes that daemonize are not counted"
                .into(),
        );
    }
    match cpu::socket_server_pid(client.address()) {
        Some(pid) => {
            meter.add_daemon(pid);
            if !meter.is_descendant(pid) {
                notes.push(format!(
                    "cpu: containerd (pid {pid}) does not run below the benchmark, so its shims are not reparented here and their CPU (with runc's) is not counted for the containerd-based contenders"
                ));
            }
        }
        None => notes.push(format!(
            "cpu: no server pid for {}; containerd's own CPU is not counted",
            client.address().display()
        )),
    }
}
