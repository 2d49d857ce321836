//! The per-run directory `<fifo_root>/<id>/` holding the stdio FIFOs the shim connects to,
//! and an `owner` file with the pid of the stockade process responsible for the run. The
//! directory doubles as the "run in progress" marker: it is removed last, so a directory
//! whose owner is dead marks a run that crashed and whose objects must be reclaimed.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use tokio::net::unix::pipe;

/// Default parent of the per-run FIFO directories.
pub const DEFAULT_FIFO_ROOT: &str = "/run/stockade/fifo";
/// The file in a run directory naming its owner's pid.
pub const OWNER_FILE: &str = "owner";

/// A run directory and the FIFOs in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunDir {
    /// The stdin FIFO; absent when the run has no stdin.
    pub stdin: Option<PathBuf>,
    /// The stdout FIFO (with a terminal, it carries both streams).
    pub stdout: PathBuf,
    /// Absent with a terminal: the pty carries both streams.
    pub stderr: Option<PathBuf>,
}

/// The read ends of the output FIFOs and the write end of stdin, opened before the task is
/// created (the shim's blocking open of the write end would otherwise wait for a reader).
#[derive(Debug)]
pub struct Opened {
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    pub stderr: Option<pipe::Receiver>,
}

/// Creates `<root>/<id>/` (mode 0700) with its FIFOs (mode 0600) and owner file, and opens
/// our ends non-blocking. Must run inside a Tokio runtime.
pub fn create(
    root: &Path,
    id: &str,
    stdin: bool,
    terminal: bool,
) -> std::io::Result<(RunDir, Opened)> {
    mark(root, id)?;
    create_fifos(root, id, stdin, terminal)
}

/// Creates `<root>/<id>/` (mode 0700) with its owner file only: the "run in progress"
/// marker, made before any containerd object exists (a pooled sandbox gets it when it is
/// prepared, its FIFOs when it is used).
pub fn mark(root: &Path, id: &str) -> std::io::Result<()> {
    if !root.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)?;
    }
    let path = root.join(id);
    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
    write_owner(&path, std::process::id())
}

/// Creates the FIFOs (mode 0600) in the existing run directory `<root>/<id>/` and opens
/// our ends non-blocking. Must run inside a Tokio runtime.
pub fn create_fifos(
    root: &Path,
    id: &str,
    stdin: bool,
    terminal: bool,
) -> std::io::Result<(RunDir, Opened)> {
    let path = root.join(id);
    let fifo = |name: &str| -> std::io::Result<PathBuf> {
        let p = path.join(name);
        nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).map_err(std::io::Error::from)?;
        Ok(p)
    };
    let dir = RunDir {
        stdin: if stdin { Some(fifo("stdin")?) } else { None },
        stdout: fifo("stdout")?,
        stderr: if terminal {
            None
        } else {
            Some(fifo("stderr")?)
        },
    };
    let opened = open(&dir)?;
    Ok((dir, opened))
}

/// Opens our ends of the FIFOs of `dir` non-blocking: the output FIFOs' read ends and
/// stdin's write end. Must run inside a Tokio runtime.
pub fn open(dir: &RunDir) -> std::io::Result<Opened> {
    Ok(Opened {
        // Read-write so the open does not fail (ENXIO) before the shim opens its read end.
        stdin: match &dir.stdin {
            Some(p) => Some(pipe::OpenOptions::new().read_write(true).open_sender(p)?),
            None => None,
        },
        stdout: pipe::OpenOptions::new().open_receiver(&dir.stdout)?,
        stderr: match &dir.stderr {
            Some(p) => Some(pipe::OpenOptions::new().open_receiver(p)?),
            None => None,
        },
    })
}

/// Records `pid` as the process responsible for the run in `dir` (atomically replacing any
/// previous owner, e.g. when a cleanup helper takes over).
pub fn write_owner(dir: &Path, pid: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{OWNER_FILE}.{pid}"));
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, dir.join(OWNER_FILE))
}

/// The pid recorded in `dir`, if any.
pub fn read_owner(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes a run directory and everything in it; a missing directory is fine. Its bind
/// staging mounts are unmounted first (see [`crate::bind::unstage`]); if one cannot be, the
/// directory stays, so that removal never reaches into a mounted host directory.
pub fn remove(root: &Path, id: &str) -> std::io::Result<()> {
    // The network (veth, namespace file, address, rules), recorded in the directory.
    crate::network::release(&root.join(id)).map_err(std::io::Error::other)?;
    // A stopped sandbox's root mounted for a copy (left by a process that died in one).
    crate::sandbox::stopped::reclaim(&root.join(id), None)?;
    // The disk volumes first: the managed workspace is mounted at a staging path.
    crate::disk::release(&root.join(id)).map_err(std::io::Error::other)?;
    crate::bind::unstage(&root.join(id)).map_err(std::io::Error::other)?;
    match std::fs::remove_dir_all(root.join(id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[tokio::test]
    async fn creates_private_fifos_and_an_owner_file() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("fifo");
        let (dir, opened) = create(&root, "stk-x", true, false).unwrap();
        let path = root.join("stk-x");
        assert_eq!(dir.stdout, path.join("stdout"));
        for p in [
            dir.stdin.as_ref().unwrap(),
            &dir.stdout,
            dir.stderr.as_ref().unwrap(),
        ] {
            let m = std::fs::metadata(p).unwrap();
            assert!(m.file_type().is_fifo(), "{}", p.display());
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        assert_eq!(read_owner(&path), Some(std::process::id()));
        assert!(opened.stdin.is_some() && opened.stderr.is_some());
        drop(opened);
        remove(&root, "stk-x").unwrap();
        assert!(!path.exists());
        remove(&root, "stk-x").unwrap();
    }

    #[tokio::test]
    async fn a_terminal_run_has_no_stderr_fifo_and_an_id_is_never_reused() {
        let t = tempfile::tempdir().unwrap();
        let (dir, opened) = create(t.path(), "stk-t", false, true).unwrap();
        assert!(dir.stderr.is_none() && dir.stdin.is_none());
        assert!(opened.stderr.is_none());
        let again = create(t.path(), "stk-t", false, true).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn owner_is_replaced_atomically() {
        let t = tempfile::tempdir().unwrap();
        write_owner(t.path(), 10).unwrap();
        write_owner(t.path(), 20).unwrap();
        assert_eq!(read_owner(t.path()), Some(20));
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
