//! One-shot sandbox runs through containerd's gRPC API: a copy-on-write snapshot on a
//! cached base, a container whose spec comes from the policy, a runc task wired to stdio
//! FIFOs, a timeout, OOM detection, usage figures, a run-log line, and removal of everything
//! the run created on every path.
//!
//! ```no_run
//! use std::path::Path;
//! use stockade::containerd::Client;
//! use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides};
//! use stockade::runner::{Output, RunRequest, Runner};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(Path::new("/run/containerd/containerd.sock"), "stockade").await?;
//! let runner = Runner::builder().client(client).build()?;
//! let overrides = PolicyOverrides { timeout: Some("10s".into()), ..Default::default() };
//! let policy = Policy::default().validate(None, &overrides, &HostPolicyEnv)?;
//! let result = runner
//!     .run(RunRequest::new(policy, ["echo", "hello"]).output(Output::Capture))
//!     .await?;
//! assert_eq!(result.exit_code, 0);
//! assert_eq!(result.stdout, "hello\n");
//! runner.wait_cleanups().await; // before the runtime goes away
//! # Ok(()) }
//! ```
//!
//! Phases of a run, and which of them overlap (see [`Phases`]):
//!
//! ```text
//! resolve image (cached) ─┬─ Snapshots.Prepare ──────┬─ Tasks.Create ─ Tasks.Wait ∥ Tasks.Start
//! build spec, FIFOs       └─ Containers.Create ──────┘     … exit / timeout → Kill / cancel → Kill
//! read usage + OOM from the cgroup ─ drain output ─ result ─ run-log line
//! cleanup (inline, background, or left to the caller): Tasks.Delete ─ Containers.Delete ∥
//!   Snapshots.Remove ─ cgroup leftovers ─ FIFO directory
//! ```

mod builder;
mod cgroup;
mod cleanup;
pub(crate) mod engine;
mod error;
pub mod escapes;
pub mod exit;
pub(crate) mod fifo;
pub mod handoff;
mod images;
pub mod journal;
pub(crate) mod output;
mod pooled;
pub mod runtime;
mod seal;
pub mod served;
pub mod session;
pub mod uids;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::apparmor::LoadContext;
use crate::containerd::Containerd;
use crate::host::HostFacts;
use crate::policy::ValidatedPolicy;
use crate::procfs::ProcStat;
use crate::spec::NotEnforced;

pub use builder::{RunnerBuilder, DEFAULT_APPARMOR_STATE, RUNC_OPTIONS_TYPE_URL};
pub use cgroup::{CgroupFs, Usage};
pub use cleanup::{
    reclaim_crashed, reconcile, remove_run, CleanupTarget, ReconcileOptions, Reconciled,
};
pub use error::RunError;
pub use fifo::{read_owner, write_owner, RunDir, DEFAULT_FIFO_ROOT};
pub use images::{
    BaseImage, BoxFuture, ImageSource, SnapshotImages, StoreImages, REMEMBERED_CHAINS,
};
pub use pooled::{pool_eligible, PoolChoice, Ran};
pub use runtime::{RuntimeBinary, RuntimeError};

