//! Disk limits: what a sandbox may write to the host's storage is bounded by a filesystem of
//! bounded size and inode count made for that sandbox alone.
//!
//! A sandbox writes to host storage in two places: the upper layer of a writable root (an
//! overlay whose lower layers are the image's base snapshot) and a managed workspace. With
//! a read-only root and no managed workspace it writes nowhere: `/tmp` and `/dev/shm` are
//! tmpfs (memory, bounded by their sizes and the memory limit), and a host `--workspace`
//! directory is the host's own (reported as not enforced, see [`host_workspace_not_enforced`]).
//!
//! The mechanism ([`Mechanism::LoopImage`]): for each volume a sparse image file
//! `<disk root>/<run id>-<volume>.img` (default root [`DEFAULT_DISK_ROOT`]), formatted ext4
//! with no journal, no reserved blocks and one inode per [`BYTES_PER_INODE`], loop-mounted
//! `nosuid,nodev` under the run directory. The root volume holds the overlay's `upper` and
//! `work` directories, which replace the snapshot's own in the rootfs mounts handed to
//! Tasks.Create ([`bound_rootfs`]); the workspace volume is mounted at the workspace's
//! staging path. Writing past either fails with ENOSPC inside the sandbox, and the host
//! loses at most the image's size. The images are sparse: they take only what was written.
//!
//! Project quotas (XFS `prjquota`, ext4 with the `project` feature mounted `prjquota`)
//! would bound a directory without a loop device; [`project_quota`] recognises them from
//! the mount options, and `stockade doctor` says so, but runs use the loop image everywhere
//! (one mechanism, proven by the tests on every host).
//!
//! Cleanup: the volumes are named in `<run dir>/disk.json` before any is made, so that
//! [`release`] (called where the run directory is removed) finds every one of them whatever
//! point a run, or a crash, reached: it unmounts the run's own mount points, detaches the
//! loop devices whose backing file is one of the run's images (and no other), and removes
//! the images. [`reclaim_orphans`] removes images whose run directory is gone.
//!
//! Where each part lives: the host probe and the choice of mechanism in `probe.rs`, making
//! and mounting the volumes in `provision.rs`, removing them (and a crash's orphans) in
//! `release.rs`.

mod probe;
mod provision;
mod release;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::ValidatedPolicy;
use crate::spec::NotEnforced;

pub use probe::{choose, fs_of, probe, project_quota, DiskFacts, Mechanism, TOOLS};
pub use provision::{bound_rootfs, copy_root, provision, Provisioned};
pub use release::{loops_of, parse_losetup_j, reclaim_orphans, release, run_of_image};
/// Where the sandboxes' image files live by default. Everything in it is stockade's: files
/// named `<run id>-root.img` and `<run id>-workspace.img`.
pub const DEFAULT_DISK_ROOT: &str = "/var/lib/stockade/disk";

/// The inode bound: one inode per 16 KiB of the volume (256 MiB gives 16,384 inodes), and
/// never fewer than [`MIN_INODES`]. A flood of empty files stops there with ENOSPC.
pub const BYTES_PER_INODE: u64 = 16 << 10;
/// The fewest inodes a volume gets.
pub const MIN_INODES: u64 = 1024;

/// The record of a run's volumes, in its run directory.
pub const RECORD_FILE: &str = "disk.json";
/// The root volume's mount point, in the run directory.
pub const ROOT_MOUNT: &str = "disk-root";
/// The lock [`provision`] holds while it makes volumes and [`release`] takes before it
/// removes them, so that a release (another process's `gc`, or the cleanup of a run whose
/// future was dropped) never runs beside a provisioning that would then mount a volume
/// nothing records.
pub const LOCK_FILE: &str = "disk.lock";
/// Left by [`release`]: the run's volumes are gone, and [`provision`] makes none after.
pub const RELEASED_FILE: &str = "disk.released";

/// The volumes of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// The writable root's overlay `upper` and `work` directories.
    Root,
    /// The managed workspace at `/workspace`.
    Workspace,
}

impl VolumeKind {
    fn name(self) -> &'static str {
        match self {
            VolumeKind::Root => "root",
            VolumeKind::Workspace => "workspace",
        }
    }
}

/// One bounded filesystem: its size and inode count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// What the volume bounds.
    pub kind: VolumeKind,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its inode count.
    pub inodes: u64,
}

