//! What a daemon left on the host, found by scanning: mounts under its root (from
//! mountinfo text) and its shims (from `/proc`), and their removal. Used when a private
//! daemon is stopped and by the tests' leftover census.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{io_err, read_cmdline, wait_gone, DaemonError};
use crate::procfs::ProcStat;

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

/// A shim process of some daemon, found in `/proc`.
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

/// Every shim serving the daemon at `socket`.
pub fn shims_for(socket: &Path) -> Vec<Shim> {
    proc_pids()
        .filter_map(|pid| {
            shim_of(&read_cmdline(pid), socket).map(|(id, namespace)| Shim { pid, id, namespace })
        })
        .collect()
}

/// Every process id listed in `/proc` now.
fn proc_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

/// Kills, by PID, every shim of the daemon at `socket` and the processes each shim
/// parented (its containers' init processes). Returns the shims killed.
pub fn kill_shims(socket: &Path) -> Vec<Shim> {
    let shims = shims_for(socket);
    for shim in &shims {
        for child in children_of(shim.pid) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
        wait_gone(shim.pid, Duration::from_secs(2));
    }
    shims
}

/// PIDs whose parent is `ppid`.
fn children_of(ppid: i32) -> Vec<i32> {
    proc_pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                ProcStat::parse(&stat)
                    .and_then(|s| s.ppid)
                    .is_some_and(|p| i64::from(p) == i64::from(ppid))
            })
        })
        .collect()
}
