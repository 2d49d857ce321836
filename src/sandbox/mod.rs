//! Long-lived sandboxes: the front door ([`Sandboxes`]) and the handle to one live sandbox
//! ([`Sandbox`]): create → exec (any number) → put / get files → kill / stop → remove;
//! inspect; list; cells of Python in an interpreter that keeps its globals ([`code`]).
//!
//! A sandbox's pid 1 is stockade's init holding it open ([`crate::init`]), made by the
//! same path as a pooled sandbox ([`Runner`]'s), under the same spec: its own host UID, no
//! capabilities, NoNewPrivs, seccomp, AppArmor, and cgroup limits for the sandbox as a
//! whole. Execs run under that spec's process (see [`exec`]).
//!
//! Nothing lives only in a process's memory: a sandbox is found from its run directory
//! (its [`SessionRecord`], its last activity) and containerd (its task's state), so any
//! later stockade process can drive it. Lifetime and idle timeout are enforced by whoever
//! runs [`Sandboxes::keep`] (the CLI starts a detached keeper process for it; a long-lived
//! owner can run it in-process); crash reclaim and `stockade gc` keep a session within its
//! deadlines whose keeper died, and remove one that expired or whose init is gone.
//!
//! ```no_run
//! use std::path::Path;
//! use stockade::containerd::Client;
//! use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides};
//! use stockade::runner::Runner;
//! use stockade::sandbox::{CreateRequest, ExecRequest, Sandboxes};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(Path::new("/run/containerd/containerd.sock"), "stockade").await?;
//! let sandboxes = Sandboxes::new(Runner::builder().client(client).build()?);
//! let policy = Policy::default().validate(None, &PolicyOverrides::default(), &HostPolicyEnv)?;
//! let sandbox = sandboxes.create(CreateRequest::new(policy)).await?;
//! sandbox.exec(ExecRequest::new(["sh", "-c", "echo 1 > /tmp/n"])).await?;
//! let r = sandbox.exec(ExecRequest::new(["cat", "/tmp/n"])).await?;
//! assert_eq!(r.stdout, "1\n");
//! // Files in and out as tar streams (`docker cp`'s rules; see `copy`).
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut h = tar::Header::new_gnu();
//! h.set_size(3);
//! h.set_mode(0o644);
//! tar.append_data(&mut h, "in.txt", &b"hi\n"[..])?;
//! sandbox.put("/tmp/", std::io::Cursor::new(tar.into_inner()?)).await?;
//! let out = std::fs::File::create("/tmp/in.tar")?;
//! sandbox.get("/tmp/in.txt", out, false).await?;
//! sandbox.remove(true).await?;
//! # Ok(()) }
//! ```

pub mod code;
pub mod copy;
mod error;
pub mod exec;
pub mod exec_fast;
mod keeper;
mod lifecycle;
pub mod logs;
pub mod main_process;
pub mod names;
pub mod stopped;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::containerd::TaskStatus;
use crate::policy::ValidatedPolicy;
use crate::procfs::ProcStat;
use crate::runner::engine::Pid1;
use crate::runner::session::{self, SessionLimits, SessionRecord};
use crate::runner::{remove_run, Runner, Usage};

pub use code::{CodeError, CodeLanguage, CodeOutcome, CodeRequest};
pub use copy::PutMode;
pub use error::{ErrorKind, SandboxError};
pub use exec::{ExecRequest, ExecResult};
pub use keeper::KEEPER_POLL;
pub use main_process::{MainIo, MainProcess, MainState};

/// Label on a session's container and snapshot.
pub const LABEL_SESSION: &str = "stockade.session";
/// Label: the session's name.
pub const LABEL_NAME: &str = "stockade.name";
/// Label: the session's lifetime in seconds.
pub const LABEL_LIFETIME: &str = "stockade.lifetime";
/// Label: the session's idle timeout in seconds.
pub const LABEL_IDLE_TIMEOUT: &str = "stockade.idle-timeout";

