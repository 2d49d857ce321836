//! `stockade run`: run one command in a new sandbox and exit with its exit code.
//!
//! The user gets the exit code when this process exits, so the removal of the finished
//! run's task, container and snapshot (≈25 ms of RPCs) is handed on once the output is
//! out: to a running pool service or `stockade serve` when one takes it
//! (`stockade::runner::handoff`), else to a detached helper (`stockade gc --run ID
//! --take-over`); the taker records itself as the run's owner, and if it dies too, the
//! next run or `stockade gc` reclaims the run.
//! `--cleanup inline` removes it before exiting instead.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use stockade::containerd::daemon::{connect_or_start, DaemonPaths};
use stockade::images::config_merge::Requested;
use stockade::images::ImageConfig;
use stockade::policy::{HostPolicyEnv, PolicyEnv, ValidatedPolicy};
use stockade::runner::{
    escapes, journal::DEFAULT_RUN_LOG, reclaim_crashed, BaseImage, Cancel, CleanupMode, Output,
    ReconcileOptions, RunError, RunLog, RunRequest, Runner, Stdin, StoreImages, DEFAULT_FIFO_ROOT,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: crate::cli::PolicyArgs,
    /// Print one JSON result document (exit code, output, timings, usage, digests) instead
    /// of streaming the output.
    #[arg(long)]
    pub json: bool,
    /// Forward stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal (stdout and stderr arrive merged).
    #[arg(short = 't', long)]
    pub tty: bool,
    #[command(flatten)]
    pub runner: crate::cli::RunnerArgs,
    /// Append one JSON line per run to FILE (the run log; `--audit-log` is its old name,
    /// still accepted).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_RUN_LOG, alias = "audit-log")]
    pub run_log: PathBuf,
    /// Do not write the run log (overrides --run-log; `--no-audit-log` is its old name,
    /// still accepted).
    #[arg(long, alias = "no-audit-log")]
    pub no_run_log: bool,
    /// Run in this process even when a `stockade serve` could run it (by default a running
    /// server that sees the same files and uses the same containerd runs it, with the same
    /// results and exit code).
    #[arg(long, env = "STOCKADE_STANDALONE", value_parser = clap::builder::BoolishValueParser::new())]
    pub standalone: bool,
    /// Start from the base snapshot, never from a sandbox a pool (`stockade pool fill`)
    /// prepared ahead of time.
    #[arg(long)]
    pub cold: bool,
    /// Directory of the pool sockets asked for a prepared sandbox.
    #[arg(long, value_name = "DIR", default_value = stockade::pool::DEFAULT_SOCKET_DIR, hide = true)]
    pub pool_dir: PathBuf,
    /// Directory of the sockets of long-lived stockade processes (`stockade serve`) that
    /// take a finished run's removal.
    #[arg(long, value_name = "DIR", default_value = stockade::runner::handoff::DEFAULT_REMOVAL_DIR, hide = true)]
    pub removal_dir: PathBuf,
    /// When the finished run's objects are removed: after exit by a detached helper, or
    /// before exit.
    #[arg(long, value_enum, default_value_t = CleanupWhen::Detach, hide = true)]
    pub cleanup: CleanupWhen,
    /// Parent of the per-run FIFO directories.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_FIFO_ROOT, hide = true)]
    pub fifo_root: PathBuf,
    /// Where sandbox disk images are made.
    #[arg(long, value_name = "DIR", default_value = stockade::disk::DEFAULT_DISK_ROOT, hide = true)]
    pub disk_root: PathBuf,
    /// Run CMD instead of the image's ENTRYPOINT, and without the image's CMD (`""`: no
    /// entrypoint, only the command after `--`).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// The command and its arguments [default: the image's ENTRYPOINT and CMD]. A command
    /// given replaces the image's CMD and keeps its ENTRYPOINT.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CleanupWhen {
    Detach,
    Inline,
}

