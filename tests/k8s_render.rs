//! `stockade k8s render`: the YAML for a few policies matches its golden file
//! (`UPDATE_GOLDEN=1 cargo test --test k8s_render` rewrites them), and the CLI prints the
//! same documents the library renders.

mod common;

use std::path::{Path, PathBuf};

use stockade::k8s::{self, Kind, Options};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/k8s")
}

fn validated(toml: &str, o: PolicyOverrides) -> ValidatedPolicy {
    Policy::from_toml(toml, "golden.toml")
        .unwrap()
        .validate(Some("golden.toml"), &o, &HostPolicyEnv)
        .unwrap()
}

/// The cases: (golden file stem, policy, options).
fn cases() -> Vec<(&'static str, ValidatedPolicy, Options)> {
    let command: Vec<String> = ["/bin/sh", "-c", "echo hi"].map(String::from).to_vec();
    let mut pod = Options::new(Kind::Pod);
    pod.command = command.clone();
    let mut job = Options::new(Kind::Job);
    job.name = "build".into();
    job.namespace = "ci".into();
    job.command = command.clone();
    let mut pool = Options::new(Kind::WarmPool);
    pool.name = "agents".into();
    pool.replicas = 5;
    pool.runtime_class = "stockade-runc".into();
    vec![
        (
            "default.pod",
            validated("", PolicyOverrides::default()),
            pod,
        ),
        (
            "loopback-user-caps.job",
            validated(
                "[limits]\ntimeout = \"90s\"\n",
                PolicyOverrides {
                    network: Some("loopback".into()),
                    user: Some("1000:1000".into()),
                    cap_add: vec!["NET_BIND_SERVICE".into(), "CHOWN".into()],
                    memory: Some("256M".into()),
                    cpus: Some("0.5".into()),
                    pids: Some("64".into()),
                    ..Default::default()
                },
            ),
            job,
        ),
        (
            "managed-workspace.warm-pool",
            validated(
                "",
                PolicyOverrides {
                    image: Some("python:3.12-slim".into()),
                    disk: Some("512M".into()),
                    workspace_size: Some("256M".into()),
                    seccomp: Some("strict".into()),
                    ..Default::default()
                },
            ),
            pool,
        ),
    ]
}

#[test]
fn rendered_yaml_matches_golden_files() {
    let dir = golden_dir();
    for (stem, policy, opts) in cases() {
        let got = k8s::to_yaml(&k8s::render(&policy, &opts).unwrap());
        let path = dir.join(format!("{stem}.yaml"));
        common::assert_golden(&path, &got, "the rendered YAML");
    }
}

#[test]
fn the_cli_prints_what_the_library_renders() {
    let out = common::cli::stockade(&[])
        .args([
            "k8s",
            "render",
            "--kind",
            "job",
            "--name",
            "build",
            "--namespace",
            "ci",
        ])
        .args([
            "--network",
            "loopback",
            "--user",
            "1000:1000",
            "--memory",
            "256M",
        ])
        .args(["--cpus", "0.5", "--pids", "64", "--timeout", "90s"])
        .args(["--cap-add", "NET_BIND_SERVICE", "--cap-add", "CHOWN"])
        .args(["--", "/bin/sh", "-c", "echo hi"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, policy, opts) = cases().remove(1);
    // The CLI's policy comes from flags alone, the case's partly from TOML: same policy.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        k8s::to_yaml(&k8s::render(&policy, &opts).unwrap())
    );
}

#[test]
fn bad_input_exits_125_with_one_line_naming_the_flag() {
    for (args, flag) in [
        (vec!["--kind", "deployment"], "--kind"),
        (vec!["--name", "UPPER"], "--name"),
        (vec!["--workspace", "/tmp"], "workspace"),
    ] {
        let out = common::cli::stockade(&[])
            .args(["k8s", "render"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(flag), "{args:?}: {err}");
        if flag != "--kind" {
            // clap's own usage errors exit 2; stockade's refusals exit 125 on one line.
            assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
}
