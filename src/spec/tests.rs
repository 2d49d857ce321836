//! Each policy field → the spec field it controls; defaults → the README's security table.

use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction, PosixRlimitType, Spec};
use serde_json::{json, Value};

use super::*;
use crate::host::{CgroupMode, HostFacts};
use crate::policy::{BindError, HostDir, Policy, PolicyEnv, PolicyOverrides, ValidatedPolicy};

struct Dirs;
impl PolicyEnv for Dirs {
    fn read_file(&self, p: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            p.display().to_string(),
        ))
    }
    fn bind_dir(&self, p: &Path) -> Result<HostDir, BindError> {
        Ok(HostDir {
            path: Path::new("/srv").join(p.strip_prefix("/").unwrap()),
            dev: 8,
            ino: 2,
        })
    }
}

fn policy(toml: &str, o: PolicyOverrides) -> ValidatedPolicy {
    Policy::from_toml(toml, "t.toml")
        .unwrap()
        .validate(Some("t.toml"), &o, &Dirs)
        .unwrap()
}

fn build_json(p: &ValidatedPolicy, host: &HostFacts, terminal: bool) -> (Value, Vec<NotEnforced>) {
    let args = vec!["/bin/true".to_string()];
    let b = build(
        p,
        host,
        &SpecRequest {
            id: "t1",
            args: &args,
            terminal,
        },
    )
    .unwrap();
    (serde_json::to_value(&b.spec).unwrap(), b.not_enforced)
}

