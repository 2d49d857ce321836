//! Running a command in a live sandbox, under exactly the sandbox's confinement.
//!
//! The exec's process spec is the container's stored spec's `process` (user, capabilities,
//! no_new_privileges, AppArmor profile, rlimits, oom_score_adj, environment as the base)
//! with the arguments, environment, working directory and terminal replaced
//! ([`process_spec`]). Namespaces, cgroup (its limits hold for the sandbox as a whole, not
//! per exec), seccomp filter, mounts and masked paths are the container's: runc joins the
//! running container. A `user` other than the sandbox's may be asked for, but never UID or
//! GID 0 unless the sandbox's own user is 0.
//!
//! Its stdio goes through FIFOs in a directory of its own in the sandbox's run directory,
//! `exec-<EXEC_ID>/`, removed afterwards with the process's containerd record on every
//! path. Output is pumped and capped as a run's. When the timeout (or a cancel) ends it,
//! SIGKILL goes to the exec'd process alone: processes it started in the background are
//! orphaned to the sandbox's init and keep running, within the sandbox's limits, until
//! they exit, the sandbox stops, or it is removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::ExecProcessRequest;
use oci_spec::runtime::{Process, Spec};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::{Sandbox, SandboxError};
use crate::containerd::{Containerd, TaskStatus};
use crate::runner::engine::{exec_error, next_cancel, sinks, spawn_stdin};
use crate::runner::exit::{self, Outcome};
use crate::runner::output::{pump, Pumped, Reported};
use crate::runner::session::touch_activity;
use crate::runner::{fifo, Cancel, Output, RunError, Stdin, Truncated, DRAIN_GRACE, KILL_GRACE};

/// The type URL containerd expects on a runtime-spec `Process` carried as `Any`.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Prefix of an exec's FIFO directory in the run directory.
pub const EXEC_DIR_PREFIX: &str = "exec-";

/// One command to run in a sandbox.
pub struct ExecRequest {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// `K=V` added to (or replacing in) the sandbox's environment. Default: none.
    pub env: Vec<String>,
    /// Working directory (absolute). Default: the sandbox's.
    pub cwd: Option<String>,
    /// `UID[:GID]` to run as. Default: the sandbox's user.
    pub user: Option<String>,
    /// Default: none (end of file).
    pub stdin: Stdin,
    /// Default: captured.
    pub output: Output,
    /// Allocate a terminal (stdout and stderr arrive merged). Default: no.
    pub tty: bool,
    /// The terminal's size (columns, rows) when it starts. Default: runc's (none set).
    pub console_size: Option<(u16, u16)>,
    /// Window sizes (columns, rows) to set on the terminal as they change. Default: none.
    pub resize: Option<tokio::sync::mpsc::Receiver<(u16, u16)>>,
    /// Default: the policy's timeout.
    pub timeout: Option<Duration>,
    /// Cap on each of stdout and stderr. Default: the policy's.
    pub max_output: Option<u64>,
    /// Default: none.
    pub cancel: Option<Cancel>,
}

impl ExecRequest {
    /// `argv` with every default.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ExecRequest {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            user: None,
            stdin: Stdin::Null,
            output: Output::Capture,
            tty: false,
            console_size: None,
            resize: None,
            timeout: None,
            max_output: None,
            cancel: None,
        }
    }
}

/// What an exec did: the `stockade exec --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    /// The sandbox's id.
    pub id: String,
    /// The exec's id within the sandbox.
    pub exec_id: String,
    /// As for run: the command's code, 124 on timeout, 128+N for signal N.
    pub exit_code: u8,
    /// The signal that ended the command, when its status was 128+N.
    pub signal: Option<i32>,
    /// The exec hit its timeout (exit code 124).
    pub timed_out: bool,
    /// The signal stockade received that made it kill the exec, if that happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<i32>,
    /// Captured stdout (UTF-8, invalid bytes replaced); empty when forwarded.
    pub stdout: String,
    /// Captured stderr; empty when forwarded or with a terminal.
    pub stderr: String,
    /// Which streams lost output to the cap.
    pub truncated: Truncated,
    /// Bytes the command wrote to stdout, kept or not.
    pub stdout_bytes: u64,
    /// Bytes the command wrote to stderr, kept or not.
    pub stderr_bytes: u64,
    /// Host pid the process had.
    pub pid: u32,
    /// From the request to the result, in milliseconds.
    pub duration_ms: f64,
}

