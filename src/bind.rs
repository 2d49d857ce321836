//! Host directories mounted into a sandbox (`/workspace`, `/input`), mounted so that no
//! process on the host can redirect the mount to another directory.
//!
//! The threat: `mount(2)` resolves its source path when it runs, following symbolic links,
//! and the runtime mounts whatever path string the spec names. Any process that can write a
//! directory on that path (another sandbox whose workspace is the parent, another host
//! user) can swap a component for a link to `/etc` between the check and the mount, or
//! leave a link that a later run follows. So:
//!
//! 1. Validation ([`resolve`]) opens the directory with `openat2(RESOLVE_NO_SYMLINKS)`: no
//!    component of the path may be a symbolic link, and the result carries the directory's
//!    identity (device, inode). The identity is part of the validated policy and so of its
//!    hash: a pooled sandbox made for one directory never serves a request for another
//!    directory at the same path.
//! 2. The run ([`stage`]) opens the path the same way again, checks the identity, and
//!    bind-mounts the open descriptor (not the path) onto `<run dir>/binds/<name>`, a
//!    directory only root can reach. The spec names that staging path, so the runtime
//!    mounts a path nobody else can change.
//! 3. After the task is created and before it starts ([`verify_in_task`]), what the
//!    sandbox sees at `/workspace` and `/input` is checked from the host against the
//!    identity; the run is aborted otherwise.
//!
//! The staging mounts are removed with the run directory ([`unstage`] runs before it is
//! removed, and never removes anything it did not create).

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::mount::MntFlags;
use serde::Serialize;
use thiserror::Error;

/// Directories beneath which a bind source may lie when `STOCKADE_BIND_ROOTS` is unset.
/// A root itself is never mounted, only directories strictly beneath it: `/tmp/job` may be
/// a workspace, `/tmp` (every host user's temporary files) may not. System directories
/// (`/etc`, `/usr`, `/var/lib`, `/opt`, `/root`, …) are not roots at all.
pub const DEFAULT_BIND_ROOTS: &[&str] = &["/home", "/srv", "/tmp", "/var/tmp", "/mnt"];

/// Environment variable that replaces [`DEFAULT_BIND_ROOTS`]: absolute directories
/// separated by `:`.
pub const BIND_ROOTS_ENV: &str = "STOCKADE_BIND_ROOTS";

/// The directory, below a run directory, that holds the staging mounts.
pub const STAGING_DIR: &str = "binds";

/// The names of the staging mounts of the workspace and the input; `-v` binds are staged
/// as [`extra_name`]s.
pub const STAGED_NAMES: &[&str] = &["workspace", "input"];

/// The staging name of a policy's `-v` bind number `index`: `bind-<index>`.
pub fn extra_name(index: usize) -> String {
    format!("bind-{index}")
}

