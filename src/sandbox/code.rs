//! A stateful code interpreter in a sandbox ([`Sandbox::run_code`]): Python whose globals
//! survive between calls, like a notebook kernel.
//!
//! The interpreter is a small Python program shipped with stockade
//! ([`INTERPRETER_SCRIPT`]), a process inside the sandbox, confined like any exec (the
//! sandbox's user, seccomp filter, no capabilities, its cgroup): nothing of its state
//! ever leaves the sandbox. Each call is one exec of the same program as a cell client
//! (`python3 -I -c SCRIPT cell`, the request on its stdin): it connects to the interpreter's
//! Unix socket in the sandbox's `/tmp/.stockade-code/`, starting the interpreter first
//! (detached into a session of its own, orphaned to the sandbox's init) when none answers,
//! hands it the cell, and writes one JSON report. The interpreter runs the cell with its
//! stdout and stderr (file descriptors 1 and 2, so subprocesses' output too) captured and
//! capped at the sandbox's `max_output`, and answers the repr of the last expression and
//! the exception with its traceback.
//!
//! A cell that outlives its timeout is interrupted (SIGINT: KeyboardInterrupt); if its
//! interpreter does not answer within [`GRACE`], the interpreter's process group is killed
//! and a new one started: the outcome says `timed_out` and `restarted`. A cell that ends
//! its interpreter (`os._exit`) gets an [`report::EXITED`] error; the next call starts a
//! new interpreter and says `restarted`.
//!
//! Calls to one sandbox run one at a time (an exclusive `flock` on `<run dir>/code.lock`,
//! so across processes too); calls to different sandboxes run concurrently. Everything
//! the sandbox answers is hostile input: its report is parsed strictly and every text
//! checked against the cap ([`report::parse`]); a refused report is an error
//! ([`SandboxError::Interpreter`]).

pub mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{ExecRequest, Sandbox, SandboxError};
use crate::runner::{RunError, Stdin};

/// The interpreter and its cell client (Python 3.7 or later, standard library only).
pub const INTERPRETER_SCRIPT: &str = include_str!("code/interpreter.py");

/// How long a cell's interpreter has to answer after its KeyboardInterrupt before it is
/// killed and replaced (`GRACE` in [`INTERPRETER_SCRIPT`]).
pub const GRACE: Duration = Duration::from_secs(2);

/// Beyond a cell's timeout and [`GRACE`], how long the cell client may take to start
/// Python, start or kill an interpreter (it waits 5 s at most for a killed one to go)
/// and report; past it the client is killed and the call fails.
pub const CLIENT_ALLOWANCE: Duration = Duration::from_secs(30);

/// The largest cell: 1 MiB of code.
pub const MAX_CODE: usize = 1 << 20;

/// The lock file in a sandbox's run directory that makes its cells take turns.
pub const LOCK_FILE: &str = "code.lock";

/// The file in a sandbox's run directory counting the interpreters started in it.
pub const STARTS_FILE: &str = "code-starts";

/// A language [`Sandbox::run_code`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeLanguage {
    /// Python 3, the sandbox image's `python3` (`"python"` on the wire). The default.
    #[default]
    Python,
}

impl CodeLanguage {
    /// Its name on the wire: `python`.
    pub fn name(self) -> &'static str {
        match self {
            CodeLanguage::Python => "python",
        }
    }

    /// The language called `name` (`python`), or an error naming the field `language`.
    pub fn parse(name: &str) -> Result<CodeLanguage, SandboxError> {
        match name {
            "python" => Ok(CodeLanguage::Python),
            other => Err(SandboxError::Invalid {
                field: "language",
                reason: format!("`{other}`: not a language stockade runs (known: python)"),
            }),
        }
    }
}

/// One cell to run.
#[derive(Debug, Clone)]
pub struct CodeRequest {
    /// The code (at most [`MAX_CODE`] bytes). Its last statement, when an expression, is
    /// the cell's result.
    pub code: String,
    /// Default: Python.
    pub language: CodeLanguage,
    /// How long the cell may run before it is interrupted. Default: the sandbox's exec
    /// timeout, which it may not exceed.
    pub timeout: Option<Duration>,
}

