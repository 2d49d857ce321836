//! A request's `policy` (the policy file's fields, as JSON) → the policy its sandbox gets.
//! Pure but for the [`PolicyEnv`] validation reads through.
//!
//! The server's policy (`--policy`) is the default of every field the request leaves out
//! and the ceiling of every limit it sets: a request may tighten but never loosen. What
//! stockade will not grant over this API is refused with 403 naming the field: host
//! directories (`filesystem.workspace`, `input`, `mounts`), a named user, capabilities,
//! seccomp or AppArmor other than the server's (seccomp `strict` is always allowed), a
//! network mode wider than the server's, `network.allow`, `no_new_privileges = false` and a
//! user namespace the server's policy does not have.

use crate::policy::{format_size, Policy, PolicyEnv, PolicyOverrides, ValidatedPolicy};
use crate::serve::docker::create::ServerPolicy;

use super::error::{from_policy, HttpError};

/// The policy of a sandbox or run asked for with `req` (none: the server's own).
pub fn request_policy(
    server: &ServerPolicy,
    req: Option<&Policy>,
    env: &dyn PolicyEnv,
) -> Result<ValidatedPolicy, HttpError> {
    let Some(req) = req else {
        return Ok(server.ceiling.clone());
    };
    refuse_grants(&server.policy, req)?;
    let merged = merge(&server.policy, req)?;
    let validated = merged
        .validate(None, &PolicyOverrides::default(), env)
        .map_err(from_policy)?;
    within_ceiling(&server.ceiling, &validated)?;
    Ok(validated)
}

fn forbidden(field: &str, reason: impl std::fmt::Display) -> HttpError {
    HttpError::forbidden(format!("policy.{field}: {reason}")).field(format!("policy.{field}"))
}

/// Refuses what this API never grants beyond the server's policy.
fn refuse_grants(server: &Policy, req: &Policy) -> Result<(), HttpError> {
    let fs = &req.filesystem;
    for (field, set) in [
        ("filesystem.workspace", fs.workspace.is_some()),
        ("filesystem.input", fs.input.is_some()),
        ("filesystem.mounts", !fs.mounts.is_empty()),
        ("filesystem.workspace_owner", fs.workspace_owner.is_some()),
    ] {
        if set {
            return Err(forbidden(
                field,
                "host directories are not granted over the HTTP API (use filesystem.workspace_size for a managed workspace)",
            ));
        }
    }
    if let Some(u) = &req.process.user {
        if Some(u) != server.process.user.as_ref() {
            return Err(forbidden(
                "process.user",
                "a named user is not granted over the HTTP API (each sandbox runs as a host UID of its own)",
            ));
        }
    }
    let sec = &req.security;
    let theirs = server.security.cap_add.clone().unwrap_or_default();
    for cap in sec.cap_add.iter().flatten() {
        if !theirs.iter().any(|c| c.eq_ignore_ascii_case(cap)) {
            return Err(forbidden(
                "security.cap_add",
                format!("`{cap}` is not granted by this server's policy"),
            ));
        }
    }
    if let Some(s) = &sec.seccomp {
        let server_s = server.security.seccomp.as_deref().unwrap_or("default");
        if s != server_s && s != "strict" {
            return Err(forbidden(
                "security.seccomp",
                format!("`{s}`: only this server's profile (`{server_s}`) or `strict` is allowed"),
            ));
        }
    }
    if let Some(a) = &sec.apparmor {
        if Some(a) != server.security.apparmor.as_ref() {
            return Err(forbidden(
                "security.apparmor",
                "only this server's AppArmor profile is allowed",
            ));
        }
    }
    if sec.no_new_privileges == Some(false) && server.security.no_new_privileges != Some(false) {
        return Err(forbidden(
            "security.no_new_privileges",
            "`false` is not granted by this server's policy",
        ));
    }
    if sec.user_namespace.is_some() && sec.user_namespace != server.security.user_namespace {
        return Err(forbidden(
            "security.user_namespace",
            "only this server's user namespace setting is allowed",
        ));
    }
    let rank = |m: &str| ["none", "loopback", "egress"].iter().position(|x| *x == m);
    if let Some(m) = &req.network.mode {
        let server_m = server.network.mode.as_deref().unwrap_or("none");
        if let (Some(r), Some(s)) = (rank(m), rank(server_m)) {
            if r > s {
                return Err(forbidden(
                    "network.mode",
                    format!("`{m}` is wider than this server's `{server_m}`"),
                ));
            }
        }
    }
    if req.network.allow.as_ref().is_some_and(|a| !a.is_empty())
        && req.network.allow != server.network.allow
    {
        return Err(forbidden(
            "network.allow",
            "opening denied ranges is not granted over the HTTP API",
        ));
    }
    Ok(())
}

