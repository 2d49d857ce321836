//! What a seccomp filter in a spec lets through: action classes, per-call effects that
//! understand argument conditions, and the list of calls the audit calls dangerous.

use super::model::{SeccompArgView, SeccompView};

/// System calls whose availability to an unprivileged container is a finding, each with
/// why. The list follows what Docker's default profile withholds from containers without
/// CAP_SYS_ADMIN and friends, plus the newer mount API and io_uring.
pub(crate) const DANGEROUS: &[(&str, &str)] = &[
    // Filesystem mounts: reshape the mount tree, reach host filesystems with privilege.
    ("mount", "mounts filesystems"),
    ("umount", "unmounts filesystems (uncovers masked paths)"),
    ("umount2", "unmounts filesystems (uncovers masked paths)"),
    ("pivot_root", "changes the root mount"),
    ("move_mount", "new mount API"),
    ("open_tree", "new mount API: clones mount trees"),
    ("fsopen", "new mount API"),
    ("fsconfig", "new mount API"),
    ("fsmount", "new mount API"),
    ("fspick", "new mount API"),
    ("mount_setattr", "changes mount attributes (ro, idmap)"),
    // Namespaces: new user namespaces unlock kernel code paths meant for root.
    (
        "unshare",
        "creates namespaces (user namespaces unlock root-only kernel code)",
    ),
    ("setns", "joins other namespaces"),
    (
        "clone",
        "creates namespaces unless namespace flags are filtered",
    ),
    (
        "clone3",
        "creates namespaces; its flags cannot be filtered by seccomp",
    ),
    // Kernel code loading and replacement.
    ("init_module", "loads kernel modules"),
    ("finit_module", "loads kernel modules"),
    ("delete_module", "unloads kernel modules"),
    ("create_module", "obsolete module loading"),
    ("kexec_load", "replaces the running kernel"),
    ("kexec_file_load", "replaces the running kernel"),
    ("bpf", "loads BPF programs into the kernel"),
    // Introspection of other processes and of the kernel.
    ("ptrace", "traces and modifies other processes"),
    ("process_vm_readv", "reads other processes' memory"),
    ("process_vm_writev", "writes other processes' memory"),
    ("kcmp", "compares kernel objects of other processes"),
    (
        "perf_event_open",
        "kernel performance events: side channels, frequent CVEs",
    ),
    ("lookup_dcookie", "kernel profiling interface"),
    ("syslog", "reads the kernel log"),
    // Key management is not namespaced.
    ("keyctl", "kernel keyring is not namespaced"),
    ("add_key", "kernel keyring is not namespaced"),
    ("request_key", "kernel keyring is not namespaced"),
    // File handles bypass the mount namespace (the "shocker" escape).
    (
        "open_by_handle_at",
        "opens host files by handle, bypassing the mount namespace",
    ),
    // Host-wide clocks and power.
    ("settimeofday", "sets the host clock"),
    ("clock_settime", "sets the host clock"),
    ("stime", "sets the host clock"),
    ("reboot", "reboots or halts the host"),
    ("swapon", "changes host swap"),
    ("swapoff", "changes host swap"),
    ("acct", "host-wide process accounting"),
    ("quotactl", "host filesystem quotas"),
    // Raw hardware access.
    ("iopl", "raw I/O port access"),
    ("ioperm", "raw I/O port access"),
    // Exploit helpers.
    (
        "userfaultfd",
        "pauses kernel faults: a common exploit primitive",
    ),
    (
        "io_uring_setup",
        "io_uring: large, frequently exploited kernel surface",
    ),
    (
        "io_uring_enter",
        "io_uring: large, frequently exploited kernel surface",
    ),
    (
        "io_uring_register",
        "io_uring: large, frequently exploited kernel surface",
    ),
    ("vm86", "legacy virtual-8086 mode"),
    ("vm86old", "legacy virtual-8086 mode"),
    ("uselib", "obsolete shared-library loader"),
    ("nfsservctl", "obsolete kernel NFS server control"),
    ("_sysctl", "obsolete sysctl interface"),
];

/// Why `name` is dangerous, if it is.
pub(crate) fn danger(name: &str) -> Option<&'static str> {
    DANGEROUS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// The namespace-creating flags of clone(2)/unshare(2): NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET (NEWTIME is 0x80 and shares a bit with CSIGNAL in clone).
pub(crate) const CLONE_NS_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// What an action does with a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// ERRNO, KILL*, TRAP: the call does not reach the kernel.
    Deny,
    /// TRACE, NOTIFY, or an action this audit does not know: decided outside the spec.
    Delegate,
    /// ALLOW, LOG: the call runs.
    Allow,
}

pub(crate) fn classify(action: &str) -> Class {
    match action {
        "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" => Class::Allow,
        "SCMP_ACT_ERRNO"
        | "SCMP_ACT_KILL"
        | "SCMP_ACT_KILL_THREAD"
        | "SCMP_ACT_KILL_PROCESS"
        | "SCMP_ACT_TRAP" => Class::Deny,
        _ => Class::Delegate,
    }
}

