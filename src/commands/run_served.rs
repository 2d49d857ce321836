//! `stockade run` through a running `stockade serve` (see `stockade::runner::served`): the
//! client's side (is the run eligible, the order, waiting for the exit code) and the
//! server's (running an accepted order through the same [`super::run::execute`] a
//! standalone run uses, with the client's descriptors for stdio).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use stockade::containerd::daemon::{expected_address, DaemonPaths};
use stockade::policy::ClientPolicyEnv;
use stockade::pool::service::Place;
use stockade::pool::Pools;
use stockade::runner::handoff::RunHandler;
use stockade::runner::served::{self, RunOrder, ServedRun};
use stockade::runner::{escapes, Cancel, Output, PoolChoice, RunLog, Runner, Stdin};

use super::client_writer::ClientWriter;
use super::run::{CleanupWhen, Console, Job, Local, RunArgs};

/// The live servers that could run `args` exactly as this process would; none when it is
/// not eligible: no terminal (the server has none to give), no published ports (their
/// announcement is this process's), the removal handed off (not `--cleanup inline`), no
/// log asked for beyond warnings (the log lines would be the server's), not
/// `--standalone`. Read once per run: the sockets of `--removal-dir` whose process lives.
pub(super) fn servers(args: &RunArgs) -> Vec<std::path::PathBuf> {
    let eligible = !args.standalone
        && !args.tty
        && args.policy.publish.is_empty()
        && args.cleanup == CleanupWhen::Detach
        && tracing::level_filters::LevelFilter::current() <= tracing::Level::WARN;
    if !eligible {
        return Vec::new();
    }
    stockade::runner::handoff::live_sockets(
        &args.removal_dir,
        std::path::Path::new(stockade::runner::DEFAULT_PROC_ROOT),
    )
}

/// Offers the run to `servers` ([`servers`]); the exit code when one ran it, `None` when
/// none would (the run is then this process's). Signals this process gets while the
/// server runs it cancel the run there.
pub(super) async fn offer(
    args: &RunArgs,
    servers: &[std::path::PathBuf],
    local: &Local,
) -> Result<Option<u8>> {
    let Ok(cwd) = std::env::current_dir() else {
        return Ok(None);
    };
    let order = RunOrder {
        protocol: served::PROTOCOL,
        place: Place {
            address: expected_address(args.runner.address.as_deref(), &DaemonPaths::system()),
            namespace: args.runner.namespace.clone(),
            fifo_root: args.fifo_root.clone(),
            runc_binary: local
                .runtime
                .as_ref()
                .filter(|rb| !rb.default)
                .map(|rb| rb.path.to_string_lossy().into_owned()),
        },
        disk_root: args.disk_root.clone(),
        cwd,
        bind_roots: std::env::var(stockade::bind::BIND_ROOTS_ENV).ok(),
        policy: local.inputs.policy.clone(),
        policy_file: local.inputs.file.clone(),
        overrides: local.inputs.overrides.clone(),
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        json: args.json,
        interactive: args.interactive,
        cold: args.cold,
        pool_dir: args.pool_dir.clone(),
        run_log: (!args.no_run_log).then(|| args.run_log.clone()),
        utf8: escapes::locale_is_utf8(),
    };
    // Signals are caught before the offer, so that one arriving while the server starts the
    // run cancels it there rather than killing this process alone.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let signals = super::run::on_signals(move |sig| tx.send(sig).is_ok())?;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let stdio: [BorrowedFd<'_>; 3] = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    let Some(session) = served::offer(servers, &order, stdio).await else {
        signals.abort();
        return Ok(None);
    };
    tracing::debug!(pid = session.server_pid(), "the run is served");
    let code = session.finish(rx).await;
    signals.abort();
    Ok(Some(code?))
}

/// What `stockade serve` does with an accepted run order: runs it with `runner`, taking
/// sandboxes from `pools` when it keeps them.
pub(crate) fn handler(runner: Runner, pools: Option<Arc<Pools>>) -> RunHandler {
    Arc::new(move |run| {
        let (runner, pools) = (runner.clone(), pools.clone());
        Box::pin(async move { serve_one(runner, pools, run).await })
    })
}

