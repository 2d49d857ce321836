//! Docker-style mounts: host directories bound into the sandbox (`-v HOST:CTR[:ro|rw]`,
//! `[[filesystem.mounts]]`) and sized tmpfs mounts (`--tmpfs PATH[:size=…,mode=…,exec]`,
//! `[[filesystem.tmpfs]]`).
//!
//! The types a policy is written in ([`BindMount`], [`TmpfsMount`]) are the ones every
//! front end fills: the CLI parses Docker's flag syntax with [`BindMount::parse`] and
//! [`TmpfsMount::parse`]; a server mapping Docker's `HostConfig.Binds` and
//! `HostConfig.Tmpfs` uses the same parsers ([`TmpfsMount::from_options`] for a `Tmpfs`
//! map entry). Validation turns them into [`Bind`] and [`Tmpfs`]:
//!
//! - a bind's source is checked exactly as `--workspace` is: absolute, opened without
//!   following a link in any component, identified by device and inode, strictly beneath
//!   a bind root, and neither a protected host path nor a directory holding one;
//! - a destination is absolute and already normalised (no `.`, `..`, empty component or
//!   trailing `/`), not `/`, not `/tmp` (stockade's own sized tmpfs: `limits.tmp_size`),
//!   not `/proc`, `/sys`, `/dev`, `/.stockade` or anything beneath them, and no two mounts
//!   share one;
//! - a tmpfs is always `nosuid,nodev`, and `noexec` unless it says `exec`. That default is
//!   Docker's own for `--tmpfs` and the one a reviewer wants: a scratch area made for data
//!   should not also be a place to drop and run binaries, and a policy that needs it says
//!   so in a word. Its size is bounded like every other size (1 byte to 1 PiB, default
//!   [`DEFAULT_TMPFS_SIZE`]) and, being memory, counts against the memory limit.
//!
//! `--workspace DIR` and `--input DIR` are shorthands: `-v DIR:/workspace` (read-write)
//! and `-v DIR:/input:ro` become exactly them (the workspace's writability check and
//! `cwd` default, the input's `noexec`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::limits;
use super::validate::host_dir;
use super::{HostDir, Origins, PolicyEnv, PolicyError};

/// Default size of a `--tmpfs` mount: 64 MiB, as `/tmp`'s.
pub const DEFAULT_TMPFS_SIZE: u64 = 64 << 20;
/// Default mode of a `--tmpfs` mount's root: `1777`, as `/tmp`'s (and Docker's).
pub const DEFAULT_TMPFS_MODE: u32 = 0o1777;
/// Most host directories one policy may bind (besides the workspace and the input).
pub const MAX_BINDS: usize = 32;
/// Most tmpfs mounts one policy may add.
pub const MAX_TMPFS: usize = 16;
/// Destinations no mount may have, nor any path beneath them: the kernel's interfaces,
/// the device directory and stockade's own init.
pub const RESERVED_DESTINATIONS: &[&str] = &["/proc", "/sys", "/dev", "/.stockade"];

/// `[[filesystem.mounts]]`: a host directory bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMount {
    /// Absolute host directory; checked as `filesystem.workspace` is (see the module
    /// documentation). Required.
    pub source: PathBuf,
    /// Absolute, normalised path inside the sandbox. Required.
    pub destination: String,
    /// Mount it read-only. Default `false` (read-write, as Docker's `-v`).
    #[serde(default)]
    pub read_only: bool,
}

/// `[[filesystem.tmpfs]]`: a memory-backed filesystem of its own in the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsMount {
    /// Absolute, normalised path inside the sandbox. Required.
    pub destination: String,
    /// Its size (`64Mi`, `1G`, …). Default [`DEFAULT_TMPFS_SIZE`].
    pub size: Option<String>,
    /// Octal mode of its root (`1777`, `0755`). Default [`DEFAULT_TMPFS_MODE`].
    pub mode: Option<String>,
    /// Allow executing files from it. Default `false` (`noexec`).
    pub exec: Option<bool>,
}

