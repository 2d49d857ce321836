//! Sandbox policies: the TOML document a user writes, the flags that override it, and the
//! validated form the spec builder consumes.
//!
//! Everything here is pure: the only access to the outside world is through
//! [`PolicyEnv`], which the binary implements with the real filesystem and tests fake.
//!
//! Every default below is the safe one and is the one in the README's security table; a
//! policy loosens a protection only by naming it.

mod limits;
mod mounts;
mod units;
mod validate;
mod validated;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::bind::{BindError, HostDir};
pub use limits::{Limits, DEFAULT_DISK, MAX_NOFILE, MAX_SIZE, MAX_TASKS, MIN_DISK, MIN_MEMORY};

pub use mounts::{
    check_destination, Bind, BindMount, Tmpfs, TmpfsMount, DEFAULT_TMPFS_MODE, DEFAULT_TMPFS_SIZE,
    MAX_BINDS, MAX_TMPFS, RESERVED_DESTINATIONS,
};
pub use units::{format_duration, format_size, parse_duration, parse_size, UnitError};
pub use validate::cap_name;
pub use validated::{
    AppArmorChoice, IdMap, NetworkMode, SeccompChoice, User, ValidatedPolicy, CAP_ADD_ALLOWLIST,
    DEFAULT_APPARMOR as DEFAULT_APPARMOR_PROFILE, DEFAULT_ENV,
};

/// The name of the image a policy runs when it names none.
pub const DEFAULT_IMAGE: &str = "stockade/busybox";

/// A sandbox policy as written in TOML. Every field is optional; an absent field takes the
/// default documented on it. Unknown keys are an error, so a typo never silently loosens
/// nothing and tightens nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Image to run (a Docker-style reference). Default: `stockade/busybox`, the built-in
    /// image `stockade image build busybox` makes.
    pub image: Option<String>,
    /// The process inside the sandbox.
    #[serde(default)]
    pub process: ProcessSection,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Network access.
    #[serde(default)]
    pub network: NetworkSection,
    /// Root filesystem and host directories.
    #[serde(default)]
    pub filesystem: FilesystemSection,
    /// Kernel-level confinement.
    #[serde(default)]
    pub security: SecuritySection,
}

/// `[process]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// `UID[:GID]` the command runs as. Default: `65534:65534` (nobody), no supplementary
    /// groups. Root (0) is allowed only when said explicitly.
    pub user: Option<String>,
    /// Extra environment, `K=V` each. Default: only `PATH`, `HOME=/tmp` and `TERM=xterm`...
    /// see [`DEFAULT_ENV`].
    pub env: Option<Vec<String>>,
    /// Working directory inside the sandbox. Default: `/workspace` when a workspace is
    /// mounted, else `/tmp`.
    pub cwd: Option<String>,
    /// Hostname inside the UTS namespace. Default: `sandbox`.
    pub hostname: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Memory limit (cgroup); swap is set equal so the sandbox can never swap. Default `512Mi`.
    pub memory: Option<String>,
    /// CPU quota in cores (`0.5` is half a core). Default `1`.
    pub cpus: Option<f64>,
    /// Maximum number of tasks (pids cgroup). Default `256`.
    pub pids: Option<i64>,
    /// `RLIMIT_NOFILE`, soft and hard. Default `1024`.
    pub nofile: Option<u64>,
    /// `RLIMIT_NPROC`, soft and hard. Default: unset, because the kernel counts it per UID
    /// across the whole host, so it would couple unrelated sandboxes; the pids cgroup is the
    /// per-sandbox limit.
    pub nproc: Option<u64>,
    /// `RLIMIT_FSIZE`: the largest file the sandbox may write. Default `1Gi`.
    pub fsize: Option<String>,
    /// Wall-clock limit; past it the whole sandbox is killed and the run exits 124.
    /// Default `300s`.
    pub timeout: Option<String>,
    /// Cap on each of stdout and stderr; the rest is dropped and the result says so.
    /// Default `10Mi`.
    pub max_output: Option<String>,
    /// Size of the `/tmp` tmpfs (counted against the memory limit). Default `64Mi`.
    pub tmp_size: Option<String>,
    /// Size of `/dev/shm`. Default `64Mi`.
    pub shm_size: Option<String>,
    /// Block-IO weight, 10–1000. Default: unset (the host's default weight).
    pub io_weight: Option<u16>,
    /// `oom_score_adj` of the sandbox's processes: the kernel kills the sandbox before host
    /// services when the whole host is short of memory. Default `500`.
    pub oom_score_adj: Option<i32>,
    /// Host storage the sandbox may fill: its writable root's upper layer and its managed
    /// workspace together, each on a filesystem of bounded size and inode count (see
    /// [`crate::disk`]); writing past it fails with ENOSPC inside the sandbox. At least
    /// `16Mi`. Default `1Gi`.
    pub disk: Option<String>,
}

