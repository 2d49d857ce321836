//! The Docker Engine API's request bodies, as far as stockade reads them. Foreign clients
//! send many fields stockade does not know (and new ones with every API version), so these
//! accept unknown fields; every field that would grant something is read, so that asking
//! for it is refused rather than ignored (see [`super::create`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `POST /containers/create`: the container's config with its `HostConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    /// The sandbox's hostname; empty keeps the policy's.
    pub hostname: String,
    /// Accepted without effect (a warning says so).
    pub domainname: String,
    /// `UID[:GID]`, numeric (or `root`); empty takes the policy's user or the image's USER
    /// (an image USER of root or a name is not granted: a warning says so).
    pub user: String,
    /// Ignored: a client attaches to the streams it wants through `/attach`.
    pub attach_stdin: bool,
    /// Ignored, as [`Self::attach_stdin`].
    pub attach_stdout: bool,
    /// Ignored, as [`Self::attach_stdin`].
    pub attach_stderr: bool,
    /// Accepted without effect (a warning): a sandbox publishes no ports.
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// Run the main command on a terminal (its output is then one stream, not framed).
    pub tty: bool,
    /// Keep the main command's stdin open for attached clients; otherwise it is empty.
    pub open_stdin: bool,
    /// Close the main command's stdin when the first attached client's input ends.
    pub stdin_once: bool,
    /// `K=V` entries over the image's and the policy's environment; an entry without `=`
    /// is refused.
    pub env: Option<Vec<String>>,
    /// The command: replaces the image's CMD and keeps its ENTRYPOINT. None: the image's.
    pub cmd: Option<Vec<String>>,
    /// Accepted without effect (a warning when set).
    pub healthcheck: Option<Value>,
    /// The image's reference (name, tag or `sha256:` id); required.
    pub image: String,
    /// Anonymous volumes: accepted only where a bind, mount or tmpfs lands (as docker-py
    /// sends them along with `Binds`); any other is refused (400).
    pub volumes: Option<BTreeMap<String, Value>>,
    /// Absolute, without `..`. Empty: the policy's, else the image's WORKDIR, else `/`.
    pub working_dir: String,
    /// Replaces the image's ENTRYPOINT and drops its CMD; an empty list clears both.
    /// None: the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Ignored: the network is the server policy's mode (none or loopback) either way.
    pub network_disabled: bool,
    /// Labels kept on the sandbox, shown by inspect and the container list.
    pub labels: Option<BTreeMap<String, String>>,
    /// Accepted as `SIGTERM` (`TERM`, `15`) or empty; another signal is accepted without
    /// effect (a warning).
    pub stop_signal: String,
    /// Ignored: the grace period is `stop?t=SECONDS` (10 by default).
    pub stop_timeout: Option<i64>,
    /// What the container asks of the host: limits, storage, namespaces, security.
    pub host_config: HostConfig,
    /// Endpoints: only `none`, `default` or the `NetworkMode` itself are accepted.
    pub networking_config: Option<NetworkingConfig>,
}