/// A new sandbox.
pub struct CreateRequest {
    /// The policy the sandbox runs under.
    pub policy: ValidatedPolicy,
    /// A name to find it by besides its id. Default: none.
    pub name: Option<String>,
    /// Hard lifetime from creation. Default: none (until removed).
    pub lifetime: Option<Duration>,
    /// Removed after no exec for this long. Default: none.
    pub idle_timeout: Option<Duration>,
    /// Labels of the caller's, on the container and in [`SandboxInfo`]; keys may not start
    /// with `stockade.` or `containerd.io`. Default: none.
    pub labels: BTreeMap<String, String>,
    /// Let execs have a terminal: the sandbox gets a devpts of its own holding at most
    /// [`crate::spec::TERMINAL_PTYS`] ptys, as a run with a terminal does. Default: no
    /// (no devpts at all; an exec with a terminal is refused).
    pub tty: bool,
}

impl CreateRequest {
    /// A request with no name, no deadlines and no labels.
    pub fn new(policy: ValidatedPolicy) -> CreateRequest {
        CreateRequest {
            policy,
            name: None,
            lifetime: None,
            idle_timeout: None,
            labels: BTreeMap::new(),
            tty: false,
        }
    }
}

/// One sandbox as [`Sandbox::inspect`] and [`Sandboxes::list`] report it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    /// The sandbox's id.
    pub id: String,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// What containerd says of its init.
    pub state: TaskStatus,
    /// Host pid of its init.
    pub pid: u32,
    /// The image name as the policy gives it.
    pub image: String,
    /// RFC 3339 UTC.
    pub created: String,
    /// When it was created, unix milliseconds.
    pub created_unix_ms: u64,
    /// The last exec's start or end, unix ms; none before the first.
    pub last_activity_unix_ms: Option<u64>,
    /// When the lifetime ends, unix ms; none without a lifetime.
    pub expires_unix_ms: Option<u64>,
    /// The idle timeout, milliseconds; none without one.
    pub idle_timeout_ms: Option<u64>,
    /// [`ValidatedPolicy::hash`] of its policy.
    pub policy_hash: String,
    /// [`crate::spec::digest`] of its OCI spec.
    pub spec_digest: String,
    /// The UID its processes run as.
    pub uid: u32,
    /// Its limits, as execs apply them.
    pub limits: SessionLimits,
    /// Peak memory and CPU time of the sandbox as a whole so far.
    pub usage: Usage,
    /// The caller's labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// Protections its policy asked for that this host could not enforce.
    pub not_enforced: Vec<crate::spec::NotEnforced>,
    /// Its network, when stockade made one (a mode with an interface).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInfo>,
}

/// A sandbox's network as `inspect` and `ls` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    /// Its network mode.
    pub mode: crate::policy::NetworkMode,
    /// Its address on its veth.
    pub address: std::net::Ipv4Addr,
    /// The group network it is a member of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its published ports on the host's loopback.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<crate::network::publish::Published>,
}

/// Builds and finds sandboxes. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    runner: Runner,
    init: InitSource,
}

/// Where a sandbox's init comes from.
#[derive(Debug, Clone)]
enum InitSource {
    /// Installed by [`crate::init::install`] into this directory at each create (a no-op
    /// when it is already there).
    Install(PathBuf),
    /// Already installed at this path by the host's administrator (or a test).
    Installed(PathBuf),
}

impl Sandboxes {
    /// The front door over `runner` (its containerd, host facts, image source, run
    /// directories and UID claims), installing the init in [`crate::init::DEFAULT_DIR`].
    pub fn new(runner: Runner) -> Sandboxes {
        Sandboxes {
            runner,
            init: InitSource::Install(PathBuf::from(crate::init::DEFAULT_DIR)),
        }
    }