/// `[network]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// `none` (a new, empty network namespace, and only `AF_UNIX` sockets may be created),
    /// `loopback` (a new network namespace with only its own loopback; IP sockets
    /// allowed), `egress` (outbound IPv4 through NAT, never to the host, another sandbox
    /// or the ranges of [`crate::network::ALWAYS_DENIED`]; see [`crate::network`]),
    /// `allowlist` (outbound IPv4 only to the `allow` entries) or `group` (the group
    /// network `group` names: its members and nothing else).
    /// Default `none`. The host's network is never shared.
    pub mode: Option<String>,
    /// With `egress`: ranges (`A.B.C.D/N` or one address) opened although the
    /// always-denied list covers them. With `allowlist`: the only destinations reached,
    /// `CIDR[:PORT[-PORT]]` or `HOSTNAME[:PORT[-PORT]]` (`*.NAME` for every name below
    /// `NAME`; see [`crate::network::allow`]). Default: none.
    pub allow: Option<Vec<String>>,
    /// With `mode = "group"`: the group network the sandbox joins (made beforehand by
    /// `stockade network create NAME`; see [`crate::network::group`]). Default: none.
    pub group: Option<String>,
    /// Host loopback ports forwarded into the sandbox, `[127.0.0.1:]HOSTPORT:PORT[/tcp]`
    /// each (see [`crate::network::publish`]); only with a mode that has an interface
    /// (`egress`, a group). Default: none.
    pub publish: Option<Vec<String>>,
    /// With `allowlist`: the resolvers (`A.B.C.D[:PORT]`, port 53 by default) the
    /// sandbox's DNS forwarder asks. Default: the `nameserver` lines of the host's
    /// `/etc/resolv.conf`.
    pub dns_upstream: Option<Vec<String>>,
}

/// `[filesystem]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSection {
    /// Make the root filesystem writable. Default `false`: read-only.
    pub read_write_root: Option<bool>,
    /// Host directory bind-mounted read-write at `/workspace`. Default: none.
    pub workspace: Option<PathBuf>,
    /// Host directory bind-mounted read-only at `/input`. Default: none.
    pub input: Option<PathBuf>,
    /// A managed workspace of this size at `/workspace`: a fresh filesystem stockade
    /// creates for the sandbox and removes with it, counted against `limits.disk`. Not
    /// with `workspace`. Default: none.
    pub workspace_size: Option<String>,
    /// Further host directories bound into the sandbox, as Docker's `-v` (see
    /// `policy::mounts`). A read-write one at `/workspace` is the workspace, a read-only one at
    /// `/input` the input. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<BindMount>,
    /// tmpfs mounts, as Docker's `--tmpfs` (`nosuid,nodev`, `noexec` unless `exec`; see
    /// `policy::mounts`). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// Who the host `workspace` directory must belong to: `keep` (it stays as it is, and a
    /// workspace the sandbox's user cannot write is refused at start in one line) or
    /// `sandbox` (when the sandbox's user cannot write it, the directory itself, not its
    /// contents, is given to the policy's user, 65534:65534 by default, which a sandbox
    /// with a UID of its own writes as through its ID-mapped mount). Default `keep`.
    pub workspace_owner: Option<String>,
}

/// `[security]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Capabilities to grant (all five sets but ambient... see the spec builder), only from
    /// [`CAP_ADD_ALLOWLIST`]. Default: none.
    pub cap_add: Option<Vec<String>>,
    /// `default`, `strict`, a path to a Docker-format profile, or `unconfined`.
    /// Default `default`.
    pub seccomp: Option<String>,
    /// AppArmor profile name, or `unconfined`. Default `stockade-default` (applied only where
    /// the kernel has AppArmor; elsewhere the run reports it as not enforced).
    pub apparmor: Option<String>,
    /// `no_new_privileges`. Default `true`; `false` must be written out.
    pub no_new_privileges: Option<bool>,
    /// Run in a user namespace, mapping container root to an unprivileged host range.
    /// Default: no user namespace (the process is already an unprivileged UID).
    pub user_namespace: Option<UserNamespaceSection>,
}

