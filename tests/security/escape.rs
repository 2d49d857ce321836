//! The escape suite: every class of attack run through `stockade run` with the default
//! policy (plus, where it makes the claim sharper, as UID 0 without capabilities), from the
//! busybox image (shell applets) and the python image (raw system calls through ctypes).
//!
//! Each case asserts two things: every probe failed the way the table says (an errno, an
//! applet's error message, an empty masked file), and the host did not change (see
//! [`HostState`]: hostname, sysctls, clock, mounts and keys carrying the attack's mark,
//! the host secret file, the host listeners), and nothing of the run is left behind.

use crate::harness::{
    case, check_probes, euid_probe_elf, probes, sha256_file, Case, CaseResult, Daemon, HostState,
    Outcome, Sandbox, Targets, Want, ATTACK_MARK,
};
use crate::{ensure, fail};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

// --- expectations ------------------------------------------------------------------------

const EPERM: Want = Want::Is(&["EPERM"]);
/// Newer mount-API calls: EPERM from the profile, or ENOSYS where runc answers ENOSYS for
/// calls newer than the profile knows.
const EPERM_OR_ENOSYS: Want = Want::Is(&["EPERM", "ENOSYS"]);
const ENOENT: Want = Want::Is(&["ENOENT"]);
const ESRCH: Want = Want::Is(&["ESRCH"]);
/// Denied before the PID is looked up, or not found in the sandbox's PID namespace.
const EPERM_OR_ESRCH: Want = Want::Is(&["EPERM", "ESRCH"]);
/// A masked path: reads as nothing, or is absent (masks over absent paths are skipped).
const MASKED: Want = Want::Is(&["EMPTY", "ENOENT"]);
const EROFS: Want = Want::Is(&["EROFS"]);
/// Written as UID 65534: the mount is read-only, or the file is not ours.
const NOT_WRITABLE: Want = Want::Is(&["EROFS", "EACCES"]);
const NOT_WRITABLE_OR_ABSENT: Want = Want::Is(&["EROFS", "EACCES", "ENOENT"]);
/// x86-only calls; on other architectures the script reports the call absent.
const EPERM_X86: Want = Want::Is(&["EPERM", "NOSYS_ARCH"]);
const ZERO_CAPS: Want = Want::Is(&["0000000000000000"]);
const OK: Want = Want::Is(&["OK"]);

/// Messages of a permission failure, as busybox applets word them.
const DENIED: &[&str] = &["Operation not permitted", "ermission denied"];
const READ_ONLY: &[&str] = &["Read-only file system"];
const DENIED_OR_RO: &[&str] = &[
    "Operation not permitted",
    "ermission denied",
    "Read-only file system",
];
const DENIED_RO_OR_ABSENT: &[&str] = &[
    "Operation not permitted",
    "ermission denied",
    "Read-only file system",
    "No such file or directory",
    "nonexistent directory",
];
/// ENOENT, as applets and as busybox sh's redirections word it.
const ABSENT: &[&str] = &[
    "No such file or directory",
    "nonexistent directory",
    "Directory nonexistent",
];

fn only_allowed_devices(s: &str) -> bool {
    s == "NONE"
        || s.split(',').all(|d| {
            matches!(
                d,
                "c1:3" | "c1:5" | "c1:7" | "c1:8" | "c1:9" | "c5:0" | "c5:2"
            ) || d.starts_with("c136:")
        })
}

fn no_ok(s: &str) -> bool {
    !s.is_empty() && !s.split(',').any(|r| r == "OK")
}

fn at_most_one_process(s: &str) -> bool {
    s.parse::<u32>().is_ok_and(|n| n <= 1)
}

fn only_the_command(s: &str) -> bool {
    s.split(',').all(|c| c == "python3")
}

fn few_shell_processes(s: &str) -> bool {
    s.parse::<u32>().is_ok_and(|n| n <= 6)
}

fn sandbox_cwd(s: &str) -> bool {
    s == "/tmp" || s == "/workspace"
}

fn zero(s: &str) -> bool {
    s == "0"
}

fn any_list(s: &str) -> bool {
    !s.is_empty()
}

fn probes_kept_uid_65534(s: &str) -> bool {
    // Both probes present, each exiting 254 (= 65534 & 0xff), never 0 (= root).
    s.contains("euid-setuid=254") && s.contains("euid-filecap=254")
}

// --- python: raw system calls --------------------------------------------------------------

const PY_MOUNT: &[(&str, Want)] = &[
    ("mount_tmpfs", EPERM),
    ("mount_proc", EPERM),
    ("mount_cgroup_v1", EPERM),
    ("mount_bind_root", EPERM),
    ("remount_root_rw", EPERM),
    ("umount_masked_path", EPERM),
    ("umount_proc", EPERM),
    ("pivot_root", EPERM),
    ("chroot", EPERM),
    ("fsopen", EPERM_OR_ENOSYS),
    ("fspick", EPERM_OR_ENOSYS),
    ("open_tree_clone", EPERM_OR_ENOSYS),
    ("move_mount", EPERM_OR_ENOSYS),
    ("mount_setattr_rw", EPERM_OR_ENOSYS),
    ("open_by_handle_at", EPERM),
];

const PY_NAMESPACES: &[(&str, Want)] = &[
    ("unshare_newuser", EPERM),
    ("unshare_newns", EPERM),
    ("unshare_newnet", EPERM),
    ("unshare_newpid", EPERM),
    ("unshare_newuts", EPERM),
    ("unshare_newipc", EPERM),
    ("unshare_newcgroup", EPERM),
    ("unshare_newtime", EPERM),
    ("clone_newuser", EPERM),
    ("clone_newns", EPERM),
    ("clone_newnet", EPERM),
    // clone3's flags live in memory where seccomp cannot see them: refused outright.
    ("clone3_newuser", Want::Is(&["ENOSYS", "EPERM"])),
    ("setns_own_mnt", EPERM),
    ("setns_own_user", EPERM),
    ("setns_own_net", EPERM),
    ("open_host_ns", ENOENT),
    ("open_pid1_root_ns", EPERM),
];

