//! The root of a stopped sandbox, for copying files into and out of it.
//!
//! A stopped sandbox (its task exited, not removed) has no `/proc/<pid>/root`, but its
//! container's active snapshot still exists. Its mounts come from containerd
//! (Snapshots.Mounts), with the overlay's upper layer on the sandbox's root volume when it
//! has one (as its task had it, see [`crate::disk::bound_rootfs`]), and are mounted on a
//! fresh directory `<run dir>/cp-root-<pid>-<n>` (the run directory lies under the
//! runner's FIFO root, a parameter):
//!
//! - **read-only** (a copy out, or into a bind of the sandbox): an overlay whose lower
//!   layers are the snapshot's upper directory over its own lower ones, with no upper
//!   directory at all, mounted `ro,nosuid,nodev`: nothing of the snapshot can change.
//! - **read-write** (a copy into a writable root): the snapshot's overlay as the task had
//!   it (the same upper and work directories), `nosuid,nodev`. Nothing else writes there
//!   while the sandbox is stopped.
//!
//! Then every bind mount of the container's spec whose destination exists in that root is
//! bound at its destination (resolved inside the root, never through a link out of it),
//! read-only when the spec has it so: a stopped sandbox shows its root filesystem and its
//! binds (the workspace, the input, every `-v`), as Docker shows a stopped container. Its
//! tmpfs mounts (`/tmp`, `--tmpfs`) lived in its memory and are gone: their mount points
//! show the (empty) directories beneath, and a copy into one is refused.
//!
//! The guard (`StoppedRoot`) detaches the whole tree and removes the directory when
//! dropped, on every path. A directory left by a process that died meanwhile is reclaimed
//! by the next copy into that sandbox, and by the removal of its run directory
//! ([`reclaim`], called by `runner::fifo::remove`, which `rm`, `gc` and crash
//! reclaim all reach).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_client::types::Mount;
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Spec;

use super::{Sandbox, SandboxError};
use crate::disk::{self, VolumeKind};
use crate::files;

/// The prefix of the mount directories in a run directory.
pub const MOUNT_PREFIX: &str = "cp-root-";

/// How many mounts stacked on one point [`reclaim`] takes off at most.
const MAX_STACKED: usize = 16;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A stopped sandbox's root, mounted; detached and removed when dropped.
pub(super) struct StoppedRoot {
    dir: PathBuf,
    root: Option<OwnedFd>,
}

impl StoppedRoot {
    /// A descriptor on the mounted root (see [`crate::files::open_root`]).
    pub(super) fn take_root(&mut self) -> OwnedFd {
        self.root.take().expect("taken once")
    }
}

impl Drop for StoppedRoot {
    fn drop(&mut self) {
        self.root = None;
        if let Err(e) = unmount_dir(&self.dir) {
            tracing::warn!("{}: {e}", self.dir.display());
        }
    }
}

/// Detaches every mount at `dir` (submounts go with them) and removes it.
fn unmount_dir(dir: &Path) -> std::io::Result<()> {
    for _ in 0..MAX_STACKED {
        match nix::mount::umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // Not (or no longer) a mount point; EPERM: not one this process could have made.
            Err(
                nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT | nix::errno::Errno::EPERM,
            ) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Unmounts and removes the stopped-root mounts left in `run_dir`: all of them, or with
/// `only_dead`, those of processes that are gone (`proc_root` tells). Idempotent.
pub fn reclaim(run_dir: &Path, only_dead: Option<&Path>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(MOUNT_PREFIX) else {
            continue;
        };
        if let Some(proc_root) = only_dead {
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| {
                crate::procfs::ProcStat::read(proc_root, p).is_some_and(|s| !s.has_exited())
            });
            if alive {
                continue;
            }
        }
        unmount_dir(&e.path())?;
    }
    Ok(())
}

/// How the snapshot's filesystem is mounted: type, source, options. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    typ: String,
    source: String,
    options: Vec<String>,
    bind: bool,
}

