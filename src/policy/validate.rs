//! Policy → [`ValidatedPolicy`]: every value parsed, range-checked and resolved, or one
//! error naming the field or flag at fault.

use std::path::Path;

use oci_spec::runtime::Capability;

use super::limits;
use super::mounts;
use super::validated::{
    AppArmorChoice, IdMap, NetworkMode, SeccompChoice, User, ValidatedPolicy, CAP_ADD_ALLOWLIST,
    DEFAULT_APPARMOR, DEFAULT_ENV, DEFAULT_GID, DEFAULT_HOSTNAME, DEFAULT_SECCOMP, DEFAULT_UID,
    DEFAULT_USERNS_HOST_ID, DEFAULT_USERNS_SIZE,
};
use super::{Origins, Policy, PolicyEnv, PolicyError, DEFAULT_IMAGE};
use crate::bind::{self, HostDir};
use crate::seccomp;

/// Host paths that may never be mounted into a sandbox, nor any directory that contains
/// one of them: mounting them would hand the sandbox the host.
const PROTECTED_HOST_PATHS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/boot",
    "/etc",
    "/root",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/var/lib/containerd",
    "/var/lib/stockade",
    "/var/log",
];

fn err(origins: &Origins, field: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        origin: origins.of(field),
        message: message.into(),
    }
}