const PY_PTRACE: &[(&str, Want)] = &[
    ("ptrace_traceme", EPERM),
    ("ptrace_attach_host", EPERM_OR_ESRCH),
    ("ptrace_seize_host", EPERM_OR_ESRCH),
    ("process_vm_readv_host", EPERM_OR_ESRCH),
    ("process_vm_writev_host", EPERM_OR_ESRCH),
    ("open_host_mem", ENOENT),
    ("kill_host", ESRCH),
];

const PY_KEYS: &[(&str, Want)] = &[
    ("add_key", EPERM),
    ("request_key", EPERM),
    ("keyctl_join_session", EPERM),
    ("keyctl_get_user_keyring", EPERM),
    ("read_proc_keys", MASKED),
];

const PY_BPF: &[(&str, Want)] = &[("bpf_map_create", EPERM), ("bpf_prog_load", EPERM)];

const PY_PERF: &[(&str, Want)] = &[
    ("perf_event_open_self", EPERM),
    ("perf_event_open_cpu", EPERM),
    ("userfaultfd", EPERM),
];

const PY_KERNEL: &[(&str, Want)] = &[
    ("init_module", EPERM),
    ("finit_module", EPERM),
    ("delete_module", EPERM),
    ("kexec_load", EPERM),
    ("kexec_file_load", EPERM),
    ("reboot", EPERM),
    ("swapon", EPERM),
    ("swapoff", EPERM),
    ("settimeofday", EPERM),
    ("clock_settime", EPERM),
    ("adjtimex_set", EPERM),
    ("acct", EPERM),
    ("syslog_read", EPERM),
    ("iopl", EPERM_X86),
    ("ioperm", EPERM_X86),
    ("read_kmsg", Want::Is(&["EACCES", "EPERM", "ENOENT"])),
];

const PY_PROCFS_READ: &[(&str, Want)] = &[
    ("read_kcore", MASKED),
    ("read_keys", MASKED),
    ("read_timer_list", MASKED),
    ("read_sched_debug", MASKED),
    ("read_interrupts", MASKED),
    ("read_sys_firmware", MASKED),
    ("read_latency_stats", MASKED),
    ("read_acpi", MASKED),
    ("read_scsi", MASKED),
    ("read_powercap", MASKED),
    (
        "kallsyms_addresses",
        Want::Is(&["ZEROADDR", "EMPTY", "ENOENT"]),
    ),
];

const PY_PROCFS_WRITE: &[(&str, Want)] = &[
    ("write_core_pattern", NOT_WRITABLE),
    ("write_modprobe", NOT_WRITABLE_OR_ABSENT),
    ("write_hostname_sysctl", NOT_WRITABLE),
    ("write_sysrq_trigger", NOT_WRITABLE_OR_ABSENT),
    ("write_sys_uevent_helper", NOT_WRITABLE_OR_ABSENT),
    ("write_sys_kernel_mm", NOT_WRITABLE_OR_ABSENT),
    (
        "write_cgroup_files",
        Want::Is(&["EROFS", "EACCES", "NOFILE"]),
    ),
    ("lower_oom_score_adj", Want::Is(&["EACCES", "EPERM"])),
];

/// As UID 0 (owner of every file, no capabilities): only the read-only mounts stop it.
const PY_ROOT_PROCFS_WRITE: &[(&str, Want)] = &[
    ("write_core_pattern", EROFS),
    ("write_modprobe", Want::Is(&["EROFS", "ENOENT"])),
    ("write_hostname_sysctl", EROFS),
    ("write_sysrq_trigger", Want::Is(&["EROFS", "ENOENT"])),
    ("write_sys_uevent_helper", Want::Is(&["EROFS", "ENOENT"])),
    ("write_sys_kernel_mm", Want::Is(&["EROFS", "ENOENT"])),
    ("write_cgroup_files", Want::Is(&["EROFS", "NOFILE"])),
    ("lower_oom_score_adj", Want::Is(&["EACCES", "EPERM"])),
];

const PY_MKNOD: &[(&str, Want)] = &[
    ("mknod_block", EPERM_X86),
    ("mknodat_block", EPERM),
    ("mknodat_dev_mem", EPERM),
    ("open_dev_sda", ENOENT),
    ("open_dev_mem", ENOENT),
    (
        "dev_nodes",
        Want::Holds(
            only_allowed_devices,
            "only null, zero, full, random, urandom, tty (and ptys)",
        ),
    ),
];

const PY_PRIVILEGES: &[(&str, Want)] = &[
    ("setuid_0", EPERM),
    ("setgid_0", EPERM),
    ("setgroups_0", EPERM),
    ("capset_sys_admin", EPERM),
    ("ambient_raise", EPERM),
    ("no_new_privs_after_clear", Want::Is(&["1"])),
    ("status_NoNewPrivs", Want::Is(&["1"])),
    ("status_Seccomp", Want::Is(&["2"])),
    ("status_CapInh", ZERO_CAPS),
    ("status_CapPrm", ZERO_CAPS),
    ("status_CapEff", ZERO_CAPS),
    ("status_CapBnd", ZERO_CAPS),
    ("status_CapAmb", ZERO_CAPS),
    ("status_Uid", Want::Is(&["65534/65534/65534/65534"])),
    ("status_Gid", Want::Is(&["65534/65534/65534/65534"])),
    ("status_Groups", Want::Is(&["NONE"])),
    (
        "image_setuid_files",
        Want::Holds(any_list, "a list (reported for the record)"),
    ),
    ("image_setuid_mount", Want::Is(&["FAIL", "ABSENT"])),
    (
        "workspace_euid_probes",
        Want::Holds(
            probes_kept_uid_65534,
            "euid-setuid=254 and euid-filecap=254",
        ),
    ),
];

/// CVE-2019-5736: the runtime binary cannot be opened for writing through /proc.
const EXE_NOT_WRITABLE: Want = Want::Is(&["ETXTBSY", "EACCES", "EROFS", "EPERM"]);
const PY_PROC_EXE: &[(&str, Want)] = &[
    ("write_self_exe", EXE_NOT_WRITABLE),
    ("write_pid1_exe", EXE_NOT_WRITABLE),
    ("reopen_exe_path_fd", EXE_NOT_WRITABLE),
    (
        "write_every_exe",
        Want::Holds(no_ok, "no process's exe writable"),
    ),
];

