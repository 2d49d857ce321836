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

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use containerd_client::types::Mount;
use nix::mount::MntFlags;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::ValidatedPolicy;
use crate::spec::NotEnforced;

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
    pub kind: VolumeKind,
    pub bytes: u64,
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

/// How disk use is bounded on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Mechanism {
    /// A loop-mounted ext4 image per volume.
    LoopImage,
    /// Nothing can bound it: why.
    Unavailable { reason: String },
}

impl Mechanism {
    /// The name runs and `doctor` report.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::LoopImage => "loop-ext4",
            Mechanism::Unavailable { .. } => "none",
        }
    }
}

/// What the host offers for disk limits, as probed (see [`probe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskFacts {
    /// The filesystem holding the disk root: type and superblock options, when known.
    pub fs_type: Option<String>,
    pub fs_options: Vec<String>,
    /// `/dev/loop-control` exists.
    pub loop_control: bool,
    /// `mkfs.ext4`, `mount` and `losetup` were found.
    pub tools: Vec<(String, bool)>,
    /// The kernel lists ext4.
    pub ext4: bool,
}

/// Whether a filesystem of type `fs_type` mounted with superblock options `options`
/// enforces project quotas. Pure.
pub fn project_quota(fs_type: &str, options: &[String]) -> bool {
    let has = |o: &str| options.iter().any(|x| x == o);
    match fs_type {
        // `pqnoenforce` accounts without enforcing: no limit.
        "xfs" => has("prjquota") || has("pquota"),
        "ext4" => has("prjquota"),
        _ => false,
    }
}

/// The mechanism for a host with these facts. Pure.
pub fn choose(f: &DiskFacts) -> Mechanism {
    let missing: Vec<&str> = f
        .tools
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t.as_str())
        .collect();
    if !f.loop_control {
        return Mechanism::Unavailable {
            reason: "no /dev/loop-control (the loop driver is not loaded)".into(),
        };
    }
    if !f.ext4 {
        return Mechanism::Unavailable {
            reason: "the kernel has no ext4".into(),
        };
    }
    if !missing.is_empty() {
        return Mechanism::Unavailable {
            reason: format!("missing {} (e2fsprogs, util-linux)", missing.join(", ")),
        };
    }
    Mechanism::LoopImage
}

/// The tools the loop mechanism runs.
pub const TOOLS: &[&str] = &["mkfs.ext4", "mount", "losetup"];

/// Probes the host: the filesystem of `disk_root` (its nearest existing ancestor) from
/// `<proc_root>/self/mountinfo`, `/dev/loop-control`, ext4 in `<proc_root>/filesystems`,
/// and the tools on `PATH`.
pub fn probe(proc_root: &Path, dev_root: &Path, disk_root: &Path) -> DiskFacts {
    let mountinfo = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    let mut dir = disk_root.to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            break;
        }
    }
    let fs = fs_of(&mountinfo, &dir);
    let filesystems = std::fs::read_to_string(proc_root.join("filesystems")).unwrap_or_default();
    DiskFacts {
        fs_type: fs.as_ref().map(|f| f.0.clone()),
        fs_options: fs.map(|f| f.1).unwrap_or_default(),
        loop_control: dev_root.join("loop-control").exists(),
        tools: TOOLS
            .iter()
            .map(|t| (t.to_string(), find_tool(t).is_some()))
            .collect(),
        ext4: filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("ext4")),
    }
}

/// The type and superblock options of the mount holding `path` (the longest mount point
/// that is a prefix of it) in a mountinfo text. Pure.
pub fn fs_of(mountinfo: &str, path: &Path) -> Option<(String, Vec<String>)> {
    let mut best: Option<(usize, String, Vec<String>)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mp = Path::new(mount_point);
        if !path.starts_with(mp) {
            continue;
        }
        let mut r = right.split(' ');
        let Some(fs_type) = r.next().map(str::to_string) else {
            continue;
        };
        let _source = r.next();
        let options = r
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect();
        let len = mp.as_os_str().len();
        if best.as_ref().is_none_or(|b| len >= b.0) {
            best = Some((len, fs_type, options));
        }
    }
    best.map(|b| (b.1, b.2))
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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
    #[error("disk limit: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk limit: `{command}` failed: {reason}")]
    Tool { command: String, reason: String },
    #[error("disk limit: {path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("disk limit: the snapshot's mounts have no overlay to bound (got {got})")]
    NoOverlay { got: String },
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

/// The volumes made for one run.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// The root volume's overlay `upper` and `work` directories, when the root is writable.
    pub root: Option<(PathBuf, PathBuf)>,
    /// What was made.
    pub volumes: Vec<Volume>,
}

