//! `cargo bench --bench start_latency`: the start-latency benchmark (stockade's library and
//! CLI, `ctr run --rm`, bare `runc run`, interleaved in one run). Needs root, containerd and
//! the busybox image (`stockade image build busybox`); prints why when it cannot run.
//!
//! Environment: `STOCKADE_BENCH_ITERATIONS` (default 50), `STOCKADE_BENCH_CONCURRENCY`
//! (default `1,8,32`), `STOCKADE_BENCH_WORKLOADS` (default `true,echo`),
//! `STOCKADE_BENCH_OUT` (JSON report path), `STOCKADE_BENCH_SVG` (CDF plot path),
//! `STOCKADE_BENCH_RUNC_BINARY` (runtime binary of stockade's contenders, e.g. crun),
//! `CONTAINERD_ADDRESS`.

use std::path::PathBuf;
use std::process::ExitCode;

use stockade::bench::{self, BenchConfig, Contender};
use stockade::containerd::daemon::{connect_or_start, DaemonPaths};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either.
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("start_latency: skipped: needs root to run containers");
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("start_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let list = |s: String| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    let config = BenchConfig {
        iterations: env_or("STOCKADE_BENCH_ITERATIONS", "50").parse()?,
        warmup: 3,
        concurrency: list(env_or("STOCKADE_BENCH_CONCURRENCY", "1,8,32"))
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_, _>>()?,
        rounds: 3,
        workloads: list(env_or("STOCKADE_BENCH_WORKLOADS", "true,echo")),
        contenders: Contender::ALL.to_vec(),
        stockade_bin: PathBuf::from(env!("CARGO_BIN_EXE_stockade")),
        work_dir: PathBuf::from("/run/stockade/bench"),
        runc_binary: std::env::var("STOCKADE_BENCH_RUNC_BINARY")
            .ok()
            .filter(|b| !b.is_empty()),
    };
    let policy = Policy::default().validate(None, &PolicyOverrides::default(), &HostPolicyEnv)?;
    let host = stockade::host::probe(&stockade::host::HostPaths::system())?;
    let address = std::env::var_os("CONTAINERD_ADDRESS").map(PathBuf::from);
    let client = connect_or_start(address.as_deref(), "stockade", &DaemonPaths::system()).await?;
    let report = bench::run(client, host, policy, &config, &|m| eprintln!("bench: {m}")).await?;
    print!("{}", bench::render_table(&report));
    if let Ok(path) = std::env::var("STOCKADE_BENCH_OUT") {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if let Ok(path) = std::env::var("STOCKADE_BENCH_SVG") {
        let first = report.config.workloads.first().cloned().unwrap_or_default();
        std::fs::write(path, bench::render_svg(&report, &first))?;
    }
    Ok(())
}
