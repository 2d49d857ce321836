//! stockade's own init, pid 1 of long-lived sandboxes: the binary (built from
//! `init/main.rs` by `build.rs` and embedded here), its installation on the host, and the
//! mount that shows it to a sandbox.
//!
//! The init reaps every orphan and holds the sandbox open when run with no arguments, or
//! runs `-- CMD [ARG]...` as its only child, forwarding signals and exiting as the child
//! did (see `init/main.rs`). Either way it is non-dumpable and serves an exec door: a
//! socketpair at fixed fds that only the host can take (`pidfd_getfd`), through which
//! [`crate::sandbox::exec_fast`] starts commands as the init's children (see
//! `init/exec.rs`). It is a static executable, so it needs nothing from the sandbox's
//! image, and it runs under the sandbox's own confinement.
//!
//! [`install`] writes it to `<dir>/<digest prefix>/stockade-init`, where `dir` is a
//! directory only root can change ([`DEFAULT_DIR`] unless told otherwise): the directory
//! and every one above it must be root-owned and writable by nobody else, because runc
//! follows whatever the mount source names when it binds it into a sandbox. The file is
//! written to a temporary name and renamed into place, so a concurrent install or a
//! sandbox starting meanwhile sees either the old file or the whole new one. [`mount`]
//! renders the read-only bind that puts it at [`SANDBOX_PATH`].

use std::fs::{DirBuilder, Metadata};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use oci_spec::runtime::{Mount, MountBuilder};
use thiserror::Error;

/// The init executable, statically linked, as built for this crate's target.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stockade-init"));

/// Where [`install`] puts the init when no directory is given: under `/run`, so it is
/// rewritten after a reboot rather than kept across versions.
pub const DEFAULT_DIR: &str = "/run/stockade/init";

/// The init's file name inside its digest directory.
pub const FILE_NAME: &str = "stockade-init";

/// Where a sandbox sees the init (a read-only bind of the installed file); the path of
/// its pid 1.
pub const SANDBOX_PATH: &str = "/.stockade/init";

/// Hex digits of the SHA-256 naming the directory the init is installed in: 64 bits, so
/// two builds never share one.
const PREFIX_LEN: usize = 16;

/// Mode of the installed init: readable and executable by all (the sandbox user runs it),
/// writable by nobody.
const FILE_MODE: u32 = 0o555;

/// Mode of the directories [`install`] creates.
const DIR_MODE: u32 = 0o755;

/// The installed init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `<dir>/<first 16 hex digits of the digest>/stockade-init`, with `dir` resolved to
    /// an absolute path without symlinks.
    pub path: PathBuf,
    /// `sha256:<hex>` of [`BINARY`].
    pub sha256: String,
}

