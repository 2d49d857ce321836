//! Claims about the built-in seccomp profiles, each proved against data:
//! - every allowance of `default` and `strict` is within what Docker's default profile
//!   allows a container with no capabilities on amd64 (and the checker catches additions);
//! - `strict` allows nothing `default` does not;
//! - the syscalls that matter most for escapes are not allowed in any form;
//! - every rule says why it exists; the default action is errno EPERM;
//! - both profiles compile to non-empty BPF for x86_64 and aarch64.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

use serde_json::Value;
use stockade::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator as Op};
use stockade::policy::NetworkMode;
use stockade::seccomp::{builtin_profile, export_bpf, Profile, TARGET_ARCHES};
use stockade::spec::seccomp_for_network;

/// One argument condition, as (index, op, value, valueTwo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cond {
    index: u64,
    op: Op,
    value: u64,
    value_two: u64,
}

/// For each syscall name, the ways it is allowed: each entry is a conjunction of
/// conditions (empty = unconditionally).
type Allowances = BTreeMap<String, Vec<Vec<Cond>>>;

fn op_of(s: &str) -> Op {
    match s {
        "SCMP_CMP_NE" => Op::ScmpCmpNe,
        "SCMP_CMP_LT" => Op::ScmpCmpLt,
        "SCMP_CMP_LE" => Op::ScmpCmpLe,
        "SCMP_CMP_EQ" => Op::ScmpCmpEq,
        "SCMP_CMP_GE" => Op::ScmpCmpGe,
        "SCMP_CMP_GT" => Op::ScmpCmpGt,
        "SCMP_CMP_MASKED_EQ" => Op::ScmpCmpMaskedEq,
        other => panic!("unknown operator {other}"),
    }
}

/// Actions after which the syscall does not run.
fn denies(action: &str) -> bool {
    matches!(
        action,
        "SCMP_ACT_ERRNO"
            | "SCMP_ACT_KILL"
            | "SCMP_ACT_KILL_THREAD"
            | "SCMP_ACT_KILL_PROCESS"
            | "SCMP_ACT_TRAP"
    )
}