/// `[security.user_namespace]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserNamespaceSection {
    /// First host UID/GID of the mapped range. Default `100000`.
    pub host_id: Option<u32>,
    /// Number of IDs mapped, starting at container ID 0. Default `65536`.
    pub size: Option<u32>,
}

/// Values given on the command line; each one replaces the policy file's value.
/// Serializable, so that `stockade run` can hand its flags to a running `stockade serve`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOverrides {
    /// `--image`: replaces `image`.
    pub image: Option<String>,
    /// `--memory`: replaces `limits.memory`.
    pub memory: Option<String>,
    /// `--cpus`: replaces `limits.cpus` (a number of cores, parsed at validation).
    pub cpus: Option<String>,
    /// `--pids`: replaces `limits.pids` (parsed at validation).
    pub pids: Option<String>,
    /// `--timeout`: replaces `limits.timeout`.
    pub timeout: Option<String>,
    /// `--network`: a mode word replaces `network.mode`; any other name selects that
    /// group network (mode `group`).
    pub network: Option<String>,
    /// `--allow`, added to the policy's `network.allow`.
    pub allow: Vec<String>,
    /// `-p`, added to the policy's `network.publish`.
    pub publish: Vec<String>,
    /// `--workspace`: replaces `filesystem.workspace`.
    pub workspace: Option<PathBuf>,
    /// `--input`: replaces `filesystem.input`.
    pub input: Option<PathBuf>,
    /// Added to the policy's environment (a later `K` replaces an earlier one).
    pub env: Vec<String>,
    /// `--user`: replaces `process.user`.
    pub user: Option<String>,
    /// `--max-output`: replaces `limits.max_output`.
    pub max_output: Option<String>,
    /// Added to the policy's `cap_add`.
    pub cap_add: Vec<String>,
    /// `--seccomp`: replaces `security.seccomp`.
    pub seccomp: Option<String>,
    /// `--apparmor`: replaces `security.apparmor`.
    pub apparmor: Option<String>,
    /// `--read-write-root`: sets `filesystem.read_write_root`; `false` leaves the policy's
    /// value.
    pub read_write_root: bool,
    /// `--disk`.
    pub disk: Option<String>,
    /// `--workspace-size`.
    pub workspace_size: Option<String>,
    /// `-v HOST:CTR[:ro|rw]`, added after the policy's `filesystem.mounts`.
    pub mounts: Vec<BindMount>,
    /// `--tmpfs PATH[:OPTS]`, added after the policy's `filesystem.tmpfs`.
    pub tmpfs: Vec<TmpfsMount>,
    /// `-w DIR`: the working directory (`process.cwd`).
    pub cwd: Option<String>,
    /// `--workspace-owner keep|sandbox`.
    pub workspace_owner: Option<String>,
}

/// Why a policy could not be read or validated. Each variant renders as one line naming
/// where the bad value came from (a file and field, or a flag).
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A value is not usable.
    #[error("{}: {}", escape_controls(origin), escape_controls(message))]
    Field {
        /// Where it came from: `FILE: field` or the flag (`--memory`).
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A policy file could not be read or is not valid TOML of a policy.
    #[error("{}: {}", escape_controls(file), escape_controls(message))]
    Parse {
        /// The policy file.
        file: String,
        /// The read or parse error, on one line.
        message: String,
    },
}

/// Control characters (a newline in a value the user typed, say) shown escaped, so an error
/// stays one line whatever the input.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What policy validation needs from the outside world. The binary implements it with the
/// filesystem; tests use an in-memory fake.
pub trait PolicyEnv {
    /// Reads a seccomp profile given by path.
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String>;
    /// Resolves a host directory for a bind mount: made absolute, opened without following
    /// a symbolic link in any component, with its identity (device, inode). See
    /// [`crate::bind`].
    fn bind_dir(&self, path: &std::path::Path) -> Result<HostDir, BindError>;
    /// The directories bind sources must lie strictly beneath. Default:
    /// [`crate::bind::DEFAULT_BIND_ROOTS`].
    fn bind_roots(&self) -> Vec<PathBuf> {
        crate::bind::roots_from(None)
    }
}

