//! Making, formatting and mounting a run's volumes, recorded before they exist; and the
//! rootfs mounts that put the overlay's upper layer on the root volume.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use containerd_client::types::Mount;

use super::release::lock;
use super::{
    image_path, io, mount_path, DiskError, Record, RecordedVolume, Volume, VolumeKind, RECORD_FILE,
    RELEASED_FILE,
};

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
/// `<run_dir>/disk.json` before it exists, so that [`super::release`] removes what a failure or a
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

pub(super) fn run(cmd: &mut Command) -> Result<(), DiskError> {
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

pub(super) fn write_record(run_dir: &Path, record: &Record) -> Result<(), DiskError> {
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
    for o in &mut m.options {
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