/// CVE-2024-21626: no host descriptor, no host working directory.
const PY_FDS: &[(&str, Want)] = &[
    ("open_fds_above_2", Want::Is(&["NONE"])),
    ("fd0", Want::Is(&["devnull", "pipe"])),
    ("fd1", Want::Is(&["pipe", "devnull"])),
    ("fd2", Want::Is(&["pipe", "devnull"])),
    ("cwd", Want::Holds(sandbox_cwd, "/tmp or /workspace")),
    (
        "proc_self_cwd",
        Want::Holds(sandbox_cwd, "/tmp or /workspace"),
    ),
    ("proc_self_root", Want::Is(&["/"])),
    ("cwd_dotdot", Want::Is(&["ROOT"])),
    ("pid1_cwd_dotdot", Want::Is(&["ROOT"])),
    ("pid1_root", Want::Is(&["ROOT"])),
    ("host_secret", ENOENT),
    ("host_secret_via_root", ENOENT),
];

const PY_SOCKETS_NONE: &[(&str, Want)] = &[
    ("raw_inet_icmp", EPERM),
    ("raw_inet_tcp", EPERM),
    ("raw_inet6", EPERM),
    ("packet_raw", EPERM),
    ("packet_dgram", EPERM),
    ("ping_socket", EPERM),
    ("inet_stream", EPERM),
    ("netlink_route", EPERM),
    ("unix_stream", OK),
    ("interfaces", Want::Is(&["EPERM", "lo"])),
];

const PY_SOCKETS_LOOPBACK: &[(&str, Want)] = &[
    ("raw_inet_icmp", EPERM),
    ("raw_inet_tcp", EPERM),
    ("raw_inet6", EPERM),
    ("packet_raw", EPERM),
    ("packet_dgram", EPERM),
    ("ping_socket", Want::Is(&["EACCES", "EPERM"])),
    ("inet_stream", OK),
    ("netlink_route", OK),
    ("unix_stream", OK),
    ("interfaces", Want::Is(&["lo"])),
];

const PY_HOST_SERVICES_NONE: &[(&str, Want)] = &[
    ("tcp_host_loopback", EPERM),
    ("tcp_host_localhost6", EPERM),
    ("abstract_unix_host", Want::Is(&["ECONNREFUSED"])),
    ("containerd_socket_0", ENOENT),
    ("containerd_socket_1", ENOENT),
];

const NOT_REACHED: Want = Want::Is(&["ECONNREFUSED", "ENETUNREACH", "EADDRNOTAVAIL"]);
const PY_HOST_SERVICES_LOOPBACK: &[(&str, Want)] = &[
    ("tcp_host_loopback", NOT_REACHED),
    ("tcp_host_localhost6", NOT_REACHED),
    ("abstract_unix_host", Want::Is(&["ECONNREFUSED"])),
    ("containerd_socket_0", ENOENT),
    ("containerd_socket_1", ENOENT),
];

const PY_UTS: &[(&str, Want)] = &[
    ("sethostname", EPERM),
    ("setdomainname", EPERM),
    (
        "nodename",
        Want::Holds(not_attack_mark, "not the attack's name"),
    ),
];

fn not_attack_mark(s: &str) -> bool {
    !s.is_empty() && s != ATTACK_MARK
}

const PY_PROCESSES: &[(&str, Want)] = &[
    (
        "visible_pids",
        Want::Holds(at_most_one_process, "1 (the command itself)"),
    ),
    (
        "visible_comms",
        Want::Holds(only_the_command, "python3 only"),
    ),
    ("kill_host_pid", ESRCH),
    ("host_pid_dir", ENOENT),
];

/// As UID 65534: creating, renaming and changing metadata meet the read-only mount first;
/// opening an existing root-owned file for writing meets its mode bits first.
const PY_ROOTFS: &[(&str, Want)] = &[
    ("create_in_root", EROFS),
    ("create_in_etc", EROFS),
    ("create_in_usr_bin", EROFS),
    ("append_etc_passwd", NOT_WRITABLE),
    ("chmod_etc", EROFS),
    ("rename_bin", EROFS),
    ("utime_etc_passwd", EROFS),
];

/// As UID 0, the owner of every file: only the read-only mount stops each write.
const PY_ROOT_ROOTFS: &[(&str, Want)] = &[
    ("create_in_root", EROFS),
    ("create_in_etc", EROFS),
    ("create_in_usr_bin", EROFS),
    ("append_etc_passwd", EROFS),
    ("chmod_etc", EROFS),
    ("rename_bin", EROFS),
    ("utime_etc_passwd", EROFS),
];

// --- busybox: shell applets ----------------------------------------------------------------

const BB_MOUNT: &[(&str, Want)] = &[
    ("mount_tmpfs", Want::Fails(DENIED)),
    ("mount_bind_root", Want::Fails(DENIED)),
    ("remount_root_rw", Want::Fails(DENIED)),
    ("mount_cgroup_v1", Want::Fails(DENIED)),
    ("umount_masked_path", Want::Fails(DENIED)),
    ("umount_proc", Want::Fails(DENIED)),
    ("chroot", Want::Fails(DENIED)),
    ("pivot_root", Want::Fails(DENIED)),
];

const BB_NAMESPACES: &[(&str, Want)] = &[
    ("unshare_user", Want::Fails(DENIED)),
    ("unshare_mount", Want::Fails(DENIED)),
    ("unshare_net", Want::Fails(DENIED)),
    ("unshare_pid", Want::Fails(DENIED)),
    ("nsenter_pid1_mount", Want::Fails(DENIED)),
    ("nsenter_pid1_user", Want::Fails(DENIED_RO_OR_ABSENT)),
    ("nsenter_host_pid", Want::Fails(ABSENT)),
];

const BB_KERNEL: &[(&str, Want)] = &[
    ("insmod", Want::Fails(DENIED)),
    ("rmmod", Want::Fails(DENIED)),
    ("swapon", Want::Fails(DENIED)),
    ("date_set", Want::Fails(DENIED)),
    ("dmesg_read", Want::Fails(DENIED)),
    ("sysctl_write", Want::Fails(DENIED_OR_RO)),
];