pub(super) fn validate(
    p: &Policy,
    o: &Origins,
    env: &dyn PolicyEnv,
) -> Result<ValidatedPolicy, PolicyError> {
    let mut warnings = Vec::new();

    let image = p.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(o, "image", format!("`{image}` is not an image name")));
    }

    let user = parse_user(o, p.process.user.as_deref())?;
    if user.uid == 0 {
        warnings.push(format!(
            "{}: the command runs as uid 0 inside the sandbox",
            o.of("process.user")
        ));
    }

    let envs = merge_env(o, p.process.env.as_deref().unwrap_or(&[]))?;

    let hostname = p
        .process
        .hostname
        .clone()
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());
    if hostname.is_empty()
        || hostname.len() > 63
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(err(
            o,
            "process.hostname",
            format!("`{hostname}` is not a hostname (letters, digits, `-`, `.`; at most 63)"),
        ));
    }

    let limits = limits::validate(&p.limits, o)?;

    let network = match p.network.mode.as_deref() {
        None => NetworkMode::None,
        Some(name) => NetworkMode::from_name(name).ok_or_else(|| {
            err(
                o,
                "network.mode",
                format!("`{name}` is not a network mode ({})", NetworkMode::NAMES),
            )
        })?,
    };
    let mut network_rules = crate::network::NetworkRules::parse(
        network,
        p.network.allow.as_deref().unwrap_or(&[]),
        p.network.dns_upstream.as_deref().unwrap_or(&[]),
    )
    .map_err(|(field, m)| err(o, field, m))?;
    network_rules.group = crate::network::group::parse_group(network, p.network.group.as_deref())
        .map_err(|m| err(o, "network.group", m))?;
    network_rules.publish =
        crate::network::publish::parse_all(network, p.network.publish.as_deref().unwrap_or(&[]))
            .map_err(|m| err(o, "network.publish", m))?;
    if !network_rules.allow.is_empty() {
        let opened: Vec<String> = network_rules
            .allow
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        warnings.push(format!(
            "{}: the sandbox may reach {}",
            o.of("network.allow"),
            opened.join(", ")
        ));
    }

    let read_only_root = !p.filesystem.read_write_root.unwrap_or(false);
    if !read_only_root {
        warnings.push(format!(
            "{}: the root filesystem is writable",
            o.of("filesystem.read_write_root")
        ));
    }
    let workspace = host_dir(
        o,
        "filesystem.workspace",
        p.filesystem.workspace.as_deref(),
        env,
    )?;
    let input = host_dir(o, "filesystem.input", p.filesystem.input.as_deref(), env)?;
    let mounts = mounts::validate(
        o,
        &p.filesystem.mounts,
        &p.filesystem.tmpfs,
        workspace,
        input,
        p.filesystem.workspace_size.is_some(),
        env,
    )?;
    let (workspace, input) = (mounts.workspace, mounts.input);
    let workspace_owner_sandbox = match p.filesystem.workspace_owner.as_deref() {
        None | Some("keep") => false,
        Some("sandbox") if workspace.is_some() => true,
        Some("sandbox") => {
            return Err(err(
                o,
                "filesystem.workspace_owner",
                "`sandbox` needs a host workspace (filesystem.workspace or --workspace)",
            ))
        }
        Some(other) => {
            return Err(err(
                o,
                "filesystem.workspace_owner",
                format!("`{other}` is not a workspace owner (keep, sandbox)"),
            ))
        }
    };
    let managed_workspace = limits::workspace_size(
        &p.filesystem.workspace_size,
        o,
        limits.disk,
        read_only_root,
        workspace.is_some(),
    )?;

    let cwd = match &p.process.cwd {
        Some(c) => c.clone(),
        None if workspace.is_some() || managed_workspace.is_some() => "/workspace".to_string(),
        None => "/tmp".to_string(),
    };
    if !cwd.starts_with('/') || cwd.split('/').any(|c| c == "..") {
        return Err(err(
            o,
            "process.cwd",
            format!("`{cwd}` must be an absolute path without `..`"),
        ));
    }

    let cap_add = parse_caps(o, p.security.cap_add.as_deref().unwrap_or(&[]))?;
    if !cap_add.is_empty() {
        warnings.push(format!(
            "{}: capabilities granted: {}",
            o.of("security.cap_add"),
            cap_add.iter().map(cap_name).collect::<Vec<_>>().join(", ")
        ));
    }

    let seccomp = resolve_seccomp(o, p.security.seccomp.as_deref(), env, &mut warnings)?;
    if seccomp == SeccompChoice::Unconfined {
        warnings.push(format!("{}: seccomp is disabled", o.of("security.seccomp")));
    }

    let apparmor = match p.security.apparmor.as_deref() {
        None => AppArmorChoice::Profile(DEFAULT_APPARMOR.to_string()),
        Some("unconfined") => {
            warnings.push(format!(
                "{}: AppArmor is disabled",
                o.of("security.apparmor")
            ));
            AppArmorChoice::Unconfined
        }
        Some(name)
            if !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            AppArmorChoice::Profile(name.to_string())
        }
        Some(name) => {
            return Err(err(
                o,
                "security.apparmor",
                format!("`{name}` is not an AppArmor profile name"),
            ))
        }
    };

    let no_new_privileges = p.security.no_new_privileges.unwrap_or(true);
    if !no_new_privileges {
        warnings.push(format!(
            "{}: setuid binaries can gain privileges",
            o.of("security.no_new_privileges")
        ));
    }

    let user_namespace = match &p.security.user_namespace {
        None => None,
        Some(u) => {
            let m = IdMap {
                host_id: u.host_id.unwrap_or(DEFAULT_USERNS_HOST_ID),
                size: u.size.unwrap_or(DEFAULT_USERNS_SIZE),
            };
            if m.host_id == 0 {
                return Err(err(
                    o,
                    "security.user_namespace.host_id",
                    "0 would map container root to host root",
                ));
            }
            if m.size == 0 || m.host_id.checked_add(m.size).is_none() {
                return Err(err(
                    o,
                    "security.user_namespace.size",
                    format!("{} IDs from {} is not a usable range", m.size, m.host_id),
                ));
            }
            if user.uid >= m.size || user.gid >= m.size {
                return Err(err(
                    o,
                    "process.user",
                    format!(
                        "{}:{} is outside the user namespace's {} mapped IDs",
                        user.uid, user.gid, m.size
                    ),
                ));
            }
            Some(m)
        }
    };

    let uid_per_sandbox = p.process.user.is_none() && user_namespace.is_none();
    Ok(ValidatedPolicy {
        image,
        user,
        env: envs,
        cwd,
        hostname,
        limits,
        network,
        network_rules,
        read_only_root,
        workspace,
        input,
        managed_workspace,
        binds: mounts.binds,
        tmpfs: mounts.tmpfs,
        workspace_owner_sandbox,
        cap_add,
        seccomp,
        apparmor,
        no_new_privileges,
        user_namespace,
        uid_per_sandbox,
        warnings,
    })
}

fn parse_user(o: &Origins, v: Option<&str>) -> Result<User, PolicyError> {
    let Some(s) = v else {
        return Ok(User {
            uid: DEFAULT_UID,
            gid: DEFAULT_GID,
        });
    };
    let bad = || {
        err(
            o,
            "process.user",
            format!("`{s}` is not UID[:GID] (numbers, e.g. 1000:1000)"),
        )
    };
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = match g {
        Some(g) => g.parse().map_err(|_| bad())?,
        None => uid,
    };
    // 4294967295 is (uid_t)-1, "no change" to the kernel.
    if uid == u32::MAX || gid == u32::MAX {
        return Err(bad());
    }
    Ok(User { uid, gid })
}