/// The mount of the snapshot's `mounts` (one overlay, or one bind for a snapshotter
/// without layers): read-only as a lower-only overlay, or as the task had it. `upper`
/// and `work` replace the overlay's own (the root volume's) when given. Pure.
fn plan(mounts: &[Mount], bound: Option<(&Path, &Path)>, writable: bool) -> Result<Plan, String> {
    let [m] = mounts else {
        return Err(format!("{} mounts, one expected", mounts.len()));
    };
    if m.r#type == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") {
        return Ok(Plan {
            typ: String::new(),
            source: m.source.clone(),
            options: Vec::new(),
            bind: true,
        });
    }
    if m.r#type != "overlay" {
        return Err(format!("a `{}` mount, an overlay expected", m.r#type));
    }
    let mut upper = None;
    let mut work = None;
    let mut lower = None;
    let mut rest = Vec::new();
    for o in &m.options {
        if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(v.to_string());
        } else if let Some(v) = o.strip_prefix("workdir=") {
            work = Some(v.to_string());
        } else if let Some(v) = o.strip_prefix("lowerdir=") {
            lower = Some(v.to_string());
        } else if o != "ro" && o != "rw" {
            rest.push(o.clone());
        }
    }
    if let Some((u, w)) = bound {
        upper = Some(u.display().to_string());
        work = Some(w.display().to_string());
    }
    let lower = lower.ok_or("an overlay without lowerdir")?;
    let options = match (writable, upper, work) {
        (true, Some(u), Some(w)) => {
            let mut o = rest;
            o.extend([
                format!("upperdir={u}"),
                format!("workdir={w}"),
                format!("lowerdir={lower}"),
            ]);
            o
        }
        (true, _, _) => return Err("a read-only snapshot (no upperdir)".into()),
        (false, Some(u), _) => vec![format!("lowerdir={u}:{lower}")],
        (false, None, _) => vec![format!("lowerdir={lower}")],
    };
    Ok(Plan {
        typ: "overlay".into(),
        source: "overlay".into(),
        options,
        bind: false,
    })
}

/// A bind of the spec: its host source, destination and whether it is read-only. Pure.
fn binds(spec: &Spec) -> Vec<(String, String, bool)> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| {
            let source = m.source().as_ref()?.to_str()?.to_string();
            let ro = m.options().iter().flatten().any(|o| o == "ro");
            Some((source, m.destination().to_str()?.to_string(), ro))
        })
        .collect()
}