const BB_PROCFS: &[(&str, Want)] = &[
    ("kcore_bytes", Want::Holds(zero, "0")),
    ("keys_bytes", Want::Holds(zero, "0")),
    ("timer_list_bytes", Want::Holds(zero, "0")),
    ("sys_firmware_entries", Want::Holds(zero, "0")),
    (
        "kallsyms_nonzero",
        Want::Holds(zero, "0 lines with a non-zero address"),
    ),
    ("write_core_pattern", Want::Fails(DENIED_OR_RO)),
    ("write_sysrq_trigger", Want::Fails(DENIED_RO_OR_ABSENT)),
    ("write_sys_kernel", Want::Fails(DENIED_RO_OR_ABSENT)),
];

const BB_MKNOD: &[(&str, Want)] = &[
    ("mknod_block", Want::Fails(DENIED)),
    ("mknod_dev_mem", Want::Fails(DENIED)),
    ("read_dev_sda", Want::Fails(ABSENT)),
];

const BB_PRIVILEGES: &[(&str, Want)] = &[
    ("id", Want::Is(&["65534:65534"])),
    ("status_NoNewPrivs", Want::Is(&["1"])),
    ("status_Seccomp", Want::Is(&["2"])),
    ("status_CapInh", ZERO_CAPS),
    ("status_CapPrm", ZERO_CAPS),
    ("status_CapEff", ZERO_CAPS),
    ("status_CapBnd", ZERO_CAPS),
    ("status_CapAmb", ZERO_CAPS),
    ("su_root", Want::AnyFailure),
    // Exit status of the probes = effective UID & 0xff: 254 is 65534, 0 would be root.
    ("euid-setuid", Want::Is(&["254"])),
    ("euid-filecap", Want::Is(&["254"])),
];

const BB_PROC_EXE: &[(&str, Want)] = &[
    (
        "write_self_exe",
        Want::Fails(&[
            "Text file busy",
            "ermission denied",
            "Read-only file system",
        ]),
    ),
    (
        "write_pid1_exe",
        Want::Fails(&[
            "Text file busy",
            "ermission denied",
            "Read-only file system",
        ]),
    ),
];

const BB_FDS: &[(&str, Want)] = &[
    // `ls` itself holds fd 3 on the directory it lists.
    ("fds", Want::Is(&["0,1,2,3,"])),
    ("cwd", Want::Holds(sandbox_cwd, "/tmp or /workspace")),
    ("host_secret", Want::Fails(ABSENT)),
    ("host_secret_via_root", Want::Fails(ABSENT)),
];

const BB_NETWORK_NONE: &[(&str, Want)] = &[
    ("nc_host_loopback", Want::Fails(DENIED)),
    ("ping_loopback", Want::Fails(DENIED)),
    ("ip_link_add", Want::Fails(DENIED)),
    ("ifconfig_lo_up", Want::Fails(DENIED)),
    ("interfaces", Want::Is(&["lo,"])),
];

const BB_NETWORK_LOOPBACK: &[(&str, Want)] = &[
    (
        "nc_host_loopback",
        Want::Fails(&["Connection refused", "Network is unreachable"]),
    ),
    ("ping_loopback", Want::Fails(DENIED)),
    ("ip_link_add", Want::Fails(DENIED)),
    ("ifconfig_lo_up", Want::Fails(DENIED)),
    ("interfaces", Want::Is(&["lo,"])),
];

const BB_UTS: &[(&str, Want)] = &[
    ("hostname_set", Want::Fails(DENIED)),
    (
        "hostname",
        Want::Holds(not_attack_mark, "not the attack's name"),
    ),
];

const BB_PROCESSES: &[(&str, Want)] = &[
    (
        "ps_lines",
        Want::Holds(few_shell_processes, "only the script's own few processes"),
    ),
    ("kill_host", Want::Fails(&["No such process"])),
];

const BB_ROOTFS: &[(&str, Want)] = &[
    ("create_in_root", Want::Fails(READ_ONLY)),
    ("create_in_etc", Want::Fails(READ_ONLY)),
    ("create_in_bin", Want::Fails(READ_ONLY)),
    ("chmod_etc", Want::Fails(READ_ONLY)),
    ("rm_bin_sh", Want::Fails(READ_ONLY)),
];

// --- running a case ----------------------------------------------------------------------

/// Which image a case attacks from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Image {
    Busybox,
    Python,
}

/// One attack: image, script classes, extra flags, and the expected probes.
struct Attack {
    name: &'static str,
    image: Image,
    classes: &'static [&'static str],
    /// `--user`, or the default (65534:65534) when None.
    user: Option<&'static str>,
    network: Option<&'static str>,
    table: &'static [(&'static str, Want)],
    /// Checks beyond the table, run after the generic ones.
    extra: Option<fn(&Daemon, &Outcome) -> CaseResult>,
}

const fn attack(
    name: &'static str,
    image: Image,
    classes: &'static [&'static str],
    table: &'static [(&'static str, Want)],
) -> Attack {
    Attack {
        name,
        image,
        classes,
        user: None,
        network: None,
        table,
        extra: None,
    }
}

impl Attack {
    const fn user(mut self, u: &'static str) -> Attack {
        self.user = Some(u);
        self
    }
    const fn network(mut self, n: &'static str) -> Attack {
        self.network = Some(n);
        self
    }
    const fn extra(mut self, f: fn(&Daemon, &Outcome) -> CaseResult) -> Attack {
        self.extra = Some(f);
        self
    }
}

