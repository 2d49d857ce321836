//! Removing a run's volumes as its record names them, and images whose run is gone.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::MntFlags;

use super::provision::run;
use super::{io, DiskError, Record, LOCK_FILE, RECORD_FILE, RELEASED_FILE, ROOT_MOUNT};

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
pub(super) fn lock(run_dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, DiskError> {
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
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
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
