//! What the benchmark measures and reports: contenders, workloads, samples, cells, ratios.

use super::*;

/// Why the benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The configuration or the host cannot run the benchmark (an unknown workload, an
    /// image that is missing, a pool or engine that did not start); the message says which.
    #[error("benchmark setup: {0}")]
    Setup(String),
    /// A program the benchmark runs could not be spawned.
    #[error("{what}: cannot start: {message}")]
    Spawn {
        /// The program and what it was run for.
        what: String,
        /// The spawn error.
        message: String,
    },
    /// A program the benchmark runs exited unsuccessfully.
    #[error("{what}: failed (exit {status:?}): {stderr}")]
    Failed {
        /// The program and what it was run for.
        what: String,
        /// Its exit code; `None` when a signal ended it.
        status: Option<i32>,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A run through the library ([`crate::runner::Runner`]) failed.
    #[error("stockade run (library): {0}")]
    Run(#[from] crate::runner::RunError),
    /// A sandbox operation through the library ([`crate::sandbox`]) failed.
    #[error("stockade exec (library): {0}")]
    Exec(#[from] crate::sandbox::SandboxError),
}

/// The programs compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// [`Runner::run`] in this process: the path an embedding front end takes.
    StockadeLib,
    /// The `stockade run` binary, spawned per run: what a shell user sees.
    StockadeCli,
    /// [`crate::pool::Pool::run`] in this process: a sandbox prepared ahead of time
    /// (snapshot and container made, spec replaced at the run), from a pool as large as the
    /// highest concurrency. Each burst starts with the pool refilled (the wait is not
    /// timed); a take that finds it empty runs cold and is counted in the notes.
    StockadeWarm,
    /// The `stockade run` binary with a `stockade pool fill` service for the image (started
    /// by the benchmark, as large as the highest concurrency): what a shell user sees with
    /// a pool. Each burst starts with the pool refilled (the wait is not timed).
    StockadeWarmCli,
    /// `stockade run --cold` as a thin client of a `stockade serve` the benchmark starts
    /// (and stops by its PID): the server holds the containerd connection, the image
    /// cache and the removal.
    StockadeServedCli,
    /// `stockade run` served by the same server from its own pool for the run's policy
    /// (`--pool-size` the highest concurrency). Each burst starts with that pool refilled
    /// (the wait is not timed).
    StockadeServedWarmCli,
    /// `ctr run --rm` on the same image in the same containerd.
    Ctr,
    /// `runc run` on a prepared bundle: no containerd at all.
    Runc,
    /// [`crate::sandbox::Sandbox::exec`] in this process, into one long-lived sandbox per
    /// image made before the first burst (not timed): what an agent's second and later
    /// tool calls cost.
    StockadeExec,
    /// `stockade exec ID -- CMD` through the binary into the same sandbox as
    /// `stockade-exec`: the CLI's start-up and connection on top of the exec.
    StockadeExecCli,
    /// A one-shot run composed from the sandbox handle through the library:
    /// [`crate::sandbox::Sandboxes::create`] and one [`crate::sandbox::Sandbox::exec`],
    /// timed up to the exec's result as `stockade-lib` is timed up to its result; the
    /// [`crate::sandbox::Sandbox::remove`] that follows is not timed (a run's removal is
    /// not either). Beside `stockade-lib` it shows what the one-shot fast path saves.
    StockadeSession,
    /// `stockade create` + `stockade exec` + `stockade rm -f` through the binary, timed
    /// from the create to the end of the removal: the CLI's whole sandbox life per run.
    StockadeSessionCli,
    /// The same create + exec + delete through the HTTP API of a `stockade serve --http
    /// unix:…` the benchmark starts before the first burst (and stops by its PID), timed
    /// the same way: the API's cost beside the CLI's.
    StockadeHttp,
    /// `docker run --rm --network none` against a dockerd the benchmark starts privately
    /// (own data root, exec root, socket and pidfile, no bridge, no iptables) over the same
    /// containerd, on the same image loaded into it; skipped when `dockerd` is not installed.
    DockerRun,
    /// `docker exec` into one long-lived container per image of that private dockerd, made
    /// before the first burst (not timed).
    DockerExec,
    /// `docker exec` into one long-lived container per image made with `docker run -d`
    /// through the Docker API of a `stockade serve --docker-socket` the benchmark starts
    /// before the first burst (and stops by its PID): `docker-exec`'s client and command
    /// against stockade's server.
    StockadeDockerExec,
    /// `podman run --rm --network none` (own storage root and run root, cgroupfs, runc) on
    /// the same image; skipped when `podman` is not installed.
    PodmanRun,
}

impl Contender {
    /// Every contender, in the order reports list them.
    pub const ALL: [Contender; 17] = [
        Contender::StockadeLib,
        Contender::StockadeCli,
        Contender::StockadeWarm,
        Contender::StockadeWarmCli,
        Contender::StockadeServedCli,
        Contender::StockadeServedWarmCli,
        Contender::Ctr,
        Contender::Runc,
        Contender::StockadeExec,
        Contender::StockadeExecCli,
        Contender::StockadeSession,
        Contender::StockadeSessionCli,
        Contender::StockadeHttp,
        Contender::DockerRun,
        Contender::DockerExec,
        Contender::StockadeDockerExec,
        Contender::PodmanRun,
    ];

    /// The contender's name in flags and reports (`stockade-lib`, `ctr-run`, …).
    pub fn name(self) -> &'static str {
        match self {
            Contender::StockadeLib => "stockade-lib",
            Contender::StockadeCli => "stockade-cli",
            Contender::StockadeWarm => "stockade-warm",
            Contender::StockadeWarmCli => "stockade-warm-cli",
            Contender::StockadeServedCli => "stockade-served-cli",
            Contender::StockadeServedWarmCli => "stockade-served-warm-cli",
            Contender::Ctr => "ctr-run",
            Contender::Runc => "runc-run",
            Contender::StockadeExec => "stockade-exec",
            Contender::StockadeExecCli => "stockade-exec-cli",
            Contender::StockadeSession => "stockade-session",
            Contender::StockadeSessionCli => "stockade-session-cli",
            Contender::StockadeHttp => "stockade-http",
            Contender::DockerRun => "docker-run",
            Contender::DockerExec => "docker-exec",
            Contender::StockadeDockerExec => "stockade-docker-exec",
            Contender::PodmanRun => "podman-run",
        }
    }

    /// Whether the contender runs inside the benchmark's own process (so the process's own
    /// CPU time is charged to it).
    pub fn in_process(self) -> bool {
        match self {
            Contender::StockadeLib
            | Contender::StockadeWarm
            | Contender::StockadeExec
            | Contender::StockadeSession => true,
            Contender::StockadeCli
            | Contender::StockadeWarmCli
            | Contender::StockadeServedCli
            | Contender::StockadeServedWarmCli
            | Contender::StockadeExecCli
            | Contender::StockadeSessionCli
            | Contender::StockadeHttp
            | Contender::Ctr
            | Contender::Runc
            | Contender::DockerRun
            | Contender::DockerExec
            | Contender::StockadeDockerExec
            | Contender::PodmanRun => false,
        }
    }
}

