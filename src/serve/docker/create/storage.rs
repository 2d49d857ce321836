//! What a create request asks of storage: binds, mounts and tmpfs mounts become the
//! policy's (`-v`, `--tmpfs`); sources stockade never grants are refused with 403 first;
//! named volumes, volumes from other containers and the rest are refused with 400. Pure.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{CreateBody, HostConfig, Refusal};
use crate::policy::{BindMount, Policy, PolicyOverrides, TmpfsMount};

/// Binds, mounts, volumes and the rest of what needs storage or other containers.
pub(super) fn check_storage(body: &CreateBody, allow: &[PathBuf]) -> Result<(), Refusal> {
    let h = &body.host_config;
    // Every source stockade would never grant is refused first, then binds as such.
    for b in h.binds.iter().flatten() {
        let src = b.split(':').next().unwrap_or_default();
        if src.starts_with('/') {
            bind_source("HostConfig.Binds", src, allow)?;
        }
    }
    for m in h.mounts.iter().flatten() {
        let typ = m.get("Type").and_then(|v| v.as_str()).unwrap_or("volume");
        let src = m.get("Source").and_then(|v| v.as_str()).unwrap_or_default();
        if typ == "bind" {
            bind_source("HostConfig.Mounts", src, allow)?;
        }
    }
    // `Volumes` declares anonymous volumes; one where a bind, mount or tmpfs lands is
    // what docker-py sends along with `Binds` and is covered by it.
    let covered = |path: &str| {
        let path = path.trim_end_matches('/');
        h.binds
            .iter()
            .flatten()
            .any(|b| b.split(':').nth(1).map(|t| t.trim_end_matches('/')) == Some(path))
            || h.mounts.iter().flatten().any(|m| {
                m.get("Target")
                    .and_then(|v| v.as_str())
                    .map(|t| t.trim_end_matches('/'))
                    == Some(path)
            })
            || h.tmpfs
                .iter()
                .flatten()
                .any(|(t, _)| t.trim_end_matches('/') == path)
    };
    if let Some(p) = body
        .volumes
        .iter()
        .flatten()
        .map(|(p, _)| p)
        .find(|p| !covered(p))
    {
        return Err(Refusal::bad(
            "Volumes",
            format!("`{p}`: anonymous volumes are not supported yet by stockade serve (bind a host directory there)"),
        ));
    }
    for (set, field) in [
        (
            h.volumes_from.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.VolumesFrom",
        ),
        (
            h.links.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.Links",
        ),
        (
            h.port_bindings.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.PortBindings",
        ),
        (h.publish_all_ports, "HostConfig.PublishAllPorts"),
        (!h.volume_driver.is_empty(), "HostConfig.VolumeDriver"),
        (
            h.storage_opt.as_ref().is_some_and(|v| !v.is_empty()),
            "HostConfig.StorageOpt",
        ),
    ] {
        if set {
            return Err(Refusal::not_yet(field));
        }
    }
    match h
        .restart_policy
        .as_ref()
        .map(|r| r.name.as_str())
        .unwrap_or("")
    {
        "" | "no" => {}
        other => {
            return Err(Refusal::bad(
                "HostConfig.RestartPolicy",
                format!("`{other}`: restart policies are not supported (no)"),
            ))
        }
    }
    match h.log_config.as_ref().map(|l| l.typ.as_str()).unwrap_or("") {
        "" | "json-file" => {}
        other => {
            return Err(Refusal::bad(
                "HostConfig.LogConfig",
                format!("`{other}`: the only log driver is json-file"),
            ))
        }
    }
    match h.runtime.as_str() {
        "" | "runc" => {}
        other => {
            return Err(Refusal::bad(
                "HostConfig.Runtime",
                format!("`{other}`: the runtime is the server's (runc)"),
            ))
        }
    }
    match h.isolation.as_str() {
        "" | "default" => Ok(()),
        other => Err(Refusal::bad(
            "HostConfig.Isolation",
            format!("`{other}`: not supported"),
        )),
    }
}