const ATTACKS: &[Attack] = &[
    // mount / umount / pivot_root / chroot, and the file-handle ("shocker") escape
    attack("python::mount", Image::Python, &["mount"], PY_MOUNT),
    attack("python_root::mount", Image::Python, &["mount"], PY_MOUNT).user("0:0"),
    attack("busybox::mount", Image::Busybox, &["mount"], BB_MOUNT),
    attack("busybox_root::mount", Image::Busybox, &["mount"], BB_MOUNT).user("0:0"),
    // unshare / setns / clone into new namespaces, user namespaces included
    attack(
        "python::namespaces",
        Image::Python,
        &["namespaces"],
        PY_NAMESPACES,
    ),
    attack(
        "python_root::namespaces",
        Image::Python,
        &["namespaces"],
        PY_NAMESPACES,
    )
    .user("0:0"),
    attack(
        "busybox::namespaces",
        Image::Busybox,
        &["namespaces"],
        BB_NAMESPACES,
    ),
    // ptrace and process_vm_*
    attack("python::ptrace", Image::Python, &["ptrace"], PY_PTRACE),
    // keyctl / add_key / request_key
    attack("python::keys", Image::Python, &["keys"], PY_KEYS),
    // bpf, perf_event_open, userfaultfd
    attack("python::bpf", Image::Python, &["bpf"], PY_BPF),
    attack("python::perf", Image::Python, &["perf"], PY_PERF),
    // modules, kexec, reboot, swap, clocks, accounting, kernel log, port I/O
    attack("python::kernel", Image::Python, &["kernel"], PY_KERNEL),
    attack("python_root::kernel", Image::Python, &["kernel"], PY_KERNEL).user("0:0"),
    attack("busybox::kernel", Image::Busybox, &["kernel"], BB_KERNEL),
    // reading /proc/kcore, kallsyms addresses, /sys/firmware and the other masked paths
    attack(
        "python::procfs_read",
        Image::Python,
        &["procfs_read"],
        PY_PROCFS_READ,
    ),
    // writing /proc/sys, /proc/sysrq-trigger, /sys, cgroup files
    attack(
        "python::procfs_write",
        Image::Python,
        &["procfs_write"],
        PY_PROCFS_WRITE,
    ),
    attack(
        "python_root::procfs_write",
        Image::Python,
        &["procfs_write"],
        PY_ROOT_PROCFS_WRITE,
    )
    .user("0:0"),
    attack("busybox::procfs", Image::Busybox, &["procfs"], BB_PROCFS),
    attack(
        "busybox_root::procfs",
        Image::Busybox,
        &["procfs"],
        BB_PROCFS,
    )
    .user("0:0"),
    // mknod of block and memory devices; the device nodes present
    attack("python::mknod", Image::Python, &["mknod"], PY_MKNOD),
    attack("python_root::mknod", Image::Python, &["mknod"], PY_MKNOD).user("0:0"),
    attack("busybox::mknod", Image::Busybox, &["mknod"], BB_MKNOD),
    attack("busybox_root::mknod", Image::Busybox, &["mknod"], BB_MKNOD).user("0:0"),
    // /proc/self/exe overwrite (CVE-2019-5736)
    attack(
        "python::proc_exe",
        Image::Python,
        &["proc_exe"],
        PY_PROC_EXE,
    )
    .extra(runtime_binaries_unchanged),
    attack(
        "busybox::proc_exe",
        Image::Busybox,
        &["proc_exe"],
        BB_PROC_EXE,
    )
    .extra(runtime_binaries_unchanged),
    // leaked host descriptors and working directory (CVE-2024-21626)
    attack("python::fds", Image::Python, &["fds"], PY_FDS),
    attack("busybox::fds", Image::Busybox, &["fds"], BB_FDS),
    // raw and packet sockets, in both network modes
    attack(
        "python::sockets_none",
        Image::Python,
        &["sockets"],
        PY_SOCKETS_NONE,
    ),
    attack(
        "python::sockets_loopback",
        Image::Python,
        &["sockets"],
        PY_SOCKETS_LOOPBACK,
    )
    .network("loopback"),
    // the host's loopback listener, an abstract socket, the containerd sockets
    attack(
        "python::host_services_none",
        Image::Python,
        &["host_services"],
        PY_HOST_SERVICES_NONE,
    ),
    attack(
        "python::host_services_loopback",
        Image::Python,
        &["host_services"],
        PY_HOST_SERVICES_LOOPBACK,
    )
    .network("loopback"),
    attack(
        "busybox::network_none",
        Image::Busybox,
        &["network"],
        BB_NETWORK_NONE,
    ),
    attack(
        "busybox::network_loopback",
        Image::Busybox,
        &["network"],
        BB_NETWORK_LOOPBACK,
    )
    .network("loopback"),
    // changing the hostname
    attack("python::uts", Image::Python, &["uts"], PY_UTS).extra(sandbox_hostname_is_not_hosts),
    attack("busybox::uts", Image::Busybox, &["uts"], BB_UTS).extra(sandbox_hostname_is_not_hosts),
    // seeing host processes
    attack(
        "python::processes",
        Image::Python,
        &["processes"],
        PY_PROCESSES,
    ),
    attack(
        "busybox::processes",
        Image::Busybox,
        &["processes"],
        BB_PROCESSES,
    ),
    // writing the read-only root
    attack("python::rootfs", Image::Python, &["rootfs"], PY_ROOTFS).extra(image_unchanged),
    attack(
        "python_root::rootfs",
        Image::Python,
        &["rootfs"],
        PY_ROOT_ROOTFS,
    )
    .user("0:0")
    .extra(image_unchanged),
    attack("busybox::rootfs", Image::Busybox, &["rootfs"], BB_ROOTFS).extra(image_unchanged),
    attack(
        "busybox_root::rootfs",
        Image::Busybox,
        &["rootfs"],
        BB_ROOTFS,
    )
    .user("0:0")
    .extra(image_unchanged),
];

/// The escape cases.
pub fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = ATTACKS
        .iter()
        .map(|a| case(format!("escape::{}", a.name), move |d| run_attack(d, a)))
        .collect();
    v.push(case("escape::python::privileges", |d| {
        privileges(d, Image::Python)
    }));
    v.push(case("escape::busybox::privileges", |d| {
        privileges(d, Image::Busybox)
    }));
    v.push(case("escape::python::workspace_links", |d| {
        workspace_links(d, Image::Python)
    }));
    v.push(case("escape::busybox::workspace_links", |d| {
        workspace_links(d, Image::Busybox)
    }));
    v.push(case("escape::image_import_traversal", |d| image_import(d)));
    v
}

/// Names of trials that need the python image (to build it early only when needed).
pub fn needs_python(name: &str) -> bool {
    name.starts_with("escape::python")
}