pub async fn run(args: RunArgs) -> Result<u8> {
    // `-vv` logs where a run's time goes outside the phases its result reports.
    let t0 = std::time::Instant::now();
    let since = move || format!("{:.2} ms", t0.elapsed().as_secs_f64() * 1e3);
    // A running `stockade serve` runs it when it can run it exactly as this process would.
    let servers = super::run_served::servers(&args);
    let local = if servers.is_empty() {
        None
    } else {
        let local = local_inputs(&args, false).await?;
        if let Some(code) = super::run_served::offer(&args, &servers, &local).await? {
            tracing::debug!(at = since(), "served");
            return Ok(code);
        }
        Some(local)
    };
    // The policy (seccomp profile included) and the host probe are read on a blocking
    // thread while the connection to containerd is made.
    // A runtime binary asked for is checked and hashed there too, before anything is
    // created (the default one is identified by the runner, from containerd's PATH).
    let daemon_paths = DaemonPaths::system();
    let client = connect_or_start(
        args.runner.address.as_deref(),
        &args.runner.namespace,
        &daemon_paths,
    );
    let (local, client) = match local {
        Some(local) => {
            let host = tokio::task::spawn_blocking(super::doctor::host_facts_for_spec);
            let (host, client) = tokio::join!(host, client);
            let host = host.context("probing the host")??;
            (
                Ok(Local {
                    host: Some(host),
                    ..local
                }),
                client,
            )
        }
        None => tokio::join!(local_inputs(&args, true), client),
    };
    let (local, client) = (local?, client?);
    tracing::debug!(
        at = since(),
        "policy read, host probed, containerd connected"
    );
    let host = local.host.context("the host was not probed")?;
    let mut builder = Runner::builder().client(client.clone()).host(host);
    if let Some(rb) = local.runtime.clone() {
        builder = builder.runtime_binary(rb);
    }
    let runner = builder
        .images(std::sync::Arc::new(StoreImages::default()))
        .fifo_root(&args.fifo_root)
        .disk_root(&args.disk_root)
        .run_log((!args.no_run_log).then(|| args.run_log.clone()))
        .cleanup(match args.cleanup {
            CleanupWhen::Detach => CleanupMode::Caller,
            CleanupWhen::Inline => CleanupMode::Inline,
        })
        .build()?;

    let mut console = Console::stdio();
    report_runtime_to(&runner, &mut console).await;

    // Leftovers of crashed runs: a directory scan, and RPCs only when one is found.
    let target = runner.cleanup_target();
    let reclaim =
        tokio::spawn(async move { reclaim_crashed(&target, &ReconcileOptions::default()).await });

    let cancel = Cancel::new();
    let signals = watch_signals(cancel.clone())?;
    // Published ports are said on stderr as soon as they listen (a HOSTPORT of 0 is chosen
    // then).
    let publishes = !local.checked.network_rules.publish.is_empty();
    let id = publishes.then(stockade::runner::new_id);
    let announce = id.clone().map(|id| {
        let dir = args.fifo_root.join(&id);
        tokio::spawn(async move {
            let limit = std::time::Duration::from_secs(600);
            for p in stockade::network::publish::wait_published(&dir, None, limit).await {
                eprintln!("stockade: published {p}");
            }
        })
    });
    let job = Job {
        inputs: local.inputs,
        checked: local.checked,
        env: std::sync::Arc::new(HostPolicyEnv),
        requested: requested(&args),
        command: args.command.clone(),
        json: args.json,
        tty: args.tty,
        stdin: if args.interactive {
            stdin_chunks()
        } else {
            Stdin::Null
        },
        output: if args.json {
            Output::Capture
        } else {
            forwarded(args.tty)
        },
        cancel,
        choice: stockade::runner::PoolChoice {
            cold: args.cold,
            socket_dir: args.pool_dir.clone(),
        },
        run_log: RunLog::Runner,
        id,
        pools: None,
    };
    let done = execute(&runner, &client, job, &mut console).await;
    tracing::debug!(at = since(), "run finished");
    signals.abort();
    if let Some(a) = announce {
        a.abort();
    }
    let done = done?;
    if let (Some((id, pool_socket)), CleanupWhen::Detach) = (&done.finished, args.cleanup) {
        hand_off_cleanup(&runner, id, pool_socket.as_deref(), &args).await;
        tracing::debug!(at = since(), "removal handed off");
    }
    // Leftovers found at start are removed before exit (rare; usually nothing to wait for).
    if let Ok(r) = reclaim.await {
        for (id, why) in &r.failed {
            tracing::warn!("reclaiming crashed run {id}: {why}");
        }
    }
    tracing::debug!(at = since(), "done");
    Ok(done.code)
}