/// The process an exec runs: `base` (the sandbox's) with `argv`, the environment with
/// `env` applied, `cwd`, `user` and `terminal` (with its size, columns and rows) replaced.
/// Pure. Refuses an empty command,
/// malformed `K=V`, a relative `cwd`, a malformed user, and UID or GID 0 unless `base`'s
/// user has it.
pub fn process_spec(
    base: &Process,
    argv: &[String],
    env: &[String],
    cwd: Option<&str>,
    user: Option<&str>,
    terminal: Option<(u16, u16)>,
) -> Result<Process, SandboxError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(SandboxError::Invalid {
            field: "command",
            reason: "empty".into(),
        });
    }
    let mut p = base.clone();
    p.set_args(Some(argv.to_vec()));
    p.set_command_line(None);
    p.set_terminal(Some(terminal.is_some()));
    let size = terminal.filter(|&(w, h)| w > 0 && h > 0).map(|(w, h)| {
        oci_spec::runtime::BoxBuilder::default()
            .width(u64::from(w))
            .height(u64::from(h))
            .build()
            .expect("both fields are set")
    });
    p.set_console_size(size);
    let mut vars: Vec<String> = base.env().clone().unwrap_or_default();
    for kv in env {
        let Some((k, _)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(SandboxError::Invalid {
                field: "env",
                reason: format!("`{kv}`: expected K=V"),
            });
        };
        let prefix = format!("{k}=");
        vars.retain(|v| !v.starts_with(&prefix));
        vars.push(kv.clone());
    }
    p.set_env(Some(vars));
    if let Some(dir) = cwd {
        if !dir.starts_with('/') {
            return Err(SandboxError::Invalid {
                field: "workdir",
                reason: format!("`{dir}`: must be an absolute path"),
            });
        }
        p.set_cwd(dir.into());
    }
    if let Some(u) = user {
        let (uid, gid) = parse_user(u, base.user().gid())?;
        let own = base.user();
        if (uid == 0 && own.uid() != 0) || (gid == 0 && own.gid() != 0) {
            return Err(SandboxError::Invalid {
                field: "user",
                reason: format!(
                    "`{u}`: refused: the sandbox runs as {}:{}, and UID or GID 0 is only for a sandbox whose policy makes its user 0",
                    own.uid(),
                    own.gid()
                ),
            });
        }
        let mut new = own.clone();
        new.set_uid(uid);
        new.set_gid(gid);
        new.set_additional_gids(None);
        new.set_username(None);
        p.set_user(new);
    }
    Ok(p)
}

/// `UID[:GID]`, numeric; the GID defaults to `default_gid`.
fn parse_user(u: &str, default_gid: u32) -> Result<(u32, u32), SandboxError> {
    let bad = || SandboxError::Invalid {
        field: "user",
        reason: format!("`{u}`: expected UID[:GID], numeric"),
    };
    let (uid, gid) = match u.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (u, None),
    };
    let uid = uid.parse::<u32>().map_err(|_| bad())?;
    let gid = match gid {
        Some(g) => g.parse::<u32>().map_err(|_| bad())?,
        None => default_gid,
    };
    Ok((uid, gid))
}

/// A fresh exec id: 16 hex digits.
pub(super) fn new_exec_id() -> String {
    let id = crate::runner::new_id();
    id[crate::runner::ID_PREFIX.len()..].to_string()
}