/// Whether `name` is one [`stage`] makes: [`STAGED_NAMES`] or an [`extra_name`].
fn is_staged_name(name: &str) -> bool {
    STAGED_NAMES.contains(&name)
        || name
            .strip_prefix("bind-")
            .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How many mounts stacked on one staging path [`unstage`] removes before giving up.
const MAX_STACKED_MOUNTS: usize = 8;

/// Errors of resolving, staging and verifying bind sources. Each renders as one line.
#[derive(Debug, Error)]
pub enum BindError {
    /// A bind source could not be resolved safely.
    #[error("{}: {reason}", path.display())]
    Resolve {
        /// The path given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The directory was replaced between validation and the run.
    #[error("{name} {}: the directory changed since the policy was validated (was device {} inode {}, now device {} inode {}); not mounted", want.path.display(), want.dev, want.ino, got_dev, got_ino)]
    Changed {
        /// The bind's name (`workspace`, `input`, a `-v` destination).
        name: String,
        /// The directory as validated.
        want: HostDir,
        /// The device seen now.
        got_dev: u64,
        /// The inode seen now.
        got_ino: u64,
    },
    /// Resolving bind `name` failed when the run staged it.
    #[error("{name} {inner}")]
    Named {
        /// The bind's name.
        name: String,
        /// The resolution error.
        inner: Box<BindError>,
    },
    /// Making the staging mount failed.
    #[error("staging {}: {source}", path.display())]
    Stage {
        /// The staging path.
        path: PathBuf,
        /// The mount error.
        source: std::io::Error,
    },
    /// The ID-mapped mount of a bind failed.
    #[error("{name}: {source}")]
    Mount {
        /// The bind's name.
        name: String,
        /// The ID-mapping error.
        source: crate::idmap::IdmapError,
    },
    /// The sandbox's user could not create files in the workspace.
    #[error("workspace {}: not writable by the sandbox's user {uid}:{gid} (owner {owner}:{group}, mode {mode:04o}); give it to that user with --workspace-owner sandbox (policy: filesystem.workspace_owner = \"sandbox\") or `chown {uid}:{gid} {}`", path.display(), path.display())]
    NotWritable {
        /// The workspace directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its group.
        group: u32,
        /// Its mode bits.
        mode: u32,
        /// The sandbox's UID.
        uid: u32,
        /// The sandbox's GID.
        gid: u32,
    },
    /// What the sandbox sees at a bind's destination is not the validated directory.
    #[error("{name}: the sandbox sees {seen} at {dest}, not {} (device {} inode {}); the run was aborted before it started", want.path.display(), want.dev, want.ino)]
    Mismatch {
        /// The bind's name.
        name: String,
        /// Its destination inside the sandbox.
        dest: String,
        /// The directory as validated.
        want: HostDir,
        /// What was seen there instead.
        seen: String,
    },
}

/// A host directory as validated: its absolute, symlink-free path and its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostDir {
    /// Absolute, without symbolic links.
    pub path: PathBuf,
    /// The device number.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
}

/// `path` made absolute against `cwd`, with `.` components dropped; `None` when it holds
/// `..` (refused rather than guessed at: which directory `a/..` is depends on links).
pub fn absolute(path: &Path, cwd: &Path) -> Option<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The first root in `roots` that `path` lies strictly beneath.
pub fn beneath_root<'a>(path: &Path, roots: &'a [PathBuf]) -> Option<&'a PathBuf> {
    roots
        .iter()
        .find(|r| path != r.as_path() && path.starts_with(r))
}

/// The bind roots from `STOCKADE_BIND_ROOTS`'s value, or the defaults when it is unset or
/// empty. Entries that are not absolute are ignored.
pub fn roots_from(value: Option<&str>) -> Vec<PathBuf> {
    let parsed: Vec<PathBuf> = value
        .unwrap_or_default()
        .split(':')
        .filter(|s| s.starts_with('/'))
        .filter_map(|s| absolute(Path::new(s), Path::new("/")))
        .collect();
    if parsed.is_empty() {
        DEFAULT_BIND_ROOTS.iter().map(PathBuf::from).collect()
    } else {
        parsed
    }
}

fn open_no_symlinks(path: &Path) -> Result<(OwnedFd, HostDir), std::io::Error> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    let fd = rustix::fs::openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let st = rustix::fs::fstat(&fd)?;
    Ok((
        fd,
        HostDir {
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
        },
    ))
}

/// Opens the absolute directory `path` without following a symbolic link in any of its
/// components and returns its identity; the error says why in words.
pub fn resolve(path: &Path) -> Result<HostDir, BindError> {
    open_no_symlinks(path)
        .map(|(_, d)| d)
        .map_err(|e| unreadable(path, e))
}

fn unreadable(path: &Path, e: std::io::Error) -> BindError {
    BindError::Resolve {
        path: path.to_path_buf(),
        reason: match e.raw_os_error() {
            Some(nix::libc::ELOOP | nix::libc::EXDEV) => {
                "a component of the path is a symbolic link (bind sources are opened without following links: give the real path)".to_string()
            }
            Some(nix::libc::ENOENT) => "no such directory".to_string(),
            Some(nix::libc::ENOTDIR) => "not a directory".to_string(),
            _ => e.to_string(),
        },
    }
}

/// Checks that each directory still resolves, without links, to the same identity: a
/// long-lived holder of a policy (a pool) asks before it serves or refills.
pub fn check_unchanged<'a>(dirs: impl IntoIterator<Item = &'a HostDir>) -> Result<(), BindError> {
    for want in dirs {
        same_directory("bind source", want, &resolve(&want.path)?)?;
    }
    Ok(())
}

/// `got` (just opened) is the directory `want` was validated as, or the error saying so.
fn same_directory(name: &str, want: &HostDir, got: &HostDir) -> Result<(), BindError> {
    if (got.dev, got.ino) == (want.dev, want.ino) {
        return Ok(());
    }
    Err(BindError::Changed {
        name: name.to_string(),
        want: want.clone(),
        got_dev: got.dev,
        got_ino: got.ino,
    })
}