/// The real filesystem; bind roots from `STOCKADE_BIND_ROOTS` when set.
pub struct HostPolicyEnv;

impl PolicyEnv for HostPolicyEnv {
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn bind_dir(&self, path: &std::path::Path) -> Result<HostDir, BindError> {
        let cwd = std::env::current_dir().map_err(|e| BindError::Resolve {
            path: path.to_path_buf(),
            reason: format!("the current directory is unusable: {e}"),
        })?;
        bind_dir_from(path, &cwd)
    }

    fn bind_roots(&self) -> Vec<PathBuf> {
        crate::bind::roots_from(std::env::var(crate::bind::BIND_ROOTS_ENV).ok().as_deref())
    }
}

/// The real filesystem as another process on this host sees it: relative paths resolved
/// against its working directory and bind roots from its `STOCKADE_BIND_ROOTS`. A server
/// validating a client's policy uses it, so that the policy means what it would have meant
/// had the client validated it itself (both in one mount namespace, checked by the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicyEnv {
    /// The client's working directory (absolute).
    pub cwd: PathBuf,
    /// The client's `STOCKADE_BIND_ROOTS`, if set.
    pub bind_roots: Option<String>,
}

impl PolicyEnv for ClientPolicyEnv {
    fn read_file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.cwd.join(path))
    }

    fn bind_dir(&self, path: &std::path::Path) -> Result<HostDir, BindError> {
        bind_dir_from(path, &self.cwd)
    }

    fn bind_roots(&self) -> Vec<PathBuf> {
        crate::bind::roots_from(self.bind_roots.as_deref())
    }
}

/// Resolves bind source `path` made absolute against `cwd`.
fn bind_dir_from(path: &std::path::Path, cwd: &std::path::Path) -> Result<HostDir, BindError> {
    let abs = crate::bind::absolute(path, cwd).ok_or_else(|| BindError::Resolve {
        path: path.to_path_buf(),
        reason: "`..` is not allowed in a bind source (give the real path)".to_string(),
    })?;
    crate::bind::resolve(&abs)
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    file: Option<String>,
    flags: BTreeMap<&'static str, &'static str>,
    /// List fields whose entries from an index on came from a flag: field → (index, flag).
    lists: BTreeMap<&'static str, (usize, &'static str)>,
}

impl Origins {
    /// `--memory` when the flag set it, else `policy.toml: limits.memory`, else `limits.memory`.
    pub(crate) fn of(&self, field: &'static str) -> String {
        if let Some(flag) = self.flags.get(field) {
            return (*flag).to_string();
        }
        match &self.file {
            Some(f) => format!("{f}: {field}"),
            None => field.to_string(),
        }
    }

    /// Entry `index` of the list field `field`: the flag when a flag gave it, else
    /// `policy.toml: filesystem.mounts[0]`.
    pub(crate) fn entry(&self, field: &'static str, index: usize) -> String {
        match self.lists.get(field) {
            Some((from, flag)) if index >= *from => (*flag).to_string(),
            _ => match &self.file {
                Some(f) => format!("{f}: {field}[{index}]"),
                None => format!("{field}[{index}]"),
            },
        }
    }

    /// An error about entry `index` of `field`.
    pub(crate) fn entry_err(
        &self,
        field: &'static str,
        index: usize,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Field {
            origin: self.entry(field, index),
            message: message.into(),
        }
    }

    /// `e` (made for the whole field) as an error about entry `index` of it.
    pub(crate) fn reorigin(
        &self,
        e: PolicyError,
        field: &'static str,
        index: usize,
    ) -> PolicyError {
        match e {
            PolicyError::Field { message, .. } => self.entry_err(field, index, message),
            other @ PolicyError::Parse { .. } => other,
        }
    }
}

