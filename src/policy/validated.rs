//! A [`ValidatedPolicy`] and the resolved values it holds (user, network mode, seccomp and
//! AppArmor choices, the user-namespace mapping), with the defaults validation fills in.
//! Only [`Policy::validate`](super::Policy::validate) makes one.

use oci_spec::runtime::{Capability, LinuxSeccomp};
use serde::Serialize;

use super::limits::Limits;
use super::mounts::{Bind, Tmpfs};
use crate::bind::HostDir;

/// The unprivileged identity commands run as unless a policy says otherwise: `nobody`.
pub const DEFAULT_UID: u32 = 65534;
/// See [`DEFAULT_UID`].
pub const DEFAULT_GID: u32 = 65534;
/// Environment every sandbox starts with; policy and `--env` entries add to or replace it.
/// `HOME` is `/tmp` because the root filesystem is read-only.
pub const DEFAULT_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/tmp",
];
/// Default hostname inside the sandbox's UTS namespace.
pub const DEFAULT_HOSTNAME: &str = "sandbox";
/// Default seccomp profile.
pub const DEFAULT_SECCOMP: &str = "default";
/// Default AppArmor profile.
pub const DEFAULT_APPARMOR: &str = "stockade-default";
/// Default first host ID of a user-namespace mapping.
pub const DEFAULT_USERNS_HOST_ID: u32 = 100_000;
/// Default size of a user-namespace mapping.
pub const DEFAULT_USERNS_SIZE: u32 = 65_536;

/// The only capabilities `cap_add` may grant. Each is one Docker grants by default and none
/// reaches outside the sandbox's namespaces on its own: no `SYS_ADMIN`, `NET_ADMIN`,
/// `NET_RAW` (raw sockets), `MKNOD`, `SYS_PTRACE`, `SYS_MODULE`, `DAC_READ_SEARCH`
/// (open_by_handle_at, the "shocker" escape) or `SETFCAP`.
pub const CAP_ADD_ALLOWLIST: &[&str] = &[
    // Change file owners inside the writable areas.
    "CAP_CHOWN",
    // Bypass file permission checks on files the sandbox can already reach.
    "CAP_DAC_OVERRIDE",
    // Bypass ownership checks for chmod/utime on reachable files.
    "CAP_FOWNER",
    // Keep setuid bits when modifying files (no effect with nosuid mounts).
    "CAP_FSETID",
    // Signal processes of other UIDs in the sandbox's own pid namespace.
    "CAP_KILL",
    // Switch GID/UID inside the sandbox (package managers drop to a build user).
    "CAP_SETGID",
    "CAP_SETUID",
    // Bind ports below 1024 in the sandbox's own network namespace.
    "CAP_NET_BIND_SERVICE",
    // Write to the audit log (login-style programs expect it).
    "CAP_AUDIT_WRITE",
];

/// Network modes. The host's network namespace is never an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// New network namespace; only `AF_UNIX` sockets can be created.
    None,
    /// New network namespace with its own loopback; IP sockets allowed.
    Loopback,
    /// A namespace made by stockade with a routed veth: outbound IPv4 through masquerade,
    /// except to the host and the ranges of [`crate::network::ALWAYS_DENIED`] (see
    /// [`crate::network`]); `AF_INET` stream and datagram sockets, no IPv6.
    Egress,
    /// Like [`NetworkMode::Egress`] but default deny: only the ranges, ports and host names
    /// of the policy's `network.allow` entries are reached, host names through a DNS
    /// forwarder of stockade's (see [`crate::network::dns`]).
    Allowlist,
    /// A namespace made by stockade with a routed veth that reaches the other members of
    /// one group network (named in [`crate::network::NetworkRules::group`]) and nothing
    /// else (see [`crate::network::group`]); sockets as `Egress`.
    Group,
}

impl NetworkMode {
    /// Every mode's name, as messages list them.
    pub const NAMES: &'static str = "none, loopback, egress, allowlist, group";

    /// The mode a policy or flag names, if it is one of [`NetworkMode::NAMES`].
    pub fn from_name(name: &str) -> Option<NetworkMode> {
        [
            NetworkMode::None,
            NetworkMode::Loopback,
            NetworkMode::Egress,
            NetworkMode::Allowlist,
            NetworkMode::Group,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }

    /// The mode's name in policies and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Loopback => "loopback",
            NetworkMode::Egress => "egress",
            NetworkMode::Allowlist => "allowlist",
            NetworkMode::Group => "group",
        }
    }
}