/// `HostConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `SRC:DST[:OPTIONS]` host binds, as `-v`: the source must lie beneath a root the
    /// server allows (`--allow-bind`), or the request is refused (403).
    pub binds: Option<Vec<String>>,
    /// The log driver: only `json-file` (or none named) is accepted.
    pub log_config: Option<LogConfig>,
    /// Empty, `default` or `none`: the server policy's mode. `host` and `container:ID`
    /// are refused (403); named networks are not supported yet (400).
    pub network_mode: String,
    /// Refused (400) when non-empty: ports are not published yet.
    pub port_bindings: Option<BTreeMap<String, Value>>,
    /// Only `no` (or none) is accepted: a container's command runs once.
    pub restart_policy: Option<RestartPolicy>,
    /// Remove the container once its command exits.
    pub auto_remove: bool,
    /// Refused (400) when set: volumes are not supported yet.
    pub volume_driver: String,
    /// Refused (400) when non-empty: volumes are not supported yet.
    pub volumes_from: Option<Vec<String>>,
    /// Ignored at create: `POST /containers/{id}/resize` sets a terminal's size.
    pub console_size: Option<Vec<u32>>,
    /// Capabilities to add, as `--cap-add`: one the server's policy does not allow is
    /// refused (403).
    pub cap_add: Option<Vec<String>>,
    /// Ignored: a sandbox has the policy's capabilities and `CapAdd`, nothing more.
    pub cap_drop: Option<Vec<String>>,
    /// Empty or `private`; any other is refused (403).
    pub cgroupns_mode: String,
    /// Accepted without effect (a warning when non-empty).
    pub dns: Option<Vec<String>>,
    /// Accepted without effect (a warning when non-empty).
    pub dns_options: Option<Vec<String>>,
    /// Accepted without effect (a warning when non-empty).
    pub dns_search: Option<Vec<String>>,
    /// Accepted without effect (a warning when non-empty).
    pub extra_hosts: Option<Vec<String>>,
    /// Refused (403) when non-empty: supplementary groups are never granted.
    pub group_add: Option<Vec<String>>,
    /// Empty, `private`, `none` or `shareable`; any other (the host's, another
    /// container's) is refused (403).
    pub ipc_mode: String,
    /// Refused (403) when set: a sandbox's cgroup is stockade's.
    pub cgroup: String,
    /// Refused (400) when non-empty: not supported yet.
    pub links: Option<Vec<String>>,
    /// The OOM score adjustment; one below the server's floor is refused (403). 0 keeps
    /// the policy's.
    pub oom_score_adj: i32,
    /// Empty or `private`; any other is refused (403).
    pub pid_mode: String,
    /// Refused (403) when true.
    pub privileged: bool,
    /// Refused (400) when true: ports are not published yet.
    pub publish_all_ports: bool,
    /// Keep the root filesystem read-only. When false it is writable, as Docker's is,
    /// unless the server's policy keeps it read-only (a warning says so).
    pub readonly_rootfs: bool,
    /// `no-new-privileges` (always on anyway); `seccomp=unconfined` and
    /// `apparmor=unconfined` only where the server's policy has them off (403 otherwise);
    /// anything else is refused.
    pub security_opt: Option<Vec<String>>,
    /// Refused (400) when non-empty: not supported yet.
    pub storage_opt: Option<BTreeMap<String, String>>,
    /// Tmpfs mounts, path to options, as `--tmpfs`; one at `/tmp` sets only the size of
    /// stockade's own `/tmp` (a warning says so).
    pub tmpfs: Option<BTreeMap<String, String>>,
    /// Empty only; `host` is refused (403).
    #[serde(rename = "UTSMode")]
    pub uts_mode: String,
    /// Empty or `private`; any other is refused (403).
    pub userns_mode: String,
    /// The size of `/dev/shm` in bytes; above the server's ceiling is refused (403). 0
    /// keeps the policy's.
    pub shm_size: i64,
    /// Refused (403) when non-empty.
    pub sysctls: Option<BTreeMap<String, String>>,
    /// Empty or `runc` (the server's runtime); any other is refused (400).
    pub runtime: String,
    /// Empty or `default`; any other is refused (400).
    pub isolation: String,
    /// Accepted without effect (a warning when set).
    pub cpu_shares: i64,
    /// The memory limit in bytes; above the server's ceiling is refused (403). 0 keeps
    /// the policy's.
    pub memory: i64,
    /// The CPU limit in billionths of a CPU; above the server's ceiling is refused (403).
    /// Not with `CpuQuota`. 0 keeps the policy's.
    pub nano_cpus: i64,
    /// Refused (403) when set: a sandbox's cgroup is stockade's.
    pub cgroup_parent: String,
    /// The I/O weight, 10 to 1000 (validated as the policy's `limits.io_weight`). 0
    /// keeps the policy's.
    pub blkio_weight: u16,
    /// The period of `CpuQuota`, in microseconds; 0 means 100000.
    pub cpu_period: i64,
    /// CPU time per `CpuPeriod`, in microseconds: a CPU limit of quota / period CPUs,
    /// treated as `NanoCpus` is. 0: none.
    pub cpu_quota: i64,
    /// Accepted without effect (a warning when set).
    pub cpuset_cpus: String,
    /// Accepted without effect (a warning when set).
    pub cpuset_mems: String,
    /// Refused (403) when non-empty: host devices are never passed to a sandbox.
    pub devices: Option<Vec<Value>>,
    /// Refused (403) when non-empty: device access is never widened.
    pub device_cgroup_rules: Option<Vec<String>>,
    /// Refused (403) when non-empty: host devices are never passed to a sandbox.
    pub device_requests: Option<Vec<Value>>,
    /// Accepted without effect (a warning when set).
    pub memory_reservation: i64,
    /// Swap is off in every sandbox: a value other than 0, -1 or `Memory` brings a
    /// warning.
    pub memory_swap: i64,
    /// Accepted without effect (a warning when 0 or more).
    pub memory_swappiness: Option<i64>,
    /// `true` is refused (403): the OOM killer is never disabled for a sandbox.
    pub oom_kill_disable: Option<bool>,
    /// At most this many processes; above the server's ceiling or negative (unlimited)
    /// is refused (403). None or 0 keeps the policy's.
    pub pids_limit: Option<i64>,
    /// `nofile`, `nproc` and `fsize`, each at most the server's (403 above); `core` only
    /// at 0; unlimited is refused.
    pub ulimits: Option<Vec<Ulimit>>,
    /// Refused (403) when given: the masked paths are stockade's.
    pub masked_paths: Option<Vec<String>>,
    /// Refused (403) when given: the read-only paths are stockade's.
    pub readonly_paths: Option<Vec<String>>,
    /// `bind` mounts (as `Binds`) and `tmpfs` mounts (as `Tmpfs`); any other type is
    /// refused (400).
    pub mounts: Option<Vec<Value>>,
    /// Ignored: pid 1 is always stockade's own init.
    pub init: Option<bool>,
}

