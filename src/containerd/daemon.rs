//! stockade's embedded private containerd.
//!
//! When no containerd answers at the resolved address (and none was named explicitly),
//! stockade starts Debian's `/usr/bin/containerd` with a generated config of its own: its own
//! root, state directory, socket, pidfile and log file, all given by [`DaemonPaths`] so tests
//! run fully private daemons under a tempdir. The daemon outlives the invocation that started
//! it (new session, stdio to the log file) and is reused by later ones: the pidfile plus a
//! Version RPC on the socket say whether it is alive, and a lock file keeps two concurrent
//! invocations from starting two daemons. `stockade daemon stop` ends it by PID, after
//! checking its cmdline (under [`DaemonPaths::proc_root`]) shows it really is this daemon.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use super::{resolve_address, Client, ContainerdError};
use crate::procfs;

mod config;
pub mod cri;
mod process;
mod scan;
pub use config::render_config;
pub use cri::CriConfig;
use process::{is_alive, our_pid, stop_pid};
pub use process::{is_our_daemon, stop};
pub use scan::{kill_shims, mounts_under, shim_of, shims_for, unmount_under, Shim};

/// The containerd binary Debian's `containerd` package installs.
pub const DEFAULT_BINARY: &str = "/usr/bin/containerd";
/// How long to wait for a freshly started daemon to answer the Version RPC.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before sending SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Plugins the private daemon disables: only the CRI plugin (Kubernetes' interface, which
/// stockade never uses). Disabling the unused snapshotters (aufs, btrfs, devmapper, zfs) and
/// tracing as well was measured and did not speed up start-up beyond noise (median time to
/// a Version answer about 95 ms either way over 8 alternating runs), so they stay enabled.
pub const DISABLED_PLUGINS: &[&str] = &["io.containerd.grpc.v1.cri"];

/// Where the private daemon keeps everything. Every path is a parameter so that tests can
/// run a daemon of their own under a tempdir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonPaths {
    /// The containerd binary to start.
    pub binary: PathBuf,
    /// containerd's persistent root (metadata, content store, snapshots).
    pub root: PathBuf,
    /// containerd's state directory (runtime state, the socket, pidfile, config, lock).
    pub state: PathBuf,
    /// The gRPC socket. Must be shorter than 108 bytes (a Unix socket path limit).
    pub socket: PathBuf,
    /// The PID of the running daemon, written by whoever started it.
    pub pidfile: PathBuf,
    /// The generated containerd config.
    pub config: PathBuf,
    /// Lock taken while checking for and starting the daemon.
    pub lock: PathBuf,
    /// The daemon's stdout and stderr.
    pub log: PathBuf,
    /// The CRI plugin's settings; `None` (the default) keeps the plugin disabled, as
    /// stockade never uses it (see [`cri`]).
    pub cri: Option<CriConfig>,
    /// The proc filesystem the daemon's liveness and cmdline are checked in, and shims are
    /// looked for in. Default [`procfs::DEFAULT_PROC_ROOT`].
    pub proc_root: PathBuf,
}

impl DaemonPaths {
    /// The host-wide private daemon: root `/var/lib/stockade/containerd`, state
    /// `/run/stockade/containerd` (socket `containerd.sock`, `containerd.pid`,
    /// `config.toml`, `start.lock` inside it), log `/var/log/stockade/containerd.log`.
    pub fn system() -> DaemonPaths {
        DaemonPaths::with_roots(
            Path::new("/var/lib/stockade/containerd"),
            Path::new("/run/stockade/containerd"),
            Path::new("/var/log/stockade/containerd.log"),
        )
    }

    /// A daemon entirely under `base` (`base/root`, `base/state`, `base/containerd.log`).
    /// Keep `base` short: the socket is `base/state/containerd.sock`.
    pub fn under(base: &Path) -> DaemonPaths {
        DaemonPaths::with_roots(
            &base.join("root"),
            &base.join("state"),
            &base.join("containerd.log"),
        )
    }

    /// Paths derived from a root, a state directory and a log file.
    pub fn with_roots(root: &Path, state: &Path, log: &Path) -> DaemonPaths {
        DaemonPaths {
            binary: PathBuf::from(DEFAULT_BINARY),
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            socket: state.join("containerd.sock"),
            pidfile: state.join("containerd.pid"),
            config: state.join("config.toml"),
            lock: state.join("start.lock"),
            log: log.to_path_buf(),
            cri: None,
            proc_root: PathBuf::from(procfs::DEFAULT_PROC_ROOT),
        }
    }
}