fn sandbox_for(a: &Attack) -> Sandbox {
    let mut s = match a.image {
        Image::Busybox => Sandbox::busybox_attack(a.classes),
        Image::Python => Sandbox::python_attack(a.classes),
    };
    if let Some(u) = a.user {
        s = s.user(u);
    }
    if let Some(n) = a.network {
        s = s.network(n);
    }
    s
}

fn run_attack(d: &Daemon, a: &Attack) -> CaseResult {
    if a.image == Image::Python {
        d.python_ready()?;
    }
    let out = attack_with(d, sandbox_for(a), a.table, |_| Ok(()))?;
    if let Some(extra) = a.extra {
        extra(d, &out)?;
    }
    Ok(())
}

/// Runs an attack and checks everything every attack must satisfy: stockade worked, the
/// script finished, every probe failed as `table` says, the host is unchanged, the host's
/// listeners accepted nothing, the host secret never appeared, and nothing of the run is
/// left. `before_run` may prepare the host (it runs after the targets exist).
pub fn attack_with(
    d: &Daemon,
    sandbox: Sandbox,
    table: &[(&str, Want)],
    before_run: impl FnOnce(&Targets) -> CaseResult,
) -> Result<Outcome, String> {
    let targets = Targets::new()?;
    before_run(&targets)?;
    let sandbox = targets.aim(sandbox, d);
    let before = HostState::capture(&targets);
    let out = sandbox.run(d)?;
    out.ran()?;
    let after = HostState::capture(&targets);
    let got = probes(out.stdout()).map_err(|e| format!("{e}\n{}", out.describe()))?;
    check_probes(&got, table).map_err(|e| format!("{e}\nfull output:\n{}", out.describe()))?;
    ensure!(
        out.code() == Some(0),
        "the attack script exited {:?}\n{}",
        out.code(),
        out.describe()
    );
    let changes = before.changes(&after);
    ensure!(
        changes.is_empty(),
        "THE HOST CHANGED during the attack:\n  {}",
        changes.join("\n  ")
    );
    let accepted = targets.accepted();
    ensure!(
        accepted.is_empty(),
        "host listeners were reached: {accepted:?}"
    );
    ensure!(
        !out.stdout().contains(&targets.secret_text)
            && !out.stderr().contains(&targets.secret_text),
        "the host secret was read by the sandbox"
    );
    let id = out.id().unwrap_or_default().to_string();
    let left = d.leftovers_of(&id);
    ensure!(left.is_empty(), "run {id} left: {left:?}");
    Ok(out)
}

// --- extra checks ------------------------------------------------------------------------

/// Hashes of the runtime binaries a CVE-2019-5736 attack would overwrite, taken before
/// the first attack.
static RUNTIME_HASHES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

fn hash_runtime_binaries() -> Vec<(String, String)> {
    runtime_binaries()
        .into_iter()
        .map(|p| {
            let h = sha256_file(Path::new(&p));
            (p, h)
        })
        .collect()
}

/// Records the hashes; call before any attack runs.
pub fn hash_runtime_binaries_now() {
    let _ = RUNTIME_HASHES.set(hash_runtime_binaries());
}

/// runc, the shim, containerd and stockade are byte-for-byte what they were.
fn runtime_binaries_unchanged(_d: &Daemon, _o: &Outcome) -> CaseResult {
    let before = RUNTIME_HASHES
        .get()
        .ok_or("runtime binaries were not hashed before the attacks")?;
    let now = hash_runtime_binaries();
    ensure!(
        *before == now,
        "RUNTIME BINARIES CHANGED: {before:?} -> {now:?}"
    );
    ensure!(!now.is_empty(), "no runtime binary found to compare");
    Ok(())
}

fn runtime_binaries() -> Vec<String> {
    let mut v = vec![
        "/usr/sbin/runc".to_string(),
        "/usr/bin/containerd-shim-runc-v2".to_string(),
        "/usr/bin/containerd".to_string(),
        crate::harness::stockade_bin().to_string(),
    ];
    v.retain(|p| Path::new(p).exists());
    v
}

fn sandbox_hostname_is_not_hosts(_d: &Daemon, o: &Outcome) -> CaseResult {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let got = probes(o.stdout())?;
    let inside = got
        .get("nodename")
        .or_else(|| got.get("hostname"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        inside != host.trim(),
        "the sandbox reports the host's hostname `{inside}`: no UTS namespace"
    );
    Ok(())
}

/// Nothing named `stkattack` appeared in any snapshot of the daemon (the base image is
/// never written through).
fn image_unchanged(d: &Daemon, _o: &Outcome) -> CaseResult {
    let snaps = d
        .containerd
        .paths()
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let mut stack = vec![snaps.clone()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            let name = e.file_name();
            if name.to_string_lossy().contains(ATTACK_MARK) {
                fail!("a snapshot of the image holds {}", e.path().display());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    ensure!(seen > 0, "no snapshot found under {}", snaps.display());
    Ok(())
}

// --- cases with host-side preparation ------------------------------------------------------

/// A set-user-ID-root probe and a probe with the file capability CAP_SETUID, placed in the
/// workspace. A positive control on the host proves each probe does gain UID 0 where the
/// kernel honours the bits; inside the sandbox both must stay UID 65534 (the workspace is
/// nosuid and no_new_privs is set), and the process must have no capability at all.
fn privileges(d: &Daemon, image: Image) -> CaseResult {
    if image == Image::Python {
        d.python_ready()?;
    }
    let ws = tempfile::Builder::new()
        .prefix("stk-sec-ws-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    // Writable by the sandbox's user (a workspace it cannot write is refused at start), and
    // sticky, so the probes stay root's own.
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| e.to_string())?;
    let elf = euid_probe_elf();
    let setuid = ws.path().join("euid-setuid");
    let filecap = ws.path().join("euid-filecap");
    for p in [&setuid, &filecap] {
        std::fs::write(p, &elf).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755))
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&filecap, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let setcap = ["/usr/sbin/setcap", "/sbin/setcap"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("setcap (libcap2-bin) is needed to give the probe a file capability")?;
    let st = std::process::Command::new(setcap)
        .arg("cap_setuid+ep")
        .arg(&filecap)
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(st.success(), "setcap failed: {st}");

    // Positive control: on the host, as 65534 without no_new_privs, both gain UID 0 (unless
    // this host's /tmp is itself nosuid, which makes the control impossible to run).
    let nosuid_tmp = mount_options_of(ws.path()).contains("nosuid");
    if !nosuid_tmp {
        for p in [&setuid, &filecap] {
            let st = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(p)
                .status()
                .map_err(|e| format!("setpriv: {e}"))?;
            ensure!(
                st.code() == Some(0),
                "control: {} did not gain UID 0 on the host (exit {:?}); the probe proves nothing",
                p.display(),
                st.code()
            );
        }
    } else {
        eprintln!("security: /tmp is nosuid on this host; privilege-probe control not run");
    }

    let (sandbox, table) = match image {
        Image::Python => (Sandbox::python_attack(&["privileges"]), PY_PRIVILEGES),
        Image::Busybox => (Sandbox::busybox_attack(&["privileges"]), BB_PRIVILEGES),
    };
    // As 65534 by name: a probe's exit status is its effective UID's low byte, which for
    // a sandbox's own UID could be 0 and look like root. (That the default user is a UID
    // of the sandbox's own is `limits::per_user_counters`' claim.)
    let sandbox = sandbox.workspace(ws.path()).user("65534:65534");
    attack_with(d, sandbox, table, |_| Ok(()))?;
    Ok(())
}

/// The mount options of the filesystem holding `path` (from /proc/self/mountinfo).
fn mount_options_of(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 6 {
            continue;
        }
        let mp = Path::new(f[4]);
        if path.starts_with(mp) {
            let depth = mp.components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, f[5].to_string()));
            }
        }
    }
    best.map(|(_, o)| o).unwrap_or_default()
}

