//! What a test scripts and reads back: the RPCs of the seam ([`Op`]), the record of each
//! call ([`Call`]), a scripted answer ([`Reply`]) and what a started task does
//! ([`Behaviour`]).

use std::time::Duration;

#[cfg(doc)]
use super::super::api::Containerd;

/// One RPC of the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`Containerd::prepare_snapshot`].
    PrepareSnapshot,
    /// [`Containerd::stat_snapshot`].
    StatSnapshot,
    /// [`Containerd::remove_snapshot`].
    RemoveSnapshot,
    /// [`Containerd::snapshot_mounts`].
    SnapshotMounts,
    /// [`Containerd::list_snapshots`].
    ListSnapshots,
    /// [`Containerd::create_container`].
    CreateContainer,
    /// [`Containerd::delete_container`].
    DeleteContainer,
    /// [`Containerd::list_containers`].
    ListContainers,
    /// [`Containerd::create_task`].
    CreateTask,
    /// [`Containerd::start_task`].
    StartTask,
    /// [`Containerd::wait_task`].
    WaitTask,
    /// [`Containerd::kill_task`].
    KillTask,
    /// [`Containerd::delete_task`].
    DeleteTask,
    /// [`Containerd::close_stdin`].
    CloseStdin,
    /// [`Containerd::list_tasks`].
    ListTasks,
    /// [`Containerd::get_container`].
    GetContainer,
    /// [`Containerd::get_task`].
    GetTask,
    /// [`Containerd::exec_process`].
    ExecProcess,
    /// [`Containerd::start_process`].
    StartProcess,
    /// [`Containerd::wait_process`].
    WaitProcess,
    /// [`Containerd::kill_process`].
    KillProcess,
    /// [`Containerd::delete_process`].
    DeleteProcess,
    /// [`Containerd::resize_pty`].
    ResizePty,
    /// [`Containerd::close_process_stdin`].
    CloseProcessStdin,
    /// [`Containerd::diff`].
    Diff,
}

/// One recorded call: the RPC and the object it named (a container id or snapshot key,
/// `ID/EXEC_ID` for an exec process; empty for lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which RPC.
    pub op: Op,
    /// The container id or snapshot key it named.
    pub key: String,
}

/// A scripted answer, used instead of the model's.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Fail with this gRPC code and message, changing nothing.
    Fail(tonic::Code, String),
    /// Never answer: the caller's timeout, or dropping the call, ends it.
    Hang,
    /// Answer as the model does, after this long.
    Delay(Duration),
}

impl Reply {
    /// Fail with `code` and a message that says the failure was scripted.
    pub fn fail(code: tonic::Code) -> Reply {
        Reply::Fail(code, "scripted failure".into())
    }
}

/// What a started task does.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Writes `stdout` to its stdout FIFO and exits with `status`, `after` its start.
    Exits {
        /// The exit status.
        status: u32,
        /// How long after its start it exits.
        after: Duration,
        /// What it writes to its stdout FIFO.
        stdout: Vec<u8>,
    },
    /// Runs until it is killed (its status is then 128 + the signal).
    RunsUntilKilled,
}

impl Default for Behaviour {
    /// Exits 0 at once, writing nothing.
    fn default() -> Self {
        Behaviour::Exits {
            status: 0,
            after: Duration::ZERO,
            stdout: Vec::new(),
        }
    }
}