impl BindMount {
    /// Docker's `-v` / `HostConfig.Binds` syntax: `HOST:CTR[:OPTS]`, `OPTS` a comma list
    /// of `ro` or `rw`. The host path must be absolute (Docker reads a bare name as a named
    /// volume, which stockade does not have); other options (`z`, `Z`, propagation,
    /// `nocopy`) are refused, not ignored.
    pub fn parse(s: &str) -> Result<BindMount, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, destination, opts) = match parts.as_slice() {
            [h, c] => (*h, *c, None),
            [h, c, o] => (*h, *c, Some(*o)),
            _ => return Err(format!("`{s}` is not HOST:CONTAINER[:ro|rw]")),
        };
        if !source.starts_with('/') {
            return Err(format!(
                "`{s}`: the host path must be absolute (named volumes are not supported)"
            ));
        }
        let mut read_only = None;
        for o in opts.into_iter().flat_map(|o| o.split(',')) {
            let ro = match o {
                "ro" => true,
                "rw" => false,
                other => {
                    return Err(format!(
                        "`{s}`: mount option `{other}` is not supported (ro, rw)"
                    ))
                }
            };
            if read_only.is_some_and(|r| r != ro) {
                return Err(format!("`{s}`: both ro and rw"));
            }
            read_only = Some(ro);
        }
        Ok(BindMount {
            source: PathBuf::from(source),
            destination: destination.to_string(),
            read_only: read_only.unwrap_or(false),
        })
    }
}

impl TmpfsMount {
    /// Docker's `--tmpfs` syntax: `PATH[:OPTS]`.
    pub fn parse(s: &str) -> Result<TmpfsMount, String> {
        match s.split_once(':') {
            Some((path, opts)) => TmpfsMount::from_options(path, opts),
            None => TmpfsMount::from_options(s, ""),
        }
    }

    /// A `HostConfig.Tmpfs` entry: `path` and its comma-separated options: `size=SIZE`,
    /// `mode=OCTAL`, `exec`, `noexec`, and `nosuid`, `nodev`, `rw` (which it always is).
    /// Anything else (`suid`, `dev`, `ro`, …) is refused, not ignored.
    pub fn from_options(path: &str, options: &str) -> Result<TmpfsMount, String> {
        let mut t = TmpfsMount {
            destination: path.to_string(),
            ..TmpfsMount::default()
        };
        for o in options.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", v)) => t.size = Some(v.to_string()),
                Some(("mode", v)) => t.mode = Some(v.to_string()),
                None if o == "exec" => t.exec = Some(true),
                None if o == "noexec" => t.exec = Some(false),
                None if ["nosuid", "nodev", "rw"].contains(&o) => {}
                _ => {
                    return Err(format!(
                        "`{path}:{options}`: tmpfs option `{o}` is not supported (size=, mode=, exec, noexec, nosuid, nodev, rw)"
                    ))
                }
            }
        }
        Ok(t)
    }
}

/// A validated bind: the host directory (path and identity) and where it appears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bind {
    /// The host directory, resolved and identified.
    pub source: HostDir,
    /// Where it appears in the sandbox: an absolute, normalised path.
    pub destination: String,
    /// Mounted read-only (`:ro`) rather than read-write (the default).
    pub read_only: bool,
}

/// A validated tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tmpfs {
    /// Where it is mounted in the sandbox: an absolute, normalised path.
    pub destination: String,
    /// Bytes, 1..=[`limits::MAX_SIZE`].
    pub size: u64,
    /// At most `07777`.
    pub mode: u32,
    /// Executing from it is allowed (otherwise `noexec`).
    pub exec: bool,
}

/// What the mounts of a policy validate to.
pub(super) struct Validated {
    /// Binds other than the workspace and input shorthands.
    pub binds: Vec<Bind>,
    pub tmpfs: Vec<Tmpfs>,
    /// A read-write bind at `/workspace`: the workspace.
    pub workspace: Option<HostDir>,
    /// A read-only bind at `/input`: the input.
    pub input: Option<HostDir>,
}

