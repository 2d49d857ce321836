//! `stockade seccomp check|export|show`: the command-line contract (exit 0 with output,
//! exit 125 with one line naming the fault).

use std::process::{Command, Output};

fn stockade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .output()
        .unwrap()
}

fn profile_path(name: &str) -> String {
    format!(
        "{}/seccomp-profiles/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn check_prints_a_summary_of_the_builtin_profiles() {
    for name in ["default", "strict"] {
        let out = stockade(&["seccomp", "check", &profile_path(name)]);
        assert_eq!(out.status.code(), Some(0), "{name}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("default action: SCMP_ACT_ERRNO (errno 1)"),
            "{text}"
        );
        assert!(text.contains("x86_64: "), "{text}");
        assert!(text.contains("aarch64: "), "{text}");
        assert!(
            text.contains("SCMP_ACT_ALLOW clone: arg0 & 0x7e020000 == 0x0"),
            "{text}"
        );
    }
}

#[test]
fn check_accepts_dockers_default_profile_with_an_honest_summary() {
    let path = format!(
        "{}/tests/fixtures/moby/seccomp-default.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = stockade(&["seccomp", "check", &path]);
    let text = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(text.starts_with(&format!("{path}: ok\n")), "{text}");
    // 32-bit and other architectures' calls are listed, not rejected or hidden.
    let other = text
        .lines()
        .skip_while(|l| !l.starts_with("names not on the target arches"))
        .nth(1)
        .unwrap_or_else(|| panic!("no other-arch list: {text}"));
    let other: Vec<&str> = other.split_whitespace().collect();
    for n in [
        "chown32",
        "arm_fadvise64_64",
        "mmap2",
        "s390_runtime_instr",
        "socketcall",
    ] {
        assert!(other.contains(&n), "{n} not listed: {text}");
    }
    for n in ["read", "chown", "arch_prctl"] {
        assert!(!other.contains(&n), "{n} listed: {text}");
    }
    // Capability-gated rules are dropped and say why.
    assert!(
        text.contains("needs CAP_SYS_ADMIN, which stockade never grants"),
        "{text}"
    );
    // Every call too new for the installed libseccomp gets exactly one warning line that
    // names it, and the summary lists the same calls.
    for line in err.lines() {
        assert!(
            line.starts_with(&format!("stockade: warning: {path}: syscalls["))
                && line.ends_with("; calls get the default action"),
            "{line}"
        );
    }
    let listed = text
        .lines()
        .skip_while(|l| !l.starts_with("names too new for libseccomp"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .count();
    assert_eq!(err.lines().count(), listed, "{text}\n{err}");
    for n in ["mseal", "listmount", "statmount"] {
        let known = stockade::seccomp::classify(n) == stockade::seccomp::NameClass::Target;
        assert_eq!(err.contains(&format!("\"{n}\"")), !known, "{n}: {err}");
    }
}

#[test]
fn check_rejects_bad_profiles_with_exit_125_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("not json", "{", "not JSON"),
        (
            "unknown syscall",
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","foo"],"action":"SCMP_ACT_ALLOW"}]}"#,
            r#"syscalls[0].names[1]: unknown syscall "foo""#,
        ),
        (
            "misspelt 32-bit name",
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["chown32","lchown33"],"action":"SCMP_ACT_ALLOW"}]}"#,
            r#"syscalls[0].names[1]: unknown syscall "lchown33""#,
        ),
        (
            "bad op",
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"EQ"}]}]}"#,
            r#"syscalls[0].args[0].op: unknown operator "EQ""#,
        ),
    ];
    for (name, body, want) in cases {
        let path = dir.path().join("p.json");
        std::fs::write(&path, body).unwrap();
        let out = stockade(&["seccomp", "check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(125), "{name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(path.to_str().unwrap()), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
}

#[test]
fn export_writes_bpf_for_both_arches_and_rejects_others() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, network) in [("x86_64", "none"), ("aarch64", "loopback")] {
        let path = dir.path().join(format!("{arch}.bpf"));
        let out = stockade(&[
            "seccomp",
            "export",
            "--bpf",
            path.to_str().unwrap(),
            "--arch",
            arch,
            "--network",
            network,
        ]);
        assert_eq!(out.status.code(), Some(0), "{arch}");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 0 && len % 8 == 0, "{arch}: {len} bytes");
    }
    let path = dir.path().join("mips.bpf");
    let out = stockade(&[
        "seccomp",
        "export",
        "--bpf",
        path.to_str().unwrap(),
        "--arch",
        "mips",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--arch"));
}

#[test]
fn show_prints_the_oci_form_with_socket_narrowed_for_network_none() {
    let out = stockade(&["seccomp", "show", "--profile", "strict"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"])
    );
    let socket_families: Vec<u64> = v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "socket"))
        .map(|r| r["args"][0]["value"].as_u64().unwrap())
        .collect();
    assert_eq!(socket_families, [1], "AF_UNIX only");
}
