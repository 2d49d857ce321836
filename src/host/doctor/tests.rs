//! The doctor's verdicts with faked processes and sockets.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::*;

/// Canned outputs per program; a program without an entry is "not found". The socket
/// connects only when `socket_up`.
struct Fake {
    outputs: HashMap<&'static str, &'static str>,
    socket_up: bool,
}

impl Fake {
    fn debian12() -> Fake {
        Fake {
            outputs: HashMap::from([
                (
                    "runc",
                    "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n",
                ),
                (
                    "containerd",
                    "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                ),
                ("apparmor_parser", "AppArmor parser version 3.0.8\n"),
            ]),
            socket_up: true,
        }
    }

    fn without(mut self, program: &str) -> Fake {
        self.outputs.remove(program);
        self
    }

    fn with(mut self, program: &'static str, out: &'static str) -> Fake {
        self.outputs.insert(program, out);
        self
    }
}

impl DoctorEffects for Fake {
    fn run(&self, program: &str, _args: &[&str]) -> io::Result<String> {
        self.outputs
            .get(program)
            .map(std::string::ToString::to_string)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }

    fn connect(&self, path: &Path) -> io::Result<()> {
        if self.socket_up {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: No such file or directory", path.display()),
            ))
        }
    }
}

fn sock() -> &'static Path {
    Path::new(DEFAULT_CONTAINERD_ADDRESS)
}

fn statuses<'a>(r: &'a DoctorReport, name: &str) -> Vec<&'a Check> {
    r.checks.iter().filter(|c| c.name == name).collect()
}

fn one<'a>(r: &'a DoctorReport, name: &str) -> &'a Check {
    let found = statuses(r, name);
    assert_eq!(
        found.len(),
        1,
        "exactly one {name} check in {:#?}",
        r.checks
    );
    found[0]
}

#[test]
fn this_kind_of_host_is_usable_with_warnings() {
    let r = report(HostFacts::hybrid_no_apparmor(), &Fake::debian12(), sock());
    assert!(r.usable, "{}", r.to_text());
    let cg = one(&r, "cgroup");
    assert_eq!(cg.status, Status::Ok);
    assert!(cg.detail.starts_with("hybrid;"), "{}", cg.detail);
    assert!(cg
        .detail
        .contains("blkio, cpu, cpuacct, cpuset, devices, freezer, memory, pids"));
    assert_eq!(one(&r, "apparmor").status, Status::Warn);
    assert!(
        statuses(&r, "apparmor-parser").is_empty(),
        "parser only matters with kernel AppArmor"
    );
    assert!(r
        .not_enforced
        .iter()
        .any(|n| n
            .starts_with("AppArmor: not available — sandboxes run without an AppArmor profile")));
    let runc = one(&r, "runc");
    assert_eq!(runc.status, Status::Ok);
    assert!(
        runc.detail.contains("1.1.5+ds1-1+deb12u1"),
        "{}",
        runc.detail
    );
    // 1.1.5 upstream predates the 2024 and 2025 fixes: warned, not declared vulnerable.
    let adv = statuses(&r, "runc-advisory");
    assert_eq!(adv.len(), 2, "{adv:#?}");
    assert!(adv.iter().all(|c| c.status == Status::Warn));
    assert!(adv[0]
        .detail
        .starts_with("upstream version 1.1.5 lacks the fix for CVE-2024-21626"));
    assert!(adv[1]
        .detail
        .contains("CVE-2025-31133, CVE-2025-52565, CVE-2025-52881"));
    assert!(adv.iter().all(|c| c
        .detail
        .ends_with("check your distribution's security advisories")));
    assert_eq!(one(&r, "containerd").detail, "1.6.20~ds1");
    assert!(r.containerd_reachable);
    let text = r.to_text();
    assert!(text.contains("usable: yes (3 warnings)"), "{text}");
}

#[test]
fn patched_runc_has_no_advisories() {
    let fake = Fake::debian12().with("runc", "runc version 1.3.3\ncommit: v1.3.3-0-gd842d771\n");
    let r = report(HostFacts::capable_v2(), &fake, sock());
    assert!(statuses(&r, "runc-advisory").is_empty());
    assert_eq!(one(&r, "apparmor").status, Status::Ok);
    assert_eq!(one(&r, "apparmor-parser").status, Status::Ok);
    assert!(r.not_enforced.is_empty(), "{:?}", r.not_enforced);
    assert!(
        r.checks.iter().all(|c| c.status == Status::Ok),
        "{}",
        r.to_text()
    );
}

#[test]
fn required_pieces_make_the_host_unusable() {
    type Mutate = fn(&mut HostFacts, Fake) -> Fake;
    let cases: &[(&str, Mutate)] = &[
        ("runc", |_, f| f.without("runc")),
        ("containerd", |_, f| f.without("containerd")),
        ("seccomp", |h, f| {
            h.seccomp = false;
            h.seccomp_actions.clear();
            f
        }),
        ("overlayfs", |h, f| {
            h.overlayfs = false;
            f
        }),
        ("cgroup", |h, f| {
            h.cgroup_controllers.clear();
            f
        }),
    ];
    for (name, mutate) in cases {
        let mut facts = HostFacts::hybrid_no_apparmor();
        let fake = mutate(&mut facts, Fake::debian12());
        let r = report(facts, &fake, sock());
        assert!(!r.usable, "{name} missing must make the host unusable");
        let c = one(&r, name);
        assert_eq!((c.status, c.required), (Status::Missing, true), "{name}");
        assert!(
            r.to_text()
                .contains(&format!("usable: no (missing: {name})")),
            "{}",
            r.to_text()
        );
    }
}

