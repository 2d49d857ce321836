//! A Docker create request → a stockade policy and main command. Pure: the server's policy
//! and the image's config come in as data, and the answer is data or a refusal.
//!
//! The server's policy (`stockade serve --policy FILE`) is both the default of every field
//! a request leaves out and the ceiling of every limit a request sets: a request may
//! tighten a limit but never loosen one (memory, CPUs, pids, `/dev/shm`, rlimits,
//! `oom_score_adj`), and may turn seccomp or AppArmor off only where the server's own
//! policy already has it off. What stockade will not grant is refused with 403 naming the
//! field (privileged, host namespaces, devices, capabilities beyond stockade's allowlist,
//! sysctls, binds of `/`, of a container socket or from outside `--allow-bind` roots); what
//! it does not implement yet with 400 naming the field. Nothing asked for is dropped
//! silently: a field stockade accepts without acting on it (CPU shares, DNS servers, a
//! healthcheck) comes back as a warning in the create response.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::wire::{CreateBody, HostConfig};
use crate::images::config_merge::{merge, MergeError, Requested};
use crate::images::ImageConfig;
use crate::policy::{Policy, PolicyError, PolicyOverrides, ValidatedPolicy};
use crate::sandbox::MainProcess;
use limits::{limits, security_opts};
use storage::{check_storage, storage};

mod limits;
mod storage;

/// The server's policy: the defaults and the ceiling of every request.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// As read from `--policy` (or the built-in defaults).
    pub policy: Policy,
    /// The same, validated: the ceiling limits are read from it.
    pub ceiling: ValidatedPolicy,
    /// Host directories beneath which binds could be granted (`--allow-bind`).
    pub allow_bind: Vec<PathBuf>,
}

/// A request refused: the HTTP status (400 or 403) and one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status: 400 or 403.
    pub status: u16,
    /// `FIELD: reason`, one line.
    pub message: String,
}

impl Refusal {
    /// 403: stockade will not grant it.
    pub fn forbidden(field: &str, reason: impl std::fmt::Display) -> Refusal {
        Refusal {
            status: 403,
            message: format!("{field}: {reason}"),
        }
    }

    /// 400: malformed, or not implemented.
    pub fn bad(field: &str, reason: impl std::fmt::Display) -> Refusal {
        Refusal {
            status: 400,
            message: format!("{field}: {reason}"),
        }
    }

    fn not_yet(field: &str) -> Refusal {
        Refusal::bad(field, "not supported yet by stockade serve")
    }
}

/// A create request as stockade will carry it out.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The server's policy with the request's fields that have no override set.
    pub policy: Policy,
    /// The request's fields that override the policy (as the CLI's flags do).
    pub overrides: PolicyOverrides,
    /// The main command, with its terminal and stdin settings.
    pub main: MainProcess,
    /// `Labels`, as given.
    pub labels: BTreeMap<String, String>,
    /// Remove the container once it exits (`HostConfig.AutoRemove`).
    pub auto_remove: bool,
    /// Close the command's stdin when the first attached client's input ends.
    pub stdin_once: bool,
    /// Fields accepted without effect, one line each.
    pub warnings: Vec<String>,
}

impl Mapped {
    /// Validates the policy (see [`crate::policy::Policy::validate`]); an error names the Docker
    /// field it came from.
    pub fn validate(&self, env: &dyn crate::policy::PolicyEnv) -> Result<ValidatedPolicy, Refusal> {
        self.policy
            .clone()
            .validate(None, &self.overrides, env)
            .map_err(policy_refusal)
    }
}

/// A policy error as the Docker field it came from; capability errors are 403.
pub fn policy_refusal(e: PolicyError) -> Refusal {
    let PolicyError::Field { origin, message } = &e else {
        return Refusal::bad("policy", e);
    };
    let field = match origin.as_str() {
        "--memory" => "HostConfig.Memory",
        "--cpus" => "HostConfig.NanoCpus",
        "--pids" => "HostConfig.PidsLimit",
        "--env" => "Env",
        "--user" => "User",
        "--image" => "Image",
        "--cap-add" => "HostConfig.CapAdd",
        "--seccomp" | "--apparmor" => "HostConfig.SecurityOpt",
        "--network" => "HostConfig.NetworkMode",
        "--read-write-root" => "HostConfig.ReadonlyRootfs",
        "process.cwd" => "WorkingDir",
        "-v" => "HostConfig.Binds",
        "--tmpfs" => "HostConfig.Tmpfs",
        "process.hostname" => "Hostname",
        "limits.nofile" | "limits.nproc" | "limits.fsize" => "HostConfig.Ulimits",
        "limits.shm_size" => "HostConfig.ShmSize",
        "limits.oom_score_adj" => "HostConfig.OomScoreAdj",
        "limits.io_weight" => "HostConfig.BlkioWeight",
        other => other,
    };
    let status = if field == "HostConfig.CapAdd" {
        403
    } else {
        400
    };
    Refusal {
        status,
        message: format!("{field}: {message}"),
    }
}

