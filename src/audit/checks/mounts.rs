//! Checks of the filesystem (mounts, host paths, masked and read-only paths) and of devices.

use super::super::model::{MountView, SpecView};
use super::Out;

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

pub(super) fn filesystem(spec: &SpecView, out: &mut Out) {
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
    let missing_masked: Vec<&str> = required_masked()
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

/// The masks a spec must have: containerd's defaults but `/proc/asound`, plus Docker's
/// powercap addition (CVE-2020-8694, the Platypus power side channel).
fn required_masked() -> impl Iterator<Item = &'static str> {
    crate::spec::CONTAINERD_MASKED_PATHS
        .into_iter()
        .filter(|p| *p != "/proc/asound")
        .chain([crate::spec::POWERCAP_PATH])
}

/// What runc and containerd make read-only by default.
const REQUIRED_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(i: usize, m: &MountView, out: &mut Out) {
    mount_at(&format!("/mounts/{i}"), m, out);
}

/// The checks of one mount whose JSON pointer is `base`.
pub(crate) fn mount_at(base: &str, m: &MountView, out: &mut Out) {
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

pub(super) fn devices(spec: &SpecView, out: &mut Out) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_masks_are_containerds_but_asound_plus_powercap() {
        let required: Vec<&str> = required_masked().collect();
        let not_required: Vec<&str> = crate::spec::CONTAINERD_MASKED_PATHS
            .into_iter()
            .filter(|p| !required.contains(p))
            .collect();
        assert_eq!(not_required, ["/proc/asound"]);
        assert_eq!(required.last(), Some(&crate::spec::POWERCAP_PATH));
        assert_eq!(required.len(), crate::spec::CONTAINERD_MASKED_PATHS.len());
        // stockade's own spec masks every one of them.
        let spec = crate::spec::masked_paths(0);
        assert!(required.iter().all(|p| spec.iter().any(|s| s == p)));
    }
}