pub(super) async fn run(sb: &Sandbox, req: ExecRequest) -> Result<ExecResult, SandboxError> {
    let t0 = Instant::now();
    let runner = sb.runner();
    let c = runner.containerd().clone();
    let id = sb.id().to_string();
    let state = sb.state().await?;
    if state != TaskStatus::Running {
        return Err(SandboxError::NotRunning {
            id,
            state: format!("{state:?}").to_lowercase(),
        });
    }
    let container = match c.get_container(&id).await {
        Ok(ct) => ct,
        Err(e) if e.is_not_found() => return Err(SandboxError::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: String| SandboxError::CorruptSpec {
        id: id.clone(),
        reason,
    };
    let spec_any = container.spec.ok_or_else(|| corrupt("none".into()))?;
    let spec: Spec = serde_json::from_slice(&spec_any.value).map_err(|e| corrupt(e.to_string()))?;
    let base = spec
        .process()
        .clone()
        .ok_or_else(|| corrupt("no process".into()))?;
    let has_ptys = spec
        .mounts()
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.destination() == Path::new("/dev/pts")));
    if req.tty && !has_ptys {
        return Err(SandboxError::Invalid {
            field: "tty",
            reason: format!(
                "sandbox {id} has no terminal devices; create it with `-t` to exec with a terminal"
            ),
        });
    }
    let process = process_spec(
        &base,
        &req.argv,
        &req.env,
        req.cwd.as_deref(),
        req.user.as_deref(),
        req.tty.then(|| req.console_size.unwrap_or((0, 0))),
    )?;
    let req = match super::exec_fast::try_run(sb, &base, &process, req, t0).await? {
        Ok(result) => return Ok(result),
        Err(req) => *req,
    };
    let process_json = serde_json::to_vec(&process).expect("a process always serializes");

    let exec_id = new_exec_id();
    let run_dir = sb.run_dir();
    let dir_name = format!("{EXEC_DIR_PREFIX}{exec_id}");
    let dir = run_dir.join(&dir_name);
    let state_err = |path: &Path, source| SandboxError::State {
        path: path.to_path_buf(),
        source,
    };
    touch_activity(&run_dir).map_err(|e| state_err(&run_dir, e))?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| state_err(&dir, e))?;
    }
    let mut created = false;
    let r = drive(
        &c,
        &id,
        &exec_id,
        &run_dir,
        &dir_name,
        process_json,
        req,
        sb.record().limits,
        &mut created,
    )
    .await;
    // Every path: the process's record goes, then its FIFO directory.
    if created {
        if let Err(e) = delete_process(c.as_ref(), &id, &exec_id).await {
            tracing::warn!("sandbox {id}: exec {exec_id}: {e}");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("{}: {e}", dir.display());
    }
    let _ = touch_activity(&run_dir);
    let mut result = r?;
    result.duration_ms = (t0.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
    Ok(result)
}

/// Deletes exec process `exec_id`, killing it first if it still runs.
async fn delete_process(c: &dyn Containerd, id: &str, exec_id: &str) -> Result<(), String> {
    match c.delete_process(id, exec_id).await {
        Ok(()) => return Ok(()),
        Err(e) if e.is_not_found() => return Ok(()),
        Err(_) => {}
    }
    let kill = nix::sys::signal::Signal::SIGKILL as u32;
    let waited = async {
        let (w, k) = tokio::join!(
            c.wait_process(id, exec_id),
            c.kill_process(id, exec_id, kill)
        );
        if let Err(e) = k {
            if !e.is_not_found() {
                return Err(e.to_string());
            }
        }
        w.map(drop).map_err(|e| e.to_string())
    };
    match tokio::time::timeout(KILL_GRACE, waited).await {
        Err(_) => return Err(format!("survived SIGKILL for {KILL_GRACE:?}")),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    match c.delete_process(id, exec_id).await {
        Err(e) if !e.is_not_found() => Err(e.to_string()),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    c: &Arc<dyn Containerd>,
    id: &str,
    exec_id: &str,
    run_dir: &Path,
    dir_name: &str,
    process_json: Vec<u8>,
    req: ExecRequest,
    limits: crate::runner::session::SessionLimits,
    created: &mut bool,
) -> Result<ExecResult, SandboxError> {
    let ExecRequest {
        argv,
        stdin,
        output,
        tty,
        resize,
        timeout,
        max_output,
        cancel,
        ..
    } = req;
    let want_stdin = !matches!(stdin, Stdin::Null);
    let (fifos, opened) = fifo::create_fifos(run_dir, dir_name, want_stdin, tty).map_err(|e| {
        SandboxError::State {
            path: run_dir.join(dir_name),
            source: e,
        }
    })?;
    let path = |p: Option<&Path>| {
        p.map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    c.exec_process(ExecProcessRequest {
        container_id: id.to_string(),
        stdin: path(fifos.stdin.as_deref()),
        stdout: path(Some(&fifos.stdout)),
        stderr: path(fifos.stderr.as_deref()),
        terminal: tty,
        spec: Some(prost_types::Any {
            type_url: PROCESS_TYPE_URL.to_string(),
            value: process_json,
        }),
        exec_id: exec_id.to_string(),
    })
    .await
    .map_err(|e| match e.code() {
        Some(tonic::Code::FailedPrecondition | tonic::Code::NotFound) => SandboxError::NotRunning {
            id: id.to_string(),
            state: "stopped".into(),
        },
        _ => e.into(),
    })?;
    *created = true;

    let cap = max_output.unwrap_or(limits.max_output);
    let (out_sink, err_sink) = sinks(output);
    let out_pump = tokio::spawn(pump(opened.stdout, out_sink, cap));
    let err_pump = opened.stderr.map(|r| tokio::spawn(pump(r, err_sink, cap)));
    let abort_all = |wait: &JoinHandle<_>| {
        wait.abort();
        out_pump.abort();
        if let Some(p) = &err_pump {
            p.abort();
        }
    };
    // Wait before Start, so that the exit cannot be missed.
    let (wc, wid, wexec) = (c.clone(), id.to_string(), exec_id.to_string());
    let mut wait: JoinHandle<Result<u32, crate::containerd::ContainerdError>> =
        tokio::spawn(async move { wc.wait_process(&wid, &wexec).await });
    let pid = match c.start_process(id, exec_id).await {
        Ok(pid) => pid,
        Err(e) => {
            abort_all(&wait);
            return Err(exec_error(&argv, e).into());
        }
    };
    // Only now: the shim opens an exec's stdin when it starts it, and a CloseIO before
    // then would be lost (the command would never see end of file).
    let stdin_task = opened.stdin.map(|tx| {
        spawn_stdin(
            c.clone(),
            id.to_string(),
            Some(exec_id.to_string()),
            tx,
            None,
            stdin,
        )
    });
    let resizer = resize.map(|mut rx| {
        let (c, id, exec_id) = (c.clone(), id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                let _ = c.resize_pty(&id, &exec_id, w.into(), h.into()).await;
            }
        })
    });

    let deadline = tokio::time::Instant::now()
        + timeout.unwrap_or(Duration::from_millis(limits.exec_timeout_ms));
    let mut cancel = cancel.as_ref().map(Cancel::subscribe);
    let mut timed_out = false;
    let mut cancelled_by = None;
    let sigkill = nix::sys::signal::Signal::SIGKILL as u32;
    let joined = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = tokio::time::sleep_until(deadline), if !timed_out && cancelled_by.is_none() => {
                timed_out = true;
                kill(c.as_ref(), id, exec_id, sigkill).await?;
            }
            sig = next_cancel(&mut cancel), if cancelled_by.is_none() && !timed_out => {
                cancelled_by = Some(sig);
                kill(c.as_ref(), id, exec_id, sigkill).await?;
            }
        }
    };
    if let Some(r) = resizer {
        r.abort();
    }
    if let Some(s) = stdin_task {
        s.abort();
    }
    let lost = |message: String| {
        SandboxError::Run(RunError::Lost {
            id: id.to_string(),
            message,
        })
    };
    let status = match joined {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(lost(e.to_string())),
        Err(e) => return Err(lost(e.to_string())),
    };
    // Processes it left in the background may hold its output open: read what comes within
    // the grace, then let go.
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        let o = (&mut Box::pin(out_pump)).await.unwrap_or_default();
        let e = match err_pump {
            Some(p) => p.await.unwrap_or_default(),
            None => Pumped::default(),
        };
        (o, e)
    })
    .await;
    let (o, e) = drained.unwrap_or_default();
    Ok(finished(
        id,
        exec_id,
        status,
        timed_out,
        cancelled_by,
        &o,
        &e,
        pid,
    ))
}