fn merge_env(o: &Origins, extra: &[String]) -> Result<Vec<String>, PolicyError> {
    let mut out: Vec<String> = DEFAULT_ENV
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    for kv in extra {
        let Some((k, _)) = kv.split_once('=') else {
            return Err(err(o, "process.env", format!("`{kv}` is not K=V")));
        };
        if k.is_empty()
            || kv.contains('\0')
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err(
                o,
                "process.env",
                format!("`{kv}`: variable names are letters, digits and `_`"),
            ));
        }
        let prefix = format!("{k}=");
        out.retain(|e| !e.starts_with(&prefix));
        out.push(kv.clone());
    }
    Ok(out)
}

pub(super) fn host_dir(
    o: &Origins,
    field: &'static str,
    v: Option<&Path>,
    env: &dyn PolicyEnv,
) -> Result<Option<HostDir>, PolicyError> {
    let Some(path) = v else { return Ok(None) };
    let dir = env
        .bind_dir(path)
        .map_err(|e| err(o, field, e.to_string()))?;
    let canon = dir.path.as_path();
    let protected = PROTECTED_HOST_PATHS
        .iter()
        .map(Path::new)
        .find(|p| canon == Path::new("/") || canon.starts_with(p) || p.starts_with(canon));
    if canon == Path::new("/") || protected.is_some() {
        return Err(err(
            o,
            field,
            format!(
                "{} may not be mounted into a sandbox (it is or contains a protected host path{})",
                canon.display(),
                protected
                    .map(|p| format!(" such as {}", p.display()))
                    .unwrap_or_default()
            ),
        ));
    }
    let roots = env.bind_roots();
    if bind::beneath_root(canon, &roots).is_none() {
        return Err(err(
            o,
            field,
            format!(
                "{} is not beneath an allowed bind root ({}; {} sets them)",
                canon.display(),
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                bind::BIND_ROOTS_ENV
            ),
        ));
    }
    Ok(Some(dir))
}

fn parse_caps(o: &Origins, names: &[String]) -> Result<Vec<Capability>, PolicyError> {
    let mut out: Vec<Capability> = Vec::new();
    for name in names {
        let upper = name.trim().to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let cap: Capability = serde_json::from_value(serde_json::Value::String(full.clone()))
            .map_err(|_| {
                err(
                    o,
                    "security.cap_add",
                    format!("`{name}` is not a capability"),
                )
            })?;
        if !CAP_ADD_ALLOWLIST.contains(&full.as_str()) {
            return Err(err(
                o,
                "security.cap_add",
                format!(
                    "{full} is not one stockade grants (allowed: {})",
                    CAP_ADD_ALLOWLIST.join(", ")
                ),
            ));
        }
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    Ok(out)
}

fn resolve_seccomp(
    o: &Origins,
    v: Option<&str>,
    env: &dyn PolicyEnv,
    warnings: &mut Vec<String>,
) -> Result<SeccompChoice, PolicyError> {
    let name = v.unwrap_or(DEFAULT_SECCOMP);
    if name == "unconfined" {
        return Ok(SeccompChoice::Unconfined);
    }
    let text = match seccomp::builtin_profile(name) {
        Some(t) => t.to_string(),
        None => env.read_file(Path::new(name)).map_err(|e| {
            err(
                o,
                "security.seccomp",
                format!(
                    "`{name}` is neither a built-in profile ({}) nor a readable file: {}",
                    seccomp::BUILTIN_PROFILES.join(", "),
                    e
                ),
            )
        })?,
    };
    let profile = seccomp::Profile::parse(&text)
        .map_err(|e| err(o, "security.seccomp", format!("{name}: {e}")))?;
    let filter = profile
        .to_oci()
        .map_err(|e| err(o, "security.seccomp", format!("{name}: {e}")))?;
    for w in profile.warnings() {
        warnings.push(format!("{}: {name}: {w}", o.of("security.seccomp")));
    }
    Ok(SeccompChoice::Profile {
        name: name.to_string(),
        filter,
    })
}

/// `CAP_NET_BIND_SERVICE` for [`Capability::NetBindService`] (the spec's spelling).
pub fn cap_name(c: &Capability) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{c:?}"))
}