impl CodeRequest {
    /// Python `code` with the default timeout.
    pub fn new(code: impl Into<String>) -> CodeRequest {
        CodeRequest {
            code: code.into(),
            language: CodeLanguage::Python,
            timeout: None,
        }
    }
}

/// What a cell did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeOutcome {
    /// What it wrote to stdout (file descriptor 1), at most the sandbox's `max_output`
    /// bytes (UTF-8; invalid bytes replaced).
    pub stdout: String,
    /// What it wrote to stderr, likewise capped.
    pub stderr: String,
    /// The `repr` of its last statement when that is an expression whose value is not
    /// `None`; none otherwise. Capped likewise.
    pub result: Option<String>,
    /// The exception it raised, if any (a timed-out cell's is `KeyboardInterrupt`).
    pub error: Option<CodeError>,
    /// The cell's number in the interpreter that ran it (1, 2, …; a new interpreter
    /// counts from 1). 0 when the interpreter never took the cell.
    pub execution_count: u64,
    /// The cell outlived its timeout and was interrupted.
    pub timed_out: bool,
    /// The globals of earlier cells are gone: this call started a new interpreter in
    /// place of one that exited, or killed one that did not answer its interrupt.
    pub restarted: bool,
}

/// An exception a cell raised, as Python shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeError {
    /// Its class name (`ZeroDivisionError`); [`report::KILLED`] or [`report::EXITED`]
    /// when the interpreter itself went.
    pub name: String,
    /// `str()` of it (`division by zero`).
    pub value: String,
    /// The formatted traceback, frames of the cell's code only (`<cell N>`).
    pub traceback: String,
}

/// The encoded report a cell's interpreter may answer for a sandbox whose output cap is
/// `max_output`: stdout, stderr and one more cap for the result and the exception, plus
/// 64 KiB for the rest (the interpreter halves its longest text until it fits).
pub fn report_budget(max_output: u64) -> u64 {
    max_output.saturating_mul(3).saturating_add(64 << 10)
}

/// Runs `req` in `sb` (see the module's documentation).
pub(super) async fn run(sb: &Sandbox, req: &CodeRequest) -> Result<CodeOutcome, SandboxError> {
    let limits = sb.record().limits;
    if req.code.len() > MAX_CODE {
        return Err(SandboxError::Invalid {
            field: "code",
            reason: format!("{} bytes, above the limit of {MAX_CODE}", req.code.len()),
        });
    }
    let most = Duration::from_millis(limits.exec_timeout_ms);
    let timeout = req.timeout.unwrap_or(most);
    if timeout.is_zero() || timeout > most {
        return Err(SandboxError::Invalid {
            field: "timeout",
            reason: format!(
                "{timeout:?}: zero or above the sandbox's exec timeout of {} ms",
                limits.exec_timeout_ms
            ),
        });
    }
    let budget = report_budget(limits.max_output);
    let request = serde_json::json!({
        "code": req.code,
        "timeout_ms": timeout.as_millis() as u64,
        "max_output": limits.max_output,
        "budget": budget,
    });
    let run_dir = sb.run_dir();
    let _turn = take_turn(&run_dir).await?;
    let starts_path = run_dir.join(STARTS_FILE);
    let had_one = read_starts(&starts_path) > 0;

    let argv = match req.language {
        CodeLanguage::Python => ["python3", "-I", "-c", INTERPRETER_SCRIPT, "cell"],
    };
    let mut exec = ExecRequest::new(argv);
    exec.stdin = Stdin::Bytes(request.to_string().into_bytes());
    exec.timeout = Some(timeout + GRACE + CLIENT_ALLOWANCE);
    exec.max_output = Some(budget.saturating_add(4096));
    let id = sb.id().to_string();
    let r = match sb.exec(exec).await {
        Ok(r) => r,
        Err(SandboxError::Run(RunError::CommandNotFound { .. })) => {
            return Err(SandboxError::NoInterpreter {
                id,
                language: req.language.name(),
            })
        }
        Err(e) => return Err(e),
    };
    let failed = |reason: String| SandboxError::Interpreter {
        id: id.clone(),
        reason,
    };
    if r.timed_out {
        return Err(failed(format!(
            "its cell client did not report within {:?}",
            timeout + GRACE + CLIENT_ALLOWANCE
        )));
    }
    if r.truncated.stdout {
        return Err(failed(format!("its report is larger than {budget} bytes")));
    }
    if r.exit_code != 0 {
        return Err(failed(format!(
            "its cell client exited {}: {}",
            r.exit_code,
            last_line(&r.stderr)
        )));
    }
    let (outcome, starts) = report::parse(&r.stdout, limits.max_output, GRACE, had_one)
        .map_err(|e| failed(format!("its report is refused: {e}")))?;
    if starts.started > 0 {
        let n = read_starts(&starts_path) + starts.started;
        if let Err(e) = std::fs::write(&starts_path, n.to_string()) {
            tracing::warn!("{}: {e}", starts_path.display());
        }
    }
    Ok(outcome)
}