/// One command measured.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// `true`, `echo`, `python`.
    pub name: String,
    /// The image it runs on (`stockade/busybox`, `stockade/python`).
    pub image: String,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// What stdout must be (trimmed), so that every contender provably ran the command.
    pub expect_stdout: Option<String>,
}

impl Workload {
    /// The standard workloads: `/bin/true`, `echo hi` with its output captured, and a Python
    /// one-liner (on the `python` image).
    pub fn standard(names: &[String]) -> Result<Vec<Workload>, BenchError> {
        names
            .iter()
            .map(|n| {
                Ok(match n.as_str() {
                    "true" => Workload {
                        name: "true".into(),
                        image: "stockade/busybox".into(),
                        args: vec!["/bin/true".into()],
                        expect_stdout: None,
                    },
                    "echo" => Workload {
                        name: "echo".into(),
                        image: "stockade/busybox".into(),
                        args: vec!["echo".into(), "hi".into()],
                        expect_stdout: Some("hi".into()),
                    },
                    "python" => Workload {
                        name: "python".into(),
                        image: "stockade/python".into(),
                        args: vec!["python3".into(), "-c".into(), "print(6*7)".into()],
                        expect_stdout: Some("42".into()),
                    },
                    other => {
                        return Err(BenchError::Setup(format!(
                            "unknown workload `{other}` (true, echo, python)"
                        )))
                    }
                })
            })
            .collect()
    }
}

/// One measured run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// End-to-end latency of the run, in milliseconds.
    pub total_ms: f64,
    /// Per-phase milliseconds, where the contender reports them (stockade-lib).
    pub phases: BTreeMap<String, f64>,
}

