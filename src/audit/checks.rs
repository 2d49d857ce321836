//! The checks: one function per area, each reading the [`SpecView`] and adding findings
//! that name a rule of the catalog and a JSON pointer into the spec.

use std::collections::BTreeMap;

use super::catalog::rule;
use super::model::{MountView, SpecView, CAP_SETS, HOOK_KINDS};
use super::syscalls::{self, Class, Effect};
use super::Finding;

/// Escapes one JSON-pointer token (RFC 6901).
pub(crate) fn esc(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

struct Out(Vec<Finding>);

impl Out {
    /// A finding about the spec as a whole (no subject).
    fn add(&mut self, id: &str, pointer: impl Into<String>, message: impl Into<String>) {
        self.add_about(id, pointer, "", message);
    }

    /// A finding about `subject`: the capability, namespace, mount destination, sysctl, …
    /// it concerns, which names it across specs (for `--diff`).
    fn add_about(
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

fn cap_rule(cap: &str) -> Option<&'static str> {
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

// ---- filesystem -------------------------------------------------------------------------

/// Host sockets that control a container runtime or orchestrator.
const RUNTIME_SOCKETS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/podman/podman.sock",
    "/var/run/cri-dockerd.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// File names that are runtime sockets wherever they live (rootless daemons, user dirs).
const RUNTIME_SOCKET_NAMES: &[&str] =
    &["docker.sock", "containerd.sock", "crio.sock", "podman.sock"];

/// Sensitive host paths: (path, whether paths below it are sensitive too). A mount of the
/// path or of any ancestor is reported; a mount below it only when the flag says so (host
/// /etc files only when read-write: read-only /etc/localtime is routine).
const SENSITIVE_HOST_PATHS: &[(&str, Below)] = &[
    ("/", Below::No),
    ("/etc", Below::WhenWritable),
    ("/proc", Below::Yes),        // host kernel interfaces, other processes
    ("/sys", Below::Yes),         // host kernel interfaces
    ("/dev", Below::Yes),         // host devices
    ("/boot", Below::Yes),        // kernels and boot loader
    ("/root", Below::Yes),        // root's keys and credentials
    ("/lib/modules", Below::Yes), // kernel modules
    ("/usr", Below::No),
    ("/lib", Below::No),
    ("/var/lib/kubelet", Below::No), // every pod's volumes and service-account tokens
    ("/var/lib/docker", Below::No),  // every container's filesystem
    ("/var/lib/containerd", Below::No),
    ("/var/log", Below::No), // host logs; writable means log tampering
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Below {
    No,
    WhenWritable,
    Yes,
}

/// Collapses repeated and trailing slashes and `.` components; `..` is kept as written.
fn normalize_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if p.starts_with('/') {
        format!("/{}", parts.join("/"))
    } else {
        parts.join("/")
    }
}

/// `a` is `b` or an ancestor of `b` (both normalized, absolute).
fn covers(a: &str, b: &str) -> bool {
    a == "/" || a == b || (b.starts_with(a) && b.as_bytes().get(a.len()) == Some(&b'/'))
}

fn filesystem(spec: &SpecView, out: &mut Out) {
    if spec.root.as_ref().and_then(|r| r.readonly) != Some(true) {
        out.add("STK-FS-001", "/root/readonly", "root.readonly is not true");
    }
    for (i, m) in spec.mounts.iter().flatten().enumerate() {
        mount(i, m, out);
    }
    let linux = spec.linux.as_ref();
    if let Some(prop) = linux.and_then(|l| l.rootfs_propagation.as_deref()) {
        if prop == "shared" || prop == "rshared" {
            out.add(
                "STK-FS-005",
                "/linux/rootfsPropagation",
                format!("rootfsPropagation is {prop}"),
            );
        }
    }
    let masked = linux
        .and_then(|l| l.masked_paths.as_deref())
        .unwrap_or_default();
    let readonly = linux
        .and_then(|l| l.readonly_paths.as_deref())
        .unwrap_or_default();
    let is_covered = |list: &[String], p: &str| list.iter().any(|m| covers(&normalize_path(m), p));
    let missing_masked: Vec<&str> = REQUIRED_MASKED
        .iter()
        .copied()
        .filter(|p| !is_covered(masked, p))
        .collect();
    if !missing_masked.is_empty() {
        out.add(
            "STK-FS-006",
            "/linux/maskedPaths",
            format!("not masked: {}", missing_masked.join(", ")),
        );
    }
    let missing_ro: Vec<&str> = REQUIRED_READONLY
        .iter()
        .copied()
        .filter(|p| !is_covered(readonly, p) && !is_covered(masked, p))
        .collect();
    if !missing_ro.is_empty() {
        out.add(
            "STK-FS-007",
            "/linux/readonlyPaths",
            format!("not read-only: {}", missing_ro.join(", ")),
        );
    }
}

/// What runc and containerd mask by default, plus Docker's powercap addition
/// (CVE-2020-8694, the Platypus power side channel).
const REQUIRED_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// What runc and containerd make read-only by default.
const REQUIRED_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(i: usize, m: &MountView, out: &mut Out) {
    let base = format!("/mounts/{i}");
    let dest = m.destination.as_deref().unwrap_or("?");
    let shared = m
        .options
        .iter()
        .flatten()
        .find(|o| *o == "shared" || *o == "rshared");
    if let Some(o) = shared {
        out.add_about(
            "STK-FS-005",
            format!("{base}/options"),
            dest,
            format!("mount {dest} has {o} propagation"),
        );
    }
    let typ = m.typ.as_deref().unwrap_or_default();
    if matches!(typ, "sysfs" | "cgroup" | "cgroup2") && !m.is_read_only() {
        out.add_about(
            "STK-FS-008",
            format!("{base}/options"),
            dest,
            format!("{typ} mounted at {dest} without `ro`"),
        );
    }
    if !m.is_bind() {
        return;
    }
    let Some(source) = m.source.as_deref() else {
        return;
    };
    let src = normalize_path(source);
    let writable = !m.is_read_only();
    let rw = if writable { "read-write" } else { "read-only" };
    let mut reported = false;
    let file_name = src.rsplit('/').next().unwrap_or_default();
    if RUNTIME_SOCKETS.iter().any(|s| covers(&src, s)) || RUNTIME_SOCKET_NAMES.contains(&file_name)
    {
        out.add_about(
            "STK-FS-003",
            format!("{base}/source"),
            dest,
            format!("host {src} (holds a container runtime socket) mounted at {dest} {rw}"),
        );
        reported = true;
    }
    let sensitive = SENSITIVE_HOST_PATHS.iter().find(|(p, below)| {
        covers(&src, p)
            || (covers(p, &src)
                && (*below == Below::Yes || (*below == Below::WhenWritable && writable)))
    });
    if let Some((p, _)) = sensitive {
        let what = if src == *p {
            String::new()
        } else if covers(&src, p) {
            format!(" (contains {p})")
        } else {
            format!(" (under {p})")
        };
        out.add_about(
            "STK-FS-002",
            format!("{base}/source"),
            dest,
            format!("host {src}{what} mounted at {dest} {rw}"),
        );
        reported = true;
    }
    if writable && !reported {
        out.add_about(
            "STK-FS-004",
            format!("{base}/options"),
            dest,
            format!("host {src} mounted at {dest} read-write"),
        );
    }
}

// ---- devices ----------------------------------------------------------------------------

fn access_reads_or_writes(access: Option<&str>) -> bool {
    // An absent access string means "rwm".
    access.is_none_or(|a| a.contains('r') || a.contains('w'))
}

/// Character devices that reach host memory or I/O ports: /dev/mem, /dev/kmem, /dev/port.
fn is_raw_memory(major: Option<i64>, minor: Option<i64>) -> bool {
    major == Some(1) && minor.is_none_or(|m| matches!(m, 1 | 2 | 4))
}

fn devices(spec: &SpecView, out: &mut Out) {
    let linux = spec.linux.as_ref();
    let rules = linux
        .and_then(|l| l.resources.as_ref())
        .and_then(|r| r.devices.as_deref())
        .unwrap_or_default();
    // Replay the rules as the device cgroup applies them: a rule for every device resets
    // the default; specific rules after it are exceptions.
    let mut default: Option<(bool, usize)> = None;
    let mut exceptions: Vec<usize> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let all_types = r.typ.as_deref().is_none_or(|t| t == "a");
        if all_types && r.major.is_none() && r.minor.is_none() {
            default = Some((r.allow && access_reads_or_writes(r.access.as_deref()), i));
            exceptions.clear();
        } else {
            exceptions.push(i);
        }
    }
    match default {
        Some((true, i)) => out.add(
            "STK-DEV-001",
            format!("/linux/resources/devices/{i}"),
            "device rule allows read/write on every device",
        ),
        Some((false, _)) => {}
        None => out.add(
            "STK-DEV-003",
            "/linux/resources/devices",
            "no deny-all device rule: access depends on the runtime's defaults",
        ),
    }
    for i in exceptions {
        let r = &rules[i];
        if !r.allow || !access_reads_or_writes(r.access.as_deref()) {
            continue;
        }
        let typ = r.typ.as_deref().unwrap_or("a");
        let what = match typ {
            "b" => Some("block device"),
            "c" if r.major.is_none() => Some("every character device"),
            "c" if is_raw_memory(r.major, r.minor) => Some("raw memory/port device"),
            _ => None,
        };
        if let Some(what) = what {
            out.add_about(
                "STK-DEV-002",
                format!("/linux/resources/devices/{i}"),
                format!("{typ} {}:{}", opt_num(r.major), opt_num(r.minor)),
                format!(
                    "{what} {typ} {}:{} allowed with access {}",
                    opt_num(r.major),
                    opt_num(r.minor),
                    r.access.as_deref().unwrap_or("rwm")
                ),
            );
        }
    }
    for (i, d) in linux
        .and_then(|l| l.devices.as_deref())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let block = d.typ.as_deref() == Some("b");
        let raw = d.typ.as_deref() == Some("c") && is_raw_memory(d.major, d.minor);
        if block || raw {
            out.add_about(
                "STK-DEV-002",
                format!("/linux/devices/{i}"),
                d.path.as_deref().unwrap_or("?"),
                format!(
                    "{} node {} ({}:{}) created in the container",
                    if block {
                        "block device"
                    } else {
                        "raw memory device"
                    },
                    d.path.as_deref().unwrap_or("?"),
                    opt_num(d.major),
                    opt_num(d.minor)
                ),
            );
        }
    }
}

fn opt_num(n: Option<i64>) -> String {
    n.map_or("*".to_string(), |n| n.to_string())
}

// ---- resources --------------------------------------------------------------------------

fn resources(spec: &SpecView, out: &mut Out) {
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
const PSS_SAFE_SYSCTLS: &[&str] = &[
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

fn sysctls(spec: &SpecView, out: &mut Out) {
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
                out.add_about("STK-SYS-002", pointer, key, format!("{key}={value}"))
            }
            Some(_) => {}
        }
    }
}

// ---- hooks ------------------------------------------------------------------------------

fn hooks(spec: &SpecView, out: &mut Out) {
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