/// The containerd runtime every sandbox uses.
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";
/// The snapshotter base images are unpacked into and run snapshots are prepared with.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";
/// Where the cgroup filesystem is mounted.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Where procfs is mounted (the one constant, owned by [`crate::procfs`]).
pub use crate::procfs::DEFAULT_PROC_ROOT;
/// The type URL containerd expects on an OCI spec carried as `Any`.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Every run id starts with this; `gc` touches nothing else.
pub const ID_PREFIX: &str = "stk-";
/// Label: unix time (seconds) the object was created.
pub const LABEL_CREATED: &str = "stockade.created";
/// Label: pid of the stockade process that created the object.
pub const LABEL_OWNER: &str = "stockade.owner";
/// containerd's label that keeps a snapshot from its garbage collector between
/// Snapshots.Prepare and the container that references it; stockade removes it itself.
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";
/// The script pid 1 of a prepared sandbox runs (`/bin/sh -c`, as the policy's user, under
/// the policy's seccomp filter, capabilities and no_new_privs): read one command line from
/// stdin, `exec` it (the run sends `env -i <the spec's environment> <command>`, so the
/// command replaces the shell as pid 1 with exactly the spec's environment; the rest of
/// stdin is the command's). `N` holds a newline, for arguments that contain one. No command line: exit
/// 125.
pub const TRAMPOLINE: &str = "N='\n'; IFS= read -r c || exit 125; eval \"exec $c\"";
/// How long output may keep arriving after the process exited before it is abandoned.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long a killed task may take to be reported gone.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The sandbox's standard input.
pub enum Stdin {
    /// None: reads see end of file.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// Whatever this reader yields, until it ends.
    Reader(Box<dyn AsyncRead + Send + Unpin>),
    /// Chunks sent on this channel, until every sender is dropped (for sources read on a
    /// thread of their own, like a terminal).
    Chunks(tokio::sync::mpsc::Receiver<Vec<u8>>),
}

/// Where the sandbox's stdout and stderr go. Each stream is capped at the policy's
/// `max_output` either way.
pub enum Output {
    /// Kept and returned in [`RunResult::stdout`] / [`RunResult::stderr`].
    Capture,
    /// Forwarded live to this process's stdout and stderr.
    Inherit,
    /// Forwarded live to these writers, each shut down (`poll_shutdown`) when its stream
    /// ends.
    Writers {
        /// Receives the command's stdout (with a terminal, both streams).
        stdout: Box<dyn AsyncWrite + Send + Unpin>,
        /// Receives the command's stderr.
        stderr: Box<dyn AsyncWrite + Send + Unpin>,
    },
}

/// Cancels a run from outside (e.g. when stockade receives SIGINT): the task is killed, the
/// run cleaned up, and the result says which signal ended it. Cloning shares the handle.
#[derive(Clone, Debug)]
pub struct Cancel {
    tx: Arc<tokio::sync::watch::Sender<Option<i32>>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    /// A handle no run has been cancelled through yet.
    pub fn new() -> Cancel {
        Cancel {
            tx: Arc::new(tokio::sync::watch::channel(None).0),
        }
    }

    /// Cancels every run holding this handle, recording `signal` as the reason.
    pub fn cancel(&self, signal: i32) {
        self.tx.send_replace(Some(signal));
    }

    /// The signal a run holding this handle was cancelled with, if it was.
    pub fn reason(&self) -> Option<i32> {
        *self.tx.borrow()
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<i32>> {
        self.tx.subscribe()
    }
}

/// One run: what to run, under which policy, with which stdio.
pub struct RunRequest {
    /// The policy to run under.
    pub policy: ValidatedPolicy,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Run id; `stk-<random>` when absent. Must start with [`ID_PREFIX`].
    pub id: Option<String>,
    /// What the command reads. Default [`Stdin::Null`].
    pub stdin: Stdin,
    /// Where its output goes. Default [`Output::Capture`].
    pub output: Output,
    /// Allocate a pseudo-terminal (stdout and stderr arrive merged on stdout).
    pub terminal: bool,
    /// Cancels the run from outside. Default: none.
    pub cancel: Option<Cancel>,
    /// Where the run's record goes. Default [`RunLog::Runner`].
    pub run_log: RunLog,
    /// The base image of `policy.image` as the caller already resolved it (to merge its
    /// config into the policy), so the run does not ask the image source again. Default:
    /// none, the runner resolves it. Ignored when it names another image.
    pub image: Option<BaseImage>,
}

/// Where a run's record (one JSON line of the run log) goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RunLog {
    /// The runner's run log ([`RunnerBuilder::run_log`]), naming this process's UID as the
    /// caller's. Default.
    #[default]
    Runner,
    /// Nowhere.
    Off,
    /// Appended to `path`, naming `uid` as the caller's (a server running a client's run).
    File {
        /// The run log file.
        path: PathBuf,
        /// The UID of whoever asked for the run.
        uid: u32,
    },
}

