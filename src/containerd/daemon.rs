//! stockade's embedded private containerd.
//!
//! When no containerd answers at the resolved address (and none was named explicitly),
//! stockade starts Debian's `/usr/bin/containerd` with a generated config of its own: its own
//! root, state directory, socket, pidfile and log file, all given by [`DaemonPaths`] so tests
//! run fully private daemons under a tempdir. The daemon outlives the invocation that started
//! it (new session, stdio to the log file) and is reused by later ones: the pidfile plus a
//! Version RPC on the socket say whether it is alive, and a lock file keeps two concurrent
//! invocations from starting two daemons. `stockade daemon stop` ends it by PID, after
//! checking `/proc/PID/cmdline` shows it really is this daemon.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use thiserror::Error;

use super::{resolve_address, Client, ContainerdError};

pub mod cri;
mod scan;
use crate::procfs::ProcStat;
pub use cri::CriConfig;
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
        let _ = stop_pid(pid, Duration::from_secs(2));
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

/// The containerd config for `paths`: version 2, every directory under the daemon's own
/// root and state, the CRI plugin disabled unless [`DaemonPaths::cri`] configures it.
pub fn render_config(paths: &DaemonPaths) -> String {
    let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let disabled: Vec<String> = DISABLED_PLUGINS
        .iter()
        .filter(|p| paths.cri.is_none() || **p != cri::PLUGIN)
        .map(|p| toml::Value::String((*p).to_string()).to_string())
        .collect();
    let cri = paths
        .cri
        .as_ref()
        .map(|c| c.render(&paths.state))
        .unwrap_or_default();
    format!(
        "# Generated by stockade for its private containerd; rewritten on every start.\n\
         version = 2\n\
         root = {root}\n\
         state = {state}\n\
         disabled_plugins = [{disabled}]\n\
         \n\
         [grpc]\n\
         address = {socket}\n\
         \n\
         [ttrpc]\n\
         address = {ttrpc}\n\
         \n\
         # No debug or metrics listeners.\n\
         [debug]\n\
         address = \"\"\n\
         level = \"info\"\n\
         \n\
         [metrics]\n\
         address = \"\"\n\
         \n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n\
         path = {opt}\n\
         {cri}",
        root = q(&paths.root),
        state = q(&paths.state),
        disabled = disabled.join(", "),
        socket = q(&paths.socket),
        ttrpc = q(&paths.socket.with_extension("sock.ttrpc")),
        opt = q(&paths.root.join("opt")),
    )
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
        } else if !is_alive(pid) {
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

/// The PID in the pidfile, if that process is alive and is this daemon.
fn our_pid(paths: &DaemonPaths) -> Result<Option<i32>, DaemonError> {
    let Some(pid) = read_pidfile(&paths.pidfile)? else {
        return Ok(None);
    };
    if is_alive(pid) && is_our_daemon(&read_cmdline(pid), paths) {
        Ok(Some(pid))
    } else {
        Ok(None)
    }
}

fn read_pidfile(path: &Path) -> Result<Option<i32>, DaemonError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse::<i32>().ok().filter(|p| *p > 1)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// `/proc/PID/cmdline` split at NULs (empty when the process is gone).
fn read_cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| split_cmdline(&b))
        .unwrap_or_default()
}

fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// True when `argv` is a containerd started with this daemon's config.
pub fn is_our_daemon(argv: &[String], paths: &DaemonPaths) -> bool {
    let Some(arg0) = argv.first() else {
        return false;
    };
    let is_containerd = Path::new(arg0)
        .file_name()
        .is_some_and(|n| n == "containerd");
    let config = paths.config.to_string_lossy();
    let has_config = argv
        .windows(2)
        .any(|w| (w[0] == "--config" || w[0] == "-c") && w[1] == config)
        || argv.iter().any(|a| *a == format!("--config={config}"));
    is_containerd && has_config
}

/// Alive and not a zombie. Reaps the process if it is our own exited child.
fn is_alive(pid: i32) -> bool {
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => ProcStat::parse(&stat).is_some_and(|s| !s.has_exited()),
        Err(_) => false,
    }
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

/// Stops the private daemon under `paths`: SIGTERM to the PID in the pidfile (after checking
/// its cmdline), up to `grace` to exit, then SIGKILL. Returns the PID stopped, or `None`
/// when it was not running. Tasks' shims are separate processes and keep running.
pub fn stop(paths: &DaemonPaths, grace: Duration) -> Result<Option<i32>, DaemonError> {
    let Some(pid) = read_pidfile(&paths.pidfile)? else {
        return Ok(None);
    };
    if !is_alive(pid) {
        let _ = std::fs::remove_file(&paths.pidfile);
        return Ok(None);
    }
    let argv = read_cmdline(pid);
    if !is_our_daemon(&argv, paths) {
        return Err(DaemonError::NotOurs {
            pidfile: paths.pidfile.clone(),
            pid,
            cmdline: argv.join(" "),
        });
    }
    stop_pid(pid, grace)?;
    let _ = std::fs::remove_file(&paths.pidfile);
    Ok(Some(pid))
}

fn stop_pid(pid: i32, grace: Duration) -> Result<(), DaemonError> {
    for (signal, wait) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(5)),
    ] {
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(()),
            Err(errno) => return Err(DaemonError::Signal { pid, errno }),
        }
        if wait_gone(pid, wait) {
            return Ok(());
        }
    }
    Err(DaemonError::Unkillable { pid })
}

fn wait_gone(pid: i32, wait: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < wait {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_alive(pid)
}

#[cfg(test)]
mod tests;