/// Waits for this sandbox's turn to run a cell: an exclusive `flock` on its
/// [`LOCK_FILE`], held until the returned guard drops.
async fn take_turn(run_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, SandboxError> {
    let path: PathBuf = run_dir.join(LOCK_FILE);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| SandboxError::State {
                path: path.clone(),
                source,
            })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            SandboxError::State {
                path,
                source: errno.into(),
            }
        })
    })
    .await
    .map_err(|e| SandboxError::State {
        path: run_dir.join(LOCK_FILE),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// The count in a [`STARTS_FILE`]; 0 when it is missing or unreadable.
fn read_starts(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The last non-empty line of `s`, at most 300 characters, control characters replaced.
fn last_line(s: &str) -> String {
    let line = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_of_a_hostile_stderr_is_one_short_line() {
        assert_eq!(last_line("a\nSyntaxError: x\n\n"), "SyntaxError: x");
        assert_eq!(last_line(""), "");
        let l = last_line(&format!("{}\x1b[2J", "y".repeat(1000)));
        assert_eq!(l.chars().count(), 300);
        assert!(!last_line("x\x1b[2Jz").contains('\x1b'));
    }

    #[test]
    fn languages_by_name() {
        assert_eq!(CodeLanguage::parse("python").unwrap(), CodeLanguage::Python);
        let e = CodeLanguage::parse("ruby").unwrap_err();
        assert!(
            matches!(
                e,
                SandboxError::Invalid {
                    field: "language",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn the_starts_count_reads_missing_or_garbage_as_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STARTS_FILE);
        assert_eq!(read_starts(&p), 0);
        std::fs::write(&p, "x").unwrap();
        assert_eq!(read_starts(&p), 0);
        std::fs::write(&p, "3").unwrap();
        assert_eq!(read_starts(&p), 3);
    }

    #[tokio::test]
    async fn turns_are_exclusive_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let first = take_turn(d.path()).await.unwrap();
        let dir = d.path().to_path_buf();
        let second = tokio::spawn(async move { take_turn(&dir).await.map(drop) });
        // The second waits on the first: it cannot have the lock while the first holds it.
        let probe = std::fs::File::open(d.path().join(LOCK_FILE)).unwrap();
        assert!(
            nix::fcntl::Flock::lock(probe, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
        );
        drop(first);
        second.await.unwrap().unwrap();
    }

    #[test]
    fn the_script_is_the_one_shipped() {
        // The constants the host relies on are the script's.
        assert!(INTERPRETER_SCRIPT.contains(&format!("GRACE = {:.1}", GRACE.as_secs_f64())));
        assert!(INTERPRETER_SCRIPT.contains("DIR = \"/tmp/.stockade-code\""));
    }
}