impl RunRequest {
    /// A request with no stdin, captured output and no terminal.
    pub fn new<S: Into<String>>(
        policy: ValidatedPolicy,
        args: impl IntoIterator<Item = S>,
    ) -> RunRequest {
        RunRequest {
            policy,
            args: args.into_iter().map(Into::into).collect(),
            id: None,
            stdin: Stdin::Null,
            output: Output::Capture,
            terminal: false,
            cancel: None,
            run_log: RunLog::Runner,
            image: None,
        }
    }

    /// Sets the run id; it must start with [`ID_PREFIX`].
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets what the command reads.
    pub fn stdin(mut self, stdin: Stdin) -> Self {
        self.stdin = stdin;
        self
    }
    /// Sets where its output goes.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }
    /// Allocates a pseudo-terminal, or not.
    pub fn terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }
    /// Lets `cancel` cancel the run.
    pub fn cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = Some(cancel);
        self
    }
    /// Sets where the run's record goes.
    pub fn run_log(mut self, run_log: RunLog) -> Self {
        self.run_log = run_log;
        self
    }
    /// Hands over the base image of the policy's image, already resolved.
    pub fn image(mut self, base: BaseImage) -> Self {
        self.image = Some(base);
        self
    }
}

/// A sandbox made ahead of its run by [`Runner::prepare`]: run directory with its FIFOs,
/// snapshot, container and a started task whose pid 1 (the trampoline) waits for its command.
/// Serializable, so that a pool process can hand it to another process, which runs it with
/// [`Runner::run_prepared`] (opening the FIFOs by path; the giver must keep its own ends
/// open until then, or the shim sees stdin end).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Prepared {
    /// The run id it will have (`stk-<random>`).
    pub id: String,
    /// The image it was made from.
    pub image: BaseImage,
    /// [`ValidatedPolicy::hash`] of the policy it was prepared with.
    pub policy_hash: String,
    /// Its run directory and FIFOs.
    pub fifos: fifo::RunDir,
    /// Host pid of the task's pid 1 (its parent is the task's shim).
    pub pid: u32,
    /// That process's start time (`/proc/<pid>/stat` field 22), which tells it from a later
    /// process reusing the pid. Recorded by the pool; `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// When it was made, unix milliseconds.
    pub created_unix_ms: u64,
    /// Our ends of the FIFOs, when this process opened them.
    #[serde(skip)]
    pub(crate) opened: Option<fifo::Opened>,
}

impl Prepared {
    /// Whether pid 1 still waits for its command line: the process exists under `proc_root`,
    /// is not a zombie, and (when recorded) started when it did. A pooled sandbox whose
    /// trampoline died (killed from outside, say) must not be handed out: the run would
    /// report the trampoline's death as its command's exit.
    pub fn is_waiting(&self, proc_root: &Path) -> bool {
        match ProcStat::read(proc_root, self.pid) {
            Some(
                s @ ProcStat {
                    start_time: Some(start),
                    ..
                },
            ) => !s.has_exited() && self.pid_start.is_none_or(|p| p == start),
            _ => false,
        }
    }

    /// Closes this process's ends of the FIFOs (after another process opened its own).
    pub fn close_fifos(&mut self) {
        self.opened = None;
    }

    /// Opens this process's ends of the FIFOs by path (a sandbox received from another
    /// process). Must run inside a Tokio runtime.
    pub fn open_fifos(&mut self) -> std::io::Result<()> {
        if self.opened.is_none() {
            self.opened = Some(fifo::open(&self.fifos)?);
        }
        Ok(())
    }
}

