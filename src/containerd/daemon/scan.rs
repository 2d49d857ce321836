//! What a daemon left on the host, found by scanning: mounts under its root (from
//! mountinfo text) and its shims (from a proc root), and their removal. Used when a private
//! daemon is stopped and by the tests' leftover census.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::process::wait_gone;
use super::{io_err, DaemonError};
use crate::procfs::{self, ProcStat};

/// Mount points at or under `root`, deepest first, parsed from `/proc/self/mountinfo` text.
pub fn mounts_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts (lazily) everything mounted at or under `root`. Returns the mount points.
pub fn unmount_under(mountinfo_path: &Path, root: &Path) -> Result<Vec<PathBuf>, DaemonError> {
    let text = std::fs::read_to_string(mountinfo_path).map_err(io_err(mountinfo_path))?;
    let points = mounts_under(&text, root);
    for p in &points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(points)
}

/// A shim process of some daemon, found in a proc root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shim {
    /// The shim's pid.
    pub pid: i32,
    /// The `-id` argument (the task's container id).
    pub id: Option<String>,
    /// The `-namespace` argument.
    pub namespace: Option<String>,
}

/// Parses a shim's argv when it is a containerd shim serving the daemon at `socket`.
pub fn shim_of(argv: &[String], socket: &Path) -> Option<(Option<String>, Option<String>)> {
    let arg0 = Path::new(argv.first()?)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    if !arg0.starts_with("containerd-shim") {
        return None;
    }
    let flag = |name: &str| {
        argv.windows(2)
            .find(|w| w[0] == name || w[0] == format!("-{name}"))
            .map(|w| w[1].clone())
    };
    let address = flag("-address")?;
    if Path::new(&address) != socket {
        return None;
    }
    Some((flag("-id"), flag("-namespace")))
}

/// Every shim serving the daemon at `socket`, among the processes of `proc_root`
/// ([`DaemonPaths::proc_root`](super::DaemonPaths::proc_root)).
pub fn shims_for(proc_root: &Path, socket: &Path) -> Vec<Shim> {
    procfs::pids(proc_root)
        .into_iter()
        .filter_map(|pid| {
            let argv = procfs::cmdline(proc_root, pid);
            let (id, namespace) = shim_of(&argv, socket)?;
            let pid = i32::try_from(pid).ok()?;
            Some(Shim { pid, id, namespace })
        })
        .collect()
}

/// Kills, by PID, every shim of the daemon at `socket` and the processes each shim
/// parented (its containers' init processes). Returns the shims killed.
pub fn kill_shims(proc_root: &Path, socket: &Path) -> Vec<Shim> {
    let shims = shims_for(proc_root, socket);
    for shim in &shims {
        for child in children_of(proc_root, shim.pid) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
        wait_gone(proc_root, shim.pid, Duration::from_secs(2));
    }
    shims
}

/// PIDs in `proc_root` whose parent is `ppid`.
fn children_of(proc_root: &Path, ppid: i32) -> Vec<i32> {
    procfs::pids(proc_root)
        .into_iter()
        .filter(|&pid| {
            ProcStat::read(proc_root, pid)
                .and_then(|s| s.ppid)
                .is_some_and(|p| i64::from(p) == i64::from(ppid))
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}
