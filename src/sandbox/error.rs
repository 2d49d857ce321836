//! The errors of the sandbox front door, in classes a server maps to HTTP statuses.

use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::containerd::ContainerdError;
use crate::runner::RunError;

/// What went wrong, in classes a server maps to HTTP statuses ([`SandboxError::kind`]).
/// Each renders as one line.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// No sandbox has this id or name.
    #[error("no such sandbox: {0}")]
    NotFound(String),
    /// Another sandbox holds the name.
    #[error("the name `{name}` is taken by sandbox {id}")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The sandbox that has it.
        id: String,
    },
    /// The sandbox is not running (stopped, or its init died).
    #[error("sandbox {id} is not running (state: {state})")]
    NotRunning {
        /// The sandbox's id.
        id: String,
        /// What containerd says of its init (e.g. `stopped`).
        state: String,
    },
    /// Files cannot be copied into or out of the sandbox in this state (paused, or a
    /// tmpfs of a stopped sandbox).
    #[error("sandbox {id}: files cannot be copied (state: {state})")]
    CopyNotRunning {
        /// The sandbox's id.
        id: String,
        /// What containerd says of its init (e.g. `paused`).
        state: String,
    },
    /// A copy into a read-only place (the root filesystem, a read-only bind).
    #[error("sandbox {id}: {path}: {what}")]
    ReadOnly {
        /// The sandbox's id.
        id: String,
        /// The path inside the sandbox.
        path: String,
        /// Why it is read-only.
        what: String,
    },
    /// Copying files into or out of it failed (see [`crate::files::FilesError::class`]).
    #[error("sandbox {id}: {source}")]
    Files {
        /// The sandbox's id.
        id: String,
        /// What failed.
        source: crate::files::FilesError,
    },
    /// Its main command cannot be started (it was started before).
    #[error("sandbox {id} cannot be started (state: {state}); its main command runs once")]
    NotStartable {
        /// The sandbox's id.
        id: String,
        /// What containerd says of its init.
        state: String,
    },
    /// The sandbox runs and removal was not forced.
    #[error("sandbox {id} is running; stop it first or remove it with force")]
    Running {
        /// The sandbox's id.
        id: String,
    },
    /// A field of the request is unacceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The container's stored spec cannot be read back.
    #[error("sandbox {id}: its stored spec is unreadable: {reason}")]
    CorruptSpec {
        /// The sandbox's id.
        id: String,
        /// Why it could not be read back.
        reason: String,
    },
    /// A file of the sandbox's state could not be read or written.
    #[error("{}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The sandbox's image has no interpreter for a language of
    /// [`super::Sandbox::run_code`].
    #[error("sandbox {id} has no {language} interpreter (no `python3` in its image; use an image with it, e.g. stockade/python)")]
    NoInterpreter {
        /// The sandbox's id.
        id: String,
        /// The language asked for.
        language: &'static str,
    },
    /// The sandbox's interpreter failed or answered what stockade refuses.
    #[error("sandbox {id}: the code interpreter failed: {reason}")]
    Interpreter {
        /// The sandbox's id.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// The init could not be installed.
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    /// Talking to containerd failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// From the run path (making the sandbox, a command not found or not executable).
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The class of a [`SandboxError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input (400).
    Invalid,
    /// No such sandbox (404).
    NotFound,
    /// The sandbox's state forbids it (409).
    Conflict,
    /// The sandbox's configuration forbids it: a read-only place (403).
    Forbidden,
    /// stockade or containerd failed (500).
    Internal,
}

impl SandboxError {
    /// Its class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::NotFound(_) => ErrorKind::NotFound,
            SandboxError::NameTaken { .. }
            | SandboxError::NotRunning { .. }
            | SandboxError::Running { .. }
            | SandboxError::NotStartable { .. }
            | SandboxError::CopyNotRunning { .. }
            | SandboxError::NoInterpreter { .. }
            | SandboxError::Interpreter { .. } => ErrorKind::Conflict,
            SandboxError::Files { source, .. } => match source.class() {
                crate::files::ErrorClass::NotFound => ErrorKind::NotFound,
                crate::files::ErrorClass::Invalid => ErrorKind::Invalid,
                crate::files::ErrorClass::Conflict => ErrorKind::Conflict,
                crate::files::ErrorClass::Internal => ErrorKind::Internal,
            },
            SandboxError::Invalid { .. } => ErrorKind::Invalid,
            SandboxError::ReadOnly { .. } => ErrorKind::Forbidden,
            SandboxError::Run(
                RunError::CommandNotFound { .. }
                | RunError::CommandNotExecutable { .. }
                | RunError::Bind(crate::bind::BindError::NotWritable { .. }),
            ) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        }
    }

    /// The exit code the CLI uses: 127 or 126 for a command not found or not executable,
    /// 125 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            SandboxError::Run(e) => e.exit_code(),
            _ => crate::runner::exit::EXIT_STOCKADE_FAILED,
        }
    }
}