/// Milliseconds spent in each phase of a run. Phases that overlap are timed separately, so
/// they need not add up to [`RunResult::duration_ms`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Finding the base snapshot of the image (0 when cached).
    pub resolve_image_ms: f64,
    /// Building the spec and creating the FIFOs.
    pub setup_ms: f64,
    /// Snapshots.Prepare (concurrent with create_container).
    pub prepare_snapshot_ms: f64,
    /// Containers.Create (concurrent with prepare_snapshot).
    pub create_container_ms: f64,
    /// Making the sandbox's bounded volumes (see [`crate::disk`]; concurrent with
    /// prepare_snapshot and create_container); absent when it needs none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_ms: Option<f64>,
    /// Making the sandbox's network namespace, veth and rules (see [`crate::network`];
    /// concurrent with prepare_snapshot and create_container); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_ms: Option<f64>,
    /// Tasks.Create: the shim starts and `runc create` sets the sandbox up.
    pub create_task_ms: f64,
    /// Tasks.Start.
    pub start_ms: f64,
    /// From started to the exit being reported.
    pub run_ms: f64,
    /// Reading usage from the cgroup and draining the output.
    pub collect_ms: f64,
    /// Removing task, container, snapshot and FIFOs, when done before the result was
    /// returned ([`CleanupMode::Inline`]); otherwise absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_ms: Option<f64>,
}

/// Which streams lost output to the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Truncated {
    /// Stdout lost output.
    pub stdout: bool,
    /// Stderr lost output.
    pub stderr: bool,
}

/// What a run did: the `stockade run --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The run id.
    pub id: String,
    /// The exit code stockade exits with (see [`exit`]).
    pub exit_code: u8,
    /// The run used a sandbox prepared ahead of time (a pool's), not a cold start.
    pub pooled: bool,
    /// The signal that ended the command, when its status was 128+N.
    pub signal: Option<i32>,
    /// The run hit its timeout (exit code 124).
    pub timed_out: bool,
    /// The sandbox ran out of memory and the kernel killed a process in it.
    pub oom_killed: bool,
    /// The signal stockade received that made it kill the run, if that happened.
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
    /// From the request to the result, in milliseconds.
    pub duration_ms: f64,
    /// How long each step of the run took.
    pub phases: Phases,
    /// What the sandbox used (peak memory, CPU time).
    pub usage: Usage,
    /// The image name as the policy gives it.
    pub image: String,
    /// The image's manifest digest, when the image source knows it.
    pub image_digest: Option<String>,
    /// [`ValidatedPolicy::hash`] of the run's policy.
    pub policy_hash: String,
    /// [`crate::spec::digest`] of the OCI spec the run used.
    pub spec_digest: String,
    /// The OCI runtime binary the shim ran (path, digest, whether it is the default runc);
    /// absent only when the default could not be identified (a warning says why).
    pub runtime: Option<RuntimeBinary>,
    /// The UID the command ran as: a host UID of the sandbox's own unless the policy names
    /// a user (see [`uids`]); inside the user namespace when the policy has one.
    pub uid: u32,
    /// How the sandbox's writes to host storage were bounded (see [`crate::disk`]).
    pub disk: crate::disk::DiskUse,
    /// Protections the policy asked for that this host could not enforce.
    pub not_enforced: Vec<NotEnforced>,
    /// Loosenings the policy asked for.
    pub warnings: Vec<String>,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    /// When the run started, unix milliseconds (the same instant as `started_at`).
    #[serde(skip)]
    pub started_at_unix_ms: u64,
}

/// When the objects of a finished run are removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CleanupMode {
    /// Before `run` returns (the result includes `cleanup_ms`).
    Inline,
    /// On a background task after `run` returns; [`Runner::wait_cleanups`] awaits them.
    #[default]
    Background,
    /// Not at all: the caller removes the run with [`Runner::cleanup`] (or hands it to a
    /// helper process running `stockade gc --run ID`).
    Caller,
}