/// Mounts the stopped sandbox's root (read-write when `writable`) with its binds.
pub(super) async fn mount(
    sb: &Sandbox,
    spec: &Spec,
    writable: bool,
) -> Result<StoppedRoot, SandboxError> {
    let runner = sb.runner();
    let target = runner.cleanup_target();
    let id = sb.id().to_string();
    let mounts = match target
        .containerd
        .snapshot_mounts(&target.snapshotter, &id)
        .await
    {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Err(SandboxError::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    let run_dir = sb.run_dir();
    let state = |source: std::io::Error, path: &Path| SandboxError::State {
        path: path.to_path_buf(),
        source,
    };
    reclaim(&run_dir, Some(runner.proc_root())).map_err(|e| state(e, &run_dir))?;
    let volume = disk::mount_path(&run_dir, VolumeKind::Root);
    let (upper, work) = (volume.join("upper"), volume.join("work"));
    let bound = is_mount_point(&volume).then_some((upper.as_path(), work.as_path()));
    let plan = plan(&mounts, bound, writable).map_err(|reason| SandboxError::CorruptSpec {
        id: id.clone(),
        reason: format!("its root snapshot cannot be mounted: {reason}"),
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = run_dir.join(format!("{MOUNT_PREFIX}{}-{n}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| state(e, &dir))?;
    // From here the guard unmounts and removes whatever was made.
    let mut guard = StoppedRoot { dir, root: None };
    let binds = binds(spec);
    let proc_root = runner.proc_root().to_path_buf();
    let dir = guard.dir.clone();
    let made =
        tokio::task::spawn_blocking(move || mount_tree(&dir, &plan, writable, &binds, &proc_root))
            .await
            .map_err(|e| state(std::io::Error::other(e.to_string()), &guard.dir))?;
    guard.root = Some(made.map_err(|e| state(e, &guard.dir))?);
    Ok(guard)
}

/// Whether `path` is a mount point (a different device from its parent's).
pub(super) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    here.is_dir() && here.dev() != parent.dev()
}

/// Mounts the snapshot at `dir`, then the binds inside it; a descriptor on its root.
fn mount_tree(
    dir: &Path,
    plan: &Plan,
    writable: bool,
    binds: &[(String, String, bool)],
    proc_root: &Path,
) -> std::io::Result<OwnedFd> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let ro = if writable {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    if plan.bind {
        nix::mount::mount(
            Some(plan.source.as_str()),
            dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        nix::mount::mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | base | ro,
            None::<&str>,
        )?;
    } else {
        nix::mount::mount(
            Some(plan.source.as_str()),
            dir,
            Some(plan.typ.as_str()),
            base | ro,
            Some(plan.options.join(",").as_str()),
        )?;
    }
    // Nothing made below propagates to the host's other mounts.
    nix::mount::mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    let root = files::open_root(dir).map_err(std::io::Error::other)?;
    for (source, dest, read_only) in binds {
        // The destination as the sandbox would reach it, never out of the root; a missing
        // one (made on a tmpfs while the sandbox ran) is left out.
        let Ok(at) = files::open_path_in_root(&root, dest) else {
            tracing::debug!("{dest}: not in the stopped root; its bind is not shown");
            continue;
        };
        let at_path = fd_path(proc_root, &at);
        nix::mount::mount(
            Some(source.as_str()),
            &at_path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
        if *read_only {
            // The new mount is reached by opening the destination again.
            let top = files::open_path_in_root(&root, dest).map_err(std::io::Error::other)?;
            nix::mount::mount(
                None::<&str>,
                &fd_path(proc_root, &top),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | base,
                None::<&str>,
            )?;
        }
    }
    Ok(root)
}

/// `<proc>/self/fd/N` of `fd`: the inode it holds, as a path mount(2) follows.
fn fd_path(proc_root: &Path, fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    proc_root.join("self/fd").join(fd.as_raw_fd().to_string())
}

/// Where a sandbox path lies in the spec's mount table (lexically: the longest mount
/// destination that is a prefix of it). Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// The root filesystem.
    Root { read_only: bool },
    /// A bind mount at `dest`.
    Bind { dest: String, read_only: bool },
    /// A tmpfs at `dest`.
    Tmpfs { dest: String },
    /// A kernel filesystem (`proc`, `sysfs`, …) at `dest`.
    Kernel { dest: String, typ: String },
}

/// The components of a sandbox path, `.` dropped and `..` taken lexically. Pure.
fn components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Where `path` lies in `spec`'s mounts. Pure.
pub(super) fn place(spec: &Spec, path: &str) -> Place {
    let want = components(path);
    let best = spec
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| {
            let dest = m.destination().to_str()?;
            let c = components(dest);
            want.starts_with(&c).then_some((c.len(), m, dest))
        })
        .max_by_key(|(n, _, _)| *n);
    let Some((_, m, dest)) = best else {
        let read_only = spec
            .root()
            .as_ref()
            .and_then(oci_spec::runtime::Root::readonly)
            .unwrap_or(false);
        return Place::Root { read_only };
    };
    let opts = m.options().clone().unwrap_or_default();
    let typ = m.typ().clone().unwrap_or_default();
    let dest = dest.to_string();
    if typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind") {
        Place::Bind {
            dest,
            read_only: opts.iter().any(|o| o == "ro"),
        }
    } else if typ == "tmpfs" {
        Place::Tmpfs { dest }
    } else {
        Place::Kernel { dest, typ }
    }
}

#[cfg(test)]
#[path = "stopped_tests.rs"]
mod tests;