    /// Installs the init under `dir` instead of [`crate::init::DEFAULT_DIR`] (root-owned,
    /// writable by nobody else).
    pub fn init_dir(mut self, dir: impl Into<PathBuf>) -> Sandboxes {
        self.init = InitSource::Install(dir.into());
        self
    }

    /// Uses the init already installed at `path` (it must be [`crate::init::BINARY`], in a
    /// directory only root can change) instead of installing it.
    pub fn installed_init(mut self, path: impl Into<PathBuf>) -> Sandboxes {
        self.init = InitSource::Installed(path.into());
        self
    }

    /// The runner under it.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Creates a sandbox and starts its init. On failure nothing of it is left (objects,
    /// run directory, UID, name).
    pub async fn create(&self, req: CreateRequest) -> Result<Sandbox, SandboxError> {
        self.create_with(req, None).await.map(|(sb, _)| sb)
    }

    /// [`Sandboxes::create`], with pid 1 the init holding the sandbox open or, given
    /// `main`, running that command (created, not started; see [`main_process`]), and our
    /// ends of its stdio FIFOs.
    pub(crate) async fn create_with(
        &self,
        req: CreateRequest,
        main: Option<&main_process::MainProcess>,
    ) -> Result<(Sandbox, Option<crate::runner::fifo::Opened>), SandboxError> {
        let CreateRequest {
            policy,
            name,
            lifetime,
            idle_timeout,
            labels,
            tty,
        } = req;
        if let Some(n) = &name {
            names::validate(n)?;
        }
        for k in labels.keys() {
            if k.is_empty() || k.starts_with("stockade.") || k.starts_with("containerd.io") {
                return Err(SandboxError::Invalid {
                    field: "label",
                    reason: format!(
                        "`{k}`: keys starting with `stockade.` or `containerd.io` are reserved"
                    ),
                });
            }
        }
        for (field, d) in [("lifetime", lifetime), ("idle timeout", idle_timeout)] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(SandboxError::Invalid {
                    field,
                    reason: "must be more than zero".into(),
                });
            }
        }
        let init_path = match &self.init {
            InitSource::Install(dir) => crate::init::install(dir)?.path,
            InitSource::Installed(path) => path.clone(),
        };
        let id = crate::runner::new_id();
        let root = self.runner.fifo_root().to_path_buf();
        if let Some(n) = &name {
            names::claim(&root, n, &id)?;
        }
        let mut object_labels: HashMap<String, String> = labels.clone().into_iter().collect();
        object_labels.insert(LABEL_SESSION.into(), "true".into());
        if let Some(n) = &name {
            object_labels.insert(LABEL_NAME.into(), n.clone());
        }
        if let Some(l) = lifetime {
            object_labels.insert(LABEL_LIFETIME.into(), l.as_secs().to_string());
        }
        if let Some(i) = idle_timeout {
            object_labels.insert(LABEL_IDLE_TIMEOUT.into(), i.as_secs().to_string());
        }
        let made = self
            .runner
            .make_sandbox(
                &policy,
                id.clone(),
                object_labels,
                match main {
                    Some(m) => Pid1::Main {
                        host_path: &init_path,
                        argv: &m.argv,
                        tty: m.tty,
                        stdin: m.stdin,
                    },
                    None => Pid1::Init {
                        host_path: &init_path,
                        ptys: tty,
                    },
                },
            )
            .await;
        let mut made = match made {
            Ok(m) => m,
            Err(e) => {
                if let Some(n) = &name {
                    names::release(&root, n, &id);
                }
                return Err(e.into());
            }
        };
        let opened = made.fifos.take().map(|(_, o)| o);
        let record = SessionRecord {
            id: id.clone(),
            name: name.clone(),
            created_unix_ms: made.created_unix_ms,
            lifetime_ms: lifetime.map(|d| d.as_millis() as u64),
            idle_timeout_ms: idle_timeout.map(|d| d.as_millis() as u64),
            pid: made.pid,
            pid_start: ProcStat::read(self.runner.proc_root(), made.pid).and_then(|s| s.start_time),
            image: made.base.name.clone(),
            policy_hash: made.policy_hash.clone(),
            spec_digest: made.spec_digest.clone(),
            uid: made.uid,
            limits: SessionLimits {
                memory_bytes: policy.limits.memory,
                cpu_millis: policy.limits.cpu_millis,
                pids: policy.limits.pids,
                exec_timeout_ms: policy.limits.timeout.as_millis() as u64,
                max_output: policy.limits.max_output,
            },
            labels,
            not_enforced: made.not_enforced,
        };
        let dir = root.join(&id);
        if let Err(source) = record.write(&dir) {
            if let Err(e) = self.runner.cleanup(&id).await {
                tracing::warn!("{e}");
            }
            if let Some(n) = &name {
                names::release(&root, n, &id);
            }
            return Err(SandboxError::State { path: dir, source });
        }
        let sb = Sandbox {
            sandboxes: self.clone(),
            record,
        };
        Ok((sb, opened))
    }

    /// The sandbox with this id or name.
    pub async fn get(&self, id_or_name: &str) -> Result<Sandbox, SandboxError> {
        let root = self.runner.fifo_root();
        let id = if id_or_name.starts_with(crate::runner::ID_PREFIX) {
            id_or_name.to_string()
        } else {
            names::holder(root, id_or_name)
                .ok_or_else(|| SandboxError::NotFound(id_or_name.to_string()))?
        };
        // Only a plain run id names a directory under the root.
        if id.contains('/') || id.contains("..") {
            return Err(SandboxError::NotFound(id_or_name.to_string()));
        }
        let record = SessionRecord::read(&root.join(&id))
            .ok_or_else(|| SandboxError::NotFound(id_or_name.to_string()))?;
        Ok(Sandbox {
            sandboxes: self.clone(),
            record,
        })
    }

    /// Every sandbox with a run directory here, oldest first.
    pub async fn list(&self) -> Result<Vec<SandboxInfo>, SandboxError> {
        let root = self.runner.fifo_root();
        let mut records: Vec<SessionRecord> = match std::fs::read_dir(root) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(crate::runner::ID_PREFIX)
                })
                .filter_map(|e| SessionRecord::read(&e.path()))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(SandboxError::State {
                    path: root.to_path_buf(),
                    source,
                })
            }
        };
        records.sort_by_key(|r| (r.created_unix_ms, r.id.clone()));
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let sb = Sandbox {
                sandboxes: self.clone(),
                record,
            };
            match sb.inspect().await {
                Ok(i) => out.push(i),
                // Removed meanwhile.
                Err(SandboxError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Enforces the lifetime and idle timeout of sandbox `id`: sleeps until its nearest
    /// deadline (looking again at least every [`KEEPER_POLL`]) and removes it when one has
    /// passed. Returns why it removed it, or `None` when the sandbox went otherwise or has
    /// no deadline to enforce. A stopped sandbox is kept until a deadline passes, as a
    /// stopped container is.
    pub async fn keep(&self, id: &str) -> Result<Option<session::Expiry>, SandboxError> {
        keeper::keep(&self.runner, id).await
    }
}

/// One live sandbox.
#[derive(Clone)]
pub struct Sandbox {
    sandboxes: Sandboxes,
    record: SessionRecord,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("record", &self.record)
            .finish()
    }
}