/// What the filter does with one system call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Allowed whatever the arguments; `rule` is the index into `syscalls`, `None` when the
    /// default action decides.
    Allowed { rule: Option<usize> },
    /// Allowed only for some arguments, by `rule` (or by the default action, except where a
    /// conditional deny `rule` matches).
    AllowedIf { rule: Option<usize>, safe: bool },
    /// Handed to a tracer or notifier.
    Delegated { rule: Option<usize> },
    /// Never reaches the kernel.
    Denied,
}

impl Effect {
    /// The rule index that decides, for locating the finding.
    pub fn rule(&self) -> Option<usize> {
        match self {
            Effect::Allowed { rule }
            | Effect::AllowedIf { rule, .. }
            | Effect::Delegated { rule } => *rule,
            Effect::Denied => None,
        }
    }

    /// Rank for comparing two filters: higher lets more through.
    pub fn openness(&self) -> u8 {
        match self {
            Effect::Denied => 0,
            Effect::AllowedIf { safe: true, .. } => 1,
            Effect::Delegated { .. } => 2,
            Effect::AllowedIf { safe: false, .. } => 3,
            Effect::Allowed { .. } => 4,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Effect::Denied => "denied",
            Effect::AllowedIf { safe: true, .. } => "allowed with safe argument conditions",
            Effect::AllowedIf { safe: false, .. } => "allowed for some arguments",
            Effect::Delegated { .. } => "left to a tracer or notifier",
            Effect::Allowed { .. } => "allowed",
        }
    }
}

/// How `seccomp` treats the call `name`.
///
/// Rules for the same call combine as libseccomp combines them: an unconditional rule
/// replaces the default action for that call; conditional rules with another action carve
/// exceptions out of it. Where rules disagree, the more permissive reading is taken, so the
/// audit never under-reports.
pub(crate) fn effect(seccomp: &SeccompView, name: &str) -> Effect {
    let rules: Vec<(usize, Class, Option<&[SeccompArgView]>)> = seccomp
        .syscalls
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, r)| r.names.iter().any(|n| n == name))
        .map(|(i, r)| {
            let args = r.args.as_deref().filter(|a| !a.is_empty());
            (i, classify(&r.action), args)
        })
        .collect();

    // The base verdict: the most permissive unconditional rule, else the default action.
    let (base, base_rule) = rules
        .iter()
        .filter(|(_, _, args)| args.is_none())
        .map(|(i, c, _)| (*c, Some(*i)))
        .max_by_key(|(c, _)| *c)
        .unwrap_or((classify(&seccomp.default_action), None));
    let conditional = |class: Class| {
        rules
            .iter()
            .filter(move |(_, c, args)| args.is_some() && *c == class)
            .map(|(i, _, args)| (*i, args.unwrap_or_default()))
    };

    match base {
        Class::Allow => match conditional(Class::Deny)
            .chain(conditional(Class::Delegate))
            .next()
        {
            // Denied for some arguments only: still allowed for the rest.
            Some((i, _)) => Effect::AllowedIf {
                rule: Some(i),
                safe: false,
            },
            None => Effect::Allowed { rule: base_rule },
        },
        Class::Deny | Class::Delegate => {
            let allows: Vec<(usize, &[SeccompArgView])> = conditional(Class::Allow).collect();
            if let Some((first, _)) = allows.first() {
                let safe = allows.iter().all(|(_, args)| args_are_safe(name, args));
                Effect::AllowedIf {
                    rule: Some(*first),
                    safe,
                }
            } else if base == Class::Delegate {
                Effect::Delegated { rule: base_rule }
            } else if let Some((i, _)) = conditional(Class::Delegate).next() {
                Effect::Delegated { rule: Some(i) }
            } else {
                Effect::Denied
            }
        }
    }
}

/// Argument conditions known to take the danger out of a call: clone and unshare with
/// every namespace flag required to be clear (`flags & mask == 0`, mask covering all
/// namespace flags). clone's flags are argument 0 (argument 1 on s390).
fn args_are_safe(name: &str, args: &[SeccompArgView]) -> bool {
    let flag_indexes: &[u64] = match name {
        "clone" => &[0, 1],
        "unshare" => &[0],
        _ => return false,
    };
    args.iter().any(|a| {
        flag_indexes.contains(&a.index)
            && a.op == "SCMP_CMP_MASKED_EQ"
            && a.value & CLONE_NS_FLAGS == CLONE_NS_FLAGS
            && a.value_two.unwrap_or(0) & CLONE_NS_FLAGS == 0
    })
}

/// Every call name the filter mentions, sorted and deduplicated.
pub(crate) fn named_calls(seccomp: &SeccompView) -> Vec<&str> {
    let mut v: Vec<&str> = seccomp
        .syscalls
        .iter()
        .flatten()
        .flat_map(|r| r.names.iter().map(String::as_str))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}