/// Why `dest` cannot be a mount's destination, in words; `Ok` when it can.
pub fn check_destination(dest: &str) -> Result<(), String> {
    if !dest.starts_with('/') {
        return Err(format!("destination `{dest}` must be an absolute path"));
    }
    if dest.len() > 4096 || dest.chars().any(char::is_control) {
        return Err(format!(
            "destination `{dest}` is not a usable path (control characters, or over 4096 bytes)"
        ));
    }
    if dest == "/" {
        return Err("destination `/` would hide the image's whole root".to_string());
    }
    if dest[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "destination `{dest}` must be normalised (no `.`, `..`, `//` or trailing `/`)"
        ));
    }
    let p = Path::new(dest);
    if let Some(r) = RESERVED_DESTINATIONS.iter().find(|r| p.starts_with(r)) {
        return Err(format!(
            "destination `{dest}` is reserved ({r} and everything beneath it belong to the kernel or to stockade)"
        ));
    }
    if dest == crate::spec::TMP_PATH {
        return Err(format!(
            "destination `{dest}` is stockade's own tmpfs (size it with limits.tmp_size)"
        ));
    }
    Ok(())
}

/// Validates `mounts` and `tmpfs` of a policy (flags' entries already appended), with the
/// `workspace` and `input` directories given on their own (`--workspace`, `--input`).
pub(super) fn validate(
    o: &Origins,
    mounts: &[BindMount],
    tmpfs: &[TmpfsMount],
    workspace: Option<HostDir>,
    input: Option<HostDir>,
    managed_workspace: bool,
    env: &dyn PolicyEnv,
) -> Result<Validated, PolicyError> {
    const MOUNTS: &str = "filesystem.mounts";
    const TMPFS: &str = "filesystem.tmpfs";
    let mut out = Validated {
        binds: Vec::new(),
        tmpfs: Vec::new(),
        workspace,
        input,
    };
    if mounts.len() > MAX_BINDS {
        return Err(o.entry_err(MOUNTS, 0, format!("more than {MAX_BINDS} binds")));
    }
    if tmpfs.len() > MAX_TMPFS {
        return Err(o.entry_err(TMPFS, 0, format!("more than {MAX_TMPFS} tmpfs mounts")));
    }
    let mut taken: BTreeSet<String> = BTreeSet::new();
    if out.workspace.is_some() || managed_workspace {
        taken.insert(crate::spec::WORKSPACE_PATH.to_string());
    }
    if out.input.is_some() {
        taken.insert(crate::spec::INPUT_PATH.to_string());
    }
    let mut claim = |field: &'static str, i: usize, dest: &str| {
        check_destination(dest).map_err(|m| o.entry_err(field, i, m))?;
        if !taken.insert(dest.to_string()) {
            return Err(o.entry_err(field, i, format!("destination `{dest}` is already mounted")));
        }
        Ok(())
    };
    for (i, m) in mounts.iter().enumerate() {
        claim(MOUNTS, i, &m.destination)?;
        if !m.source.is_absolute() {
            return Err(o.entry_err(
                MOUNTS,
                i,
                format!("source `{}` must be an absolute path", m.source.display()),
            ));
        }
        if m.source
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(o.entry_err(
                MOUNTS,
                i,
                format!(
                    "{}: `..` is not allowed in a bind source (give the real path)",
                    m.source.display()
                ),
            ));
        }
        let source = host_dir(o, MOUNTS, Some(&m.source), env)
            .map_err(|e| o.reorigin(e, MOUNTS, i))?
            .expect("a source was given");
        match (m.destination.as_str(), m.read_only) {
            (crate::spec::WORKSPACE_PATH, false) => out.workspace = Some(source),
            (crate::spec::INPUT_PATH, true) => out.input = Some(source),
            _ => out.binds.push(Bind {
                source,
                destination: m.destination.clone(),
                read_only: m.read_only,
            }),
        }
    }
    for (i, t) in tmpfs.iter().enumerate() {
        claim(TMPFS, i, &t.destination)?;
        let size = limits::size(o, TMPFS, &t.size, DEFAULT_TMPFS_SIZE)
            .map_err(|e| o.reorigin(e, TMPFS, i))?;
        let mode = match &t.mode {
            None => DEFAULT_TMPFS_MODE,
            Some(m) => match u32::from_str_radix(m.trim(), 8) {
                Ok(v) if v <= 0o7777 && !m.trim().is_empty() => v,
                _ => {
                    return Err(o.entry_err(
                        TMPFS,
                        i,
                        format!("mode `{m}` is not an octal mode (0000–7777)"),
                    ))
                }
            },
        };
        out.tmpfs.push(Tmpfs {
            destination: t.destination.clone(),
            size,
            mode,
            exec: t.exec.unwrap_or(false),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
