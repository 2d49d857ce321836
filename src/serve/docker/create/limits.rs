//! The limits and security options of a create request: each limit at most the server's,
//! seccomp and AppArmor off only where the server's policy has them off. Pure.

use super::{HostConfig, Refusal};
use crate::policy::{Policy, PolicyOverrides, ValidatedPolicy};

/// Limits: each one at most the server's.
pub(super) fn limits(
    h: &HostConfig,
    ceiling: &ValidatedPolicy,
    policy: &mut Policy,
    o: &mut PolicyOverrides,
    warnings: &mut Vec<String>,
) -> Result<(), Refusal> {
    let c = &ceiling.limits;
    let above = |field: &str, asked: String, max: String| {
        Refusal::forbidden(
            field,
            format!("{asked} is above this server's ceiling of {max} (its policy sets it)"),
        )
    };
    match h.memory {
        m if m < 0 => {
            return Err(Refusal::bad(
                "HostConfig.Memory",
                format!("{m}: must not be negative"),
            ))
        }
        0 => {}
        m if m as u64 > c.memory => {
            return Err(above(
                "HostConfig.Memory",
                format!("{m} bytes"),
                format!("{} bytes", c.memory),
            ))
        }
        m => o.memory = Some(m.to_string()),
    }
    if h.memory_swap > 0 && h.memory_swap != h.memory || h.memory_swap < -1 {
        warnings.push("HostConfig.MemorySwap: swap is disabled in every sandbox".into());
    }
    let millis = match (h.nano_cpus, h.cpu_quota, h.cpu_period) {
        (n, q, _) if n < 0 || q < 0 => {
            return Err(Refusal::bad("HostConfig.NanoCpus", "must not be negative"))
        }
        (n, q, _) if n > 0 && q > 0 => {
            return Err(Refusal::bad(
                "HostConfig.NanoCpus",
                "NanoCpus and CpuQuota cannot both be set",
            ))
        }
        (n, _, _) if n > 0 => Some(n / 1_000_000),
        (_, q, p) if q > 0 => Some(q * 1000 / if p > 0 { p } else { 100_000 }),
        _ => None,
    };
    if let Some(m) = millis {
        if m <= 0 || m > i64::from(c.cpu_millis) {
            return Err(above(
                "HostConfig.NanoCpus",
                format!("{} CPUs", m as f64 / 1000.0),
                format!("{} CPUs", f64::from(c.cpu_millis) / 1000.0),
            ));
        }
        o.cpus = Some(format!("{}", m as f64 / 1000.0));
    }
    match h.pids_limit {
        None | Some(0) => {}
        Some(n) if n < 0 => {
            return Err(Refusal::forbidden(
                "HostConfig.PidsLimit",
                format!("{n}: an unlimited pids limit is refused"),
            ))
        }
        Some(n) if n > c.pids => {
            return Err(above(
                "HostConfig.PidsLimit",
                n.to_string(),
                c.pids.to_string(),
            ))
        }
        Some(n) => o.pids = Some(n.to_string()),
    }
    if h.shm_size < 0 {
        return Err(Refusal::bad("HostConfig.ShmSize", "must not be negative"));
    }
    if h.shm_size > 0 {
        if h.shm_size as u64 > c.shm_size {
            return Err(above(
                "HostConfig.ShmSize",
                format!("{} bytes", h.shm_size),
                format!("{} bytes", c.shm_size),
            ));
        }
        policy.limits.shm_size = Some(h.shm_size.to_string());
    }
    if h.oom_score_adj != 0 {
        if h.oom_score_adj < c.oom_score_adj {
            return Err(Refusal::forbidden(
                "HostConfig.OomScoreAdj",
                format!(
                    "{} is below this server's floor of {}",
                    h.oom_score_adj, c.oom_score_adj
                ),
            ));
        }
        policy.limits.oom_score_adj = Some(h.oom_score_adj);
    }
    if h.blkio_weight != 0 {
        policy.limits.io_weight = Some(h.blkio_weight);
    }
    for u in h.ulimits.iter().flatten() {
        let v = u.soft.min(u.hard);
        let field = "HostConfig.Ulimits";
        if v < 0 {
            return Err(Refusal::forbidden(
                field,
                format!("{}: unlimited is refused", u.name),
            ));
        }
        let v = v as u64;
        match u.name.as_str() {
            "nofile" if v > c.nofile => {
                return Err(above(field, format!("nofile {v}"), c.nofile.to_string()))
            }
            "nofile" => policy.limits.nofile = Some(v),
            "nproc" if c.nproc.is_some_and(|max| v > max) => {
                return Err(above(
                    field,
                    format!("nproc {v}"),
                    c.nproc.unwrap_or_default().to_string(),
                ))
            }
            "nproc" => policy.limits.nproc = Some(v),
            "fsize" if v > c.fsize => {
                return Err(above(field, format!("fsize {v}"), c.fsize.to_string()))
            }
            "fsize" => policy.limits.fsize = Some(v.to_string()),
            "core" if v == 0 => {}
            "core" => {
                return Err(Refusal::forbidden(
                    field,
                    "core dumps are off in every sandbox (core 0)",
                ))
            }
            other => {
                return Err(Refusal::bad(
                    field,
                    format!("`{other}`: not supported (nofile, nproc, fsize, core)"),
                ))
            }
        }
    }
    Ok(())
}

/// `SecurityOpt`: no-new-privileges is always on; seccomp and AppArmor may be turned off
/// only where the server's policy has them off.
pub(super) fn security_opts(
    h: &HostConfig,
    server: &Policy,
    o: &mut PolicyOverrides,
) -> Result<(), Refusal> {
    let field = "HostConfig.SecurityOpt";
    for opt in h.security_opt.iter().flatten() {
        let (key, value) = match opt.find(['=', ':']) {
            Some(i) => (&opt[..i], &opt[i + 1..]),
            None => (opt.as_str(), ""),
        };
        match (key, value) {
            ("no-new-privileges", "" | "true") => {}
            ("no-new-privileges", _) => return Err(Refusal::forbidden(field, "no-new-privileges is always on in a sandbox")),
            ("seccomp" | "apparmor", "unconfined") => {
                let server_value = if key == "seccomp" { &server.security.seccomp } else { &server.security.apparmor };
                if server_value.as_deref() != Some("unconfined") {
                    return Err(Refusal::forbidden(field, format!("{key}=unconfined is refused: this server's policy keeps {key} on")));
                }
                if key == "seccomp" {
                    o.seccomp = Some("unconfined".into());
                } else {
                    o.apparmor = Some("unconfined".into());
                }
            }
            ("seccomp" | "apparmor", _) => return Err(Refusal::bad(field, format!("{key}: only the server's profile is used (custom profiles are not supported yet)"))),
            ("systempaths", "unconfined") => return Err(Refusal::forbidden(field, "the masked and read-only paths are never relaxed")),
            ("label", _) => return Err(Refusal::bad(field, "SELinux labels are not supported")),
            _ => return Err(Refusal::bad(field, format!("`{opt}`: unknown option"))),
        }
    }
    Ok(())
}
