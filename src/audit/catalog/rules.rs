//! The catalog's rules, as data, in id order and grouped by area.

use super::{Rule, Severity};

const PSS_CAPS_BASELINE: &str = "baseline: Capabilities";
const PSS_CAPS_RESTRICTED: &str = "restricted: Capabilities";
const PSS_PRIVILEGED: &str = "baseline: Privileged Containers";
const PSS_HOST_NS: &str = "baseline: Host Namespaces";
const PSS_SECCOMP_BASELINE: &str = "baseline: Seccomp";
const PSS_SECCOMP_RESTRICTED: &str = "restricted: Seccomp";
const PSS_HOSTPATH: &str = "baseline: HostPath Volumes";
const PSS_VOLUMES: &str = "restricted: Volume Types";
const PSS_PROC_MOUNT: &str = "baseline: /proc Mount Type";
const PSS_SYSCTLS: &str = "baseline: Sysctls";

/// The catalog, in id order.
pub const RULES: &[Rule] = &[
    // ---- capabilities -------------------------------------------------------------------
    Rule {
        id: "STK-CAP-001",
        severity: Severity::Critical,
        title: "Privileged-equivalent capability granted",
        rationale: "CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_DAC_READ_SEARCH, \
                    CAP_SYS_BOOT, CAP_BPF and the MAC capabilities each have a documented path \
                    to host root (mounting host filesystems, loading kernel modules, raw I/O, \
                    open_by_handle_at, kexec, BPF programs, disabling the LSM).",
        remediation: "Remove the capability from every set; grant a narrower one if the \
                      workload truly needs one.",
        cis: &["5.3", "5.4"],
        pss: &[PSS_CAPS_BASELINE, PSS_PRIVILEGED],
    },
    Rule {
        id: "STK-CAP-002",
        severity: Severity::High,
        title: "Dangerous capability granted",
        rationale: "CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_SYS_TIME, CAP_SYSLOG, CAP_PERFMON, \
                    CAP_SYS_RESOURCE, CAP_LINUX_IMMUTABLE, CAP_AUDIT_CONTROL, \
                    CAP_CHECKPOINT_RESTORE and CAP_SYS_PACCT reach host-wide state or other \
                    processes' memory, or widen the kernel attack surface a great deal.",
        remediation: "Remove the capability from every set.",
        cis: &["5.3"],
        pss: &[PSS_CAPS_BASELINE],
    },
    Rule {
        id: "STK-CAP-003",
        severity: Severity::Medium,
        title: "Capability outside the Kubernetes baseline set",
        rationale: "Only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, \
                    NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID and SYS_CHROOT are \
                    allowed by the baseline standard; anything else (NET_RAW included: packet \
                    spoofing on the container network) is an addition to review.",
        remediation: "Remove the capability unless the workload is known to need it.",
        cis: &["5.3"],
        pss: &[PSS_CAPS_BASELINE],
    },
    Rule {
        id: "STK-CAP-004",
        severity: Severity::Low,
        title: "Capability beyond the restricted standard",
        rationale: "The restricted standard drops every capability but NET_BIND_SERVICE; \
                    each extra one (CHOWN, SETUID, …) is privilege the process keeps.",
        remediation: "Drop all capabilities and add back only NET_BIND_SERVICE if needed.",
        cis: &["5.3"],
        pss: &[PSS_CAPS_RESTRICTED],
    },
    Rule {
        id: "STK-CAP-005",
        severity: Severity::Medium,
        title: "Ambient or inheritable capabilities set",
        rationale: "Ambient capabilities survive execve of ordinary programs, so every child \
                    process holds them; inheritable ones combine with file capabilities of \
                    binaries in the image.",
        remediation: "Leave the ambient and inheritable sets empty.",
        cis: &["5.3"],
        pss: &[PSS_CAPS_RESTRICTED],
    },
    // ---- namespaces ---------------------------------------------------------------------
    Rule {
        id: "STK-NS-001",
        severity: Severity::High,
        title: "Host PID namespace shared",
        rationale: "Without its own PID namespace the container sees every host process and \
                    can signal, and with ptrace rights inspect, those of the same user.",
        remediation: "Add a `pid` namespace without a path.",
        cis: &["5.15"],
        pss: &[PSS_HOST_NS],
    },
    Rule {
        id: "STK-NS-002",
        severity: Severity::High,
        title: "Host network namespace shared",
        rationale: "The host's network namespace exposes every host interface, listening \
                    socket (abstract Unix sockets included) and the host firewall.",
        remediation: "Add a `network` namespace without a path.",
        cis: &["5.9"],
        pss: &[PSS_HOST_NS],
    },
    Rule {
        id: "STK-NS-003",
        severity: Severity::High,
        title: "Host IPC namespace shared",
        rationale: "The host's IPC namespace shares System V shared memory, semaphores and \
                    POSIX message queues with host processes.",
        remediation: "Add an `ipc` namespace without a path.",
        cis: &["5.16"],
        pss: &[PSS_HOST_NS],
    },
    Rule {
        id: "STK-NS-004",
        severity: Severity::Medium,
        title: "Host UTS namespace shared",
        rationale: "Sharing the UTS namespace lets the container read, and with \
                    CAP_SYS_ADMIN change, the host's hostname and domain name.",
        remediation: "Add a `uts` namespace without a path.",
        cis: &["5.20"],
        pss: &[],
    },
    Rule {
        id: "STK-NS-005",
        severity: Severity::High,
        title: "Host mount namespace shared",
        rationale: "Without a mount namespace the container's mounts happen in the host's \
                    mount table and the root filesystem cannot be isolated.",
        remediation: "Add a `mount` namespace without a path.",
        cis: &[],
        pss: &[],
    },
    Rule {
        id: "STK-NS-006",
        severity: Severity::Low,
        title: "Host cgroup namespace shared",
        rationale: "Without a cgroup namespace /proc/self/cgroup shows host cgroup paths, \
                    which leaks the host's layout and helps cgroup-based escapes.",
        remediation: "Add a `cgroup` namespace without a path.",
        cis: &[],
        pss: &[],
    },
    Rule {
        id: "STK-NS-007",
        severity: Severity::Info,
        title: "No user namespace",
        rationale: "Without a user namespace, uid 0 in the container is uid 0 on the host; \
                    a user namespace with an unprivileged mapping limits what an escape gains.",
        remediation: "Add a `user` namespace with uidMappings/gidMappings to an unprivileged \
                      host range.",
        cis: &["5.30"],
        pss: &[],
    },
    Rule {
        id: "STK-NS-008",
        severity: Severity::Medium,
        title: "Namespace joined from another process",
        rationale: "A namespace given by path is shared with whatever process owns it; the \
                    spec alone cannot tell whether that is a pod sandbox or something with \
                    more privilege.",
        remediation: "Check that the path belongs to a sandbox of the same trust level, or \
                      create a fresh namespace.",
        cis: &[],
        pss: &[PSS_HOST_NS],
    },
    // ---- seccomp ------------------------------------------------------------------------
    Rule {
        id: "STK-SEC-001",
        severity: Severity::High,
        title: "No seccomp profile",
        rationale: "Without seccomp every system call of the kernel is reachable, including \
                    those behind most container-escape CVEs.",
        remediation: "Set `linux.seccomp` to an allowlist profile with a denying default \
                      action (Docker's default or stricter).",
        cis: &["5.21"],
        pss: &[PSS_SECCOMP_BASELINE, PSS_SECCOMP_RESTRICTED],
    },
    Rule {
        id: "STK-SEC-002",
        severity: Severity::High,
        title: "Seccomp default action allows system calls",
        rationale: "A default action of SCMP_ACT_ALLOW or SCMP_ACT_LOG makes the profile a \
                    denylist: every system call not named, including new ones, is allowed.",
        remediation: "Use a denying default action (SCMP_ACT_ERRNO) and list the allowed \
                      system calls.",
        cis: &["5.21"],
        pss: &[PSS_SECCOMP_RESTRICTED],
    },
    Rule {
        id: "STK-SEC-003",
        severity: Severity::High,
        title: "Dangerous system call allowed",
        rationale: "mount, unshare, setns, bpf, keyctl, ptrace, perf_event_open, kexec, module \
                    loading, open_by_handle_at, userfaultfd, io_uring and similar calls are the \
                    kernel surface most escapes use; Docker's default profile denies them to \
                    unprivileged containers.",
        remediation: "Remove the system call from the allowed rules, or restrict it with \
                      argument conditions (clone/unshare without namespace flags).",
        cis: &["5.21"],
        pss: &[PSS_SECCOMP_RESTRICTED],
    },
    Rule {
        id: "STK-SEC-004",
        severity: Severity::Medium,
        title: "Dangerous system call allowed for some arguments",
        rationale: "The rule restricts the call's arguments, but not in a way the audit \
                    recognises as safe; review that the conditions exclude the dangerous uses.",
        remediation: "Deny the call, or restrict it to arguments known to be harmless.",
        cis: &["5.21"],
        pss: &[PSS_SECCOMP_RESTRICTED],
    },
    Rule {
        id: "STK-SEC-005",
        severity: Severity::Low,
        title: "Dangerous system call left to a tracer or notifier",
        rationale: "SCMP_ACT_TRACE and SCMP_ACT_NOTIFY hand the decision to a user-space \
                    process outside the spec; the call is as safe as that process.",
        remediation: "Deny the call in the profile unless the supervising process is part of \
                      the reviewed design.",
        cis: &["5.21"],
        pss: &[],
    },
    // ---- mandatory access control -------------------------------------------------------
    Rule {
        id: "STK-MAC-001",
        severity: Severity::Medium,
        title: "No AppArmor profile or SELinux label",
        rationale: "An LSM profile is a second wall behind seccomp and capabilities. Not every \
                    host has AppArmor or SELinux (`stockade doctor` says which this host has); \
                    where one is available it should confine the container.",
        remediation: "Set `process.apparmorProfile` (e.g. stockade-default or docker-default) \
                      or `process.selinuxLabel` where the host supports it.",
        cis: &["5.1", "5.2"],
        pss: &[],
    },
    Rule {
        id: "STK-MAC-002",
        severity: Severity::High,
        title: "AppArmor or SELinux explicitly unconfined",
        rationale: "An `unconfined` AppArmor profile, or an SELinux type such as spc_t or \
                    unconfined_t, switches off confinement on hosts that would otherwise \
                    enforce it.",
        remediation: "Use a confining profile or label.",
        cis: &["5.1", "5.2"],
        pss: &["baseline: AppArmor", "baseline: SELinux"],
    },
    // ---- process ------------------------------------------------------------------------
    Rule {
        id: "STK-PROC-001",
        severity: Severity::High,
        title: "noNewPrivileges not set",
        rationale: "Without no_new_privs, setuid and file-capability binaries in the image \
                    raise privilege at execve (up to the bounding set), and LSM transitions \
                    can widen.",
        remediation: "Set `process.noNewPrivileges: true`.",
        cis: &["5.25"],
        pss: &["restricted: Privilege Escalation"],
    },
    Rule {
        id: "STK-PROC-002",
        severity: Severity::Medium,
        title: "Process runs as root",
        rationale: "uid 0 owns most files in an image and, without a user namespace, is uid 0 \
                    on the host: every other weakness becomes worse as root.",
        remediation: "Set `process.user.uid` to an unprivileged id, or map uid 0 to an \
                      unprivileged host range with a user namespace.",
        cis: &["4.1"],
        pss: &[
            "restricted: Running as Non-root",
            "restricted: Running as Non-root user",
        ],
    },
    Rule {
        id: "STK-PROC-003",
        severity: Severity::Low,
        title: "No open-files rlimit",
        rationale: "Without RLIMIT_NOFILE the process inherits the runtime's limit, often \
                    very high, and can exhaust kernel file tables.",
        remediation: "Set an RLIMIT_NOFILE rlimit (1024 is a common default).",
        cis: &["5.18"],
        pss: &[],
    },
    Rule {
        id: "STK-PROC-004",
        severity: Severity::Info,
        title: "Core dumps not disabled",
        rationale: "Core dumps may write secrets from process memory to disk, and the host's \
                    core_pattern may pipe them to a host program.",
        remediation: "Set RLIMIT_CORE to 0.",
        cis: &["5.18"],
        pss: &[],
    },
    // ---- filesystem ---------------------------------------------------------------------
    Rule {
        id: "STK-FS-001",
        severity: Severity::Medium,
        title: "Root filesystem writable",
        rationale: "A writable root lets the workload alter binaries and libraries it later \
                    runs, and persist changes in the container's snapshot.",
        remediation: "Set `root.readonly: true` and give writable tmpfs or volumes only where \
                      needed.",
        cis: &["5.12"],
        pss: &[],
    },
    Rule {
        id: "STK-FS-002",
        severity: Severity::High,
        title: "Sensitive host path mounted",
        rationale: "Host /, /etc, /proc, /sys, /dev, /boot, /root, /var/lib/kubelet and the \
                    container stores hold credentials, kernel interfaces and other \
                    containers' data.",
        remediation: "Remove the bind mount, or mount only the narrow path the workload needs, \
                      read-only.",
        cis: &["5.5"],
        pss: &[PSS_HOSTPATH],
    },
    Rule {
        id: "STK-FS-003",
        severity: Severity::Critical,
        title: "Container runtime socket mounted",
        rationale: "Whoever reaches the Docker, containerd, CRI-O or Podman socket can start a \
                    privileged container: it is root on the host.",
        remediation: "Remove the mount; give the workload a narrow API instead.",
        cis: &["5.31"],
        pss: &[PSS_HOSTPATH],
    },
    Rule {
        id: "STK-FS-004",
        severity: Severity::Medium,
        title: "Host path bind-mounted read-write",
        rationale: "A read-write bind mount lets the container change host files, plant \
                    setuid binaries or symlinks for host processes to follow.",
        remediation: "Add `ro` to the mount options, or confirm the path is a dedicated \
                      scratch directory.",
        cis: &["5.5"],
        pss: &[PSS_HOSTPATH, PSS_VOLUMES],
    },
    Rule {
        id: "STK-FS-005",
        severity: Severity::Medium,
        title: "Shared mount propagation",
        rationale: "With shared propagation, mounts made inside the container appear on the \
                    host (and the reverse), breaking mount isolation.",
        remediation: "Use private, rprivate, slave or rslave propagation.",
        cis: &["5.19"],
        pss: &[],
    },
    Rule {
        id: "STK-FS-006",
        severity: Severity::Medium,
        title: "Sensitive /proc or /sys paths not masked",
        rationale: "Paths such as /proc/kcore, /proc/keys, /proc/timer_list, /sys/firmware \
                    and /sys/devices/virtual/powercap leak kernel memory, keys or side \
                    channels; runtimes mask them by default.",
        remediation: "Add the missing paths to `linux.maskedPaths`.",
        cis: &[],
        pss: &[PSS_PROC_MOUNT],
    },
    Rule {
        id: "STK-FS-007",
        severity: Severity::Medium,
        title: "Kernel tunables under /proc not read-only",
        rationale: "/proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus and /proc/fs write \
                    host-wide kernel state; runtimes make them read-only by default.",
        remediation: "Add the missing paths to `linux.readonlyPaths`.",
        cis: &[],
        pss: &[PSS_PROC_MOUNT],
    },
    Rule {
        id: "STK-FS-008",
        severity: Severity::Medium,
        title: "sysfs or cgroupfs mounted read-write",
        rationale: "A writable /sys or /sys/fs/cgroup exposes kernel and cgroup knobs \
                    (release_agent among them) to the container.",
        remediation: "Add `ro` to the sysfs and cgroup mounts.",
        cis: &[],
        pss: &[],
    },
    // ---- devices ------------------------------------------------------------------------
    Rule {
        id: "STK-DEV-001",
        severity: Severity::Critical,
        title: "Device cgroup allows every device",
        rationale: "With all devices allowed, a process able to create device nodes (or given \
                    them) reads and writes host disks and memory directly.",
        remediation: "Start `linux.resources.devices` with a deny-all rule and allow only the \
                      character devices the workload needs.",
        cis: &["5.17", "5.4"],
        pss: &[PSS_PRIVILEGED],
    },
    Rule {
        id: "STK-DEV-002",
        severity: Severity::High,
        title: "Block or raw memory device allowed",
        rationale: "Read or write access to block devices, or to /dev/mem, /dev/kmem or \
                    /dev/port, bypasses every filesystem permission on the host.",
        remediation: "Remove the device and its cgroup rule; use a volume instead of a raw \
                      disk.",
        cis: &["5.17"],
        pss: &[],
    },
    Rule {
        id: "STK-DEV-003",
        severity: Severity::Medium,
        title: "Device cgroup not restricted by the spec",
        rationale: "No deny-all device rule: what the container may open depends on the \
                    runtime's defaults, not on the reviewed spec.",
        remediation: "Start `linux.resources.devices` with `{\"allow\": false, \"access\": \
                      \"rwm\"}`.",
        cis: &["5.17"],
        pss: &[],
    },
    // ---- resources ----------------------------------------------------------------------
    Rule {
        id: "STK-RES-001",
        severity: Severity::Medium,
        title: "No memory limit",
        rationale: "Without a memory limit one container can push the host into reclaim and \
                    have the OOM killer take host processes.",
        remediation: "Set `linux.resources.memory.limit` (and swap equal to it).",
        cis: &["5.10"],
        pss: &[],
    },
    Rule {
        id: "STK-RES-002",
        severity: Severity::Low,
        title: "No CPU limit",
        rationale: "Without a CFS quota or cpuset the container may use every core of the \
                    host.",
        remediation: "Set `linux.resources.cpu.quota` and `period` (or `cpus`).",
        cis: &["5.11"],
        pss: &[],
    },
    Rule {
        id: "STK-RES-003",
        severity: Severity::Medium,
        title: "No pids limit",
        rationale: "Without a pids limit a fork bomb exhausts the host's process table.",
        remediation: "Set `linux.resources.pids.limit`.",
        cis: &["5.28"],
        pss: &[],
    },
    // ---- sysctls ------------------------------------------------------------------------
    Rule {
        id: "STK-SYS-001",
        severity: Severity::High,
        title: "Host-wide sysctl set",
        rationale: "This sysctl is not isolated by the container's namespaces (or the \
                    namespace that would isolate it is shared with the host): setting it \
                    changes the host kernel.",
        remediation: "Remove the sysctl from `linux.sysctl`; set it on the host if needed.",
        cis: &[],
        pss: &[PSS_SYSCTLS],
    },
    Rule {
        id: "STK-SYS-002",
        severity: Severity::Low,
        title: "Sysctl outside the Kubernetes safe set",
        rationale: "The sysctl is namespaced, but not one the baseline standard considers \
                    safe; it may still consume shared kernel resources.",
        remediation: "Keep to the safe set (kernel.shm_rmid_forced, net.ipv4.ip_local_port_range, \
                      net.ipv4.ip_unprivileged_port_start, net.ipv4.tcp_syncookies, \
                      net.ipv4.ping_group_range, …) or review the value.",
        cis: &[],
        pss: &[PSS_SYSCTLS],
    },
    // ---- hooks --------------------------------------------------------------------------
    Rule {
        id: "STK-HOOK-001",
        severity: Severity::Medium,
        title: "Hook runs a host binary",
        rationale: "prestart, createRuntime, createContainer, poststart and poststop hooks run \
                    a host program with the runtime's privileges (root), outside the \
                    container's confinement.",
        remediation: "Check the hook's binary and arguments; remove hooks that are not needed.",
        cis: &[],
        pss: &[],
    },
];
