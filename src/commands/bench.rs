//! `stockade bench`: the start-latency benchmark against `ctr run --rm` and `runc run`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use stockade::bench::{self, BenchConfig, Contender};
use stockade::containerd::daemon::{self, connect_or_start, DaemonPaths};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub policy: crate::cli::PolicyArgs,
    /// Measured runs per contender and workload at concurrency 1.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Unmeasured runs per contender first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Bursts per concurrency level above 1.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Workloads, comma-separated: true, echo, python.
    #[arg(long, value_delimiter = ',', default_value = "true,echo")]
    pub workloads: Vec<String>,
    /// Contenders, comma-separated: stockade-lib, stockade-cli, stockade-warm,
    /// stockade-warm-cli, stockade-exec (into a live sandbox), stockade-exec-cli (`stockade
    /// exec` into the same sandbox), stockade-session (create + exec
    /// through the library, to compare with stockade-lib), stockade-session-cli (`stockade
    /// create` + `exec` + `rm -f`), stockade-http (the same through the HTTP API of a
    /// `stockade serve --http` the benchmark starts), ctr, runc, docker-run and
    /// docker-exec (against a private dockerd the benchmark starts), stockade-docker-exec
    /// (`docker exec` against the Docker API of a `stockade serve --docker-socket` the
    /// benchmark starts), podman-run. A contender
    /// whose program is not installed is skipped, with a note saying so.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stockade-lib,stockade-cli,stockade-warm,stockade-warm-cli,stockade-exec,ctr,runc,docker-run,docker-exec,stockade-docker-exec,podman-run"
    )]
    pub contenders: Vec<String>,
    /// Measure nothing: read a report saved with `--out` and print its table (and, with
    /// `--svg`, redraw its plot).
    #[arg(long, value_name = "FILE")]
    pub replot: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write an SVG latency CDF of the first workload to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The stockade binary the CLI contender runs [default: this one].
    #[arg(long, value_name = "PATH")]
    pub stockade_bin: Option<PathBuf>,
    #[command(flatten)]
    pub runner: crate::cli::RunnerArgs,
    /// Instead of the latency table: sustained runs/s of `/bin/true` for this long, cold
    /// and then warm (a pool of --pool-size), at each --concurrency level.
    #[arg(long, value_name = "DURATION")]
    pub sustained: Option<String>,
    /// Pool size for --sustained warm; 0 measures cold only.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub pool_size: usize,
    /// Start stockade's private containerd under DIR (as `stockade daemon start --base
    /// DIR`) from the benchmark itself and stop it at the end, instead of connecting to
    /// --address: its shims are then reparented to the benchmark, so their CPU (with the
    /// `runc` calls they make) is counted in the cpu column. A daemon already running
    /// there is used as it is, and then stays running.
    #[arg(long, value_name = "DIR", conflicts_with = "address")]
    pub daemon_base: Option<PathBuf>,
    /// Working directory for runc bundles.
    #[arg(long, value_name = "DIR", default_value = "/run/stockade/bench")]
    pub work_dir: PathBuf,
}

fn contender(name: &str) -> Result<Contender> {
    Ok(match name {
        "stockade-lib" | "lib" => Contender::StockadeLib,
        "stockade-cli" | "cli" => Contender::StockadeCli,
        "stockade-warm" | "warm" => Contender::StockadeWarm,
        "stockade-warm-cli" | "warm-cli" => Contender::StockadeWarmCli,
        "stockade-served-cli" | "served-cli" => Contender::StockadeServedCli,
        "stockade-served-warm-cli" | "served-warm-cli" => Contender::StockadeServedWarmCli,
        "ctr" | "ctr-run" => Contender::Ctr,
        "runc" | "runc-run" => Contender::Runc,
        "stockade-exec" | "exec" => Contender::StockadeExec,
        "stockade-exec-cli" | "exec-cli" => Contender::StockadeExecCli,
        "stockade-session" | "session" => Contender::StockadeSession,
        "stockade-session-cli" | "session-cli" => Contender::StockadeSessionCli,
        "stockade-http" | "http" => Contender::StockadeHttp,
        "docker-run" | "docker" => Contender::DockerRun,
        "docker-exec" => Contender::DockerExec,
        "stockade-docker-exec" => Contender::StockadeDockerExec,
        "podman-run" | "podman" => Contender::PodmanRun,
        other => bail!(
            "--contenders: unknown contender `{other}` (stockade-lib, stockade-cli, stockade-warm, stockade-warm-cli, stockade-served-cli, stockade-served-warm-cli, stockade-exec, stockade-exec-cli, stockade-session, stockade-session-cli, stockade-http, ctr, runc, docker-run, docker-exec, stockade-docker-exec, podman-run)"
        ),
    })
}