/// What a run reads before it meets containerd: the runtime binary asked for (checked and
/// hashed), the policy file and flags (checked), and (`probe`) the host.
pub(crate) struct Local {
    pub runtime: Option<stockade::runner::RuntimeBinary>,
    pub inputs: super::PolicyInputs,
    pub checked: ValidatedPolicy,
    /// `None` until probed.
    pub host: Option<stockade::host::HostFacts>,
}

async fn local_inputs(args: &RunArgs, probe: bool) -> Result<Local> {
    let policy_args = args.policy.clone();
    let requested = args.runner.runc_binary.clone();
    tokio::task::spawn_blocking(move || {
        let runtime = super::requested_runtime(requested.as_deref())?;
        let inputs = super::policy_inputs(&policy_args)?;
        let checked = inputs.check()?;
        let host = if probe {
            Some(super::doctor::host_facts_for_spec()?)
        } else {
            None
        };
        anyhow::Ok(Local {
            runtime,
            inputs,
            checked,
            host,
        })
    })
    .await
    .context("reading the policy")?
}

/// `--entrypoint` and the command, as the image's config is merged with them.
pub(crate) fn requested(args: &RunArgs) -> Requested {
    requested_from(&args.command, args.entrypoint.as_deref())
}

pub(crate) fn requested_from(command: &[String], entrypoint: Option<&str>) -> Requested {
    Requested {
        command: command.to_vec(),
        entrypoint: entrypoint.map(|e| {
            Some(e.to_string())
                .into_iter()
                .filter(|e| !e.is_empty())
                .collect()
        }),
    }
}

/// Where a run's own messages and its JSON result go: this process's stdout and stderr,
/// or a served client's.
pub(crate) struct Console {
    out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    err: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
}

impl Console {
    pub(crate) fn stdio() -> Console {
        Console::new(Box::new(tokio::io::stdout()), Box::new(tokio::io::stderr()))
    }

    pub(crate) fn new(
        out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
        err: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    ) -> Console {
        Console { out, err }
    }

    /// Writes `line` and a newline to stdout, flushed.
    pub(crate) async fn out_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let _ = self.out.write_all(format!("{line}\n").as_bytes()).await;
        let _ = self.out.flush().await;
    }

    /// Writes `line` and a newline to stderr, flushed.
    pub(crate) async fn err_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let _ = self.err.write_all(format!("{line}\n").as_bytes()).await;
        let _ = self.err.flush().await;
    }

    /// Flushes and closes both streams.
    pub(crate) async fn close(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.out.shutdown().await;
        let _ = self.err.shutdown().await;
    }
}

/// The runner's runtime binary logged (`-v`) and its warnings written, one line each.
pub(crate) async fn report_runtime_to(runner: &Runner, console: &mut Console) {
    for line in super::runtime_report(runner) {
        console.err_line(&line).await;
    }
}

/// One run as `stockade run` makes it, standalone or served.
pub(crate) struct Job {
    pub inputs: super::PolicyInputs,
    /// `inputs` validated.
    pub checked: ValidatedPolicy,
    /// The filesystem as the caller sees it, for validating again after the image's
    /// config is merged.
    pub env: std::sync::Arc<dyn PolicyEnv + Send + Sync>,
    pub requested: Requested,
    /// The command after `--`.
    pub command: Vec<String>,
    pub json: bool,
    pub tty: bool,
    pub stdin: Stdin,
    pub output: Output,
    pub cancel: Cancel,
    pub choice: stockade::runner::PoolChoice,
    pub run_log: RunLog,
    /// The run's id, when the caller needs it first (published ports).
    pub id: Option<String>,
    /// The pools this process keeps (a server's): a sandbox of the one for the run's
    /// policy is taken first, before any pool service's.
    pub pools: Option<std::sync::Arc<stockade::pool::Pools>>,
}

/// A run's end: the exit code and, when it finished, its id and the pool service its
/// sandbox came from (for the removal's hand-off).
pub(crate) struct Done {
    pub code: u8,
    pub finished: Option<(String, Option<PathBuf>)>,
}

