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
use stockade::policy::ValidatedPolicy;
use stockade::runner::{
    escapes, journal::DEFAULT_RUN_LOG, reclaim_crashed, Cancel, CleanupMode, Output,
    ReconcileOptions, RunError, RunRequest, Runner, Stdin, StoreImages, DEFAULT_FIFO_ROOT,
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
    // The policy (seccomp profile included) and the host probe are read on a blocking
    // thread while the connection to containerd is made.
    // A runtime binary asked for is checked and hashed there too, before anything is
    // created (the default one is identified by the runner, from containerd's PATH).
    let policy_args = args.policy.clone();
    let requested = args.runner.runc_binary.clone();
    let local = tokio::task::spawn_blocking(move || {
        let runtime = super::requested_runtime(requested.as_deref())?;
        let inputs = super::policy_inputs(&policy_args)?;
        let checked = inputs.check()?;
        let host = super::doctor::host_facts_for_spec()?;
        anyhow::Ok((inputs, checked, host, runtime))
    });
    let daemon_paths = DaemonPaths::system();
    let client = connect_or_start(
        args.runner.address.as_deref(),
        &args.runner.namespace,
        &daemon_paths,
    );
    let (local, client) = tokio::join!(local, client);
    let (inputs, checked, host, runtime) = local.context("reading the policy")??;
    let client = client?;
    tracing::debug!(
        at = since(),
        "policy read, host probed, containerd connected"
    );
    // The image's ENTRYPOINT, CMD, ENV, WORKDIR and USER, merged by the one rule.
    let requested = Requested {
        command: args.command.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            vec![e.clone()]
                .into_iter()
                .filter(|e| !e.is_empty())
                .collect()
        }),
    };
    let (policy, argv) = match stockade::images::resolve(&client, inputs.image()).await {
        Ok(image) => merged(inputs, checked, &image.config, &requested).await?,
        // An image that cannot be resolved fails the run in the runner, as every run's
        // failure does (one line, exit 125, and its run log line).
        Err(e) if !args.command.is_empty() => {
            tracing::debug!("image config: {e}");
            (checked, args.command.clone())
        }
        Err(e) => return Err(e.into()),
    };
    tracing::debug!(at = since(), "image config merged");
    let mut builder = Runner::builder().client(client).host(host);
    if let Some(rb) = runtime {
        builder = builder.runtime_binary(rb);
    }
    let runner = builder
        .images(std::sync::Arc::new(StoreImages))
        .fifo_root(&args.fifo_root)
        .disk_root(&args.disk_root)
        .run_log((!args.no_run_log).then(|| args.run_log.clone()))
        .cleanup(match args.cleanup {
            CleanupWhen::Detach => CleanupMode::Caller,
            CleanupWhen::Inline => CleanupMode::Inline,
        })
        .build()?;

    super::report_runtime(&runner);

    // Leftovers of crashed runs: a directory scan, and RPCs only when one is found.
    let target = runner.cleanup_target();
    let reclaim =
        tokio::spawn(async move { reclaim_crashed(&target, &ReconcileOptions::default()).await });

    let cancel = Cancel::new();
    let signals = watch_signals(cancel.clone())?;
    let stdin = if args.interactive {
        stdin_chunks()
    } else {
        Stdin::Null
    };
    let output = if args.json {
        Output::Capture
    } else {
        forwarded(args.tty)
    };
    let publishes = !policy.network_rules.publish.is_empty();
    let mut req = RunRequest::new(policy, argv.clone())
        .stdin(stdin)
        .output(output)
        .terminal(args.tty)
        .cancel(cancel);
    // Published ports are said on stderr as soon as they listen (a HOSTPORT of 0 is chosen
    // then).
    let announce = publishes.then(|| {
        let id = stockade::runner::new_id();
        let dir = args.fifo_root.join(&id);
        req.id = Some(id);
        tokio::spawn(async move {
            let limit = std::time::Duration::from_secs(600);
            for p in stockade::network::publish::wait_published(&dir, None, limit).await {
                eprintln!("stockade: published {p}");
            }
        })
    });
    let choice = stockade::runner::PoolChoice {
        cold: args.cold,
        socket_dir: args.pool_dir.clone(),
    };
    let outcome = runner.run_pooled_or_cold(req, &choice).await;
    tracing::debug!(at = since(), "run finished");
    signals.abort();
    if let Some(a) = announce {
        a.abort();
    }

    let code = match outcome {
        Ok(stockade::runner::Ran {
            result,
            pool_socket,
        }) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                for n in &result.not_enforced {
                    tracing::info!("not enforced on this host: {}: {}", n.protection, n.reason);
                }
                if result.timed_out {
                    eprintln!("stockade: {}: timed out, killed", argv[0]);
                } else if result.oom_killed {
                    eprintln!("stockade: {}: killed: out of memory", argv[0]);
                }
                if result.truncated.stdout || result.truncated.stderr {
                    eprintln!("stockade: output truncated at --max-output");
                }
            }
            for w in result.warnings.iter().filter(|w| w.starts_with("run log")) {
                eprintln!("stockade: warning: {w}");
            }
            if args.cleanup == CleanupWhen::Detach {
                hand_off_cleanup(&runner, &result.id, pool_socket.as_deref(), &args).await;
                tracing::debug!(at = since(), "removal handed off");
            }
            result.exit_code
        }
        Err(e @ (RunError::CommandNotFound { .. } | RunError::CommandNotExecutable { .. })) => {
            eprintln!("stockade: {e}");
            e.exit_code()
        }
        Err(e) => return Err(e.into()),
    };
    // Leftovers found at start are removed before exit (rare; usually nothing to wait for).
    if let Ok(r) = reclaim.await {
        for (id, why) in &r.failed {
            tracing::warn!("reclaiming crashed run {id}: {why}");
        }
    }
    tracing::debug!(at = since(), "done");
    Ok(code)
}

/// The policy and command with the image's config merged in; the policy validated again
/// only when the image changed it (`checked` is the policy validated without it).
async fn merged(
    inputs: super::PolicyInputs,
    checked: ValidatedPolicy,
    config: &ImageConfig,
    requested: &Requested,
) -> Result<(ValidatedPolicy, Vec<String>)> {
    let before = inputs.policy.clone();
    let (inputs, argv) = inputs.merge(config, Some(requested))?;
    if inputs.policy == before {
        for w in &checked.warnings {
            eprintln!("stockade: warning: {w}");
        }
        return Ok((checked, argv));
    }
    let policy = tokio::task::spawn_blocking(move || inputs.validate())
        .await
        .context("validating the policy")??;
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
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        let sig = tokio::select! {
            _ = int.recv() => libc_signal::SIGINT,
            _ = term.recv() => libc_signal::SIGTERM,
            _ = hup.recv() => libc_signal::SIGHUP,
        };
        cancel.cancel(sig);
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
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
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