/// Makes, formats and mounts the volumes of `plan` for run `id` (whose directory is
/// `run_dir`), their images in `disk_root`. The workspace's root directory is made
/// `owner`'s (uid, gid: the sandbox's user as the host sees it). Records each volume in
/// `<run_dir>/disk.json` before it exists, so that [`release`] removes what a failure or a
/// crash leaves; on an error the caller releases.
pub fn provision(
    disk_root: &Path,
    run_dir: &Path,
    id: &str,
    plan: &[Volume],
    owner: (u32, u32),
) -> Result<Provisioned, DiskError> {
    let mut out = Provisioned::default();
    if plan.is_empty() {
        return Ok(out);
    }
    let _lock = lock(run_dir)?;
    if run_dir.join(RELEASED_FILE).exists() {
        // Released (and the run directory emptied) before the lock was ours.
        return Err(DiskError::Record {
            path: run_dir.to_path_buf(),
            reason: "the run was removed while its volumes were being made".into(),
        });
    }
    std::fs::create_dir_all(disk_root).map_err(io(disk_root))?;
    std::fs::set_permissions(disk_root, std::fs::Permissions::from_mode(0o700))
        .map_err(io(disk_root))?;
    let record = Record {
        volumes: plan
            .iter()
            .map(|v| RecordedVolume {
                kind: v.kind,
                image: image_path(disk_root, id, v.kind),
                mount: mount_path(run_dir, v.kind),
            })
            .collect(),
    };
    write_record(run_dir, &record)?;
    for (v, r) in plan.iter().zip(&record.volumes) {
        make_image(&r.image, v)?;
        if let Some(parent) = r.mount.parent() {
            if !parent.exists() {
                std::fs::create_dir(parent).map_err(io(parent))?;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(parent))?;
            }
        }
        std::fs::create_dir(&r.mount).map_err(io(&r.mount))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
            .arg(&r.image)
            .arg(&r.mount))?;
        let lost = r.mount.join("lost+found");
        std::fs::remove_dir(&lost).map_err(io(&lost))?;
        match v.kind {
            VolumeKind::Root => {
                let upper = r.mount.join("upper");
                let work = r.mount.join("work");
                for d in [&upper, &work] {
                    std::fs::create_dir(d).map_err(io(d))?;
                }
                out.root = Some((upper, work));
            }
            VolumeKind::Workspace => {
                std::os::unix::fs::chown(&r.mount, Some(owner.0), Some(owner.1))
                    .map_err(io(&r.mount))?;
                std::fs::set_permissions(&r.mount, std::fs::Permissions::from_mode(0o755))
                    .map_err(io(&r.mount))?;
            }
        }
        out.volumes.push(*v);
    }
    Ok(out)
}

/// A sparse file of the volume's size, formatted ext4: no journal (the volume dies with
/// its sandbox), no reserved blocks (root in the sandbox gets no more than anyone), one
/// inode per [`BYTES_PER_INODE`], inode tables zeroed now (so that no background thread
/// zeroes them after the mount), no discard (the file is new and sparse).
fn make_image(image: &Path, v: &Volume) -> Result<(), DiskError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .map_err(io(image))?;
    f.set_len(v.bytes).map_err(io(image))?;
    drop(f);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-N"])
        .arg(v.inodes.to_string())
        .args([
            "-O",
            "^has_journal,^resize_inode",
            "-E",
            "nodiscard,lazy_itable_init=0",
            "-L",
            "stockade",
        ])
        .arg(image))
}

