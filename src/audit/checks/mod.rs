//! The checks: one function per area, each reading the [`SpecView`] and adding findings
//! that name a rule of the catalog and a JSON pointer into the spec.

use std::collections::BTreeMap;

use super::catalog::rule;
use super::model::{SpecView, CAP_SETS};
use super::syscalls::{self, Class, Effect};
use super::Finding;

pub(crate) mod kernel;
pub(crate) mod mounts;
use kernel::{hooks, resources, sysctls};
use mounts::{devices, filesystem};

/// Escapes one JSON-pointer token (RFC 6901).
pub(crate) fn esc(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

pub(crate) struct Out(pub(crate) Vec<Finding>);

impl Out {
    /// A finding about the spec as a whole (no subject).
    pub(crate) fn add(&mut self, id: &str, pointer: impl Into<String>, message: impl Into<String>) {
        self.add_about(id, pointer, "", message);
    }

    /// A finding about `subject`: the capability, namespace, mount destination, sysctl, …
    /// it concerns, which names it across specs (for `--diff`).
    pub(crate) fn add_about(
        &mut self,
        id: &str,
        pointer: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) {
        let r = rule(id);
        self.0.push(Finding {
            rule: r.id,
            severity: r.severity,
            title: r.title,
            subject: subject.into(),
            message: message.into(),
            pointer: pointer.into(),
        });
    }
}

/// Runs every check over `spec`.
pub(crate) fn run(spec: &SpecView) -> Vec<Finding> {
    let mut out = Out(Vec::new());
    capabilities(spec, &mut out);
    namespaces(spec, &mut out);
    seccomp(spec, &mut out);
    mac(spec, &mut out);
    process(spec, &mut out);
    filesystem(spec, &mut out);
    devices(spec, &mut out);
    resources(spec, &mut out);
    sysctls(spec, &mut out);
    hooks(spec, &mut out);
    out.0
}

// ---- capabilities -----------------------------------------------------------------------

/// Each has a documented route to host root.
const PRIVILEGED_EQUIVALENT_CAPS: &[&str] = &[
    "CAP_SYS_ADMIN",       // mount, namespaces, BPF, a large share of all privileged ops
    "CAP_SYS_MODULE",      // load kernel code
    "CAP_SYS_RAWIO",       // /dev/mem, I/O ports
    "CAP_DAC_READ_SEARCH", // open_by_handle_at reads any host file (shocker)
    "CAP_SYS_BOOT",        // kexec_load replaces the kernel
    "CAP_BPF",             // load BPF programs
    "CAP_MAC_ADMIN",       // reconfigure the LSM
    "CAP_MAC_OVERRIDE",    // bypass the LSM
];

/// Host-wide effects or access to other processes, short of direct root.
const DANGEROUS_CAPS: &[&str] = &[
    "CAP_SYS_PTRACE",         // read and write other processes' memory
    "CAP_NET_ADMIN",          // reconfigure interfaces, routes, firewall of the namespace
    "CAP_SYS_TIME",           // the clock is not namespaced
    "CAP_SYSLOG",             // kernel log, kernel addresses
    "CAP_PERFMON",            // perf events: side channels
    "CAP_SYS_RESOURCE",       // override resource limits and quotas
    "CAP_LINUX_IMMUTABLE",    // change immutable/append-only flags
    "CAP_AUDIT_CONTROL",      // reconfigure the (host-wide) audit system
    "CAP_CHECKPOINT_RESTORE", // choose PIDs, read other processes' state
    "CAP_SYS_PACCT",          // host-wide process accounting
];

/// What the Kubernetes baseline standard allows (its list, without the CAP_ prefix there).
const PSS_BASELINE_CAPS: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// The only capability the restricted standard lets a pod add.
const PSS_RESTRICTED_CAPS: &[&str] = &["CAP_NET_BIND_SERVICE"];

/// `sys_admin` and `CAP_SYS_ADMIN` alike become `CAP_SYS_ADMIN`.
pub(crate) fn normalize_cap(name: &str) -> String {
    let up = name.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

pub(crate) fn cap_rule(cap: &str) -> Option<&'static str> {
    if PRIVILEGED_EQUIVALENT_CAPS.contains(&cap) {
        Some("STK-CAP-001")
    } else if DANGEROUS_CAPS.contains(&cap) {
        Some("STK-CAP-002")
    } else if !PSS_BASELINE_CAPS.contains(&cap) {
        Some("STK-CAP-003")
    } else if !PSS_RESTRICTED_CAPS.contains(&cap) {
        Some("STK-CAP-004")
    } else {
        None
    }
}

fn capabilities(spec: &SpecView, out: &mut Out) {
    let Some(caps) = spec.process.as_ref().and_then(|p| p.capabilities.as_ref()) else {
        return; // no capabilities object: every set is empty
    };
    // capability → (sets holding it, pointer to its first occurrence)
    let mut held: BTreeMap<String, (Vec<&str>, String)> = BTreeMap::new();
    for set in CAP_SETS {
        for (i, c) in caps.set(set).iter().enumerate() {
            let entry = held
                .entry(normalize_cap(c))
                .or_insert_with(|| (Vec::new(), format!("/process/capabilities/{set}/{i}")));
            if !entry.0.contains(&set) {
                entry.0.push(set);
            }
        }
    }
    for (cap, (sets, pointer)) in &held {
        if let Some(id) = cap_rule(cap) {
            out.add_about(id, pointer, cap, format!("{cap} in {}", sets.join(", ")));
        }
    }
    for set in ["inheritable", "ambient"] {
        let list = caps.set(set);
        if !list.is_empty() {
            out.add_about(
                "STK-CAP-005",
                format!("/process/capabilities/{set}"),
                set,
                format!("{set} set holds {}", list.join(", ")),
            );
        }
    }
}

// ---- namespaces -------------------------------------------------------------------------

/// Namespace type → the rule reporting it shared with the host.
const HOST_NAMESPACE_RULES: &[(&str, &str)] = &[
    ("pid", "STK-NS-001"),
    ("network", "STK-NS-002"),
    ("ipc", "STK-NS-003"),
    ("uts", "STK-NS-004"),
    ("mount", "STK-NS-005"),
    ("cgroup", "STK-NS-006"),
];

/// A path naming the namespaces of the host's init, or of the runtime itself (which runs in
/// the host's).
fn is_host_ns_path(path: &str) -> bool {
    ["/proc/1/ns/", "/proc/self/ns/", "/proc/thread-self/ns/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// How the container gets namespace `typ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NsState {
    /// A fresh namespace.
    Own,
    /// The host's (missing from the list, or joined from pid 1 / the runtime).
    Host,
    /// Joined from another process by path.
    Joined(String),
}

pub(crate) fn namespace_state(spec: &SpecView, typ: &str) -> (NsState, String) {
    let list = spec.linux.as_ref().and_then(|l| l.namespaces.as_deref());
    let found = list
        .unwrap_or_default()
        .iter()
        .enumerate()
        .find(|(_, n)| n.typ == typ);
    match found {
        None => (NsState::Host, "/linux/namespaces".to_string()),
        Some((i, n)) => {
            let pointer = format!("/linux/namespaces/{i}");
            match n.path.as_deref().filter(|p| !p.is_empty()) {
                None => (NsState::Own, pointer),
                Some(p) if is_host_ns_path(p) => (NsState::Host, pointer + "/path"),
                Some(p) => (NsState::Joined(p.to_string()), pointer + "/path"),
            }
        }
    }
}

fn namespaces(spec: &SpecView, out: &mut Out) {
    for (typ, id) in HOST_NAMESPACE_RULES {
        match namespace_state(spec, typ) {
            (NsState::Own, _) => {}
            (NsState::Host, pointer) if pointer == "/linux/namespaces" => out.add_about(
                id,
                pointer,
                *typ,
                format!("no `{typ}` namespace: the container shares the host's"),
            ),
            (NsState::Host, pointer) => out.add_about(
                id,
                pointer,
                *typ,
                format!("`{typ}` namespace joined from the host's init or runtime"),
            ),
            (NsState::Joined(path), pointer) => out.add_about(
                "STK-NS-008",
                pointer,
                *typ,
                format!("`{typ}` namespace joined from {path}"),
            ),
        }
    }
    match namespace_state(spec, "user") {
        (NsState::Own, _) => {}
        (NsState::Joined(path), pointer) => out.add_about(
            "STK-NS-008",
            pointer,
            "user",
            format!("`user` namespace joined from {path}"),
        ),
        (NsState::Host, pointer) => out.add_about(
            "STK-NS-007",
            pointer,
            "user",
            "no `user` namespace: container ids are host ids",
        ),
    }
}

// ---- seccomp ----------------------------------------------------------------------------

fn seccomp(spec: &SpecView, out: &mut Out) {
    let Some(sc) = spec.linux.as_ref().and_then(|l| l.seccomp.as_ref()) else {
        out.add(
            "STK-SEC-001",
            "/linux/seccomp",
            "no `linux.seccomp`: every system call is allowed",
        );
        return;
    };
    if syscalls::classify(&sc.default_action) == Class::Allow {
        out.add(
            "STK-SEC-002",
            "/linux/seccomp/defaultAction",
            format!(
                "defaultAction {}: every call not named is allowed",
                sc.default_action
            ),
        );
    }
    // (rule id, deciding syscall rule) → dangerous calls it lets through, with why
    type Calls = Vec<(&'static str, &'static str)>;
    let mut groups: BTreeMap<(&str, Option<usize>), Calls> = BTreeMap::new();
    for (name, why) in syscalls::DANGEROUS {
        let e = syscalls::effect(sc, name);
        let id = match e {
            Effect::Allowed { .. } => "STK-SEC-003",
            Effect::AllowedIf { safe: false, .. } => "STK-SEC-004",
            Effect::Delegated { .. } => "STK-SEC-005",
            Effect::AllowedIf { safe: true, .. } | Effect::Denied => continue,
        };
        groups.entry((id, e.rule())).or_default().push((name, why));
    }
    let rules = sc.syscalls.as_deref().unwrap_or_default();
    for ((id, idx), calls) in groups {
        let (pointer, by) = match idx {
            Some(i) => (
                format!("/linux/seccomp/syscalls/{i}"),
                format!("syscalls[{i}] ({})", rules[i].action),
            ),
            None => (
                "/linux/seccomp/defaultAction".to_string(),
                format!("the default action {}", sc.default_action),
            ),
        };
        let list = if calls.len() <= 3 {
            calls
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            calls.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        };
        let verb = match id {
            "STK-SEC-003" => "allowed",
            "STK-SEC-004" => "allowed for some arguments",
            _ => "left to a tracer or notifier",
        };
        let subject = calls.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",");
        out.add_about(id, pointer, subject, format!("{list} {verb} by {by}"));
    }
}

// ---- AppArmor / SELinux -----------------------------------------------------------------

/// SELinux types that do not confine.
const UNCONFINED_SELINUX_TYPES: &[&str] = &["spc_t", "unconfined_t", "container_runtime_t"];

fn mac(spec: &SpecView, out: &mut Out) {
    let Some(p) = spec.process.as_ref() else {
        return;
    };
    let apparmor = p.apparmor_profile.as_deref().filter(|s| !s.is_empty());
    let selinux = p.selinux_label.as_deref().filter(|s| !s.is_empty());
    if apparmor == Some("unconfined") {
        out.add_about(
            "STK-MAC-002",
            "/process/apparmorProfile",
            "apparmorProfile",
            "apparmorProfile is `unconfined`",
        );
    }
    if let Some(label) = selinux {
        let typ = label.split(':').nth(2).unwrap_or_default();
        if UNCONFINED_SELINUX_TYPES.contains(&typ) {
            out.add_about(
                "STK-MAC-002",
                "/process/selinuxLabel",
                "selinuxLabel",
                format!("selinuxLabel {label} runs as the unconfined type {typ}"),
            );
        }
    }
    if apparmor.is_none() && selinux.is_none() {
        out.add(
            "STK-MAC-001",
            "/process/apparmorProfile",
            "neither apparmorProfile nor selinuxLabel is set (`stockade doctor` shows whether \
             this host has AppArmor)",
        );
    }
}

// ---- process ----------------------------------------------------------------------------

/// Does the spec map container uid 0 to an unprivileged host uid?
fn root_is_remapped(spec: &SpecView) -> bool {
    if namespace_state(spec, "user").0 != NsState::Own {
        return false;
    }
    let maps = spec.linux.as_ref().and_then(|l| l.uid_mappings.as_deref());
    maps.unwrap_or_default()
        .iter()
        .find(|m| m.container_id == 0 && m.size > 0)
        .is_some_and(|m| m.host_id != 0)
}

fn process(spec: &SpecView, out: &mut Out) {
    let Some(p) = spec.process.as_ref() else {
        return;
    };
    if p.no_new_privileges != Some(true) {
        out.add(
            "STK-PROC-001",
            "/process/noNewPrivileges",
            match p.no_new_privileges {
                Some(false) => "noNewPrivileges is false",
                _ => "noNewPrivileges is not set",
            },
        );
    }
    let uid = p.user.as_ref().and_then(|u| u.uid).unwrap_or(0);
    if uid == 0 && !root_is_remapped(spec) {
        out.add(
            "STK-PROC-002",
            "/process/user/uid",
            "uid 0, not remapped by a user namespace",
        );
    }
    let rlimits = p.rlimits.as_deref().unwrap_or_default();
    if !rlimits.iter().any(|r| r.typ == "RLIMIT_NOFILE") {
        out.add(
            "STK-PROC-003",
            "/process/rlimits",
            "no RLIMIT_NOFILE: the runtime's limit is inherited",
        );
    }
    match rlimits.iter().position(|r| r.typ == "RLIMIT_CORE") {
        Some(i) if rlimits[i].hard == Some(0) => {}
        Some(i) => out.add(
            "STK-PROC-004",
            format!("/process/rlimits/{i}"),
            format!(
                "RLIMIT_CORE hard limit is {}",
                rlimits[i]
                    .hard
                    .map_or("unset".to_string(), |h| h.to_string())
            ),
        ),
        None => out.add(
            "STK-PROC-004",
            "/process/rlimits",
            "no RLIMIT_CORE: core dumps follow the runtime's limit",
        ),
    }
}
