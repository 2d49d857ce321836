//! The OCI runtime binary the runc shim drives, checked and identified before any run.
//!
//! A requested binary (`--runc-binary` / `STOCKADE_RUNC_BINARY`, or the builder's
//! `runc_binary`) becomes a [`RuntimeBinary`]: its absolute path with every symlink
//! resolved, which is what the shim is given, and the SHA-256 of its contents. It is
//! refused when it could be swapped or altered by anyone but root:
//!
//! - a bare name (no `/`) is looked up on `PATH` by stockade (absolute entries only), and
//!   the first regular executable file found is the one checked (as `execvp` would pick it);
//!   a relative path containing `/` is refused;
//! - symlinks are resolved, and the target is what is checked and what runs: the shim is
//!   handed the resolved path, so the link itself plays no part in the run;
//! - the target must be a regular file with an execute bit, owned by root, not writable by
//!   group or others, and so must every directory from `/` down to it (a sticky
//!   world-writable directory such as `/tmp` is refused too).
//!
//! The default runtime (no binary requested) is identified the same way: `runc` on the
//! `PATH` of the containerd answering on the socket (the shim inherits containerd's
//! environment), else on stockade's own `PATH`; [`RuntimeBinary::default`] is then `true`.
//!
//! Hashing runc (≈9 MB) costs about 13 ms of CPU, on every short-lived CLI process: so
//! digests are cached in the process and on disk in a root-only directory (the runner's
//! [`DEFAULT_DIGEST_CACHE`]), keyed by (path, device, inode, size, mtime and ctime). The
//! ctime cannot be set from userspace and changes on every write, chmod or chown, and the
//! binary (checked above) can only be changed by root, who could change the cache too.

mod digests;

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use digests::digest;

/// Where digests of runtime binaries are kept across processes (see the module
/// documentation); a runner's `digest_cache` setting replaces it.
pub const DEFAULT_DIGEST_CACHE: &str = "/run/stockade/digests";

/// The runtime the runc shim runs when it is given no binary.
pub const DEFAULT_BINARY: &str = "runc";

/// A runtime binary that passed the checks: what the shim runs, and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeBinary {
    /// Absolute, symlinks resolved.
    pub path: PathBuf,
    /// `sha256:<hex>` of the file's contents.
    pub sha256: String,
    /// The shim's own runtime (`runc` on containerd's `PATH`), not one asked for.
    pub default: bool,
}

/// Which binary was asked for, for the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// By `--runc-binary` / `STOCKADE_RUNC_BINARY`.
    Flag(String),
    /// The shim's default, `runc`.
    Default,
}

impl std::fmt::Display for Requested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requested::Flag(b) => write!(f, "--runc-binary (STOCKADE_RUNC_BINARY) `{b}`"),
            Requested::Default => write!(f, "default runtime `{DEFAULT_BINARY}`"),
        }
    }
}