/// Errors starting, finding or stopping the private daemon.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// Nothing answers at the address and there is no containerd binary to start.
    #[error("containerd not reachable at {address} and {binary} not found")]
    BinaryMissing {
        /// The socket tried.
        address: PathBuf,
        /// The binary looked for.
        binary: PathBuf,
    },
    /// The socket exists but nothing answers.
    #[error("{}", unreachable_message(.address, .reason))]
    Unreachable {
        /// The socket tried.
        address: PathBuf,
        /// The connection error.
        reason: String,
    },
    /// A file of the daemon's state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The socket path (and its length) is too long for a Unix socket.
    #[error("socket path {0} is {1} bytes; Unix sockets allow at most 107")]
    SocketTooLong(PathBuf, usize),
    /// The daemon could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary run.
        binary: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The daemon exited before it answered.
    #[error("private containerd exited during start-up ({status}); see {log}: {tail}")]
    Exited {
        /// How it exited.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    #[error(
        "private containerd (pid {pid}) did not answer on {socket} within {waited:?}; see {log}"
    )]
    /// The daemon runs but did not answer in time.
    NotReady {
        /// Its pid.
        pid: i32,
        /// The socket waited on.
        socket: PathBuf,
        /// How long it was waited for.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
    },
    /// The pidfile names a process that is not this daemon; it is left alone.
    #[error("pidfile {pidfile} names pid {pid}, which is not this stockade containerd ({cmdline}); not signalling it")]
    NotOurs {
        /// The pidfile.
        pidfile: PathBuf,
        /// The pid it names.
        pid: i32,
        /// That process's command line.
        cmdline: String,
    },
    /// The daemon survived SIGKILL.
    #[error("private containerd (pid {pid}) survived SIGKILL")]
    Unkillable {
        /// Its pid.
        pid: i32,
    },
    /// A signal could not be sent.
    #[error("signalling pid {pid}: {errno}")]
    Signal {
        /// The target.
        pid: i32,
        /// The error.
        errno: Errno,
    },
    /// A containerd RPC failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