/// Mounts each `(name, dir)` at `<run_dir>/binds/<name>`: the directory is opened without
/// following links, its identity checked against `dir`, and a detached copy of the open
/// descriptor's mount (not the path) is attached there; `read_only` ones read-only, nosuid
/// and nodev. With `idmap`, every staging mount maps IDs through that user namespace (see
/// [`crate::idmap`]). On failure, what was mounted is unmounted again.
pub fn stage(
    run_dir: &Path,
    binds: &[(&str, &HostDir, bool)],
    idmap: Option<&crate::idmap::UserNs>,
) -> Result<(), BindError> {
    if binds.is_empty() {
        return Ok(());
    }
    let r = stage_all(run_dir, binds, idmap);
    if r.is_err() {
        if let Err(e) = unstage(run_dir) {
            tracing::warn!("{e}");
        }
    }
    r
}

fn stage_all(
    run_dir: &Path,
    binds: &[(&str, &HostDir, bool)],
    idmap: Option<&crate::idmap::UserNs>,
) -> Result<(), BindError> {
    use std::os::fd::AsFd;
    let staging = run_dir.join(STAGING_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| BindError::Stage { path, source }
    };
    mkdir_private(&staging).map_err(io(&staging))?;
    for (name, want, read_only) in binds {
        let named = |source| BindError::Mount {
            name: name.to_string(),
            source,
        };
        let (fd, got) = open_no_symlinks(&want.path).map_err(|e| BindError::Named {
            name: name.to_string(),
            inner: Box::new(unreadable(&want.path, e)),
        })?;
        same_directory(name, want, &got)?;
        let target = staging.join(name);
        mkdir_private(&target).map_err(io(&target))?;
        let attrs = crate::idmap::Attrs {
            read_only: *read_only,
            idmap: idmap.map(|u| u.as_fd()),
        };
        let tree = crate::idmap::clone_dir(fd.as_fd(), &want.path, attrs).map_err(named)?;
        crate::idmap::attach(tree, &target).map_err(named)?;
        let seen = std::fs::symlink_metadata(&target).map_err(io(&target))?;
        use std::os::unix::fs::MetadataExt;
        if (seen.dev(), seen.ino()) != (want.dev, want.ino) {
            return Err(BindError::Mismatch {
                name: name.to_string(),
                dest: target.display().to_string(),
                want: (*want).clone(),
                seen: format!("device {} inode {}", seen.dev(), seen.ino()),
            });
        }
    }
    Ok(())
}

/// Whether the directory `dir` can be mounted ID-mapped through `userns` (its filesystem
/// supports it): a detached copy is made and dropped again. `Ok(false)` when the
/// filesystem refuses; an error when the directory cannot be opened as validated.
pub fn idmap_supported(
    name: &str,
    dir: &HostDir,
    userns: &crate::idmap::UserNs,
) -> Result<bool, BindError> {
    use std::os::fd::AsFd;
    let (fd, _) = open_no_symlinks(&dir.path).map_err(|e| BindError::Named {
        name: name.to_string(),
        inner: Box::new(unreadable(&dir.path, e)),
    })?;
    let attrs = crate::idmap::Attrs {
        read_only: false,
        idmap: Some(userns.as_fd()),
    };
    match crate::idmap::clone_dir(fd.as_fd(), &dir.path, attrs) {
        Ok(_) => Ok(true),
        Err(crate::idmap::IdmapError::Unsupported { .. }) => Ok(false),
        Err(e) => Err(BindError::Mount {
            name: name.to_string(),
            source: e,
        }),
    }
}

/// Whether a directory owned by `owner:group` with `mode` lets `uid:gid` (no supplementary
/// groups, no capabilities) create files in it: write and search permission for the class
/// the user falls in (owner, else group, else others). Pure.
pub fn writable_by(owner: u32, group: u32, mode: u32, uid: u32, gid: u32) -> bool {
    let bits = if owner == uid {
        mode >> 6
    } else if group == gid {
        mode >> 3
    } else {
        mode
    };
    bits & 0o3 == 0o3
}