/// The inode count of a volume of `bytes` (see [`BYTES_PER_INODE`]).
pub fn inodes_for(bytes: u64) -> u64 {
    (bytes / BYTES_PER_INODE).max(MIN_INODES)
}

/// The volumes a policy needs: the root's when the root is writable (the disk limit less
/// the managed workspace, which validation keeps at least 16 MiB), the workspace's when it
/// is managed. A read-only root with a host workspace, or none, needs none. Pure.
pub fn plan(policy: &ValidatedPolicy) -> Vec<Volume> {
    let ws = policy.managed_workspace;
    let mut v = Vec::new();
    if !policy.read_only_root {
        let bytes = policy.limits.disk - ws.unwrap_or(0);
        v.push(Volume {
            kind: VolumeKind::Root,
            bytes,
            inodes: inodes_for(bytes),
        });
    }
    if let Some(bytes) = ws {
        v.push(Volume {
            kind: VolumeKind::Workspace,
            bytes,
            inodes: inodes_for(bytes),
        });
    }
    v
}

/// What a run reports of its disk limit (`disk` in the run result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskUse {
    /// `loop-ext4`, or `none` when the sandbox writes nothing to host storage (a read-only
    /// root and no managed workspace).
    pub mechanism: String,
    /// The disk limit, bytes.
    pub limit_bytes: u64,
    /// The bounded volumes, with their sizes and inode counts.
    pub volumes: Vec<Volume>,
}

impl DiskUse {
    /// The report of a run with these volumes.
    pub fn of(policy: &ValidatedPolicy, volumes: Vec<Volume>) -> DiskUse {
        DiskUse {
            mechanism: if volumes.is_empty() {
                "none"
            } else {
                "loop-ext4"
            }
            .to_string(),
            limit_bytes: policy.limits.disk,
            volumes,
        }
    }
}

/// The `not_enforced` entry of a policy with a host `--workspace` directory: stockade cannot
/// bound a directory of the host's own without quotas on its filesystem. Pure.
pub fn host_workspace_not_enforced(policy: &ValidatedPolicy) -> Option<NotEnforced> {
    let ws = policy.workspace.as_ref()?;
    Some(NotEnforced {
        protection: "disk".into(),
        reason: format!(
            "disk not enforced for /workspace: {} is a host directory, which the sandbox can \
             fill up to its filesystem's free space (use --workspace-size for a bounded one)",
            ws.path.display()
        ),
    })
}

/// Why a volume could not be made, mounted or removed.
#[derive(Debug, Error)]
pub enum DiskError {
    /// A file or directory of a volume could not be used.
    #[error("disk limit: {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool (`mkfs.ext4`, `losetup`, `mount`) failed.
    #[error("disk limit: `{command}` failed: {reason}")]
    Tool {
        /// The command line.
        command: String,
        /// What it printed.
        reason: String,
    },
    /// A volume's record is unreadable.
    #[error("disk limit: {path}: {reason}")]
    Record {
        /// The record.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The snapshot's mounts hold no overlay whose upper directory could be bounded.
    #[error("disk limit: the snapshot's mounts have no overlay to bound (got {got})")]
    NoOverlay {
        /// The mounts seen.
        got: String,
    },
    /// The host cannot bound disks; why.
    #[error("disk limit: cannot bound the disk on this host: {0}")]
    Unavailable(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The record of a run's volumes (`<run dir>/disk.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Record {
    /// Each volume: its kind, image file and mount point.
    volumes: Vec<RecordedVolume>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordedVolume {
    kind: VolumeKind,
    image: PathBuf,
    mount: PathBuf,
}

/// The image file of volume `kind` of run `id`.
pub fn image_path(disk_root: &Path, id: &str, kind: VolumeKind) -> PathBuf {
    disk_root.join(format!("{id}-{}.img", kind.name()))
}

/// Where volume `kind` of the run in `run_dir` is mounted.
pub fn mount_path(run_dir: &Path, kind: VolumeKind) -> PathBuf {
    match kind {
        VolumeKind::Root => run_dir.join(ROOT_MOUNT),
        VolumeKind::Workspace => crate::bind::staged_path(run_dir, "workspace"),
    }
}

#[cfg(test)]
mod tests;