/// The result of an exec that has ended, by either path: its status and why it ended,
/// mapped to the exit code the user sees, and its pumped output. `duration_ms` is left for
/// the caller to fill in.
#[allow(clippy::too_many_arguments, reason = "one field of the result each")]
pub(super) fn finished(
    id: &str,
    exec_id: &str,
    status: u32,
    timed_out: bool,
    cancelled_by: Option<i32>,
    o: &Pumped,
    e: &Pumped,
    pid: u32,
) -> ExecResult {
    let outcome = Outcome {
        status,
        timed_out,
        oom_killed: false,
        cancelled_by,
    };
    let out = Reported::of(o, e);
    ExecResult {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        exit_code: exit::exit_code(&outcome),
        signal: exit::signal_of(status),
        timed_out,
        cancelled_by,
        stdout: out.stdout,
        stderr: out.stderr,
        truncated: out.truncated,
        stdout_bytes: out.stdout_bytes,
        stderr_bytes: out.stderr_bytes,
        pid,
        duration_ms: 0.0,
    }
}

/// `signal` to the exec'd process alone.
async fn kill(
    c: &dyn Containerd,
    id: &str,
    exec_id: &str,
    signal: u32,
) -> Result<(), SandboxError> {
    match tokio::time::timeout(KILL_GRACE, c.kill_process(id, exec_id, signal)).await {
        Err(_) => Err(RunError::Unkillable { id: id.to_string() }.into()),
        Ok(Err(e)) if e.is_not_found() => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(())) => Ok(()),
    }
}

/// The environment of `p` as a map (for tests and inspection).
pub fn env_map(p: &Process) -> BTreeMap<String, String> {
    p.env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
