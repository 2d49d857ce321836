//! What a policy may not say: each refusal names the field or flag at fault, and host
//! paths that would hand the sandbox the host are never mounted.

use super::*;
/// Bad input: each case must fail with one line that names where the value came from.
#[test]
fn bad_input_names_the_field_or_flag() {
    let file_cases: &[(&str, &str)] = &[
        ("bogus = 1", "p.toml"),
        ("[limits]\nmemroy = \"1G\"", "memroy"),
        ("[limits]\nmemory = \"1X\"", "p.toml: limits.memory"),
        ("[limits]\nmemory = \"0\"", "p.toml: limits.memory"),
        ("[limits]\nmemory = \"1M\"", "p.toml: limits.memory"),
        ("[limits]\ncpus = 0", "p.toml: limits.cpus"),
        ("[limits]\ncpus = -1.0", "p.toml: limits.cpus"),
        ("[limits]\ncpus = 2000.0", "p.toml: limits.cpus"),
        ("[limits]\npids = 0", "p.toml: limits.pids"),
        ("[limits]\npids = -5", "p.toml: limits.pids"),
        ("[limits]\nnofile = 0", "p.toml: limits.nofile"),
        ("[limits]\ntimeout = \"0s\"", "p.toml: limits.timeout"),
        ("[limits]\ntimeout = \"soon\"", "p.toml: limits.timeout"),
        ("[limits]\nmax_output = \"0\"", "p.toml: limits.max_output"),
        ("[limits]\nio_weight = 5", "p.toml: limits.io_weight"),
        (
            "[limits]\noom_score_adj = -1000",
            "p.toml: limits.oom_score_adj",
        ),
        ("[network]\nmode = \"host\"", "p.toml: network.mode"),
        ("[process]\nuser = \"root\"", "p.toml: process.user"),
        ("[process]\nuser = \"1:2:3\"", "p.toml: process.user"),
        ("[process]\nenv = [\"NOEQUALS\"]", "p.toml: process.env"),
        ("[process]\nenv = [\"=v\"]", "p.toml: process.env"),
        ("[process]\ncwd = \"relative\"", "p.toml: process.cwd"),
        ("[process]\ncwd = \"/a/../..\"", "p.toml: process.cwd"),
        (
            "[process]\nhostname = \"bad host\"",
            "p.toml: process.hostname",
        ),
        (
            "[filesystem]\nworkspace = \"/missing\"",
            "p.toml: filesystem.workspace",
        ),
        (
            "[security]\ncap_add = [\"CAP_BOGUS\"]",
            "p.toml: security.cap_add",
        ),
        (
            "[security]\ncap_add = [\"SYS_ADMIN\"]",
            "p.toml: security.cap_add",
        ),
        (
            "[security]\ncap_add = [\"NET_RAW\"]",
            "p.toml: security.cap_add",
        ),
        (
            "[security]\nseccomp = \"/no/such.json\"",
            "p.toml: security.seccomp",
        ),
        (
            "[security]\napparmor = \"a b\"",
            "p.toml: security.apparmor",
        ),
        (
            "[security.user_namespace]\nhost_id = 0",
            "p.toml: security.user_namespace.host_id",
        ),
        (
            "[security.user_namespace]\nsize = 0",
            "p.toml: security.user_namespace.size",
        ),
        (
            "[security.user_namespace]\nsize = 10",
            "p.toml: process.user",
        ),
        ("image = \"\"", "p.toml: image"),
        ("[limits]\nmemory = 5", "p.toml"),
    ];
    for (text, want) in file_cases {
        let e = validate_toml(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text:?}: {e:?} should name {want:?}");
        assert!(!e.contains('\n'), "{text:?}: error is not one line: {e:?}");
    }

    let flag_cases: Vec<(PolicyOverrides, &str)> = vec![
        (
            PolicyOverrides {
                memory: Some("lots".into()),
                ..Default::default()
            },
            "--memory",
        ),
        (
            PolicyOverrides {
                cpus: Some("half".into()),
                ..Default::default()
            },
            "--cpus",
        ),
        (
            PolicyOverrides {
                cpus: Some("0".into()),
                ..Default::default()
            },
            "--cpus",
        ),
        (
            PolicyOverrides {
                pids: Some("-1".into()),
                ..Default::default()
            },
            "--pids",
        ),
        (
            PolicyOverrides {
                pids: Some("many".into()),
                ..Default::default()
            },
            "--pids",
        ),
        (
            PolicyOverrides {
                timeout: Some("5d".into()),
                ..Default::default()
            },
            "--timeout",
        ),
        (
            PolicyOverrides {
                network: Some("bridge".into()),
                ..Default::default()
            },
            "--network",
        ),
        (
            PolicyOverrides {
                workspace: Some("/nope".into()),
                ..Default::default()
            },
            "--workspace",
        ),
        (
            PolicyOverrides {
                input: Some("/nope".into()),
                ..Default::default()
            },
            "--input",
        ),
        (
            PolicyOverrides {
                env: vec!["X".into()],
                ..Default::default()
            },
            "--env",
        ),
        (
            PolicyOverrides {
                user: Some("-1".into()),
                ..Default::default()
            },
            "--user",
        ),
        (
            PolicyOverrides {
                max_output: Some("0".into()),
                ..Default::default()
            },
            "--max-output",
        ),
        (
            PolicyOverrides {
                cap_add: vec!["SYS_PTRACE".into()],
                ..Default::default()
            },
            "--cap-add",
        ),
        (
            PolicyOverrides {
                seccomp: Some("nope.json".into()),
                ..Default::default()
            },
            "--seccomp",
        ),
        (
            PolicyOverrides {
                apparmor: Some("".into()),
                ..Default::default()
            },
            "--apparmor",
        ),
    ];
    for (o, want) in flag_cases {
        let e = validate_flags(o.clone()).expect_err(want).to_string();
        assert!(
            e.starts_with(want),
            "{o:?}: {e:?} should start with {want:?}"
        );
        assert!(!e.contains('\n'), "error is not one line: {e:?}");
    }
}