/// Maps `body` onto the server's policy. `image` is the image's config when the store has
/// one: its entrypoint, command, environment, working directory and user are merged by
/// [`crate::images::config_merge::merge`] (the request's fields are explicit, like flags;
/// an image USER of root or a name is not granted and comes back as a warning). With no
/// working directory anywhere, Docker's default `/` applies.
pub fn map_create(
    body: &CreateBody,
    image: Option<&ImageConfig>,
    server: &ServerPolicy,
) -> Result<Mapped, Refusal> {
    let h = &body.host_config;
    let mut warnings = Vec::new();
    refuse_grants(h)?;
    check_namespaces(h)?;
    check_storage(body, &server.allow_bind)?;
    let mut policy = server.policy.clone();
    let mut o = PolicyOverrides::default();
    storage(h, &mut policy, &mut o, &mut warnings)?;
    if body.image.is_empty() {
        return Err(Refusal::bad("Image", "required"));
    }
    o.image = Some(body.image.clone());

    // Network: `none` and `default` both mean the server policy's mode (none or loopback);
    // the host's network and named networks are not offered.
    match h.network_mode.as_str() {
        "" | "default" | "none" => {}
        "host" => {
            return Err(Refusal::forbidden(
                "HostConfig.NetworkMode",
                "`host`: the host's network is never shared with a sandbox",
            ))
        }
        m if m.starts_with("container:") => {
            return Err(Refusal::forbidden(
                "HostConfig.NetworkMode",
                format!("`{m}`: joining another container's network is refused"),
            ))
        }
        m => {
            return Err(Refusal::bad(
                "HostConfig.NetworkMode",
                format!("`{m}`: named networks are not supported yet (none, default)"),
            ))
        }
    }
    if let Some(eps) = body
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
    {
        for name in eps.keys() {
            if !["", "default", "none"].contains(&name.as_str()) && *name != h.network_mode {
                return Err(Refusal::bad(
                    "NetworkingConfig.EndpointsConfig",
                    format!("`{name}`: named networks are not supported yet (none, default)"),
                ));
            }
        }
    }

    limits(h, &server.ceiling, &mut policy, &mut o, &mut warnings)?;
    security_opts(h, &server.policy, &mut o)?;
    if let Some(caps) = &h.cap_add {
        o.cap_add = caps.clone();
    }

    // The root filesystem is writable as Docker's is, unless the request or the server's
    // policy makes it read-only.
    if !h.readonly_rootfs {
        if server.policy.filesystem.read_write_root == Some(false) {
            warnings.push("HostConfig.ReadonlyRootfs: this server's policy keeps every root filesystem read-only".into());
        } else {
            o.read_write_root = true;
        }
    }

    // What the request gives is explicit; the image's config fills in the rest by the one
    // rule every front end uses (`images::config_merge`).
    if !body.user.is_empty() {
        o.user = Some(numeric_user(&body.user)?);
    }
    for kv in body.env.iter().flatten() {
        if !kv.contains('=') {
            return Err(Refusal::bad("Env", format!("`{kv}`: expected K=V")));
        }
        o.env.push(kv.clone());
    }
    let cwd = body.working_dir.as_str();
    if !cwd.is_empty() {
        if !cwd.starts_with('/') || cwd.split('/').any(|c| c == "..") {
            return Err(Refusal::bad(
                "WorkingDir",
                format!("`{cwd}`: must be an absolute path without `..`"),
            ));
        }
        policy.process.cwd = Some(cwd.to_string());
    }
    let requested = Requested {
        command: body.cmd.clone().unwrap_or_default(),
        entrypoint: body.entrypoint.clone(),
    };
    let merged = merge(
        &body.image,
        &image.cloned().unwrap_or_default(),
        &requested,
        &policy,
        &o,
    )
    .map_err(|e| match e {
        MergeError::NoCommand => Refusal::bad("Cmd", e),
        MergeError::WorkingDir { .. } => Refusal::bad("Image", e),
    })?;
    warnings.extend(merged.warnings);
    let argv = merged.argv;
    policy = merged.policy;
    // Docker's default working directory, where neither the request, the server's policy
    // nor the image names one.
    policy.process.cwd.get_or_insert_with(|| "/".to_string());
    if !body.hostname.is_empty() {
        policy.process.hostname = Some(body.hostname.clone());
    }

    for (set, field) in [
        (h.cpu_shares != 0, "HostConfig.CpuShares"),
        (!h.cpuset_cpus.is_empty(), "HostConfig.CpusetCpus"),
        (!h.cpuset_mems.is_empty(), "HostConfig.CpusetMems"),
        (h.memory_reservation != 0, "HostConfig.MemoryReservation"),
        (
            h.memory_swappiness.is_some_and(|s| s >= 0),
            "HostConfig.MemorySwappiness",
        ),
        (
            body.exposed_ports.as_ref().is_some_and(|p| !p.is_empty()),
            "ExposedPorts",
        ),
        (
            body.healthcheck.as_ref().is_some_and(|v| !v.is_null()),
            "Healthcheck",
        ),
        (
            h.dns.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.Dns",
        ),
        (
            h.dns_search.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.DnsSearch",
        ),
        (
            h.dns_options.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.DnsOptions",
        ),
        (
            h.extra_hosts.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.ExtraHosts",
        ),
        (!body.domainname.is_empty(), "Domainname"),
        (
            !["", "SIGTERM", "TERM", "15"].contains(&body.stop_signal.as_str()),
            "StopSignal",
        ),
    ] {
        if set {
            warnings.push(format!(
                "{field}: accepted without effect by stockade serve"
            ));
        }
    }
    Ok(Mapped {
        policy,
        overrides: o,
        main: MainProcess {
            argv,
            tty: body.tty,
            stdin: body.open_stdin,
        },
        labels: body.labels.clone().unwrap_or_default(),
        auto_remove: h.auto_remove,
        stdin_once: body.stdin_once,
        warnings,
    })
}