/// Symlinks and `..` in the workspace and input: links the host planted to host paths lead
/// nowhere inside, links the sandbox plants stay links on the host, and nothing is written
/// outside the workspace. (stockade copies nothing in or out: the workspace and input are
/// bind mounts, so the mount namespace is what resolves every path.)
fn workspace_links(d: &Daemon, image: Image) -> CaseResult {
    if image == Image::Python {
        d.python_ready()?;
    }
    let top = tempfile::Builder::new()
        .prefix("stk-sec-links-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let ws = top.path().join("ws");
    let input = top.path().join("in");
    for dir in [&ws, &input] {
        std::fs::create_dir(dir).map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(input.join("data"), "input-data").map_err(|e| e.to_string())?;

    let script = r#"
try() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name OK $(echo "$out" | tr '\n' ' ')"; else echo "$name FAIL: $(echo "$out" | tr '\n' ' ')"; fi; }
try read_abs_link cat /workspace/abs-link
try read_rel_link cat /workspace/rel-link
try list_dir_link ls /workspace/dir-link/
try read_via_root_link cat "/workspace/root-link$HOST_SECRET"
try read_input_link cat /input/abs-link
try read_dotdot cat "/workspace/../..$HOST_SECRET"
try write_abs_link sh -c 'echo stkattack > /workspace/abs-link'
try write_dir_link sh -c 'echo stkattack > /workspace/dir-link/stkattack'
try plant_link ln -s "$HOST_SECRET" /workspace/planted
try write_planted sh -c 'echo stkattack > /workspace/planted'
try plant_root_link ln -s / /workspace/planted-root
try write_dotdot sh -c 'echo stkattack > /workspace/../stkattack'
try write_input sh -c 'echo stkattack > /input/stkattack'
try write_input_data sh -c 'echo stkattack > /input/data'
try hardlink_input ln /input/data /workspace/hardlink
echo done
"#;
    let table: &[(&str, Want)] = &[
        ("read_abs_link", Want::Fails(ABSENT)),
        ("read_rel_link", Want::Fails(ABSENT)),
        ("list_dir_link", Want::Fails(ABSENT)),
        ("read_via_root_link", Want::Fails(ABSENT)),
        ("read_input_link", Want::Fails(ABSENT)),
        ("read_dotdot", Want::Fails(ABSENT)),
        ("write_abs_link", Want::Fails(ABSENT)),
        ("write_dir_link", Want::Fails(ABSENT)),
        (
            "plant_link",
            Want::Holds(|s| s.starts_with("OK"), "OK (a link in the workspace)"),
        ),
        ("write_planted", Want::Fails(ABSENT)),
        (
            "plant_root_link",
            Want::Holds(|s| s.starts_with("OK"), "OK (a link in the workspace)"),
        ),
        ("write_dotdot", Want::Fails(READ_ONLY)),
        ("write_input", Want::Fails(READ_ONLY)),
        ("write_input_data", Want::Fails(DENIED_OR_RO)),
        (
            "hardlink_input",
            Want::Fails(&["cross-device", "Invalid cross-device link", "not permitted"]),
        ),
    ];
    // The python image has /bin/sh (dash) and coreutils; busybox has its applets.
    let sandbox = match image {
        Image::Busybox => Sandbox::busybox(&["sh", "-c", script]),
        Image::Python => Sandbox::python(&["sh", "-c", script]),
    }
    .workspace(&ws)
    .input(&input);
    let ws2 = ws.clone();
    let input2 = input.clone();
    attack_with(d, sandbox, table, move |t| {
        let link = |target: &Path, name: &str, dir: &Path| {
            std::os::unix::fs::symlink(target, dir.join(name))
                .map_err(|e| format!("symlink {name}: {e}"))
        };
        link(&t.secret, "abs-link", &ws2)?;
        link(t.dir.path(), "dir-link", &ws2)?;
        link(Path::new("/"), "root-link", &ws2)?;
        link(&t.secret, "abs-link", &input2)?;
        // ws -> ../.. -> / ; then the secret's absolute path without its leading slash.
        let rel = Path::new("../../..").join(t.secret.strip_prefix("/").unwrap());
        link(&rel, "rel-link", &ws2)
    })?;

    // On the host: the planted names are still links (never followed or replaced by
    // files), nothing new beside the workspace, the input untouched.
    for name in ["planted", "planted-root"] {
        let m = std::fs::symlink_metadata(ws.join(name)).map_err(|e| format!("{name}: {e}"))?;
        ensure!(
            m.file_type().is_symlink(),
            "{name} is no longer a symlink on the host"
        );
    }
    let beside: Vec<String> = std::fs::read_dir(top.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut beside_sorted = beside.clone();
    beside_sorted.sort();
    ensure!(
        beside_sorted == ["in", "ws"],
        "files appeared beside the workspace: {beside:?}"
    );
    let data = std::fs::read_to_string(input.join("data")).map_err(|e| e.to_string())?;
    ensure!(data == "input-data", "the input was modified: {data:?}");
    let in_listing: Vec<String> = std::fs::read_dir(&input)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        !in_listing.iter().any(|n| n.contains(ATTACK_MARK)),
        "a file appeared in the input: {in_listing:?}"
    );
    Ok(())
}

// --- image import: what stockade copies in -------------------------------------------------

/// One tar entry, its name written raw (the tar crate refuses `..` through its setters, and
/// attackers do not use setters).
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn raw_tar(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, link, kind, data): (&str, Option<&str>, tar::EntryType, &[u8]) = match e {
            Entry::File(n, d) => (n, None, tar::EntryType::Regular, d),
            Entry::Symlink(n, t) => (n, Some(t), tar::EntryType::Symlink, b""),
            Entry::Hardlink(n, t) => (n, Some(t), tar::EntryType::Link, b""),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            old.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).map_err(|e| e.to_string())?;
    }
    b.into_inner().map_err(|e| e.to_string())
}