impl Policy {
    /// Parses a policy document; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Policy, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::Parse {
            file: file.to_string(),
            message: one_line(&e.to_string()),
        })
    }

    /// Applies command-line overrides, validates everything and returns the policy the spec
    /// builder uses. `file` is the policy file's name, if there is one, for error messages.
    pub fn validate(
        mut self,
        file: Option<&str>,
        overrides: &PolicyOverrides,
        env: &dyn PolicyEnv,
    ) -> Result<ValidatedPolicy, PolicyError> {
        let mut origins = Origins {
            file: file.map(str::to_string),
            ..Origins::default()
        };
        self.apply(overrides, &mut origins);
        validate::validate(&self, &origins, env)
    }

    fn apply(&mut self, o: &PolicyOverrides, origins: &mut Origins) {
        macro_rules! set {
            ($src:expr, $dst:expr, $field:literal, $flag:literal) => {
                if let Some(v) = &$src {
                    $dst = Some(v.clone());
                    origins.flags.insert($field, $flag);
                }
            };
        }
        set!(o.image, self.image, "image", "--image");
        set!(o.memory, self.limits.memory, "limits.memory", "--memory");
        set!(
            o.timeout,
            self.limits.timeout,
            "limits.timeout",
            "--timeout"
        );
        match &o.network {
            // `--network NAME`: a group network.
            Some(n) if !crate::network::group::is_mode_word(n) => {
                self.network.mode = Some("group".to_string());
                self.network.group = Some(n.clone());
                origins.flags.insert("network.mode", "--network");
                origins.flags.insert("network.group", "--network");
            }
            _ => set!(o.network, self.network.mode, "network.mode", "--network"),
        }
        if !o.publish.is_empty() {
            let mut all = self.network.publish.take().unwrap_or_default();
            all.extend(o.publish.iter().cloned());
            self.network.publish = Some(all);
            origins.flags.insert("network.publish", "-p");
        }
        if !o.allow.is_empty() {
            let mut all = self.network.allow.take().unwrap_or_default();
            all.extend(o.allow.iter().cloned());
            self.network.allow = Some(all);
            origins.flags.insert("network.allow", "--allow");
        }
        set!(
            o.workspace,
            self.filesystem.workspace,
            "filesystem.workspace",
            "--workspace"
        );
        set!(
            o.input,
            self.filesystem.input,
            "filesystem.input",
            "--input"
        );
        set!(o.user, self.process.user, "process.user", "--user");
        set!(
            o.max_output,
            self.limits.max_output,
            "limits.max_output",
            "--max-output"
        );
        set!(
            o.seccomp,
            self.security.seccomp,
            "security.seccomp",
            "--seccomp"
        );
        set!(
            o.apparmor,
            self.security.apparmor,
            "security.apparmor",
            "--apparmor"
        );
        set!(o.disk, self.limits.disk, "limits.disk", "--disk");
        set!(
            o.workspace_size,
            self.filesystem.workspace_size,
            "filesystem.workspace_size",
            "--workspace-size"
        );
        if let Some(c) = &o.cpus {
            origins.flags.insert("limits.cpus", "--cpus");
            // Parsed later so that the error names the flag; NaN marks "unparseable".
            self.limits.cpus = Some(c.trim().parse().unwrap_or(f64::NAN));
        }
        if let Some(p) = &o.pids {
            origins.flags.insert("limits.pids", "--pids");
            self.limits.pids = Some(p.trim().parse().unwrap_or(i64::MIN));
        }
        if !o.env.is_empty() {
            origins.flags.insert("process.env", "--env");
            self.process
                .env
                .get_or_insert_with(Vec::new)
                .extend(o.env.iter().cloned());
        }
        if !o.cap_add.is_empty() {
            origins.flags.insert("security.cap_add", "--cap-add");
            self.security
                .cap_add
                .get_or_insert_with(Vec::new)
                .extend(o.cap_add.iter().cloned());
        }
        set!(o.cwd, self.process.cwd, "process.cwd", "-w");
        set!(
            o.workspace_owner,
            self.filesystem.workspace_owner,
            "filesystem.workspace_owner",
            "--workspace-owner"
        );
        if !o.mounts.is_empty() {
            origins
                .lists
                .insert("filesystem.mounts", (self.filesystem.mounts.len(), "-v"));
            self.filesystem.mounts.extend(o.mounts.iter().cloned());
        }
        if !o.tmpfs.is_empty() {
            origins
                .lists
                .insert("filesystem.tmpfs", (self.filesystem.tmpfs.len(), "--tmpfs"));
            self.filesystem.tmpfs.extend(o.tmpfs.iter().cloned());
        }
        if o.read_write_root {
            origins
                .flags
                .insert("filesystem.read_write_root", "--read-write-root");
            self.filesystem.read_write_root = Some(true);
        }
    }
}

/// Collapses a multi-line message (toml's errors carry a source excerpt) into one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