/// Runs sandboxes. Cheap to clone; clones share the connection, the image cache and the
/// pending cleanups.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    containerd: Arc<dyn Containerd>,
    host: HostFacts,
    apparmor: Option<LoadContext>,
    runtime: String,
    /// The runc shim's options, when a runtime binary other than runc is asked for.
    runtime_options: Option<prost_types::Any>,
    /// The runtime binary runs use, when identified.
    runtime_binary: Option<RuntimeBinary>,
    /// What every run's result warns about the runtime binary.
    runtime_warnings: Vec<String>,
    snapshotter: String,
    fifo_root: PathBuf,
    /// Where the sandboxes' disk images are made (see [`crate::disk`]).
    disk_root: PathBuf,
    cgroups: CgroupFs,
    proc_root: PathBuf,
    /// Whether this process's `oom_score_adj` writes set the sandbox's floor.
    oom_floor: bool,
    /// Where sandbox UIDs are claimed, and from which range.
    uid_claims: PathBuf,
    uid_range: uids::UidRange,
    /// Where and from which range sandbox networks are made.
    network: crate::network::NetConfig,
    /// Per filesystem (device) of a bind source: whether it can be mounted ID-mapped.
    idmap_support: Mutex<HashMap<u64, bool>>,
    images: Arc<dyn ImageSource>,
    run_log: Option<PathBuf>,
    cleanup: CleanupMode,
    pending: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Runner {
    /// A builder with every setting at its default.
    pub fn builder() -> RunnerBuilder {
        RunnerBuilder::default()
    }

    /// The containerd runs are made in.
    pub fn containerd(&self) -> &Arc<dyn Containerd> {
        &self.inner.containerd
    }

    /// The OCI runtime binary runs use, when identified.
    pub fn runtime_binary(&self) -> Option<&RuntimeBinary> {
        self.inner.runtime_binary.as_ref()
    }

    /// Warnings about the runtime binary that every run's result carries.
    pub fn runtime_warnings(&self) -> &[String] {
        &self.inner.runtime_warnings
    }

    /// Where run directories live.
    pub fn fifo_root(&self) -> &Path {
        &self.inner.fifo_root
    }

    /// Where this runner makes sandbox disk images.
    pub fn disk_root(&self) -> &Path {
        &self.inner.disk_root
    }

    /// The procfs root the runner reads.
    pub fn proc_root(&self) -> &Path {
        &self.inner.proc_root
    }

    /// The cgroup filesystem sandboxes' usage is read from.
    pub fn cgroups(&self) -> &CgroupFs {
        &self.inner.cgroups
    }

    /// What the runner's cleanup and reconciliation act on.
    pub fn cleanup_target(&self) -> CleanupTarget {
        CleanupTarget {
            containerd: self.inner.containerd.clone(),
            snapshotter: self.inner.snapshotter.clone(),
            fifo_root: self.inner.fifo_root.clone(),
            cgroups: self.inner.cgroups.clone(),
            uid_claims: self.inner.uid_claims.clone(),
            network: self.inner.network.clone(),
        }
    }

    /// Removes everything run `id` created (idempotent; a running task is killed first).
    pub async fn cleanup(&self, id: &str) -> Result<(), RunError> {
        remove_run(&self.cleanup_target(), id, true).await
    }

    /// Starts removing run `id` in the background (as [`CleanupMode::Background`] does);
    /// [`Runner::wait_cleanups`] waits for it.
    pub async fn remove_later(&self, id: &str) {
        let target = self.cleanup_target();
        let id = id.to_string();
        let mut pending = self.inner.pending.lock().await;
        // A long-lived owner must not keep every finished removal until it drains.
        while pending.try_join_next().is_some() {}
        pending.spawn(async move {
            if let Err(e) = remove_run(&target, &id, true).await {
                tracing::warn!("{e}");
            }
        });
    }

    /// Waits for every background cleanup started so far.
    pub async fn wait_cleanups(&self) {
        let mut set = self.inner.pending.lock().await;
        while set.join_next().await.is_some() {}
    }
}

/// A fresh run id: `stk-` and 16 hex digits of [`crate::ids::random_hex`] (unique across
/// concurrent processes; not a secret).
pub fn new_id() -> String {
    format!("{ID_PREFIX}{}", crate::ids::random_hex(8))
}

#[cfg(test)]
mod tests;