/// `Binds`, `Mounts` of type `bind` and `tmpfs`, and `Tmpfs` as the policy's binds and
/// tmpfs mounts (`-v` and `--tmpfs`): validated later exactly as on the command line
/// (sources link-free beneath the bind roots, destinations absolute and unreserved, tmpfs
/// noexec unless `exec` is asked for, as Docker's own default is).
///
/// A tmpfs at `/tmp` is stockade's own `/tmp` (always there, `nosuid,nodev`, executables
/// allowed): the request's size becomes `limits.tmp_size`, and a warning says what else
/// differs from what was asked.
pub(super) fn storage(
    h: &HostConfig,
    policy: &mut Policy,
    o: &mut PolicyOverrides,
    warnings: &mut Vec<String>,
) -> Result<(), Refusal> {
    for b in h.binds.iter().flatten() {
        o.mounts
            .push(BindMount::parse(b).map_err(|e| Refusal::bad("HostConfig.Binds", e))?);
    }
    for (path, opts) in h.tmpfs.iter().flatten() {
        let t = TmpfsMount::from_options(path, opts)
            .map_err(|e| Refusal::bad("HostConfig.Tmpfs", e))?;
        if path == crate::spec::TMP_PATH {
            if let Some(size) = t.size {
                policy.limits.tmp_size = Some(size);
            }
            warnings.push(format!(
                "HostConfig.Tmpfs: `{path}` is stockade's own /tmp (nosuid, nodev, mode 1777, \
                 executables allowed); only its size is taken from the request"
            ));
            continue;
        }
        o.tmpfs.push(t);
    }
    for m in h.mounts.iter().flatten() {
        let field = "HostConfig.Mounts";
        let text = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let target = text("Target");
        match text("Type") {
            "bind" => {
                let read_only = m.get("ReadOnly").and_then(Value::as_bool).unwrap_or(false);
                let spec = format!(
                    "{}:{target}:{}",
                    text("Source"),
                    if read_only { "ro" } else { "rw" }
                );
                o.mounts
                    .push(BindMount::parse(&spec).map_err(|e| Refusal::bad(field, e))?);
            }
            "tmpfs" => {
                let t = m.get("TmpfsOptions");
                let mut opts = Vec::new();
                if let Some(size) = t.and_then(|t| t.get("SizeBytes")).and_then(Value::as_u64) {
                    opts.push(format!("size={size}"));
                }
                if let Some(mode) = t.and_then(|t| t.get("Mode")).and_then(Value::as_u64) {
                    opts.push(format!("mode={mode:o}"));
                }
                o.tmpfs.push(
                    TmpfsMount::from_options(target, &opts.join(","))
                        .map_err(|e| Refusal::bad(field, e))?,
                );
            }
            other => {
                return Err(Refusal::bad(
                    field,
                    format!("type `{other}`: only bind and tmpfs mounts are supported (named volumes are not)"),
                ))
            }
        }
    }
    Ok(())
}

/// A bind source stockade will never grant: `/`, a container runtime's socket, anything
/// outside the allowed roots. Lexical: the server resolves a granted source itself.
fn bind_source(field: &str, src: &str, allow: &[PathBuf]) -> Result<(), Refusal> {
    let path = Path::new(src);
    if path
        .components()
        .all(|c| matches!(c, std::path::Component::RootDir))
    {
        return Err(Refusal::forbidden(
            field,
            "binding the host's root filesystem `/` is refused",
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if name.ends_with(".sock") || src.contains("/docker.sock") {
        return Err(Refusal::forbidden(field, format!("`{src}`: a socket of the host (it would hand the host over) is never bound into a sandbox")));
    }
    if src.split('/').any(|c| c == "..") || !allow.iter().any(|r| path.starts_with(r) && path != r)
    {
        return Err(Refusal::forbidden(
            field,
            format!(
                "`{src}` is not beneath a root this server allows binds from ({})",
                if allow.is_empty() {
                    "none; `stockade serve --allow-bind DIR` sets them".to_string()
                } else {
                    allow
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    Ok(())
}
