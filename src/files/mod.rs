//! Copying files into and out of a sandbox as tar streams (`stockade cp`, `Sandbox::put`,
//! `Sandbox::get`), with a running and hostile sandbox on the other side.
//!
//! Both directions work on a directory descriptor for the sandbox's root ([`open_root`]):
//! `/proc/<pid>/root` of a running sandbox (its mounts included), or the mounted root
//! filesystem of a stopped one. No host path is ever built from a sandbox path.
//!
//! # The threat
//! stockade runs as root on the host; the sandbox's processes may change their files while
//! a copy runs: swap a directory for a symbolic link to `/`, leave a FIFO where a file was,
//! hard-link a file, rename what the copy just created. So:
//!
//! - The path named by the caller (`DST`, `SRC`) is resolved with `openat2` and
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` relative to the root: a symbolic link on the
//!   way is followed as the sandbox would follow it (`/var/run -> /run` works), and
//!   whatever it names, it stays inside the root. `/proc/<pid>/...` magic links are never
//!   followed.
//! - Beneath that point, every name is resolved with `RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` relative to a descriptor held on the
//!   directory, one archive name at a time: the copy never follows a link, whoever made
//!   it. A link where a directory is needed refuses the entry.
//! - Mount points are crossed (no `RESOLVE_NO_XDEV`): the sandbox's `/tmp` tmpfs and its
//!   `/workspace` bind are mounts and must be reachable. The sandbox cannot add mounts of
//!   its own to the namespace its root belongs to (it has no `CAP_SYS_ADMIN`; a namespace
//!   it unshares is not the one `/proc/<pid>/root` shows), so every mount reached is one
//!   the runtime made. Of those, the kernel's pseudo filesystems (proc, sysfs, cgroup,
//!   devpts, mqueue, …) answer with the host's credentials, not the sandbox's: stockade
//!   neither writes there nor reads there (see [`pseudo_filesystem`]).
//!
//! [`put`] and [`get`] document the rules of each direction.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use thiserror::Error;

mod dest;
mod get;
mod put;
mod reader;
mod stat;

pub use get::{get, GetOptions, GetSummary, MAX_DEPTH};
pub use put::{put, OwnerMap, PutOptions, PutSummary};
pub use stat::{stat, PathStat};

/// Limits of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Content bytes, over all entries (the size fields of an archive's members for `put`,
    /// the bytes of regular files read for `get`). Default 1 GiB.
    pub max_bytes: u64,
    /// Entries (files, directories, links) in the archive. Default 100 000.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
            max_entries: 100_000,
        }
    }
}

/// How a server answers a [`FilesError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 404: the path named does not exist in the sandbox.
    NotFound,
    /// 400: the request or the archive is refused.
    Invalid,
    /// 409: the request conflicts with what is in the sandbox.
    Conflict,
    /// 500: the host failed.
    Internal,
}

/// Errors of copying files into and out of a sandbox. Each renders as one line; names and
/// paths from the archive or the sandbox are escaped.
#[derive(Debug, Error)]
pub enum FilesError {
    /// The path (or, for a copy in, the destination's parent directory) does not exist.
    #[error("{path}: no such file or directory in the sandbox")]
    NotFound {
        /// The path, escaped.
        path: String,
    },
    /// The path is not usable as asked (a directory onto a file, a FIFO as destination, a
    /// pseudo filesystem, …).
    #[error("{path}: {reason}")]
    Conflict {
        /// The path, escaped.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The path given by the caller is malformed.
    #[error("{path}: {reason}")]
    BadPath {
        /// The path, escaped.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An archive entry is refused; nothing after it was written.
    #[error("archive entry `{entry}` refused: {reason}")]
    Refused {
        /// The entry's name, escaped.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The stream is not a readable tar archive (truncated, corrupt).
    #[error("not a readable tar archive: {reason}")]
    BadArchive {
        /// What the tar reader said.
        reason: String,
    },
    /// A limit of [`Limits`] was reached.
    #[error("{what} limit of {limit} reached at `{entry}`")]
    Limit {
        /// Which limit (`byte`, `entry count`, `directory depth`, …).
        what: &'static str,
        /// Its value.
        limit: u64,
        /// The entry at which it was reached, escaped.
        entry: String,
    },
    /// A system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The path, escaped.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl FilesError {
    /// How a server answers this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            FilesError::NotFound { .. } => ErrorClass::NotFound,
            FilesError::Conflict { .. } => ErrorClass::Conflict,
            FilesError::BadPath { .. }
            | FilesError::Refused { .. }
            | FilesError::BadArchive { .. }
            | FilesError::Limit { .. } => ErrorClass::Invalid,
            FilesError::Io { .. } => ErrorClass::Internal,
        }
    }
}

/// A name or path on one line, as errors show it.
pub(crate) fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// Opens the sandbox's root: `/proc/<pid>/root` (a magic link, followed on purpose: the
/// path is the host's, built by stockade) or a mounted root filesystem.
pub fn open_root(path: &Path) -> Result<OwnedFd, FilesError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FilesError::Io {
        path: path.display().to_string(),
        source: e.into(),
    })
}