/// Makes sure `uid:gid` (the policy's user: what a sandbox with a UID of its own writes as
/// on disk, through its ID-mapped mount) can create files in the workspace `dir`, checked
/// before anything of the sandbox runs. When it cannot: with `give`, the directory itself
/// (not what it holds) is opened as validated (no links, same identity) and handed to
/// `uid:gid` through that descriptor, so what the sandbox writes belongs on the host to
/// that one stable user and never to a per-sandbox UID; without it, the one-line refusal
/// [`BindError::NotWritable`] says how. Returns whether the owner was changed.
pub fn ensure_writable(dir: &HostDir, uid: u32, gid: u32, give: bool) -> Result<bool, BindError> {
    let (fd, got) = open_no_symlinks(&dir.path).map_err(|e| BindError::Named {
        name: "workspace".to_string(),
        inner: Box::new(unreadable(&dir.path, e)),
    })?;
    same_directory("workspace", dir, &got)?;
    let stat = |fd: &OwnedFd| {
        rustix::fs::fstat(fd).map_err(|e| BindError::Stage {
            path: dir.path.clone(),
            source: e.into(),
        })
    };
    let st = stat(&fd)?;
    if writable_by(st.st_uid, st.st_gid, st.st_mode, uid, gid) {
        return Ok(false);
    }
    let refused = |st: &rustix::fs::Stat| BindError::NotWritable {
        path: dir.path.clone(),
        owner: st.st_uid,
        group: st.st_gid,
        mode: st.st_mode & 0o7777,
        uid,
        gid,
    };
    if !give {
        return Err(refused(&st));
    }
    rustix::fs::chownat(
        &fd,
        "",
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::EMPTY_PATH,
    )
    .map_err(|e| BindError::Stage {
        path: dir.path.clone(),
        source: e.into(),
    })?;
    let st = stat(&fd)?;
    if !writable_by(st.st_uid, st.st_gid, st.st_mode, uid, gid) {
        return Err(refused(&st));
    }
    tracing::info!(path = %dir.path.display(), uid, gid, "workspace given to the sandbox's user");
    Ok(true)
}

fn mkdir_private(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(p)
}

/// The staging path of bind `name` for the run directory `run_dir`.
pub fn staged_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(STAGING_DIR).join(name)
}

/// Unmounts and removes the staging mounts of `run_dir`. Only ever unmounts and removes
/// empty directories (`rmdir`): if a mount cannot be removed, the error says so and the
/// caller must not remove the run directory recursively. Nothing staged: nothing to do.
pub fn unstage(run_dir: &Path) -> Result<(), BindError> {
    let staging = run_dir.join(STAGING_DIR);
    if !exists(&staging) {
        return Ok(());
    }
    let entries = std::fs::read_dir(&staging).map_err(|source| BindError::Stage {
        path: staging.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_staged_name(n))
        .collect();
    names.sort();
    for name in names {
        let p = staging.join(&name);
        for _ in 0..MAX_STACKED_MOUNTS {
            match nix::mount::umount2(&p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => continue,
                // Not (or no longer) a mount point.
                Err(nix::errno::Errno::EINVAL) => break,
                Err(e) => {
                    return Err(BindError::Stage {
                        path: p,
                        source: e.into(),
                    })
                }
            }
        }
        std::fs::remove_dir(&p).map_err(|source| BindError::Stage {
            path: p.clone(),
            source,
        })?;
    }
    std::fs::remove_dir(&staging).map_err(|source| BindError::Stage {
        path: staging.clone(),
        source,
    })
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Checks from the host that the created (not yet started) task whose pid 1 is `pid` sees
/// each `(name, destination, dir)` at its destination: the same directory by device and
/// inode. Read through `<proc_root>/<pid>/root`, without following a link at the end.
pub fn verify_in_task(
    proc_root: &Path,
    pid: u32,
    binds: &[(&str, &str, &HostDir)],
) -> Result<(), BindError> {
    use std::os::unix::fs::MetadataExt;
    let root = proc_root.join(pid.to_string()).join("root");
    for (name, dest, want) in binds {
        let p = root.join(dest.trim_start_matches('/'));
        let seen = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() && (m.dev(), m.ino()) == (want.dev, want.ino) => {
                continue
            }
            Ok(m) if m.file_type().is_dir() => format!("device {} inode {}", m.dev(), m.ino()),
            Ok(_) => "something other than a directory".to_string(),
            Err(e) => format!("nothing readable ({e})"),
        };
        return Err(BindError::Mismatch {
            name: name.to_string(),
            dest: dest.to_string(),
            want: (*want).clone(),
            seen,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