/// Why the init could not be installed. Each renders as one line naming the directory.
#[derive(Debug, Error)]
pub enum InitError {
    /// A path on the way is not owned by root.
    #[error("installing stockade-init in {}: {} is owned by uid {uid}, not root", dir.display(), path.display())]
    NotRootOwned {
        /// The install directory.
        dir: PathBuf,
        /// The path at fault.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A path on the way is writable by group or others.
    #[error("installing stockade-init in {}: {} is writable by group or others (mode {mode:04o})", dir.display(), path.display())]
    Writable {
        /// The install directory.
        dir: PathBuf,
        /// The path at fault.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A path on the way is not a directory.
    #[error("installing stockade-init in {}: {} is not a directory", dir.display(), path.display())]
    NotDirectory {
        /// The install directory.
        dir: PathBuf,
        /// The path at fault.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("installing stockade-init in {}: {}: {source}", dir.display(), path.display())]
    Io {
        /// The install directory.
        dir: PathBuf,
        /// The path at fault.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// `sha256:<hex>` of [`BINARY`], computed once per process.
pub fn digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| crate::digest::sha256(BINARY))
}

/// Installs the init under `dir` (created 0755 when missing; [`DEFAULT_DIR`] is the usual
/// choice) and returns where it is. An installed file that is root-owned, mode 0555 and
/// holds exactly [`BINARY`] is kept; anything else at that path is replaced. Refused when
/// `dir`, or any directory above it, is not owned by root or is writable by group or
/// others.
pub fn install(dir: &Path) -> Result<Installed, InitError> {
    let io = |path: &Path, source| InitError::Io {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io(dir, e))?;
    let real = dir.canonicalize().map_err(|e| io(dir, e))?;
    // From `/` down: a directory anyone but root could change could be swapped for a link.
    for ancestor in real.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let m = std::fs::symlink_metadata(ancestor).map_err(|e| io(ancestor, e))?;
        trusted(dir, ancestor, &m)?;
    }

    let sha256 = digest();
    let hex = crate::digest::hex_part(sha256);
    let sub = real.join(&hex[..PREFIX_LEN]);
    digest_dir(&sub).map_err(|e| io(&sub, e))?;
    let path = sub.join(FILE_NAME);
    if !current(&path, sha256).map_err(|e| io(&path, e))? {
        write(&sub, &path).map_err(|e| io(&path, e))?;
    }
    Ok(Installed {
        path,
        sha256: sha256.to_string(),
    })
}

/// Root-owned and not writable by group or others (a sticky world-writable directory such
/// as `/tmp` included).
fn trusted(dir: &Path, path: &Path, m: &Metadata) -> Result<(), InitError> {
    if !m.is_dir() {
        return Err(InitError::NotDirectory {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
        });
    }
    if m.uid() != 0 {
        return Err(InitError::NotRootOwned {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            uid: m.uid(),
        });
    }
    if m.mode() & 0o022 != 0 {
        return Err(InitError::Writable {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            mode: m.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Makes `sub` a root-owned 0755 directory, whatever was there (only root can have put
/// anything in the trusted directory above it).
fn digest_dir(sub: &Path) -> std::io::Result<()> {
    match DirBuilder::new().mode(DIR_MODE).create(sub) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut m = std::fs::symlink_metadata(sub)?;
    if !m.is_dir() {
        std::fs::remove_file(sub)?;
        DirBuilder::new().mode(DIR_MODE).create(sub)?;
        m = std::fs::symlink_metadata(sub)?;
    }
    if m.uid() != 0 || m.gid() != 0 {
        std::os::unix::fs::lchown(sub, Some(0), Some(0))?;
    }
    // Also undoes the umask on a directory just created.
    if m.mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(sub, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Whether `path` is already the init: a regular file (not a link), root-owned, mode
/// 0555, whose contents hash to `sha256`.
fn current(path: &Path, sha256: &str) -> std::io::Result<bool> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !m.is_file()
        || m.uid() != 0
        || m.gid() != 0
        || m.mode() & 0o7777 != FILE_MODE
        || m.len() != BINARY.len() as u64
    {
        return Ok(false);
    }
    let contents = std::fs::read(path)?;
    Ok(crate::digest::sha256(&contents) == sha256)
}

/// Writes [`BINARY`] to a temporary file in `sub` and renames it to `path`.
fn write(sub: &Path, path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path)?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".stockade-init-")
        .tempfile_in(sub)?;
    tmp.write_all(BINARY)?;
    std::os::unix::fs::fchown(tmp.as_file(), Some(0), Some(0))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The OCI mount that shows the installed init (`host_path`, from [`Installed::path`]) to a
/// sandbox at [`SANDBOX_PATH`]: a read-only, nosuid, nodev bind of the one file, private
/// so nothing propagates either way. Pure: the spec builder adds it for long-lived
/// sandboxes.
pub fn mount(host_path: &Path) -> Mount {
    MountBuilder::default()
        .destination(SANDBOX_PATH)
        .typ("bind")
        .source(host_path)
        .options(
            ["bind", "rprivate", "ro", "nosuid", "nodev"]
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("every mount field is set")
}

/// The process arguments that run `command` under the init (`[SANDBOX_PATH, "--",
/// command...]`), or hold the sandbox open when `command` is empty (`[SANDBOX_PATH]`).
pub fn args(command: &[String]) -> Vec<String> {
    let mut argv = vec![SANDBOX_PATH.to_string()];
    if !command.is_empty() {
        argv.push("--".to_string());
        argv.extend(command.iter().cloned());
    }
    argv
}

#[cfg(test)]
mod tests;