/// Merges the image's config into the policy, runs (pooled or cold) and writes the run's
/// messages (or its JSON result) to `console`.
pub(crate) async fn execute(
    runner: &Runner,
    client: &stockade::containerd::Client,
    job: Job,
    console: &mut Console,
) -> Result<Done> {
    let Job {
        inputs,
        checked,
        env,
        requested,
        command,
        json,
        tty,
        stdin,
        output,
        cancel,
        choice,
        run_log,
        id,
        pools,
    } = job;
    // The image's ENTRYPOINT, CMD, ENV, WORKDIR and USER, merged by the one rule.
    // The run is handed the image resolved here, so it is read from containerd once.
    let (policy, argv, base) = match stockade::images::resolve(client, inputs.image()).await {
        Ok(image) => {
            let (policy, argv) =
                merged(inputs, checked, &image.config, &requested, env, console).await?;
            (policy, argv, Some(BaseImage::from(&image)))
        }
        // An image that cannot be resolved fails the run in the runner, as every run's
        // failure does (one line, exit 125, and its run log line).
        Err(e) if !command.is_empty() => {
            tracing::debug!("image config: {e}");
            (checked, command.clone(), None)
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!("image config merged");
    let mut req = RunRequest::new(policy, argv.clone())
        .stdin(stdin)
        .output(output)
        .terminal(tty)
        .cancel(cancel)
        .run_log(run_log);
    req.id = id;
    req.image = base;
    // A pool of this process's first (made for this policy on its first run), then the pool
    // services, then cold.
    let kept = pools
        .filter(|_| stockade::runner::pool_eligible(&req, &choice))
        .and_then(|pools| pools.for_policy(&req.policy))
        .and_then(|pool| {
            let snapshot = req.image.as_ref().map(|b| b.snapshot.as_str());
            pool.take_held(snapshot).map(|p| (pool, p))
        });
    let outcome = match kept {
        Some((pool, p)) => {
            let r = runner.run_prepared(p, req).await;
            pool.run_ended();
            r.map(|result| stockade::runner::Ran {
                result,
                pool_socket: None,
            })
        }
        None => runner.run_pooled_or_cold(req, &choice).await,
    };
    match outcome {
        Ok(stockade::runner::Ran {
            result,
            pool_socket,
        }) => {
            if json {
                console
                    .out_line(&serde_json::to_string_pretty(&result)?)
                    .await;
            } else {
                for n in &result.not_enforced {
                    tracing::info!("not enforced on this host: {}: {}", n.protection, n.reason);
                }
                if result.timed_out {
                    console
                        .err_line(&format!("stockade: {}: timed out, killed", argv[0]))
                        .await;
                } else if result.oom_killed {
                    console
                        .err_line(&format!("stockade: {}: killed: out of memory", argv[0]))
                        .await;
                }
                if result.truncated.stdout || result.truncated.stderr {
                    console
                        .err_line("stockade: output truncated at --max-output")
                        .await;
                }
            }
            for w in result.warnings.iter().filter(|w| w.starts_with("run log")) {
                console.err_line(&format!("stockade: warning: {w}")).await;
            }
            Ok(Done {
                code: result.exit_code,
                finished: Some((result.id, pool_socket)),
            })
        }
        Err(e @ (RunError::CommandNotFound { .. } | RunError::CommandNotExecutable { .. })) => {
            console.err_line(&format!("stockade: {e}")).await;
            Ok(Done {
                code: e.exit_code(),
                finished: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The policy and command with the image's config merged in; the policy validated again
/// (in `env`) only when the image changed it (`checked` is the policy validated without
/// it). Warnings go to `console`.
async fn merged(
    inputs: super::PolicyInputs,
    checked: ValidatedPolicy,
    config: &ImageConfig,
    requested: &Requested,
    env: std::sync::Arc<dyn PolicyEnv + Send + Sync>,
    console: &mut Console,
) -> Result<(ValidatedPolicy, Vec<String>)> {
    let before = inputs.policy.clone();
    let (inputs, argv, warnings) = inputs.merge_quiet(config, Some(requested))?;
    for w in &warnings {
        console.err_line(&format!("stockade: warning: {w}")).await;
    }
    let policy = if inputs.policy == before {
        checked
    } else {
        tokio::task::spawn_blocking(move || inputs.check_in(env.as_ref()))
            .await
            .context("validating the policy")??
    };
    for w in &policy.warnings {
        console.err_line(&format!("stockade: warning: {w}")).await;
    }
    Ok((policy, argv))
}

/// Where forwarded output goes: stockade's stdout and stderr, each through
/// [`escapes::Neutralized`] when it is a terminal and `-t` was not given (with `-t` the
/// sandbox owns a terminal of its own, and the user asked for its control sequences).
pub(crate) fn forwarded(tty: bool) -> Output {
    use std::io::IsTerminal;
    let (out, err) = (
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    );
    if tty || !(out || err) {
        return Output::Inherit;
    }
    let utf8 = escapes::locale_is_utf8();
    fn wrap<W>(w: W, filter: bool, utf8: bool) -> Box<dyn tokio::io::AsyncWrite + Send + Unpin>
    where
        W: tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        if filter {
            Box::new(escapes::Neutralized::new(w, utf8))
        } else {
            Box::new(w)
        }
    }
    Output::Writers {
        stdout: wrap(tokio::io::stdout(), out, utf8),
        stderr: wrap(tokio::io::stderr(), err, utf8),
    }
}

/// SIGINT / SIGTERM / SIGHUP to stockade cancel the run: the sandbox is killed and removed
/// and stockade exits 128+N.
pub(crate) fn watch_signals(cancel: Cancel) -> Result<tokio::task::JoinHandle<()>> {
    on_signals(move |sig| {
        cancel.cancel(sig);
        false
    })
}

/// Calls `each` with every SIGINT, SIGTERM or SIGHUP this process gets, for as long as it
/// returns true.
pub(crate) fn on_signals(
    mut each: impl FnMut(i32) -> bool + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = int.recv() => libc_signal::SIGINT,
                _ = term.recv() => libc_signal::SIGTERM,
                _ = hup.recv() => libc_signal::SIGHUP,
            };
            if !each(sig) {
                return;
            }
        }
    }))
}

mod libc_signal {
    use nix::sys::signal::Signal;
    pub const SIGINT: i32 = Signal::SIGINT as i32;
    pub const SIGTERM: i32 = Signal::SIGTERM as i32;
    pub const SIGHUP: i32 = Signal::SIGHUP as i32;
}

/// Reads this process's stdin on a thread of its own (a blocked read there does not keep
/// the process from exiting) and hands the chunks to the run.
pub(crate) fn stdin_chunks() -> Stdin {
    use std::os::fd::AsFd;
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd_chunks(fd, None),
        // No stdin to read: the command sees end of file, as it would after a failed read.
        Err(_) => Stdin::Null,
    }
}