impl Sandbox {
    /// Its id (`stk-…`).
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Its name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.record.name.as_deref()
    }

    /// How it was made.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// Host pid of its init (while it runs).
    pub fn task_pid(&self) -> u32 {
        self.record.pid
    }

    /// Its root filesystem as the host reaches it while it runs (`/proc/<pid>/root`): where
    /// a file copy opens its root ([`crate::files::open_root`]).
    pub fn root_dir(&self) -> PathBuf {
        self.runner()
            .proc_root()
            .join(self.record.pid.to_string())
            .join("root")
    }

    /// Sets its lifetime, counted from its creation, and writes it to its record; whoever
    /// keeps its deadlines ([`Sandboxes::keep`]) reads the record again within
    /// [`KEEPER_POLL`]. Refuses a zero lifetime.
    pub fn set_lifetime(&mut self, lifetime: Duration) -> Result<(), SandboxError> {
        if lifetime.is_zero() {
            return Err(SandboxError::Invalid {
                field: "lifetime",
                reason: "must be more than zero".into(),
            });
        }
        self.record.lifetime_ms = Some(lifetime.as_millis() as u64);
        let dir = self.run_dir();
        self.record
            .write(&dir)
            .map_err(|source| SandboxError::State { path: dir, source })
    }

    /// Its run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.runner().fifo_root().join(&self.record.id)
    }

    fn runner(&self) -> &Runner {
        &self.sandboxes.runner
    }

    /// What containerd says of its init.
    pub async fn state(&self) -> Result<TaskStatus, SandboxError> {
        match self.runner().containerd().get_task(self.id()).await {
            Ok(t) => Ok(t.status),
            Err(e) if e.is_not_found() => match self.run_dir().join(session::SESSION_FILE).exists()
            {
                true => Ok(TaskStatus::Stopped),
                false => Err(SandboxError::NotFound(self.id().to_string())),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a command in it (see [`exec`]).
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResult, SandboxError> {
        exec::run(self, req).await
    }

    /// Runs a cell of code in its interpreter, which keeps its globals between calls
    /// (see [`code`]). Calls to one sandbox take turns.
    pub async fn run_code(&self, req: &CodeRequest) -> Result<CodeOutcome, SandboxError> {
        code::run(self, req).await
    }

    /// Extracts the tar stream `archive` at the sandbox path `dst` (`docker cp` rules and
    /// the hardening of [`crate::files::put`]), every entry owned by the sandbox's user,
    /// within the limits of [`copy`]. The sandbox may be created, running or stopped
    /// (see [`copy`] for what a stopped one shows).
    pub async fn put<R: std::io::Read + Send + 'static>(
        &self,
        dst: &str,
        archive: R,
    ) -> Result<crate::files::PutSummary, SandboxError> {
        copy::put(self, dst, archive, PutMode::SandboxUser).await
    }

    /// [`Sandbox::put`], with the owners of `mode` (`cp -a` keeps the archive's).
    pub async fn put_as<R: std::io::Read + Send + 'static>(
        &self,
        dst: &str,
        archive: R,
        mode: PutMode,
    ) -> Result<crate::files::PutSummary, SandboxError> {
        copy::put(self, dst, archive, mode).await
    }

    /// What the sandbox path `path` is (its last component not followed), as `docker cp`
    /// asks before it copies.
    pub async fn stat(&self, path: &str) -> Result<crate::files::PathStat, SandboxError> {
        copy::stat(self, path).await
    }

    /// Writes the file or directory `src` of the sandbox to `out` as a tar stream
    /// ([`crate::files::get`]; `follow_link` follows `src` when it is a symbolic link, as
    /// `docker cp -L`), within the limits of [`copy`]. The sandbox may be created, running
    /// or stopped.
    pub async fn get<W: std::io::Write + Send + 'static>(
        &self,
        src: &str,
        out: W,
        follow_link: bool,
    ) -> Result<crate::files::GetSummary, SandboxError> {
        copy::get(self, src, out, follow_link).await
    }
}

/// Removes the session of `record` and releases its name.
async fn remove(runner: &Runner, record: &SessionRecord) -> Result<(), SandboxError> {
    remove_run(&runner.cleanup_target(), &record.id, true).await?;
    if let Some(n) = &record.name {
        names::release(runner.fifo_root(), n, &record.id);
    }
    Ok(())
}