/// What Docker's profile allows on amd64 to a container holding no capabilities, read
/// straight from its JSON. Rules gated on a minimum kernel count as allowing (this host's
/// kernel is newer than any of them), so the comparison is against Docker at its widest.
fn docker_allowances(doc: &Value) -> Allowances {
    assert!(denies(doc["defaultAction"].as_str().unwrap()));
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut out = Allowances::new();
    for rule in doc["syscalls"].as_array().unwrap() {
        if denies(rule["action"].as_str().unwrap()) {
            continue;
        }
        let inc_caps = strs(&rule["includes"]["caps"]);
        let inc_arches = strs(&rule["includes"]["arches"]);
        let exc_arches = strs(&rule["excludes"]["arches"]);
        let applies = inc_caps.is_empty()
            && (inc_arches.is_empty() || inc_arches.iter().any(|a| a == "amd64"))
            && !exc_arches.iter().any(|a| a == "amd64");
        if !applies {
            continue;
        }
        let conds: Vec<Cond> = rule["args"]
            .as_array()
            .map(|args| {
                args.iter()
                    .map(|a| Cond {
                        index: a["index"].as_u64().unwrap(),
                        op: op_of(a["op"].as_str().unwrap()),
                        value: a["value"].as_u64().unwrap(),
                        value_two: a["valueTwo"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        for n in strs(&rule["names"]) {
            out.entry(n).or_default().push(conds.clone());
        }
    }
    out
}

/// What an OCI seccomp section allows (any action that lets the call run).
fn oci_allowances(f: &LinuxSeccomp) -> Allowances {
    assert!(
        matches!(
            f.default_action(),
            LinuxSeccompAction::ScmpActErrno
                | LinuxSeccompAction::ScmpActKill
                | LinuxSeccompAction::ScmpActKillThread
                | LinuxSeccompAction::ScmpActKillProcess
                | LinuxSeccompAction::ScmpActTrap
        ),
        "default action {:?} lets calls run",
        f.default_action()
    );
    let mut out = Allowances::new();
    for r in f.syscalls().iter().flatten() {
        let runs = !matches!(
            r.action(),
            LinuxSeccompAction::ScmpActErrno
                | LinuxSeccompAction::ScmpActKill
                | LinuxSeccompAction::ScmpActKillThread
                | LinuxSeccompAction::ScmpActKillProcess
                | LinuxSeccompAction::ScmpActTrap
        );
        if !runs {
            continue;
        }
        let conds: Vec<Cond> = r
            .args()
            .iter()
            .flatten()
            .map(|a| Cond {
                index: a.index() as u64,
                op: a.op(),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            })
            .collect();
        for n in r.names() {
            out.entry(n.clone()).or_default().push(conds.clone());
        }
    }
    out
}

/// Whether argument value `x` satisfies `c`.
fn holds(c: &Cond, x: u64) -> bool {
    match c.op {
        Op::ScmpCmpNe => x != c.value,
        Op::ScmpCmpLt => x < c.value,
        Op::ScmpCmpLe => x <= c.value,
        Op::ScmpCmpEq => x == c.value,
        Op::ScmpCmpGe => x >= c.value,
        Op::ScmpCmpGt => x > c.value,
        Op::ScmpCmpMaskedEq => x & c.value == c.value_two,
    }
}

/// The closed interval of values a range condition admits.
fn interval(c: &Cond) -> Option<(u64, u64)> {
    match c.op {
        Op::ScmpCmpEq => Some((c.value, c.value)),
        Op::ScmpCmpLt => c.value.checked_sub(1).map(|hi| (0, hi)),
        Op::ScmpCmpLe => Some((0, c.value)),
        Op::ScmpCmpGe => Some((c.value, u64::MAX)),
        Op::ScmpCmpGt => c.value.checked_add(1).map(|lo| (lo, u64::MAX)),
        _ => None,
    }
}

/// Whether every value admitted by `m` is admitted by `d` (a sound, incomplete check).
fn implies(m: &Cond, d: &Cond) -> bool {
    if m.index != d.index {
        return false;
    }
    if m == d {
        return true;
    }
    if m.op == Op::ScmpCmpEq {
        return holds(d, m.value);
    }
    match (interval(m), interval(d)) {
        (Some((mlo, mhi)), Some((dlo, dhi))) => dlo <= mlo && mhi <= dhi,
        _ => false,
    }
}

/// Whether the conjunction `mine` admits only calls the conjunction `theirs` admits.
fn narrower(mine: &[Cond], theirs: &[Cond]) -> bool {
    theirs.iter().all(|d| mine.iter().any(|m| implies(m, d)))
}

/// Every allowance in `mine` that `theirs` does not cover, one line each.
fn violations(mine: &Allowances, theirs: &Allowances) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ways) in mine {
        for conds in ways {
            let covered = theirs
                .get(name)
                .is_some_and(|tw| tw.iter().any(|t| narrower(conds, t)));
            if !covered {
                out.push(format!("{name} {conds:?}"));
            }
        }
    }
    out
}

/// Docker's reference profile: `$STOCKADE_DOCKER_SECCOMP`, or the copy vendored in
/// `tests/fixtures/moby/`.
fn docker() -> Allowances {
    let path = std::env::var_os("STOCKADE_DOCKER_SECCOMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moby/seccomp-default.json")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Docker's reference profile {}: {e} (set STOCKADE_DOCKER_SECCOMP)",
            path.display()
        )
    });
    docker_allowances(&serde_json::from_str(&text).unwrap())
}

fn builtin_oci(name: &str) -> LinuxSeccomp {
    Profile::parse(builtin_profile(name).unwrap())
        .unwrap()
        .to_oci()
        .unwrap()
}