/// Reads `fd` on a thread of its own and hands the chunks to the run, until end of file,
/// an error, or (with `stop`) the flag being set: the thread then polls, so that it ends
/// within 200 ms of it even when `fd` never reaches end of file (a client's terminal).
pub(crate) fn fd_chunks(
    fd: std::os::fd::OwnedFd,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> Stdin {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::sync::atomic::Ordering;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(stop) = &stop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut fds = [PollFd::new(&fd, PollFlags::IN)];
                match poll(&mut fds, Some(&tick)) {
                    Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            match rustix::io::read(&fd, &mut buf) {
                Err(rustix::io::Errno::INTR) => continue,
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Stdin::Chunks(rx)
}

/// Hands the finished run's removal on: to a long-lived stockade process that takes it (the
/// pool service the sandbox came from, `stockade serve`, any pool service:
/// [`Runner::hand_off_removal`]), else to `stockade gc --run ID --take-over` started
/// detached (own process group, no stdio) and recorded as the run's owner. If neither
/// works, removes the run here.
async fn hand_off_cleanup(
    runner: &Runner,
    id: &str,
    pool_socket: Option<&std::path::Path>,
    args: &RunArgs,
) {
    if let Some(socket) = runner
        .hand_off_removal(id, pool_socket, &args.removal_dir, &args.pool_dir)
        .await
    {
        tracing::debug!(
            "removal of {id} handed to the process at {}",
            socket.display()
        );
        return;
    }
    let client = runner.containerd();
    match super::spawn_run_owner(
        &["gc", "--run", id, "--take-over"],
        client.as_ref(),
        &args.fifo_root,
        id,
    ) {
        Ok(pid) => tracing::debug!("removal of {id} handed to cleanup helper {pid}"),
        Err(e) => {
            tracing::warn!("starting the cleanup helper: {e}; cleaning up inline");
            if let Err(e) = runner.cleanup(id).await {
                tracing::warn!("{e}");
            }
        }
    }
}