async fn serve_one(runner: Runner, pools: Option<Arc<Pools>>, run: ServedRun) {
    let ServedRun {
        order,
        stdin,
        stdout,
        stderr,
        peer,
        mut control,
    } = run;
    let cancel = Cancel::new();
    let cancels = control.forward_cancels(cancel.clone());
    let stop_stdin = Arc::new(AtomicBool::new(false));
    let (mut console, output) = match client_stdio(&stdout, &stderr, &order, &cancel) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("served run: the client's descriptors: {e}");
            cancels.abort();
            let _ = control.finish(125).await;
            return;
        }
    };
    let code = match run_order(
        &runner,
        pools,
        order,
        peer.uid,
        output,
        stdin,
        &stop_stdin,
        cancel,
        &mut console,
    )
    .await
    {
        Ok(code) => code,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            console.err_line(&format!("stockade: {line}")).await;
            super::super::EXIT_STOCKADE_FAILED
        }
    };
    stop_stdin.store(true, Ordering::Relaxed);
    cancels.abort();
    console.close().await;
    drop((stdout, stderr));
    let _ = control.finish(code).await;
}

#[allow(clippy::too_many_arguments)]
async fn run_order(
    runner: &Runner,
    pools: Option<Arc<Pools>>,
    order: RunOrder,
    uid: u32,
    output: Output,
    stdin: OwnedFd,
    stop_stdin: &Arc<AtomicBool>,
    cancel: Cancel,
    console: &mut Console,
) -> Result<u8> {
    let client = runner
        .containerd()
        .client()
        .context("the server has no containerd client")?
        .clone();
    super::run::report_runtime_to(runner, console).await;
    let env = Arc::new(ClientPolicyEnv {
        cwd: order.cwd.clone(),
        bind_roots: order.bind_roots.clone(),
    });
    let inputs = super::PolicyInputs {
        policy: order.policy,
        file: order.policy_file,
        overrides: order.overrides,
    };
    let checked = {
        let (inputs, env) = (inputs.clone(), env.clone());
        tokio::task::spawn_blocking(move || inputs.check_in(env.as_ref()))
            .await
            .context("validating the policy")??
    };
    let job = Job {
        inputs,
        checked,
        env,
        requested: super::run::requested_from(&order.command, order.entrypoint.as_deref()),
        command: order.command,
        json: order.json,
        tty: false,
        stdin: if order.interactive {
            super::run::fd_chunks(stdin, Some(stop_stdin.clone()))
        } else {
            Stdin::Null
        },
        output,
        cancel,
        choice: PoolChoice {
            cold: order.cold,
            socket_dir: order.pool_dir,
        },
        run_log: match order.run_log {
            Some(path) => RunLog::File { path, uid },
            None => RunLog::Off,
        },
        id: None,
        pools,
    };
    Ok(super::run::execute(runner, &client, job, console)
        .await?
        .code)
}

/// The console and the run's output on the client's stdout and stderr: each through
/// [`escapes::Neutralized`] when it is a terminal, as a standalone run's are; the JSON
/// result (`order.json`) captures the output instead. Every write gives up on a descriptor
/// that takes nothing once the run is cancelled ([`ClientWriter`]).
fn client_stdio(
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    order: &RunOrder,
    cancel: &Cancel,
) -> std::io::Result<(Console, Output)> {
    type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
    let file = |fd: &OwnedFd| -> std::io::Result<ClientWriter> {
        Ok(ClientWriter::new(fd.try_clone()?, cancel.clone()))
    };
    let wrap = |fd: &OwnedFd| -> std::io::Result<Writer> {
        let f = file(fd)?;
        Ok(if rustix::termios::isatty(fd) {
            Box::new(escapes::Neutralized::new(f, order.utf8))
        } else {
            Box::new(f)
        })
    };
    let console = Console::new(Box::new(file(stdout)?), Box::new(file(stderr)?));
    let output = if order.json {
        Output::Capture
    } else {
        Output::Writers {
            stdout: wrap(stdout)?,
            stderr: wrap(stderr)?,
        }
    };
    Ok((console, output))
}
