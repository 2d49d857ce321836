//! A sandbox whose life is one command's, as a Docker container's is: pid 1 is stockade's
//! init running the command as its only child (`-- CMD ARG...`: signals forwarded, exits
//! as the command did), under the same spec as any sandbox's pid 1.
//!
//! [`Sandboxes::create_main`] makes it with the task created but not started, and hands
//! back our ends of its stdio FIFOs ([`MainIo`]): the caller copies the output somewhere
//! ([`super::logs::spawn`] keeps it in the run directory) before [`Sandbox::start`], so
//! nothing is lost. [`Sandbox::wait_main`] waits for the command's exit and records it in
//! the run directory ([`MAIN_FILE`]) with the time and whether the kernel's OOM killer
//! ended it; [`Sandbox::main_state`] reads that record from any process. Execs, copies,
//! stop, kill and remove work as for any sandbox. A stopped main command stays stopped: it
//! is not started again.

use serde::{Deserialize, Serialize};
use tokio::net::unix::pipe;

use super::{CreateRequest, Sandbox, SandboxError, Sandboxes};
use crate::containerd::TaskStatus;
use crate::runner::session::now_ms;

/// The main command's record in the run directory.
pub const MAIN_FILE: &str = "main.json";

/// The command pid 1 runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainProcess {
    /// The command and its arguments (looked up on the policy's `PATH` when the command
    /// holds no `/`). Its environment, working directory and user are the policy's.
    pub argv: Vec<String>,
    /// Give it a terminal of its own (stdout and stderr arrive merged on stdout). Default:
    /// no.
    pub tty: bool,
    /// Give it a stdin FIFO (otherwise its stdin is `/dev/null`). Default: no.
    pub stdin: bool,
}

impl MainProcess {
    /// `argv`, no terminal, no stdin.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> MainProcess {
        MainProcess {
            argv: argv.into_iter().map(Into::into).collect(),
            tty: false,
            stdin: false,
        }
    }
}

/// Our ends of the main command's stdio FIFOs.
#[derive(Debug)]
pub struct MainIo {
    /// Write end of its stdin (when asked for). Dropping it does not close the command's
    /// stdin: [`Sandbox::close_main_stdin`] does.
    pub stdin: Option<pipe::Sender>,
    /// Read end of its stdout (with a terminal, both streams).
    pub stdout: pipe::Receiver,
    /// Absent with a terminal.
    pub stderr: Option<pipe::Receiver>,
}

/// What is known of the main command, as recorded in [`MAIN_FILE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MainState {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// It runs with a terminal.
    pub tty: bool,
    /// When it was started, unix ms; none before.
    #[serde(default)]
    pub started_unix_ms: Option<u64>,
    /// When its exit was seen, unix ms; none before.
    #[serde(default)]
    pub finished_unix_ms: Option<u64>,
    /// Its exit code (128+N when signal N ended it); none before it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer killed a process of the sandbox.
    #[serde(default)]
    pub oom_killed: bool,
}

impl MainState {
    fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{MAIN_FILE}.{}", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).expect("a state always serializes"),
        )?;
        std::fs::rename(&tmp, dir.join(MAIN_FILE))
    }
}

impl Sandboxes {
    /// Creates a sandbox whose pid 1 runs `main` (see the module documentation); the task
    /// is created, not started. On failure nothing of it is left.
    pub async fn create_main(
        &self,
        req: CreateRequest,
        main: MainProcess,
    ) -> Result<(Sandbox, MainIo), SandboxError> {
        if main.argv.first().is_none_or(String::is_empty) {
            return Err(SandboxError::Invalid {
                field: "command",
                reason: "empty".into(),
            });
        }
        let (sb, opened) = self.create_with(req, Some(&main)).await?;
        let state = MainState {
            argv: main.argv.clone(),
            tty: main.tty,
            ..MainState::default()
        };
        let dir = sb.run_dir();
        let recorded = state.write(&dir);
        let Some(opened) = opened.filter(|_| recorded.is_ok()) else {
            let source = recorded
                .err()
                .unwrap_or_else(|| std::io::Error::other("the main command has no FIFOs"));
            if let Err(e) = sb.clone().remove(true).await {
                tracing::warn!("{e}");
            }
            return Err(SandboxError::State { path: dir, source });
        };
        let io = MainIo {
            stdin: opened.stdin,
            stdout: opened.stdout,
            stderr: opened.stderr,
        };
        Ok((sb, io))
    }
}

impl Sandbox {
    /// Its main command's record; `None` for a sandbox made without one.
    pub fn main_state(&self) -> Option<MainState> {
        let bytes = std::fs::read(self.run_dir().join(MAIN_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts its main command. Refused unless the task is created and not yet started.
    pub async fn start(&self) -> Result<(), SandboxError> {
        let Some(mut state) = self.main_state() else {
            return Err(SandboxError::Invalid {
                field: "start",
                reason: format!("sandbox {} has no main command", self.id()),
            });
        };
        let status = self.state().await?;
        if status != TaskStatus::Created {
            return Err(SandboxError::NotStartable {
                id: self.id().to_string(),
                state: state_name(status).to_string(),
            });
        }
        let argv = crate::init::args(&state.argv);
        self.runner()
            .containerd()
            .start_task(self.id())
            .await
            .map_err(|e| crate::runner::engine::exec_error(&argv, e))?;
        state.started_unix_ms = Some(now_ms());
        let dir = self.run_dir();
        state
            .write(&dir)
            .map_err(|source| SandboxError::State { path: dir, source })
    }

    /// Waits until its main command has exited (at once when it has) and returns its
    /// record, written with the exit code, the time and whether the OOM killer struck.
    pub async fn wait_main(&self) -> Result<MainState, SandboxError> {
        let mut state = self.main_state().ok_or_else(|| SandboxError::Invalid {
            field: "wait",
            reason: format!("sandbox {} has no main command", self.id()),
        })?;
        let status = match self.runner().containerd().wait_task(self.id()).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                return self
                    .main_state()
                    .filter(|s| s.exit_code.is_some())
                    .ok_or_else(|| SandboxError::NotFound(self.id().to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        if state.exit_code.is_some() {
            return Ok(state);
        }
        let usage = self
            .runner()
            .cgroups()
            .usage(&crate::spec::cgroups_path(self.id()));
        state.exit_code = Some(status as i32);
        state.oom_killed = usage.oom_kills.unwrap_or(0) > 0;
        state.finished_unix_ms = Some(now_ms());
        let dir = self.run_dir();
        state
            .write(&dir)
            .map_err(|source| SandboxError::State { path: dir, source })?;
        Ok(state)
    }

    /// Closes its main command's stdin (it reads end of file).
    pub async fn close_main_stdin(&self) -> Result<(), SandboxError> {
        match self.runner().containerd().close_stdin(self.id()).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Sets the size of its main command's terminal (columns, rows).
    pub async fn resize_main(&self, width: u16, height: u16) -> Result<(), SandboxError> {
        match self
            .runner()
            .containerd()
            .resize_pty(self.id(), "", width.into(), height.into())
            .await
        {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A task status as a word: `created`, `running`, `stopped`, `unknown`.
pub fn state_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Created => "created",
        TaskStatus::Running => "running",
        TaskStatus::Stopped => "stopped",
        TaskStatus::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests;