/// `server` with every field `req` sets replaced by the request's (tables merged key by
/// key, lists replaced whole).
fn merge(server: &Policy, req: &Policy) -> Result<Policy, HttpError> {
    fn overlay(base: &mut serde_json::Value, top: serde_json::Value) {
        match (base, top) {
            (_, serde_json::Value::Null) => {}
            (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
                for (k, v) in t {
                    overlay(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, t) => *b = t,
        }
    }
    let internal = |e: serde_json::Error| HttpError::internal(format!("merging policies: {e}"));
    let mut base = serde_json::to_value(server).map_err(internal)?;
    overlay(&mut base, serde_json::to_value(req).map_err(internal)?);
    serde_json::from_value(base)
        .map_err(|e| HttpError::invalid(format!("policy: {e}")).field("policy"))
}

/// Refuses a limit above the server's.
fn within_ceiling(ceiling: &ValidatedPolicy, p: &ValidatedPolicy) -> Result<(), HttpError> {
    let (c, l) = (&ceiling.limits, &p.limits);
    let above = |field: &str, asked: String, max: String| {
        Err(forbidden(
            field,
            format!("{asked} is above this server's ceiling of {max}"),
        ))
    };
    let sizes = [
        ("limits.memory", l.memory, c.memory),
        ("limits.fsize", l.fsize, c.fsize),
        ("limits.max_output", l.max_output, c.max_output),
        ("limits.tmp_size", l.tmp_size, c.tmp_size),
        ("limits.shm_size", l.shm_size, c.shm_size),
        ("limits.disk", l.disk, c.disk),
    ];
    for (field, asked, max) in sizes {
        if asked > max {
            return above(field, format_size(asked), format_size(max));
        }
    }
    if l.cpu_millis > c.cpu_millis {
        let cpus = |m: u32| format!("{} CPUs", f64::from(m) / 1000.0);
        return above("limits.cpus", cpus(l.cpu_millis), cpus(c.cpu_millis));
    }
    for (field, asked, max) in [
        ("limits.pids", l.pids as u64, c.pids as u64),
        ("limits.nofile", l.nofile, c.nofile),
        (
            "limits.nproc",
            l.nproc.unwrap_or(u64::MAX),
            c.nproc.unwrap_or(u64::MAX),
        ),
        (
            "limits.io_weight",
            u64::from(l.io_weight.unwrap_or(0)),
            u64::from(c.io_weight.unwrap_or(u16::MAX)),
        ),
    ] {
        if asked > max {
            return above(field, asked.to_string(), max.to_string());
        }
    }
    if l.timeout > c.timeout {
        return above(
            "limits.timeout",
            crate::policy::format_duration(l.timeout),
            crate::policy::format_duration(c.timeout),
        );
    }
    if l.oom_score_adj < c.oom_score_adj {
        return Err(forbidden(
            "limits.oom_score_adj",
            format!(
                "{} is below this server's floor of {}",
                l.oom_score_adj, c.oom_score_adj
            ),
        ));
    }
    if p.managed_workspace.unwrap_or(0) > c.disk {
        return above(
            "filesystem.workspace_size",
            format_size(p.managed_workspace.unwrap_or(0)),
            format_size(c.disk),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