/// Entries that would write outside the directory they are unpacked in: `..`, an absolute
/// path, a symlink followed by a file through it, a hard link to a host file followed by a
/// file of the same name (writing through the link), each aimed at `target`.
fn traversal_entries<'a>(
    target: &'a str,
    dotdot: &'a str,
    abs: &'a str,
    via: &'a str,
    secret: &'a str,
) -> Vec<Entry<'a>> {
    vec![
        Entry::File(dotdot, b"stkattack"),
        Entry::File(abs, b"stkattack"),
        Entry::Symlink("evil", target),
        Entry::File(via, b"stkattack"),
        Entry::Hardlink("hl", secret),
        Entry::File("hl", b"stkattack"),
    ]
}

/// `stockade image import` of hostile archives: the outer archive (unpacked by stockade
/// into scratch space) and a layer (unpacked by containerd) both try to write outside
/// through `..`, absolute paths, symlinks and hard links. Nothing appears or changes on the
/// host; where the import succeeds, the image's root holds only what is inside it.
fn image_import(d: &Daemon) -> CaseResult {
    let t = Targets::new()?;
    let before = HostState::capture(&t);
    let target = t.dir.path().to_str().unwrap().to_string();
    let secret = t.secret.to_str().unwrap().to_string();
    let up = "../../../../../../../../../../..";
    let dotdot = format!("{up}{target}/stkattack-dotdot");
    let abs = format!("{target}/stkattack-abs");
    let work = tempfile::Builder::new()
        .prefix("stk-sec-import-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;

    // A layer with the same tricks, inside a well-formed docker-save archive.
    let layer = raw_tar(&traversal_entries(
        &target,
        &dotdot,
        &abs,
        "evil/stkattack-symlink",
        &secret,
    ))?;
    let layer_digest = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&layer))
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "config": {"Cmd": ["/bin/sh"]}
    })
    .to_string();
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": ["stk-sec/hostile:latest"], "Layers": ["layer.tar"]
    }])
    .to_string();
    // Two archives: hostile entries around a well-formed image (stockade unpacks the
    // outer archive itself), and a clean outer archive around the hostile layer (which
    // containerd unpacks).
    let mut results = Vec::new();
    for hostile_outer in [true, false] {
        let mut outer_entries = if hostile_outer {
            traversal_entries(&target, &dotdot, &abs, "evil/stkattack-symlink", &secret)
        } else {
            Vec::new()
        };
        outer_entries.push(Entry::File("manifest.json", manifest.as_bytes()));
        outer_entries.push(Entry::File("config.json", config.as_bytes()));
        outer_entries.push(Entry::File("layer.tar", &layer));
        let archive = work.path().join(format!("hostile-{hostile_outer}.tar"));
        std::fs::write(&archive, raw_tar(&outer_entries)?).map_err(|e| e.to_string())?;
        let out = crate::harness::run_guarded(
            d.stockade(&["image", "import", archive.to_str().unwrap()]),
            std::time::Duration::from_secs(120),
        )?;
        eprintln!(
            "image import (hostile outer archive: {hostile_outer}, hostile layer): exit {:?}: {}",
            out.code,
            out.stderr_text().trim()
        );
        if out.code != Some(0) {
            ensure!(
                out.code == Some(125) && out.stderr_text().trim().lines().count() == 1,
                "a refused import must exit 125 with one line, got {:?}: {}",
                out.code,
                out.stderr_text()
            );
        }
        results.push(out.code == Some(0));
    }
    let imported = results.iter().any(|ok| *ok);
    let after = HostState::capture(&t);
    let changes = before.changes(&after);
    ensure!(
        changes.is_empty(),
        "THE HOST CHANGED during the import:\n  {}",
        changes.join("\n  ")
    );
    ensure!(
        std::fs::read_to_string(&t.secret).ok().as_deref() == Some(t.secret_text.as_str()),
        "the host secret was overwritten through the archive"
    );
    let planted: Vec<String> = std::fs::read_dir(t.dir.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(ATTACK_MARK))
        .collect();
    ensure!(
        planted.is_empty(),
        "the archive wrote on the host: {planted:?}"
    );

    if imported {
        // What the image's root holds: nothing of the host.
        let o = Sandbox::image("stk-sec/hostile", &["/evil/stkattack-symlink"])
            .run(d)
            .ok();
        if let Some(o) = o {
            ensure!(
                !o.stdout().contains(&t.secret_text) && !o.stderr().contains(&t.secret_text),
                "the imported image exposes the host secret"
            );
        }
        let _ = crate::harness::run_guarded(
            d.stockade(&["image", "rm", "stk-sec/hostile"]),
            std::time::Duration::from_secs(60),
        );
    }
    Ok(())
}