#[test]
fn docker_reference_reads_as_expected() {
    // Guards the reading of Docker's profile itself: cap-gated and other-arch rules are out,
    // the amd64 and minKernel rules are in, conditions are kept.
    let d = docker();
    assert_eq!(d["read"], vec![vec![]]);
    assert_eq!(d["arch_prctl"], vec![vec![]]);
    assert_eq!(d["ptrace"], vec![vec![]]);
    for absent in [
        "mount",
        "bpf",
        "unshare",
        "setns",
        "chroot",
        "clone3",
        "s390_runtime_instr",
    ] {
        assert!(!d.contains_key(absent), "{absent}");
    }
    assert_eq!(d["clone"].len(), 1);
    assert_eq!(d["clone"][0][0].op, Op::ScmpCmpMaskedEq);
    assert_eq!(d["socket"].len(), 3);
    assert_eq!(d["personality"].len(), 5);
}

#[test]
fn builtin_profiles_are_within_dockers_default_for_no_capabilities() {
    let d = docker();
    for name in ["default", "strict"] {
        let oci = builtin_oci(name);
        for net in [NetworkMode::None, NetworkMode::Loopback] {
            let adapted = seccomp_for_network(&oci, net).unwrap();
            let v = violations(&oci_allowances(&adapted), &d);
            assert!(
                v.is_empty(),
                "{name} ({net:?}) allows beyond Docker: {v:#?}"
            );
        }
    }
}

#[test]
fn subset_check_catches_widening() {
    let d = docker();
    let base: Value = serde_json::from_str(builtin_profile("default").unwrap()).unwrap();
    let allow_idx = base["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
        .unwrap();
    let widen = |edit: &dyn Fn(&mut Value)| -> Vec<String> {
        let mut doc = base.clone();
        edit(&mut doc);
        let oci = Profile::parse(&doc.to_string()).unwrap().to_oci().unwrap();
        violations(&oci_allowances(&oci), &d)
    };
    for extra in [
        "mount",
        "bpf",
        "unshare",
        "keyctl",
        "kexec_load",
        "io_uring_setup",
    ] {
        let v = widen(&|doc| {
            doc["syscalls"][allow_idx]["names"]
                .as_array_mut()
                .unwrap()
                .push(extra.into());
        });
        assert_eq!(v, [format!("{extra} []")]);
    }
    // Unconditional socket is wider than Docker (which refuses AF_ALG and AF_VSOCK).
    let v = widen(&|doc| {
        doc["syscalls"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW"}));
    });
    assert_eq!(v, ["socket []"]);
    // socket(AF_VSOCK) is refused by Docker.
    let v = widen(&|doc| {
        doc["syscalls"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}));
    });
    assert_eq!(v.len(), 1, "{v:?}");
    // clone with a weaker mask lets CLONE_NEWUSER through.
    let v = widen(&|doc| {
        doc["syscalls"].as_array_mut().unwrap().push(serde_json::json!(
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0x0002_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
    });
    assert_eq!(v.len(), 1, "{v:?}");
    // A cap-gated rule stays out of the spec, so it widens nothing.
    let v = widen(&|doc| {
        doc["syscalls"].as_array_mut().unwrap().push(serde_json::json!(
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}));
    });
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn strict_allows_nothing_default_does_not() {
    let default = oci_allowances(&builtin_oci("default"));
    let strict = oci_allowances(&builtin_oci("strict"));
    let v = violations(&strict, &default);
    assert!(v.is_empty(), "strict allows beyond default: {v:#?}");
    assert!(strict.len() < default.len(), "strict is not narrower");
}

/// Syscalls that must not be allowed in any form by either built-in profile.
const NEVER_ALLOWED: &[&str] = &[
    // Other processes' memory and debugging.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    // Namespaces, mounts, root changes.
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    // Kernel extension points with a record of escalations.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    // Native AIO: its contexts come from fs/aio-max-nr, one pool for the whole host.
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    // Whole-machine administration.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "acct",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "vhangup",
    "lookup_dcookie",
    "sync",
    // File handles and filesystem-wide monitoring.
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "fanotify_mark",
    // Legacy x86 descriptors, secret memory.
    "modify_ldt",
    "memfd_secret",
    // clone3's flags cannot be checked: it must fail with ENOSYS.
    "clone3",
];

#[test]
fn dangerous_syscalls_are_not_allowed() {
    for name in ["default", "strict"] {
        let a = oci_allowances(&builtin_oci(name));
        let bad: Vec<&str> = NEVER_ALLOWED
            .iter()
            .copied()
            .filter(|n| a.contains_key(*n))
            .collect();
        assert!(bad.is_empty(), "{name} allows {bad:?}");
    }
}

#[test]
fn clone_is_allowed_only_without_namespace_flags_and_clone3_gets_enosys() {
    const NS_FLAGS: u64 = 0x0002_0000 // CLONE_NEWNS
        | 0x0200_0000 // CLONE_NEWCGROUP
        | 0x0400_0000 // CLONE_NEWUTS
        | 0x0800_0000 // CLONE_NEWIPC
        | 0x1000_0000 // CLONE_NEWUSER
        | 0x2000_0000 // CLONE_NEWPID
        | 0x4000_0000; // CLONE_NEWNET
    for name in ["default", "strict"] {
        let oci = builtin_oci(name);
        let a = oci_allowances(&oci);
        assert_eq!(
            a["clone"],
            vec![vec![Cond {
                index: 0,
                op: Op::ScmpCmpMaskedEq,
                value: NS_FLAGS,
                value_two: 0
            }]],
            "{name}"
        );
        let clone3: Vec<_> = oci
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == "clone3"))
            .collect();
        assert_eq!(clone3.len(), 1, "{name}");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38), "{name}: ENOSYS");
    }
}