/// Why a runtime binary is refused. Each renders as one line naming what was asked for.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(
        "{requested}: a relative path; give an absolute path or a bare name looked up on PATH"
    )]
    /// The binary was named by a relative path.
    Relative {
        /// What was asked for.
        requested: Requested,
    },
    /// A bare name that is in no directory of `PATH`.
    #[error("{requested}: not found on PATH ({path})")]
    NotFound {
        /// What was asked for.
        requested: Requested,
        /// The `PATH` searched.
        path: String,
    },
    /// The binary could not be inspected.
    #[error("{requested}: {}: {source}", path.display())]
    Io {
        /// What was asked for.
        requested: Requested,
        /// The binary's path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The path is not a regular file.
    #[error("{requested}: {}: not a regular file", path.display())]
    NotRegular {
        /// What was asked for.
        requested: Requested,
        /// The binary's path.
        path: PathBuf,
    },
    /// The file has no execute bit.
    #[error("{requested}: {}: not executable (mode {mode:04o})", path.display())]
    NotExecutable {
        /// What was asked for.
        requested: Requested,
        /// The binary's path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not owned by root.
    #[error("{requested}: {}: owned by uid {uid}, not root", path.display())]
    NotRootOwned {
        /// What was asked for.
        requested: Requested,
        /// The binary's path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Someone other than its owner may write the file.
    #[error("{requested}: {}: writable by group or others (mode {mode:04o})", path.display())]
    Writable {
        /// What was asked for.
        requested: Requested,
        /// The binary's path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl RuntimeBinary {
    /// Checks the binary asked for by name or absolute path, looking a bare name up on
    /// `path_var` (a `PATH` value).
    pub fn requested(binary: &str, path_var: &OsStr) -> Result<RuntimeBinary, RuntimeError> {
        Self::requested_cached(binary, path_var, None)
    }

    fn requested_cached(
        binary: &str,
        path_var: &OsStr,
        cache: Option<&Path>,
    ) -> Result<RuntimeBinary, RuntimeError> {
        let requested = Requested::Flag(binary.to_string());
        let found = locate(binary, path_var, &requested)?;
        identify(&found, requested, false, cache)
    }

    /// Identifies the shim's default runtime: `runc` on the `PATH` of the containerd
    /// serving `socket` when that can be read, else on `own_path`.
    pub fn default_for(socket: &Path, own_path: &OsStr) -> Result<RuntimeBinary, RuntimeError> {
        Self::default_cached(socket, own_path, Path::new(super::DEFAULT_PROC_ROOT), None)
    }

    fn default_cached(
        socket: &Path,
        own_path: &OsStr,
        proc_root: &Path,
        cache: Option<&Path>,
    ) -> Result<RuntimeBinary, RuntimeError> {
        let path_var =
            containerd_path_var(socket, proc_root).unwrap_or_else(|| own_path.to_os_string());
        let found = locate(DEFAULT_BINARY, &path_var, &Requested::Default)?;
        identify(&found, Requested::Default, true, cache)
    }
}

/// What a runner uses: the binary given checked already, else the one asked for by name
/// (refused when it fails the checks), else the default runtime (whose failure to be
/// identified is only a warning: the shim runs it whatever stockade thinks of it). The
/// warnings are the ones every run's result carries.
pub(crate) fn for_runner(
    checked: Option<RuntimeBinary>,
    requested: Option<String>,
    containerd: &Path,
    proc_root: &Path,
    cache: &Path,
) -> Result<(Option<RuntimeBinary>, Vec<String>), RuntimeError> {
    let own_path = std::env::var_os("PATH").unwrap_or_default();
    let binary = match (checked, requested) {
        (Some(b), _) => b,
        (None, Some(name)) => RuntimeBinary::requested_cached(&name, &own_path, Some(cache))?,
        (None, None) => {
            match RuntimeBinary::default_cached(containerd, &own_path, proc_root, Some(cache)) {
                Ok(b) => b,
                Err(e) => {
                    return Ok((
                        None,
                        vec![format!("{e}; the run's runtime is unidentified")],
                    ))
                }
            }
        }
    };
    let warnings = binary.warning().into_iter().collect();
    Ok((Some(binary), warnings))
}

impl RuntimeBinary {
    /// The warning a run under a runtime other than the default carries.
    pub fn warning(&self) -> Option<String> {
        (!self.default).then(|| {
            format!(
                "runtime {} ({}) replaces the default {DEFAULT_BINARY}: the sandbox is \
                 confined only as far as it applies the spec",
                self.path.display(),
                self.sha256
            )
        })
    }
}

/// The `PATH` in the environment of the process listening on `socket` (its peer
/// credentials name it), read through the procfs at `proc_root`, when readable.
fn containerd_path_var(socket: &Path, proc_root: &Path) -> Option<OsString> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    use std::os::unix::ffi::OsStrExt;
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let pid = getsockopt(&stream, PeerCredentials).ok()?.pid();
    let environ = std::fs::read(proc_root.join(pid.to_string()).join("environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"PATH="))
        .map(|v| OsStr::from_bytes(v).to_os_string())
}

/// The file `binary` names: itself when absolute; the first regular executable file on
/// `path_var` when a bare name.
fn locate(binary: &str, path_var: &OsStr, requested: &Requested) -> Result<PathBuf, RuntimeError> {
    let p = Path::new(binary);
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    if binary.contains('/') || binary.is_empty() {
        return Err(RuntimeError::Relative {
            requested: requested.clone(),
        });
    }
    std::env::split_paths(path_var)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(binary))
        .find(|c| std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
        .ok_or_else(|| RuntimeError::NotFound {
            requested: requested.clone(),
            path: path_var.to_string_lossy().into_owned(),
        })
}

/// Resolves `path`, checks the target and every directory above it, and hashes it (read
/// from the descriptor whose metadata was checked).
fn identify(
    path: &Path,
    requested: Requested,
    default: bool,
    cache: Option<&Path>,
) -> Result<RuntimeBinary, RuntimeError> {
    let io = |path: &Path, source| RuntimeError::Io {
        requested: requested.clone(),
        path: path.to_path_buf(),
        source,
    };
    let real = std::fs::canonicalize(path).map_err(|e| io(path, e))?;
    for dir in real.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| io(dir, e))?;
        trusted(dir, &m, &requested)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| io(&real, e))?;
    let m = file.metadata().map_err(|e| io(&real, e))?;
    if !m.is_file() {
        return Err(RuntimeError::NotRegular {
            requested,
            path: real,
        });
    }
    trusted(&real, &m, &requested)?;
    if m.mode() & 0o111 == 0 {
        return Err(RuntimeError::NotExecutable {
            requested,
            path: real,
            mode: m.mode() & 0o7777,
        });
    }
    let sha256 = digest(&real, &m, &mut file, cache).map_err(|e| io(&real, e))?;
    Ok(RuntimeBinary {
        path: real,
        sha256,
        default,
    })
}

/// Root-owned and not writable by group or others.
fn trusted(path: &Path, m: &std::fs::Metadata, requested: &Requested) -> Result<(), RuntimeError> {
    if m.uid() != 0 {
        return Err(RuntimeError::NotRootOwned {
            requested: requested.clone(),
            path: path.to_path_buf(),
            uid: m.uid(),
        });
    }
    if m.mode() & 0o022 != 0 {
        return Err(RuntimeError::Writable {
            requested: requested.clone(),
            path: path.to_path_buf(),
            mode: m.mode() & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::digests::DIGESTS;
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A scratch directory in a root-owned 0755 chain (`/run` on the hosts stockade runs
    /// on; `/tmp` is world-writable and would fail every case).
    fn scratch() -> tempfile::TempDir {
        let t = tempfile::Builder::new()
            .prefix("stockade-runtime-test-")
            .tempdir_in("/run")
            .expect("tempdir in /run (the tests run as root)");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        t
    }

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"#!/bin/sh\nexec runc \"$@\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn chown(p: &Path, uid: u32) {
        std::os::unix::fs::chown(p, Some(uid), None).unwrap();
    }

    /// What a check came to: accepted, or the variant's name.
    fn verdict(r: &Result<RuntimeBinary, RuntimeError>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(RuntimeError::Relative { .. }) => "relative",
            Err(RuntimeError::NotFound { .. }) => "not-found",
            Err(RuntimeError::Io { .. }) => "io",
            Err(RuntimeError::NotRegular { .. }) => "not-regular",
            Err(RuntimeError::NotExecutable { .. }) => "not-executable",
            Err(RuntimeError::NotRootOwned { .. }) => "not-root-owned",
            Err(RuntimeError::Writable { .. }) => "writable",
        }
    }

    #[test]
    fn only_root_owned_unwritable_executables_in_root_owned_unwritable_dirs_pass() {
        let t = scratch();
        let d = t.path();
        let sub = |name: &str, mode: u32, uid: u32| {
            let s = d.join(name);
            std::fs::create_dir(&s).unwrap();
            std::fs::set_permissions(&s, std::fs::Permissions::from_mode(mode)).unwrap();
            file(&s, "rt", 0o755);
            chown(&s, uid);
            s.join("rt")
        };
        let good = file(d, "good", 0o755);
        let group_w = file(d, "group-w", 0o775);
        let other_w = file(d, "other-w", 0o757);
        let nobody = file(d, "nobody", 0o755);
        chown(&nobody, 65534);
        let not_x = file(d, "not-x", 0o644);
        let in_nobody_dir = sub("nobody-dir", 0o755, 65534);
        let in_group_w_dir = sub("group-w-dir", 0o775, 0);
        let in_sticky_dir = sub("sticky-dir", 0o1777, 0);
        std::fs::create_dir(d.join("a-dir")).unwrap();
        let link_to_good = d.join("link-to-good");
        symlink(&good, &link_to_good).unwrap();
        let link_to_bad = d.join("link-to-bad");
        symlink(&other_w, &link_to_bad).unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let cases: Vec<(String, &str)> = vec![
            (s(&good), "ok"),
            (s(&link_to_good), "ok"),
            (s(&group_w), "writable"),
            (s(&other_w), "writable"),
            (s(&link_to_bad), "writable"),
            (s(&nobody), "not-root-owned"),
            (s(&not_x), "not-executable"),
            (s(&in_nobody_dir), "not-root-owned"),
            (s(&in_group_w_dir), "writable"),
            (s(&in_sticky_dir), "writable"),
            (s(&d.join("a-dir")), "not-regular"),
            (s(&d.join("missing")), "io"),
            ("bin/runc".into(), "relative"),
            ("./runc".into(), "relative"),
            ("no-such-runtime-anywhere".into(), "not-found"),
        ];
        let path_var = OsString::from(format!("relative/dir:{}", d.display()));
        for (binary, want) in cases {
            let got = RuntimeBinary::requested(&binary, &path_var);
            assert_eq!(verdict(&got), want, "{binary}: {got:?}");
            if let Err(e) = got {
                let line = e.to_string();
                assert!(!line.contains('\n'), "{line}");
                assert!(
                    line.starts_with("--runc-binary (STOCKADE_RUNC_BINARY) `"),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn an_accepted_binary_is_named_by_its_resolved_path_and_contents() {
        let t = scratch();
        let good = file(t.path(), "rt", 0o755);
        let link = t.path().join("alias");
        symlink("rt", &link).unwrap();
        let path_var = OsString::from(format!("/nonexistent:{}", t.path().display()));
        for binary in [
            good.to_str().unwrap(),
            link.to_str().unwrap(),
            "alias",
            "rt",
        ] {
            let rb = RuntimeBinary::requested(binary, &path_var).unwrap();
            assert_eq!(rb.path, good, "{binary}");
            assert!(!rb.default);
            let want = format!("{:x}", Sha256::digest(std::fs::read(&good).unwrap()));
            assert_eq!(rb.sha256, format!("sha256:{want}"));
        }
    }

    /// A second process finds the digest on disk; a rewritten binary (new ctime) is hashed
    /// again; a cache directory others can write is not used.
    #[test]
    fn digests_are_cached_on_disk_by_file_identity() {
        let t = scratch();
        let bin = file(t.path(), "rt", 0o755);
        let cache = t.path().join("digests");
        let check = || identify(&bin, Requested::Default, true, Some(&cache)).unwrap();
        let first = check();
        let entries = || {
            std::fs::read_dir(&cache)
                .map(std::iter::Iterator::count)
                .unwrap_or(0)
        };
        assert_eq!(entries(), 1);
        // Another process: the in-process cache is empty; the file on disk answers, even
        // when it lies (which only root could make it do).
        DIGESTS.lock().unwrap().take();
        let name = std::fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let planted = format!("sha256:{}", "ab".repeat(32));
        std::fs::write(&name, &planted).unwrap();
        assert_eq!(check().sha256, planted);
        // Rewriting the binary moves its ctime: the planted digest no longer applies.
        DIGESTS.lock().unwrap().take();
        std::fs::write(&bin, "#!/bin/sh\necho other\n").unwrap();
        let again = check();
        assert_ne!(again.sha256, planted);
        assert_ne!(again.sha256, first.sha256);
        // A cache directory writable by others is ignored.
        DIGESTS.lock().unwrap().take();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        for f in std::fs::read_dir(&cache).unwrap() {
            std::fs::write(f.unwrap().path(), &planted).unwrap();
        }
        assert_eq!(check().sha256, again.sha256);
    }

    #[test]
    fn a_rewritten_binary_gets_a_new_digest() {
        let t = scratch();
        let p = file(t.path(), "rt", 0o755);
        let before = RuntimeBinary::requested(p.to_str().unwrap(), OsStr::new("")).unwrap();
        std::fs::write(&p, b"#!/bin/sh\nexec crun \"$@\"\n# longer\n").unwrap();
        let after = RuntimeBinary::requested(p.to_str().unwrap(), OsStr::new("")).unwrap();
        assert_ne!(before.sha256, after.sha256);
    }

    #[test]
    fn the_first_executable_on_path_is_the_one_checked() {
        let t = scratch();
        let first = t.path().join("first");
        let second = t.path().join("second");
        for d in [&first, &second] {
            std::fs::create_dir(d).unwrap();
        }
        file(&first, "rt", 0o644); // not executable: skipped, as execvp skips it
        let bad = file(&second, "rt", 0o775);
        let path_var = OsString::from(format!("{}:{}", first.display(), second.display()));
        match RuntimeBinary::requested("rt", &path_var) {
            Err(RuntimeError::Writable { path, .. }) => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_default_runtime_is_runc_and_says_so() {
        let t = scratch();
        let runc = file(t.path(), "runc", 0o755);
        // No socket answers: stockade's own PATH is used.
        let own = OsString::from(t.path());
        let rb = RuntimeBinary::default_for(&t.path().join("no.sock"), &own).unwrap();
        assert_eq!((rb.path, rb.default), (runc, true));
        let e = RuntimeBinary::default_for(&t.path().join("no.sock"), OsStr::new("/nonexistent"))
            .unwrap_err();
        assert!(e.to_string().starts_with("default runtime `runc`: "), "{e}");
    }
}