/// What grants the sandbox more than a sandbox has: refused with 403.
fn refuse_grants(h: &HostConfig) -> Result<(), Refusal> {
    let nonempty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
    if h.privileged {
        return Err(Refusal::forbidden("HostConfig.Privileged", "privileged containers are refused: every sandbox runs with no capabilities beyond stockade's allowlist, seccomp and no-new-privileges"));
    }
    if nonempty(&h.devices) {
        return Err(Refusal::forbidden(
            "HostConfig.Devices",
            "host devices are never passed to a sandbox",
        ));
    }
    if nonempty(&h.device_requests) {
        return Err(Refusal::forbidden(
            "HostConfig.DeviceRequests",
            "host devices are never passed to a sandbox",
        ));
    }
    if h.device_cgroup_rules
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return Err(Refusal::forbidden(
            "HostConfig.DeviceCgroupRules",
            "device access is never widened",
        ));
    }
    if h.sysctls.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Refusal::forbidden(
            "HostConfig.Sysctls",
            "sysctls are refused",
        ));
    }
    if h.group_add.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Refusal::forbidden(
            "HostConfig.GroupAdd",
            "supplementary groups are never granted",
        ));
    }
    if !h.cgroup_parent.is_empty() || !h.cgroup.is_empty() {
        return Err(Refusal::forbidden(
            "HostConfig.CgroupParent",
            "a sandbox's cgroup is stockade's",
        ));
    }
    if h.masked_paths.is_some() || h.readonly_paths.is_some() {
        return Err(Refusal::forbidden(
            "HostConfig.MaskedPaths",
            "the masked and read-only paths are stockade's and are never relaxed",
        ));
    }
    if h.oom_kill_disable == Some(true) {
        return Err(Refusal::forbidden(
            "HostConfig.OomKillDisable",
            "the OOM killer is never disabled for a sandbox",
        ));
    }
    Ok(())
}

/// Host namespaces are refused; the private modes Docker also offers are what a sandbox
/// has anyway.
fn check_namespaces(h: &HostConfig) -> Result<(), Refusal> {
    for (field, mode, ok) in [
        ("HostConfig.PidMode", &h.pid_mode, &["", "private"][..]),
        (
            "HostConfig.IpcMode",
            &h.ipc_mode,
            &["", "private", "none", "shareable"][..],
        ),
        ("HostConfig.UTSMode", &h.uts_mode, &[""][..]),
        (
            "HostConfig.UsernsMode",
            &h.userns_mode,
            &["", "private"][..],
        ),
        (
            "HostConfig.CgroupnsMode",
            &h.cgroupns_mode,
            &["", "private"][..],
        ),
    ] {
        if ok.contains(&mode.as_str()) {
            continue;
        }
        return Err(Refusal::forbidden(
            field,
            format!(
                "`{mode}`: a sandbox never shares a namespace with the host or another container"
            ),
        ));
    }
    Ok(())
}

/// `UID[:GID]`, numeric, or `root` (0).
fn numeric_user(user: &str) -> Result<String, Refusal> {
    let part = |p: &str| {
        if p == "root" {
            Some("0".to_string())
        } else {
            p.parse::<u32>().ok().map(|n| n.to_string())
        }
    };
    let parsed = match user.split_once(':') {
        Some((u, g)) => part(u).zip(part(g)).map(|(u, g)| format!("{u}:{g}")),
        None => part(user),
    };
    parsed.ok_or_else(|| {
        Refusal::bad(
            "User",
            format!("`{user}`: only a numeric UID[:GID] (or root) is supported"),
        )
    })
}

#[cfg(test)]
mod tests;
