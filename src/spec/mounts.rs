//! Mounts, masked paths and read-only paths.

use oci_spec::runtime::{Mount, MountBuilder};

use super::{INPUT_PATH, WORKSPACE_PATH};
use crate::policy::ValidatedPolicy;

/// Ptys a run with a terminal may hold at once in its devpts instance: one is the console
/// runc creates, the rest are for programs that open their own (`script`, an editor's
/// subshell). The instance's `max=` option enforces it; the kernel's own limit
/// (`kernel.pty.max`) is host-wide, so without this one sandbox could take every pty.
pub const TERMINAL_PTYS: u32 = 4;

/// The `/dev/pts` mount: a new devpts instance (the host's terminals are not visible)
/// holding at most [`TERMINAL_PTYS`] ptys, and only when the run has a terminal. Without
/// one there is no devpts at all, so `/dev/ptmx` (runc's symlink to `pts/ptmx`) leads
/// nowhere and the sandbox can hold no pty. Measured on Linux 6.18: `max=0` is accepted
/// but means no limit (the instance's pty index range becomes unbounded), so "none" cannot
/// be written as `max=0`.
fn devpts(terminal: bool) -> Option<Mount> {
    let max = format!("max={TERMINAL_PTYS}");
    terminal.then(|| {
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
                &max,
            ],
        )
    })
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(
            options
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("every mount field is set")
}

/// The sandbox's mounts. Everything is `nosuid` and `nodev`; kernel interfaces and shared
/// memory are also `noexec`; `/sys` and the cgroup tree are read-only.
pub(super) fn build(policy: &ValidatedPolicy, terminal: bool) -> Vec<Mount> {
    let tmp_size = format!("size={}k", policy.limits.tmp_size.div_ceil(1024));
    let shm_size = format!("size={}k", policy.limits.shm_size.div_ceil(1024));
    let mut m = vec![
        // The sandbox's own pid namespace's /proc; sensitive files masked below.
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        // A private /dev holding only the device nodes runc creates (null, zero, full,
        // random, urandom, tty, and the ptmx symlink); 64 KiB is room for those nodes and
        // nothing else.
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        // Read-only: no writes to kernel knobs through /sys.
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        // The sandbox's own cgroup (cgroup namespace), read-only, so programs can read their
        // limits but not change them.
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
        // Scratch space, sized; it counts against the memory limit. Executables are allowed
        // here because the workspace allows them too.
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &tmp_size],
        ),
    ];
    // Right after /dev, which holds its mount point.
    if let Some(pts) = devpts(terminal) {
        m.insert(2, pts);
    }
    if let Some(ws) = &policy.workspace {
        // The only writable host directory. A plain (not recursive) bind: host mounts below
        // it do not follow it in. Private propagation: nothing leaks back to the host.
        m.push(mount(
            WORKSPACE_PATH,
            "bind",
            &ws.path.to_string_lossy(),
            &["bind", "rprivate", "nosuid", "nodev", "rw"],
        ));
    }
    if policy.workspace.is_none() && policy.managed_workspace.is_some() {
        // A managed workspace: a filesystem of its own (see `crate::disk`), mounted by the
        // run at the workspace's staging path, which [`stage_binds`] puts here.
        m.push(mount(
            WORKSPACE_PATH,
            "bind",
            MANAGED_WORKSPACE_SOURCE,
            &["bind", "rprivate", "nosuid", "nodev", "rw"],
        ));
    }
    if let Some(input) = &policy.input {
        m.push(mount(
            INPUT_PATH,
            "bind",
            &input.path.to_string_lossy(),
            &["bind", "rprivate", "nosuid", "nodev", "noexec", "ro"],
        ));
    }
    // `-v` binds and `--tmpfs` mounts, parents before what is mounted beneath them (the
    // order is the runtime's mount order); equal depths keep the order given.
    let mut extra: Vec<(usize, Mount)> = Vec::new();
    for b in &policy.binds {
        let rw = if b.read_only { "ro" } else { "rw" };
        extra.push((
            depth(&b.destination),
            mount(
                &b.destination,
                "bind",
                &b.source.path.to_string_lossy(),
                &["bind", "rprivate", "nosuid", "nodev", rw],
            ),
        ));
    }
    for t in &policy.tmpfs {
        let size = format!("size={}k", t.size.div_ceil(1024));
        let mode = format!("mode={:o}", t.mode);
        let mut opts = vec!["nosuid", "nodev"];
        if !t.exec {
            opts.push("noexec");
        }
        opts.extend([mode.as_str(), size.as_str()]);
        extra.push((
            depth(&t.destination),
            mount(&t.destination, "tmpfs", "tmpfs", &opts),
        ));
    }
    extra.sort_by_key(|(d, _)| *d);
    m.extend(extra.into_iter().map(|(_, mount)| mount));
    m
}

