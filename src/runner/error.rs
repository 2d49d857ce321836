//! [`RunError`]: what can go wrong in a run or in the runner's configuration, and the exit
//! code `stockade run` gives each.

use std::path::PathBuf;

use thiserror::Error;

use super::{exit, uids, RuntimeError, KILL_GRACE};
use crate::containerd::ContainerdError;
use crate::spec::SpecError;

/// Errors of a run (or of the runner's configuration). Each renders as one line.
#[derive(Debug, Error)]
pub enum RunError {
    /// Talking to containerd failed.
    #[error("{0}")]
    Containerd(#[from] ContainerdError),
    /// The image cannot be used; `reason` names it.
    #[error("{reason}")]
    Image {
        /// The image name as the policy gives it.
        name: String,
        /// Why it cannot be used (one line, naming the image).
        reason: String,
    },
    /// The policy cannot be turned into an OCI spec on this host.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// runc could not find the command (exit 127).
    #[error("{command}: command not found")]
    CommandNotFound {
        /// The command as given (the first argument).
        command: String,
        /// containerd's message.
        detail: String,
    },
    /// runc found the command but could not execute it (exit 126).
    #[error("{command}: permission denied (cannot execute)")]
    CommandNotExecutable {
        /// The command as given (the first argument).
        command: String,
        /// containerd's message.
        detail: String,
    },
    /// The run directory (with its FIFOs) could not be made or read.
    #[error("run directory {}: {source}", path.display())]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// containerd went away (or stopped answering) while the task ran; the run's objects are
    /// left for a later reclaim.
    #[error("run {id}: lost containerd during the run ({message}); its leftovers are reclaimed by the next run or `stockade gc`")]
    Lost {
        /// The run's id.
        id: String,
        /// containerd's message.
        message: String,
    },
    /// The task was still reported running [`KILL_GRACE`] after SIGKILL.
    #[error("run {id}: the task did not exit within {:?} of SIGKILL", KILL_GRACE)]
    Unkillable {
        /// The run's id.
        id: String,
    },
    /// The AppArmor profile could not be loaded.
    #[error("apparmor: {0}")]
    AppArmor(String),
    /// A bind source could not be staged, or the sandbox does not see what was checked.
    #[error(transparent)]
    Bind(#[from] crate::bind::BindError),
    /// The sandbox's `oom_score_adj` could not be set from the host.
    #[error("sandbox pid {pid}: setting oom_score_adj to {value} from the host failed: {reason}")]
    OomScoreAdj {
        /// Host pid of the sandbox's pid 1.
        pid: u32,
        /// The value that was to be written.
        value: i32,
        /// What failed.
        reason: String,
    },
    /// The OCI runtime binary is refused.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// No UID of its own could be claimed for the sandbox.
    #[error("sandbox uid: {0}")]
    Uid(#[from] uids::UidError),
    /// The sandbox's writes to host storage could not be bounded.
    #[error("{0}")]
    Disk(#[from] crate::disk::DiskError),
    /// The user namespace of an ID-mapped bind could not be made.
    #[error(transparent)]
    Idmap(#[from] crate::idmap::IdmapError),
    /// The runner's configuration, or a request, is unacceptable; the text says which part.
    #[error("runner: {0}")]
    Config(String),
}

impl RunError {
    /// The exit code `stockade run` uses for this error: 127, 126, or 125.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::CommandNotFound { .. } => exit::EXIT_NOT_FOUND,
            RunError::CommandNotExecutable { .. } => exit::EXIT_NOT_EXECUTABLE,
            _ => exit::EXIT_STOCKADE_FAILED,
        }
    }
}
