//! The private daemon's process: the pidfile, the checks that the PID there is alive and
//! really this daemon (its `/proc` stat and cmdline, under [`DaemonPaths::proc_root`]), and
//! stopping it by PID.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::{io_err, DaemonError, DaemonPaths};
use crate::procfs::{self, ProcStat};

/// The PID in the pidfile, if that process is alive and is this daemon.
pub(super) fn our_pid(paths: &DaemonPaths) -> Result<Option<i32>, DaemonError> {
    let Some(pid) = read_pidfile(&paths.pidfile)? else {
        return Ok(None);
    };
    if is_alive(&paths.proc_root, pid) && is_our_daemon(&cmdline(&paths.proc_root, pid), paths) {
        Ok(Some(pid))
    } else {
        Ok(None)
    }
}

/// The PID in the pidfile at `path`; `None` when there is none (or it holds no PID above 1).
pub(super) fn read_pidfile(path: &Path) -> Result<Option<i32>, DaemonError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse::<i32>().ok().filter(|p| *p > 1)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The argv of process `pid` in `proc_root` (empty when it is gone).
pub(super) fn cmdline(proc_root: &Path, pid: i32) -> Vec<String> {
    u32::try_from(pid).map_or_else(|_| Vec::new(), |pid| procfs::cmdline(proc_root, pid))
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

/// Alive (listed in `proc_root`) and not a zombie. Reaps the process if it is our own
/// exited child.
pub(super) fn is_alive(proc_root: &Path, pid: i32) -> bool {
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    u32::try_from(pid)
        .ok()
        .and_then(|pid| ProcStat::read(proc_root, pid))
        .is_some_and(|s| !s.has_exited())
}

/// Stops the private daemon under `paths`: SIGTERM to the PID in the pidfile (after checking
/// its cmdline), up to `grace` to exit, then SIGKILL. Returns the PID stopped, or `None`
/// when it was not running. Tasks' shims are separate processes and keep running.
pub fn stop(paths: &DaemonPaths, grace: Duration) -> Result<Option<i32>, DaemonError> {
    let Some(pid) = read_pidfile(&paths.pidfile)? else {
        return Ok(None);
    };
    if !is_alive(&paths.proc_root, pid) {
        let _ = std::fs::remove_file(&paths.pidfile);
        return Ok(None);
    }
    let argv = cmdline(&paths.proc_root, pid);
    if !is_our_daemon(&argv, paths) {
        return Err(DaemonError::NotOurs {
            pidfile: paths.pidfile.clone(),
            pid,
            cmdline: argv.join(" "),
        });
    }
    stop_pid(&paths.proc_root, pid, grace)?;
    let _ = std::fs::remove_file(&paths.pidfile);
    Ok(Some(pid))
}

/// SIGTERM to `pid`, up to `grace` for it to go, then SIGKILL and up to 5 s more.
pub(super) fn stop_pid(proc_root: &Path, pid: i32, grace: Duration) -> Result<(), DaemonError> {
    for (signal, wait) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(5)),
    ] {
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(()),
            Err(errno) => return Err(DaemonError::Signal { pid, errno }),
        }
        if wait_gone(proc_root, pid, wait) {
            return Ok(());
        }
    }
    Err(DaemonError::Unkillable { pid })
}

/// Whether `pid` is gone within `wait` (polled every 20 ms).
pub(super) fn wait_gone(proc_root: &Path, pid: i32, wait: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < wait {
        if !is_alive(proc_root, pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_alive(proc_root, pid)
}