#[test]
fn protected_host_paths_cannot_be_mounted() {
    for (given, canonical) in [
        ("/", "/"),
        ("/etc", "/etc"),
        ("/proc/1", "/proc/1"),
        ("/var", "/var"),
        ("/var/lib", "/var/lib"),
        ("/run/containerd", "/run/containerd"),
        // A symlink that resolves into a protected path is judged by its target.
        (
            "/tmp/innocent",
            "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs",
        ),
    ] {
        let env = FakeEnv::default().with_dir(given, canonical);
        for field in ["workspace", "input"] {
            let o = PolicyOverrides {
                workspace: (field == "workspace").then(|| given.into()),
                input: (field == "input").then(|| given.into()),
                ..Default::default()
            };
            let e = Policy::default().validate(None, &o, &env).expect_err(given);
            assert!(
                e.to_string().starts_with(&format!("--{field}")),
                "{given} as {field}: {e}"
            );
        }
    }
}

/// Beyond the protected paths, a bind source must lie strictly beneath an allowed root:
/// the system directories the denylist does not name, and a root itself, are refused.
#[test]
fn bind_sources_must_lie_strictly_beneath_an_allowed_root() {
    let custom = vec![PathBuf::from("/data")];
    let cases: &[(&str, &[PathBuf], bool)] = &[
        ("/srv/w", &[], true),
        ("/tmp/job-1", &[], true),
        ("/home/alice/project", &[], true),
        ("/tmp", &[], false),
        ("/var/tmp", &[], false),
        ("/home", &[], false),
        ("/srv", &[], false),
        ("/opt", &[], false),
        ("/opt/app", &[], false),
        ("/var/lib/dpkg", &[], false),
        ("/var/backups", &[], false),
        ("/data/jobs/1", &custom, true),
        ("/srv/w", &custom, false),
    ];
    for (dir, roots, ok) in cases {
        let env = FakeEnv {
            roots: roots.to_vec(),
            ..FakeEnv::default()
        }
        .with_dir(dir, dir);
        let o = PolicyOverrides {
            workspace: Some(dir.into()),
            ..Default::default()
        };
        let r = Policy::default().validate(None, &o, &env);
        match (ok, r) {
            (true, Ok(p)) => assert_eq!(p.workspace.unwrap().path, Path::new(dir)),
            (false, Err(e)) => {
                let e = e.to_string();
                assert!(e.starts_with("--workspace: "), "{dir}: {e}");
                assert!(
                    e.contains("STOCKADE_BIND_ROOTS") || e.contains("protected host path"),
                    "{dir}: {e}"
                );
            }
            (ok, r) => panic!("{dir} with roots {roots:?}: want ok={ok}, got {r:?}"),
        }
    }
}