fn run(cmd: &mut Command) -> Result<(), DiskError> {
    let command = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiskError::Tool {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let reason = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(DiskError::Tool {
        command,
        reason: format!("{}: {reason}", out.status),
    })
}

fn write_record(run_dir: &Path, record: &Record) -> Result<(), DiskError> {
    let path = run_dir.join(RECORD_FILE);
    let tmp = run_dir.join(format!("{RECORD_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&serde_json::to_vec(record).expect("a record serializes"))
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The snapshot's rootfs mounts with the overlay's `upperdir` and `workdir` replaced by
/// `upper` and `work` (the root volume's), the root directory's owner and mode copied from
/// the snapshot's own upper directory so that the sandbox's `/` looks the same. Pure but for
/// that copy, which `copy_root` does. Exactly one overlay mount with both options is
/// expected: anything else is refused, never passed on unbounded.
pub fn bound_rootfs(
    mounts: Vec<Mount>,
    upper: &Path,
    work: &Path,
) -> Result<(Vec<Mount>, PathBuf), DiskError> {
    let describe = |m: &[Mount]| {
        m.iter()
            .map(|m| m.r#type.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let overlays = mounts.iter().filter(|m| m.r#type == "overlay").count();
    if overlays != 1 || mounts.len() != 1 {
        return Err(DiskError::NoOverlay {
            got: describe(&mounts),
        });
    }
    let mut m = mounts.into_iter().next().expect("one mount");
    let mut old_upper = None;
    let mut saw_work = false;
    for o in m.options.iter_mut() {
        if let Some(u) = o.strip_prefix("upperdir=") {
            old_upper = Some(PathBuf::from(u));
            *o = format!("upperdir={}", upper.display());
        } else if o.starts_with("workdir=") {
            saw_work = true;
            *o = format!("workdir={}", work.display());
        }
    }
    match old_upper {
        Some(u) if saw_work => Ok((vec![m], u)),
        _ => Err(DiskError::NoOverlay {
            got: "an overlay without upperdir and workdir".into(),
        }),
    }
}

/// Gives `upper` the owner and mode of `from` (the snapshot's own upper directory); a
/// missing `from` (a fake containerd's) leaves root's 0755.
pub fn copy_root(from: &Path, upper: &Path) -> Result<(), DiskError> {
    let (uid, gid, mode) = match std::fs::metadata(from) {
        Ok(m) => (m.uid(), m.gid(), m.mode() & 0o7777),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0, 0o755),
        Err(e) => return Err(io(from)(e)),
    };
    std::os::unix::fs::chown(upper, Some(uid), Some(gid)).map_err(io(upper))?;
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(mode)).map_err(io(upper))
}

/// Removes the volumes of the run in `run_dir`, as its record names them: unmounts their
/// mount points, detaches every loop device whose backing file is one of its images,
/// removes the images, then the record. Idempotent; nothing recorded, nothing to do.
pub fn release(run_dir: &Path) -> Result<(), DiskError> {
    if !run_dir.exists() {
        return Ok(());
    }
    let _lock = lock(run_dir)?;
    let released = run_dir.join(RELEASED_FILE);
    std::fs::write(&released, b"").map_err(io(&released))?;
    // The root volume's mount point is known without the record: never leave it mounted
    // for the run directory's removal to reach into.
    unmount_all(&run_dir.join(ROOT_MOUNT))?;
    let path = run_dir.join(RECORD_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&path)(e)),
    };
    let record: Record = serde_json::from_slice(&text).map_err(|e| DiskError::Record {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    for v in &record.volumes {
        unmount_all(&v.mount)?;
        match std::fs::remove_dir(&v.mount) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&v.mount)(e)),
            _ => {}
        }
        remove_image(&v.image)?;
    }
    std::fs::remove_file(&path).map_err(io(&path))
}

/// An exclusive `flock` on `<run_dir>/disk.lock` (made if missing), held until dropped.
fn lock(run_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, DiskError> {
    let path = run_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io(&path)(e.into()))
}

/// How many mounts stacked on one mount point are removed at most.
const MAX_STACKED_MOUNTS: usize = 8;

fn unmount_all(p: &Path) -> Result<(), DiskError> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    for _ in 0..MAX_STACKED_MOUNTS {
        match nix::mount::umount2(p, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // Not (or no longer) a mount point.
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io(p)(e.into())),
        }
    }
    Ok(())
}

/// Detaches the loop devices backed by `image` (only those: `losetup -j` names them by
/// backing file) and removes the file.
fn remove_image(image: &Path) -> Result<(), DiskError> {
    for dev in loops_of(image)? {
        // Already detached (the autoclear of the unmount got there first): fine.
        if let Err(e) = run(Command::new("losetup").arg("-d").arg(&dev)) {
            if loops_of(image)?.contains(&dev) {
                return Err(e);
            }
        }
    }
    match std::fs::remove_file(image) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(image)(e)),
        _ => Ok(()),
    }
}

/// The loop devices whose backing file is `image` (`losetup -j`); none when the file does
/// not exist.
pub fn loops_of(image: &Path) -> Result<Vec<String>, DiskError> {
    if !image.exists() {
        return Ok(Vec::new());
    }
    let out = Command::new("losetup")
        .arg("-j")
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiskError::Tool {
            command: format!("losetup -j {}", image.display()),
            reason: e.to_string(),
        })?;
    Ok(parse_losetup_j(&String::from_utf8_lossy(&out.stdout)))
}

/// The device names of `losetup -j` output (`/dev/loop3: [2049]:1234 (/path)`). Pure.
pub fn parse_losetup_j(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_once(':').map(|(d, _)| d.trim().to_string()))
        .filter(|d| d.starts_with("/dev/loop"))
        .collect()
}

/// The run id of an image file name of stockade's (`<id>-root.img`,
/// `<id>-workspace.img`). Pure.
pub fn run_of_image(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".img")?;
    let id = stem
        .strip_suffix("-root")
        .or_else(|| stem.strip_suffix("-workspace"))?;
    id.starts_with(crate::runner::ID_PREFIX).then_some(id)
}

/// Removes the images in `disk_root` whose run has no directory under `fifo_root` any more
/// (a host restart empties a run root on tmpfs, for one),
/// detaching their loop devices first. Images of runs whose directory exists are theirs to
/// release. Returns the images removed.
pub fn reclaim_orphans(disk_root: &Path, fifo_root: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let entries = match std::fs::read_dir(disk_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(disk_root)(e)),
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(run_of_image) else {
            continue;
        };
        if fifo_root.join(id).exists() {
            continue;
        }
        let image = e.path();
        remove_image(&image)?;
        removed.push(image);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