impl Sample {
    pub(crate) fn end_to_end(d: Duration) -> Sample {
        Sample {
            total_ms: d.as_secs_f64() * 1000.0,
            phases: BTreeMap::new(),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Runs per contender and workload at concurrency 1.
    pub iterations: usize,
    /// Unmeasured runs per contender first (connections, page cache, shims' binaries).
    pub warmup: usize,
    /// Concurrency levels; at each level above 1, `rounds` bursts of that many runs.
    pub concurrency: Vec<usize>,
    /// Bursts per concurrency level above 1.
    pub rounds: usize,
    /// Names of the workloads to run (see [`Workload::standard`]).
    pub workloads: Vec<String>,
    /// The contenders to measure, each on every workload.
    pub contenders: Vec<Contender>,
    /// The `stockade` binary for the CLI contender.
    pub stockade_bin: PathBuf,
    /// Working directory for the runc bundle and state.
    pub work_dir: PathBuf,
    /// Runtime binary stockade's contenders run under instead of runc (`ctr run` and
    /// `runc run` stay on runc, the baseline).
    pub runc_binary: Option<String>,
}

/// Results of one (workload, contender, concurrency) cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The workload's name.
    pub workload: String,
    /// Who ran it.
    pub contender: Contender,
    /// Runs in flight at once.
    pub concurrency: usize,
    /// End-to-end latencies of the completed runs; `None` when none completed.
    pub summary: Option<Summary>,
    /// p50/p95/p99 of each phase, where reported.
    pub phases: BTreeMap<String, Summary>,
    /// Completed runs per second of wall time at this concurrency.
    pub runs_per_sec: f64,
    /// Runs that failed (not counted in the latencies).
    pub failures: usize,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
    /// Every end-to-end latency, in the order measured.
    pub samples_ms: Vec<f64>,
    /// CPU per completed run, by where it was counted (see [`super::cpu`]); absent in
    /// reports written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_run: Option<super::cpu::Cpu>,
}

/// A ratio of two contenders' p50s in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    /// The workload both contenders ran.
    pub workload: String,
    /// The concurrency both ran at.
    pub concurrency: usize,
    /// The contender on top (a stockade one).
    pub numerator: Contender,
    /// The contender it is compared with.
    pub denominator: Contender,
    /// The numerator's p50 over the denominator's: below 1 means the numerator is faster.
    pub p50_ratio: f64,
    /// The same two contenders' CPU per run, numerator over denominator, where both were
    /// measured (absent in reports written before CPU was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ratio: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Where it was measured.
    pub host: HostInfo,
    /// What was asked for.
    pub config: ConfigEcho,
    /// One per (workload, contender, concurrency) measured.
    pub cells: Vec<Cell>,
    /// The pairs of [`RATIO_PAIRS`] that both have a summary.
    pub ratios: Vec<Ratio>,
    /// Things the reader should know: contenders skipped, pool takes that ran cold,
    /// leftovers not removed; one line each.
    pub notes: Vec<String>,
}

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    /// The kernel release (`/proc/sys/kernel/osrelease`); empty when unreadable.
    pub kernel: String,
    /// CPUs available to the benchmark; 0 when unknown.
    pub cpus: usize,
    /// containerd's version as its API reports it; empty when unknown.
    pub containerd: String,
    /// The first line of `runc --version`; empty when unknown.
    pub runc: String,
    /// The host's cgroup mode (`v1`, `v2`, `hybrid`).
    pub cgroup: String,
}

/// The configuration, echoed into the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigEcho {
    /// [`BenchConfig::iterations`].
    pub iterations: usize,
    /// [`BenchConfig::warmup`].
    pub warmup: usize,
    /// [`BenchConfig::concurrency`].
    pub concurrency: Vec<usize>,
    /// [`BenchConfig::rounds`].
    pub rounds: usize,
    /// The workloads actually run (those whose image was present).
    pub workloads: Vec<String>,
    /// Runtime binary of stockade's contenders, when not runc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runc_binary: Option<String>,
}

/// The pairs compared: each stockade way of starting a sandbox over each other engine's,
/// and exec over exec.
pub const RATIO_PAIRS: &[(&[Contender], &[Contender])] = &[
    (
        &[
            Contender::StockadeLib,
            Contender::StockadeCli,
            Contender::StockadeWarm,
            Contender::StockadeWarmCli,
        ],
        &[
            Contender::Ctr,
            Contender::Runc,
            Contender::DockerRun,
            Contender::PodmanRun,
        ],
    ),
    (
        &[
            Contender::StockadeExec,
            Contender::StockadeExecCli,
            Contender::StockadeDockerExec,
        ],
        &[Contender::DockerExec],
    ),
];

/// stockade's p50 (and CPU per run) over the other engines', per workload and concurrency,
/// for the [`RATIO_PAIRS`] both measured.
pub fn ratios(cells: &[Cell]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let cell = |w: &str, c: Contender, n: usize| {
        cells
            .iter()
            .find(|x| x.workload == w && x.contender == c && x.concurrency == n)
    };
    let mut keys: Vec<(String, usize)> = cells
        .iter()
        .map(|c| (c.workload.clone(), c.concurrency))
        .collect();
    keys.sort();
    keys.dedup();
    for (w, n) in keys {
        for (nums, dens) in RATIO_PAIRS {
            for &num in *nums {
                for &den in *dens {
                    let (Some(a), Some(b)) = (cell(&w, num, n), cell(&w, den, n)) else {
                        continue;
                    };
                    let (Some(sa), Some(sb)) = (a.summary, b.summary) else {
                        continue;
                    };
                    if sb.p50_ms <= 0.0 {
                        continue;
                    }
                    let cpu_ratio = match (a.cpu_per_run, b.cpu_per_run) {
                        (Some(x), Some(y)) if y.total_ms() > 0.0 => {
                            Some(x.total_ms() / y.total_ms())
                        }
                        _ => None,
                    };
                    out.push(Ratio {
                        workload: w.clone(),
                        concurrency: n,
                        numerator: num,
                        denominator: den,
                        p50_ratio: sa.p50_ms / sb.p50_ms,
                        cpu_ratio,
                    });
                }
            }
        }
    }
    out
}