fn default_json() -> Value {
    build_json(
        &policy("", PolicyOverrides::default()),
        &HostFacts::capable_v2(),
        false,
    )
    .0
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn default_spec_has_every_default_of_the_security_table() {
    let s = default_json();
    // Namespaces: pid, mount, ipc, uts, network, cgroup; none joined by path; no user ns.
    let ns: Vec<&str> = s["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert!(n.get("path").is_none(), "namespace joined by path: {n}");
            n["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ns, ["pid", "mount", "ipc", "uts", "network", "cgroup"]);
    // User 65534:65534, no supplementary groups, noNewPrivileges.
    assert_eq!(s["process"]["user"]["uid"], 65534);
    assert_eq!(s["process"]["user"]["gid"], 65534);
    assert_eq!(
        s["process"]["user"]
            .get("additionalGids")
            .cloned()
            .unwrap_or(json!([])),
        json!([])
    );
    assert_eq!(s["process"]["noNewPrivileges"], true);
    // No capability in any of the five sets.
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        assert_eq!(
            s["process"]["capabilities"][set],
            json!([]),
            "capability set {set}"
        );
    }
    // Seccomp on, default action errno, AppArmor named on an AppArmor host.
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(s["process"]["apparmorProfile"], "stockade-default");
    // Read-only root; /tmp a sized tmpfs; no writable bind mount.
    assert_eq!(s["root"]["readonly"], true);
    assert_eq!(s["root"]["path"], "rootfs");
    let mounts = s["mounts"].as_array().unwrap();
    let tmp = mounts.iter().find(|m| m["destination"] == "/tmp").unwrap();
    assert_eq!(tmp["type"], "tmpfs");
    assert!(sorted(&tmp["options"]).contains(&"size=65536k".to_string()));
    assert!(!mounts.iter().any(|m| m["type"] == "bind"));
    // Limits: 512 MiB memory with no swap, 1 CPU, 256 pids, nofile 1024, core 0.
    let r = &s["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 512 << 20);
    assert_eq!(r["memory"]["swap"], 512 << 20);
    assert_eq!(r["cpu"]["quota"], 100_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["pids"]["limit"], 256);
    let rl = s["process"]["rlimits"].as_array().unwrap();
    let get = |t: &str| rl.iter().find(|r| r["type"] == t).cloned();
    assert_eq!(get("RLIMIT_NOFILE").unwrap()["hard"], 1024);
    assert_eq!(get("RLIMIT_NOFILE").unwrap()["soft"], 1024);
    assert_eq!(get("RLIMIT_CORE").unwrap()["hard"], 0);
    assert_eq!(get("RLIMIT_FSIZE").unwrap()["hard"], 1u64 << 30);
    assert!(get("RLIMIT_NPROC").is_none());
    // Devices: deny all first, then only null, zero, full, random, urandom, tty.
    let dev = r["devices"].as_array().unwrap();
    assert_eq!(dev[0], json!({"allow": false, "access": "rwm"}));
    let allowed: Vec<(i64, i64)> = dev[1..]
        .iter()
        .map(|d| {
            assert_eq!(d["allow"], true);
            assert_eq!(d["type"], "c");
            (d["major"].as_i64().unwrap(), d["minor"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(allowed, [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)]);
    // Host-visible cgroup under /stockade/<id>.
    assert_eq!(s["linux"]["cgroupsPath"], "/stockade/t1");
    assert_eq!(s["hostname"], "sandbox");
    assert_eq!(s["process"]["oomScoreAdj"], 500);
    assert_eq!(s["process"]["cwd"], "/tmp");
    assert_eq!(s["process"]["terminal"], false);
}

#[test]
fn masked_and_readonly_paths_cover_containerd_and_docker_defaults() {
    let s = default_json();
    let masked = sorted(&s["linux"]["maskedPaths"]);
    // containerd's defaults (oci-spec carries the same list).
    for p in oci_spec::runtime::get_default_maskedpaths() {
        assert!(masked.contains(&p), "missing containerd masked path {p}");
    }
    // Docker's additions.
    for p in [
        "/proc/interrupts",
        "/sys/devices/virtual/powercap",
        "/sys/devices/system/cpu/cpu0/thermal_throttle",
        "/sys/devices/system/cpu/cpu1/thermal_throttle",
    ] {
        assert!(
            masked.contains(&p.to_string()),
            "missing Docker masked path {p}"
        );
    }
    let ro = sorted(&s["linux"]["readonlyPaths"]);
    for p in oci_spec::runtime::get_default_readonly_paths() {
        assert!(ro.contains(&p), "missing read-only path {p}");
    }
}

#[test]
fn every_mount_is_nosuid_and_kernel_interfaces_are_noexec() {
    let p = policy(
        "",
        PolicyOverrides {
            workspace: Some("/w".into()),
            input: Some("/i".into()),
            ..Default::default()
        },
    );
    let (s, _) = build_json(&p, &HostFacts::capable_v2(), false);
    for m in s["mounts"].as_array().unwrap() {
        let opts = sorted(&m["options"]);
        let dest = m["destination"].as_str().unwrap();
        assert!(opts.contains(&"nosuid".to_string()), "{dest} lacks nosuid");
        if dest != "/dev" && dest != "/dev/pts" {
            assert!(opts.contains(&"nodev".to_string()), "{dest} lacks nodev");
        }
        if [
            "/proc",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/shm",
            "/dev/mqueue",
            "/dev/pts",
            "/input",
        ]
        .contains(&dest)
        {
            assert!(opts.contains(&"noexec".to_string()), "{dest} lacks noexec");
        }
        if ["/sys", "/sys/fs/cgroup", "/input"].contains(&dest) {
            assert!(opts.contains(&"ro".to_string()), "{dest} is not read-only");
        }
    }
    let ws = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/workspace")
        .unwrap();
    assert_eq!(ws["source"], "/srv/w");
    assert!(sorted(&ws["options"]).contains(&"rw".to_string()));
    assert!(sorted(&ws["options"]).contains(&"rprivate".to_string()));
    assert!(!sorted(&ws["options"]).contains(&"rbind".to_string()));
    let input = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/input")
        .unwrap();
    assert_eq!(input["source"], "/srv/i");
    assert_eq!(s["process"]["cwd"], "/workspace");
}

#[test]
fn network_none_allows_only_unix_sockets_and_loopback_keeps_the_profile() {
    let none = policy("", PolicyOverrides::default());
    let (s, _) = build_json(&none, &HostFacts::capable_v2(), false);
    let spec: Spec = serde_json::from_value(s).unwrap();
    let rules = spec
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .as_ref()
        .unwrap()
        .syscalls()
        .clone()
        .unwrap_or_default();
    for r in rules
        .iter()
        .filter(|r| r.names().iter().any(|n| n == "socket"))
    {
        assert_eq!(r.action(), LinuxSeccompAction::ScmpActAllow);
        let args = r
            .args()
            .as_ref()
            .expect("socket allowed without a condition");
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].value(), 1, "only AF_UNIX");
    }
    let lo = policy("[network]\nmode = \"loopback\"", PolicyOverrides::default());
    let crate::policy::SeccompChoice::Profile { filter, .. } = &lo.seccomp else {
        panic!()
    };
    let (s, _) = build_json(&lo, &HostFacts::capable_v2(), false);
    assert_eq!(s["linux"]["seccomp"], serde_json::to_value(filter).unwrap());
    // Both keep their own network namespace: the host's is never shared.
    for s in [build_json(&none, &HostFacts::capable_v2(), false).0, s] {
        assert!(s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network" && n.get("path").is_none()));
    }
}

#[test]
fn seccomp_network_narrowing_rewrites_socket_rules() {
    use oci_spec::runtime::{LinuxSeccompBuilder, LinuxSyscallBuilder};
    let filter = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["read".to_string(), "socket".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap(),
            LinuxSyscallBuilder::default()
                .names(vec!["socket".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let out = seccomp_for_network(&filter, crate::policy::NetworkMode::None).unwrap();
    let rules = out.syscalls().clone().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0].names(), &["read".to_string()]);
    assert_eq!(rules[1].names(), &["socket".to_string()]);
    assert_eq!(rules[1].args().as_ref().unwrap()[0].value(), 1);
}

#[test]
fn hosts_without_apparmor_or_swap_accounting_say_what_is_not_enforced() {
    let p = policy("", PolicyOverrides::default());
    let (s, ne) = build_json(&p, &HostFacts::hybrid_no_apparmor(), false);
    assert!(s["process"].get("apparmorProfile").is_none());
    assert!(ne.iter().any(|n| n.protection == "apparmor"));
    // On an AppArmor host, the built-in profile's variant follows the network mode.
    let lo = policy("[network]\nmode = \"loopback\"", PolicyOverrides::default());
    let (s, _) = build_json(&lo, &HostFacts::capable_v2(), false);
    assert_eq!(s["process"]["apparmorProfile"], "stockade-default-loopback");
    let mut v1 = HostFacts::hybrid_no_apparmor();
    v1.cgroup = CgroupMode::V1;
    v1.swap_accounting = false;
    let (s, ne) = build_json(&p, &v1, false);
    assert!(s["linux"]["resources"]["memory"].get("swap").is_none());
    assert!(ne.iter().any(|n| n.protection == "swap"));
    let (_, ne) = build_json(&p, &HostFacts::capable_v2(), false);
    assert!(ne.is_empty(), "{ne:?}");
}

#[test]
fn terminal_adds_only_the_pty_devices() {
    let p = policy("", PolicyOverrides::default());
    let (s, _) = build_json(&p, &HostFacts::capable_v2(), true);
    assert_eq!(s["process"]["terminal"], true);
    let dev = s["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(dev.len(), 1 + 6 + 2);
    assert!(dev
        .iter()
        .any(|d| d["major"] == 136 && d.get("minor").is_none()));
    assert!(dev.iter().any(|d| d["major"] == 5 && d["minor"] == 2));
}

#[test]
fn bad_requests_are_rejected() {
    let p = policy("", PolicyOverrides::default());
    let host = HostFacts::capable_v2();
    let cmd = vec!["x".to_string()];
    let cases: Vec<(SpecRequest, &str)> = vec![
        (
            SpecRequest {
                id: "ok",
                args: &[],
                terminal: false,
            },
            "no command",
        ),
        (
            SpecRequest {
                id: "",
                args: &cmd,
                terminal: false,
            },
            "container id",
        ),
        (
            SpecRequest {
                id: "a/b",
                args: &cmd,
                terminal: false,
            },
            "container id",
        ),
        (
            SpecRequest {
                id: "../x",
                args: &cmd,
                terminal: false,
            },
            "container id",
        ),
    ];
    for (req, want) in cases {
        let e = build(&p, &host, &req).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let nul = vec!["a\0b".to_string()];
    assert!(build(
        &p,
        &host,
        &SpecRequest {
            id: "x",
            args: &nul,
            terminal: false
        }
    )
    .is_err());
}

#[test]
fn digest_and_pretty_json_are_stable() {
    let p = policy(
        "[security]\ncap_add = [\"CHOWN\", \"KILL\", \"SETUID\", \"SETGID\"]",
        PolicyOverrides::default(),
    );
    let args = vec!["true".to_string()];
    let req = SpecRequest {
        id: "x",
        args: &args,
        terminal: false,
    };
    let a = build(&p, &HostFacts::capable_v2(), &req).unwrap().spec;
    let b = build(&p, &HostFacts::capable_v2(), &req).unwrap().spec;
    assert_eq!(digest(&a), digest(&b));
    assert_eq!(to_pretty_json(&a), to_pretty_json(&b));
    let parsed: Spec = serde_json::from_str(&to_pretty_json(&a)).unwrap();
    assert_eq!(parsed, a);
    let _ = LinuxNamespaceType::Pid;
    let _ = PosixRlimitType::RlimitCore;
}

#[test]
fn a_managed_workspace_is_a_staged_bind_and_never_with_a_host_workspace() {
    let p = policy(
        "",
        PolicyOverrides {
            workspace_size: Some("64M".into()),
            ..Default::default()
        },
    );
    let (s, _) = build_json(&p, &HostFacts::capable_v2(), false);
    let ws = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/workspace")
        .expect("a /workspace mount");
    assert_eq!(ws["source"], MANAGED_WORKSPACE_SOURCE);
    let opts = sorted(&ws["options"]);
    for o in ["bind", "rprivate", "nosuid", "nodev", "rw"] {
        assert!(opts.contains(&o.to_string()), "{o} missing: {opts:?}");
    }
    assert_eq!(s["process"]["cwd"], "/workspace");
    // A run points it at the staging path, where the volume is mounted.
    let mut spec: Spec = serde_json::from_value(s).unwrap();
    stage_binds(
        &mut spec,
        Path::new("/run/x/binds"),
        &[("/workspace", "workspace")],
    );
    let staged = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/workspace"))
        .unwrap()
        .source()
        .clone();
    assert_eq!(staged.as_deref(), Some(Path::new("/run/x/binds/workspace")));

    let e = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                workspace: Some("/w".into()),
                workspace_size: Some("64M".into()),
                ..Default::default()
            },
            &Dirs,
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--workspace-size: a managed workspace cannot be used with --workspace (both would be /workspace)"
    );
}

mod fields;
mod mounts;