/// The identity of the sandboxed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct User {
    /// The numeric user ID inside the sandbox.
    pub uid: u32,
    /// The numeric group ID inside the sandbox.
    pub gid: u32,
}

/// A resolved seccomp choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SeccompChoice {
    /// No filter at all (said explicitly with `unconfined`).
    Unconfined,
    /// A profile (built-in name or file path) and its converted form.
    Profile {
        /// The built-in profile's name or the profile file's path.
        name: String,
        /// The profile as the OCI spec's `linux.seccomp`.
        filter: LinuxSeccomp,
    },
}

/// A resolved AppArmor choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AppArmorChoice {
    /// No AppArmor profile (said explicitly with `unconfined`).
    Unconfined,
    /// The profile, by the name it is loaded under.
    Profile(String),
}

/// A user-namespace mapping: container IDs `0..size` map to host `host_id..host_id+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdMap {
    /// The first host ID (UID and GID) of the range.
    pub host_id: u32,
    /// How many IDs are mapped.
    pub size: u32,
}

/// A policy whose every value is known to be usable. Only [`Policy::validate`](super::Policy::validate) makes one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidatedPolicy {
    /// The image reference the sandbox runs.
    pub image: String,
    /// Who the process runs as inside the sandbox.
    pub user: User,
    /// `K=V` entries, defaults first, later keys replacing earlier ones.
    pub env: Vec<String>,
    /// The process's working directory: an absolute path.
    pub cwd: String,
    /// The hostname in the sandbox's UTS namespace.
    pub hostname: String,
    /// Resource limits.
    pub limits: Limits,
    /// How the sandbox reaches the network.
    pub network: NetworkMode,
    /// What the network mode opens beyond its defaults (see [`crate::network`]); left out
    /// of the hash's JSON when empty.
    #[serde(skip_serializing_if = "crate::network::NetworkRules::is_empty")]
    pub network_rules: crate::network::NetworkRules,
    /// The root filesystem is mounted read-only (unless `read_write_root`).
    pub read_only_root: bool,
    /// Host directory mounted read-write at `/workspace` (path and identity; see
    /// [`crate::bind`]).
    pub workspace: Option<HostDir>,
    /// Host directory mounted read-only at `/input`.
    pub input: Option<HostDir>,
    /// Bytes of a managed workspace at `/workspace` (a filesystem made for the sandbox and
    /// removed with it; see [`crate::disk`]), counted in `limits.disk`. Never with
    /// `workspace`.
    pub managed_workspace: Option<u64>,
    /// Further host directories bound into the sandbox (`-v`), in the order given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<Bind>,
    /// tmpfs mounts (`--tmpfs`), in the order given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// `filesystem.workspace_owner = "sandbox"`: a workspace the user cannot write is given
    /// to the user at start (see [`crate::bind::ensure_writable`]) instead of refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub workspace_owner_sandbox: bool,
    /// Capabilities granted beyond none, from [`CAP_ADD_ALLOWLIST`].
    pub cap_add: Vec<Capability>,
    /// The seccomp filter.
    pub seccomp: SeccompChoice,
    /// The AppArmor profile.
    pub apparmor: AppArmorChoice,
    /// The process and its children cannot gain privileges (`no_new_privs`).
    pub no_new_privileges: bool,
    /// The user namespace's mapping; `None`: no user namespace.
    pub user_namespace: Option<IdMap>,
    /// The sandbox runs as a host UID of its own instead of `user.uid` (see
    /// [`crate::runner::uids`]): true when the policy names no user and no user namespace.
    /// `user.uid` stays the UID its bind sources are owned by on disk.
    pub uid_per_sandbox: bool,
    /// Loosenings the user asked for, each one line, for the terminal and the run result.
    pub warnings: Vec<String>,
}

impl ValidatedPolicy {
    /// `sha256:<hex>` of the policy's canonical JSON form: two runs with the same hash ran
    /// under the same policy.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("a validated policy always serializes");
        crate::digest::sha256(json)
    }
}