/// `HostConfig.LogConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    /// The driver: `json-file`, or empty.
    #[serde(rename = "Type")]
    pub typ: String,
    /// The driver's options: ignored (the log file is stockade's).
    pub config: Option<BTreeMap<String, String>>,
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// `no`, or empty; any other is refused.
    pub name: String,
}

/// One of `HostConfig.Ulimits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ulimit {
    /// `nofile`, `nproc`, `fsize` or `core`.
    pub name: String,
    /// The soft limit: the lower of soft and hard is applied as both; negative
    /// (unlimited) is refused (403).
    pub soft: i64,
    /// The hard limit; see [`Self::soft`].
    pub hard: i64,
}

/// `NetworkingConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    /// Endpoint settings by network name; only the names are read.
    pub endpoints_config: Option<BTreeMap<String, Value>>,
}

/// `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecCreateBody {
    /// Give the command the hijacked connection's input as stdin (otherwise its stdin is
    /// empty).
    pub attach_stdin: bool,
    /// Shown by exec inspect; the command's output is sent either way.
    pub attach_stdout: bool,
    /// Shown by exec inspect; the command's output is sent either way.
    pub attach_stderr: bool,
    /// Run the command on a terminal (also when `POST /exec/{id}/start` asks).
    pub tty: bool,
    /// `K=V` entries over the container's environment.
    pub env: Option<Vec<String>>,
    /// The command, the program first; required.
    pub cmd: Option<Vec<String>>,
    /// The working directory; empty keeps the container's.
    pub working_dir: String,
    /// `UID[:GID]` (`root` for 0); empty keeps the container's.
    pub user: String,
    /// Refused (403) when true: an exec has exactly the sandbox's confinement.
    pub privileged: bool,
    /// `[rows, columns]` of the terminal; used when the start request gives none.
    pub console_size: Option<Vec<u32>>,
}

/// `POST /exec/{id}/start`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStartBody {
    /// Run the command and answer at once, without streaming it.
    pub detach: bool,
    /// Run the command on a terminal (also when the create request asked).
    pub tty: bool,
    /// `[rows, columns]` of the terminal; wins over the create request's.
    pub console_size: Option<Vec<u32>>,
}