pub async fn run(args: BenchArgs) -> Result<u8> {
    if let Some(saved) = &args.replot {
        return replot(saved, &args);
    }
    if args.iterations == 0 {
        bail!("--iterations: must be at least 1");
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency: levels must be at least 1");
    }
    // Refused here, before any containerd work; the runners check it again.
    super::requested_runtime(args.runner.runc_binary.as_deref())?;
    let contenders = args
        .contenders
        .iter()
        .map(|c| contender(c))
        .collect::<Result<Vec<_>>>()?;
    let policy = super::load_policy(&args.policy)?;
    let host = super::doctor::host_facts_for_spec()?;
    // The private daemon this benchmark starts, to stop at the end.
    let mut own_daemon = None;
    let client = match &args.daemon_base {
        Some(base) => {
            let paths = DaemonPaths::under(base);
            let was_running = daemon::status(&paths).await.is_ok_and(|s| s.pid.is_some());
            daemon::ensure_running(&paths)
                .await
                .with_context(|| format!("--daemon-base {}", base.display()))?;
            let client =
                stockade::containerd::Client::connect(&paths.socket, &args.runner.namespace)
                    .await
                    .with_context(|| format!("--daemon-base {}", base.display()))?;
            if !was_running {
                own_daemon = Some(paths);
            }
            client
        }
        None => {
            connect_or_start(
                args.runner.address.as_deref(),
                &args.runner.namespace,
                &DaemonPaths::system(),
            )
            .await?
        }
    };
    let result = measure(args, client, policy, host, contenders).await;
    if let Some(paths) = own_daemon {
        daemon::stop(&paths, std::time::Duration::from_secs(10))
            .context("stopping the benchmark's containerd")?;
    }
    result
}

async fn measure(
    args: BenchArgs,
    client: stockade::containerd::Client,
    policy: stockade::policy::ValidatedPolicy,
    host: stockade::host::HostFacts,
    contenders: Vec<Contender>,
) -> Result<u8> {
    if let Some(d) = &args.sustained {
        let d =
            stockade::policy::parse_duration(d).map_err(|e| anyhow::anyhow!("--sustained: {e}"))?;
        let mut all = Vec::new();
        for &c in &args.concurrency {
            let sizes = if args.pool_size == 0 {
                vec![0]
            } else {
                vec![0, args.pool_size]
            };
            for size in sizes {
                let s = bench::sustained(
                    client.clone(),
                    host.clone(),
                    policy.clone(),
                    d,
                    c,
                    size,
                    args.runner.runc_binary.clone(),
                )
                .await?;
                eprintln!(
                    "sustained {} conc {:>2} pool {:>2}: {} runs in {:.1} s = {:.1} runs/s, p50 {:.1} ms, p99 {:.1} ms, {} failed, {} ran cold",
                    s.mode, s.concurrency, s.pool_size, s.completed, s.wall_s, s.runs_per_sec,
                    s.p50_ms, s.p99_ms, s.failures, s.cold_fallbacks
                );
                all.push(s);
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        return Ok(0);
    }
    let stockade_bin = match args.stockade_bin {
        Some(p) => p,
        None => std::env::current_exe().context("locating the stockade binary")?,
    };
    let config = BenchConfig {
        iterations: args.iterations,
        warmup: args.warmup,
        concurrency: args.concurrency,
        rounds: args.rounds,
        workloads: args.workloads,
        contenders,
        stockade_bin,
        work_dir: args.work_dir,
        runc_binary: args.runner.runc_binary.clone(),
    };
    let report = bench::run(client, host, policy, &config, &|m| eprintln!("bench: {m}")).await?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json)
            .with_context(|| format!("--out {}: cannot write", out.display()))?;
    }
    if let Some(svg) = &args.svg {
        let first = report.config.workloads.first().cloned().unwrap_or_default();
        std::fs::write(svg, bench::render_svg(&report, &first))
            .with_context(|| format!("--svg {}: cannot write", svg.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", bench::render_table(&report));
    }
    Ok(0)
}

fn replot(saved: &std::path::Path, args: &BenchArgs) -> Result<u8> {
    let text = std::fs::read_to_string(saved)
        .with_context(|| format!("--replot {}: cannot read", saved.display()))?;
    let report: bench::Report = serde_json::from_str(&text)
        .with_context(|| format!("--replot {}: not a benchmark report", saved.display()))?;
    if let Some(svg) = &args.svg {
        let first = report.config.workloads.first().cloned().unwrap_or_default();
        std::fs::write(svg, bench::render_svg(&report, &first))
            .with_context(|| format!("--svg {}: cannot write", svg.display()))?;
    }
    print!("{}", bench::render_table(&report));
    Ok(0)
}
