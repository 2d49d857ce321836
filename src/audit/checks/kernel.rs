//! Checks of cgroup resources, sysctls and hooks.

use super::super::model::{SpecView, HOOK_KINDS};
use super::{esc, namespace_state, NsState, Out};

// ---- resources --------------------------------------------------------------------------

pub(super) fn resources(spec: &SpecView, out: &mut Out) {
    let r = spec.linux.as_ref().and_then(|l| l.resources.as_ref());
    let unset_or = |what: &str, v: Option<i64>| match v {
        None => format!("`{what}` is not set"),
        Some(v) => format!("`{what}` is {v} (unlimited)"),
    };
    let mem = r.and_then(|r| r.memory.as_ref()).and_then(|m| m.limit);
    if mem.is_none_or(|l| l <= 0) {
        out.add(
            "STK-RES-001",
            "/linux/resources/memory/limit",
            unset_or("linux.resources.memory.limit", mem),
        );
    }
    let cpu = r.and_then(|r| r.cpu.as_ref());
    let quota =
        cpu.is_some_and(|c| c.quota.is_some_and(|q| q > 0) && c.period.is_some_and(|p| p > 0));
    let cpuset = cpu.is_some_and(|c| c.cpus.as_deref().is_some_and(|s| !s.is_empty()));
    if !quota && !cpuset {
        out.add(
            "STK-RES-002",
            "/linux/resources/cpu",
            "neither `quota` with `period` nor `cpus` is set under linux.resources.cpu",
        );
    }
    let pids = r.and_then(|r| r.pids.as_ref()).and_then(|p| p.limit);
    if pids.is_none_or(|l| l <= 0) {
        out.add(
            "STK-RES-003",
            "/linux/resources/pids/limit",
            unset_or("linux.resources.pids.limit", pids),
        );
    }
}

// ---- sysctls ----------------------------------------------------------------------------

/// Sysctls the Kubernetes baseline standard allows.
pub(crate) const PSS_SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The namespace that isolates sysctl `key`, if any does.
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    if key.starts_with("net.") {
        Some("network")
    } else if key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.")
    {
        Some("ipc")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}

pub(super) fn sysctls(spec: &SpecView, out: &mut Out) {
    let Some(map) = spec.linux.as_ref().and_then(|l| l.sysctl.as_ref()) else {
        return;
    };
    for (key, value) in map {
        let pointer = format!("/linux/sysctl/{}", esc(key));
        match sysctl_namespace(key) {
            None => out.add_about(
                "STK-SYS-001",
                pointer,
                key,
                format!("{key}={value} is not namespaced"),
            ),
            Some(ns) if namespace_state(spec, ns).0 == NsState::Host => out.add_about(
                "STK-SYS-001",
                pointer,
                key,
                format!("{key}={value}, and the {ns} namespace is the host's"),
            ),
            Some(_) if !PSS_SAFE_SYSCTLS.contains(&key.as_str()) => {
                out.add_about("STK-SYS-002", pointer, key, format!("{key}={value}"));
            }
            Some(_) => {}
        }
    }
}

// ---- hooks ------------------------------------------------------------------------------

pub(super) fn hooks(spec: &SpecView, out: &mut Out) {
    let Some(h) = spec.hooks.as_ref() else {
        return;
    };
    for kind in HOOK_KINDS {
        // startContainer hooks run inside the container, under its confinement.
        if kind == "startContainer" {
            continue;
        }
        for (i, hook) in h.kind(kind).iter().enumerate() {
            let path = hook.path.as_deref().unwrap_or("?");
            let args = hook.args.as_deref().unwrap_or_default();
            let shown = if args.len() > 1 {
                format!("{path} {}", args[1..].join(" "))
            } else {
                path.to_string()
            };
            out.add_about(
                "STK-HOOK-001",
                format!("/hooks/{kind}/{i}"),
                format!("{kind} {path}"),
                format!("{kind} hook runs {shown}"),
            );
        }
    }
}