#[test]
fn every_rule_says_why_and_default_is_errno_eperm() {
    for name in ["default", "strict"] {
        let doc: Value = serde_json::from_str(builtin_profile(name).unwrap()).unwrap();
        assert_eq!(doc["defaultAction"], "SCMP_ACT_ERRNO", "{name}");
        assert_eq!(doc["defaultErrnoRet"], 1, "{name}");
        for (i, r) in doc["syscalls"].as_array().unwrap().iter().enumerate() {
            let c = r["comment"].as_str().unwrap_or("");
            assert!(c.len() >= 20, "{name}: syscalls[{i}] has no real comment");
        }
        let oci = builtin_oci(name);
        assert_eq!(oci.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(oci.default_errno_ret(), Some(1));
    }
}

#[test]
fn socket_is_limited_to_unix_inet_inet6_netlink_and_to_unix_without_network() {
    for name in ["default", "strict"] {
        let oci = builtin_oci(name);
        let loopback = oci_allowances(&seccomp_for_network(&oci, NetworkMode::Loopback).unwrap());
        let families: Vec<u64> = loopback["socket"]
            .iter()
            .map(|c| {
                assert_eq!(c.len(), 1);
                assert_eq!((c[0].index, c[0].op), (0, Op::ScmpCmpEq));
                c[0].value
            })
            .collect();
        assert_eq!(families, [1, 2, 10, 16], "{name}");
        let none = oci_allowances(&seccomp_for_network(&oci, NetworkMode::None).unwrap());
        assert_eq!(none["socket"].len(), 1, "{name}");
        assert_eq!(none["socket"][0][0].value, 1, "{name}: AF_UNIX only");
    }
}

#[test]
fn bpf_exports_for_both_arches_and_network_modes() {
    for name in ["default", "strict"] {
        let oci = builtin_oci(name);
        for net in [NetworkMode::None, NetworkMode::Loopback] {
            let f = seccomp_for_network(&oci, net).unwrap();
            for arch in TARGET_ARCHES {
                let mut file = tempfile::tempfile().unwrap();
                export_bpf(&f, arch, &file).unwrap();
                file.rewind().unwrap();
                let mut bpf = Vec::new();
                file.read_to_end(&mut bpf).unwrap();
                // struct sock_filter is 8 bytes; an allowlist of ~250 calls needs hundreds.
                assert_eq!(bpf.len() % 8, 0, "{name} {arch}");
                assert!(
                    bpf.len() / 8 > 100,
                    "{name} {arch} {net:?}: {} insns",
                    bpf.len() / 8
                );
            }
        }
    }
}