fn unreachable_message(address: &Path, reason: &str) -> String {
    format!(
        "containerd not reachable at {} ({reason}); it was named explicitly, so no private containerd is started",
        address.display()
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `status` found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DaemonStatus {
    /// The socket the private daemon listens on.
    pub socket: PathBuf,
    /// The PID from the pidfile, when that process is this daemon and alive.
    pub pid: Option<i32>,
    /// containerd's version, when the socket answered.
    pub version: Option<String>,
}

impl DaemonStatus {
    /// Alive and answering.
    pub fn is_running(&self) -> bool {
        self.pid.is_some() && self.version.is_some()
    }
}

/// The socket [`connect_or_start`] would connect to, found without connecting: the one
/// named (flag, else `$CONTAINERD_ADDRESS`), else the default socket when it exists, else
/// the private daemon's under `paths`. (A default socket that exists but does not answer
/// sends [`connect_or_start`] to the private daemon; this still says the default one.)
pub fn expected_address(address_flag: Option<&Path>, paths: &DaemonPaths) -> PathBuf {
    let explicit = address_flag.is_some()
        || std::env::var_os("CONTAINERD_ADDRESS").is_some_and(|v| !v.is_empty());
    let address = resolve_address(address_flag);
    if explicit || address.exists() {
        address
    } else {
        paths.socket.clone()
    }
}

/// Connects to the containerd named by `address_flag` (else `$CONTAINERD_ADDRESS`, else the
/// default socket). If nothing answers there and the address was not named explicitly (flag
/// or environment), connects to the private daemon under `paths`, starting it if needed.
pub async fn connect_or_start(
    address_flag: Option<&Path>,
    namespace: &str,
    paths: &DaemonPaths,
) -> Result<Client, DaemonError> {
    let explicit = address_flag.is_some()
        || std::env::var_os("CONTAINERD_ADDRESS").is_some_and(|v| !v.is_empty());
    let address = resolve_address(address_flag);
    let first = match try_connect(&address, namespace).await {
        Ok(client) => return Ok(client),
        Err(e @ ContainerdError::BadNamespace(_)) => return Err(e.into()),
        Err(e) => e,
    };
    if explicit {
        return Err(DaemonError::Unreachable {
            address,
            reason: match first {
                ContainerdError::Connect { reason, .. } => reason,
                other => other.to_string(),
            },
        });
    }
    if !paths.binary.exists() {
        return Err(DaemonError::BinaryMissing {
            address,
            binary: paths.binary.clone(),
        });
    }
    // Usually it is up already: one connection and one Version RPC, no lock taken.
    if let Ok(client) = try_connect(&paths.socket, namespace).await {
        return Ok(client);
    }
    ensure_running(paths).await?;
    Ok(Client::connect(&paths.socket, namespace).await?)
}

/// Connects and proves the daemon answers with a Version RPC.
async fn try_connect(address: &Path, namespace: &str) -> Result<Client, ContainerdError> {
    let client = Client::connect(address, namespace).await?;
    client.server_version().await?;
    Ok(client)
}

/// Starts the private daemon under `paths` unless it is already running, and waits until it
/// answers. Returns its PID. Safe to call concurrently from several processes.
pub async fn ensure_running(paths: &DaemonPaths) -> Result<i32, DaemonError> {
    let len = paths.socket.as_os_str().len();
    if len > 107 {
        return Err(DaemonError::SocketTooLong(paths.socket.clone(), len));
    }
    std::fs::create_dir_all(&paths.state).map_err(io_err(&paths.state))?;
    let lock_path = paths.lock.clone();
    let _lock = tokio::task::spawn_blocking(move || lock_exclusive(&lock_path))
        .await
        .map_err(|e| DaemonError::Io {
            path: paths.lock.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;

    if let Some(pid) = our_pid(paths)? {
        // Alive: it may still be starting (another invocation started it), so wait.
        wait_ready(paths, pid, None).await?;
        return Ok(pid);
    }
    // A stale pidfile (crash, reboot) names no live daemon of ours.
    let _ = std::fs::remove_file(&paths.pidfile);
    if !paths.binary.exists() {
        return Err(DaemonError::BinaryMissing {
            address: paths.socket.clone(),
            binary: paths.binary.clone(),
        });
    }
    let mut child = spawn(paths)?;
    let pid = child.id() as i32;
    std::fs::write(&paths.pidfile, format!("{pid}\n")).map_err(io_err(&paths.pidfile))?;
    if let Err(e) = wait_ready(paths, pid, Some(&mut child)).await {
        // Do not leave a half-started daemon behind.
        let _ = stop_pid(&paths.proc_root, pid, Duration::from_secs(2));
        let _ = child.try_wait();
        let _ = std::fs::remove_file(&paths.pidfile);
        return Err(e);
    }
    Ok(pid)
}

fn lock_exclusive(path: &Path) -> Result<Flock<File>, DaemonError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| DaemonError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    })
}

/// Starts containerd in a session of its own, stdio to the log file, so that it survives
/// the process that started it.
fn spawn(paths: &DaemonPaths) -> Result<std::process::Child, DaemonError> {
    for dir in [&paths.root, &paths.state] {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    if let Some(dir) = paths.log.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::write(&paths.config, render_config(paths)).map_err(io_err(&paths.config))?;
    // A socket left by a daemon that died would make the new one fail to listen.
    let _ = std::fs::remove_file(&paths.socket);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(io_err(&paths.log))?;
    let log2 = log.try_clone().map_err(io_err(&paths.log))?;
    // The runc v2 shim finds `runc` on PATH; Debian installs it in /usr/sbin.
    let path_env = match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => {
            format!("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{p}")
        }
        _ => "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    };
    // `setsid` (util-linux) execs in place when the caller is not a process-group leader,
    // which a freshly forked child never is, so the PID we get is containerd's own.
    let setsid = Path::new("/usr/bin/setsid");
    let mut cmd = if setsid.exists() {
        let mut c = Command::new(setsid);
        c.arg(&paths.binary);
        c
    } else {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(&paths.binary);
        c.process_group(0);
        c
    };
    cmd.arg("--config")
        .arg(&paths.config)
        .env("PATH", path_env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir("/");
    cmd.spawn().map_err(|source| DaemonError::Spawn {
        binary: paths.binary.clone(),
        source,
    })
}

/// Polls the Version RPC until the daemon answers, it exits, or [`READY_TIMEOUT`] passes.
async fn wait_ready(
    paths: &DaemonPaths,
    pid: i32,
    mut child: Option<&mut std::process::Child>,
) -> Result<(), DaemonError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if paths.socket.exists() && try_connect(&paths.socket, "default").await.is_ok() {
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(DaemonError::Exited {
                    status: status.to_string(),
                    log: paths.log.clone(),
                    tail: log_tail(&paths.log),
                });
            }
        } else if !is_alive(&paths.proc_root, pid) {
            return Err(DaemonError::Exited {
                status: format!("pid {pid} is gone"),
                log: paths.log.clone(),
                tail: log_tail(&paths.log),
            });
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(DaemonError::NotReady {
                pid,
                socket: paths.socket.clone(),
                waited: READY_TIMEOUT,
                log: paths.log.clone(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The last error-looking line of the log, for one-line error messages.
fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("level=fatal") || l.contains("level=error"))
        .or(lines.last())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "(log is empty)".to_string())
}

/// Reports whether the private daemon under `paths` is running and answering.
pub async fn status(paths: &DaemonPaths) -> Result<DaemonStatus, DaemonError> {
    let pid = our_pid(paths)?;
    let version = match pid {
        Some(_) => match try_connect(&paths.socket, "default").await {
            Ok(c) => c.server_version().await.ok(),
            Err(_) => None,
        },
        None => None,
    };
    Ok(DaemonStatus {
        socket: paths.socket.clone(),
        pid,
        version,
    })
}

#[cfg(test)]
mod tests;