/// How many components a (normalised, absolute) destination has.
fn depth(dest: &str) -> usize {
    dest.split('/').filter(|c| !c.is_empty()).count()
}

/// The paths containerd masks by default. Each leaks host state or offers a kernel attack
/// surface. The one list of them: [`masked_paths`], the audit's required masks and the
/// Kubernetes pod's (`crate::k8s::KUBERNETES_MASKED_PATHS`) are built from it.
pub const CONTAINERD_MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",          // ACPI tables and events of the host.
    "/proc/asound",        // the host's sound cards.
    "/proc/kcore",         // the host's physical memory.
    "/proc/keys",          // keys of every keyring the host kernel holds.
    "/proc/latency_stats", // host scheduler latency, a side channel.
    "/proc/timer_list",    // host timers, leaks addresses and other tasks.
    "/proc/timer_stats",   // same.
    "/proc/sched_debug",   // every task on the host.
    "/proc/scsi",          // host SCSI devices, some writable.
    "/sys/firmware",       // firmware tables (ACPI, DMI, EFI variables).
];

/// The RAPL energy counters, which Docker and Kubernetes mask beyond containerd's defaults
/// (the Platypus power side channel, CVE-2020-8694).
pub const POWERCAP_PATH: &str = "/sys/devices/virtual/powercap";

/// Paths hidden from the sandbox: containerd's defaults ([`CONTAINERD_MASKED_PATHS`]), then
/// Docker's additions. runc skips paths that do not exist.
pub fn masked_paths(cpu_count: usize) -> Vec<String> {
    let docker = [
        "/proc/interrupts", // per-CPU interrupt counts of the host, a side channel.
        POWERCAP_PATH,
    ];
    let mut v: Vec<String> = CONTAINERD_MASKED_PATHS
        .iter()
        .chain(&docker)
        .map(std::string::ToString::to_string)
        .collect();
    // Per-CPU thermal throttle counters, as Docker masks them.
    v.extend((0..cpu_count).map(|n| format!("/sys/devices/system/cpu/cpu{n}/thermal_throttle")));
    v
}

/// Paths that stay visible but read-only: containerd's defaults.
pub fn readonly_paths() -> Vec<String> {
    [
        "/proc/bus",           // PCI and USB device config space.
        "/proc/fs",            // filesystem tunables.
        "/proc/irq",           // interrupt affinity.
        "/proc/sys",           // every sysctl.
        "/proc/sysrq-trigger", // reboot, crash or sync the host.
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect()
}

/// The source a managed workspace's bind has in a spec before a run stages it (`stockade
/// spec` prints it; a run replaces it with the workspace's staging path).
pub const MANAGED_WORKSPACE_SOURCE: &str = "/managed-workspace";

/// Points the binds of `spec` at their staging mounts under `staging` (`names` gives the
/// staging name of each destination: `<staging>/workspace`, `<staging>/input`,
/// `<staging>/bind-0`, …; see [`crate::bind`]), the paths a run hands the runtime instead
/// of the host paths, which other processes could change.
pub fn stage_binds(
    spec: &mut oci_spec::runtime::Spec,
    staging: &std::path::Path,
    names: &[(&str, &str)],
) {
    let Some(mounts) = spec.mounts_mut() else {
        return;
    };
    for m in mounts.iter_mut() {
        let Some(dest) = m.destination().to_str() else {
            continue;
        };
        let Some((_, name)) = names.iter().find(|(d, _)| *d == dest) else {
            continue;
        };
        if m.typ().as_deref() == Some("bind") {
            m.set_source(Some(staging.join(name)));
        }
    }
}