#[test]
fn optional_pieces_only_warn() {
    let mut facts = HostFacts::capable_v2();
    facts.user_namespaces = false;
    facts.swap_accounting = false;
    facts.oom_floor = false;
    facts.cgroup_controllers.retain(|c| c != "pids");
    let fake = Fake {
        socket_up: false,
        ..Fake::debian12().without("apparmor_parser")
    };
    let r = report(facts, &fake, Path::new("/tmp/nowhere.sock"));
    assert!(r.usable);
    for name in [
        "user-namespaces",
        "swap-accounting",
        "cgroup",
        "containerd-socket",
        "apparmor-parser",
        "oom-floor",
    ] {
        assert_eq!(one(&r, name).status, Status::Warn, "{name}");
    }
    assert!(one(&r, "containerd-socket")
        .detail
        .starts_with("/tmp/nowhere.sock: "));
    assert!(!r.containerd_reachable);
    assert!(r
        .not_enforced
        .iter()
        .any(|n| n.starts_with("process limit")));
    assert!(r.not_enforced.iter().any(|n| n.starts_with("swap limit")));
    assert!(r
        .not_enforced
        .iter()
        .any(|n| n.starts_with("oom_score_adj floor")));
    assert!(r
        .not_enforced
        .iter()
        .any(|n| n.contains("apparmor_parser missing")));
}

#[test]
fn odd_versions_warn_instead_of_guessing() {
    let fake = Fake::debian12()
        .with("runc", "runc version unknown\nspec: 1.0.2\n")
        .with(
            "containerd",
            "containerd github.com/containerd/containerd v1.5.18 abc\n",
        );
    let r = report(HostFacts::capable_v2(), &fake, sock());
    assert!(r.usable);
    assert_eq!(one(&r, "runc").status, Status::Warn);
    assert!(one(&r, "runc")
        .detail
        .contains("breakout fixes cannot be checked"));
    assert!(statuses(&r, "runc-advisory").is_empty());
    assert_eq!(one(&r, "containerd").status, Status::Warn);
    assert!(one(&r, "containerd").detail.contains("older than 1.6"));
}

#[test]
fn socket_address_precedence() {
    let cases = [
        (Some("/a.sock"), Some("/b.sock"), "/a.sock"),
        (None, Some("unix:///b.sock"), "/b.sock"),
        (None, Some(""), DEFAULT_CONTAINERD_ADDRESS),
        (Some(""), None, DEFAULT_CONTAINERD_ADDRESS),
        (None, None, DEFAULT_CONTAINERD_ADDRESS),
    ];
    for (flag, env, want) in cases {
        assert_eq!(
            containerd_socket(flag, env),
            Path::new(want),
            "{flag:?} {env:?}"
        );
    }
}

#[test]
fn real_socket_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.sock");
    assert!(SystemEffects.connect(&path).is_err(), "nothing listens yet");
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    SystemEffects
        .connect(&path)
        .expect("connect to a listening socket");
}

#[test]
fn json_shape_for_tools() {
    let r = report(HostFacts::hybrid_no_apparmor(), &Fake::debian12(), sock());
    let v = serde_json::to_value(&r).expect("json");
    assert_eq!(v["usable"], true);
    assert_eq!(v["facts"]["cgroup"], "hybrid");
    assert_eq!(v["facts"]["apparmor"], false);
    assert_eq!(v["runc"]["version"]["major"], 1);
    assert_eq!(v["containerd_socket"], DEFAULT_CONTAINERD_ADDRESS);
    assert_eq!(v["checks"][0]["status"], "ok");
}

#[test]
fn the_disk_check_names_the_mechanism_and_what_is_missing() {
    use crate::disk::{DiskFacts, TOOLS};
    let facts = |fs: &str, opts: &str, loop_control: bool| DiskFacts {
        fs_type: Some(fs.into()),
        fs_options: opts.split(',').map(str::to_string).collect(),
        loop_control,
        tools: TOOLS.iter().map(|t| (t.to_string(), true)).collect(),
        ext4: true,
    };
    let root = Path::new("/var/lib/stockade/disk");
    let cases = [
        (
            facts("ext4", "rw,discard", true),
            Status::Ok,
            "loop-ext4: ",
            "no project quotas",
        ),
        (
            facts("xfs", "rw,prjquota", true),
            Status::Ok,
            "loop-ext4: ",
            "has project quotas",
        ),
        (
            facts("ext4", "rw", false),
            Status::Warn,
            "none: no /dev/loop-control",
            "",
        ),
    ];
    for (f, status, start, has) in cases {
        let c = disk_check(&f, root);
        assert_eq!(c.name, "disk");
        assert_eq!(c.status, status, "{c:?}");
        assert!(!c.required);
        assert!(c.detail.starts_with(start), "{}", c.detail);
        assert!(c.detail.contains(has), "{}", c.detail);
    }
}
