//! `stockade doctor` on this host, checked against what the kernel says through other
//! files than the ones the probe reads.

use std::process::Command;

use serde_json::Value;

fn doctor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .arg("doctor")
        .args(args)
        .output()
        .expect("run stockade doctor")
}

/// Controllers mounted on a v1 hierarchy, from `/proc/cgroups` (hierarchy id non-zero and
/// enabled), sorted.
fn v1_controllers_from_proc_cgroups() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cgroups").expect("/proc/cgroups");
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[1] != "0" && f[3] == "1").then(|| f[0].to_string())
        })
        .collect();
    out.sort();
    out
}

fn cgroup2_fs_at(path: &str) -> bool {
    // statfs(2) magic would be the kernel's answer; the mount table's filesystem type is
    // the same fact in text.
    std::fs::read_to_string("/proc/mounts")
        .expect("/proc/mounts")
        .lines()
        .rfind(|l| l.split_whitespace().nth(1) == Some(path))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
}

#[test]
fn json_matches_the_kernel() {
    let out = doctor(&["--json", "--address", "/nonexistent/containerd.sock"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json output is JSON: {e}; stderr: {stderr}"));
    let facts = &v["facts"];

    let v1 = v1_controllers_from_proc_cgroups();
    let any_cgroup2 = std::fs::read_to_string("/proc/filesystems")
        .expect("filesystems")
        .contains("cgroup2")
        && std::fs::read_to_string("/proc/mounts")
            .expect("mounts")
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
    let want_mode = if cgroup2_fs_at("/sys/fs/cgroup") {
        "v2"
    } else if any_cgroup2 {
        "hybrid"
    } else {
        "v1"
    };
    assert_eq!(facts["cgroup"], want_mode);
    if want_mode != "v2" {
        let got: Vec<String> = facts["cgroup_controllers"]
            .as_array()
            .expect("array")
            .iter()
            .map(|c| c.as_str().expect("string").to_string())
            .collect();
        assert_eq!(got, v1, "controllers vs /proc/cgroups");
    }

    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
        && std::path::Path::new("/sys/kernel/security/apparmor").exists();
    assert_eq!(facts["apparmor"], apparmor);

    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map(|s| s.split_whitespace().map(String::from).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(facts["seccomp"], !actions.is_empty());
    assert_eq!(facts["seccomp_actions"], serde_json::json!(actions));

    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("possible");
    let count: u64 = possible
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().expect("n") - a.parse::<u64>().expect("n") + 1,
            None => 1,
        })
        .sum();
    assert_eq!(facts["cpu_count"], count);

    assert_eq!(v["containerd_socket"], "/nonexistent/containerd.sock");
    assert_eq!(v["containerd_reachable"], false);

    // runc and containerd: present exactly when they run.
    let runs = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert_eq!(v["runc"].is_null(), !runs("runc"));
    assert_eq!(v["containerd"].is_null(), !runs("containerd"));

    let usable = v["usable"].as_bool().expect("usable");
    assert_eq!(out.status.code(), Some(i32::from(!usable)), "{stderr}");
    let required_missing = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .any(|c| c["required"] == true && c["status"] == "missing");
    assert_eq!(usable, !required_missing);
}

#[test]
fn text_report_says_what_is_not_enforced() {
    let out = doctor(&["--address", "/nonexistent/containerd.sock"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("CHECK"), "{text}");
    assert!(text.contains("/nonexistent/containerd.sock"), "{text}");
    let kernel_apparmor = std::path::Path::new("/sys/kernel/security/apparmor").exists();
    if !kernel_apparmor {
        assert!(
            text.contains("AppArmor: not available — sandboxes run without an AppArmor profile"),
            "{text}"
        );
    }
    assert!(text.contains("usable: "), "{text}");
}

/// `$CONTAINERD_ADDRESS` is used when `--address` is not given, and a listening socket is
/// reported reachable.
#[test]
fn address_from_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("c.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["doctor", "--json"])
        .env("CONTAINERD_ADDRESS", format!("unix://{}", sock.display()))
        .output()
        .expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["containerd_socket"], sock.to_str().expect("utf8"));
    assert_eq!(v["containerd_reachable"], true);
}