/// An `O_PATH` descriptor on `path` of the sandbox whose root is `root` (a file or a
/// directory), resolved as the sandbox would resolve it and never out of the root.
pub fn open_path_in_root(root: impl AsFd, path: &str) -> Result<OwnedFd, FilesError> {
    open_in_root(root, path.as_bytes(), OFlags::PATH).map_err(|e| match e {
        rustix::io::Errno::NOENT => FilesError::NotFound {
            path: shown(path.as_bytes()),
        },
        e => FilesError::Io {
            path: shown(path.as_bytes()),
            source: e.into(),
        },
    })
}

/// Resolution of the caller's path relative to the sandbox's root.
fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Resolution beneath a directory already held: never through a link of any kind.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// How often a resolution is retried when the kernel saw a concurrent rename or mount
/// (`EAGAIN`, possible with `..` under `RESOLVE_IN_ROOT`).
const RESOLVE_RETRIES: usize = 16;

fn openat2_retry(
    dir: impl AsFd,
    path: &[u8],
    flags: OFlags,
    mode: Mode,
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let dir = dir.as_fd();
    let path = if path.is_empty() { &b"."[..] } else { path };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, how) {
            Err(rustix::io::Errno::AGAIN) if tries < RESOLVE_RETRIES => tries += 1,
            r => return r,
        }
    }
}

/// Opens the caller's `path` (a sandbox path; absolute or not, it is taken from the root)
/// inside the root, following links the way the sandbox would, never out of the root.
fn open_in_root(root: impl AsFd, path: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel: &[u8] = {
        let mut p = path;
        while let [b'/', rest @ ..] = p {
            p = rest;
        }
        p
    };
    openat2_retry(root, rel, flags, Mode::empty(), in_root())
}

/// Opens `name` (relative, no `..`) beneath `dir` without following any link.
fn open_beneath(
    dir: impl AsFd,
    name: &[u8],
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    openat2_retry(dir, name, flags, mode, beneath())
}

/// The name of the kernel pseudo filesystem that `fd` lies on, if it does. These answer
/// with the credentials of whoever opens them: a host root reading `/proc/kallsyms` or
/// creating a directory in a cgroup filesystem through the sandbox's mounts would reach
/// the host kernel, not the sandbox's files. Neither direction touches them.
pub fn pseudo_filesystem(fd: impl AsFd) -> rustix::io::Result<Option<&'static str>> {
    const PSEUDO: &[(i64, &str)] = &[
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x1cd1, "devpts"),
        (0x1980_0202, "mqueue"),
        (0x7363_6673, "securityfs"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0xcafe_4a11, "bpf"),
        (0xf97c_ff8c, "selinuxfs"),
        (0x4341_5d53, "smackfs"),
        (0x6165_676c, "pstore"),
        (0x6265_6570, "configfs"),
        (0xde5e_81e4, "efivarfs"),
        (0x6573_5543, "fusectl"),
        (0x6e73_6673, "nsfs"),
        (0x4249_4e4d, "binfmt_misc"),
    ];
    let st = rustix::fs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    Ok(PSEUDO.iter().find(|(m, _)| *m == kind).map(|(_, n)| *n))
}

/// A caller's sandbox path split for `docker cp`: its parent, its last component, and
/// what its spelling asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CallerPath<'a> {
    /// Everything before the last component (may be empty: the root).
    parent: &'a [u8],
    /// The last component; empty when the path names the root.
    base: &'a [u8],
    /// The path ends with `/` or `/.`: it must be a directory (and a final link is
    /// followed).
    asserts_dir: bool,
    /// The path ends with `/.` (or is `.`): a directory's contents, not the directory.
    contents: bool,
}

impl<'a> CallerPath<'a> {
    fn parse(path: &'a [u8]) -> Result<Self, FilesError> {
        let bad = |reason: &str| FilesError::BadPath {
            path: shown(path),
            reason: reason.to_string(),
        };
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        if path.contains(&0) {
            return Err(bad("has a NUL byte"));
        }
        let mut p = path;
        let mut contents = false;
        if p == b"." || p.ends_with(b"/.") {
            contents = true;
            p = &p[..p.len() - 1];
        }
        let asserts_dir = contents || p.is_empty() || p.ends_with(b"/");
        while let [rest @ .., b'/'] = p {
            p = rest;
        }
        let (parent, base) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (&b""[..], p),
        };
        if base == b".." || base == b"." {
            return Err(bad(
                "ends with `..` or `.` in the middle; name the directory",
            ));
        }
        Ok(CallerPath {
            parent,
            base,
            asserts_dir,
            contents,
        })
    }
}

#[cfg(test)]
mod tests;
